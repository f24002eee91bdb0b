"""Answer checkers for the exercises of book/polarised.md (see :mod:`vaebook.exercises`)."""

from __future__ import annotations
