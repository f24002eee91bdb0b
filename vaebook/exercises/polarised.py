"""Answer checkers for the exercises of book/polarised.md (see :mod:`vaebook.exercises`).

Every checker calls the reader's function on cases the chapter does not show (other sizes,
seeds, priors and noise levels than the statement's) and names the typical mistake it
recognises. Tensors passed to a reader's function are float64 torch tensors, arrays of a
trained model's representations are numpy arrays, as in the chapter.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import ivae
from .. import local_geometry as geo
from . import as_values, checker, diagnose, evaluate

F64 = torch.float64


# -- shared tools ---------------------------------------------------------------------------------


def _values(answer, cases, shapes) -> np.ndarray:
    """The reader's ``answer`` on each case, each of the expected shape, flattened and joined."""
    if not callable(answer):
        raise TypeError(f"answer must be a function, got {type(answer).__name__}")
    values = []
    for case, shape in zip(cases, shapes, strict=True):
        got = as_values(answer(*case), "the value answer returns")
        if got.size == 1 and shape == ():
            got = got.reshape(())
        if got.shape != shape:
            raise ValueError(f"answer must return an array of shape {shape}, got {got.shape}")
        values.append(got.ravel())
    return np.concatenate(values)


def _label_codes(labels, kappa: int) -> np.ndarray:
    """Latent labels (``"passive"``, ``"active"``, ``"mixed"``) as codes 0, 1, 2."""
    if isinstance(labels, str) or not hasattr(labels, "__len__"):
        raise TypeError(
            f"answer must return a sequence of {kappa} labels, got {type(labels).__name__}"
        )
    labels = [str(label) for label in labels]
    if len(labels) != kappa:
        raise ValueError(f"answer must return {kappa} labels (one per latent), got {len(labels)}")
    unknown = sorted(set(labels) - set(ivae.LATENT_LABELS))
    if unknown:
        raise ValueError(f"answer must return labels among {ivae.LATENT_LABELS}, got {unknown}")
    return np.array([ivae.LATENT_LABELS.index(label) for label in labels], dtype=np.float64)


def _labels_of(answer, cases, kappas) -> np.ndarray:
    """The reader's labels on each case, as codes, joined."""
    if not callable(answer):
        raise TypeError(f"answer must be a function, got {type(answer).__name__}")
    return np.concatenate(
        [_label_codes(answer(*case), k) for case, k in zip(cases, kappas, strict=True)]
    )


def _codes(labels) -> np.ndarray:
    """Codes of labels computed here (a trusted sequence)."""
    return np.array([ivae.LATENT_LABELS.index(str(label)) for label in labels], dtype=np.float64)


def _rule_labels(active, near, consistency: float, strict: bool = False) -> np.ndarray:
    """Codes of the dataset-level labels from per-input ``active`` and ``near`` (n, κ) masks."""
    passive_share = (~active & near).mean(0)
    active_share = active.mean(0)
    over = (lambda share: share > consistency) if strict else (lambda s: s >= consistency)
    codes = np.full(active.shape[1], 2.0)
    codes[over(passive_share)] = 0.0
    codes[over(active_share)] = 1.0
    return codes


def _random(generator: torch.Generator, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, dtype=F64)


def _prior(generator: torch.Generator, kappa: int) -> torch.Tensor:
    """Anisotropic prior variances in [0.3, 3]."""
    return 0.3 + 2.7 * torch.rand(kappa, generator=generator, dtype=F64)


# -- ex-pol-diagonal: the price of a diagonal encoder --------------------------------------------


def _gap_cases():
    g = torch.Generator().manual_seed(11)
    cases = [
        (_random(g, d, k), _prior(g, k), gamma) for d, k, gamma in ((6, 3, 0.05), (9, 5, 1e-3))
    ]
    cases.append((_random(g, 4, 2) + 1.0, _prior(g, 2), 0.3))  # strongly correlated columns
    orthogonal = torch.linalg.qr(_random(g, 7, 3))[0] * torch.tensor([2.0, 0.5, 1.3], dtype=F64)
    cases.append((orthogonal, _prior(g, 3), 0.02))  # zero gap
    return cases


