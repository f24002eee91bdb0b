r"""Dai & Wipf (2019), "Diagnosing and Enhancing VAE Models": γ → 0, manifolds, two stages.

The chapter ``book/two_stage.md`` uses these kernels. Notation follows the paper: data
``x ∈ R^d`` lie on an ``r``-dimensional manifold, the latent ``z ∈ R^κ`` has the prior
``N(0, I)``, the encoder is ``q(z|x) = N(μ_z, Σ_z)`` and the decoder ``p(x|z) = N(f(z), γ I)``.

- Theorems 1 and 2 (the constructions of Appendices E and F): :class:`BentBimodal`, a
  non-Gaussian density with a Knothe-Rosenblatt map ``F`` (eqs. 11-12) and the maps
  ``G⁻¹∘F`` / ``F⁻¹∘G`` to and from standard normal coordinates,
  :func:`theorem1_decoder` ``F⁻¹∘Φ`` (eq. 17), :func:`theorem1_encoder` (eqs. 23-24),
  :func:`bent_line` (a 1-D manifold in ``R^2``), and two estimators for any Gaussian decoder:
  :func:`importance_log_marginal` (``log p_θ(x)`` and ``KL(q || p_θ(z|x))``) and
  :func:`negative_elbo` (the VAE cost (2) per example).
- The small-γ analysis (Appendix I): :func:`optimal_encoder_covariance` (eq. 83), next to
  the constructions' :func:`construction_covariance` (eqs. 24, 53); the decoder Jacobian and
  the general local cost live in :mod:`vaebook.local_geometry`.
- Diagnostics of a trained VAE: :func:`encoder_variances`, :func:`active_dimensions`,
  :func:`direction_sensitivity` (Fig. 10), :func:`latent_spectrum` (Fig. 1 right).
- The enhancement of Section 4: :class:`TwoStageVAE`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .checks import as_tensor, check_positive, check_positive_int
from .gaussian import LOG_2PI, kl_normal, sample_diag_normal
from .local_geometry import decoder_jacobian, optimal_posterior_covariance
from .objectives import decoder_mean

__all__ = [
    "BentBimodal",
    "TwoStageVAE",
    "active_dimensions",
    "bent_line",
    "construction_covariance",
    "direction_sensitivity",
    "encoder_variances",
    "importance_log_marginal",
    "latent_spectrum",
    "negative_elbo",
    "optimal_encoder_covariance",
    "theorem1_decoder",
    "theorem1_encoder",
    "theorem1_jacobian",
]

_BISECTION_STEPS = 50  # halves the bracket of from_normal to about 1e-15 of its width


# -- a known non-Gaussian density and its Knothe-Rosenblatt map ----------------------------


class BentBimodal:
    r"""A non-Gaussian density on ``R^dim`` (``dim`` 1 or 2) whose CDF map is known exactly.

    ``x_1 ~ 1/2 N(-1, s^2) + 1/2 N(1, s^2)`` with ``s = mode_std`` and, for ``dim = 2``,
    ``x_2 | x_1 ~ N(bend · sin(π x_1), width^2)``: two blobs along a bent ridge. Its
    Knothe-Rosenblatt map (Dai & Wipf, eqs. 11-12) is
    ``F(x) = (F_1(x_1), Φ((x_2 - bend · sin(π x_1)) / width))`` with ``F_1`` the mixture's
    CDF; ``F`` sends the density to the uniform distribution on ``[0, 1]^dim``.

    All methods take and return float64 tensors with ``dim`` as the last axis.
    """

    def __init__(self, dim: int = 1, mode_std: float = 0.3, bend: float = 0.5, width: float = 0.15):
        check_positive_int(dim, "dim")
        if dim > 2:
            raise ValueError(f"dim must be 1 or 2, got {dim}")
        self.dim = dim
        self.mode_std = check_positive(mode_std, "mode_std")
        if isinstance(bend, bool) or not isinstance(bend, (int, float)):
            raise TypeError(f"bend must be a number, got {type(bend).__name__}")
        if not math.isfinite(bend):
            raise ValueError(f"bend must be finite, got {bend}")
        self.bend = float(bend)
        self.width = check_positive(width, "width")

    def __repr__(self) -> str:
        return (
            f"BentBimodal(dim={self.dim}, mode_std={self.mode_std}, bend={self.bend}, "
            f"width={self.width})"
        )

    def _points(self, x, name: str) -> torch.Tensor:
        x = as_tensor(x, name, dtype=torch.float64)
        if x.dim() < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"{name} must have shape (..., {self.dim}), got {tuple(x.shape)}")
        return x

    def _ridge(self, x1: torch.Tensor) -> torch.Tensor:
        return self.bend * torch.sin(math.pi * x1)

    def log_prob(self, x) -> torch.Tensor:
        """``log p(x)`` for points ``(..., dim)``; returns ``(...)``."""
        x = self._points(x, "x")
        s = self.mode_std
        modes = torch.stack([x[..., 0] + 1.0, x[..., 0] - 1.0], -1) / s
        log_p = torch.logsumexp(-0.5 * modes**2, -1) - math.log(2 * s) - 0.5 * LOG_2PI
        if self.dim == 2:
            residual = (x[..., 1] - self._ridge(x[..., 0])) / self.width
            log_p = log_p - 0.5 * residual**2 - math.log(self.width) - 0.5 * LOG_2PI
        return log_p

    def cdf_map(self, x) -> torch.Tensor:
        """The Knothe-Rosenblatt map ``F(x) ∈ (0, 1)^dim`` (eqs. 11-12) of points ``(..., dim)``."""
        x = self._points(x, "x")
        return self._cdf_map(x)

    def _cdf_map(self, x: torch.Tensor) -> torch.Tensor:
        # through log-CDFs: torch's ndtr loses relative precision below about -7.5
        f1 = torch.exp(self._log_mixture_cdf(x[..., 0]))
        if self.dim == 1:
            return f1.unsqueeze(-1)
        f2 = torch.exp(torch.special.log_ndtr((x[..., 1] - self._ridge(x[..., 0])) / self.width))
        return torch.stack([f1, f2], -1)

    def to_normal(self, x) -> torch.Tensor:
        """``G⁻¹(F(x))``: the map to standard normal coordinates, ``(..., dim)`` to ``(..., dim)``.

        It is Theorem 1's encoder mean (eq. 23). The mixture is symmetric,
        ``F_1(-x) = 1 - F_1(x)``, so the first coordinate is computed on the lower half,
        ``sign(x) · -Φ⁻¹(F_1(-|x|))`` with log-CDFs: exact where ``F_1(x)`` itself rounds to 1
        in float64, and down to ``|z| ≈ 37`` where ``Φ(z)`` underflows.
        """
        return self._to_normal(self._points(x, "x"))

    def _log_mixture_cdf(self, x1: torch.Tensor) -> torch.Tensor:
        s = self.mode_std
        both = torch.logaddexp(
            torch.special.log_ndtr((x1 + 1) / s), torch.special.log_ndtr((x1 - 1) / s)
        )
        return both + math.log(0.5)

    def _to_normal(self, x: torch.Tensor) -> torch.Tensor:
        x1 = x[..., 0]
        upper = x1 > 0
        lower_half = torch.where(upper, -x1, x1)  # <= 0, where F_1 is not near 1
        z_lower = torch.special.ndtri(torch.exp(self._log_mixture_cdf(lower_half)))
        z1 = torch.where(upper, -z_lower, z_lower)
        if self.dim == 1:
            return z1.unsqueeze(-1)
        return torch.stack([z1, (x[..., 1] - self._ridge(x1)) / self.width], -1)

    def from_normal(self, z) -> torch.Tensor:
        """``F⁻¹(G(z))``, the inverse of :meth:`to_normal`.

        The first coordinate solves ``log F_1(y) = log Φ(-|z_1|)`` for ``y <= 0`` by bisection
        (50 halvings of ``[-1 - 40 s, 0]``, to about ``1e-14 (1 + 40 s)``) and mirrors it to the
        sign of ``z_1``.
        """
        z = self._points(z, "z")
        upper = z[..., 0] > 0
        target = torch.special.log_ndtr(torch.where(upper, -z[..., 0], z[..., 0]))
        low = torch.full_like(target, -1.0 - 40.0 * self.mode_std)  # |z| <= 40 fits inside
        high = torch.zeros_like(target)
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (low + high)
            below = self._log_mixture_cdf(mid) < target
            low = torch.where(below, mid, low)
            high = torch.where(below, high, mid)
        y = 0.5 * (low + high)
        x1 = torch.where(upper, -y, y)
        if self.dim == 1:
            return x1.unsqueeze(-1)
        return torch.stack([x1, self._ridge(x1) + self.width * z[..., 1]], -1)

    def inverse_cdf_map(self, xi) -> torch.Tensor:
        """``F⁻¹(ξ)`` for ``ξ ∈ (0, 1)^dim`` (``(..., dim)``)."""
        xi = self._points(xi, "xi")
        if bool(((xi <= 0) | (xi >= 1)).any()):
            raise ValueError("xi must lie strictly inside (0, 1)")
        return self.from_normal(torch.special.ndtri(xi))

    def normal_jacobian(self, x) -> torch.Tensor:
        """``∂(G⁻¹∘F)/∂x`` at points ``(n, dim)``: lower-triangular ``(n, dim, dim)`` (autograd)."""
        return self._jacobian(x, self._to_normal)

    def cdf_jacobian(self, x) -> torch.Tensor:
        """``∂F/∂x`` at points ``(n, dim)``: lower-triangular ``(n, dim, dim)``, by autograd.

        Its determinant is the density (eq. 13: ``dF(x) = p(x) dx``).
        """
        return self._jacobian(x, self._cdf_map)

    def _jacobian(self, x, fn) -> torch.Tensor:
        x = self._points(x, "x")
        if x.dim() != 2:
            raise ValueError(f"x must be (n, {self.dim}), got {tuple(x.shape)}")
        return decoder_jacobian(fn, x)  # F and G⁻¹∘F act row by row

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact draws ``(n, dim)``: :meth:`from_normal` of standard normal draws."""
        check_positive_int(n, "n")
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.from_normal(z)


