r"""Bonheme & Grzes (2023), "The Polarised Regime of Identifiable VAEs": kernels and the iVAE.

The chapter ``book/polarised.md`` uses these kernels. Notation follows the paper: the encoder
is ``q(z|x, u) = N(μ, diag σ)`` (``σ`` holds *variances*), the conditional prior is
``p(z|u) = N(μ†, diag σ†)``, and around a near-perfect reconstruction the decoder mean is
linearised with its Jacobian ``J`` (``d × κ``) and a Gaussian noise variance ``γ``.

- The proof of Theorem 1: :func:`local_cost` (eq. 10), its minimiser
  :func:`optimal_posterior_covariance` (eq. 11), the minimiser over *diagonal* covariances
  :func:`optimal_posterior_variances` (what a VAE's diagonal encoder can reach) and Weyl's
  :func:`eigenvalue_bounds` (eq. 12).
- The model of the experiments: :class:`IVAE` (encoder ``q(z|x, u)``, decoder, prior network
  ``u -> p(z|u)``) and :func:`mlp_ivae`, which builds one from MLPs.
- Reading a trained model: :func:`representations` (the mean, variance and sampled
  representations and their prior counterparts, for an iVAE or a plain VAE) and
  :func:`classify_latents` (passive / active / mixed, Definition 1 and Propositions 1-3).
"""

from __future__ import annotations

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
    check_positive,
    check_positive_int,
    check_sizes,
)
from .gaussian import LOG_2PI, cholesky_factor, kl_diag_normal, sample_diag_normal
from .nets import VAE, mlp, mlp_decoder, mlp_encoder, seeded
from .objectives import LIKELIHOODS, ELBOTerms, decoder_mean, reconstruction_log_likelihood
from .two_stage import decoder_jacobian

__all__ = [
    "IVAE",
    "LATENT_LABELS",
    "LatentClasses",
    "Representations",
    "classify_latents",
    "eigenvalue_bounds",
    "laplace_posterior_variances",
    "local_cost",
    "mlp_ivae",
    "optimal_posterior_covariance",
    "optimal_posterior_variances",
    "representations",
]

LATENT_LABELS = ("passive", "active", "mixed")


# -- the proof of Theorem 1: the local cost around a near-perfect reconstruction ------------


def _jacobian(J) -> torch.Tensor:
    J = as_tensor(J, "J")
    if J.dim() < 2:
        raise ValueError(f"J must be (..., d, kappa), got shape {tuple(J.shape)}")
    return J


def _prior_covariance(prior_cov, J: torch.Tensor) -> torch.Tensor:
    """``prior_cov`` as a matrix ``(..., κ, κ)``: a vector ``(κ,)`` holds diagonal variances."""
    prior_cov = as_tensor(prior_cov, "prior_cov", like=J)
    kappa = J.shape[-1]
    if prior_cov.dim() == 1:
        if prior_cov.shape[0] != kappa:
            raise ValueError(
                f"prior_cov has {prior_cov.shape[0]} variances but J has {kappa} columns"
            )
        if bool((prior_cov <= 0).any()):
            raise ValueError("prior_cov must hold positive variances")
        return torch.diag_embed(prior_cov)
    if prior_cov.dim() < 2 or prior_cov.shape[-2:] != (kappa, kappa):
        raise ValueError(
            f"prior_cov must be (kappa,) variances or (..., kappa, kappa) with kappa = {kappa} "
            f"(the columns of J), got shape {tuple(prior_cov.shape)}"
        )
    return prior_cov


