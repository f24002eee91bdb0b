"""Shared fixtures: seeded generators and random covariance matrices for the unit tests, and the
one clean build of the book that every test of the built book reads (``built_book``)."""

import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: tests never open a window

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# The book's tooling (tools/*.py) is a folder of scripts that import each other by name.
sys.path.insert(0, str(ROOT / "tools"))

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


@pytest.fixture(scope="session")
def built_book():
    """Runs ``make clean book`` once per session and returns ``_build/html``.

    From a clean ``_build``: an incremental build would neither re-execute nor re-report the
    pages that did not change. The log is kept in ``_build/book.log``; the build must finish
    with zero warnings.
    """
    run = subprocess.run(
        ["make", "clean", "book"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    log = run.stdout + run.stderr
    (ROOT / "_build").mkdir(exist_ok=True)
    (ROOT / "_build" / "book.log").write_text(log, encoding="utf-8")
    warnings = [
        line for line in log.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL):", line)
    ]
    assert run.returncode == 0 and not warnings, "\n".join(warnings) or log[-3000:]
    return ROOT / "_build" / "html"