def _hadamard_gap(A: torch.Tensor) -> float:
    """½(Σ log A_jj - log|A|)."""
    return 0.5 * float(torch.log(torch.diagonal(A)).sum() - torch.logdet(A))


@checker("ex-pol-diagonal")
def diagonal_gap(answer):
    """``answer(J, prior_var, gamma)``: the diagonal optimum's excess cost over eq. (11), nats."""
    cases = _gap_cases()
    got = _values(answer, cases, [()] * len(cases))
    expected = np.array(
        [
            float(
                geo.local_cost(torch.diag(geo.optimal_posterior_variances(J, v, g)), J, v, g)
                - geo.local_cost(geo.optimal_posterior_covariance(J, v, g), J, v, g)
            )
            for J, v, g in cases
        ]
    )
    jtj = [J.T @ J / g for J, _, g in cases]
    mistakes = {
        "It is twice the gap: eq. (10) has a factor 1/2 in front of the trace and of the "
        "log-determinant.": 2 * expected,
        "It has the wrong sign: the diagonal minimum is a minimum over fewer matrices, so it "
        "cannot lie below the full one.": -expected,
        "It puts the prior's variances Σ† in A, where eq. (10) has its precision Σ†⁻¹.": np.array(
            [_hadamard_gap(torch.diag(v) + m) for (_, v, _), m in zip(cases, jtj, strict=True)]
        ),
        "It leaves the prior's precision out of A: that is the gap's limit as γ → 0, not its "
        "value at this γ.": np.array([_hadamard_gap(m) for m in jtj]),
    }
    return diagnose(got, expected, mistakes, rtol=1e-6, atol=1e-9)


# -- ex-pol-slope: the slope of the optimal cost in log γ ----------------------------------------

_SLOPE_CASES = [(7, 3, 2), (20, 6, 6), (9, 9, 1), (15, 4, 0), (30, 8, 5)]  # (d, κ, r)


@checker("ex-pol-slope")
def cost_slope(answer):
    """``answer(d, kappa, r)``: the slope of the optimal cost of eq. (10) in log γ as γ → 0."""
    got = evaluate(answer, _SLOPE_CASES).reshape(-1)
    d, kappa, r = np.array(_SLOPE_CASES, dtype=np.float64).T
    mistakes = {
        "It is d/2, the decoder's normaliser alone: the KL's -½log|Σ*| takes back ½log(1/γ) "
        "per latent the decoder uses.": d / 2,
        "It counts every latent as active: only the r directions that J uses shrink with γ, "
        "the κ - r others keep the prior's variance.": (d - kappa) / 2,
        "It is twice the slope: both logarithms of eq. (10) carry a factor 1/2.": d - r,
        "The log-determinant's share has the wrong sign: a shrinking Σ* *raises* the KL, by "
        "½log(1/γ) per active latent.": (d + r) / 2,
    }
    return diagnose(got, (d - r) / 2, mistakes, rtol=1e-9, atol=1e-9)


# -- ex-pol-pixel-noise: eq. (11) with one noise variance per pixel ------------------------------


def _pixel_noise_cases():
    g = torch.Generator().manual_seed(12)
    cases = []
    for d, k in ((7, 3), (5, 4), (10, 2)):
        noise = torch.exp(torch.empty(d, dtype=F64).uniform_(math.log(1e-3), 0.0, generator=g))
        cases.append((_random(g, d, k), _prior(g, k), noise))
    return cases


def _pixel_noise_covariance(J, prior_var, noise_var) -> torch.Tensor:
    """eq. (11) for ``N(μ‡, diag(noise_var))``: the whitened Jacobian ``Γ^{-1/2} J`` with γ = 1."""
    return geo.optimal_posterior_covariance(J / noise_var.sqrt()[:, None], prior_var, 1.0)