def theorem1_decoder(density: BentBimodal, z) -> torch.Tensor:
    """The decoder mean ``f(z) = F⁻¹(Φ(z))`` of Theorem 1's construction (eq. 17).

    ``z`` is ``(..., r)`` with ``r = density.dim``; returns ``(..., r)``. It pushes ``N(0, I)``
    forward to the density exactly (:meth:`BentBimodal.from_normal`).
    """
    _check_density(density)
    return density.from_normal(_latents(z, density.dim))


def theorem1_jacobian(density: BentBimodal, z) -> torch.Tensor:
    """``∂f/∂z`` of :func:`theorem1_decoder` at ``z`` ``(n, r)``: ``(n, r, r)``.

    By the inverse function theorem, ``J = (∂(G⁻¹∘F)/∂x)⁻¹`` at ``x = f(z)``.
    """
    _check_density(density)
    z = _latents(z, density.dim)
    if z.dim() != 2:
        raise ValueError(f"z must be (n, {density.dim}), got {tuple(z.shape)}")
    forward = density.normal_jacobian(theorem1_decoder(density, z))
    eye = torch.eye(density.dim, dtype=z.dtype).expand_as(forward)
    return torch.linalg.solve_triangular(forward, eye, upper=False)


def theorem1_encoder(density: BentBimodal, x, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Theorem 1's encoder: ``μ_z = Φ⁻¹(F(x))`` (eq. 23), ``Σ_z = γ (J^T J)⁻¹`` (eq. 24).

    ``x`` is ``(n, r)``, ``J`` the decoder Jacobian at ``μ_z``. Returns ``(mu (n, r),
    cov (n, r, r))``.
    """
    _check_density(density)
    gamma = check_positive(gamma, "gamma")
    mu = density.to_normal(x)
    if not bool(torch.isfinite(mu).all()):
        raise ValueError("x lies too far in the tails: its normal coordinate overflows float64")
    return mu, construction_covariance(theorem1_jacobian(density, mu), gamma)


def construction_covariance(J, gamma: float) -> torch.Tensor:
    r"""The encoder covariance of Theorems 1 and 2's constructions: ``γ (J^T J)⁻¹`` (eqs. 24, 53).

    ``J`` is the decoder Jacobian ``(..., d, r)`` at ``μ_z``, of full column rank; the result
    is ``(..., r, r)``. It is the covariance of the Laplace approximation of ``p_θ(z|x)`` as
    γ → 0, where the prior's curvature no longer matters (compare
    :func:`optimal_encoder_covariance`, which keeps it).
    """
    gamma = check_positive(gamma, "gamma")
    J = as_tensor(J, "J")
    if J.dim() < 2 or J.shape[-2] < J.shape[-1]:
        raise ValueError(f"J must be (..., d, r) with d >= r, got {tuple(J.shape)}")
    return gamma * torch.linalg.inv(J.mT @ J)


def bent_line(u) -> torch.Tensor:
    """A 1-D manifold in ``R^2``: ``u (..., 1) -> (u, 1/2 sin(π u))`` ``(..., 2)``.

    It is the inverse chart ``φ⁻¹`` of Theorem 2's construction (eq. 41) for the curve that
    :func:`vaebook.data.manifold` uses with ``r = 1``, before its random rotation.
    """
    u = as_tensor(u, "u")
    if u.dim() < 1 or u.shape[-1] != 1:
        raise ValueError(f"u must have shape (..., 1), got {tuple(u.shape)}")
    return torch.cat([u, 0.5 * torch.sin(math.pi * u)], -1)


def _check_density(density) -> None:
    if not isinstance(density, BentBimodal):
        raise TypeError(f"density must be a BentBimodal, got {type(density).__name__}")


def _latents(z, r: int) -> torch.Tensor:
    z = as_tensor(z, "z", dtype=torch.float64)
    if z.dim() < 1 or z.shape[-1] != r:
        raise ValueError(f"z must have shape (..., {r}), got {tuple(z.shape)}")
    return z


# -- estimators for a Gaussian decoder N(f(z), γ I) ------------------------------------------


def _gaussian_encoder(x, mu_q, cov_q) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = as_tensor(x, "x")
    mu_q = as_tensor(mu_q, "mu_q", like=x)
    cov_q = as_tensor(cov_q, "cov_q", like=x)
    if x.dim() != 2 or mu_q.dim() != 2 or mu_q.shape[0] != x.shape[0]:
        raise ValueError(
            f"x must be (n, d) and mu_q (n, r) with the same n, got {tuple(x.shape)} "
            f"and {tuple(mu_q.shape)}"
        )
    r = mu_q.shape[1]
    if cov_q.shape != (x.shape[0], r, r):
        raise ValueError(f"cov_q must be ({x.shape[0]}, {r}, {r}), got {tuple(cov_q.shape)}")
    _, info = torch.linalg.cholesky_ex(cov_q)
    if bool((info != 0).any()) or not torch.allclose(cov_q, cov_q.mT):
        raise ValueError("cov_q must hold symmetric positive definite matrices")
    return x, mu_q, cov_q


def _log_decoder(x, decoder, z, gamma: float) -> torch.Tensor:
    """``log N(x; f(z), γ I)`` for ``z`` ``(S, n, r)`` and ``x`` ``(n, d)``; returns ``(S, n)``."""
    mean = decoder(z)
    if mean.shape != (*z.shape[:-1], x.shape[-1]):
        raise ValueError(
            f"decoder must map (..., r) to (..., {x.shape[-1]}), got {tuple(mean.shape)}"
        )
    d = x.shape[-1]
    return -0.5 * (((x - mean) ** 2).sum(-1) / gamma + d * (LOG_2PI + math.log(gamma)))


def negative_elbo(
    x, decoder: Callable, gamma: float, mu_q, cov_q, *, n_samples: int = 1024, generator=None
) -> torch.Tensor:
    r"""The VAE cost (Dai & Wipf, eq. 2) per example for a Gaussian encoder and decoder.

    ``E_q[‖x - f(z)‖²] / (2γ) + d/2 log(2πγ) + KL(N(μ_q, Σ_q) || N(0, I))``, the expectation
    by ``n_samples`` reparameterised draws, the KL in closed form.

    Parameters
    ----------
    x : ``(n, d)`` data; decoder : callable ``(..., r) -> (..., d)``, the decoder mean.
    gamma : float > 0, the decoder variance. mu_q ``(n, r)``, cov_q ``(n, r, r)``: ``q(z|x)``.

    Returns
    -------
    tensor ``(n,)`` in nats (twice it is the left side of eqs. 8-9 plus the KL).
    """
    gamma = check_positive(gamma, "gamma")
    check_positive_int(n_samples, "n_samples")
    x, mu_q, cov_q = _gaussian_encoder(x, mu_q, cov_q)
    chol = torch.linalg.cholesky(cov_q)
    eps = torch.randn(n_samples, *mu_q.shape, generator=generator, dtype=x.dtype)
    z = mu_q + (chol @ eps.unsqueeze(-1)).squeeze(-1)
    data_term = -_log_decoder(x, decoder, z, gamma).mean(0)
    zeros = torch.zeros_like(mu_q)
    eye = torch.eye(mu_q.shape[1], dtype=x.dtype).expand_as(cov_q)
    return data_term + kl_normal(mu_q, cov_q, zeros, eye)


def importance_log_marginal(
    x,
    decoder: Callable,
    gamma: float,
    mu_q,
    cov_q,
    *,
    n_samples: int = 4096,
    prior_fraction: float = 1 / 32,
    generator=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``log p_θ(x)`` and ``KL(q(z|x) || p_θ(z|x))`` for ``p_θ(x) = ∫ N(x; f(z), γI) N(z) dz``.

    ``p_θ(x)`` is estimated by importance sampling: a share ``prior_fraction`` of the draws
    comes from the prior ``N(0, I)`` and the rest from ``q(z|x)``, and every draw is weighted
    against the mixture of the two in those proportions (the balance heuristic of multiple
    importance sampling). The prior share keeps the estimate sound when ``q`` misses part of
    the posterior (large γ); its weights are at most ``(2πγ)^{-d/2} / prior_fraction``. The
    gap follows from ``KL(q || p_θ(z|x)) = log p_θ(x) - E_q[log p_θ(x, z) - log q(z|x)]``
    with the expectation over the draws from ``q``. Both are Monte Carlo estimates: when
    ``q`` is close to the posterior (Theorem 1's regime) the error of ``log p_θ(x)``, and so of
    the KL, is of order ``1e-4`` with the defaults, and a KL that small can come out
    slightly negative.

    Parameters
    ----------
    x : ``(n, d)``; decoder : callable ``(..., r) -> (..., d)``; gamma : float > 0;
    mu_q ``(n, r)``, cov_q ``(n, r, r)``: the encoder's ``q(z|x)``.
    n_samples : draws per example, >= 2. prior_fraction : share of them from the prior, in
        (0, 1), rounded to a whole number of draws between 1 and ``n_samples - 1``.

    Returns
    -------
    ``(log_px, kl)``, each ``(n,)``.
    """
    gamma = check_positive(gamma, "gamma")
    if check_positive_int(n_samples, "n_samples") < 2:
        raise ValueError(
            f"n_samples must be at least 2 (one draw from q, one from the prior), got {n_samples}"
        )
    prior_fraction = check_positive(prior_fraction, "prior_fraction")
    if prior_fraction >= 1:
        raise ValueError(f"prior_fraction must be < 1, got {prior_fraction}")
    x, mu_q, cov_q = _gaussian_encoder(x, mu_q, cov_q)
    # at least one draw from each, n_samples in all
    n_prior = min(max(round(prior_fraction * n_samples), 1), n_samples - 1)
    n_q = n_samples - n_prior
    q = torch.distributions.MultivariateNormal(mu_q, covariance_matrix=cov_q)
    eye = torch.eye(mu_q.shape[1], dtype=x.dtype)
    prior = torch.distributions.MultivariateNormal(torch.zeros_like(mu_q), covariance_matrix=eye)
    eps = torch.randn(n_q + n_prior, *mu_q.shape, generator=generator, dtype=x.dtype)
    z_q = mu_q + (torch.linalg.cholesky(cov_q) @ eps[:n_q].unsqueeze(-1)).squeeze(-1)
    z = torch.cat([z_q, eps[n_q:]])  # (n_q + n_prior, n, r)
    log_joint = _log_decoder(x, decoder, z, gamma) + prior.log_prob(z)
    share = torch.tensor([n_q, n_prior], dtype=x.dtype) / (n_q + n_prior)
    log_proposal = torch.logsumexp(
        torch.stack([q.log_prob(z), prior.log_prob(z)], -1) + share.log(), -1
    )
    log_px = torch.logsumexp(log_joint - log_proposal, 0) - math.log(n_q + n_prior)
    elbo = (log_joint[:n_q] - q.log_prob(z_q)).mean(0)
    return log_px, log_px - elbo


