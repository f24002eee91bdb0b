"""Glue between the chapters and the rendered book.

Numbers in the book's prose come from computations: a chapter calls :func:`glue` and the prose
refers to the value with ``{glue:text}`name```. Inside the Jupyter Book build this is
``myst_nb.glue``; where myst-nb is not installed (e.g. a chapter opened in Colab) the value is
simply displayed, so the chapters run unchanged everywhere.

A figure with sliders is shown with :func:`interactive_figure`: a live ipywidgets control where
a kernel runs, and the same figure pre-rendered for every value of the controls in the book's
HTML pages, which have no kernel.
"""

from __future__ import annotations

import base64
import hashlib
import html
import inspect
import io
import itertools
import json
import math
import numbers
from collections import Counter
from collections.abc import Iterable

import numpy as np
import torch

__all__ = ["SolutionTimer", "figure_bundle", "glue", "interactive_figure"]

MAX_FRAMES = 60  # frames of one interactive figure: each costs a call of draw and page bytes
FRAME_DPI = 72  # resolution of the frames: a 4-inch-wide figure is about 290 pixels wide
FRAME_COLOURS = 128  # palette of the frames' PNGs: about a third of the bytes of full colour
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_SHOWN: Counter[str] = Counter()  # figures shown so far in this process, by content digest

# Shows the frame of the static figure __ID__ that its controls select. It looks everything up
# inside the figure's own element, so several figures on one page do not interfere.
FIGURE_SCRIPT = """(function () {
  var root = document.getElementById("__ID__");
  var data = JSON.parse(root.querySelector("script.vaebook-figure-data").textContent);
  var controls = root.querySelectorAll("[data-control]");
  var image = root.querySelector("img");
  function update() {
    var frame = 0;
    var shown = [];
    controls.forEach(function (control, k) {
      var index = Number(control.value);
      var label = data.labels[k][index];
      frame = frame * data.labels[k].length + index;
      shown.push(data.names[k] + " = " + label);
      var output = root.querySelector('output[data-control-label="' + k + '"]');
      if (output) output.textContent = label;
    });
    image.src = "data:image/png;base64," + data.frames[frame];
    image.alt = "figure at " + shown.join(", ");
  }
  controls.forEach(function (control) {
    control.addEventListener("input", update);
    control.addEventListener("change", update);  // a menu chosen by automation: only "change"
  });
  update();
})();"""


