"""The browser checker of tools/pagecheck.py, on small pages built to fail in one way each.

The pages mimic the book's HTML: MathJax is configured as Sphinx does it (only ``.math``
elements are processed, so math that MyST failed to parse stays raw, as in the book), and the
solution dropdown is driven by the theme's own togglebutton script. A healthy page (typeset
math, a loaded image, a proof, an exercise, a dropdown, a working internal link) must pass;
each broken copy must fail with the problem it was broken for, and only that one. The same
holds for interactive figures (``vaebook.notebook.interactive_figure``'s static HTML): two
real ones pass, and each copy with a planted fault in its script or markup fails.
"""

from __future__ import annotations

import shutil
import sysconfig

import matplotlib.pyplot as plt
import pytest
from test_book import ROOT, load_module

from vaebook import notebook

pagecheck = load_module(ROOT / "tools" / "pagecheck.py")
SITE_PACKAGES = sysconfig.get_paths()["purelib"]
MATHJAX = f"{SITE_PACKAGES}/sphinx-mathjax-offline/static/mathjax"
TOGGLE = f"{SITE_PACKAGES}/sphinx_togglebutton/_static"

HEAD = """<!DOCTYPE html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="togglebutton.css">
<script>window.MathJax = {tex: {macros: {KL: "\\\\mathrm{KL}"}},
  options: {processHtmlClass: "math"}};</script>
<script defer src="mathjax/tex-chtml.js"></script>
<script>let toggleHintShow = "Show"; let toggleHintHide = "Hide";
let toggleOpenOnPrint = "true";</script>
<script>var togglebuttonSelector = '.toggle, .admonition.dropdown';</script>
<script src="togglebutton.js"></script>
</head><body><main><section class="tex2jax_ignore mathjax_ignore">
"""
BODY = """<p>The divergence <span class="math">\\(\\KL(q \\Vert p) \\ge 0\\)</span> holds, see
<a href="other.html#target">there</a>.</p>
<div class="proof theorem admonition"><p class="admonition-title">Theorem 1</p><p>Body.</p></div>
<div class="exercise admonition"><p class="admonition-title">Exercise 1</p><p>Try.</p></div>
<div class="solution dropdown admonition"><p class="admonition-title">Solution</p>
<section><p>The answer is 42.</p></section></div>
<img src="figure.png" alt="a figure">
<div class="cell_output docutils container">
<div class="output stream"><pre>KL = 0.25</pre></div></div>
"""
TAIL = "</section></main></body></html>\n"

