"""The chapters as readers open them in JupyterLab: on Binder and with ``make lab``.

The Binder links of the book (``book/_ext/colab_links.py``) and ``make lab`` open
``notebooks/<name>.ipynb`` in JupyterLab. The browser tests start the real JupyterLab of the
virtual environment on a free localhost port, with a random token, its root at the repository,
no browser, and user settings, workspaces and runtime files in a temporary folder. They open
each chapter's Binder target in headless Chromium (``tools/pagecheck.py``) and require what a
reader needs: a notebook (not a text editor) with all of its cells, math typeset by MathJax
without an error, the widget manager of ipywidgets loaded, nothing fetched from outside, and the
first code cells (the install cell, then the chapter's imports) run without an error.

Nothing in ``notebooks/`` changes: autosave is off, checkpoints go to the temporary folder,
the server refuses every save (a pre-save hook), and the server fixture compares the files with
what they were once the server has stopped. The server also reports every connection it opens
to another host (a Python audit hook); there must be none.

The browser tests use about a minute of CPU time in all (``make unit`` leaves them out); the
helpers (Binder address -> JupyterLab address, the launcher's reports, what counts as a problem)
are unit-tested below without a browser.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import bookpages
import pagecheck
import pytest
from test_book import ROOT, colab_links

NOTEBOOKS = bookpages.notebook_pages()
RUN_CELLS = 2  # the install cell, then the chapter's imports
SERVER_TIMEOUT = 60  # seconds for JupyterLab to start or to stop
CELL_TIMEOUT = 120  # seconds for one cell to run
NOTEBOOK_TIMEOUT = pagecheck.PAGE_TIMEOUT - 10  # seconds to show a notebook (within the driver's)
WIDGET_MANAGER = "@jupyter-widgets/jupyterlab-manager:plugin"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
OUTSIDE = "outside connection:"
REFUSED = "refused to save:"

# User settings of the test's JupyterLab: never save a notebook behind the test's back (running
# a cell sets the notebook's kernel metadata, which makes it "modified"), never offer news.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}

# Runs JupyterLab (the `jupyter lab` entry point) with an audit hook that reports on stderr
# every host the server looks up or connects to, other than this machine, and a pre-save hook
# (`lab_command` names it) that refuses, and reports, every save: the repository stays as it is.
LAUNCHER = f"""
import sys
from jupyterlab.labapp import main
from tornado.web import HTTPError

def refuse_save(model, path, contents_manager, **kwargs):
    print("{REFUSED}", path, file=sys.stderr, flush=True)
    raise HTTPError(403, "the test's JupyterLab saves nothing")

def report(event, args):
    if event == "socket.getaddrinfo":
        host = args[0]
    elif event == "socket.connect" and isinstance(args[1], tuple):
        host = args[1][0]
    else:
        return
    if isinstance(host, bytes):
        host = host.decode()
    if host and host not in {sorted(LOCAL_HOSTS)!r}:
        print("{OUTSIDE}", host, file=sys.stderr, flush=True)

