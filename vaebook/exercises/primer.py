"""Answer checkers for the exercises of book/primer.md (see :mod:`vaebook.exercises`)."""

from __future__ import annotations

import numpy as np
import torch
from torch.distributions import Normal, kl_divergence

from . import checker, diagnose, evaluate

# cases the statement does not show: (m1, s1, m2, s2), standard deviations
_KL_CASES = [
    (0.3, 0.7, -1.2, 1.9),
    (2.0, 0.2, 1.5, 0.35),
    (-0.4, 1.6, 0.1, 0.8),
    (0.0, 1.3, 0.0, 1.3),
]


def _kl(m1, s1, m2, s2) -> float:
    """The reference: torch.distributions' closed form, in float64."""
    m1, s1, m2, s2 = torch.tensor([m1, s1, m2, s2], dtype=torch.float64)
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
