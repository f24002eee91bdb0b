r"""High-capacity β-VAEs (Rezende & Viola, 2018): tilings, blur, fixed points, phase transitions.

The chapter ``book/high_capacity.md`` uses these kernels. The analysis expresses the encoder
and the decoder in a basis of indicator functions ``φ_a`` of *tiles* ``Ω_a`` of latent space
with prior masses ``π_a``: ``q(z|x_i) = π(z) Σ_a m_ia φ_a(z)`` and ``g(z) = Σ_a ψ_a φ_a(z)``.
Everything is then a finite computation on the data ``X`` ``(n, D)``, the masses ``π`` ``(m,)``
and the reconstruction vectors ``ψ`` ``(m, D)``.

- :func:`grid_basis`: the tiles of Appendix A, a uniform grid on a square with uniform prior.
- :func:`fixed_points`: the smoothed iteration of eq. 15 (Proposition 4), in log space;
  :func:`reconstruction_curve` and :func:`critical_betas`: the order parameter ``u(β)`` and
  its phase transitions (Fig. 3).
- :func:`two_point_map` and :func:`two_point_critical_beta`: the analytic case of two data
  points, where the iteration is a scalar map with a pitchfork at ``β = a²``.
- :func:`lipschitz_constraint`: the local or global Lipschitz constraint of Appendix B,
  applied after every step of :func:`fixed_points` as a weighted projection (Proposition 6).
- :func:`partition_decoder`: the optimal decoder for a posterior supported on given tiles
  (Propositions 2 and 3: exact for a partition, a blur where supports overlap, a hole where
  there is none); :func:`posterior_decoder`: the same (eq. 3) for any posteriors, e.g. the
  Gaussian encoder's of :func:`gaussian_tile_posterior`; :func:`equipartition`: the tile
  probabilities of Proposition 5.
- :func:`gibbs_posterior`: for a trained 2-D decoder, the best posterior any encoder could
  reach (eq. 2 at β = 1), by quadrature, so an encoder's gap and a decoder's are told apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .checks import as_tensor, check_positive, check_positive_int

__all__ = [
    "FixedPoints",
    "GibbsPosterior",
    "LipschitzConstraint",
    "critical_betas",
    "equipartition",
    "fixed_points",
    "gaussian_tile_posterior",
    "gibbs_posterior",
    "grid_basis",
    "learned_sigma_rounds",
    "lipschitz_constraint",
    "mean_critical_beta",
    "nearest_neighbour_error",
    "partition_decoder",
    "posterior_decoder",
    "reconstruction_curve",
    "tile_elbo",
    "tile_masses",
    "two_point_critical_beta",
    "two_point_map",
]

F64 = torch.float64


def grid_basis(
    m: int = 32, low: float = -0.5, high: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``m x m`` tiles of the square ``[low, high]^2`` under a uniform prior (Appendix A).

    Returns
    -------
    centres : float64 ``(m * m, 2)``, the tile centres, row-major (the second coordinate fastest).
    masses : float64 ``(m * m,)``, the prior mass of every tile, ``1 / m^2`` (they sum to 1).
    """
    m = check_positive_int(m, "m")
    for value, name in ((low, "low"), (high, "high")):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        raise ValueError(f"low and high must be finite with low < high, got {low}, {high}")
    width = (high - low) / m
    axis = low + width * (torch.arange(m, dtype=F64) + 0.5)
    centres = torch.cartesian_prod(axis, axis)
    return centres, torch.full((m * m,), 1.0 / (m * m), dtype=F64)


@dataclass(frozen=True)
class FixedPoints:
    """The result of :func:`fixed_points`.

    ``psi`` ``(m, D)``: the final reconstruction vectors; ``trajectory`` ``(T + 1, m, D)``: ψ at
    every iteration, the initial one first; ``posterior`` ``(n, m)``: ``q_i(a) = m_ia π_a``,
    the posterior mass of tile ``a`` for data point ``i`` (rows sum to 1);
    ``reconstruction_error``: ``u = (1/n) Σ_i Σ_a q_i(a) |x_i - ψ_a|²``;
    ``kl``: ``(1/n) Σ_i KL(q_i || π)``, in nats; ``iterations``: ``T``; ``last_step``: how far
    the last step moved ψ, ``‖ψ_T - ψ_{T-1}‖`` (Euclidean norm of the whole matrix);
    ``converged``: whether ``last_step`` fell below ``tol``. Called with
    ``keep_trajectory=False``, ``trajectory`` holds only the first and the last ψ ``(2, m, D)``.
    """

    psi: torch.Tensor
    trajectory: torch.Tensor
    posterior: torch.Tensor
    reconstruction_error: float
    kl: float
    iterations: int
    last_step: float
    converged: bool


def _data(X) -> torch.Tensor:
    X = as_tensor(X, "X", dtype=F64)
    if X.dim() != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be (n, D) with n >= 1, got shape {tuple(X.shape)}")
    return X


def _log_masses(prior, m: int) -> torch.Tensor:
    prior = as_tensor(prior, "prior", dtype=F64)
    if prior.dim() != 1 or prior.shape[0] != m:
        raise ValueError(f"prior must be ({m},), one mass per tile, got shape {tuple(prior.shape)}")
    if bool((prior <= 0).any()):
        raise ValueError("prior must hold positive masses")
    if abs(prior.sum().item() - 1.0) > 1e-6:  # float32 masses round to about 1e-7
        raise ValueError(f"prior must sum to 1, got {prior.sum().item()}")
    return torch.log(prior / prior.sum())