sys.addaudithook(report)
sys.exit(main())
"""


# --- Binder address -> JupyterLab address ---------------------------------------------------


@functools.cache
def book_config() -> SimpleNamespace:
    """The Sphinx configuration colab_links reads, made from ``_config.yml`` by Jupyter Book."""
    from jupyter_book.config import get_final_config

    config, _ = get_final_config(
        user_yaml=ROOT / "_config.yml",
        cli_config={"latex_individualpages": False},
        sourcedir=ROOT,
    )
    return SimpleNamespace(html_theme_options=config["html_theme_options"])


def launch_path(binder: str) -> str:
    """The JupyterLab route a Binder address opens (its ``urlpath``), e.g. ``lab/tree/x.ipynb``."""
    parts = urlsplit(binder)
    paths = parse_qs(parts.query).get("urlpath", [])
    if parts.scheme != "https" or "/v2/" not in parts.path or len(paths) != 1:
        raise ValueError(f"binder must be a Binder address with one urlpath, got {binder!r}")
    if not paths[0].startswith("lab/tree/"):
        raise ValueError(f"binder must open a file in JupyterLab (lab/tree/...), got {binder!r}")
    return paths[0]


def launched_file(binder: str) -> Path:
    """The file of the repository that the Binder address ``binder`` opens."""
    return ROOT / launch_path(binder).removeprefix("lab/tree/")


def lab_url(binder: str, base: str, token: str) -> str:
    """The address of what ``binder`` opens, on the local JupyterLab at ``base`` with ``token``."""
    if not re.fullmatch(r"http://(127\.0\.0\.1|localhost):\d+/", base):
        raise ValueError(
            f"base must be a local JupyterLab such as http://127.0.0.1:8888/, got {base!r}"
        )
    if not re.fullmatch(r"[0-9a-f]{16,}", token):
        raise ValueError(f"token must be a hexadecimal server token, got {token!r}")
    return f"{base}{launch_path(binder)}?token={token}"


def reported(log: str, marker: str) -> list[str]:
    """What the launcher reported under ``marker`` (``OUTSIDE``: hosts, ``REFUSED``: paths)."""
    if marker not in (OUTSIDE, REFUSED):
        raise ValueError(f"marker must be OUTSIDE or REFUSED, got {marker!r}")
    return [line.split(marker, 1)[1].strip() for line in log.splitlines() if marker in line]


def has_math(markdown: str) -> bool:
    """Whether a markdown cell holds math for MathJax (a ``$`` outside code)."""
    prose = re.sub(r"```.*?```|`[^`\n]*`", "", markdown, flags=re.DOTALL)
    return "$" in prose


# --- the server ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab: its address (ending in ``/``), token and log file."""

    base: str
    token: str
    log: Path

    def api(self, path: str, method: str = "GET", body: dict | None = None):
        """The parsed JSON answer of the server's REST API at ``path`` (no proxy, with token)."""
        request = urllib.request.Request(
            self.base + path,
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=None if body is None else json.dumps(body).encode(),
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as answer:
            text = answer.read()
        return json.loads(text) if text else None


def lab_environment(home: Path, token: str) -> dict[str, str]:
    """The environment of the test's JupyterLab: every Jupyter folder under ``home``."""
    folders = {
        "JUPYTER_CONFIG_DIR": home / "config",
        "JUPYTER_DATA_DIR": home / "data",
        "JUPYTER_RUNTIME_DIR": home / "runtime",
        "IPYTHONDIR": home / "ipython",
    }
    return {**os.environ, **{k: str(v) for k, v in folders.items()}, "JUPYTER_TOKEN": token}


def write_lab_settings(config_dir: Path) -> None:
    """Write ``LAB_SETTINGS`` as the JupyterLab user settings of ``config_dir``."""
    for name, settings in LAB_SETTINGS.items():
        path = Path(config_dir) / "lab" / "user-settings" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings), encoding="utf-8")


def lab_command(root: Path, checkpoints: Path) -> list[str]:
    """The command line of the test's JupyterLab serving ``root``, keeping the checkpoints of
    opened files in the folder ``checkpoints``."""
    return [
        sys.executable,
        "-c",
        LAUNCHER,
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=0",  # the system picks a free port; the runtime file says which
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_root=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # the default one searches PyPI
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: which plugins are active
        f"--FileCheckpoints.checkpoint_dir={checkpoints}",  # not .ipynb_checkpoints/ in root
        "--ContentsManager.pre_save_hook=__main__.refuse_save",  # LAUNCHER's
    ]


