"""Answer checkers for the exercises of book/high_capacity.md (see :mod:`vaebook.exercises`)."""

from __future__ import annotations

import math

import numpy as np
import torch

from . import as_values, checker, close, diagnose, evaluate

_F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- ex-hc-blur: the decoder on a region two supports share ------------------------------------


@checker("ex-hc-blur")
def shared_decoder(answer):
    """``answer(x1, x2, pi1, pi2)``: the optimal decoder on the region both supports cover."""
    gen = _gen(11)
    cases = [
        (torch.rand(5, generator=gen, dtype=_F64), torch.rand(5, generator=gen, dtype=_F64), p1, p2)
        for p1, p2 in ((0.15, 0.45), (0.5, 0.1), (0.3, 0.3))
    ]
    got = evaluate(answer, cases)
    expected = np.stack(
        [((x1 / p1 + x2 / p2) / (1 / p1 + 1 / p2)).numpy() for x1, x2, p1, p2 in cases]
    )
    by_mass = np.stack([((p1 * x1 + p2 * x2) / (p1 + p2)).numpy() for x1, x2, p1, p2 in cases])
    plain = np.stack([((x1 + x2) / 2).numpy() for x1, x2, _, _ in cases])
    unnormalised = np.stack([(x1 / p1 + x2 / p2).numpy() for x1, x2, p1, p2 in cases])
    return diagnose(
        got,
        expected,
        {
            "It weights each point by its support's mass: Proposition 3 weights by the inverse "
            "mass (a small support means a high posterior density).": by_mass,
            "It averages the two points equally: the supports' masses must enter.": plain,
            "The weights do not sum to one: divide by the sum of the inverse masses.": unnormalised,
        },
    )


# -- ex-hc-partition-excess: what an unequal tiling costs --------------------------------------


@checker("ex-hc-partition-excess")
def partition_excess(answer):
    """``answer(masses)``: the KL of a partition with these masses minus ``ln n``, in nats."""
    gen = _gen(12)
    raw = [torch.rand(n, generator=gen, dtype=_F64) + 0.05 for n in (5, 12, 3)]
    cases = [((r / r.sum()).numpy(),) for r in raw] + [(np.full(4, 0.25),)]
    got = evaluate(answer, cases).reshape(-1)
    masses = [c[0] for c in cases]
    expected = np.array([-np.log(p).mean() - math.log(len(p)) for p in masses])
    return diagnose(
        got,
        expected,
        {
            "It is KL(π || uniform): the excess is the KL from the uniform distribution to the "
            "masses, with the average taken over data points, not over mass.": np.array(
                [np.sum(p * np.log(p * len(p))) for p in masses]
            ),
            "It is the KL itself: subtract the equiprobable value ln n.": np.array(
                [-np.log(p).mean() for p in masses]
            ),
            "It sums over data points: the KL term averages over them.": np.array(
                [-np.log(p).sum() - math.log(len(p)) for p in masses]
            ),
        },
    )


# -- the two-point case: u(β), its slope at β_c, and the KL ------------------------------------


def _split(a: float, beta: float, kernel: float = 2.0) -> tuple[float, float]:
    """``(s*, w)`` of the split fixed point ``s = a tanh(2as / (kernel β))``; ``(0, 1/2)`` above
    ``β_c`` (kernel 2 is eq. 15's ``exp(-|x - ψ|² / 2β)``)."""
    from scipy.optimize import brentq

    if a * a * 2.0 / kernel <= beta:
        return 0.0, 0.5
    s = brentq(lambda s: a * math.tanh(2 * a * s / (kernel * beta)) - s, 1e-12, a)
    return s, 1.0 / (1.0 + math.exp(-4 * a * s / (kernel * beta)))


_TWO_POINT_CASES = [(0.4, 0.3 * 0.16), (0.4, 0.8 * 0.16), (1.3, 0.5 * 1.69), (1.3, 1.2 * 1.69)]