def glue(name: str, value, display: bool = False) -> None:
    """Record ``value`` under ``name`` for the book's prose (``myst_nb.glue``).

    Parameters
    ----------
    name : the key used in the prose as ``{glue:text}`name```.
    value : any object; numbers are formatted in the prose (e.g. ``{glue:text}`name:.3f```).
        A numpy scalar or a one-element tensor is stored as the Python number it holds: myst-nb
        formats the stored text, and numpy 2 writes ``np.float64(0.5)`` for its scalars.
    display : also show the value in the cell's output.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be an identifier-like string, got {name!r}")
    value = _plain(value)
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # outside the book's environment: show the value instead
        from IPython.display import display as show

        show(f"{name} = {value!r}")
        return
    myst_glue(name, value, display=display)


def interactive_figure(draw, /, **controls) -> None:
    """Show a figure with controls: a live widget in Jupyter, pre-rendered frames in the book.

    Displays one output whose mime bundle (:func:`figure_bundle`) holds two views of the
    figure:

    * ``application/vnd.jupyter.widget-view+json``: an ipywidgets ``interactive`` with a
      ``SelectionSlider`` per numeric control and a ``Dropdown`` per string control, each over
      exactly the given values, which calls ``draw`` in the kernel when a control moves; shown
      by JupyterLab, Binder, Colab and a local Jupyter;
    * ``text/html``: the figure rendered for every combination of the values, as PNG frames in
      the page, with an ``<input type="range">`` per numeric control and a ``<select>`` per
      string control that swap the frame without a kernel; shown by the book's HTML pages,
      which prefer it through ``nb_mime_priority_overrides`` in ``_config.yml``.

    Both views show the PNG that one function renders from ``draw``'s figure.

    Parameters
    ----------
    draw : a callable; ``draw(name=value, ...)`` draws one matplotlib figure for one value of
        each control and returns that ``Figure`` (without showing it: the figures it opens are
        closed after rendering). Each control starts at ``draw``'s default for that parameter
        when it has one (which must then be one of the control's values), else at its first
        value.
    controls : ``name=values``: for each parameter of ``draw`` a sequence of numbers or of
        strings, the grid of its slider or menu, in the order the controls appear. The product
        of their lengths, the number of frames, is at most ``MAX_FRAMES``.
    """
    from IPython.display import display

    display(figure_bundle(draw, **controls), raw=True)


def figure_bundle(draw, /, **controls) -> dict:
    """The mime bundle :func:`interactive_figure` displays, its arguments checked.

    Calls ``draw`` once per combination of the controls' values, in the order of
    ``itertools.product`` (the last control varies fastest), and once more for the live
    widget's first view. Returns a dict with the entries ``text/plain``, ``text/html`` (the
    static figure) and ``application/vnd.jupyter.widget-view+json`` (the live widget).
    """
    grid = check_controls(draw, controls)
    start = start_indices(draw, grid)
    frames = [
        render_frame(draw, dict(zip(grid, values, strict=True)))
        for values in itertools.product(*grid.values())
    ]
    widget = live_widget(draw, grid, start)
    return {
        "text/plain": f"interactive figure over {', '.join(grid)} ({len(frames)} frames)",
        "text/html": static_figure_html(frames, grid, start),
        WIDGET_VIEW: widget._repr_mimebundle_()[WIDGET_VIEW],
    }


def check_controls(draw, controls: dict) -> dict[str, tuple]:
    """``name -> values`` (a tuple of Python numbers or strings) of valid controls for ``draw``.

    Raises ``TypeError`` when ``draw`` is not callable or cannot take the controls, or when a
    control is not a sequence of numbers or of strings; ``ValueError`` when there is no control,
    a control has no values or two values that read the same, or the controls make more than
    ``MAX_FRAMES`` frames.
    """
    if not callable(draw):
        raise TypeError(f"draw must be callable, got {type(draw).__name__}")
    if not controls:
        raise ValueError("controls: give at least one, e.g. beta=[0.5, 1.0, 2.0]")
    grid = {name: control_values(name, values) for name, values in controls.items()}
    frames = math.prod(len(values) for values in grid.values())
    if frames > MAX_FRAMES:
        sizes = " x ".join(f"{name} ({len(values)} values)" for name, values in grid.items())
        raise ValueError(
            f"controls {sizes} make {frames} frames, more than MAX_FRAMES = {MAX_FRAMES}: "
            "give fewer values"
        )
    try:
        inspect.signature(draw).bind(**{name: values[0] for name, values in grid.items()})
    except TypeError as err:
        raise TypeError(f"draw cannot take the controls {', '.join(grid)}: {err}") from err
    return grid


def control_values(name: str, values) -> tuple:
    """The values of control ``name`` as a tuple of Python numbers or of strings, checked."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(
            f"{name} must be a sequence of numbers or of strings, got {type(values).__name__}"
        )
    values = tuple(_plain(value) for value in values)
    if not values:
        raise ValueError(f"{name} has no values: give the grid of its slider or menu")
    numeric = all(_is_number(value) for value in values)
    if not numeric and not all(isinstance(value, str) for value in values):
        raise TypeError(f"{name} must hold only finite numbers or only strings, got {values!r}")
    labels = [value_label(value) for value in values]
    if repeated := [label for label, count in Counter(labels).items() if count > 1]:
        raise ValueError(f"{name} has values that read the same, {repeated[0]!r}: drop one")
    return values


def value_label(value) -> str:
    """How a control shows ``value``: a string as is, a number to three significant digits."""
    if isinstance(value, str):
        return value
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def start_indices(draw, grid: dict[str, tuple]) -> dict[str, int]:
    """``name -> index`` of each control's first value: ``draw``'s default, else index 0."""
    parameters = inspect.signature(draw).parameters
    start = {}
    for name, values in grid.items():
        default = getattr(parameters.get(name), "default", inspect.Parameter.empty)
        if default is inspect.Parameter.empty:
            start[name] = 0
        elif _plain(default) in values:
            start[name] = values.index(_plain(default))
        else:
            raise ValueError(
                f"{name}: draw's default {default!r} is not one of its values "
                f"{[value_label(value) for value in values]}"
            )
    return start


def render_frame(draw, params: dict) -> bytes:
    """The PNG of ``draw(**params)``'s figure; every figure ``draw`` opened is closed after."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    before = set(plt.get_fignums())
    try:
        figure = draw(**params)
        if not isinstance(figure, Figure):
            raise TypeError(
                f"draw must return the matplotlib Figure it drew, got {type(figure).__name__} "
                f"for {params}"
            )
        return figure_png(figure)
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)


def figure_png(figure) -> bytes:
    """A small PNG of a matplotlib figure: ``FRAME_DPI``, tight, ``FRAME_COLOURS`` colours."""
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FRAME_DPI, bbox_inches="tight")
    image = Image.open(buffer).convert("RGB").quantize(colors=FRAME_COLOURS)
    small = io.BytesIO()
    image.save(small, format="png", optimize=True)
    return small.getvalue()


def live_widget(draw, grid: dict[str, tuple], start: dict[str, int]):
    """An ipywidgets ``interactive`` over the grid that shows :func:`render_frame`'s PNG."""
    import ipywidgets as widgets
    from IPython.display import Image, display

    def show(**params):
        display(Image(data=render_frame(draw, params), format="png"))

    controls = {}
    for name, values in grid.items():
        options = [(value_label(value), value) for value in values]
        kind = widgets.Dropdown if _is_menu(values) else widgets.SelectionSlider
        controls[name] = kind(options=options, value=values[start[name]], description=name)
    return widgets.interactive(show, **controls)


