r"""The Gaussian toolbox: densities, entropies, KL divergences and reparameterised sampling.

Every chapter of the book uses these. Diagonal Gaussians are parameterised by their mean and
*log*-variance (what an encoder outputs); full-covariance Gaussians by mean and covariance
matrix. The event dimension is always the last one and results are summed over it, so a batch
``(n, d)`` of means gives ``(n,)`` log-densities or divergences. Shapes broadcast.

The closed forms are those of the primer (:doc:`/book/primer`), e.g. for diagonal Gaussians

.. math::

    \mathrm{KL}(\mathcal N(\mu_q, \sigma_q^2) \,\|\, \mathcal N(\mu_p, \sigma_p^2))
    = \tfrac12 \sum_j \Big[
      \frac{\sigma_{q,j}^2 + (\mu_{q,j} - \mu_{p,j})^2}{\sigma_{p,j}^2}
      - 1 - \log \frac{\sigma_{q,j}^2}{\sigma_{p,j}^2} \Big].
"""

from __future__ import annotations

import math

import torch

from .checks import as_tensor, check_positive_int, check_same_last_dim

__all__ = [
    "cholesky_factor",
    "entropy_diag_normal",
    "entropy_normal",
    "kl_diag_normal",
    "kl_normal",
    "log_normal",
    "log_normal_diag",
    "sample_diag_normal",
    "sample_normal",
]

LOG_2PI = math.log(2 * math.pi)


def log_normal_diag(x, mu, logvar) -> torch.Tensor:
    """Log-density of ``x`` under the diagonal Gaussian ``N(mu, diag(exp(logvar)))``.

    Parameters
    ----------
    x, mu, logvar : tensors broadcastable to ``(..., d)`` (numbers are accepted for ``mu``
        and ``logvar``).

    Returns
    -------
    tensor of shape ``(...)``: ``-1/2 sum_j [log 2π + logvar_j + (x_j - mu_j)^2 / exp(logvar_j)]``.
    """
    x = as_tensor(x, "x")
    mu = as_tensor(mu, "mu", like=x)
    logvar = as_tensor(logvar, "logvar", like=x)
    _check_event(x, "x", mu, "mu")
    _check_event(x, "x", logvar, "logvar")
    sq = (x - mu) ** 2 * torch.exp(-logvar)
    return -0.5 * (LOG_2PI + logvar + sq).sum(-1)


def log_normal(x, mu, cov) -> torch.Tensor:
    """Log-density of ``x`` under the full-covariance Gaussian ``N(mu, cov)``.

    Parameters
    ----------
    x, mu : tensors broadcastable to ``(..., d)``.
    cov : tensor ``(..., d, d)``, symmetric positive definite.

    Returns
    -------
    tensor ``(...)``: ``-1/2 [d log 2π + log det cov + (x - mu)^T cov^{-1} (x - mu)]``,
    computed through a Cholesky factor.
    """
    x = as_tensor(x, "x")
    mu = as_tensor(mu, "mu", like=x)
    chol = cholesky_factor(as_tensor(cov, "cov", like=x), "cov")
    _check_event(x, "x", mu, "mu")
    if chol.shape[-1] != x.shape[-1]:
        raise ValueError(f"cov must be ({x.shape[-1]}, {x.shape[-1]}), got {tuple(chol.shape)}")
    diff = (x - mu).unsqueeze(-1)
    batch = torch.broadcast_shapes(diff.shape[:-2], chol.shape[:-2])
    diff = diff.expand(*batch, *diff.shape[-2:])
    chol = chol.expand(*batch, *chol.shape[-2:])
    white = torch.linalg.solve_triangular(chol, diff, upper=False).squeeze(-1)
    half_logdet = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    d = x.shape[-1]
    return -0.5 * (d * LOG_2PI + (white**2).sum(-1)) - half_logdet


def entropy_diag_normal(logvar) -> torch.Tensor:
    """Differential entropy of ``N(mu, diag(exp(logvar)))``: ``1/2 sum_j (1 + log 2π + logvar_j)``.

    ``logvar`` has shape ``(..., d)``; the result has shape ``(...)``.
    """
    logvar = as_tensor(logvar, "logvar")
    if logvar.dim() == 0:
        raise ValueError("logvar must have a last (event) dimension")
    return 0.5 * (1.0 + LOG_2PI + logvar).sum(-1)


