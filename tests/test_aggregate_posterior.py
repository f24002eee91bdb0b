"""Tests of vaebook.aggregate_posterior (Mathieu et al., 2019): the aggregate posterior's
density, the divergences to the prior and the Appendix C entropy estimators, against scipy,
brute force and closed forms."""

import math

import numpy as np
import pytest
import torch
from helpers import assert_within_5_se, encoder_members, randn
from scipy import stats

from vaebook.aggregate_posterior import (
    MMD_SCALES,
    aggregate_entropy_reference,
    inclusive_kl_aggregate,
    log_aggregate_posterior,
    minibatch_log_aggregate_density,
    minibatch_weighted_entropy,
    mmd_imq,
    mmd_imq_per_coordinate,
    sample_aggregate_posterior,
    sample_gaussian_fit,
)
from vaebook.gaussian import (
    entropy_diag_normal,
    kl_diag_normal,
    log_normal_diag,
)
from vaebook.priors import (
    gaussian_mixture_2d,
    isotropic_gaussian,
    spike_and_slab,
)

F64 = torch.float64


# --- divergences ---------------------------------------------------------------------------


def test_mmd_imq_matches_brute_force(gen):
    x, y = randn(gen, 5, 3), randn(gen, 4, 3) + 0.5
    scales = (0.5, 2.0)

    def k(a, b):
        return sum(6 * s / (6 * s + ((a - b) ** 2).sum().item()) for s in scales)

    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(4)) / 20
    assert abs(mmd_imq(x, y, scales=scales).item() - (xx + yy - 2 * xy)) < 1e-12
    assert len(MMD_SCALES) == 7


def test_mmd_imq_per_coordinate_matches_a_brute_force_double_sum(gen):
    x, y = randn(gen, 5, 3), 2 * randn(gen, 4, 3) + 0.5
    scales = (0.5, 2.0)

    def k(a, b):  # 1-D inverse multiquadratics, C = 2 s
        return sum(2 * s / (2 * s + (a - b) ** 2) for s in scales)

    total = 0.0
    for j in range(3):
        a, b = x[:, j].tolist(), y[:, j].tolist()
        xx = sum(k(a[i], a[i2]) for i in range(5) for i2 in range(5) if i != i2) / 20
        yy = sum(k(b[i], b[i2]) for i in range(4) for i2 in range(4) if i != i2) / 12
        xy = sum(k(a[i], b[i2]) for i in range(5) for i2 in range(4)) / 20
        total += xx + yy - 2 * xy
    assert abs(mmd_imq_per_coordinate(x, y, scales=scales).item() - total) < 1e-12
    # the default scales are MMD_SCALES
    assert (
        mmd_imq_per_coordinate(x, y).item()
        == mmd_imq_per_coordinate(x, y, scales=MMD_SCALES).item()
    )


def test_mmd_imq_per_coordinate_batches_and_equals_the_joint_mmd_in_one_dimension(gen):
    x, y = randn(gen, 3, 6, 2), randn(gen, 7, 2)  # three sample sets against shared draws
    batched = mmd_imq_per_coordinate(x, y)
    assert batched.shape == (3,)
    for m in range(3):
        assert abs(batched[m].item() - mmd_imq_per_coordinate(x[m], y).item()) < 1e-12
    a, b = randn(gen, 6, 1), randn(gen, 5, 1) + 1
    assert abs(mmd_imq_per_coordinate(a, b).item() - mmd_imq(a, b).item()) < 1e-12