# -- the small-γ analysis ---------------------------------------------------------------------


def optimal_encoder_covariance(J, gamma: float) -> torch.Tensor:
    r"""The encoder covariance minimising the local VAE cost: ``(I + J^T J / γ)⁻¹`` (eq. 83).

    ``J`` is the decoder Jacobian ``(..., d, κ)`` at ``μ_z``; the result is ``(..., κ, κ)``.
    If ``J`` has rank ``r``, ``r`` eigenvalues are ``1 / (1 + S_i / γ) = O(γ)`` and ``κ - r``
    equal 1 (eqs. 84-85). It is the standard-prior case of Bonheme & Grzes' eq. 11,
    :func:`vaebook.local_geometry.optimal_posterior_covariance`, which computes it without an
    inverse, so it stays accurate when ``J^T J / γ`` is huge.
    """
    J = as_tensor(J, "J")
    if J.dim() < 2:
        raise ValueError(f"J must be (..., d, kappa), got {tuple(J.shape)}")
    ones = torch.ones(J.shape[-1], dtype=J.dtype, device=J.device)
    return optimal_posterior_covariance(J, ones, gamma)


# -- diagnostics of a trained VAE -------------------------------------------------------------


def encoder_variances(model: nn.Module, x) -> torch.Tensor:
    r"""The encoder variances ``λ_j`` per latent direction, averaged over the data.

    The book's encoders are diagonal, so the eigenvalues of ``Σ_z`` are the variances
    ``exp(logvar_j)`` and the eigen-directions are the coordinate axes; ``λ_j`` is their
    mean over the examples ``x`` (Dai & Wipf, Figs. 10-11).

    Parameters
    ----------
    model : anything with ``encode(x) -> (mu, logvar)``: a :class:`~vaebook.nets.VAE`
        (``(n, κ)``) or a :class:`~vaebook.ensemble.EnsembleVAE` (``(M, n, κ)``).
    x : a batch of data.

    Returns
    -------
    tensor ``(κ,)``, or ``(M, κ)`` for an ensemble.
    """
    if not hasattr(model, "encode"):
        raise TypeError("model must have an encode(x) -> (mu, logvar) method, e.g. a VAE")
    with torch.no_grad():
        _, logvar = model.encode(x)
    return torch.exp(logvar).mean(-2)


