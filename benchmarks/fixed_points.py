"""Benchmark: the fixed-point iteration of eq. 15 (``vaebook.high_capacity.fixed_points``).

The high-capacity chapter's budget for one solve is 1024 tiles (a 32x32 grid) x 400 data
points x 400 iterations in at most 2 s on one CPU core. The iteration runs without a stopping
tolerance (tol below any step) so that every run does exactly 400 steps. Each measurement is
repeated and the fastest repeat is kept, because the machine may be shared. Run with
``python benchmarks/fixed_points.py``; it prints a markdown table.
"""

from __future__ import annotations

import time

import torch

from vaebook import high_capacity as hc

POINTS, GRID, STEPS, REPEATS = 400, 32, 400, 3


def best_time(dtype: torch.dtype) -> float:
    """The fastest of ``REPEATS`` full solves, in seconds."""
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(POINTS, 2, generator=gen, dtype=torch.float64) - 0.5
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = hc.fixed_points(X, 0.01, max_iter=STEPS, tol=1e-300, dtype=dtype)
        times.append(time.perf_counter() - start)
        assert result.iterations == STEPS
    return min(times)


def main() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = [
            (str(dtype).replace("torch.", ""), best_time(dtype))
            for dtype in (torch.float32, torch.float64)
        ]
    finally:
        torch.set_num_threads(threads)
    print(f"fixed_points: {GRID * GRID} tiles x {POINTS} points x {STEPS} steps, one thread\n")
    print("| dtype | seconds (best of 3) |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
