r"""The β-VAE objective and its two terms.

For a data point ``x``, an encoder ``q(z|x) = N(mu, diag(exp(logvar)))`` and a decoder
``p(x|z)``, the book writes (primer, eq. :math:`\mathcal L_\beta`)

.. math::

    \mathcal L_\beta(x) = \underbrace{\mathbb E_{q(z|x)}[\log p(x|z)]}_{\text{reconstruction}}
      - \beta\, \underbrace{\mathrm{KL}(q(z|x) \,\|\, p(z))}_{\text{kl}},

which is the ELBO at ``β = 1``. The reconstruction term is estimated with the decoder output
at one (or more) reparameterised samples of ``z``; the KL term is exact (closed form).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .checks import as_tensor, check_choice, check_positive
from .gaussian import LOG_2PI, kl_diag_normal

__all__ = [
    "LIKELIHOODS",
    "ELBOTerms",
    "bernoulli_log_likelihood",
    "beta_vae_terms",
    "decoder_mean",
    "gaussian_log_likelihood",
    "reconstruction_log_likelihood",
]

LIKELIHOODS = ("gaussian", "bernoulli")


@dataclass(frozen=True)
class ELBOTerms:
    """The terms of the β-VAE objective, per example or averaged over the examples.

    The fields are ``reconstruction``, the Monte Carlo estimate of ``E_q[log p(x|z)]`` in
    nats; ``kl``, the exact ``KL(q(z|x) || p(z))`` in nats; ``beta``, the weight of the
    KL term in :attr:`objective`; and ``averaged``, set by :meth:`mean`.

    Shapes. For one model the per-example terms have shape ``(n,)`` and ``beta`` is a float.
    For an ensemble of ``M`` models trained together (``vaebook.ensemble.EnsembleVAE``)
    they have shape ``(M, n)`` and ``beta`` is a tensor ``(M, 1)``, one β per member,
    broadcasting over the examples. In general the last axis is the example axis and a tensor
    ``beta`` has size 1 along it; :meth:`mean` removes that axis.
    """

    reconstruction: torch.Tensor
    kl: torch.Tensor
    beta: float | torch.Tensor = 1.0
    averaged: bool = False

    @property
    def elbo(self) -> torch.Tensor:
        """``reconstruction - kl``: the evidence lower bound."""
        return self.reconstruction - self.kl

    @property
    def objective(self) -> torch.Tensor:
        """``reconstruction - beta * kl``: the β-VAE objective, to be maximised."""
        return self.reconstruction - self.beta * self.kl

    def mean(self) -> ELBOTerms:
        """The same terms averaged over the examples (the last axis).

        Per-example ``(n,)`` terms give scalar tensors, ensemble terms ``(M, n)`` give ``(M,)``
        (one value per member) and a tensor ``beta`` ``(M, 1)`` becomes ``(M,)``. Terms that
        are already averaged are returned unchanged, so ``terms.mean().mean()`` is
        ``terms.mean()``.
        """
        if self.averaged:
            return self
        beta = self.beta
        if isinstance(beta, torch.Tensor) and beta.dim() > 0:
            if beta.dim() != self.reconstruction.dim() or beta.shape[-1] != 1:
                raise ValueError(
                    "beta must be a number or a tensor with size 1 along the example (last) "
                    f"axis of reconstruction {tuple(self.reconstruction.shape)}, "
                    f"got shape {tuple(beta.shape)}"
                )
            beta = beta.squeeze(-1)
        return ELBOTerms(self.reconstruction.mean(-1), self.kl.mean(-1), beta, averaged=True)

    def as_dict(self) -> dict[str, float | np.ndarray]:
        """Averaged terms as plain numbers: reconstruction, kl, elbo, objective.

        Floats for one model; for an ensemble, float64 numpy arrays ``(M,)`` holding one value
        per member.
        """
        m = self.mean()
        values = {
            "reconstruction": m.reconstruction,
            "kl": m.kl,
            "elbo": m.elbo,
            "objective": m.objective,
        }
        return {key: _plain(value) for key, value in values.items()}


def _plain(value: torch.Tensor) -> float | np.ndarray:
    value = value.detach()
    if value.dim() == 0:
        return value.item()
    return value.to(device="cpu", dtype=torch.float64).numpy().copy()  # never a view


def gaussian_log_likelihood(x, mean, log_gamma=0.0) -> torch.Tensor:
    """``log N(x; mean, γ I)`` summed over every axis but the first, with ``γ = exp(log_gamma)``.

    Parameters
    ----------
    x, mean : tensors ``(n, ...)`` of the same shape.
    log_gamma : number or tensor broadcastable to ``x`` (a learnable scalar in Dai & Wipf).

    Returns
    -------
    tensor ``(n,)``: ``-1/2 sum [log 2π + log γ + (x - mean)^2 / γ]``.
    """
    x, mean = _pair(x, "x", mean, "mean")
    log_gamma = as_tensor(log_gamma, "log_gamma", like=mean)
    per_pixel = -0.5 * (LOG_2PI + log_gamma + (x - mean) ** 2 * torch.exp(-log_gamma))
    return per_pixel.reshape(x.shape[0], -1).sum(-1)


def bernoulli_log_likelihood(x, logits) -> torch.Tensor:
    """``log Bernoulli(x; sigmoid(logits))`` summed over every axis but the first.

    ``x`` may hold values in ``[0, 1]`` (grey levels are treated as soft targets, the usual
    practice for MNIST-like data). Returns a tensor of shape ``(n,)``.
    """
    x, logits = _pair(x, "x", logits, "logits")
    if bool(((x < 0) | (x > 1)).any()):
        raise ValueError("x must lie in [0, 1] for a Bernoulli likelihood")
    nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return -nll.reshape(x.shape[0], -1).sum(-1)


def decoder_mean(decoder_output: torch.Tensor, likelihood: str = "gaussian") -> torch.Tensor:
    """``E[x|z]`` from the decoder output: the output itself (Gaussian mean) or
    ``sigmoid(logits)`` (Bernoulli)."""
    check_choice(likelihood, "likelihood", LIKELIHOODS)
    return torch.sigmoid(decoder_output) if likelihood == "bernoulli" else decoder_output


def reconstruction_log_likelihood(x, decoder_output, likelihood="gaussian", log_gamma=0.0):
    """``log p(x|z)`` for the decoder output at a sample ``z``; shape ``(n,)``.

    ``likelihood`` is ``"gaussian"`` (``decoder_output`` is the mean, variance ``exp(log_gamma)``)
    or ``"bernoulli"`` (``decoder_output`` are logits; ``log_gamma`` is ignored).
    """
    check_choice(likelihood, "likelihood", LIKELIHOODS)
    if likelihood == "gaussian":
        return gaussian_log_likelihood(x, decoder_output, log_gamma)
    return bernoulli_log_likelihood(x, decoder_output)


def beta_vae_terms(
    x, decoder_output, mu, logvar, *, beta=1.0, likelihood="gaussian", log_gamma=0.0
) -> ELBOTerms:
    """The β-VAE objective's terms for one reparameterised sample per example.

    Parameters
    ----------
    x : tensor ``(n, ...)``, the data.
    decoder_output : tensor of the shape of ``x``: the decoder evaluated at ``z ~ q(z|x)``
        (Gaussian mean, or Bernoulli logits).
    mu, logvar : tensors ``(n, latent_dim)``, the encoder's Gaussian ``q(z|x)``.
    beta : float > 0, the weight of the KL term.
    likelihood : ``"gaussian"`` or ``"bernoulli"``.
    log_gamma : log-variance of the Gaussian decoder, fixed (a number) or learned (a tensor).

    Returns
    -------
    :class:`ELBOTerms` with per-example tensors of shape ``(n,)``.
    """
    beta = check_positive(beta, "beta")
    mu = as_tensor(mu, "mu")
    logvar = as_tensor(logvar, "logvar", like=mu)
    if mu.dim() != 2 or logvar.shape != mu.shape:
        raise ValueError(
            f"mu and logvar must both be (n, latent_dim), got {tuple(mu.shape)} "
            f"and {tuple(logvar.shape)}"
        )
    rec = reconstruction_log_likelihood(x, decoder_output, likelihood, log_gamma)
    if rec.shape[0] != mu.shape[0]:
        raise ValueError(f"x has {rec.shape[0]} examples but mu has {mu.shape[0]}")
    return ELBOTerms(rec, kl_diag_normal(mu, logvar), beta)


def _pair(a, a_name, b, b_name):
    a = as_tensor(a, a_name)
    b = as_tensor(b, b_name, like=a)
    if a.shape != b.shape:
        raise ValueError(f"{b_name} has shape {tuple(b.shape)} but {a_name} has {tuple(a.shape)}")
    if a.dim() == 0:
        raise ValueError(f"{a_name} must have a leading batch axis")
    return a, b
