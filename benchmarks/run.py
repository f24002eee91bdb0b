"""``make bench``: measure the book's budgets and write ``benchmarks/results.md``.

1. Every notebook page of ``_toc.yml`` is executed in a fresh kernel, one after the other, with
   the working directory the book build uses: wall time of the whole execution and peak
   resident memory (``VmHWM``) of the kernel process.
2. A fresh ``git clone`` of the committed HEAD runs ``make test`` and then ``make book``, each
   timed as a whole (``make test`` includes creating ``.venv`` and building the book once).
3. The kernel micro-benchmarks in this folder run and their tables are copied in.

Budgets (issue 9): a chapter at most 180 s and 1.5 GB; ``make test`` at most 30 minutes. The
script exits with status 1 when a budget is missed. Run nothing else meanwhile: the machine
has two cores and every number here is a wall-clock time.

Usage: ``python benchmarks/run.py [--out FILE] [--skip-clone]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))  # the book's tooling: one reading of _toc.yml
import bookpages  # noqa: E402
from bookpages import notebook_pages  # noqa: E402

CHAPTER_SECONDS = 180
CHAPTER_BYTES = 1.5e9
MAKE_TEST_SECONDS = 30 * 60
MICRO = ["ensemble_vs_loop.py", "fixed_points.py", "sprites.py"]


def peak_rss_bytes(pid: int, proc: Path = Path("/proc")) -> int:
    """The peak resident set size (``VmHWM``) of a live process, in bytes."""
    status = (proc / str(pid) / "status").read_text(encoding="utf-8")
    match = re.search(r"^VmHWM:\s+(\d+) kB$", status, flags=re.MULTILINE)
    if match is None:
        raise ValueError(f"no VmHWM line for pid {pid}")
    return int(match[1]) * 1024


def execute_chapter(name: str, root: Path = ROOT) -> tuple[float, int]:
    """Execute ``book/<name>.md`` in a fresh kernel: (wall seconds, kernel peak RSS bytes)."""
    _, seconds, peak = bookpages.execute_page(name, root, on_kernel=peak_rss_bytes)
    return seconds, peak


def timed(command: list[str], cwd: Path, env: dict | None = None) -> float:
    """Wall seconds of a command that must succeed (its output goes to ``cwd/<name>.log``)."""
    log = cwd / f"{'-'.join(command)}.log"
    start = time.perf_counter()
    with log.open("w") as out:
        run = subprocess.run(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed in {cwd}; see {log}")
    return seconds


EDITED_CHAPTER = "two_stage"  # a mid-sized chapter, edited for the incremental rebuild


def edit_chapter(chapter: Path, *, code: bool) -> None:
    """Append a line to ``chapter``'s last code cell (``code=True``: jupyter-cache sees a changed
    cell and executes the chapter again) or to its prose (no cell changes)."""
    text = chapter.read_text(encoding="utf-8")
    if code:
        start = text.rindex("```{code-cell}")
        end = text.index("\n```", start + len("```{code-cell}"))
        text = text[:end] + "\n# edited by benchmarks/run.py" + text[end:]
    else:
        text += "\nEdited by `benchmarks/run.py`.\n"
    chapter.write_text(text, encoding="utf-8")


def rebuild_times(clone: Path) -> dict[str, float]:
    """Seconds of ``make book`` in a clone whose venv exists: from clean, then after a prose
    edit and after a code edit of one chapter (jupyter-cache executes only what changed)."""
    timed(["make", "clean"], clone)
    times = {"clean": timed(["make", "book"], clone)}
    chapter = clone / "book" / f"{EDITED_CHAPTER}.md"
    for kind in ("prose", "code"):
        edit_chapter(chapter, code=kind == "code")
        times[kind] = timed(["make", "book"], clone)
    subprocess.run(["git", "checkout", "--", str(chapter)], cwd=clone, check=True)
    return times


def fresh_clone_times(root: Path = ROOT) -> tuple[str, float, dict[str, float]]:
    """(commit, seconds of ``make test``, :func:`rebuild_times`) in a fresh clone."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="vaebook-bench-") as tmp:
        clone = Path(tmp) / "vaebook"
        subprocess.run(["git", "clone", "--quiet", str(root), str(clone)], check=True)
        # The tests marked `results` check the file this run is writing: they are left out
        # here (they take milliseconds) and run in every other `make test`.
        env = {**os.environ, "PYTEST_ADDOPTS": "-m 'not results'"}
        test_seconds = timed(["make", "test"], clone, env)
        return commit, test_seconds, rebuild_times(clone)


