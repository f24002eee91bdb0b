"""Verdicts that the numbers decide: reproduced, not reproduced, contradicted or inconclusive.

A chapter never types a verdict. It measures the effect a paper claims, with its uncertainty,
and hands the measurement to one of the functions below together with the claim and the
*smallest effect that matters* ``delta`` (the size below which the book would not call the
effect there, chosen before looking at the result). The decision compares the confidence
interval ``[lo, hi]`` of the effect with the claim:

- claim ``"greater"`` (the effect exceeds ``target``): *reproduced* when
  ``lo > target + delta`` (the whole interval says an effect that matters is there);
  *contradicted* when ``hi < target - delta`` (an effect that matters, the other way);
  *not reproduced* when ``hi < target + delta`` otherwise (every effect that matters is ruled
  out);
- claim ``"less"``: the mirror image;
- claim ``"equal"`` (the effect equals ``target``, e.g. a slope the paper predicts):
  *reproduced* when the interval lies inside ``[target - delta, target + delta]``, *not
  reproduced* when it lies outside.

Everything else is *inconclusive*: the interval is too wide to decide. With ``delta = 0`` a
directional claim can be reproduced or contradicted but never "not reproduced", because no
finite sample shows that an effect is exactly zero.

A claim with several parts (a theorem's three statements, an effect on three factors) gets
:func:`joint`: it is reproduced only when every part is, contradicted when any part is, and
otherwise takes the weakest part's label (not reproduced, then inconclusive).

Claims about a curve measured on independent groups (one group of networks per value of β):
:func:`versus_best_other` ("the peak is at β = 1": the group at β = 1 against the strongest
rival) and :func:`weakest_step` ("the term falls with β": the step between neighbours where
it falls least), both through Welch's interval.

Exact computations (an identity checked to round-off, a quadrature against a closed form) go
through :func:`exact`: the error against a stated tolerance.

The statistics come from scipy: the paired and one-sample t interval
(``scipy.stats.ttest_1samp``), Welch's interval (``scipy.stats.ttest_ind``), the
Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) with a bootstrap interval of the
median (``scipy.stats.bootstrap``), and the normal interval of an estimate with a
standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .checks import check_choice, check_number, check_positive, check_positive_int

__all__ = [
    "LABELS",
    "JointVerdict",
    "Verdict",
    "decide",
    "estimate",
    "exact",
    "joint",
    "paired",
    "sample",
    "unpaired",
    "versus_best_other",
    "weakest_step",
]

LABELS = ("reproduced", "not reproduced", "contradicted", "inconclusive")
_CLAIMS = ("greater", "less", "equal")


@dataclass(frozen=True)
class Verdict:
    """A computed verdict and the measurement behind it. Its fields:

    - label : one of ``LABELS``.
    - claim : ``"greater"``, ``"less"`` or ``"equal"`` (what the paper says of the effect
      relative to ``target``), or ``"exact"``.
    - effect : the measured effect (a mean difference, an estimate, or an exact value).
    - ci : ``(lo, hi)``, the confidence interval of the effect (``(effect, effect)`` for an
      exact check).
    - n : the number of paired seeds, samples or (for an exact check) 1.
    - test : how the interval was obtained ("paired t", "Wilcoxon", "exact", ...).
    - target : the value the claim compares the effect with.
    - delta : the smallest effect that matters (for an exact check: the tolerance).
    - confidence : the level of the interval.
    - p_value : the p-value of the test of ``effect = target`` (``nan`` for an exact check).
    """

    label: str
    claim: str
    effect: float
    ci: tuple[float, float]
    n: int
    test: str
    target: float = 0.0
    delta: float = 0.0
    confidence: float = 0.95
    p_value: float = math.nan

    @property
    def margin(self) -> float:
        """Half-width of the interval, or for an exact check the error against the target."""
        if self.claim == "exact":
            return abs(self.effect - self.target)
        return (self.ci[1] - self.ci[0]) / 2

    def summary(self, digits: int = 3) -> str:
        """One line for the book, e.g. ``"reproduced: 0.41 [0.32, 0.50], paired t, n = 10"``."""
        g = f".{digits}g"
        if self.claim == "exact":
            return (
                f"{self.label}: error {self.margin:.1e} against tolerance {self.delta:.0e}"
                f" ({format(self.effect, g)} vs {format(self.target, g)})"
            )
        lo, hi = self.ci
        if self.claim == "equal":
            claim = f"claim {format(self.target, g)} ± {format(self.delta, g)}"
        else:
            relation = ">" if self.claim == "greater" else "<"
            claim = f"claim {relation} {format(self.target, g)}, smallest effect that matters "
            claim += format(self.delta, g)
        if lo == hi:  # no sampling error: an exact value, or no spread over the seeds
            return f"{self.label}: {format(self.effect, g)} (exact, n = {self.n}; {claim})"
        return (
            f"{self.label}: {format(self.effect, g)} [{format(lo, g)}, {format(hi, g)}]"
            f" ({100 * self.confidence:g} % CI, {self.test}, n = {self.n}; {claim})"
        )

    def __str__(self) -> str:
        return self.summary()


@dataclass(frozen=True)
class JointVerdict:
    """The verdict on a claim with several parts, and the part verdicts it comes from.

    - label : one of ``LABELS`` (see :func:`joint`).
    - parts : ``{name: Verdict}`` in the order the claim lists them.
    """

    label: str
    parts: dict

    def summary(self, digits: int = 3) -> str:
        """One line: the joint label, then each part's name and summary."""
        lines = "; ".join(f"{name}: {v.summary(digits)}" for name, v in self.parts.items())
        return f"{self.label} ({lines})"

    def __str__(self) -> str:
        return self.summary()


