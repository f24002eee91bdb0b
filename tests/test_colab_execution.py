"""A generated Colab notebook, executed as Colab would execute it.

Colab starts a fresh kernel whose environment has the scientific stack (torch, numpy, scipy,
matplotlib, scikit-learn, ipywidgets) but not vaebook and none of the book's tooling
(myst-nb, jupytext). The notebook's first cell must install vaebook and the rest must run.

Offline, the test builds that environment in a throwaway virtualenv from the versions pinned in
``pyproject.toml`` and points the install cell at this repository's committed HEAD instead of
GitHub (``git+file://localhost/...@<commit>``: the same pip-from-git path Colab takes). The
chapter runs in a working directory outside the repository, so only the installed package can be
imported.

Building that virtualenv needs the package index. Where the index cannot be reached the test
is skipped, saying so: the same pins already installed ``.venv``, so a resolver failure here
means the index is gone, not that a pin is wrong.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import requires

import nbclient
import nbformat
import pytest
from test_book import CONFIG, ROOT

pytestmark = pytest.mark.book
NOTEBOOK = ROOT / "notebooks" / "primer.ipynb"  # the fastest chapter
COLAB_STACK = {"torch", "numpy", "scipy", "matplotlib", "scikit-learn", "tqdm", "ipywidgets"}


def colab_pins() -> list[str]:
    """The book's pins of the packages Colab has preinstalled, plus the kernel."""
    book = [r.split(";")[0].strip() for r in requires("vaebook") if 'extra == "book"' in r]
    chosen = [pin for pin in book if re.split(r"[=<>]", pin)[0] in COLAB_STACK | {"ipykernel"}]
    assert len(chosen) == len(COLAB_STACK) + 1, chosen
    return chosen


UNREACHABLE = re.compile(
    r"NewConnectionError|Max retries exceeded|Name or service not known|"
    r"Temporary failure in name resolution|Network is unreachable|ConnectTimeout|ReadTimeout|"
    r"No matching distribution found|Could not find a version that satisfies"
)


def index_unreachable(pip_stderr: str) -> str | None:
    """The line of pip's error output that says the package index was not reached, if any."""
    for line in pip_stderr.splitlines():
        if UNREACHABLE.search(line):
            return line.strip()
    return None


def test_index_unreachable_reads_pips_network_errors():
    offline = (
        "WARNING: Retrying (Retry(total=4)) after connection broken by "
        "'NewConnectionError(...)': /simple/numpy/\n"
        "ERROR: No matching distribution found for numpy==2.4.6"
    )
    assert "NewConnectionError" in index_unreachable(offline)
    assert index_unreachable("ERROR: Failed building wheel for torch") is None
    assert index_unreachable("") is None


@pytest.fixture(scope="module")
def colab_kernel(tmp_path_factory):
    """A kernel spec named ``colab`` running in a fresh virtualenv without vaebook."""
    root = tmp_path_factory.mktemp("colab")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *colab_pins()],
        capture_output=True,
        text=True,
    )
    if install.returncode != 0:
        reason = index_unreachable(install.stderr)
        if reason:
            pytest.skip(f"the package index cannot be reached to build Colab's stack: {reason}")
        raise AssertionError(install.stderr[-3000:])
    spec = root / "jupyter" / "kernels" / "colab"
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Colab-like", "language": "python"})
    )
    return root, python


def test_colab_notebook_installs_vaebook_and_runs(colab_kernel, monkeypatch):
    root, python = colab_kernel
    workdir = root / "work"
    workdir.mkdir()
    probe = [str(python), "-c", "import importlib.util as u; print(u.find_spec('vaebook'))"]
    found = subprocess.run(probe, cwd=workdir, capture_output=True, text=True).stdout.strip()
    assert found == "None"

    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    github = f"git+{CONFIG['repository']['url']}@{CONFIG['repository']['branch']}"
    assert github in nb.cells[0].source  # the cell Colab runs first
    nb.cells[0].source = nb.cells[0].source.replace(github, f"git+file://localhost{ROOT}@{commit}")

    monkeypatch.setenv("JUPYTER_PATH", str(root / "jupyter"))
    client = nbclient.NotebookClient(
        nb, kernel_name="colab", timeout=600, resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    located = subprocess.run(
        [str(python), "-c", "import vaebook; print(vaebook.__file__)"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(root / "venv") in located  # installed by the first cell, not found in the repo
    shown = "".join(
        "".join(output.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "primer_runtime = " in shown  # without myst-nb, glued numbers are displayed
