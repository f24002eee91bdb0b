"""Tests of vaebook.sprites: the procedural dSprites grid, renderer and npz loader."""

import time

import numpy as np
import pytest
import scipy.stats
import torch

from vaebook import data
from vaebook.sprites import DSpritesNpz, Sprites, load_dsprites_npz, render_sprites


def test_data_module_offers_the_sprites():
    assert data.Sprites is Sprites and data.load_dsprites_npz is load_dsprites_npz


DSPRITES_STRIDES = (737280, 245760, 40960, 1024, 32, 1)


@pytest.fixture(scope="module")
def sprites():
    return Sprites()


def _grid_rows(data, shapes, scales, orientations, xs, ys):
    """Rows of every combination of the given classes (product, posY fastest)."""
    grid = np.stack(np.meshgrid(shapes, scales, orientations, xs, ys, indexing="ij"), -1)
    return data.index(grid.reshape(-1, 5))


def _centroids(images):
    """Centroids ``(n, 2)`` (x, y) in pixel units, pixel ``j`` spanning ``[j, j + 1)``."""
    images = images.astype(np.float64)
    centres = np.arange(images.shape[-1]) + 0.5
    mass = images.sum((1, 2))
    return (
        np.stack([(images.sum(1) * centres).sum(1), (images.sum(2) * centres).sum(1)], 1)
        / (mass[:, None])
    )


def _reference_image(shape, scale, angle, pos_x, pos_y, res):
    """One sprite by brute force over the whole canvas, from the geometry in the docstring."""
    u = (np.arange(res) + 0.5) / res
    cx, cy = 0.2 + 0.6 * pos_x, 0.2 + 0.6 * pos_y
    dx, dy = u[None, :] - cx, cy - u[:, None]  # y up
    size = 0.15 * scale
    x = (np.cos(angle) * dx + np.sin(angle) * dy) / size
    y = (-np.sin(angle) * dx + np.cos(angle) * dy) / size
    if shape == 1:
        inside = np.maximum(np.abs(x), np.abs(y)) <= 1 / np.sqrt(2)
    elif shape == 2:
        inside = x**2 + (2 * y) ** 2 <= 1
    else:
        hx, hy = 1.25 * x, 1.25 * y + 0.25
        inside = (hx**2 + hy**2 - 1) ** 3 <= hx**2 * hy**3
    return inside.astype(np.uint8)


def test_sprites_grid_has_the_dsprites_factors_and_values(sprites):
    assert len(sprites) == 737280 == 3 * 6 * 40 * 32 * 32
    assert sprites.factor_sizes == (3, 6, 40, 32, 32)
    assert sprites.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    values, classes = sprites.latents_values, sprites.latents_classes
    assert values.shape == classes.shape == (737280, 6)
    assert values.dtype == np.float64 and classes.dtype == np.int64
    grids = [
        np.ones(1),
        np.array([1.0, 2.0, 3.0]),
        np.linspace(0.5, 1.0, 6),
        np.linspace(0, 2 * np.pi, 40),
        np.linspace(0, 1, 32),
        np.linspace(0, 1, 32),
    ]
    for k, grid in enumerate(grids):
        assert np.array_equal(np.unique(classes[:, k]), np.arange(len(grid)))
        assert np.array_equal(values[:, k], grid[classes[:, k]]), k
    assert np.array_equal(values[0], [1, 1, 0.5, 0, 0, 0])
    assert np.array_equal(values[-1], [1, 3, 1, 2 * np.pi, 1, 1])
    # Built once, then shared and read-only.
    assert sprites.latents_values is values and sprites.latents_classes is classes
    with pytest.raises(ValueError, match="read-only"):
        values[0, 0] = 2.0


