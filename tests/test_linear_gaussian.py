"""Tests of vaebook.linear_gaussian: the ELBO identities of the exactly solvable model."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from vaebook.gaussian import sample_normal
from vaebook.linear_gaussian import (
    beta_optimal_posterior,
    exact_terms,
    marginal_log_likelihood,
    posterior,
)

F64 = torch.float64
D, K, N = 4, 2, 5


@pytest.fixture
def model(gen):
    """``(x, W, b, sigma2)`` of a random float64 model with d = 4, k = 2 and 5 data points."""
    W = torch.randn(D, K, generator=gen, dtype=F64)
    b = torch.randn(D, generator=gen, dtype=F64)
    x = 2 * torch.randn(N, D, generator=gen, dtype=F64)
    return x, W, b, 0.3


def random_q(gen, make_spd, shared_cov=True):
    mean = torch.randn(N, K, generator=gen, dtype=F64)
    return mean, (make_spd(K) if shared_cov else make_spd(K, N))


def test_marginal_log_likelihood_matches_torch_multivariate_normal(model):
    x, W, b, sigma2 = model
    cov = W @ W.T + sigma2 * torch.eye(D, dtype=F64)
    expected = MultivariateNormal(b, cov).log_prob(x)
    torch.testing.assert_close(marginal_log_likelihood(*model), expected, rtol=1e-12, atol=1e-12)


def test_marginal_log_likelihood_matches_numerical_integration_over_a_1d_latent(gen):
    W = torch.tensor([[1.5], [-0.5], [0.8]], dtype=F64)
    b, sigma2 = torch.tensor([0.2, 0.0, -0.4], dtype=F64), 0.2
    x = torch.randn(3, 3, generator=gen, dtype=F64)
    z, dz = torch.linspace(-12, 12, 48_001, dtype=F64), 24 / 48_000
    # log ∫ N(z; 0, 1) N(x; W z + b, σ² I) dz by the trapezoid rule (the integrand vanishes at
    # both ends, where the rule is spectrally accurate for a smooth, rapidly decaying function).
    log_joint = (
        Normal(0.0, 1.0).log_prob(z)
        + Normal(z[:, None, None] * W[:, 0] + b, math.sqrt(sigma2)).log_prob(x).sum(-1).T
    )
    expected = torch.logsumexp(log_joint, dim=-1) + math.log(dz)
    torch.testing.assert_close(
        marginal_log_likelihood(x, W, b, sigma2), expected, rtol=0, atol=1e-9
    )


def test_posterior_matches_gaussian_conditioning_in_data_space(model):
    x, W, b, sigma2 = model
    # p(z | x) from the joint Gaussian of (z, x): mean W^T C^{-1} (x - b), cov I - W^T C^{-1} W.
    c = W @ W.T + sigma2 * torch.eye(D, dtype=F64)
    gain = torch.linalg.solve(c, W).T  # W^T C^{-1}, (k, d)
    mean, cov = posterior(*model)
    torch.testing.assert_close(mean, (x - b) @ gain.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cov, torch.eye(K, dtype=F64) - gain @ W, rtol=1e-12, atol=1e-12)
    assert torch.equal(cov, cov.T)


@pytest.mark.parametrize("sigma2", [0.01, 0.3, 5.0])
def test_elbo_of_the_exact_posterior_equals_the_marginal_log_likelihood(model, sigma2):
    x, W, b, _ = model
    mean, cov = posterior(x, W, b, sigma2)
    elbo = exact_terms(x, mean, cov, W, b, sigma2).elbo
    torch.testing.assert_close(elbo, marginal_log_likelihood(x, W, b, sigma2), rtol=0, atol=1e-10)


@pytest.mark.parametrize("shared_cov", [True, False])
def test_elbo_gap_is_the_kl_to_the_exact_posterior(gen, make_spd, model, shared_cov):
    mean_q, cov_q = random_q(gen, make_spd, shared_cov)
    mean_p, cov_p = posterior(*model)
    x, W, b, sigma2 = model
    gap = marginal_log_likelihood(*model) - exact_terms(x, mean_q, cov_q, W, b, sigma2).elbo
    # the reference comes from torch.distributions: exact_terms uses vaebook's kl_normal, so a
    # fault there (a constant offset, say) would cancel against a kl_normal reference
    mvn_q, mvn_p = MultivariateNormal(mean_q, cov_q), MultivariateNormal(mean_p, cov_p)
    kl = kl_divergence(mvn_q, mvn_p)
    assert bool((kl > 0.1).all())  # q is far from the posterior: the comparison is not 0 vs 0
    torch.testing.assert_close(gap, kl, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("beta", [0.25, 1.0, 4.0])
def test_beta_optimal_posterior_is_the_posterior_with_noise_beta_sigma2(model, beta):
    x, W, b, sigma2 = model
    mean, cov = beta_optimal_posterior(x, W, b, sigma2, beta)
    # The reference is not `posterior(x, W, b, beta * sigma2)`, which runs the same code: it
    # conditions the joint Gaussian of (z, x) in data space, x ~ N(b, W W^T + β σ² I), so
    # p(z | x) = N(W^T C^{-1} (x - b), I - W^T C^{-1} W) with C = W W^T + β σ² I.
    c = W @ W.T + beta * sigma2 * torch.eye(D, dtype=F64)
    gain = torch.linalg.solve(c, W).T  # W^T C^{-1}, (k, d)
    torch.testing.assert_close(mean, (x - b) @ gain.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cov, torch.eye(K, dtype=F64) - gain @ W, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("beta", [0.25, 1.0, 4.0])
def test_beta_optimal_posterior_maximises_the_beta_objective(gen, model, beta):
    x, W, b, sigma2 = model
    mean, cov = beta_optimal_posterior(x, W, b, sigma2, beta)
    best = exact_terms(x, mean, cov, W, b, sigma2, beta).objective
    sym = torch.randn(K, K, generator=gen, dtype=F64)
    perturbations = [
        (mean + 1e-3 * torch.randn(N, K, generator=gen, dtype=F64), cov),
        (mean, cov * (1 + 1e-3)),
        (mean, cov * (1 - 1e-3)),
        (mean, cov + 1e-3 * (sym + sym.T)),
        (mean, cov - 1e-3 * (sym + sym.T)),
    ]
    for mean_q, cov_q in perturbations:
        worse = exact_terms(x, mean_q, cov_q, W, b, sigma2, beta).objective
        assert bool((worse < best).all())


@pytest.mark.parametrize("beta", [0.25, 4.0])
def test_maximum_beta_objective_is_beta_times_the_log_likelihood_at_noise_beta_sigma2(model, beta):
    # log N(x; m, σ²) = β log N(x; m, βσ²) + d/2 [β log(2πβσ²) - log(2πσ²)], so the β-objective
    # is β ELBO_{βσ²}(q) + const and its maximum is β log p_{βσ²}(x) + const.
    x, W, b, sigma2 = model
    mean, cov = beta_optimal_posterior(x, W, b, sigma2, beta)
    best = exact_terms(x, mean, cov, W, b, sigma2, beta).objective
    const = (
        0.5 * D * (beta * math.log(2 * math.pi * beta * sigma2) - math.log(2 * math.pi * sigma2))
    )
    expected = beta * marginal_log_likelihood(x, W, b, beta * sigma2) + const
    torch.testing.assert_close(best, expected, rtol=0, atol=1e-10)


def test_exact_terms_match_monte_carlo_and_torch_kl(gen, make_spd, model):
    x, W, b, sigma2 = model
    mean_q, cov_q = random_q(gen, make_spd, shared_cov=False)
    terms = exact_terms(x, mean_q, cov_q, W, b, sigma2, beta=2.0)
    z = sample_normal(mean_q, cov_q, n_samples=20_000, generator=gen)  # (S, n, k)
    log_lik = Normal(z @ W.T + b, math.sqrt(sigma2)).log_prob(x).sum(-1)  # (S, n)
    se = log_lik.std(0) / math.sqrt(log_lik.shape[0])
    assert bool(((log_lik.mean(0) - terms.reconstruction).abs() < 5 * se).all())
    zero, eye = torch.zeros(K, dtype=F64), torch.eye(K, dtype=F64)
    kl = kl_divergence(MultivariateNormal(mean_q, cov_q), MultivariateNormal(zero, eye))
    torch.testing.assert_close(terms.kl, kl, rtol=1e-10, atol=1e-12)
    assert terms.beta == 2.0


def test_b_may_be_a_number(model):
    x, W, _, sigma2 = model
    by_number = marginal_log_likelihood(x, W, 0.5, sigma2)
    by_vector = marginal_log_likelihood(x, W, torch.full((D,), 0.5, dtype=F64), sigma2)
    torch.testing.assert_close(by_number, by_vector, rtol=0, atol=0)


X, W, B = torch.zeros(3, 4), torch.ones(4, 2), torch.zeros(4)
MEAN, COV = torch.zeros(3, 2), torch.eye(2)
GOOD = (X, W, B, 1.0)


@pytest.mark.parametrize(
    ("func", "args", "error", "match"),
    [
        (marginal_log_likelihood, (X, W[:, 0], B, 1.0), ValueError, "W must be a"),
        (marginal_log_likelihood, (X[:, :3], W, B, 1.0), ValueError, "x must be"),
        (marginal_log_likelihood, (X[0], W, B, 1.0), ValueError, "x must be"),
        (marginal_log_likelihood, (X, W, B[:3], 1.0), ValueError, "b must be"),
        (marginal_log_likelihood, (X, W, B, 0.0), ValueError, "sigma2 must be > 0"),
        (marginal_log_likelihood, (X, W, B, -1.0), ValueError, "sigma2 must be > 0"),
        (marginal_log_likelihood, (X, W * math.nan, B, 1.0), ValueError, "W must be finite"),
        (marginal_log_likelihood, (X, "W", B, 1.0), TypeError, "W must be a tensor"),
        (posterior, (X + math.inf, W, B, 1.0), ValueError, "x must be finite"),
        (beta_optimal_posterior, (*GOOD, 0.0), ValueError, "beta must be > 0"),
        (beta_optimal_posterior, (*GOOD, -2.0), ValueError, "beta must be > 0"),
        (beta_optimal_posterior, (*GOOD, math.nan), ValueError, "beta must be finite"),
        (exact_terms, (X, MEAN[:, :1], COV, *GOOD[1:]), ValueError, "mean_q must be"),
        (exact_terms, (X, MEAN[:2], COV, *GOOD[1:]), ValueError, "mean_q must be"),
        (exact_terms, (X, MEAN, torch.eye(3), *GOOD[1:]), ValueError, "cov_q must be"),
        (exact_terms, (X, MEAN, COV.expand(2, 2, 2), *GOOD[1:]), ValueError, "cov_q must be"),
        (exact_terms, (X, MEAN, -COV, *GOOD[1:]), ValueError, "cov_q must be positive definite"),
        (exact_terms, (X, MEAN, COV, *GOOD[1:], 0.0), ValueError, "beta must be > 0"),
    ],
)
def test_bad_input_raises_naming_the_argument(func, args, error, match):
    with pytest.raises(error, match=match):
        func(*args)
