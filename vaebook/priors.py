r"""The priors of Mathieu et al. (2019), their annealed versions, and the KL to them.

- **Priors** (§6, Appendix B): :func:`isotropic_gaussian`, :func:`anisotropic_gaussian` (with
  :func:`pca_variances`), :func:`student_t`, :func:`gaussian_mixture_2d` (eq. 9) and
  :func:`spike_and_slab`. Each is a :class:`Prior`: ``log_prob(z)`` sums over the last axis,
  ``sample(n, generator)`` returns ``(n, d)``; densities come from ``torch.distributions``,
  sampling is written out so that a ``torch.Generator`` makes it reproducible.
- **The annealed prior** of Theorem 1 (eq. 3), :math:`f_\beta = p^\beta / F_\beta`:
  :func:`annealed_log_normaliser` (closed form or quadrature) and :func:`annealed_log_prob`.
- **KL(q(z|x) || p(z))** of a Gaussian encoder to any of these priors, analytic or Monte
  Carlo: :func:`kl_to_prior` (diagonal encoder) and :func:`kl_full_to_prior` (full covariance,
  Theorem 2).

Shapes: ``d`` is the latent dimension, ``n`` the number of examples, ``S`` a number of Monte
Carlo samples.
"""

from __future__ import annotations

import itertools
import math

import torch
from scipy import integrate
from torch import distributions as td

from .checks import (
    as_tensor,
    check_choice,
    check_positive,
    check_positive_int,
)
from .gaussian import (
    LOG_2PI,
    entropy_diag_normal,
    entropy_normal,
    kl_diag_normal,
    kl_normal,
)

__all__ = [
    "GaussianMixturePrior",
    "GaussianPrior",
    "Prior",
    "SpikeAndSlabPrior",
    "StudentTPrior",
    "anisotropic_gaussian",
    "annealed_log_normaliser",
    "annealed_log_prob",
    "gaussian_mixture_2d",
    "isotropic_gaussian",
    "kl_full_to_prior",
    "kl_to_prior",
    "pca_variances",
    "spike_and_slab",
    "student_t",
]

_F64 = torch.float64


# --- priors ----------------------------------------------------------------------------------


class Prior:
    """A prior ``p(z)`` on ``R^d``: log-density summed over the last axis, and sampling.

    Subclasses build a ``torch.distributions`` object (event shape ``(d,)``) in the dtype and
    device of the argument, so one prior serves float32 training and float64 checks, on CPU
    or CUDA. Parameters are stored in float64 on the CPU.
    """

    dim: int
    is_gaussian = False  # N(0, diag(variances)): closed forms exist
    is_factorised = False  # independent coordinates: F_β is a product of 1-D integrals

    def distribution(self, *, dtype=None, device=None) -> td.Distribution:
        """The prior as a ``torch.distributions`` object with event shape ``(d,)``."""
        raise NotImplementedError

    def log_prob(self, z) -> torch.Tensor:
        """``log p(z)`` for ``z`` of shape ``(..., d)``; returns shape ``(...)``."""
        z = as_tensor(z, "z")
        if z.dim() == 0 or z.shape[-1] != self.dim:
            raise ValueError(f"z must have shape (..., {self.dim}), got {tuple(z.shape)}")
        return self.distribution(dtype=z.dtype, device=z.device).log_prob(z)

    def sample(self, n: int, generator=None, *, dtype=None, device=None) -> torch.Tensor:
        """``n`` independent draws, shape ``(n, d)``.

        ``generator`` (a ``torch.Generator``) makes the draws reproducible; ``device`` defaults
        to the generator's, ``dtype`` to ``torch.get_default_dtype()``.
        """
        n = check_positive_int(n, "n")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        return self._sample(n, generator, dtype, torch.device(device))

    def _sample(self, n, generator, dtype, device) -> torch.Tensor:
        raise NotImplementedError


