"""The primer's answer checkers (the ``ex-kl-1d`` tests stay in ``tests/test_exercises.py``).

For every checker: an answer computed here by an independent route passes, each typical wrong
answer fails with its intended message, and answers of the wrong kind raise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from vaebook import linear_gaussian
from vaebook.exercises import check

F64 = torch.float64


def mvn(mean, cov):
    return MultivariateNormal(mean, covariance_matrix=cov)


def assert_fails_with(label, answer, message):
    feedback = check(label, answer)
    assert not feedback, feedback
    assert message in feedback.message, feedback.message


# -- ex-fit-posterior -------------------------------------------------------------------------


def exact_posterior(x1, W, b, sigma2):
    mean, cov = linear_gaussian.posterior(x1, W, b, sigma2)
    return mean[0], cov


def lbfgs_fit(x1, W, b, sigma2):
    """What the solution does: maximise the exact ELBO over a mean and a Cholesky factor."""
    k = W.shape[1]
    mean = torch.zeros(1, k, dtype=F64, requires_grad=True)
    chol = torch.eye(k, dtype=F64, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [mean, chol], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def loss():
        optimiser.zero_grad()
        lower = torch.tril(chol)
        value = -linear_gaussian.exact_terms(x1, mean, lower @ lower.T, W, b, sigma2).elbo.sum()
        value.backward()
        return value

    optimiser.step(loss)
    lower = torch.tril(chol.detach())
    return mean.detach(), lower @ lower.T


def test_fit_posterior_accepts_the_posterior_and_an_optimised_fit():
    assert check("ex-fit-posterior", exact_posterior)
    assert check("ex-fit-posterior", lbfgs_fit)


@pytest.mark.parametrize(
    "answer, message",
    [
        (
            lambda *m: (exact_posterior(*m)[0], torch.linalg.cholesky(exact_posterior(*m)[1])),
            "Cholesky factor",
        ),
        (
            lambda x1, W, *_: (torch.zeros(W.shape[1]), torch.eye(W.shape[1])),
            "the prior N(0, I)",
        ),
        (
            lambda *m: (exact_posterior(*m)[0], torch.linalg.inv(exact_posterior(*m)[1])),
            "precision",
        ),
        (lambda *m: (exact_posterior(*m)[0] + 1e-4, exact_posterior(*m)[1]), "not converged"),
        (lambda x1, W, b, sigma2: exact_posterior(x1, W, b, 2 * sigma2), "differs"),
    ],
)
def test_fit_posterior_names_typical_mistakes(answer, message):
    assert_fails_with("ex-fit-posterior", answer, message)


def test_fit_posterior_rejects_answers_of_the_wrong_kind():
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-fit-posterior", (torch.zeros(2), torch.eye(2)))
    with pytest.raises(TypeError, match=r"answer\(\.\.\.\) on case 0 must return a pair"):
        check("ex-fit-posterior", lambda *m: exact_posterior(*m)[1])
    with pytest.raises(ValueError, match="in that order"):
        check("ex-fit-posterior", lambda *m: exact_posterior(*m)[::-1])


# -- ex-collapse-gap --------------------------------------------------------------------------


def collapse_gap(x, W, b, sigma2):
    """log p(x) minus the exact ELBO of q = N(0, I), both from vaebook.linear_gaussian."""
    k = W.shape[1]
    prior = linear_gaussian.exact_terms(
        x, torch.zeros(len(x), k, dtype=F64), torch.eye(k, dtype=F64), W, b, sigma2
    )
    return linear_gaussian.marginal_log_likelihood(x, W, b, sigma2) - prior.elbo


def kl_from_posterior(x, W, b, sigma2, *, reverse=False, drop_mean=False):
    """KL(N(0, I) || p(z|x)) from torch.distributions, or a typical mistake."""
    mean, cov = linear_gaussian.posterior(x, W, b, sigma2)
    mean = 0 * mean if drop_mean else mean
    prior = mvn(torch.zeros_like(mean), torch.eye(W.shape[1], dtype=F64).expand(len(x), -1, -1))
    posterior = mvn(mean, cov.expand(len(x), -1, -1))
    return kl_divergence(posterior, prior) if reverse else kl_divergence(prior, posterior)


def test_collapse_gap_accepts_the_gap_of_form_1_and_the_kl():
    assert check("ex-collapse-gap", collapse_gap)
    assert check("ex-collapse-gap", kl_from_posterior)


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda *m: kl_from_posterior(*m, reverse=True), "wrong direction"),
        (lambda *m: -collapse_gap(*m), "wrong sign"),
        (lambda *m: kl_from_posterior(*m, drop_mean=True), "misses the mean term"),
        (lambda *m: 2 * collapse_gap(*m), "twice the gap"),
        (lambda x, W, b, sigma2: collapse_gap(x, W, b, 0.5), "differs"),
    ],
)
def test_collapse_gap_names_typical_mistakes(answer, message):
    assert_fails_with("ex-collapse-gap", answer, message)


def test_collapse_gap_rejects_answers_of_the_wrong_kind():
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-collapse-gap", 1.0)
    with pytest.raises(TypeError, match="must be a number or an array"):
        check("ex-collapse-gap", lambda *m: "gap")


# -- ex-score-function ------------------------------------------------------------------------


def estimator_variances(mu, sigma, *, power=2, centred=True, score_factor=None):
    """Moments of the two estimators by Gauss-Hermite quadrature over ε ~ N(0, 1) (exact for
    these polynomials): 2z and z²(z - μ)/σ² with z = μ + σε."""
    eps, weights = hermegauss(20)
    weights = weights / weights.sum()
    z = mu + sigma * eps
    score_factor = 1 / sigma**2 if score_factor is None else score_factor
    out = []
    for g in (2 * z, z**2 * (z - mu) * score_factor):
        mean = (weights * g).sum() if centred else 0.0
        out.append((weights * (g - mean) ** power).sum())
    return out


def test_score_function_accepts_the_variances():
    assert check("ex-score-function", estimator_variances)


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda mu, s: estimator_variances(mu, s)[::-1], "comes first"),
        (lambda mu, s: estimator_variances(mu, s, centred=False), "second moments"),
        (lambda mu, s: estimator_variances(mu, s**0.5), "reads sigma as a variance"),
        (lambda mu, s: estimator_variances(mu, s, score_factor=1.0), "misses the 1/σ²"),
        (lambda mu, s: [4 * s**2, 15 * s**2], "differs"),
    ],
)
def test_score_function_names_typical_mistakes(answer, message):
    assert_fails_with("ex-score-function", answer, message)


def test_score_function_rejects_answers_of_the_wrong_kind():
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-score-function", [1.0, 2.0])
    with pytest.raises(ValueError, match="must return two numbers"):
        check("ex-score-function", lambda mu, s: 4 * s**2)


# -- ex-diagonal-gap --------------------------------------------------------------------------


def fitted_diagonal_gap(S, *, direction="q||p", variances=None):
    """min over diagonal q of KL(q || N(0, S)), by L-BFGS on torch.distributions' KL (or the
    KL at given variances, or in the other direction)."""
    zero = torch.zeros(len(S), dtype=F64)
    log_v = torch.zeros(len(S), dtype=F64, requires_grad=True)

    def kl(log_v):
        q = mvn(zero, torch.diag(log_v.exp()))
        return (
            kl_divergence(q, mvn(zero, S))
            if direction == "q||p"
            else kl_divergence(mvn(zero, S), q)
        )

    if variances is not None:
        return kl(variances(S).log())
    optimiser = torch.optim.LBFGS(
        [log_v], max_iter=500, tolerance_grad=1e-13, tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def loss():
        optimiser.zero_grad()
        value = kl(log_v)
        value.backward()
        return value

    optimiser.step(loss)
    if direction != "q||p":  # the mistake: the q of the ELBO, measured in the other direction
        return kl_divergence(mvn(zero, S), mvn(zero, torch.diag(1 / torch.linalg.inv(S).diag())))
    return kl(log_v).detach()


def test_diagonal_gap_accepts_the_optimised_gap():
    assert check("ex-diagonal-gap", fitted_diagonal_gap)


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda S: fitted_diagonal_gap(S, variances=torch.diag), "marginal variances"),
        (lambda S: fitted_diagonal_gap(S, direction="p||q"), "wrong direction"),
        (lambda S: 2 * fitted_diagonal_gap(S), "twice the gap"),
        (lambda S: -fitted_diagonal_gap(S), "wrong sign"),
        (lambda S: -0.5 * torch.log(1 - (S[0, 1] / (S[0, 0] * S[1, 1]) ** 0.5) ** 2), "differs"),
    ],
)
def test_diagonal_gap_names_typical_mistakes(answer, message):
    assert_fails_with("ex-diagonal-gap", answer, message)


def test_diagonal_gap_rejects_answers_of_the_wrong_kind():
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-diagonal-gap", 0.5)


# -- ex-vae-scratch ---------------------------------------------------------------------------


def elbo(x, x_hat, log_gamma, mu, logvar, *, gamma_scale=1.0, std_scale=1.0, kl_sign=1.0):
    """The per-example ELBO from torch.distributions (and knobs for typical mistakes)."""
    decoder = Normal(x_hat, (gamma_scale * log_gamma).exp() ** 0.5)
    encoder = Normal(mu, (std_scale * logvar).exp() ** 0.5)
    kl = kl_divergence(encoder, Normal(0.0, 1.0)).sum(-1)
    return decoder.log_prob(x).sum(-1) - kl_sign * kl


def test_vae_scratch_accepts_the_elbo():
    assert check("ex-vae-scratch", elbo)


@pytest.mark.parametrize(
    "answer, message",
    [
        (
            lambda x, x_hat, lg, mu, lv: (
                elbo(x, x_hat, lg, mu, lv) + 0.5 * x.shape[-1] * (math.log(2 * math.pi) + lg)
            ),
            "misses the normaliser",
        ),
        (
            lambda x, x_hat, lg, mu, lv: (
                elbo(x, x_hat, lg, mu, lv) + 0.5 * x.shape[-1] * math.log(2 * math.pi)
            ),
            "misses the constant",
        ),
        (lambda *a: elbo(*a, gamma_scale=2.0), "standard deviation: γ is the decoder's variance"),
        (lambda *a: elbo(*a, std_scale=2.0), "log standard deviation"),
        (lambda *a: elbo(*a, kl_sign=-1.0), "adds the KL term"),
        (
            lambda x, x_hat, lg, mu, lv: (
                Normal(x_hat, (0.5 * lg).exp()).log_prob(x).mean(-1)
                - kl_divergence(Normal(mu, (0.5 * lv).exp()), Normal(0.0, 1.0)).sum(-1)
            ),
            "averages log N over the coordinates",
        ),
        (lambda x, x_hat, lg, mu, lv: elbo(x, x_hat, lg + 1, mu, lv), "differs"),
    ],
)
def test_vae_scratch_names_typical_mistakes(answer, message):
    assert_fails_with("ex-vae-scratch", answer, message)


def test_vae_scratch_rejects_answers_of_the_wrong_kind():
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-vae-scratch", -3.0)
    with pytest.raises(ValueError, match="one ELBO per example"):
        check("ex-vae-scratch", lambda *a: elbo(*a).mean())


# -- ex-gamma-floor ---------------------------------------------------------------------------


def gamma_star(x, k, *, ddof=0, centre=True, divide_by=None, keep=None):
    """Tipping & Bishop's maximum-likelihood noise variance from the singular values of the
    data matrix (and knobs for typical mistakes)."""
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(0) if centre else x
    lam = np.sort(np.linalg.svd(xc, compute_uv=False) ** 2 / (len(x) - ddof))[::-1]
    lam = np.concatenate([lam, np.zeros(x.shape[1] - len(lam))])
    discarded = lam[k:] if keep is None else lam[-keep:]
    return discarded.sum() / (len(discarded) if divide_by is None else divide_by)


def test_gamma_floor_formula_is_the_maximum_of_the_likelihood():
    """On one data set, L-BFGS on log N(x; b, WWᵀ + γI) over (W, b, log γ) finds γ*."""
    gen = torch.Generator().manual_seed(5)
    n, d, k = 80, 4, 2
    x = torch.randn(n, k, generator=gen, dtype=F64) @ torch.randn(k, d, generator=gen, dtype=F64)
    x = x + 0.7 * torch.randn(n, d, generator=gen, dtype=F64) + 3.0
    W = torch.randn(d, k, generator=gen, dtype=F64).requires_grad_()
    b = torch.zeros(d, dtype=F64, requires_grad=True)
    log_gamma = torch.zeros((), dtype=F64, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [W, b, log_gamma], max_iter=500, tolerance_grad=1e-11, tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def loss():
        optimiser.zero_grad()
        cov = W @ W.T + log_gamma.exp() * torch.eye(d, dtype=F64)
        value = -mvn(b, cov).log_prob(x).mean()
        value.backward()
        return value

    optimiser.step(loss)
    assert math.isclose(log_gamma.exp().item(), gamma_star(x, k), rel_tol=1e-6)


def test_gamma_floor_accepts_the_discarded_eigenvalues_average():
    assert check("ex-gamma-floor", gamma_star)


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda x, k: gamma_star(x, k, divide_by=x.shape[1]), "projecting x onto the top-k"),
        (lambda x, k: gamma_star(x, k, ddof=1), "divides by n - 1"),
        (lambda x, k: gamma_star(x, k, centre=False), "does not centre x"),
        (lambda x, k: gamma_star(x, k, keep=1), "keeps only the smallest"),
        (lambda x, k: gamma_star(x, 0), "averages all d eigenvalues"),
        (lambda x, k: gamma_star(x, k + 1), "differs"),
    ],
)
def test_gamma_floor_names_typical_mistakes(answer, message):
    assert_fails_with("ex-gamma-floor", answer, message)


def test_gamma_floor_rejects_answers_of_the_wrong_kind():
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-gamma-floor", 0.5)
    with pytest.raises(TypeError, match="must be a number or an array"):
        check("ex-gamma-floor", lambda x, k: {"gamma": 0.5})


def _nearest_centre_error(codes, labels):
    centres = torch.stack([codes[labels == c].mean(0) for c in range(int(labels.max()) + 1)])
    return (torch.cdist(codes, centres).argmin(1) != labels).double().mean().item()


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda c, y: 1 - _nearest_centre_error(c, y), "fraction put in the right class"),
        (lambda c, y: _nearest_centre_error(c, y) * len(y), "It is a count"),
        (lambda c, y: 0.0, "differs from the reference"),
    ],
)
def test_latent_2d_checker_names_typical_mistakes(answer, message):
    feedback = check("ex-latent-2d", answer)
    assert not feedback and message in feedback.message


def test_latent_2d_checker_accepts_the_rule_and_rejects_a_number():
    assert check("ex-latent-2d", _nearest_centre_error)
    with pytest.raises(TypeError, match="must be a function"):
        check("ex-latent-2d", 0.1)
