"""Generate the Colab notebooks ``notebooks/<chapter>.ipynb`` from the MyST chapters in ``book/``.

Colab and JupyterLab (on Binder, or locally with ``make lab``) open these notebooks; the book's
sources are the MyST markdown notebooks in ``book/``, which JupyterLab shows as text. Every
``book/*.md`` file with a jupytext header becomes ``notebooks/<name>.ipynb`` with two cells put
in front:

1. a code cell that installs vaebook from the repository when it is not importable, and
2. a markdown cell defining the book's LaTeX macros (from ``_config.yml``) for the notebook.

Colab renders plain Markdown only, so the MyST syntax of the markdown cells is converted
(:func:`colab_markdown`): theorem, proof and exercise directives become bold-titled quotes
numbered as in the book ("Exercise 4.1"), hints and other dropdowns become closed
``<details>`` blocks, citations become "Author (year)", cross-references become links into the
published book (``html.baseurl`` in ``_config.yml``), and glued numbers become the name of the
value, which the cell computing it displays when run outside the book. The book's macros are
written out in every cell (:func:`expand_macros`), since JupyterLab typesets cells in no fixed
order. Each exercise's solution,
prose and code, is folded into one closed ``<details>`` block whose code does not run with
"Run all" (:func:`fold_solutions`); the book build executes every solution.

Usage: ``python tools/notebooks.py`` (writes the files) or ``--check`` (exits 1 when a
committed notebook differs from what would be generated). ``make notebooks`` runs the first.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import bookpages  # tools/bookpages.py: the chapter numbers of _toc.yml
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


def book_macros(config: dict) -> dict[str, str]:
    """The book's LaTeX macros (``_config.yml``): name -> body."""
    return config["sphinx"]["config"]["mathjax3_config"]["tex"]["macros"]


def macros_cell_source(config: dict) -> str:
    """A markdown cell defining the book's MathJax macros with ``\\def`` (MathJax and KaTeX)."""
    defs = "".join(f"\\def\\{name}{{{body}}}" for name, body in book_macros(config).items())
    return (
        f"$${defs}$$\n\n*(The book's notation macros, defined for this notebook.)* Numbers that"
        " the book's text quotes appear here as the `name` of the value; the cell that computes"
        " it displays `name = value` when you run it."
    )


CODE = re.compile(r"((`+).*?\2)", re.DOTALL)  # an inline code span or a fenced block


