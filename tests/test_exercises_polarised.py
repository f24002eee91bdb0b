"""The checkers of book/polarised.md's exercises (:mod:`vaebook.exercises.polarised`).

Each reference answer is computed here independently of the checker's own reference; each
typical mistake must fail with its message; answers of the wrong kind must raise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from vaebook.exercises import check

LABELS = ("passive", "active", "mixed")


def precision(J, prior_var, gamma):
    """A = Σ†⁻¹ + JᵀJ/γ."""
    return torch.diag(1 / prior_var) + J.T @ J / gamma


def hadamard_gap(J, prior_var, gamma):
    A = precision(J, prior_var, gamma)
    return 0.5 * (torch.log(torch.diagonal(A)).sum() - torch.logdet(A))


def labels_from_shares(active, passive, consistency=0.95):
    """Dataset labels from per-input masks (n, κ)."""
    out = np.full(active.shape[1], "mixed", dtype=object)
    out[passive.mean(0) >= consistency] = "passive"
    out[active.mean(0) >= consistency] = "active"
    return list(out)


def assert_fails_with(label, answer, message):
    feedback = check(label, answer)
    assert not feedback and message in feedback.message, feedback.message


# -- ex-pol-diagonal ----------------------------------------------------------------------------


def test_diagonal_gap_accepts_the_hadamard_formula():
    assert check("ex-pol-diagonal", hadamard_gap)
    assert check("ex-pol-diagonal", lambda *a: float(hadamard_gap(*a)))


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda *a: 2 * hadamard_gap(*a), "twice the gap"),
        (lambda *a: -hadamard_gap(*a), "wrong sign"),
        (
            lambda J, v, g: (
                0.5
                * (
                    torch.log(torch.diagonal(torch.diag(v) + J.T @ J / g)).sum()
                    - torch.logdet(torch.diag(v) + J.T @ J / g)
                )
            ),
            "prior's variances",
        ),
        (
            lambda J, v, g: (
                0.5 * (torch.log(torch.diagonal(J.T @ J / g)).sum() - torch.logdet(J.T @ J / g))
            ),
            "leaves the prior's precision out",
        ),
        (lambda *a: 0.1, "differs from the reference"),
    ],
)
def test_diagonal_gap_names_typical_mistakes(answer, message):
    assert_fails_with("ex-pol-diagonal", answer, message)


def test_diagonal_gap_rejects_answers_of_the_wrong_kind():
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-pol-diagonal", 0.6)
    with pytest.raises(ValueError, match=r"answer must return an array of shape \(\)"):
        check("ex-pol-diagonal", lambda J, v, g: torch.zeros(2))
    with pytest.raises(TypeError, match="the value answer returns must be a number"):
        check("ex-pol-diagonal", lambda J, v, g: "0.5")


# -- ex-pol-slope -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda d, k, r: d / 2, "normaliser alone"),
        (lambda d, k, r: (d - k) / 2, "counts every latent"),
        (lambda d, k, r: d - r, "twice the slope"),
        (lambda d, k, r: (d + r) / 2, "wrong sign"),
        (lambda d, k, r: r / 2, "differs from the reference"),
    ],
)
def test_slope_names_typical_mistakes(answer, message):
    assert_fails_with("ex-pol-slope", answer, message)


def test_slope_accepts_d_minus_r_over_2_and_rejects_a_number():
    assert check("ex-pol-slope", lambda d, kappa, r: (d - r) / 2)
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-pol-slope", 4.5)


# -- ex-pol-pixel-noise -------------------------------------------------------------------------


def pixel_noise_covariance(J, prior_var, noise_var):
    return torch.linalg.inv(torch.diag(1 / prior_var) + J.T @ torch.diag(1 / noise_var) @ J)


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda J, v, n: pixel_noise_covariance(J, v, 1 / n), "multiplies J by the noise"),
        (lambda J, v, n: pixel_noise_covariance(J, v, n**2), "1/γ_k²"),
        (lambda J, v, n: pixel_noise_covariance(J, v, n.mean().expand_as(n)), "their mean"),
        (lambda *a: torch.linalg.inv(pixel_noise_covariance(*a)), "returns the precision"),
        (
            lambda J, v, n: torch.linalg.inv(torch.diag(v) + J.T @ torch.diag(1 / n) @ J),
            "prior's variances",
        ),
        (lambda J, v, n: torch.diag(v), "differs from the reference"),
    ],
)
def test_pixel_noise_names_typical_mistakes(answer, message):
    assert_fails_with("ex-pol-pixel-noise", answer, message)


def test_pixel_noise_accepts_the_whitened_eq_11_and_rejects_wrong_shapes():
    assert check("ex-pol-pixel-noise", pixel_noise_covariance)
    assert check("ex-pol-pixel-noise", lambda *a: pixel_noise_covariance(*a).numpy().tolist())
    with pytest.raises(ValueError, match="answer must return an array of shape"):
        check("ex-pol-pixel-noise", lambda J, v, n: torch.diagonal(pixel_noise_covariance(J, v, n)))
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-pol-pixel-noise", torch.eye(3))


# -- ex-pol-full-covariance ---------------------------------------------------------------------


def conditioned_ratios(J, prior_var):
    """Σ† - Σ†Jᵀ(JΣ†Jᵀ)⁺JΣ†: the prior conditioned on Jz = 0 (Gaussian conditioning)."""
    S = torch.diag(prior_var)
    conditioned = S - S @ J.T @ torch.linalg.pinv(J @ S @ J.T, hermitian=True) @ J @ S
    return torch.diagonal(conditioned) / prior_var


def null_projector(J):
    rank = int(torch.linalg.matrix_rank(J))
    N = torch.linalg.svd(J)[2][rank:].T
    return N @ N.T


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda J, v: ((J**2).sum(0) == 0).double(), "*diagonal* encoder"),
        (lambda J, v: torch.diagonal(null_projector(J)), "orthogonal projector"),
        (
            lambda J, v: torch.diagonal(null_projector(J) @ torch.diag(v) @ null_projector(J)) / v,
            "restricts Σ†",
        ),
        (lambda J, v: conditioned_ratios(J, v) * v, "limiting variances"),
        (lambda J, v: torch.full_like(v, 0.5), "differs from the reference"),
    ],
)
def test_full_covariance_names_typical_mistakes(answer, message):
    assert_fails_with("ex-pol-full-covariance", answer, message)


def test_full_covariance_accepts_the_conditioned_prior_and_a_small_gamma_limit():
    assert check("ex-pol-full-covariance", conditioned_ratios)
    # the limit read off eq. (11) at a tiny γ, as a reader may do it numerically
    from vaebook import local_geometry as geo

    assert check(
        "ex-pol-full-covariance",
        lambda J, v: torch.diagonal(geo.optimal_posterior_covariance(J, v, 1e-12)) / v,
    )
    with pytest.raises(ValueError, match="answer must return an array of shape"):
        check("ex-pol-full-covariance", lambda J, v: conditioned_ratios(J, v)[:-1])


# -- ex-pol-predict -----------------------------------------------------------------------------


def predicted_labels(sq_norms, prior_var, gamma):
    """Active at input i when σ†_j |J_ij|² > γ (ratio below 1/2); means at the prior mean."""
    active = (prior_var * sq_norms > gamma).numpy()
    return labels_from_shares(active, ~active)


@pytest.mark.parametrize(
    "answer, message",
    [
        (
            lambda s, v, g: labels_from_shares((v * s <= g).numpy(), (v * s > g).numpy()),
            "swapped",
        ),
        (lambda s, v, g: labels_from_shares((s > g).numpy(), (s <= g).numpy()), "|J_j|² with γ"),
        (
            lambda s, v, g: labels_from_shares(
                (v * g / (g + v * s) < 0.5).numpy(), (v * g / (g + v * s) >= 0.5).numpy()
            ),
            "variance σ*_j itself",
        ),
        (
            lambda s, v, g: labels_from_shares((v * s > g).numpy(), (v * s <= g).numpy(), 0.5001),
            "No latent can be mixed",
        ),
        (lambda s, v, g: ["active"] * s.shape[1], "differs from the reference"),
    ],
)
def test_predict_names_typical_mistakes(answer, message):
    assert_fails_with("ex-pol-predict", answer, message)


def test_predict_accepts_the_rule_and_rejects_bad_labels():
    assert check("ex-pol-predict", predicted_labels)
    assert check("ex-pol-predict", lambda *a: np.array(predicted_labels(*a)))
    with pytest.raises(TypeError, match="answer must return a sequence of 8 labels"):
        check("ex-pol-predict", lambda *a: "active")
    with pytest.raises(ValueError, match="answer must return 8 labels"):
        check("ex-pol-predict", lambda *a: predicted_labels(*a)[:-1])
    with pytest.raises(ValueError, match="labels among"):
        check("ex-pol-predict", lambda *a: ["on"] * 8)
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-pol-predict", ["active"] * 8)


# -- ex-pol-thresholds --------------------------------------------------------------------------


def classify(mu, var, prior_mu, prior_var, variance_ratio, consistency):
    """The chapter's rule in numpy."""
    active = var / prior_var < variance_ratio
    near = np.abs(mu - prior_mu) <= 0.5 * np.sqrt(prior_var)
    return labels_from_shares(active, ~active & near, consistency)


