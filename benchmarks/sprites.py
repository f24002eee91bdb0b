"""Benchmark: rendering dSprites-style images with ``vaebook.sprites.render_sprites``.

The chapters render their sprite datasets on the fly (nothing is downloaded), so rendering
speed bounds how large a dataset a chapter can afford. This renders 20,000 random 64x64
sprites (the three shapes, random scale, orientation and position) on one thread, best of 3.
Run with ``python benchmarks/sprites.py``; it prints a markdown table.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from vaebook.sprites import render_sprites

N_IMAGES = 20_000
REPEATS = 3


def random_factors(n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Shape codes and factor values of ``n`` random sprites (dSprites ranges)."""
    rng = np.random.default_rng(seed)
    shape = rng.integers(1, 4, size=n)
    scale = rng.uniform(0.5, 1.0, size=n)
    orientation = rng.uniform(0.0, 2 * np.pi, size=n)
    pos_x, pos_y = rng.uniform(0.0, 1.0, size=(2, n))
    return shape, scale, orientation, pos_x, pos_y


def best_time(resolution: int) -> float:
    factors = random_factors(N_IMAGES)
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        images = render_sprites(*factors, resolution=resolution)
        times.append(time.perf_counter() - start)
    assert images.shape == (N_IMAGES, resolution, resolution)
    return min(times)


def main() -> None:
    torch.set_num_threads(1)
    print(f"render_sprites: {N_IMAGES} random sprites, one thread, best of {REPEATS}\n")
    print("| resolution | seconds | images per second |\n|---|---|---|")
    for resolution in (32, 64):
        seconds = best_time(resolution)
        print(f"| {resolution}x{resolution} | {seconds:.2f} | {N_IMAGES / seconds:,.0f} |")


if __name__ == "__main__":
    main()