def micro_benchmarks(root: Path = ROOT) -> list[str]:
    """The markdown printed by each micro-benchmark script."""
    outputs = []
    for script in MICRO:
        run = subprocess.run(
            [sys.executable, str(root / "benchmarks" / script)],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
        outputs.append(f"### `benchmarks/{script}`\n\n{run.stdout.strip()}")
    return outputs


def mutation_section(root: Path = ROOT) -> list[str]:
    """The per-module table of ``benchmarks/mutation.md`` (``make mutation``, not rerun here)."""
    report = root / "benchmarks" / "mutation.md"
    if not report.is_file():
        return []
    table = [
        line for line in report.read_text(encoding="utf-8").splitlines() if line.startswith("|")
    ]
    return [
        "## Mutation testing (`make mutation`, copied from `benchmarks/mutation.md`)",
        "",
        "Not part of `make test`; one mutmut worker, each module against its own test file.",
        "",
        *table,
        "",
    ]


def verdict(ok: bool) -> str:
    return "within budget" if ok else "**over budget**"


def chapter_table(rows: list[tuple[str, float, int]]) -> list[str]:
    lines = ["| chapter | wall s | peak RSS GB | budget (180 s, 1.5 GB) |", "|---|---|---|---|"]
    for name, seconds, peak in rows:
        ok = seconds <= CHAPTER_SECONDS and peak <= CHAPTER_BYTES
        lines.append(f"| {name} | {seconds:.0f} | {peak / 1e9:.2f} | {verdict(ok)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.md")
    parser.add_argument("--skip-clone", action="store_true", help="no fresh-clone totals")
    args = parser.parse_args(argv)

    import torch

    header = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {datetime.date.today().isoformat()}: "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, 1-min load average at start {os.getloadavg()[0]:.2f}.",
        "",
        "## Chapters: one fresh execution each",
        "",
    ]
    rows = []
    for name in notebook_pages():
        seconds, peak = execute_chapter(name)
        rows.append((name, seconds, peak))
        print(f"{name}: {seconds:.0f} s, {peak / 1e9:.2f} GB", flush=True)
    over = [r for r in rows if r[1] > CHAPTER_SECONDS or r[2] > CHAPTER_BYTES]
    lines = header + chapter_table(rows)
    lines += ["", f"All chapters one after the other: {sum(r[1] for r in rows):.0f} s.", ""]

    if not args.skip_clone:
        commit, test_s, book = fresh_clone_times()
        print(f"make test {test_s:.0f} s, make book {book}", flush=True)
        lines += [
            "## `make test` and `make book` from a fresh clone",
            "",
            f"Commit `{commit}`, cloned into a temporary folder; `make test` includes creating",
            "`.venv`, the unit tests, one book build with the browser checks, the Colab run, the",
            "run of every Colab notebook (all but the two tests that check this file).",
            "",
            "| command | wall minutes | budget |",
            "|---|---|---|",
            f"| make test | {test_s / 60:.1f} | {verdict(test_s <= MAKE_TEST_SECONDS)} (30 min) |",
            f"| make book | {book['clean'] / 60:.1f} | - (after `make clean`; venv made) |",
            f"| make book, prose of `{EDITED_CHAPTER}` edited | {book['prose'] / 60:.1f} | - |",
            f"| make book, a code cell of `{EDITED_CHAPTER}` edited "
            f"| {book['code'] / 60:.1f} | - |",
            "",
        ]
        over += [("make test", test_s)] if test_s > MAKE_TEST_SECONDS else []

    lines += ["## Kernel micro-benchmarks", "", *"\n\n".join(micro_benchmarks()).split("\n"), ""]
    lines += mutation_section()
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")
    if over:
        print(f"over budget: {over}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
