"""The checkers of book/decomposition.md's exercises (:mod:`vaebook.exercises.decomposition`).

Each reference answer is written here independently of the checker's own reference (scipy's
distributions and quadrature, torch.distributions, Monte Carlo over rotations); each typical
mistake must fail with its message, and answers of the wrong kind must raise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from vaebook.exercises import check

F64 = torch.float64


def assert_fails(label, answer, message):
    feedback = check(label, answer)
    assert not feedback, f"{label} accepted a wrong answer"
    assert message in feedback.message, feedback.message


# -- ex-mathieu-laplace ------------------------------------------------------------------------


def laplace_log_normaliser(b, beta, d):
    """d log ∫ Laplace(t; 0, b)^β dt, by quadrature of scipy's Laplace density."""
    one, _ = integrate.quad(
        lambda t: stats.laplace.pdf(t, scale=b) ** beta, -np.inf, np.inf, epsabs=0, epsrel=1e-13
    )
    return d * math.log(one)


def test_laplace_checker_accepts_the_reference():
    assert check("ex-mathieu-laplace", laplace_log_normaliser)


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda b, beta, d: d * ((1 - beta) * math.log(2 * b) - 0.5 * math.log(beta)), "-1/2"),
        (lambda b, beta, d: laplace_log_normaliser(b, beta, 1), "one coordinate"),
        (lambda b, beta, d: d * ((beta - 1) * math.log(2 * b) - math.log(beta)), "sign"),
        (lambda b, beta, d: d * (1 - beta) * math.log(2 * b), "misses the -log β"),
        (lambda b, beta, d: math.exp(laplace_log_normaliser(b, beta, d)), "F_β itself"),
        (lambda b, beta, d: 0.0, "differs from the reference"),
    ],
)
def test_laplace_checker_names_typical_mistakes(answer, message):
    assert_fails("ex-mathieu-laplace", answer, message)


# -- ex-mathieu-student ------------------------------------------------------------------------


def student_log_normaliser(nu, beta):
    """log ∫ t_ν(t)^β dt by quadrature of scipy's Student-t density."""
    value, _ = integrate.quad(
        lambda t: stats.t.pdf(t, nu) ** beta, -np.inf, np.inf, epsabs=0, epsrel=1e-13, limit=200
    )
    return math.log(value)


def test_student_checker_accepts_the_reference():
    assert check("ex-mathieu-student", student_log_normaliser)


def _student(nu, beta, *, power, root_nu=True, shift=0.5):
    from scipy.special import betaln, gammaln

    log_c = gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * math.log(nu * math.pi)
    return (
        power * log_c
        + (0.5 * math.log(nu) if root_nu else 0.0)
        + betaln(0.5, beta * (nu + 1) / 2 - shift)
    )


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda nu, beta: _student(nu, beta, power=1), "power 1"),
        (lambda nu, beta: _student(nu, beta, power=0), "misses the constant"),
        (lambda nu, beta: _student(nu, beta, power=beta, shift=0.0), "B(1/2, a)"),
        (lambda nu, beta: _student(nu, beta, power=beta, root_nu=False), "√ν"),
        (lambda nu, beta: math.exp(student_log_normaliser(nu, beta)), "F_β itself"),
    ],
)
def test_student_checker_names_typical_mistakes(answer, message):
    assert_fails("ex-mathieu-student", answer, message)


# -- ex-mathieu-mixture ------------------------------------------------------------------------


def mixture_log_normaliser(beta, w, m, s):
    """log ∫ p^β for p = w N(-m, s²) + (1 - w) N(m, s²), by quadrature of scipy's densities."""

    def density(t):
        return w * stats.norm.pdf(t, -m, s) + (1 - w) * stats.norm.pdf(t, m, s)

    pieces = [(-np.inf, -m), (-m, m), (m, np.inf)]
    total = sum(
        integrate.quad(lambda t: density(t) ** beta, a, b, epsabs=0, epsrel=1e-13)[0]
        for a, b in pieces
    )
    return math.log(total)


def gaussian_log_normaliser(beta, s):
    return 0.5 * (1 - beta) * math.log(2 * math.pi * s**2) - 0.5 * math.log(beta)


def test_mixture_checker_accepts_the_reference():
    assert check("ex-mathieu-mixture", mixture_log_normaliser)


