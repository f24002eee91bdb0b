"""Tests of vaebook.local_geometry against explicit inverses, numerical minimisers of the local
cost (Bonheme & Grzes eq. 10), Weyl's inequality, torch.autograd's Jacobians and closed forms."""

import math
import warnings

import numpy as np
import pytest
import torch
from helpers import positive, randn, seeded_gen
from torch import nn

from vaebook.local_geometry import (
    decoder_jacobian,
    eigenvalue_bounds,
    local_cost,
    optimal_posterior_covariance,
    optimal_posterior_variances,
)
from vaebook.nets import seeded
from vaebook.two_stage import bent_line, optimal_encoder_covariance

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)


def rank_r(gen, d, kappa, r):
    """A random ``d × κ`` Jacobian of rank ``r``."""
    return randn(gen, d, r) @ randn(gen, r, kappa)


def as_matrix(prior):
    """``prior`` (variances ``(κ,)`` or a matrix) as a numpy covariance matrix."""
    prior = np.asarray(prior, dtype=np.float64)
    return np.diag(prior) if prior.ndim == 1 else prior


def explicit_covariance(J, prior, gamma):
    """eq. 11 written with explicit numpy inverses: ``(Σ†⁻¹ + JᵀJ/γ)⁻¹``."""
    J = np.asarray(J, dtype=np.float64)
    precision = np.linalg.inv(as_matrix(prior)) + J.T @ J / gamma
    return np.linalg.inv(precision)


def direct_local_cost(cov, J, prior, gamma, mean_offset=None):
    """eq. 10 term by term in numpy: trace, d/2 log 2πγ, Mahalanobis, -κ and the log-dets."""
    cov, J = np.asarray(cov, dtype=np.float64), np.asarray(J, dtype=np.float64)
    prior = as_matrix(prior)
    d, kappa = J.shape
    prior_inv = np.linalg.inv(prior)
    trace = np.trace(cov @ (prior_inv + J.T @ J / gamma))
    quad = 0.0 if mean_offset is None else float(mean_offset @ prior_inv @ mean_offset)
    logdet_prior = np.linalg.slogdet(prior)[1]
    logdet_cov = np.linalg.slogdet(cov)[1]
    return (
        0.5 * trace
        + 0.5 * d * math.log(2 * math.pi * gamma)
        + 0.5 * (quad - kappa + logdet_prior - logdet_cov)
    )


