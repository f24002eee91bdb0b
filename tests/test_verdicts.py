"""Tests of vaebook.verdicts: each label on constructed data, the power edge cases, bad input."""

import math

import numpy as np
import pytest

from vaebook import verdicts

# --- the decision rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lo", "hi", "label"),
    [
        (0.6, 0.9, "reproduced"),  # the whole interval beyond delta = 0.5
        (0.4, 0.9, "inconclusive"),  # a negligible effect not ruled out
        (-0.2, 0.4, "not reproduced"),  # every effect that matters ruled out
        (-0.9, 0.4, "not reproduced"),  # ruled out in the claimed direction, spread below
        (-0.9, -0.6, "contradicted"),  # an effect that matters, the other way
        (-0.9, 0.9, "inconclusive"),  # wide: nothing decided
    ],
)
def test_decide_greater(lo, hi, label):
    assert verdicts.decide(lo, hi, "greater", delta=0.5) == label


@pytest.mark.parametrize(
    ("lo", "hi", "label"),
    [
        (-0.9, -0.6, "reproduced"),
        (-0.9, -0.4, "inconclusive"),
        (-0.4, 0.2, "not reproduced"),
        (0.6, 0.9, "contradicted"),
    ],
)
def test_decide_less_mirrors_greater(lo, hi, label):
    assert verdicts.decide(lo, hi, "less", delta=0.5) == label


def test_decide_target_shifts_the_thresholds():
    # the paper claims an effect of at least 2; delta 0.5 around it
    assert verdicts.decide(2.6, 3.0, "greater", target=2, delta=0.5) == "reproduced"
    assert verdicts.decide(2.2, 3.0, "greater", target=2, delta=0.5) == "inconclusive"
    assert verdicts.decide(0.6, 0.9, "greater", target=2, delta=0.5) == "contradicted"


@pytest.mark.parametrize(
    ("lo", "hi", "label"),
    [
        (2.9, 3.1, "reproduced"),  # inside 3 ± 0.2
        (3.3, 3.5, "not reproduced"),  # outside above
        (2.0, 2.7, "not reproduced"),  # outside below
        (2.9, 3.3, "inconclusive"),  # straddles the edge
    ],
)
def test_decide_equal_is_an_equivalence_test(lo, hi, label):
    assert verdicts.decide(lo, hi, "equal", target=3.0, delta=0.2) == label


def test_without_a_smallest_effect_a_null_is_never_accepted():
    assert verdicts.decide(-1e-9, 1e-9, "greater", delta=0) == "inconclusive"
    assert verdicts.decide(1e-9, 2e-9, "greater", delta=0) == "reproduced"
    assert verdicts.decide(-2e-9, -1e-9, "greater", delta=0) == "contradicted"


# --- paired, one-sample and unpaired measurements -----------------------------------------------


def test_paired_t_interval_matches_the_textbook_value_at_n_2():
    # d = (0, 2): mean 1, sd sqrt(2), se 1, t_{0.975, 1} = 12.7062 (a printed table's value)
    v = verdicts.paired([1.0, 5.0], [1.0, 3.0], claim="greater", delta=0.1)
    assert v.effect == 1.0
    assert v.ci == pytest.approx((1 - 12.7062, 1 + 12.7062), abs=1e-4)
    assert v.n == 2
    assert v.label == "inconclusive"  # two seeds cannot decide a 0.1 effect of spread 1.4
    assert v.test == "paired t"


def test_paired_removes_the_seed_to_seed_variation():
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, 5, 12)  # large variation shared by both arms
    control = seed_effect + rng.normal(0, 0.01, 12)
    treated = seed_effect + 1 + rng.normal(0, 0.01, 12)
    assert verdicts.paired(treated, control, claim="greater", delta=0.5).label == "reproduced"
    assert verdicts.unpaired(treated, control, claim="greater", delta=0.5).label == "inconclusive"


def test_paired_labels_on_constructed_data():
    rng = np.random.default_rng(1)
    base = rng.normal(size=20)
    noise = rng.normal(0, 0.05, 20)
    kw = {"claim": "greater", "delta": 0.2}
    assert verdicts.paired(base + 1 + noise, base, **kw).label == "reproduced"
    assert verdicts.paired(base + noise, base, **kw).label == "not reproduced"
    assert verdicts.paired(base - 1 + noise, base, **kw).label == "contradicted"
    assert verdicts.paired(base + 10 * noise, base, **kw).label == "inconclusive"


