"""Answer checkers for the exercises of book/primer.md (see :mod:`vaebook.exercises`).

Every checker calls the reader's function on models and numbers the chapter does not show
(other seeds, sizes and variances) and compares with a closed form in float64; the tests
compare each closed form with an independent computation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.distributions import Normal, kl_divergence

from . import as_values, checker, diagnose, evaluate

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)

# -- shared: small linear-Gaussian models the statements do not show ----------------------------


def _linear_model(seed: int, n: int, d: int, k: int, sigma2: float):
    """``(x, W, b, sigma2)``: ``n`` draws of ``x = W z + b + noise`` with noise variance
    ``sigma2``, float64 tensors from a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(d, k, generator=gen, dtype=F64)
    b = torch.randn(d, generator=gen, dtype=F64)
    z = torch.randn(n, k, generator=gen, dtype=F64)
    x = z @ W.T + b + sigma2**0.5 * torch.randn(n, d, generator=gen, dtype=F64)
    return x, W, b, sigma2


def _posterior(x, W, b, sigma2) -> tuple[np.ndarray, np.ndarray]:
    """The exact posterior ``N(m(x), S)`` of the linear-Gaussian model, in numpy: ``m`` is
    ``(n, k)``, ``S = (I + WᵀW/σ²)⁻¹`` is ``(k, k)``."""
    x, W, b = (np.asarray(t, dtype=np.float64) for t in (x, W, b))
    S = np.linalg.inv(np.eye(W.shape[1]) + W.T @ W / sigma2)
    return (x - b) @ W @ S / sigma2, S


def _kl_gauss(m1, S1, m2, S2) -> np.ndarray:
    """``KL(N(m1, S1) || N(m2, S2))`` for means ``(..., k)`` and covariances ``(k, k)``."""
    P2 = np.linalg.inv(S2)
    diff = np.asarray(m2) - np.asarray(m1)
    quad = np.einsum("...i,ij,...j->...", diff, P2, diff)
    logdet = np.linalg.slogdet(S2)[1] - np.linalg.slogdet(S1)[1]
    return 0.5 * (np.trace(P2 @ S1) + quad - len(S1) + logdet)


def _spd(seed: int, k: int, strength: float) -> np.ndarray:
    """A ``(k, k)`` covariance with strong correlations, from a fixed seed."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(k, k))
    return strength * A @ A.T + 0.2 * np.eye(k)


# -- ex-kl-1d: the KL between two univariate Gaussians -------------------------------------------

# cases the statement does not show: (m1, s1, m2, s2), standard deviations
_KL_CASES = [
    (0.3, 0.7, -1.2, 1.9),
    (2.0, 0.2, 1.5, 0.35),
    (-0.4, 1.6, 0.1, 0.8),
    (0.0, 1.3, 0.0, 1.3),
]


def _kl(m1, s1, m2, s2) -> float:
    """The reference: torch.distributions' closed form, in float64."""
    m1, s1, m2, s2 = torch.tensor([m1, s1, m2, s2], dtype=F64)
    return float(kl_divergence(Normal(m1, s1), Normal(m2, s2)))