def active_dimensions(variances, threshold: float = 0.5) -> torch.Tensor:
    r"""Indices of the active latent dimensions: those with ``λ_j < threshold``.

    Near an optimum the ``λ_j`` split into ``r`` values near 0 (the dimensions that encode the
    manifold) and ``κ - r`` near 1 (filled with prior noise); 0.5 is the midpoint of the two.
    ``variances`` is ``(κ,)`` (e.g. from :func:`encoder_variances`); the result holds the
    active indices in increasing order of ``λ_j`` and its length is the count ``r̂``.
    """
    variances = as_tensor(variances, "variances")
    if variances.dim() != 1:
        raise ValueError(f"variances must be (kappa,), got {tuple(variances.shape)}")
    if bool((variances < 0).any()):
        raise ValueError("variances must be >= 0")
    threshold = check_positive(threshold, "threshold")
    order = torch.argsort(variances)
    return order[variances[order] < threshold]


def direction_sensitivity(
    model: nn.Module, x, *, n_samples: int = 15, noise_std: float = 1.0, generator=None
) -> torch.Tensor:
    r"""How much the decoded image moves when noise is added along each latent direction.

    For every direction ``j`` and example ``x``: decode ``μ_z(x) + noise_std · ε e_j`` for
    ``n_samples`` draws ``ε ~ N(0, 1)``, take the variance of each pixel over the draws and
    average it over the pixels and the examples (the "image variance" of Dai & Wipf's
    Fig. 10; noise at the prior's scale, so a dimension the decoder ignores gives 0).

    Parameters
    ----------
    model : a :class:`~vaebook.nets.VAE` (``encode`` and ``mean_image``).
    x : a batch ``(n, ...)``.

    Returns
    -------
    tensor ``(κ,)`` of image variances, in squared data units.
    """
    if not (hasattr(model, "encode") and hasattr(model, "mean_image")):
        raise TypeError("model must be a VAE with encode() and mean_image()")
    check_positive_int(n_samples, "n_samples")
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2 to estimate a variance, got {n_samples}")
    noise_std = check_positive(noise_std, "noise_std")
    with torch.no_grad():
        mu, _ = model.encode(x)
        n, k = mu.shape
        eps = torch.randn(k, n_samples, n, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu.expand(k, n_samples, n, k).clone()
        z[torch.arange(k), :, :, torch.arange(k)] += noise_std * eps
        images = model.mean_image(z.reshape(-1, k)).reshape(k, n_samples, n, -1)
        return images.var(1).mean((-1, -2))


def latent_spectrum(z, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Singular values of a latent sample matrix and of an i.i.d. ``N(0, 1)`` matrix of its size.

    ``z`` is ``(n, κ)`` (e.g. one draw from ``q(z|x)`` per example). Both spectra are divided
    by ``sqrt(n)`` so that they are the square roots of the eigenvalues of ``Z^T Z / n``: a
    sample of ``N(0, I)`` gives values near 1 (Dai & Wipf, Fig. 1 right). The reference matrix
    is drawn from ``seed``. Returns ``(spectrum, reference)``, each ``(min(n, κ),)`` in
    decreasing order.
    """
    z = as_tensor(z, "z")
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"z must be (n, kappa) with n >= 2, got {tuple(z.shape)}")
    check_positive_int(seed, "seed", allow_zero=True)
    gen = torch.Generator().manual_seed(seed)
    reference = torch.randn(z.shape, generator=gen, dtype=torch.float64)
    scale = math.sqrt(z.shape[0])
    spectrum = torch.linalg.svdvals(z.detach().cpu().to(torch.float64)) / scale
    return spectrum, torch.linalg.svdvals(reference) / scale


# -- the two-stage VAE ------------------------------------------------------------------------


class TwoStageVAE(nn.Module):
    r"""Dai & Wipf's two-stage VAE (Section 4): a VAE on ``x``, then a VAE on its latents.

    Stage 1 is a VAE with a learned decoder variance γ on the data; it finds the manifold.
    Stage 2 is a VAE with its own learned ``γ_z`` on the stage-1 latents ``z ~ q(z|x)``,
    drawn afresh at every step; it learns their distribution, which fills ``R^κ``, the
    ``r = d`` setting of Theorem 1. Sampling runs ``u ~ N(0, I)``, ``z ~ p(z|u)``, and returns
    the stage-1 decoder mean at ``z``.

    Parameters
    ----------
    stage1 : a :class:`~vaebook.nets.VAE` on the data, or an
        :class:`~vaebook.ensemble.EnsembleVAE` of ``M`` members.
    stage2 : a Gaussian VAE (or an ensemble of the same ``M``) whose input is the stage-1
        latent, of shape ``(κ,)``.

    Training: ``fit(model.stage1, x, ...)`` first, then ``fit(model, x, ...)``, which trains
    stage 2 only: :meth:`terms` computes the stage-1 latents without gradients, so the Adam
    step leaves stage 1 as it is.
    """

    def __init__(self, stage1: nn.Module, stage2: nn.Module):
        super().__init__()
        for name, stage in (("stage1", stage1), ("stage2", stage2)):
            if not all(hasattr(stage, a) for a in ("encode", "decode", "terms", "latent_dim")):
                raise TypeError(
                    f"{name} must be a vaebook VAE or EnsembleVAE, got {type(stage).__name__}"
                )
        if getattr(stage2, "likelihood", "gaussian") != "gaussian":
            raise ValueError("stage2 must have a Gaussian likelihood: its data are real latents")
        members1, members2 = getattr(stage1, "members", None), getattr(stage2, "members", None)
        if members1 != members2:
            raise ValueError(f"stage1 has {members1} members but stage2 has {members2}")
        width = getattr(stage2, "input_shape", None) or (stage2.encoder.body[1][0].in_features,)
        if tuple(width) != (stage1.latent_dim,):
            raise ValueError(
                f"stage2 must take inputs of shape ({stage1.latent_dim},), the stage-1 latent, "
                f"got {tuple(width)}"
            )
        self.stage1 = stage1
        self.stage2 = stage2

    def latents(self, x, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw ``z ~ q(z|x)`` from stage 1 per example: ``(n, κ)`` or ``(M, n, κ)``."""
        with torch.no_grad():
            mu, logvar = self.stage1.encode(x)
            return sample_diag_normal(mu, logvar, generator=generator)

    def terms(self, x, generator: torch.Generator | None = None):
        """Stage 2's :class:`~vaebook.objectives.ELBOTerms` on fresh stage-1 latents of ``x``."""
        return self.stage2.terms(self.latents(x, generator), generator)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples ``u -> z -> x``: stage-1 decoder means ``(n, ...)`` (``(M, n, ...)``)."""
        check_positive_int(n, "n")
        ref = self.stage2.log_gamma
        members = getattr(self.stage2, "members", None)
        shape = (
            (n, self.stage2.latent_dim) if members is None else (members, n, self.stage2.latent_dim)
        )
        u = torch.randn(shape, generator=generator, dtype=ref.dtype, device=ref.device)
        mean_z = self.stage2.decode(u)
        std_z = torch.exp(0.5 * self.stage2.log_gamma).reshape(-1, *[1] * (mean_z.dim() - 1))
        z = mean_z + std_z * torch.randn(
            mean_z.shape, generator=generator, dtype=ref.dtype, device=ref.device
        )
        return decoder_mean(self.stage1.decode(z), self.stage1.likelihood)