@checker("ex-pol-pixel-noise")
def pixel_noise(answer):
    """``answer(J, prior_var, noise_var)``: the optimal covariance (κ, κ) when pixel k has noise
    variance ``noise_var[k]``."""
    cases = _pixel_noise_cases()
    got = _values(answer, cases, [(J.shape[1], J.shape[1]) for J, _, _ in cases])

    def joined(f):
        return np.concatenate([np.asarray(f(*case)).ravel() for case in cases])

    def with_precision(J, v, noise, prior_precision):
        return torch.linalg.inv(prior_precision + J.T @ (J / noise[:, None]))

    mistakes = {
        "It multiplies J by the noise variances: a noisier pixel must constrain z *less*, so the "
        "precision adds JᵀΓ⁻¹J.": joined(lambda J, v, n: _pixel_noise_covariance(J, v, 1 / n)),
        "It weights pixel k by 1/γ_k²: the squared error (x - μ‡)ᵀΓ⁻¹(x - μ‡) has Γ⁻¹ once, so "
        "J is scaled by Γ^(-1/2).": joined(lambda J, v, n: _pixel_noise_covariance(J, v, n**2)),
        "It replaces the per-pixel variances by their mean: each pixel enters with its own "
        "weight.": joined(lambda J, v, n: geo.optimal_posterior_covariance(J, v, float(n.mean()))),
        "It returns the precision Σ*⁻¹; the covariance is its inverse.": joined(
            lambda J, v, n: torch.linalg.inv(_pixel_noise_covariance(J, v, n))
        ),
        "It puts the prior's variances where the precision has Σ†⁻¹.": joined(
            lambda J, v, n: with_precision(J, v, n, torch.diag(v))
        ),
    }
    return diagnose(got, joined(_pixel_noise_covariance), mistakes, rtol=1e-6, atol=1e-9)


# -- ex-pol-full-covariance: the split with a full encoder covariance ----------------------------


def _rank_deficient(g: torch.Generator, k: int, r: int) -> torch.Tensor:
    return _random(g, 2 * k, r) @ _random(g, r, k)


def _full_covariance_cases():
    g = torch.Generator().manual_seed(13)
    cases = [(_rank_deficient(g, k, r), _prior(g, k)) for k, r in ((4, 2), (5, 3), (3, 1))]
    aligned = _random(g, 6, 4)
    aligned[:, [0, 2]] = 0.0  # a null space along the axes: the answer is 1 or 0 per latent
    cases.append((aligned, _prior(g, 4)))
    return cases


