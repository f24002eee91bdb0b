"""The book's structure: table of contents, chapters, Colab notebooks, configuration, CI."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import bookpages
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


notebooks_tool = load_module(ROOT / "tools" / "notebooks.py")
colab_links = load_module(ROOT / "book" / "_ext" / "colab_links.py")
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
CHAPTERS = notebooks_tool.chapter_sources()


def toc_entries() -> list[str]:
    return [file for file, _ in bookpages.toc_entries(ROOT)]


def test_every_toc_entry_has_a_file():
    for entry in toc_entries():
        assert (ROOT / f"{entry}.md").exists() or (ROOT / f"{entry}.ipynb").exists(), entry


def test_every_book_page_is_in_the_toc():
    listed = set(toc_entries())
    pages = {str(p.relative_to(ROOT).with_suffix("")) for p in (ROOT / "book").glob("*.md")}
    assert pages - listed == set(), "book pages missing from _toc.yml"


def test_toc_lists_each_page_once():
    entries = toc_entries()
    assert len(entries) == len(set(entries))


def test_the_primer_is_a_chapter():
    assert ROOT / "book" / "primer.md" in CHAPTERS


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_links_to_its_own_colab_notebook(chapter):
    assert f"{{colab}}`{chapter.stem}`" in chapter.read_text(encoding="utf-8")


APPENDICES = {"datasets"}  # executable appendices: exercises, but no theorems to prove


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_exercises_and_solutions(chapter):
    text = chapter.read_text(encoding="utf-8")
    assert "{exercise}" in text
    assert "{solution" in text


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_states_its_results_with_sphinx_proof(chapter):
    if chapter.stem not in APPENDICES:
        assert "{prf:" in chapter.read_text(encoding="utf-8")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_states_its_run_time_from_a_glued_measurement(chapter):
    text = chapter.read_text(encoding="utf-8")
    assert "**Run time.**" in text
    key = re.search(r"\*\*Run time\.\*\*[^`]*\{glue:text\}`(\w+)", text).group(1)
    assert f'glue("{key}", time.perf_counter()' in text


def test_colab_notebooks_match_the_chapters():
    config = notebooks_tool.book_config()
    expected = {f"{src.stem}.ipynb": notebooks_tool.render(src, config) for src in CHAPTERS}
    found = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert sorted(found) == sorted(expected), "run `make notebooks`"
    for name, text in expected.items():
        assert found[name] == text, f"notebooks/{name} is stale: run `make notebooks`"


def test_check_mode_reports_a_stale_notebook(tmp_path, monkeypatch, capsys):
    out = tmp_path / "notebooks"
    out.mkdir()
    (out / "primer.ipynb").write_text("{}", encoding="utf-8")
    (out / "orphan.ipynb").write_text("{}", encoding="utf-8")
    monkeypatch.setattr(notebooks_tool, "OUT", out)
    assert notebooks_tool.main(["--check"]) == 1
    report = capsys.readouterr().out
    assert "primer.ipynb is out of date" in report
    assert "orphan.ipynb has no chapter" in report
    assert (out / "primer.ipynb").read_text() == "{}"  # --check writes nothing


def test_colab_notebook_installs_vaebook_from_the_configured_repository():
    nb = notebooks_tool.colab_notebook(ROOT / "book" / "primer.md", CONFIG)
    install = nb.cells[0]
    assert install.cell_type == "code"
    url = CONFIG["repository"]["url"]
    assert f"git+{url}@{CONFIG['repository']['branch']}" in install.source
    assert 'find_spec("vaebook") is None' in install.source
    assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code")
    assert "jupytext" not in nb.metadata


def test_colab_notebook_defines_every_book_macro():
    nb = notebooks_tool.colab_notebook(ROOT / "book" / "primer.md", CONFIG)
    macros = CONFIG["sphinx"]["config"]["mathjax3_config"]["tex"]["macros"]
    for name, body in macros.items():
        assert f"\\def\\{name}{{{body}}}" in nb.cells[1].source


def test_markdown_without_jupytext_header_is_not_a_chapter(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Just prose\n", encoding="utf-8")
    assert not notebooks_tool.is_notebook(page)


def fake_config(url="https://github.com/org/repo", branch="dev"):
    theme = {
        "repository_url": url,
        "repository_branch": branch,
        "launch_buttons": {"colab_url": "https://colab.example"},
    }
    return SimpleNamespace(html_theme_options=theme)


def test_colab_url_points_at_the_notebook_folder():
    url = colab_links.colab_url(fake_config(), "primer")
    assert url == "https://colab.example/github/org/repo/blob/dev/notebooks/primer.ipynb"


def test_colab_url_rejects_a_non_github_repository():
    with pytest.raises(ValueError, match="repository url"):
        colab_links.colab_url(fake_config(url="https://gitlab.com/org/repo"), "primer")


def test_launch_buttons_are_rewritten_for_chapters_only():
    app = SimpleNamespace(srcdir=str(ROOT), config=fake_config())

    def context():
        buttons = [{"text": "Colab", "url": "old"}, {"text": "Binder", "url": "old"}]
        return {"header_buttons": [{"buttons": buttons}]}

    chapter = context()
    colab_links.point_launch_buttons(app, "book/primer", "page.html", chapter, None)
    colab, binder = chapter["header_buttons"][0]["buttons"]
    assert colab["url"].endswith("/blob/dev/notebooks/primer.ipynb")
    assert binder["url"].endswith("?urlpath=lab/tree/notebooks/primer.ipynb")
    other = context()
    colab_links.point_launch_buttons(app, "book/intro", "page.html", other, None)
    assert [button["url"] for button in other["header_buttons"][0]["buttons"]] == ["old", "old"]


def test_execution_is_strict_and_bounded():
    execute = CONFIG["execute"]
    assert execute["execute_notebooks"] == "cache"  # make test builds from clean (make clean)
    assert execute["allow_errors"] is False
    assert 0 < execute["timeout"] <= 600


def test_proof_exercise_and_bibtex_extensions_are_enabled():
    extensions = CONFIG["sphinx"]["extra_extensions"]
    assert {"sphinx_proof", "sphinx_exercise"} <= set(extensions)
    assert (ROOT / CONFIG["bibtex_bibfiles"][0]).exists()


def test_every_citation_key_is_in_the_bibliography():
    bib = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    for page in (ROOT / "book").glob("*.md"):
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", page.read_text(encoding="utf-8")):
            for key in group.split(","):
                assert key.strip() in keys, f"{page.name} cites unknown {key}"


def test_pins_live_in_pyproject_and_everyone_installs_from_there():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"torch==2.13.0"' in pyproject
    assert '"jupyter-book>=1.0.4.post1,<2"' in pyproject
    environment = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip_lines = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert "-e .[book]" in pip_lines
    assert any("whl/cpu" in line for line in pip_lines)  # CPU-only torch on Binder
    assert '-e ".[test]"' in (ROOT / "Makefile").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in readme and "make book" in readme
    assert re.search(r"^make test$", ci, flags=re.MULTILINE)
    assert "set -euo pipefail" in ci


def test_binder_url_opens_the_chapters_notebook_in_jupyterlab():
    url = colab_links.binder_url(fake_config(), "primer")
    assert url == "https://mybinder.org/v2/gh/org/repo/dev?urlpath=lab/tree/notebooks/primer.ipynb"
    with pytest.raises(ValueError, match="repository url"):
        colab_links.binder_url(fake_config(url="https://example.org/repo"), "primer")
    with pytest.raises(ValueError, match="name must"):
        colab_links.binder_url(fake_config(), "book/primer.md")


# --- MyST -> Colab markdown ---------------------------------------------------------------

MYST_PAGE = """\
# A page

