"""Shared fixtures of the unit tests: seeded generators and random covariance matrices."""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: tests never open a window

import pytest
import torch

# The book's tooling (tools/*.py) is a folder of scripts that import each other by name.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

# The unit tests use tiny tensors: one intra-op thread is as fast, and it avoids OpenMP threads
# spinning against other work on a 2-core machine (measured: 4 s instead of 30 s under load).
torch.set_num_threads(1)


@pytest.fixture
def gen():
    """A seeded CPU generator: every random draw of a test comes from it, not the global RNG."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def make_spd(gen):
    """``make_spd(d, *batch)``: random float64 symmetric positive definite ``(*batch, d, d)``."""

    def make(d, *batch):
        a = torch.randn(*batch, d, d, generator=gen, dtype=torch.float64)
        return a @ a.transpose(-1, -2) + 0.5 * torch.eye(d, dtype=torch.float64)

    return make
