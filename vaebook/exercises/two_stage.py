"""Answer checkers for the exercises of book/two_stage.md (see :mod:`vaebook.exercises`)."""

from __future__ import annotations
