"""Generate the Colab notebooks ``notebooks/<chapter>.ipynb`` from the MyST chapters in ``book/``.

Colab opens only ``.ipynb`` files, while the book's sources are MyST markdown notebooks (which
Binder and local Jupyter open directly through jupytext). Every ``book/*.md`` file with a
jupytext header becomes ``notebooks/<name>.ipynb`` with two cells put in front:

1. a code cell that installs vaebook from the repository when it is not importable, and
2. a markdown cell defining the book's LaTeX macros (from ``_config.yml``) for the notebook.

Colab renders plain Markdown only, so the MyST syntax of the markdown cells is converted
(:func:`colab_markdown`): theorem, proof, exercise and solution directives become bold-titled
quotes, citations become "Author (year)", cross-references become links into the published
book (``html.baseurl`` in ``_config.yml``), and glued numbers become the name of the value, which
the cell computing it displays when run outside the book.

Usage: ``python tools/notebooks.py`` (writes the files) or ``--check`` (exits 1 when a
committed notebook differs from what would be generated). ``make notebooks`` runs the first.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
OUT = ROOT / "notebooks"

INSTALL_CELL = """\
# Installs vaebook (and nothing else) when it is missing, e.g. on Colab; a no-op elsewhere.
import importlib.util

if importlib.util.find_spec("vaebook") is None:
    %pip install --quiet "vaebook @ git+{url}@{branch}"

import vaebook  # noqa: F401  (fails here, loudly, if the installation did not work)\
"""


def book_config(root: Path = ROOT) -> dict:
    """The parsed ``_config.yml``."""
    return yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))


def book_url(config: dict) -> str:
    """The address of the published book (``html.baseurl``), ending in ``/``."""
    url = config.get("html", {}).get("baseurl", "")
    if not url.startswith("https://"):
        raise ValueError(f"html.baseurl in _config.yml must be an https URL, got {url!r}")
    return url.rstrip("/") + "/"


def is_notebook(path: Path) -> bool:
    """Whether a MyST file is a notebook (it has a jupytext header with a kernelspec)."""
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return False
    header = yaml.safe_load(text.split("---\n", 2)[1]) or {}
    return "jupytext" in header and "kernelspec" in header


def chapter_sources(book: Path = BOOK) -> list[Path]:
    """The MyST notebooks of the book, sorted by name."""
    return sorted(p for p in book.glob("*.md") if is_notebook(p))


def macros_cell_source(config: dict) -> str:
    """A markdown cell defining the book's MathJax macros with ``\\def`` (MathJax and KaTeX)."""
    macros = config["sphinx"]["config"]["mathjax3_config"]["tex"]["macros"]
    defs = "".join(f"\\def\\{name}{{{body}}}" for name, body in macros.items())
    return (
        f"$${defs}$$\n\n*(The book's notation macros, defined for this notebook.)* Numbers that"
        " the book's text quotes appear here as the `name` of the value; the cell that computes"
        " it displays `name = value` when you run it."
    )


# --- MyST markdown -> plain markdown for Colab ---------------------------------------------

FENCE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}[ \t]*(?P<arg>.*)$")
OPTION = re.compile(r"^:(?P<key>[\w-]+):[ \t]*(?P<value>.*)$")
ROLE = re.compile(r"\{(?P<role>[\w:-]+)\}`(?P<text>[^`]*)`")
EXPLICIT = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")
MATH_LABEL = re.compile(r"^\$\$[ \t]*\((?P<label>[\w-]+)\)[ \t]*$")
TARGET = re.compile(r"^\((?P<label>[\w-]+)\)=[ \t]*$")

BLOCK_NAMES = {
    "prf:theorem": "Theorem",
    "prf:proposition": "Proposition",
    "prf:lemma": "Lemma",
    "prf:corollary": "Corollary",
    "prf:definition": "Definition",
    "prf:remark": "Remark",
    "prf:example": "Example",
    "prf:proof": "Proof",
    "exercise": "Exercise",
    "solution": "Solution",
    "note": "Note",
    "tip": "Tip",
    "important": "Important",
    "warning": "Warning",
    "admonition": "",
}


