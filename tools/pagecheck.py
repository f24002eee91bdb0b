"""Check rendered book pages the way a reader meets them: in a real browser.

Headless Chromium (Debian's ``chromium`` and ``chromedriver``; nothing is downloaded) opens a
page served from ``_build/html`` on localhost, waits for MathJax, and :func:`check_page` lists
what a reader would see go wrong:

* math MathJax did not typeset (``$$``, ``\\(``, ``\\[`` or ``\\begin{`` left in the visible
  text outside code) or typeset with an error (an undefined macro shows in red);
* an image that did not load (natural width 0);
* a cell output holding a Python traceback or a warning;
* on a chapter page: no theorem/proof block, no exercise, or a solution dropdown that does
  not open when its title is clicked;
* an internal link whose file or ``#anchor`` does not exist;
* an interactive figure (``vaebook.notebook.interactive_figure``) whose controls do not work:
  each of its sliders and menus is moved as a reader would (arrow key, menu choice), and its
  image must change to one that loads, its value label must follow, and no other figure on the
  page may change. An ``interact`` widget output left on the page (or any widget whose state
  was not saved) is a problem too: without a kernel it shows nothing.

It also saves a full-page screenshot. ``tests/test_rendered_book.py`` runs it on every page
of the built book; ``tests/test_pagecheck.py`` shows each failure on a deliberately broken page.

Usage: ``python tools/pagecheck.py _build/html`` checks every page listed in ``_toc.yml``.
"""

from __future__ import annotations

