"""A chapter executed twice glues the same numbers.

Every number in the book's prose is glued from a cell, so comparing the glued values of two
fresh executions compares everything the reader is told. The fastest chapters are executed
twice here; the others use the same means to be repeatable (seeded generators, a fixed
thread count, ``torch.use_deterministic_algorithms(True)`` in their first cell), which
``test_every_chapter_turns_on_deterministic_algorithms`` checks.
"""

from __future__ import annotations

import bookpages
import jupytext
import nbclient
import pytest
from test_book import CHAPTERS

# The fastest chapters that glue many results: about 25 s and 55 s. (The datasets appendix is
# faster but glues a single number that is not a timing.)
FASTEST = ["primer", "high_capacity"]
TIMINGS = ("_runtime", "_seconds")  # wall-clock measurements, not results


def glued_values(nb) -> dict[str, str]:
    """``name -> repr`` of every value a notebook glued with ``myst_nb.glue``."""
    values = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is not None:  # myst-nb stores it under a papermill mime prefix
                plain = [v for k, v in output["data"].items() if k.endswith("text/plain")]
                values[name] = "".join(plain[0])
    return values


def execute(name: str) -> dict[str, str]:
    nb, _, _ = bookpages.execute_page(name)
    return glued_values(nb)


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
    assert glued_values(nb) == {"gap": "0.25"}


@pytest.mark.book
@pytest.mark.parametrize("name", FASTEST)
def test_two_executions_glue_identical_numbers(name):
    first, second = execute(name), execute(name)
    timings = {key for key in first if key.endswith(TIMINGS)}
    assert len(first) - len(timings) >= 5, sorted(first)
    for key in sorted(set(first) - timings):
        assert first[key] == second.get(key), f"{name}: {key} = {first[key]} then {second.get(key)}"
    assert set(first) == set(second)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_turns_on_deterministic_algorithms(chapter):
    first_cell = chapter.read_text(encoding="utf-8").split("```{code-cell}")[1]
    assert "torch.use_deterministic_algorithms(True)" in first_cell