def mistaken(*, ratio=None, near=None, consistency=None):
    """``classify`` with one piece replaced: each a function of the arguments."""

    def answer(mu, var, prior_mu, prior_var, t, c):
        active = ratio(mu, var, prior_mu, prior_var, t) if ratio else var / prior_var < t
        close = (
            near(mu, var, prior_mu, prior_var)
            if near
            else np.abs(mu - prior_mu) <= 0.5 * np.sqrt(prior_var)
        )
        passive = ~active & close
        if consistency:
            out = np.full(mu.shape[1], "mixed", dtype=object)
            out[passive.mean(0) > c] = "passive"
            out[active.mean(0) > c] = "active"
            return list(out)
        return labels_from_shares(active, passive, c)

    return answer


@pytest.mark.parametrize(
    "answer, message",
    [
        (mistaken(near=lambda mu, var, pm, pv: np.ones_like(mu, dtype=bool)), "mean condition"),
        (
            mistaken(
                ratio=lambda mu, var, pm, pv, t: np.broadcast_to((var / pv).mean(0) < t, mu.shape)
            ),
            "averages the ratio",
        ),
        (mistaken(ratio=lambda mu, var, pm, pv, t: var < t), "variance σ_j itself"),
        (mistaken(near=lambda mu, var, pm, pv: np.abs(mu - pm) <= 0.5 * pv), "not in variances"),
        (mistaken(near=lambda mu, var, pm, pv: np.abs(mu) <= 0.5 * np.sqrt(pv)), "from 0"),
        (mistaken(consistency=True), "uses ≥"),
        (mistaken(ratio=lambda mu, var, pm, pv, t: var / pv <= t), "strictly below"),
        (lambda mu, var, pm, pv, t, c: classify(mu, var, pm, pv, 0.5, 0.95), "differs"),
    ],
)
def test_thresholds_names_typical_mistakes(answer, message):
    assert_fails_with("ex-pol-thresholds", answer, message)


