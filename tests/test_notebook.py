"""Tests of vaebook.notebook: glue hands values to myst-nb, or shows them without it."""

import sys

import IPython.display
import myst_nb
import pytest

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
