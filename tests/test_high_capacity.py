"""Tests of vaebook.high_capacity (Rezende & Viola, 2018) against a plainly written eq. 15,
the exact partition solutions of Proposition 2, convex hulls, the closed form of the two-point
case, brute-force and Monte Carlo optimal decoders, synthetic kinks and a scipy maximiser of
the concave problem of Proposition 5."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.optimize import brentq, minimize
from scipy.spatial import Delaunay
from scipy.spatial.distance import cdist
from scipy.special import logsumexp

from vaebook.high_capacity import (
    critical_betas,
    equipartition,
    fixed_points,
    gaussian_tile_posterior,
    gibbs_posterior,
    grid_basis,
    learned_sigma_rounds,
    lipschitz_constraint,
    mean_critical_beta,
    nearest_neighbour_error,
    partition_decoder,
    posterior_decoder,
    reconstruction_curve,
    tile_elbo,
    tile_masses,
    two_point_critical_beta,
    two_point_map,
)

F64 = torch.float64


def rng_of(seed):
    return np.random.default_rng(seed)


def eq15_parts(X, psi, prior, beta):
    """eq. 14-15 written out in numpy float64, no log space: ``(H, m, F)``."""
    X, psi, prior = (np.asarray(v, dtype=np.float64) for v in (X, psi, prior))
    H = np.array([[np.sum((x - p) ** 2) for p in psi] for x in X])  # (n, m)
    kernel = np.exp(-H / (2.0 * beta))
    c = kernel @ prior  # c_i = Σ_b exp(-H_ib / 2β) π_b
    m_ia = kernel / c[:, None]
    F = (m_ia.T @ X) / m_ia.sum(0)[:, None]
    return H, m_ia, F


def eq15_step(X, psi, prior, beta, smoothing=1.0):
    psi = np.asarray(psi, dtype=np.float64)
    return smoothing * eq15_parts(X, psi, prior, beta)[2] + (1.0 - smoothing) * psi


def uniform(m):
    return np.full(m, 1.0 / m)


def small_problem(seed, n=5, m=7, D=2):
    """Data of order 1, ψ near it and a random prior: nothing underflows at β of order 0.1."""
    rng = rng_of(seed)
    X = rng.normal(size=(n, D))
    psi0 = rng.normal(size=(m, D))
    prior = rng.uniform(0.2, 1.0, size=m)
    return X, psi0, prior / prior.sum()


# -- grid_basis -------------------------------------------------------------------------------


@pytest.mark.parametrize(("m", "low", "high"), [(1, -0.5, 0.5), (3, -0.5, 0.5), (5, 1.0, 3.5)])
def test_grid_basis_centres_are_the_midpoints_row_major(m, low, high):
    centres, masses = grid_basis(m, low, high)
    assert centres.shape == (m * m, 2) and masses.shape == (m * m,)
    assert centres.dtype == F64 and masses.dtype == F64
    edges = np.linspace(low, high, m + 1)
    mids = 0.5 * (edges[:-1] + edges[1:])
    expected = [(mids[i], mids[j]) for i in range(m) for j in range(m)]  # second fastest
    np.testing.assert_allclose(centres.numpy(), np.array(expected), rtol=0, atol=1e-14)
    np.testing.assert_allclose(masses.numpy(), 1.0 / m**2, rtol=1e-15)
    assert masses.sum().item() == pytest.approx(1.0, abs=1e-13)


def test_grid_basis_default_is_32_by_32_on_the_centred_unit_square():
    centres, masses = grid_basis()
    assert centres.shape == (1024, 2)
    np.testing.assert_allclose(centres[0].numpy(), [-0.5 + 1 / 64, -0.5 + 1 / 64], atol=1e-15)
    np.testing.assert_allclose(centres[1].numpy(), [-0.5 + 1 / 64, -0.5 + 3 / 64], atol=1e-15)
    np.testing.assert_allclose(centres[32].numpy(), [-0.5 + 3 / 64, -0.5 + 1 / 64], atol=1e-15)
    np.testing.assert_allclose(centres[-1].numpy(), [0.5 - 1 / 64, 0.5 - 1 / 64], atol=1e-15)
    np.testing.assert_allclose(masses.numpy(), 1 / 1024, rtol=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"m": 0}, ValueError, "m must be > 0"),
        ({"m": -3}, ValueError, "m must be > 0"),
        ({"m": 2.0}, TypeError, "m must be an int"),
        ({"m": True}, TypeError, "m must be an int"),
        ({"m": "4"}, TypeError, "m must be an int"),
        ({"low": 1.0, "high": 1.0}, ValueError, "low and high must be finite with low < high"),
        ({"low": 2.0, "high": 1.0}, ValueError, "low and high must be finite with low < high"),
        ({"low": -math.inf}, ValueError, "low and high must be finite"),
        ({"high": math.inf}, ValueError, "low and high must be finite"),
        ({"low": math.nan}, ValueError, "low and high must be finite"),
        ({"high": math.nan}, ValueError, "low and high must be finite"),
        ({"low": None}, TypeError, "low must be a number, got NoneType$"),
        ({"high": None}, TypeError, "high must be a number, got NoneType$"),
        ({"low": "0"}, TypeError, "low must be a number, got str$"),
    ],
)
def test_grid_basis_rejects_bad_input(kwargs, error, match):
    args = {"m": 4, "low": -0.5, "high": 0.5, **kwargs}
    with pytest.raises(error, match="^" + match):
        grid_basis(args["m"], args["low"], args["high"])


# -- fixed_points: one step is eq. 15 -------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [0.3, 1.0, 4.0])
def test_one_plain_step_is_eq15(seed, beta):
    X, psi0, prior = small_problem(seed)
    out = fixed_points(
        X, beta, psi0=psi0, prior=prior, smoothing=1.0, max_iter=1, tol=1e-12, dtype=F64
    )
    expected = eq15_parts(X, psi0, prior, beta)[2]
    assert out.psi.dtype == F64 and out.psi.shape == psi0.shape
    np.testing.assert_allclose(out.psi.numpy(), expected, rtol=1e-11, atol=1e-12)
    assert out.iterations == 1
    # F is a move, not the identity: a check that can fail.
    assert np.abs(expected - psi0).max() > 1e-3


@pytest.mark.parametrize("smoothing", [0.1, 0.5, 0.9])
def test_one_smoothed_step_mixes_the_new_and_the_old_psi(smoothing):
    X, psi0, prior = small_problem(3)
    beta = 0.7
    out = fixed_points(
        X, beta, psi0=psi0, prior=prior, smoothing=smoothing, max_iter=1, tol=1e-12, dtype=F64
    )
    F = eq15_parts(X, psi0, prior, beta)[2]
    np.testing.assert_allclose(
        out.psi.numpy(), smoothing * F + (1 - smoothing) * psi0, rtol=1e-11, atol=1e-12
    )


def test_every_step_of_the_trajectory_is_eq15():
    X, psi0, prior = small_problem(4, n=6, m=5, D=3)
    beta, smoothing = 0.5, 0.8
    out = fixed_points(
        X, beta, psi0=psi0, prior=prior, smoothing=smoothing, max_iter=15, tol=1e-12, dtype=F64
    )
    traj = out.trajectory.numpy()
    assert traj.shape == (16, 5, 3)
    psi = psi0
    for k in range(1, 16):
        psi = eq15_step(X, psi, prior, beta, smoothing)
        np.testing.assert_allclose(traj[k], psi, rtol=1e-10, atol=1e-11)


def gaussian_kernel(X, Z, width):
    """k(x, z) = exp(-|x - z|² / width), ``(n, m)`` for X ``(n, D)`` and Z ``(m, D)``."""
    return np.exp(-cdist(X, Z, "sqeuclidean") / width)


def kernel_pca_preimage_step(Z, X, coefficients, width):
    """Mika et al. (1999)'s fixed-point step for the pre-image of P = Σ_i γ_i Φ(x_i) under a
    Gaussian kernel, for every row z of Z: z ← Σ_i γ_i k(x_i, z) x_i / Σ_i γ_i k(x_i, z).

    It maximises ρ(z) = Σ_i γ_i k(x_i, z), since |Φ(z) - P|² = k(z, z) - 2 ρ(z) + const and
    k(z, z) = 1: ∇ρ = (2 / width) Σ_i γ_i k(x_i, z) (x_i - z) = 0 is the step's fixed point.
    """
    weights = coefficients[:, None] * gaussian_kernel(X, Z, width)  # (n, m)
    return (weights.T @ X) / weights.sum(0)[:, None]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_proposition4_a_step_is_the_kernel_pca_preimage_iteration(seed, beta):
    """Rezende & Viola, Proposition 4: eq. 15 is the kernel-PCA pre-image iteration with a
    normalised Gaussian kernel of scale √β. Reading eq. 15,
    ψ_a ← Σ_i x_i e^{-|x_i-ψ_a|²/2β} / c_i  /  Σ_i e^{-|x_i-ψ_a|²/2β} / c_i with
    c_i = Σ_b e^{-|x_i-ψ_b|²/2β} π_b, is Mika's step from z = ψ_a with kernel width 2β
    (k = e^{-|x-z|²/2β}, scale √β) and coefficients γ_i = 1/c_i (the kernel normalised per
    data point), c_i taken at the current ψ."""
    X, psi0, prior = small_problem(seed)
    width = 2 * beta
    normaliser = gaussian_kernel(X, psi0, width) @ prior  # c_i
    step = fixed_points(
        X, beta, psi0=psi0, prior=prior, smoothing=1.0, max_iter=1, tol=1e-12, dtype=F64
    )
    expected = kernel_pca_preimage_step(psi0, X, 1 / normaliser, width)
    np.testing.assert_allclose(step.psi.numpy(), expected, rtol=1e-12, atol=1e-13)
    # negative controls: the unnormalised kernel (γ_i = 1) or the width β give other steps
    plain = kernel_pca_preimage_step(psi0, X, np.ones_like(normaliser), width)
    assert np.abs(plain - expected).max() > 1e-2
    assert np.abs(kernel_pca_preimage_step(psi0, X, 1 / normaliser, beta) - expected).max() > 1e-2
    # at the fixed point every ψ_a is a pre-image: a local maximum of ρ_a(z) = Σ_i k(x_i, z)/c_i
    # (BFGS started at ψ_a does not move it beyond its tolerance)
    fixed = fixed_points(
        X, beta, psi0=psi0, prior=prior, smoothing=1.0, max_iter=2000, tol=1e-13, dtype=F64
    )
    assert fixed.converged
    psi = fixed.psi.numpy()
    normaliser = gaussian_kernel(X, psi, width) @ prior
    np.testing.assert_allclose(
        kernel_pca_preimage_step(psi, X, 1 / normaliser, width), psi, rtol=0, atol=1e-12
    )
    for a in range(len(psi)):

        def minus_rho(z):
            return -(gaussian_kernel(X, z[None], width)[:, 0] / normaliser).sum()

        found = minimize(minus_rho, psi[a], method="BFGS", options={"gtol": 1e-12}).x
        np.testing.assert_allclose(found, psi[a], rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 5])
def test_float32_default_agrees_with_eq15(seed):
    X, psi0, prior = small_problem(seed)
    beta = 0.5
    out = fixed_points(X, beta, psi0=psi0, prior=prior, smoothing=0.9, max_iter=1, tol=1e-12)
    assert out.psi.dtype == F64 and out.trajectory.dtype == F64 and out.posterior.dtype == F64
    expected = eq15_step(X, psi0, prior, beta, 0.9)
    np.testing.assert_allclose(out.psi.numpy(), expected, rtol=0, atol=1e-5)
    # Several float32 steps stay close to the float64 iteration.
    out32 = fixed_points(X, beta, psi0=psi0, prior=prior, max_iter=20, tol=1e-12)
    out64 = fixed_points(X, beta, psi0=psi0, prior=prior, max_iter=20, tol=1e-12, dtype=F64)
    np.testing.assert_allclose(out32.psi.numpy(), out64.psi.numpy(), rtol=0, atol=1e-5)
    assert out32.reconstruction_error == pytest.approx(out64.reconstruction_error, rel=1e-5)
    assert out32.kl == pytest.approx(out64.kl, rel=1e-5, abs=1e-6)


def test_default_prior_is_uniform():
    X, psi0, _ = small_problem(6)
    out = fixed_points(X, 0.4, psi0=psi0, max_iter=1, smoothing=1.0, tol=1e-12, dtype=F64)
    np.testing.assert_allclose(
        out.psi.numpy(), eq15_parts(X, psi0, uniform(7), 0.4)[2], rtol=1e-11, atol=1e-12
    )


# -- fixed_points: posterior, u and KL ------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("max_iter", [1, 30])
def test_posterior_u_and_kl_are_the_direct_formulas(seed, max_iter):
    X, psi0, prior = small_problem(seed, n=6, m=8)
    beta = 0.6
    out = fixed_points(X, beta, psi0=psi0, prior=prior, max_iter=max_iter, tol=1e-12, dtype=F64)
    psi = out.psi.numpy()
    H, m_ia, _ = eq15_parts(X, psi, prior, beta)
    q = m_ia * prior[None, :]  # q_i(a) = m_ia π_a
    post = out.posterior.numpy()
    assert post.shape == (6, 8)
    np.testing.assert_allclose(post.sum(1), 1.0, rtol=0, atol=1e-13)
    np.testing.assert_allclose(post, q, rtol=1e-10, atol=1e-14)
    # u and kl, once from the returned posterior and once from the independent q.
    for p in (post, q):
        u = np.mean(np.sum(p * H, axis=1))
        kl = np.mean(np.sum(p * np.log(p / prior[None, :]), axis=1))
        assert out.reconstruction_error == pytest.approx(u, rel=1e-10)
        assert out.kl == pytest.approx(kl, rel=1e-9, abs=1e-13)
    assert out.kl >= 0


# -- fixed_points: Proposition 2, a partition reproduces itself -----------------------------------


def random_assignment(rng, n, m):
    """A map tile -> data point under which every data point owns at least one tile."""
    assign = np.concatenate([np.arange(n), rng.integers(0, n, size=m - n)])
    return rng.permutation(assign)


def separated_data(rng, n, D=2):
    """Data points at least 0.3 apart: |x_i - x_j|² / 2β is huge at β ≤ 1e-4."""
    while True:
        X = rng.uniform(-1, 1, size=(n, D))
        gaps = np.linalg.norm(X[:, None] - X[None], axis=-1) + 10 * np.eye(n)
        if gaps.min() > 0.3:
            return X


@pytest.mark.parametrize("beta", [1e-4, 1e-6])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partition_solution_is_a_fixed_point(beta, seed):
    rng = rng_of(seed)
    n, m = 4, 11
    X = separated_data(rng, n)
    assign = random_assignment(rng, n, m)
    prior = rng.uniform(0.2, 1.0, size=m)
    prior /= prior.sum()
    psi0 = X[assign]
    out = fixed_points(X, beta, psi0=psi0, prior=prior, max_iter=5, dtype=F64)
    np.testing.assert_allclose(out.psi.numpy(), psi0, rtol=0, atol=1e-12)
    for k in range(out.trajectory.shape[0]):
        np.testing.assert_allclose(out.trajectory[k].numpy(), psi0, rtol=0, atol=1e-12)
    assert out.converged and out.iterations == 1
    pi_j = np.array([prior[assign == j].sum() for j in range(n)])
    assert out.kl == pytest.approx(-np.mean(np.log(pi_j)), rel=1e-10)
    assert out.reconstruction_error == pytest.approx(0.0, abs=1e-12)  # no blur
    # The posterior of x_j is the prior restricted to its tiles.
    expected = np.where(assign[None, :] == np.arange(n)[:, None], prior / pi_j[:, None], 0.0)
    np.testing.assert_allclose(out.posterior.numpy(), expected, rtol=1e-10, atol=1e-14)
    # The float32 default keeps it too, to float32 rounding.
    out32 = fixed_points(X, beta, psi0=psi0, prior=prior, max_iter=5)
    np.testing.assert_allclose(out32.psi.numpy(), psi0, rtol=0, atol=1e-6)
    assert out32.kl == pytest.approx(-np.mean(np.log(pi_j)), rel=1e-6)


@pytest.mark.parametrize("beta", [1e-4, 1e-6])
def test_partition_kl_is_smallest_for_equal_masses(beta):
    rng = rng_of(7)
    n, m = 4, 12
    X = separated_data(rng, n)
    kls, expected = [], []
    balanced = rng.permutation(np.repeat(np.arange(n), m // n))  # 3 tiles each: π_j = 1/4
    assignments = [balanced] + [random_assignment(rng, n, m) for _ in range(8)]
    for assign in assignments:
        out = fixed_points(X, beta, psi0=X[assign], max_iter=3, dtype=F64)
        counts = np.bincount(assign, minlength=n)
        kls.append(out.kl)
        expected.append(-np.mean(np.log(counts / m)))
    np.testing.assert_allclose(kls, expected, rtol=1e-10)
    assert kls[0] == pytest.approx(math.log(n), rel=1e-12)
    assert min(kls) == pytest.approx(math.log(n), rel=1e-12)
    for assign, kl in zip(assignments, kls, strict=True):
        if len(set(np.bincount(assign, minlength=n))) > 1:  # unequal masses cost more
            assert kl > math.log(n) + 1e-3


# -- fixed_points: convergence inside the convex hull ---------------------------------------------


@pytest.mark.parametrize("beta", [0.05, 0.3, 1.0])
def test_iterates_stay_in_the_convex_hull_and_converge_2d(beta):
    rng = rng_of(11)
    X = rng.normal(size=(10, 2))
    psi0 = rng.dirichlet(np.ones(10), size=16) @ X  # inside the hull
    tol = 1e-6
    out = fixed_points(X, beta, psi0=psi0, max_iter=3000, tol=tol, dtype=F64)
    hull = Delaunay(X)
    traj = out.trajectory.numpy()
    for k in range(traj.shape[0]):
        assert np.all(hull.find_simplex(traj[k], tol=1e-10) >= 0), k
    assert out.converged and out.iterations < 3000
    steps = np.linalg.norm((traj[1:] - traj[:-1]).reshape(len(traj) - 1, -1), axis=1)
    assert steps[-1] < tol
    assert np.all(steps[:-1] >= tol)  # it stopped at the first small step
    # The end point is (nearly) a fixed point of eq. 15, checked independently.
    F = eq15_parts(X, out.psi.numpy(), uniform(16), beta)[2]
    assert np.linalg.norm(F - out.psi.numpy()) < 20 * tol


@pytest.mark.parametrize("beta", [0.05, 0.3, 1.0])
def test_iterates_stay_in_the_data_interval_and_converge_1d(beta):
    rng = rng_of(12)
    X = rng.normal(size=(7, 1))
    psi0 = rng.uniform(X.min(), X.max(), size=(5, 1))
    out = fixed_points(X, beta, psi0=psi0, max_iter=3000, tol=1e-7, dtype=F64)
    traj = out.trajectory.numpy()
    assert traj.min() >= X.min() - 1e-12 and traj.max() <= X.max() + 1e-12
    assert out.converged
    assert np.linalg.norm(traj[-1] - traj[-2]) < 1e-7


@pytest.mark.parametrize("beta", [1e-4, 1e-6])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_log_space_is_stable_at_small_beta_with_far_tiles(beta, dtype):
    rng = rng_of(13)
    X = rng.uniform(-0.5, 0.5, size=(9, 2))
    psi0 = 20.0 + rng.normal(size=(30, 2))  # |x - ψ|² / 2β ≈ 4e5 .. 4e8: exp underflows
    out = fixed_points(X, beta, psi0=psi0, smoothing=1.0, max_iter=3, dtype=dtype)
    for value in (out.psi, out.trajectory, out.posterior):
        assert bool(torch.isfinite(value).all())
    assert math.isfinite(out.reconstruction_error) and math.isfinite(out.kl)
    np.testing.assert_allclose(out.posterior.sum(1).numpy(), 1.0, rtol=0, atol=1e-12)
    hull = Delaunay(X)
    assert np.all(hull.find_simplex(out.trajectory[1].numpy(), tol=1e-6) >= 0)
    if dtype == F64:
        # The first step, by an independent log-space eq. 15 in float64.
        H = ((X[:, None, :] - psi0[None]) ** 2).sum(-1)
        log_m = -H / (2 * beta) - logsumexp(-H / (2 * beta) + np.log(1 / 30), axis=1)[:, None]
        w = np.exp(log_m - logsumexp(log_m, axis=0)[None, :])
        np.testing.assert_allclose(out.trajectory[1].numpy(), w.T @ X, rtol=0, atol=1e-9)


# -- fixed_points: default initialisation, trajectory, max_iter, tol -------------------------------


def test_default_init_is_the_grid_plus_uniform_noise_and_seeded():
    X = rng_of(0).uniform(-0.5, 0.5, size=(6, 2))
    edges = np.linspace(-0.5, 0.5, 33)
    mids = 0.5 * (edges[:-1] + edges[1:])
    centres = np.stack(np.meshgrid(mids, mids, indexing="ij"), -1).reshape(-1, 2)
    torch.manual_seed(123)  # the global RNG must not matter
    a = fixed_points(X, 0.1, max_iter=1, seed=3, dtype=F64).trajectory[0].numpy()
    torch.manual_seed(456)
    b = fixed_points(X, 0.1, max_iter=1, seed=3, dtype=F64).trajectory[0].numpy()
    c = fixed_points(X, 0.1, max_iter=1, seed=4, dtype=F64).trajectory[0].numpy()
    assert a.shape == (1024, 2)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.05
    noise = a - centres
    assert noise.min() >= -0.1 - 1e-12 and noise.max() <= 0.1 + 1e-12
    assert noise.min() < -0.09 and noise.max() > 0.09  # spans the interval
    assert abs(noise.mean()) < 0.01
    assert noise.std() == pytest.approx(0.2 / math.sqrt(12), rel=0.05)  # uniform, not normal
    # drawn in float64, like the rest: the noise is not on float32's grid of 2^-24 steps
    steps = (noise + 0.1) / 0.2 * 2**24
    assert np.mean(np.abs(steps - np.round(steps)) > 1e-3) > 0.9
    # Default seed is 0: two calls without a seed agree.
    d = fixed_points(X, 0.1, max_iter=1, dtype=F64).trajectory[0].numpy()
    e = fixed_points(X, 0.1, max_iter=1, seed=0, dtype=F64).trajectory[0].numpy()
    np.testing.assert_array_equal(d, e)


@pytest.mark.parametrize("D", [1, 3])
def test_default_init_needs_planar_data(D):
    message = (
        rf"^psi0 is required when the data are not 2-D \(X has D = {D}\); "
        "the default grid initialisation lives in the plane$"
    )
    with pytest.raises(ValueError, match=message):
        fixed_points(np.zeros((4, D)), 0.1)


def test_trajectory_shape_ends_and_max_iter():
    X, psi0, prior = small_problem(8, n=5, m=6, D=3)
    out = fixed_points(X, 0.5, psi0=psi0, prior=prior, max_iter=7, tol=1e-300, dtype=F64)
    assert out.trajectory.shape == (8, 6, 3)
    assert out.iterations == 7 and out.converged is False  # a bool, as documented
    np.testing.assert_array_equal(out.trajectory[0].numpy(), psi0)
    assert torch.equal(out.trajectory[-1], out.psi)
    # float32: the ends are ψ0 and ψ up to float32 rounding
    out32 = fixed_points(X, 0.5, psi0=psi0, prior=prior, max_iter=4, tol=1e-300)
    assert out32.trajectory.shape == (5, 6, 3) and out32.iterations == 4
    np.testing.assert_allclose(out32.trajectory[0].numpy(), psi0, rtol=1e-7, atol=0)
    assert torch.equal(out32.trajectory[-1], out32.psi)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("tol", [1e-300, 1e-2])
def test_last_step_is_the_last_move_and_the_path_can_be_dropped(dtype, tol):
    X, psi0, prior = small_problem(10, n=5, m=6, D=3)
    full = fixed_points(X, 0.5, psi0=psi0, prior=prior, max_iter=40, tol=tol, dtype=dtype)
    move = torch.linalg.norm(full.trajectory[-1] - full.trajectory[-2]).item()
    assert full.last_step == pytest.approx(move, rel=1e-5 if dtype == torch.float32 else 1e-12)
    assert full.converged == (full.last_step < tol)
    ends = fixed_points(
        X, 0.5, psi0=psi0, prior=prior, max_iter=40, tol=tol, dtype=dtype, keep_trajectory=False
    )
    assert ends.trajectory.shape == (2, 6, 3) and ends.trajectory.dtype == F64
    torch.testing.assert_close(ends.trajectory, full.trajectory[[0, -1]], rtol=0, atol=0)
    for name in ("psi", "posterior"):
        torch.testing.assert_close(getattr(ends, name), getattr(full, name), rtol=0, atol=0)
    assert (ends.iterations, ends.last_step, ends.converged, ends.kl) == (
        full.iterations,
        full.last_step,
        full.converged,
        full.kl,
    )


def test_without_the_trajectory_no_path_is_allocated():
    # room for 10^12 steps would be 48 TB: only a run that allocates no path can start
    X, psi0, prior = small_problem(11, n=5, m=6, D=3)
    out = fixed_points(
        X, 0.5, psi0=psi0, prior=prior, max_iter=10**12, tol=1e3, keep_trajectory=False
    )
    assert out.iterations == 1 and out.trajectory.shape == (2, 6, 3)


@pytest.mark.parametrize("tol", [1e3, 1e-1, 1e-3, 1e-5])
def test_tol_stops_at_the_first_small_step(tol):
    X, psi0, prior = small_problem(9)
    out = fixed_points(X, 0.5, psi0=psi0, prior=prior, max_iter=5000, tol=tol, dtype=F64)
    traj = out.trajectory.numpy()
    steps = np.linalg.norm((traj[1:] - traj[:-1]).reshape(len(traj) - 1, -1), axis=1)
    assert out.converged and steps[-1] < tol and np.all(steps[:-1] >= tol)
    if tol == 1e3:
        assert out.iterations == 1


BAD_X = np.array([[0.1, 0.2], [-0.3, 0.4], [0.5, -0.1]])
BAD_PSI = np.array([[0.0, 0.0], [0.1, -0.1], [0.2, 0.3]])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"X": np.ones(3)}, ValueError, r"X must be \(n, D\)"),
        ({"X": np.ones((2, 3, 2))}, ValueError, r"X must be \(n, D\)"),
        ({"X": np.ones((0, 2))}, ValueError, r"X must be \(n, D\)"),
        ({"X": np.full((3, 2), np.nan)}, ValueError, "X must be finite"),
        ({"X": np.full((3, 2), np.inf)}, ValueError, "X must be finite"),
        ({"X": "X"}, TypeError, "X must be a tensor"),
        ({"X": None}, TypeError, "X must be a tensor"),
        ({"beta": 0.0}, ValueError, "beta must be > 0"),
        ({"beta": -1.0}, ValueError, "beta must be > 0"),
        ({"beta": math.nan}, ValueError, "beta must be finite"),
        ({"beta": math.inf}, ValueError, "beta must be finite"),
        ({"beta": "0.1"}, TypeError, "beta must be a number"),
        ({"smoothing": 0.0}, ValueError, "smoothing must be > 0"),
        ({"smoothing": 1.5}, ValueError, r"smoothing must be in \(0, 1\]"),
        ({"smoothing": -0.5}, ValueError, "smoothing must be > 0"),
        ({"max_iter": 0}, ValueError, "max_iter must be > 0"),
        ({"max_iter": 10.0}, TypeError, "max_iter must be an int"),
        ({"tol": 0.0}, ValueError, "tol must be > 0"),
        ({"tol": -1e-3}, ValueError, "tol must be > 0"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"seed": 1.0}, TypeError, "seed must be an int"),
        ({"psi0": np.zeros((3, 3))}, ValueError, r"psi0 must be \(m, 2\)"),
        ({"psi0": np.zeros((0, 2))}, ValueError, r"psi0 must be \(m, 2\)"),
        ({"psi0": np.zeros(2)}, ValueError, r"psi0 must be \(m, 2\)"),
        ({"psi0": np.full((3, 2), np.nan)}, ValueError, "psi0 must be finite"),
        ({"psi0": "grid"}, TypeError, "psi0 must be a tensor"),
        ({"prior": uniform(4)}, ValueError, r"prior must be \(3,\), one mass per tile"),
        ({"prior": np.full((3, 1), 1 / 3)}, ValueError, r"prior must be \(3,\)"),
        ({"prior": np.array([0.5, 0.5, 0.0])}, ValueError, "prior must hold positive"),
        ({"prior": np.array([0.7, 0.5, -0.2])}, ValueError, "prior must hold positive"),
        ({"prior": np.array([0.5, 0.5, 0.5])}, ValueError, "prior must sum to 1"),
        ({"prior": np.array([0.2, 0.2, 0.2])}, ValueError, "prior must sum to 1"),
        ({"prior": np.array([0.5, np.nan, 0.5])}, ValueError, "prior must be finite"),
        ({"prior": "uniform"}, TypeError, "prior must be a tensor"),
        ({"dtype": torch.int64}, ValueError, "dtype must be torch.float32 or torch.float64"),
        ({"dtype": torch.float16}, ValueError, "dtype must be torch.float32 or torch.float64"),
        ({"keep_trajectory": 0}, TypeError, "keep_trajectory must be a bool, got int"),
    ],
)
def test_fixed_points_rejects_bad_input(kwargs, error, match):
    args = {"X": BAD_X, "beta": 0.1, "psi0": BAD_PSI, **kwargs}
    X, beta = args.pop("X"), args.pop("beta")
    with pytest.raises(error, match="^" + match):
        fixed_points(X, beta, **args)


def test_fixed_points_accepts_a_float32_uniform_prior():
    prior = torch.full((3,), 1.0 / 3)  # float32
    out = fixed_points(BAD_X, 0.5, psi0=BAD_PSI, prior=prior, max_iter=1, dtype=F64)
    expected = eq15_parts(BAD_X, BAD_PSI, prior.double().numpy(), 0.5)[2]
    np.testing.assert_allclose(
        out.psi.numpy(), 0.9 * expected + 0.1 * BAD_PSI, rtol=1e-7, atol=1e-7
    )


# -- reconstruction_curve -------------------------------------------------------------------------


def test_reconstruction_curve_is_a_loop_of_fixed_points():
    X, psi0, prior = small_problem(10)
    betas = [0.05, 0.2, 0.7, 2.0]
    kwargs = {"psi0": psi0, "prior": prior, "max_iter": 50, "tol": 1e-8, "dtype": F64}
    curve = reconstruction_curve(X, betas, **kwargs)
    assert isinstance(curve, np.ndarray) and curve.dtype == np.float64 and curve.shape == (4,)
    loop = [fixed_points(X, b, **kwargs).reconstruction_error for b in betas]
    np.testing.assert_allclose(curve, loop, rtol=1e-12)
    # and every entry is u at the fixed point, computed independently
    for b, u in zip(betas, curve, strict=True):
        psi = fixed_points(X, b, **kwargs).psi.numpy()
        H, m_ia, _ = eq15_parts(X, psi, prior, b)
        assert u == pytest.approx(np.mean(np.sum(m_ia * prior * H, axis=1)), rel=1e-10)


def test_reconstruction_curve_default_init_is_shared_across_betas():
    X = rng_of(1).uniform(-0.4, 0.4, size=(5, 2))
    betas = np.array([0.01, 0.1])
    curve = reconstruction_curve(X, betas, max_iter=3, seed=2)
    loop = [fixed_points(X, b, max_iter=3, seed=2).reconstruction_error for b in betas]
    np.testing.assert_allclose(curve, loop, rtol=1e-12)


def test_reconstruction_curve_reads_betas_of_any_real_type():
    # a sequence of numbers: fractions are read as the float64 numbers they are
    kwargs = {"psi0": BAD_PSI, "max_iter": 5, "dtype": F64}
    exact = reconstruction_curve(BAD_X, [Fraction(1, 20), Fraction(7, 10)], **kwargs)
    np.testing.assert_array_equal(exact, reconstruction_curve(BAD_X, [0.05, 0.7], **kwargs))


@pytest.mark.parametrize(
    "betas",
    [[], np.ones((2, 2)), [0.1, 0.0, 0.3], [0.1, -0.2], [0.1, math.nan], [math.inf], 0.5],
)
def test_reconstruction_curve_rejects_bad_betas(betas):
    with pytest.raises(ValueError, match=r"^betas must be a non-empty 1-D sequence"):
        reconstruction_curve(BAD_X, betas, psi0=BAD_PSI)


# -- the two-point analytic case ------------------------------------------------------------------


@pytest.mark.parametrize(("a", "beta"), [(0.3, 0.05), (0.3, 0.2), (1.5, 0.7)])
def test_two_point_map_is_a_tanh(a, beta):
    s = np.linspace(-2 * a, 2 * a, 41)
    np.testing.assert_allclose(two_point_map(s, a, beta), a * np.tanh(a * s / beta), rtol=1e-15)
    assert two_point_map(0.1, a, beta) == pytest.approx(a * math.tanh(0.1 * a / beta))
    slope = (two_point_map(1e-7, a, beta) - two_point_map(-1e-7, a, beta)) / 2e-7
    assert slope == pytest.approx(a**2 / beta, rel=1e-6)


@pytest.mark.parametrize("a", [0.1, 0.3, 2.0])
def test_two_point_critical_beta_is_a_squared(a):
    assert two_point_critical_beta(a) == pytest.approx(a**2, rel=1e-15)


@pytest.mark.parametrize("a", [0.2, 0.3, 1.0])
@pytest.mark.parametrize("ratio", [0.3, 0.7, 0.95, 1.05, 1.5, 3.0])
def test_two_point_map_has_a_nonzero_fixed_point_below_beta_c_only(a, ratio):
    beta = ratio * a**2
    s = np.linspace(1e-6, a, 2001)
    gap = two_point_map(s, a, beta) - s
    if ratio < 1:
        root = brentq(lambda t: two_point_map(t, a, beta) - t, 1e-9, a)
        assert root > 1e-3
        assert two_point_map(root, a, beta) == pytest.approx(root, rel=1e-10)
        assert two_point_map(-root, a, beta) == pytest.approx(-root, rel=1e-10)
    else:
        assert np.all(gap < 0)  # only s = 0 on the positive side (and by symmetry the other)


def test_two_point_map_is_the_step_of_eq15_for_split_tiles():
    a, beta, s = 0.3, 0.05, 0.17
    X = np.array([[a, 0.0], [-a, 0.0]])
    psi0 = np.array([[s, 0.0]] * 4 + [[-s, 0.0]] * 4)
    out = fixed_points(X, beta, psi0=psi0, smoothing=1.0, max_iter=1, tol=1e-12, dtype=F64)
    new = two_point_map(s, a, beta)
    np.testing.assert_allclose(out.psi.numpy()[:4], [[new, 0.0]] * 4, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out.psi.numpy()[4:], [[-new, 0.0]] * 4, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(eq15_parts(X, psi0, uniform(8), beta)[2][0], [new, 0], atol=1e-15)


def two_point_u(a, beta):
    """The closed form ``u(β) = w (a - s*)² + (1 - w) (a + s*)²``."""
    if beta >= a**2:
        s = 0.0
    else:
        s = brentq(lambda t: a * np.tanh(a * t / beta) - t, 1e-12, a + 1e-12, xtol=1e-15)
    w = 1.0 / (1.0 + math.exp(-2 * a * s / beta))
    return w * (a - s) ** 2 + (1 - w) * (a + s) ** 2


GRIDS = {
    "linear": lambda bc: np.linspace(0.2 * bc, 2.0 * bc, 46),
    "geometric": lambda bc: np.geomspace(0.1 * bc, 3.0 * bc, 50),
}


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("a", [0.3, 0.2])
def test_two_point_reconstruction_curve_and_its_critical_beta(grid, a):
    X = np.array([[a, 0.0], [-a, 0.0]])
    beta_c = a**2
    betas = GRIDS[grid](beta_c)
    u = reconstruction_curve(X, betas)  # default grid init, float32
    closed = np.array([two_point_u(a, b) for b in betas])
    far = np.abs(betas / beta_c - 1) > 0.15
    np.testing.assert_allclose(u[far], closed[far], rtol=0, atol=1e-3)
    assert np.all(np.abs(u - closed) < 0.05 * a**2)  # even near β_c
    np.testing.assert_allclose(closed[betas > beta_c], a**2, rtol=1e-12)  # u = a² above
    found = critical_betas(betas, u, top=1)
    assert found.shape == (1,)
    assert found[0] == pytest.approx(beta_c, rel=0.05)


@pytest.mark.parametrize(
    ("func", "args", "match"),
    [
        (two_point_map, (0.1, 0.0, 0.1), "a must be > 0"),
        (two_point_map, (0.1, -0.3, 0.1), "a must be > 0"),
        (two_point_map, (0.1, 0.3, 0.0), "beta must be > 0"),
        (two_point_map, (0.1, 0.3, math.nan), "beta must be finite"),
        (two_point_critical_beta, (0.0,), "a must be > 0"),
        (two_point_critical_beta, (math.inf,), "a must be finite"),
    ],
)
def test_two_point_functions_reject_bad_input(func, args, match):
    with pytest.raises(ValueError, match="^" + match):
        func(*args)


# -- critical_betas -------------------------------------------------------------------------------


def kinked(betas, kinks, changes, slope=-0.5):
    """A piecewise-linear curve whose slope jumps by ``changes[k]`` at ``kinks[k]``."""
    u = slope * betas
    for k, d in zip(kinks, changes, strict=True):
        u = u + d * np.maximum(betas - k, 0.0)
    return u


UNIFORM = np.linspace(0.0, 1.0, 101)
GEOMETRIC = np.geomspace(1e-3, 1.0, 120)


@pytest.mark.parametrize("betas", [UNIFORM, GEOMETRIC], ids=["uniform", "geometric"])
@pytest.mark.parametrize("smooth", [0, 1])
def test_critical_betas_finds_kinks_at_grid_points(betas, smooth):
    idx = [len(betas) // 5, len(betas) // 2, 4 * len(betas) // 5]
    kinks = betas[idx]
    u = kinked(betas, kinks, [1.0, -3.0, 2.0])
    np.testing.assert_array_equal(critical_betas(betas, u, top=3, smooth=smooth), kinks)
    # more peaks asked for than kinks: the kinks are among them (the rest is rounding noise)
    assert set(kinks) <= set(critical_betas(betas, u, top=5, smooth=smooth))


@pytest.mark.parametrize("smooth", [0, 1])
def test_critical_betas_ranks_by_slope_change_on_an_even_grid(smooth):
    kinks = UNIFORM[[20, 50, 80]]
    u = kinked(UNIFORM, kinks, [1.0, -3.0, 2.0])
    # ranked by |change of slope|: 3, then 2, then 1, returned in increasing β
    np.testing.assert_array_equal(critical_betas(UNIFORM, u, top=2, smooth=smooth), kinks[1:])
    np.testing.assert_array_equal(critical_betas(UNIFORM, u, top=1, smooth=smooth), kinks[[1]])


def test_critical_betas_wide_smoothing_is_within_one_step():
    # a kink's |u''| spans 3 points; a 5-point box makes a flat top of 3: any of them is a peak
    kinks = UNIFORM[[20, 50, 80]]
    u = kinked(UNIFORM, kinks, [1.0, -3.0, 2.0])
    found = critical_betas(UNIFORM, u, top=3, smooth=2)
    np.testing.assert_allclose(found, kinks, rtol=0, atol=0.01 + 1e-12)
    np.testing.assert_allclose(
        critical_betas(UNIFORM, u, top=1, smooth=2), kinks[[1]], rtol=0, atol=0.01 + 1e-12
    )


def test_critical_betas_ranks_by_slope_change_and_sorts():
    kinks = UNIFORM[[15, 40, 60, 85]]
    u = kinked(UNIFORM, kinks, [4.0, 0.5, 1.0, 2.0])
    found = critical_betas(UNIFORM, u, top=2)
    np.testing.assert_array_equal(found, kinks[[0, 3]])
    found = critical_betas(UNIFORM, u, top=3)
    np.testing.assert_array_equal(found, kinks[[0, 2, 3]])
    assert np.all(np.diff(found) > 0) and found.dtype == np.float64


def test_critical_betas_between_grid_points_is_within_one_step():
    kinks = [0.234, 0.567]
    u = kinked(UNIFORM, kinks, [2.0, 1.0])
    found = critical_betas(UNIFORM, u, top=2)
    np.testing.assert_allclose(found, kinks, rtol=0, atol=0.01 + 1e-12)


def test_critical_betas_ranks_by_the_second_derivative_on_an_uneven_grid():
    # |u''| at a kink is about Δslope / h: on a geometric grid a slope change of 1 where the
    # steps are 65 times smaller outranks a slope change of 3
    kinks = GEOMETRIC[[24, 96]]
    u = kinked(GEOMETRIC, kinks, [1.0, 3.0])
    np.testing.assert_array_equal(critical_betas(GEOMETRIC, u, top=1), kinks[:1])
    np.testing.assert_array_equal(critical_betas(GEOMETRIC, u, top=2), kinks)


@pytest.mark.parametrize("end", ["left", "right"])
def test_critical_betas_at_the_ends_of_the_grid(end):
    left = end == "left"
    # |u''| of e^{∓β/τ} is highest at an end and falls off from it: no local maximum there,
    # however high, so the one critical β is the kink in the middle
    decay = np.exp(-UNIFORM / 0.005) if left else np.exp((UNIFORM - 1) / 0.005)
    u = decay + kinked(UNIFORM, UNIFORM[[50]], [1.0])
    np.testing.assert_array_equal(critical_betas(UNIFORM, u, top=1), UNIFORM[[50]])
    # but a kink a quarter step inside the second (or last but one) grid point is a peak there
    kink = UNIFORM[1] + 0.0025 if left else UNIFORM[-2] - 0.0025
    found = critical_betas(UNIFORM, kinked(UNIFORM, [kink], [1.0]), top=1, smooth=0)
    np.testing.assert_array_equal(found, UNIFORM[[1]] if left else UNIFORM[[-2]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_critical_betas_survives_small_noise(seed):
    kinks = UNIFORM[[20, 50, 80]]
    u = kinked(UNIFORM, kinks, [1.0, 3.0, 2.0]) + 1e-6 * rng_of(seed).normal(size=101)
    np.testing.assert_array_equal(critical_betas(UNIFORM, u, top=3, smooth=1), kinks)
    np.testing.assert_array_equal(critical_betas(UNIFORM, u, top=2, smooth=1), kinks[1:])


@pytest.mark.parametrize("slope", [0.0, 3.0, -2.0])
def test_critical_betas_of_a_straight_line_is_empty(slope):
    betas = np.arange(20.0)  # integers: the finite differences are exact, no rounding peaks
    found = critical_betas(betas, slope * betas - 5.0, top=3)
    assert found.shape == (0,)


@pytest.mark.parametrize(
    ("betas", "u", "kwargs", "error", "match"),
    [
        (UNIFORM, UNIFORM[:-1], {}, ValueError, "u has shape"),
        (UNIFORM, np.ones((101, 1)), {}, ValueError, "u has shape"),
        (UNIFORM[:4], UNIFORM[:4], {}, ValueError, "betas must be 1-D with at least 5"),
        (np.ones((5, 5)), np.ones((5, 5)), {}, ValueError, "betas must be 1-D"),
        (UNIFORM[::-1], UNIFORM, {}, ValueError, "betas must be strictly increasing"),
        (
            np.array([0, 1, 1, 2, 3.0]),
            np.zeros(5),
            {},
            ValueError,
            "betas must be strictly increasing",
        ),
        (np.array([0, 1, np.nan, 2, 3]), np.zeros(5), {}, ValueError, "betas and u must be"),
        (UNIFORM[:5], np.array([0, 1, np.nan, 2, 3]), {}, ValueError, "betas and u must be"),
        (UNIFORM[:5], np.array([0, 1, np.inf, 2, 3]), {}, ValueError, "betas and u must be"),
        (UNIFORM, UNIFORM, {"top": 0}, ValueError, "top must be > 0"),
        (UNIFORM, UNIFORM, {"top": 2.0}, TypeError, "top must be an int"),
        (UNIFORM, UNIFORM, {"smooth": -1}, ValueError, "smooth must be >= 0"),
        (UNIFORM, UNIFORM, {"smooth": 1.0}, TypeError, "smooth must be an int"),
    ],
)
def test_critical_betas_rejects_bad_input(betas, u, kwargs, error, match):
    with pytest.raises(error, match="^" + match):
        critical_betas(betas, u, **kwargs)


# -- partition_decoder (Propositions 2-3) ---------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partition_decoder_on_a_partition_is_the_owner(seed):
    rng = rng_of(seed)
    n, m = 5, 13
    X = rng.normal(size=(n, 3))
    assign = random_assignment(rng, n, m)
    support = assign[None, :] == np.arange(n)[:, None]
    masses = rng.uniform(0.1, 1.0, size=m)
    g, hole = partition_decoder(X, support, masses)
    assert g.shape == (m, 3) and g.dtype == F64 and hole.dtype == torch.bool
    np.testing.assert_allclose(g.numpy(), X[assign], rtol=1e-14, atol=1e-15)
    assert not bool(hole.any())


def overlapping_support(rng, n, m, p=0.4):
    while True:
        support = rng.uniform(size=(n, m)) < p
        if support.any(1).all() and support.any(0).all() and (support.sum(0) > 1).any():
            return support


def brute_force_decoder(X, support, masses):
    """eq. 6 tile by tile: ``g_a = Σ_i q_i(a) x_i / Σ_i q_i(a)``, ``q_i(a) = π_a 1[a∈Ω_i] / π_i``.

    A double loop in plain Python, with the masses kept (they cancel in the library's eq. 12).
    """
    n, m = support.shape
    pi = [sum(masses[a] for a in range(m) if support[i, a]) for i in range(n)]
    g = np.full((m, X.shape[1]), np.nan)
    for a in range(m):
        q = [masses[a] * support[i, a] / pi[i] for i in range(n)]
        total = sum(q)
        if total > 0:
            g[a] = sum(q[i] * X[i] for i in range(n)) / total
    return g


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_partition_decoder_blurs_overlaps_like_eq6(seed):
    rng = rng_of(seed)
    n, m = 6, 9
    X = rng.normal(size=(n, 2))
    support = overlapping_support(rng, n, m)
    masses = rng.uniform(0.1, 1.0, size=m)
    masses /= masses.sum()
    g, hole = partition_decoder(X, torch.as_tensor(support), masses)
    assert not bool(hole.any())
    np.testing.assert_allclose(g.numpy(), brute_force_decoder(X, support, masses), rtol=1e-12)
    # a tile covered by two or more supports is a blur: not any single data point
    shared = np.flatnonzero(support.sum(0) > 1)
    for a in shared:
        assert np.min(np.linalg.norm(X - g[a].numpy(), axis=1)) > 1e-6


def test_partition_decoder_matches_monte_carlo():
    rng = rng_of(21)
    n, m, draws = 4, 8, 40_000
    X = rng.normal(size=(n, 2))
    support = overlapping_support(rng, n, m, p=0.5)
    masses = rng.uniform(0.5, 1.0, size=m)
    masses /= masses.sum()
    counts = np.zeros((n, m))
    for i in range(n):  # z ~ q(z|x_i): a tile of Ω_i with probability ∝ its mass
        tiles = np.flatnonzero(support[i])
        picked = rng.choice(tiles, size=draws, p=masses[tiles] / masses[tiles].sum())
        counts[i] = np.bincount(picked, minlength=m)
    estimate = (counts.T @ X) / counts.sum(0)[:, None]  # ρ uniform over the data
    g, _ = partition_decoder(X, support, masses)
    np.testing.assert_allclose(g.numpy(), estimate, rtol=0, atol=0.05)


def test_partition_decoder_flags_holes_with_nan():
    rng = rng_of(3)
    X = rng.normal(size=(3, 2))
    support = np.array(
        [
            [True, True, False, False, False, False],
            [False, True, True, False, False, False],
            [False, False, False, False, True, False],
        ]
    )
    masses = np.array([0.1, 0.2, 0.3, 0.1, 0.2, 0.1])
    g, hole = partition_decoder(X, support, masses)
    np.testing.assert_array_equal(hole.numpy(), [False, False, False, True, False, True])
    assert bool(torch.isnan(g[hole]).all())
    assert bool(torch.isfinite(g[~hole]).all())
    # tile 1 is shared by x_0 (π_0 = 0.3) and x_1 (π_1 = 0.5): weights 1/0.3 and 1/0.5
    expected = (X[0] / 0.3 + X[1] / 0.5) / (1 / 0.3 + 1 / 0.5)
    np.testing.assert_allclose(g[1].numpy(), expected, rtol=1e-13)
    np.testing.assert_allclose(g[[0, 2, 4]].numpy(), X[[0, 1, 2]], rtol=1e-14)


GOOD_SUPPORT = np.array([[True, False, True], [False, True, True]])
TWO_X = np.array([[0.0, 1.0], [1.0, 0.0]])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"support": GOOD_SUPPORT.astype(int)}, ValueError, "support must be a bool"),
        ({"support": GOOD_SUPPORT.astype(float)}, ValueError, "support must be a bool"),
        ({"support": GOOD_SUPPORT[0]}, ValueError, r"support must be a bool \(n, m\)"),
        ({"support": GOOD_SUPPORT[:1]}, ValueError, r"support must be a bool \(n, m\)"),
        ({"support": np.ones((2, 3, 1), bool)}, ValueError, "support must be a bool"),
        (
            {"support": np.array([[True, False, True], [False, False, False]])},
            ValueError,
            "support: every data point needs at least one tile",
        ),
        ({"support": None}, TypeError, r"support must be a bool array \(n, m\), got NoneType$"),
        ({"support": "mask"}, TypeError, r"support must be a bool array \(n, m\), got str$"),
        (  # n = 2 data points in D = 3
            {"X": np.ones((2, 3)), "support": GOOD_SUPPORT[:1]},
            ValueError,
            r"support must be a bool \(n, m\) array with n = 2, got torch.bool of shape \(1, 3\)$",
        ),
        ({"masses": np.ones(2)}, ValueError, r"masses must be \(3,\) positive"),
        ({"masses": np.ones((3, 1))}, ValueError, r"masses must be \(3,\) positive"),
        ({"masses": np.array([0.5, 0.0, 0.5])}, ValueError, "masses must be"),
        ({"masses": np.array([0.5, -0.1, 0.5])}, ValueError, "masses must be"),
        ({"masses": np.array([0.5, np.nan, 0.5])}, ValueError, "masses must be finite"),
        ({"masses": "flat"}, TypeError, "masses must be a tensor"),
        ({"X": np.ones(2)}, ValueError, r"X must be \(n, D\)"),
        ({"X": np.full((2, 2), np.inf)}, ValueError, "X must be finite"),
    ],
)
def test_partition_decoder_rejects_bad_input(kwargs, error, match):
    args = {"X": TWO_X, "support": GOOD_SUPPORT, "masses": np.ones(3) / 3, **kwargs}
    with pytest.raises(error, match="^" + match):
        partition_decoder(args["X"], args["support"], args["masses"])


# -- eq. 3 for any posteriors, and a Gaussian encoder's posteriors on the tiles ------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_posterior_decoder_maximises_the_tile_elbo_in_psi(seed):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(5, 3, generator=gen, dtype=F64)
    masses = torch.softmax(torch.randn(7, generator=gen, dtype=F64), 0)
    q = torch.softmax(3 * torch.randn(5, 7, generator=gen, dtype=F64), 1)
    psi = posterior_decoder(X, q).requires_grad_(True)
    best = tile_elbo(X, psi, q, masses, 0.3)
    (grad,) = torch.autograd.grad(best, psi)
    assert grad.abs().max().item() < 1e-12
    for _ in range(5):  # and it is the maximum, not another stationary point
        other = psi.detach() + 0.05 * torch.randn(psi.shape, generator=gen, dtype=F64)
        assert tile_elbo(X, other, q, masses, 0.3) < best


def test_posterior_decoder_of_a_partition_agrees_with_partition_decoder():
    # q_i(a) = π_a 1[a ∈ Ω_i] / π_i: eq. 3 weights by 1/π_i, as Proposition 3 says
    X = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)
    support = torch.tensor([[True, True, False], [False, True, True]])
    masses = torch.tensor([0.1, 0.3, 0.6], dtype=F64)
    q = support.to(F64) * masses / (support.to(F64) @ masses)[:, None]
    torch.testing.assert_close(posterior_decoder(X, q), partition_decoder(X, support, masses)[0])


@pytest.mark.parametrize(
    "args, error, match",
    [
        (
            (TWO_X, np.ones((3, 2))),
            ValueError,
            r"posterior must be non-negative \(n, m\) with n = 2",
        ),
        ((TWO_X, -np.ones((2, 3))), ValueError, "posterior must be non-negative"),
        ((TWO_X, np.array([[1.0, 0.0], [1.0, 0.0]])), ValueError, "posterior: every tile"),
        ((TWO_X, "q"), TypeError, "posterior must be a tensor"),
        ((np.ones(2), np.ones((2, 3))), ValueError, r"X must be \(n, D\)"),
    ],
)
def test_posterior_decoder_rejects_bad_input(args, error, match):
    with pytest.raises(error, match="^" + match):
        posterior_decoder(*args)


def test_posterior_decoder_reads_a_list_posterior_in_float64():
    # weights that float32 cannot hold exactly: the average must be the float64 one
    X = torch.tensor([[0.1, 0.2], [0.7, -0.3], [0.3, 0.9]], dtype=F64)
    q = [[0.1, 0.3], [0.2, 0.3], [0.7, 0.4]]
    expected = (torch.tensor(q, dtype=F64).T @ X) / torch.tensor(q, dtype=F64).sum(0)[:, None]
    torch.testing.assert_close(posterior_decoder(X, q), expected, rtol=1e-15, atol=0)


def test_posterior_decoder_error_names_the_number_of_points():
    with pytest.raises(ValueError, match=r"with n = 3, got shape \(2, 2\)"):
        posterior_decoder(torch.zeros(3, 2, dtype=F64), np.ones((2, 2)))


def test_best_posteriors_leave_no_blur_where_a_gaussian_encoder_blurs():
    # Section 2.1: same Gaussian likelihood and β, below every pair's merge scale; the best
    # Gaussian bumps (Adam on the tile ELBO) overlap and blur, free posteriors (eq. 15 from the
    # bumps' decoder) partition the tiles and leave no blur, with a higher ELBO
    X = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]], dtype=F64
    )
    centres, masses = grid_basis(8)
    beta = 0.1 * 2 / 4  # a tenth of the closest pair's merge scale d²/4, d² = 2
    mean = torch.tensor(
        [[0.1, 0.1], [-0.1, 0.1], [0.1, -0.1], [-0.1, -0.1]], dtype=F64, requires_grad=True
    )
    log_std = torch.full((4,), math.log(0.2), dtype=F64, requires_grad=True)
    optimiser = torch.optim.Adam([mean, log_std], lr=0.02)
    for _ in range(400):
        q = gaussian_tile_posterior(centres, masses, mean, log_std)
        loss = -tile_elbo(X, posterior_decoder(X, q), q, masses, beta)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    q = q.detach()
    psi = posterior_decoder(X, q)
    free = fixed_points(X, beta, psi0=psi, prior=masses, max_iter=2000, tol=1e-12, dtype=F64)
    spread = ((X - X.mean(0)) ** 2).sum(1).mean()
    blur_bump = (q * torch.cdist(X, psi) ** 2).sum(1) / spread
    blur_free = (free.posterior * torch.cdist(X, free.psi) ** 2).sum(1) / spread
    assert free.converged
    assert blur_free.max() < 1e-6 < 5e-3 < blur_bump.min()
    assert tile_elbo(X, free.psi, free.posterior, masses, beta) > -loss


@pytest.mark.parametrize("std", [0.02, 0.05])
def test_gaussian_tile_posterior_has_the_mean_and_spread_of_its_bump(std):
    # on a fine grid with uniform prior, a bump well inside the square has mean μ and
    # per-axis variance s² (the density is read at the centres, and a Gaussian sampled on a
    # grid of spacing h ≪ s keeps its moments to e^{-2π²s²/h²}); the square cuts the
    # bump's tails 6 s from the nearer mean, a mass of order 1e-9
    centres, masses = grid_basis(200)
    mean = torch.tensor([[0.1, -0.05], [-0.2, 0.15]], dtype=F64)
    q = gaussian_tile_posterior(centres, masses, mean, torch.full((2,), math.log(std)))
    torch.testing.assert_close(q.sum(1), torch.ones(2, dtype=F64))
    torch.testing.assert_close(q @ centres, mean, atol=1e-8, rtol=0)
    variance = q @ centres**2 - (q @ centres) ** 2
    torch.testing.assert_close(variance, torch.full((2, 2), std**2, dtype=F64), rtol=1e-6, atol=0)


def test_gaussian_tile_posterior_weights_by_the_prior():
    # with a flat bump (large s) the posterior is the prior itself
    centres, _ = grid_basis(3)
    masses = torch.softmax(torch.arange(9, dtype=F64), 0)
    q = gaussian_tile_posterior(centres, masses, torch.zeros(1, 2), torch.tensor([20.0]))
    torch.testing.assert_close(q[0], masses)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"centres": np.ones(4)}, ValueError, r"centres must be \(m, d\)"),
        ({"prior": np.ones(3) / 3}, ValueError, r"prior must be \(4,\)"),
        ({"mean": np.ones((2, 3))}, ValueError, r"mean must be \(n, 2\)"),
        ({"log_std": np.ones(3)}, ValueError, r"log_std must be \(2,\)"),
        ({"log_std": np.array([0.0, np.nan])}, ValueError, "log_std must be finite"),
        ({"mean": "zero"}, TypeError, "mean must be a tensor"),
    ],
)
def test_gaussian_tile_posterior_rejects_bad_input(kwargs, error, match):
    centres, masses = grid_basis(2)
    args = {
        "centres": centres,
        "prior": masses,
        "mean": np.zeros((2, 2)),
        "log_std": np.zeros(2),
        **kwargs,
    }
    with pytest.raises(error, match="^" + match):
        gaussian_tile_posterior(**args)


def test_gaussian_tile_posterior_rejects_empty_centres_and_means():
    with pytest.raises(ValueError, match=r"^centres must be \(m, d\), got shape \(0, 2\)"):
        gaussian_tile_posterior(np.zeros((0, 2)), np.ones(0), np.zeros((1, 2)), np.zeros(1))
    with pytest.raises(ValueError, match=r"^mean must be \(n, 2\) \(d of centres\)"):
        gaussian_tile_posterior(*grid_basis(2), np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(TypeError, match=r"^centres must be a tensor"):
        gaussian_tile_posterior("grid", np.ones(4) / 4, np.zeros((1, 2)), np.zeros(1))
    with pytest.raises(ValueError, match=r"^log_std must be \(3,\), got shape \(2,\)"):
        gaussian_tile_posterior(*grid_basis(2), np.zeros((3, 2)), np.zeros(2))


def test_gaussian_tile_posterior_of_one_tile_is_certain():
    q = gaussian_tile_posterior([[0.0, 0.0]], [1.0], [[0.3, 0.1], [-0.2, 0.0]], [0.0, -1.0])
    torch.testing.assert_close(q, torch.ones(2, 1, dtype=F64))


def test_gaussian_tile_posterior_reads_lists_in_float64():
    # list inputs whose values float32 cannot hold: the same posterior as from float64 tensors
    centres = [[0.1, 0.2], [0.3, -0.7], [-0.45, 0.05]]
    mean, log_std = [[0.11, 0.19], [-0.3, 0.1]], [math.log(0.3), math.log(0.7)]
    expected = gaussian_tile_posterior(
        torch.tensor(centres, dtype=F64),
        torch.full((3,), 1 / 3, dtype=F64),
        torch.tensor(mean, dtype=F64),
        torch.tensor(log_std, dtype=F64),
    )
    q = gaussian_tile_posterior(centres, [1 / 3] * 3, mean, log_std)
    assert q.dtype == F64
    torch.testing.assert_close(q, expected, rtol=1e-14, atol=0)


# -- equipartition (Proposition 5) ----------------------------------------------------------------


def mean_responsibility(H, gamma, beta):
    """``(1/n) Σ_i r_ia``, ``r_ia = exp(-H_ia/β) / Σ_b exp(-H_ib/β) γ_b``, direct (no logs)."""
    K = np.exp(-H / beta)
    return (K / (K @ gamma)[:, None]).mean(0)


def objective(H, gamma, beta):
    """``Σ_i log Σ_b exp(-H_ib/β) γ_b``, in log space."""
    with np.errstate(divide="ignore"):
        return float(np.sum(logsumexp(-H / beta + np.log(gamma)[None, :], axis=1)))


def scipy_maximiser(H, beta, seed):
    """The concave problem on the simplex by SLSQP (bounds and Σγ = 1), from a random start."""
    K = np.exp(-H / beta)  # β ≥ 0.05 and H ≤ 1: no underflow

    def loss_and_grad(gamma):
        rows = K @ gamma
        return -float(np.sum(np.log(rows))), -(K / rows[:, None]).sum(0)

    start = rng_of(seed).dirichlet(np.ones(H.shape[1]))
    res = minimize(
        loss_and_grad,
        start,
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * H.shape[1],
        constraints=[{"type": "eq", "fun": lambda g: g.sum() - 1.0}],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    gamma = np.clip(res.x, 0.0, None)
    return gamma / gamma.sum()


EQ_H = rng_of(30).uniform(0.0, 1.0, size=(6, 10))


@pytest.mark.parametrize("beta", [0.05, 0.2, 1.0])
def test_equipartition_satisfies_kkt_and_maximises(beta):
    gamma, residual = equipartition(torch.as_tensor(EQ_H), beta)
    gamma = gamma.numpy()
    assert gamma.shape == (10,) and gamma.dtype == np.float64
    assert np.all(gamma >= 0) and gamma.sum() == pytest.approx(1.0, abs=1e-12)
    mean_r = mean_responsibility(EQ_H, gamma, beta)
    used = gamma > 1e-8
    assert used.any()
    np.testing.assert_allclose(mean_r[used], 1.0, rtol=0, atol=1e-8)
    assert np.all(mean_r[~used] <= 1.0 + 1e-8)
    # the returned residual is the one of the returned γ, over the tiles in use
    in_use = gamma > 1e-12
    assert residual == pytest.approx(np.abs(mean_r[in_use] - 1).max(), rel=1e-4, abs=1e-13)
    assert residual < 1e-10
    # a maximiser of Σ_i log Σ_b exp(-H_ib/β) γ_b
    best = objective(EQ_H, gamma, beta)
    rng = rng_of(31)
    for alpha in (0.1, 1.0, 10.0):
        points = rng.dirichlet(alpha * np.ones(10), size=200)  # (200, 10)
        values = logsumexp(-EQ_H[None] / beta + np.log(points)[:, None, :], axis=2).sum(1)
        assert np.all(values <= best + 1e-12)
    for seed in range(3):
        found = objective(EQ_H, scipy_maximiser(EQ_H, beta, seed), beta)
        assert found <= best + 1e-9
        assert found == pytest.approx(best, abs=1e-6)  # scipy gets there too
    # and not a trivial one: the uniform γ does strictly worse
    assert objective(EQ_H, np.full(10, 0.1), beta) < best - 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equipartition_of_equal_rows_is_the_argmin(seed):
    h = rng_of(40 + seed).uniform(0.0, 1.0, size=8)
    H = np.tile(h, (5, 1))
    gamma, _ = equipartition(H, 0.1)
    assert gamma[int(np.argmin(h))].item() > 1 - 1e-9
    assert gamma.sum().item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_equipartition_large_energies_do_not_overflow(seed):
    rng = rng_of(50 + seed)
    H = rng.uniform(0.0, 1e4, size=(6, 10))
    beta = 1e-3  # H / β up to 1e7
    gamma, residual = equipartition(H, beta)
    gamma = gamma.numpy()
    assert np.all(np.isfinite(gamma)) and math.isfinite(residual)
    assert gamma.sum() == pytest.approx(1.0, abs=1e-12)
    # each data point only sees its nearest tile: γ_a = (# points whose argmin is a) / n
    expected = np.bincount(np.argmin(H, axis=1), minlength=10) / 6
    np.testing.assert_allclose(gamma, expected, rtol=0, atol=1e-9)
    # KKT in log space
    log_gamma = np.log(np.maximum(gamma, 1e-300))
    log_r = -H / beta - logsumexp(-H / beta + log_gamma[None, :], axis=1)[:, None]
    mean_r = np.exp(logsumexp(log_r, axis=0)) / 6
    np.testing.assert_allclose(mean_r[gamma > 1e-8], 1.0, atol=1e-8)
    assert np.all(mean_r[gamma <= 1e-8] <= 1 + 1e-8)


@pytest.mark.parametrize("max_iter", [1, 5])
def test_equipartition_residual_matches_gamma_at_max_iter(max_iter):
    gamma, residual = equipartition(EQ_H, 0.2, max_iter=max_iter)
    gamma = gamma.numpy()
    mean_r = mean_responsibility(EQ_H, gamma, 0.2)
    assert residual == pytest.approx(np.abs(mean_r[gamma > 1e-12] - 1).max(), rel=1e-6)


def test_equipartition_by_default_runs_10000_em_steps_from_uniform():
    # equal rows, tile 1 worse by d: an EM step multiplies γ_1 / γ_0 by e = exp(-d/β), and the
    # residual stays (1 - e) / (1 + e γ_1/γ_0) ≈ 1e-3 > tol, so the default run takes all of
    # max_iter = 10_000 steps from γ = (1/2, 1/2)
    d, beta = 1e-3, 1.0
    gamma, residual = equipartition(np.tile([0.0, d], (3, 1)), beta)
    e = math.exp(-d / beta)
    odds = e**10_000
    np.testing.assert_allclose(gamma.numpy(), [1 / (1 + odds), odds / (1 + odds)], rtol=1e-9)
    assert residual == pytest.approx((1 - e) / (1 + e * odds), rel=1e-9)


def test_equipartition_returns_a_start_that_already_meets_tol():
    # the residual of the uniform start, computed directly; with tol above it, no EM step runs
    m, beta = EQ_H.shape[1], 0.2
    start = np.abs(mean_responsibility(EQ_H, np.full(m, 1 / m), beta) - 1).max()
    gamma, residual = equipartition(EQ_H, beta, tol=2 * start)
    assert gamma.dtype == F64
    np.testing.assert_allclose(gamma.numpy(), 1 / m, rtol=1e-15)
    assert residual == pytest.approx(start, rel=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"H": np.ones(4)}, ValueError, r"H must be \(n, m\)"),
        ({"H": np.ones((0, 3))}, ValueError, r"H must be \(n, m\)"),
        ({"H": np.ones((3, 0))}, ValueError, r"H must be \(n, m\)"),
        ({"H": np.ones((2, 2, 2))}, ValueError, r"H must be \(n, m\)"),
        ({"H": np.full((2, 3), np.nan)}, ValueError, "H must be finite"),
        ({"H": np.full((2, 3), np.inf)}, ValueError, "H must be finite"),
        ({"H": "H"}, TypeError, "H must be a tensor"),
        ({"beta": 0.0}, ValueError, "beta must be > 0"),
        ({"beta": -0.1}, ValueError, "beta must be > 0"),
        ({"beta": math.inf}, ValueError, "beta must be finite"),
        ({"beta": None}, TypeError, "beta must be a number"),
        ({"max_iter": 0}, ValueError, "max_iter must be > 0"),
        ({"max_iter": 5.5}, TypeError, "max_iter must be an int"),
        ({"tol": 0.0}, ValueError, "tol must be > 0"),
        ({"tol": math.nan}, ValueError, "tol must be finite"),
    ],
)
def test_equipartition_rejects_bad_input(kwargs, error, match):
    args = {"H": np.ones((2, 3)), "beta": 0.1, **kwargs}
    H, beta = args.pop("H"), args.pop("beta")
    with pytest.raises(error, match="^" + match):
        equipartition(H, beta, **args)


# -- the Lipschitz constraint (Appendix B, Proposition 6) ----------------------------------------


def _incidence_laplacian(pairs, m):
    """The graph Laplacian BᵀB from the pair list, built from the incidence matrix B."""
    B = np.zeros((len(pairs), m))
    for k, (a, b) in enumerate(np.asarray(pairs)):
        B[k, a], B[k, b] = 1.0, -1.0
    return B.T @ B


def test_lipschitz_constraint_pairs_bounds_and_laplacian():
    centres, _ = grid_basis(4)
    width = 0.25
    local = lipschitz_constraint(centres, width, 2.0, radius=0.3)
    dist = torch.cdist(centres, centres).numpy()
    expected = {(a, b) for a in range(16) for b in range(a + 1, 16) if dist[a, b] < 0.3}
    assert {tuple(p) for p in local.pairs.tolist()} == expected
    for (a, b), bound in zip(local.pairs.tolist(), local.bounds.tolist(), strict=True):
        assert bound == pytest.approx(2.0 * math.sqrt(dist[a, b] ** 2 + width**2 / 3), rel=1e-12)
    np.testing.assert_allclose(local.laplacian.numpy(), _incidence_laplacian(local.pairs, 16))
    every = lipschitz_constraint(centres, width, 2.0)
    assert len(every.pairs) == 16 * 15 // 2


def test_lipschitz_constraint_radius_is_strict_and_two_tiles_make_a_pair():
    line = [[float(k), 0.0] for k in range(4)]  # unit steps: the distances are exact
    # "only pairs closer than radius": radius 2 keeps the neighbours, not the pairs 2 apart
    local = lipschitz_constraint(line, 0.5, 1.0, radius=2.0)
    assert {tuple(p) for p in local.pairs.tolist()} == {(0, 1), (1, 2), (2, 3)}
    # m >= 2 tiles: two make one pair
    assert lipschitz_constraint(line[:2], 0.5, 1.0).pairs.tolist() == [[0, 1]]


GRID4 = grid_basis(4)[0]
GRID4_F = 3.0 * GRID4.flip(0)  # far from feasible for L = 0.5
GRID4_WEIGHTS = torch.linspace(0.5, 1.5, 16, dtype=F64)


def _project_on_grid4(**admm):
    constraint = lipschitz_constraint(GRID4, 0.25, 0.5, **admm)
    return constraint.project(GRID4_F, GRID4_WEIGHTS)[0]


def test_lipschitz_constraint_passes_its_admm_settings_on():
    tuned = lipschitz_constraint(GRID4, 0.25, 0.5, rho=2.5, inner_iter=7)
    assert tuned.rho == 2.5 and tuned.inner_iter == 7
    # project runs inner_iter ADMM iterations unless told otherwise
    psi, _ = tuned.project(GRID4_F, GRID4_WEIGHTS)
    assert torch.equal(psi, tuned.project(GRID4_F, GRID4_WEIGHTS, max_iter=7)[0])
    assert not torch.equal(psi, tuned.project(GRID4_F, GRID4_WEIGHTS, max_iter=8)[0])


def _small_problem(seed=0, m=6, D=2):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.stack([torch.linspace(-0.5, 0.5, m, dtype=F64), torch.zeros(m, dtype=F64)], 1)
    constraint = lipschitz_constraint(centres, 0.2, 0.5, radius=0.45)
    F = torch.randn(m, D, generator=gen, dtype=F64)
    weights = torch.rand(m, generator=gen, dtype=F64) + 0.2
    return constraint, F, weights


def test_projection_is_the_identity_when_the_constraint_is_inactive():
    constraint, F, weights = _small_problem()
    feasible = 0.01 * F  # every difference is far below its bound
    assert constraint.violation(feasible) < 0
    psi, state = constraint.project(feasible, weights)
    assert state is None
    assert torch.equal(psi, feasible)


def test_projection_satisfies_the_constraint_and_solves_the_weighted_problem():
    constraint, F, weights = _small_problem()
    assert constraint.violation(F) > 0.1
    psi, _ = constraint.project(F, weights, max_iter=20_000, tol=1e-10)
    assert constraint.violation(psi) < 1e-8
    # the same problem by a general-purpose constrained solver
    pairs, bounds = constraint.pairs.numpy(), constraint.bounds.numpy()
    w, target = weights.numpy(), F.numpy()

    def objective(flat):
        return 0.5 * float((w[:, None] * (flat.reshape(target.shape) - target) ** 2).sum())

    cons = [
        {
            "type": "ineq",
            "fun": lambda flat, a=a, b=b, d=d: (
                d**2
                - float(
                    ((flat.reshape(target.shape)[a] - flat.reshape(target.shape)[b]) ** 2).sum()
                )
            ),
        }
        for (a, b), d in zip(pairs, bounds, strict=True)
    ]
    reference = minimize(
        objective,
        np.zeros(target.size),
        constraints=cons,
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    assert reference.success
    np.testing.assert_allclose(psi.numpy().ravel(), reference.x, atol=1e-5)


def test_projection_admm_starts_from_the_candidate():
    # a cold start sets e_ab = F_a - F_b and no dual: the first ψ-update solves
    # (W + ρL) ψ = W F + ρ Bᵀ B F = (W + ρL) F, so one iteration returns F itself
    constraint, F, weights = _small_problem()
    assert constraint.violation(F) > 0.1
    psi, _ = constraint.project(F, weights, max_iter=1)
    np.testing.assert_allclose(psi.numpy(), F.numpy(), rtol=0, atol=1e-13)


def test_projection_leaves_a_candidate_on_the_boundary_unchanged():
    # d = 1 * √(1² + 3²/3) = 2 exactly; |ψ_0 - ψ_1| = 2 satisfies the constraint with no slack
    constraint = lipschitz_constraint([[0.0, 0.0], [1.0, 0.0]], 3.0, 1.0)
    F = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=F64)
    assert constraint.violation(F) == 0.0
    psi, state = constraint.project(F, torch.ones(2, dtype=F64))
    assert state is None and torch.equal(psi, F)


def test_projection_accepts_zero_weights():
    # weights are non-negative: a tile without posterior mass, or no tile with any
    constraint, F, weights = _small_problem()
    one_empty = weights.clone()
    one_empty[2] = 0.0
    for w in (one_empty, torch.zeros(6, dtype=F64)):
        psi, _ = constraint.project(F, w, max_iter=20_000, tol=1e-10)
        assert bool(torch.isfinite(psi).all())
        assert constraint.violation(psi) < 1e-8


@pytest.mark.parametrize("scale", [1e-6, 1e3])
def test_projection_depends_on_the_ratios_of_the_weights_only(scale):
    # Σ_a c w_a |ψ_a - F_a|² / 2 has the same minimiser over the constraint set for every c > 0
    constraint, F, weights = _small_problem()
    reference, _ = constraint.project(F, weights, max_iter=20_000, tol=1e-12)
    psi, _ = constraint.project(F, scale * weights, max_iter=20_000, tol=1e-12)
    np.testing.assert_allclose(psi.numpy(), reference.numpy(), rtol=0, atol=1e-9)


def test_projection_splits_its_iterations_across_warm_started_calls():
    # k ADMM iterations in one call are k calls of one iteration, each warm-started from the
    # state of the last: the default tol = 0 never stops early, not even at a feasible iterate
    # (second candidate: feasible, warm-started from an infeasible one's state)
    constraint, F, weights = _small_problem()
    _, warm = constraint.project(F, weights, max_iter=1)
    for candidate, start in ((F, None), (0.01 * F, warm)):
        whole, _ = constraint.project(candidate, weights, start, max_iter=20)
        explicit, _ = constraint.project(candidate, weights, start, max_iter=20, tol=0.0)
        psi, state = None, start
        for _ in range(20):
            psi, state = constraint.project(candidate, weights, state, max_iter=1)
        assert torch.equal(whole, psi) and torch.equal(whole, explicit)


def test_fixed_points_with_a_lipschitz_constraint_end_feasible():
    X = torch.tensor([[0.3, 0.0], [-0.3, 0.0], [0.0, 0.3]], dtype=F64)
    centres, masses = grid_basis(6)
    constraint = lipschitz_constraint(centres, 1 / 6, 0.5, radius=0.4, inner_iter=50)
    free = fixed_points(X, 1e-3, psi0=centres, prior=masses, max_iter=60, dtype=F64)
    assert constraint.violation(free.psi) > 0.05  # the data pull the tiles apart
    tied = fixed_points(
        X, 1e-3, psi0=centres, prior=masses, max_iter=60, dtype=F64, constraint=constraint
    )
    assert constraint.violation(tied.psi) < 1e-3
    assert tied.reconstruction_error > free.reconstruction_error


@pytest.mark.parametrize(("dtype", "atol"), [(F64, 1e-13), (torch.float32, 1e-6)])
def test_constrained_steps_are_warm_started_weighted_projections(dtype, atol):
    # every step: the smoothed eq. 15 step, projected with weights Σ_i q_i(a) (a prior that is
    # not uniform matters there), the projection warm-started from the last step's state
    X = np.array([[0.3, 0.0], [-0.3, 0.0], [0.0, 0.3]])
    centres, _ = grid_basis(4)
    prior = rng_of(3).uniform(0.2, 1.0, size=16)
    prior /= prior.sum()
    beta = 1e-2
    constraint = lipschitz_constraint(centres, 0.25, 0.5, radius=0.4, inner_iter=3)
    out = fixed_points(
        X,
        beta,
        psi0=centres,
        prior=prior,
        constraint=constraint,
        max_iter=4,
        tol=1e-12,
        dtype=dtype,
    )
    psi, state = centres.numpy(), None
    for k in range(1, 5):
        _, m_ia, F = eq15_parts(X, psi, prior, beta)
        candidate = 0.9 * F + 0.1 * psi
        assert constraint.violation(candidate) > 0.1  # the projection moves it
        projected, state = constraint.project(candidate, (m_ia * prior).sum(0), state)
        psi = projected.numpy()
        np.testing.assert_allclose(out.trajectory[k].numpy(), psi, rtol=0, atol=atol)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda c: lipschitz_constraint(c, 0.0, 1.0), ValueError, "width"),
        (lambda c: lipschitz_constraint(c, 0.1, -1.0), ValueError, "lipschitz"),
        (lambda c: lipschitz_constraint(c, 0.1, 1.0, radius=0.0), ValueError, "radius"),
        (lambda c: lipschitz_constraint(c, 0.1, 1.0, radius=1e-6), ValueError, "radius"),
        (lambda c: lipschitz_constraint(c[:1], 0.1, 1.0), ValueError, "centres"),
        (lambda c: lipschitz_constraint("grid", 0.1, 1.0), TypeError, "centres must be a tensor"),
        (lambda c: lipschitz_constraint(c, 0.1, 1.0, rho=0.0), ValueError, "rho"),
        (lambda c: lipschitz_constraint(c, 0.1, 1.0, inner_iter=0), ValueError, "inner_iter"),
        (
            lambda c: lipschitz_constraint(c, 0.1, 1.0, colour=1),
            TypeError,
            r"unknown keyword arguments: \[.colour.\]",
        ),
        (
            lambda c: lipschitz_constraint(c, 0.1, 1.0).project(torch.ones(3, 2), torch.ones(3)),
            ValueError,
            "F",
        ),
        (
            lambda c: lipschitz_constraint(c, 0.1, 1.0).project(torch.ones(16, 2), torch.ones(4)),
            ValueError,
            "weights",
        ),
        (
            lambda c: lipschitz_constraint(c, 0.1, 1.0).project(torch.ones(16, 2), -torch.ones(16)),
            ValueError,
            "weights",
        ),
        (  # one row short of the largest tile index, 15
            lambda c: lipschitz_constraint(c, 0.1, 1.0).project(torch.ones(15, 2), torch.ones(15)),
            ValueError,
            r"F must be \(m, D\) with m > every tile index of pairs, got \(15, 2\)$",
        ),
        (  # one row too many, and infeasible
            lambda c: lipschitz_constraint(c, 0.1, 1.0).project(
                torch.arange(34.0).reshape(17, 2), torch.ones(17)
            ),
            ValueError,
            "F has 17 tiles but the constraint has 16$",
        ),
        (  # one row too many, and feasible: still the wrong number of tiles
            lambda c: lipschitz_constraint(c, 0.1, 1.0).project(torch.zeros(17, 2), torch.ones(17)),
            ValueError,
            "F has 17 tiles but the constraint has 16$",
        ),
        (
            lambda c: lipschitz_constraint(c, 0.1, 1.0).project("F", torch.ones(16)),
            TypeError,
            "F must be a tensor",
        ),
        (
            lambda c: lipschitz_constraint(c, 0.1, 1.0).project(torch.ones(16, 2), "w"),
            TypeError,
            "weights must be a tensor",
        ),
        (
            lambda c: lipschitz_constraint(c, 0.1, 1.0).project(c, torch.ones(16), max_iter=0),
            ValueError,
            "max_iter must be > 0",
        ),
        (
            lambda c: lipschitz_constraint(c, 0.1, 1.0).violation("psi"),
            TypeError,
            "psi must be a tensor",
        ),
        (
            lambda c: fixed_points(torch.zeros(2, 2), 0.1, constraint="local"),
            TypeError,
            "constraint must be a LipschitzConstraint, got str$",
        ),
    ],
)
def test_lipschitz_bad_input(call, error, match):
    centres, _ = grid_basis(4)
    with pytest.raises(error, match="^" + match):
        call(centres)


# -- the tile objective and the readings of a trained decoder (Fig. 1) ---------------------------


def test_tile_elbo_matches_its_formula_and_is_stationary_at_a_fixed_point():
    gen = torch.Generator().manual_seed(4)
    X = torch.rand(6, 2, generator=gen, dtype=F64) - 0.5
    centres, masses = grid_basis(4)
    beta = 0.01
    found = fixed_points(X, beta, psi0=centres, prior=masses, tol=1e-13, max_iter=5000, dtype=F64)
    q = found.posterior
    H = ((X[:, None] - found.psi[None]) ** 2).sum(-1)
    expected = -(q * H).sum(1).mean() / 2 - beta * (q * torch.log(q / masses)).sum(1).mean()
    value = tile_elbo(X, found.psi, q, masses, beta)
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    psi = found.psi.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(tile_elbo(X, psi, q, masses, beta), psi)
    assert grad.abs().max().item() < 1e-9
    # any other posterior on the simplex is worse for this ψ (Gibbs is the maximiser)
    other = torch.softmax(torch.randn(q.shape, generator=gen, dtype=F64), dim=1)
    assert tile_elbo(X, found.psi, other, masses, beta) < value


@pytest.mark.parametrize("beta", [0.004, 0.01])
def test_beta_is_the_inverse_lagrange_multiplier_of_the_reconstruction_constraint(beta):
    # Section 2.2: minimising the KL subject to u ≤ κ² has multiplier λ = -dKL*/dκ²; along a
    # smooth branch of fixed points of F = -u/2 - β KL, d(-u/2 - β KL) = 0, so λ = 1/(2β)
    # (1/β in the paper's units, whose energy has no 1/2)
    gen = torch.Generator().manual_seed(8)
    X = torch.rand(12, 2, generator=gen, dtype=F64) - 0.5
    centres, masses = grid_basis(6)
    settled = fixed_points(
        X, beta, psi0=centres, prior=masses, max_iter=20_000, tol=1e-12, dtype=F64
    )
    ends = [
        fixed_points(
            X, beta * (1 + e), psi0=settled.psi, prior=masses, max_iter=20_000, tol=1e-12, dtype=F64
        )
        for e in (-1e-3, 1e-3)
    ]
    assert all(run.converged for run in [settled, *ends])
    multiplier = -(ends[1].kl - ends[0].kl) / (
        ends[1].reconstruction_error - ends[0].reconstruction_error
    )
    assert multiplier * 2 * beta == pytest.approx(1.0, abs=1e-4)


ELBO_X = np.array([[0.1, 0.2], [-0.3, 0.4], [0.5, -0.1]])
ELBO_PSI = np.array([[0.0, 0.0], [0.1, -0.1], [0.2, 0.3], [0.3, 0.3]])


def test_tile_elbo_of_a_partition_posterior():
    # empty tiles (q_i(a) = 0) contribute 0 log 0 = 0: with x_i on tile a_i alone,
    # F = -(1/n) Σ_i |x_i - ψ_{a_i}|² / 2 - β (1/n) Σ_i log(1 / π_{a_i})
    prior = np.array([0.1, 0.2, 0.3, 0.4])
    owner = [2, 0, 3]
    beta = 0.7
    energy = np.mean([np.sum((ELBO_X[i] - ELBO_PSI[a]) ** 2) for i, a in enumerate(owner)])
    expected = -energy / 2 - beta * np.mean(-np.log(prior[owner]))
    value = tile_elbo(ELBO_X, ELBO_PSI, np.eye(4)[owner], prior, beta)
    assert value.item() == pytest.approx(expected, rel=1e-14)


def test_tile_elbo_normalises_a_float32_prior():
    # float32 masses sum to 1 only to about 1e-8; the prior is their normalised version, so a
    # posterior equal to it has KL = 0 and F is the energy term alone
    prior = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert abs(prior.double().sum().item() - 1) > 1e-8
    q = (prior.double() / prior.double().sum()).expand(3, 4).numpy()
    H = ((ELBO_X[:, None] - ELBO_PSI[None]) ** 2).sum(-1)
    value = tile_elbo(ELBO_X, ELBO_PSI, q, prior, 1.0)
    assert value.item() == pytest.approx(-np.mean(np.sum(q * H, axis=1)) / 2, rel=0, abs=1e-15)


def test_nearest_neighbour_error_and_tile_masses_on_a_known_decoder():
    X = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=F64)

    def decoder(z):  # the left half-plane decodes to X[0], the right to X[1], blended at 0
        w = torch.sigmoid(4 * z[:, :1])
        return (1 - w) * X[0] + w * X[1]

    z = torch.tensor([[-3.0, 0.0], [0.0, 1.0], [3.0, -2.0]], dtype=F64)
    mse, grad_norm, nearest = nearest_neighbour_error(decoder, z, X)
    out = decoder(z)
    expected_nearest = torch.cdist(out, X).argmin(1)
    assert torch.equal(nearest, expected_nearest)
    torch.testing.assert_close(mse, ((out - X[expected_nearest]) ** 2).mean(1))
    for i in range(3):
        g = torch.autograd.functional.jacobian(
            lambda zi, i=i: ((decoder(zi[None])[0] - X[expected_nearest[i]]) ** 2).mean(), z[i]
        )
        assert grad_norm[i].item() == pytest.approx(g.norm().item(), rel=1e-10)
    assert grad_norm[1] > 10 * grad_norm[0]  # the boundary is where the error changes
    share = tile_masses(decoder, X, n_samples=40_000, seed=0)
    assert share.sum().item() == pytest.approx(1.0)
    assert share.tolist() == pytest.approx([0.5, 0.5], abs=0.01)  # N(0, I) splits evenly


def image_decoder(z):
    """``(N, 2) -> (N, 1, 2, 2)``: the image ``[[z0, z1], [z0 + z1, z0 - z1]]``."""
    pixels = torch.stack([z[:, 0], z[:, 1], z[:, 0] + z[:, 1], z[:, 0] - z[:, 1]], 1)
    return pixels.reshape(-1, 1, 2, 2)


def test_nearest_neighbour_error_on_image_shaped_data():
    # X (n, 1, 2, 2) with n = 3: nearest by brute force over the 4 flattened pixels
    X = image_decoder(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=F64))
    z = torch.tensor([[0.9, 0.2], [-0.5, -0.7], [0.1, 0.8], [0.4, 0.45]], dtype=F64)
    mse, _, nearest = nearest_neighbour_error(image_decoder, z, X)
    out, flat = image_decoder(z).reshape(4, 4), X.reshape(3, 4)
    brute = [
        min(range(3), key=lambda j, i=i: float(((out[i] - flat[j]) ** 2).sum())) for i in range(4)
    ]
    assert nearest.tolist() == brute and len(set(brute)) == 3
    torch.testing.assert_close(mse, ((out - flat[brute]) ** 2).mean(1), rtol=1e-15, atol=0)


# three points on the unit circle at 0°, 90° and 180°, and one far below
CONES_X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -60.0]], dtype=F64)


def test_tile_masses_are_the_prior_masses_of_voronoi_cones():
    # identity decoder: the tiles of the points on the circle are cones of 135°, 90° and 135°,
    # of mass 3/8, 1/4, 3/8 under N(0, I); the far point is nearest to no sample, mass 0
    share = tile_masses(lambda z: z, CONES_X)
    assert share.dtype == F64 and share.shape == (4,)
    np.testing.assert_allclose(share.numpy(), [3 / 8, 1 / 4, 3 / 8, 0.0], rtol=0, atol=0.015)
    # seeded: the global RNG does not matter, another seed draws other samples
    torch.manual_seed(1)
    a = tile_masses(lambda z: z, CONES_X, n_samples=2000, seed=5)
    torch.manual_seed(2)
    b = tile_masses(lambda z: z, CONES_X, n_samples=2000, seed=5)
    c = tile_masses(lambda z: z, CONES_X, n_samples=2000, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: tile_elbo(
                torch.zeros(2, 2), torch.zeros(3, 1), torch.ones(2, 3) / 3, torch.ones(3) / 3, 0.1
            ),
            ValueError,
            r"psi must be \(m, 2\), got shape \(3, 1\)$",
        ),
        (
            lambda: tile_elbo(
                torch.zeros(2, 2), "psi", torch.ones(2, 3) / 3, torch.ones(3) / 3, 0.1
            ),
            TypeError,
            "psi must be a tensor",
        ),
        (
            lambda: tile_elbo(torch.zeros(2, 2), torch.zeros(3, 2), "q", torch.ones(3) / 3, 0.1),
            TypeError,
            "posterior must be a tensor",
        ),
        (  # n = 4 data points, m = 3 tiles, in D = 2
            lambda: tile_elbo(
                torch.zeros(4, 2), torch.zeros(3, 2), torch.ones(4, 2) / 2, torch.ones(3) / 3, 0.1
            ),
            ValueError,
            r"posterior must be non-negative \(4, 3\), got shape \(4, 2\)$",
        ),
        (
            lambda: tile_elbo(
                torch.zeros(2, 2), torch.zeros(3, 2), torch.ones(2, 3) / 3, torch.ones(4) / 4, 0.1
            ),
            ValueError,
            r"prior must be \(3,\)",
        ),
        (
            lambda: tile_elbo(
                torch.zeros(2, 2), torch.zeros(3, 2), torch.ones(2, 4) / 4, torch.ones(3) / 3, 0.1
            ),
            ValueError,
            "posterior",
        ),
        (
            lambda: tile_elbo(
                torch.zeros(2, 2), torch.zeros(3, 2), -torch.ones(2, 3), torch.ones(3) / 3, 0.1
            ),
            ValueError,
            "posterior",
        ),
        (
            lambda: tile_elbo(
                torch.zeros(2, 2), torch.zeros(3, 2), torch.ones(2, 3) / 3, torch.ones(3), 0.1
            ),
            ValueError,
            "prior",
        ),
        (
            lambda: tile_elbo(
                torch.zeros(2, 2), torch.zeros(3, 2), torch.ones(2, 3) / 3, torch.ones(3) / 3, 0.0
            ),
            ValueError,
            "beta",
        ),
        (
            lambda: nearest_neighbour_error("g", torch.zeros(2, 2), torch.zeros(3, 2)),
            TypeError,
            "decoder must be callable, got str$",
        ),
        (
            lambda: nearest_neighbour_error(lambda z: z, "z", torch.zeros(3, 2)),
            TypeError,
            "z must be a tensor",
        ),
        (
            lambda: nearest_neighbour_error(lambda z: z, torch.zeros(2, 2), "X"),
            TypeError,
            "X must be a tensor",
        ),
        (lambda: tile_masses(lambda z: z, "X"), TypeError, "X must be a tensor"),
        (
            lambda: nearest_neighbour_error(lambda z: z, torch.zeros(2), torch.zeros(3, 2)),
            ValueError,
            "z",
        ),
        (
            lambda: nearest_neighbour_error(lambda z: z, torch.zeros(2, 2), torch.zeros(0, 2)),
            ValueError,
            "X",
        ),
        (
            lambda: nearest_neighbour_error(lambda z: z, torch.zeros(2, 2), torch.zeros(3, 5)),
            ValueError,
            "decoder output",
        ),
        (lambda: tile_masses(lambda z: z, torch.zeros(3, 2), n_samples=0), ValueError, "n_samples"),
        (
            lambda: tile_masses(lambda z: z, torch.zeros(3, 2), latent_dim=0),
            ValueError,
            "latent_dim",
        ),
        (lambda: tile_masses(lambda z: z, torch.zeros(3, 2), seed=-1), ValueError, "seed"),
        (lambda: tile_masses(None, torch.zeros(3, 2)), TypeError, "decoder"),
    ],
)
def test_tile_readings_bad_input(call, error, match):
    with pytest.raises(error, match="^" + match):
        call()


# -- across the module: defaults, input types, stopping rules -------------------------------------


FOUR_KINKS = kinked(UNIFORM, UNIFORM[[15, 40, 60, 85]], [4.0, 0.5, 1.0, 2.0])
PROJECTION = _small_problem()  # (constraint, F, weights), F infeasible


DEFAULTS = {  # a call left to its defaults, and the documented values they stand for
    "fixed_points": (
        lambda **kw: fixed_points(BAD_X, 0.5, psi0=BAD_PSI, tol=1e-300, **kw).trajectory,
        {"prior": uniform(3), "smoothing": 0.9, "max_iter": 400, "seed": 0, "dtype": torch.float32},
    ),
    "critical_betas": (
        lambda **kw: critical_betas(UNIFORM, FOUR_KINKS, **kw),
        {"top": 3, "smooth": 1},
    ),
    "tile_masses": (
        lambda **kw: tile_masses(lambda z: z, CONES_X, **kw),
        {"n_samples": 20_000, "latent_dim": 2, "seed": 0},
    ),
    # rho and inner_iter: LipschitzConstraint's defaults
    "lipschitz_constraint": (_project_on_grid4, {"rho": 1.0, "inner_iter": 20}),
    # max_iter: the constraint's inner_iter, 20
    "project": (
        lambda **kw: PROJECTION[0].project(PROJECTION[1], PROJECTION[2], **kw)[0],
        {"max_iter": 20, "tol": 0.0},
    ),
}


@pytest.mark.parametrize("name", DEFAULTS)
def test_defaults_are_the_documented_values(name):
    call, documented = DEFAULTS[name]
    default, explicit = call(), call(**documented)
    assert default.shape == explicit.shape
    np.testing.assert_array_equal(np.asarray(default), np.asarray(explicit))


def _fixed_point_outputs(f):
    out = fixed_points(
        f(BAD_X), 0.5, psi0=f(BAD_PSI), prior=f([0.2, 0.3, 0.5]), max_iter=3, dtype=F64
    )
    return (
        out.trajectory,
        out.posterior,
        torch.tensor([out.reconstruction_error, out.kl], dtype=F64),
    )


FLOAT64_CASES = {  # each applies f to its floating-point inputs and returns its float outputs
    "fixed_points": _fixed_point_outputs,
    "tile_elbo": lambda f: (
        tile_elbo(f(ELBO_X), f(ELBO_PSI), f(np.full((3, 4), 0.25)), f([0.1, 0.2, 0.3, 0.4]), 0.7),
    ),
    "partition_decoder": lambda f: (
        partition_decoder(f(TWO_X + 0.1), GOOD_SUPPORT, f([0.1, 0.2, 0.7]))[0],
    ),
    "equipartition": lambda f: (equipartition(f(EQ_H), 0.2, max_iter=5)[0],),
    "critical_betas": lambda f: (
        critical_betas(
            f(UNIFORM), f(kinked(UNIFORM, UNIFORM[[20, 50, 80]], [1.0, -3.0, 2.0])), top=10
        ),
    ),
    "two_point_map": lambda f: (two_point_map(f(np.linspace(-0.6, 0.6, 13)), 0.3, 0.05),),
    "lipschitz_constraint": lambda f: (
        lipschitz_constraint(f(GRID4 + 0.01), 0.25, 0.5, radius=0.4).bounds,
    ),
    "violation": lambda f: (np.float64(PROJECTION[0].violation(f(PROJECTION[1]))),),
    "project": lambda f: (PROJECTION[0].project(f(PROJECTION[1]), f(PROJECTION[2]))[0],),
    "nearest_neighbour_error": lambda f: (
        nearest_neighbour_error(
            lambda z: z, torch.tensor([[0.3, 0.1], [-0.2, 0.7]], dtype=F64), f(0.3 * CONES_X[:3])
        )[0],
    ),
}


@pytest.mark.parametrize(
    "convert",
    [lambda a: np.asarray(a).tolist(), lambda a: np.asarray(a, dtype=np.float32)],
    ids=["list", "float32"],
)
@pytest.mark.parametrize("name", FLOAT64_CASES)
def test_inputs_are_read_in_float64(name, convert):
    # lists and float32 arrays give the float64 results of float64 arrays of the same values
    got = FLOAT64_CASES[name](convert)
    want = FLOAT64_CASES[name](lambda a: np.asarray(convert(a), dtype=np.float64))
    for g, w in zip(got, want, strict=True):
        assert g.dtype in (F64, np.float64)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_stopping_rules_at_exactly_tol():
    # fixed_points stops when a step moves ψ by "less than tol": a step of exactly tol goes on
    X, psi0, prior = small_problem(9)
    first = fixed_points(X, 0.5, psi0=psi0, prior=prior, max_iter=1, dtype=F64)
    step = torch.linalg.norm(first.trajectory[1] - first.trajectory[0]).item()
    out = fixed_points(X, 0.5, psi0=psi0, prior=prior, max_iter=3, tol=step, dtype=F64)
    assert out.iterations > 1 and torch.equal(out.trajectory[1], first.trajectory[1])
    # equipartition stops when the residual "falls below tol": one equal to tol goes on (every
    # point nearest to a tile of its own: the residual falls from the start)
    H = rng_of(30).uniform(0.5, 1.0, size=(4, 4))
    np.fill_diagonal(H, 0.0)
    _, residual = equipartition(H, 0.2, max_iter=1)
    gamma, _ = equipartition(H, 0.2, max_iter=2, tol=residual)
    assert torch.equal(gamma, equipartition(H, 0.2, max_iter=2)[0])
    # project stops when ψ is "within tol of feasible": exactly tol away stops it
    constraint, F, weights = PROJECTION
    F = 0.2 * F
    first, _ = constraint.project(F, weights, max_iter=1)
    gap = constraint.violation(first)
    assert 0 < gap < 1
    psi, _ = constraint.project(F, weights, max_iter=10, tol=gap)
    assert torch.equal(psi, first)


# -- the exact posterior of a fixed decoder (Fig. 1's encoder gap) ---------------------------


def test_gibbs_posterior_of_a_linear_decoder_is_the_gaussian_posterior():
    # g(z) = W z + b with D = 3: p(x) = N(b, W W^T + γ I) and p(z|x) = N(m, S) in closed form.
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(3, 2, generator=gen, dtype=F64)
    b = torch.randn(3, generator=gen, dtype=F64)
    gamma = 0.3
    X = torch.randn(5, 3, generator=gen, dtype=F64) * 1.5

    def decoder(z):
        return z.to(F64) @ W.T + b

    result = gibbs_posterior(decoder, X, math.log(gamma), extent=6.0, points=301)
    marginal = stats.multivariate_normal(b.numpy(), (W @ W.T + gamma * torch.eye(3)).numpy())
    np.testing.assert_allclose(result.log_marginal.numpy(), marginal.logpdf(X.numpy()), atol=1e-6)
    S = torch.linalg.inv(torch.eye(2, dtype=F64) + W.T @ W / gamma)
    m = (X - b) @ W @ S / gamma  # (n, 2), S symmetric
    exact_kl = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(m, S),
        torch.distributions.MultivariateNormal(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64)),
    )
    torch.testing.assert_close(result.kl, exact_kl, atol=1e-4, rtol=0)
    # the probabilities are each posterior's mass per cell: its mean is m
    torch.testing.assert_close(result.probabilities @ result.grid, m, atol=1e-6, rtol=0)
    assert result.probabilities.shape == (5, 301 * 301)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"log_gamma": math.inf}, ValueError, "log_gamma must be finite"),
        ({"points": 2}, ValueError, "points must be >= 3"),
        ({"extent": 0.0}, ValueError, "extent must be > 0"),
    ],
)
def test_gibbs_posterior_bad_arguments_raise_naming_them(kwargs, error, match):
    args = {"log_gamma": 0.0, **kwargs}
    with pytest.raises(error, match=match):
        gibbs_posterior(lambda z: z, torch.zeros(3, 2), **args)


@pytest.mark.parametrize("points", ["201", 20.5])
def test_gibbs_posterior_points_must_be_an_int(points):
    with pytest.raises(TypeError, match=r"^points must be an int"):
        gibbs_posterior(lambda z: z, torch.zeros(3, 2), 0.0, points=points)


def test_gibbs_posterior_default_grid_and_smallest_grid():
    result = gibbs_posterior(lambda z: z, torch.zeros(3, 2), 0.0)
    assert result.grid.shape == (201 * 201, 2)
    torch.testing.assert_close(result.grid.min(0).values, torch.full((2,), -5.0, dtype=F64))
    torch.testing.assert_close(result.grid.max(0).values, torch.full((2,), 5.0, dtype=F64))
    assert gibbs_posterior(lambda z: z, torch.zeros(3, 2), 0.0, points=3).grid.shape == (9, 2)


def test_gibbs_posterior_sums_in_float64_over_a_float32_decoder():
    # the decoder answers in float32; the quadrature must use those values in float64: the
    # log-marginal to round-off of a direct float64 sum (float32 distances miss by ~1e-6)
    W = torch.tensor([[1.3, -0.7], [0.2, 0.9], [-0.4, 0.5]])

    def decoder(z):
        return z.float() @ W.T + 0.1

    X = torch.tensor([[0.31, -0.27, 0.55], [1.7, 0.1, -0.9]])
    result = gibbs_posterior(decoder, X, math.log(0.05), extent=3.0, points=41)
    side = torch.linspace(-3.0, 3.0, 41, dtype=F64)
    grid = torch.cartesian_prod(side, side)
    decoded = decoder(grid.float()).double()
    squared = ((X.double()[:, None, :] - decoded[None]) ** 2).sum(-1)
    log_joint = (
        -squared / (2 * 0.05)
        - 1.5 * math.log(2 * math.pi * 0.05)
        - 0.5 * (grid**2).sum(1)
        - math.log(2 * math.pi)
        + 2 * math.log(side[1] - side[0])
    )
    torch.testing.assert_close(
        result.log_marginal, torch.logsumexp(log_joint, 1), rtol=1e-13, atol=1e-11
    )


def test_gibbs_posterior_checks_the_decoder_width():
    with pytest.raises(ValueError, match="decoder output has 2 values per point but X has 3"):
        gibbs_posterior(lambda z: z, torch.zeros(4, 3), 0.0)


# -- the mean solution loses stability at beta_c = lambda_max(Cov) ---------------------------


def _anisotropic_cloud(n=60, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=gen, dtype=F64) * torch.tensor([0.3, 0.1], dtype=F64)


def _spread_after(X, beta, psi0, steps=3000):
    result = fixed_points(X, beta, psi0=psi0, smoothing=1.0, max_iter=steps, tol=1e-14, dtype=F64)
    return float(result.psi.std(0).norm())


def test_mean_critical_beta_of_two_points_is_a_squared():
    a = 0.37
    X = torch.tensor([[a, 0.0], [-a, 0.0]], dtype=F64)
    assert mean_critical_beta(X) == pytest.approx(two_point_critical_beta(a), rel=1e-12)


def test_the_mean_solution_splits_below_lambda_max_and_holds_above():
    X = _anisotropic_cloud()
    beta_c = mean_critical_beta(X)
    gen = torch.Generator().manual_seed(1)
    psi0 = X.mean(0) + 1e-4 * torch.randn(8, 2, generator=gen, dtype=F64)
    assert _spread_after(X, 0.9 * beta_c, psi0) > 1e-2  # the tiles separate
    assert _spread_after(X, 1.1 * beta_c, psi0) < 1e-8  # they fall back onto the mean


def test_the_iteration_at_the_mean_multiplies_tile_differences_by_cov_over_beta():
    # A finite-difference Jacobian of one plain step (smoothing 1) at the mean, along a
    # perturbation that moves two tiles apart: the difference grows by the covariance / beta.
    X = _anisotropic_cloud()
    centred = X - X.mean(0)
    cov = centred.T @ centred / len(X)
    beta = 0.05
    direction = torch.tensor([1.0, -0.5], dtype=F64)
    eps = 1e-6
    psi0 = X.mean(0).repeat(2, 1)
    psi0[0] += eps * direction
    psi0[1] -= eps * direction
    step = fixed_points(X, beta, psi0=psi0, smoothing=1.0, max_iter=1, tol=1e-300, dtype=F64)
    difference = (step.psi[0] - step.psi[1]) / (2 * eps)
    torch.testing.assert_close(difference, cov @ direction / beta, rtol=1e-4, atol=1e-8)
    # the common shift of the two tiles vanishes
    torch.testing.assert_close(step.psi.mean(0), X.mean(0), rtol=0, atol=1e-9)


def test_split_fixed_points_outlive_the_mean_solutions_instability():
    # Fig. 3's first-order character: three points at the corners of a triangle. Just above
    # lambda_max the mean solution is stable (a start next to it falls back onto it), yet a
    # start spread over the grid settles on a split fixed point: two stable solutions at one
    # beta, hysteresis. Well above lambda_max only the mean is left.
    X = torch.tensor([[0.3, 0.0], [-0.15, 0.26], [-0.15, -0.26]], dtype=F64)
    beta_c = mean_critical_beta(X)
    gen = torch.Generator().manual_seed(0)
    centres, _ = grid_basis(8)
    spread = centres + 0.01 * torch.randn(centres.shape, generator=gen, dtype=F64)
    near_mean = X.mean(0) + 1e-4 * torch.randn(8, 2, generator=gen, dtype=F64)
    assert _spread_after(X, 1.05 * beta_c, spread, steps=20_000) > 0.1
    assert _spread_after(X, 1.05 * beta_c, near_mean) < 1e-8
    assert _spread_after(X, 1.2 * beta_c, spread, steps=20_000) < 1e-8


def test_learned_sigma_goes_to_zero_on_two_points():
    # Section 2.1 (ii): alternate eq. (15) at beta = sigma^2 (KL weight 1) with the best
    # sigma^2 for the current reconstructions, u / D. On two points at +-a every round
    # sharpens the split, and sigma^2 falls without a floor.
    a = 0.3
    X = torch.tensor([[a, 0.0], [-a, 0.0]], dtype=F64)
    centres, masses = grid_basis(8)
    sigma2, last = learned_sigma_rounds(X, 0.5 * a**2, psi0=centres, prior=masses, rounds=10)
    assert sigma2.shape == (11,) and sigma2[0] == 0.5 * a**2
    assert np.all(np.diff(sigma2) < 0)
    assert sigma2[-1] < 1e-50
    assert last.converged and last.reconstruction_error / 2 == sigma2[-1]


def test_learned_sigma_rounds_start_each_round_where_the_last_stopped():
    # one call of 2 rounds is two calls of 1 round, the second started from the first's psi
    X, psi0, prior = small_problem(12, n=5, m=6, D=3)
    both, last = learned_sigma_rounds(X, 0.3, psi0=psi0, prior=prior, rounds=2)
    first, run = learned_sigma_rounds(X, 0.3, psi0=psi0, prior=prior, rounds=1)
    second, run2 = learned_sigma_rounds(X, first[-1], psi0=run.psi, prior=prior, rounds=1)
    np.testing.assert_array_equal(both, [0.3, first[1], second[1]])
    torch.testing.assert_close(last.psi, run2.psi, rtol=0, atol=0)


def test_learned_sigma_rounds_defaults_and_prior_are_passed_on():
    X, psi0, _ = small_problem(14, n=5, m=6, D=3)
    prior = torch.softmax(torch.arange(6, dtype=F64), 0)  # unequal tile masses
    assert learned_sigma_rounds(X, 0.3, psi0=psi0, prior=prior)[0].shape == (11,)  # 10 rounds
    direct = fixed_points(X, 0.3, psi0=psi0, prior=prior, max_iter=3000, tol=1e-300, dtype=F64)
    first, run = learned_sigma_rounds(X, 0.3, psi0=psi0, prior=prior, rounds=1, tol=1e-300)
    assert run.iterations == direct.iterations and first[1] == direct.reconstruction_error / 3


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"sigma2": 0.0}, ValueError, "sigma2 must be > 0"),
        ({"rounds": 0}, ValueError, "rounds must be > 0"),
        ({"rounds": 2.0}, TypeError, "rounds must be an int"),
    ],
)
def test_learned_sigma_rounds_rejects_bad_input(kwargs, error, match):
    X, psi0, prior = small_problem(13, n=5, m=6, D=3)
    args = {"sigma2": 0.1, "rounds": 1, **kwargs}
    with pytest.raises(error, match="^" + match):
        learned_sigma_rounds(X, args.pop("sigma2"), psi0=psi0, prior=prior, **args)


def test_mean_critical_beta_is_the_largest_variance_in_any_dimension_and_place():
    # three dimensions (the largest of three eigenvalues), away from the origin (the mean is
    # taken per coordinate), float32 input read in float64
    gen = torch.Generator().manual_seed(4)
    X = torch.randn(50, 3, generator=gen, dtype=F64) * torch.tensor([0.1, 0.5, 0.2], dtype=F64)
    X = X + torch.tensor([3.0, -2.0, 7.0], dtype=F64)
    expected = np.linalg.eigvalsh(np.cov(X.numpy().T, bias=True))[-1]
    assert mean_critical_beta(X) == pytest.approx(expected, rel=1e-12)
    X32 = X.float()
    expected32 = np.linalg.eigvalsh(np.cov(X32.double().numpy().T, bias=True))[-1]
    assert mean_critical_beta(X32) == pytest.approx(expected32, rel=1e-12)


def test_mean_critical_beta_needs_two_points():
    with pytest.raises(ValueError, match=r"X must hold at least 2 points, got 1$"):
        mean_critical_beta(torch.zeros(1, 2))
