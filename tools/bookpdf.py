"""Print the built book to one PDF: every page of ``_toc.yml``, in reading order.

Headless Chromium (Debian's, through ``tools/pagecheck.py``'s :func:`~pagecheck.start_browser`
and :func:`~pagecheck.serve`) opens each page of ``_build/html``, waits for MathJax to finish
typesetting and for its fonts, opens every solution dropdown and ``<details>`` block, and
prints the page with the Chrome DevTools command ``Page.printToPDF``. (That command fires
``beforeprint``, on which the theme's togglebutton script opens the dropdowns too, but only
while its ``toggleOpenOnPrint`` setting is on; here they are opened whatever the setting, and a
dropdown still folded stops the build.) The theme's print stylesheet already drops what is useless
on paper (sidebars, header buttons, previous/next links); code lines are wrapped instead of
cut. pypdf merges the printed pages into one PDF with one outline entry (bookmark) per page,
titled with the page's title.

Nothing is downloaded: every request that does not go to the local server is blocked (the HTML
asks a CDN for the widget manager; the widgets print as the page shows them offline).
Links between pages point to the published book (``html.baseurl`` of ``_config.yml``).

Usage: ``python tools/bookpdf.py [_build/html] [-o _build/pdf/vaebook.pdf]``
(``make pdf`` builds the book first when ``_build/html/index.html`` is missing).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import re
import sys
from pathlib import Path

import pagecheck  # tools/pagecheck.py: this folder is on the path as a script and in the tests

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
OUT = ROOT / "_build" / "pdf" / "vaebook.pdf"
BUILD_HINT = "run `make book` first"

# Requests Chromium may make: the local server only (the first matching pattern decides).
LOCAL_ONLY = [
    {"urlPattern": "http://127.0.0.1:*/*", "block": False},
    {"urlPattern": "*://*:*/*", "block": True},
]
# Page.printToPDF: A4 with 1.5 cm margins, backgrounds (code blocks, admonitions) kept.
PRINT_OPTIONS = {
    "paperWidth": 8.27,
    "paperHeight": 11.69,
    "marginTop": 0.6,
    "marginBottom": 0.6,
    "marginLeft": 0.6,
    "marginRight": 0.6,
    "printBackground": True,
}
# Added to every page before printing: long code lines wrap instead of being cut at the margin,
# and a cell's input or output moves to the next sheet whole instead of leaving an empty frame.
PRINT_CSS = """@media print {
  pre { white-space: pre-wrap !important; word-break: break-word; }
  div.cell_input, div.cell_output { break-inside: avoid; }
}"""

# Runs in the page: waits for MathJax and its fonts, opens what is folded, points the links
# at the published book, adds PRINT_CSS; reports how many dropdowns are still folded.
PREPARE_PAGE = """
const [local, published, css, done] = arguments;
const startup = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
(startup || Promise.resolve()).then(() => document.fonts.ready).then(() => {
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  document.querySelectorAll(".admonition.toggle-hidden button.toggle-button")
    .forEach((button) => button.click());
  document.querySelectorAll("a[href]").forEach((a) => {
    if (a.href.startsWith(local)) a.href = published + a.href.slice(local.length);
  });
  const style = document.createElement("style");
  style.textContent = css;
  document.head.append(style);
  done(document.querySelectorAll(".toggle-hidden").length);
});
"""


def book_pages(root: Path = ROOT) -> list[str]:
    """The HTML page of every ``_toc.yml`` entry in reading order, e.g. ``"book/primer.html"``."""
    return [page for page, _ in pagecheck.toc_pages(Path(root))]


def missing_pages(html_dir: Path, pages: list[str]) -> list[str]:
    """The ``pages`` (paths under ``html_dir``) that are not files there."""
    return [page for page in pages if not (Path(html_dir) / page).is_file()]


def check_built(html_dir: Path, pages: list[str]) -> None:
    """Raise ``FileNotFoundError`` unless ``html_dir`` holds every one of ``pages``."""
    html_dir = Path(html_dir)
    if not html_dir.is_dir():
        raise FileNotFoundError(f"html_dir {html_dir} does not exist: {BUILD_HINT}")
    if missing := missing_pages(html_dir, pages):
        raise FileNotFoundError(
            f"html_dir {html_dir} lacks {', '.join(missing)} from _toc.yml: {BUILD_HINT}"
        )


def page_title(page_html: str) -> str:
    """The title of a built page: its ``<title>`` without the book's title after `` — ``."""
    match = re.search(r"<title>(.*?)</title>", page_html, flags=re.DOTALL)
    if match is None or not match.group(1).strip():
        raise ValueError("page_html has no <title>: is it a page of the built book?")
    title = " ".join(html.unescape(match.group(1)).split())
    return title.rpartition(" \N{EM DASH} ")[0] or title