def test_index_is_the_row_major_stride_formula_both_ways(sprites):
    assert tuple(sprites.strides) == DSPRITES_STRIDES
    classes = sprites.latents_classes
    assert np.array_equal(classes[1], [0, 0, 0, 0, 0, 1])  # posY fastest
    assert np.array_equal(classes[32], [0, 0, 0, 0, 1, 0])
    assert np.array_equal(classes[1024], [0, 0, 0, 1, 0, 0])
    assert np.array_equal(classes @ np.array(DSPRITES_STRIDES), np.arange(737280))
    assert sprites.index([[0, 2, 3, 4, 5, 6]]).tolist() == [
        2 * 245760 + 3 * 40960 + 4 * 1024 + 5 * 32 + 6
    ]
    rows = np.random.default_rng(0).integers(0, len(sprites), 5000)
    assert np.array_equal(sprites.classes(rows), classes[rows])
    assert np.array_equal(sprites.index(classes[rows]), rows)
    assert np.array_equal(sprites.index(classes[rows, 1:]), rows)  # without colour
    assert np.array_equal(sprites.index(torch.as_tensor(classes[rows, 1:])), rows)
    assert sprites.index(classes[rows]).dtype == np.int64
    random_classes = np.stack(
        [np.random.default_rng(k).integers(0, s, 1000) for k, s in enumerate((3, 6, 40, 32, 32))],
        1,
    )
    back = sprites.classes(sprites.index(random_classes))
    assert back.shape == (1000, 6) and np.array_equal(back[:, 1:], random_classes)
    assert not back[:, 0].any()