def test_zero_spread_gives_the_exact_difference():
    v = verdicts.paired([3.0, 4.0, 5.0], [2.0, 3.0, 4.0], claim="greater", delta=0.5)
    assert v.ci == (1.0, 1.0)
    assert v.label == "reproduced"
    assert math.isnan(v.p_value)
    w = verdicts.paired([3.0, 4.0], [2.9, 3.9], claim="greater", delta=0.5)
    assert w.label == "not reproduced"


def test_wilcoxon_uses_the_median_and_a_bootstrap_interval():
    rng = np.random.default_rng(2)
    d = np.concatenate([rng.normal(1, 0.1, 15), [50.0]])  # one outlier
    v = verdicts.paired(d, np.zeros(16), claim="greater", delta=0.5, test="wilcoxon")
    assert v.effect == pytest.approx(np.median(d))
    assert v.ci[0] > 0.5 and v.ci[1] < 2  # the outlier does not widen the median's interval
    assert v.label == "reproduced"
    assert v.p_value < 1e-3
    again = verdicts.paired(d, np.zeros(16), claim="greater", delta=0.5, test="wilcoxon")
    assert again == v  # seeded bootstrap: deterministic


def test_sample_is_the_one_sample_version():
    slopes = np.array([2.98, 3.01, 3.02, 2.99, 3.0])
    v = verdicts.sample(slopes, claim="equal", target=3.0, delta=0.1)
    assert v.label == "reproduced"
    assert v.effect == pytest.approx(3.0)
    assert v.test == "t"
    assert verdicts.sample(slopes, claim="equal", target=5.0, delta=0.1).label == "not reproduced"


def test_unpaired_welch_interval_covers_the_difference():
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 1, 40), rng.normal(0.0, 3, 60)
    v = verdicts.unpaired(a, b, claim="greater", delta=0.0)
    se = math.sqrt(a.var(ddof=1) / 40 + b.var(ddof=1) / 60)
    assert v.effect == pytest.approx(a.mean() - b.mean())
    # Welch's interval is a little wider than the normal one
    assert v.ci[0] < v.effect - 1.959 * se and v.ci[1] > v.effect + 1.959 * se
    assert v.ci[1] - v.ci[0] < 2 * 2.05 * se
    assert v.n == 100


def test_estimate_normal_and_t_intervals():
    v = verdicts.estimate(1.0, 0.1, claim="greater", delta=0.6)
    assert v.ci == pytest.approx((1 - 0.195996, 1 + 0.195996), abs=1e-5)
    assert v.label == "reproduced"
    w = verdicts.estimate(1.0, 0.1, claim="greater", delta=0.6, df=2, n=3)
    assert w.ci == pytest.approx((1 - 0.430265, 1 + 0.430265), abs=1e-5)  # t_{0.975, 2} = 4.3027
    assert w.label == "inconclusive"
    # two-sided p of t = 10 with 2 degrees of freedom: 1 - t / sqrt(t^2 + 2) in closed form
    assert w.p_value == pytest.approx(1 - 10 / math.sqrt(102), rel=1e-9)


def test_exact_compares_the_error_with_the_tolerance():
    assert verdicts.exact(1.0 + 1e-12, 1.0, tolerance=1e-9).label == "reproduced"
    v = verdicts.exact(1.01, 1.0, tolerance=1e-3)
    assert v.label == "not reproduced"
    assert v.margin == pytest.approx(0.01)


# --- the rendering ------------------------------------------------------------------------------


def test_summary_shows_the_margin():
    v = verdicts.paired([1.0, 2.0, 3.0], [0.0, 0.5, 1.0], claim="greater", delta=0.25)
    text = v.summary()
    assert text.startswith(v.label + ":")
    assert "n = 3" in text and "paired t" in text and "95 % CI" in text
    assert f"{v.ci[0]:.3g}" in text and f"{v.ci[1]:.3g}" in text
    assert str(v) == text
    e = verdicts.exact(0.5, 0.5 + 2e-9, tolerance=1e-6).summary()
    assert e.startswith("reproduced: error 2.0e-09 against tolerance 1e-06")
    q = verdicts.estimate(3.0, 0.01, claim="equal", target=3.0, delta=0.1).summary()
    assert "claim 3 ± 0.1" in q
    z = verdicts.estimate(0.022, 0.0, claim="greater", delta=0.192).summary()
    assert (
        z == "not reproduced: 0.022 (exact, n = 1; claim > 0, smallest effect that matters 0.192)"
    )


# --- claims about a curve over groups ------------------------------------------------------------


