"""Helpers shared by several test modules (pytest puts tests/ on the import path)."""

import math

import torch


def randn(gen, *shape):
    """Standard normal float64 tensor of ``shape`` drawn from the generator ``gen``."""
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def assert_within_5_se(samples: torch.Tensor, expected) -> None:
    """Mean over the first axis of ``samples`` agrees with ``expected`` to 5 standard errors."""
    se = samples.std(0) / math.sqrt(samples.shape[0])
    expected = torch.as_tensor(expected, dtype=samples.dtype)
    assert bool(((samples.mean(0) - expected).abs() < 5 * se).all()), (samples.mean(0), expected)


def encoder_members(gen, m=3, b=6, d=2):
    """``log_lik (M, B)``, ``z, mu, logvar (M, B, d)`` for ``M`` models of one minibatch."""
    mu, logvar = randn(gen, m, b, d), randn(gen, m, b, d) - 1
    z = mu + torch.exp(0.5 * logvar) * randn(gen, m, b, d)
    return randn(gen, m, b), z, mu, logvar


def seeded_gen(seed):
    """A fresh ``torch.Generator`` seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def positive(gen, *shape, low=0.2, high=3.0):
    """Uniform float64 numbers in ``[low, high)``: variances away from 0."""
    return low + (high - low) * torch.rand(shape, generator=gen, dtype=torch.float64)