class _FactorisedPrior(Prior):
    """``p(z) = prod_j p_j(z_j)``; subclasses give the 1-D factors as a batch ``(d,)``."""

    is_factorised = True
    _iid = True  # all factors equal: one 1-D quadrature serves every coordinate

    def coordinates(self, *, dtype=None, device=None) -> td.Distribution:
        """The 1-D factors ``p_j`` as one distribution with batch shape ``(d,)``."""
        raise NotImplementedError

    def distribution(self, *, dtype=None, device=None) -> td.Distribution:
        return td.Independent(self.coordinates(dtype=dtype, device=device), 1)

    def _breaks(self, j: int) -> list[float]:
        """Length scales of factor ``j``, used as quadrature break points."""
        return [1.0]


class GaussianPrior(_FactorisedPrior):
    """``N(0, diag(variances))``; build it with :func:`isotropic_gaussian` or
    :func:`anisotropic_gaussian`. ``variances`` is a float64 tensor ``(d,)``."""

    is_gaussian = True

    def __init__(self, variances):
        variances = as_tensor(variances, "variances", dtype=_F64).detach().cpu()
        if variances.dim() != 1 or variances.numel() == 0:
            raise ValueError(f"variances must be a 1-D tensor (d,), got {tuple(variances.shape)}")
        if bool((variances <= 0).any()):
            raise ValueError("variances must all be > 0")
        self.variances = variances
        self.dim = variances.numel()
        self._iid = bool((variances == variances[0]).all())

    @property
    def log_variances(self) -> torch.Tensor:
        """``log variances``, float64 ``(d,)``."""
        return torch.log(self.variances)

    def coordinates(self, *, dtype=None, device=None):
        scale = self.variances.sqrt().to(dtype=dtype or _F64, device=device)
        return td.Normal(torch.zeros_like(scale), scale)

    def _breaks(self, j):
        return [math.sqrt(self.variances[j].item())]

    def _sample(self, n, generator, dtype, device):
        eps = torch.randn(n, self.dim, generator=generator, dtype=dtype, device=device)
        return eps * self.variances.sqrt().to(dtype=dtype, device=device)

    def __repr__(self):
        return f"GaussianPrior(variances={self.variances.tolist()})"


class StudentTPrior(_FactorisedPrior):
    """``prod_j StudentT(z_j; nu)`` (location 0, scale 1); see :func:`student_t`."""

    def __init__(self, dim: int, nu: float):
        self.dim = check_positive_int(dim, "d")
        self.nu = check_positive(nu, "nu")

    def coordinates(self, *, dtype=None, device=None):
        zeros = torch.zeros(self.dim, dtype=dtype or _F64, device=device)
        return td.StudentT(self.nu, zeros, torch.ones_like(zeros))

    def _sample(self, n, generator, dtype, device):
        # Bailey's (1994) polar method: with (U, V) uniform on the unit disc and W = U²+V²,
        # T = U sqrt(ν (W^{-2/ν} - 1) / W) is Student-t(ν). Exact for every ν > 0.
        need, parts = n * self.dim, []
        while need > 0:
            m = int(1.3 * need) + 16
            uv = 2 * torch.rand(m, 2, generator=generator, dtype=_F64, device=device) - 1
            w = (uv**2).sum(-1)
            keep = (w < 1) & (w > 0)
            u, w = uv[keep, 0], w[keep]
            t = u * torch.sqrt(self.nu * torch.expm1(-2 / self.nu * torch.log(w)) / w)
            parts.append(t[:need])
            need -= parts[-1].numel()
        return torch.cat(parts).reshape(n, self.dim).to(dtype)

    def __repr__(self):
        return f"StudentTPrior(d={self.dim}, nu={self.nu})"


class SpikeAndSlabPrior(_FactorisedPrior):
    """``prod_j [γ N(z_j; 0, σ0²) + (1 - γ) N(z_j; 0, 1)]`` (Appendix B); see
    :func:`spike_and_slab`."""

    def __init__(self, dim: int, gamma: float, sigma0: float = 0.05):
        self.dim = check_positive_int(dim, "d")
        self.gamma = check_positive(gamma, "gamma", allow_zero=True)
        if self.gamma > 1:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        self.sigma0 = check_positive(sigma0, "sigma0")

    def coordinates(self, *, dtype=None, device=None):
        dtype = dtype or _F64
        probs = torch.tensor([self.gamma, 1 - self.gamma], dtype=dtype, device=device)
        scales = torch.tensor([self.sigma0, 1.0], dtype=dtype, device=device)
        return td.MixtureSameFamily(
            _categorical(probs.expand(self.dim, 2)),
            td.Normal(torch.zeros(self.dim, 2, dtype=dtype, device=device), scales),
        )

    def _breaks(self, j):
        return [self.sigma0, 1.0]

    def _sample(self, n, generator, dtype, device):
        spike = torch.rand(n, self.dim, generator=generator, dtype=dtype, device=device)
        eps = torch.randn(n, self.dim, generator=generator, dtype=dtype, device=device)
        return torch.where(spike < self.gamma, self.sigma0 * eps, eps)

    def __repr__(self):
        return f"SpikeAndSlabPrior(d={self.dim}, gamma={self.gamma}, sigma0={self.sigma0})"


