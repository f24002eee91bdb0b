"""The exercises of the teaching chapters follow the study guide's conventions, and the guide's
tables in the introduction are what ``tools/studyguide.py`` generates from them."""

from __future__ import annotations

import re
import textwrap

import bookpages
import pytest
import studyguide
from test_book import ROOT

from vaebook.exercises import labels as checked_labels

TEACHING = [
    ROOT / f"{file}.md"
    for file, part in bookpages.toc_entries(ROOT)
    if part in bookpages.TEACHING_PARTS
]
GRADED = TEACHING


def chapter_exercises(path):
    return studyguide.exercises(path)


@pytest.mark.parametrize("chapter", GRADED, ids=lambda p: p.stem)
def test_every_teaching_chapter_has_eight_graded_exercises_of_known_kinds(chapter):
    found = chapter_exercises(chapter)
    assert len(found) >= 8, f"{chapter.stem}: {len(found)} exercises"
    for ex in found:
        assert ex.label.startswith("ex-"), ex
        assert 1 <= ex.stars <= 3, f"{ex.label}: title needs ★, ★★ or ★★★ first"
        assert ex.kind, f"{ex.label}: the statement must open with one of {studyguide.KINDS}"
        if ex.stars >= 2:
            assert ex.hinted, f"{ex.label}: a ★★/★★★ exercise needs a Hint dropdown"
    assert len({ex.stars for ex in found}) >= 2, f"{chapter.stem}: all exercises at one level"


@pytest.mark.parametrize("chapter", GRADED, ids=lambda p: p.stem)
def test_computational_exercises_name_a_registered_checker(chapter):
    known = set(checked_labels())
    for ex in chapter_exercises(chapter):
        if ex.checked:
            assert ex.label in known, f"{ex.label}: its statement names a checker that is missing"
        elif ex.kind != "Derive":
            pytest.fail(f"{ex.label}: a {ex.kind!r} exercise needs a checker")


def test_every_checker_belongs_to_an_exercise():
    stated = {ex.label for chapter in TEACHING for ex in chapter_exercises(chapter) if ex.checked}
    assert set(checked_labels()) <= stated


@pytest.mark.parametrize("chapter", TEACHING, ids=lambda p: p.stem)
def test_every_solution_code_cell_opens_with_its_mark(chapter):
    text = chapter.read_text(encoding="utf-8")
    for label, body in re.findall(r"\{solution-start\}\s*(\S+)(.*?)\{solution-end\}", text, re.S):
        for cell in re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", body, re.S):
            first = cell.lstrip().split("\n", 1)[0]
            assert first == f"# Solution to {label}", f"{chapter.stem}: {label}: {first!r}"


def test_the_intro_holds_the_generated_tables():
    text = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    assert text == studyguide.updated_intro(ROOT), "run `make notebooks` (tools/studyguide.py)"


TOY = textwrap.dedent(
    """\
    ````{exercise} ★★ A title
    :label: ex-toy

    *Predict, then run.* Do it. Check your answer with `check("ex-toy", f)`.
    ````

    ```{admonition} Hint
    :class: dropdown

    Think.
    ```

    ```{solution-start} ex-toy
    :class: dropdown
    ```

    ```{code-cell} ipython3
    # Solution to ex-toy
    f = 1
    ```

    ```{solution-end}
    ```

    ````{exercise}
    :label: ex-bare

    A statement without a kind.
    ````

    ```{solution} ex-bare
    :class: dropdown

    By hand.
    ```
    """
)


def test_exercises_reads_level_kind_checker_hint_and_code(tmp_path):
    page = tmp_path / "toy.md"
    page.write_text(TOY, encoding="utf-8")
    toy, bare = studyguide.exercises(page)
    assert toy == studyguide.Exercise("ex-toy", 2, "A title", "Predict, then run", True, True, True)
    assert (bare.stars, bare.kind, bare.checked, bare.hinted, bare.has_code) == (
        0,
        "",
        False,
        False,
        False,
    )
    assert toy.seconds_key == "ex_toy_seconds"


def test_a_solution_directive_is_not_mistaken_for_the_next_exercises_solution(tmp_path):
    page = tmp_path / "toy.md"
    bare, toy = TOY.split("````{exercise}\n:label: ex-bare")
    page.write_text("````{exercise}\n:label: ex-bare" + toy + bare, encoding="utf-8")
    first, second = studyguide.exercises(page)
    assert (first.label, first.has_code, second.label, second.has_code) == (
        "ex-bare",
        False,
        "ex-toy",
        True,
    )


def test_table_pastes_the_glued_run_time_of_solutions_with_code(tmp_path):
    page = tmp_path / "toy.md"
    page.write_text(TOY, encoding="utf-8")
    rows = studyguide.table("toy", studyguide.exercises(page)).splitlines()
    assert rows[2].startswith("| {ref}`ex-toy` | ★★ | Predict, then run | `check(")
    assert "{glue:text}`toy.md::ex_toy_seconds:.1f` s" in rows[2]
    assert rows[3].endswith("| by hand | no code |")


def test_updated_intro_needs_the_markers(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "intro.md").write_text("# Intro\n", encoding="utf-8")
    with pytest.raises(ValueError, match="must hold the markers"):
        studyguide.updated_intro(tmp_path)