@dataclass(frozen=True)
class Target:
    """Where a label of the book points: the page (``book/primer``), what it is, its title."""

    page: str
    kind: str
    title: str


def split_directive(lines: list[str], start: int) -> tuple[str, str, dict, list[str], int]:
    """Parse the directive opening at ``lines[start]``.

    Returns its name, argument, options, body lines and the index of the line after its closing
    fence. A directive nested inside (with a shorter fence of the same kind) stays in the body.
    """
    head = FENCE.match(lines[start])
    fence = head["fence"]
    end = start + 1
    while end < len(lines):
        stripped = lines[end].strip()
        if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
            break
        end += 1
    else:
        raise ValueError(f"unclosed directive {{{head['name']}}} opened at line {start + 1}")
    body, options = lines[start + 1 : end], {}
    while body and (option := OPTION.match(body[0])):
        options[option["key"]] = option["value"]
        body = body[1:]
    while body and not body[0].strip():
        body = body[1:]
    return head["name"], head["arg"].strip(), options, body, end + 1


def book_labels(book: Path = BOOK) -> dict[str, Target]:
    """Every label defined in the book's pages: directives, numbered equations, targets."""
    labels = {}
    for path in sorted(book.glob("*.md")):
        page = f"{book.name}/{path.stem}"
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if (head := FENCE.match(line)) and (label := _option(lines, i + 1, "label")):
                kind = BLOCK_NAMES.get(head["name"], head["name"])
                labels[label] = Target(page, kind, head["arg"].strip())
            elif math := MATH_LABEL.match(line):
                labels[math["label"]] = Target(page, "equation", f"({math['label']})")
            elif target := TARGET.match(line):
                following = next((t for t in lines[i + 1 :] if t.strip()), "")
                labels[target["label"]] = Target(page, "section", following.lstrip("# ").strip())
    return labels


def _option(lines: list[str], start: int, key: str) -> str | None:
    """The value of option ``key`` among the option lines starting at ``lines[start]``."""
    for line in lines[start:]:
        option = OPTION.match(line)
        if option is None:
            return None
        if option["key"] == key:
            return option["value"].strip()
    return None


def bibliography(path: Path = BOOK / "references.bib") -> dict[str, str]:
    """``key -> (names, year)`` of a BibTeX file, enough to write "Dai & Wipf (2019)"."""
    entries = {}
    for entry in re.split(r"\n(?=@)", path.read_text(encoding="utf-8")):
        key = re.match(r"@\w+\{([^,]+),", entry.strip())
        author = re.search(r"author\s*=\s*\{(.*)\},?\s*$", entry, re.MULTILINE)
        year = re.search(r"year\s*=\s*\{?(\d{4})", entry)
        if key and author and year:
            surnames = [_surname(name) for name in author[1].split(" and ")]
            if len(surnames) == 1:
                names = surnames[0]
            elif len(surnames) == 2:
                names = f"{surnames[0]} & {surnames[1]}"
            else:
                names = f"{surnames[0]} et al."
            entries[key[1]] = (names, year[1])
    return entries


def _surname(name: str) -> str:
    name = re.sub(r"[{}]|\\\W", "", name.strip())
    return name.split(",")[0].strip() if "," in name else name.split()[-1]


def colab_markdown(text: str, page: str, context: dict) -> str:
    """Plain Markdown for Colab from the MyST markdown ``text`` of a cell on ``page``.

    ``context`` holds ``labels`` (:func:`book_labels`), ``bib`` (:func:`bibliography`) and
    ``url``, the address of the published book ending in ``/``.
    """
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        if FENCE.match(line):
            name, arg, options, body, i = split_directive(lines, i)
            inner = colab_markdown("\n".join(body), page, context)
            out += _block(name, arg, options, inner).split("\n")
            continue
        if TARGET.match(line):
            i += 1
            continue
        out.append("$$" if MATH_LABEL.match(line) else line)
        i += 1
    return ROLE.sub(lambda m: _role(m["role"], m["text"], page, context), "\n".join(out))