def joint(parts) -> JointVerdict:
    """Combine the verdicts on the parts of one claim.

    Parameters
    ----------
    parts : mapping ``name -> Verdict`` (at least one).

    The claim is *reproduced* when every part is, *contradicted* when any part is, else *not
    reproduced* when any part is, else *inconclusive*.
    """
    if not hasattr(parts, "items") or not parts:
        raise ValueError(f"parts must be a non-empty mapping of names to verdicts, got {parts!r}")
    for name, verdict in parts.items():
        if not isinstance(verdict, (Verdict, JointVerdict)):
            raise TypeError(f"parts[{name!r}] must be a Verdict, got {type(verdict).__name__}")
    labels = {verdict.label for verdict in parts.values()}
    for label in ("contradicted", "not reproduced", "inconclusive"):
        if label in labels:
            break
    else:
        label = "reproduced"
    return JointVerdict(label, dict(parts))


def decide(lo: float, hi: float, claim: str, target: float = 0.0, delta: float = 0.0) -> str:
    """The label that an interval ``[lo, hi]`` gives a claim (rules in the module docstring)."""
    check_choice(claim, "claim", _CLAIMS)
    lo, hi, target = (check_number(v, k) for v, k in ((lo, "lo"), (hi, "hi"), (target, "target")))
    delta = check_positive(delta, "delta", allow_zero=True)
    if lo > hi:
        raise ValueError(f"lo must not exceed hi, got lo = {lo}, hi = {hi}")
    if claim == "equal":
        if target - delta <= lo and hi <= target + delta:
            return "reproduced"
        if hi < target - delta or lo > target + delta:
            return "not reproduced"
        return "inconclusive"
    if claim == "less":  # mirror onto "greater"
        lo, hi, target = -hi, -lo, -target
    if lo > target + delta:
        return "reproduced"
    if hi < target - delta:
        return "contradicted"
    if hi < target + delta:
        return "not reproduced"
    return "inconclusive"


def paired(
    treated,
    control,
    *,
    claim: str,
    delta: float,
    target: float = 0.0,
    test: str = "t",
    confidence: float = 0.95,
    seed: int = 0,
) -> Verdict:
    """Verdict on the per-seed differences ``treated - control``.

    Parameters
    ----------
    treated, control : array-like, shape (n,), n >= 2, one value per seed; seed ``i`` of both
        arms shares its initialisation and data order, so the differences remove that variation.
    claim : ``"greater"``, ``"less"`` or ``"equal"``: what the paper says of the difference.
    delta : the smallest difference that matters (>= 0).
    target : the value the claim compares the difference with (default 0).
    test : ``"t"`` (paired t interval of the mean difference) or ``"wilcoxon"`` (signed-rank
        p-value, percentile-bootstrap interval of the median difference).
    confidence : level of the interval, in (0, 1).
    seed : seed of the bootstrap (Wilcoxon only).

    With zero spread in the differences the interval is the single value: the effect is known
    exactly (e.g. a deterministic computation repeated over seeds).
    """
    a = _as_sample(treated, "treated")
    b = _as_sample(control, "control")
    if a.shape != b.shape:
        raise ValueError(f"treated and control must pair up, got shapes {a.shape} and {b.shape}")
    return _one_sample(a - b, claim, delta, target, test, confidence, seed, "paired ")