@contextmanager
def jupyterlab(root: Path, home: Path) -> Iterator[Lab]:
    """JupyterLab serving ``root`` on localhost, its own folders under ``home``: the one
    installed with the Python that runs the tests (``.venv``'s, under ``make test``)."""
    root, home = Path(root), Path(home)
    if not root.is_dir():
        raise NotADirectoryError(f"root {root} is not a folder")
    token = os.urandom(24).hex()
    log = home / "jupyterlab.log"
    write_lab_settings(home / "config")
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(
            lab_command(root, home / "checkpoints"),
            env=lab_environment(home, token),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
    lab = None
    try:
        lab = Lab(wait_for_server(process, home / "runtime", log), token, log)
        yield lab
    finally:
        stop_server(process, lab)


def wait_for_server(process: subprocess.Popen, runtime: Path, log: Path) -> str:
    """The base URL of the server once it has written its runtime file."""
    deadline = time.monotonic() + SERVER_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited ({process.returncode}):\n{log.read_text()}")
        for info in runtime.glob(f"jpserver-{process.pid}.json"):
            port = json.loads(info.read_text(encoding="utf-8"))["port"]
            return f"http://127.0.0.1:{port}/"
        time.sleep(0.2)
    raise TimeoutError(f"JupyterLab did not start in {SERVER_TIMEOUT} s:\n{log.read_text()}")


def stop_server(process: subprocess.Popen, lab: Lab | None) -> None:
    """Shut the server down through its API (kernels included); terminate it if that fails."""
    if lab is not None and process.poll() is None:
        try:
            lab.api("api/shutdown", "POST")
        except OSError:
            pass  # terminated below
    try:
        process.wait(timeout=SERVER_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def folder_state(folder: Path) -> dict[str, bytes | None]:
    """What is under ``folder``, hidden things too: relative path -> a file's bytes, or None
    for a folder."""
    return {
        str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None
        for path in Path(folder).rglob("*")
    }


# --- a notebook in the browser ----------------------------------------------------------------

# Runs in JupyterLab: waits until the open notebook shows `expected` cells, every cell flagged in
# `math` has typeset math and `plugin` (if not null) is active; or until a text editor shows
# instead, or `timeout` ms pass. Then describes what it sees.
READ_NOTEBOOK = """
const [expected, math, plugin, timeout, done] = arguments;
const started = Date.now();
const panel = () => document.querySelector(".jp-NotebookPanel:not(.lm-mod-hidden)");
const describe = () => {
  const notebook = panel();
  const cells = notebook ? Array.from(notebook.querySelectorAll(".jp-Notebook .jp-Cell")) : [];
  return {
    notebook: Boolean(notebook),
    editor: document.querySelectorAll(".jp-FileEditor").length,
    cells: cells.map((cell) => {
      const prose = [];
      const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
      while (walker.nextNode()) {
        const node = walker.currentNode;
        if (node.parentElement.closest(".jp-RenderedMarkdown") &&
            !node.parentElement.closest("pre, code, mjx-container")) prose.push(node.textContent);
      }
      return {
        type: ["jp-CodeCell", "jp-MarkdownCell", "jp-RawCell"].find(
          (c) => cell.classList.contains(c)) || "?",
        math: cell.querySelectorAll("mjx-container").length,
        errors: Array.from(cell.querySelectorAll("mjx-container")).flatMap((box) => {
          // a TeX error, or an undefined macro in red; its name is in the assistive MathML
          const marks = box.querySelectorAll("mjx-merror, mjx-math [style*='color: red']");
          const red = Array.from(
            box.querySelectorAll("mjx-assistive-mml [mathcolor='red']"), (e) => e.textContent);
          return Array.from(marks, (e) => e.getAttribute("data-mjx-error") || red.shift() || "?");
        }),
        prose: prose.join(" "),
      };
    }),
    widgets: Boolean(plugin && window.jupyterapp && window.jupyterapp.isPluginActivated(plugin)),
    resources: performance.getEntriesByType("resource").map((e) => e.name),
  };
};
const poll = () => {
  const state = describe();
  const ready = (state.editor > 0 && !state.notebook) || (state.cells.length === expected &&
    state.cells.every((cell, i) => !math[i] || cell.math > 0) && (!plugin || state.widgets));
  if (ready || Date.now() - started > timeout) done(state); else setTimeout(poll, 200);
};
poll();
"""

# Runs in JupyterLab: once the open notebook's kernel session is ready, selects each of its
# first `count` code cells and runs it with JupyterLab's own command (what Shift+Enter does),
# without waiting for it to finish; returns how many were started.
RUN_CODE_CELLS = """
const [count, done] = arguments;
const panel = window.jupyterapp.shell.currentWidget;
panel.sessionContext.ready.then(() => {
  const notebook = panel.content;
  const code = notebook.widgets.flatMap((cell, i) => cell.model.type === "code" ? [i] : []);
  for (const index of code.slice(0, count)) {
    notebook.deselectAll();
    notebook.activeCellIndex = index;
    void window.jupyterapp.commands.execute("notebook:run-cell");
  }
  done(Math.min(count, code.length));
});
"""

# Runs in JupyterLab: the prompt and outputs of the index-th code cell of the open notebook.
READ_CELL = """
const cell = document.querySelectorAll(
  ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell")[arguments[0]];
return {
  prompt: cell.querySelector(".jp-InputPrompt").textContent.trim(),
  outputs: Array.from(cell.querySelectorAll(".jp-OutputArea-output")).map((o) => ({
    mime: o.getAttribute("data-mime-type") || "",
    text: o.textContent,
  })),
};
"""


def notebook_problems(state: dict, cells: list[dict], base: str) -> list[str]:
    """What a reader would see go wrong in the notebook ``state`` read by ``READ_NOTEBOOK``.

    ``cells`` are the cells of the notebook's file; ``base`` the JupyterLab's address.
    """
    if not state["notebook"]:
        kind = "a text editor" if state["editor"] else "nothing"
        return [f"no notebook panel: JupyterLab shows {kind}"]
    problems = []
    shown = [cell["type"] for cell in state["cells"]]
    wanted = [f"jp-{cell['cell_type'].capitalize()}Cell" for cell in cells]
    if shown != wanted:
        problems.append(f"{len(shown)} cells shown, the file has {len(wanted)} (or other types)")
    for i, (cell, shown_cell) in enumerate(zip(cells, state["cells"], strict=False)):
        if cell["cell_type"] == "markdown" and has_math("".join(cell["source"])):
            if shown_cell["math"] == 0:
                problems.append(f"cell {i}: math not typeset by MathJax")
        if shown_cell["errors"]:
            problems.append(f"cell {i}: math typeset with errors: {shown_cell['errors'][:3]}")
        if raw := sorted(set(pagecheck.RAW_MATH.findall(shown_cell["prose"]))):
            problems.append(f"cell {i}: math not typeset: {' '.join(raw)} left in the text")
    if not state["widgets"]:
        problems.append(f"the ipywidgets manager ({WIDGET_MANAGER}) is not active")
    outside = sorted({url for url in state["resources"] if not url.startswith(base)})
    if outside:
        problems.append(f"fetched from outside: {outside[:3]}")
    return problems


def cell_problems(cell: dict) -> list[str]:
    """What went wrong in a code cell read by ``READ_CELL`` after it was run."""
    if not re.fullmatch(r"\[\d+\]:", cell["prompt"]):
        return [f"did not finish running (prompt {cell['prompt']!r})"]
    problems = []
    for output in cell["outputs"]:
        if "stderr" in output["mime"] or "error" in output["mime"]:
            problems.append(f"error output: {output['text'][:300]!r}")
        elif match := pagecheck.BAD_OUTPUT.search(output["text"]):
            problems.append(f"output shows {match.group(0).strip()!r}")
    return problems


def finished_cell(driver, index: int) -> dict:
    """``READ_CELL`` of the ``index``-th code cell once it has run (or ``CELL_TIMEOUT`` passed)."""
    deadline = time.monotonic() + CELL_TIMEOUT
    while True:
        cell = driver.execute_script(READ_CELL, index)
        if re.fullmatch(r"\[\d+\]:", cell["prompt"]) or time.monotonic() > deadline:
            return cell
        time.sleep(0.2)


def check_notebook(driver, lab: Lab, url: str, path: Path, run_cells: int = RUN_CELLS):
    """The problems a reader meets opening ``url`` (the notebook ``path``) in JupyterLab and
    running its first ``run_cells`` code cells; empty when all is well.

    The cells start running as soon as the notebook shows them, while MathJax typesets.
    """
    if Path(path).suffix != ".ipynb":
        raise ValueError(f"path must be a notebook (.ipynb), got {path}")
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    math = [c["cell_type"] == "markdown" and has_math("".join(c["source"])) for c in cells]
    timeout = 1000 * NOTEBOOK_TIMEOUT
    driver.get(url)
    shown = driver.execute_async_script(READ_NOTEBOOK, len(cells), [], None, timeout)
    if not shown["notebook"]:
        return notebook_problems(shown, cells, lab.base)
    started = driver.execute_async_script(RUN_CODE_CELLS, run_cells)
    state = driver.execute_async_script(READ_NOTEBOOK, len(cells), math, WIDGET_MANAGER, timeout)
    problems = notebook_problems(state, cells, lab.base)
    if started != run_cells:
        problems.append(f"{started} code cells started, not {run_cells}")
    for index in range(started):
        failed = cell_problems(finished_cell(driver, index))
        problems += [f"code cell {index}: {p}" for p in failed]
        if failed:
            break  # JupyterLab drops the cells queued after an error: they never finish
    return problems


def close_everything(driver, lab: Lab) -> None:
    """Leave the page, stop its kernels and forget its workspace: the next notebook opens
    in a JupyterLab as fresh as a reader's."""
    driver.get("about:blank")
    for session in lab.api("api/sessions"):
        lab.api(f"api/sessions/{session['id']}", "DELETE")
    for workspace in lab.api("lab/api/workspaces")["workspaces"]["ids"]:
        lab.api(f"lab/api/workspaces/{workspace}", "DELETE")


# --- fixtures and tests -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The venv's JupyterLab serving the repository. Once it has stopped, the files and
    folders of ``notebooks/`` must be byte for byte what they were, and no save attempted."""
    before = folder_state(ROOT / "notebooks")
    with jupyterlab(ROOT, tmp_path_factory.mktemp("jupyterlab")) as server:
        yield server
    after = folder_state(ROOT / "notebooks")
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p, 0) != after.get(p, 0))
    assert changed == [], f"notebooks/ changed while JupyterLab ran: {changed}"
    assert reported(server.log.read_text(encoding="utf-8"), REFUSED) == []


@pytest.fixture(scope="module")
def browser():
    driver = pagecheck.start_browser()
    yield driver
    driver.quit()


@pytest.mark.book
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_binder_target_opens_as_a_notebook_that_runs(lab, browser, name):
    binder = colab_links.binder_url(book_config(), name)
    try:
        problems = check_notebook(
            browser, lab, lab_url(binder, lab.base, lab.token), launched_file(binder)
        )
    finally:
        close_everything(browser, lab)
    assert problems == [], f"{launch_path(binder)}:\n" + "\n".join(problems)


@pytest.mark.book
def test_jupyterlab_contacts_no_other_host(lab):
    lab.api("lab/api/news")  # what the front end asks for news and updates, if a reader agrees
    lab.api("lab/api/update")
    assert reported(lab.log.read_text(encoding="utf-8"), OUTSIDE) == []


# --- fast tests of the helpers ----------------------------------------------------------------

BINDER = "https://mybinder.org/v2/gh/org/repo/dev?urlpath=lab/tree/notebooks/primer.ipynb"


def test_every_binder_target_is_a_notebook_of_the_repository():
    for name in NOTEBOOKS:
        path = launched_file(colab_links.binder_url(book_config(), name))
        assert path == ROOT / "notebooks" / f"{name}.ipynb"
        assert path.is_file()


def test_lab_url_opens_the_binder_target_on_the_local_server():
    url = lab_url(BINDER, "http://127.0.0.1:8123/", "ab" * 12)
    assert url == f"http://127.0.0.1:8123/lab/tree/notebooks/primer.ipynb?token={'ab' * 12}"


@pytest.mark.parametrize(
    ("binder", "base", "token", "argument"),
    [
        ("https://mybinder.org/v2/gh/org/repo/dev", "http://127.0.0.1:1/", "ab" * 12, "binder"),
        (BINDER.replace("lab/tree/", "tree/"), "http://127.0.0.1:1/", "ab" * 12, "binder"),
        (BINDER, "https://example.org/", "ab" * 12, "base"),
        (BINDER, "http://127.0.0.1:1", "ab" * 12, "base"),
        (BINDER, "http://127.0.0.1:1/", "", "token"),
    ],
)
def test_lab_url_rejects_what_is_not_a_binder_target_or_a_local_server(
    binder, base, token, argument
):
    with pytest.raises(ValueError, match=f"^{argument} must"):
        lab_url(binder, base, token)


def test_reported_reads_the_launchers_reports():
    log = f"[I] up\n{OUTSIDE} jupyterlab.github.io\n{REFUSED} notebooks/a.ipynb\n{OUTSIDE} pypi.org"
    assert reported(log, OUTSIDE) == ["jupyterlab.github.io", "pypi.org"]
    assert reported(log, REFUSED) == ["notebooks/a.ipynb"]
    assert reported("[I server] started\n", OUTSIDE) == []
    with pytest.raises(ValueError, match="marker must"):
        reported(log, "[I]")


BASE = "http://127.0.0.1:8123/"
CELLS = [
    {"cell_type": "code", "source": ["import vaebook"]},
    {"cell_type": "markdown", "source": ["$a$"]},
]
SHOWN = {
    "notebook": True,
    "editor": 0,
    "cells": [
        {"type": "jp-CodeCell", "math": 0, "errors": [], "prose": ""},
        {"type": "jp-MarkdownCell", "math": 1, "errors": [], "prose": "so that"},
    ],
    "widgets": True,
    "resources": [f"{BASE}static/main.js"],
}


def broken(**changes) -> dict:
    """``SHOWN`` with some fields replaced; ``cell1`` updates the markdown cell."""
    state = json.loads(json.dumps(SHOWN))
    state["cells"][1].update(changes.pop("cell1", {}))
    return {**state, **changes}


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        (broken(notebook=False, editor=1, cells=[]), "JupyterLab shows a text editor"),
        (broken(cells=SHOWN["cells"][:1]), "1 cells shown, the file has 2"),
        (broken(cell1={"math": 0}), "cell 1: math not typeset by MathJax"),
        (broken(cell1={"errors": ["\\z"]}), "cell 1: math typeset with errors: ['\\\\z']"),
        (broken(cell1={"prose": "so $$a$$"}), "cell 1: math not typeset: $$ left in the text"),
        (broken(widgets=False), "ipywidgets manager"),
        (broken(resources=["https://cdn.example/x.js"]), "fetched from outside"),
    ],
)
def test_notebook_problems_names_what_a_reader_would_see(state, problem):
    assert notebook_problems(SHOWN, CELLS, BASE) == []
    assert [p for p in notebook_problems(state, CELLS, BASE) if problem in p] != []


@pytest.mark.parametrize(
    ("cell", "problem"),
    [
        ({"prompt": "[*]:", "outputs": []}, "did not finish running"),
        (
            {
                "prompt": "[1]:",
                "outputs": [{"mime": "application/vnd.jupyter.stderr", "text": "x"}],
            },
            "error output",
        ),
        (
            {"prompt": "[1]:", "outputs": [{"mime": "text/plain", "text": "UserWarning: x"}]},
            "UserWarning",
        ),
    ],
)
def test_cell_problems_names_what_went_wrong(cell, problem):
    assert (
        cell_problems({"prompt": "[2]:", "outputs": [{"mime": "text/plain", "text": "42"}]}) == []
    )
    assert problem in " ".join(cell_problems(cell))


def test_has_math_ignores_dollars_in_code():
    assert has_math("The KL $D(q \\Vert p)$ is positive")
    assert not has_math("Run `echo $HOME` first\n```bash\nexport A=$B\n```\n")


def test_the_launcher_reports_outside_connections_only(tmp_path):
    script = LAUNCHER.replace("from jupyterlab.labapp import main", "").replace(
        "sys.exit(main())",
        # numeric addresses: nothing is resolved or sent
        "import socket\nsocket.getaddrinfo('127.0.0.1', 80)\nsocket.getaddrinfo('192.0.2.1', 80)\n",
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert reported(run.stderr, OUTSIDE) == ["192.0.2.1"]


@pytest.mark.book
def test_the_server_saves_nothing_and_stops(tmp_path):
    """The fixture's server (without a browser): it answers, refuses a save, and shuts down."""
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "a.txt").write_text("kept")
    with jupyterlab(tmp_path / "root", tmp_path) as server:
        assert server.api("api/status")["kernels"] == 0
        with pytest.raises(urllib.error.HTTPError, match="403"):
            save = {"type": "file", "format": "text", "content": "changed"}
            server.api("api/contents/a.txt", "PUT", save)
        pid = int(next((tmp_path / "runtime").glob("jpserver-*.json")).stem.split("-")[1])
    assert (tmp_path / "root" / "a.txt").read_text() == "kept"
    assert reported(server.log.read_text(encoding="utf-8"), REFUSED) == ["a.txt"]
    assert not Path(f"/proc/{pid}").exists()