def _lbfgs(parameter, cost):
    """Minimise ``cost()`` over ``parameter`` by LBFGS in float64 to machine tolerance."""
    optimiser = torch.optim.LBFGS(
        [parameter],
        lr=1.0,
        max_iter=300,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimiser.zero_grad()
        value = cost()
        value.backward()
        return value

    for _ in range(3):
        optimiser.step(closure)


def _cholesky_param(raw):
    """``Σ = L Lᵀ`` from an unconstrained matrix: lower triangle and log-diagonal of ``L``."""
    chol = torch.tril(raw, -1) + torch.diag_embed(raw.diagonal().exp())
    return chol @ chol.T


def numerical_minimiser(J, prior_cov, gamma, seed):
    """argmin over SPD ``Σ`` of :func:`local_cost`, by LBFGS from a random start."""
    kappa = J.shape[-1]
    raw = (0.5 * randn(seeded_gen(seed), kappa, kappa)).requires_grad_(True)
    _lbfgs(raw, lambda: local_cost(_cholesky_param(raw), J, prior_cov, gamma))
    return _cholesky_param(raw).detach()


def numerical_diagonal_minimiser(J, prior_var, gamma, seed):
    """argmin over *diagonal* ``Σ`` of :func:`local_cost` (log-variances by LBFGS)."""
    log_var = randn(seeded_gen(seed), J.shape[-1]).requires_grad_(True)
    _lbfgs(log_var, lambda: local_cost(torch.diag(log_var.exp()), J, prior_var, gamma))
    return log_var.detach().exp()


def as_tensor_matrix(prior):
    """``prior`` (variances ``(κ,)`` or a matrix) as a torch covariance matrix."""
    return torch.diag(prior) if prior.dim() == 1 else prior


def assert_between(lower, eig, upper):
    """``lower ≤ eig ≤ upper`` up to rounding: eigvalsh errs by ≈ ε |Σ| in absolute terms."""
    slack = 1e-9 * eig.abs() + 1e-13 * eig.abs().max()
    assert bool((lower <= eig + slack).all()), (lower, eig)
    assert bool((eig <= upper + slack).all()), (eig, upper)


def rel_err(a, b):
    return (torch.linalg.norm(a - b) / torch.linalg.norm(b)).item()


# -- optimal_posterior_covariance (eq. 11) ----------------------------------------------------


@pytest.mark.parametrize("prior_kind", ["diagonal", "full"])
@pytest.mark.parametrize("gamma", [10.0, 0.3, 1e-3])
def test_optimal_posterior_covariance_is_the_explicit_inverse(gen, make_spd, prior_kind, gamma):
    J = randn(gen, 6, 4)
    prior = positive(gen, 4) if prior_kind == "diagonal" else make_spd(4)
    cov = optimal_posterior_covariance(J, prior, gamma)
    assert cov.shape == (4, 4) and cov.dtype == F64
    expected = explicit_covariance(J, prior, gamma)
    np.testing.assert_allclose(cov.numpy(), expected, rtol=1e-10, atol=1e-13 * gamma)


@pytest.mark.parametrize("prior_kind", ["diagonal", "full"])
def test_optimal_posterior_covariance_is_the_numerical_minimiser_of_the_local_cost(
    gen, make_spd, prior_kind
):
    J = randn(gen, 5, 3)
    prior = positive(gen, 3) if prior_kind == "diagonal" else make_spd(3)
    gamma = 0.4
    cov = optimal_posterior_covariance(J, prior, gamma)
    best = local_cost(cov, J, prior, gamma).item()
    for seed in range(3):  # eq. 10 is strictly convex in Σ: every start finds the same Σ
        found = numerical_minimiser(J, prior, gamma, seed)
        assert rel_err(found, cov) < 1e-6
        assert local_cost(found, J, prior, gamma).item() >= best - 1e-12
    # A check that can fail: a perturbed Σ costs strictly more.
    bumped = cov + 0.05 * torch.eye(3, dtype=F64)
    assert local_cost(bumped, J, prior, gamma).item() > best + 1e-6


def test_optimal_posterior_covariance_is_symmetric_pd_and_batched(gen, make_spd):
    J = randn(gen, 2, 3, 5, 4)
    prior = positive(gen, 4)
    cov = optimal_posterior_covariance(J, prior, 0.2)
    assert cov.shape == (2, 3, 4, 4)
    assert torch.equal(cov, cov.mT)
    assert bool((torch.linalg.eigvalsh(cov) > 0).all())
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(
                cov[i, j].numpy(), explicit_covariance(J[i, j], prior, 0.2), rtol=1e-10, atol=0
            )
    # A batch of full prior covariances, one per Jacobian.
    priors = make_spd(4, 3)
    cov = optimal_posterior_covariance(J[0], priors, 0.2)
    assert cov.shape == (3, 4, 4)
    for j in range(3):
        np.testing.assert_allclose(
            cov[j].numpy(), explicit_covariance(J[0, j], priors[j], 0.2), rtol=1e-10, atol=1e-14
        )
    # One prior matrix shared by the whole batch.
    cov = optimal_posterior_covariance(J, priors[1], 0.2)
    np.testing.assert_allclose(
        cov[1, 2].numpy(), explicit_covariance(J[1, 2], priors[1], 0.2), rtol=1e-10, atol=1e-14
    )


def test_optimal_posterior_covariance_treats_each_batch_member_at_its_own_scale(gen):
    # eq. 11 is unchanged by (J, γ) -> (cJ, c²γ). In a batch of J and 1e-9 J' at γ = 1e-18 the
    # second member's JᵀJ is 1e-18 of the first's, far below the first's round-off, yet it is
    # no null space: its covariance is eq. 11 of (J', γ = 1), not the prior.
    G, prior = randn(gen, 2, 5, 3), positive(gen, 3)
    cov = optimal_posterior_covariance(torch.stack([G[0], 1e-9 * G[1]]), prior, 1e-18)
    np.testing.assert_allclose(
        cov[0].numpy(), explicit_covariance(G[0], prior, 1e-18), rtol=1e-10, atol=1e-30
    )
    np.testing.assert_allclose(
        cov[1].numpy(), explicit_covariance(G[1], prior, 1.0), rtol=1e-10, atol=1e-14
    )


@pytest.mark.parametrize("gamma", [1.0, 1e-4])
def test_standard_prior_reproduces_dai_and_wipfs_optimal_encoder_covariance(gen, gamma):
    J = randn(gen, 3, 7, 4)
    cov = optimal_posterior_covariance(J, torch.ones(4, dtype=F64), gamma)
    eye = torch.eye(4, dtype=F64)
    np.testing.assert_allclose(
        cov.numpy(), optimal_encoder_covariance(J, gamma).numpy(), rtol=1e-12, atol=0
    )
    # Independently: γ (JᵀJ + γ I)⁻¹ (Dai & Wipf eq. 83) by an explicit solve, and Σ† = I as a
    # matrix gives the same as Σ† = I as variances.
    expected = gamma * torch.linalg.inv(J.mT @ J + gamma * eye)
    np.testing.assert_allclose(cov.numpy(), expected.numpy(), rtol=1e-8, atol=1e-14)
    torch.testing.assert_close(optimal_posterior_covariance(J, eye, gamma), cov, rtol=1e-12, atol=0)


def test_optimal_posterior_covariance_keeps_relative_accuracy_at_tiny_gamma(gen):
    gamma = 1e-10
    Q, _ = torch.linalg.qr(randn(gen, 8, 3))
    norms = torch.tensor([3.0, 0.5, 1.7], dtype=F64)
    J = Q * norms  # orthogonal columns: JᵀJ = diag(s), s = |J_j|²
    s = norms**2
    # Standard prior: eigenvalues γ / (γ + s) ≈ γ / s, every one of them O(γ).
    eig = torch.linalg.eigvalsh(optimal_posterior_covariance(J, torch.ones(3, dtype=F64), gamma))
    np.testing.assert_allclose(eig.numpy(), np.sort((gamma / (gamma + s)).numpy()), rtol=1e-12)
    np.testing.assert_allclose(eig.numpy(), np.sort((gamma / s).numpy()), rtol=1e-9)
    # A diagonal prior: Σ is diagonal with 1 / (1/σ†_j + s_j / γ), entry by entry.
    prior = torch.tensor([0.3, 2.0, 5.0], dtype=F64)
    cov = optimal_posterior_covariance(J, prior, gamma)
    expected = 1.0 / (1.0 / prior + s / gamma)
    np.testing.assert_allclose(cov.diagonal().numpy(), expected.numpy(), rtol=1e-12)
    off = cov - torch.diag(cov.diagonal())
    assert off.abs().max().item() < 1e-12 * expected.min().item()


def null_column_problem(gen):
    """A Jacobian ``10 × 8`` whose columns 1, 3 and 6 are zero, and a diagonal prior."""
    J = randn(gen, 10, 8)
    null = [1, 3, 6]
    J[:, null] = 0.0  # the decoder ignores latents 1, 3 and 6
    prior = torch.tensor([0.3, 2.0, 0.7, 5.0, 1.3, 0.9, 1.7, 0.5], dtype=F64)
    return J, prior, null, [k for k in range(8) if k not in null]


def test_jacobian_null_coordinates_keep_the_prior_variance(gen):
    J, prior, null, used = null_column_problem(gen)
    gamma = 1.0
    cov = optimal_posterior_covariance(J, prior, gamma)
    for j in null:
        assert cov[j, j].item() == pytest.approx(prior[j].item(), rel=1e-14, abs=0)
        others = [k for k in range(8) if k != j]
        assert cov[j, others].abs().max().item() < 1e-14
    # The used latents solve the smaller problem on their own columns.
    sub = explicit_covariance(J[:, used], prior[used], gamma)
    np.testing.assert_allclose(cov[used][:, used].numpy(), sub, rtol=1e-10, atol=0)


def test_jacobian_null_coordinates_keep_the_prior_variance_exactly_at_tiny_gamma(gen):
    J, prior, null, _ = null_column_problem(gen)
    cov = optimal_posterior_covariance(J, prior, 1e-10)
    for j in null:
        assert cov[j, j].item() == pytest.approx(prior[j].item(), rel=1e-12, abs=0)
        others = [k for k in range(8) if k != j]
        assert cov[j, others].abs().max().item() < 1e-12


def test_rank_deficient_jacobian_splits_the_eigenvalues(gen, make_spd):
    kappa, r = 5, 2
    J = rank_r(gen, 7, kappa, r)
    prior = make_spd(kappa)
    prior_eig = np.linalg.eigvalsh(prior.numpy())
    jtj = np.sort(np.linalg.eigvalsh((J.T @ J).numpy()))[::-1][:r]  # the nonzero λ‡, descending
    previous = None
    for gamma in [10.0, 1.0, 0.1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6]:
        eig = torch.linalg.eigvalsh(optimal_posterior_covariance(J, prior, gamma)).numpy()
        # κ - r eigenvalues stay within the prior's spectrum for every γ ...
        big = eig[r:]
        assert (big >= prior_eig[0] * (1 - 1e-9)).all() and (
            big <= prior_eig[-1] * (1 + 1e-9)
        ).all()
        # ... and r shrink like γ: λ_i / γ → 1 / λ‡_i (γ Σ⁻¹ → JᵀJ).
        scaled = eig[:r] / gamma
        error = np.abs(scaled * jtj - 1).max()
        if previous is not None:
            assert error < previous  # converges as γ falls
        previous = error
    assert previous < 1e-4
    assert eig[:r].max() < 1e-4 * prior_eig[0]


# -- eigenvalue_bounds (eq. 12) ---------------------------------------------------------------


def test_eigenvalue_bounds_hold_and_are_weyls_formula(gen, make_spd):
    J = randn(gen, 6, 4)
    prior = make_spd(4)
    prior_eig = np.linalg.eigvalsh(prior.numpy())
    jtj = np.sort(np.linalg.eigvalsh((J.T @ J).numpy()))[::-1]
    for gamma in np.logspace(-6, 1, 8):
        lower, upper = eigenvalue_bounds(J, prior, gamma)
        assert lower.shape == upper.shape == (4,)
        np.testing.assert_allclose(
            lower.numpy(), 1 / (1 / prior_eig[0] + jtj / gamma), rtol=1e-10, atol=0
        )
        np.testing.assert_allclose(
            upper.numpy(), 1 / (1 / prior_eig[-1] + jtj / gamma), rtol=1e-10, atol=0
        )
        eig = torch.linalg.eigvalsh(optimal_posterior_covariance(J, prior, gamma))
        assert_between(lower, eig, upper)
        assert bool((lower <= upper).all())


def test_eigenvalue_bounds_over_gamma_tend_to_the_inverse_jacobian_spectrum(gen, make_spd):
    J = randn(gen, 6, 3)
    prior = make_spd(3)
    jtj = np.sort(np.linalg.eigvalsh((J.T @ J).numpy()))[::-1]
    errors = []
    for gamma in [1e-2, 1e-4, 1e-8]:
        lower, upper = eigenvalue_bounds(J, prior, gamma)
        for bound in (lower, upper):
            errors.append(np.abs(bound.numpy() / gamma * jtj - 1).max())
    assert errors[-1] < 1e-6 and errors[-2] < 1e-6
    assert errors[0] > errors[2] > errors[4]


@pytest.mark.parametrize("c", [0.25, 1.0, 3.0])
def test_eigenvalue_bounds_are_tight_for_an_isotropic_prior(gen, c):
    J = randn(gen, 5, 4)
    jtj = np.sort(np.linalg.eigvalsh((J.T @ J).numpy()))[::-1]
    for gamma in [2.0, 0.1, 1e-3]:
        for prior in (torch.full((4,), c, dtype=F64), c * torch.eye(4, dtype=F64)):
            lower, upper = eigenvalue_bounds(J, prior, gamma)
            np.testing.assert_allclose(lower.numpy(), upper.numpy(), rtol=1e-14, atol=0)
            np.testing.assert_allclose(lower.numpy(), 1 / (1 / c + jtj / gamma), rtol=1e-10)
            eig = torch.linalg.eigvalsh(optimal_posterior_covariance(J, prior, gamma))
            np.testing.assert_allclose(eig.numpy(), lower.numpy(), rtol=1e-9)


def test_eigenvalue_bounds_of_a_rank_deficient_jacobian(gen, make_spd):
    kappa, r = 5, 2
    J = rank_r(gen, 6, kappa, r)
    prior = make_spd(kappa)
    prior_eig = np.linalg.eigvalsh(prior.numpy())
    for gamma in [1.0, 1e-3, 1e-6]:
        lower, upper = eigenvalue_bounds(J, prior, gamma)
        # The zero λ‡ pair with the largest eigenvalues of Σ: bounds [λ†_min, λ†_max].
        # (eigvalsh leaves the zero λ‡ at ≈ 1e-15 |JᵀJ|, which moves them by ≈ 1e-15 / γ.)
        np.testing.assert_allclose(lower[r:].numpy(), prior_eig[0], rtol=1e-6)
        np.testing.assert_allclose(upper[r:].numpy(), prior_eig[-1], rtol=1e-6)
        assert upper[:r].max().item() < upper[r:].min().item()
        eig = torch.linalg.eigvalsh(optimal_posterior_covariance(J, prior, gamma))
        assert_between(lower, eig, upper)


def test_eigenvalue_bounds_shapes_and_batches(gen, make_spd):
    J = randn(gen, 2, 3, 5, 4)
    lower, upper = eigenvalue_bounds(J, positive(gen, 4), 0.5)
    assert lower.shape == upper.shape == (2, 3, 4)
    priors = make_spd(4, 3)
    lower, upper = eigenvalue_bounds(J[0], priors, 0.5)
    assert lower.shape == upper.shape == (3, 4)
    for j in range(3):
        lo, up = eigenvalue_bounds(J[0, j], priors[j], 0.5)
        torch.testing.assert_close(lower[j], lo, rtol=1e-13, atol=0)
        torch.testing.assert_close(upper[j], up, rtol=1e-13, atol=0)
    # Ascending: the i-th smallest eigenvalue pairs with the i-th largest λ‡.
    assert bool((lower[..., 1:] >= lower[..., :-1]).all())
    assert bool((upper[..., 1:] >= upper[..., :-1]).all())


# -- optimal_posterior_variances --------------------------------------------------------------


@pytest.mark.parametrize("gamma", [5.0, 0.1, 1e-4])
def test_optimal_posterior_variances_are_the_inverse_diagonal_precision(gen, gamma):
    J = randn(gen, 7, 4)
    prior = positive(gen, 4)
    got = optimal_posterior_variances(J, prior, gamma)
    assert got.shape == (4,) and got.dtype == F64
    precision = np.diag(1 / prior.numpy()) + (J.T @ J).numpy() / gamma
    np.testing.assert_allclose(got.numpy(), 1 / np.diag(precision), rtol=1e-12)
    # Not the diagonal of eq. 11 when JᵀJ is not diagonal (the VAE cannot reach eq. 11).
    full = optimal_posterior_covariance(J, prior, gamma).diagonal()
    assert not torch.allclose(got, full, rtol=1e-3)


def test_optimal_posterior_variances_minimise_the_local_cost_over_diagonal_covariances(gen):
    J = randn(gen, 5, 3)
    prior = positive(gen, 3)
    gamma = 0.5
    got = optimal_posterior_variances(J, prior, gamma)
    best = local_cost(torch.diag(got), J, prior, gamma).item()
    for seed in range(3):
        found = numerical_diagonal_minimiser(J, prior, gamma, seed)
        np.testing.assert_allclose(found.numpy(), got.numpy(), rtol=1e-6)
    # The diagonal optimum costs more than the full one (eq. 11), less than other diagonals.
    full = optimal_posterior_covariance(J, prior, gamma)
    assert local_cost(full, J, prior, gamma).item() < best - 1e-6
    for factor in (0.9, 1.1):
        assert local_cost(torch.diag(got * factor), J, prior, gamma).item() > best


def test_a_zero_column_keeps_exactly_the_prior_variance(gen):
    J = randn(gen, 6, 4)
    J[:, 2] = 0.0
    prior = torch.tensor([0.3, 2.0, 0.7, 5.0], dtype=F64)
    for gamma in [1.0, 1e-10]:
        got = optimal_posterior_variances(J, prior, gamma)
        # The prior variance to the last bit (σ† γ / γ may round once).
        assert got[2].item() == pytest.approx(prior[2].item(), rel=2.3e-16, abs=0)
        used = [0, 1, 3]
        norms = (J[:, used] ** 2).sum(0)
        np.testing.assert_allclose(
            got[used].numpy(), (1 / (1 / prior[used] + norms / gamma)).numpy(), rtol=1e-12
        )


def test_optimal_posterior_variances_broadcast_the_prior(gen):
    J = randn(gen, 3, 5, 4)  # a batch of n = 3 Jacobians
    norms = (J**2).sum(-2).numpy()  # (3, 4)
    gamma = 0.2

    def expected(prior):
        return 1 / (1 / np.broadcast_to(prior, (3, 4)) + norms / gamma)

    prior_row = positive(gen, 4)
    prior_each = positive(gen, 3, 4)
    for prior in (2.0, torch.tensor(2.0, dtype=F64), prior_row, prior_each):
        got = optimal_posterior_variances(J, prior, gamma)
        assert got.shape == (3, 4)
        np.testing.assert_allclose(got.numpy(), expected(np.asarray(prior)), rtol=1e-12)
    # An unbatched Jacobian with one prior per example broadcasts to (n, κ) as well.
    got = optimal_posterior_variances(J[1], prior_each, gamma)
    np.testing.assert_allclose(
        got.numpy(), 1 / (1 / prior_each.numpy() + norms[1] / gamma), rtol=1e-12
    )


# -- local_cost (eq. 10) ----------------------------------------------------------------------


@pytest.mark.parametrize("prior_kind", ["diagonal", "full"])
@pytest.mark.parametrize("with_offset", [False, True])
def test_local_cost_is_the_direct_formula(gen, make_spd, prior_kind, with_offset):
    d, kappa, gamma = 7, 3, 0.35  # d ≠ κ: the d/2 log 2πγ term counts the rows of J
    J = randn(gen, d, kappa)
    prior = positive(gen, kappa) if prior_kind == "diagonal" else make_spd(kappa)
    cov = make_spd(kappa)
    offset = randn(gen, kappa) if with_offset else None
    got = local_cost(cov, J, prior, gamma, mean_offset=offset)
    assert got.shape == () and got.dtype == F64
    expected = direct_local_cost(cov, J, prior, gamma, None if offset is None else offset.numpy())
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_local_cost_batches_over_covariances_and_offsets(gen, make_spd):
    J = randn(gen, 4, 3)
    prior = make_spd(3)
    covs, offsets = make_spd(3, 5), randn(gen, 5, 3)
    got = local_cost(covs, J, prior, 0.7, mean_offset=offsets)
    assert got.shape == (5,)
    for i in range(5):
        expected = direct_local_cost(covs[i], J, prior, 0.7, offsets[i].numpy())
        assert got[i].item() == pytest.approx(expected, rel=1e-12)
    # One covariance, a batch of offsets.
    got = local_cost(covs[0], J, prior, 0.7, mean_offset=offsets)
    assert got.shape == (5,)
    assert got[3].item() == pytest.approx(
        direct_local_cost(covs[0], J, prior, 0.7, offsets[3].numpy()), rel=1e-12
    )
    # A (2, 5) batch of Jacobians, priors (each with its own log-determinant), covariances and
    # offsets: every member is eq. 10 of its own inputs, and the result has the batch's shape.
    # (No batch size equals κ = 3, so κ can only be read from the last axis of J.)
    Js, priors, covs, offsets = (
        randn(gen, 2, 5, 4, 3),
        make_spd(3, 2, 5),
        make_spd(3, 2, 5),
        randn(gen, 2, 5, 3),
    )
    got = local_cost(covs, Js, priors, 0.7, mean_offset=offsets)
    assert got.shape == (2, 5)
    for i in range(2):
        for j in range(5):
            expected = direct_local_cost(
                covs[i, j], Js[i, j], priors[i, j], 0.7, offsets[i, j].numpy()
            )
            assert got[i, j].item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("prior_kind", ["diagonal", "full"])
def test_kernels_read_python_floats_in_the_dtype_of_j(gen, make_spd, prior_kind):
    # prior_cov, cov and mean_offset given as nested lists of Python floats are read in J's
    # float64 (not float32: positive() and make_spd() give numbers float32 cannot hold), so
    # the results match the float64 references to float64 precision and equal the results
    # for float64 tensors exactly.
    J = randn(gen, 5, 3)
    prior = positive(gen, 3) if prior_kind == "diagonal" else make_spd(3)
    cov, offset, gamma = make_spd(3), randn(gen, 3), 0.3
    plist = prior.tolist()

    got = optimal_posterior_covariance(J, plist, gamma)
    assert got.dtype == F64
    np.testing.assert_allclose(got.numpy(), explicit_covariance(J, prior, gamma), rtol=1e-10)
    assert torch.equal(got, optimal_posterior_covariance(J, prior, gamma))

    lower, upper = eigenvalue_bounds(J, plist, gamma)
    assert lower.dtype == upper.dtype == F64
    prior_eig = np.linalg.eigvalsh(as_matrix(prior))
    jtj = np.sort(np.linalg.eigvalsh((J.T @ J).numpy()))[::-1]
    np.testing.assert_allclose(lower.numpy(), 1 / (1 / prior_eig[0] + jtj / gamma), rtol=1e-10)
    np.testing.assert_allclose(upper.numpy(), 1 / (1 / prior_eig[-1] + jtj / gamma), rtol=1e-10)
    for a, b in zip((lower, upper), eigenvalue_bounds(J, prior, gamma), strict=True):
        assert torch.equal(a, b)

    got = local_cost(cov.tolist(), J, plist, gamma, mean_offset=offset.tolist())
    assert got.dtype == F64
    expected = direct_local_cost(cov, J, prior, gamma, offset.numpy())
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert torch.equal(got, local_cost(cov, J, prior, gamma, mean_offset=offset))


@pytest.mark.parametrize("prior_kind", ["diagonal", "full"])
def test_the_covariance_gradient_of_the_local_cost_vanishes_at_eq_11(gen, make_spd, prior_kind):
    J = randn(gen, 6, 4)
    prior = positive(gen, 4) if prior_kind == "diagonal" else make_spd(4)
    gamma = 0.05
    precision = torch.linalg.inv(as_tensor_matrix(prior)) + J.T @ J / gamma
    cov = optimal_posterior_covariance(J, prior, gamma).requires_grad_(True)
    local_cost(cov, J, prior, gamma, mean_offset=randn(gen, 4)).backward()
    assert cov.grad.norm().item() < 1e-9 * precision.norm().item()
    # Elsewhere the gradient is (A - Σ⁻¹) / 2 (symmetric), far from zero.
    other = (optimal_posterior_covariance(J, prior, gamma) * 1.5).requires_grad_(True)
    local_cost(other, J, prior, gamma).backward()
    expected = 0.5 * (precision - torch.linalg.inv(other.detach()))
    torch.testing.assert_close(other.grad, expected, rtol=1e-8, atol=1e-8)
    assert other.grad.norm().item() > 1e-2 * precision.norm().item()


# -- bad input of the kernels -----------------------------------------------------------------

J0 = torch.ones(5, 3, dtype=F64)
P0 = torch.ones(3, dtype=F64)
EYE3 = torch.eye(3, dtype=F64)
NOT_SYMMETRIC = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
NOT_PD = torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=F64))


