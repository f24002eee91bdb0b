"""Answer checkers for the exercises of book/two_stage.md (see :mod:`vaebook.exercises`).

Every reference here is a closed form in numpy float64, written independently of the kernels
in :mod:`vaebook.two_stage`; the cases are not those of the statements.
"""

from __future__ import annotations

import math

import numpy as np

from . import checker, diagnose, evaluate

LOG_2PI = math.log(2 * math.pi)


def _kl_variance(v):
    """``KL(N(0, v) || N(0, 1))`` for a variance ``v > 0`` (numpy, elementwise)."""
    return 0.5 * (v - 1 - np.log(v))


def _per_case(answer, cases, shapes) -> tuple[list[np.ndarray], str | None]:
    """The answer on each case, and a message when a result has not the shape in ``shapes``."""
    values = [evaluate(answer, [case])[0] for case in cases]
    for value, shape in zip(values, shapes, strict=True):
        if value.shape != shape:
            return values, f"It must return an array of shape {shape}, got shape {value.shape}."
    return values, None


# -- ex-dw-extra-latents: unused latents with encoder variance v ------------------------------

_EXTRA_CASES = [(0.4, 2), (1.8, 1), (0.05, 4), (1.0, 3), (3.0, 5)]  # (v, n_extra)


@checker("ex-dw-extra-latents")
def extra_latents(answer):
    """``answer(v, n_extra)``: how much the KL gap grows when the encoder gives each of the
    ``n_extra`` latents the decoder ignores the variance ``v`` instead of 1."""
    got = evaluate(answer, _EXTRA_CASES).reshape(-1)
    v, n = np.array(_EXTRA_CASES, dtype=np.float64).T
    expected = n * _kl_variance(v)
    mistakes = {
        "It is the divergence the other way round, KL(p(z|x) || q): the gap is KL(q || p(z|x)), "
        "an expectation under the encoder.": n * 0.5 * (1 / v - 1 + np.log(v)),
        "It is twice the increase: look for a factor 1/2.": 2 * expected,
        "It is the share of one latent: each of the n_extra latents adds its own term.": (
            _kl_variance(v)
        ),
        "It reads v as a standard deviation: v is the encoder's variance.": n * _kl_variance(v**2),
        "Its sign is wrong: a mismatched factor can only add to a KL divergence.": -expected,
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-dw-gaussian: the optimal cost of the linear VAE ---------------------------------------

_SPECTRUM = np.array([2.5, 0.8, 0.3, 0.05])
_PPCA_CASES = [
    (_SPECTRUM, 0.01),
    (_SPECTRUM, 0.2),
    (_SPECTRUM, 1.0),
    (_SPECTRUM, 4.0),
    (np.array([1.5, 0.6, 0.0]), 0.03),  # data on a plane in R^3
    (np.array([0.9, 0.0, 0.0, 0.0]), 0.5),
]


def _ppca_cost(s, gamma, model):
    """``1/2 sum_i (log 2π + log c_i + s_i / c_i)`` for the model variances ``c = model(s, γ)``."""
    c = model(s, gamma)
    return 0.5 * np.sum(LOG_2PI + np.log(c) + s / c)


@checker("ex-dw-gaussian")
def gaussian_cost(answer):
    """``answer(s, gamma)``: the optimal average ``-log p_θ(x)`` of the linear VAE with decoder
    variance γ, for data whose covariance has the eigenvalues ``s`` (a numpy array)."""
    got = evaluate(answer, _PPCA_CASES).reshape(-1)

    def costs(model):
        return np.array([_ppca_cost(s, g, model) for s, g in _PPCA_CASES])

    expected = costs(np.maximum)
    mistakes = {
        "It uses the model variances s_i + γ: the optimal decoder has singular values "
        "sqrt(s_i - γ) where s_i > γ and none elsewhere, so the model keeps max(s_i, γ).": costs(
            lambda s, g: s + g
        ),
        "It drops s_i / c_i where s_i < γ: a direction below γ costs log γ + s_i / γ, not "
        "log γ + 1.": np.array(
            [0.5 * np.sum(LOG_2PI + np.log(np.maximum(s, g)) + 1) for s, g in _PPCA_CASES]
        ),
        "It misses the constant 1/2 log 2π of each dimension.": expected
        - 0.5 * LOG_2PI * np.array([len(s) for s, _ in _PPCA_CASES]),
        "It is twice the cost: look for the factor 1/2.": 2 * expected,
        "It is the model without latents, covariance γ I: the optimum uses a latent wherever "
        "s_i > γ.": costs(lambda s, g: np.full_like(s, g)),
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-dw-kl-rate: the KL of the optimal encoder covariance ----------------------------------

_KL_RATE_CASES = [
    (np.array([4.0, 0.5, 0.0, 0.0, 0.0]), 1e-3),
    (np.array([4.0, 0.5, 0.0, 0.0, 0.0]), 0.1),
    (np.array([4.0, 0.5, 0.0, 0.0, 0.0]), 2.0),
    (np.array([1.0, 1.0, 0.2]), 0.05),
    (np.array([0.0, 0.0]), 0.3),
]


def _kl_covariance(S, gamma, eigenvalues):
    """``1/2 (tr Σ - log|Σ| - κ)`` for the eigenvalues of Σ given by ``eigenvalues(S, γ)``."""
    e = eigenvalues(S, gamma)
    return 0.5 * np.sum(e - 1 - np.log(e))


@checker("ex-dw-kl-rate")
def kl_rate(answer):
    """``answer(S, gamma)``: ``1/2 (tr Σ_z - log|Σ_z| - κ)`` for ``Σ_z = (I + J^T J / γ)^{-1}``,
    from the eigenvalues ``S`` of ``J^T J`` (a numpy array of length κ, zeros included)."""
    got = evaluate(answer, _KL_RATE_CASES).reshape(-1)

    def kls(eigenvalues):
        return np.array([_kl_covariance(S, g, eigenvalues) for S, g in _KL_RATE_CASES])

    def small_gamma(S, g):  # eigenvalues γ / S_i for the used directions, 1 for the others
        return np.where(S > 0, g / np.where(S > 0, S, 1.0), 1.0)

    expected = kls(lambda S, g: 1 / (1 + S / g))
    mistakes = {
        "It misses the trace term: tr Σ_z - κ does not vanish, it is -Σ_i S_i / (γ + S_i).": (
            np.array([0.5 * np.sum(np.log1p(S / g)) for S, g in _KL_RATE_CASES])
        ),
        "It takes 1 + S_i / γ, the eigenvalues of the precision, for those of Σ_z.": kls(
            lambda S, g: 1 + S / g
        ),
        "It is the small-γ approximation (eigenvalues γ / S_i); the exact eigenvalues are "
        "1 / (1 + S_i / γ).": kls(small_gamma),
        "It is twice the KL: look for the factor 1/2.": 2 * expected,
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-dw-gamma-star: the best decoder variance for a fixed decoder --------------------------

_GAMMA_STAR_CASES = [(3.2, 4), (0.5, 64), (12.0, 16), (0.02, 1)]  # (E ||x - f||^2, d)


def _profile(sq_err, d, gamma):
    """``[γ, E_q log N(x | f(z), γ I)]`` when ``E_q ||x - f(z)||^2 = sq_err``."""
    return [gamma, -0.5 * d * math.log(2 * math.pi * gamma) - sq_err / (2 * gamma)]


@checker("ex-dw-gamma-star")
def gamma_star(answer):
    """``answer(sq_err, d)``: ``[γ*, the objective at γ*]`` for ``E_q ||x - f(z)||² = sq_err``."""
    got = evaluate(answer, _GAMMA_STAR_CASES)
    expected = np.array([_profile(e, d, e / d) for e, d in _GAMMA_STAR_CASES])
    mistakes = {
        "γ* is a variance per dimension: divide the squared error by d.": np.array(
            [[e, -0.5 * d * math.log(2 * math.pi * math.e * e)] for e, d in _GAMMA_STAR_CASES]
        ),
        "The objective misses the squared-error term at γ*, which is -d/2 there (the e in "
        "log 2πeγ*).": np.array(
            [[e / d, -0.5 * d * math.log(2 * math.pi * e / d)] for e, d in _GAMMA_STAR_CASES]
        ),
        "The objective's sign is wrong: it is an expected log-likelihood.": expected
        * np.array([1.0, -1.0]),
    }
    if got.shape != expected.shape:
        return False, f"It must return two numbers, [γ*, objective], got shape {got.shape[1:]}."
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-dw-scratch: the VAE cost with a learned decoder variance ------------------------------


def _scratch_case(seed, n, d, k, log_gamma):
    """Random ``(x, x_hat, mu, logvar, log_gamma)`` as float64 tensors (a VAE's batch)."""
    import torch

    rng = np.random.default_rng(seed)
    x, x_hat = rng.normal(size=(2, n, d))
    mu, logvar = rng.normal(size=(n, k)), rng.uniform(-3, 1, size=(n, k))
    return tuple(torch.tensor(a) for a in (x, x_hat, mu, logvar, log_gamma))


_SCRATCH_CASES = [_scratch_case(3, 6, 5, 3, -2.3), _scratch_case(4, 4, 9, 2, 0.7)]


def _scratch_cost(case, *, half=0.5, std=False, log_term=True, constant=True, kl_sign=1.0):
    """The per-example negative ELBO of a case, with switches for the typical mistakes."""
    x, x_hat, mu, logvar, log_gamma = (np.asarray(t, dtype=np.float64) for t in case)
    d = x.shape[1]
    gamma = np.exp(2 * log_gamma if std else log_gamma)
    squared = ((x - x_hat) ** 2).sum(1)
    cost = half * squared / gamma
    if log_term:
        cost = cost + 0.5 * d * math.log(gamma)
    if constant:
        cost = cost + 0.5 * d * LOG_2PI
    kl = 0.5 * (mu**2 + np.exp(logvar) - 1 - logvar).sum(1)
    return cost + kl_sign * kl


@checker("ex-dw-scratch")
def scratch_cost(answer):
    """``answer(x, x_hat, mu, logvar, log_gamma)``: the negative ELBO per example, ``(n,)``, for
    a decoder ``N(x_hat, exp(log_gamma) I)`` and an encoder ``N(mu, diag exp(logvar))``."""
    shapes = [(len(case[0]),) for case in _SCRATCH_CASES]
    values, wrong_shape = _per_case(answer, _SCRATCH_CASES, shapes)
    if wrong_shape:
        return False, wrong_shape + " One cost per example: do not average over the batch."
    got = np.concatenate(values)

    def costs(**mistake):
        return np.concatenate([_scratch_cost(case, **mistake) for case in _SCRATCH_CASES])

    mistakes = {
        "The squared error over γ lacks its factor 1/2.": costs(half=1.0),
        "It treats exp(log_gamma) as a standard deviation: it is the variance γ.": costs(std=True),
        "It misses d/2 log γ: without it the cost falls as γ grows, and γ would run to "
        "infinity instead of tracking the squared error.": costs(log_term=False),
        "It misses the constant d/2 log 2π: harmless for the gradients, but then it is not "
        "the negative ELBO.": costs(constant=False),
        "The KL term has the wrong sign: the cost adds KL(q(z|x) || p(z)).": costs(kl_sign=-1.0),
    }
    return diagnose(got, costs(), mistakes, rtol=1e-6, atol=1e-8)


# -- ex-dw-noise-floor: where the learned γ stops when the data are noisy ---------------------

_NOISE_CASES = [(0.02, 16, 1), (0.3, 5, 2), (1e-3, 784, 10), (0.07, 3, 2)]  # (tau, d, r)


@checker("ex-dw-noise-floor")
def noise_floor(answer):
    """``answer(tau, d, r)``: the decoder variance γ at which learning stalls for data on an
    ``r``-dimensional manifold in ``R^d`` (``r < d``) plus isotropic noise of variance τ."""
    got = evaluate(answer, _NOISE_CASES).reshape(-1)
    tau, d, r = np.array(_NOISE_CASES, dtype=np.float64).T
    mistakes = {
        "It counts only the d - r directions off the manifold: along the r directions on it "
        "the encoder's noise adds about γ each to the squared error (Theorem 4's r γ), so γ "
        "solves γ = ((d - r) τ + r γ) / d.": (d - r) * tau / d,
        "It is the total squared error of the d - r noisy directions: γ is a variance per "
        "dimension.": (d - r) * tau,
        "It is a standard deviation: τ is the noise's variance, and so is γ.": np.sqrt(tau),
        "It divides by d once too often.": tau / d,
        "γ does not run to 0 once noise fills R^d: the squared error cannot fall below the "
        "noise it cannot reconstruct.": np.zeros_like(tau),
    }
    return diagnose(got, tau, mistakes, rtol=1e-8, atol=1e-12)


# -- ex-dw-active-count: KL and active latents of the linear VAE at a fixed γ -----------------

_ACTIVE_CASES = [
    (np.array([3.0, 0.8, 0.0015, 0.0, 0.0]), 1e-3),  # 0.0015 lies between γ and 2γ
    (np.array([0.9, 0.4, 0.25, 0.1]), 0.2),
    (np.array([0.5, 0.5]), 1.0),
    (np.array([2.0, 1e-4]), 1e-3),
]


def _active_prediction(s, gamma, *, kl_of=None, threshold=2.0):
    """``[KL, count]`` of the linear VAE's optimum: KL = 1/2 Σ_{s_i > γ} log(s_i / γ) (or
    ``kl_of(s_used, γ)``), count = #{s_i > threshold · γ}."""
    used = s[s > gamma]
    kl = 0.5 * np.sum(np.log(used / gamma)) if kl_of is None else kl_of(used, gamma)
    return [kl, float(np.sum(s > threshold * gamma))]


@checker("ex-dw-active-count")
def active_count(answer):
    """``answer(s, gamma)``: ``[KL, active count]`` of the linear VAE's optimum at a fixed γ, for
    data covariance eigenvalues ``s`` (a numpy array), with as many latents as dimensions."""
    got = evaluate(answer, _ACTIVE_CASES)
    expected = np.array([_active_prediction(s, g) for s, g in _ACTIVE_CASES])
    if got.shape != expected.shape:
        return False, f"It must return two numbers, [KL, count], got shape {got.shape[1:]}."

    def predictions(**mistake):
        return np.array([_active_prediction(s, g, **mistake) for s, g in _ACTIVE_CASES])

    mistakes = {
        "The count includes latents with γ < s_i < 2γ: they are used, but their posterior "
        "variance γ / s_i is above the threshold 0.5.": predictions(threshold=1.0),
        "The KL uses log(1 + s_i / γ): at the optimum the decoder's singular values are "
        "sqrt(s_i - γ), so 1 + S_i / γ = s_i / γ.": predictions(
            kl_of=lambda u, g: 0.5 * np.sum(np.log1p(u / g))
        ),
        "The KL is the covariance part only: the posterior means add E μ_i² = 1 - γ / s_i.": (
            predictions(kl_of=lambda u, g: 0.5 * np.sum(g / u - 1 + np.log(u / g)))
        ),
        "The KL is twice too large: look for the factor 1/2.": expected * np.array([2.0, 1.0]),
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-dw-full-rank: the learned γ on full-rank Gaussian data --------------------------------

_FULL_RANK_SPECTRUM = np.array([5.0, 2.0, 1.0, 0.5, 0.2, 0.1])
_FULL_RANK_CASES = [
    (_FULL_RANK_SPECTRUM, 2),
    (_FULL_RANK_SPECTRUM, 4),
    (np.geomspace(1.0, 0.01, 12), 3),
    (np.ones(5), 1),
]


@checker("ex-dw-full-rank")
def full_rank(answer):
    """``answer(s, kappa)``: the decoder variance a linear VAE with ``kappa < d`` latents learns
    on Gaussian data whose covariance has the eigenvalues ``s`` (decreasing)."""
    got = evaluate(answer, _FULL_RANK_CASES).reshape(-1)

    def statistic(f):
        return np.array([f(s, k) for s, k in _FULL_RANK_CASES])

    expected = statistic(lambda s, k: s[k:].mean())
    mistakes = {
        "It is the smallest eigenvalue, the edge of the flat part when κ >= d "
        "(ex-dw-gaussian); with fewer latents than dimensions the d - κ directions left out "
        "share the one γ.": statistic(lambda s, k: s[-1]),
        "It is the largest eigenvalue left out; γ is shared by all d - κ of them.": statistic(
            lambda s, k: s[k]
        ),
        "It is their sum: γ is a variance per dimension.": statistic(lambda s, k: s[k:].sum()),
        "It is the mean of all eigenvalues, the model that uses no latent.": statistic(
            lambda s, k: s.mean()
        ),
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-12)


# -- ex-dw-thm3-shortfall: the fall of the cost between two fixed γ ---------------------------

_SHORTFALL_CASES = [  # (d, gamma_a, gamma_b, e_a, e_b, kl_a, kl_b)
    (16, 1e-2, 1e-3, 2.6, 5.5, 4.7, 8.9),
    (10, 0.5, 0.05, 3.0, 3.0, 1.0, 4.45),
    (64, 1e-3, 1e-4, 8.0, 9.5, 30.0, 41.0),
    (3, 2.0, 0.5, 1.0, 1.2, 0.2, 0.9),
]


def _fall(d, gamma_a, gamma_b, e_a, e_b, kl_a, kl_b, *, half_e=0.5, half_d=0.5):
    """The fall of ``e/2 + d/2 log 2πγ + KL`` per unit of ``ln(1/γ)`` from γ_a to γ_b."""
    steps = math.log(gamma_a / gamma_b)
    return half_d * d - half_e * (e_b - e_a) / steps - (kl_b - kl_a) / steps


@checker("ex-dw-thm3-shortfall")
def thm3_shortfall(answer):
    """``answer(d, gamma_a, gamma_b, e_a, e_b, kl_a, kl_b)``: the fall of the VAE cost per unit
    of ``ln(1/γ)`` from ``gamma_a`` to ``gamma_b``, with ``e = E||x - f(z)||² / γ`` and the KL
    terms at the two."""
    got = evaluate(answer, _SHORTFALL_CASES).reshape(-1)

    def falls(**mistake):
        return np.array([_fall(*case, **mistake) for case in _SHORTFALL_CASES])

    expected = falls()
    mistakes = {
        "It leaves out the change of e: eq. (8) holds only while e stays at r.": np.array(
            [d / 2 - (kb - ka) / math.log(ga / gb) for d, ga, gb, _, _, ka, kb in _SHORTFALL_CASES]
        ),
        "It counts the KL's growth as a fall: the KL term adds to the cost.": np.array(
            [
                d / 2 - (eb - ea) / (2 * math.log(ga / gb)) + (kb - ka) / math.log(ga / gb)
                for d, ga, gb, ea, eb, ka, kb in _SHORTFALL_CASES
            ]
        ),
        "It is per tenfold step: the fall is per unit of ln(1/γ).": math.log(10) * expected,
        "The e term lacks its factor 1/2: the data term is e/2 + d/2 log 2πγ.": falls(half_e=1.0),
        "The log γ term gives d/2 per unit, not d.": falls(half_d=1.0),
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-dw-collapse: what a linear second stage gains over the collapsed one ------------------

_COLLAPSE_CASES = [
    (np.array([0.85, 0.93, 0.97, 1.04, 1.12]), 1.0),
    (np.array([0.85, 0.93, 0.97, 1.04, 1.12]), 0.95),
    (np.array([0.85, 0.93, 0.97, 1.04, 1.12]), 0.05),
    (np.array([3.0, 0.2, 0.2]), 0.5),
    (np.array([0.4, 0.3]), 0.6),  # nothing to gain
]


def _collapse_gain(s, gamma, *, used_only=True, log_term=True):
    """``1/2 Σ_{s_i > γ} (s_i/γ - 1 - log(s_i/γ))``, with switches for the typical mistakes."""
    ratio = (s[s > gamma] if used_only else s) / gamma
    return 0.5 * float(np.sum(ratio - 1 - (np.log(ratio) if log_term else 0.0)))


@checker("ex-dw-collapse")
def collapse(answer):
    """``answer(s, gamma)``: the most a linear second stage gains over the collapsed model
    ``N(m, γ I)`` at decoder variance γ, for latent covariance eigenvalues ``s`` (numpy)."""
    got = evaluate(answer, _COLLAPSE_CASES).reshape(-1)

    def gains(**mistake):
        return np.array([_collapse_gain(s, g, **mistake) for s, g in _COLLAPSE_CASES])

    expected = gains()
    mistakes = {
        "It sums over every direction: where s_i < γ the best linear model keeps γ and gains "
        "nothing.": gains(used_only=False),
        "It misses -log(s_i/γ): the model variance s_i also changes the log-determinant.": gains(
            log_term=False
        ),
        "It is twice the gain: look for the factor 1/2.": 2 * expected,
        "It is the KL term the used latents carry, 1/2 Σ log(s_i/γ), not the fall of the cost.": (
            np.array([0.5 * float(np.sum(np.log(s[s > g] / g))) for s, g in _COLLAPSE_CASES])
        ),
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-12)