@pytest.mark.parametrize(
    "answer, message",
    [
        (
            lambda beta, w, m, s: (
                math.log(w**beta + (1 - w) ** beta) + gaussian_log_normaliser(beta, s)
            ),
            "anneals each component separately",
        ),
        (lambda beta, w, m, s: gaussian_log_normaliser(beta, s), "single Gaussian"),
        (lambda beta, w, m, s: mixture_log_normaliser(beta, w, m, s**0.5), "as a variance"),
        (lambda *a: math.exp(mixture_log_normaliser(*a)), "F_β itself"),
    ],
)
def test_mixture_checker_names_typical_mistakes(answer, message):
    assert_fails("ex-mathieu-mixture", answer, message)


# -- ex-mathieu-constant -----------------------------------------------------------------------


def corollary1_c(d, beta, variance):
    """c of Corollary 1 from its definition, ELBO-side terms collected as in the chapter."""
    log_f = 0.5 * d * (1 - beta) * math.log(2 * math.pi * variance) - 0.5 * d * math.log(beta)
    entropy_constant = 0.5 * d * math.log(2 * math.pi * math.e) - 0.5 * d * math.log(beta)
    return (beta - 1) * entropy_constant + log_f


def test_constant_checker_accepts_the_reference():
    answer = lambda d, beta, k: corollary1_c(d, beta, 0.7 * k) - corollary1_c(d, beta, 0.7)  # noqa: E731
    assert check("ex-mathieu-constant", answer)


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda d, beta, k: 0.5 * d * (beta - 1) * math.log(k), "wrong sign"),
        (lambda d, beta, k: -0.5 * (beta - 1) * math.log(k), "factor d"),
        (lambda d, beta, k: -0.5 * d * beta * math.log(k), "β where β - 1"),
        (lambda d, beta, k: -d * (beta - 1) * math.log(k), "twice"),
    ],
)
def test_constant_checker_names_typical_mistakes(answer, message):
    assert_fails("ex-mathieu-constant", answer, message)


# -- ex-mathieu-rotation-scores ----------------------------------------------------------------


def hoyer_of_rotated(d, theta):
    z = torch.zeros(d, dtype=F64)
    z[0], z[1] = math.cos(theta), math.sin(theta)
    root = math.sqrt(d)
    return (root - z.abs().sum().item() / z.norm().item()) / (root - 1)


def test_rotation_scores_checker_accepts_the_reference():
    assert check("ex-mathieu-rotation-scores", hoyer_of_rotated)


@pytest.mark.parametrize(
    "answer, message",
    [
        (
            lambda d, t: (math.sqrt(d) - math.cos(t) - math.sin(t)) / (math.sqrt(d) - 1),
            "absolute values",
        ),
        (
            lambda d, t: (2**0.5 - abs(math.cos(t)) - abs(math.sin(t))) / (2**0.5 - 1),
            "√2 whatever d",
        ),
        (lambda d, t: hoyer_of_rotated(d, math.radians(t)), "degrees"),
    ],
)
def test_rotation_scores_checker_names_typical_mistakes(answer, message):
    assert_fails("ex-mathieu-rotation-scores", answer, message)


# -- ex-mathieu-anisotropic --------------------------------------------------------------------


def kl_to_diagonal(mu, cov, variances):
    """KL(N(mu, cov) || N(0, diag(variances))) per row, by torch.distributions."""
    q = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov)
    p = torch.distributions.MultivariateNormal(
        torch.zeros_like(mu), covariance_matrix=torch.diag(variances)
    )
    return torch.distributions.kl_divergence(q, p)


def kl_change(mu, cov, variances, R):
    return kl_to_diagonal(mu @ R.T, R @ cov @ R.T, variances) - kl_to_diagonal(mu, cov, variances)


def test_anisotropic_checker_accepts_the_reference():
    assert check("ex-mathieu-anisotropic", kl_change)


def _mean_term(mu, cov, v, R):
    return 0.5 * (((mu @ R.T) ** 2 - mu**2) / v).sum(-1)


def _cov_term(mu, cov, v, R):
    return 0.5 * (torch.diagonal(R @ cov @ R.T - cov, dim1=-2, dim2=-1) / v).sum(-1)


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda mu, cov, v, R: kl_change(mu, cov, v, R.T), "rotates by Rᵀ"),
        (lambda *a: -kl_change(*a), "sign flipped"),
        (_mean_term, "only the mean term"),
        (_cov_term, "only the covariance term"),
        (lambda *a: 2 * kl_change(*a), "twice"),
        (
            lambda mu, cov, v, R: _mean_term(mu, cov, 1 / v, R) + _cov_term(mu, cov, 1 / v, R),
            "variances Λ where the precisions",
        ),
        (lambda mu, cov, v, R: kl_change(mu, cov, v, R).sum(), "one change per row"),
    ],
)
def test_anisotropic_checker_names_typical_mistakes(answer, message):
    assert_fails("ex-mathieu-anisotropic", answer, message)


