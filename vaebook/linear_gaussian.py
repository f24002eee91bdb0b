"""The linear-Gaussian latent-variable model, where everything is exact.

``z ~ N(0, I_k)`` and ``x | z ~ N(W z + b, σ² I_d)`` with ``W`` of shape ``(d, k)``. Its marginal
likelihood, its posterior and the ELBO of any Gaussian ``q(z|x)`` have closed forms, so the
primer uses it to check the ELBO identities to machine precision, and to show what β does to
the optimal encoder (:func:`beta_optimal_posterior`).
"""

from __future__ import annotations

import math

import torch

from .checks import as_tensor, check_positive
from .gaussian import LOG_2PI, kl_normal, log_normal
from .objectives import ELBOTerms

__all__ = [
    "beta_optimal_posterior",
    "exact_terms",
    "marginal_log_likelihood",
    "posterior",
]


def marginal_log_likelihood(x, W, b, sigma2) -> torch.Tensor:
    """``log p(x) = log N(x; b, W W^T + σ² I)``; ``x`` is ``(n, d)``, the result ``(n,)``."""
    x, W, b, sigma2 = _model(x, W, b, sigma2)
    d = W.shape[0]
    cov = W @ W.T + sigma2 * torch.eye(d, dtype=W.dtype, device=W.device)
    return log_normal(x, b, cov)


def posterior(x, W, b, sigma2) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact posterior ``p(z|x) = N(m(x), S)``.

    ``S = (I + W^T W / σ²)^{-1}`` and ``m(x) = S W^T (x - b) / σ²``.

    Returns
    -------
    mean : ``(n, k)``; cov : ``(k, k)`` (the same for every ``x``).
    """
    return beta_optimal_posterior(x, W, b, sigma2, beta=1.0)


def beta_optimal_posterior(x, W, b, sigma2, beta) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian ``q(z|x)`` maximising ``E_q[log p(x|z)] - β KL(q || N(0, I))``.

    Setting the derivatives with respect to the mean and covariance of ``q`` to zero gives
    ``S_β = β (β I + W^T W / σ²)^{-1}`` and ``m_β(x) = S_β W^T (x - b) / (β σ²)``: the exact
    posterior of the same model with noise variance ``β σ²`` (primer, Proposition
    ``prop-beta-noise``). At ``β = 1`` it is :func:`posterior`.

    Returns
    -------
    mean : ``(n, k)``; cov : ``(k, k)``.
    """
    x, W, b, sigma2 = _model(x, W, b, sigma2)
    beta = check_positive(beta, "beta")
    k = W.shape[1]
    precision = torch.eye(k, dtype=W.dtype, device=W.device) + W.T @ W / (beta * sigma2)
    cov = torch.linalg.inv(precision)
    cov = 0.5 * (cov + cov.T)
    mean = (x - b) @ W @ cov.T / (beta * sigma2)
    return mean, cov


def exact_terms(x, mean_q, cov_q, W, b, sigma2, beta=1.0) -> ELBOTerms:
    """Exact reconstruction and KL terms for a Gaussian ``q(z|x) = N(mean_q, cov_q)``.

    ``E_q[log p(x|z)] = -d/2 log(2π σ²) - (||x - b - W m||² + tr(W^T W S)) / (2 σ²)`` and
    ``KL(q || N(0, I))`` in closed form, so the ELBO is exact (no sampling).

    Parameters
    ----------
    x : ``(n, d)``; mean_q : ``(n, k)``; cov_q : ``(k, k)`` or ``(n, k, k)``.

    Returns
    -------
    :class:`~vaebook.objectives.ELBOTerms` with per-example tensors ``(n,)``.
    """
    x, W, b, sigma2 = _model(x, W, b, sigma2)
    d, k = W.shape
    mean_q = as_tensor(mean_q, "mean_q", like=x)
    cov_q = as_tensor(cov_q, "cov_q", like=x)
    if mean_q.shape != (x.shape[0], k):
        raise ValueError(f"mean_q must be ({x.shape[0]}, {k}), got {tuple(mean_q.shape)}")
    if cov_q.shape not in ((k, k), (x.shape[0], k, k)):
        raise ValueError(
            f"cov_q must be ({k}, {k}) or ({x.shape[0]}, {k}, {k}), got {tuple(cov_q.shape)}"
        )
    resid = x - b - mean_q @ W.T
    trace = torch.einsum("ij,...ji->...", W.T @ W, cov_q)
    rec = -0.5 * d * (LOG_2PI + math.log(sigma2)) - ((resid**2).sum(-1) + trace) / (2 * sigma2)
    zeros = torch.zeros(k, dtype=x.dtype, device=x.device)
    eye = torch.eye(k, dtype=x.dtype, device=x.device)
    kl = kl_normal(mean_q, cov_q, zeros, eye)
    return ELBOTerms(rec, kl.expand_as(rec), check_positive(beta, "beta"))


def _model(x, W, b, sigma2):
    W = as_tensor(W, "W")
    if W.dim() != 2:
        raise ValueError(f"W must be a (d, k) matrix, got shape {tuple(W.shape)}")
    x = as_tensor(x, "x", like=W)
    if x.dim() != 2 or x.shape[1] != W.shape[0]:
        raise ValueError(f"x must be (n, {W.shape[0]}) to match W, got {tuple(x.shape)}")
    b = as_tensor(b, "b", like=W)
    if b.dim() > 1 or (b.dim() == 1 and b.shape[0] != W.shape[0]):
        raise ValueError(f"b must be a number or a ({W.shape[0]},) vector, got {tuple(b.shape)}")
    return x, W, b, check_positive(sigma2, "sigma2")