def test_versus_best_other_tests_the_group_against_its_strongest_rival():
    groups = [[1.0, 2.0], [5.0, 6.5], [3.0, 4.0], [0.0, 1.0]]  # means 1.5, 5.75, 3.5, 0.5
    v, rival = verdicts.versus_best_other(groups, 1, best="max", claim="greater")
    assert rival == 2  # the largest mean among the others
    assert v.effect == pytest.approx(5.75 - 3.5)
    reference = verdicts.unpaired([5.0, 6.5], [3.0, 4.0], claim="greater", delta=0.0)
    assert v.ci == pytest.approx(reference.ci) and v.label == reference.label
    v, rival = verdicts.versus_best_other(groups, 1, best="min", claim="greater")
    assert rival == 3 and v.effect == pytest.approx(5.75 - 0.5)  # the smallest mean
    # the rival is never the group itself, even when it has the extreme mean
    v, rival = verdicts.versus_best_other(np.array(groups), 3, best="min", claim="less")
    assert rival == 0 and v.effect == pytest.approx(0.5 - 1.5)
    assert v.ci == pytest.approx(
        verdicts.unpaired([0.0, 1.0], [1.0, 2.0], claim="less", delta=0.0).ci
    )


def test_versus_best_other_labels_a_clear_peak_and_a_clear_miss():
    rng = np.random.default_rng(0)
    peak = [rng.normal(m, 0.1, 20) for m in (0.0, 1.0, 0.5)]
    assert verdicts.versus_best_other(peak, 1, best="max", claim="greater")[0].label == "reproduced"
    assert verdicts.versus_best_other(peak, 2, best="max", claim="greater")[0].label == (
        "contradicted"
    )
    v, _ = verdicts.versus_best_other(peak, 1, best="max", claim="greater", delta=2.0)
    assert v.label == "not reproduced" and v.delta == 2.0
    v, _ = verdicts.versus_best_other(peak, 1, best="max", claim="greater", confidence=0.5)
    assert v.confidence == 0.5