class GaussianMixturePrior(Prior):
    """``sum_c weights_c N(z; means_c, variance I)`` (eq. 9); see :func:`gaussian_mixture_2d`.

    ``means`` is ``(C, d)``, ``variance`` a number, ``weights`` ``(C,)`` (default equal).
    """

    def __init__(self, means, variance: float, weights=None):
        means = as_tensor(means, "means", dtype=_F64).detach().cpu()
        if means.dim() != 2:
            raise ValueError(f"means must be (C, d), got {tuple(means.shape)}")
        self.means = means
        self.variance = check_positive(variance, "variance")
        c, self.dim = means.shape
        if weights is None:
            weights = torch.full((c,), 1 / c, dtype=_F64)
        weights = as_tensor(weights, "weights", dtype=_F64).detach().cpu()
        if weights.shape != (c,) or bool((weights < 0).any()):
            raise ValueError(f"weights must be {c} non-negative numbers")
        if abs(weights.sum().item() - 1) > 1e-12:
            raise ValueError(f"weights must sum to 1, got {weights.sum().item()}")
        self.weights = weights

    def distribution(self, *, dtype=None, device=None):
        dtype = dtype or _F64
        means = self.means.to(dtype=dtype, device=device)
        components = td.Independent(
            td.Normal(means, torch.full_like(means, math.sqrt(self.variance))), 1
        )
        return td.MixtureSameFamily(
            _categorical(self.weights.to(dtype=dtype, device=device)), components
        )

    def _sample(self, n, generator, dtype, device):
        k = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=dtype, device=device)
        return self.means.to(dtype=dtype, device=device)[k] + math.sqrt(self.variance) * eps

    def __repr__(self):
        return f"GaussianMixturePrior(C={self.means.shape[0]}, variance={self.variance})"


def _categorical(probs: torch.Tensor) -> td.Categorical:
    # log-weights, -inf for a zero weight: Categorical(probs=...) would clamp 0 to ~1e-16,
    # which gives a wrong density in the tails of a degenerate mixture (γ = 0 or 1).
    return td.Categorical(logits=torch.log(probs), validate_args=False)


def isotropic_gaussian(d: int, variance: float = 1.0) -> GaussianPrior:
    """The standard prior ``N(0, variance I_d)`` (``variance`` is the paper's σ in Theorem 2)."""
    d = check_positive_int(d, "d")
    variance = check_positive(variance, "variance")
    return GaussianPrior(torch.full((d,), variance, dtype=_F64))


def anisotropic_gaussian(variances) -> GaussianPrior:
    """``N(0, diag(variances))`` for a 1-D tensor of ``d`` positive variances (§6.1, Fig. 2)."""
    return GaussianPrior(variances)


def pca_variances(x, d: int) -> torch.Tensor:
    """Prior variances from the top-``d`` principal components of ``x``, summing to ``d``.

    The eigenvalues ``λ_1 ≥ ... ≥ λ_d`` of the sample covariance of ``x`` are rescaled to
    ``d λ_j / sum_k λ_k``, so the total prior variance is held at ``d`` (that of ``N(0, I_d)``)
    and β is not implicitly rescaled. (Appendix B of the paper instead maps the top singular
    values through a softmax; the purpose, fixing the overall scale, is the same.)

    Parameters
    ----------
    x : tensor ``(n, p)`` with ``n ≥ 2`` rows (data, or codes of the data) and ``p ≥ d``.
    d : int, the latent dimension.

    Returns
    -------
    tensor ``(d,)`` in ``x``'s dtype, positive, decreasing, summing to ``d``.
    """
    x = as_tensor(x, "x")
    d = check_positive_int(d, "d")
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"x must be (n, p) with n >= 2, got {tuple(x.shape)}")
    if d > x.shape[1]:
        raise ValueError(f"d must be <= the number of columns of x ({x.shape[1]}), got {d}")
    centred = x - x.mean(0)
    eig = torch.linalg.eigvalsh(centred.T @ centred / (x.shape[0] - 1)).flip(0)[:d]
    if bool((eig <= 1e-12 * eig[0].clamp_min(1e-300)).any()):
        raise ValueError(f"x must have at least d={d} directions of non-zero variance")
    return d * eig / eig.sum()