def test_images_are_binary_deterministic_and_independent_of_the_batch(sprites):
    rows = np.random.default_rng(1).integers(0, len(sprites), 300)
    images = sprites.images(rows)
    assert images.shape == (300, 64, 64) and images.dtype == np.uint8
    assert set(np.unique(images)) == {0, 1} and images.any((1, 2)).all()
    again = Sprites().images(rows)  # a second instance
    assert images.tobytes() == again.tobytes()
    perm = np.random.default_rng(2).permutation(300)
    assert np.array_equal(sprites.images(rows[perm]), images[perm])
    assert np.array_equal(sprites.images(rows[:1]), images[:1])
    assert np.array_equal(sprites.images(np.r_[rows[:5], rows[:5]]), np.r_[images[:5], images[:5]])
    assert sprites.images([]).shape == (0, 64, 64)


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_images_follow_the_documented_geometry_pixel_by_pixel(resolution):
    """Brute force over the whole canvas (the renderer only evaluates a window)."""
    data = Sprites(resolution)
    rows = np.random.default_rng(resolution).integers(0, len(data), 120)
    values = data.latents_values[rows]
    expected = np.stack([_reference_image(*v[1:], res=resolution) for v in values])
    images = data.images(rows)
    assert np.abs(images.astype(int) - expected).sum() <= 2  # at most a rounding-level tie
    assert np.array_equal(images, render_sprites(*values[:, 1:].T, resolution=resolution))


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_the_largest_sprites_stay_inside_the_canvas_at_the_extremes(resolution):
    data = Sprites(resolution)
    # All shapes x scale 1.0 x every orientation x posX, posY in {0, 1}: 480 sprites.
    images = data.images(_grid_rows(data, range(3), [5], range(40), [0, 31], [0, 31]))
    assert len(images) == 480 and images.any((1, 2)).all()
    border = np.concatenate(
        [images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1
    )
    assert not border.any()


def test_sprites_move_with_position_and_sit_at_the_documented_centre(sprites):
    for shape in range(3):
        for scale, orientation in ((0, 0), (5, 7), (2, 23)):
            along_x = sprites.images(
                _grid_rows(sprites, [shape], [scale], [orientation], range(32), [9])
            )
            along_y = sprites.images(
                _grid_rows(sprites, [shape], [scale], [orientation], [20], range(32))
            )
            cx, cy = _centroids(along_x).T, _centroids(along_y).T
            assert (np.diff(cx[0]) > 0).all() and np.ptp(cx[1]) < 0.5  # x moves, y stays
            assert (np.diff(cy[1]) > 0).all() and np.ptp(cy[0]) < 0.5  # y moves (down), x stays
            if shape < 2:  # square and ellipse: the centroid is the centre 0.2 + 0.6 * pos
                expected = 64 * (0.2 + 0.6 * np.linspace(0, 1, 32))
                assert np.abs(cx[0] - expected).max() < 0.5
                assert np.abs(cy[1] - expected).max() < 0.5


def test_area_grows_with_scale_like_its_square(sprites):
    for shape in range(3):
        for orientation, x, y in ((0, 0, 0), (11, 16, 30), (30, 31, 5)):
            areas = sprites.images(_grid_rows(sprites, [shape], range(6), [orientation], [x], [y]))
            areas = areas.sum((1, 2)).astype(float)
            assert (np.diff(areas) > 0).all()
            assert 3.4 < areas[-1] / areas[0] < 4.6  # (1.0 / 0.5)^2 = 4, up to pixelisation
    # The documented sizes at scale 1: square side sqrt(2) * 0.15, ellipse pi * 0.15 * 0.075.
    square, ellipse = sprites.images(_grid_rows(sprites, [0, 1], [5], [0], [16], [16])).sum((1, 2))
    assert abs(square - (np.sqrt(2) * 0.15 * 64) ** 2) < 0.1 * square
    assert abs(ellipse - np.pi * 0.15 * 0.075 * 64**2) < 0.1 * ellipse


def test_orientation_2pi_renders_exactly_as_0(sprites):
    rows_0 = _grid_rows(sprites, range(3), [0, 3, 5], [0], [0, 13, 31], [2, 31])
    rows_2pi = _grid_rows(sprites, range(3), [0, 3, 5], [39], [0, 13, 31], [2, 31])
    assert np.array_equal(sprites.images(rows_0), sprites.images(rows_2pi))
    rows_1 = _grid_rows(sprites, [2], [0, 3, 5], [1], [0, 13, 31], [2, 31])
    assert not np.array_equal(sprites.images(rows_0[-18:]), sprites.images(rows_1))
    assert np.array_equal(
        render_sprites(3, 0.8, 2 * np.pi, 0.3, 0.6), render_sprites(3, 0.8, 0, 0.3, 0.6)
    )


def test_a_square_turned_by_a_quarter_turn_is_the_same_square():
    # Not bit-exact in general: cos(pi / 2) is 6e-17, not 0, so a pixel centre lying within
    # rounding error of an edge may flip; allow 2 pixels per image.
    unrotated = render_sprites(1, [1.0, 0.5, 0.7], 0.0, [0.5, 0.3, 0.9], [0.5, 0.8, 0.1])
    quarter = render_sprites(1, [1.0, 0.5, 0.7], np.pi / 2, [0.5, 0.3, 0.9], [0.5, 0.8, 0.1])
    eighth = render_sprites(1, [1.0, 0.5, 0.7], np.pi / 4, [0.5, 0.3, 0.9], [0.5, 0.8, 0.1])
    assert (unrotated != quarter).sum((1, 2)).max() <= 2
    assert ((unrotated != eighth).sum((1, 2)) > 0.1 * unrotated.sum((1, 2))).all()


def test_orientation_turns_anticlockwise_about_the_centre():
    # At pos 0.5 the centre is a pixel corner of the 64 grid: np.rot90 (anticlockwise on
    # screen) maps the pixel centres onto themselves.
    for shape in (2, 3):
        upright, turned = render_sprites(shape, 1.0, [0.0, np.pi / 2], 0.5, 0.5)
        assert (turned != np.rot90(upright)).sum() <= 2
        assert (turned != upright).sum() > 0.2 * upright.sum()
    # The heart's point turns from the bottom to the right, not to the left.
    upright, turned = render_sprites(3, 1.0, [0.0, np.pi / 2], 0.5, 0.5)
    assert (turned != np.rot90(upright, -1)).sum() > 0.2 * upright.sum()
    cols = np.flatnonzero(turned.any(0))
    assert turned[:, cols[-1]].sum() <= 2 and turned[:, cols[0]].sum() > 2


def test_the_heart_is_an_upright_heart(sprites):
    heart = render_sprites(3, 1.0, 0.0, 0.5, 0.5)[0]  # centred on a pixel corner
    assert np.array_equal(heart, heart[:, ::-1])  # mirror symmetric
    assert (heart != heart[::-1]).sum() > 0.2 * heart.sum()  # not symmetric upside down
    rows = np.flatnonzero(heart.any(1))
    top, bottom = heart[rows[0]], heart[rows[-1]]
    # Two lobes with a notch between them on top, a point at the bottom.
    assert top[31] == top[32] == 0 and top[:31].any() and top[33:].any()
    assert bottom.sum() <= 2 and bottom[31] == bottom[32] == 1
    assert heart[rows[0] + 2].sum() > 3 * bottom.sum()
    # The grid's hearts are hearts too: mirror symmetric about the centre up to pixelisation.
    grid_heart = sprites.images(sprites.index([[2, 5, 0, 16, 16]]))[0]
    centre = _centroids(grid_heart[None])[0, 0]
    assert abs(centre - 64 * (0.2 + 0.6 * 16 / 31)) < 0.5


def test_resolution_32_renders_a_downsample_of_64(sprites):
    small = Sprites(resolution=32)
    assert small.resolution == 32 and len(small) == len(sprites)
    rows = np.random.default_rng(3).integers(0, len(sprites), 1000)
    low = small.images(rows).astype(bool)
    assert low.shape == (1000, 32, 32)
    high = sprites.images(rows).reshape(-1, 32, 2, 32, 2).mean((2, 4)) >= 0.5
    inter, union = (low & high).sum((1, 2)), (low | high).sum((1, 2))
    assert inter.sum() / union.sum() > 0.85
    assert np.median(inter / union) > 0.85 and (inter / union).min() > 0.4
    assert Sprites(16).images(rows[:3]).shape == (3, 16, 16)


def test_rendering_is_fast(sprites):
    rows = np.random.default_rng(4).integers(0, len(sprites), 1000)
    start = time.perf_counter()
    sprites.images(rows)
    assert time.perf_counter() - start < 1.0  # measured: ~0.01 s (10,000 images: ~0.1 s)


def test_sample_factors_is_uniform_in_range_and_seeded(sprites):
    factors = sprites.sample_factors(30000, torch.Generator().manual_seed(0))
    assert factors.shape == (30000, 5) and factors.dtype == np.int64
    for k, size in enumerate(sprites.factor_sizes):
        counts = np.bincount(factors[:, k], minlength=size)
        assert len(counts) == size  # nothing out of range
        assert scipy.stats.chisquare(counts).pvalue > 1e-4
    # Independent factors: shape and posX jointly uniform.
    joint = np.bincount(factors[:, 0] * 32 + factors[:, 3], minlength=96)
    assert scipy.stats.chisquare(joint).pvalue > 1e-4
    same = sprites.sample_factors(50, torch.Generator().manual_seed(7))
    assert np.array_equal(same, sprites.sample_factors(50, torch.Generator().manual_seed(7)))
    assert not np.array_equal(same, sprites.sample_factors(50, torch.Generator().manual_seed(8)))
    assert sprites.sample_factors(0, torch.Generator()).shape == (0, 5)


def test_observations_are_float_images_of_the_factors(sprites):
    gen = torch.Generator().manual_seed(1)
    factors = sprites.sample_factors(40, gen)
    factors[:, 1] = factors[0, 1]  # a batch with the scale held fixed
    x = sprites.observations(factors)
    assert x.shape == (40, 1, 64, 64) and x.dtype == torch.float32
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    rows = sprites.index(factors)
    assert torch.equal(x[:, 0], torch.as_tensor(sprites.images(rows), dtype=torch.float32))
    assert (sprites.latents_values[rows, 2] == sprites.latents_values[rows[0], 2]).all()
    assert torch.equal(sprites.observations(torch.as_tensor(factors)), x)
    assert Sprites(32).observations(factors).shape == (40, 1, 32, 32)


def _write_npz(path, data, rows, *, metadata=True, compressed=True):
    arrays = {
        "imgs": data.images(rows),
        "latents_values": data.latents_values[rows],
        "latents_classes": data.latents_classes[rows],
    }
    if metadata:  # as in the official file: a pickled dict
        arrays["metadata"] = np.array(
            {"latents_sizes": np.array([1, 3, 6, 40, 32, 32]), "latents_names": ("color",)},
            dtype=object,
        )
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return arrays


def test_load_dsprites_npz_round_trips_a_subset_of_the_grid(sprites, tmp_path):
    rows = np.random.default_rng(5).choice(len(sprites), 60, replace=False)
    written = _write_npz(tmp_path / "subset.npz", sprites, rows)
    loaded = load_dsprites_npz(tmp_path / "subset.npz")
    assert isinstance(loaded, DSpritesNpz) and len(loaded) == 60 and loaded.resolution == 64
    assert loaded.factor_sizes == (3, 6, 40, 32, 32)  # from metadata['latents_sizes']
    assert loaded.factor_names == sprites.factor_names
    assert np.array_equal(loaded.latents_values, written["latents_values"])
    assert np.array_equal(loaded.latents_classes, written["latents_classes"])
    assert np.array_equal(loaded.images(np.arange(60)), written["imgs"])
    perm = np.random.default_rng(6).permutation(60)
    assert np.array_equal(loaded.index(written["latents_classes"][perm]), perm)
    assert np.array_equal(loaded.index(written["latents_classes"][perm, 1:]), perm)
    assert np.array_equal(loaded.classes(perm), written["latents_classes"][perm])
    factors = loaded.sample_factors(200, torch.Generator().manual_seed(0))
    assert factors.shape == (200, 5)
    assert np.isin(sprites.index(factors), rows).all()  # only the combinations the file holds
    assert len(np.unique(sprites.index(factors))) > 40
    x = loaded.observations(factors)
    assert x.shape == (200, 1, 64, 64) and x.dtype == torch.float32
    assert torch.equal(x, sprites.observations(factors))
    absent = sprites.latents_classes[np.setdiff1d(np.arange(100), rows)[:1]]
    with pytest.raises(ValueError, match="classes row 0 is a factor combination"):
        loaded.index(absent)
    # Without metadata, the sizes are inferred from latents_classes.
    _write_npz(tmp_path / "bare.npz", sprites, rows, metadata=False, compressed=False)
    bare = load_dsprites_npz(str(tmp_path / "bare.npz"))
    assert bare.factor_sizes == tuple(int(m) + 1 for m in written["latents_classes"].max(0)[1:])
    assert np.array_equal(bare.index(written["latents_classes"]), np.arange(60))


def test_load_dsprites_npz_uses_the_stride_formula_on_a_full_grid(tmp_path):
    sizes = (1, 2, 3, 2, 2, 2)  # a full grid, row-major, posY fastest
    classes = np.stack(np.meshgrid(*map(np.arange, sizes), indexing="ij"), -1).reshape(-1, 6)
    imgs = np.random.default_rng(0).integers(0, 2, (48, 16, 16), dtype=np.uint8)
    np.savez(
        tmp_path / "grid.npz", imgs=imgs, latents_values=classes * 1.0, latents_classes=classes
    )
    grid = load_dsprites_npz(tmp_path / "grid.npz")
    assert len(grid) == 48 and grid.factor_sizes == (2, 3, 2, 2, 2) and grid.resolution == 16
    assert tuple(grid.strides) == (48, 24, 8, 4, 2, 1)
    assert np.array_equal(grid.index(classes), np.arange(48))
    assert np.array_equal(grid.classes(np.arange(48)), classes)
    assert np.array_equal(grid.images([47, 0]), imgs[[47, 0]])
    factors = grid.sample_factors(5, torch.Generator().manual_seed(0))
    assert torch.equal(
        grid.observations(factors)[:, 0],
        torch.as_tensor(imgs[grid.index(factors)] * 1.0, dtype=torch.float32),
    )


def test_load_dsprites_npz_rejects_bad_files(tmp_path):
    np.savez(tmp_path / "no_imgs.npz", latents_values=np.zeros((2, 6)))
    with pytest.raises(ValueError, match=r"lacks \['imgs', 'latents_classes'\]"):
        load_dsprites_npz(tmp_path / "no_imgs.npz")
    classes = np.zeros((2, 6), dtype=np.int64)
    np.savez(
        tmp_path / "twice.npz",
        imgs=np.zeros((2, 8, 8), np.uint8),
        latents_values=classes * 1.0,
        latents_classes=classes,
    )
    with pytest.raises(ValueError, match="latents_classes must not repeat a row"):
        load_dsprites_npz(tmp_path / "twice.npz")
    np.savez(
        tmp_path / "short.npz",
        imgs=np.zeros((3, 8, 8), np.uint8),
        latents_values=classes * 1.0,
        latents_classes=classes,
    )
    with pytest.raises(ValueError, match=r"latents_classes must have shape \(3, 6\)"):
        load_dsprites_npz(tmp_path / "short.npz")
    with pytest.raises(TypeError, match="path must be a str"):
        load_dsprites_npz(3)
    with pytest.raises(TypeError, match="imgs must hold 0/1 integers"):
        DSpritesNpz(np.zeros((2, 8, 8)), classes * 1.0, classes + np.arange(2)[:, None])


_CLASSES = np.zeros((2, 5), dtype=np.int64)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda _: Sprites(0), ValueError, "resolution must be > 0"),
        (lambda _: Sprites(8), ValueError, "resolution must be >= 16"),
        (lambda _: Sprites(32.0), TypeError, "resolution must be an int"),
        (lambda _: Sprites(True), TypeError, "resolution must be an int"),
        (lambda d: d.index(_CLASSES * 1.0), TypeError, "classes must hold integers"),
        (lambda d: d.index(_CLASSES[:, :4]), ValueError, r"classes must have shape \(n, 6\)"),
        (lambda d: d.index(_CLASSES[0]), ValueError, r"classes must have shape \(n, 6\)"),
        (
            lambda d: d.index([[3, 0, 0, 0, 0]]),
            ValueError,
            r"classes\[:, 0\] \(shape\) must be in 0..2",
        ),
        (lambda d: d.index([[0, 0, 40, 0, 0]]), ValueError, r"\(orientation\) must be in 0..39"),
        (lambda d: d.index([[0, 0, 0, -1, 0]]), ValueError, r"classes\[:, 3\] \(posX\)"),
        (lambda d: d.index([[1, 0, 0, 0, 0, 0]]), ValueError, r"classes\[:, 0\] \(color\)"),
        (lambda d: d.classes([737280]), ValueError, r"indices must be in 0..737279"),
        (lambda d: d.classes([-1]), ValueError, "indices must be in"),
        (lambda d: d.images([[0, 1]]), ValueError, r"indices must be 1-D"),
        (lambda d: d.images(5), ValueError, r"indices must be 1-D"),
        (lambda d: d.images([0.5]), TypeError, "indices must hold integers"),
        (lambda d: d.images("0"), TypeError, "indices must hold integers"),
        (lambda d: d.sample_factors(-1, torch.Generator()), ValueError, "n must be >= 0"),
        (lambda d: d.sample_factors(2.0, torch.Generator()), TypeError, "n must be an int"),
        (
            lambda d: d.sample_factors(2, np.random.default_rng(0)),
            TypeError,
            "generator must be a torch.Generator",
        ),
        (lambda d: d.sample_factors(2, None), TypeError, "generator must be a torch.Generator"),
        (lambda d: d.observations(_CLASSES[:, :3]), ValueError, r"factors must have shape"),
        (lambda d: d.observations([[0, 6, 0, 0, 0]]), ValueError, r"factors\[:, 1\] \(scale\)"),
        (lambda _: render_sprites(4, 1.0, 0.0, 0.5, 0.5), ValueError, "shape must hold 1"),
        (lambda _: render_sprites(1, 1.5, 0.0, 0.5, 0.5), ValueError, r"scale must be in \(0, 1\]"),
        (lambda _: render_sprites(1, 0.0, 0.0, 0.5, 0.5), ValueError, "scale must be in"),
        (
            lambda _: render_sprites(1, 1.0, np.nan, 0.5, 0.5),
            ValueError,
            "orientation must be finite",
        ),
        (
            lambda _: render_sprites(1, 1.0, 0.0, -0.1, 0.5),
            ValueError,
            r"pos_x must be in \[0, 1\]",
        ),
        (lambda _: render_sprites(1, 1.0, 0.0, 0.5, 1.1), ValueError, "pos_y must be in"),
        (lambda _: render_sprites("heart", 1.0, 0.0, 0.5, 0.5), TypeError, "shape must hold real"),
        (
            lambda _: render_sprites(1, [1.0, 0.5], 0.0, [0.1, 0.2, 0.3], 0.5),
            ValueError,
            "must broadcast",
        ),
        (
            lambda _: render_sprites(1, 1.0, 0.0, 0.5, 0.5, resolution=15),
            ValueError,
            "resolution must be >= 16",
        ),
    ],
)
def test_bad_sprites_input_raises_naming_the_argument(sprites, call, error, match):
    with pytest.raises(error, match=match):
        call(sprites)