(sec-target)=
## A section

$$
a = b
$$ (eq-ab)

```{prf:theorem} Pythagoras
:label: thm-py

For a right triangle $a^2 + b^2 = c^2$.
```

````{exercise}
:label: ex-one

Prove {prf:ref}`thm-py`, using {eq}`eq-ab` as in {ref}`the section <sec-target>`.
```{prf:proof}
Draw it.
```
````
"""


@pytest.fixture
def myst_book(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    (book / "page.md").write_text(MYST_PAGE, encoding="utf-8")
    bib = {"kingma2014auto": ("Kingma & Welling", "2014"), "x2020": ("Xu et al.", "2020")}
    labels = notebooks_tool.book_labels(book, chapters={"book/page": 3})
    return {"labels": labels, "bib": bib, "url": "https://book.example/"}


def test_book_labels_finds_directives_equations_and_targets(myst_book):
    labels = myst_book["labels"]
    expected = notebooks_tool.Target("book/page", "Theorem", "Pythagoras", "Theorem 3.1")
    assert labels["thm-py"] == expected
    assert labels["ex-one"].kind == "Exercise" and labels["ex-one"].number == "Exercise 3.1"
    assert labels["eq-ab"].kind == "equation"
    assert labels["sec-target"] == notebooks_tool.Target("book/page", "section", "A section")


def test_colab_markdown_turns_directives_into_titled_quotes(myst_book):
    out = notebooks_tool.colab_markdown(MYST_PAGE, "book/page", myst_book)
    assert "{prf:" not in out and "{exercise}" not in out and "```" not in out
    assert ":label:" not in out and "(sec-target)=" not in out
    assert "> **Theorem.** *Pythagoras.*\n>\n> For a right triangle $a^2 + b^2 = c^2$." in out
    assert "> **Exercise.**" in out
    assert "> > *Proof.*\n> >\n> > Draw it. ∎" in out  # nested inside the exercise
    assert "$$\na = b\n$$\n" in out  # the equation label is dropped, the math kept


def test_colab_markdown_links_references_into_the_published_book(myst_book):
    out = notebooks_tool.colab_markdown(MYST_PAGE, "book/page", myst_book)
    assert "[Theorem 3.1 (Pythagoras)](https://book.example/book/page.html#thm-py)" in out
    assert "[(eq-ab)](https://book.example/book/page.html#equation-eq-ab)" in out
    assert "[the section](https://book.example/book/page.html#sec-target)" in out


def test_colab_markdown_writes_citations_glue_and_doc_links(myst_book):
    text = (
        "See {cite:p}`kingma2014auto,x2020` and {cite:t}`kingma2014auto`; "
        "{doc}`the API <api>`, {glue:text}`gap:.3f` nats. {colab}`page`"
    )
    out = notebooks_tool.colab_markdown(text, "book/page", myst_book)
    assert "(Kingma & Welling, 2014; Xu et al., 2020)" in out
    assert "Kingma & Welling (2014)" in out
    assert "[the API](https://book.example/book/api.html)" in out
    assert "`gap` nats" in out
    assert "[Read this chapter in the rendered book](https://book.example/book/page.html)" in out


def test_colab_markdown_names_an_unknown_reference(myst_book):
    with pytest.raises(KeyError, match="no-such-label"):
        notebooks_tool.colab_markdown("{prf:ref}`no-such-label`", "book/page", myst_book)


def test_colab_markdown_rejects_an_unclosed_directive(myst_book):
    with pytest.raises(ValueError, match="unclosed directive"):
        notebooks_tool.colab_markdown("```{prf:proof}\nno end\n", "book/page", myst_book)


def test_colab_markdown_numbers_results_as_the_book_does(myst_book):
    context = {**myst_book, "numbers": notebooks_tool.block_numbers(3)}
    out = notebooks_tool.colab_markdown(MYST_PAGE + MYST_PAGE, "book/page", context)
    assert out.count("> **Theorem 3.1.** *Pythagoras.*") == 1
    assert "> **Theorem 3.2.** *Pythagoras.*" in out and "> **Exercise 3.2.**" in out
    unnumbered = notebooks_tool.block_numbers(None)
    assert [unnumbered("Exercise"), unnumbered("Exercise"), unnumbered("Proof")] == [
        "Exercise 1",
        "Exercise 2",
        "",
    ]


def test_colab_markdown_closes_dropdowns_in_details(myst_book):
    hint = "```{admonition} Hint\n:class: dropdown\n\nUse $a^2$.\n```"
    out = notebooks_tool.colab_markdown(hint, "book/page", myst_book)
    assert out.startswith("<details>\n<summary><b>Hint.</b> (click to open)</summary>")
    assert "\n\nUse $a^2$.\n\n</details>" in out


SOLVED = [
    (
        "markdown",
        "````{exercise}\n:label: ex-one\n\nDo it.\n````\n\n"
        "```{solution-start} ex-one\n:class: dropdown\n```\n\nFirst the idea.",
    ),
    ("code", "answer = 42\nglue('answer', answer)"),
    ("markdown", "So 42.\n\n```{solution-end}\n```\n\n## Next section"),
    ("code", "print('main text')"),
]


def test_fold_solutions_closes_each_solution_with_its_code_unrun(myst_book):
    cells = [
        nbformat.v4.new_code_cell(text) if kind == "code" else nbformat.v4.new_markdown_cell(text)
        for kind, text in SOLVED
    ]
    folded = notebooks_tool.fold_solutions(cells, myst_book["labels"])
    assert [c.cell_type for c in folded] == ["markdown", "markdown", "markdown", "code"]
    assert folded[0].source.startswith("````{exercise}") and "solution" not in folded[0].source
    solution = folded[1].source
    assert solution.startswith("<details>\n<summary><b>Solution to Exercise 3.1</b>")
    assert "First the idea." in solution and "So 42." in solution
    assert "```python\nanswer = 42\nglue('answer', answer)\n```" in solution
    assert solution.endswith("</details>")
    assert folded[2].source == "## Next section" and folded[3].source == "print('main text')"


def test_expand_macros_writes_them_out_outside_code():
    macros = {"z": "\\mathbf{z}", "E": "\\mathbb{E}", "KL": "\\mathrm{KL}"}
    text = "$p(\\z)$, $\\E\\KL$, $\\zeta$ and `\\z` in code\n```python\nx = r'\\E'\n```"
    out = notebooks_tool.expand_macros(text, macros)
    assert out.startswith("$p({\\mathbf{z}})$, ${\\mathbb{E}}{\\mathrm{KL}}$, $\\zeta$")
    assert "`\\z` in code" in out and "x = r'\\E'" in out


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_no_notebook_cell_relies_on_the_macros_cell(chapter):
    config = notebooks_tool.book_config()
    names = "|".join(map(re.escape, notebooks_tool.book_macros(config)))
    notebook = nbformat.reads(notebooks_tool.render(chapter, config), 4)
    for cell in notebook.cells[2:]:
        if cell.cell_type == "markdown":
            prose = re.sub(r"(`+).*?\1", "", cell.source, flags=re.S)
            assert not re.search(rf"\\({names})(?![A-Za-z])", prose), cell.source[:200]


def test_fold_solutions_rejects_an_unclosed_solution(myst_book):
    cells = [nbformat.v4.new_markdown_cell(SOLVED[0][1])]
    with pytest.raises(ValueError, match="without a solution-end"):
        notebooks_tool.fold_solutions(cells, myst_book["labels"])


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_colab_notebooks_run_no_solution_code(chapter):
    notebook = nbformat.reads(notebooks_tool.render(chapter, notebooks_tool.book_config()), 4)
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    text = chapter.read_text(encoding="utf-8")
    solutions = re.findall(r"\{solution-start\}.*?\{solution-end\}", text, flags=re.S)
    for solution in solutions:
        for block in re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", solution, flags=re.S):
            assert block.strip() not in code, f"{chapter.stem}: a solution runs in the notebook"
            shown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
            assert block.strip() in shown, f"{chapter.stem}: a solution's code is not shown"


def test_bibliography_gives_surnames_and_year(tmp_path):
    bib = tmp_path / "refs.bib"
    bib.write_text(
        "@article{a1,\n  author = {Dai, Bin and Wipf, David},\n  year = {2019}\n}\n\n"
        '@article{a2,\n  author = {Hyv{\\"a}rinen, Aapo},\n  year = 2001\n}\n\n'
        "@article{a3,\n  author = {Ann Lee and Bo Kim and Cy Wu},\n  year = {2020}\n}\n",
        encoding="utf-8",
    )
    assert notebooks_tool.bibliography(bib) == {
        "a1": ("Dai & Wipf", "2019"),
        "a2": ("Hyvarinen", "2001"),
        "a3": ("Lee et al.", "2020"),
    }


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_colab_notebook_has_no_myst_syntax_left(chapter):
    nb = notebooks_tool.colab_notebook(chapter, CONFIG)
    assert nb.cells[0].cell_type == "code" and "%pip install" in nb.cells[0].source
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            leftover = re.findall(
                r"^(?:`{3,}|:{3,})\{|\{[\w:-]+\}`|^:label:|^\([\w-]+\)=$", cell.source, re.M
            )
            assert not leftover, f"raw MyST in a markdown cell of {chapter.name}: {leftover}"


# --- publishing -------------------------------------------------------------------------------

WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][\w-]*):", text, flags=re.MULTILINE))


def test_publishing_workflow_builds_with_make_book_and_deploys_the_html():
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as True
    assert triggers["push"]["branches"] == ["main"] == [CONFIG["repository"]["branch"]]
    assert workflow["permissions"]["pages"] == "write"
    assert workflow["permissions"]["id-token"] == "write"
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    commands = [step["run"] for step in build["steps"] if "run" in step]
    assert commands == ["make book"]  # the README's command, nothing else
    assert set(cmd.split()[1] for cmd in commands) <= makefile_targets()
    upload = next(s for s in build["steps"] if "upload-pages-artifact" in s.get("uses", ""))
    assert upload["with"]["path"] == "_build/html"
    assert "whl/cpu" in build["env"]["PIP_EXTRA_INDEX_URL"]  # no CUDA build of torch
    python = next(s for s in build["steps"] if "setup-python" in s.get("uses", ""))
    assert python["with"]["python-version"] == "3.11"
    assert deploy["needs"] == "build"
    assert any("deploy-pages" in step.get("uses", "") for step in deploy["steps"])


def test_make_book_writes_the_folder_the_workflow_publishes():
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    book = re.search(r"^book:.*\n((?:\t.+\n)+)", text, flags=re.MULTILINE)[1]
    assert "jupyter-book build . --builder html -W -n --keep-going" in book  # -> _build/html


def test_readme_links_the_published_book_and_its_workflow_badge():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert CONFIG["html"]["baseurl"] in readme
    slug = CONFIG["repository"]["url"]
    assert f"{slug}/actions/workflows/book.yml/badge.svg" in readme


# --- the claims register in the intro ---------------------------------------------------------

REGISTER_ROW = re.compile(
    r"^\| (?P<claim>[^|]+) \| (?P<stated>[^|]+) \| (?P<checked>[^|]+) \| (?P<verdict>[^|]+) \|$"
)
CROSS_GLUE = re.compile(r"^\{glue:text\}`(?P<doc>\w+)\.md::(?P<key>\w+):s`$")
VERDICT_WORDS = re.compile(r"reproduc|contradict|inconclusive|partly|confirmed", re.I)
GLUE_REF = re.compile(r"\{glue(?::\w+)?\}`[^`]*`")
TESTS_LINE = re.compile(r"^- (?P<key>[^:]+): (?P<tests>.+)$")
STATED = re.compile(r"^```\{prf:(theorem|proposition|corollary)\}[^\n]*\n:label: ([\w-]+)", re.M)


def register_papers() -> dict[str, tuple[str, list[dict], dict[str, list[str]]]]:
    """``paper -> (test modules, table rows, claim key -> test names)`` of the intro's register."""
    text = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    section = text.split("(claims-register)=\n## Claims register", 1)[1].split("\n## ", 1)[0]
    papers = {}
    for block in section.split("\n### ")[1:]:
        paper = block.splitlines()[0]
        line = re.search(r"Unit tests in (.+)", block)[1]
        modules = re.findall(r"`tests/(test_\w+\.py)`", line)
        chapter = re.search(r"Chapter: \{doc\}`(\w+)`", block)[1]
        rows = [m.groupdict() for m in map(REGISTER_ROW.match, block.splitlines()) if m]
        rows = [row for row in rows if row["claim"] not in ("claim", "---")]
        tests = {
            m["key"]: re.findall(r"`(test_\w+)`", m["tests"])
            for m in map(TESTS_LINE.match, block.splitlines())
            if m
        }
        for row in rows:
            row["chapter"] = chapter
        papers[paper] = (modules, rows, tests)
    return papers