def sample(
    values,
    *,
    claim: str,
    delta: float,
    target: float = 0.0,
    test: str = "t",
    confidence: float = 0.95,
    seed: int = 0,
) -> Verdict:
    """Verdict on the mean (t) or median (Wilcoxon) of one sample, e.g. a slope per seed.

    Parameters
    ----------
    values : array-like, shape (n,), n >= 2: independent replicates of the effect.
    claim, delta, target, test, confidence, seed : as in :func:`paired`.
    """
    return _one_sample(
        _as_sample(values, "values"), claim, delta, target, test, confidence, seed, ""
    )


def unpaired(
    treated,
    control,
    *,
    claim: str,
    delta: float,
    target: float = 0.0,
    confidence: float = 0.95,
) -> Verdict:
    """Verdict on ``mean(treated) - mean(control)`` for independent samples (Welch's t).

    Parameters
    ----------
    treated, control : array-like, shapes (n,) and (m,), n, m >= 2.
    claim, delta, target, confidence : as in :func:`paired`.
    """
    a = _as_sample(treated, "treated")
    b = _as_sample(control, "control")
    _check_claim(claim, delta, target, confidence)
    effect = float(a.mean() - b.mean())
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread in either arm: the difference is exact
        lo = hi = effect
        p = math.nan
    else:
        res = stats.ttest_ind(a, b, equal_var=False)
        ci = res.confidence_interval(confidence)
        lo, hi = float(ci.low), float(ci.high)
        p = float(stats.ttest_ind(a - target, b, equal_var=False).pvalue)
    return Verdict(
        decide(lo, hi, claim, target, delta),
        claim,
        effect,
        (lo, hi),
        a.size + b.size,
        "Welch t",
        float(target),
        float(delta),
        confidence,
        p,
    )


def versus_best_other(
    groups, at: int, *, best: str, claim: str, delta: float = 0.0, confidence: float = 0.95
) -> tuple[Verdict, int]:
    """Verdict on group ``at`` against its strongest rival, e.g. "the ELBO peaks at β = 1".

    The rival is the other group with the largest (``best="max"``) or the smallest
    (``best="min"``) mean; the verdict is :func:`unpaired` on ``groups[at] - groups[rival]``.
    With ``best="max"`` and ``claim="greater"`` it asks whether group ``at`` has the largest
    mean; with ``best="min"`` and ``claim="greater"``, whether some other group has a smaller
    mean than group ``at`` (e.g. "TIE is least at some β ≠ 1").

    Parameters
    ----------
    groups : sequence of array-likes (or a 2-D array, one row per group), >= 2 groups of >= 2
        values each, e.g. one value per network at each β.
    at : index of the group the claim is about.
    best : ``"max"`` or ``"min"``; claim, delta, confidence : as in :func:`unpaired`.

    Returns
    -------
    ``(verdict, rival)``: the :class:`Verdict` and the rival's index.
    """
    groups = _groups(groups, "groups", minimum=2)
    at = check_positive_int(at, "at", allow_zero=True)
    if at >= len(groups):
        raise ValueError(f"at must index one of the {len(groups)} groups, got {at}")
    check_choice(best, "best", ("max", "min"))
    means = [g.mean() for g in groups]
    others = [i for i in range(len(groups)) if i != at]
    pick = max if best == "max" else min
    rival = pick(others, key=lambda i: means[i])
    verdict = unpaired(groups[at], groups[rival], claim=claim, delta=delta, confidence=confidence)
    return verdict, rival


def weakest_step(
    groups, *, claim: str, delta: float = 0.0, confidence: float = 0.95
) -> tuple[Verdict, int]:
    """Verdict on "the mean falls (``claim="less"``) or rises (``"greater"``) from each group
    to the next", decided on the step where it moves least in that direction.

    The step ``i -> i + 1`` with the largest rise of the mean (for ``"less"``; the largest fall
    for ``"greater"``) is tested with :func:`unpaired` on ``groups[i + 1] - groups[i]``: a
    monotone trend holds only if its weakest step does.

    Parameters
    ----------
    groups : sequence of array-likes (or a 2-D array), >= 2 groups of >= 2 values each, in
        order (e.g. by increasing β).
    claim : ``"less"`` or ``"greater"``; delta, confidence : as in :func:`unpaired`.

    Returns
    -------
    ``(verdict, i)``: the :class:`Verdict` and the index of the step's first group.
    """
    groups = _groups(groups, "groups", minimum=2)
    check_choice(claim, "claim", ("less", "greater"))
    steps = np.diff([g.mean() for g in groups])
    i = int(np.argmax(steps) if claim == "less" else np.argmin(steps))
    verdict = unpaired(groups[i + 1], groups[i], claim=claim, delta=delta, confidence=confidence)
    return verdict, i


