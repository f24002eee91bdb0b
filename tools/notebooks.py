"""Generate the Colab notebooks ``notebooks/<chapter>.ipynb`` from the MyST chapters in ``book/``.

Colab opens only ``.ipynb`` files, while the book's sources are MyST markdown notebooks (which
Binder and local Jupyter open directly through jupytext). Every ``book/*.md`` file with a
jupytext header becomes ``notebooks/<name>.ipynb`` with two cells put in front:

1. a code cell that installs vaebook from the repository when it is not importable, and
2. a markdown cell defining the book's LaTeX macros (from ``_config.yml``) for the notebook.

Usage: ``python tools/notebooks.py`` (writes the files) or ``--check`` (exits 1 when a
committed notebook differs from what would be generated). ``make notebooks`` runs the first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
OUT = ROOT / "notebooks"

INSTALL_CELL = """\
# Installs vaebook (and nothing else) when it is missing, e.g. on Colab; a no-op elsewhere.
import importlib.util

if importlib.util.find_spec("vaebook") is None:
    %pip install --quiet "vaebook @ git+{url}@{branch}"\
"""


def book_config(root: Path = ROOT) -> dict:
    """The parsed ``_config.yml``."""
    return yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))


def is_notebook(path: Path) -> bool:
    """Whether a MyST file is a notebook (it has a jupytext header with a kernelspec)."""
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return False
    header = yaml.safe_load(text.split("---\n", 2)[1]) or {}
    return "jupytext" in header and "kernelspec" in header


def chapter_sources(book: Path = BOOK) -> list[Path]:
    """The MyST notebooks of the book, sorted by name."""
    return sorted(p for p in book.glob("*.md") if is_notebook(p))


def macros_cell_source(config: dict) -> str:
    """A markdown cell defining the book's MathJax macros with ``\\def`` (MathJax and KaTeX)."""
    macros = config["sphinx"]["config"]["mathjax3_config"]["tex"]["macros"]
    defs = "".join(f"\\def\\{name}{{{body}}}" for name, body in macros.items())
    return f"$${defs}$$\n\n*(The book's notation macros, defined for this notebook.)*"


def colab_notebook(source: Path, config: dict) -> nbformat.NotebookNode:
    """The Colab notebook of one chapter: install cell, macros cell, then the chapter's cells."""
    nb = jupytext.read(source, fmt="md:myst")
    repo = config["repository"]
    install = INSTALL_CELL.format(url=repo["url"], branch=repo.get("branch", "main"))
    front = [
        nbformat.v4.new_code_cell(install),
        nbformat.v4.new_markdown_cell(macros_cell_source(config)),
    ]
    nb.cells = front + nb.cells
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"  # stable ids keep regenerated files byte-identical
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["colab"] = {"provenance": [], "name": f"{source.stem}.ipynb"}
    return nb


def render(source: Path, config: dict) -> str:
    """The exact text written to ``notebooks/<name>.ipynb``."""
    return nbformat.writes(colab_notebook(source, config)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    config = book_config()
    OUT.mkdir(exist_ok=True)
    expected = {f"{src.stem}.ipynb": render(src, config) for src in chapter_sources()}
    stale = sorted(p.name for p in OUT.glob("*.ipynb") if p.name not in expected)
    differ = sorted(
        name
        for name, text in expected.items()
        if not (OUT / name).exists() or (OUT / name).read_text(encoding="utf-8") != text
    )
    if args.check:
        for name in differ:
            print(f"notebooks/{name} is out of date: run `make notebooks`")
        for name in stale:
            print(f"notebooks/{name} has no chapter in book/: delete it")
        return 1 if differ or stale else 0
    for name in differ:
        (OUT / name).write_text(expected[name], encoding="utf-8")
        print(f"wrote notebooks/{name}")
    for name in stale:
        (OUT / name).unlink()
        print(f"removed notebooks/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
