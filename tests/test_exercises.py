"""``vaebook.exercises``: the checker registry and the tools the chapters' checkers share.

Each chapter's checkers are tested in ``tests/test_exercises_<chapter>.py``: the reference
answer passes, the typical wrong answers fail with the intended message, bad input is rejected.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaebook.exercises import Feedback, as_values, check, checker, close, diagnose, evaluate, labels


def reference_kl(m1, s1, m2, s2):
    return math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


def test_check_returns_feedback_that_is_truthy_only_when_correct():
    good = check("ex-kl-1d", reference_kl)
    assert isinstance(good, Feedback) and good and good.correct
    assert "correct" in str(good) and good._repr_markdown_().startswith("**ex-kl-1d: ✔")
    bad = check("ex-kl-1d", lambda *a: 1.0)
    assert not bad and "not yet" in str(bad)


def test_check_names_an_unknown_label_and_lists_the_known_ones():
    with pytest.raises(KeyError, match=r"'ex-no-such' has no checker; known labels: .*ex-kl-1d"):
        check("ex-no-such", 1.0)
    assert "ex-kl-1d" in labels()


def test_checker_rejects_bad_labels_and_duplicates():
    with pytest.raises(ValueError, match="must be an exercise label"):
        checker("kl-1d")
    with pytest.raises(ValueError, match="already has a checker"):
        checker("ex-kl-1d")(lambda answer: (True, ""))


def test_as_values_and_evaluate_reject_answers_of_the_wrong_kind():
    assert as_values(torch.tensor([1.0, 2.0])).tolist() == [1.0, 2.0]
    with pytest.raises(TypeError, match=r"^answer must be a number"):
        as_values("0.5")
    with pytest.raises(TypeError, match=r"^answer must be a number"):
        as_values(True)
    with pytest.raises(ValueError, match=r"^answer must be finite"):
        as_values([1.0, float("nan")])
    with pytest.raises(TypeError, match=r"^answer must be a function, got float"):
        evaluate(0.5, [(1,)])
    with pytest.raises(TypeError, match=r"^answer\(\.\.\.\) on case 0 must be a number"):
        evaluate(lambda x: "one", [(1,)])
    with pytest.raises(ValueError, match="same shape on every case"):
        evaluate(lambda n: [0.0] * n, [(1,), (2,)])
    assert evaluate(lambda x, y: [x, y], [(1, 2), (3, 4)]).tolist() == [[1, 2], [3, 4]]


def test_diagnose_names_the_first_matching_mistake():
    expected = np.array([1.0, 2.0])
    mistakes = {"sign": -expected, "factor": 2 * expected}
    assert diagnose(expected, expected, mistakes)[0]
    assert diagnose(2 * expected, expected, mistakes) == (False, "factor")
    correct, message = diagnose(expected + 1, expected, mistakes)
    assert not correct and "differs" in message
    assert not close([1.0], [1.0, 1.0])  # shapes must agree


# -- primer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda m1, s1, m2, s2: reference_kl(m2, s2, m1, s1), "arguments swapped"),
        (lambda *a: 2 * reference_kl(*a), "twice the KL"),
        (lambda *a: reference_kl(*a) + 0.5, "misses the constant -1/2"),
        (lambda m1, s1, m2, s2: reference_kl(m1, s1**0.5, m2, s2**0.5), "reads s as a variance"),
        (lambda *a: 0.0, "differs from the reference"),
    ],
)
def test_kl_1d_checker_names_typical_mistakes(answer, message):
    feedback = check("ex-kl-1d", answer)
    assert not feedback and message in feedback.message


def test_kl_1d_checker_accepts_the_derived_formula_and_rejects_a_number():
    assert check("ex-kl-1d", reference_kl)
    with pytest.raises(TypeError, match="must be a function"):
        check("ex-kl-1d", 0.3)