def _energies(X: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """``H_ia = |x_i - ψ_a|²``, ``(n, m)``, exact (no ``|x|² - 2 x·ψ + |ψ|²`` cancellation)."""
    return ((X[:, None, :] - psi[None, :, :]) ** 2).sum(-1)


def _posterior(X: torch.Tensor, psi: torch.Tensor, log_prior: torch.Tensor, beta: float):
    """``H_ia = |x_i - ψ_a|²`` and ``log q_i(a) = log m_ia π_a``, both ``(n, m)`` (eq. 14)."""
    H = _energies(X, psi)
    return H, torch.log_softmax(-H / (2.0 * beta) + log_prior, dim=1)


# -- the Lipschitz constraint of Appendix B -----------------------------------------------------


@dataclass(frozen=True)
class LipschitzConstraint:
    r"""``|ψ_a - ψ_b| ≤ d_ab`` for the tile pairs ``(a, b)`` in ``pairs`` (Appendix B, eq. 5).

    Built by :func:`lipschitz_constraint`. :meth:`project` is the step of Proposition 6: the
    weighted projection of a candidate ψ onto the constraint set.
    """

    pairs: torch.Tensor  # int64 (E, 2)
    bounds: torch.Tensor  # float64 (E,)
    laplacian: torch.Tensor  # float64 (m, m), the graph Laplacian of the pairs
    rho: float = 1.0
    inner_iter: int = 20

    def violation(self, psi) -> float:
        """``max (|ψ_a - ψ_b| - d_ab)`` over the pairs, ≤ 0 when ψ satisfies the constraint."""
        psi = as_tensor(psi, "psi", dtype=F64)
        gaps = torch.linalg.norm(psi[self.pairs[:, 0]] - psi[self.pairs[:, 1]], dim=1)
        return (gaps - self.bounds).max().item()

    def project(self, F, weights, state=None, *, max_iter: int | None = None, tol: float = 0.0):
        r"""The weighted projection ``argmin_ψ Σ_a w_a |ψ_a - F_a|² / 2`` over the constraint set.

        Solved by ADMM on the pair differences ``e_ab = ψ_a - ψ_b``: a linear solve with
        ``W + ρ L`` (``L`` the graph Laplacian of the pairs), a projection of every ``e_ab``
        onto the ball of radius ``d_ab``, and a dual update. ``state`` (returned, and accepted
        back) warm-starts the next call, which is how :func:`fixed_points` keeps the cost of
        one projection per step small. A candidate that already satisfies the constraint is
        returned unchanged (the projection is the identity when the constraint is inactive).

        Parameters
        ----------
        F : ``(m, D)`` candidate; weights : ``(m,)`` non-negative (the posterior mass of every
        tile, ``w_a = Σ_i q_i(a)``); state : ``None`` or the state of a previous call;
        max_iter : ADMM iterations (default ``inner_iter``); tol : stop when the pair
        differences of ψ are within ``tol`` of feasible.

        Returns
        -------
        ``(psi, state)``.
        """
        F = as_tensor(F, "F", dtype=F64)
        m = F.shape[0]
        if F.dim() != 2 or int(self.pairs.max()) >= m:
            raise ValueError(
                f"F must be (m, D) with m > every tile index of pairs, got {tuple(F.shape)}"
            )
        weights = as_tensor(weights, "weights", dtype=F64)
        if weights.shape != (m,) or bool((weights < 0).any()):
            raise ValueError(f"weights must be ({m},) and non-negative, got {tuple(weights.shape)}")
        max_iter = self.inner_iter if max_iter is None else check_positive_int(max_iter, "max_iter")
        src, dst = self.pairs[:, 0], self.pairs[:, 1]
        if self.laplacian.shape != (m, m):
            raise ValueError(f"F has {m} tiles but the constraint has {len(self.laplacian)}")
        if state is None and self.violation(F) <= 0.0:
            return F.clone(), None
        w = weights / weights.max().clamp_min(1e-300) + 1e-9  # scale-free; no singular tile
        chol = torch.linalg.cholesky(torch.diag(w) + self.rho * self.laplacian)
        if state is None:
            e, y = F[src] - F[dst], torch.zeros(len(src), F.shape[1], dtype=F64)
        else:
            e, y = state
        psi = F
        for _ in range(max_iter):
            rhs = w[:, None] * F
            v = e - y
            rhs = rhs.index_add(0, src, self.rho * v).index_add(0, dst, -self.rho * v)
            psi = torch.cholesky_solve(rhs, chol)
            diff = psi[src] - psi[dst]
            target = diff + y
            norm = torch.linalg.norm(target, dim=1, keepdim=True)
            e = target * torch.clamp(self.bounds[:, None] / norm.clamp_min(1e-300), max=1.0)
            y = y + diff - e
            gaps = torch.linalg.norm(diff, dim=1) - self.bounds
            if tol > 0 and gaps.max().item() <= tol:
                break
        return psi, (e, y)


def lipschitz_constraint(
    centres, width: float, lipschitz: float, radius: float | None = None, **admm
) -> LipschitzConstraint:
    r"""The Lipschitz constraint of Appendix B on a grid of square tiles of side ``width``.

    Eq. 4 asks ``|g(z) - g(z')|² ≤ L² |z - z'|²`` on average over the pairs of tiles, weighted
    by the prior: with ``K_ab = ∫∫ φ_a(z) φ_b(z') |z - z'|² π(z)π(z') dz dz'`` it becomes
    ``|ψ_a - ψ_b|² ≤ L² K_ab / (π_a π_b) = d_ab²`` (eq. 5). For square tiles of side ``h`` with
    centres ``c_a`` under a uniform prior, ``K_ab / (π_a π_b)`` is the mean squared distance
    between a uniform point of each: ``|c_a - c_b|² + h²/3``. Only pairs closer than
    ``radius`` are constrained (a *local* constraint; ``None`` constrains every pair, the
    global one). The multiplier ``Ω(z, z')`` of eq. 4 is zero beyond ``radius``.

    Parameters
    ----------
    centres : ``(m, d_z)`` tile centres (e.g. from :func:`grid_basis`); width : float > 0;
    lipschitz : ``L`` > 0; radius : float > 0 or None;
    admm : ``rho`` and ``inner_iter`` of :class:`LipschitzConstraint`.
    """
    centres = as_tensor(centres, "centres", dtype=F64)
    if centres.dim() != 2 or centres.shape[0] < 2:
        raise ValueError(f"centres must be (m, d_z) with m >= 2, got {tuple(centres.shape)}")
    width = check_positive(width, "width")
    lipschitz = check_positive(lipschitz, "lipschitz")
    distance = torch.cdist(centres, centres)
    a, b = torch.triu_indices(len(centres), len(centres), offset=1)
    if radius is not None:
        radius = check_positive(radius, "radius")
        near = distance[a, b] < radius
        a, b = a[near], b[near]
    if len(a) == 0:
        raise ValueError(f"radius {radius} leaves no pair of tiles to constrain")
    bounds = lipschitz * torch.sqrt(distance[a, b] ** 2 + width**2 / 3.0)
    rho = check_positive(admm.pop("rho", 1.0), "rho")
    inner_iter = check_positive_int(admm.pop("inner_iter", 20), "inner_iter")
    if admm:
        raise TypeError(f"unknown keyword arguments: {sorted(admm)}")
    m = len(centres)
    laplacian = torch.zeros(m, m, dtype=F64)
    ones = torch.ones(len(a), dtype=F64)
    for i, j, sign in ((a, a, 1.0), (b, b, 1.0), (a, b, -1.0), (b, a, -1.0)):
        laplacian.index_put_((i, j), sign * ones, accumulate=True)
    return LipschitzConstraint(torch.stack([a, b], 1), bounds, laplacian, rho, inner_iter)


def fixed_points(
    X,
    beta: float,
    *,
    psi0=None,
    prior=None,
    constraint: LipschitzConstraint | None = None,
    smoothing: float = 0.9,
    max_iter: int = 400,
    tol: float = 1e-3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    keep_trajectory: bool = True,
) -> FixedPoints:
    r"""Iterate the decoder's fixed-point equations (eq. 15) from ``psi0`` until they settle.

    One step, with ``H_ia = |x_i - ψ_a|²``:

    ``m_ia = exp(-H_ia / 2β) / c_i``, ``c_i = Σ_b exp(-H_ib / 2β) π_b`` (the encoder, eq. 14),
    ``F(ψ)_a = Σ_i m_ia x_i / Σ_j m_ja`` (the decoder: a convex combination of the data),

    smoothed exponentially as in Appendix A: ``ψ ← smoothing F(ψ) + (1 - smoothing) ψ``. It
    stops after ``max_iter`` steps or when a step moves ψ by less than ``tol`` (Euclidean norm
    of the change of the whole matrix). Both normalisations are log-sum-exps, so a small β
    (1e-4 and below) neither underflows nor divides by zero.

    Parameters
    ----------
    X : array-like ``(n, D)``, the data.
    beta : float > 0; the kernel's scale is ``√β``.
    psi0 : ``(m, D)`` initial ψ. Default: the centres of :func:`grid_basis` (``D = 2`` only)
        plus uniform noise in ``[-0.1, 0.1]`` drawn from ``seed``, as in Appendix A.
    prior : ``(m,)`` tile masses summing to 1; default uniform, ``1 / m``.
    smoothing : float in (0, 1], the weight of the new value (1 is the plain iteration).
    max_iter : int > 0; tol : float > 0; seed : int.
    constraint : a :class:`LipschitzConstraint`: after every smoothed step ψ is replaced by its
        weighted projection onto the constraint (Proposition 6), with weights the posterior
        mass of each tile; the projection is warm-started from the previous step.
    dtype : the floating type of the iteration: float32 (the default) is twice as fast as
        float64 on a CPU and, in log space, accurate to about 1e-6 relative; the returned
        tensors are float64 either way, and ``u`` and ``kl`` are evaluated in float64.
    keep_trajectory : bool; False keeps only the first and the last ψ, for long runs on
        high-dimensional data, where the whole path costs ``(T + 1) m D`` numbers (3000 steps of
        256 tiles on 8×8 images: 390 MB in float64).

    Returns
    -------
    :class:`FixedPoints`.
    """
    X = _data(X)
    beta = check_positive(beta, "beta")
    smoothing = check_positive(smoothing, "smoothing")
    if smoothing > 1.0:
        raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_positive(tol, "tol")
    check_positive_int(seed, "seed", allow_zero=True)
    if not isinstance(keep_trajectory, bool):
        raise TypeError(f"keep_trajectory must be a bool, got {type(keep_trajectory).__name__}")
    if psi0 is None:
        if X.shape[1] != 2:
            raise ValueError(
                f"psi0 is required when the data are not 2-D (X has D = {X.shape[1]}); "
                "the default grid initialisation lives in the plane"
            )
        centres, _ = grid_basis()
        gen = torch.Generator().manual_seed(seed)
        psi0 = centres + 0.2 * torch.rand(centres.shape, generator=gen, dtype=F64) - 0.1
    psi = as_tensor(psi0, "psi0", dtype=F64)
    if psi.dim() != 2 or psi.shape[1] != X.shape[1] or psi.shape[0] == 0:
        raise ValueError(f"psi0 must be (m, {X.shape[1]}) (D of X), got shape {tuple(psi.shape)}")
    m = psi.shape[0]
    log_prior = _log_masses(torch.full((m,), 1.0 / m, dtype=F64) if prior is None else prior, m)

    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    X_it, log_prior_it = X.to(dtype), log_prior.to(dtype)
    psi = psi.to(dtype)
    if constraint is not None and not isinstance(constraint, LipschitzConstraint):
        raise TypeError(
            f"constraint must be a LipschitzConstraint, got {type(constraint).__name__}"
        )
    # preallocated: appending small tensors between the large temporaries of every step
    # fragments the heap and makes the process grow by about one (n, m) array per step
    trajectory = torch.empty(max_iter + 1 if keep_trajectory else 1, m, X.shape[1], dtype=dtype)
    trajectory[0] = psi
    steps = 0
    converged = False
    state = None
    for _ in range(max_iter):
        # log m_ia up to a constant per data point: |x_i|² cancels between m_ia and c_i
        A = (X_it @ psi.T - 0.5 * (psi**2).sum(1)) / beta
        log_m = A - torch.logsumexp(A + log_prior_it, dim=1, keepdim=True)
        weights = torch.softmax(log_m, dim=0)  # (n, m): column a is m_ia / Σ_j m_ja
        new = smoothing * (weights.T @ X_it) + (1.0 - smoothing) * psi
        if constraint is not None:
            tile_mass = torch.softmax(A + log_prior_it, dim=1).sum(0)  # Σ_i q_i(a)
            projected, state = constraint.project(new, tile_mass, state)
            new = projected.to(dtype)
        step = torch.linalg.norm(new - psi).item()
        psi = new
        steps += 1
        if keep_trajectory:
            trajectory[steps] = psi
        if step < tol:
            converged = True
            break
    psi = psi.to(F64)
    H, log_q = _posterior(X, psi, log_prior, beta)
    q = log_q.exp()
    u = (q * H).sum(1).mean().item()
    kl = (q * (log_q - log_prior)).sum(1).mean().item()
    if keep_trajectory:
        trajectory = trajectory[: steps + 1].to(F64)
    else:
        trajectory = torch.stack([trajectory[0].to(F64), psi])
    return FixedPoints(psi, trajectory, q, u, kl, steps, step, converged)


def learned_sigma_rounds(
    X,
    sigma2: float,
    *,
    psi0,
    prior=None,
    rounds: int = 10,
    max_iter: int = 3000,
    tol: float = 1e-12,
) -> tuple[np.ndarray, FixedPoints]:
    r"""A learned decoder variance (Section 2.1 (ii)), by alternation in the tile basis.

    Each round iterates eq. 15 at ``β = σ²`` (the KL weight is 1, so the energy is the
    Gaussian log-likelihood) from the previous round's ψ until a step moves ψ by less than
    ``tol`` (float64), then sets ``σ² = u / D``, the best variance for those reconstructions.

    Parameters
    ----------
    X : ``(n, D)`` data; sigma2 : float > 0, the starting σ²; psi0 : ``(m, D)`` the first
        round's start; prior : ``(m,)`` tile masses (default uniform); rounds : int > 0;
    max_iter, tol : passed to :func:`fixed_points` for every round.

    Returns
    -------
    ``(sigma2s, last)``: the ``rounds + 1`` values of σ², the start first, and the last round's
    :class:`FixedPoints` (its ``reconstruction_error / D`` is ``sigma2s[-1]``).
    """
    X = _data(X)
    sigmas = [check_positive(sigma2, "sigma2")]
    rounds = check_positive_int(rounds, "rounds")
    psi = psi0
    for _ in range(rounds):
        run = fixed_points(
            X, sigmas[-1], psi0=psi, prior=prior, max_iter=max_iter, tol=tol, dtype=F64
        )
        psi = run.psi
        sigmas.append(run.reconstruction_error / X.shape[1])
    return np.array(sigmas), run


def reconstruction_curve(X, betas, **kwargs) -> np.ndarray:
    """The order parameter ``u(β) = E|x - g(z)|²`` at the fixed points, for every β in ``betas``.

    ``kwargs`` go to :func:`fixed_points` (the same initial ψ for every β). Returns float64
    ``(len(betas),)``.
    """
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size == 0 or not np.all(np.isfinite(betas)) or np.any(betas <= 0):
        raise ValueError("betas must be a non-empty 1-D sequence of positive finite numbers")
    return np.array([fixed_points(X, float(b), **kwargs).reconstruction_error for b in betas])


def critical_betas(betas, u, top: int = 3, smooth: int = 1) -> np.ndarray:
    r"""The critical temperatures: the ``top`` highest local maxima of ``|d²u/dβ²|`` (Fig. 3).

    The second derivative is taken by finite differences on the (possibly uneven) grid
    ``betas`` (``numpy.gradient`` twice). ``smooth`` applies a centred moving average of
    ``2 smooth + 1`` points to ``|d²u/dβ²|`` before the peaks are sought, so that one noisy
    point does not make a peak; 0 turns it off. Peaks are ranked by height.

    Returns
    -------
    float64 ``(k,)``, ``k ≤ top``, the critical β in increasing order.
    """
    betas = np.asarray(betas, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    if betas.ndim != 1 or betas.size < 5:
        raise ValueError(f"betas must be 1-D with at least 5 values, got shape {betas.shape}")
    if u.shape != betas.shape:
        raise ValueError(f"u has shape {u.shape} but betas has {betas.shape}")
    if not (np.all(np.isfinite(betas)) and np.all(np.isfinite(u))):
        raise ValueError("betas and u must be finite")
    if np.any(np.diff(betas) <= 0):
        raise ValueError("betas must be strictly increasing")
    top = check_positive_int(top, "top")
    smooth = check_positive_int(smooth, "smooth", allow_zero=True)
    curvature = np.abs(np.gradient(np.gradient(u, betas), betas))
    if smooth:
        kernel = np.ones(2 * smooth + 1) / (2 * smooth + 1)
        curvature = np.convolve(np.pad(curvature, smooth, mode="edge"), kernel, mode="valid")
    inner = np.arange(1, len(curvature) - 1)
    peaks = inner[
        (curvature[inner] > curvature[inner - 1]) & (curvature[inner] >= curvature[inner + 1])
    ]
    best = peaks[np.argsort(curvature[peaks])[::-1][:top]]
    return np.sort(betas[best])


# -- the analytic case: two data points -----------------------------------------------------


def two_point_map(s, a: float, beta: float):
    r"""The iteration of eq. 15 for two data points ``±a e`` reduced to one number.

    With the tiles split symmetrically, half with ``ψ = s e`` and half with ``ψ = -s e``, the
    normalisers ``c_1 = c_2`` cancel and every tile follows ``s ← a tanh(a s / β)``. Its fixed
    point ``s = 0`` (every tile reconstructs the mean) is stable for ``β > a²`` and splits into
    ``±s*`` below (a pitchfork): see :func:`two_point_critical_beta`.
    """
    a = check_positive(a, "a")
    beta = check_positive(beta, "beta")
    return a * np.tanh(a * np.asarray(s, dtype=np.float64) / beta)


def two_point_critical_beta(a: float) -> float:
    """``β_c = a²``: the slope of :func:`two_point_map` at ``s = 0`` is ``a² / β``."""
    return check_positive(a, "a") ** 2


def mean_critical_beta(X) -> float:
    r"""``β_c = λ_max(C)``, the β below which the mean solution of eq. 15 is unstable.

    With every ``ψ_a`` at the data mean ``x̄``, each tile's update is ``x̄`` again, for every β
    and any prior. Linearised there, a perturbation ``δ_a`` of the tiles maps to
    ``C (δ_a - δ̄) / β``, with ``δ̄ = Σ_b π_b δ_b`` and ``C = (1/n) Σ_i (x_i - x̄)(x_i - x̄)^T``
    the (biased) data covariance: common shifts vanish and differences between tiles grow
    exactly when ``β < λ_max(C)``. For two points ``±a e`` this is
    :func:`two_point_critical_beta`, ``a²``; it is also the critical temperature of
    deterministic annealing (Rose et al.). Smoothing (``ψ ← α F(ψ) + (1 - α) ψ``) does not move
    the threshold.

    Parameters
    ----------
    X : array-like ``(n, D)``, ``n >= 2``, the data.
    """
    X = _data(X)  # float64
    if X.shape[0] < 2:
        raise ValueError(f"X must hold at least 2 points, got {X.shape[0]}")
    centred = X - X.mean(0)
    return float(torch.linalg.eigvalsh(centred.T @ centred / X.shape[0])[-1])


# -- tiles: the optimal decoder and the equipartition of Proposition 5 ------------------------


def partition_decoder(X, support, masses) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The optimal decoder on every tile for ``q(z|x_i) = π(z) 1[z ∈ Ω_i] / π_i`` (Props. 2-3).

    ``Ω_i`` is the union of the tiles where ``support[i]`` is true and ``π_i`` its prior mass.
    Eq. 12: on a tile ``a``, ``g_a = Σ_{i: a ∈ Ω_i} x_i / π_i / Σ_{j: a ∈ Ω_j} 1 / π_j``, the
    average of the data whose supports cover it, weighted by their inverse prior mass. For a
    partition this is the single ``x_i`` owning the tile (no blur); where supports overlap it
    is a blur; a tile no support covers is a *hole*, where the ELBO does not constrain ``g``.

    Parameters
    ----------
    X : ``(n, D)`` data; support : bool ``(n, m)``, every row with at least one tile;
    masses : ``(m,)`` prior masses of the tiles, positive.

    Returns
    -------
    ``(g, hole)``: float64 ``(m, D)`` (NaN on holes) and bool ``(m,)``.
    """
    X = _data(X)
    if not isinstance(support, (torch.Tensor, np.ndarray, list, tuple)):
        raise TypeError(f"support must be a bool array (n, m), got {type(support).__name__}")
    support = torch.as_tensor(support)
    if support.dtype != torch.bool or support.dim() != 2 or support.shape[0] != X.shape[0]:
        raise ValueError(
            f"support must be a bool (n, m) array with n = {X.shape[0]}, "
            f"got {support.dtype} of shape {tuple(support.shape)}"
        )
    if not bool(support.any(1).all()):
        raise ValueError("support: every data point needs at least one tile")
    masses = as_tensor(masses, "masses", dtype=F64)
    if masses.shape != (support.shape[1],) or bool((masses <= 0).any()):
        raise ValueError(
            f"masses must be ({support.shape[1]},) positive, got {tuple(masses.shape)}"
        )
    inverse_mass = 1.0 / (support.to(F64) @ masses)  # 1 / π_i, (n,)
    weights = support.to(F64) * inverse_mass[:, None]  # (n, m)
    total = weights.sum(0)
    hole = total == 0
    g = (weights.T @ X) / total[:, None]
    g[hole] = float("nan")
    return g, hole


def equipartition(H, beta: float, *, max_iter: int = 10_000, tol: float = 1e-10):
    r"""The tile probabilities ``γ_a`` of Proposition 5.

    They solve ``Σ_i exp(-H_ia/β) / Σ_b exp(-H_ib/β) γ_b = n`` for every tile with
    ``γ_a > 0`` (and ``≤ n`` where ``γ_a = 0``), ``Σ_a γ_a = 1``. These are the optimality
    conditions of the concave problem ``max_γ Σ_i log Σ_b exp(-H_ib/β) γ_b`` on the simplex,
    solved by the multiplicative (EM) update ``γ_a ← γ_a (1/n) Σ_i r_ia`` with
    ``r_ia = exp(-H_ia/β) / Σ_b exp(-H_ib/β) γ_b``, in log space.

    Parameters
    ----------
    H : ``(n, m)`` energies ``H(x_i, z)`` on the tiles; beta : float > 0.
    max_iter, tol : the update stops when ``max_a |(1/n) Σ_i r_ia - 1|`` over tiles with
        ``γ_a > 1e-12`` falls below ``tol``.

    Returns
    -------
    ``(gamma, residual)``: float64 ``(m,)`` on the simplex, and the final
    ``max_a |(1/n) Σ_i r_ia - 1|`` over the tiles in use.
    """
    H = as_tensor(H, "H", dtype=F64)
    if H.dim() != 2 or 0 in H.shape:
        raise ValueError(f"H must be (n, m) with n, m >= 1, got shape {tuple(H.shape)}")
    beta = check_positive(beta, "beta")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_positive(tol, "tol")
    n, m = H.shape
    log_kernel = -H / beta

    def mean_responsibility(log_gamma):  # (1/n) Σ_i r_ia and the residual over used tiles
        log_r = log_kernel - torch.logsumexp(log_kernel + log_gamma, dim=1, keepdim=True)
        mean_r = torch.logsumexp(log_r, dim=0).exp() / n
        used = log_gamma > math.log(1e-12)
        return mean_r, (mean_r[used] - 1.0).abs().max().item()

    log_gamma = torch.full((m,), -math.log(m), dtype=F64)
    mean_r, residual = mean_responsibility(log_gamma)
    for _ in range(max_iter):
        if residual < tol:
            break
        log_gamma = log_gamma + torch.log(mean_r)
        log_gamma = log_gamma - torch.logsumexp(log_gamma, 0)
        mean_r, residual = mean_responsibility(log_gamma)
    return log_gamma.exp(), residual


def posterior_decoder(X, posterior) -> torch.Tensor:
    r"""The best decoder on every tile for given posteriors: eq. 3 in the tile basis.

    ``ψ_a = Σ_i q_i(a) x_i / Σ_i q_i(a)``, the posterior-weighted average of the data, which
    maximises :func:`tile_elbo` over ψ for fixed ``posterior`` (a concave quadratic in ψ). For
    a partition it is the owner of each tile; where posteriors overlap it is a blur
    (Proposition 3). Differentiable in ``posterior``.

    Parameters
    ----------
    X : ``(n, D)`` data; posterior : ``(n, m)`` non-negative, ``q_i(a)``, every tile with some
        mass (a tile no posterior reaches is a hole, where eq. 3 is undefined).

    Returns
    -------
    ``ψ`` float64 ``(m, D)``.
    """
    X = _data(X)
    posterior = as_tensor(posterior, "posterior", dtype=F64)
    if posterior.dim() != 2 or posterior.shape[0] != X.shape[0] or bool((posterior < 0).any()):
        raise ValueError(
            f"posterior must be non-negative (n, m) with n = {X.shape[0]}, "
            f"got shape {tuple(posterior.shape)}"
        )
    mass = posterior.sum(0)
    if bool((mass == 0).any()):
        raise ValueError("posterior: every tile needs some mass (a tile with none is a hole)")
    return (posterior.T @ X) / mass[:, None]


def gaussian_tile_posterior(centres, prior, mean, log_std) -> torch.Tensor:
    r"""A Gaussian encoder's posteriors on the tiles: ``q_i(a) ∝ π_a N(c_a; μ_i, s_i² I)``.

    The restricted family of an ordinary VAE encoder, read on the tiles of
    :func:`grid_basis`: each data point gets one isotropic bump of mean ``μ_i`` and standard
    deviation ``s_i`` over the prior, normalised over the tiles. Differentiable in ``mean``
    and ``log_std``, so the family's best member can be found by gradient ascent on
    :func:`tile_elbo`.

    Parameters
    ----------
    centres : ``(m, d)`` tile centres; prior : ``(m,)`` tile masses summing to 1;
    mean : ``(n, d)``; log_std : ``(n,)``, the log of each ``s_i``.

    Returns
    -------
    ``(n, m)`` float64, rows summing to 1.
    """
    centres = as_tensor(centres, "centres", dtype=F64)
    if centres.dim() != 2 or centres.shape[0] == 0:
        raise ValueError(f"centres must be (m, d), got shape {tuple(centres.shape)}")
    log_prior = _log_masses(prior, centres.shape[0])
    mean = as_tensor(mean, "mean", dtype=F64)
    if mean.dim() != 2 or mean.shape[1] != centres.shape[1] or mean.shape[0] == 0:
        raise ValueError(
            f"mean must be (n, {centres.shape[1]}) (d of centres), got shape {tuple(mean.shape)}"
        )
    log_std = as_tensor(log_std, "log_std", dtype=F64)
    if log_std.shape != (mean.shape[0],):
        raise ValueError(f"log_std must be ({mean.shape[0]},), got shape {tuple(log_std.shape)}")
    squared = ((centres[None] - mean[:, None]) ** 2).sum(-1)  # (n, m)
    return torch.softmax(log_prior - squared / (2 * torch.exp(2 * log_std))[:, None], dim=1)


def tile_elbo(X, psi, posterior, prior, beta: float) -> torch.Tensor:
    r"""The β-VAE objective (eq. 1) in the tile basis, per unit of ``2σ²``-scaled energy.

    ``F = -(1/n) Σ_i Σ_a q_i(a) |x_i - ψ_a|² / 2 - β (1/n) Σ_i KL(q_i || π)``, with ``q_i(a)``
    the posterior mass of tile ``a`` (rows of ``posterior`` sum to 1). Maximising it over
    ``q`` gives ``q_i(a) ∝ π_a exp(-|x_i - ψ_a|² / 2β)`` (eq. 2) and over ψ the posterior
    average of the data (eq. 3): Proposition 1, which :func:`fixed_points` iterates.
    Differentiable in ``psi`` and ``posterior``; returns a scalar tensor.
    """
    X = _data(X)
    psi = as_tensor(psi, "psi", dtype=F64)
    posterior = as_tensor(posterior, "posterior", dtype=F64)
    if psi.dim() != 2 or psi.shape[1] != X.shape[1]:
        raise ValueError(f"psi must be (m, {X.shape[1]}), got shape {tuple(psi.shape)}")
    if posterior.shape != (X.shape[0], psi.shape[0]) or bool((posterior < 0).any()):
        raise ValueError(
            f"posterior must be non-negative ({X.shape[0]}, {psi.shape[0]}), "
            f"got shape {tuple(posterior.shape)}"
        )
    log_prior = _log_masses(prior, psi.shape[0])
    beta = check_positive(beta, "beta")
    H = _energies(X, psi)
    safe = torch.where(posterior > 0, posterior, torch.ones_like(posterior))
    kl = (posterior * (torch.log(safe) - log_prior)).sum(1)
    return -(posterior * H).sum(1).mean() / 2 - beta * kl.mean()


def nearest_neighbour_error(decoder, z, X) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Fig. 1 (centre, right): decode ``z``, find the nearest training point, and measure.

    For each latent point, ``mse = |g(z) - x_nn|² / D`` with ``x_nn`` the training point
    nearest to ``g(z)``, and the norm of its gradient with respect to ``z`` (``x_nn`` held
    fixed). Inside a tile the decoder reproduces one training point, so the error is flat;
    between tiles it blurs two of them and the gradient is large.

    Parameters
    ----------
    decoder : callable ``(N, d_z) -> (N, ...)``; z : ``(N, d_z)``; X : ``(n, ...)`` data.

    Returns
    -------
    ``(mse, grad_norm, nearest)``: float ``(N,)``, float ``(N,)``, int64 ``(N,)``.
    """
    z = as_tensor(z, "z")
    if z.dim() != 2:
        raise ValueError(f"z must be (N, d_z), got shape {tuple(z.shape)}")
    flat = _decoder_targets(decoder, X, z)
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        out = decoder(z).reshape(z.shape[0], -1)
        nearest = _nearest_rows(out.detach(), flat)
        mse = ((out - flat[nearest]) ** 2).mean(1)
        (grad,) = torch.autograd.grad(mse.sum(), z)
    return mse.detach(), grad.norm(dim=1), nearest


def tile_masses(decoder, X, n_samples: int = 20_000, latent_dim: int = 2, seed: int = 0):
    r"""The prior mass of every training point's tile: the share of ``z ~ N(0, I)`` decoded
    nearest to it (Proposition 2 predicts ``1/n`` each).

    Returns float64 ``(n,)`` summing to 1.
    """
    n_samples = check_positive_int(n_samples, "n_samples")
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    check_positive_int(seed, "seed", allow_zero=True)
    X = as_tensor(X, "X")
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n_samples, latent_dim, generator=gen, dtype=X.dtype)
    flat = _decoder_targets(decoder, X, z)
    with torch.no_grad():
        nearest = _nearest_rows(decoder(z).reshape(n_samples, -1), flat)
    return torch.bincount(nearest, minlength=flat.shape[0]).to(F64) / n_samples


@dataclass(frozen=True)
class GibbsPosterior:
    """The exact posteriors of a fixed decoder on a latent grid (:func:`gibbs_posterior`).

    ``log_marginal`` ``(n,)``: ``log p(x_i)``, the best ELBO any encoder reaches;
    ``kl`` ``(n,)``: ``KL(p(z|x_i) || N(0, I))``, the KL term at that optimum;
    ``probabilities`` ``(n, G)``: each posterior's mass on the ``G`` grid cells, whose centres
    are ``grid`` ``(G, 2)``.
    """

    log_marginal: torch.Tensor
    kl: torch.Tensor
    probabilities: torch.Tensor
    grid: torch.Tensor


def gibbs_posterior(
    decoder, X, log_gamma: float, *, extent: float = 5.0, points: int = 201
) -> GibbsPosterior:
    r"""The exact posterior ``p(z|x_i) ∝ N(z; 0, I) N(x_i; g(z), γ I)`` of a fixed decoder with a
    2-D latent, by quadrature on a ``points × points`` grid over ``[-extent, extent]²``.

    This is the Gibbs distribution (eq. 2 of Rezende & Viola at β = 1, energy
    ``‖x_i - g(z)‖² / 2γ``): the best posterior any encoder could learn for this decoder, so
    an encoder's ELBO falls short of ``log p(x_i)`` by exactly ``KL(q(z|x_i) || p(z|x_i))``.
    The prior mass outside the square (``e^{-extent²/2}`` per axis) is ignored.

    Parameters
    ----------
    decoder : callable ``z (G, 2) -> (G, ...)``, the decoder mean, of the shape of one ``X``
        row per point.
    X : tensor ``(n, ...)`` of data points.
    log_gamma : the Gaussian decoder's log-variance.
    extent, points : the square and the resolution of the grid (``points`` >= 3).

    Returns
    -------
    :class:`GibbsPosterior`, float64.
    """
    log_gamma = float(log_gamma)
    if not math.isfinite(log_gamma):
        raise ValueError(f"log_gamma must be finite, got {log_gamma}")
    extent = check_positive(extent, "extent")
    points = check_positive_int(points, "points")
    if points < 3:
        raise ValueError(f"points must be >= 3, got {points}")
    side = torch.linspace(-extent, extent, points, dtype=F64)
    grid = torch.cartesian_prod(side, side)  # (G, 2)
    cell = (side[1] - side[0]) ** 2
    flat = _decoder_targets(decoder, X, grid.float()).to(F64)
    with torch.no_grad():
        decoded = decoder(grid.float()).reshape(len(grid), -1).to(F64)
    d = flat.shape[1]
    log_prior = -0.5 * (grid**2).sum(1) - math.log(2 * math.pi)  # (G,)
    log_lik = -(torch.cdist(flat, decoded) ** 2) / (2 * math.exp(log_gamma)) - 0.5 * d * (
        math.log(2 * math.pi) + log_gamma
    )  # (n, G)
    log_joint = log_lik + log_prior + math.log(cell)
    log_marginal = torch.logsumexp(log_joint, 1)
    log_post = log_joint - log_marginal[:, None]  # log of each cell's probability
    post = log_post.exp()
    prior_mass = log_prior + math.log(cell)
    kl = (post * (log_post - prior_mass)).sum(1)
    return GibbsPosterior(log_marginal, kl, post, grid)


def _decoder_targets(decoder, X, z: torch.Tensor) -> torch.Tensor:
    """``X`` flattened to ``(n, D)`` after checking it against ``decoder``'s output at ``z[:1]``."""
    if not callable(decoder):
        raise TypeError(f"decoder must be callable, got {type(decoder).__name__}")
    X = as_tensor(X, "X", like=z)
    if X.dim() < 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty batch (n, ...), got shape {tuple(X.shape)}")
    flat = X.reshape(X.shape[0], -1)
    with torch.no_grad():
        width = decoder(z[:1]).reshape(1, -1).shape[1]
    if width != flat.shape[1]:
        raise ValueError(f"decoder output has {width} values per point but X has {flat.shape[1]}")
    return flat


def _nearest_rows(out: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """For every row of ``out`` ``(N, D)``, the index of the nearest row of ``flat`` ``(n, D)``."""
    return torch.cdist(out, flat).argmin(1)