def _kernel_cases():
    """(name, callable of (J, prior_cov, gamma)) for each kernel taking J, prior_cov and gamma."""
    return [
        ("optimal_posterior_covariance", optimal_posterior_covariance),
        ("eigenvalue_bounds", eigenvalue_bounds),
        ("local_cost", lambda J, p, g: local_cost(EYE3, J, p, g)),
    ]


SHARED_BAD = [
    ({"J": torch.ones(3)}, ValueError, r"J must be \(\.\.\., d, kappa\)"),
    ({"J": torch.full((5, 3), math.nan)}, ValueError, "J must be finite"),
    ({"J": torch.full((5, 3), math.inf)}, ValueError, "J must be finite"),
    ({"J": "J"}, TypeError, "J must be a tensor"),
    ({"J": None}, TypeError, "J must be a tensor"),
    ({"prior": torch.ones(4, dtype=F64)}, ValueError, "prior_cov has 4 variances but J has 3"),
    ({"prior": torch.tensor([1.0, 0.0, 1.0])}, ValueError, "prior_cov must hold positive"),
    ({"prior": torch.tensor([1.0, -2.0, 1.0])}, ValueError, "prior_cov must hold positive"),
    ({"prior": torch.tensor([1.0, math.nan, 1.0])}, ValueError, "prior_cov must be finite"),
    ({"prior": torch.eye(2, dtype=F64)}, ValueError, r"prior_cov must be \(kappa,\)"),
    ({"prior": 1.0}, ValueError, r"prior_cov must be \(kappa,\)"),
    ({"prior": NOT_SYMMETRIC}, ValueError, "prior_cov must be symmetric"),
    ({"prior": NOT_PD}, ValueError, "prior_cov must be positive definite"),
    ({"prior": "I"}, TypeError, "prior_cov must be a tensor"),
    ({"gamma": 0.0}, ValueError, "gamma must be > 0"),
    ({"gamma": -1.0}, ValueError, "gamma must be > 0"),
    ({"gamma": math.nan}, ValueError, "gamma must be finite"),
    ({"gamma": math.inf}, ValueError, "gamma must be finite"),
    ({"gamma": "0.1"}, TypeError, "gamma must be a number"),
    ({"gamma": None}, TypeError, "gamma must be a number"),
]


