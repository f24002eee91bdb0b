r"""Bonheme & Grzes (2023), "The Polarised Regime of Identifiable VAEs": kernels and the iVAE.

The chapter ``book/polarised.md`` uses these kernels. Notation follows the paper: the encoder
is ``q(z|x, u) = N(μ, diag σ)`` (``σ`` holds *variances*), the conditional prior is
``p(z|u) = N(μ†, diag σ†)``, and around a near-perfect reconstruction the decoder mean is
linearised with its Jacobian ``J`` (``d × κ``) and a Gaussian noise variance ``γ``.

- The proof of Theorem 1: the local cost (eq. 10), its minimisers (eq. 11) and Weyl's bounds
  (eq. 12) are in :mod:`vaebook.local_geometry`; :func:`laplace_posterior_variances` applies
  them to a trained decoder.
- The model of the experiments: :class:`IVAE` (encoder ``q(z|x, u)``, decoder, prior network
  ``u -> p(z|u)``) and :func:`mlp_ivae`, which builds one from MLPs.
- Reading a trained model: :func:`representations` (the mean, variance and sampled
  representations and their prior counterparts, for an iVAE or a plain VAE) and
  :func:`classify_latents` (passive / active / mixed, Definition 1 and Propositions 1-3).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .checks import (
    as_tensor,
    check_choice,
    check_number,
    check_per_member,
    check_positive,
    check_positive_int,
    check_sizes,
)
from .gaussian import kl_diag_normal, sample_diag_normal
from .local_geometry import decoder_jacobian, optimal_posterior_variances
from .nets import VAE, mlp, mlp_decoder, mlp_encoder, seeded
from .objectives import LIKELIHOODS, ELBOTerms, decoder_mean, reconstruction_log_likelihood

__all__ = [
    "IVAE",
    "LATENT_LABELS",
    "LatentClasses",
    "Representations",
    "classify_latents",
    "laplace_posterior_variances",
    "mlp_ivae",
    "representations",
    "rescale_latents",
]

LATENT_LABELS = ("passive", "active", "mixed")


# -- the proof of Theorem 1 on a trained decoder ---------------------------------------------


def laplace_posterior_variances(model: nn.Module, mu, prior_var) -> torch.Tensor:
    r"""The encoder variances a trained decoder calls for: eq. 11 over diagonal ``Σ``, at ``μ``.

    The decoder is linearised at each posterior mean, as in the proof of Theorem 1, and
    :func:`vaebook.local_geometry.optimal_posterior_variances` is applied. For a Gaussian
    decoder the curvature of ``-log p(x|z)`` in the decoder mean is ``I / γ``. For a Bernoulli
    decoder with logits ``ℓ(z)`` and ``p = sigmoid(ℓ)`` it is ``diag(p (1 - p))`` in the
    logits (the Fisher information, i.e. the Gauss-Newton part of the Hessian), so ``J`` is
    replaced by ``diag(p (1 - p))^½ ∂ℓ/∂z`` and ``γ`` by 1.

    Parameters
    ----------
    model : an :class:`IVAE` or a :class:`~vaebook.nets.VAE` (``decode``, ``likelihood``,
        ``log_gamma``).
    mu : tensor ``(n, κ)``, posterior means.
    prior_var : prior variances broadcastable to ``(n, κ)``.

    Returns
    -------
    float64 tensor ``(n, κ)``, to compare with the encoder's variances at the same inputs.
    """
    if not isinstance(model, (IVAE, VAE)):
        raise TypeError(f"model must be an IVAE or a VAE, got {type(model).__name__}")
    ref = next(model.parameters())
    mu = as_tensor(mu, "mu", like=ref)
    if mu.dim() != 2 or mu.shape[1] != model.latent_dim:
        raise ValueError(
            f"mu must be (n, {model.latent_dim}) (the model's latents), got {tuple(mu.shape)}"
        )
    J = decoder_jacobian(lambda z: model.decode(z).flatten(1), mu).double()
    if model.likelihood == "bernoulli":
        with torch.no_grad():
            p = torch.sigmoid(model.decode(mu).flatten(1)).double()
        J = J * (p * (1.0 - p)).sqrt().unsqueeze(-1)
        gamma = 1.0
    else:
        gamma = math.exp(float(model.log_gamma))
    prior_var = as_tensor(prior_var, "prior_var", dtype=torch.float64)
    return optimal_posterior_variances(J, prior_var, gamma)


# -- the identifiable VAE ---------------------------------------------------------------------


class IVAE(nn.Module):
    r"""An identifiable VAE (Khemakhem et al., 2020) with a conditionally factorial prior.

    ``q(z|x, u) = N(μ, diag σ)`` from an encoder fed ``x`` and ``u`` together; a decoder
    ``p(x|z)``; the prior ``p(z|u) = N(μ†(u), diag σ†(u))`` from a prior network. The objective
    is ``E_q[log p(x|z)] - β KL(q(z|x, u) || p(z|u))`` (eq. 4 at β = 1), the KL in closed form
    (:func:`vaebook.gaussian.kl_diag_normal`).

    Parameters
    ----------
    encoder : module mapping the concatenation ``[flatten(x), u]`` ``(n, D + m)`` to
        ``(mu, logvar)``, each ``(n, κ)`` (e.g. :func:`vaebook.nets.mlp_encoder`).
    decoder : module ``z -> decoder output`` of the shape of ``x``.
    prior : module ``u (n, m) -> (n, κ)``, the prior log-variances ``log σ†(u)``; with
        ``learn_prior_mean`` it returns ``(n, 2κ)``: the means ``μ†(u)``, then the
        log-variances. By default the mean is fixed at 0, as in the paper's experiment (and
        Khemakhem et al.'s code).
    likelihood : ``"bernoulli"`` (decoder logits, for binary images) or ``"gaussian"``.
    beta : float > 0, the weight of the KL term.
    log_gamma : the Gaussian decoder's fixed log-variance (ignored for Bernoulli).
    learn_prior_mean : bool.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        prior: nn.Module,
        *,
        likelihood: str = "bernoulli",
        beta: float = 1.0,
        log_gamma: float = 0.0,
        learn_prior_mean: bool = False,
    ):
        super().__init__()
        for value, name in ((encoder, "encoder"), (decoder, "decoder"), (prior, "prior")):
            if not isinstance(value, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
        self.encoder = encoder
        self.decoder = decoder
        self.prior_net = prior
        self.likelihood = check_choice(likelihood, "likelihood", LIKELIHOODS)
        self.beta = check_positive(beta, "beta")
        self.register_buffer("log_gamma", torch.tensor(check_number(log_gamma, "log_gamma")))
        self.learn_prior_mean = bool(learn_prior_mean)

    @property
    def latent_dim(self) -> int:
        """The number of latent dimensions ``κ``."""
        return self.encoder.mu.out_features

    def _inputs(self, x, u) -> tuple[torch.Tensor, torch.Tensor]:
        x = as_tensor(x, "x")
        u = as_tensor(u, "u", like=x)
        if x.dim() < 2:
            raise ValueError(f"x must be a batch (n, ...), got shape {tuple(x.shape)}")
        if u.dim() != 2 or u.shape[0] != x.shape[0]:
            raise ValueError(
                f"u must be (n, m) with n = {x.shape[0]} (the examples of x), "
                f"got shape {tuple(u.shape)}"
            )
        return x, u

    def prior(self, u) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ†, log σ†)`` of ``p(z|u)``, each ``(n, κ)``; ``μ† = 0`` unless it is learned."""
        u = as_tensor(u, "u")
        if u.dim() != 2:
            raise ValueError(f"u must be (n, m), got shape {tuple(u.shape)}")
        out = self.prior_net(u)
        if self.learn_prior_mean:
            mean, logvar = out.chunk(2, dim=-1)
            return mean, logvar
        return torch.zeros_like(out), out

    def encode(self, x, u) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, log σ)`` of ``q(z|x, u)``, each ``(n, κ)``."""
        x, u = self._inputs(x, u)
        return self.encoder(torch.cat([x.flatten(1), u], dim=1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output at ``z`` ``(n, κ)``: Bernoulli logits or the Gaussian mean."""
        return self.decoder(z)

    def mean_image(self, z: torch.Tensor) -> torch.Tensor:
        """``E[x|z]``: ``sigmoid(logits)`` (Bernoulli) or the decoder mean (Gaussian)."""
        return decoder_mean(self.decode(z), self.likelihood)

    def terms(self, x, u, generator: torch.Generator | None = None) -> ELBOTerms:
        """Per-example :class:`~vaebook.objectives.ELBOTerms` ``(n,)``, one sample of ``z`` each.

        ``kl`` is ``KL(q(z|x, u) || p(z|u))``; :func:`vaebook.train.fit` trains the model when
        given the pair ``(x, u)`` as its data.
        """
        x, u = self._inputs(x, u)
        mu, logvar = self.encode(x, u)
        prior_mu, prior_logvar = self.prior(u)
        z = sample_diag_normal(mu, logvar, generator=generator)
        rec = reconstruction_log_likelihood(x, self.decode(z), self.likelihood, self.log_gamma)
        kl = kl_diag_normal(mu, logvar, prior_mu, prior_logvar)
        return ELBOTerms(rec, kl, self.beta)

    @torch.no_grad()
    def reconstruct(self, x, u) -> torch.Tensor:
        """``E[x|z = μ(x, u)]``: the reconstruction at the posterior mean."""
        mu, _ = self.encode(x, u)
        return self.mean_image(mu)

    @torch.no_grad()
    def sample(self, u, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoder means at one draw ``z ~ p(z|u)`` per row of ``u`` ``(n, m)``."""
        prior_mu, prior_logvar = self.prior(u)
        return self.mean_image(sample_diag_normal(prior_mu, prior_logvar, generator=generator))


def mlp_ivae(
    input_shape,
    aux_dim: int,
    hidden: Sequence[int],
    latent_dim: int,
    prior_hidden: Sequence[int] = (50, 50),
    *,
    likelihood: str = "bernoulli",
    learn_prior_mean: bool = False,
    seed: int = 0,
) -> IVAE:
    """An :class:`IVAE` of MLPs, initialised from ``seed``.

    The encoder is ``[flatten(x), u] -> hidden -> (μ, log σ)`` (ReLU), the decoder mirrors
    it, and the prior network is ``u -> prior_hidden -> log σ†`` with leaky ReLU (torch's
    default slope 0.01), two hidden layers of 50 as in the paper's Table 1, which does not give
    the slope; the authors' released code uses three hidden layers of 50 with slope 0.1 (the
    paper's encoder and decoder are convolutional).

    Parameters
    ----------
    input_shape : shape of one example ``x``, e.g. ``(1, 32, 32)``.
    aux_dim : int, the size ``m`` of ``u``.
    hidden : hidden widths of the encoder (the decoder uses them reversed).
    latent_dim : int, ``κ``.
    prior_hidden : hidden widths of the prior network.
    likelihood, learn_prior_mean : as in :class:`IVAE`.
    seed : int, seeds the initial weights.
    """
    aux_dim = check_positive_int(aux_dim, "aux_dim")
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    input_shape = check_sizes(input_shape, "input_shape", minimum=1)
    data_dim = math.prod(input_shape)
    hidden = check_sizes(hidden, "hidden", minimum=1)
    prior_hidden = check_sizes(prior_hidden, "prior_hidden", minimum=1)
    prior_out = 2 * latent_dim if learn_prior_mean else latent_dim
    with seeded(seed):
        encoder = mlp_encoder((data_dim + aux_dim,), hidden, latent_dim)
        decoder = mlp_decoder(latent_dim, hidden[::-1], input_shape)
        prior = mlp([aux_dim, *prior_hidden, prior_out], activation="leaky_relu")
    return IVAE(encoder, decoder, prior, likelihood=likelihood, learn_prior_mean=learn_prior_mean)


@torch.no_grad()
def rescale_latents(model: IVAE, scales) -> IVAE:
    r"""A copy of ``model`` in which latent ``j`` is multiplied by ``scales[j]``: the scale freedom.

    With ``z' = a z`` (elementwise), the copy's encoder gives ``μ' = a μ`` and
    ``σ' = a² σ``, its prior ``μ†' = a μ†`` and ``σ†' = a² σ†``, and its decoder undoes the
    scaling, ``decode'(z') = decode(z)``. The reconstruction term is therefore unchanged, and
    so is the KL, which depends only on ``(μ - μ†)² / σ†`` and ``σ / σ†`` per latent: the
    objective cannot tell the two models apart, and only ratios such as ``σ / σ†`` carry
    meaning (Bonheme & Grzes' active condition, read relative to the prior).

    Parameters
    ----------
    model : an :class:`IVAE` whose encoder has linear ``mu`` and ``logvar`` heads (as
        :func:`mlp_ivae` builds), whose decoder starts with an ``nn.Linear`` on ``z`` and whose
        prior network ends with an ``nn.Linear``.
    scales : ``κ`` positive numbers (or one number for every latent).

    Returns
    -------
    a new :class:`IVAE`; ``model`` is left as it is.
    """
    if not isinstance(model, IVAE):
        raise TypeError(f"model must be an IVAE, got {type(model).__name__}")
    kappa = model.latent_dim
    scales = check_per_member(scales, "scales", kappa)
    first = _leaf_modules(model.decoder)[0]
    last = _leaf_modules(model.prior_net)[-1]
    prior_out = 2 * kappa if model.learn_prior_mean else kappa
    if not (
        isinstance(first, nn.Linear)
        and first.in_features == kappa
        and isinstance(last, nn.Linear)
        and last.out_features == prior_out
    ):
        raise ValueError(
            "model must have a decoder that starts with nn.Linear(κ, ·) and a prior network "
            f"that ends with nn.Linear(·, {prior_out}), as mlp_ivae builds"
        )
    scaled = copy.deepcopy(model)
    a = scales.to(scaled.encoder.mu.weight)
    log_a2 = 2 * torch.log(a)
    scaled.encoder.mu.weight.mul_(a[:, None])
    scaled.encoder.mu.bias.mul_(a)
    scaled.encoder.logvar.bias.add_(log_a2)
    _leaf_modules(scaled.decoder)[0].weight.div_(a)
    head = _leaf_modules(scaled.prior_net)[-1]
    if model.learn_prior_mean:  # outputs: means, then log-variances
        head.weight[:kappa].mul_(a[:, None])
        head.bias[:kappa].mul_(a)
        head.bias[kappa:].add_(log_a2)
    else:
        head.bias.add_(log_a2)
    return scaled


def _leaf_modules(module: nn.Module) -> list[nn.Module]:
    """The modules without children, in the order they were registered (``[module]`` if none)."""
    leaves = [m for m in module.modules() if not list(m.children())]
    return leaves or [module]


# -- reading a trained model: representations and the polarised regime ------------------------


@dataclass(frozen=True)
class Representations:
    """The representations of a dataset, float64 numpy arrays ``(n, κ)`` (the paper's notation).

    ``mean`` ``μ``, ``variance`` ``σ`` and ``sample`` ``z = μ + ε σ^½`` of the encoder;
    ``prior_mean`` ``μ†``, ``prior_variance`` ``σ†`` and ``prior_sample`` ``z† = μ† + ε† (σ†)^½``
    of the prior at each example's ``u`` (for a plain VAE, 0, 1 and a standard normal draw).
    """

    mean: np.ndarray
    variance: np.ndarray
    sample: np.ndarray
    prior_mean: np.ndarray
    prior_variance: np.ndarray
    prior_sample: np.ndarray


def representations(
    model: nn.Module, x, u=None, *, seed: int = 0, batch_size: int = 1024
) -> Representations:
    """Encode ``x`` (and ``u``) and draw one ``z`` and one ``z†`` per example.

    Parameters
    ----------
    model : an :class:`IVAE` (then ``u`` ``(n, m)`` is required) or a
        :class:`~vaebook.nets.VAE` (then ``u`` must be ``None``; the prior is ``N(0, I)``).
    x : tensor ``(n, ...)``.
    seed : int, seeds ``ε`` and ``ε†``.
    batch_size : examples encoded at a time (memory only; the result does not depend on it).

    Returns
    -------
    :class:`Representations`.
    """
    check_positive_int(seed, "seed", allow_zero=True)
    batch_size = check_positive_int(batch_size, "batch_size")
    x = as_tensor(x, "x")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch (n, ...), got shape {tuple(x.shape)}")
    if isinstance(model, IVAE):
        if u is None:
            raise ValueError("u is required for an IVAE: the prior p(z|u) depends on it")
        x, u = model._inputs(x, u)
    elif isinstance(model, VAE):
        if u is not None:
            raise ValueError("u must be None for a plain VAE (its prior is N(0, I))")
    else:
        raise TypeError(f"model must be an IVAE or a VAE, got {type(model).__name__}")
    ref = next(model.parameters())
    parts: list[tuple[torch.Tensor, ...]] = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(ref)
            if u is None:
                mu, logvar = model.encode(xb)
                prior_mu, prior_logvar = torch.zeros_like(mu), torch.zeros_like(logvar)
            else:
                ub = u[start : start + batch_size].to(ref)
                mu, logvar = model.encode(xb, ub)
                prior_mu, prior_logvar = model.prior(ub)
            parts.append((mu, logvar, prior_mu, prior_logvar))
    columns = zip(*parts, strict=True)
    mu, logvar, prior_mu, prior_logvar = (torch.cat(c).double().cpu() for c in columns)
    gen = torch.Generator().manual_seed(seed)
    z = sample_diag_normal(mu, logvar, generator=gen)
    z_prior = sample_diag_normal(prior_mu, prior_logvar, generator=gen)
    return Representations(
        *(t.numpy() for t in (mu, logvar.exp(), z, prior_mu, prior_logvar.exp(), z_prior))
    )


@dataclass(frozen=True)
class LatentClasses:
    """The result of :func:`classify_latents`.

    ``labels`` (κ,) holds ``"passive"``, ``"active"`` or ``"mixed"`` per latent;
    ``passive_fraction`` and ``active_fraction`` (κ,) are the shares of examples for which
    the latent is passive / active.
    """

    labels: np.ndarray
    passive_fraction: np.ndarray
    active_fraction: np.ndarray

    def indices(self, label: str) -> np.ndarray:
        """The latents carrying ``label`` (one of ``LATENT_LABELS``), as an int array."""
        check_choice(label, "label", LATENT_LABELS)
        return np.flatnonzero(self.labels == label)

    @property
    def passive(self) -> np.ndarray:
        """Indices of the passive latents."""
        return self.indices("passive")

    @property
    def active(self) -> np.ndarray:
        """Indices of the active latents."""
        return self.indices("active")

    @property
    def mixed(self) -> np.ndarray:
        """Indices of the mixed latents."""
        return self.indices("mixed")

    def counts(self) -> dict[str, int]:
        """``{"passive": n_p, "active": n_a, "mixed": n_m}``."""
        return {label: int((self.labels == label).sum()) for label in LATENT_LABELS}


def classify_latents(
    mu,
    var,
    prior_mu=None,
    prior_var=None,
    *,
    variance_ratio: float = 0.5,
    mean_tolerance: float = 0.5,
    consistency: float = 0.95,
) -> LatentClasses:
    r"""Passive, active and mixed latents from statistics over a dataset.

    The rule, per example ``i`` and latent ``j``, with ``ρ = σ_j / σ†_j`` the ratio of the
    posterior to the prior variance:

    - **active** when ``ρ < variance_ratio``: the encoder is much more precise than the prior
      (Proposition 1 (ii), ``σ ≪ σ†``);
    - **passive** when ``ρ ≥ variance_ratio`` *and* ``|μ_j - μ†_j| ≤ mean_tolerance (σ†_j)^½``:
      the posterior sits on the prior (Definition 1 (i) and Proposition 1 (i));
    - neither otherwise (a noisy latent that still moves its mean).

    Over the dataset a latent is **passive** (or **active**) when it is so for at least a
    ``consistency`` share of the examples, and **mixed** otherwise (Bonheme & Grzes' mixed
    variables: active for some inputs, passive for others).

    The variance criterion is relative to the prior, so it works when the iVAE's prior
    variances are far from 1; ``variance_ratio = 0.5`` is the midpoint between an active
    ``ρ ≈ 0`` and a passive ``ρ ≈ 1``, the threshold :func:`vaebook.two_stage.active_dimensions`
    uses for the standard prior.

    Parameters
    ----------
    mu, var : array-likes ``(n, κ)``: posterior means and variances (variances > 0).
    prior_mu, prior_var : array-likes broadcastable to ``(n, κ)``; default 0 and 1 (a plain
        VAE's prior), or the iVAE's ``μ†(u_i)``, ``σ†(u_i)``.
    variance_ratio : float in (0, 1).
    mean_tolerance : float > 0, in prior standard deviations.
    consistency : float in (0.5, 1].

    Returns
    -------
    :class:`LatentClasses`.
    """
    mu = as_tensor(mu, "mu", dtype=torch.float64)
    var = as_tensor(var, "var", dtype=torch.float64)
    if mu.dim() != 2 or mu.shape[0] == 0:
        raise ValueError(f"mu must be (n, kappa) with n >= 1, got shape {tuple(mu.shape)}")
    if var.shape != mu.shape:
        raise ValueError(f"var has shape {tuple(var.shape)} but mu has {tuple(mu.shape)}")
    if bool((var <= 0).any()):
        raise ValueError("var must hold positive variances")
    prior_mu = as_tensor(0.0 if prior_mu is None else prior_mu, "prior_mu", dtype=torch.float64)
    prior_var = as_tensor(1.0 if prior_var is None else prior_var, "prior_var", dtype=torch.float64)
    for value, name in ((prior_mu, "prior_mu"), (prior_var, "prior_var")):
        try:
            broadcasts = torch.broadcast_shapes(value.shape, mu.shape) == mu.shape
        except RuntimeError:
            broadcasts = False
        if not broadcasts:
            raise ValueError(
                f"{name} of shape {tuple(value.shape)} does not broadcast to mu's {tuple(mu.shape)}"
            )
    if bool((prior_var <= 0).any()):
        raise ValueError("prior_var must hold positive variances")
    variance_ratio = check_positive(variance_ratio, "variance_ratio")
    if variance_ratio >= 1.0:
        raise ValueError(f"variance_ratio must be in (0, 1), got {variance_ratio}")
    mean_tolerance = check_positive(mean_tolerance, "mean_tolerance")
    consistency = check_positive(consistency, "consistency")
    if not 0.5 < consistency <= 1.0:
        raise ValueError(f"consistency must be in (0.5, 1], got {consistency}")

    ratio = var / prior_var
    active = ratio < variance_ratio
    near_prior_mean = (mu - prior_mu).abs() <= mean_tolerance * prior_var.sqrt()
    passive = ~active & near_prior_mean
    passive_fraction = passive.double().mean(0).numpy()
    active_fraction = active.double().mean(0).numpy()
    labels = np.full(mu.shape[1], "mixed", dtype=object)
    labels[passive_fraction >= consistency] = "passive"
    labels[active_fraction >= consistency] = "active"
    return LatentClasses(labels.astype(str), passive_fraction, active_fraction)