def test_thresholds_accepts_the_rule_from_scratch():
    assert check("ex-pol-thresholds", classify)
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-pol-thresholds", classify(*[np.ones((3, 2))] * 4, 0.5, 0.95))


# -- ex-pol-mixed-shrink ------------------------------------------------------------------------


def shrink_w1(rho):
    """W1 between N(0, ρ) and N(0, 1) over the sd √ρ, from the quantile functions."""
    u = (np.arange(200_000) + 0.5) / 200_000
    return float(np.mean(np.abs(np.sqrt(rho) - 1) * np.abs(norm.ppf(u))) / np.sqrt(rho))


def closed_w1(rho):
    return abs(rho**-0.5 - 1) * math.sqrt(2 / math.pi)


def test_mixed_shrink_accepts_the_closed_form_that_the_quantile_integral_confirms():
    assert all(abs(shrink_w1(r) - closed_w1(r)) < 1e-4 for r in (0.3, 0.9, 1.4))
    assert check("ex-pol-mixed-shrink", closed_w1)


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda rho: abs(rho**-0.5 - 1), "Wasserstein-2"),
        (lambda rho: abs(1 - rho**0.5) * math.sqrt(2 / math.pi), "prior's standard deviation"),
        (lambda rho: abs(1 / rho - 1) * math.sqrt(2 / math.pi), "ratio of standard deviations"),
        (lambda rho: (rho**-0.5 - 1) * math.sqrt(2 / math.pi), "cannot be negative"),
        (lambda rho: 0.0, "differs from the reference"),
    ],
)
def test_mixed_shrink_names_typical_mistakes(answer, message):
    assert_fails_with("ex-pol-mixed-shrink", answer, message)


def test_mixed_shrink_rejects_a_number():
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-pol-mixed-shrink", 0.14)


# -- ex-pol-prior-balance -----------------------------------------------------------------------


def balance_by_minimising(m, a):
    """argmin over s of ½[m/s + log(1 + s a)], by a bounded scalar search on log s."""
    from scipy.optimize import minimize_scalar

    cost = lambda log_s: 0.5 * (m / math.exp(log_s) + math.log1p(math.exp(log_s) * a))  # noqa: E731
    found = minimize_scalar(cost, bounds=(-30, 30), method="bounded", options={"xatol": 1e-12})
    return math.exp(found.x)