@pytest.mark.parametrize(("name", "func"), _kernel_cases())
@pytest.mark.parametrize(("change", "error", "match"), SHARED_BAD)
def test_kernels_reject_bad_j_prior_and_gamma(name, func, change, error, match):
    args = {"J": J0, "prior": P0, "gamma": 0.1, **change}
    with pytest.raises(error, match="^" + match):
        func(args["J"], args["prior"], args["gamma"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"cov": torch.eye(2, dtype=F64)}, ValueError, r"cov must be \(\.\.\., 3, 3\)"),
        ({"cov": torch.ones(3, dtype=F64)}, ValueError, r"cov must be \(\.\.\., 3, 3\)"),
        ({"cov": NOT_PD}, ValueError, "cov must be positive definite"),
        ({"cov": torch.full((3, 3), math.nan)}, ValueError, "cov must be finite"),
        ({"cov": None}, TypeError, "cov must be a tensor"),
        (
            {"mean_offset": torch.ones(4, dtype=F64)},
            ValueError,
            r"mean_offset must be \(\.\.\., 3\)",
        ),
        ({"mean_offset": torch.full((3,), math.inf)}, ValueError, "mean_offset must be finite"),
        ({"mean_offset": "zero"}, TypeError, "mean_offset must be a tensor"),
        pytest.param(
            {"mean_offset": 0.0},
            ValueError,
            "mean_offset",
        ),
        pytest.param(
            {"cov": NOT_SYMMETRIC},
            ValueError,
            "cov must be symmetric",
        ),
    ],
)
def test_local_cost_rejects_bad_cov_and_mean_offset(kwargs, error, match):
    args = {"cov": EYE3, "mean_offset": None, **kwargs}
    with pytest.raises(error, match="^" + match):
        local_cost(args["cov"], J0, P0, 0.1, mean_offset=args["mean_offset"])


