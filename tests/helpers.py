"""Helpers shared by several test modules (pytest puts tests/ on the import path)."""

import torch


def randn(gen, *shape):
    """Standard normal float64 tensor of ``shape`` drawn from the generator ``gen``."""
    return torch.randn(shape, generator=gen, dtype=torch.float64)
