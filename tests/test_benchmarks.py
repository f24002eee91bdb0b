"""benchmarks/run.py (``make bench``) and the committed results it wrote."""

from __future__ import annotations

import os
import re

import pytest
from test_book import ROOT, load_module

bench = load_module(ROOT / "benchmarks" / "run.py")
RESULTS = ROOT / "benchmarks" / "results.md"


def chapter_rows(text: str) -> dict[str, tuple[float, float]]:
    """``chapter -> (seconds, GB)`` from the chapter table of results.md (its first table)."""
    table = text.split("| chapter |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| (\w+) \| (\d+) \| ([\d.]+) \| ", table, flags=re.MULTILINE)
    return {name: (float(s), float(gb)) for name, s, gb in rows}


@pytest.mark.results
def test_results_cover_every_notebook_page_within_budget():
    rows = chapter_rows(RESULTS.read_text(encoding="utf-8"))
    assert sorted(rows) == sorted(bench.notebook_pages()), "run `make bench`"
    for name, (seconds, gb) in rows.items():
        assert seconds <= bench.CHAPTER_SECONDS, f"{name} takes {seconds} s"
        assert gb * 1e9 <= bench.CHAPTER_BYTES, f"{name} peaks at {gb} GB"


@pytest.mark.results
def test_results_report_make_test_from_a_fresh_clone_within_budget():
    text = RESULTS.read_text(encoding="utf-8")
    minutes = float(re.search(r"^\| make test \| ([\d.]+) \|", text, flags=re.MULTILINE)[1])
    assert 0 < minutes * 60 <= bench.MAKE_TEST_SECONDS
    assert re.search(r"^\| make book \| ([\d.]+|not measured) \|", text, flags=re.MULTILINE)
    for script in bench.MICRO:
        assert f"benchmarks/{script}" in text


def test_notebook_pages_are_the_executable_toc_entries():
    pages = bench.notebook_pages()
    assert pages[0] == "primer" and "datasets" in pages
    assert "intro" not in pages and "api" not in pages


def test_peak_rss_reads_vmhwm(tmp_path):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "status").write_text("Name:\tpython\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n")
    assert bench.peak_rss_bytes(42, proc=tmp_path) == 2048 * 1024
    (tmp_path / "43").mkdir()
    (tmp_path / "43" / "status").write_text("Name:\tpython\n")
    with pytest.raises(ValueError, match="pid 43"):
        bench.peak_rss_bytes(43, proc=tmp_path)


def test_peak_rss_of_this_process_is_plausible():
    assert 10e6 < bench.peak_rss_bytes(os.getpid()) < 24e9


def test_chapter_table_flags_time_and_memory_overruns():
    lines = bench.chapter_table(
        [("a", 100.0, int(1e9)), ("b", 200.0, int(1e9)), ("c", 1.0, int(2e9))]
    )
    assert lines[2].endswith("within budget |")
    assert "over budget" in lines[3] and "over budget" in lines[4]
    assert chapter_rows("\n".join(lines)) == {"a": (100.0, 1.0), "b": (200.0, 1.0), "c": (1.0, 2.0)}


def test_edit_chapter_changes_the_last_code_cell_or_only_the_prose(tmp_path):
    chapter = tmp_path / "c.md"
    cell = "```{code-cell} ipython3\nBODY\n```\n"
    source = (
        "# T\n\n" + cell.replace("BODY", "x = 1") + "\ntext\n\n" + cell.replace("BODY", "y = 2")
    )
    chapter.write_text(source)
    bench.edit_chapter(chapter, code=True)
    cells = re.findall(r"```\{code-cell\} ipython3\n(.*?)\n```", chapter.read_text(), re.S)
    assert cells == ["x = 1", "y = 2\n# edited by benchmarks/run.py"]
    chapter.write_text(source)
    bench.edit_chapter(chapter, code=False)
    edited = chapter.read_text()
    assert edited.startswith(source) and "code-cell" not in edited[len(source) :]


@pytest.mark.results
def test_results_show_an_incremental_rebuild_faster_than_the_clean_build():
    text = RESULTS.read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| make book(.*?) \| ([\d.]+) \|", text, flags=re.MULTILINE))
    clean, code = rows.pop(""), rows.pop(f", a code cell of `{bench.EDITED_CHAPTER}` edited")
    assert 0 < float(code) < float(clean), "jupyter-cache should execute only the edited chapter"