@pytest.mark.parametrize(
    ("J", "prior_var", "gamma", "error", "match"),
    [
        (torch.ones(3), P0, 0.1, ValueError, r"J must be \(\.\.\., d, kappa\)"),
        (torch.full((5, 3), math.nan), P0, 0.1, ValueError, "J must be finite"),
        ("J", P0, 0.1, TypeError, "J must be a tensor"),
        (J0, torch.tensor([1.0, 0.0, 1.0]), 0.1, ValueError, "prior_var must hold positive"),
        (J0, -1.0, 0.1, ValueError, "prior_var must hold positive"),
        (J0, torch.ones(4), 0.1, ValueError, r"prior_var of shape \(4,\) does not broadcast"),
        (J0, torch.ones(2, 2), 0.1, ValueError, "prior_var of shape"),
        (torch.ones(3, 5, 3), torch.ones(2, 3), 0.1, ValueError, "prior_var of shape"),
        (J0, torch.tensor([1.0, math.nan, 1.0]), 0.1, ValueError, "prior_var must be finite"),
        (J0, None, 0.1, TypeError, "prior_var must be a tensor"),
        (J0, P0, 0.0, ValueError, "gamma must be > 0"),
        (J0, P0, math.inf, ValueError, "gamma must be finite"),
        (J0, P0, "1", TypeError, "gamma must be a number"),
    ],
)
def test_optimal_posterior_variances_rejects_bad_input(J, prior_var, gamma, error, match):
    with pytest.raises(error, match="^" + match):
        optimal_posterior_variances(J, prior_var, gamma)


