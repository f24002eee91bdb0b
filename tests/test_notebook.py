"""Tests of vaebook.notebook: glue hands values to myst-nb, or shows them without it;
interactive_figure shows a live widget and, for the HTML book, every frame of it pre-rendered."""

import base64
import io
import itertools
import json
import re
import subprocess
import sys

import IPython.display
import matplotlib.pyplot as plt
import myst_nb
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_book import ROOT, load_module

from vaebook import notebook
from vaebook.notebook import WIDGET_VIEW, figure_bundle, glue, interactive_figure


def test_glue_records_the_value_with_myst_nb(monkeypatch):
    calls = []
    monkeypatch.setattr(myst_nb, "glue", lambda *args, **kwargs: calls.append((args, kwargs)))
    glue("kl_value", 0.125, display=True)
    assert calls == [(("kl_value", 0.125), {"display": True})]


def test_glue_shows_the_value_when_myst_nb_is_missing(monkeypatch):
    shown = []
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # makes `import myst_nb` fail
    monkeypatch.setattr(IPython.display, "display", shown.append)
    glue("elbo_gap", 1.5)
    assert shown == ["elbo_gap = 1.5"]


@pytest.mark.parametrize("name", ["", "two words", "1st", "a-b", 3, None])
def test_glue_rejects_names_the_prose_cannot_refer_to(name):
    with pytest.raises(ValueError, match="name must be an identifier"):
        glue(name, 1.0)


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (np.float64(0.25), "0.25"),
        (np.float32(0.5), "0.5"),
        (np.int64(3), "3"),
        (torch.tensor(1.5), "1.5"),
        (torch.tensor([2.5]), "2.5"),
    ],
)
def test_glue_stores_numpy_and_tensor_scalars_as_python_numbers(monkeypatch, value, stored):
    """myst-nb formats ``{glue:text}`key:.2f``` from the stored text: it must read as a number."""
    calls = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, v, display: calls.append(v))
    glue("value", value)
    assert type(calls[0]) in (float, int)
    assert repr(calls[0]) == stored
    assert float(repr(calls[0])) == float(value)


# --- interactive_figure ----------------------------------------------------------------------

COLOURS = {"red": (200, 30, 30), "blue": (30, 30, 200)}


def coloured(level=2, colour="blue"):
    """A figure filled with one colour that encodes its arguments: ``level`` sets the green."""
    red, _, blue = COLOURS[colour]
    fig = plt.figure(figsize=(1.0, 0.8), facecolor=(red / 255, 8 * level / 255, blue / 255))
    return fig


def lines(beta=1.0):
    """A figure with a line, a circle and a title, as the chapters draw them."""
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.plot([0, 1], [0, beta], "C1")
    ax.add_patch(plt.Circle((0.5, 0.5), 0.2 * beta, fill=False))
    ax.set_title(f"β = {beta:g}")
    return fig


def static_data(html: str) -> dict:
    """The names, labels and base64 frames a static figure carries."""
    match = re.search(
        r'<script type="application/json" class="vaebook-figure-data">(.*?)</script>', html, re.S
    )
    return json.loads(match.group(1))


