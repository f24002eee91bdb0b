"""Glue between the chapters and the rendered book.

Numbers in the book's prose come from computations: a chapter calls :func:`glue` and the prose
refers to the value with ``{glue:text}`name```. Inside the Jupyter Book build this is
``myst_nb.glue``; where myst-nb is not installed (e.g. a chapter opened in Colab) the value is
simply displayed, so the chapters run unchanged everywhere.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["glue"]


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
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        value = value.item()
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # outside the book's environment: show the value instead
        from IPython.display import display as show

        show(f"{name} = {value!r}")
        return
    myst_glue(name, value, display=display)
