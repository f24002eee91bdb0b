"""The book's pages as the tooling sees them: one reading of ``_toc.yml``, one way to execute.

Used by ``tools/pagecheck.py`` (which pages to open), ``benchmarks/run.py`` (which notebooks to
time) and the tests (which chapters exist; every Colab notebook executed and its glued numbers
compared with the book build's).
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


def chapter_numbers(root: Path = ROOT) -> dict[str, int]:
    """``file -> k`` for the pages of the numbered parts of ``_toc.yml``, counted in reading
    order across those parts (the chapter numbers Sphinx gives them: "Proposition k.1")."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    files = [
        c["file"] for part in toc.get("parts", []) if part.get("numbered") for c in part["chapters"]
    ]
    return {file: k for k, file in enumerate(files, start=1)}


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

    nb = jupytext.read(root / "book" / f"{name}.md")
    return execute(nb, root / "book", on_kernel=on_kernel, timeout=timeout)


def execute(nb, folder: Path, *, on_kernel=None, timeout: int = 600):
    """Execute the notebook ``nb`` (an ``nbformat`` node, changed in place) in a fresh kernel
    whose working directory is ``folder``; returns ``(nb, seconds, extra)`` as
    :func:`execute_page` does. A cell that raises stops the run with ``CellExecutionError``."""
    import nbclient

    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        resources={"metadata": {"path": str(folder)}},
    )
    start = time.perf_counter()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        extra = on_kernel(client.km.provisioner.process.pid) if on_kernel else None
    return nb, time.perf_counter() - start, extra


def glued_values(nb) -> dict[str, str]:
    """``name -> text`` of every value an executed notebook glued with ``myst_nb.glue``."""
    values = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is not None:  # myst-nb stores it under a papermill mime prefix
                plain = [v for k, v in output["data"].items() if k.endswith("text/plain")]
                values[name] = "".join(plain[0])
    return values


def built_glue(name: str, root: Path = ROOT) -> dict[str, str]:
    """``name -> text`` of every value chapter ``name`` glued in the last book build.

    myst-nb moves glued outputs out of the executed notebook into
    ``_build/jupyter_execute/book/<name>.glue.json``; a chapter that glued nothing has none.
    """
    import json

    store = root / "_build" / "jupyter_execute" / "book" / f"{name}.glue.json"
    if not store.is_file():
        return {}
    glued = json.loads(store.read_text(encoding="utf-8"))
    return {key: "".join(output["data"]["text/plain"]) for key, output in glued.items()}