@checker("ex-kl-1d")
def kl_1d(answer):
    """``answer(m1, s1, m2, s2)``: KL(N(m1, s1²) || N(m2, s2²)) from standard deviations."""
    got = evaluate(answer, _KL_CASES)
    expected = np.array([_kl(*c) for c in _KL_CASES])
    mistakes = {
        "It is KL(p || q) with the arguments swapped: the expectation is under the first "
        "Gaussian.": np.array([_kl(m2, s2, m1, s1) for m1, s1, m2, s2 in _KL_CASES]),
        "It is twice the KL: look at the factor 1/2 of the quadratic terms.": 2 * expected,
        "It misses the constant -1/2: the KL of a Gaussian from itself must be 0.": expected + 0.5,
        "It reads s as a variance: the function takes standard deviations.": np.array(
            [_kl(m1, s1**0.5, m2, s2**0.5) for m1, s1, m2, s2 in _KL_CASES]
        ),
    }
    return diagnose(got.reshape(-1), expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-fit-posterior: the ELBO's maximiser found by optimisation ------------------------------

# (seed, d, k, sigma2): other sizes than the chapter's d = 5, k = 2, one with k = d
_FIT_MODELS = [(11, 4, 2, 0.3), (12, 3, 3, 0.8)]
_FIT_TOLERANCE = 1e-6  # an optimiser run to convergence in float64 gets well below this


def _mean_and_cov(result, k: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The pair ``(mean, cov)`` returned by the reader, as a ``(k,)`` and a ``(k, k)`` array."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(f"{name} must return a pair (mean, cov), got {type(result).__name__}")
    mean, cov = as_values(result[0], f"{name}[0]"), as_values(result[1], f"{name}[1]")
    if mean.size == k * k and cov.size == k and k > 1:
        raise ValueError(f"{name} must return (mean, cov) in that order, got (cov, mean)")
    if mean.size != k or cov.size != k * k:
        raise ValueError(
            f"{name} must return a mean of {k} numbers and a ({k}, {k}) covariance, "
            f"got shapes {mean.shape} and {cov.shape}"
        )
    return mean.reshape(k), cov.reshape(k, k)


@checker("ex-fit-posterior")
def fit_posterior(answer):
    """``answer(x1, W, b, sigma2) -> (mean, cov)``: the Gaussian ``q`` maximising the ELBO of
    the one data point ``x1`` ``(1, d)``, found by optimisation (``W`` is ``(d, k)``)."""
    if not callable(answer):
        raise TypeError(f"answer must be a function, got {type(answer).__name__}")
    fits, exact = [], []
    for i, (seed, d, k, sigma2) in enumerate(_FIT_MODELS):
        x, W, b, sigma2 = _linear_model(seed, 1, d, k, sigma2)
        fits.append(_mean_and_cov(answer(x, W, b, sigma2), k, f"answer(...) on case {i}"))
        m, S = _posterior(x, W, b, sigma2)
        exact.append((m[0], S))

    def worst(reader_cov=lambda cov: cov, reference=lambda m, S: (m, S)) -> float:
        """The largest error over the models of the reader's (mean, reader_cov(cov)) against
        reference(m, S)."""
        return max(
            max(np.abs(mean - ref_m).max(), np.abs(reader_cov(cov) - ref_S).max())
            for (mean, cov), (ref_m, ref_S) in zip(
                fits, [reference(*e) for e in exact], strict=True
            )
        )

    error = worst()
    if error < _FIT_TOLERANCE:
        return True, "It agrees with the exact posterior on every model checked."
    if worst(reader_cov=lambda cov: cov @ cov.T) < _FIT_TOLERANCE:
        return False, "It returns the Cholesky factor L of the covariance: the covariance is L Lᵀ."
    if worst(reference=lambda m, S: (0 * m, np.eye(len(S)))) < _FIT_TOLERANCE:
        return False, (
            "It returns the prior N(0, I), the starting point: the optimiser did not move "
            "(does it call backward and step, and return the optimised tensors?)."
        )
    if worst(reference=lambda m, S: (m, np.linalg.inv(S))) < _FIT_TOLERANCE:
        return False, "It returns the posterior precision, the inverse of the covariance."
    if error < 1e-2:
        return False, (
            f"It is close but not converged (largest error {error:.1e}): run the optimiser "
            "longer, or with tighter tolerances."
        )
    return False, (
        "It differs from the ELBO's maximiser on the models checked; does it take k from W "
        "(W.shape[1]) and use the sigma2 it is given?"
    )


# -- ex-collapse-gap: the ELBO gap of an encoder that ignores x -----------------------------------

# (seed, d, k, sigma2), five data points each
_COLLAPSE_MODELS = [(21, 4, 2, 0.4), (22, 6, 3, 1.5)]


@checker("ex-collapse-gap")
def collapse_gap(answer):
    """``answer(x, W, b, sigma2)``: per data point (shape ``(n,)``), ``log p(x)`` minus the ELBO
    of the collapsed encoder ``q(z|x) = N(0, I)``, i.e. ``KL(N(0, I) || p(z|x))``."""
    models = [_linear_model(seed, 5, d, k, sigma2) for seed, d, k, sigma2 in _COLLAPSE_MODELS]
    got = evaluate(answer, models).reshape(-1)
    posteriors = [_posterior(*model) for model in models]

    def per_point(kl_of) -> np.ndarray:
        return np.concatenate(
            [kl_of(m, S, np.zeros_like(m), np.eye(len(S))) for m, S in posteriors]
        )

    expected = per_point(lambda m, S, zero, eye: _kl_gauss(zero, eye, m, S))
    mistakes = {
        "It is KL(posterior || prior), the KL in the wrong direction: the gap of form 1 is "
        "KL(q || posterior), and here q is the prior.": per_point(
            lambda m, S, zero, eye: _kl_gauss(m, S, zero, eye)
        ),
        "It has the wrong sign: the gap log p(x) - ELBO is a KL divergence, never negative.": (
            -expected
        ),
        "It misses the mean term m(x)ᵀ S⁻¹ m(x): the collapsed encoder is centred at 0, not at "
        "the posterior mean.": per_point(lambda m, S, zero, eye: _kl_gauss(zero, eye, zero, S)),
        "It is twice the gap: look at the factor 1/2 of the Gaussian KL.": 2 * expected,
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-score-function: the variance of two gradient estimators ---------------------------------

# (mu, sigma): other values than the statement's, one with mu = 0 and one sharp encoder
_SCORE_CASES = [(0.7, 0.4), (-1.5, 1.3), (0.0, 0.8), (2.0, 0.1)]


def _estimator_variances(mu, sigma, *, second_moment=False, score_scale=1.0):
    """Per-sample variances (or second moments) of the reparameterisation estimator 2z and of
    the score-function estimator z²(z - μ)/σ² (times ``score_scale``) of d/dμ E[z²]."""
    reparam = 4 * sigma**2 + (4 * mu**2 if second_moment else 0.0)
    score = mu**4 / sigma**2 + (18 if second_moment else 14) * mu**2 + 15 * sigma**2
    return reparam, score * score_scale**2


@checker("ex-score-function")
def score_function(answer):
    """``answer(mu, sigma) -> (reparameterisation variance, score-function variance)``: the
    per-sample variances of the two single-sample estimators of d/dμ E[z²], z ~ N(μ, σ²)."""
    got = evaluate(answer, _SCORE_CASES)
    if got.shape != (len(_SCORE_CASES), 2):
        raise ValueError(f"answer(mu, sigma) must return two numbers, got shape {got.shape[1:]}")

    def table(**kwargs) -> np.ndarray:
        return np.array([_estimator_variances(mu, s, **kwargs) for mu, s in _SCORE_CASES])

    expected = table()
    mistakes = {
        "It returns (score, reparameterisation): the reparameterised one comes first.": (
            expected[:, ::-1]
        ),
        "It gives the second moments E[g²], not the variances: subtract (2μ)², the square of "
        "the mean both estimators share.": table(second_moment=True),
        "It reads sigma as a variance: the function takes the standard deviation.": np.array(
            [_estimator_variances(mu, s**0.5) for mu, s in _SCORE_CASES]
        ),
        "Its score estimator misses the 1/σ² of the score d/dμ log N(z; μ, σ²) = (z - μ)/σ².": (
            np.array([_estimator_variances(mu, s, score_scale=s**2) for mu, s in _SCORE_CASES])
        ),
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-diagonal-gap: the best diagonal Gaussian for a correlated posterior ---------------------

_DIAGONAL_COVARIANCES = [
    np.array([[1.0, 0.8], [0.8, 1.0]]),
    _spd(41, 3, 0.5),
    _spd(42, 4, 0.3),
]


def _diagonal_kl(S, variances, *, reverse=False) -> float:
    """``KL(N(0, diag(variances)) || N(0, S))``, or the reverse direction."""
    D = np.diag(variances)
    zero = np.zeros(len(S))
    return float(_kl_gauss(zero, S, zero, D) if reverse else _kl_gauss(zero, D, zero, S))


@checker("ex-diagonal-gap")
def diagonal_gap(answer):
    """``answer(S)``: the smallest ELBO gap a diagonal Gaussian encoder can reach when the
    posterior is Gaussian with covariance ``S`` (a ``(k, k)`` float64 tensor)."""
    cases = [(torch.tensor(S, dtype=F64),) for S in _DIAGONAL_COVARIANCES]
    got = evaluate(answer, cases).reshape(-1)
    best = [1 / np.diag(np.linalg.inv(S)) for S in _DIAGONAL_COVARIANCES]
    expected = np.array(
        [_diagonal_kl(S, v) for S, v in zip(_DIAGONAL_COVARIANCES, best, strict=True)]
    )
    mistakes = {
        "It matches the posterior's marginal variances S_jj: that minimises KL(p || q), not the "
        "gap KL(q || p); the best q of the ELBO takes 1/(S⁻¹)_jj.": np.array(
            [_diagonal_kl(S, np.diag(S)) for S in _DIAGONAL_COVARIANCES]
        ),
        "It is KL(posterior || q), the wrong direction: the ELBO gap is KL(q || posterior).": (
            np.array(
                [
                    _diagonal_kl(S, v, reverse=True)
                    for S, v in zip(_DIAGONAL_COVARIANCES, best, strict=True)
                ]
            )
        ),
        "It is twice the gap: look at the factor 1/2 of the Gaussian KL.": 2 * expected,
        "It has the wrong sign: the gap is a KL divergence, never negative.": -expected,
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-vae-scratch: the ELBO of a Gaussian VAE with a learned decoder variance -----------------

# (seed, log_gamma): four examples in five dimensions with two latents each
_ELBO_CASES = [(51, -1.3), (52, 0.4)]


def _elbo_inputs(seed: int, log_gamma: float):
    """``(x, x_hat, log_gamma, mu, logvar)`` as float64 tensors, ``log_gamma`` 0-dimensional."""
    gen = torch.Generator().manual_seed(seed)
    x, x_hat = torch.randn(2, 4, 5, generator=gen, dtype=F64)
    mu, logvar = torch.randn(2, 4, 2, generator=gen, dtype=F64)
    return x, x_hat, torch.tensor(log_gamma, dtype=F64), mu, logvar


def _elbo(
    x,
    x_hat,
    log_gamma,
    mu,
    logvar,
    *,
    normaliser=1.0,
    two_pi=True,
    gamma_is_std=False,
    logvar_is_log_std=False,
    kl_sign=1.0,
    coordinate_mean=False,
):
    """The per-example ELBO ``log N(x; x_hat, γI) - KL(N(mu, e^logvar) || N(0, I))`` in numpy,
    with switches that reproduce typical mistakes."""
    x, x_hat, mu, logvar = (np.asarray(t, dtype=np.float64) for t in (x, x_hat, mu, logvar))
    log_gamma = float(log_gamma) * (2 if gamma_is_std else 1)
    squares = (x - x_hat) ** 2 * math.exp(-log_gamma)
    constant = normaliser * ((LOG_2PI if two_pi else 0.0) + log_gamma)
    per_coordinate = -0.5 * (constant + squares)
    rec = per_coordinate.mean(-1) if coordinate_mean else per_coordinate.sum(-1)
    logvar = 2 * logvar if logvar_is_log_std else logvar
    kl = 0.5 * (mu**2 + np.exp(logvar) - 1 - logvar).sum(-1)
    return rec - kl_sign * kl


@checker("ex-vae-scratch")
def vae_scratch(answer):
    """``answer(x, x_hat, log_gamma, mu, logvar)``: the ELBO of each example (shape ``(n,)``)
    for a Gaussian decoder with mean ``x_hat`` and variance ``exp(log_gamma)`` (a 0-dimensional
    tensor) and the encoder ``N(mu, diag(exp(logvar)))``."""
    cases = [_elbo_inputs(*case) for case in _ELBO_CASES]
    got = evaluate(answer, cases)
    if got.shape != (len(cases), 4):
        raise ValueError(
            f"answer(x, x_hat, log_gamma, mu, logvar) must return one ELBO per example (shape "
            f"(4,) for 4 examples), got shape {got.shape[1:]}"
        )

    def table(**kwargs) -> np.ndarray:
        return np.stack([_elbo(*case, **kwargs) for case in cases])

    expected = table()
    mistakes = {
        "It misses the normaliser -(d/2) log(2πγ) of the Gaussian: with γ learned, that term "
        "is what stops γ from growing without bound.": table(normaliser=0.0),
        "It misses the constant -(d/2) log 2π: harmless for training, but then it is not the "
        "ELBO and cannot be compared with log p(x).": table(two_pi=False),
        "It reads exp(log_gamma) as a standard deviation: γ is the decoder's variance.": table(
            gamma_is_std=True
        ),
        "It reads logvar as a log standard deviation: the encoder's variance is exp(logvar).": (
            table(logvar_is_log_std=True)
        ),
        "It adds the KL term: the ELBO is reconstruction minus KL.": table(kl_sign=-1.0),
        "It averages log N over the coordinates: the log-density of x sums over them.": table(
            coordinate_mean=True
        ),
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-gamma-floor: where a learned decoder variance stops -------------------------------------

# (seed, n, d, k, noise variance): data from linear models with noise
_GAMMA_MODELS = [(31, 40, 5, 2, 0.3), (32, 60, 7, 3, 1.2), (33, 30, 4, 1, 0.05)]


def _eigenvalues(x, *, ddof=0, centre=True) -> np.ndarray:
    """The eigenvalues of the sample covariance of the rows of ``x``, in ascending order."""
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(0) if centre else x
    return np.linalg.eigvalsh(xc.T @ xc / (len(x) - ddof))


def _gamma(x, k, *, ddof=0, centre=True, over=None, drop=None) -> float:
    """The sum of the ``d - k`` smallest (or the ``drop`` smallest) eigenvalues of the sample
    covariance, divided by ``d - k`` (or by ``over``)."""
    lam = _eigenvalues(x, ddof=ddof, centre=centre)
    d = len(lam)
    drop = d - k if drop is None else drop
    return float(lam[:drop].sum() / (drop if over is None else over))


@checker("ex-gamma-floor")
def gamma_floor(answer):
    """``answer(x, k)``: the decoder variance γ at the maximum of the ELBO of a linear-Gaussian
    VAE with ``k`` latents and γ learned, for the data ``x`` ``(n, d)``."""
    data = [(_linear_model(seed, n, d, k, s2)[0], k) for seed, n, d, k, s2 in _GAMMA_MODELS]
    got = evaluate(answer, data).reshape(-1)

    def table(**kwargs) -> np.ndarray:
        return np.array([_gamma(x, k, **kwargs) for x, k in data])

    expected = table()
    mistakes = {
        "It is the squared error of projecting x onto the top-k principal subspace, per "
        "coordinate: it forgets that the encoder's samples spread along the subspace; γ is the "
        "squared error under q, averaged over the d - k discarded directions only.": np.array(
            [_gamma(x, k, over=x.shape[1]) for x, k in data]
        ),
        "It divides by n - 1: the maximum of the likelihood uses the 1/n sample covariance.": (
            table(ddof=1)
        ),
        "It does not centre x: the decoder's offset b absorbs the data mean.": table(centre=False),
        "It keeps only the smallest eigenvalue: γ averages all d - k discarded ones.": table(
            drop=1, over=1
        ),
        "It averages all d eigenvalues: the k largest are explained by the latents.": np.array(
            [_gamma(x, 0) for x, _ in data]
        ),
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


@checker("ex-latent-2d")
def nearest_centre_error(answer):
    """``answer(codes, labels)``: the held-out error rate of the nearest-class-centre rule."""
    gen = torch.Generator().manual_seed(17)
    cases = []
    for n, classes, spread in ((300, 10, 1.5), (120, 4, 0.6), (90, 3, 3.0)):
        labels = torch.arange(n) % classes
        centres = 3 * torch.randn(classes, 2, generator=gen, dtype=torch.float64)
        codes = centres[labels] + spread * torch.randn(n, 2, generator=gen, dtype=torch.float64)
        cases.append((codes, labels))
    got = evaluate(answer, cases).reshape(-1)

    def rule(codes, labels, reduce="mean"):
        centres = torch.stack([codes[labels == c].mean(0) for c in range(int(labels.max()) + 1)])
        wrong = torch.cdist(codes, centres).argmin(1) != labels
        if reduce == "balanced":
            return torch.stack([wrong[labels == c].double().mean() for c in labels.unique()]).mean()
        return wrong.double().mean()

    expected = np.array([float(rule(*c)) for c in cases])
    return diagnose(
        got,
        expected,
        {
            "It is the fraction put in the right class: the exercise asks for the error rate.": 1
            - expected,
            "It is a count: divide by the number of images.": np.array(
                [float(rule(*c)) * len(c[1]) for c in cases]
            ),
            "It averages the error over classes first: count every image once.": np.array(
                [float(rule(*c, reduce="balanced")) for c in cases]
            ),
        },
    )