# -- scaled_factors: the auxiliary variable u of the identifiable VAE chapter ------------------


def test_scaled_factors_are_classes_over_size_minus_one(sprites):
    factors = sprites.sample_factors(500, torch.Generator().manual_seed(3))
    u = sprites.scaled_factors(factors)
    assert u.shape == (500, 5) and u.dtype == torch.float32
    expected = factors / np.array([2.0, 5.0, 39.0, 31.0, 31.0])
    np.testing.assert_allclose(u.numpy(), expected, rtol=1e-7, atol=0)
    assert u.min().item() >= 0.0 and u.max().item() <= 1.0
    # The extremes of every factor map to exactly 0 and 1.
    extremes = np.array([[0, 0, 0, 0, 0], [2, 5, 39, 31, 31]])
    np.testing.assert_array_equal(sprites.scaled_factors(extremes).numpy(), [[0.0] * 5, [1.0] * 5])
    # Integer tensors and lists are accepted, as for observations.
    assert torch.equal(sprites.scaled_factors(torch.as_tensor(factors)), u)
    assert torch.equal(sprites.scaled_factors(factors[:3].tolist()), u[:3])


def test_scaled_factors_accepts_the_colour_column(sprites):
    factors = sprites.sample_factors(20, torch.Generator().manual_seed(4))
    with_colour = np.concatenate([np.zeros((20, 1), dtype=np.int64), factors], axis=1)
    assert torch.equal(sprites.scaled_factors(with_colour), sprites.scaled_factors(factors))
    assert sprites.scaled_factors(with_colour).shape == (20, 5)


@pytest.mark.parametrize(
    ("factors", "error", "match"),
    [
        ([[0, 0, 0, 32, 0]], ValueError, r"factors\[:, 3\] \(posX\) must be in 0..31"),
        ([[3, 0, 0, 0, 0]], ValueError, r"factors\[:, 0\] \(shape\) must be in 0..2"),
        ([[0, -1, 0, 0, 0]], ValueError, r"factors\[:, 1\] \(scale\)"),
        ([[0, 0, 40, 0, 0]], ValueError, r"factors\[:, 2\] \(orientation\)"),
        ([[1, 0, 0, 0, 0, 0]], ValueError, r"factors\[:, 0\] \(color\)"),
        ([[0, 0, 0, 0]], ValueError, r"factors must have shape \(n, 6\) or \(n, 5\)"),
        ([0, 0, 0, 0, 0], ValueError, "factors must have shape"),
        ([[0.5, 0, 0, 0, 0]], TypeError, "factors must hold integers"),
        ("factors", TypeError, "factors must hold integers"),
    ],
)
def test_scaled_factors_rejects_bad_classes_naming_factors(sprites, factors, error, match):
    with pytest.raises(error, match=match):
        sprites.scaled_factors(factors)
