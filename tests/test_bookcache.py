"""``tools/bookcache.py``: the execution cache is cleared when vaebook or the pins change."""

from __future__ import annotations

import re

import bookcache
import pytest
import yaml
from test_book import ROOT


@pytest.fixture
def project(tmp_path):
    """A toy repository: a package file, the pins, a chapter, and a config naming the cache."""
    (tmp_path / "vaebook").mkdir()
    (tmp_path / "vaebook" / "kernel.py").write_text("ANSWER = 42\n")
    (tmp_path / "pyproject.toml").write_text('dependencies = ["torch==2.13.0"]\n')
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "chapter.md").write_text("# A chapter\n")
    (tmp_path / "_config.yml").write_text("execute:\n  cache: _build/.jupyter_cache\n")
    return tmp_path


def build(root):
    """What a build leaves: a cache with an entry in it."""
    cache = root / "_build" / ".jupyter_cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "entry").write_text("executed")
    return cache


def test_cache_survives_a_chapter_edit_and_is_cleared_by_a_package_or_pin_edit(project):
    cache = build(project)
    assert bookcache.refresh(project)  # a cache without a recorded fingerprint is not trusted
    assert not cache.exists()
    cache = build(project)
    assert not bookcache.refresh(project)  # nothing changed
    (project / "book" / "chapter.md").write_text("# A chapter, edited\n")
    assert not bookcache.refresh(project) and cache.exists()  # jupyter-cache sees this one
    (project / "vaebook" / "kernel.py").write_text("ANSWER = 43\n")
    assert bookcache.refresh(project) and not cache.exists()
    cache = build(project)
    (project / "pyproject.toml").write_text('dependencies = ["torch==2.14.0"]\n')
    assert bookcache.refresh(project) and not cache.exists()
    cache = build(project)
    (project / "vaebook" / "new_module.py").write_text("")
    assert bookcache.refresh(project) and not cache.exists()


def test_fingerprint_sees_a_renamed_file(project):
    before = bookcache.fingerprint(project)
    (project / "vaebook" / "kernel.py").rename(project / "vaebook" / "other.py")
    assert bookcache.fingerprint(project) != before


def test_a_first_build_records_the_fingerprint_without_a_cache(project):
    assert not bookcache.refresh(project)
    stamp = project / "_build" / bookcache.STAMP
    assert stamp.read_text().strip() == bookcache.fingerprint(project)


def test_config_without_a_cache_folder_is_an_error(project):
    (project / "_config.yml").write_text("execute:\n  execute_notebooks: cache\n")
    with pytest.raises(ValueError, match="execute: cache:"):
        bookcache.refresh(project)


def test_the_book_uses_the_cache_and_make_book_refreshes_it_first():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert config["execute"]["execute_notebooks"] == "cache"
    assert bookcache.cache_folder(ROOT).is_relative_to(ROOT / "_build")  # make clean removes it
    recipe = re.search(r"^book:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)[1]
    lines = recipe.splitlines()
    assert "tools/bookcache.py" in lines[0] and "jupyter-book build" in lines[1]
