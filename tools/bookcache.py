"""Keep the book's execution cache honest: editing ``vaebook`` or the pins re-executes everything.

``make book`` executes chapters through jupyter-cache (``execute_notebooks: cache`` in
``_config.yml``): a chapter runs again only when its code cells change. The cache cannot see the
code those cells import, so a fix in ``vaebook/`` or a new pin in ``pyproject.toml`` would leave
every chapter showing results of the old code. Before each build, ``make book`` runs this script:
it fingerprints the package's sources and ``pyproject.toml`` and clears the cache when the
fingerprint differs from the one recorded at the previous build.

Usage: ``python tools/bookcache.py`` (from the repository root).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAMP = "vaebook.fingerprint"  # kept next to the cache, in _build/


def fingerprint(root: Path = ROOT) -> str:
    """SHA-256 of every ``vaebook/**/*.py`` file (path and bytes) and of ``pyproject.toml``."""
    files = [*sorted((root / "vaebook").rglob("*.py")), root / "pyproject.toml"]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_folder(root: Path = ROOT) -> Path:
    """The jupyter-cache folder named by ``execute: cache:`` in ``_config.yml``."""
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    path = config.get("execute", {}).get("cache")
    if not path:
        raise ValueError("_config.yml must name the cache folder as execute: cache: <folder>")
    return root / path


def refresh(root: Path = ROOT) -> bool:
    """Clear the cache if the fingerprint changed since the last call; record the new one.

    Returns whether the cache was cleared (``False`` when nothing changed or there was no
    cache yet: then every chapter executes anyway).
    """
    cache = cache_folder(root)
    stamp = cache.parent / STAMP
    current = fingerprint(root)
    recorded = stamp.read_text(encoding="utf-8").strip() if stamp.is_file() else None
    cleared = recorded != current and cache.exists()
    if cleared:
        shutil.rmtree(cache)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(current + "\n", encoding="utf-8")
    return cleared


def main() -> int:
    if refresh():
        print("vaebook's sources or the pins changed: every chapter will be executed again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