def test_weakest_step_decides_a_trend_on_its_smallest_move():
    groups = [[10.0, 10.2], [7.0, 7.2], [6.0, 6.4], [4.0, 4.2]]  # falls 2.9, 0.9, 2.1
    v, i = verdicts.weakest_step(groups, claim="less")
    assert i == 1 and v.effect == pytest.approx(6.2 - 7.1)
    assert v.ci == pytest.approx(
        verdicts.unpaired([6.0, 6.4], [7.0, 7.2], claim="less", delta=0.0).ci
    )
    rising = [[-x for x in g] for g in groups]  # rises 2.9, 0.9, 2.1
    v, i = verdicts.weakest_step(rising, claim="greater")
    assert i == 1 and v.effect == pytest.approx(7.1 - 6.2) and v.claim == "greater"
    # one step the wrong way decides the trend, however large the others
    rng = np.random.default_rng(1)
    bumpy = [rng.normal(m, 0.1, 20) for m in (5.0, 3.0, 3.5, 1.0)]
    v, i = verdicts.weakest_step(bumpy, claim="less")
    assert i == 1 and v.label == "contradicted"
    v, i = verdicts.weakest_step(bumpy, claim="less", delta=0.2, confidence=0.9)
    assert v.label == "contradicted" and v.delta == 0.2 and v.confidence == 0.9
    falling = [rng.normal(m, 0.1, 20) for m in (5.0, 3.0, 2.0, 1.0)]
    assert verdicts.weakest_step(falling, claim="less")[0].label == "reproduced"


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: verdicts.versus_best_other([[1, 2]], 0, best="max", claim="greater"),
            ValueError,
            r"^groups must hold at least 2 groups, got 1",
        ),
        (
            lambda: verdicts.versus_best_other([[1, 2], [3, 4]], 2, best="max", claim="greater"),
            ValueError,
            r"^at must index one of the 2 groups, got 2",
        ),
        (
            lambda: verdicts.versus_best_other([[1, 2], [3, 4]], -1, best="max", claim="greater"),
            ValueError,
            r"^at must be >= 0",
        ),
        (
            lambda: verdicts.versus_best_other([[1, 2], [3, 4]], 0, best="top", claim="greater"),
            ValueError,
            r"^best must be one of",
        ),
        (
            lambda: verdicts.versus_best_other([[1, 2], [3]], 0, best="max", claim="greater"),
            ValueError,
            r"^groups\[1\] needs at least 2 values",
        ),
        (
            lambda: verdicts.versus_best_other("ab", 0, best="max", claim="greater"),
            TypeError,
            r"^groups must be a sequence of samples, got str",
        ),
        (
            lambda: verdicts.weakest_step(5.0, claim="less"),
            TypeError,
            r"^groups must be a sequence of samples, got float",
        ),
        (
            lambda: verdicts.weakest_step([[1, 2], [3, 4]], claim="equal"),
            ValueError,
            r"^claim must be one of",
        ),
        (
            lambda: verdicts.weakest_step([[1, 2], [3, np.nan]], claim="less"),
            ValueError,
            r"^groups\[1\] must be finite",
        ),
    ],
)
def test_curve_verdicts_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: verdicts.paired([1.0], [0.0], claim="greater", delta=0), "treated"),
        (lambda: verdicts.paired([1, 2], [0, 1, 2], claim="greater", delta=0), "pair up"),
        (lambda: verdicts.paired([1, 2], [0, 1], claim="bigger", delta=0), "claim"),
        (lambda: verdicts.paired([1, 2], [0, 1], claim="greater", delta=-1), "delta"),
        (lambda: verdicts.paired([1, 2], [0, 1], claim="less", delta=0, test="z"), "test"),
        (lambda: verdicts.paired([1, np.nan], [0, 1], claim="less", delta=0), "treated"),
        (lambda: verdicts.paired([[1, 2]], [[0, 1]], claim="less", delta=0), "treated"),
        (lambda: verdicts.paired([1, 2], [0, 1], claim="less", delta=0, confidence=1), "conf"),
        (lambda: verdicts.sample([1.0, 2.0], claim="equal", delta=0, target=math.inf), "target"),
        (lambda: verdicts.unpaired([1.0, 2.0], [1.0], claim="less", delta=0), "control"),
        (lambda: verdicts.estimate(1.0, -0.1, claim="less", delta=0), "standard_error"),
        (lambda: verdicts.estimate(math.nan, 0.1, claim="less", delta=0), "value"),
        (lambda: verdicts.estimate(1.0, 0.1, claim="less", delta=0, n=0), "n"),
        (lambda: verdicts.estimate(1.0, 0.1, claim="less", delta=0, df=0), "df"),
        (lambda: verdicts.exact(1.0, 1.0, tolerance=0), "tolerance"),
        (lambda: verdicts.exact(1.0, math.inf, tolerance=1e-3), "reference"),
        (lambda: verdicts.decide(1.0, 0.0, "greater"), "lo must not exceed hi"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: verdicts.paired(["a", "b"], [0, 1], claim="less", delta=0), "treated"),
        (lambda: verdicts.exact("1", 1.0, tolerance=1e-3), "value"),
        (lambda: verdicts.estimate(1.0, 0.1, claim="less", delta=True), "delta"),
        (lambda: verdicts.paired([1, 2], [0, 1], claim="less", delta=0, confidence="x"), "conf"),
    ],
)
def test_wrong_types_name_the_argument(call, match):
    with pytest.raises(TypeError, match=match):
        call()


# --- claims with several parts ------------------------------------------------------------------


def test_joint_needs_every_part_and_reports_the_worst():
    yes = verdicts.exact(1.0, 1.0, tolerance=1e-9)
    no = verdicts.exact(2.0, 1.0, tolerance=1e-9)
    wide = verdicts.estimate(0.0, 1.0, claim="greater", delta=0.1)
    against = verdicts.estimate(-5.0, 0.1, claim="greater", delta=0.1)
    assert verdicts.joint({"a": yes, "b": yes}).label == "reproduced"
    assert verdicts.joint({"a": yes, "b": wide}).label == "inconclusive"
    assert verdicts.joint({"a": wide, "b": no}).label == "not reproduced"
    assert verdicts.joint({"a": no, "b": against, "c": yes}).label == "contradicted"
    j = verdicts.joint({"slope r = 4": yes, "slope r = 2": no})
    assert j.summary().startswith("not reproduced (slope r = 4: reproduced: error")
    assert "; slope r = 2: not reproduced: error 1.0e+00" in str(j)
    nested = verdicts.joint({"first": j, "second": yes})
    assert nested.label == "not reproduced"


def test_joint_rejects_what_is_not_a_verdict():
    with pytest.raises(ValueError, match="parts"):
        verdicts.joint({})
    with pytest.raises(ValueError, match="parts"):
        verdicts.joint([verdicts.exact(1.0, 1.0, tolerance=1)])
    with pytest.raises(TypeError, match="parts\\['a'\\]"):
        verdicts.joint({"a": "reproduced"})