def test_mmd_imq_per_coordinate_sees_sparsity_that_the_joint_mmd_barely_sees():
    # spike-and-slab (gamma = 0.8: 80 % of each coordinate near 0, unit variance overall)
    # against a Gaussian of the same variance, 16 coordinates, batches of 128
    gen = torch.Generator().manual_seed(0)
    prior = spike_and_slab(16, 0.8)
    joint, per_coord = [], []
    for _ in range(20):
        z_sparse = prior.sample(128, gen, dtype=F64)
        z_dense = z_sparse.std() * torch.randn(128, 16, generator=gen, dtype=F64)
        joint.append(mmd_imq(z_dense, z_sparse).item())
        per_coord.append(mmd_imq_per_coordinate(z_dense, z_sparse).item())
    joint, per_coord = np.array(joint), np.array(per_coord)
    # per coordinate the difference stands about 13 batch standard deviations clear of 0,
    # jointly about 3: the signal-to-noise ratio is several times higher
    assert per_coord.mean() > 10 * per_coord.std()
    assert per_coord.mean() / per_coord.std() > 3 * joint.mean() / joint.std()


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (torch.zeros(4), torch.zeros(4, 1), r"^x and y must be \(\.\.\., m, d\) and"),
        (torch.zeros(4, 2), torch.zeros(4, 3), r"^x and y must be .* the same d, got \(4, 2\)"),
        (torch.zeros(1, 2), torch.zeros(4, 2), r"^x must be \(m, d\) with m >= 2"),
        (torch.zeros(4, 2), torch.zeros(4, 2) * float("nan"), r"^y must be finite"),
    ],
)
def test_mmd_imq_per_coordinate_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        mmd_imq_per_coordinate(x, y)
    with pytest.raises(ValueError, match=r"^scales must be > 0"):
        mmd_imq_per_coordinate(torch.zeros(4, 2), torch.ones(4, 2), scales=(1.0, 0.0))


def test_mmd_is_unbiased_zero_for_equal_laws_and_positive_for_shifted(gen):
    same, shifted = [], []
    for _ in range(200):
        x, y = randn(gen, 40, 2), randn(gen, 40, 2)
        same.append(mmd_imq(x, y).item())
        shifted.append(mmd_imq(x, y + torch.tensor([1.0, 0.0], dtype=F64)).item())
    same, shifted = torch.tensor(same), torch.tensor(shifted)
    se = same.std() / math.sqrt(200)
    assert abs(same.mean().item()) < 4 * se.item()
    assert bool((same < 0).any())  # a U-statistic, not clipped at zero
    assert shifted.mean().item() > 20 * (shifted.std() / math.sqrt(200)).item()
    assert shifted.mean().item() > 5 * same.std().item()


def test_inclusive_kl_is_zero_when_the_aggregate_posterior_is_the_prior(gen):
    prior = gaussian_mixture_2d()
    mu = prior.means.clone()
    logvar = torch.full((4, 2), math.log(0.03), dtype=F64)
    zp = prior.sample(500, gen, dtype=F64)
    assert abs(inclusive_kl_aggregate(zp, mu, logvar, prior).item()) < 1e-12
    assert inclusive_kl_aggregate(zp, 0.8 * mu, logvar, prior).item() > 0.3


def test_inclusive_kl_matches_closed_form_for_a_gaussian(gen):
    prior = isotropic_gaussian(2)
    m, lv = torch.tensor([[0.5, -0.3]], dtype=F64), torch.tensor([[0.4, -0.2]], dtype=F64)
    zp = prior.sample(20_000, gen, dtype=F64)
    per_sample = prior.log_prob(zp) - log_normal_diag(zp, m, lv)
    est = inclusive_kl_aggregate(zp, m, lv, prior)
    torch.testing.assert_close(est, per_sample.mean())
    assert_within_5_se(
        per_sample,
        kl_diag_normal(torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64), m[0], lv[0]),
    )


# --- Appendix C: minibatch entropy ---------------------------------------------------------


def _dataset_encoders(gen, n=2000, sigma=0.002):
    mu = randn(gen, n, 1)
    return mu, torch.full((n, 1), 2 * math.log(sigma), dtype=F64)


