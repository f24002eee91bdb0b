"""Benchmark: one EnsembleVAE of 32 members vs a Python loop over 32 VAEs, both through fit.

The network is the deep non-linear β-VAE of Sikka et al. (tanh MLPs; encoder
64 -> 256 -> 200 -> 200 -> (mu, logvar) with k = 2; decoder 2 -> 200 -> 200 -> 256 -> 64;
Gaussian decoder with unit variance) on 1000 examples of dimension 64 (the first 1000 8x8
digits, flattened). 32 members = a grid of 2 β values x 16 initialisations.

Both sides are trained with ``vaebook.train.fit`` from the same initial weights on the same
data for the same number of epochs (so the same number of optimisation steps per model and
the same arithmetic); each measurement is repeated and the fastest repeat is kept, because
the 2-core machine may be shared. Run with ``python benchmarks/ensemble_vs_loop.py``; it prints
a markdown table and writes nothing unless given ``--out FILE``.

FLOP count (matrix products only): with ``P`` the number of weights of the linear layers
(biases excluded) and ``P1`` those of the first encoder layer, one training step on ``N``
examples costs ``2 P N`` (forward) + ``2 P N`` (weight gradients) + ``2 (P - P1) N`` (input
gradients; none is needed for the data) = ``(6 P - 2 P1) N`` floating point operations per
model. Reference rate: a 2048 x 2048 float32 matrix product in the same process.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaebook.data import digits
from vaebook.ensemble import EnsembleVAE
from vaebook.train import fit

MEMBERS = 32
N_EXAMPLES = 1000
INPUT_DIM = 64
ENCODER_HIDDEN = (256, 200, 200)
LATENT_DIM = 2
DECODER_HIDDEN = (200, 200, 256)
BETAS = [1.0] * 16 + [4.0] * 16  # a 2-point β grid x 16 initialisations
THREADS = 2


def linear_weights() -> tuple[int, int]:
    """``(P, P1)``: weights of all linear layers of one VAE, and of its first layer."""
    enc = [INPUT_DIM, *ENCODER_HIDDEN]
    dec = [LATENT_DIM, *DECODER_HIDDEN, INPUT_DIM]
    p = sum(a * b for a, b in itertools.pairwise(enc))
    p += 2 * ENCODER_HIDDEN[-1] * LATENT_DIM  # mu and logvar heads
    p += sum(a * b for a, b in itertools.pairwise(dec))
    return p, enc[0] * enc[1]


def matmul_rate(size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP rate (FLOP/s) of a ``size x size`` float32 matrix product."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def copy_bandwidth(numel: int = 32_000_000, repeats: int = 5) -> float:
    """Best memory bandwidth (bytes/s read + written) of copying a 128 MB float32 tensor."""
    src, dst = torch.randn(numel), torch.empty(numel)
    dst.copy_(src)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * 4 * numel / best


def step_breakdown(data, batch_size: int, steps: int = 40) -> dict[str, float]:
    """Median seconds per ensemble step spent in the forward pass, backward pass and Adam.

    The step is the one :func:`vaebook.train.fit` takes (same loss, fused Adam), timed part by
    part on a fixed mini-batch.
    """
    ensemble = make_ensemble()
    optimiser = torch.optim.Adam(ensemble.parameters(), lr=1e-3, fused=True)
    noise = torch.Generator().manual_seed(0)
    x = data[:batch_size]
    times: dict[str, list[float]] = {"forward": [], "backward": [], "adam": []}
    for i in range(steps + 5):
        t0 = time.perf_counter()
        loss = -ensemble.terms(x, noise).mean().objective.sum()
        t1 = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        optimiser.step()
        t3 = time.perf_counter()
        if i >= 5:  # warm-up
            for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                times[key].append(dt)
    return {key: statistics.median(values) for key, values in times.items()}


def make_ensemble(seed: int = 0) -> EnsembleVAE:
    return EnsembleVAE(
        MEMBERS,
        (INPUT_DIM,),
        ENCODER_HIDDEN,
        LATENT_DIM,
        DECODER_HIDDEN,
        betas=BETAS,
        likelihood="gaussian",
        log_gamma=0.0,
        activation="tanh",
        seed=seed,
    )


def train_ensemble(ensemble, data, batch_size, epochs) -> None:
    """``epochs`` epochs of fit on the whole ensemble."""
    fit(ensemble, data, epochs=epochs, batch_size=batch_size, device="cpu", progress=False)


def train_loop(models, data, batch_size, epochs) -> None:
    """``epochs`` epochs of fit on each model, one after the other."""
    for model in models:
        fit(model, data, epochs=epochs, batch_size=batch_size, device="cpu", progress=False)


def timed_runs(ensemble, models, data, batch_size, epochs) -> dict:
    """The two contenders as functions ``run(warm_up)``; a warm-up is one epoch (one model)."""

    def loop(warm_up: bool) -> None:
        train_loop(models[:1] if warm_up else models, data, batch_size, 1 if warm_up else epochs)

    def ensemble_run(warm_up: bool) -> None:
        train_ensemble(ensemble, data, batch_size, 1 if warm_up else epochs)

    return {"loop": loop, "ensemble": ensemble_run}


def best_times(runs: dict, repeats: int) -> dict[str, float]:
    """Best wall time of each run; the runs alternate so that both see the same machine load."""
    for run in runs.values():
        run(warm_up=True)
    best = dict.fromkeys(runs, math.inf)
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run(warm_up=False)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is kept)")
    args = parser.parse_args(argv)

    torch.set_num_threads(THREADS)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    data = digits()[0][:N_EXAMPLES].reshape(N_EXAMPLES, INPUT_DIM)
    p, p1 = linear_weights()
    flop_per_example = 6 * p - 2 * p1
    peak_before = matmul_rate()

    settings = [("32", 32, 2), ("full (1000)", None, 6)]  # (label, batch_size, timed epochs)
    rows = []
    for label, batch_size, epochs in settings:
        ensemble = make_ensemble()
        models = [ensemble.member(m) for m in range(MEMBERS)]  # the same initial weights
        steps = epochs * math.ceil(N_EXAMPLES / (batch_size or N_EXAMPLES))
        flop = MEMBERS * epochs * N_EXAMPLES * flop_per_example
        runs = timed_runs(ensemble, models, data, batch_size, epochs)
        times = best_times(runs, args.repeats)
        t_loop, t_ens = times["loop"], times["ensemble"]
        rows.append((label, steps, flop, t_loop, t_ens))
    peak = max(peak_before, matmul_rate())
    bandwidth = copy_bandwidth()
    parts = step_breakdown(data, 32)

    lines = [
        f"Ensemble of {MEMBERS} VAEs vs a loop over {MEMBERS} VAEs "
        f"(torch {torch.__version__}, {THREADS} threads, {platform.processor() or 'cpu'})",
        "",
        f"P = {p} linear weights per VAE, FLOP per example per step = 6P - 2P1 = "
        f"{flop_per_example}; 2048x2048 float32 matmul rate: {peak / 1e9:.1f} GFLOP/s; "
        f"copy bandwidth {bandwidth / 1e9:.1f} GB/s; 1-min load average at start {load:.2f}",
        "",
        "| batch | steps/model | loop s | ensemble s | loop GFLOP/s | ensemble GFLOP/s "
        "| ensemble / loop speed | loop % of matmul | ensemble % of matmul |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, steps, flop, t_loop, t_ens in rows:
        lines.append(
            f"| {label} | {steps} | {t_loop:.2f} | {t_ens:.2f} | {flop / t_loop / 1e9:.1f} "
            f"| {flop / t_ens / 1e9:.1f} | {t_loop / t_ens:.2f}x "
            f"| {100 * flop / t_loop / peak:.0f}% | {100 * flop / t_ens / peak:.0f}% |"
        )
    step = sum(parts.values())
    step_flop = MEMBERS * 32 * flop_per_example
    lines += [
        "",
        "Ensemble step at batch 32 (median of 40 steps): "
        + ", ".join(f"{key} {1e3 * t:.1f} ms" for key, t in parts.items())
        + f"; total {1e3 * step:.1f} ms = {step_flop / step / 1e9:.1f} GFLOP/s "
        f"({100 * step_flop / step / peak:.0f}% of the matmul rate)",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
