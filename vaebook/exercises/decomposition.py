"""Answer checkers for the exercises of book/decomposition.md (see :mod:`vaebook.exercises`)."""

from __future__ import annotations