@checker("ex-hc-two-point")
def two_point_u(answer):
    """``answer(a, beta)``: the reconstruction error u(β) of the split fixed point."""
    got = evaluate(answer, _TWO_POINT_CASES).reshape(-1)
    expected = np.array([a * a - _split(a, b)[0] ** 2 for a, b in _TWO_POINT_CASES])
    wide = np.array([a * a - _split(a, b, kernel=1.0)[0] ** 2 for a, b in _TWO_POINT_CASES])
    return diagnose(
        got,
        expected,
        {
            "It stays at a² for every β: below β_c = a² the split fixed point s* > 0 is the one "
            "the iteration reaches.": np.array([a * a for a, _ in _TWO_POINT_CASES]),
            "It is s*², the squared split: u is the error a² - s*² left after it.": np.array(
                [_split(a, b)[0] ** 2 for a, b in _TWO_POINT_CASES]
            ),
            "Its kernel is exp(-|x - ψ|²/β): eq. 15's kernel has 2β.": wide,
        },
        rtol=1e-6,
        atol=1e-9,
    )


@checker("ex-hc-pitchfork")
def pitchfork_slope(answer):
    """``answer``: the slope du/dβ just below β_c (a number)."""
    got = as_values(answer)
    if got.shape != ():
        raise ValueError(f"answer must be one number, the slope, got shape {got.shape}")
    if close(got, 3.0, rtol=0.02, atol=0.0):
        return True, "It is the jump of the slope at β_c, to within 2 %."
    if close(got, 0.0, rtol=0.0, atol=0.05):
        return False, "That is the slope above β_c, where u = a² is flat; look just below."
    if close(got, -3.0, rtol=0.02, atol=0.0):
        return False, "The sign: u grows with β towards a², so its slope is positive."
    if close(got, 1.0, rtol=0.02, atol=0.0):
        return False, "Expand tanh to third order: the cubic term sets s*² and its factor 3."
    return False, "Not the slope below β_c; expand the map to third order in s."


@checker("ex-hc-two-point-kl")
def two_point_kl(answer):
    """``answer(a, beta)``: the KL term (nats) at the two-point split fixed point."""
    got = evaluate(answer, _TWO_POINT_CASES).reshape(-1)

    def entropy(w):
        return 0.0 if w in (0.0, 1.0) else -(w * math.log(w) + (1 - w) * math.log(1 - w))

    ws = [_split(a, b)[1] for a, b in _TWO_POINT_CASES]
    expected = np.array([math.log(2) - entropy(w) for w in ws])
    return diagnose(
        got,
        expected,
        {
            "It uses entropy in bits: the KL term is in nats (natural logarithms).": np.array(
                [math.log(2) - entropy(w) / math.log(2) for w in ws]
            ),
            "The sign of the entropy: the KL is ln 2 minus the entropy of the split.": np.array(
                [math.log(2) + entropy(w) for w in ws]
            ),
            "It is the entropy of the split; the KL measures how far the posterior is from the "
            "uniform prior over the two halves.": np.array([entropy(w) for w in ws]),
        },
        rtol=1e-6,
        atol=1e-9,
    )


# -- the mean solution's critical β, the merge scale of a pair, one step of eq. 15 --------------


def _point_cloud(seed: int, n: int, d: int) -> torch.Tensor:
    scales = torch.linspace(0.3, 1.0, d, dtype=_F64)
    return torch.randn(n, d, generator=_gen(seed), dtype=_F64) * scales