# -- ex-mathieu-pca-pull -----------------------------------------------------------------------


def expected_penalty_by_monte_carlo(variances, n_rotations=20_000):
    """E_R ½ tr(Λ⁻¹ (R Λ Rᵀ - Λ)) over Haar rotations (scipy's special_ortho_group)."""
    v = np.asarray(variances, dtype=np.float64)
    rotations = stats.special_ortho_group.rvs(len(v), size=n_rotations, random_state=0)
    rotated = np.einsum("rij,j,rij->ri", rotations, v, rotations)  # diag(R Λ Rᵀ)
    return 0.5 * float((rotated.mean(0) / v).sum() - len(v))


def pca_penalty(variances):
    v = torch.as_tensor(variances, dtype=F64)
    return 0.5 * (v.sum() * (1 / v).sum() / len(v) - len(v))


def test_pca_pull_reference_matches_monte_carlo_over_rotations():
    variances = [0.5, 1.0, 2.5]
    assert abs(expected_penalty_by_monte_carlo(variances) - pca_penalty(variances).item()) < 0.02


def test_pca_pull_checker_accepts_the_reference():
    assert check("ex-mathieu-pca-pull", pca_penalty)


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda v: 0.5 * ((1 / v).sum() - len(v)), "total d"),
        (lambda v: -pca_penalty(v), "sign flipped"),
        (lambda v: 2 * pca_penalty(v), "twice"),
        (
            lambda v: 0.5 * ((v.sort().values / v.sort(descending=True).values).sum() - len(v)),
            "worst rotation",
        ),
    ],
)
def test_pca_pull_checker_names_typical_mistakes(answer, message):
    assert_fails("ex-mathieu-pca-pull", answer, message)


# -- ex-mathieu-collapse -----------------------------------------------------------------------


def collapsed_loss(x, variance):
    """Mean -log N(x; x̄, variance I) by torch.distributions."""
    decoder = torch.distributions.Normal(x.mean(0), math.sqrt(variance))
    return -decoder.log_prob(x).sum(-1).mean()


def test_collapse_checker_accepts_the_reference():
    assert check("ex-mathieu-collapse", collapsed_loss)


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda x, v: -collapsed_loss(x, v), "log-likelihood, not the loss"),
        (lambda x, v: (((x - x.mean(0)) ** 2).sum(-1) / (2 * v)).mean(), "normalising constant"),
        (lambda x, v: collapsed_loss(x, v**2), "standard deviation"),
        (
            lambda x, v: collapsed_loss(x, v) + (((x - x.mean(0)) ** 2).sum(-1) / (2 * v)).mean(),
            "misses the 1/2",
        ),
        (lambda x, v: collapsed_loss(x, v) / x.shape[1], "averages over pixels"),
        (lambda x, v: collapsed_loss(x, v) * len(x), "sums over the images"),
        (
            lambda x, v: (
                collapsed_loss(x, v) + (x.mean(0) ** 2).sum() / (2 * v)
            ),  # the mean image's offset from 0
            "centres the images at 0",
        ),
    ],
)
def test_collapse_checker_names_typical_mistakes(answer, message):
    assert_fails("ex-mathieu-collapse", answer, message)


# -- answers of the wrong kind -----------------------------------------------------------------

LABELS = [
    "ex-mathieu-laplace",
    "ex-mathieu-student",
    "ex-mathieu-mixture",
    "ex-mathieu-constant",
    "ex-mathieu-rotation-scores",
    "ex-mathieu-anisotropic",
    "ex-mathieu-pca-pull",
    "ex-mathieu-collapse",
]


@pytest.mark.parametrize("label", LABELS)
def test_checkers_reject_a_number_where_a_function_is_asked(label):
    with pytest.raises(TypeError, match=r"^answer must be a function"):
        check(label, 0.5)


@pytest.mark.parametrize("label", LABELS)
def test_checkers_reject_a_function_that_returns_no_number(label):
    with pytest.raises(TypeError, match=r"^answer\(\.\.\.\) on case 0 must be a number"):
        check(label, lambda *args: "no idea")