import argparse
import base64
import functools
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import bookpages  # tools/bookpages.py: this folder is on the path as a script and in the tests

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--window-size=1280,1000",
)
RAW_MATH = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{")
BAD_OUTPUT = re.compile(r"Traceback \(most recent call last\)|\b\w+(?:Warning|Error): ")
PAGE_TIMEOUT = 60  # seconds for a page to load and MathJax to finish
# The markup of vaebook.notebook's static interactive figures: a figure, its controls (a range
# input or a select, numbered by data-control), the value label of a range input, its image.
FIGURE = "main .vaebook-figure"
FIGURE_CONTROL = "[data-control]"
FIGURE_LABEL = 'output[data-control-label="{k}"]'
WIDGET_VIEW = 'script[type="application/vnd.jupyter.widget-view+json"]'

# Runs in the page: waits for MathJax, then reads off everything the checks need.
READ_PAGE = """
const done = arguments[arguments.length - 1];
const startup = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
// A widget view that is an interact, or has no saved state, shows nothing without a kernel.
// Others (tqdm's progress bars) are left alone: ipywidgets' script draws them from their state.
const saved = document.querySelector('script[type="application/vnd.jupyter.widget-state+json"]');
const models = saved ? (JSON.parse(saved.textContent).state || {}) : {};
const needsKernel = (view) => {
  try {
    const model = models[JSON.parse(view.textContent).model_id];
    return !model || (model.state._dom_classes || []).includes("widget-interact");
  } catch (error) {
    return true;
  }
};
(startup || Promise.resolve()).then(() => {
  const main = document.querySelector("main") || document.body;
  const skip = "pre, code, script, style, mjx-container, .cell_input";
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  const prose = [];
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.parentElement.closest(skip)) prose.push(node.textContent);
  }
  const mathErrors = Array.from(
    main.querySelectorAll("mjx-merror, mjx-container [style*='color: red']")
  ).map((e) => e.textContent || e.getAttribute("data-mjx-error") || "?");
  done({
    prose: prose.join(" "),
    mathjax: Boolean(window.MathJax && window.MathJax.startup),
    typeset: main.querySelectorAll("mjx-container").length,
    mathErrors: mathErrors,
    images: Array.from(main.querySelectorAll("img")).map((i) => ({
      src: i.getAttribute("src"), loaded: i.complete && i.naturalWidth > 0,
    })),
    outputs: Array.from(main.querySelectorAll(".cell_output")).map((e) => e.textContent),
    stderr: main.querySelectorAll(".output.stderr, .output.traceback").length,
    proofs: main.querySelectorAll(".proof").length,
    exercises: main.querySelectorAll(".exercise").length,
    dropdowns: main.querySelectorAll(".solution.dropdown").length,
    links: Array.from(document.querySelectorAll("a[href]")).map((a) => a.href),
    widgetViews: Array.from(main.querySelectorAll(arguments[0])).filter(needsKernel).length,
  });
});
"""

# Clicks the title of the first solution dropdown; reports its body's visibility before/after.
OPEN_SOLUTION = """
const done = arguments[arguments.length - 1];
const box = document.querySelector(".solution.dropdown");
const body = box.querySelector("section, p:not(.admonition-title)");
const shown = () => body.offsetParent !== null && body.getBoundingClientRect().height > 0;
const before = shown();
(box.querySelector("button.toggle-button") || box.querySelector(".admonition-title")).click();
setTimeout(() => done({before: before, after: shown()}), 500);
"""

# The src of every interactive figure's image, and whether the one of figure arguments[0] loads.
READ_FIGURES = """
const done = arguments[arguments.length - 1];
const figures = Array.from(document.querySelectorAll(arguments[1]));
const images = figures.map((f) => f.querySelector("img"));
const image = images[arguments[0]];
const sources = images.map((i) => i && i.getAttribute("src"));
if (!image) { done({sources: sources, loads: false}); return; }
image.decode().then(() => done({sources: sources, loads: image.naturalWidth > 0}),
                    () => done({sources: sources, loads: false}));
"""


def start_browser():
    """Headless Debian Chromium driven through Debian's chromedriver (selenium)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            raise FileNotFoundError(
                f"{path} is missing: install Debian's chromium and chromium-driver "
                "(`make browser` does it with apt-get)"
            )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    driver.set_script_timeout(PAGE_TIMEOUT)
    return driver


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on a free localhost port; yields its base URL (ending in ``/``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"directory {directory} does not exist")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def check_page(driver, base: str, root: Path, page: str, *, chapter: bool, screenshot=None):
    """The problems a reader would meet on ``page`` (e.g. ``"book/primer.html"``).

    Parameters
    ----------
    driver : a selenium driver from :func:`start_browser`.
    base : the URL :func:`serve` gives for ``root``.
    root : the directory of the built HTML (``_build/html``), for resolving links.
    page : the page's path under ``root``.
    chapter : also require theorem/proof and exercise blocks and an opening solution dropdown.
    screenshot : where to save a full-page PNG, or None.

    Returns
    -------
    list of str, one line per problem; empty when the page is fine.
    """
    if not (Path(root) / page).is_file():
        raise FileNotFoundError(f"page {page} is not in {root}")
    driver.get(base + page)
    state = driver.execute_async_script(READ_PAGE, WIDGET_VIEW)
    problems = []
    if raw := sorted(set(RAW_MATH.findall(state["prose"]))):
        problems.append(f"math not typeset: {' '.join(raw)} left in the text")
    if state["mathErrors"]:
        problems.append(f"math typeset with errors: {state['mathErrors'][:3]}")
    if not state["mathjax"] and state["typeset"] == 0 and chapter:
        problems.append("MathJax did not load")
    for image in state["images"]:
        if not image["loaded"]:
            problems.append(f"image did not load: {image['src']}")
    if state["stderr"]:
        problems.append(f"{state['stderr']} cell output(s) on stderr or with a traceback")
    for output in state["outputs"]:
        if match := BAD_OUTPUT.search(output):
            problems.append(f"cell output shows {match.group(0).strip()!r}")
    if state["widgetViews"]:
        problems.append(
            f"{state['widgetViews']} interactive widget output(s) with no static figure: "
            "without a kernel the page shows nothing there"
        )
    if chapter:
        problems += chapter_problems(driver, state)
    problems += figure_problems(driver)
    problems += [f"broken link: {link}" for link in broken_links(state["links"], base, root)]
    if screenshot is not None:
        save_screenshot(driver, Path(screenshot))
    return problems


def chapter_problems(driver, state: dict) -> list[str]:
    """What a chapter page must have: proofs, exercises, and a solution that opens."""
    problems = []
    if state["proofs"] == 0:
        problems.append("no theorem/proof block")
    if state["exercises"] == 0:
        problems.append("no exercise block")
    if state["dropdowns"] == 0:
        problems.append("no solution dropdown")
        return problems
    toggle = driver.execute_async_script(OPEN_SOLUTION)
    if toggle["before"]:
        problems.append("solution dropdown is open before it is clicked")
    if not toggle["after"]:
        problems.append("solution dropdown does not open when clicked")
    return problems


def figure_problems(driver) -> list[str]:
    """Each control of each interactive figure moved once: what did not follow."""
    from selenium.webdriver.common.by import By

    problems = []
    figures = driver.find_elements(By.CSS_SELECTOR, FIGURE)
    for index, figure in enumerate(figures):
        controls = figure.find_elements(By.CSS_SELECTOR, FIGURE_CONTROL)
        if not controls:
            problems.append(f"interactive figure {index + 1} has no control")
        for k, control in enumerate(controls):
            problems += control_problems(driver, index, figure, k, control)
    return problems


def control_problems(driver, index: int, figure, k: int, control) -> list[str]:
    """Moves control ``k`` of figure ``index`` (0-based); the problems it shows."""
    from selenium.common.exceptions import WebDriverException

    name = f"interactive figure {index + 1}, control {control.get_attribute('aria-label')!r}"
    before = driver.execute_async_script(READ_FIGURES, index, FIGURE)
    label = control_label(figure, k, control)
    try:
        move_control(control)
    except WebDriverException as err:
        return [f"{name} cannot be moved: {err.msg}"]
    after = driver.execute_async_script(READ_FIGURES, index, FIGURE)
    problems = []
    if after["sources"][index] == before["sources"][index]:
        problems.append(f"{name}: moving it does not change the image")
    elif not after["loads"]:
        problems.append(f"{name}: moving it shows an image that does not load")
    if control_label(figure, k, control) == label:
        problems.append(f"{name}: moving it does not update its value label")
    for other, (old, new) in enumerate(zip(before["sources"], after["sources"], strict=True)):
        if other != index and old != new:
            problems.append(f"{name}: moving it changes interactive figure {other + 1} too")
    return problems


def control_label(figure, k: int, control) -> str:
    """The value a control shows: its choice for a menu, its value label for a slider."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    if control.tag_name == "select":
        return Select(control).first_selected_option.text
    labels = figure.find_elements(By.CSS_SELECTOR, FIGURE_LABEL.format(k=k))
    return labels[0].text if labels else ""


def move_control(control) -> None:
    """One step as a reader would: the next menu entry, or an arrow key on a range input."""
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select

    if control.tag_name == "select":
        menu = Select(control)
        chosen = [option.get_attribute("index") for option in menu.all_selected_options]
        menu.select_by_index((int(chosen[0]) + 1) % len(menu.options))
    else:
        at_end = control.get_attribute("value") == control.get_attribute("max")
        control.send_keys(Keys.ARROW_LEFT if at_end else Keys.ARROW_RIGHT)


@functools.lru_cache(maxsize=256)
def _ids(path: Path, mtime: float) -> frozenset[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return frozenset(re.findall(r"""\bid=["']([^"']+)["']""", text))


def broken_links(links: list[str], base: str, root: Path) -> list[str]:
    """The links under ``base`` whose file under ``root`` or whose ``#anchor`` is missing."""
    broken = []
    for link in sorted(set(links)):
        if not link.startswith(base):
            continue  # another site: not checked offline
        parts = urlsplit(link)
        relative = unquote(parts.path)[len(urlsplit(base).path) :]
        target = Path(root) / relative
        if target.is_dir() or relative == "":
            target = target / "index.html"
        if not target.is_file():
            broken.append(link)
        elif parts.fragment and target.suffix == ".html":
            if unquote(parts.fragment) not in _ids(target, target.stat().st_mtime):
                broken.append(link)
    return broken


def save_screenshot(driver, path: Path) -> None:
    """A PNG of the whole page, not only the window (Chrome DevTools protocol)."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def toc_pages(root: Path = ROOT) -> list[tuple[str, bool]]:
    """``(page.html, is_chapter)`` for every entry of ``_toc.yml``.

    A chapter is a page of the "Foundations" and "The papers" parts: those teach with
    theorems, proofs and exercises.
    """
    return [
        (f"{file}.html", part in bookpages.TEACHING_PARTS)
        for file, part in bookpages.toc_entries(root)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="the built book, e.g. _build/html")
    parser.add_argument("--screenshots", type=Path, default=None, help="folder for PNGs")
    args = parser.parse_args(argv)
    failed = 0
    driver = start_browser()
    try:
        with serve(args.html) as base:
            for page, chapter in toc_pages():
                shot = (
                    args.screenshots / page.replace("/", "_").replace(".html", ".png")
                    if args.screenshots
                    else None
                )
                problems = check_page(
                    driver, base, args.html, page, chapter=chapter, screenshot=shot
                )
                print(f"{page}: {'ok' if not problems else '; '.join(problems)}")
                failed += bool(problems)
    finally:
        driver.quit()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