def test_stratified_estimator_at_full_batch_is_the_exact_mixture_estimate(gen):
    mu, logvar = randn(gen, 50, 2), randn(gen, 50, 2) - 1
    z = mu + torch.exp(0.5 * logvar) * randn(gen, 50, 2)
    log_q = torch.logsumexp(log_normal_diag(z.unsqueeze(1), mu, logvar), 1) - math.log(50)
    strat = minibatch_weighted_entropy(z, mu, logvar, 50)
    torch.testing.assert_close(strat, -log_q.mean(), rtol=1e-12, atol=1e-12)
    mws = minibatch_weighted_entropy(z, mu, logvar, 50, weighting="mws")
    torch.testing.assert_close(mws, strat + math.log(50), rtol=1e-12, atol=1e-12)


def test_stratified_q_hat_is_unbiased_for_the_mixture_density(gen):
    # Over minibatches containing x_0, E[q̂(z_0)] = q(z_0) = (1/N) Σ_m q(z_0|x_m) (eq. 10b).
    n, b, repeats = 12, 4, 5_000
    mu, logvar = randn(gen, n, 2), randn(gen, n, 2)
    z0 = mu[0] + torch.exp(0.5 * logvar[0]) * randn(gen, 2)
    exact = torch.exp(log_normal_diag(z0, mu, logvar)).mean()
    others = 1 + torch.rand(repeats, n - 1, generator=gen).argsort(1)[:, : b - 1]
    idx = torch.cat([torch.zeros(repeats, 1, dtype=torch.long), others], 1)  # (repeats, B)
    q_hat = torch.stack(
        [minibatch_log_aggregate_density(mu[i] * 0 + z0, mu[i], logvar[i], n)[0].exp() for i in idx]
    )  # only z_0 = z[0] matters for q̂(z_0)
    assert_within_5_se(q_hat, exact)
    mws = torch.stack(
        [
            minibatch_log_aggregate_density(mu[i] * 0 + z0, mu[i], logvar[i], n, weighting="mws")[0]
            for i in idx[:2000]
        ]
    ).exp()
    assert mws.mean().item() < 0.5 * exact.item()  # MWS is not an unbiased density estimate


def test_appendix_c_small_batches_estimate_log_n_plus_conditional_entropy(gen):
    n = 2000
    mu, logvar = _dataset_encoders(gen, n)
    sigma = math.exp(0.5 * logvar[0, 0].item())
    reference = aggregate_entropy_reference(mu, logvar, 4000, gen)
    log_n_plus_h = math.log(n) + entropy_diag_normal(logvar).mean().item()

    def mean_estimate(b, repeats=300):
        values = []
        for _ in range(repeats):
            idx = torch.randperm(n, generator=gen)[:b]
            z = mu[idx] + sigma * randn(gen, b, 1)
            values.append(minibatch_weighted_entropy(z, mu[idx], logvar[idx], n).item())
        return torch.tensor(values).mean().item()

    small, medium = mean_estimate(8), mean_estimate(128)
    z_all = mu + sigma * randn(gen, n, 1)
    full = minibatch_weighted_entropy(z_all, mu, logvar, n).item()
    # B ≪ N: close to log N + E H[q(z|x)] (2.81 nats), far above H[q(z)] (≈ 1.19 nats) ...
    assert abs(small - log_n_plus_h) < 0.25, (small, log_n_plus_h)
    assert small - reference.estimate.item() > 1.0
    # ... the bias shrinks as B grows, and at B = N the estimate agrees with the reference.
    assert reference.estimate.item() + 0.2 < medium < small
    assert abs(full - reference.estimate.item()) < 0.06
    assert reference.standard_error.item() < 0.015


# --- ensembles -----------------------------------------------------------------------------


def test_batched_inclusive_kl_and_mmd_equal_loops_over_members_with_shared_prior_draws(gen):
    _, z, mu, logvar = encoder_members(gen)
    prior = gaussian_mixture_2d()
    zp = prior.sample(40, gen, dtype=F64)
    batched = inclusive_kl_aggregate(zp, mu, logvar, prior)
    loop = torch.stack([inclusive_kl_aggregate(zp, mu[m], logvar[m], prior) for m in range(3)])
    assert batched.shape == (3,)
    torch.testing.assert_close(batched, loop, rtol=1e-12, atol=1e-12)
    assert loop.std().item() > 1e-3  # the members really differ
    y = randn(gen, 7, 2)
    for scales in (MMD_SCALES, (0.5, 3.0)):
        batched = mmd_imq(z, y, scales=scales)
        loop = torch.stack([mmd_imq(z[m], y, scales=scales) for m in range(3)])
        assert batched.shape == (3,)
        torch.testing.assert_close(batched, loop, rtol=1e-12, atol=1e-12)
        assert loop.std().item() > 1e-6


