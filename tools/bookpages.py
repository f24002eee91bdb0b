"""The book's pages as the tooling sees them: one reading of ``_toc.yml``, one way to execute.

Used by ``tools/pagecheck.py`` (which pages to open), ``benchmarks/run.py`` (which notebooks to
time) and the tests (which chapters exist, which notebooks to execute twice).
"""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEACHING_PARTS = ("Foundations", "The papers")  # parts whose pages teach with proofs, exercises


def toc_entries(root: Path = ROOT) -> list[tuple[str, str | None]]:
    """``(file, part caption)`` of every ``_toc.yml`` entry in reading order (root: ``None``)."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    entries = [(toc["root"], None)]
    for part in toc.get("parts", []):
        entries += [(chapter["file"], part.get("caption")) for chapter in part["chapters"]]
    return entries


def notebook_pages(root: Path = ROOT) -> list[str]:
    """The stems of the ``_toc.yml`` pages that are MyST notebooks, in reading order."""
    pages = []
    for file, _ in toc_entries(root):
        path = root / f"{file}.md"
        if path.is_file() and path.read_text(encoding="utf-8").startswith("---\njupytext:"):
            pages.append(path.stem)
    return pages


def execute_page(name: str, root: Path = ROOT, *, on_kernel=None, timeout: int = 600):
    """Execute ``book/<name>.md`` in a fresh kernel, in the folder the book build uses.

    Parameters
    ----------
    name : the page's stem, e.g. ``"primer"``.
    on_kernel : optional ``f(pid)`` called with the kernel's process id after the last cell,
        while the kernel is still alive (``benchmarks/run.py`` reads its peak memory there).
    timeout : seconds allowed for one cell.

    Returns ``(nb, seconds, extra)``: the executed notebook, the wall time of its cells, and
    what ``on_kernel`` returned (``None`` without it).
    """
    import jupytext
    import nbclient

    nb = jupytext.read(root / "book" / f"{name}.md")
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        resources={"metadata": {"path": str(root / "book")}},
    )
    start = time.perf_counter()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        extra = on_kernel(client.km.provisioner.process.pid) if on_kernel else None
    return nb, time.perf_counter() - start, extra