def entropy_normal(cov) -> torch.Tensor:
    """Differential entropy of ``N(mu, cov)``: ``1/2 (d (1 + log 2π) + log det cov)``.

    ``cov`` has shape ``(..., d, d)``; the result has shape ``(...)``.
    """
    chol = cholesky_factor(as_tensor(cov, "cov"), "cov")
    d = chol.shape[-1]
    return 0.5 * d * (1.0 + LOG_2PI) + torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)


def kl_diag_normal(mu_q, logvar_q, mu_p=0.0, logvar_p=0.0) -> torch.Tensor:
    """``KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p)))`` for diagonal Gaussians.

    The default prior is the standard normal, so ``kl_diag_normal(mu, logvar)`` is the KL term
    of the VAE objective. Summed over the last dimension.

    Parameters
    ----------
    mu_q, logvar_q : tensors ``(..., d)``.
    mu_p, logvar_p : tensors broadcastable to ``(..., d)``, or numbers (default 0).

    Returns
    -------
    tensor ``(...)``, non-negative.

    Notes
    -----
    With ``r = logvar_q - logvar_p`` the per-coordinate divergence is
    ``1/2 [exp(r) - 1 - r + (mu_q - mu_p)^2 exp(-logvar_p)]``. ``exp(r) - 1 - r`` is computed
    as ``expm1(r) - r``, or by its Taylor series when ``|r| < 0.1`` (where the subtraction
    would still cancel), so the result keeps full relative precision when ``q`` is close to
    ``p``, and no overflow occurs for log-variances in ``[-30, 30]``.
    """
    mu_q = as_tensor(mu_q, "mu_q")
    logvar_q = as_tensor(logvar_q, "logvar_q", like=mu_q)
    mu_p = as_tensor(mu_p, "mu_p", like=mu_q)
    logvar_p = as_tensor(logvar_p, "logvar_p", like=mu_q)
    _check_event(mu_q, "mu_q", logvar_q, "logvar_q")
    _check_event(mu_q, "mu_q", mu_p, "mu_p")
    _check_event(mu_q, "mu_q", logvar_p, "logvar_p")
    r = logvar_q - logvar_p
    return 0.5 * (_exp_minus_1_minus(r) + (mu_q - mu_p) ** 2 * torch.exp(-logvar_p)).sum(-1)


def kl_normal(mu_q, cov_q, mu_p, cov_p) -> torch.Tensor:
    """``KL(N(mu_q, cov_q) || N(mu_p, cov_p))`` for full-covariance Gaussians.

    ``1/2 [tr(cov_p^{-1} cov_q) + (mu_p - mu_q)^T cov_p^{-1} (mu_p - mu_q) - d
    + log det cov_p - log det cov_q]``, computed with Cholesky factors.

    Parameters
    ----------
    mu_q, mu_p : tensors ``(..., d)``.
    cov_q, cov_p : tensors ``(..., d, d)``, symmetric positive definite.

    Returns
    -------
    tensor ``(...)``.
    """
    mu_q = as_tensor(mu_q, "mu_q")
    mu_p = as_tensor(mu_p, "mu_p", like=mu_q)
    chol_q = cholesky_factor(as_tensor(cov_q, "cov_q", like=mu_q), "cov_q")
    chol_p = cholesky_factor(as_tensor(cov_p, "cov_p", like=mu_q), "cov_p")
    _check_event(mu_q, "mu_q", mu_p, "mu_p")
    d = mu_q.shape[-1]
    for chol, name in ((chol_q, "cov_q"), (chol_p, "cov_p")):
        if chol.shape[-1] != d:
            raise ValueError(f"{name} must be ({d}, {d}), got {tuple(chol.shape)}")
    batch = torch.broadcast_shapes(
        mu_q.shape[:-1], mu_p.shape[:-1], chol_q.shape[:-2], chol_p.shape[:-2]
    )
    chol_q = chol_q.expand(*batch, d, d)
    chol_p = chol_p.expand(*batch, d, d)
    diff = (mu_p - mu_q).expand(*batch, d).unsqueeze(-1)
    # tr(P^{-1} Q) = ||L_p^{-1} L_q||_F^2 and the Mahalanobis term = ||L_p^{-1} diff||^2.
    m = torch.linalg.solve_triangular(chol_p, chol_q, upper=False)
    w = torch.linalg.solve_triangular(chol_p, diff, upper=False).squeeze(-1)
    logdet_p = 2 * torch.log(torch.diagonal(chol_p, dim1=-2, dim2=-1)).sum(-1)
    logdet_q = 2 * torch.log(torch.diagonal(chol_q, dim1=-2, dim2=-1)).sum(-1)
    trace = (m**2).sum((-2, -1))
    return 0.5 * (trace + (w**2).sum(-1) - d + logdet_p - logdet_q)


