r"""Mathieu et al. (2019), *Disentangling Disentanglement in VAEs*: overlap, priors, objective (7).

The chapter's kernels, in the order of the paper:

- **Priors** (§6, Appendix B): :func:`isotropic_gaussian`, :func:`anisotropic_gaussian` (with
  :func:`pca_variances`), :func:`student_t`, :func:`gaussian_mixture_2d` (eq. 9) and
  :func:`spike_and_slab`. Each is a :class:`Prior`: ``log_prob(z)`` sums over the last axis,
  ``sample(n, generator)`` returns ``(n, d)``; densities come from ``torch.distributions``,
  sampling is written out so that a ``torch.Generator`` makes it reproducible.
- **Theorem 1** (eq. 3): the β-VAE objective is the ELBO of the annealed prior
  :math:`f_\beta = p^\beta / F_\beta` plus :math:`(\beta - 1) H[q(z|x)] + \log F_\beta`:
  :func:`annealed_log_normaliser`, :func:`annealed_log_prob`, :func:`theorem1_terms`.
- **Corollary 1** (eqs. 4-5): for a Gaussian prior the β-VAE is, after rescaling the latent
  space by :math:`\sqrt\beta`, the entropy-regularised ELBO: :func:`rescale_encoder`,
  :func:`entropy_regularised_elbo`, :func:`corollary1_constant`.
- **Theorem 2** (eq. 6): rotation invariance under an isotropic Gaussian prior:
  :func:`random_rotation`, :func:`rotate_encoder`, :func:`kl_full_to_prior`.
- **Objective (7)**: :math:`\mathcal L_{\alpha,\beta} = \mathbb E_q \log p(x|z)
  - \beta\,\mathrm{KL}(q(z|x)\|p(z)) - \alpha\,\mathbb D(q(z), p(z))`:
  :func:`decomposition_objective`, with :func:`kl_to_prior`, :func:`inclusive_kl_aggregate`
  (Appendix B) and :func:`mmd_imq` (Appendix B).
- **Appendix C** (eq. 10): the minibatch estimator of :math:`H[q(z)]` and its bias:
  :func:`minibatch_log_aggregate_density`, :func:`minibatch_weighted_entropy`,
  :func:`aggregate_entropy_reference`.

Shapes: ``d`` is the latent dimension, ``n``/``B`` the number of examples in a (mini)batch,
``S`` a number of Monte Carlo samples. Identities are checked in float64.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from scipy import integrate
from torch import distributions as td
from torch import nn

from .checks import (
    as_tensor,
    check_choice,
    check_per_member,
    check_positive,
    check_positive_int,
)
from .gaussian import (
    LOG_2PI,
    entropy_diag_normal,
    entropy_normal,
    kl_diag_normal,
    kl_normal,
    log_normal_diag,
    sample_diag_normal,
)
from .objectives import _plain

__all__ = [
    "MMD_SCALES",
    "DecompositionTerms",
    "GaussianMixturePrior",
    "GaussianPrior",
    "MonteCarloEstimate",
    "Prior",
    "SpikeAndSlabPrior",
    "StructuredVAE",
    "StudentTPrior",
    "Theorem1Estimate",
    "Theorem1Terms",
    "aggregate_entropy_reference",
    "anisotropic_gaussian",
    "annealed_log_normaliser",
    "annealed_log_prob",
    "corollary1_constant",
    "decomposition_objective",
    "entropy_regularised_elbo",
    "gaussian_mixture_2d",
    "inclusive_kl_aggregate",
    "isotropic_gaussian",
    "kl_full_to_prior",
    "kl_to_prior",
    "log_aggregate_posterior",
    "minibatch_log_aggregate_density",
    "minibatch_weighted_entropy",
    "mmd_imq",
    "pca_variances",
    "random_rotation",
    "rescale_encoder",
    "rescale_networks",
    "rotate_encoder",
    "spike_and_slab",
    "student_t",
    "theorem1_monte_carlo",
    "theorem1_terms",
]

#: Default MMD scales ``s``: the kernel constants are ``C = 2 d s`` (Tolstikhin et al., 2017).
MMD_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)

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
        raise TypeError(f"prior must be a vaebook.decomposition.Prior, got {type(prior).__name__}")
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


@dataclass(frozen=True)
class Theorem1Terms:
    r"""Both sides of Theorem 1 (eq. 3), per example ``(n,)``.

    ``beta_objective`` is the left side :math:`\mathcal L_\beta = \mathbb E_q \log p(x|z)
    - \beta \mathrm{KL}(q\|p)`; ``annealed_elbo`` the ELBO with the annealed prior,
    ``E_q log p(x|z) - KL(q || f_β)``; ``entropy`` is :math:`H[q(z|x)]`; ``log_normaliser``
    is :math:`\log F_\beta`; ``beta`` the β used.
    """

    beta_objective: torch.Tensor
    annealed_elbo: torch.Tensor
    entropy: torch.Tensor
    log_normaliser: float
    beta: float

    @property
    def rhs(self) -> torch.Tensor:
        """``annealed_elbo + (β - 1) entropy + log F_β``: the right side of eq. (3)."""
        return self.annealed_elbo + (self.beta - 1) * self.entropy + self.log_normaliser

    @property
    def gap(self) -> torch.Tensor:
        """``beta_objective - rhs``: zero up to rounding when Theorem 1 holds."""
        return self.beta_objective - self.rhs


def theorem1_terms(mu, logvar, prior: Prior, beta, log_lik, *, z=None) -> Theorem1Terms:
    r"""Both sides of Theorem 1 (eq. 3) for a diagonal Gaussian encoder.

    Parameters
    ----------
    mu, logvar : tensors ``(n, d)``, the encoder ``q(z|x) = N(mu, diag(exp(logvar)))``.
    prior : :class:`Prior`.
    beta : float > 0.
    log_lik : tensor ``(n,)``, an estimate of ``E_q[log p(x|z)]``; it enters both sides alike.
    z : optional tensor ``(S, n, d)`` or ``(n, d)`` of samples of ``q(z|x)``; required for a
        non-Gaussian prior.

    Returns
    -------
    :class:`Theorem1Terms`; its ``gap`` is zero to rounding.

    Notes
    -----
    *Gaussian prior, ``z=None``*: every term has an independent closed form:
    ``KL(q || p)`` against ``N(0, Σ)``, ``KL(q || f_β)`` against ``N(0, Σ/β)`` (what
    :math:`p^\beta/F_\beta` is), the Gaussian entropy and the closed-form ``log F_β``. The
    identity then holds only if all four are right, so checking it to 1e-8 is a real test.

    *Otherwise* :math:`\mathbb E_q \log p(z)` is estimated by the mean over the given
    samples, the entropy is exact, and both sides use that same estimate
    (:math:`\mathrm{KL}(q\|p) = -H - \hat{\mathbb E}\log p`,
    :math:`\mathrm{KL}(q\|f_\beta) = -H - \beta\hat{\mathbb E}\log p + \log F_\beta`), so the
    gap is zero to rounding for *any* sample: eq. (3) is an algebraic identity once
    :math:`F_\beta < \infty`. What makes its right side an ELBO is that :math:`f_\beta`
    integrates to one, which is checked separately (by quadrature) in the tests. A check of
    the theorem that a wrong ``log F_β`` would fail is :func:`theorem1_monte_carlo`.
    """
    beta = check_positive(beta, "beta")
    mu, logvar = _encoder(mu, logvar, prior)
    log_lik = _per_example(log_lik, "log_lik", mu)
    entropy = entropy_diag_normal(logvar)
    log_f = annealed_log_normaliser(prior, beta)
    if z is None:
        if not prior.is_gaussian:
            raise ValueError(f"z (samples of q(z|x)) is required for the prior {prior!r}")
        log_var_p = prior.log_variances.to(mu)
        kl_p = kl_diag_normal(mu, logvar, 0.0, log_var_p)
        kl_f = kl_diag_normal(mu, logvar, 0.0, log_var_p - math.log(beta))
    else:
        z = _samples(z, mu)
        kl_p = -entropy - prior.log_prob(z).mean(0)
        kl_f = -entropy - annealed_log_prob(prior, beta, z, log_normaliser=log_f).mean(0)
    return Theorem1Terms(log_lik - beta * kl_p, log_lik - kl_f, entropy, log_f, beta)


class Theorem1Estimate(NamedTuple):
    """Monte Carlo estimates of both sides of Theorem 1, per example ``(n,)``, with their
    standard errors; the two sides use independent samples."""

    lhs: torch.Tensor
    lhs_se: torch.Tensor
    rhs: torch.Tensor
    rhs_se: torch.Tensor

    @property
    def gap(self) -> torch.Tensor:
        """``lhs - rhs``: zero in expectation when Theorem 1 holds."""
        return self.lhs - self.rhs

    @property
    def gap_se(self) -> torch.Tensor:
        """Standard error of :attr:`gap` (the sides are independent)."""
        return torch.sqrt(self.lhs_se**2 + self.rhs_se**2)


def theorem1_monte_carlo(
    mu,
    logvar,
    prior: Prior,
    beta,
    log_lik,
    annealed: td.Distribution,
    n_samples: int,
    generator=None,
    *,
    method: str = "quadrature",
) -> Theorem1Estimate:
    r"""Both sides of Theorem 1 (eq. 3) estimated by Monte Carlo, each from its own samples.

    Unlike :func:`theorem1_terms` (where ``log F_β`` cancels whatever its value), the two sides
    here share nothing but the data, so a wrong normaliser, a wrong annealed prior or a wrong
    β shows up as a gap of many standard errors.

    - Left side, from draws ``z ~ q(z|x)``: :math:`\mathcal L_\beta = \log\text{-lik}
      - \beta\,\mathrm{KL}(q\|p)`, with :math:`\mathrm{KL}(q\|p) = -H[q] - \hat{\mathbb E}
      \log p(z)` (``prior.log_prob``, exact Gaussian entropy).
    - Right side, from *independent* draws ``z' ~ q(z|x)``: :math:`\log\text{-lik}
      - \hat{\mathbb E}[\log q(z') - \log f_\beta(z')] + (\beta - 1)H[q] + \log F_\beta`, with
      ``log q`` from ``torch.distributions.Normal``, ``log f_β`` from ``annealed`` (the
      annealed prior reached by another route, e.g. the Student-t of the closed form) and
      ``log F_β`` from :func:`annealed_log_normaliser` (by ``method``).

    Parameters
    ----------
    mu, logvar : tensors ``(n, d)``, the encoder ``q(z|x) = N(mu, diag(exp(logvar)))``.
    prior : :class:`Prior`.
    beta : float > 0.
    log_lik : tensor ``(n,)``, an estimate of ``E_q[log p(x|z)]``; it enters both sides alike.
    annealed : ``torch.distributions.Distribution`` whose ``log_prob`` maps ``(..., d)`` to
        ``(...)``: the normalised density :math:`f_\beta = p^\beta / F_\beta`.
    n_samples : int >= 2, draws per side and example.
    generator : optional ``torch.Generator``.
    method : how :func:`annealed_log_normaliser` computes ``log F_β`` (default quadrature).

    Returns
    -------
    :class:`Theorem1Estimate`; its ``gap`` is zero within a few ``gap_se`` when the theorem
    and every term hold.
    """
    beta = check_positive(beta, "beta")
    mu, logvar = _encoder(mu, logvar, prior)
    log_lik = _per_example(log_lik, "log_lik", mu)
    if not isinstance(annealed, td.Distribution):
        raise TypeError(
            f"annealed must be a torch.distributions.Distribution, got {type(annealed).__name__}"
        )
    s = check_positive_int(n_samples, "n_samples")
    if s < 2:
        raise ValueError(f"n_samples must be >= 2, got {s}")
    entropy = entropy_diag_normal(logvar)
    log_f = annealed_log_normaliser(prior, beta, method=method)
    z_left = sample_diag_normal(mu, logvar, n_samples=s, generator=generator)
    left = log_lik + beta * (entropy + prior.log_prob(z_left))  # (S, n)
    z_right = sample_diag_normal(mu, logvar, n_samples=s, generator=generator)
    encoder = td.Independent(td.Normal(mu, torch.exp(0.5 * logvar)), 1)
    kl_annealed = encoder.log_prob(z_right) - annealed.log_prob(z_right)
    right = log_lik - kl_annealed + (beta - 1) * entropy + log_f
    root = math.sqrt(s)
    return Theorem1Estimate(left.mean(0), left.std(0) / root, right.mean(0), right.std(0) / root)


# --- Corollary 1: rescaling --------------------------------------------------------------


def rescale_encoder(mu, logvar, beta) -> tuple[torch.Tensor, torch.Tensor]:
    """The rescaled encoder of Corollary 1: mean ``√β mu``, covariance ``β S``.

    Returns ``(sqrt(beta) * mu, logvar + log(beta))``, shapes as the inputs ``(..., d)``.
    The matching decoder is ``z ↦ g(z / √β)``: with common noise the rescaled sample is
    ``√β z`` and the decoder sees the same ``z``.
    """
    beta = check_positive(beta, "beta")
    mu, logvar = _pair_like(mu, "mu", logvar, "logvar")
    return math.sqrt(beta) * mu, logvar + math.log(beta)


def rescale_networks(encoder, decoder, beta):
    """The map ``T_β`` of Corollaries 1-2 on networks: rescaled copies ``(encoder', decoder')``.

    ``encoder`` is a :class:`~vaebook.nets.GaussianEncoder` (linear heads ``mu`` and
    ``logvar``); ``decoder`` a module whose first layer (first ``nn.Linear`` in
    ``decoder.modules()``) acts on ``z``. The copies compute exactly :func:`rescale_encoder`'s
    ``(√β mu, logvar + log β)`` and ``z ↦ g(z / √β)``: the mean head's weight and bias are
    multiplied by ``√β``, ``log β`` is added to the log-variance bias, and the decoder's first
    weight is divided by ``√β``. ``T_β`` is affine in the parameters with a constant diagonal
    Jacobian, which is what makes Corollary 2 (stationary points correspond) follow from
    Corollary 1. The inputs are not modified.
    """
    beta = check_positive(beta, "beta")
    if not (
        isinstance(getattr(encoder, "mu", None), nn.Linear)
        and isinstance(getattr(encoder, "logvar", None), nn.Linear)
    ):
        raise TypeError("encoder must have linear heads `mu` and `logvar` (a GaussianEncoder)")
    first = next((m for m in decoder.modules() if isinstance(m, nn.Linear)), None)
    if first is None:
        raise TypeError("decoder must contain an nn.Linear acting on z")
    encoder, decoder = copy.deepcopy(encoder), copy.deepcopy(decoder)
    root = math.sqrt(beta)
    with torch.no_grad():
        encoder.mu.weight.mul_(root)
        encoder.mu.bias.mul_(root)
        encoder.logvar.bias.add_(math.log(beta))
        next(m for m in decoder.modules() if isinstance(m, nn.Linear)).weight.div_(root)
    return encoder, decoder


def entropy_regularised_elbo(elbo, logvar, beta) -> torch.Tensor:
    """Eq. (5): ``L_{H,β} = ELBO + (β - 1)/2 log|S|`` with ``log|S| = sum_j logvar_j``.

    ``elbo`` is ``(n,)`` (or broadcastable to ``logvar.shape[:-1]``), ``logvar`` ``(n, d)``.
    """
    beta = check_positive(beta, "beta")
    logvar = as_tensor(logvar, "logvar")
    if logvar.dim() == 0:
        raise ValueError("logvar must have a last (event) dimension")
    elbo = as_tensor(elbo, "elbo", like=logvar)
    return elbo + 0.5 * (beta - 1) * logvar.sum(-1)


def corollary1_constant(d: int, beta, *, variance: float = 1.0) -> float:
    r"""The constant ``c`` of Corollary 1 (eq. 4) for the prior ``N(0, variance I_d)``.

    .. math::

        c = \frac d2\Big[(\beta - 1) - \beta\log\beta - (\beta - 1)\log\sigma^2\Big] \le 0
        \quad (\sigma^2 = 1: c = \tfrac d2 [\beta - 1 - \beta\log\beta]).

    Derivation. The paper gives :math:`c = \frac{D(\beta-1)}2(1 + \log\frac{2\pi}\beta)
    + \log F_\beta`, from eq. (3) with :math:`\mathcal L(x; \pi_{\theta,\beta}, q_\phi) =
    \mathcal L(x; \theta', \phi')` and :math:`H_{q_\phi} = \frac D2(1 + \log\frac{2\pi}\beta)
    + \frac12\log|S_{\phi'}|` (since :math:`S_{\phi'} = \beta S_\phi`). Substituting
    :math:`\log F_\beta = \frac{D(1-\beta)}2\log 2\pi + \frac{1-\beta}2\log|\Sigma|
    - \frac D2\log\beta` for :math:`\Sigma = \sigma^2 I`, the :math:`\log 2\pi` terms cancel:
    :math:`c = \frac{D(\beta-1)}2 - \frac{D(\beta-1)}2\log\beta - \frac D2\log\beta
    - \frac{D(\beta-1)}2\log\sigma^2`, which is the formula above. It vanishes at β = 1
    and is ≤ 0 for σ² = 1 because :math:`\beta\log\beta \ge \beta - 1`.
    """
    d = check_positive_int(d, "d")
    beta = check_positive(beta, "beta")
    variance = check_positive(variance, "variance")
    return 0.5 * d * ((beta - 1) - beta * math.log(beta) - (beta - 1) * math.log(variance))


# --- Theorem 2: rotations ----------------------------------------------------------------


def random_rotation(d: int, generator=None, *, dtype=_F64) -> torch.Tensor:
    """A Haar-random rotation ``(d, d)`` (orthogonal, determinant +1), via QR with sign fix."""
    d = check_positive_int(d, "d")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    device = generator.device if generator is not None else None
    a = torch.randn(d, d, generator=generator, dtype=_F64, device=device)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


def rotate_encoder(mu, cov, R) -> tuple[torch.Tensor, torch.Tensor]:
    """Theorem 2 (eq. 6): the rotated encoder ``N(R mu, R S R^T)``.

    Parameters
    ----------
    mu : tensor ``(..., d)``; cov : tensor ``(..., d, d)``; R : orthogonal ``(d, d)``.

    Returns
    -------
    ``(mu @ R.T, R @ cov @ R.T)``. The matching decoder is ``z ↦ g(R^T z)``; with common
    noise the rotated sample is ``R z``. Use :func:`kl_full_to_prior` for the KL term.
    """
    mu = as_tensor(mu, "mu")
    cov = as_tensor(cov, "cov", like=mu)
    R = as_tensor(R, "R", like=mu)
    if mu.dim() == 0:
        raise ValueError("mu must have a last (event) dimension")
    d = mu.shape[-1]
    if R.shape != (d, d):
        raise ValueError(f"R must be ({d}, {d}) to match mu, got {tuple(R.shape)}")
    if cov.dim() < 2 or cov.shape[-2:] != (d, d):
        raise ValueError(f"cov must be (..., {d}, {d}), got {tuple(cov.shape)}")
    tol = 10 * math.sqrt(torch.finfo(R.dtype).eps)
    if not torch.allclose(R @ R.T, torch.eye(d, dtype=R.dtype, device=R.device), atol=tol):
        raise ValueError("R must be orthogonal (R R^T = I)")
    return mu @ R.T, R @ cov @ R.T


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
        raise TypeError(f"prior must be a vaebook.decomposition.Prior, got {type(prior).__name__}")
    mu = as_tensor(mu, "mu")
    cov = as_tensor(cov, "cov", like=mu)
    if mu.dim() != 2 or mu.shape[-1] != prior.dim:
        raise ValueError(f"mu must be (n, {prior.dim}), got {tuple(mu.shape)}")
    if z is None:
        if not prior.is_gaussian:
            raise ValueError(f"z (samples of q(z|x)) is required for the prior {prior!r}")
        return kl_normal(mu, cov, torch.zeros_like(mu), torch.diag(prior.variances.to(mu)))
    return -entropy_normal(cov) - prior.log_prob(_samples(z, mu)).mean(0)


# --- D(q(z), p(z)) -----------------------------------------------------------------------


def inclusive_kl_aggregate(prior_samples, mu, logvar, prior: Prior) -> torch.Tensor:
    r"""``KL(p(z) || q(z))`` with ``q(z) ≈ (1/B) sum_i q(z|x_i)`` (Appendix B, pinwheel).

    .. math::

        \widehat{\mathrm{KL}} = \frac1M \sum_{j=1}^M \Big[\log p(z_j)
        - \log \frac1B \sum_{i=1}^B q(z_j | x_i)\Big], \quad z_j \sim p(z).

    The paper's display omits the :math:`1/B` (a constant offset ``log B``); with it the
    estimate is consistent for the KL to the minibatch aggregate posterior, and it is exactly
    0 when that aggregate equals the prior.

    Parameters
    ----------
    prior_samples : tensor ``(M, d)``, draws of ``p(z)``.
    mu, logvar : tensors ``(B, d)``, the minibatch's encoders, or ``(..., B, d)`` for
        several models at once (e.g. an ensemble), each with its own aggregate posterior.
    prior : :class:`Prior`.

    Returns
    -------
    tensor ``mu.shape[:-2]`` (0-dim for one model).
    """
    mu, logvar = _encoder(mu, logvar, prior, batched=True)
    zp = _prior_samples(prior_samples, mu)
    return (prior.log_prob(zp) - log_aggregate_posterior(zp, mu, logvar)).mean(-1)


def log_aggregate_posterior(z, mu, logvar) -> torch.Tensor:
    r"""The log-density of the aggregate posterior of ``B`` Gaussian encoders at points ``z``:
    :math:`\log \frac1B \sum_{i=1}^B \mathcal N(z; \mu_i, \mathrm{diag}\,e^{\mathrm{logvar}_i})`.

    Parameters
    ----------
    z : tensor ``(P, d)``, the points (e.g. a plotting grid or prior draws).
    mu, logvar : tensors ``(B, d)``, or ``(..., B, d)`` for several models at once.

    Returns
    -------
    tensor ``(..., P)``.
    """
    mu = as_tensor(mu, "mu")
    logvar = as_tensor(logvar, "logvar", like=mu)
    z = as_tensor(z, "z", like=mu)
    if mu.dim() < 2 or logvar.shape != mu.shape:
        raise ValueError(
            f"mu and logvar must both be (..., B, d), got {tuple(mu.shape)} and "
            f"{tuple(logvar.shape)}"
        )
    if z.dim() != 2 or z.shape[1] != mu.shape[-1]:
        raise ValueError(f"z must be (P, {mu.shape[-1]}), got {tuple(z.shape)}")
    # (..., P, B): log q(z_p | x_i) for every point p and example i
    log_q = log_normal_diag(z.unsqueeze(-2), mu.unsqueeze(-3), logvar.unsqueeze(-3))
    return torch.logsumexp(log_q, -1) - math.log(mu.shape[-2])


def mmd_imq(x, y, *, scales=MMD_SCALES) -> torch.Tensor:
    r"""Unbiased MMD² between samples ``x`` and ``y`` with inverse multiquadratic kernels.

    :math:`k(a, b) = \sum_s C_s / (C_s + \|a - b\|^2)` with :math:`C_s = 2 d s` for ``s`` in
    ``scales`` (Tolstikhin et al., 2017; the paper's Appendix B writes the norm unsquared, we
    follow WAE's squared form). The U-statistic

    .. math::

        \frac{1}{m(m-1)}\sum_{i\ne i'} k(x_i, x_{i'}) + \frac{1}{n(n-1)}\sum_{j\ne j'}
        k(y_j, y_{j'}) - \frac{2}{mn}\sum_{i,j} k(x_i, y_j)

    is unbiased for MMD², so it can be negative; its mean is 0 when ``x`` and ``y`` have the
    same law.

    Parameters
    ----------
    x : tensor ``(m, d)``, ``m ≥ 2``; y : tensor ``(n, d)``, ``n ≥ 2``. Leading axes
        ``(..., m, d)`` compare several sample sets at once (they broadcast between ``x``
        and ``y``, e.g. an ensemble's codes ``(M, m, d)`` against shared prior draws).
    scales : non-empty sequence of positive numbers.

    Returns
    -------
    tensor of the broadcast leading shape (0-dim for two plain samples).
    """
    x = as_tensor(x, "x")
    y = as_tensor(y, "y", like=x)
    for t, name in ((x, "x"), (y, "y")):
        if t.dim() < 2 or t.shape[-2] < 2:
            raise ValueError(f"{name} must be (m, d) with m >= 2, got {tuple(t.shape)}")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"y has dimension {y.shape[-1]} but x has {x.shape[-1]}")
    if isinstance(scales, (str, bytes)) or not hasattr(scales, "__len__") or len(scales) == 0:
        raise TypeError("scales must be a non-empty sequence of positive numbers")
    consts = [2 * x.shape[-1] * check_positive(s, "scales") for s in scales]
    m, n = x.shape[-2], y.shape[-2]

    def kernel(a, b):
        # squared distances as |a|² + |b|² - 2 a·b: memory (..., m, n), not (..., m, n, d)
        sq = (a * a).sum(-1).unsqueeze(-1) + (b * b).sum(-1).unsqueeze(-2)
        sq = (sq - 2 * a @ b.transpose(-1, -2)).clamp_min(0)
        return sum(c / (c + sq) for c in consts)

    def off_diagonal_sum(k):
        return k.sum((-2, -1)) - k.diagonal(dim1=-2, dim2=-1).sum(-1)

    return (
        off_diagonal_sum(kernel(x, x)) / (m * (m - 1))
        + off_diagonal_sum(kernel(y, y)) / (n * (n - 1))
        - 2 * kernel(x, y).mean((-2, -1))
    )


# --- objective (7) -----------------------------------------------------------------------

_DIVERGENCES = ("kl", "mmd")


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
    prior : :class:`Prior`.
    alpha, beta : numbers ≥ 0 (or, for an ensemble, tensors ``(M,)`` of them).
    divergence : ``"kl"``: inclusive ``KL(p(z) || q(z))`` with the minibatch aggregate
        posterior (:func:`inclusive_kl_aggregate`, Appendix B); ``"mmd"``: unbiased MMD² with
        inverse multiquadratic kernels between ``z`` and prior draws (:func:`mmd_imq`).
    kl : ``"auto"``, ``"analytic"`` or ``"mc"``, passed to :func:`kl_to_prior` (``"mc"`` uses
        ``z``).
    generator : optional ``torch.Generator`` for the prior draws.
    prior_samples : optional tensor ``(M, d)`` of prior draws to use instead of drawing.
    n_prior_samples : number of prior draws when drawing (default ``B``).
    mmd_scales : the scales ``s`` of :func:`mmd_imq` (``C = 2 d s``), default
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
    else:
        div = mmd_imq(z, _prior_samples(prior_samples, mu), scales=mmd_scales)
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
    prior : :class:`Prior` with ``dim`` equal to the latent dimension.
    alpha, beta : numbers ≥ 0, or for an ensemble ``M`` numbers (one per member).
    divergence : ``"kl"`` or ``"mmd"``, the :math:`\mathbb D` of (7)
        (see :func:`decomposition_objective`).
    kl : ``"auto"``, ``"analytic"`` or ``"mc"``, how ``KL(q(z|x) || p(z))`` is computed.
    learn_prior_variances : for a Gaussian prior whose variances sum to ``d`` (e.g. from
        :func:`pca_variances`): learn its variances with the model (§6.1, "learned
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
            raise TypeError(
                f"prior must be a vaebook.decomposition.Prior, got {type(prior).__name__}"
            )
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


# --- Appendix C: minibatch entropy estimators --------------------------------------------

_WEIGHTINGS = ("stratified", "mws")


def minibatch_log_aggregate_density(z, mu, logvar, dataset_size: int, *, weighting="stratified"):
    r"""Minibatch estimates :math:`\log \hat q(z_b)` of the aggregate posterior (eq. 10b).

    For a minibatch :math:`x_1..x_B` drawn without replacement from a dataset of size ``N``
    and :math:`z_b \sim q(z|x_b)`:

    - ``"stratified"`` (eq. 10b, the paper's; "minibatch stratified sampling" of Chen et al.):
      :math:`\hat q(z_b) = \frac1N q(z_b|x_b) + \frac{N-1}{N(B-1)}\sum_{b'\ne b} q(z_b|x_{b'})`.
      The weights make :math:`\hat q(z_b)` unbiased for
      :math:`q(z_b) = \frac1N\sum_{m=1}^N q(z_b|x_m)`: the own term is exact, and each of the
      ``B - 1`` other points is uniform over the remaining ``N - 1``, so
      :math:`\mathbb E\sum_{b'\ne b} q(z_b|x_{b'}) = \frac{B-1}{N-1}\sum_{m\ne b} q(z_b|x_m)`,
      which the weight :math:`\frac{N-1}{N(B-1)}` turns into :math:`\frac1N\sum_{m\ne b}`.
      At ``B = N`` it is the exact mixture density. Needs ``B ≥ 2``.
    - ``"mws"`` (minibatch weighted sampling, Chen et al. 2018, as in their code):
      :math:`\hat q(z_b) = \frac1{NB}\sum_{b'} q(z_b|x_{b'})`; at ``B = N`` this is
      :math:`q(z_b)/N`, so it is low by a constant factor ``N`` there (harmless for gradients).

    Parameters
    ----------
    z : tensor ``(B, d)``, ``z_b ~ q(z|x_b)``.
    mu, logvar : tensors ``(B, d)``.
    dataset_size : int ``N ≥ B``.
    weighting : ``"stratified"`` or ``"mws"``.

    Returns
    -------
    tensor ``(B,)``.
    """
    check_choice(weighting, "weighting", _WEIGHTINGS)
    mu = as_tensor(mu, "mu")
    logvar = as_tensor(logvar, "logvar", like=mu)
    z = as_tensor(z, "z", like=mu)
    if mu.dim() != 2 or logvar.shape != mu.shape or z.shape != mu.shape:
        raise ValueError(
            f"z, mu and logvar must all be (B, d), got {tuple(z.shape)}, {tuple(mu.shape)} "
            f"and {tuple(logvar.shape)}"
        )
    n = check_positive_int(dataset_size, "dataset_size")
    b = mu.shape[0]
    if n < b:
        raise ValueError(f"dataset_size must be >= the batch size {b}, got {n}")
    log_q = log_normal_diag(z.unsqueeze(1), mu, logvar)  # (B, B): [b, b'] = log q(z_b | x_b')
    if weighting == "mws":
        return torch.logsumexp(log_q, 1) - math.log(n * b)
    if b < 2:
        raise ValueError("z: the stratified estimator needs a batch of at least 2 examples")
    eye = torch.eye(b, dtype=torch.bool, device=mu.device)
    log_w = torch.where(
        eye,
        torch.full_like(log_q, -math.log(n)),
        torch.full_like(log_q, math.log(n - 1) - math.log(n) - math.log(b - 1)),
    )
    return torch.logsumexp(log_w + log_q, 1)


def minibatch_weighted_entropy(z, mu, logvar, dataset_size: int, *, weighting="stratified"):
    r"""Minibatch estimate :math:`\hat H = -\frac1B\sum_b \log\hat q(z_b)` of
    :math:`H[q(z)]` (eq. 10a), with :math:`\hat q` from :func:`minibatch_log_aggregate_density`.

    Bias (Appendix C). Even with the unbiased stratified :math:`\hat q`, Jensen's inequality
    gives :math:`\mathbb E\log\hat q \le \log q`, so :math:`\mathbb E\hat H \ge H[q(z)]`
    (a nested-estimation bias). When ``B ≪ N`` and encodings of different points rarely
    overlap within a minibatch, the own term dominates and
    :math:`\mathbb E\hat H \approx \log N + \mathbb E_{p(x)} H[q(z|x)]`: the KL built on it
    behaves like the β-VAE's KL term shifted by ``log N``. At ``B = N`` (stratified) it is an
    unbiased Monte Carlo estimate of :math:`H[q(z)]`; ``"mws"`` adds ``log(N B)`` instead of
    ``log N`` to the own term, i.e. it is larger by about ``log B``, and by exactly ``log N``
    at ``B = N``.

    Parameters and shapes as :func:`minibatch_log_aggregate_density`; returns a 0-dim tensor.
    """
    return -minibatch_log_aggregate_density(z, mu, logvar, dataset_size, weighting=weighting).mean()


class MonteCarloEstimate(NamedTuple):
    """A Monte Carlo estimate (0-dim tensor) and its standard error (0-dim tensor)."""

    estimate: torch.Tensor
    standard_error: torch.Tensor


def aggregate_entropy_reference(
    mu, logvar, n_samples: int, generator=None, *, chunk_size: int = 1024
) -> MonteCarloEstimate:
    r"""Reference estimate of :math:`H[q(z)]`, :math:`q(z) = \frac1N\sum_n q(z|x_n)`.

    Draws ``z_s`` from the full mixture (component uniform, then Gaussian) and averages
    :math:`-\log q(z_s)` with the *exact* mixture density (log-mean-exp over all ``N``
    components), so the estimate is unbiased; its standard error is returned too.
    Cost ``O(n_samples N d)``, computed ``chunk_size`` samples at a time.

    Parameters
    ----------
    mu, logvar : tensors ``(N, d)``, the encoders of the whole dataset.
    n_samples : int, number of Monte Carlo draws (≥ 2).
    generator : optional ``torch.Generator``.

    Returns
    -------
    :class:`MonteCarloEstimate`.
    """
    mu = as_tensor(mu, "mu")
    logvar = as_tensor(logvar, "logvar", like=mu)
    if mu.dim() != 2 or logvar.shape != mu.shape:
        raise ValueError(
            f"mu and logvar must both be (N, d), got {tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    s = check_positive_int(n_samples, "n_samples")
    if s < 2:
        raise ValueError(f"n_samples must be >= 2, got {s}")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    n = mu.shape[0]
    k = torch.randint(n, (s,), generator=generator, device=mu.device)
    eps = torch.randn(s, mu.shape[1], generator=generator, dtype=mu.dtype, device=mu.device)
    z = mu[k] + torch.exp(0.5 * logvar[k]) * eps
    neg_log_q = torch.cat(
        [
            math.log(n) - torch.logsumexp(log_normal_diag(c.unsqueeze(1), mu, logvar), 1)
            for c in z.split(chunk_size)
        ]
    )
    return MonteCarloEstimate(neg_log_q.mean(), neg_log_q.std() / math.sqrt(s))


# --- shared argument checks --------------------------------------------------------------


def _encoder(mu, logvar, prior, *, batched=False):
    """Check ``mu``, ``logvar``: ``(n, d)``, or ``(..., n, d)`` when ``batched`` (ensembles)."""
    if not isinstance(prior, Prior):
        raise TypeError(f"prior must be a vaebook.decomposition.Prior, got {type(prior).__name__}")
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


def _pair_like(a, a_name, b, b_name):
    a = as_tensor(a, a_name)
    b = as_tensor(b, b_name, like=a)
    if a.shape != b.shape or a.dim() == 0:
        raise ValueError(
            f"{a_name} and {b_name} must have the same shape (..., d), got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    return a, b


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


def _per_example(values, name, mu):
    values = as_tensor(values, name, like=mu)
    if values.shape != mu.shape[:-1]:
        raise ValueError(
            f"{name} must have shape {tuple(mu.shape[:-1])}, got {tuple(values.shape)}"
        )
    return values


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


def _prior_samples(samples, mu):
    samples = as_tensor(samples, "prior_samples", like=mu)
    if samples.dim() != 2 or samples.shape[1] != mu.shape[-1] or samples.shape[0] < 2:
        raise ValueError(
            f"prior_samples must be (M, {mu.shape[-1]}) with M >= 2, got {tuple(samples.shape)}"
        )
    return samples