def _block(name: str, arg: str, options: dict, body: str) -> str:
    """One directive as a bold-titled quote (solution markers become a plain line)."""
    if name == "solution-start":
        return "**Solution.** *(In the book this is a dropdown; the cells below are it.)*"
    if name == "solution-end":
        return "*(End of the solution.)*"
    if name == "prf:proof":
        head = "*Proof.*"
        body = f"{body} ∎"
    else:
        title = BLOCK_NAMES.get(name, name)
        head = f"**{title}.** *{arg}.*" if arg and title else f"**{title or arg}.**"
    quoted = "\n".join(f"> {line}".rstrip() for line in f"{head}\n\n{body}".split("\n"))
    return quoted


def _role(role: str, text: str, page: str, context: dict) -> str:
    """One MyST role as Markdown: a citation, a link into the published book, or a name."""
    explicit = EXPLICIT.match(text)
    title, target = (explicit["title"], explicit["target"]) if explicit else (None, text)
    if role in ("cite", "cite:p", "cite:t"):
        cites = [context["bib"][key.strip()] for key in target.split(",")]
        if role == "cite:t":
            return "; ".join(f"{names} ({year})" for names, year in cites)
        return "(" + "; ".join(f"{names}, {year}" for names, year in cites) + ")"
    if role in ("prf:ref", "ref", "numref", "eq"):
        label = context["labels"][target]
        anchor = f"equation-{target}" if label.kind == "equation" else target
        title = title or _describe(label)
        return f"[{title}]({context['url']}{label.page}.html#{anchor})"
    if role == "doc":
        doc = f"{page.rsplit('/', 1)[0]}/{target}"
        return f"[{title or target}]({context['url']}{doc}.html)"
    if role.startswith("glue"):
        return f"`{target.split(':')[0]}`"
    if role == "colab":
        return f"[Read this chapter in the rendered book]({context['url']}{page}.html)"
    return title or target


def _describe(label: Target) -> str:
    if label.kind in ("equation", "section"):
        return label.title
    return f"{label.kind} ({label.title})" if label.title else label.kind


def colab_notebook(source: Path, config: dict) -> nbformat.NotebookNode:
    """The Colab notebook of one chapter: install cell, macros cell, then the chapter's cells."""
    nb = jupytext.read(source, fmt="md:myst")
    repo = config["repository"]
    install = INSTALL_CELL.format(url=repo["url"], branch=repo.get("branch", "main"))
    front = [
        nbformat.v4.new_code_cell(install),
        nbformat.v4.new_markdown_cell(macros_cell_source(config)),
    ]
    context = {"labels": book_labels(source.parent), "bib": bibliography(), "url": book_url(config)}
    page = f"{source.parent.name}/{source.stem}"
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = colab_markdown(cell.source, page, context)
    nb.cells = front + nb.cells
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"  # stable ids keep regenerated files byte-identical
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["colab"] = {"provenance": [], "name": f"{source.stem}.ipynb"}
    return nb


def render(source: Path, config: dict) -> str:
    """The exact text written to ``notebooks/<name>.ipynb``."""
    return nbformat.writes(colab_notebook(source, config)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    config = book_config()
    OUT.mkdir(exist_ok=True)
    expected = {f"{src.stem}.ipynb": render(src, config) for src in chapter_sources()}
    stale = sorted(p.name for p in OUT.glob("*.ipynb") if p.name not in expected)
    differ = sorted(
        name
        for name, text in expected.items()
        if not (OUT / name).exists() or (OUT / name).read_text(encoding="utf-8") != text
    )
    if args.check:
        for name in differ:
            print(f"notebooks/{name} is out of date: run `make notebooks`")
        for name in stale:
            print(f"notebooks/{name} has no chapter in book/: delete it")
        return 1 if differ or stale else 0
    for name in differ:
        (OUT / name).write_text(expected[name], encoding="utf-8")
        print(f"wrote notebooks/{name}")
    for name in stale:
        (OUT / name).unlink()
        print(f"removed notebooks/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