# -- decoder_jacobian ---------------------------------------------------------------------------


def test_decoder_jacobian_of_bent_line_and_of_an_mlp(gen):
    u = randn(gen, 9, 1)
    jac = decoder_jacobian(bent_line, u)
    assert jac.shape == (9, 2, 1)
    expected = torch.stack(
        [torch.ones(9, dtype=F64), 0.5 * math.pi * torch.cos(math.pi * u[:, 0])], 1
    )
    torch.testing.assert_close(jac[:, :, 0], expected, rtol=1e-14, atol=1e-15)
    # An MLP: row by row, torch.autograd.functional.jacobian of one example.
    with seeded(0):
        net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4)).double()
    z = randn(gen, 5, 3)
    jac = decoder_jacobian(net, z)
    assert jac.shape == (5, 4, 3) and not jac.requires_grad
    for i in range(5):
        torch.testing.assert_close(jac[i], torch.autograd.functional.jacobian(net, z[i]))
    # An ignored latent coordinate gives a zero column (not an error).
    jac = decoder_jacobian(lambda v: torch.stack([v[:, 0] ** 2, 3 * v[:, 0]], 1), z[:, :2])
    assert bool((jac[:, :, 1] == 0).all())
    torch.testing.assert_close(jac[:, 0, 0], 2 * z[:, 0])
    # A decoder that ignores z altogether (no tangent at all) has a zero Jacobian.
    jac = decoder_jacobian(lambda v: torch.ones(v.shape[0], 2, dtype=F64), z)
    assert jac.shape == (5, 2, 3) and bool((jac == 0).all())


