"""Input validation shared by every public function of ``vaebook``.

Each helper raises a ``TypeError`` or ``ValueError`` whose message starts with the
argument's name, so a reader who passes a bad value is told which one and why.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch

__all__ = [
    "as_tensor",
    "check_choice",
    "check_finite",
    "check_number",
    "check_per_member",
    "check_positive",
    "check_positive_int",
    "check_same_last_dim",
    "check_sizes",
    "per_member_values",
]


def as_tensor(value, name: str, *, dtype: torch.dtype | None = None, like=None) -> torch.Tensor:
    """Convert ``value`` (tensor, array or number) to a tensor, or raise ``TypeError``.

    ``like`` (a tensor) supplies the dtype and device when ``value`` is not a tensor yet.
    The result is checked to hold only finite values.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        raise TypeError(f"{name} must be a tensor or a number, got {type(value).__name__}")
    if not isinstance(value, torch.Tensor):
        try:
            if like is not None:
                value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
            else:  # straight to dtype: Python floats are float64, not float32 first
                value = torch.as_tensor(value, dtype=dtype)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"{name} must be a tensor or a number, got {type(value).__name__}"
            ) from err
    if not (value.is_floating_point() or value.is_complex()) and dtype is None and like is None:
        value = value.to(torch.get_default_dtype())
    if dtype is not None:
        value = value.to(dtype)
    check_finite(value, name)
    return value


def check_finite(value: torch.Tensor, name: str) -> torch.Tensor:
    """Raise ``ValueError`` when ``value`` holds a NaN or an infinity."""
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must be finite, but it contains NaN or infinite values")
    return value


def check_number(value, name: str) -> float:
    """Return ``value`` (a real number or a one-element tensor) as a finite float."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not isinstance(value, bool):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_positive(value, name: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float after checking it is a finite number > 0 (or >= 0)."""
    value = check_number(value, name)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_positive_int(value, name: str, *, allow_zero: bool = False) -> int:
    """Return ``value`` after checking it is an ``int`` > 0 (or >= 0)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_choice(value, name: str, choices: Iterable[str]) -> str:
    """Return ``value`` after checking it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_same_last_dim(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` broadcast and share their last dimension."""
    if a.dim() == 0 or b.dim() == 0:
        raise ValueError(f"{a_name} and {b_name} must have a last (event) dimension")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"{b_name} has last dimension {b.shape[-1]} but {a_name} has {a.shape[-1]}"
        )
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError as err:
        raise ValueError(
            f"{a_name} of shape {tuple(a.shape)} and {b_name} of shape {tuple(b.shape)} "
            "do not broadcast"
        ) from err


def per_member_values(value, name: str, members: int | None) -> torch.Tensor:
    """A number, or one number per ensemble member, as a float64 tensor (no range check).

    ``value`` is a number or a sequence / array / 1-D tensor of ``members`` numbers. Returns a
    0-dim tensor for a number and ``(members,)`` for a sequence; with ``members`` None only a
    number is accepted (a single model).
    """
    shape = () if members is None else (members,)
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise TypeError(f"{name} must be a number or a sequence of numbers, got {value!r}")
    try:
        values = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"{name} must be a number or a sequence of numbers, got {type(value).__name__}"
        ) from err
    if values.dim() != 0 and values.shape != shape:
        count = 1 if members is None else members
        raise ValueError(
            f"{name} must be a number or {count} numbers (one per member), "
            f"got shape {tuple(values.shape)}"
        )
    return values


def check_per_member(value, name: str, members: int | None, *, allow_zero: bool = False):
    """A number, or one number per ensemble member, as a float64 tensor.

    ``value`` is a number (used for every member) or a sequence / array / 1-D tensor of
    ``members`` numbers; each must be finite and > 0 (>= 0 with ``allow_zero``). Returns a
    tensor ``(members,)``, or a 0-dim tensor when ``members`` is None (a single model).
    """
    shape = () if members is None else (members,)
    values = per_member_values(value, name, members)
    if values.dim() == 0:
        return torch.full(
            shape, check_positive(values.item(), name, allow_zero=allow_zero), dtype=torch.float64
        )
    for i, v in enumerate(values.tolist()):
        check_positive(v, f"{name}[{i}]", allow_zero=allow_zero)
    return values


def check_sizes(values, name: str, minimum: int) -> tuple[int, ...]:
    """``values`` (an int or a sequence of ints > 0, at least ``minimum`` of them) as a tuple."""
    if isinstance(values, int):
        values = (values,)
    try:
        values = tuple(values)
    except TypeError as err:
        raise TypeError(f"{name} must be a sequence of ints, got {type(values).__name__}") from err
    if len(values) < minimum:
        raise ValueError(f"{name} needs at least {minimum} entries, got {len(values)}")
    for v in values:
        check_positive_int(v, f"every entry of {name}")
    return values
