r"""Objective (7) of Mathieu et al. (2019) and the VAE trained on it.

:math:`\mathcal L_{\alpha,\beta} = \mathbb E_q \log p(x|z) - \beta\,\mathrm{KL}(q(z|x)\|p(z))
- \alpha\,\mathbb D(q(z), p(z))`: :func:`decomposition_objective` returns its terms
(:class:`DecompositionTerms`) on a minibatch, with the KL from :func:`vaebook.priors.kl_to_prior`
and the divergence :math:`\mathbb D` from :mod:`vaebook.aggregate_posterior` (an inclusive KL or
an IMQ MMD). :class:`StructuredVAE` wraps an encoder, a decoder and a prior (any
:class:`vaebook.priors.Prior`) into a model that :func:`vaebook.train.fit` trains on it, one
model or an ensemble.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .aggregate_posterior import (
    MMD_SCALES,
    _prior_samples,
    inclusive_kl_aggregate,
    mmd_imq,
    mmd_imq_per_coordinate,
)
from .checks import (
    as_tensor,
    check_choice,
    check_per_member,
    check_positive,
    check_positive_int,
)
from .decomposition import _per_example
from .gaussian import (
    kl_diag_normal,
    sample_diag_normal,
)
from .objectives import _plain
from .priors import _KL_METHODS, Prior, _encoder, kl_to_prior

__all__ = [
    "DecompositionTerms",
    "StructuredVAE",
    "decomposition_objective",
]


# --- objective (7) -----------------------------------------------------------------------

_DIVERGENCES = ("kl", "mmd", "mmd_per_coordinate")


@dataclass(frozen=True)
class DecompositionTerms:
    """The terms of objective (7) on a minibatch.

    For one model: ``reconstruction`` ``(B,)``, estimates of ``E_q log p(x|z)``; ``kl``
    ``(B,)``, ``KL(q(z|x) || p(z))``; ``divergence``, 0-dim ``D(q(z), p(z))``; ``alpha`` and
    ``beta``, floats. For an ensemble of ``M`` models every field gains a leading axis:
    ``(M, B)``, ``(M, B)``, ``(M,)``, and ``alpha``/``beta`` are floats or tensors ``(M,)``.
    The example axis is always the last axis of ``reconstruction`` and ``kl``.
    """

    reconstruction: torch.Tensor
    kl: torch.Tensor
    divergence: torch.Tensor
    alpha: float | torch.Tensor
    beta: float | torch.Tensor

    @property
    def reconstruction_mean(self) -> torch.Tensor:
        """Mean reconstruction log-likelihood over the minibatch (the last axis)."""
        return self.reconstruction.mean(-1)

    @property
    def kl_mean(self) -> torch.Tensor:
        """Mean ``KL(q(z|x) || p(z))`` over the minibatch (the last axis)."""
        return self.kl.mean(-1)

    @property
    def elbo(self) -> torch.Tensor:
        """``mean rec - mean KL``: the minibatch ELBO under the prior ``p(z)``."""
        return self.reconstruction_mean - self.kl_mean

    @property
    def objective(self) -> torch.Tensor:
        """``mean rec - β mean KL - α D``: eq. (7) averaged over the minibatch (maximise)."""
        return self.reconstruction_mean - self.beta * self.kl_mean - self.alpha * self.divergence

    def mean(self) -> DecompositionTerms:
        """Itself: the objective is already a minibatch average (the interface of
        :meth:`vaebook.objectives.ELBOTerms.mean`, which :func:`vaebook.train.fit` calls)."""
        return self

    def as_dict(self) -> dict[str, float | np.ndarray]:
        """reconstruction, kl, elbo, divergence and objective as plain numbers: floats for one
        model, float64 arrays ``(M,)`` for an ensemble."""
        values = {
            "reconstruction": self.reconstruction_mean,
            "kl": self.kl_mean,
            "elbo": self.elbo,
            "divergence": self.divergence,
            "objective": self.objective,
        }
        return {key: _plain(value) for key, value in values.items()}


def decomposition_objective(
    log_lik,
    z,
    mu,
    logvar,
    prior: Prior,
    *,
    alpha,
    beta,
    divergence: str = "kl",
    kl: str = "auto",
    generator=None,
    prior_samples=None,
    n_prior_samples: int | None = None,
    mmd_scales=MMD_SCALES,
) -> DecompositionTerms:
    r"""Objective (7): :math:`\mathbb E_q\log p(x|z) - \beta\,\mathrm{KL}(q(z|x)\|p(z))
    - \alpha\,\mathbb D(q(z), p(z))` on a minibatch.

    Parameters
    ----------
    log_lik : tensor ``(B,)``, ``log p(x_i|z_i)`` at the encoder samples.
    z : tensor ``(B, d)``, one reparameterised sample of each ``q(z|x_i)``.
    mu, logvar : tensors ``(B, d)``, the encoders.
    prior : :class:`vaebook.priors.Prior`.
    alpha, beta : numbers ≥ 0 (or, for an ensemble, tensors ``(M,)`` of them).
    divergence : ``"kl"``: inclusive ``KL(p(z) || q(z))`` with the minibatch aggregate
        posterior (:func:`vaebook.aggregate_posterior.inclusive_kl_aggregate`, Appendix B);
        ``"mmd"``: unbiased MMD² with inverse multiquadratic kernels between ``z`` and prior
        draws (:func:`vaebook.aggregate_posterior.mmd_imq`); ``"mmd_per_coordinate"``: the
        sum over coordinates of the 1-D MMD² between the same samples
        (:func:`vaebook.aggregate_posterior.mmd_imq_per_coordinate`; the authors' code for
        the sparsity experiment).
    kl : ``"auto"``, ``"analytic"`` or ``"mc"``, passed to
        :func:`vaebook.priors.kl_to_prior` (``"mc"`` uses ``z``).
    generator : optional ``torch.Generator`` for the prior draws.
    prior_samples : optional tensor ``(M, d)`` of prior draws to use instead of drawing.
    n_prior_samples : number of prior draws when drawing (default ``B``).
    mmd_scales : the scales ``s`` of the MMD (``C = 2 d s``; ``C = 2 s`` per coordinate), default
        ``MMD_SCALES = (0.1, 0.2, 0.5, 1, 2, 5, 10)``.

    An ensemble of ``M`` models is evaluated at once by giving ``log_lik`` ``(M, B)`` and
    ``z``, ``mu``, ``logvar`` ``(M, B, d)``: every member gets its own terms, against the
    same prior draws.

    Returns
    -------
    :class:`DecompositionTerms`.
    """
    check_choice(divergence, "divergence", _DIVERGENCES)
    check_choice(kl, "kl", _KL_METHODS)
    mu, logvar = _encoder(mu, logvar, prior, batched=True)
    alpha = _weight(alpha, "alpha", mu)
    beta = _weight(beta, "beta", mu)
    z = as_tensor(z, "z", like=mu)
    if z.shape != mu.shape:
        raise ValueError(f"z must have the shape of mu {tuple(mu.shape)}, got {tuple(z.shape)}")
    log_lik = _per_example(log_lik, "log_lik", mu)
    if kl == "analytic" and not prior.is_gaussian:
        raise ValueError(f"kl='analytic' needs a Gaussian prior, got {prior!r}")
    kl_values = kl_to_prior(mu, logvar, prior, z=z, method=kl)
    if prior_samples is None:
        m = mu.shape[-2] if n_prior_samples is None else n_prior_samples
        m = check_positive_int(m, "n_prior_samples")
        prior_samples = prior.sample(m, generator, dtype=mu.dtype, device=mu.device)
    if divergence == "kl":
        div = inclusive_kl_aggregate(prior_samples, mu, logvar, prior)
    elif divergence == "mmd":
        div = mmd_imq(z, _prior_samples(prior_samples, mu), scales=mmd_scales)
    else:
        div = mmd_imq_per_coordinate(z, _prior_samples(prior_samples, mu), scales=mmd_scales)
    return DecompositionTerms(log_lik, kl_values, div, alpha, beta)


class StructuredVAE(nn.Module):
    r"""A VAE (or an ensemble of them) trained with objective (7) under a chosen prior.

    The encoder and decoder are those of ``base``; this module replaces its standard normal
    prior and its β-VAE objective by ``prior`` and :math:`\mathcal L_{\alpha,\beta}`, and
    :func:`vaebook.train.fit` trains it like any other model of the book.

    Parameters
    ----------
    base : :class:`vaebook.nets.VAE`, or ``vaebook.ensemble.EnsembleVAE`` for ``M`` models
        trained at once (same mini-batches, independent weights). Its encoder, decoder,
        likelihood and decoder variance are used; its own β is ignored.
    prior : :class:`vaebook.priors.Prior` with ``dim`` equal to the latent dimension.
    alpha, beta : numbers ≥ 0, or for an ensemble ``M`` numbers (one per member).
    divergence : ``"kl"``, ``"mmd"`` or ``"mmd_per_coordinate"``, the :math:`\mathbb D` of (7)
        (see :func:`decomposition_objective`).
    kl : ``"auto"``, ``"analytic"`` or ``"mc"``, how ``KL(q(z|x) || p(z))`` is computed.
    learn_prior_variances : for a Gaussian prior whose variances sum to ``d`` (e.g. from
        :func:`vaebook.priors.pca_variances`): learn its variances with the model (§6.1, "learned
        anisotropic prior"), starting from ``prior.variances``, with the total variance held
        at ``d``: ``variances = d softmax(logits)``. Each ensemble member learns its own.
        Needs every ``alpha`` to be 0; the KL is then analytic.
    n_prior_samples : prior draws per step for :math:`\mathbb D` (default: the batch size).

    Notes
    -----
    :meth:`terms` draws one reparameterised ``z`` per example (and member) and then the prior
    samples, both from the generator it is given.
    """

    def __init__(
        self,
        base: nn.Module,
        prior: Prior,
        *,
        alpha=0.0,
        beta=1.0,
        divergence: str = "kl",
        kl: str = "auto",
        learn_prior_variances: bool = False,
        n_prior_samples: int | None = None,
    ):
        super().__init__()
        if not all(hasattr(base, name) for name in ("encode", "decode", "likelihood")):
            raise TypeError(
                "base must be a vaebook.nets.VAE or vaebook.ensemble.EnsembleVAE, "
                f"got {type(base).__name__}"
            )
        if not isinstance(prior, Prior):
            raise TypeError(f"prior must be a vaebook.priors.Prior, got {type(prior).__name__}")
        self.base = base
        self.prior = prior
        self.members = getattr(base, "members", None)
        shape = () if self.members is None else (self.members,)
        dtype = next(base.parameters()).dtype
        for name, value in (("alpha", alpha), ("beta", beta)):
            weights = check_per_member(value, name, self.members, allow_zero=True)
            self.register_buffer(name, weights.to(dtype))
        self.divergence = check_choice(divergence, "divergence", _DIVERGENCES)
        self.kl = check_choice(kl, "kl", _KL_METHODS)
        if n_prior_samples is not None:
            check_positive_int(n_prior_samples, "n_prior_samples")
        self.n_prior_samples = n_prior_samples
        self.prior_logits = None
        if learn_prior_variances:
            if not prior.is_gaussian:
                raise ValueError(f"learn_prior_variances needs a Gaussian prior, got {prior!r}")
            if bool((self.alpha != 0).any()):
                raise ValueError("learn_prior_variances needs alpha = 0 (a β-VAE objective)")
            if self.kl == "mc":
                raise ValueError("learn_prior_variances uses the analytic KL; kl='mc' is not used")
            total = prior.variances.sum().item()
            if abs(total - prior.dim) > 1e-6 * prior.dim:
                raise ValueError(
                    f"learn_prior_variances holds the total prior variance at d = {prior.dim}; "
                    f"the prior's variances sum to {total:.6g} (use pca_variances)"
                )
            logits = prior.log_variances.to(dtype).expand(*shape, prior.dim)
            self.prior_logits = nn.Parameter(logits.clone())

    def encode(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of ``q(z|x)``: ``(n, d)``, or ``(M, n, d)`` for an ensemble."""
        return self.base.encode(x)

    def prior_variances(self) -> torch.Tensor:
        """The Gaussian prior's variances: ``(d,)``, or ``(M, d)`` when learned in an ensemble."""
        if self.prior_logits is not None:
            return self.prior.dim * torch.softmax(self.prior_logits, -1)
        if not self.prior.is_gaussian:
            raise ValueError(f"the prior {self.prior!r} is not Gaussian")
        return self.prior.variances.to(torch.get_default_dtype())

    def terms(self, x, generator: torch.Generator | None = None) -> DecompositionTerms:
        """:class:`DecompositionTerms` of the minibatch ``x`` (per member for an ensemble)."""
        x = as_tensor(x, "x")
        mu, logvar = self.base.encode(x)
        z = sample_diag_normal(mu, logvar, generator=generator)
        out = self.base.decode(z)
        event_dims = out.dim() - (mu.dim() - 1)  # the axes of one example
        target = x.to(out).flatten(start_dim=x.dim() - event_dims)  # (..., n, width)
        target = target.expand(*mu.shape[:-1], target.shape[-1])
        log_lik = self.base.log_likelihood(target, out.reshape(target.shape))
        alpha = self.alpha if self.members is not None else float(self.alpha)
        beta = self.beta if self.members is not None else float(self.beta)
        if self.prior_logits is not None:
            log_variances = math.log(self.prior.dim) + torch.log_softmax(self.prior_logits, -1)
            kl = kl_diag_normal(mu, logvar, 0.0, log_variances.unsqueeze(-2))
            return DecompositionTerms(log_lik, kl, torch.zeros_like(kl[..., 0]), alpha, beta)
        return decomposition_objective(
            log_lik,
            z,
            mu,
            logvar,
            self.prior,
            alpha=alpha,
            beta=beta,
            divergence=self.divergence,
            kl=self.kl,
            generator=generator,
            n_prior_samples=self.n_prior_samples,
        )


# --- shared argument checks -----------------------------------------------------------------


def _weight(value, name, mu):
    """A number ≥ 0 as a float, or one per model (a tensor ``mu.shape[:-2]``) as a tensor."""
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        if value.shape != mu.shape[:-2]:
            raise ValueError(
                f"{name} must be a number or a tensor {tuple(mu.shape[:-2])} (one per model), "
                f"got shape {tuple(value.shape)}"
            )
        if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
            raise ValueError(f"{name} must be finite and >= 0, got {value.tolist()}")
        return value.to(mu)
    return check_positive(value, name, allow_zero=True)