def test_decoder_jacobian_silences_only_torchs_deprecation_of_jit_script():
    """torch's forward AD loads its decompositions through torch.jit.script on first use in a
    process, which emits this DeprecationWarning: decoder_jacobian hides it, and nothing else."""
    torch_message = (
        "`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`."
    )

    def decoder(v, category=DeprecationWarning, message=torch_message):
        warnings.warn(message, category, stacklevel=1)
        return bent_line(v)

    u = torch.zeros(3, 1, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that escapes fails the test
        jac = decoder_jacobian(decoder, u)
    torch.testing.assert_close(jac, decoder_jacobian(bent_line, u), rtol=0, atol=0)
    # A warning of the decoder's own reaches the caller, even one that mentions torch.jit.script.
    own = "decoder: torch.jit.script failed, running eagerly"
    with pytest.warns(UserWarning, match="^decoder: torch.jit.script failed"):
        decoder_jacobian(lambda v: decoder(v, UserWarning, own), u)


@pytest.mark.parametrize(
    ("decoder", "z", "error", "match"),
    [
        ("f", torch.zeros(3, 1), TypeError, r"decoder must be callable, got str$"),
        (bent_line, torch.zeros(3), ValueError, r"z must be \(n, r\), got \(3,\)$"),
        (bent_line, torch.full((3, 1), math.nan), ValueError, "z must be finite"),
        (
            lambda z: z.sum(),
            torch.zeros(3, 1),
            ValueError,
            r"decoder must map \(n, r\) to \(n, d\), got \(\)$",
        ),
        (  # two-dimensional, but not one output row per input row
            lambda z: z[:2],
            torch.zeros(3, 1),
            ValueError,
            r"decoder must map \(n, r\) to \(n, d\), got \(2, 1\)$",
        ),
    ],
)
def test_decoder_jacobian_rejects_bad_input_naming_the_argument(decoder, z, error, match):
    with pytest.raises(error, match="^" + match):
        decoder_jacobian(decoder, z)