# --- log_aggregate_posterior and StructuredVAE edge cases ------------------------------------


def test_log_aggregate_posterior_is_the_log_of_the_mixture_density(gen):
    mu, logvar, z = randn(gen, 6, 2), randn(gen, 6, 2) - 1, randn(gen, 7, 2)
    density = np.zeros(7)
    for m, v in zip(mu.numpy(), logvar.exp().numpy(), strict=True):
        density += stats.multivariate_normal(m, np.diag(v)).pdf(z.numpy()) / 6
    np.testing.assert_allclose(log_aggregate_posterior(z, mu, logvar).numpy(), np.log(density))
    batched = log_aggregate_posterior(z, torch.stack([mu, mu + 1]), torch.stack([logvar] * 2))
    assert batched.shape == (2, 7)
    torch.testing.assert_close(batched[1], log_aggregate_posterior(z, mu + 1, logvar))
    with pytest.raises(ValueError, match=r"^z"):
        log_aggregate_posterior(torch.zeros(7, 3), mu, logvar)
    with pytest.raises(ValueError, match=r"^mu and logvar must both be"):
        log_aggregate_posterior(z, mu, logvar[:3])


# --- bad input -----------------------------------------------------------------------------


def _bad_calls():
    z, mu, lv = torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4, 2)
    p = isotropic_gaussian(2)
    return [
        (lambda: mmd_imq(z, torch.zeros(1, 2)), ValueError, "y"),
        (lambda: mmd_imq(z, torch.zeros(3, 3)), ValueError, "y"),
        (lambda: mmd_imq(z, z, scales=(1.0, -1.0)), ValueError, "scales"),
        (lambda: inclusive_kl_aggregate(torch.zeros(5, 3), mu, lv, p), ValueError, "prior_samples"),
        (lambda: minibatch_weighted_entropy(z, mu, lv, 3), ValueError, "dataset_size"),
        (lambda: minibatch_weighted_entropy(z, mu, lv, 10, weighting="x"), ValueError, "weighting"),
        (lambda: minibatch_weighted_entropy(z[:1], mu[:1], lv[:1], 10), ValueError, "2"),
        (lambda: aggregate_entropy_reference(mu, lv, 1), ValueError, "n_samples"),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_bad_input_names_the_argument(index):
    call, error, name = _bad_calls()[index]
    with pytest.raises(error, match=rf"\b{name}\b"):
        call()


def _nan_like(t):
    return t * float("nan")


def _non_finite_calls():
    z, mu, lv = torch.zeros(4, 2, dtype=F64), torch.zeros(4, 2, dtype=F64), torch.zeros(4, 2)
    p, nan = isotropic_gaussian(2), _nan_like
    return [
        (lambda: inclusive_kl_aggregate(nan(z), mu, lv, p), "prior_samples"),
        (lambda: log_aggregate_posterior(z, nan(mu), lv), "mu"),
        (lambda: log_aggregate_posterior(z, mu, nan(lv)), "logvar"),
        (lambda: log_aggregate_posterior(nan(z), mu, lv), "z"),
        (lambda: minibatch_log_aggregate_density(z, nan(mu), lv, 10), "mu"),
        (lambda: minibatch_log_aggregate_density(z, mu, nan(lv), 10), "logvar"),
        (lambda: minibatch_log_aggregate_density(nan(z), mu, lv, 10), "z"),
        (lambda: aggregate_entropy_reference(nan(mu), lv, 10), "mu"),
        (lambda: aggregate_entropy_reference(mu, nan(lv), 10), "logvar"),
        (lambda: mmd_imq(nan(z), mu), "x"),
        (lambda: mmd_imq(z, nan(mu)), "y"),
        (lambda: mmd_imq_per_coordinate(nan(z), mu), "x"),
    ]


@pytest.mark.parametrize("index", range(len(_non_finite_calls())))
def test_non_finite_input_is_reported_under_its_own_name(index):
    call, name = _non_finite_calls()[index]
    with pytest.raises(ValueError, match=rf"^{name} must be finite"):
        call()


def test_list_arguments_take_the_dtype_of_mu_or_x(gen):
    # Python floats become float64 like mu (x), not the float32 default dtype: same values to
    # 1e-12 as float64 tensors (0.1-style values are not float32-representable).
    mu, logvar, z = randn(gen, 4, 2), randn(gen, 4, 2) - 1, randn(gen, 4, 2)
    prior = isotropic_gaussian(2)

    def same(a, b):
        assert a.dtype == F64
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)

    same(
        inclusive_kl_aggregate(z.tolist(), mu, logvar, prior),
        inclusive_kl_aggregate(z, mu, logvar, prior),
    )
    same(log_aggregate_posterior(z.tolist(), mu, logvar), log_aggregate_posterior(z, mu, logvar))
    same(log_aggregate_posterior(z, mu, logvar.tolist()), log_aggregate_posterior(z, mu, logvar))
    for w in ("stratified", "mws"):
        expected = minibatch_log_aggregate_density(z, mu, logvar, 9, weighting=w)
        same(minibatch_log_aggregate_density(z.tolist(), mu, logvar, 9, weighting=w), expected)
        same(minibatch_log_aggregate_density(z, mu, logvar.tolist(), 9, weighting=w), expected)
    same(mmd_imq(z, mu.tolist()), mmd_imq(z, mu))
    same(mmd_imq_per_coordinate(z, mu.tolist()), mmd_imq_per_coordinate(z, mu))
    ref = aggregate_entropy_reference(mu, logvar.tolist(), 20, torch.Generator().manual_seed(3))
    expected = aggregate_entropy_reference(mu, logvar, 20, torch.Generator().manual_seed(3))
    same(ref.estimate, expected.estimate)
    same(ref.standard_error, expected.standard_error)


