"""Datasets of the book, all available offline.

The embedded real-image dataset is scikit-learn's 8x8 handwritten digits (1797 images, shipped
inside the scikit-learn wheel, so nothing is downloaded).
"""

from __future__ import annotations

import numpy as np
import torch

from .checks import check_positive_int

__all__ = ["digit_exemplars", "digits"]

DIGIT_LEVELS = 16.0  # the 8x8 digits are counts of pixels in 4x4 blocks: integers 0..16


def digits(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 handwritten digits, scaled to ``[0, 1]``.

    Returns
    -------
    images : tensor ``(1797, 8, 8)`` of ``dtype``, grey levels divided by 16.
    labels : int64 tensor ``(1797,)`` with the digit shown (0-9).
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images / DIGIT_LEVELS, dtype=dtype)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return images, labels


def digit_exemplars(
    per_class: int, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded subset of :func:`digits` with ``per_class`` images of each digit.

    The high-capacity chapter (seed 000) tiles latent space with 4 exemplars per class.

    Returns
    -------
    images : tensor ``(10 * per_class, 8, 8)``, grouped by class 0, 1, ..., 9.
    labels : int64 tensor ``(10 * per_class,)``.
    """
    check_positive_int(per_class, "per_class")
    check_positive_int(seed, "seed", allow_zero=True)
    images, labels = digits(dtype)
    counts = torch.bincount(labels, minlength=10)
    if per_class > int(counts.min()):
        raise ValueError(f"per_class must be at most {int(counts.min())}, got {per_class}")
    rng = np.random.default_rng(seed)
    chosen = [
        np.sort(rng.choice(np.flatnonzero(labels.numpy() == c), per_class, replace=False))
        for c in range(10)
    ]
    index = torch.as_tensor(np.concatenate(chosen))
    return images[index], labels[index]
