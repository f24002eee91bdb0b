"""``make pdf`` (tools/bookpdf.py): the whole book printed by Chromium into one PDF.

The unit tests take the pure pieces on small inputs: the pages of a toy ``_toc.yml`` in reading
order, page titles, the merge with one bookmark per page on tiny PDFs made with pypdf, and the
errors on bad input.

The book tests (marked ``book``) print the clean build of the ``built_book`` fixture with the
script, as ``make pdf`` runs it, and read the PDF back with pypdf: one bookmark per page of
``_toc.yml`` in its order; the titles of the theorems and propositions of the chapter sources,
and sentences from inside the solution dropdowns, in the text of their chapter's sheets; no
TeX left for MathJax; every figure of a page printed as an image on that page's sheets.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
import unicodedata

import bookpdf
import pagecheck
import pytest
from pypdf import PdfReader, PdfWriter
from test_pagecheck import (
    BODY,
    HEAD,
    TAIL,
    site,  # noqa: F401  (the fixture toy_site reads)
)

ROOT = bookpdf.ROOT
TOY_TOC = """format: jb-book
root: book/start
parts:
  - caption: Foundations
    chapters:
      - file: book/zeta
  - caption: Appendices
    chapters:
      - file: book/alpha
      - file: book/middle
"""
TOY_PAGES = ["book/start.html", "book/zeta.html", "book/alpha.html", "book/middle.html"]
TITLE = "Primer: VAEs, the ELBO, β &amp; the Gaussian toolbox &#8212; vaebook: the book"

# Sources, in MyST: a titled prf directive (not a proof), and the two forms of a solution.
PRF_TITLE = re.compile(r"^(?:`{3,}|:{3,})\{prf:(?!proof\})[\w-]+\}[ \t]+(\S.*)$", re.MULTILINE)
SOLUTION = re.compile(
    r"^(`{3,}|:{3,})\{solution\}[^\n]*\n(.*?)^\1[ \t]*$"
    r"|^`{3,}\{solution-start\}[^\n]*\n(?::[^\n]*\n)*`{3,}[ \t]*\n(.*?)^`{3,}\{solution-end\}",
    re.MULTILINE | re.DOTALL,
)
NESTED_BLOCK = re.compile(r"^(`{3,}|:{3,})[^\n]*\n.*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
STRAIGHT_QUOTES = str.maketrans("\u2018\u2019\u201c\u201d", "''\"\"")
PLAIN_LINE = re.compile(r"[A-Za-z][A-Za-z0-9 ,;.()]+")  # no markup, math, quotes or dashes


def tiny_pdf(sheets: int, width: float) -> bytes:
    """A PDF of ``sheets`` blank sheets ``width`` points wide."""
    writer = PdfWriter()
    for _ in range(sheets):
        writer.add_blank_page(width=width, height=100)
    stream = io.BytesIO()
    writer.write(stream)
    return stream.getvalue()


def bookmarks(reader: PdfReader) -> list[tuple[str, int]]:
    """``(title, first sheet)`` of every top-level outline entry of ``reader``."""
    return [(item.title, reader.get_destination_page_number(item)) for item in reader.outline]


def normalised(text: str) -> str:
    """``text`` with ligatures undone (NFKC), Sphinx's curly quotes straight, a line broken after
    a hyphen joined again ("linear-\\nGaussian"), and every run of whitespace one space."""
    text = unicodedata.normalize("NFKC", text).translate(STRAIGHT_QUOTES).replace("-\n", "-")
    return " ".join(text.split())


def sheet_texts(reader: PdfReader) -> list[str]:
    """The text of every sheet of ``reader``, :func:`normalised` (pypdf reads about 15 a second)."""
    return [normalised(page.extract_text()) for page in reader.pages]


def prf_titles(source: str) -> list[str]:
    """The titles of the theorem-like directives of a chapter source that hold no math."""
    return [title.strip() for title in PRF_TITLE.findall(source) if not set("$`") & set(title)]


def solution_lines(source: str) -> list[str]:
    """A plain prose line of at least six words from each solution of a chapter source that
    has one, and that occurs nowhere else in the source (so only an open solution shows it)."""
    lines = []
    for match in SOLUTION.finditer(source):
        body = NESTED_BLOCK.sub("", match.group(2) or match.group(3))
        plain = [line.strip() for line in body.splitlines() if PLAIN_LINE.fullmatch(line.strip())]
        plain = [line for line in plain if len(line.split()) >= 6 and source.count(line) == 1]
        lines += plain[:1]
    return lines


def link_targets(reader: PdfReader) -> list[str]:
    """The URI of every link annotation in ``reader``."""
    uris = []
    for page in reader.pages:
        for annotation in page.get("/Annots") or []:
            action = annotation.get_object().get("/A")
            if action is not None and "/URI" in action.get_object():
                uris.append(str(action.get_object()["/URI"]))
    return uris


def image_count(reader: PdfReader, sheets: range) -> int:
    """The distinct image XObjects of ``sheets`` of ``reader`` (Chromium lists on a sheet only
    what it draws), in forms too."""
    seen = set()
    stack = [reader.pages[i].get("/Resources", {}).get("/XObject", {}) for i in sheets]
    while stack:
        for ref in stack.pop().values():
            xobject = ref.get_object()
            if xobject.get("/Subtype") == "/Image":
                seen.add(ref.idnum if hasattr(ref, "idnum") else id(xobject))
            elif xobject.get("/Subtype") == "/Form":
                stack.append(xobject.get("/Resources", {}).get("/XObject", {}))
    return len(seen)


# --- unit tests: the pure pieces ------------------------------------------------------------


def test_book_pages_are_the_toc_entries_in_reading_order(tmp_path):
    (tmp_path / "_toc.yml").write_text(TOY_TOC, encoding="utf-8")
    assert bookpdf.book_pages(tmp_path) == TOY_PAGES


def test_page_title_drops_the_book_title_and_unescapes():
    page = f"<html><head><title>\n  {TITLE}\n</title></head></html>"
    assert bookpdf.page_title(page) == "Primer: VAEs, the ELBO, β & the Gaussian toolbox"
    assert bookpdf.page_title("<title>Datasets</title>") == "Datasets"


@pytest.mark.parametrize("page", ["<html><body>no head</body></html>", "<title>  </title>"])
def test_page_title_rejects_a_page_without_one(page):
    with pytest.raises(ValueError, match="page_html has no <title>"):
        bookpdf.page_title(page)


def test_published_url_ends_in_a_slash_and_must_exist(tmp_path):
    (tmp_path / "_config.yml").write_text("html:\n  baseurl: https://x.org/book\n")
    assert bookpdf.published_url(tmp_path) == "https://x.org/book/"
    (tmp_path / "_config.yml").write_text("title: no html section\n")
    with pytest.raises(ValueError, match=r"html\.baseurl"):
        bookpdf.published_url(tmp_path)


def test_check_built_says_to_build_the_book_first(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"html_dir .*nothing does not exist.*make book"):
        bookpdf.check_built(tmp_path / "nothing", TOY_PAGES)
    for page in TOY_PAGES[:2]:
        (tmp_path / page).parent.mkdir(exist_ok=True)
        (tmp_path / page).write_text("<title>x</title>")
    with pytest.raises(FileNotFoundError, match=r"book/alpha\.html, book/middle\.html.*make book"):
        bookpdf.check_built(tmp_path, TOY_PAGES)
    bookpdf.check_built(tmp_path, TOY_PAGES[:2])


def test_main_fails_cleanly_without_a_built_book(tmp_path, capsys):
    assert bookpdf.main([str(tmp_path / "nothing"), "-o", str(tmp_path / "b.pdf")]) == 1
    assert "run `make book` first" in capsys.readouterr().err
    assert not (tmp_path / "b.pdf").exists()


def test_merge_keeps_the_order_with_one_bookmark_per_part(tmp_path):
    parts = [("One", tiny_pdf(2, 101)), ("Two", tiny_pdf(1, 102)), ("Three", tiny_pdf(3, 103))]
    out = bookpdf.merge(parts, tmp_path / "sub" / "book.pdf")
    reader = PdfReader(out)
    assert [float(page.mediabox.width) for page in reader.pages] == [101] * 2 + [102] + [103] * 3
    assert bookmarks(reader) == [("One", 0), ("Two", 2), ("Three", 3)]
    assert reader.metadata.title == "One"


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([], r"parts is empty"),
        ([("One", tiny_pdf(1, 100)), ("Two", b"<html>")], r"parts\[1\] \(Two\) is not a PDF"),
        ([(" ", tiny_pdf(1, 100))], r"parts\[0\] has no title"),
    ],
)
def test_merge_rejects_bad_parts(tmp_path, parts, message):
    with pytest.raises(ValueError, match=message):
        bookpdf.merge(parts, tmp_path / "book.pdf")
    assert not (tmp_path / "book.pdf").exists()


def test_source_readers_find_titles_and_solution_lines():
    source = """Some text. A line that is only here in the prose part.
