r"""The local geometry of a decoder around a near-perfect reconstruction.

Linearise the decoder mean at a posterior mean ``μ`` with its Jacobian ``J`` (``d × κ``) and
a Gaussian noise variance ``γ``; the expected VAE cost is then a function of the encoder
covariance ``Σ`` alone, and its minimiser shows which latents a decoder uses. Two chapters
build on these kernels: Dai & Wipf's small-γ analysis (``book/two_stage.md``, eqs. 83-85, where
the prior is ``N(0, I)``) and Bonheme & Grzes' Theorem 1 (``book/polarised.md``, eqs. 10-12,
with a general prior covariance ``Σ†``).

- :func:`decoder_jacobian`: ``J`` of any row-wise decoder, by forward-mode differentiation.
- :func:`local_cost` (Bonheme & Grzes eq. 10), its minimiser :func:`optimal_posterior_covariance`
  (eq. 11), the minimiser over *diagonal* covariances :func:`optimal_posterior_variances` (what a
  VAE's diagonal encoder can reach) and Weyl's :func:`eigenvalue_bounds` (eq. 12).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.autograd.forward_ad as fwAD

from .checks import as_tensor, check_positive
from .gaussian import LOG_2PI, cholesky_factor

__all__ = [
    "decoder_jacobian",
    "eigenvalue_bounds",
    "local_cost",
    "optimal_posterior_covariance",
    "optimal_posterior_variances",
]


def decoder_jacobian(decoder: Callable, z) -> torch.Tensor:
    """``∂f/∂z`` of a decoder at each row of ``z`` ``(n, r)``: ``(n, d, r)``.

    ``decoder`` maps ``(n, r)`` to ``(n, d)`` row by row (row ``i`` of the output depends on
    row ``i`` of the input only, as for :func:`vaebook.two_stage.bent_line` or an MLP) with
    differentiable torch operations. Column ``k`` of every Jacobian is one forward-mode
    derivative along latent ``k`` for the whole batch, so the cost is ``r`` forward passes and
    the memory that of one.
    """
    if not callable(decoder):
        raise TypeError(f"decoder must be callable, got {type(decoder).__name__}")
    z = as_tensor(z, "z").detach()
    if z.dim() != 2:
        raise ValueError(f"z must be (n, r), got {tuple(z.shape)}")
    columns = []
    with warnings.catch_warnings(), torch.no_grad(), fwAD.dual_level():
        # torch's forward AD loads its decompositions through torch.jit.script on first use,
        # which warns that torch.jit.script is deprecated: torch's internals, not ours
        warnings.filterwarnings("ignore", r".*torch\.jit\.script.*", DeprecationWarning)
        for k in range(z.shape[1]):
            direction = torch.zeros_like(z)
            direction[:, k] = 1.0
            out = decoder(fwAD.make_dual(z, direction))
            primal, tangent = fwAD.unpack_dual(out)
            if primal.dim() != 2 or primal.shape[0] != z.shape[0]:
                raise ValueError(f"decoder must map (n, r) to (n, d), got {tuple(primal.shape)}")
            columns.append(torch.zeros_like(primal) if tangent is None else tangent)
    return torch.stack(columns, -1)


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
