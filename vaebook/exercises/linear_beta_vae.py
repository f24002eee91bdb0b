"""Answer checkers for the exercises of book/linear_beta_vae.md (see :mod:`vaebook.exercises`)."""

from __future__ import annotations