def test_claims_register_names_tests_that_exist_for_every_claim():
    papers = register_papers()
    assert len(papers) == 5
    assert sum(len(rows) for _, rows, _ in papers.values()) >= 23  # the papers' numbered results
    for paper, (modules, rows, tests) in papers.items():
        assert modules, f"{paper}: no test module named"
        source = "\n".join((ROOT / "tests" / m).read_text(encoding="utf-8") for m in modules)
        for row in rows:
            key = row["claim"].split(":")[0]
            assert tests.get(key), f"{paper} {key}: no unit test listed"
            for name in tests[key]:
                assert re.search(rf"^def {name}\(", source, re.M), f"{modules}::{name} is missing"
            assert "{ref}`" in row["checked"], f"{paper} {key}: no link to the checking cells"
            assert "ref}`" in row["stated"], f"{paper} {key}: no link to the statement"


def test_claims_register_covers_every_stated_result():
    register = "\n".join(row["stated"] for _, rows, _ in register_papers().values() for row in rows)
    for chapter in CHAPTERS:
        for _, label in STATED.findall(chapter.read_text(encoding="utf-8")):
            if chapter.stem != "primer":  # the primer states textbook facts, not a paper's claims
                assert f"`{label}`" in register, f"{label} ({chapter.name}) is not in the register"