def test_shape_errors_report_the_expected_and_actual_shapes():
    mu = torch.zeros(2, 5, 3, dtype=F64)  # two models, B = 5, d = 3
    with pytest.raises(
        ValueError, match=r"^prior_samples must be \(M, 3\) with M >= 2, got \(1, 3\)$"
    ):
        inclusive_kl_aggregate(torch.zeros(1, 3), mu, mu, isotropic_gaussian(3))
    with pytest.raises(ValueError, match=r"^z must be \(P, 3\), got \(7, 2\)$"):
        log_aggregate_posterior(torch.zeros(7, 2), mu, mu)
    z, lv = torch.zeros(4, 2), torch.zeros(4, 2)
    with pytest.raises(
        ValueError, match=r"^mu and logvar must both be \(N, d\), got \(4, 2\) and \(3, 2\)$"
    ):
        aggregate_entropy_reference(z, lv[:3], 10)
    with pytest.raises(
        ValueError,
        match=r"^z, mu and logvar must all be \(B, d\), got \(4, 2\), \(4, 2\) and \(3, 2\)$",
    ):
        minibatch_log_aggregate_density(z, z, lv[:3], 10)
    t = torch.zeros(2, 3, 2)
    with pytest.raises(
        ValueError, match=r"^z, mu and logvar must all be \(B, d\), got \(2, 3, 2\), "
    ):
        minibatch_log_aggregate_density(t, t, t, 10)
    with pytest.raises(ValueError, match=r"^y has dimension 3 but x has 2$"):
        mmd_imq(torch.randn(3, 4, 2), torch.randn(1, 5, 3))
    with pytest.raises(ValueError, match=r"^x and y must be \(\.\.\., m, d\) and"):
        mmd_imq_per_coordinate(torch.zeros(3), torch.zeros(4, 3))