def sample_diag_normal(mu, logvar, *, n_samples: int | None = None, generator=None):
    """Reparameterised samples ``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)``.

    Gradients flow to ``mu`` and ``logvar`` (the reparameterisation trick).

    Parameters
    ----------
    mu, logvar : tensors broadcastable to ``(..., d)``.
    n_samples : optional int; when given, the result has a leading axis of that size.
    generator : optional ``torch.Generator`` on the same device as ``mu``, for reproducible noise.

    Returns
    -------
    tensor ``(..., d)`` or ``(n_samples, ..., d)``.
    """
    mu = as_tensor(mu, "mu")
    logvar = as_tensor(logvar, "logvar", like=mu)
    _check_event(mu, "mu", logvar, "logvar")
    shape = torch.broadcast_shapes(mu.shape, logvar.shape)
    if n_samples is not None:
        shape = (check_positive_int(n_samples, "n_samples"), *shape)
    eps = _standard_normal(shape, mu, generator)
    return mu + torch.exp(0.5 * logvar) * eps


def sample_normal(mu, cov, *, n_samples: int | None = None, generator=None):
    """Reparameterised samples ``z = mu + L eps`` of ``N(mu, cov)`` with ``cov = L L^T``.

    Parameters
    ----------
    mu : tensor ``(..., d)``; cov : tensor ``(..., d, d)``, symmetric positive definite.
    n_samples : optional int, leading sample axis; generator : optional ``torch.Generator``.

    Returns
    -------
    tensor ``(..., d)`` or ``(n_samples, ..., d)``.
    """
    mu = as_tensor(mu, "mu")
    chol = cholesky_factor(as_tensor(cov, "cov", like=mu), "cov")
    d = mu.shape[-1] if mu.dim() else 0
    if chol.shape[-1] != d:
        raise ValueError(f"cov must be ({d}, {d}) to match mu, got {tuple(chol.shape)}")
    shape = torch.broadcast_shapes(mu.shape, chol.shape[:-1])
    if n_samples is not None:
        shape = (check_positive_int(n_samples, "n_samples"), *shape)
    eps = _standard_normal(shape, mu, generator)
    return mu + (chol @ eps.unsqueeze(-1)).squeeze(-1)


def _standard_normal(shape, like: torch.Tensor, generator) -> torch.Tensor:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return torch.randn(shape, dtype=like.dtype, device=like.device, generator=generator)


def _exp_minus_1_minus(r: torch.Tensor) -> torch.Tensor:
    """``exp(r) - 1 - r`` to full relative precision (Taylor series up to ``r^10`` near 0)."""
    small = r.abs() < 0.1
    rs = torch.where(small, r, torch.zeros_like(r))
    series = torch.full_like(rs, 1 / math.factorial(10))
    for n in range(9, 1, -1):
        series = series * rs + 1 / math.factorial(n)
    return torch.where(small, rs * rs * series, torch.expm1(r) - r)


def _check_event(a, a_name, b, b_name) -> None:
    if b.dim() == 0:
        return  # a number broadcasts over every coordinate
    check_same_last_dim(a, a_name, b, b_name)


def cholesky_factor(cov: torch.Tensor, name: str = "cov") -> torch.Tensor:
    """The lower Cholesky factor of ``cov`` ``(..., d, d)``, after checking that it is square,
    symmetric and positive definite (a ``ValueError`` naming ``name`` otherwise)."""
    if cov.dim() < 2 or cov.shape[-1] != cov.shape[-2]:
        raise ValueError(f"{name} must be a (..., d, d) matrix, got shape {tuple(cov.shape)}")
    if not torch.allclose(cov, cov.transpose(-1, -2), rtol=1e-5, atol=1e-8):
        raise ValueError(f"{name} must be symmetric")
    chol, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        raise ValueError(f"{name} must be positive definite")
    return chol
