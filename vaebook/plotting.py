"""Figures that recur across chapters: image grids, Gaussian ellipses, training curves."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Ellipse

from .checks import as_tensor, check_positive, check_positive_int

__all__ = ["gaussian_ellipse", "image_grid", "latent_histograms", "training_curves"]

LATENT_PANELS = (  # (attribute of vaebook.ivae.Representations, panel title)
    ("mean", "mean μ"),
    ("variance", "variance σ"),
    ("prior_variance", "prior variance σ†"),
    ("sample", "sample z"),
    ("prior_sample", "prior sample z†"),
)


def image_grid(images, ncols: int = 10, ax=None, title: str | None = None, pad: int = 1):
    """Tile a batch of grey images into one picture and show it on ``ax``.

    Parameters
    ----------
    images : tensor or array ``(n, h, w)`` or ``(n, 1, h, w)`` with values in ``[0, 1]``
        (values outside are clipped for display).
    ncols : images per row; pad : pixels of white between images.
    ax : matplotlib axes (a new figure when ``None``).

    Returns
    -------
    the axes.
    """
    images = as_tensor(images, "images").detach().cpu()
    if images.dim() == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.dim() != 3 or images.shape[0] == 0:
        raise ValueError(f"images must be (n, h, w) or (n, 1, h, w), got {tuple(images.shape)}")
    ncols = min(check_positive_int(ncols, "ncols"), images.shape[0])
    check_positive_int(pad, "pad", allow_zero=True)
    n, h, w = images.shape
    nrows = math.ceil(n / ncols)
    canvas = np.zeros((nrows * (h + pad) + pad, ncols * (w + pad) + pad))  # 0 is white (gray_r)
    for i, img in enumerate(images.clamp(0, 1).numpy()):
        r, c = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        canvas[top : top + h, left : left + w] = img
    if ax is None:
        _, ax = plt.subplots(figsize=(ncols * 0.5, nrows * 0.5))
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def gaussian_ellipse(ax, mean, cov, n_std: float = 2.0, **style):
    """Draw the ``n_std``-standard-deviation contour of a 2-D Gaussian ``N(mean, cov)`` on ``ax``.

    ``style`` goes to matplotlib's ``Ellipse`` patch (e.g. ``edgecolor``, ``label``).
    Returns the patch.
    """
    mean = as_tensor(mean, "mean", dtype=torch.float64)
    cov = as_tensor(cov, "cov", dtype=torch.float64)
    if mean.shape != (2,) or cov.shape != (2, 2):
        raise ValueError(
            f"mean must be (2,) and cov (2, 2), got {tuple(mean.shape)}, {tuple(cov.shape)}"
        )
    if not torch.allclose(cov, cov.T):
        raise ValueError("cov must be symmetric")
    n_std = check_positive(n_std, "n_std")
    evals, evecs = torch.linalg.eigh(cov)
    if bool((evals <= 0).any()):
        raise ValueError("cov must be positive definite")
    angle = math.degrees(math.atan2(evecs[1, 1].item(), evecs[0, 1].item()))
    width, height = (2 * n_std * torch.sqrt(evals.flip(0))).tolist()
    style.setdefault("facecolor", "none")
    patch = Ellipse(mean.tolist(), width, height, angle=angle, **style)
    ax.add_patch(patch)
    return patch


def training_curves(histories: dict, keys=("elbo", "kl"), axes=None):
    """Plot ``history[key]`` against epochs for several labelled runs, one panel per key.

    ``histories`` maps a label (e.g. ``"β = 1"``) to a :class:`~vaebook.train.History`.
    Returns the array of axes.
    """
    if not histories:
        raise ValueError("histories must map at least one label to a History")
    keys = tuple(keys)
    if axes is None:
        _, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        axes = axes[0]
    for ax, key in zip(axes, keys, strict=True):
        for label, history in histories.items():
            if key not in history.terms:
                raise ValueError(f"keys: {key!r} is not in the history of {label!r}")
            ax.plot(history[key], label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
    axes[0].legend(fontsize="small")
    return axes


def latent_histograms(reps, j: int, axes=None, bins: int = 50, label: str | None = None):
    """Histograms of one latent's five representations over a dataset (Bonheme & Grzes, Figs. 1-4).

    Panels, left to right: the mean ``μ_j``, the variance ``σ_j`` and the prior variance
    ``σ†_j`` (Figs. 1-2), then the sampled ``z_j`` and the prior sample ``z†_j`` (Figs. 3-4).

    Parameters
    ----------
    reps : a :class:`vaebook.ivae.Representations` (arrays ``(n, κ)``).
    j : int, the latent to show.
    axes : five matplotlib axes (a new 1 x 5 figure when ``None``).
    bins : histogram bins per panel.
    label : text put before each panel's title (e.g. ``"latent 3 (active)"``).

    Returns
    -------
    the array of five axes.
    """
    values = {name: np.asarray(getattr(reps, name)) for name, _ in LATENT_PANELS}
    kappa = values["mean"].shape[1]
    if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not 0 <= j < kappa:
        raise ValueError(f"j must be an int in 0..{kappa - 1}, got {j!r}")
    check_positive_int(bins, "bins")
    if axes is None:
        _, axes = plt.subplots(1, len(LATENT_PANELS), figsize=(15, 2.6))
    axes = np.asarray(axes).ravel()
    if len(axes) != len(LATENT_PANELS):
        raise ValueError(f"axes must hold {len(LATENT_PANELS)} axes, got {len(axes)}")
    for ax, (name, title) in zip(axes, LATENT_PANELS, strict=True):
        ax.hist(values[name][:, j], bins=bins, color="C0" if "prior" not in name else "C1")
        ax.set_title(f"{label}: {title}" if label else title, fontsize="small")
        ax.set_yticks([])
    return axes