def test_integer_and_generator_arguments_are_checked_by_name():
    z, lv = torch.zeros(4, 2), torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"^n_samples must be > 0"):
        aggregate_entropy_reference(z, lv, 0)
    with pytest.raises(ValueError, match=r"^chunk_size must be > 0"):
        aggregate_entropy_reference(z, lv, 10, chunk_size=0)
    with pytest.raises(TypeError, match=r"^generator must be a torch\.Generator, got int$"):
        aggregate_entropy_reference(z, lv, 10, 0)
    with pytest.raises(ValueError, match=r"^dataset_size must be > 0"):
        minibatch_log_aggregate_density(z, z, lv, 0)
    with pytest.raises(
        ValueError, match=r"^z: the stratified estimator needs a batch of at least 2 examples$"
    ):
        minibatch_log_aggregate_density(z[:1], z[:1], lv[:1], 10)


@pytest.mark.parametrize("scales", [(), 5, "ab", None])
def test_mmd_scales_must_be_a_non_empty_sequence(scales):
    x = torch.randn(4, 2)
    with pytest.raises(
        TypeError, match=r"^scales must be a non-empty sequence of positive numbers$"
    ):
        mmd_imq(x, x + 1, scales=scales)


def test_mmd_imq_with_two_samples_each_and_one_scale_matches_brute_force(gen):
    # the smallest admissible samples (m = n = 2); a single scale s = 0.5, so C = 2 d s = 2
    x, y = randn(gen, 2, 2), randn(gen, 2, 2) + 1

    def k(a, b):
        return 2.0 / (2.0 + ((a - b) ** 2).sum().item())

    expected = k(x[0], x[1]) + k(y[0], y[1]) - sum(k(a, b) for a in x for b in y) / 2
    assert abs(mmd_imq(x, y, scales=[0.5]).item() - expected) < 1e-12


def test_mmd_imq_per_coordinate_batches_y_against_a_shared_x(gen):
    x, y = randn(gen, 5, 2), randn(gen, 3, 6, 2) + 0.5  # one sample set against three
    batched = mmd_imq_per_coordinate(x, y)
    assert batched.shape == (3,)
    for m in range(3):
        assert abs(batched[m].item() - mmd_imq_per_coordinate(x, y[m]).item()) < 1e-12


def test_stratified_density_of_a_batch_of_two_matches_eq_10b(gen):
    n, mu, logvar = 5, randn(gen, 2, 3), randn(gen, 2, 3) - 1
    z = randn(gen, 2, 3)

    def q(zb, i):
        return stats.multivariate_normal(mu[i].numpy(), np.diag(logvar[i].exp().numpy())).pdf(zb)

    expected = [math.log(q(z[b], b) / n + (n - 1) / n * q(z[b], 1 - b)) for b in range(2)]
    got = minibatch_log_aggregate_density(z, mu, logvar, n)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_aggregate_entropy_reference_of_identical_components_is_the_gaussian_entropy():
    # N = 3 copies of one diagonal Gaussian in d = 2: q(z) is that Gaussian
    mu = torch.tensor([[0.3, -0.2]] * 3, dtype=F64)
    logvar = torch.tensor([[0.4, -1.0]] * 3, dtype=F64)
    est, se = aggregate_entropy_reference(mu, logvar, 4000, torch.Generator().manual_seed(0))
    exact = entropy_diag_normal(logvar[0]).item()
    assert abs(est.item() - exact) < 5 * se.item()
    assert 0 < se.item() < 0.05


