"""Datasets of the book, all available offline.

The embedded real-image dataset is scikit-learn's 8x8 handwritten digits (1797 images, shipped
inside the scikit-learn wheel, so nothing is downloaded). dSprites is re-created procedurally
(:class:`~vaebook.sprites.Sprites`, rendered on demand); readers who have the official npz
file can load it with :func:`~vaebook.sprites.load_dsprites_npz` and use it through the same
interface. Both live in :mod:`vaebook.sprites` and are available from here too. The
synthetic datasets of the papers are generated from a seed.
"""

from __future__ import annotations

import gzip
import math
import os

import numpy as np
import torch

from .checks import as_tensor, check_choice, check_positive, check_positive_int
from .sprites import DSpritesNpz, FactorDataset, Sprites, load_dsprites_npz, render_sprites

__all__ = [
    "DSpritesNpz",
    "FactorDataset",
    "Sprites",
    "digit_exemplars",
    "digit_mixture",
    "digit_on_canvas",
    "digits",
    "ink_centroid",
    "linear_mixture",
    "lines_and_circles",
    "load_dsprites_npz",
    "load_mnist_idx",
    "manifold",
    "pinwheel",
    "render_sprites",
    "squares_and_hearts",
]

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


# --------------------------------------------------------------------------------------------
# Synthetic datasets of the papers. Each is seeded by ``seed`` and returns float64 tensors
# unless said otherwise.
# --------------------------------------------------------------------------------------------


def _generator(seed) -> torch.Generator:
    return torch.Generator().manual_seed(check_positive_int(seed, "seed", allow_zero=True))