def student_t(d: int, nu: float) -> StudentTPrior:
    """``prod_j StudentT(z_j; nu)`` (§6.1, Fig. 2 bottom); tends to ``N(0, I)`` as ν → ∞."""
    return StudentTPrior(d, nu)


def gaussian_mixture_2d() -> GaussianMixturePrior:
    """Appendix B, eq. (9): 4 equal components at (0, ±1), (±1, 0), covariance 0.03 I_2."""
    means = torch.tensor([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0]], dtype=_F64)
    return GaussianMixturePrior(means, 0.03)


def spike_and_slab(d: int, gamma: float, sigma0: float = 0.05) -> SpikeAndSlabPrior:
    """Sparse prior of §6.3: each coordinate ``γ N(0, σ0²) + (1 - γ) N(0, 1)``, γ in [0, 1]."""
    return SpikeAndSlabPrior(d, gamma, sigma0)


# --- Theorem 1: the annealed prior ---------------------------------------------------------

_NORMALISER_METHODS = ("auto", "closed_form", "quadrature")


def annealed_log_normaliser(prior: Prior, beta, *, method: str = "auto") -> float:
    r"""``log F_β = log ∫ p(z)^β dz``, the normaliser of the annealed prior (Theorem 1, eq. 3).

    Closed forms (``method="closed_form"``, chosen by ``"auto"`` when available):

    - Gaussian ``N(0, diag(σ²))``: :math:`F_\beta = \prod_j (2\pi\sigma_j^2)^{(1-\beta)/2}
      \beta^{-1/2}` (the annealed prior is :math:`N(0, \mathrm{diag}(\sigma^2)/\beta)`);
    - Student-t with ν degrees of freedom, per coordinate: with
      :math:`c_\nu = \Gamma(\frac{\nu+1}2)/(\sqrt{\nu\pi}\,\Gamma(\frac\nu2))` and
      :math:`a = \beta(\nu+1)/2`, :math:`\int c_\nu^\beta (1 + t^2/\nu)^{-a} dt
      = c_\nu^\beta \sqrt\nu\, B(\tfrac12, a - \tfrac12)`, finite only when
      :math:`\beta(\nu + 1) > 1`.

    Quadrature (``"quadrature"``, and ``"auto"`` otherwise): for a factorised prior
    :math:`F_\beta = \prod_j \int p_j(t)^\beta dt`; each symmetric 1-D integral is
    ``2 ∫_0^∞`` computed by ``scipy.integrate.quad`` in float64 (relative tolerance 1e-12,
    split at the prior's length scales), so ``log F_β`` is accurate to about ``1e-11 d``
    (tested against the closed forms). For the 2-D Gaussian mixture a tensor-product
    rectangle (= trapezoid) rule is used on a grid of step ``min(σ, σ/√β)/6`` reaching
    ``12 σ/√β`` past the outermost mean; for integrands this smooth it converges
    geometrically, and it matches the closed form of ``F_2`` to better than 1e-10.

    Parameters
    ----------
    prior : :class:`Prior`.
    beta : float > 0.
    method : ``"auto"``, ``"closed_form"`` or ``"quadrature"``.

    Returns
    -------
    float, ``log F_β`` (0 at β = 1).
    """
    if not isinstance(prior, Prior):
        raise TypeError(f"prior must be a vaebook.priors.Prior, got {type(prior).__name__}")
    beta = check_positive(beta, "beta")
    check_choice(method, "method", _NORMALISER_METHODS)
    has_closed_form = prior.is_gaussian or isinstance(prior, StudentTPrior)
    if method == "closed_form" and not has_closed_form:
        raise ValueError(f"method='closed_form' is not available for {prior!r}")
    if isinstance(prior, StudentTPrior) and beta * (prior.nu + 1) <= 1:
        raise ValueError(
            f"beta must exceed 1/(nu + 1) = {1 / (prior.nu + 1):.4g} for a Student-t prior: "
            f"otherwise ∫ p^β diverges (got beta={beta})"
        )
    if method != "quadrature" and prior.is_gaussian:
        log_2pi_var = LOG_2PI + prior.log_variances
        return (0.5 * (1 - beta) * log_2pi_var.sum() - 0.5 * prior.dim * math.log(beta)).item()
    if method != "quadrature" and isinstance(prior, StudentTPrior):
        nu, a = prior.nu, beta * (prior.nu + 1) / 2
        log_c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
        log_b = math.lgamma(0.5) + math.lgamma(a - 0.5) - math.lgamma(a)
        return prior.dim * (beta * log_c + 0.5 * math.log(nu) + log_b)
    if prior.is_factorised:
        return _factorised_log_normaliser(prior, beta)
    if isinstance(prior, GaussianMixturePrior) and prior.dim <= 2:
        return _mixture_log_normaliser(prior, beta)
    raise ValueError(f"no way to compute F_β for {prior!r}")