def test_aggregate_entropy_reference_draws_from_its_generator_only(gen):
    mu, logvar = randn(gen, 5, 2), randn(gen, 5, 2) - 1
    first = aggregate_entropy_reference(mu, logvar, 50, torch.Generator().manual_seed(1))
    torch.rand(10)  # moving the global RNG changes nothing for a seeded generator
    second = aggregate_entropy_reference(mu, logvar, 50, torch.Generator().manual_seed(1))
    assert first.estimate.item() == second.estimate.item()
    assert first.standard_error.item() == second.standard_error.item()
    other = aggregate_entropy_reference(mu, logvar, 50, torch.Generator().manual_seed(2))
    assert other.estimate.item() != first.estimate.item()
    unseeded = aggregate_entropy_reference(mu, logvar, 50)  # generator=None: the global RNG
    assert math.isfinite(unseeded.estimate.item())


def test_aggregate_entropy_reference_draws_at_float64_resolution():
    # One standard normal component and n_samples = 2 (the minimum): -log q(z) = log(2π)/2 + a
    # with a = z²/2, so the mean and standard error give back both |z|. Float64 draws are not
    # float32-representable (float32 spacing near 1 is ~1e-7).
    zeros = torch.zeros(1, 1, dtype=F64)
    est, se = aggregate_entropy_reference(zeros, zeros, 2, torch.Generator().manual_seed(0))
    mean_a = est.item() - 0.5 * math.log(2 * math.pi)
    for a in (mean_a + se.item(), mean_a - se.item()):
        z = math.sqrt(2 * a)
        assert abs(float(np.float32(z)) - z) > 1e-12, z


def test_inclusive_kl_with_two_prior_draws_in_one_dimension_matches_scipy(gen):
    # the smallest admissible prior sample (M = 2) of a 1-D prior
    zp, mu, logvar = randn(gen, 2, 1), randn(gen, 3, 1), randn(gen, 3, 1) - 1
    sd = np.exp(0.5 * logvar.numpy()[:, 0])
    expected = np.mean(
        [
            stats.norm.logpdf(z) - np.log(stats.norm.pdf(z, mu.numpy()[:, 0], sd).mean())
            for z in zp.numpy()[:, 0]
        ]
    )
    got = inclusive_kl_aggregate(zp, mu, logvar, isotropic_gaussian(1)).item()
    assert abs(got - expected) < 1e-12


# --- samples of the aggregate posterior and of its Gaussian fit ---------------------------


def test_aggregate_posterior_samples_follow_the_mixture():
    # Three encodings: two narrow ones at -4 and +4 and a wide one at 0 (d = 1, two models
    # stacked, the second a mirror image of the first).
    mu = torch.tensor([[-4.0], [4.0], [0.0]], dtype=torch.float64)
    logvar = torch.log(torch.tensor([[0.01], [0.01], [4.0]], dtype=torch.float64))
    z = sample_aggregate_posterior(
        torch.stack([mu, -mu]),
        torch.stack([logvar, logvar]),
        30_000,
        generator=torch.Generator().manual_seed(0),
    )
    assert z.shape == (2, 30_000, 1)
    # Draw j of both models comes from the same example: the mirror image, up to the noise.
    near = (z[0, :, 0] - (-z[1, :, 0])).abs() < 1.0
    assert near[(z[0, :, 0] + 4).abs() < 0.5].float().mean() > 0.95

    # The mixture's CDF (each component with weight 1/3) fits the draws of model 0.
    def mixture_cdf(t):
        return (
            sum(
                stats.norm.cdf(t, m, math.exp(0.5 * lv))
                for m, lv in zip([-4, 4, 0], logvar[:, 0], strict=True)
            )
            / 3
        )

    assert stats.kstest(z[0, :, 0].numpy(), mixture_cdf).pvalue > 1e-3
    # ... and one that ignores the narrow encodings does not.
    assert stats.kstest(z[0, :, 0].numpy(), stats.norm(0, 2).cdf).pvalue < 1e-6