def optimal_posterior_covariance(J, prior_cov, gamma: float) -> torch.Tensor:
    r"""The encoder covariance minimising the local cost (eq. 10): ``(Σ†⁻¹ + JᵀJ/γ)⁻¹`` (eq. 11).

    Parameters
    ----------
    J : tensor ``(..., d, κ)``, the decoder Jacobian ``μ‡'[μ]`` at the posterior mean.
    prior_cov : the prior covariance ``Σ†``: variances ``(κ,)`` (a diagonal prior, as in the
        paper) or a positive definite matrix ``(..., κ, κ)``.
    gamma : float > 0, the decoder noise variance ``γ``.

    Returns
    -------
    tensor ``(..., κ, κ)``, symmetric positive definite.

    Notes
    -----
    With ``Σ† = L Lᵀ`` (Cholesky) and ``Lᵀ JᵀJ L = V diag(s) Vᵀ``,
    ``Σ = L V diag(γ / (γ + s)) Vᵀ Lᵀ``. Nothing is inverted, so the ``O(γ)`` eigenvalues keep
    their relative accuracy when ``JᵀJ / γ`` is huge, and directions with ``s = 0`` (the null
    space of ``J``) keep exactly the prior's covariance. ``Σ† = I`` gives Dai & Wipf's eq. 83
    (:func:`vaebook.two_stage.optimal_encoder_covariance`).
    """
    J = _jacobian(J)
    gamma = check_positive(gamma, "gamma")
    chol = cholesky_factor(_prior_covariance(prior_cov, J), "prior_cov")
    JL = J @ chol
    s, V = torch.linalg.eigh(JL.mT @ JL)
    # eigenvalues at round-off level are the null space of J: exactly zero, so that those
    # directions keep the prior's covariance even when γ is below the round-off of s
    tolerance = s.shape[-1] * torch.finfo(s.dtype).eps * s.amax(-1, keepdim=True)
    s = torch.where(s <= tolerance, torch.zeros_like(s), s)
    shrink = gamma / (gamma + s)
    LV = chol @ V
    cov = (LV * shrink.unsqueeze(-2)) @ LV.mT
    return 0.5 * (cov + cov.mT)


def optimal_posterior_variances(J, prior_var, gamma: float) -> torch.Tensor:
    r"""The *diagonal* encoder covariance minimising eq. 10: ``σ_j = 1 / (1/σ†_j + |J_j|²/γ)``.

    A VAE's encoder is diagonal, so it cannot reach eq. 11 unless ``JᵀJ`` is diagonal. Over
    diagonal ``Σ`` eq. 10 separates into one term per latent,
    ``σ_j A_jj / 2 - log σ_j / 2`` with ``A = Σ†⁻¹ + JᵀJ/γ``, minimised at ``σ_j = 1 / A_jj``.
    A latent the decoder ignores (column ``J_j = 0``) keeps the prior variance exactly
    (passive); one it uses gets ``σ_j ≈ γ / |J_j|² = O(γ)`` (active).

    Parameters
    ----------
    J : tensor ``(..., d, κ)``, the decoder Jacobian.
    prior_var : prior variances ``σ†``, broadcastable to ``(..., κ)``, all > 0.
    gamma : float > 0.

    Returns
    -------
    tensor ``(..., κ)``.
    """
    J = _jacobian(J)
    gamma = check_positive(gamma, "gamma")
    prior_var = as_tensor(prior_var, "prior_var", like=J)
    if bool((prior_var <= 0).any()):
        raise ValueError("prior_var must hold positive variances")
    column_norms = (J**2).sum(-2)
    try:
        torch.broadcast_shapes(prior_var.shape, column_norms.shape)
    except RuntimeError as err:
        raise ValueError(
            f"prior_var of shape {tuple(prior_var.shape)} does not broadcast to "
            f"{tuple(column_norms.shape)} (the columns of J)"
        ) from err
    return prior_var * gamma / (gamma + prior_var * column_norms)


