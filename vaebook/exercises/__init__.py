"""Answer checkers for the book's exercises.

A reader who has worked an exercise calls ``check(label, answer)`` with the exercise's label
(shown in its statement, e.g. ``"ex-dw-gaussian"``) and their own answer: a number, an array or
a function, as the statement asks. The checker tests the answer on cases the reader has not seen
and says what is wrong (a sign, a factor, a missing term) without printing the solution::

    from vaebook.exercises import check
    check("ex-kl-1d", my_kl)          # -> Feedback(correct=True, message="...")

Each chapter's checkers live in their own module (:mod:`vaebook.exercises.primer`, ...) and
register themselves with :func:`checker`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Feedback", "check", "checker", "labels"]

CHAPTER_MODULES = (
    "primer",
    "linear_beta_vae",
    "decomposition",
    "two_stage",
    "polarised",
    "high_capacity",
)
_CHECKERS: dict[str, Callable] = {}


@dataclass(frozen=True)
class Feedback:
    """The verdict on one answer: ``correct`` and a message for the reader.

    It is truthy when the answer is correct, so ``assert check(...)`` works in a solution.
    """

    label: str
    correct: bool
    message: str

    def __bool__(self) -> bool:
        return self.correct

    def __str__(self) -> str:
        mark = "correct" if self.correct else "not yet"
        return f"{self.label}: {mark}. {self.message}"

    def _repr_markdown_(self) -> str:
        mark = "✔ correct" if self.correct else "✘ not yet"
        return f"**{self.label}: {mark}.** {self.message}"


def checker(label: str):
    """Register the decorated ``f(answer) -> Feedback | (bool, message)`` as ``label``'s checker."""
    if not isinstance(label, str) or not label.startswith("ex-"):
        raise ValueError(f"label must be an exercise label starting with 'ex-', got {label!r}")

    def register(function: Callable) -> Callable:
        if label in _CHECKERS:
            raise ValueError(f"label {label!r} already has a checker")
        _CHECKERS[label] = function
        return function

    return register


def _load() -> None:
    for name in CHAPTER_MODULES:
        importlib.import_module(f"{__name__}.{name}")


def labels() -> list[str]:
    """The labels of every exercise that has a checker, sorted."""
    _load()
    return sorted(_CHECKERS)


def check(label: str, answer) -> Feedback:
    """Check ``answer`` to the exercise ``label``; returns a :class:`Feedback`.

    Raises ``KeyError`` naming the label (and listing the known ones) when no checker exists,
    and passes on the checker's ``TypeError``/``ValueError`` when the answer has the wrong kind
    (e.g. a number where a function was asked for).
    """
    _load()
    if label not in _CHECKERS:
        raise KeyError(
            f"label {label!r} has no checker; known labels: {', '.join(sorted(_CHECKERS))}"
        )
    result = _CHECKERS[label](answer)
    if isinstance(result, Feedback):
        return result
    correct, message = result
    return Feedback(label, bool(correct), message)


# -- tools the chapters' checkers share ---------------------------------------------------------


def as_values(answer, name: str = "answer") -> np.ndarray:
    """``answer`` (a number, a list, an array or a tensor) as a float64 array, or a ``TypeError``
    naming ``name`` when it is not numeric, a ``ValueError`` when it holds NaN or infinity."""
    if isinstance(answer, bool) or callable(answer) or isinstance(answer, str):
        raise TypeError(
            f"{name} must be a number or an array of numbers, got {type(answer).__name__}"
        )
    if hasattr(answer, "detach"):
        answer = answer.detach().cpu().numpy()
    try:
        values = np.asarray(answer, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a number or an array of numbers, got {answer!r}") from err
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be finite, got {values}")
    return values


def evaluate(answer, cases, name: str = "answer") -> np.ndarray:
    """The reader's function ``answer`` called on each tuple of arguments in ``cases``, as a
    float64 array (one row per case); a ``TypeError`` naming ``name`` when it is not callable."""
    if not callable(answer):
        raise TypeError(f"{name} must be a function, got {type(answer).__name__}")
    values = [as_values(answer(*case), f"{name}(...) on case {i}") for i, case in enumerate(cases)]
    if len({v.shape for v in values}) > 1:
        raise ValueError(
            f"{name} must return the same shape on every case, got {[v.shape for v in values]}"
        )
    return np.stack(values)


def close(got, expected, *, rtol: float = 1e-6, atol: float = 1e-9) -> bool:
    """Whether ``got`` equals ``expected`` elementwise to the tolerances (shapes must agree)."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return got.shape == expected.shape and bool(np.allclose(got, expected, rtol=rtol, atol=atol))


def diagnose(
    got, expected, mistakes: Mapping[str, np.ndarray], *, rtol: float = 1e-6, atol: float = 1e-9
) -> tuple[bool, str]:
    """``(correct, message)`` for a numeric answer: correct when ``got`` is ``expected``; else
    the message of the first typical mistake whose value ``got`` matches (a dict
    ``message -> value that mistake gives``), or a generic message."""
    if close(got, expected, rtol=rtol, atol=atol):
        return True, "It agrees with the reference on every case checked."
    for message, value in mistakes.items():
        if close(got, value, rtol=rtol, atol=atol):
            return False, message
    return False, "It differs from the reference on the cases checked; recheck each term."
