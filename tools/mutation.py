"""Mutation testing of the vaebook package, each module against its own test file.

``make mutation`` (or ``python tools/mutation.py [MODULE ...]``) runs mutmut, pinned in the
``mutation`` extra, over every ``vaebook/<module>.py`` that has a ``tests/test_<module>.py``
(or over the modules named). Each module runs in a scratch copy ``.mutation/<module>/`` whose
generated ``pyproject.toml`` tells mutmut to mutate that module only and to pick the tests of
each mutant from that test file only; one worker process. The driver then

1. reads mutmut's verdicts from ``mutants/vaebook/<module>.py.meta`` (JSON: exit code by
   mutant) and diffs every surviving mutant's function against the original one in the
   mutated source, to show the line it changed;
2. marks the survivors declared equivalent in ``benchmarks/mutation_equivalent.toml``
   (``[[equivalent]]`` tables with ``module``, ``reason`` and either ``mutant``, the mutant's
   name such as ``x_kl_normal__mutmut_7``, or ``line``, the mutated line's text);
3. writes ``benchmarks/mutation.md``: per module the number of mutants, killed, survived,
   timed out, equivalent, the kill rate over the non-equivalent mutants and the wall time,
   then the equivalent survivors with their reasons and the open ones.

The numbers of the modules not rerun are kept from the previous report (it carries them as a
JSON comment), so ``make mutation MODULE=gaussian`` updates one section. ``--report-only``
rebuilds the report from that JSON and the equivalence file without running mutmut;
``--resume`` continues an interrupted run (its wall time is the sum of the parts);
``--rerun-survivors``, after tests were added, reruns only the last run's survivors in the
scratch copy (the killed ones stay killed: tests were only added or sharpened).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's dependency
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".mutation"
REPORT = ROOT / "benchmarks" / "mutation.md"
EQUIVALENT = ROOT / "benchmarks" / "mutation_equivalent.toml"
DATA_MARK = "<!-- mutation-results "

# mutmut 3's exit codes (mutmut/stats.py), grouped into the report's columns.
STATUS_BY_EXIT_CODE = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests"}
STATUS_BY_EXIT_CODE[None] = "not_run"  # an interrupted run's mutants not reached yet
STATUS_BY_EXIT_CODE |= dict.fromkeys((36, 24, -24, 152, 255), "timeout")


def modules_with_tests(root: Path = ROOT) -> list[str]:
    """The modules ``vaebook/<m>.py`` that have a test file ``tests/test_<m>.py``."""
    return sorted(
        p.stem
        for p in (root / "vaebook").glob("*.py")
        if (root / f"tests/test_{p.stem}.py").exists()
    )


def toml_value(value) -> str:
    """A TOML literal for the simple values of a config section (str, bool, number, list)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"value must be a string, number, boolean or list, got {type(value).__name__}")