def laplace_posterior_variances(model: nn.Module, mu, prior_var) -> torch.Tensor:
    r"""The encoder variances a trained decoder calls for: eq. 11 over diagonal ``Σ``, at ``μ``.

    The decoder is linearised at each posterior mean, as in the proof of Theorem 1, and
    :func:`optimal_posterior_variances` is applied. For a Gaussian decoder the curvature of
    ``-log p(x|z)`` in the decoder mean is ``I / γ``. For a Bernoulli decoder with logits
    ``ℓ(z)`` and ``p = sigmoid(ℓ)`` it is ``diag(p (1 - p))`` in the logits (the Fisher
    information, i.e. the Gauss-Newton part of the Hessian), so ``J`` is replaced by
    ``diag(p (1 - p))^½ ∂ℓ/∂z`` and ``γ`` by 1.

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


def eigenvalue_bounds(J, prior_cov, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Weyl's bounds (eq. 12) on the eigenvalues of the optimal covariance (eq. 11).

    With ``λ‡_1 ≥ ... ≥ λ‡_κ`` the eigenvalues of ``JᵀJ`` and ``λ†_min``, ``λ†_max`` the
    extreme eigenvalues of ``Σ†``, the ``i``-th *smallest* eigenvalue ``λ_i`` of ``Σ`` obeys

    ``1 / (1/λ†_min + λ‡_i/γ) ≤ λ_i ≤ 1 / (1/λ†_max + λ‡_i/γ)``.

    Both bounds fall like ``γ / λ‡_i`` as ``γ → 0`` when ``λ‡_i > 0``; for the ``κ - r``
    zero eigenvalues of a rank-``r`` Jacobian they stay at ``[λ†_min, λ†_max]``.

    Parameters
    ----------
    J, prior_cov, gamma : as in :func:`optimal_posterior_covariance`.

    Returns
    -------
    ``(lower, upper)``, tensors ``(..., κ)`` in ascending order, to compare with
    ``torch.linalg.eigvalsh(optimal_posterior_covariance(J, prior_cov, gamma))``.
    """
    J = _jacobian(J)
    gamma = check_positive(gamma, "gamma")
    prior_matrix = _prior_covariance(prior_cov, J)
    cholesky_factor(prior_matrix, "prior_cov")  # checks: symmetric, positive definite
    prior = torch.linalg.eigvalsh(prior_matrix)
    jtj = torch.linalg.eigvalsh(J.mT @ J).flip(-1).clamp_min(0.0)  # descending
    lower = 1.0 / (1.0 / prior[..., :1] + jtj / gamma)
    upper = 1.0 / (1.0 / prior[..., -1:] + jtj / gamma)
    return lower, upper


def local_cost(cov, J, prior_cov, gamma: float, mean_offset=None) -> torch.Tensor:
    r"""The iVAE cost (eq. 4) after linearising the decoder at ``μ`` (eq. 10).

    ``1/2 tr(Σ (Σ†⁻¹ + JᵀJ/γ)) + d/2 log(2πγ)
    + 1/2 [(μ† - μ)ᵀ Σ†⁻¹ (μ† - μ) - κ + log|Σ†| - log|Σ|]``.

    The paper writes ``k/2 log(2πγ)`` with ``k`` the latent dimension; the Gaussian decoder
    over ``x ∈ R^d`` gives ``d/2``, as here. The term does not depend on ``Σ``, so eq. 11 is
    unaffected.

    Parameters
    ----------
    cov : tensor ``(..., κ, κ)``, the encoder covariance ``Σ`` (positive definite).
    J, prior_cov, gamma : as in :func:`optimal_posterior_covariance`.
    mean_offset : ``μ† - μ``, tensor ``(..., κ)``; default zero.

    Returns
    -------
    tensor ``(...)``, in nats.
    """
    J = _jacobian(J)
    gamma = check_positive(gamma, "gamma")
    prior = _prior_covariance(prior_cov, J)
    cov = as_tensor(cov, "cov", like=J)
    kappa = J.shape[-1]
    if cov.dim() < 2 or cov.shape[-2:] != (kappa, kappa):
        raise ValueError(f"cov must be (..., {kappa}, {kappa}), got shape {tuple(cov.shape)}")
    prior_chol = cholesky_factor(prior, "prior_cov")
    cov_chol = cholesky_factor(cov, "cov")
    eye = torch.eye(kappa, dtype=J.dtype, device=J.device)
    prior_inv = torch.cholesky_solve(eye.expand_as(prior), prior_chol)
    precision = prior_inv + J.mT @ J / gamma
    trace = torch.diagonal(cov @ precision, dim1=-2, dim2=-1).sum(-1)
    quad = torch.zeros_like(trace)
    if mean_offset is not None:
        delta = as_tensor(mean_offset, "mean_offset", like=J)
        if delta.dim() == 0 or delta.shape[-1] != kappa:
            raise ValueError(f"mean_offset must be (..., {kappa}), got {tuple(delta.shape)}")
        quad = (delta.unsqueeze(-2) @ prior_inv @ delta.unsqueeze(-1)).squeeze(-1).squeeze(-1)
    log_det = 2.0 * (
        torch.log(torch.diagonal(prior_chol, dim1=-2, dim2=-1)).sum(-1)
        - torch.log(torch.diagonal(cov_chol, dim1=-2, dim2=-1)).sum(-1)
    )
    d = J.shape[-2]
    return 0.5 * trace + 0.5 * d * (LOG_2PI + math.log(gamma)) + 0.5 * (quad - kappa + log_det)


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
    it, and the prior network is ``u -> prior_hidden -> log σ†`` with leaky ReLU, as in the
    paper's Table 1 (its encoder and decoder are convolutional).

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