def glued(chapter: Path, key: str) -> bool:
    """Whether the chapter glues ``key``: ``glue("key", ...)``, or ``glue(f"..._verdict_...{x}")``
    with a literal part that says it glues a verdict and a pattern that matches ``key``."""
    for fstring, name in re.findall(
        r"\bglue\(\s*(f?)[\"']([\w{}().:\[\]'\"]+?)[\"'],", chapter.read_text(encoding="utf-8")
    ):
        if fstring and "_verdict_" not in name.split("{")[0]:
            continue
        pattern = re.sub(r"\\\{.*?\\\}", r"\\w+", re.escape(name)) if fstring else re.escape(name)
        if re.fullmatch(pattern, key):
            return True
    return False


def register_verdicts() -> list[tuple[str, str, str]]:
    """``(chapter, key, claim)`` of every verdict cell in the claims register."""
    cells = []
    for paper, (_, rows, _) in register_papers().items():
        for row in rows:
            m = CROSS_GLUE.match(row["verdict"].strip())
            assert m, f"{paper} {row['claim']}: verdict not glued from a chapter: {row['verdict']}"
            assert m["doc"] == row["chapter"], f"{paper} {row['claim']}: glued from {m['doc']}"
            cells.append((m["doc"], m["key"], row["claim"]))
    return cells


