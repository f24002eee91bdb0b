"""GPU readers: the chapters run unchanged when a CUDA device is present (Colab's GPU runtime).

``vaebook.train.fit`` trains on CUDA when there is one (``device="auto"``) and hands the model
back on the device it came from, so the chapters' own CPU tensors keep working; no chapter names
a device. Where a GPU exists, the fastest chapter that trains runs here on it; elsewhere those
tests are skipped, saying why.
"""

from __future__ import annotations

import re

import bookpages
import jupytext
import nbformat
import pytest
import torch
from test_book import CHAPTERS, ROOT

from vaebook import nets
from vaebook.train import fit

NO_GPU = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device on this machine: the book runs on the CPU"
)
FASTEST_TRAINING_CHAPTER = "primer"  # about 30 s on two CPU cores; it trains VAEs with fit


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_no_chapter_hard_codes_the_cpu(chapter):
    source = chapter.read_text(encoding="utf-8")
    assert not re.search(r"""device\s*=\s*["']cpu["']|torch\.device\(\s*["']cpu""", source)


def test_fastest_training_chapter_trains_with_fit():
    source = (ROOT / "book" / f"{FASTEST_TRAINING_CHAPTER}.md").read_text(encoding="utf-8")
    assert "fit(" in source


@NO_GPU
def test_fit_trains_on_cuda_and_hands_the_model_back_where_it_was():
    with nets.seeded(0):
        model = nets.VAE(nets.mlp_encoder((4,), [8], 2), nets.mlp_decoder(2, [8], (4,)))
    seen = []
    fit(
        model,
        torch.randn(32, 4),
        epochs=2,
        device="auto",
        progress=False,
        callback=lambda epoch, m: seen.append(next(m.parameters()).device.type),
    )
    assert seen == ["cuda", "cuda"]
    assert next(model.parameters()).device.type == "cpu"


@NO_GPU
@pytest.mark.book
def test_fastest_training_chapter_runs_on_cuda():
    nb = jupytext.read(ROOT / "book" / f"{FASTEST_TRAINING_CHAPTER}.md")
    probe = "import torch\nprint('cuda bytes', torch.cuda.max_memory_allocated())"
    nb.cells.append(nbformat.v4.new_code_cell(probe))
    bookpages.execute(nb, ROOT / "book")
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert int(re.search(r"cuda bytes (\d+)", printed)[1]) > 0, "fit did not train on the GPU"