def _null_space(J: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis (κ, κ - r) of the null space of J."""
    rank = int(torch.linalg.matrix_rank(J))
    return torch.linalg.svd(J)[2][rank:].T


def _conditioned_prior(J, prior_var) -> torch.Tensor:
    """The limit of eq. (11) as γ → 0: the prior conditioned on Jz = 0, N (Nᵀ Σ†⁻¹ N)⁻¹ Nᵀ."""
    N = _null_space(J)
    return N @ torch.linalg.inv(N.T @ torch.diag(1 / prior_var) @ N) @ N.T


@checker("ex-pol-full-covariance")
def full_covariance_limit(answer):
    """``answer(J, prior_var)``: the limits as γ → 0 of Σ*_jj / σ†_j for the full eq. (11)."""
    cases = _full_covariance_cases()
    got = _values(answer, cases, [(J.shape[1],) for J, _ in cases])

    def joined(f):
        return np.concatenate([np.asarray(f(*case)).ravel() for case in cases])

    def projector(J):
        N = _null_space(J)
        return N @ N.T

    mistakes = {
        "These are a *diagonal* encoder's limits (1 for a column of zeros, 0 otherwise); a full "
        "covariance shrinks along the directions J uses, not along the axes.": joined(
            lambda J, v: ((J**2).sum(0) == 0).to(F64)
        ),
        "It is the orthogonal projector onto the null space, the answer for an isotropic prior "
        "only: condition the prior on the null space with its precision Σ†⁻¹.": joined(
            lambda J, v: torch.diagonal(projector(J))
        ),
        "It restricts Σ† to the null space, P Σ† P with P the projector; conditioning the prior "
        "gives N (Nᵀ Σ†⁻¹ N)⁻¹ Nᵀ instead.": joined(
            lambda J, v: torch.diagonal(projector(J) @ torch.diag(v) @ projector(J)) / v
        ),
        "These are the limiting variances Σ*_jj; the question asks for their ratios to σ†_j.": (
            joined(lambda J, v: torch.diagonal(_conditioned_prior(J, v)))
        ),
    }
    expected = joined(lambda J, v: torch.diagonal(_conditioned_prior(J, v)) / v)
    return diagnose(got, expected, mistakes, rtol=1e-5, atol=1e-7)


# -- ex-pol-predict: labels from the decoder's column norms --------------------------------------


def _column_norm_case(seed: int, n: int, gamma: float):
    """Squared column norms (n, 8), prior variances (8,) and γ; the latents are built so that each
    typical mistake changes at least one label (see the comments)."""
    rng = np.random.default_rng(seed)
    s = np.zeros((n, 8))
    prior = np.ones(8)
    s[:, 0] = 100 * gamma  # active
    # latent 1: s = 0, passive
    s[rng.permutation(n)[: int(0.4 * n)], 2] = 5 * gamma  # active for 40%: mixed
    s[:, 3], prior[3] = 100 * gamma, 1 / 300  # large column, tiny prior: σ†s = γ/3, passive
    s[:, 4], prior[4] = gamma / 5, 25.0  # small column, wide prior: σ†s = 5γ, active
    s[rng.permutation(n)[: int(0.96 * n)], 5] = 50 * gamma  # active for 96%: active
    s[rng.permutation(n)[: int(0.9 * n)], 6] = 50 * gamma  # active for 90%: mixed
    prior[7] = 0.3  # unused latent with a narrow prior: passive
    order = rng.permutation(8)
    return torch.from_numpy(s[:, order]), torch.from_numpy(prior[order]), gamma


_PREDICT_CASES = [(0, 250, 0.01), (1, 130, 0.2)]


def _predicted_codes(sq_norms, prior_var, gamma, *, variance_ratio=0.5, consistency=0.95):
    """The chapter's classifier on the diagonal optimum, means at the prior mean."""
    variances = geo.optimal_posterior_variances(sq_norms.sqrt().unsqueeze(-2), prior_var, gamma)
    labels = ivae.classify_latents(
        torch.zeros_like(variances),
        variances,
        prior_var=prior_var,
        variance_ratio=variance_ratio,
        consistency=consistency,
    ).labels
    return _codes(labels)


@checker("ex-pol-predict")
def predict_labels(answer):
    """``answer(sq_norms, prior_var, gamma)``: each latent's label, predicted from the decoder."""
    cases = [_column_norm_case(*c) for c in _PREDICT_CASES]
    got = _labels_of(answer, cases, [8] * len(cases))

    def joined(rule):
        return np.concatenate([rule(*case) for case in cases])

    def by_mask(active):
        return _rule_labels(active, np.ones_like(active), 0.95)

    mistakes = {
        "Active and passive are swapped: a latent the decoder is sensitive to gets a *small* "
        "variance, so it is the active one.": joined(lambda s, v, g: by_mask((v * s <= g).numpy())),
        "It compares |J_j|² with γ alone: the test is σ†_j |J_j|² > γ, since a latent's prior "
        "variance sets its scale.": joined(lambda s, v, g: by_mask((s > g).numpy())),
        "It compares the variance σ*_j itself with 0.5; the rule compares the ratio "
        "σ*_j / σ†_j.": joined(lambda s, v, g: by_mask((v * g / (g + v * s) < 0.5).numpy())),
        "No latent can be mixed under your rule: over the dataset a latent is passive or active "
        "only when it is so for at least 95% of the inputs.": joined(
            lambda s, v, g: _predicted_codes(s, v, g, consistency=0.5 + 1e-9)
        ),
    }
    return diagnose(got, joined(_predicted_codes), mistakes, rtol=0, atol=0)


# -- ex-pol-thresholds: the classification rule from scratch -------------------------------------


def _classification_data(seed: int = 14, n: int = 200):
    """Posterior and prior means and variances (n, 11), one latent per trap (see the comments)."""
    rng = np.random.default_rng(seed)
    k = 11
    mu, var = rng.normal(0, 0.05, (n, k)), np.full((n, k), 0.97)
    prior_mu, prior_var = np.zeros((n, k)), np.ones((n, k))

    def make_active(j, rows, spread=2.0):
        var[rows, j] = 0.01 * prior_var[rows, j]
        mu[rows, j] = rng.normal(0, spread, len(rows)) * np.sqrt(prior_var[rows, j])

    everyone = np.arange(n)
    make_active(0, everyone)  # active; latent 1 is passive
    make_active(2, rng.permutation(n)[: int(0.4 * n)])  # active for 40%: mixed
    mu[rng.permutation(n)[: int(0.3 * n)], 3] = 1.0  # prior variance, mean 1 sd off for 30%
    make_active(4, rng.permutation(n)[: int(0.8 * n)])  # active for 80%, mean ratio 0.2
    prior_var[:, 5] = 50.0  # a wide prior: ratio 0.1 (active), variance 5
    make_active(5, everyone)
    var[:, 5] = 5.0
    prior_var[:, 6], var[:, 6] = 0.04, 0.036  # a narrow prior: ratio 0.9, variance 0.036
    mu[:, 6] = 0.08 + rng.normal(0, 0.005, n)  # 0.4 prior sd from the prior mean
    make_active(7, rng.permutation(n)[: int(0.95 * n)])  # active for exactly 95%
    var[:, 8] = 0.5  # ratio exactly 0.5: not active
    prior_mu[:, 9] = 2.0  # a learned prior mean, followed by the posterior mean
    mu[:, 9] += 2.0
    var[:, 10] = 0.4  # ratio 0.4: active at the threshold 0.5, passive at 0.3
    return mu, var, prior_mu, prior_var


_THRESHOLD_SETTINGS = ((0.5, 0.95), (0.3, 0.75))  # (variance_ratio, consistency)


def _classification_mistakes(mu, var, prior_mu, prior_var, t, c) -> dict[str, np.ndarray]:
    """The codes each typical mistake gives, keyed by its message."""
    ratio, sd = var / prior_var, np.sqrt(prior_var)
    active, near = ratio < t, np.abs(mu - prior_mu) <= 0.5 * sd
    mean_active = np.broadcast_to(ratio.mean(0) < t, ratio.shape)
    return {
        "It ignores the mean condition: an input is passive only where its mean also lies within "
        "half a prior standard deviation of the prior mean.": _rule_labels(
            active, np.ones_like(near), c
        ),
        "It averages the ratio over the inputs before thresholding; the rule thresholds each "
        "input's ratio, then counts the share of inputs.": _rule_labels(mean_active, near, c),
        "It thresholds the variance σ_j itself; the rule compares the ratio σ_j / σ†_j.": (
            _rule_labels(var < t, near, c)
        ),
        "The mean tolerance is in prior standard deviations (σ†)^(1/2), not in variances.": (
            _rule_labels(active, np.abs(mu - prior_mu) <= 0.5 * prior_var, c)
        ),
        "It measures the mean's distance from 0; the rule measures it from the prior mean μ†.": (
            _rule_labels(active, np.abs(mu) <= 0.5 * sd, c)
        ),
        "A share of exactly `consistency` is enough: the rule uses ≥.": _rule_labels(
            active, near, c, strict=True
        ),
        "An input is active when its ratio is strictly below the threshold, not at it.": (
            _rule_labels(ratio <= t, near, c)
        ),
    }


@checker("ex-pol-thresholds")
def classification_rule(answer):
    """``answer(mu, var, prior_mu, prior_var, variance_ratio, consistency)``: the labels of
    ``ivae.classify_latents`` (mean tolerance half a prior standard deviation)."""
    data = _classification_data()
    cases = [(*data, t, c) for t, c in _THRESHOLD_SETTINGS]
    got = _labels_of(answer, cases, [data[0].shape[1]] * len(cases))
    expected = np.concatenate(
        [
            _codes(ivae.classify_latents(*data, variance_ratio=t, consistency=c).labels)
            for t, c in _THRESHOLD_SETTINGS
        ]
    )
    per_setting = [_classification_mistakes(*case) for case in cases]
    mistakes = {m: np.concatenate([p[m] for p in per_setting]) for m in per_setting[0]}
    return diagnose(got, expected, mistakes, rtol=0, atol=0)


# -- ex-pol-mixed-shrink: a shrunk passive variance, seen by the Wasserstein distance ------------

_SHRINK_CASES = [(0.3,), (0.62,), (0.9,), (1.0,), (1.4,)]


@checker("ex-pol-mixed-shrink")
def shrink_distance(answer):
    """``answer(rho)``: W1(N(m, ρσ†), N(m, σ†)) in standard deviations of the first."""
    got = evaluate(answer, _SHRINK_CASES).reshape(-1)
    rho = np.array([c[0] for c in _SHRINK_CASES])
    e_abs = math.sqrt(2 / math.pi)  # E|ε| for a standard normal ε
    mistakes = {
        "It misses the factor E|ε| = (2/π)^(1/2): |a - b| is the Wasserstein-2 distance "
        "between N(m, a²) and N(m, b²); W1 averages |a - b| |ε|.": np.abs(1 / np.sqrt(rho) - 1),
        "It is in units of the prior's standard deviation; the chapter divides by the standard "
        "deviation of z.": np.abs(1 - np.sqrt(rho)) * e_abs,
        "It reads ρ as a ratio of standard deviations; ρ = σ/σ† is a ratio of variances.": (
            np.abs(1 / rho - 1) * e_abs
        ),
        "A distance cannot be negative: for ρ > 1 take the absolute value.": (
            (1 / np.sqrt(rho) - 1) * e_abs
        ),
    }
    return diagnose(got, np.abs(1 / np.sqrt(rho) - 1) * e_abs, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-pol-prior-balance: where the prior variance of a passive latent settles -----------------

_BALANCE_CASES = [(0.5, 0.1), (0.01, 0.002), (2.0, 3.0), (1e-3, 1e-4), (0.2, 5.0)]  # (m, a)


@checker("ex-pol-prior-balance")
def prior_balance(answer):
    """``answer(m, a)``: the prior variance s minimising ½[m/s + log(1 + s a)]."""
    got = evaluate(answer, _BALANCE_CASES).reshape(-1)
    m, a = np.array(_BALANCE_CASES).T
    root = np.sqrt(m**2 / 4 + m / a)
    mistakes = {
        "It is the balance with the encoder's variance held at s, sqrt(m/a), the leading order "
        "for small m; with the encoder at its optimum the cost is ½[m/s + log(1 + s a)].": np.sqrt(
            m / a
        ),
        "It misses a square root: the two side effects balance where s² a ≈ m.": m / a,
        "It is upside down: a larger mean spread m calls for a *wider* prior.": np.sqrt(a / m),
        "It is the negative root of the quadratic a s² - m a s - m = 0; a variance is positive.": (
            m / 2 - root
        ),
        "It is twice the root: the quadratic formula divides by 2a.": m + 2 * root,
    }
    return diagnose(got, m / 2 + root, mistakes, rtol=1e-8, atol=1e-12)


# -- ex-pol-sampled: how much of a sampled representation is noise -------------------------------


def _representation_case(seed: int, n: int = 4000):
    """Means and variances (n, 9) of a polarised model: active latents of very different scales
    (as an iVAE's, whose prior variances grow) and passive ones with tiny mean spread."""
    rng = np.random.default_rng(seed)
    scales = np.array([100.0, 4.0, 0.5, 1.0, 1.0, 2.0, 1.0, 0.3, 1.0])
    active = np.array([True, True, True, False, False, False, False, False, False])
    mu = rng.normal(0, 1, (n, 9)) * np.where(active, 1.0, 0.03) * np.sqrt(scales)
    var = scales * np.where(active, rng.uniform(0.001, 0.02, (n, 9)), rng.uniform(0.9, 1.0, (n, 9)))
    return mu, var


def _contrast(mu, var, *, standardised=True, total_variance=True) -> float:
    """Mean over latents of E[σ_j] / Var(z_j), Var(z_j) = Var(μ_j) + E[σ_j]."""
    noise = var.mean(0)
    spread = mu.var(0) + (noise if total_variance else 0.0)
    return float(np.mean(noise / spread) if standardised else noise.sum() / spread.sum())


@checker("ex-pol-sampled")
def neighbour_contrast(answer):
    """``answer(mu, var)``: the expected squared distance between the standardised samples of two
    images with the same posterior, over that between two random images."""
    cases = [_representation_case(seed) for seed in (15, 16)]
    got = _values(answer, cases, [()] * len(cases))
    expected = np.array([_contrast(*case) for case in cases])
    mistakes = {
        "It does not standardise: the pipeline scales every latent to unit variance, so each "
        "latent weighs the same, whatever its scale.": np.array(
            [_contrast(*case, standardised=False) for case in cases]
        ),
        "It divides by Var(μ_j) alone: by the law of total variance the spread of z_j is "
        "Var(μ_j) + E[σ_j].": np.array([_contrast(*case, total_variance=False) for case in cases]),
        "It sums over the latents; the expected squared distance between two random images is "
        "2κ in standardised units, so the ratio is a mean.": expected * cases[0][0].shape[1],
        "It is twice the ratio: both expected squared distances carry the same factor 2.": (
            2 * expected
        ),
        "It is half the ratio: both expected squared distances carry the same factor 2.": (
            expected / 2
        ),
    }
    return diagnose(got, expected, mistakes, rtol=2e-3, atol=1e-9)


# -- ex-pol-rescale: the KL depends on two ratios only -------------------------------------------

_KL_CASES = [(0.3, 0.2), (2.0, 1.5), (0.0, 1.0), (0.01, 0.05), (4.0, 0.9)]  # (q, ρ)


@checker("ex-pol-rescale")
def kl_from_ratios(answer):
    """``answer(q, rho)``: KL(N(μ, σ) || N(μ†, σ†)) from q = (μ - μ†)²/σ† and ρ = σ/σ†."""
    got = evaluate(answer, _KL_CASES).reshape(-1)
    q, rho = np.array(_KL_CASES).T
    expected = 0.5 * (rho + q - 1 - np.log(rho))
    mistakes = {
        "It is twice the KL: the Gaussian KL has a factor 1/2.": 2 * expected,
        "It misses the constant -1/2: the KL of the prior from itself (q = 0, ρ = 1) is 0.": (
            expected + 0.5
        ),
        "The logarithm has the wrong sign: the KL must grow without bound as ρ → 0.": 0.5
        * (rho + q - 1 + np.log(rho)),
        "It reads ρ as a ratio of standard deviations; ρ = σ/σ† is a ratio of variances.": 0.5
        * (rho**2 + q - 1 - 2 * np.log(rho)),
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)