def expand_macros(markdown: str, macros: dict[str, str]) -> str:
    """``markdown`` with the book's macros written out as groups (``\\z`` -> ``{\\mathbf{z}}``),
    outside code. JupyterLab typesets a notebook's cells in no fixed order, so no cell may rely
    on the macros cell having been typeset before it."""
    names = "|".join(map(re.escape, sorted(macros, key=len, reverse=True)))
    macro = re.compile(rf"\\({names})(?![A-Za-z])")
    pieces = CODE.split(markdown)  # text, code, its backticks, text, ...
    return "".join(
        macro.sub(lambda m: "{" + macros[m[1]] + "}", piece) if i % 3 == 0 else piece
        for i, piece in enumerate(pieces)
        if i % 3 != 2
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


NUMBERED_KINDS = (
    "Theorem",
    "Proposition",
    "Lemma",
    "Corollary",
    "Definition",
    "Remark",
    "Example",
    "Exercise",
)  # Sphinx numbers each kind on its own, per chapter


@dataclass(frozen=True)
class Target:
    """Where a label of the book points: the page (``book/primer``), what it is, its title, and
    the number the book gives it ("Proposition 4.2"; empty for sections and equations)."""

    page: str
    kind: str
    title: str
    number: str = ""


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


def book_labels(book: Path = BOOK, chapters: dict[str, int] | None = None) -> dict[str, Target]:
    """Every label defined in the book's pages: directives, numbered equations, targets.

    ``chapters`` maps a page (``book/primer``) to its chapter number (default: the numbered
    parts of ``_toc.yml``); results and exercises get the book's numbers, "Exercise 4.1" in
    chapter 4 and "Exercise 1" on an unnumbered page.
    """
    chapters = bookpages.chapter_numbers(ROOT) if chapters is None else chapters
    labels = {}
    for path in sorted(book.glob("*.md")):
        page = f"{book.name}/{path.stem}"
        numbers = block_numbers(chapters.get(page))
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if head := FENCE.match(line):
                kind = BLOCK_NAMES.get(head["name"], head["name"])
                number = numbers(kind)
                if label := _option(lines, i + 1, "label"):
                    labels[label] = Target(page, kind, head["arg"].strip(), number)
            elif math := MATH_LABEL.match(line):
                labels[math["label"]] = Target(page, "equation", f"({math['label']})")
            elif target := TARGET.match(line):
                following = next((t for t in lines[i + 1 :] if t.strip()), "")
                labels[target["label"]] = Target(page, "section", following.lstrip("# ").strip())
    return labels


def block_numbers(chapter: int | None):
    """A counter for one page: ``numbers(kind)`` returns the next number of that kind, e.g.
    "Exercise 4.2" (chapter 4) or "Exercise 2" (no chapter number), and "" for a kind the book
    does not number (proofs, solutions, notes)."""
    counts: dict[str, int] = {}

    def numbers(kind: str) -> str:
        if kind not in NUMBERED_KINDS:
            return ""
        counts[kind] = counts.get(kind, 0) + 1
        return f"{kind} {chapter}.{counts[kind]}" if chapter else f"{kind} {counts[kind]}"

    return numbers


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
    ``url``, the address of the published book ending in ``/``; optionally ``numbers``, the
    page's :func:`block_numbers` counter, which numbers theorems and exercises as the book does.
    """
    numbers = context.get("numbers") or (lambda kind: "")
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        if FENCE.match(line):
            name, arg, options, body, i = split_directive(lines, i)
            number = numbers(BLOCK_NAMES.get(name, name))  # before the body: document order
            inner = colab_markdown("\n".join(body), page, context)
            out += _block(name, arg, options, inner, number).split("\n")
            continue
        if TARGET.match(line):
            i += 1
            continue
        out.append("$$" if MATH_LABEL.match(line) else line)
        i += 1
    return ROLE.sub(lambda m: _role(m["role"], m["text"], page, context), "\n".join(out))


def details(summary: str, body: str) -> str:
    """A closed HTML ``<details>`` block: JupyterLab and Colab show ``summary`` and render the
    Markdown ``body`` (math included) when the reader clicks it."""
    return f"<details>\n<summary>{summary}</summary>\n\n{body}\n\n</details>"


def _block(name: str, arg: str, options: dict, body: str, number: str = "") -> str:
    """One directive as a bold-titled quote, or, for a dropdown (a hint, a solution), as a
    closed ``<details>`` block the reader opens by clicking its title."""
    if name == "prf:proof":
        head = "*Proof.*"
        body = f"{body} ∎"
    else:
        title = number or BLOCK_NAMES.get(name, name)
        head = f"**{title}.** *{arg}.*" if arg and title else f"**{title or arg}.**"
    if "dropdown" in options.get("class", "").split():
        summary = head.replace("**", "").replace("*", "")
        return details(f"<b>{summary}</b> (click to open)", body)
    return "\n".join(f"> {line}".rstrip() for line in f"{head}\n\n{body}".split("\n"))


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
    name = label.number or label.kind
    return f"{name} ({label.title})" if label.title else name


SOLUTION_START = re.compile(r"^(`{3,}|:{3,})\{solution-start\}")
SOLUTION_END = re.compile(r"^(`{3,}|:{3,})\{solution-end\}")
SOLUTION_NOTE = (
    "click to open; its code does not run with Run all: copy a block into a cell to run it"
)


def fold_solutions(cells: list, labels: dict[str, Target]) -> list:
    """The chapter's cells with every ``solution-start`` ... ``solution-end`` stretch (prose and
    code cells) folded into one closed ``<details>`` markdown cell.

    A notebook reader sees each exercise and its hint, and opens the solution only by clicking
    it; its code is shown as fenced blocks, so "Run all" never runs a solution. (The book
    executes every solution: there it is a dropdown of ordinary cells.)
    """
    out, normal, solution, title = [], [], None, ""

    def flush_normal():
        text = "\n".join(normal).strip("\n")
        if text.strip():
            out.append(nbformat.v4.new_markdown_cell(text))
        normal.clear()

    for cell in cells:
        if cell.cell_type != "markdown":
            if solution is None:
                out.append(cell)
            else:
                solution += ["", f"```python\n{cell.source}\n```", ""]
            continue
        lines = cell.source.split("\n")
        if solution is None and not any(SOLUTION_START.match(line) for line in lines):
            out.append(cell)
            continue
        i = 0
        while i < len(lines):
            if SOLUTION_START.match(lines[i]):
                flush_normal()
                _, label, _, _, i = split_directive(lines, i)
                solution, title = [], f"Solution to {labels[label].number or label}"
            elif SOLUTION_END.match(lines[i]):
                if solution is None:
                    raise ValueError("solution-end without a solution-start")
                _, _, _, _, i = split_directive(lines, i)
                body = "\n".join(solution).strip("\n")
                out.append(
                    nbformat.v4.new_markdown_cell(
                        details(f"<b>{title}</b> ({SOLUTION_NOTE})", body)
                    )
                )
                solution = None
            else:
                (normal if solution is None else solution).append(lines[i])
                i += 1
        flush_normal()
    if solution is not None:
        raise ValueError(f"{title}: solution-start without a solution-end")
    return out


def colab_notebook(source: Path, config: dict) -> nbformat.NotebookNode:
    """The Colab notebook of one chapter: install cell, macros cell, then the chapter's cells."""
    nb = jupytext.read(source, fmt="md:myst")
    repo = config["repository"]
    install = INSTALL_CELL.format(url=repo["url"], branch=repo.get("branch", "main"))
    front = [
        nbformat.v4.new_code_cell(install),
        nbformat.v4.new_markdown_cell(macros_cell_source(config)),
    ]
    labels = book_labels(source.parent)
    page = f"{source.parent.name}/{source.stem}"
    numbers = block_numbers(bookpages.chapter_numbers(ROOT).get(page))
    context = {"labels": labels, "bib": bibliography(), "url": book_url(config), "numbers": numbers}
    cells = fold_solutions(nb.cells, labels)
    macros = book_macros(config)
    for cell in cells:
        if cell.cell_type == "markdown":
            cell.source = expand_macros(colab_markdown(cell.source, page, context), macros)
    nb.cells = front + cells
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
