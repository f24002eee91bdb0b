"""Tests of vaebook.gaussian against torch.distributions, Monte Carlo and closed forms."""

import math

import pytest
import torch
from helpers import randn
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from vaebook.gaussian import (
    cholesky_factor,
    entropy_diag_normal,
    entropy_normal,
    kl_diag_normal,
    kl_normal,
    log_normal,
    log_normal_diag,
    sample_diag_normal,
    sample_normal,
)

F64 = torch.float64
N_MC = 40_000  # Monte Carlo sample size; tolerances are 5 standard errors


def assert_within_5_se(samples: torch.Tensor, expected: torch.Tensor) -> None:
    """Mean over the first axis of ``samples`` agrees with ``expected`` to 5 standard errors."""
    se = samples.std(0) / math.sqrt(samples.shape[0])
    assert bool(((samples.mean(0) - expected).abs() < 5 * se).all()), (samples.mean(0), expected)


def assert_moments(z: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> None:
    """Samples ``z`` ``(N, d)`` have mean ``mean`` and covariance ``cov`` (5 standard errors)."""
    assert_within_5_se(z, mean)
    centred = z - mean
    products = centred.unsqueeze(-1) * centred.unsqueeze(-2)  # (N, d, d): E = cov
    assert_within_5_se(products, cov)


# --- densities -----------------------------------------------------------------------------


def test_log_normal_diag_matches_torch_normal(gen):
    x, mu, logvar = randn(gen, 5, 3), randn(gen, 5, 3), randn(gen, 5, 3)
    expected = Normal(mu, torch.exp(0.5 * logvar)).log_prob(x).sum(-1)
    torch.testing.assert_close(log_normal_diag(x, mu, logvar), expected, rtol=1e-12, atol=1e-12)


def test_log_normal_diag_broadcasts_numbers_and_batches(gen):
    x = randn(gen, 4, 2, 3)
    expected = Normal(torch.tensor(0.5, dtype=F64), math.exp(-0.5)).log_prob(x).sum(-1)
    torch.testing.assert_close(log_normal_diag(x, 0.5, -1.0), expected, rtol=1e-12, atol=1e-12)
    mu = randn(gen, 2, 3)  # broadcasts over the leading axis of x
    expected = Normal(mu, 1.0).log_prob(x).sum(-1)
    torch.testing.assert_close(log_normal_diag(x, mu, 0.0), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cov_batch", [(), (5,)])
def test_log_normal_matches_torch_multivariate_normal(gen, make_spd, cov_batch):
    x, mu, cov = randn(gen, 5, 3), randn(gen, 3), make_spd(3, *cov_batch)
    expected = MultivariateNormal(mu, cov).log_prob(x)
    torch.testing.assert_close(log_normal(x, mu, cov), expected, rtol=1e-12, atol=1e-12)


def test_log_normal_with_diagonal_cov_equals_log_normal_diag(gen):
    x, mu, logvar = randn(gen, 6, 4), randn(gen, 6, 4), randn(gen, 4)
    full = log_normal(x, mu, torch.diag(torch.exp(logvar)))
    torch.testing.assert_close(full, log_normal_diag(x, mu, logvar), rtol=1e-12, atol=1e-12)


# --- entropies -----------------------------------------------------------------------------


def test_entropy_diag_normal_matches_torch_normal(gen):
    logvar = 3 * randn(gen, 4, 3)
    expected = Normal(0.0, torch.exp(0.5 * logvar)).entropy().sum(-1)
    torch.testing.assert_close(entropy_diag_normal(logvar), expected, rtol=1e-12, atol=1e-12)


def test_entropy_normal_matches_torch_and_the_diagonal_formula(gen, make_spd):
    cov = make_spd(3, 4)
    expected = MultivariateNormal(torch.zeros(3, dtype=F64), cov).entropy()
    torch.testing.assert_close(entropy_normal(cov), expected, rtol=1e-12, atol=1e-12)
    logvar = randn(gen, 3)
    torch.testing.assert_close(
        entropy_normal(torch.diag(torch.exp(logvar))), entropy_diag_normal(logvar)
    )


# --- KL divergences ------------------------------------------------------------------------


@pytest.mark.parametrize("prior", ["standard normal", "general"])
def test_kl_diag_normal_matches_torch_kl_divergence(gen, prior):
    mu_q, logvar_q = randn(gen, 5, 3), randn(gen, 5, 3)
    if prior == "standard normal":
        mu_p, logvar_p = torch.zeros(3, dtype=F64), torch.zeros(3, dtype=F64)
        kl = kl_diag_normal(mu_q, logvar_q)
    else:
        mu_p, logvar_p = randn(gen, 5, 3), randn(gen, 5, 3)
        kl = kl_diag_normal(mu_q, logvar_q, mu_p, logvar_p)
    q = Normal(mu_q, torch.exp(0.5 * logvar_q))
    p = Normal(mu_p, torch.exp(0.5 * logvar_p))
    torch.testing.assert_close(kl, kl_divergence(q, p).sum(-1), rtol=1e-12, atol=1e-12)


def test_kl_diag_normal_matches_monte_carlo(gen):
    mu_q, logvar_q = torch.tensor([0.3, -1.0], dtype=F64), torch.tensor([-0.5, 0.4], dtype=F64)
    mu_p, logvar_p = torch.tensor([0.0, 0.5], dtype=F64), torch.tensor([0.2, -0.3], dtype=F64)
    z = sample_diag_normal(mu_q, logvar_q, n_samples=N_MC, generator=gen)
    log_ratio = log_normal_diag(z, mu_q, logvar_q) - log_normal_diag(z, mu_p, logvar_p)
    assert_within_5_se(log_ratio, kl_diag_normal(mu_q, logvar_q, mu_p, logvar_p))


def test_kl_diag_normal_of_a_distribution_with_itself_is_zero(gen):
    mu, logvar = randn(gen, 4, 3), 10 * randn(gen, 4, 3)
    assert torch.equal(kl_diag_normal(mu, logvar, mu, logvar), torch.zeros(4, dtype=F64))


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_kl_diag_normal_is_accurate_for_log_variances_in_minus_30_to_30(dtype, rtol):
    grid = torch.linspace(-30, 30, 25, dtype=F64)  # steps of 2.5: exact in float32 too
    logvar_q, logvar_p = torch.meshgrid(grid, grid, indexing="ij")
    for dmu in (0.0, 1.0):
        kl = kl_diag_normal(
            torch.full((25, 25, 1), dmu, dtype=dtype),
            logvar_q.unsqueeze(-1).to(dtype),
            torch.zeros((), dtype=dtype),
            logvar_p.unsqueeze(-1).to(dtype),
        )
        r = logvar_q - logvar_p  # float64 closed form, no cancellation for |r| >= 2.5
        expected = 0.5 * (torch.exp(r) - 1 - r + dmu**2 * torch.exp(-logvar_p))
        assert bool(torch.isfinite(kl).all())
        assert bool((kl >= 0).all())
        torch.testing.assert_close(kl.to(F64), expected, rtol=rtol, atol=0.0)


@pytest.mark.parametrize("r", [1e-4, 1e-7, 1e-10, 1e-13, -1e-10])
def test_kl_diag_normal_keeps_relative_precision_when_q_is_close_to_p(r):
    """``exp(r) - 1 - r`` computed naively loses every digit at ``r = 1e-10`` (it is ~5e-21)."""
    logvar_p = torch.tensor([0.7], dtype=F64)
    logvar_q = logvar_p + r
    r = (logvar_q - logvar_p).item()  # the difference actually represented (exact: Sterbenz)
    expected = 0.5 * r**2 * (1 / 2 + r / 6 + r**2 / 24)  # Taylor series of exp(r) - 1 - r
    kl = kl_diag_normal(torch.zeros(1, dtype=F64), logvar_q, 0.0, logvar_p).item()
    assert kl == pytest.approx(expected, rel=1e-12, abs=0)


def test_kl_diag_normal_gradients_match_the_closed_form():
    r = torch.tensor([-2.0, -0.05, 0.0, 1e-6, 0.05, 2.0], dtype=F64)
    logvar_p = torch.full_like(r, 0.3)
    mu_q = torch.linspace(-1, 1, 6, dtype=F64).requires_grad_()
    logvar_q = (logvar_p + r).requires_grad_()
    kl_diag_normal(mu_q, logvar_q, 0.25, logvar_p).backward()
    # dKL/dlogvar_q = (exp(r) - 1) / 2 and dKL/dmu_q = (mu_q - mu_p) exp(-logvar_p).
    torch.testing.assert_close(logvar_q.grad, 0.5 * torch.expm1(logvar_q.detach() - logvar_p))
    torch.testing.assert_close(mu_q.grad, (mu_q.detach() - 0.25) * torch.exp(-logvar_p))


def test_kl_normal_matches_torch_kl_divergence(gen, make_spd):
    mu_q, mu_p = randn(gen, 4, 3), randn(gen, 4, 3)
    cov_q, cov_p = make_spd(3, 4), make_spd(3, 4)
    expected = kl_divergence(MultivariateNormal(mu_q, cov_q), MultivariateNormal(mu_p, cov_p))
    torch.testing.assert_close(kl_normal(mu_q, cov_q, mu_p, cov_p), expected, rtol=1e-10, atol=0)


def test_kl_normal_broadcasts_a_batch_of_q_against_one_p(gen, make_spd):
    mu_q, cov_q, mu_p, cov_p = randn(gen, 4, 3), make_spd(3, 4), randn(gen, 3), make_spd(3)
    kl = kl_normal(mu_q, cov_q, mu_p, cov_p)
    one_by_one = torch.stack([kl_normal(mu_q[i], cov_q[i], mu_p, cov_p) for i in range(4)])
    assert kl.shape == (4,)
    torch.testing.assert_close(kl, one_by_one, rtol=1e-12, atol=1e-12)


def test_kl_normal_with_diagonal_covariances_equals_kl_diag_normal(gen):
    mu_q, logvar_q, mu_p, logvar_p = (randn(gen, 4, 3) for _ in range(4))
    full = kl_normal(mu_q, torch.diag_embed(logvar_q.exp()), mu_p, torch.diag_embed(logvar_p.exp()))
    diag = kl_diag_normal(mu_q, logvar_q, mu_p, logvar_p)
    torch.testing.assert_close(full, diag, rtol=1e-10, atol=1e-12)


def test_kl_normal_of_a_distribution_with_itself_is_zero(gen, make_spd):
    mu, cov = randn(gen, 4, 3), make_spd(3, 4)
    torch.testing.assert_close(
        kl_normal(mu, cov, mu, cov), torch.zeros(4, dtype=F64), atol=1e-12, rtol=0
    )


# --- reparameterised sampling --------------------------------------------------------------


def test_sample_diag_normal_has_the_right_mean_and_covariance(gen):
    mu, logvar = (
        torch.tensor([1.0, -2.0, 0.0], dtype=F64),
        torch.tensor([0.0, -1.5, 1.0], dtype=F64),
    )
    z = sample_diag_normal(mu, logvar, n_samples=N_MC, generator=gen)
    assert_moments(z, mu, torch.diag(logvar.exp()))


def test_sample_normal_has_the_right_mean_and_covariance(gen):
    mu = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    cov = torch.tensor([[2.0, 0.8, -0.3], [0.8, 1.0, 0.2], [-0.3, 0.2, 0.5]], dtype=F64)
    assert_moments(sample_normal(mu, cov, n_samples=N_MC, generator=gen), mu, cov)


def test_sample_diag_normal_is_reparameterised(gen):
    mu = torch.tensor([0.5, -1.0], dtype=F64, requires_grad=True)
    logvar = torch.tensor([0.2, -0.7], dtype=F64, requires_grad=True)
    z = sample_diag_normal(mu, logvar, n_samples=5, generator=gen)
    z.sum().backward()
    # z = mu + exp(logvar / 2) eps: dz/dmu = 1 and dz/dlogvar = (z - mu) / 2.
    torch.testing.assert_close(mu.grad, torch.full((2,), 5.0, dtype=F64))
    torch.testing.assert_close(logvar.grad, 0.5 * (z - mu).detach().sum(0))


def test_sample_normal_is_reparameterised(gen):
    mu = torch.zeros(2, dtype=F64, requires_grad=True)
    a = torch.tensor([[1.0, 0.0], [0.5, 2.0]], dtype=F64, requires_grad=True)
    z = sample_normal(mu, a @ a.T, n_samples=5, generator=gen)
    (z**2).sum().backward()
    torch.testing.assert_close(mu.grad, 2 * z.detach().sum(0))
    assert bool(torch.isfinite(a.grad).all()) and bool((a.grad != 0).any())


@pytest.mark.parametrize(
    ("sampler", "scale"),
    [(sample_diag_normal, torch.zeros(2, 3)), (sample_normal, torch.eye(3).expand(2, 3, 3))],
)
def test_samples_are_reproducible_from_a_generator_seed(sampler, scale):
    mu = torch.zeros(2, 3)

    def draw(seed):
        return sampler(mu, scale, n_samples=4, generator=torch.Generator().manual_seed(seed))

    assert draw(7).shape == (4, 2, 3)
    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


def test_sample_diag_normal_broadcasts_mu_and_logvar(gen):
    mu, logvar = torch.zeros(4, 1, 3), torch.zeros(2, 3)
    assert sample_diag_normal(mu, logvar, generator=gen).shape == (4, 2, 3)
    assert sample_diag_normal(mu, logvar, n_samples=7, generator=gen).shape == (7, 4, 2, 3)


# --- batches, dtypes ----------------------------------------------------------------------


def test_full_covariance_functions_take_two_batch_axes(gen, make_spd):
    """A (2, 5) batch of covariances: every batch axis is kept and the event axis is the last."""
    x, mu, cov = randn(gen, 2, 5, 3), randn(gen, 2, 5, 3), make_spd(3, 2, 5)
    mu_p, cov_p = randn(gen, 2, 5, 3), make_spd(3, 2, 5)
    q, p = MultivariateNormal(mu, cov), MultivariateNormal(mu_p, cov_p)
    close = {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(log_normal(x, mu, cov), q.log_prob(x), **close)
    torch.testing.assert_close(entropy_normal(cov), q.entropy(), **close)
    torch.testing.assert_close(kl_normal(mu, cov, mu_p, cov_p), kl_divergence(q, p), **close)


def test_log_normal_broadcasts_one_point_against_a_batch_of_covariances(gen, make_spd):
    x, mu, cov = randn(gen, 3), randn(gen, 3), make_spd(3, 2, 5)
    expected = MultivariateNormal(mu, cov).log_prob(x)
    got = log_normal(x, mu, cov)
    assert got.shape == (2, 5)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batched", ["mu_q", "cov_q", "mu_p", "cov_p"])
def test_kl_normal_takes_its_batch_shape_from_any_argument(gen, make_spd, batched):
    """Only one argument has a batch axis (4,): the result is (4,), one KL per entry."""
    args = {
        "mu_q": randn(gen, 3),
        "cov_q": make_spd(3),
        "mu_p": randn(gen, 3),
        "cov_p": make_spd(3),
    }
    args[batched] = randn(gen, 4, 3) if batched.startswith("mu") else make_spd(3, 4)
    expected = kl_divergence(
        MultivariateNormal(args["mu_q"], args["cov_q"]),
        MultivariateNormal(args["mu_p"], args["cov_p"]),
    )
    got = kl_normal(**args)
    assert got.shape == (4,)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_numbers_and_lists_take_the_float64_dtype_of_the_first_argument(gen):
    """Plain Python values are converted in the dtype of ``x`` / ``mu_q``: no float32 rounding."""
    x = randn(gen, 4, 2)
    mu, cov = [0.1, -0.3], [[1.3, 0.2], [0.2, 0.7]]
    mu_t, cov_t = torch.tensor(mu, dtype=F64), torch.tensor(cov, dtype=F64)
    assert log_normal(x, mu, cov).dtype == F64
    torch.testing.assert_close(log_normal(x, mu, cov), log_normal(x, mu_t, cov_t), rtol=0, atol=0)
    mu_q, cov_q = randn(gen, 2), torch.tensor([[0.9, -0.1], [-0.1, 1.1]], dtype=F64)
    got = kl_normal(mu_q, cov, mu, cov)
    assert got.dtype == F64
    torch.testing.assert_close(got, kl_normal(mu_q, cov_t, mu_t, cov_t), rtol=0, atol=0)
    torch.testing.assert_close(
        kl_normal(mu_q, cov_q, mu, cov), kl_normal(mu_q, cov_q, mu_t, cov_t), rtol=0, atol=0
    )


def test_diagonal_functions_take_numbers_in_the_float64_dtype_of_their_first_argument(gen):
    x, mu_q, logvar_q = randn(gen, 4, 2), randn(gen, 4, 2), randn(gen, 4, 2)
    full = torch.full((2,), 0.3, dtype=F64), torch.full((2,), -0.7, dtype=F64)
    got = log_normal_diag(x, 0.3, -0.7)
    torch.testing.assert_close(got, log_normal_diag(x, *full), rtol=0, atol=0)
    got = kl_diag_normal(mu_q, logvar_q, 0.3, -0.7)
    torch.testing.assert_close(got, kl_diag_normal(mu_q, logvar_q, *full), rtol=0, atol=0)
    got = kl_diag_normal(mu_q, [0.3, -0.7])
    torch.testing.assert_close(
        got, kl_diag_normal(mu_q, mu_q.new_tensor([0.3, -0.7])), rtol=0, atol=0
    )


def _exp_minus_1_minus_reference(r: float) -> float:
    """``exp(r) - 1 - r`` by its Taylor series summed exactly (|r| <= 3: 40 terms suffice)."""
    return math.fsum(r**n / math.factorial(n) for n in range(2, 40))


def test_kl_diag_normal_is_accurate_on_both_sides_of_the_series_switch():
    """Dense r in [-3, 3], across |r| = 0.1 where exp(r) - 1 - r switches to its Taylor series."""
    r = torch.linspace(-3, 3, 241, dtype=F64)
    kl = kl_diag_normal(torch.zeros(241, 1, dtype=F64), r.unsqueeze(-1))
    expected = torch.tensor([0.5 * _exp_minus_1_minus_reference(v) for v in r.tolist()], dtype=F64)
    torch.testing.assert_close(kl, expected, rtol=1e-13, atol=0)


def test_samples_are_mu_plus_the_scale_times_the_generators_standard_normal_draws(make_spd):
    """The documented z = mu + exp(logvar / 2) eps and z = mu + L eps, with eps the float64
    torch.randn draws of the generator: the noise a reader seeds is the noise used."""
    mu = torch.linspace(-1, 1, 30, dtype=F64).reshape(2, 5, 3)
    eps = torch.randn(4, 2, 5, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    z = sample_diag_normal(mu, -0.3, n_samples=4, generator=torch.Generator().manual_seed(3))
    assert z.dtype == F64
    torch.testing.assert_close(z, mu + math.exp(-0.15) * eps, rtol=1e-14, atol=1e-14)
    logvar = mu - 0.5  # one mean, a batch of variances: every entry gets its own noise
    z = sample_diag_normal(mu[0, 0], logvar, generator=torch.Generator().manual_seed(3))
    eps1 = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    torch.testing.assert_close(z, mu[0, 0] + torch.exp(logvar / 2) * eps1, rtol=1e-14, atol=1e-14)
    cov = make_spd(3, 2, 5)
    lower = torch.linalg.cholesky(cov)
    z = sample_normal(mu, cov, n_samples=4, generator=torch.Generator().manual_seed(3))
    assert z.dtype == F64
    expected = mu + (lower @ eps.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(z, expected, rtol=1e-14, atol=1e-14)
    z = sample_normal(mu[0, 0], cov.tolist(), generator=torch.Generator().manual_seed(3))
    eps = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    torch.testing.assert_close(z, mu[0, 0] + (lower @ eps.unsqueeze(-1)).squeeze(-1))
    # A batch of means with one covariance: every entry of the batch gets its own noise.
    z = sample_normal(mu, cov[0, 0], generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(z, mu + (lower[0, 0] @ eps.unsqueeze(-1)).squeeze(-1))


def test_cholesky_factor_tolerates_rounding_but_not_asymmetry(make_spd):
    cov = make_spd(3)
    torch.testing.assert_close(cholesky_factor(cov) @ cholesky_factor(cov).T, cov)
    rounded = cov.clone()
    rounded[0, 1] *= 1 + 1e-9  # rounding-level asymmetry: accepted
    cholesky_factor(rounded)
    skewed = cov.clone()
    skewed[0, 1] *= 1 + 1e-3  # a real asymmetry: rejected, under the default name
    with pytest.raises(ValueError, match=r"^cov must be symmetric"):
        cholesky_factor(skewed)
    with pytest.raises(ValueError, match=r"^cov must be positive definite"):
        cholesky_factor(torch.stack([torch.eye(2), NOT_PD]))  # one bad matrix in a batch
    with pytest.raises(ValueError, match=r"^cov must be a \(\.\.\., d, d\)"):
        cholesky_factor(torch.zeros(2, 3))


# --- bad input -----------------------------------------------------------------------------

V2, V3, NAN3 = torch.zeros(2), torch.zeros(3), torch.tensor([0.0, math.nan, 0.0])
I2, I3 = torch.eye(2), torch.eye(3)
NOT_PD = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
NOT_SYM = torch.tensor([[1.0, 0.5], [0.0, 1.0]])
NAN2, NAN22 = torch.tensor([0.0, math.nan]), torch.tensor([[1.0, 0.0], [0.0, math.nan]])


@pytest.mark.parametrize(
    ("func", "args", "kwargs", "error", "match"),
    [
        (log_normal_diag, (V3, V2, 0.0), {}, ValueError, "mu has last dimension 2 but x has 3"),
        (log_normal_diag, (V3, 0.0, V2), {}, ValueError, "logvar has last dimension 2 but x "),
        (log_normal_diag, (NAN3, 0.0, 0.0), {}, ValueError, "x must be finite"),
        (log_normal_diag, (V3, NAN3, 0.0), {}, ValueError, "mu must be finite"),
        (log_normal_diag, (V3, 0.0, NAN3), {}, ValueError, "logvar must be finite"),
        (log_normal_diag, ("x", 0.0, 0.0), {}, TypeError, "x must be a tensor"),
        (log_normal, (V2, V2, NOT_PD), {}, ValueError, "cov must be positive definite"),
        (log_normal, (V2, V2, NOT_SYM), {}, ValueError, "cov must be symmetric"),
        (log_normal, (V3, V3, I2), {}, ValueError, "cov must be"),
        (log_normal, (V2, V2, V2), {}, ValueError, "cov must be a"),
        (log_normal, (V2, V3, I2), {}, ValueError, "mu has last dimension 3 but x has 2"),
        (log_normal, (NAN2, V2, I2), {}, ValueError, "x must be finite"),
        (log_normal, (V2, NAN2, I2), {}, ValueError, "mu must be finite"),
        (log_normal, (V2, V2, NAN22), {}, ValueError, "cov must be finite"),
        (entropy_diag_normal, (torch.tensor(0.0),), {}, ValueError, r"logvar must have a last \("),
        (entropy_normal, (NAN22,), {}, ValueError, "cov must be finite"),
        (entropy_diag_normal, (NAN3,), {}, ValueError, "logvar must be finite"),
        (entropy_normal, (NOT_PD,), {}, ValueError, "cov must be positive definite"),
        (kl_diag_normal, (NAN3, V3), {}, ValueError, "mu_q must be finite"),
        (kl_diag_normal, (V3, NAN3), {}, ValueError, "logvar_q must be finite"),
        (kl_diag_normal, (V3, V3, NAN3), {}, ValueError, "mu_p must be finite"),
        (kl_diag_normal, (V3, V2), {}, ValueError, "logvar_q has last dimension 2 but mu_q has 3"),
        (kl_diag_normal, (V3, V3, V2), {}, ValueError, "mu_p has last dimension 2 but mu_q has 3"),
        (
            kl_diag_normal,
            (V3, V3, 0.0, V2),
            {},
            ValueError,
            "logvar_p has last dimension 2 but mu_q has 3",
        ),
        (kl_diag_normal, (V3, V3), {"logvar_p": math.inf}, ValueError, "logvar_p"),
        (kl_normal, (V2, NOT_SYM, V2, I2), {}, ValueError, "cov_q must be symmetric"),
        (kl_normal, (V2, I2, V2, NOT_PD), {}, ValueError, "cov_p must be positive definite"),
        (kl_normal, (V2, I3, V2, I2), {}, ValueError, "cov_q must be"),
        (kl_normal, (V2, I2, V2, I3), {}, ValueError, "cov_p must be"),
        (kl_normal, (V2, I2, V3, I2), {}, ValueError, "mu_p has last dimension 3 but mu_q has 2"),
        (kl_normal, (NAN2, I2, V2, I2), {}, ValueError, "mu_q must be finite"),
        (kl_normal, (V2, I2, NAN2, I2), {}, ValueError, "mu_p must be finite"),
        (kl_normal, (V2, NAN22, V2, I2), {}, ValueError, "cov_q must be finite"),
        (kl_normal, (V2, I2, V2, NAN22), {}, ValueError, "cov_p must be finite"),
        (sample_diag_normal, (V3, V2), {}, ValueError, "logvar has last dimension 2 but mu has 3"),
        (sample_diag_normal, (NAN3, V3), {}, ValueError, "mu must be finite"),
        (sample_diag_normal, (V3, NAN3), {}, ValueError, "logvar must be finite"),
        (sample_diag_normal, (V3, V3), {"n_samples": 0}, ValueError, "n_samples"),
        (sample_diag_normal, (V3, V3), {"n_samples": 2.0}, TypeError, "n_samples"),
        (
            sample_diag_normal,
            (V3, V3),
            {"generator": 42},
            TypeError,
            "generator must be a torch.Ge",
        ),
        (sample_normal, (V3, I3), {"generator": 4.2}, TypeError, "generator .* got float"),
        (sample_normal, (V3, I2), {}, ValueError, "cov must be"),
        (sample_normal, (torch.tensor(0.0), torch.eye(1)), {}, ValueError, r"cov must be \(0, 0\)"),
        (sample_normal, (NAN2, I2), {}, ValueError, "mu must be finite"),
        (sample_normal, (V2, NAN22), {}, ValueError, "cov must be finite"),
        (sample_normal, (V2, NOT_PD), {}, ValueError, "cov must be positive definite"),
        (sample_normal, (V2, I2), {"n_samples": -1}, ValueError, "n_samples"),
    ],
)
def test_bad_input_raises_naming_the_argument(func, args, kwargs, error, match):
    """The message starts with the argument's name (vaebook.checks promises it)."""
    with pytest.raises(error, match="^" + match):
        func(*args, **kwargs)