def scratch_pyproject(module: str, project: dict) -> str:
    """The pyproject.toml of the scratch copy: the project's ``[tool.mutmut]`` and pytest
    settings, with mutation and test selection narrowed to ``module`` and its test file."""
    mutmut = dict(project.get("tool", {}).get("mutmut", {}))
    mutmut |= {
        "source_paths": ["vaebook"],
        "only_mutate": [f"vaebook/{module}.py"],
        "pytest_add_cli_args_test_selection": [f"tests/test_{module}.py"],
    }
    pytest_options = project.get("tool", {}).get("pytest", {}).get("ini_options", {})
    lines = ["[tool.mutmut]", *(f"{k} = {toml_value(v)}" for k, v in mutmut.items())]
    lines += ["", "[tool.pytest.ini_options]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in pytest_options.items()]
    return "\n".join(lines) + "\n"


def run_mutmut(module: str, rerun: list[str] | None = None, resume: bool = False) -> float:
    """Run mutmut on ``module`` in a fresh scratch copy, or with ``resume`` continue an
    interrupted run there (mutmut skips the mutants it has a verdict for), or, given ``rerun``
    (mutant keys such as ``vaebook.gaussian.x_kl_normal__mutmut_7``), rerun just those with the
    current test files. Return the wall time in seconds."""
    work = SCRATCH / module
    if rerun is None and not resume:
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(
            ROOT / "vaebook", work / "vaebook", ignore=shutil.ignore_patterns("__pycache__")
        )
    (work / "tests").mkdir(exist_ok=True)
    for path in (ROOT / "tests").glob("*.py"):  # the test file and its shared helpers
        if path.name == f"test_{module}.py" or not path.name.startswith("test_"):
            shutil.copy2(path, work / "tests" / path.name)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (work / "pyproject.toml").write_text(scratch_pyproject(module, project))
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [str(Path(sys.executable).parent / "mutmut"), "run", "--max-children", "1"]
    start = time.perf_counter()
    with open(work / "mutmut.log", "a") as log:
        subprocess.run([*command, *(rerun or [])], cwd=work, env=env, stdout=log, check=True)
    return time.perf_counter() - start


def function_sources(source: str) -> dict[str, list[str]]:
    """Lines of every function in ``source``, the docstring dropped and the function's own name
    blanked in its ``def`` line (so that a mutant and the original differ where mutated only)."""
    lines, functions = source.splitlines(), {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            text = lines[node.lineno - 1 : node.end_lineno]
            if ast.get_docstring(node) is not None:
                doc = node.body[0]
                del text[doc.lineno - node.lineno : doc.end_lineno - node.lineno + 1]
            text[0] = text[0].replace(node.name, "", 1)
            functions[node.name] = [line.strip() for line in text]
    return functions


def mutant_diff(functions: dict[str, list[str]], mutant: str) -> tuple[str, str]:
    """The original and the mutated lines of ``mutant`` (e.g. ``x_f__mutmut_3``)."""
    orig = functions[mutant.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"]
    new = functions[mutant]
    removed, added = [], []
    for line in difflib.ndiff(orig, new):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    return " / ".join(removed), " / ".join(added)


def display_name(mutant: str) -> str:
    """``x_kl_normal__mutmut_7`` -> ``kl_normal``; ``xǁELBOTermsǁmean__mutmut_2`` ->
    ``ELBOTerms.mean``."""
    return mutant.rsplit("__mutmut_", 1)[0][2:].replace("ǁ", ".")


def parse_results(meta: dict, source: str, module: str) -> dict:
    """Counts and survivors of one module from mutmut's ``.meta`` JSON and mutated source."""
    functions = function_sources(source)
    counts = {"mutants": 0, "killed": 0, "survived": 0, "timeout": 0, "not_run": 0, "other": 0}
    survivors = []
    for key, code in sorted(meta["exit_code_by_key"].items(), key=lambda kv: _natural(kv[0])):
        status = STATUS_BY_EXIT_CODE.get(code, "other")
        counts["mutants"] += 1
        if status in ("survived", "no tests"):
            counts["survived"] += 1
            mutant = key.rsplit(".", 1)[1]
            original, mutated = mutant_diff(functions, mutant)
            survivors.append(
                {
                    "mutant": mutant,
                    "function": display_name(mutant),
                    "original": original,
                    "mutated": mutated,
                    "no_tests": status == "no tests",
                }
            )
        else:
            counts[status] += 1
    return {"module": module, **counts, "survivors": survivors}


def _natural(key: str) -> tuple[str, int]:
    name, _, number = key.rpartition("__mutmut_")
    return name, int(number) if number.isdigit() else -1


def equivalence_reason(survivor: dict, module: str, declared: list[dict]) -> str | None:
    """The reason given for ``survivor`` in the declared equivalent mutants, or None."""
    for entry in declared:
        if entry["module"] != module:
            continue
        if entry.get("mutant") == survivor["mutant"] or (
            "line" in entry and entry["line"].strip() == survivor["mutated"]
        ):
            return entry["reason"]
    return None


def summarise(result: dict, declared: list[dict]) -> dict:
    """Add ``equivalent`` survivors (with reasons), ``open`` survivors and the kill rate over
    the non-equivalent mutants (a timed-out mutant counts as detected)."""
    equivalent, open_ = [], []
    for survivor in result["survivors"]:
        reason = equivalence_reason(survivor, result["module"], declared)
        (open_ if reason is None else equivalent).append(survivor | {"reason": reason})
    relevant = result["mutants"] - len(equivalent) - result.get("not_run", 0)
    detected = result["killed"] + result["timeout"]
    rate = detected / relevant if relevant else 1.0
    return result | {"equivalent": equivalent, "open": open_, "kill_rate": rate}


def render(results: dict[str, dict], declared: list[dict]) -> str:
    """The Markdown report, ending with the raw results as a JSON comment."""
    tools = ", ".join(sorted({r.get("tool", "mutmut") for r in results.values()}))
    out = [
        "# Mutation testing",
        "",
        f"Written by `make mutation` (`tools/mutation.py`, {tools}, one worker): every mutant of",
        "`vaebook/<module>.py` is run against `tests/test_<module>.py` only. The kill rate is",
        "(killed + timed out) / (mutants - equivalent - not run). Equivalent mutants are declared,",
        "with their reasons, in `benchmarks/mutation_equivalent.toml`.",
        "",
        "| module | mutants | killed | survived | timed out | equivalent | kill rate | wall time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    summaries = [summarise(results[m], declared) for m in sorted(results)]
    for s in summaries:
        out.append(
            f"| `{s['module']}` | {s['mutants']} | {s['killed']} | {s['survived']} "
            f"| {s['timeout']} | {len(s['equivalent'])} | {100 * s['kill_rate']:.1f} % "
            f"| {_wall(s)} |"
        )
    for s in summaries:
        out += ["", f"## `vaebook/{s['module']}.py`", ""]
        if s.get("not_run"):
            out += [
                f"**Partial run**: {s['not_run']} mutants not run yet (`--resume` goes on).",
                "",
            ]
        if s["other"]:
            out += [f"{s['other']} mutants ended otherwise (suspicious, segfault).", ""]
        out += [f"Equivalent survivors ({len(s['equivalent'])}):", ""]
        out += [_survivor_line(v) + f" — {v['reason']}" for v in s["equivalent"]] or ["- none"]
        out += ["", f"Open survivors ({len(s['open'])}):", ""]
        out += [_survivor_line(v) for v in s["open"]] or ["- none"]
    payload = json.dumps(results, ensure_ascii=False, sort_keys=True)
    return "\n".join(out) + f"\n\n{DATA_MARK}{payload} -->\n"


def _wall(s: dict) -> str:
    wall = f"{s['wall_s'] / 60:.1f} min"
    if "rerun_s" in s:  # the survivors rerun after tests were added
        wall += f" + {s['rerun_s'] / 60:.1f} min rerun"
    return wall


def _survivor_line(s: dict) -> str:
    where = " (no test reaches it)" if s.get("no_tests") else ""
    return f"- `{s['mutant']}`{where}: `{s['original']}` → `{s['mutated']}`"


def previous_results(report: str) -> dict[str, dict]:
    """The per-module results carried by a previous report (empty if there is none)."""
    start = report.rfind(DATA_MARK)
    if start < 0:
        return {}
    return json.loads(report[start + len(DATA_MARK) :].rsplit("-->", 1)[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help="modules to run (default: all with tests)")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report only")
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in its scratch copy"
    )
    parser.add_argument(
        "--rerun-survivors",
        action="store_true",
        help="after adding tests: rerun only the last run's survivors in its scratch copy",
    )
    args = parser.parse_args(argv)
    results = previous_results(REPORT.read_text()) if REPORT.exists() else {}
    modules = [] if args.report_only else args.modules or modules_with_tests()
    interrupted = False
    for module in modules:
        if not (ROOT / f"tests/test_{module}.py").exists():
            raise SystemExit(f"module {module!r} has no tests/test_{module}.py")
        print(f"mutation testing vaebook/{module}.py against tests/test_{module}.py", flush=True)
        if args.rerun_survivors:
            survivors = [f"vaebook.{module}.{s['mutant']}" for s in results[module]["survivors"]]
            rerun_s = run_mutmut(module, rerun=survivors) if survivors else 0.0
            wall_s = results[module]["wall_s"]
        else:  # a resumed run's wall time adds to that of the interrupted parts
            wall_file = SCRATCH / module / "wall_s.txt"
            wall_s = float(wall_file.read_text()) if args.resume and wall_file.exists() else 0.0
            start, rerun_s = time.perf_counter(), None
            try:
                run_mutmut(module, resume=args.resume)
            except KeyboardInterrupt:  # Ctrl-C: report what has run; --resume goes on
                interrupted = True
            finally:
                wall_s += time.perf_counter() - start
                wall_file.write_text(f"{wall_s:.1f}\n")
        mutated = SCRATCH / module / "mutants" / "vaebook"
        meta = json.loads((mutated / f"{module}.py.meta").read_text())
        results[module] = parse_results(meta, (mutated / f"{module}.py").read_text(), module)
        results[module] |= {"wall_s": round(wall_s, 1), "tool": "mutmut " + _mutmut_version()}
        if rerun_s is not None:
            results[module]["rerun_s"] = round(rerun_s, 1)
        print(f"  {results[module]['mutants']} mutants, {results[module]['survived']} survived")
        if interrupted:
            break
    # Re-read the report before writing: another run may have finished in the meantime, and
    # only the modules run here replace their rows.
    done = {m: results[m] for m in modules if m in results}
    latest = previous_results(REPORT.read_text()) if REPORT.exists() else {}
    results = latest | done
    declared = tomllib.loads(EQUIVALENT.read_text()).get("equivalent", [])
    REPORT.write_text(render(results, declared))
    print(f"wrote {REPORT.relative_to(ROOT)}")


def _mutmut_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mutmut")
    except PackageNotFoundError:
        return "(not installed)"


if __name__ == "__main__":
    main()