def published_url(root: Path = ROOT) -> str:
    """Where the book is published (``html.baseurl`` of ``_config.yml``), ending in ``/``."""
    import yaml

    config = yaml.safe_load((Path(root) / "_config.yml").read_text(encoding="utf-8"))
    url = (config.get("html") or {}).get("baseurl") or ""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"_config.yml of root {root} has no html.baseurl to point links at")
    return url.rstrip("/") + "/"


def start_offline_browser():
    """:func:`pagecheck.start_browser`, with every request off the local server blocked."""
    driver = pagecheck.start_browser()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urlPatterns": LOCAL_ONLY})
    return driver


def print_page(driver, base: str, page: str, published: str) -> bytes:
    """The PDF of ``page`` (a path under the served ``base`` URL), as Chromium prints it.

    Parameters
    ----------
    driver : a selenium driver from :func:`start_offline_browser`.
    base : the URL :func:`pagecheck.serve` gives for the built book.
    page : the page's path under ``base``, e.g. ``"book/primer.html"``.
    published : the URL that links into the book are rewritten to (:func:`published_url`).
    """
    driver.get(base + page)
    folded = driver.execute_async_script(PREPARE_PAGE, base, published, PRINT_CSS)
    if folded:
        raise RuntimeError(f"page {page}: {folded} dropdown(s) did not open for printing")
    return base64.b64decode(driver.execute_cdp_cmd("Page.printToPDF", PRINT_OPTIONS)["data"])


def merge(parts: list[tuple[str, bytes]], out: Path) -> Path:
    """Write the PDFs of ``parts`` one after the other into ``out``, one bookmark each.

    Parameters
    ----------
    parts : ``(title, pdf bytes)`` per page in reading order; ``title`` names its bookmark,
        which points at the first sheet of that page.
    out : the PDF to write (its folder is created).

    Returns ``out``.
    """
    from pypdf import PdfWriter

    if not parts:
        raise ValueError("parts is empty: there is no page to merge")
    for index, (title, data) in enumerate(parts):
        if not isinstance(title, str) or not title.strip():
            raise ValueError(f"parts[{index}] has no title for its bookmark")
        if not isinstance(data, bytes) or not data.startswith(b"%PDF-"):
            raise ValueError(f"parts[{index}] ({title}) is not a PDF")
    writer = PdfWriter()
    for title, data in parts:
        writer.append(io.BytesIO(data), outline_item=title, import_outline=False)
    writer.page_mode = "/UseOutlines"
    writer.add_metadata({"/Title": parts[0][0]})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as stream:
        writer.write(stream)
    return out


def build_pdf(html_dir: Path = HTML, out: Path = OUT, root: Path = ROOT) -> Path:
    """Print every ``_toc.yml`` page of the built book ``html_dir`` and merge them into ``out``."""
    html_dir = Path(html_dir)
    pages = book_pages(root)
    check_built(html_dir, pages)
    published = published_url(root)
    parts = []
    driver = start_offline_browser()
    try:
        with pagecheck.serve(html_dir) as base:
            for page in pages:
                title = page_title((html_dir / page).read_text(encoding="utf-8"))
                parts.append((title, print_page(driver, base, page, published)))
    finally:
        driver.quit()
    return merge(parts, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, nargs="?", default=HTML, help="the built book")
    parser.add_argument("-o", "--out", type=Path, default=OUT, help="the PDF to write")
    args = parser.parse_args(argv)
    try:
        out = build_pdf(args.html, args.out)
    except FileNotFoundError as error:
        print(f"bookpdf: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