BREAKAGES = {
    "traceback": (
        "<pre>KL = 0.25</pre>",
        "<pre>Traceback (most recent call last):\nValueError: beta must be positive</pre>",
        "cell output shows",
    ),
    "warning": ("<pre>KL = 0.25</pre>", "<pre>x.py:3: UserWarning: careful</pre>", "UserWarning"),
    "raw math": ("holds, see", "holds, $$a + b$$ see", "math not typeset"),
    "undefined macro": ("\\KL(q", "\\KLD(q", "math typeset with errors"),
    "broken image": ('src="figure.png"', 'src="missing.png"', "image did not load"),
    "broken link": ('href="other.html#target"', 'href="gone.html"', "broken link"),
    "broken anchor": ('href="other.html#target"', 'href="other.html#nowhere"', "broken link"),
    "no proof": ('class="proof theorem admonition"', 'class="admonition"', "no theorem/proof"),
    "open solution": (
        'class="solution dropdown admonition"',
        'class="solution admonition"',
        "no solution dropdown",
    ),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A served folder with MathJax, the togglebutton script, an image and a link target."""
    root = tmp_path_factory.mktemp("site")
    shutil.copytree(MATHJAX, root / "mathjax")
    for name in ("togglebutton.js", "togglebutton.css"):
        shutil.copy(f"{TOGGLE}/{name}", root / name)
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    fig.savefig(root / "figure.png")
    plt.close(fig)
    (root / "other.html").write_text('<html><body><p id="target">here</p></body></html>')
    with pagecheck.serve(root) as base:
        yield root, base


@pytest.fixture(scope="module")
def driver():
    browser = pagecheck.start_browser()
    yield browser
    browser.quit()


def write_page(root, name, body):
    (root / name).write_text(HEAD + body + TAIL, encoding="utf-8")
    return name


def test_a_healthy_page_passes_and_is_screenshotted(site, driver, tmp_path):
    root, base = site
    page = write_page(root, "good.html", BODY)
    shot = tmp_path / "shots" / "good.png"
    assert pagecheck.check_page(driver, base, root, page, chapter=True, screenshot=shot) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_page_fails_with_its_problem(site, driver, breakage):
    root, base = site
    old, new, expected = BREAKAGES[breakage]
    assert old in BODY
    page = write_page(root, f"{breakage.replace(' ', '_')}.html", BODY.replace(old, new))
    problems = pagecheck.check_page(driver, base, root, page, chapter=True)
    assert len(problems) == 1, problems
    assert expected in problems[0]


def test_a_solution_that_does_not_open_fails(site, driver):
    root, base = site
    # the dropdown class is there, but no script collapses it: it is open before any click
    html = (HEAD + BODY + TAIL).replace('<script src="togglebutton.js"></script>', "")
    (root / "no_toggle.html").write_text(html, encoding="utf-8")
    problems = pagecheck.check_page(driver, base, root, "no_toggle.html", chapter=True)
    assert problems == ["solution dropdown is open before it is clicked"]


def test_mathjax_missing_leaves_raw_math(site, driver):
    root, base = site
    html = (HEAD + BODY + TAIL).replace("mathjax/tex-chtml.js", "mathjax/absent.js")
    (root / "no_mathjax.html").write_text(html, encoding="utf-8")
    problems = pagecheck.check_page(driver, base, root, "no_mathjax.html", chapter=True)
    assert any("math not typeset" in p for p in problems), problems


def test_non_chapter_pages_need_no_exercises(site, driver):
    root, base = site
    page = write_page(
        root, "appendix.html", '<p>Only prose, <span class="math">\\(x^2\\)</span>.</p>'
    )
    assert pagecheck.check_page(driver, base, root, page, chapter=False) == []
    assert "no exercise block" in pagecheck.check_page(driver, base, root, page, chapter=True)


def test_a_missing_page_is_named(site, driver):
    root, base = site
    with pytest.raises(FileNotFoundError, match=r"page nowhere\.html"):
        pagecheck.check_page(driver, base, root, "nowhere.html", chapter=False)


def test_serve_names_a_missing_directory(tmp_path):
    with pytest.raises(NotADirectoryError, match="directory"):
        with pagecheck.serve(tmp_path / "absent"):
            pass


def test_toc_pages_marks_the_teaching_chapters():
    pages = dict(pagecheck.toc_pages())
    assert pages["book/intro.html"] is False and pages["book/api.html"] is False
    assert pages["book/primer.html"] is True and pages["book/polarised.html"] is True


def small_figure(value: float, colour: str = "C0"):
    """A small figure that differs with ``value`` (a line's slope and the title)."""
    fig, ax = plt.subplots(figsize=(1.5, 1.2))
    ax.plot([0, 1], [0, value], color=colour)
    ax.set_title(f"{value:g}", fontsize=6)
    return fig


@pytest.fixture(scope="module")
def figures():
    """The static HTML of two real interactive figures: one slider; a slider and a menu."""
    first = notebook.figure_bundle(small_figure, value=[1.0, 2.0, 3.0])["text/html"]
    second = notebook.figure_bundle(
        lambda beta, colour: small_figure(beta, colour), beta=[-1, 0, 1], colour=["C1", "C2"]
    )["text/html"]
    return first, second


# Each breaks the second figure of the page (or adds a widget view) in one way.
FIGURE_BREAKAGES = {
    "wrong id": (
        'document.getElementById("vaebook',
        'document.getElementById("wrong',
        "interactive figure 2, control 'beta': moving it does not change the image",
    ),
    "label not updated": (
        "if (output) output.textContent = label;",
        "",
        "interactive figure 2, control 'beta': moving it does not update its value label",
    ),
    "frame does not load": (
        '"data:image/png;base64," + data.frames[frame]',
        '"data:image/png;base64,AAAA" + data.frames[frame]',
        "moving it shows an image that does not load",
    ),
    "image looked up on the page": (
        'root.querySelector("img")',
        'document.querySelector(".vaebook-figure img")',
        "interactive figure 2, control 'beta': moving it changes interactive figure 1 too",
    ),
    "no control": ('data-control="', 'data-other="', "interactive figure 2 has no control"),
    "hidden control": (
        '<input type="range"',
        '<input style="display: none" type="range"',
        "interactive figure 2, control 'beta' cannot be moved",
    ),
}


def test_interactive_figures_pass_when_their_controls_work(site, driver, figures):
    root, base = site
    page = write_page(root, "figures.html", BODY + "".join(figures))
    assert pagecheck.check_page(driver, base, root, page, chapter=True) == []


@pytest.mark.parametrize("breakage", sorted(FIGURE_BREAKAGES))
def test_a_broken_interactive_figure_fails(site, driver, figures, breakage):
    root, base = site
    old, new, expected = FIGURE_BREAKAGES[breakage]
    first, second = figures
    assert old in second
    page = write_page(
        root, f"figure_{breakage.replace(' ', '_')}.html", BODY + first + second.replace(old, new)
    )
    problems = pagecheck.check_page(driver, base, root, page, chapter=True)
    assert any(expected in problem for problem in problems), problems
    assert not any(problem.startswith("interactive figure 1") for problem in problems), problems


WIDGET_STATE = """<script type="application/vnd.jupyter.widget-state+json">{"version_major": 2,
"version_minor": 0, "state": {
"interact": {"model_name": "VBoxModel", "state": {"_dom_classes": ["widget-interact"]}},
"progress": {"model_name": "HBoxModel", "state": {"_dom_classes": []}}}}</script>"""


def widget_view(model_id: str) -> str:
    """A widget output as myst-nb writes it when it chooses the widget view."""
    return (
        '<div class="cell_output"><script type="application/vnd.jupyter.widget-view+json">'
        f'{{"version_major": 2, "version_minor": 0, "model_id": "{model_id}"}}</script></div>'
    )


@pytest.mark.parametrize(
    ("views", "count"), [(["progress"], 0), (["interact", "progress"], 1), (["gone"], 1)]
)
def test_an_interact_output_without_its_static_figure_fails(site, driver, views, count):
    """An interact (or a view whose state was not saved) shows nothing; a progress bar passes."""
    root, base = site
    page = write_page(
        root,
        f"widget_{'_'.join(views)}.html",
        WIDGET_STATE + BODY + "".join(map(widget_view, views)),
    )
    problems = pagecheck.check_page(driver, base, root, page, chapter=True)
    expected = "interactive widget output(s) with no static figure: without a kernel the page"
    assert problems == ([f"{count} {expected} shows nothing there"] if count else [])