def _factorised_log_normaliser(prior: _FactorisedPrior, beta: float) -> float:
    coords = prior.coordinates(dtype=_F64)
    total = 0.0
    for j in range(1 if prior._iid else prior.dim):

        def log_p(t, j=j):
            return coords.log_prob(torch.full((prior.dim,), t, dtype=_F64))[j].item()

        log_p0 = log_p(0.0)  # every prior here is symmetric and unimodal at 0

        def integrand(t, log_p=log_p, log_p0=log_p0):
            return math.exp(beta * (log_p(t) - log_p0))

        scales = prior._breaks(j)
        cuts = sorted({s * m for s in scales for m in (1.0, 1 / math.sqrt(beta), 10.0)})
        edges = [0.0, *cuts, math.inf]
        half = sum(
            integrate.quad(integrand, lo, hi, epsabs=0.0, epsrel=1e-12, limit=200)[0]
            for lo, hi in itertools.pairwise(edges)
        )
        total += beta * log_p0 + math.log(2 * half)
    return total * (prior.dim if prior._iid else 1)


def _mixture_log_normaliser(prior: GaussianMixturePrior, beta: float) -> float:
    sd = math.sqrt(prior.variance)
    width = sd / math.sqrt(beta)
    h = min(sd, width) / 6
    half = prior.means.abs().max().item() + 12 * width
    axis = torch.arange(-half, half + h / 2, h, dtype=_F64)
    grids = torch.meshgrid(*([axis] * prior.dim), indexing="ij")
    z = torch.stack(grids, -1).reshape(-1, prior.dim)
    log_f = torch.cat([beta * prior.log_prob(chunk) for chunk in z.split(250_000)])
    return (torch.logsumexp(log_f, 0) + prior.dim * math.log(h)).item()


def annealed_log_prob(prior: Prior, beta, z, *, log_normaliser: float | None = None):
    """``log f_β(z) = β log p(z) - log F_β``, the annealed prior of Theorem 1.

    ``z`` is ``(..., d)``; returns ``(...)``. ``log_normaliser`` may be passed to avoid
    recomputing :func:`annealed_log_normaliser`.
    """
    beta = check_positive(beta, "beta")
    if log_normaliser is None:
        log_normaliser = annealed_log_normaliser(prior, beta)
    return beta * prior.log_prob(z) - log_normaliser


# --- KL(q(z|x) || p(z)) ---------------------------------------------------------------------

_KL_METHODS = ("auto", "analytic", "mc")


