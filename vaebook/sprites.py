"""dSprites ("2D Shapes"): the factor grid, a procedural renderer, and the official-file loader.

dSprites cannot be downloaded here, so :class:`Sprites` re-creates it: the same factor grid and
conventions as the official npz file, with images rendered on demand. Readers who have the
official file can load it with :func:`load_dsprites_npz` and use it through the same interface.
Both are available from :mod:`vaebook.data` too.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from .checks import check_positive_int

__all__ = [
    "DSpritesNpz",
    "FactorDataset",
    "Sprites",
    "load_dsprites_npz",
    "render_sprites",
]


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


LATENT_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")  # columns of latents_*
DSPRITES_LATENT_SIZES = (1, 3, 6, 40, 32, 32)  # colour first: 737,280 = 3 * 6 * 40 * 32 * 32
SPRITE_SHAPES = ("square", "ellipse", "heart")  # latents_values shape column: 1., 2., 3.
SPRITE_SCALES = _read_only(np.linspace(0.5, 1.0, 6))
SPRITE_ORIENTATIONS = _read_only(np.linspace(0.0, 2.0 * np.pi, 40))  # both ends, as the original
SPRITE_POSITIONS = _read_only(np.linspace(0.0, 1.0, 32))
SPRITE_RADIUS = 0.15  # radius of the disc holding any sprite at scale 1, in canvas widths
SPRITE_MARGIN = 0.2  # positions 0..1 map to centres 0.2..0.8 of the canvas width
MIN_RESOLUTION = 16

# The three shapes in template coordinates (x right, y up), each centred on the centre of its
# smallest enclosing disc and scaled so that disc is the unit disc.
_SQUARE_HALF_SIDE = 1.0 / np.sqrt(2.0)  # corners on the unit circle
_ELLIPSE_SEMI_MINOR = 0.5  # semi-axes 1 (along x at orientation 0) and 0.5
_HEART_SIZE, _HEART_SHIFT = 1.25, 0.25  # (X^2+Y^2-1)^3 <= X^2 Y^3 fits the disc |(X, Y-0.25)|<=1.25


def _in_square(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(x), np.abs(y)) <= _SQUARE_HALF_SIDE


def _in_ellipse(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    y = y / _ELLIPSE_SEMI_MINOR
    return x * x + y * y <= 1.0


def _in_heart(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = _HEART_SIZE * x
    y = _HEART_SIZE * y + _HEART_SHIFT
    x2, y2 = x * x, y * y
    r = x2 + y2 - 1.0
    return r * r * r <= x2 * y2 * y


_SHAPE_RULES = (_in_square, _in_ellipse, _in_heart)  # shape code k + 1 uses _SHAPE_RULES[k]


def _render(shape, cos_t, sin_t, scale, cx, cy, resolution: int) -> np.ndarray:
    """Rasterise sprites given per-image ``(n,)`` shape codes 1..3, ``cos``/``sin`` of the
    orientation, scale and centre ``(cx, cy)`` in canvas units (y down): uint8 ``(n, res, res)``.

    A pixel is foreground when its centre ``((j + 0.5) / res, (i + 0.5) / res)`` lies inside or
    on the rotated, scaled shape. Only a fixed window around each sprite, large enough to hold
    its enclosing disc, is evaluated; every pixel's value depends only on its own absolute
    coordinates and the image's factors, so the result does not depend on the window or the batch.
    """
    n, res = len(shape), resolution
    width = min(res, math.ceil(2.0 * SPRITE_RADIUS * res) + 3)
    top = np.clip(np.floor((cy - SPRITE_RADIUS) * res).astype(np.int64), 0, res - width)
    left = np.clip(np.floor((cx - SPRITE_RADIUS) * res).astype(np.int64), 0, res - width)
    steps = np.arange(width)
    inv_size = 1.0 / (scale * SPRITE_RADIUS)
    # Offsets from the centre of each pixel centre of the window, in template units (y up).
    dx = ((left[:, None] + steps + 0.5) / res - cx[:, None]) * inv_size[:, None]  # (n, width)
    dy = (cy[:, None] - (top[:, None] + steps + 0.5) / res) * inv_size[:, None]  # (n, width)
    out = np.zeros((n, res, res), dtype=np.uint8)
    for code, rule in enumerate(_SHAPE_RULES, start=1):
        rows = np.flatnonzero(shape == code)
        if rows.size == 0:
            continue
        c, s = cos_t[rows, None, None], sin_t[rows, None, None]
        dx_, dy_ = dx[rows, None, :], dy[rows, :, None]
        # Rotate the pixel by -orientation: the shape is rotated anticlockwise by orientation.
        inside = rule(c * dx_ + s * dy_, c * dy_ - s * dx_)  # (k, width, width)
        k, i, j = np.nonzero(inside)
        out[rows[k], top[rows[k]] + i, left[rows[k]] + j] = 1
    return out


def _centre(position: np.ndarray) -> np.ndarray:
    """Canvas coordinate (0..1) of the centre for positions 0..1: a central sub-range."""
    return SPRITE_MARGIN + position * (1.0 - 2.0 * SPRITE_MARGIN)


def _check_resolution(resolution) -> int:
    check_positive_int(resolution, "resolution")
    if resolution < MIN_RESOLUTION:
        raise ValueError(f"resolution must be >= {MIN_RESOLUTION}, got {resolution}")
    return resolution


def _as_int_array(value, name: str) -> np.ndarray:
    """``value`` (list, numpy array or tensor of integers) as an int64 numpy array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must hold integers, got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must hold integers, got {type(value).__name__}") from err
    if array.size == 0 and array.dtype.kind == "f":  # an empty list
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _as_values(value, name: str) -> np.ndarray:
    """``value`` (number, list, array or tensor of real numbers) as a finite float64 array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, (str, bytes, bool)) or value is None:
        raise TypeError(f"{name} must hold real numbers, got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must hold real numbers, got {type(value).__name__}") from err
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite, but it contains NaN or infinite values")
    return array


def render_sprites(shape, scale, orientation, pos_x, pos_y, resolution: int = 64) -> np.ndarray:
    """Render dSprites-style sprites from factor *values* (not only those on the grid).

    The geometry is the one documented in :class:`Sprites`, which renders its grid with this
    function's kernel; ``render_sprites`` also accepts values between the grid points (an
    orientation of exactly ``pi / 2``, a position of 0.5, ...).

    Parameters
    ----------
    shape : codes ``(n,)``, 1 (square), 2 (ellipse) or 3 (heart), as in ``latents_values``.
    scale : ``(n,)`` in ``(0, 1]``; orientation : ``(n,)`` radians, any real;
    pos_x, pos_y : ``(n,)`` in ``[0, 1]``. All five broadcast to a common 1-D shape ``(n,)``.
    resolution : int >= 16, the canvas side in pixels.

    Returns
    -------
    uint8 array ``(n, resolution, resolution)`` of 0/1 pixels, row ``i`` = y, column ``j`` = x.
    """
    resolution = _check_resolution(resolution)
    values = {
        "shape": _as_values(shape, "shape"),
        "scale": _as_values(scale, "scale"),
        "orientation": _as_values(orientation, "orientation"),
        "pos_x": _as_values(pos_x, "pos_x"),
        "pos_y": _as_values(pos_y, "pos_y"),
    }
    for name, array in values.items():
        if array.ndim > 1:
            raise ValueError(f"{name} must be a number or 1-D, got shape {array.shape}")
    try:
        arrays = np.broadcast_arrays(*(np.atleast_1d(a) for a in values.values()))
    except ValueError as err:
        shapes = {name: a.shape for name, a in values.items()}
        raise ValueError(
            f"shape, scale, orientation, pos_x, pos_y must broadcast: {shapes}"
        ) from err
    shape, scale, orientation, pos_x, pos_y = arrays
    if not np.isin(shape, (1.0, 2.0, 3.0)).all():
        raise ValueError("shape must hold 1 (square), 2 (ellipse) or 3 (heart)")
    if not ((scale > 0) & (scale <= 1)).all():
        raise ValueError("scale must be in (0, 1] (1 is the largest sprite the canvas holds)")
    for name, position in (("pos_x", pos_x), ("pos_y", pos_y)):
        if not ((position >= 0) & (position <= 1)).all():
            raise ValueError(f"{name} must be in [0, 1]")
    angle = np.mod(orientation, 2.0 * np.pi)  # 2 pi -> exactly 0: the same image as 0
    return _render(
        shape.astype(np.int64),
        np.cos(angle),
        np.sin(angle),
        scale,
        _centre(pos_x),
        _centre(pos_y),
        resolution,
    )


class FactorDataset:
    """A dataset of images indexed by discrete ground-truth factors, in dSprites conventions.

    Holds what :class:`Sprites` and :class:`DSpritesNpz` share: the grid of factor classes, the
    index <-> classes maps and the ground-truth protocol the disentanglement metrics use
    (:meth:`sample_factors`, :meth:`observations`). Subclasses only say how images are produced.

    Rows of ``latents_values`` / ``latents_classes`` have six columns ``LATENT_NAMES`` =
    (color, shape, scale, orientation, posX, posY); colour is constant (class 0, value 1.0).
    On a full grid in row-major order (posY fastest), the row of classes ``c`` is
    ``c @ strides`` with ``strides[k] = prod(latents_sizes[k + 1:])``; for dSprites
    ``strides = (737280, 245760, 40960, 1024, 32, 1)``.

    Its attributes: ``latents_sizes`` (6 ints, colour first) and ``factor_sizes`` (the last 5
    of them); ``factor_names`` = ``("shape", "scale", "orientation", "posX", "posY")``;
    ``resolution``, the side of the square images in pixels; ``strides``, int64 ``(6,)``.
    """

    factor_names = LATENT_NAMES[1:]

    def __init__(self, latents_sizes, resolution: int, n_rows: int) -> None:
        self.latents_sizes = tuple(int(size) for size in latents_sizes)
        self.factor_sizes = self.latents_sizes[1:]
        self.resolution = resolution
        self.strides = _read_only(
            np.array([math.prod(self.latents_sizes[k + 1 :]) for k in range(6)], dtype=np.int64)
        )
        self._n_rows = n_rows
        self._latents_classes: np.ndarray | None = None
        self._latents_values: np.ndarray | None = None
        # None: the rows are the full grid in row-major order, so row = classes @ strides.
        # Otherwise the rows' grid codes, sorted, and the row holding each of them.
        self._sorted_codes: np.ndarray | None = None
        self._row_of_sorted: np.ndarray | None = None

    def __len__(self) -> int:
        return self._n_rows

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, resolution={self.resolution})"

    @property
    def latents_classes(self) -> np.ndarray:
        """int64 ``(N, 6)`` factor classes of every row, colour first (built once, read-only)."""
        if self._latents_classes is None:
            self._latents_classes = _read_only(self._grid_classes(np.arange(len(self))))
        return self._latents_classes

    @property
    def latents_values(self) -> np.ndarray:
        """float64 ``(N, 6)`` factor values of every row, colour first (built once, read-only)."""
        if self._latents_values is None:
            self._latents_values = _read_only(self._values_of(self.latents_classes))
        return self._latents_values

    def index(self, classes) -> np.ndarray:
        """Rows holding the given factor classes.

        Parameters
        ----------
        classes : integers ``(n, 6)`` (colour first) or ``(n, 5)`` (without colour).

        Returns
        -------
        int64 array ``(n,)``; on the full grid ``classes @ strides`` (colour column 0).
        """
        return self._index(classes, "classes")

    def classes(self, indices) -> np.ndarray:
        """Factor classes of the given rows: int64 ``(n, 6)``, colour first, for ``(n,)`` rows."""
        rows = self._rows(indices, "indices")
        if self._sorted_codes is None:
            return self._grid_classes(rows)
        return self.latents_classes[rows]

    def images(self, indices) -> np.ndarray:
        """The images of the given rows ``(n,)``: uint8 ``(n, resolution, resolution)`` of 0/1."""
        return self._images(self._rows(indices, "indices"))

    def sample_factors(self, n: int, generator: torch.Generator) -> np.ndarray:
        """``n`` factor classes drawn uniformly: int64 ``(n, 5)`` (without colour).

        ``generator`` is a seeded CPU ``torch.Generator``; the same seed gives the same draws.
        On a full grid each factor is uniform and independent of the others; on a subset (a
        loaded file that is not the full grid) the rows present are drawn uniformly.
        """
        n = check_positive_int(n, "n", allow_zero=True)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU generator, got device {generator.device}")
        rows = torch.randint(len(self), (n,), generator=generator).numpy()
        return self.classes(rows)[:, 1:]

    def observations(self, factors) -> torch.Tensor:
        """Images of factor classes ``(n, 5)`` as a float32 tensor ``(n, 1, res, res)`` in [0, 1].

        ``factors`` are class indices without colour, as :meth:`sample_factors` returns them
        (``(n, 6)`` with colour is accepted too), as a numpy array or an integer tensor.

        Together with :meth:`sample_factors` this builds the batches of the metrics, e.g. with
        the scale (column 1) held fixed:

        >>> data = Sprites(resolution=32)
        >>> factors = data.sample_factors(64, torch.Generator().manual_seed(0))
        >>> factors[:, 1] = factors[0, 1]
        >>> data.observations(factors).shape
        torch.Size([64, 1, 32, 32])
        """
        images = self._images(self._index(factors, "factors"))
        return torch.from_numpy(images).to(torch.float32).unsqueeze(1)

    def scaled_factors(self, factors) -> torch.Tensor:
        """Factor classes ``(n, 5)`` scaled to [0, 1]: ``class / (size - 1)``, float32 ``(n, 5)``.

        The auxiliary variable ``u`` of the identifiable VAE chapter. A factor with one class
        (size 1) gives 0. ``(n, 6)`` with colour is accepted; the colour column is dropped.
        Orientation classes 0 and 39 draw the same image but get ``u = 0`` and ``u = 1``.
        """
        self._index(factors, "factors")  # validates the classes
        classes = _as_int_array(factors, "factors")[:, -5:]
        span = np.maximum(np.array(self.factor_sizes, dtype=np.float64) - 1.0, 1.0)
        return torch.from_numpy(classes / span).to(torch.float32)

    # -- shared helpers ---------------------------------------------------------------------

    def _grid_classes(self, rows: np.ndarray) -> np.ndarray:
        return (rows[:, None] // self.strides) % np.array(self.latents_sizes, dtype=np.int64)

    def _rows(self, indices, name: str) -> np.ndarray:
        rows = _as_int_array(indices, name)
        if rows.ndim != 1:
            raise ValueError(f"{name} must be 1-D (n,), got shape {rows.shape}")
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise ValueError(
                f"{name} must be in 0..{len(self) - 1}, got values in {rows.min()}..{rows.max()}"
            )
        return rows

    def _index(self, classes, name: str) -> np.ndarray:
        classes = _as_int_array(classes, name)
        if classes.ndim != 2 or classes.shape[1] not in (5, 6):
            raise ValueError(f"{name} must have shape (n, 6) or (n, 5), got {classes.shape}")
        first = 6 - classes.shape[1]  # 1 when the colour column is left out
        for col in range(classes.shape[1]):
            size, column = self.latents_sizes[first + col], classes[:, col]
            if column.size and (column.min() < 0 or column.max() >= size):
                raise ValueError(
                    f"{name}[:, {col}] ({LATENT_NAMES[first + col]}) must be in 0..{size - 1}, "
                    f"got values in {column.min()}..{column.max()}"
                )
        codes = classes @ self.strides[first:]
        if self._sorted_codes is None:
            return codes
        where = np.minimum(np.searchsorted(self._sorted_codes, codes), len(self) - 1)
        missing = self._sorted_codes[where] != codes
        if missing.any():
            raise ValueError(
                f"{name} row {int(np.argmax(missing))} is a factor combination this dataset "
                "does not hold (it is a subset of the grid)"
            )
        return self._row_of_sorted[where]

    def _images(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _values_of(self, classes: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Sprites(FactorDataset):
    """dSprites, rendered on demand: 737,280 binary images of a square, an ellipse or a heart.

    A faithful re-creation of the factor grid and conventions of dSprites (Matthey et al.,
    2017), not of its pixels: the original renderer is not published, so the sprites here come
    from the geometry below and differ from the official images pixel by pixel.

    The grid (``latents_sizes = (1, 3, 6, 40, 32, 32)``, colour first):
    colour 1.0 (one value); shape 1., 2., 3. = square, ellipse, heart; scale
    ``linspace(0.5, 1, 6)``; orientation ``linspace(0, 2 pi, 40)`` (both endpoints, so classes
    0 and 39 give the same image, as in the original); posX, posY ``linspace(0, 1, 32)``.
    Rows are in row-major order with posY fastest (see :class:`FactorDataset`).

    Geometry, in canvas units (the canvas is ``[0, 1]^2``, x to the right along columns,
    y *down* along rows, as the image is displayed):

    - position ``p`` maps to the centre ``0.2 + 0.6 p`` (``SPRITE_MARGIN = 0.2``), so posX = 0
      is left, posY = 0 is the top row;
    - every shape fits a disc of radius ``0.15 * scale`` (``SPRITE_RADIUS``) about its centre,
      so the largest sprite at any orientation keeps 0.05 of the width (3.2 pixels at 64) off
      the edge: no foreground pixel ever touches the border rows or columns, at any resolution
      >= 16;
    - square: side ``sqrt(2) * 0.15 * scale`` (corners on the disc); ellipse: semi-axes
      ``0.15 * scale`` (horizontal at orientation 0) and half that; heart: the curve
      ``(X^2 + Y^2 - 1)^3 <= X^2 Y^3``, upright (lobes up, point down), centred on the centre of
      its smallest enclosing disc (``(0, 0.25)``, radius 1.25) and scaled to the disc;
    - orientation rotates the shape anticlockwise on screen about its centre; angles are
      reduced modulo ``2 pi``, so ``2 pi`` renders exactly as 0;
    - coverage rule: a pixel is 1 when its centre ``((j + 0.5) / res, (i + 0.5) / res)`` lies
      inside or on the shape, else 0 (deterministic; no anti-aliasing).

    ``resolution`` (>= 16) renders the same scene on a coarser or finer pixel grid, e.g. 32 for
    CPU-scale chapters. Images are never stored: ``images`` renders any rows vectorised in
    numpy, the same row giving the same bytes every time.

    ``sample_factors`` takes a seeded CPU ``torch.Generator``.

    Parameters
    ----------
    resolution : int >= 16, default 64.
    """

    def __init__(self, resolution: int = 64) -> None:
        resolution = _check_resolution(resolution)
        super().__init__(DSPRITES_LATENT_SIZES, resolution, math.prod(DSPRITES_LATENT_SIZES))
        angle = np.mod(SPRITE_ORIENTATIONS, 2.0 * np.pi)  # class 39 (2 pi) -> exactly 0
        self._cos, self._sin = np.cos(angle), np.sin(angle)
        self._centres = _centre(SPRITE_POSITIONS)

    def __repr__(self) -> str:
        return f"Sprites(resolution={self.resolution})"

    def _images(self, rows: np.ndarray) -> np.ndarray:
        c = self._grid_classes(rows)
        return _render(
            c[:, 1] + 1,
            self._cos[c[:, 3]],
            self._sin[c[:, 3]],
            SPRITE_SCALES[c[:, 2]],
            self._centres[c[:, 4]],
            self._centres[c[:, 5]],
            self.resolution,
        )

    def _values_of(self, classes: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                np.ones(len(classes)),
                classes[:, 1] + 1.0,
                SPRITE_SCALES[classes[:, 2]],
                SPRITE_ORIENTATIONS[classes[:, 3]],
                SPRITE_POSITIONS[classes[:, 4]],
                SPRITE_POSITIONS[classes[:, 5]],
            ],
            axis=1,
        )


class DSpritesNpz(FactorDataset):
    """The images of a dSprites-format npz file, with the interface of :class:`Sprites`.

    Built by :func:`load_dsprites_npz`. The file may hold the full grid (the official file) or
    any subset of rows. The grid's sizes come from ``metadata['latents_sizes']`` when the file
    has it, else from ``latents_classes.max(0) + 1``. When the rows are the full grid in
    row-major order, ``index`` is the stride formula; otherwise it looks the classes up, and
    raises ``ValueError`` for a combination the file does not hold, while ``sample_factors``
    draws the rows present uniformly.

    Parameters
    ----------
    imgs : uint8 ``(N, H, H)``; latents_values : float ``(N, 6)``; latents_classes : int ``(N, 6)``.
    latents_sizes : optional 6 ints, colour first.
    """

    def __init__(self, imgs, latents_values, latents_classes, latents_sizes=None) -> None:
        imgs = np.asarray(imgs)
        if imgs.ndim != 3 or imgs.shape[1] != imgs.shape[2]:
            raise ValueError(f"imgs must have shape (N, H, H), got {imgs.shape}")
        if imgs.dtype.kind not in "biu":
            raise TypeError(f"imgs must hold 0/1 integers (uint8), got dtype {imgs.dtype}")
        n = len(imgs)
        classes = _as_int_array(latents_classes, "latents_classes")
        values = _as_values(latents_values, "latents_values")
        for name, array in (("latents_classes", classes), ("latents_values", values)):
            if array.shape != (n, 6):
                raise ValueError(
                    f"{name} must have shape ({n}, 6) to match imgs, got {array.shape}"
                )
        if n == 0:
            raise ValueError("imgs must hold at least one image")
        if classes.min() < 0:
            raise ValueError("latents_classes must be >= 0")
        if latents_sizes is None:
            latents_sizes = classes.max(0) + 1
        sizes = _as_int_array(latents_sizes, "latents_sizes")
        if sizes.shape != (6,) or sizes.min() < 1:
            raise ValueError(f"latents_sizes must be 6 ints >= 1, got {sizes.tolist()}")
        if (classes >= sizes).any():
            raise ValueError(f"latents_classes must be below latents_sizes {sizes.tolist()}")
        super().__init__(sizes.tolist(), imgs.shape[1], n)
        self._imgs = imgs
        self._latents_classes = _read_only(classes.copy())
        self._latents_values = _read_only(values.copy())
        codes = classes @ self.strides
        if n != math.prod(self.latents_sizes) or not np.array_equal(codes, np.arange(n)):
            order = np.argsort(codes, kind="stable")
            if (np.diff(codes[order]) == 0).any():
                raise ValueError("latents_classes must not repeat a row")
            self._sorted_codes, self._row_of_sorted = codes[order], order

    def _images(self, rows: np.ndarray) -> np.ndarray:
        return self._imgs[rows].astype(np.uint8, copy=False)


def load_dsprites_npz(path) -> DSpritesNpz:
    """Read a dSprites npz file (the official ``dsprites_ndarray_..._64x64.npz`` or a subset).

    The file holds ``imgs`` (N, 64, 64) uint8, ``latents_values`` (N, 6) float64,
    ``latents_classes`` (N, 6) int64 and optionally ``metadata`` (a pickled dict with
    ``latents_sizes``); it is read with ``np.load(path, allow_pickle=True, encoding='latin1')``.
    The official file decompresses to about 3 GB of images held in memory.

    Returns
    -------
    :class:`DSpritesNpz`, with the interface of :class:`Sprites`.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    with np.load(path, allow_pickle=True, encoding="latin1") as npz:
        missing = {"imgs", "latents_values", "latents_classes"} - set(npz.files)
        if missing:
            raise ValueError(f"path {path} is not a dSprites npz: it lacks {sorted(missing)}")
        sizes = None
        if "metadata" in npz.files:
            metadata = npz["metadata"][()]
            if isinstance(metadata, dict) and "latents_sizes" in metadata:
                sizes = metadata["latents_sizes"]
        return DSpritesNpz(npz["imgs"], npz["latents_values"], npz["latents_classes"], sizes)