def static_figure_html(frames: list[bytes], grid: dict[str, tuple], start: dict[str, int]) -> str:
    """A self-contained HTML figure: the frames, a control per entry of ``grid``, a script.

    ``frames`` are PNGs in the order of ``itertools.product`` over ``grid``'s values, ``start``
    the index of each control's first value. The element's id is a digest of the content (and
    a count of the figures with that content shown before in this process): the same chapter
    gives the same page, and two figures on one page have two ids.
    """
    names = list(grid)
    labels = [[value_label(value) for value in values] for values in grid.values()]
    encoded = [base64.b64encode(frame).decode("ascii") for frame in frames]
    data = json.dumps({"names": names, "labels": labels, "frames": encoded})
    element_id = _element_id(data)
    first = 0
    for name, values in grid.items():
        first = first * len(values) + start[name]
    controls = "".join(
        _control_html(k, name, values, start[name]) for k, (name, values) in enumerate(grid.items())
    )
    script = FIGURE_SCRIPT.replace("__ID__", element_id)
    return (
        f'<div class="vaebook-figure" id="{element_id}">'
        f'<div class="vaebook-figure-controls">{controls}</div>'
        f'<img style="max-width: 100%" alt="figure" src="data:image/png;base64,{encoded[first]}">'
        '<script type="application/json" class="vaebook-figure-data">'
        + data.replace("</", "<\\/")
        + f"</script><script>{script}</script></div>"
    )


def _control_html(k: int, name: str, values: tuple, start: int) -> str:
    """The ``k``-th control of a static figure: a menu, or a range input showing its value."""
    title = html.escape(name)
    labels = [html.escape(value_label(value)) for value in values]
    if _is_menu(values):
        options = "".join(
            f'<option value="{i}"{" selected" if i == start else ""}>{label}</option>'
            for i, label in enumerate(labels)
        )
        widget = f'<select data-control="{k}" aria-label="{title}">{options}</select>'
    else:
        widget = (
            f'<input type="range" min="0" max="{len(values) - 1}" step="1" value="{start}" '
            f'data-control="{k}" aria-label="{title}"> '
            f'<output data-control-label="{k}">{labels[start]}</output>'
        )
    return f'<label style="display: block">{title} {widget}</label>'


def _element_id(data: str) -> str:
    """A deterministic id for a figure with content ``data``, distinct for each repeat."""
    digest = hashlib.sha256(data.encode("utf-8")).hexdigest()[:12]
    _SHOWN[digest] += 1
    repeat = _SHOWN[digest]
    return f"vaebook-figure-{digest}" + (f"-{repeat}" if repeat > 1 else "")


def _is_number(value) -> bool:
    """Whether ``value`` is a finite real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_menu(values: tuple) -> bool:
    """Whether a control's values are strings (a menu) rather than numbers (a slider)."""
    return isinstance(values[0], str)


def _plain(value):
    """A numpy scalar or one-element tensor as the Python number it holds; anything else as is."""
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return value.item()
    return value


# -- the run time of each exercise's solution, for the study guide ------------------------------

SOLUTION_MARK = "# Solution to "  # the first line of every code cell of an exercise's solution


class SolutionTimer:
    """Wall time of the exercise solutions a chapter runs, summed per exercise label.

    :meth:`start` (in a chapter's first cell) hooks IPython's ``pre_run_cell`` and
    ``post_run_cell`` events: every cell whose first line is ``# Solution to <label>`` adds its
    wall time to ``seconds[label]``. :meth:`glue_seconds` (in the chapter's last cell) glues
    ``<label with underscores>_seconds`` for each, which the study guide in the introduction
    shows. Outside IPython (a plain script) nothing is recorded.
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def start(self, shell=None) -> SolutionTimer:
        """Register with ``shell`` (default: the running IPython, if any); returns ``self``."""
        if shell is None:
            try:
                from IPython import get_ipython
            except ImportError:
                return self
            shell = get_ipython()
        if shell is not None:
            shell.events.register("pre_run_cell", self.before)
            shell.events.register("post_run_cell", self.after)
        return self

    def before(self, info) -> None:
        """Start the clock if the cell about to run is a solution's."""
        import time

        first = (getattr(info, "raw_cell", "") or "").lstrip().split("\n", 1)[0]
        label = first[len(SOLUTION_MARK) :].strip() if first.startswith(SOLUTION_MARK) else ""
        self._current = (label, time.perf_counter()) if label else None

    def after(self, result=None) -> None:
        """Stop the clock and add the cell's wall time to its label."""
        import time

        if self._current is not None:
            label, started = self._current
            self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started
            self._current = None

    def glue_seconds(self) -> None:
        """Glue ``<label>_seconds`` (dashes as underscores) for every solution timed."""
        for label, seconds in sorted(self.seconds.items()):
            glue(label.replace("-", "_") + "_seconds", seconds)
