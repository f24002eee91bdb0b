"""Answer checkers for the exercises of book/decomposition.md (see :mod:`vaebook.exercises`).

Every checker calls the reader's function on cases the statement does not show and compares
it with a reference computed here, naming the typical mistake it recognises.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from scipy import integrate
from scipy.special import betaln, gammaln

from . import checker, diagnose, evaluate

_F64 = torch.float64


def _values(function, cases) -> np.ndarray:
    """A reference ``function(*case)`` for each case, as a flat float64 array."""
    return evaluate(function, cases, "reference").reshape(-1)


# -- ex-mathieu-laplace: F_β of a product of Laplace densities --------------------------------

_LAPLACE_CASES = [(0.4, 3.0, 2), (1.3, 0.6, 5), (2.5, 1.7, 1), (0.9, 4.5, 3)]  # (b, β, d)


def _laplace_log_normaliser(b, beta, d, *, root=1.0, dims=True):
    """``d [(1 - β) log 2b - root log β]`` (``root=1`` is the reference; ``root=1/2`` the
    Gaussian's ``√β``); ``dims=False`` drops the factor ``d``."""
    one = (1 - beta) * math.log(2 * b) - root * math.log(beta)
    return one * (d if dims else 1)


@checker("ex-mathieu-laplace")
def laplace_normaliser(answer):
    """``answer(b, beta, d)``: ``log F_β`` for the product of ``d`` Laplace(0, b) densities."""
    got = evaluate(answer, _LAPLACE_CASES).reshape(-1)
    expected = _values(_laplace_log_normaliser, _LAPLACE_CASES)
    mistakes = {
        "It has the Gaussian's -1/2 log β: here the annealed density is Laplace with scale "
        "b/β, so one coordinate integrates to (2b)^(-β) · 2b/β.": _values(
            lambda b, beta, d: _laplace_log_normaliser(b, beta, d, root=0.5), _LAPLACE_CASES
        ),
        "It is the normaliser of one coordinate: F_β of a product is the product of the d "
        "one-dimensional integrals.": _values(
            lambda b, beta, d: _laplace_log_normaliser(b, beta, d, dims=False), _LAPLACE_CASES
        ),
        "It has the sign of the (1 - β) log 2b term flipped: p^β carries (2b)^(-β).": _values(
            lambda b, beta, d: d * ((beta - 1) * math.log(2 * b) - math.log(beta)),
            _LAPLACE_CASES,
        ),
        "It misses the -log β: ∫ exp(-β|t|/b) dt = 2b/β, not 2b.": _values(
            lambda b, beta, d: d * (1 - beta) * math.log(2 * b), _LAPLACE_CASES
        ),
        "It is F_β itself: the function should return log F_β.": np.exp(expected),
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-mathieu-student: F_β of a Student-t -----------------------------------------------------

_STUDENT_CASES = [(4.0, 1.5), (2.5, 3.0), (7.0, 0.4), (10.0, 1.0)]  # (ν, β), β(ν + 1) > 1


def _student_log_normaliser(nu, beta, *, power=None, root_nu=True, shift=0.5):
    """``β log c_ν + ½ log ν + log B(½, β(ν+1)/2 - shift)``; ``power`` replaces the β on
    ``log c_ν``, ``root_nu=False`` drops ``½ log ν``."""
    log_c = gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * math.log(nu * math.pi)
    a = beta * (nu + 1) / 2
    power = beta if power is None else power
    return power * log_c + (0.5 * math.log(nu) if root_nu else 0.0) + betaln(0.5, a - shift)


@checker("ex-mathieu-student")
def student_normaliser(answer):
    """``answer(nu, beta)``: ``log ∫ p_ν(t)^β dt`` for the one-dimensional Student-t."""
    got = evaluate(answer, _STUDENT_CASES).reshape(-1)
    expected = _values(_student_log_normaliser, _STUDENT_CASES)
    mistakes = {
        "It raises c_ν to the power 1: the whole density is raised to β, its constant too.": (
            _values(lambda nu, beta: _student_log_normaliser(nu, beta, power=1), _STUDENT_CASES)
        ),
        "It misses the constant c_ν^β altogether.": _values(
            lambda nu, beta: _student_log_normaliser(nu, beta, power=0), _STUDENT_CASES
        ),
        "It has B(1/2, a) where B(1/2, a - 1/2) belongs: recheck the substitution "
        "u = 1/(1 + s²).": _values(
            lambda nu, beta: _student_log_normaliser(nu, beta, shift=0.0), _STUDENT_CASES
        ),
        "It misses the √ν of the substitution t = √ν s.": _values(
            lambda nu, beta: _student_log_normaliser(nu, beta, root_nu=False), _STUDENT_CASES
        ),
        "It is F_β itself: the function should return log F_β.": np.exp(expected),
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-mathieu-mixture: F_β of a two-component Gaussian mixture ------------------------------

# (β, w, m, s): overlapping and separated components, β below and above 1
_MIXTURE_CASES = [
    (2.0, 0.3, 0.4, 0.8),
    (0.6, 0.5, 1.5, 0.4),
    (3.5, 0.8, 0.25, 1.2),
    (1.0, 0.2, 1.0, 0.5),
]


def _mixture_log_normaliser(beta, w, m, s) -> float:
    """``log ∫ [w N(t; -m, s²) + (1 - w) N(t; m, s²)]^β dt`` by adaptive quadrature, relative
    to the density at its larger mode so that the integrand stays near 1."""

    def log_p(t):
        log_a = math.log(w) - 0.5 * ((t + m) / s) ** 2
        log_b = math.log(1 - w) - 0.5 * ((t - m) / s) ** 2
        top = max(log_a, log_b)
        return top + math.log(math.exp(log_a - top) + math.exp(log_b - top))

    peak = max(log_p(-m), log_p(m))
    edges = [-math.inf, -m - 10 * s, -m, m, m + 10 * s, math.inf]
    total = sum(
        integrate.quad(
            lambda t: math.exp(beta * (log_p(t) - peak)), lo, hi, epsabs=0, epsrel=1e-12
        )[0]
        for lo, hi in itertools.pairwise(edges)
    )
    return math.log(total) + beta * (peak - 0.5 * math.log(2 * math.pi * s**2))


def _gaussian_log_normaliser(beta, s) -> float:
    """``log ∫ N(t; 0, s²)^β dt = (1 - β)/2 log(2π s²) - ½ log β``."""
    return 0.5 * (1 - beta) * math.log(2 * math.pi * s**2) - 0.5 * math.log(beta)


@checker("ex-mathieu-mixture")
def mixture_normaliser(answer):
    """``answer(beta, w, m, s)``: ``log F_β`` for ``w N(-m, s²) + (1 - w) N(m, s²)``."""
    got = evaluate(answer, _MIXTURE_CASES).reshape(-1)
    expected = _values(_mixture_log_normaliser, _MIXTURE_CASES)
    mistakes = {
        "It anneals each component separately, Σ_k π_k^β ∫ N_k^β: (Σ_k π_k N_k)^β is not "
        "Σ_k π_k^β N_k^β where the components overlap (the cross terms are missing).": _values(
            lambda beta, w, m, s: (
                math.log(w**beta + (1 - w) ** beta) + _gaussian_log_normaliser(beta, s)
            ),
            _MIXTURE_CASES,
        ),
        "It is the normaliser of a single Gaussian: the mixture weights and the distance "
        "between the means matter.": _values(
            lambda beta, w, m, s: _gaussian_log_normaliser(beta, s), _MIXTURE_CASES
        ),
        "It reads s as a variance: s is the components' standard deviation.": _values(
            lambda beta, w, m, s: _mixture_log_normaliser(beta, w, m, math.sqrt(s)),
            _MIXTURE_CASES,
        ),
        "It is F_β itself: the function should return log F_β.": np.exp(expected),
    }
    return diagnose(got, expected, mistakes, rtol=1e-6, atol=1e-7)


# -- ex-mathieu-constant: how c of Corollary 1 moves with the prior variance -------------------

_CONSTANT_CASES = [(3, 2.5, 4.0), (1, 0.3, 0.2), (6, 1.0, 7.0), (2, 5.0, 1.5)]  # (d, β, k)


@checker("ex-mathieu-constant")
def constant_shift(answer):
    """``answer(d, beta, k)``: ``c(k σ²) - c(σ²)`` for the constant ``c`` of Corollary 1."""
    got = evaluate(answer, _CONSTANT_CASES).reshape(-1)
    expected = _values(lambda d, beta, k: -0.5 * d * (beta - 1) * math.log(k), _CONSTANT_CASES)
    mistakes = {
        "It has the wrong sign: for β > 1 a wider prior lowers c.": -expected,
        "It misses the factor d: each latent contributes its own (β - 1)/2 log k.": _values(
            lambda d, beta, k: -0.5 * (beta - 1) * math.log(k), _CONSTANT_CASES
        ),
        "It has β where β - 1 belongs: at β = 1 the constant is 0 for every prior variance.": (
            _values(lambda d, beta, k: -0.5 * d * beta * math.log(k), _CONSTANT_CASES)
        ),
        "It is twice the shift: k multiplies the variance σ², not the standard deviation.": (
            2 * expected
        ),
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-mathieu-rotation-scores: the Hoyer score of a rotated one-hot code ---------------------

_HOYER_CASES = [(2, 0.3), (5, 2.5), (10, -1.1), (3, math.pi / 4)]  # (d, θ in radians)


def _hoyer_rotated(d, theta, *, root=None, absolute=True):
    """Hoyer score of ``cos θ e_1 + sin θ e_2`` in ``R^d`` (``root`` replaces ``√d``)."""
    root = math.sqrt(d) if root is None else root
    c, s = math.cos(theta), math.sin(theta)
    l1 = abs(c) + abs(s) if absolute else c + s
    return (root - l1) / (root - 1)


@checker("ex-mathieu-rotation-scores")
def hoyer_rotated(answer):
    """``answer(d, theta)``: Hoyer score of the code ``e_1`` rotated by θ towards ``e_2``."""
    got = evaluate(answer, _HOYER_CASES).reshape(-1)
    expected = _values(_hoyer_rotated, _HOYER_CASES)
    mistakes = {
        "It forgets the absolute values of the L1 norm: cos θ or sin θ can be negative.": (
            _values(lambda d, t: _hoyer_rotated(d, t, absolute=False), _HOYER_CASES)
        ),
        "It uses √2 whatever d: the score's √d is that of the whole code.": _values(
            lambda d, t: _hoyer_rotated(d, t, root=math.sqrt(2)), _HOYER_CASES
        ),
        "It reads θ in degrees: θ is in radians.": _values(
            lambda d, t: _hoyer_rotated(d, math.radians(t)), _HOYER_CASES
        ),
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-mathieu-anisotropic: the KL to N(0, Λ) of a rotated encoder ---------------------------


def _anisotropic_cases():
    """Three sets of (mu (n, d), cov (n, d, d), variances (d,), R (d, d)), float64."""
    gen = torch.Generator().manual_seed(20190601)
    cases = []
    for n, d in ((4, 2), (3, 3), (5, 4)):
        mu = torch.randn(n, d, generator=gen, dtype=_F64)
        a = torch.randn(n, d, d, generator=gen, dtype=_F64)
        cov = a @ a.mT / d + 0.2 * torch.eye(d, dtype=_F64)
        variances = 0.3 + 2 * torch.rand(d, generator=gen, dtype=_F64)
        q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=_F64))
        cases.append((mu, cov, variances, q * torch.sign(torch.diagonal(r))))
    return cases


def _kl_change(mu, cov, variances, R, *, mean=True, covariance=True, precision=True):
    """``KL(N(Rμ, RSRᵀ) || N(0, Λ)) - KL(N(μ, S) || N(0, Λ))`` per row; the flags drop the
    mean or the covariance term, or use Λ where Λ⁻¹ belongs."""
    weights = 1 / variances if precision else variances
    rotated_mu, rotated_cov = mu @ R.T, R @ cov @ R.T
    change = torch.zeros(mu.shape[0], dtype=_F64)
    if mean:
        change = change + (rotated_mu**2 * weights).sum(-1) - (mu**2 * weights).sum(-1)
    if covariance:
        diagonal = torch.diagonal(rotated_cov - cov, dim1=-2, dim2=-1)
        change = change + (diagonal * weights).sum(-1)
    return 0.5 * change


def _stack(function, cases) -> np.ndarray:
    return np.concatenate([function(*case).numpy() for case in cases])


@checker("ex-mathieu-anisotropic")
def anisotropic_kl_change(answer):
    """``answer(mu, cov, variances, R)``: per-row change of ``KL(q || N(0, diag(variances)))``
    when the full-covariance encoder ``N(mu, cov)`` is rotated to ``N(R mu, R cov Rᵀ)``."""
    cases = _anisotropic_cases()
    got = np.concatenate([evaluate(answer, [case]).reshape(-1) for case in cases])
    expected = _stack(_kl_change, cases)
    mistakes = {
        "It rotates by Rᵀ: the rotated encoder is N(R μ, R S Rᵀ).": _stack(
            lambda mu, cov, v, R: _kl_change(mu, cov, v, R.T), cases
        ),
        "It has the sign flipped: return KL after the rotation minus KL before.": -expected,
        "It has only the mean term: the covariance term tr(Λ⁻¹ R S Rᵀ) changes too.": _stack(
            lambda mu, cov, v, R: _kl_change(mu, cov, v, R, covariance=False), cases
        ),
        "It has only the covariance term: the mean term (Rμ)ᵀ Λ⁻¹ (Rμ) changes too.": _stack(
            lambda mu, cov, v, R: _kl_change(mu, cov, v, R, mean=False), cases
        ),
        "It is twice the change: the KL between Gaussians carries a factor 1/2.": 2 * expected,
        "It weighs by the variances Λ where the precisions Λ⁻¹ belong.": _stack(
            lambda mu, cov, v, R: _kl_change(mu, cov, v, R, precision=False), cases
        ),
    }
    if got.shape != expected.shape:
        return False, (
            f"It returns {got.size} numbers for {expected.size} encodings: return one change "
            "per row of mu, shape (n,)."
        )
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-mathieu-pca-pull: the expected KL penalty of a random rotation ---------------------------

_PULL_CASES = [
    (torch.tensor(v, dtype=_F64),)
    for v in ([0.5, 1.0, 2.5], [3.0, 0.2], [1.2, 0.9, 0.6, 0.4, 0.3], [1.0] * 4)
]


def _rotation_penalty(variances, *, total=None, half=0.5):
    """``½ (Σλ Σ1/λ / d - d)``; ``total`` replaces ``Σλ`` (``d``: assumes the variances total
    ``d``)."""
    v = np.asarray(variances, dtype=np.float64)
    total = v.sum() if total is None else total
    return half * (total * (1 / v).sum() / v.size - v.size)


@checker("ex-mathieu-pca-pull")
def pca_pull(answer):
    """``answer(variances)``: expected change of the data-averaged KL to ``N(0, diag(λ))``
    under a Haar-random rotation, for a code whose second moment is ``diag(λ)``."""
    got = evaluate(answer, _PULL_CASES).reshape(-1)
    expected = _values(_rotation_penalty, _PULL_CASES)
    mistakes = {
        "It assumes the variances total d, as the chapter's PCA prior does: here they need "
        "not, and E_R[R M Rᵀ] = (tr M / d) I.": _values(
            lambda v: _rotation_penalty(v, total=len(v)), _PULL_CASES
        ),
        "It has the sign flipped: a random rotation costs KL, it does not save any.": -expected,
        "It is twice the penalty: the KL between Gaussians carries a factor 1/2.": 2 * expected,
        "It is the worst rotation (largest code variance on the smallest prior variance), not "
        "the average over random rotations.": _values(
            lambda v: 0.5 * float((np.sort(v) / np.sort(v)[::-1]).sum() - len(v)), _PULL_CASES
        ),
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-mathieu-collapse: the reconstruction loss of a collapsed model -------------------------


def _collapse_cases():
    """Three (x (n, D), variance) pairs, float64."""
    gen = torch.Generator().manual_seed(7)
    return [
        (torch.rand(20, 6, generator=gen, dtype=_F64), 0.05),
        (1 + 2 * torch.randn(7, 3, generator=gen, dtype=_F64), 1.3),
        (torch.rand(12, 10, generator=gen, dtype=_F64) ** 2, 0.2),
    ]


def _collapsed_loss(x, variance, *, centre=True, normaliser=True, half=0.5, per_pixel=False):
    """Mean over rows of ``-log N(x; x̄, variance I)``; the flags give the typical mistakes."""
    mean = x.mean(0) if centre else torch.zeros_like(x[0])
    squares = ((x - mean) ** 2).sum(-1)
    constant = 0.5 * x.shape[1] * math.log(2 * math.pi * variance) if normaliser else 0.0
    loss = (half * squares / variance + constant).mean().item()
    return loss / x.shape[1] if per_pixel else loss


@checker("ex-mathieu-collapse")
def collapsed_loss(answer):
    """``answer(x, variance)``: mean over images of ``-log N(x; x̄, variance I)``."""
    cases = _collapse_cases()
    got = evaluate(answer, cases).reshape(-1)
    expected = _values(_collapsed_loss, cases)
    mistakes = {
        "It is the log-likelihood, not the loss: return -log N, a number to minimise.": (-expected),
        "It misses the normalising constant D/2 log(2π σ²) of the Gaussian decoder.": _values(
            lambda x, v: _collapsed_loss(x, v, normaliser=False), cases
        ),
        "It reads the variance as a standard deviation.": _values(
            lambda x, v: _collapsed_loss(x, v**2), cases
        ),
        "It misses the 1/2 of the squared error term.": _values(
            lambda x, v: _collapsed_loss(x, v, half=1.0), cases
        ),
        "It averages over pixels: the loss of an image sums over its D pixels.": _values(
            lambda x, v: _collapsed_loss(x, v, per_pixel=True), cases
        ),
        "It sums over the images: return the mean over the n images.": expected
        * np.array([len(x) for x, _ in cases]),
        "It centres the images at 0: the best constant output is the mean image x̄.": _values(
            lambda x, v: _collapsed_loss(x, v, centre=False), cases
        ),
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)