def test_gaussian_fit_samples_have_the_moments_of_the_data_and_nothing_else():
    gen = torch.Generator().manual_seed(1)
    # Bimodal, correlated latents: modes at +-(1, 1), small spread, N = 4000 rows.
    signs = torch.randint(0, 2, (4000, 1), generator=gen).double() * 2 - 1
    z = signs * torch.tensor([1.0, 1.0], dtype=torch.float64)
    z = z + 0.2 * torch.randn(4000, 2, generator=gen, dtype=torch.float64)
    draws = sample_gaussian_fit(z, 50_000, generator=gen)
    assert draws.shape == (50_000, 2)
    torch.testing.assert_close(draws.mean(0), z.mean(0), atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), torch.cov(z.T), atol=0.03, rtol=0)
    # The data are bimodal along (1, 1) (kurtosis far below 3); the fit's draws are Gaussian.
    along = (draws @ torch.tensor([1.0, 1.0], dtype=torch.float64)).numpy()
    assert abs(stats.kurtosis(along, fisher=False) - 3) < 0.1
    assert stats.kurtosis((z @ torch.ones(2, dtype=torch.float64)).numpy(), fisher=False) < 1.5
    # Leading axes are separate fits: a shifted copy gives shifted draws.
    both = sample_gaussian_fit(torch.stack([z, z + 10]), 20_000, generator=gen)
    assert both.shape == (2, 20_000, 2)
    torch.testing.assert_close(
        both[1].mean(0) - both[0].mean(0),
        torch.full((2,), 10.0, dtype=torch.float64),
        atol=0.05,
        rtol=0,
    )


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: sample_aggregate_posterior(torch.zeros(3), torch.zeros(3), 5),
            ValueError,
            "mu and logvar must both be",
        ),
        (
            lambda: sample_aggregate_posterior(torch.zeros(3, 2), torch.zeros(3, 1), 5),
            ValueError,
            "mu and logvar must both be",
        ),
        (
            lambda: sample_aggregate_posterior(torch.zeros(3, 2), torch.zeros(3, 2), 0),
            ValueError,
            "n must be > 0",
        ),
        (lambda: sample_gaussian_fit(torch.zeros(2, 2), 5), ValueError, "N > d samples"),
        (lambda: sample_gaussian_fit(torch.zeros(5), 5), ValueError, "N > d samples"),
        (lambda: sample_gaussian_fit(torch.randn(10, 2), 1.5), TypeError, "n must be"),
        (lambda: sample_gaussian_fit(torch.ones(10, 2), 3), ValueError, "cov"),
    ],
)
def test_bad_sample_arguments_raise_naming_them(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_sample_functions_are_reproducible_with_a_seeded_generator_and_keep_dtype():
    mu = torch.randn(7, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    logvar = [[-1.0, 0.0, 0.5]] * 7  # a nested list takes mu's dtype
    first, second = (
        sample_aggregate_posterior(mu, logvar, 40, generator=torch.Generator().manual_seed(5))
        for _ in range(2)
    )
    assert first.dtype == torch.float64 and torch.equal(first, second)
    z = torch.randn(30, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    fit_a, fit_b = (
        sample_gaussian_fit(z, 40, generator=torch.Generator().manual_seed(6)) for _ in range(2)
    )
    assert torch.equal(fit_a, fit_b)
    # another seed gives other draws
    other = sample_gaussian_fit(z, 40, generator=torch.Generator().manual_seed(7))
    assert not torch.allclose(fit_a, other)


def test_gaussian_fit_uses_the_unbiased_covariance_of_few_samples():
    # Three values 0, 1, 2: mean 1, unbiased variance 1 (the biased one is 2/3).
    z = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    draws = sample_gaussian_fit(z, 200_000, generator=torch.Generator().manual_seed(0))
    assert abs(float(draws.var()) - 1.0) < 0.02
    assert abs(float(draws.mean()) - 1.0) < 0.01


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sample_aggregate_posterior("a", torch.zeros(3, 2), 5), "^mu must be a tensor"),
        (
            lambda: sample_aggregate_posterior(torch.zeros(3, 2), "a", 5),
            "^logvar must be a tensor",
        ),
        (lambda: sample_gaussian_fit("a", 5), "^z must be a tensor"),
    ],
)
def test_sample_functions_name_a_non_tensor_argument(call, match):
    with pytest.raises(TypeError, match=match):
        call()
