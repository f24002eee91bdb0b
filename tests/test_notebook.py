"""Tests of vaebook.notebook: glue hands values to myst-nb, or shows them without it."""

import sys

import IPython.display
import myst_nb
import numpy as np
import pytest
import torch

from vaebook.notebook import glue


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