def kl_to_prior(mu, logvar, prior: Prior, *, z=None, method: str = "auto") -> torch.Tensor:
    """``KL(N(mu, diag(exp(logvar))) || p(z))`` per example.

    Parameters
    ----------
    mu, logvar : tensors ``(n, d)``, or ``(M, n, d)`` for an ensemble of ``M`` encoders
        (any leading axes are kept).
    prior : :class:`Prior`.
    z : samples of ``q(z|x)`` of the shape of ``mu``, or ``(S, *mu.shape)``, for
        ``method="mc"``.
    method : ``"analytic"`` (Gaussian priors only: :func:`vaebook.gaussian.kl_diag_normal`),
        ``"mc"`` (``-H[q] - mean_s log p(z_s)``: exact entropy, Monte Carlo cross-entropy;
        unbiased, and differentiable through reparameterised ``z``), or ``"auto"`` (analytic
        when possible, else Monte Carlo).

    Returns
    -------
    tensor ``mu.shape[:-1]``, e.g. ``(n,)``.
    """
    check_choice(method, "method", _KL_METHODS)
    mu, logvar = _encoder(mu, logvar, prior, batched=True)
    if method == "auto":
        method = "analytic" if prior.is_gaussian else "mc"
    if method == "analytic":
        if not prior.is_gaussian:
            raise ValueError(f"method='analytic' needs a Gaussian prior, got {prior!r}")
        return kl_diag_normal(mu, logvar, 0.0, prior.log_variances.to(mu))
    if z is None:
        raise ValueError("z (samples of q(z|x)) is required for method='mc'")
    return -entropy_diag_normal(logvar) - prior.log_prob(_samples(z, mu)).mean(0)


def kl_full_to_prior(mu, cov, prior: Prior, *, z=None) -> torch.Tensor:
    """``KL(N(mu, cov) || p(z))`` for a full-covariance encoder (Theorem 2).

    Analytic (:func:`vaebook.gaussian.kl_normal`) for a Gaussian prior when ``z`` is None;
    otherwise ``-H[q] - mean_s log p(z_s)`` over samples ``z`` ``(S, n, d)`` or ``(n, d)``.
    ``mu`` is ``(n, d)``, ``cov`` ``(n, d, d)``; returns ``(n,)``.
    """
    if not isinstance(prior, Prior):
        raise TypeError(f"prior must be a vaebook.priors.Prior, got {type(prior).__name__}")
    mu = as_tensor(mu, "mu")
    cov = as_tensor(cov, "cov", like=mu)
    if mu.dim() != 2 or mu.shape[-1] != prior.dim:
        raise ValueError(f"mu must be (n, {prior.dim}), got {tuple(mu.shape)}")
    if z is None:
        if not prior.is_gaussian:
            raise ValueError(f"z (samples of q(z|x)) is required for the prior {prior!r}")
        return kl_normal(mu, cov, torch.zeros_like(mu), torch.diag(prior.variances.to(mu)))
    return -entropy_normal(cov) - prior.log_prob(_samples(z, mu)).mean(0)


# --- shared argument checks -----------------------------------------------------------------


def _encoder(mu, logvar, prior, *, batched=False):
    """Check ``mu``, ``logvar``: ``(n, d)``, or ``(..., n, d)`` when ``batched`` (ensembles)."""
    if not isinstance(prior, Prior):
        raise TypeError(f"prior must be a vaebook.priors.Prior, got {type(prior).__name__}")
    mu = as_tensor(mu, "mu")
    logvar = as_tensor(logvar, "logvar", like=mu)
    rank_ok = mu.dim() >= 2 if batched else mu.dim() == 2
    if not rank_ok or logvar.shape != mu.shape:
        shape = "(..., n, d)" if batched else "(n, d)"
        raise ValueError(
            f"mu and logvar must both be {shape}, got {tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    if mu.shape[-1] != prior.dim:
        raise ValueError(f"mu has latent dimension {mu.shape[-1]} but the prior has {prior.dim}")
    return mu, logvar


def _samples(z, mu):
    """``z`` of the shape of ``mu`` or ``(S, *mu.shape)``, as ``(S, *mu.shape)``."""
    z = as_tensor(z, "z", like=mu)
    if z.shape == mu.shape:
        return z.unsqueeze(0)
    if z.dim() == mu.dim() + 1 and z.shape[1:] == mu.shape:
        return z
    raise ValueError(
        f"z must be {tuple(mu.shape)} or (S, *{tuple(mu.shape)}), got {tuple(z.shape)}"
    )