def pinwheel(
    n: int = 400,
    arms: int = 4,
    radial_std: float = 0.1,
    tangential_std: float = 0.3,
    rate: float = 0.25,
    scale: float = 1.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spiral-arm "pinwheel" data of Johnson et al. (2016), as used by Mathieu et al. (2019).

    Each point of arm ``a`` starts at ``(1 + radial_std * e_1, tangential_std * e_2)`` with
    ``e ~ N(0, I)``, and is rotated by the angle ``2 pi a / arms + rate * exp(1 + radial_std e_1)``:
    points further out are turned further, which bends each arm into a spiral. The defaults are
    those of Mathieu et al. (Appendix B): 400 points in 4 arms, radial and tangential standard
    deviations 0.1 and 0.3, rate 0.25.

    Conventions, since reference implementations differ: the radial standard deviation acts
    along the radius (the first coordinate before the rotation) and the tangential one across
    it; no rescale is applied by default (``scale=1``), so the arms reach a radius of about 1.3.
    Johnson et al.'s original code multiplies by 10 (``scale=10``).

    Returns
    -------
    x : float64 ``(n, 2)``, the points, arm by arm; labels : int64 ``(n,)``, the arm of each.
    """
    check_positive_int(n, "n")
    check_positive_int(arms, "arms")
    for value, name in ((radial_std, "radial_std"), (tangential_std, "tangential_std")):
        check_positive(value, name, allow_zero=True)
    check_positive(rate, "rate", allow_zero=True)
    check_positive(scale, "scale")
    gen = _generator(seed)
    labels = torch.arange(n) * arms // n
    noise = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    radial = 1.0 + radial_std * noise[:, 0]
    tangential = tangential_std * noise[:, 1]
    # float64 before dividing: ``labels / arms`` alone would be float32 (the default dtype)
    angle = 2 * math.pi * labels.to(torch.float64) / arms + rate * torch.exp(radial)
    cos, sin = torch.cos(angle), torch.sin(angle)
    x = torch.stack([radial * cos - tangential * sin, radial * sin + tangential * cos], dim=1)
    return scale * x, labels


def linear_mixture(A, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of ``x = A s + eta`` with ``s ~ N(0, I_k)`` and ``eta ~ N(0, I_N)``.

    This is eq. (17) of Sikka et al. (2019): ``A`` (``N x k``) mixes ``k`` independent
    Gaussian sources into ``N`` observed coordinates with unit-variance noise.

    Returns
    -------
    x : float64 ``(n, N)``; s : float64 ``(n, k)``, the true sources.
    """
    A = as_tensor(A, "A", dtype=torch.float64)
    if A.dim() != 2:
        raise ValueError(f"A must be an (N, k) matrix, got shape {tuple(A.shape)}")
    check_positive_int(n, "n")
    gen = _generator(seed)
    s = torch.randn(n, A.shape[1], generator=gen, dtype=torch.float64)
    eta = torch.randn(n, A.shape[0], generator=gen, dtype=torch.float64)
    return s @ A.T + eta, s


def digit_mixture(k: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sikka et al.'s Section V data: ``k`` digit images mixed by Gaussian sources, plus noise.

    The columns of ``A`` are ``k`` digit images (64 pixels in ``[0, 1]``): the first image of
    each digit 0, 1, ..., k-1 in :func:`digits` (k <= 10; the paper uses MNIST digits, this book
    the embedded 8x8 ones). Then ``x = A s + eta`` as in :func:`linear_mixture`.

    Returns
    -------
    x : float64 ``(n, 64)``; s : float64 ``(n, k)``; A : float64 ``(64, k)``.
    """
    check_positive_int(k, "k")
    if k > 10:
        raise ValueError(f"k must be at most 10 (one image per digit), got {k}")
    images, labels = digits(torch.float64)
    first = [int(torch.nonzero(labels == digit)[0]) for digit in range(k)]
    A = images[first].reshape(k, -1).T.contiguous()
    x, s = linear_mixture(A, n, seed)
    return x, s, A


CANVAS_MIXING = ((2.73, 0.73), (0.73, 2.73))  # A_ij = 2 delta_ij + 0.73 (Sikka et al. Fig. 3)


def digit_on_canvas(
    n: int, canvas: int = 32, pixels_per_unit: float = 2.0, digit: int = 3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sikka et al.'s Fig. 3 data: one digit placed on a blank canvas at a random position.

    The position is ``p = A s + eta`` with ``A_ij = 2 delta_ij + 0.73``, ``s ~ N(0, I_2)`` and
    ``eta ~ N(0, I_2)`` (eq. 17 with N = k = 2). The digit (the first 8x8 image of ``digit``
    in :func:`digits`) is pasted with its centre at ``canvas / 2 + pixels_per_unit * p``,
    rounded to whole pixels and clipped so that the digit stays on the canvas (each coordinate
    of ``p`` has standard deviation ``sqrt(2.73^2 + 0.73^2 + 1) = 3.0``; with the defaults,
    positions beyond about 2 standard deviations are clipped).

    Returns
    -------
    images : float32 ``(n, canvas, canvas)`` in ``[0, 1]``; positions : float64 ``(n, 2)``, the
    unclipped ``p`` (x, y); s : float64 ``(n, 2)``, the sources.
    """
    check_positive_int(n, "n")
    check_positive_int(canvas, "canvas")
    if canvas < 8:
        raise ValueError(f"canvas must be at least 8 pixels (the digit's size), got {canvas}")
    check_positive(pixels_per_unit, "pixels_per_unit")
    check_positive_int(digit, "digit", allow_zero=True)
    if digit > 9:
        raise ValueError(f"digit must be 0..9, got {digit}")
    positions, s = linear_mixture(torch.tensor(CANVAS_MIXING), n, seed)
    images, labels = digits()
    sprite = images[int(torch.nonzero(labels == digit)[0])]
    corner = torch.round(canvas / 2 + pixels_per_unit * positions - 4).to(torch.int64)
    corner = corner.clamp(0, canvas - 8)  # (n, 2): left column, top row
    rows = corner[:, 1, None] + torch.arange(8)  # (n, 8)
    cols = corner[:, 0, None] + torch.arange(8)
    out = torch.zeros(n, canvas, canvas)
    out[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]] = sprite
    return out, positions, s


def ink_centroid(images) -> torch.Tensor:
    """The intensity-weighted centre of each image: where its ink is.

    For an image of one object on a blank canvas (:func:`digit_on_canvas`) it moves with the
    object pixel for pixel, so it reads the object's position back from the image.

    Parameters
    ----------
    images : ``(n, height, width)`` with entries ``>= 0`` and some ink in every image.

    Returns
    -------
    ``(n, 2)`` of the dtype of ``images`` (the default float dtype for integers): the (column, row)
    centre, i.e. (x, y) in pixels, with pixel ``[i, j]`` at ``x = j``, ``y = i``.
    """
    images = as_tensor(images, "images")  # finite; integers become the default float dtype
    if images.dim() != 3:
        raise ValueError(f"images must be (n, height, width), got shape {tuple(images.shape)}")
    if bool((images < 0).any()):
        raise ValueError("images must be >= 0 (intensities)")
    mass = images.sum((1, 2))
    if not bool((mass > 0).all()):
        empty = torch.nonzero(mass <= 0)[:, 0].tolist()
        raise ValueError(f"images must each hold some ink; blank images at {empty[:5]}")
    rows = torch.arange(images.shape[1], dtype=images.dtype, device=images.device)
    cols = torch.arange(images.shape[2], dtype=images.dtype, device=images.device)
    x = (images.sum(1) * cols).sum(1) / mass
    y = (images.sum(2) * rows).sum(1) / mass
    return torch.stack([x, y], 1)


def manifold(
    r: int, d: int, n: int, mode_std: float = 0.3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on a known ``r``-dimensional smooth manifold in ``R^d`` with a non-Gaussian density.

    Intrinsic coordinates ``u`` have independent bimodal entries,
    ``u_j ~ 1/2 N(-1, mode_std^2) + 1/2 N(1, mode_std^2)``. They are embedded by the smooth,
    injective map ``h(u) = (u_1, ..., u_r, 1/2 sin(pi u_1), ..., 1/2 sin(pi u_m))`` with
    ``m = min(r, d - r)``, followed by a fixed random orthonormal map ``Q`` (``d x (r + m)``,
    drawn from ``seed``): ``x = Q h(u)``. For ``r < d`` the data lie exactly on an
    ``r``-dimensional curved manifold (the case of Dai & Wipf's Section 3); for ``r = d``,
    ``h(u) = u`` and ``x = Q u`` has a non-Gaussian density on all of ``R^d`` (Section 2).

    Returns
    -------
    x : float64 ``(n, d)``; u : float64 ``(n, r)``, the intrinsic coordinates.
    """
    check_positive_int(r, "r")
    check_positive_int(d, "d")
    check_positive_int(n, "n")
    if r > d:
        raise ValueError(f"r must be at most d = {d}, got {r}")
    check_positive(mode_std, "mode_std")
    gen = _generator(seed)
    signs = torch.randint(0, 2, (n, r), generator=gen).to(torch.float64) * 2 - 1
    u = signs + mode_std * torch.randn(n, r, generator=gen, dtype=torch.float64)
    m = min(r, d - r)
    h = torch.cat([u, 0.5 * torch.sin(math.pi * u[:, :m])], dim=1)
    Q, _ = torch.linalg.qr(torch.randn(d, r + m, generator=gen, dtype=torch.float64))
    return h @ Q.T, u


def squares_and_hearts(
    n: int, resolution: int = 32, heart_share: float = 0.5, seed: int = 0
) -> tuple[torch.Tensor, np.ndarray]:
    """Sprites in which one factor exists for one shape only: squares move sideways, hearts do not.

    A square (scale class 5, orientation 0) sits at a uniformly drawn (posX, posY); a heart
    (same scale and orientation) at a uniformly drawn posY and always in the middle column
    (posX class 16 of 32). Horizontal position is a factor of the squares and not of the
    hearts, so a latent that encodes it is needed for some inputs and useless for others:
    the mixed variable of Bonheme & Grzes' Theorem 2 (iii).

    Parameters
    ----------
    n : int, number of images.
    resolution : int >= 16, side of the images in pixels.
    heart_share : float in (0, 1), the probability that an image is a heart.
    seed : int.

    Returns
    -------
    x : float32 ``(n, 1, resolution, resolution)`` of 0/1.
    factors : int64 ``(n, 5)`` dSprites classes (shape, scale, orientation, posX, posY), as
        :meth:`~vaebook.sprites.FactorDataset.sample_factors` returns them, so that
        ``Sprites(resolution).scaled_factors(factors)`` gives the iVAE's ``u``.
    """
    n = check_positive_int(n, "n")
    heart_share = check_positive(heart_share, "heart_share")
    if heart_share >= 1.0:
        raise ValueError(f"heart_share must be in (0, 1), got {heart_share}")
    sprites = Sprites(resolution)
    positions = sprites.factor_sizes[3]
    gen = _generator(seed)
    hearts = torch.rand(n, generator=gen) < heart_share
    pos_x = torch.randint(positions, (n,), generator=gen)
    pos_y = torch.randint(positions, (n,), generator=gen)
    factors = np.zeros((n, 5), dtype=np.int64)
    factors[:, 0] = np.where(hearts.numpy(), 2, 0)  # shape classes: 0 square, 2 heart
    factors[:, 1] = sprites.factor_sizes[1] - 1  # the largest scale
    factors[:, 3] = np.where(hearts.numpy(), positions // 2, pos_x.numpy())
    factors[:, 4] = pos_y.numpy()
    return sprites.observations(factors), factors


def lines_and_circles(
    kind: str, n: int = 600, noise: float = 0.01, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two-dimensional mixtures of lines or of circles of the high-capacity chapter (Fig. 4).

    The paper shows the data but does not give their parameters; this book fixes them:
    ``kind="lines"`` draws points uniformly along three segments of the square
    ``[-0.4, 0.4]^2``: from (-0.4, 0.3) to (0.4, 0.3), from (0.3, -0.4) to (0.3, 0.4) and
    from (-0.4, -0.4) to (0.1, 0.1); ``kind="circles"`` draws points uniformly on three
    circles, of radius 0.1 about (-0.2, -0.2), 0.15 about (0.2, -0.15) and 0.2 about (0, 0.2).
    Each point gets
    isotropic Gaussian noise of standard deviation ``noise``; components have equal weight.

    Returns
    -------
    x : float64 ``(n, 2)``; labels : int64 ``(n,)``, the line or circle of each point.
    """
    check_choice(kind, "kind", ("lines", "circles"))
    check_positive_int(n, "n")
    check_positive(noise, "noise", allow_zero=True)
    gen = _generator(seed)
    labels = torch.arange(n) * 3 // n
    t = torch.rand(n, generator=gen, dtype=torch.float64)
    if kind == "lines":
        starts = torch.tensor([[-0.4, 0.3], [0.3, -0.4], [-0.4, -0.4]], dtype=torch.float64)
        ends = torch.tensor([[0.4, 0.3], [0.3, 0.4], [0.1, 0.1]], dtype=torch.float64)
        x = starts[labels] + t[:, None] * (ends - starts)[labels]
    else:
        centres = torch.tensor([[-0.2, -0.2], [0.2, -0.15], [0.0, 0.2]], dtype=torch.float64)
        radii = torch.tensor([0.1, 0.15, 0.2], dtype=torch.float64)
        angle = 2 * math.pi * t
        ring = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        x = centres[labels] + radii[labels, None] * ring
    return x + noise * torch.randn(n, 2, generator=gen, dtype=torch.float64), labels


# --------------------------------------------------------------------------------------------
# MNIST's IDX files, for readers who have them.
# --------------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_mnist_idx(path) -> np.ndarray:
    """Read an IDX file (MNIST's ``train-images-idx3-ubyte`` and friends), gzipped or not.

    The format: two zero bytes, a type code (0x08 = uint8, ...), the number of dimensions,
    then each dimension as a big-endian uint32, then the data in row-major order.

    Returns
    -------
    numpy array of the stored type and shape, e.g. uint8 ``(60000, 28, 28)`` for MNIST images
    and uint8 ``(60000,)`` for labels.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"path {path} is a corrupt gzip file: {err}") from err
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"path {path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"path {path} is truncated: its header is incomplete")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"path {path} holds {len(raw) - header} data bytes but its header {shape} "
            f"needs {expected}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))
