"""The parsing and report logic of tools/mutation.py, on small made-up mutmut outputs.

Nothing here runs mutmut: the inputs mimic its mutated source (every function copied as
``x_<name>__mutmut_orig`` and ``x_<name>__mutmut_<n>``) and its ``.meta`` JSON of exit codes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation_tool", ROOT / "tools" / "mutation.py")
mutation = importlib.util.module_from_spec(_spec)
sys.modules["mutation_tool"] = mutation
_spec.loader.exec_module(mutation)

SOURCE = '''
def x_scale__mutmut_orig(x, name="x"):
    """Docstring."""
    check(x, "x")
    return 2 * x

def x_scale__mutmut_1(x, name="x"):
    """Docstring."""
    check(x, "XXxXX")
    return 2 * x

def x_scale__mutmut_2(x, name="x"):
    """Docstring."""
    check(x, "x")
    return 3 * x

def x_scale__mutmut_3(x, name="x"):
    """Docstring."""
    check(x, "x")
    return 2 / x

def x_scale__mutmut_4(x, name="x"):
    """Docstring."""
    check(x, "x")
    return 2 * x + 0

class Terms:
    def xǁTermsǁmean__mutmut_orig(self):
        return self.a.mean(-1)

    def xǁTermsǁmean__mutmut_1(self):
        return self.a.mean(+1)
'''
META = {
    "exit_code_by_key": {
        "vaebook.toy.x_scale__mutmut_1": 0,  # survived
        "vaebook.toy.x_scale__mutmut_2": 1,  # killed
        "vaebook.toy.x_scale__mutmut_3": 36,  # timed out
        "vaebook.toy.x_scale__mutmut_4": 33,  # no test reached it
        "vaebook.toy.xǁTermsǁmean__mutmut_1": 0,  # survived
    }
}
DECLARED = [
    {"module": "toy", "mutant": "x_scale__mutmut_1", "reason": "error message only"},
    {"module": "toy", "line": "return self.a.mean(+1)", "reason": "axis 1 is the last"},
    {"module": "other", "mutant": "x_scale__mutmut_4", "reason": "another module's"},
]


@pytest.fixture
def result():
    return mutation.parse_results(META, SOURCE, "toy") | {"wall_s": 90.0, "tool": "mutmut 9.9"}


def test_parse_results_counts_verdicts_and_diffs_survivors(result):
    assert {k: result[k] for k in ("mutants", "killed", "survived", "timeout", "other")} == {
        "mutants": 5,
        "killed": 1,
        "survived": 3,  # a mutant no test reaches survives
        "timeout": 1,
        "other": 0,
    }
    survivors = {s["mutant"]: s for s in result["survivors"]}
    assert survivors.keys() == {"x_scale__mutmut_1", "x_scale__mutmut_4", "xǁTermsǁmean__mutmut_1"}
    assert survivors["x_scale__mutmut_1"]["original"] == 'check(x, "x")'
    assert survivors["x_scale__mutmut_1"]["mutated"] == 'check(x, "XXxXX")'
    assert survivors["x_scale__mutmut_4"]["no_tests"]
    assert survivors["xǁTermsǁmean__mutmut_1"]["function"] == "Terms.mean"


def test_display_names_drop_mutmuts_prefix_and_number():
    assert mutation.display_name("x_kl_normal__mutmut_7") == "kl_normal"
    assert mutation.display_name("x__pair__mutmut_2") == "_pair"
    assert mutation.display_name("xǁELBOTermsǁmean__mutmut_12") == "ELBOTerms.mean"


def test_summarise_matches_equivalents_by_name_or_line_and_rates_the_rest(result):
    summary = mutation.summarise(result, DECLARED)
    assert [(s["mutant"], s["reason"]) for s in summary["equivalent"]] == [
        ("x_scale__mutmut_1", "error message only"),
        ("xǁTermsǁmean__mutmut_1", "axis 1 is the last"),
    ]
    assert [s["mutant"] for s in summary["open"]] == ["x_scale__mutmut_4"]
    # (1 killed + 1 timed out) / (5 mutants - 2 equivalent)
    assert summary["kill_rate"] == pytest.approx(2 / 3)


def test_report_lists_numbers_reasons_and_open_survivors_and_round_trips(result):
    report = mutation.render({"toy": result}, DECLARED)
    assert "| `toy` | 5 | 1 | 3 | 1 | 2 | 66.7 % | 1.5 min |" in report
    assert '`x_scale__mutmut_1`: `check(x, "x")` → `check(x, "XXxXX")` — error message' in report
    assert "Open survivors (1):" in report and "(no test reaches it)" in report
    assert "mutmut 9.9" in report
    assert mutation.previous_results(report) == {"toy": result}
    assert mutation.previous_results("# no data") == {}


def test_report_shows_the_rerun_of_survivors(result):
    report = mutation.render({"toy": result | {"rerun_s": 30.0}}, [])
    assert "| 0 | 40.0 % | 1.5 min + 0.5 min rerun |" in report


def test_scratch_pyproject_narrows_mutmut_to_one_module_and_its_test_file():
    project = {
        "tool": {
            "mutmut": {"process_isolation": "forkserver", "debug": False},
            "pytest": {"ini_options": {"addopts": "-ra", "markers": ['a: "quoted"']}},
        }
    }
    config = tomllib.loads(mutation.scratch_pyproject("gaussian", project))
    assert config["tool"]["mutmut"] == {
        "process_isolation": "forkserver",
        "debug": False,
        "source_paths": ["vaebook"],
        "only_mutate": ["vaebook/gaussian.py"],
        "pytest_add_cli_args_test_selection": ["tests/test_gaussian.py"],
    }
    assert config["tool"]["pytest"]["ini_options"] == project["tool"]["pytest"]["ini_options"]


def test_modules_with_tests_are_those_with_a_test_file(tmp_path):
    for path in ("vaebook/a.py", "vaebook/b.py", "vaebook/__init__.py", "tests/test_a.py"):
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text("")
    assert mutation.modules_with_tests(tmp_path) == ["a"]


def test_the_committed_equivalence_file_is_well_formed():
    declared = tomllib.loads((ROOT / "benchmarks/mutation_equivalent.toml").read_text())
    for entry in declared["equivalent"]:
        assert entry.keys() in ({"module", "mutant", "reason"}, {"module", "line", "reason"})
        assert (ROOT / f"vaebook/{entry['module']}.py").exists() and entry["reason"]


def test_an_interrupted_run_is_reported_as_partial_and_rated_over_the_mutants_run():
    meta = {
        "exit_code_by_key": {
            "vaebook.toy.x_scale__mutmut_2": 1,
            "vaebook.toy.x_scale__mutmut_3": None,
        }
    }
    result = mutation.parse_results(meta, SOURCE, "toy") | {"wall_s": 60.0}
    assert (result["mutants"], result["killed"], result["not_run"]) == (2, 1, 1)
    assert mutation.summarise(result, [])["kill_rate"] == 1.0
    assert "**Partial run**: 1 mutants not run yet" in mutation.render({"toy": result}, [])


def test_a_mutated_default_argument_shows_in_the_diff():
    source = (
        "def x_f__mutmut_orig(a, n=1):\n    return a\n\ndef x_f__mutmut_1(a, n=2):\n    return a\n"
    )
    functions = mutation.function_sources(source)
    assert mutation.mutant_diff(functions, "x_f__mutmut_1") == ("def (a, n=1):", "def (a, n=2):")


def test_a_run_keeps_the_rows_another_run_wrote_meanwhile(tmp_path, monkeypatch, result):
    # Two `make mutation` runs may overlap; the one that finishes last must not write back the
    # report it read when it started, erasing the other's rows.
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_toy.py").write_text("")
    report, equivalent = tmp_path / "mutation.md", tmp_path / "equivalent.toml"
    equivalent.write_text("")
    report.write_text(mutation.render({"toy": result}, []))
    for name, value in [
        ("ROOT", tmp_path),
        ("SCRATCH", tmp_path / "scratch"),
        ("REPORT", report),
        ("EQUIVALENT", equivalent),
    ]:
        monkeypatch.setattr(mutation, name, value)

    def fake_run(module, rerun=None, resume=False):
        mutated = tmp_path / "scratch" / module / "mutants" / "vaebook"
        mutated.mkdir(parents=True)
        (mutated / f"{module}.py.meta").write_text(mutation.json.dumps(META))
        (mutated / f"{module}.py").write_text(SOURCE)
        other = result | {"module": "other"}
        report.write_text(mutation.render({"toy": result, "other": other}, []))  # meanwhile
        return 1.0

    monkeypatch.setattr(mutation, "run_mutmut", fake_run)
    mutation.main(["toy"])
    rows = mutation.previous_results(report.read_text())
    assert set(rows) == {"toy", "other"}
