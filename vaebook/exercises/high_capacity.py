"""Answer checkers for the exercises of book/high_capacity.md (see :mod:`vaebook.exercises`)."""

from __future__ import annotations