@checker("ex-hc-mean-critical")
def critical_beta(answer):
    """``answer(X)``: the β below which the mean solution of eq. 15 is unstable."""
    clouds = [(_point_cloud(seed, n, d),) for seed, n, d in ((21, 40, 2), (22, 9, 3), (23, 200, 5))]
    got = evaluate(answer, clouds).reshape(-1)

    def eig(X, ddof=0, which=-1):
        c = X - X.mean(0)
        return float(torch.linalg.eigvalsh(c.T @ c / (len(X) - ddof))[which])

    expected = np.array([eig(X) for (X,) in clouds])
    return diagnose(
        got,
        expected,
        {
            "It divides by n - 1: the iteration averages over the n data points (the biased "
            "covariance).": np.array([eig(X, ddof=1) for (X,) in clouds]),
            "It is the smallest eigenvalue: the mean solution goes unstable along the direction of "
            "largest variance.": np.array([eig(X, which=0) for (X,) in clouds]),
            "It is the total variance (the trace): only the top eigenvalue matters.": np.array(
                [float(((X - X.mean(0)) ** 2).sum(1).mean()) for (X,) in clouds]
            ),
            "It is a standard deviation: β has the units of a squared distance.": np.sqrt(expected),
        },
    )


@checker("ex-hc-merge-scale")
def merge_scale(answer):
    """``answer(X)``: the β above which the closest pair of points starts to merge."""
    clouds = [(_point_cloud(seed, n, d),) for seed, n, d in ((31, 12, 4), (32, 30, 2), (33, 6, 8))]
    got = evaluate(answer, clouds).reshape(-1)

    def distances(X):
        d = torch.cdist(X, X)
        return d[~torch.eye(len(X), dtype=torch.bool)]

    d_min = np.array([float(distances(X).min()) for (X,) in clouds])
    return diagnose(
        got,
        d_min**2 / 4,
        {
            "It is the squared distance itself: two points at ±a merge at β_c = a², with a half "
            "their distance.": d_min**2,
            "It is not squared: β has the units of a squared distance.": d_min / 2,
            "It uses the farthest pair: the first merge is of the closest one.": np.array(
                [float(distances(X).max()) ** 2 / 4 for (X,) in clouds]
            ),
        },
    )


@checker("ex-hc-one-step")
def one_step(answer):
    """``answer(X, psi, beta, prior)``: one plain step (no smoothing) of eq. 15."""
    from ..high_capacity import fixed_points

    gen = _gen(41)
    cases = []
    for n, m, d, beta in ((7, 12, 3, 0.05), (7, 12, 3, 0.2), (7, 12, 3, 1.5)):
        X = torch.rand(n, d, generator=gen, dtype=_F64) - 0.5
        psi = torch.rand(m, d, generator=gen, dtype=_F64) - 0.5
        prior = torch.softmax(torch.randn(m, generator=gen, dtype=_F64), 0)
        cases.append((X, psi, beta, prior))
    got = evaluate(answer, cases)

    def step(X, psi, beta, prior, kernel=2.0, use_prior=True, per_point=False):
        H = torch.cdist(X, psi) ** 2
        log_prior = prior.log() if use_prior else torch.zeros_like(prior)
        log_m = -H / (kernel * beta)
        log_m = log_m - torch.logsumexp(log_m + log_prior, 1, keepdim=True)
        weights = torch.softmax(log_m, dim=1 if per_point else 0)
        return (weights.T @ X).numpy()

    expected = np.stack(
        [
            fixed_points(X, b, psi0=psi, prior=p, max_iter=1, smoothing=1.0, dtype=_F64).psi.numpy()
            for X, psi, b, p in cases
        ]
    )
    return diagnose(
        got,
        expected,
        {
            "Its kernel is exp(-H/β): eq. 15 has exp(-H/2β).": np.stack(
                [step(*c, kernel=1.0) for c in cases]
            ),
            "It leaves the prior out of the normaliser c_i = Σ_b exp(-H_ib/2β) π_b.": np.stack(
                [step(*c, use_prior=False) for c in cases]
            ),
            "It normalises each tile's weights over the tiles: ψ_a averages the data, so normalise "
            "over the data points i.": np.stack([step(*c, per_point=True) for c in cases]),
        },
        rtol=1e-7,
        atol=1e-10,
    )
