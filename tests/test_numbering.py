"""Results and exercises are numbered per chapter ("Proposition 4.2", "Exercise 4.1") in the built
book, and every reference to one, in the chapters, their summary boxes and the intro's claims
register, reads the number its target shows."""

from __future__ import annotations

import html
import re
from urllib.parse import urljoin

import bookpages
import pytest

NUMBERED = re.compile(r"(Theorem|Proposition|Lemma|Corollary|Definition|Exercise) (\d+)\.(\d+)$")
BLOCK = re.compile(
    r'<div class="(?:proof )?(\w+) admonition" id="([^"]+)">\s*'
    r'<p class="admonition-title"><span class="caption-number">([^<]*)</span>'
)
LINK = re.compile(r'<a class="reference internal" href="([^"]*)"[^>]*>(.*?)</a>', re.S)


def numbered_blocks(page: str) -> list[tuple[str, str]]:
    """``(anchor, caption)`` of every numbered result or exercise on a built page, in order."""
    return [(anchor, caption.strip()) for _, anchor, caption in BLOCK.findall(page)]


def references(page: str) -> list[tuple[str, str]]:
    """``(href, text)`` of every internal link on a built page, text without markup."""
    return [
        (href, html.unescape(re.sub(r"<[^>]+>", "", text)).strip())
        for href, text in LINK.findall(page)
    ]


def test_numbered_blocks_and_references_read_sphinx_markup():
    page = (
        '<div class="proof theorem admonition" id="thm-a">\n<p class="admonition-title">'
        '<span class="caption-number">Theorem 4.1 </span> (Paper, Theorem 1)</p>'
        '<div class="exercise admonition" id="ex-b">\n<p class="admonition-title">'
        '<span class="caption-number">Exercise 4.1 </span></p>'
        '<a class="reference internal" href="two_stage.html#thm-a"><span>Theorem 4.1</span></a>'
    )
    assert numbered_blocks(page) == [("thm-a", "Theorem 4.1"), ("ex-b", "Exercise 4.1")]
    assert references(page) == [("two_stage.html#thm-a", "Theorem 4.1")]


@pytest.mark.book
def test_results_and_exercises_are_numbered_within_their_chapter(built_book):
    for file, k in bookpages.chapter_numbers().items():
        blocks = numbered_blocks((built_book / f"{file}.html").read_text(encoding="utf-8"))
        assert blocks, f"{file}: no numbered results"
        seen: dict[str, int] = {}
        for anchor, caption in blocks:
            match = NUMBERED.match(caption)
            assert match, f"{file}#{anchor}: caption {caption!r}"
            kind, chapter, index = match[1], int(match[2]), int(match[3])
            assert chapter == k, f"{file}#{anchor}: {caption} in chapter {k}"
            seen[kind] = seen.get(kind, 0) + 1
            assert index == seen[kind], (
                f"{file}#{anchor}: {caption}, expected {kind} {k}.{seen[kind]}"
            )


@pytest.mark.book
def test_every_reference_reads_the_number_of_its_target(built_book):
    captions = {}
    for file, _ in bookpages.toc_entries():
        page = (built_book / f"{file}.html").read_text(encoding="utf-8")
        for anchor, caption in numbered_blocks(page):
            captions[f"{file}.html#{anchor}"] = caption
    checked = 0
    for file, _ in bookpages.toc_entries():
        for href, text in references((built_book / f"{file}.html").read_text(encoding="utf-8")):
            if NUMBERED.match(text):
                target = urljoin(f"{file}.html", href)
                assert captions.get(target) == text, f"{file}: {text!r} links to {target}"
                checked += 1
    assert checked > 50
