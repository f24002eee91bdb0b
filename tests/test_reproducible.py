"""Every Colab notebook runs, and glues the numbers the book build glued.

The clean book build (the ``built_book`` fixture) executes every chapter once and keeps what
each glued in ``_build/jupyter_execute/book/<name>.glue.json``. Each generated Colab notebook
(``notebooks/<name>.ipynb``: the chapter's code cells after an install cell, its exercise
solutions folded away unexecuted) is executed here in a fresh kernel, in ``notebooks/`` as a
reader's Jupyter would, so a cell that raises fails the test, including a cell that needs
something only a solution defines. Every glued value must then equal the book build's: every
number in the book's prose is glued, so this compares everything the reader is told, for every
chapter, between two independent executions (seeded generators, a fixed thread count and
``torch.use_deterministic_algorithms(True)`` in each chapter's first cell, which
``test_every_chapter_turns_on_deterministic_algorithms`` checks).
"""

from __future__ import annotations

import re

import bookpages
import jupytext
import nbclient
import nbformat
import pytest
from test_book import CHAPTERS, ROOT

TIMINGS = ("_runtime", "_seconds")  # wall-clock measurements, not results


def glued_keys(source: str) -> list[re.Pattern]:
    """The keys ``source`` passes to ``glue``, as patterns: an f-string key such as
    ``f"gap_{name}"`` matches any word in place of each replacement field."""
    keys = re.findall(r"""glue\(\s*(f?)(["'])(\w*(?:\{[^}"']+\}\w*)*)\2""", source)
    return [
        re.compile(
            r"\w+".join(map(re.escape, re.split(r"\{[^}]+\}", key))) if f else re.escape(key)
        )
        for f, _, key in keys
    ]


def test_glued_keys_reads_plain_and_f_string_keys():
    source = 'glue("gap", 1)\nglue(f"floor_k{k}", g)\nglue(f"rho_{name}_{j}", r)\nprint("{x}")'
    gap, floor, rho = glued_keys(source)
    assert gap.fullmatch("gap") and not gap.fullmatch("gap2")
    assert floor.fullmatch("floor_k2") and not floor.fullmatch("floor_2")
    assert rho.fullmatch("rho_W_tied_3") and not rho.fullmatch("rho_W")


def test_glued_values_reads_what_glue_writes(tmp_path):
    source = (
        "```{code-cell}\nfrom vaebook.notebook import glue\n\nglue('gap', 0.25)\nprint('x')\n```\n"
    )
    nb = jupytext.reads(source, fmt="md:myst")
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbclient.NotebookClient(nb, resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert bookpages.glued_values(nb) == {"gap": "0.25"}


@pytest.mark.book
@pytest.mark.parametrize("name", bookpages.notebook_pages())
def test_colab_notebook_runs_and_glues_the_book_builds_numbers(built_book, name):
    book = bookpages.built_glue(name)
    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    bookpages.execute(notebook, ROOT / "notebooks")
    again = bookpages.glued_values(notebook)
    results = sorted(key for key in again if not key.endswith(TIMINGS))
    assert results, f"{name}: the notebook glued no result"
    # the notebook folds each solution into a closed block that does not run, so what the
    # solutions glue is missing there, and nothing else (but their timings)
    solutions = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    in_solutions = glued_keys(solutions)
    missing = {key for key in set(book) - set(again) if not key.endswith(TIMINGS)}
    unexplained = {key for key in missing if not any(k.fullmatch(key) for k in in_solutions)}
    assert not unexplained, unexplained
    assert set(again) <= set(book), set(again) - set(book)
    for key in results:
        assert again[key] == book[key], f"{name}: {key}: {book[key]} (book), {again[key]} (here)"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_turns_on_deterministic_algorithms(chapter):
    first_cell = chapter.read_text(encoding="utf-8").split("```{code-cell}")[1]
    assert "torch.use_deterministic_algorithms(True)" in first_cell