```{prf:theorem} The optimal linear β-VAE
:label: thm
```
```{prf:proof}
```
:::{prf:proposition} With math $x$
:::
````{solution} ex-one
:class: dropdown

First line of the solution is plain and long enough.
```{code-cell} ipython3
print("A code line that is plain and long enough")
```
````
```{solution-start} ex-two
:class: dropdown
```
Has $math$ so it is skipped by the reader here.
Second solution has a plain line of words too.
```{solution-end}
```
"""
    assert prf_titles(source) == ["The optimal linear β-VAE"]
    assert solution_lines(source) == [
        "First line of the solution is plain and long enough.",
        "Second solution has a plain line of words too.",
    ]
    assert solution_lines(source + "Second solution has a plain line of words too.") == [
        "First line of the solution is plain and long enough."
    ]


# --- printing in Chromium, on a small page like the book's (test_pagecheck's site) ------------


@pytest.fixture(scope="module")
def toy_site(request):
    """test_pagecheck's served folder (the book's MathJax and togglebutton script, a figure,
    a link target): ``(folder, base URL)``."""
    return request.getfixturevalue("site")


SLOW_MATHJAX = """startup: {pageReady: () => new Promise((go) => setTimeout(go, 1000))
  .then(() => MathJax.startup.defaultPageReady())},"""


@pytest.fixture(scope="module")
def offline_driver():
    driver = bookpdf.start_offline_browser()
    yield driver
    driver.quit()


def printed(driver, base: str, page: str) -> PdfReader:
    return PdfReader(io.BytesIO(bookpdf.print_page(driver, base, page, "https://x.org/book/")))


def test_print_page_typesets_opens_the_solution_and_points_links_online(toy_site, offline_driver):
    """MathJax made to start typesetting a second after the page loaded, and the theme's own
    open-on-print turned off: the math is typeset and the solution open all the same."""
    root, base = toy_site
    head = HEAD.replace('toggleOpenOnPrint = "true"', 'toggleOpenOnPrint = "false"').replace(
        "window.MathJax = {", "window.MathJax = {" + SLOW_MATHJAX
    )
    assert head.count("false") == head.count("setTimeout") == 1
    (root / "toy.html").write_text(head + BODY + TAIL, encoding="utf-8")
    reader = printed(offline_driver, base, "toy.html")
    sheets = range(len(reader.pages))
    text = " ".join(sheet_texts(reader))
    assert "The answer is 42." in text
    assert pagecheck.RAW_MATH.findall(text) == []
    assert image_count(reader, sheets) == 1
    assert "https://x.org/book/other.html#target" in link_targets(reader)


def test_the_browser_reaches_nothing_but_the_local_server(toy_site, offline_driver):
    """The same image, from the local server and from another host (localhost, another port):
    only the first is printed."""
    root, base = toy_site
    with pagecheck.serve(root) as other:
        elsewhere = other.replace("127.0.0.1", "localhost") + "figure.png"
        for name, src, images in (("here.html", "figure.png", 1), ("far.html", elsewhere, 0)):
            (root / name).write_text(f'{HEAD}<img src="{src}" alt="">{TAIL}', encoding="utf-8")
            reader = printed(offline_driver, base, name)
            assert image_count(reader, range(len(reader.pages))) == images, name


# --- the book: printed from a clean build ---------------------------------------------------


@pytest.fixture(scope="module")
def book_pdf(built_book, tmp_path_factory):
    """The book printed by ``tools/bookpdf.py`` as ``make pdf`` runs it: a pypdf reader, the
    sheets of each ``_toc.yml`` page ``{page: range}``, and the text of each sheet."""
    out = tmp_path_factory.mktemp("pdf") / "vaebook.pdf"
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bookpdf.py"), str(built_book), "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"bookpdf.py took {time.perf_counter() - start:.1f} s")
    assert run.returncode == 0, run.stdout + run.stderr
    reader = PdfReader(out)
    starts = [sheet for _, sheet in bookmarks(reader)] + [len(reader.pages)]
    pages = bookpdf.book_pages()
    sheets = dict(zip(pages, map(range, starts, starts[1:]), strict=False))
    return reader, sheets, sheet_texts(reader)


@pytest.mark.book
def test_pdf_has_every_page_in_toc_order_with_its_bookmark(book_pdf, built_book):
    reader, sheets, _ = book_pdf
    pages = bookpdf.book_pages()
    titles = [bookpdf.page_title((built_book / page).read_text(encoding="utf-8")) for page in pages]
    assert [title for title, _ in bookmarks(reader)] == titles
    assert all(len(sheets[page]) >= 1 for page in pages), "a bookmark points past its page"
    for page, chapter in pagecheck.toc_pages():
        if chapter:  # measured: 27 to 45 sheets each
            assert len(sheets[page]) >= 10, f"{page} printed on {len(sheets[page])} sheets"
    assert len(reader.pages) >= len(pages)


@pytest.mark.book
def test_theorem_titles_and_solutions_are_in_their_chapters_text(book_pdf, built_book):
    """Read from the chapter sources the book was built from (Sphinx copies them to _sources)."""
    _, sheets, texts = book_pdf
    checked = {"titles": 0, "solutions": 0}
    for page, chapter in pagecheck.toc_pages():
        source = (built_book / "_sources" / page.replace(".html", ".md")).read_text("utf-8")
        text = " ".join(texts[i] for i in sheets[page])
        for title in prf_titles(source):
            assert normalised(title) in text, f"{page}: theorem title {title!r} not printed"
            checked["titles"] += 1
        lines = solution_lines(source)
        assert lines or not chapter, f"{page}: no plain solution line to look for"
        for line in lines:
            assert normalised(line) in text, f"{page}: solution text {line!r} not printed"
            checked["solutions"] += 1
    linear = " ".join(texts[i] for i in sheets["book/linear_beta_vae.html"])
    assert "The optimal linear β-VAE" in linear
    chapters = sum(chapter for _, chapter in pagecheck.toc_pages())
    assert checked["titles"] >= 20 and checked["solutions"] >= chapters, checked


@pytest.mark.book
def test_math_was_typeset_before_printing(book_pdf):
    _, _, texts = book_pdf
    raw = pagecheck.RAW_MATH.findall(" ".join(texts))
    assert raw == [], f"TeX left for MathJax in the PDF: {sorted(set(raw))}"


@pytest.mark.book
def test_every_figure_is_printed_on_its_pages_sheets(book_pdf, built_book):
    reader, sheets, _ = book_pdf
    for page, chapter in pagecheck.toc_pages():
        html = (built_book / page).read_text(encoding="utf-8")
        figures = set(re.findall(r"<img[^>]*\ssrc=\"[^\"]*_images/([^\"]+)\"", html))
        printed = image_count(reader, sheets[page])
        assert printed >= len(figures), f"{page}: {len(figures)} figures, {printed} printed"
        assert printed >= 1 or not chapter, f"{page}: no image printed"


@pytest.mark.book
def test_links_point_to_the_published_book_not_the_local_server(book_pdf):
    reader, _, _ = book_pdf
    links = link_targets(reader)
    published = bookpdf.published_url()
    assert [link for link in links if "127.0.0.1" in link or "localhost" in link] == []
    assert sum(link.startswith(published) for link in links) >= 100  # measured: 729