def decode(frame: str) -> np.ndarray:
    """A base64 PNG as an ``(h, w, 3)`` uint8 array."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(frame))).convert("RGB"))


@pytest.fixture
def shown(monkeypatch):
    """What ``IPython.display.display`` was called with (the live widget shows its PNGs there)."""
    calls = []
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: calls.append((a, k)))
    return calls


def test_the_bundle_holds_the_widget_and_its_static_figure(shown):
    bundle = figure_bundle(coloured, level=[0, 1, 2], colour=["red", "blue"])
    assert set(bundle) == {"text/plain", "text/html", WIDGET_VIEW}
    assert bundle[WIDGET_VIEW]["model_id"]
    assert bundle["text/plain"] == "interactive figure over level, colour (6 frames)"
    assert '<input type="range"' in bundle["text/html"] and "<select" in bundle["text/html"]


def test_interactive_figure_displays_one_raw_bundle(shown):
    interactive_figure(coloured, level=[1, 2])
    outputs = [args for args, kwargs in shown if kwargs.get("raw")]
    assert len(outputs) == 1
    assert set(outputs[0][0]) == {"text/plain", "text/html", WIDGET_VIEW}


def test_there_is_one_frame_per_combination_each_drawn_for_it(shown):
    data = static_data(
        figure_bundle(coloured, level=[0, 1, 2], colour=["red", "blue"])["text/html"]
    )
    assert data["names"] == ["level", "colour"]
    assert data["labels"] == [["0", "1", "2"], ["red", "blue"]]
    assert len(data["frames"]) == 3 * 2
    combinations = itertools.product([0, 1, 2], ["red", "blue"])  # the last control fastest
    for frame, (level, colour) in zip(data["frames"], combinations, strict=True):
        red, _, blue = COLOURS[colour]
        centre = decode(frame)[20, 30].astype(int)
        assert np.abs(centre - (red, 8 * level, blue)).max() <= 2, (level, colour, centre)


def test_each_frame_is_the_figure_draw_makes_for_its_value(shown):
    betas = [0.5, 1.0, 2.0]
    frames = static_data(figure_bundle(lines, beta=betas)["text/html"])["frames"]
    for beta in betas:
        fig = lines(beta)  # drawn here, rendered by matplotlib directly, at the frames' dpi
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=notebook.FRAME_DPI, bbox_inches="tight")
        plt.close(fig)
        mine = np.asarray(Image.open(buffer).convert("RGB")).astype(int)
        distances = [
            np.abs(decode(other).astype(int) - mine).mean()
            if decode(other).shape == mine.shape
            else np.inf
            for other in frames
        ]
        assert distances.index(min(distances)) == betas.index(beta)
        assert min(distances) < 1.0, distances  # only the palette of the PNG differs


def test_the_live_widget_offers_exactly_the_values_and_shows_the_same_frames(shown):
    import ipywidgets as widgets
    from ipywidgets.widgets.widget import _instances

    bundle = figure_bundle(coloured, level=[0, 1, 2], colour=["red", "blue"])
    frames = static_data(bundle["text/html"])["frames"]
    widget = _instances[bundle[WIDGET_VIEW]["model_id"]]
    level, colour = widget.kwargs_widgets
    assert isinstance(level, widgets.SelectionSlider)
    assert level.options == (("0", 0), ("1", 1), ("2", 2))
    assert isinstance(colour, widgets.Dropdown)
    assert colour.options == (("red", "red"), ("blue", "blue"))
    assert (level.value, colour.value) == (2, "blue")  # coloured's defaults
    shown.clear()
    level.value = 1
    (image,), _ = shown[-1]
    assert base64.b64encode(image.data).decode() == frames[1 * 2 + 1]


def test_controls_start_at_draws_defaults_or_the_first_value(shown):
    html = figure_bundle(coloured, level=[0, 1, 2, 3], colour=["red", "blue"])["text/html"]
    frames = static_data(html)["frames"]
    assert 'value="2" data-control="0"' in html
    assert '<option value="1" selected>blue</option>' in html
    assert f'src="data:image/png;base64,{frames[2 * 2 + 1]}"' in html
    html = figure_bundle(lambda level: coloured(level), level=[3, 1])["text/html"]
    assert 'value="0" data-control="0"' in html and ">3</output>" in html


def test_the_static_figure_is_self_contained(shown):
    html = figure_bundle(coloured, level=[1, 2], colour=["red", "blue"])["text/html"]
    assert 'src="http' not in html and "<link" not in html and "<script src" not in html
    assert all(
        src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', html)
    )
    assert "uuid" not in html


def test_ids_are_deterministic_and_distinct_on_one_page(shown):
    script = (
        "import matplotlib; matplotlib.use('Agg')\n"
        "import sys\n"
        "import matplotlib.pyplot as plt\n"
        "from vaebook.notebook import figure_bundle\n"
        "def coloured(level):\n"
        "    return plt.figure(figsize=(1, 1), facecolor=(0.5, level / 4, 0.5))\n"
        "first = figure_bundle(coloured, level=[0, 2])['text/html']\n"
        "again = figure_bundle(coloured, level=[0, 2])['text/html']\n"
        "other = figure_bundle(coloured, level=[1, 2])['text/html']\n"
        "import json; sys.stdout.write('RESULT' + json.dumps([first, again, other]))\n"
    )
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
            ).stdout.split("RESULT")[-1]
        )
        for _ in range(2)
    ]
    assert runs[0] == runs[1]  # the same chapter twice: the same page
    ids = [re.search(r'id="([^"]+)"', html).group(1) for html in runs[0]]
    assert len(set(ids)) == 3  # on one page, even the same figure twice: distinct ids
    assert all(f'getElementById("{i}")' in html for i, html in zip(ids, runs[0], strict=True))


def test_every_figure_draw_opens_is_closed(shown):
    def leaky(level=0):
        plt.figure()  # a stray figure: closed as well
        return coloured(level)

    before = plt.get_fignums()
    figure_bundle(leaky, level=[0, 1, 2])
    assert plt.get_fignums() == before


@pytest.mark.parametrize(
    ("draw", "controls", "error", "message"),
    [
        ("not callable", {"level": [0, 1]}, TypeError, "draw must be callable"),
        (coloured, {}, ValueError, "controls: give at least one"),
        (coloured, {"level": []}, ValueError, "level has no values"),
        (coloured, {"colour": "red"}, TypeError, "colour must be a sequence"),
        (coloured, {"level": 3}, TypeError, "level must be a sequence"),
        (coloured, {"level": [0, "red"]}, TypeError, "level must hold only finite numbers or"),
        (coloured, {"level": [0, float("nan")]}, TypeError, "level must hold only finite"),
        (coloured, {"level": [True, False]}, TypeError, "level must hold only finite"),
        (coloured, {"level": [1.0001, 1.0002]}, ValueError, "level has values that read the same"),
        (coloured, {"level": [1, 2], "size": [1, 2]}, TypeError, "draw cannot take the controls"),
        (coloured, {"level": [0, 2]}, None, None),
        (lines, {"beta": [0.5, 2.0]}, ValueError, "beta: draw's default 1.0 is not one of"),
        (lambda level: None, {"level": [0]}, TypeError, "draw must return the matplotlib Figure"),
    ],
)
def test_bad_input_is_named(shown, draw, controls, error, message):
    if error is None:  # the valid call the others break
        figure_bundle(draw, **controls)
        return
    with pytest.raises(error, match=re.escape(message)):
        figure_bundle(draw, **controls)


def test_too_many_frames_are_refused_naming_the_controls(shown):
    calls = []

    def counted(level=0, colour="red"):
        calls.append(level)
        return coloured(level, colour)

    levels = list(range(notebook.MAX_FRAMES // 2 + 1))
    message = f"controls level ({len(levels)} values) x colour (2 values) make {2 * len(levels)}"
    with pytest.raises(ValueError, match=re.escape(message)):
        figure_bundle(counted, level=levels, colour=["red", "blue"])
    assert calls == []  # refused before drawing anything
    figure_bundle(counted, level=levels[:-1], colour=["red", "blue"])  # 60 frames: allowed


def test_the_book_prefers_the_static_figure_to_the_widget_view():
    """_config.yml's override puts text/html before the widget view in the HTML builders, and
    the widget view still before the images (an output with only a widget keeps it)."""
    from myst_nb.core.render import get_mime_priority

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    overrides = config["sphinx"]["config"]["nb_mime_priority_overrides"]
    for builder in ("html", "dirhtml", "singlehtml"):
        order = get_mime_priority(builder, overrides)
        assert order.index("text/html") < order.index(WIDGET_VIEW) < order.index("image/png")


def test_the_page_shows_the_frame_of_the_chosen_values(shown, tmp_path):
    """In Chromium: every setting of the controls shows its own frame and value."""
    pagecheck = load_module(ROOT / "tools" / "pagecheck.py")
    html = figure_bundle(coloured, level=[0, 1, 2], colour=["red", "blue"])["text/html"]
    data = static_data(html)
    (tmp_path / "figure.html").write_text(f"<html><body>{html}</body></html>", encoding="utf-8")
    choose = """
    const controls = document.querySelectorAll(".vaebook-figure [data-control]");
    [arguments[0], arguments[1]].forEach((value, k) => {
      controls[k].value = String(value);
      controls[k].dispatchEvent(new Event("input"));
    });
    return [document.querySelector(".vaebook-figure img").getAttribute("src"),
            document.querySelector(".vaebook-figure output").textContent];
    """
    driver = pagecheck.start_browser()
    try:
        with pagecheck.serve(tmp_path) as base:
            driver.get(base + "figure.html")
            for i, j in itertools.product(range(3), range(2)):
                src, label = driver.execute_script(choose, i, j)
                assert src == "data:image/png;base64," + data["frames"][i * 2 + j], (i, j)
                assert label == data["labels"][0][i]
    finally:
        driver.quit()


def test_in_a_kernel_the_cell_shows_one_output_and_the_widget_draws():
    """Run by a Jupyter kernel with the inline backend: the frames leave no figure behind to
    be shown after the cell, and the live widget's first view holds the figure's PNG."""
    import nbclient
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import matplotlib.pyplot as plt\n"
            "from vaebook.notebook import interactive_figure\n"
            "def draw(beta=1.0, model='a'):\n"
            "    fig, ax = plt.subplots(figsize=(2, 2))\n"
            "    ax.plot([0, beta])\n"
            "    ax.set_title(model)\n"
            "    return fig\n"
            "interactive_figure(draw, beta=[0.5, 1.0, 2.0], model=['a', 'b'])"
        )
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbclient.NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(ROOT)}}).execute()
    (output,) = nb.cells[0].outputs
    assert set(output["data"]) == {"text/plain", "text/html", WIDGET_VIEW}
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    shown = [
        list(view.get("data", {}))
        for model in state.values()
        if model["model_name"] == "OutputModel"
        for view in model["state"].get("outputs", [])
    ]
    assert shown == [["image/png", "text/plain"]]
    sliders = [m["state"] for m in state.values() if m["model_name"] == "SelectionSliderModel"]
    assert [(s["_options_labels"], s["index"]) for s in sliders] == [(["0.5", "1", "2"], 1)]
