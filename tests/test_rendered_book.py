"""The built book as readers meet it: a clean build, then every page opened in Chromium.

``make clean book`` (the ``built_book`` fixture of ``conftest.py``; ``make book`` is what the
publishing workflow runs) must finish with zero warnings under ``-W -n --keep-going``: every
citation, ``prf:``/exercise label and cross-reference resolves. Every page of ``_toc.yml`` is
then checked in headless Chromium by ``tools/pagecheck.py`` and screenshotted to
``_build/screenshots/``.

These tests build the whole book (several minutes); ``make unit`` leaves them out.
"""

from __future__ import annotations

import html
import json
import re

import pytest
from test_book import CONFIG, ROOT, load_module, register_verdicts

from vaebook.verdicts import LABELS

pagecheck = load_module(ROOT / "tools" / "pagecheck.py")
SCREENSHOTS = ROOT / "_build" / "screenshots"
PAGES = pagecheck.toc_pages()
CHAPTERS = [page for page, chapter in PAGES if chapter]

pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def browser(built_book):
    driver = pagecheck.start_browser()
    with pagecheck.serve(built_book) as base:
        yield driver, base
    driver.quit()


@pytest.mark.parametrize(("page", "chapter"), PAGES, ids=[page for page, _ in PAGES])
def test_page_reads_cleanly_in_chromium(browser, built_book, page, chapter):
    driver, base = browser
    shot = SCREENSHOTS / page.replace("/", "_").replace(".html", ".png")
    problems = pagecheck.check_page(
        driver, base, built_book, page, chapter=chapter, screenshot=shot
    )
    assert problems == [], f"{page}:\n" + "\n".join(problems)
    assert shot.stat().st_size > 0


@pytest.mark.parametrize("page", CHAPTERS)
def test_chapter_opens_with_run_time_and_launch_links_to_real_files(built_book, page):
    html = (built_book / page).read_text(encoding="utf-8")
    name = page.removeprefix("book/").removesuffix(".html")
    text = re.sub(r"<[^>]+>", "", html)  # the glued number sits in its own span
    assert re.search(r"Run time\. This chapter executed in \d+ s", text)
    colab = re.search(r'href="([^"]+)"[^>]*>Open this chapter in Colab', html)[1]
    binder = re.search(r'href="([^"]+)"[^>]*>launch it on Binder', html)[1]
    assert colab.endswith(f"/blob/main/notebooks/{name}.ipynb")
    assert binder.endswith(f"?urlpath=lab/tree/notebooks/{name}.ipynb")
    assert (ROOT / "notebooks" / f"{name}.ipynb").is_file()
    assert (ROOT / "book" / f"{name}.md").is_file()


def test_colab_notebooks_link_to_anchors_that_exist(built_book):
    """The links tools/notebooks.py writes into the Colab notebooks land on real anchors."""
    url = CONFIG["html"]["baseurl"].rstrip("/") + "/"
    links = set()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
            links |= set(re.findall(re.escape(url) + r"[^)\s]+", "".join(cell["source"])))
    assert len(links) > 20
    local = [link.replace(url, "http://book/") for link in links]
    assert pagecheck.broken_links(local, "http://book/", built_book) == []


def test_register_shows_the_verdicts_the_chapters_computed(built_book):
    """The register's cells hold what the chapters glued, and that is a computed verdict."""
    intro = re.sub(r"<[^>]+>", "", (built_book / "book" / "intro.html").read_text(encoding="utf-8"))
    intro = html.unescape(intro)
    for chapter, key, claim in register_verdicts():
        store = ROOT / "_build" / "jupyter_execute" / "book" / f"{chapter}.glue.json"
        glued = json.loads(store.read_text(encoding="utf-8"))
        assert key in glued, f"{claim}: {chapter} did not glue {key} when executed"
        value = glued[key]["data"]["text/plain"].strip("'\"")
        starts = [label + sep for label in LABELS for sep in (": ", " (")]  # Verdict, JointVerdict
        assert value.startswith(tuple(starts)), f"{claim}: {key} = {value!r} is not a verdict"
        assert value in intro, f"{claim}: the register does not show {value!r}"