def estimate(
    value: float,
    standard_error: float,
    *,
    claim: str,
    delta: float,
    target: float = 0.0,
    n: int = 1,
    df: float | None = None,
    confidence: float = 0.95,
) -> Verdict:
    """Verdict on an estimate with a standard error (normal interval, or t with ``df``).

    Parameters
    ----------
    value : the estimate (e.g. a Monte Carlo mean, a fitted slope).
    standard_error : its standard error (>= 0; 0 gives the single-point interval).
    claim, delta, target, confidence : as in :func:`paired`.
    n : the sample size behind the estimate, reported in the summary.
    df : degrees of freedom of a t interval; ``None`` for the normal interval.
    """
    value = check_number(value, "value")
    se = check_positive(standard_error, "standard_error", allow_zero=True)
    n = check_positive_int(n, "n")
    if df is not None:
        df = check_positive(df, "df")
    _check_claim(claim, delta, target, confidence)
    dist = stats.norm if df is None else stats.t(df)
    z = float(dist.ppf(0.5 + confidence / 2))
    lo, hi = value - z * se, value + z * se
    p = float(2 * dist.sf(abs(value - target) / se)) if se > 0 else math.nan
    test = "normal" if df is None else f"t, df = {df:g}"
    return Verdict(
        decide(lo, hi, claim, target, delta),
        claim,
        value,
        (lo, hi),
        n,
        test,
        float(target),
        float(delta),
        confidence,
        p,
    )


def exact(value: float, reference: float, *, tolerance: float) -> Verdict:
    """Verdict on an exact computation: reproduced iff ``|value - reference| <= tolerance``.

    Parameters
    ----------
    value : what the check computed (e.g. a finite-difference derivative).
    reference : what the claim says it equals, reached by another route.
    tolerance : the largest error still counted as agreement (> 0), stated before the run.
    """
    value = check_number(value, "value")
    reference = check_number(reference, "reference")
    tolerance = check_positive(tolerance, "tolerance")
    label = "reproduced" if abs(value - reference) <= tolerance else "not reproduced"
    return Verdict(
        label, "exact", value, (value, value), 1, "exact", reference, tolerance, 1.0, math.nan
    )


def _one_sample(d, claim, delta, target, test, confidence, seed, prefix) -> Verdict:
    _check_claim(claim, delta, target, confidence)
    check_choice(test, "test", ("t", "wilcoxon"))
    name = prefix + ("t" if test == "t" else "Wilcoxon")
    if np.ptp(d) == 0:  # no spread: the effect is known exactly
        effect = float(d[0])
        lo = hi = effect
        p = math.nan
    elif test == "t":
        effect = float(d.mean())
        res = stats.ttest_1samp(d, popmean=target)
        ci = res.confidence_interval(confidence)
        lo, hi, p = float(ci.low), float(ci.high), float(res.pvalue)
    else:
        effect = float(np.median(d))
        p = float(stats.wilcoxon(d - target).pvalue) if np.any(d != target) else 1.0
        boot = stats.bootstrap(
            (d,),
            np.median,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        lo, hi = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    return Verdict(
        decide(lo, hi, claim, target, delta),
        claim,
        effect,
        (lo, hi),
        int(d.size),
        name,
        float(target),
        float(delta),
        confidence,
        p,
    )


def _as_sample(values, name: str) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of numbers") from exc
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size < 2:
        raise ValueError(f"{name} needs at least 2 values to measure a spread, got {a.size}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    return a


def _groups(groups, name: str, minimum: int) -> list[np.ndarray]:
    if isinstance(groups, (str, bytes)) or not hasattr(groups, "__len__"):
        raise TypeError(f"{name} must be a sequence of samples, got {type(groups).__name__}")
    if len(groups) < minimum:
        raise ValueError(f"{name} must hold at least {minimum} groups, got {len(groups)}")
    return [_as_sample(g, f"{name}[{i}]") for i, g in enumerate(groups)]


def _check_claim(claim, delta, target, confidence) -> None:
    check_choice(claim, "claim", _CLAIMS)
    check_positive(delta, "delta", allow_zero=True)
    check_number(target, "target")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        raise TypeError(f"confidence must be a number, got {type(confidence).__name__}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