def test_claims_register_verdicts_are_computed_in_the_chapters():
    """Every register verdict is pasted from a key its chapter glues: none is typed."""
    cells = register_verdicts()
    assert len(cells) >= 23
    for chapter, key, claim in cells:
        assert glued(ROOT / "book" / f"{chapter}.md", key), f"{claim}: {chapter} glues no {key}"


def summary_rows(chapter: Path) -> list[list[str]]:
    """The table rows of a chapter's summary box (cells split on ``|``)."""
    text = chapter.read_text(encoding="utf-8")
    box = re.search(r"^## Summary\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    if box is None:
        return []
    rows = [re.split(r"(?<!\\)\|", line.strip().strip("|")) for line in box[1].splitlines()]
    return [row for row in rows if len(row) >= 3 and not set(row[0].strip()) <= set("-")]


def test_summary_boxes_paste_computed_verdicts():
    """A paper chapter's summary box shows glued verdicts and types no verdict word."""
    boxes = 0
    for chapter in CHAPTERS:
        rows = summary_rows(chapter)[1:]  # past the header
        if not rows:
            continue
        boxes += 1
        for row in rows:
            typed = GLUE_REF.sub("", " ".join(row[1:]))
            assert not VERDICT_WORDS.search(typed), f"{chapter.name}: typed verdict in {row}"
            pasted = re.findall(r"\{glue:text\}`(\w+)`", row[1])
            assert pasted, f"{chapter.name}: no glued verdict in {row}"
            for key in pasted:
                assert glued(chapter, key), f"{chapter.name}: {key} is pasted but never glued"
    assert boxes == 5


PINNED_OUTCOME = re.compile(
    r"^\s*assert\b.*(\bp(_\w+)?\b|pvalue|p_value).*>\s*0?\.0[15]\b"  # a p-value above 0.05
    r"|^\s*assert\s+not\s+\w*(sparser|better|reproduc|learn)\w*\b"  # the effect is absent
)


def test_no_chapter_assert_pins_an_outcome():
    """A chapter asserts claims and the integrity of measurements, never that a test failed."""
    for chapter in CHAPTERS:
        for n, line in enumerate(chapter.read_text(encoding="utf-8").splitlines(), 1):
            assert not PINNED_OUTCOME.search(line), f"{chapter.name}:{n}: {line.strip()}"


def test_the_outcome_pattern_catches_the_reviewed_faults():
    caught = [
        "assert min(p_fixed, p_learned) > 0.05",
        "    assert p > 0.01, 'no effect'",
        "assert not alpha_sparser",
        "assert pvalue > .05",
    ]
    fine = ["assert 0 <= p_value <= 1", "assert abs(slope - 3) < 0.05", "assert not nan"]
    assert all(PINNED_OUTCOME.search(line) for line in caught)
    assert not any(PINNED_OUTCOME.search(line) for line in fine)
