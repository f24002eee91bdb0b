"""``vaebook.notebook.SolutionTimer``: the run time of each exercise's solution, per label."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell

from vaebook import notebook
from vaebook.notebook import SolutionTimer


@pytest.fixture
def shell():
    yield InteractiveShell.instance()
    InteractiveShell.clear_instance()


def test_timer_adds_each_solution_cells_wall_time_to_its_label(shell):
    timer = SolutionTimer().start(shell)
    shell.run_cell("# Solution to ex-a\nimport time\ntime.sleep(0.05)")
    shell.run_cell("x = 1  # main text: not timed")
    shell.run_cell("   \n# Solution to ex-a\ntime.sleep(0.02)")
    shell.run_cell("# Solution to ex-b-c\npass")
    shell.run_cell("# A comment that is not a solution mark\ntime.sleep(0.01)")
    assert set(timer.seconds) == {"ex-a", "ex-b-c"}
    assert 0.07 <= timer.seconds["ex-a"] < 1.0
    assert 0 <= timer.seconds["ex-b-c"] < 0.05


def test_a_failing_solution_cell_is_still_timed(shell):
    timer = SolutionTimer().start(shell)
    shell.run_cell("# Solution to ex-a\nraise ValueError('reader error')")
    assert "ex-a" in timer.seconds


def test_outside_ipython_nothing_is_recorded():
    assert SolutionTimer().start().seconds == {}


def test_glue_seconds_names_keys_after_the_labels(monkeypatch):
    glued = {}
    monkeypatch.setattr(notebook, "glue", lambda name, value: glued.__setitem__(name, value))
    timer = SolutionTimer()
    timer.seconds = {"ex-kl-1d": 0.5, "ex-dw-gamma-star": 2.0}
    timer.glue_seconds()
    assert glued == {"ex_kl_1d_seconds": 0.5, "ex_dw_gamma_star_seconds": 2.0}