def balance(m, a):
    return m / 2 + math.sqrt(m**2 / 4 + m / a)


def test_prior_balance_accepts_the_root_that_a_numerical_minimiser_finds():
    for m, a in ((0.5, 0.1), (0.03, 2.0), (1e-3, 1e-4)):
        assert balance_by_minimising(m, a) == pytest.approx(balance(m, a), rel=1e-6)
    assert check("ex-pol-prior-balance", balance)


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda m, a: math.sqrt(m / a), "encoder's variance held at s"),
        (lambda m, a: m / a, "misses a square root"),
        (lambda m, a: math.sqrt(a / m), "upside down"),
        (lambda m, a: m / 2 - math.sqrt(m**2 / 4 + m / a), "negative root"),
        (lambda m, a: m + 2 * math.sqrt(m**2 / 4 + m / a), "twice the root"),
        (lambda m, a: 1.0, "differs from the reference"),
    ],
)
def test_prior_balance_names_typical_mistakes(answer, message):
    assert_fails_with("ex-pol-prior-balance", answer, message)


# -- ex-pol-sampled -----------------------------------------------------------------------------


def contrast(mu, var):
    noise = var.mean(0)
    return float(np.mean(noise / (mu.var(0) + noise)))


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda mu, var: var.mean(0).sum() / (mu.var(0) + var.mean(0)).sum(), "standardise"),
        (lambda mu, var: np.mean(var.mean(0) / mu.var(0)), "Var(μ_j) alone"),
        (lambda mu, var: contrast(mu, var) * mu.shape[1], "sums over the latents"),
        (lambda mu, var: 2 * contrast(mu, var), "twice the ratio"),
        (lambda mu, var: contrast(mu, var) / 2, "half the ratio"),
        (lambda mu, var: 0.9, "differs from the reference"),
    ],
)
def test_sampled_names_typical_mistakes(answer, message):
    assert_fails_with("ex-pol-sampled", answer, message)


def test_sampled_accepts_the_contrast_with_either_variance_convention():
    assert check("ex-pol-sampled", contrast)
    assert check(
        "ex-pol-sampled",
        lambda mu, var: np.mean(var.mean(0) / (mu.var(0, ddof=1) + var.mean(0))),
    )
    with pytest.raises(ValueError, match=r"answer must return an array of shape \(\)"):
        check("ex-pol-sampled", lambda mu, var: var.mean(0))


# -- ex-pol-rescale -----------------------------------------------------------------------------


def kl_by_torch(q, rho):
    """The KL of N(√q, ρ) from N(0, 1), by torch.distributions in float64."""
    loc, scale = torch.tensor([math.sqrt(q), math.sqrt(rho)], dtype=torch.float64)
    standard = torch.distributions.Normal(torch.zeros((), dtype=torch.float64), 1.0)
    return float(
        torch.distributions.kl_divergence(torch.distributions.Normal(loc, scale), standard)
    )


def test_rescale_accepts_the_kl_of_two_ratios():
    assert check("ex-pol-rescale", kl_by_torch)
    assert check("ex-pol-rescale", lambda q, rho: 0.5 * (rho + q - 1 - math.log(rho)))


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda q, rho: rho + q - 1 - math.log(rho), "twice the KL"),
        (lambda q, rho: 0.5 * (rho + q - math.log(rho)), "constant -1/2"),
        (lambda q, rho: 0.5 * (rho + q - 1 + math.log(rho)), "wrong sign"),
        (lambda q, rho: 0.5 * (rho**2 + q - 1 - 2 * math.log(rho)), "standard deviations"),
        (lambda q, rho: q, "differs from the reference"),
    ],
)
def test_rescale_names_typical_mistakes(answer, message):
    assert_fails_with("ex-pol-rescale", answer, message)


def test_every_polarised_checker_rejects_a_number_where_a_function_is_asked():
    labels = [
        "ex-pol-diagonal",
        "ex-pol-slope",
        "ex-pol-pixel-noise",
        "ex-pol-full-covariance",
        "ex-pol-predict",
        "ex-pol-thresholds",
        "ex-pol-mixed-shrink",
        "ex-pol-prior-balance",
        "ex-pol-sampled",
        "ex-pol-rescale",
    ]
    for label in labels:
        with pytest.raises(TypeError, match="answer must be a function"):
            check(label, 1.0)
