"""Tests of vaebook.data: the offline digits, their seeded subsets, and the generated datasets."""

import gzip
import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from vaebook.data import (
    Sprites,
    digit_exemplars,
    digit_mixture,
    digit_on_canvas,
    digits,
    ink_centroid,
    linear_mixture,
    lines_and_circles,
    load_mnist_idx,
    manifold,
    pinwheel,
    squares_and_hearts,
)


@pytest.fixture(scope="module")
def all_digits():
    return digits()


def test_digits_are_sklearn_digits_scaled_to_the_unit_interval(all_digits):
    images, labels = all_digits
    bunch = load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (1797,) and labels.dtype == torch.int64
    assert images.min().item() == 0.0 and images.max().item() == 1.0
    torch.testing.assert_close(images * 16, torch.as_tensor(bunch.images, dtype=torch.float32))
    assert torch.equal(labels, torch.as_tensor(bunch.target))
    assert sorted(labels.unique().tolist()) == list(range(10))


def test_digits_honours_dtype(all_digits):
    images, _ = digits(torch.float64)
    assert images.dtype == torch.float64
    torch.testing.assert_close(images.float(), all_digits[0], rtol=0, atol=0)


@pytest.mark.parametrize("per_class", [1, 4, 174])
def test_digit_exemplars_has_per_class_images_of_each_digit_in_class_order(per_class):
    images, labels = digit_exemplars(per_class)
    assert images.shape == (10 * per_class, 8, 8)
    assert torch.equal(labels, torch.arange(10).repeat_interleave(per_class))


def test_digit_exemplars_are_distinct_images_of_digits_with_their_labels(all_digits):
    images, labels = digit_exemplars(5, seed=3)
    all_images, all_labels = all_digits
    # Each exemplar is exactly one of the digits (index by an exact pixel match).
    matches = (images[:, None] == all_images[None]).flatten(2).all(-1)  # (50, 1797)
    index = matches.float().argmax(1)
    assert bool(matches.any(1).all())
    assert torch.equal(all_labels[index], labels)
    assert index.unique().numel() == 50


def test_digit_exemplars_are_fixed_by_the_seed():
    a, b, c = digit_exemplars(4, seed=1), digit_exemplars(4, seed=1), digit_exemplars(4, seed=2)
    assert torch.equal(a[0], b[0])
    assert not torch.equal(a[0], c[0])
    assert digit_exemplars(4, seed=1, dtype=torch.float64)[0].dtype == torch.float64


@pytest.mark.parametrize(
    ("func", "kwargs", "error", "match"),
    [
        (digits, {"dtype": torch.int64}, TypeError, "dtype must be a floating"),
        (digits, {"dtype": "float32"}, TypeError, "dtype must be a floating"),
        (digit_exemplars, {"per_class": 0}, ValueError, "per_class must be > 0"),
        (digit_exemplars, {"per_class": 175}, ValueError, "per_class must be at most 174"),
        (digit_exemplars, {"per_class": 2.0}, TypeError, "per_class must be an int"),
        (digit_exemplars, {"per_class": 2, "seed": -1}, ValueError, "seed must be >= 0"),
        (digit_exemplars, {"per_class": 2, "dtype": torch.int32}, TypeError, "dtype"),
    ],
)
def test_bad_input_raises_naming_the_argument(func, kwargs, error, match):
    with pytest.raises(error, match=match):
        func(**kwargs)


# --------------------------------------------------------------------------------------------
# Synthetic datasets. Monte Carlo checks use a fixed seed and a tolerance of Z standard errors
# (SE); with Z = 5 a correct implementation fails with probability below 1e-6 per check.
# --------------------------------------------------------------------------------------------

Z = 5.0


def _cov(x):
    """Sample covariance (divisor n) of the rows of ``x``."""
    xc = x - x.mean(0)
    return xc.T @ xc / x.shape[0]


def _cov_se(sigma, n):
    """SE of each entry of a Gaussian sample covariance: sqrt((S_ii S_jj + S_ij^2) / n)."""
    var = torch.diagonal(sigma)
    return torch.sqrt((var[:, None] * var[None, :] + sigma**2) / n)


def _assert_balanced(labels, n, k):
    """Labels are floor(i k / n): in order, and the k counts differ by at most one."""
    assert labels.dtype == torch.int64 and labels.shape == (n,)
    assert torch.equal(labels, torch.div(torch.arange(n) * k, n, rounding_mode="floor"))
    counts = torch.bincount(labels, minlength=k)
    assert counts.numel() == k and int(counts.max() - counts.min()) <= 1


# pinwheel ------------------------------------------------------------------------------------


def _pinwheel_angle(rho, labels, arms, rate):
    return 2 * math.pi * labels.double() / arms + rate * torch.exp(rho)


def _unrotate(x, labels, arms, rate):
    """Recover (rho, tau) with x = R(2 pi a / arms + rate exp(rho)) (rho, tau), the documented map.

    The angle depends on the unknown rho, so rho solves g(rho) = 0 with g(rho) the first
    coordinate of R(-angle(rho)) x minus rho; Newton's method from rho = |x|, with
    g'(rho) = rate exp(rho) tau(rho) - 1. The caller checks the reconstruction.
    """
    rho = x.norm(dim=1)
    for _ in range(30):
        angle = _pinwheel_angle(rho, labels, arms, rate)
        cos, sin = torch.cos(angle), torch.sin(angle)
        tau = -sin * x[:, 0] + cos * x[:, 1]
        rho = rho - (cos * x[:, 0] + sin * x[:, 1] - rho) / (rate * torch.exp(rho) * tau - 1)
    angle = _pinwheel_angle(rho, labels, arms, rate)
    tau = -torch.sin(angle) * x[:, 0] + torch.cos(angle) * x[:, 1]
    return rho, tau, angle


@pytest.mark.parametrize(("n", "arms"), [(400, 4), (10, 4), (7, 3), (5, 5)])
def test_pinwheel_shapes_and_balanced_arms(n, arms):
    x, labels = pinwheel(n, arms=arms)
    assert x.shape == (n, 2) and x.dtype == torch.float64
    _assert_balanced(labels, n, arms)


def test_pinwheel_is_fixed_by_the_seed_and_scale_multiplies():
    a, b, c = pinwheel(seed=1), pinwheel(seed=1), pinwheel(seed=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.allclose(a[0], c[0]) and torch.equal(a[1], c[1])
    x10, labels10 = pinwheel(seed=1, scale=10.0)
    torch.testing.assert_close(x10, 10 * a[0], rtol=1e-15, atol=0)
    assert torch.equal(labels10, a[1])


@pytest.mark.parametrize(("arms", "rate"), [(4, 0.25), (3, 0.0), (5, 1.7)])
def test_noiseless_pinwheel_points_lie_on_the_unit_circle_at_the_arm_angle(arms, rate):
    # No noise: rho = 1, tau = 0, so the point is (cos t, sin t) with t = 2 pi a / arms + rate e.
    # A swapped pair of coordinates, a wrong sign or a wrong angle moves points by O(1).
    x, labels = pinwheel(60, arms=arms, radial_std=0.0, tangential_std=0.0, rate=rate)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(60, dtype=torch.float64))
    angle = 2 * math.pi * labels.double() / arms + rate * math.e
    # The angle of each point, mod 2 pi, equals the formula (compare on the circle: float64
    # rounding only, so 1e-12).
    got = torch.atan2(x[:, 1], x[:, 0])
    diff = torch.remainder(got - angle + math.pi, 2 * math.pi) - math.pi
    assert diff.abs().max().item() < 1e-12
    torch.testing.assert_close(
        x, torch.stack([torch.cos(angle), torch.sin(angle)], 1), rtol=0, atol=1e-12
    )


def test_pinwheel_radius_has_the_mean_of_the_unrotated_noisy_point():
    # The rotation preserves norms, so each radius is |(1 + 0.1 e1, 0.3 e2)|. Its mean is
    # computed independently by 2-D Gauss-Hermite quadrature (exact to ~1e-15 for this smooth
    # integrand); the sample mean of n radii is within Z standard errors std(r)/sqrt(n).
    n = 20000
    x, _ = pinwheel(n, radial_std=0.1, tangential_std=0.3, seed=3)
    radius = x.norm(dim=1)
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / math.sqrt(2 * math.pi)
    e1, e2 = np.meshgrid(nodes, nodes, indexing="ij")
    expected = float(
        np.sum(np.outer(weights, weights) * np.sqrt((1 + 0.1 * e1) ** 2 + (0.3 * e2) ** 2))
    )
    se = radius.std().item() / math.sqrt(n)
    assert abs(radius.mean().item() - expected) < Z * se
    # Swapping radial and tangential std would give a mean radius ~0.04 away (>> Z * se ~ 0.004).
    swapped = float(
        np.sum(np.outer(weights, weights) * np.sqrt((1 + 0.3 * e1) ** 2 + (0.1 * e2) ** 2))
    )
    assert abs(swapped - expected) > 4 * Z * se


@pytest.mark.parametrize(("radial_std", "tangential_std"), [(0.1, 0.3), (0.3, 0.1), (0.05, 0.0)])
def test_pinwheel_noise_acts_radially_and_tangentially_in_the_rotated_frame(
    radial_std, tangential_std
):
    # Un-rotating by the documented angle recovers (rho, tau) = (1 + radial_std e1,
    # tangential_std e2). The sample std of n normal values has SE sigma / sqrt(2 n); means
    # have SE sigma / sqrt(n).
    n, arms, rate = 20000, 4, 0.25
    x, labels = pinwheel(
        n, arms=arms, radial_std=radial_std, tangential_std=tangential_std, rate=rate, seed=4
    )
    rho, tau, angle = _unrotate(x, labels, arms, rate)
    rebuilt = torch.stack(
        [
            rho * torch.cos(angle) - tau * torch.sin(angle),
            rho * torch.sin(angle) + tau * torch.cos(angle),
        ],
        1,
    )
    torch.testing.assert_close(rebuilt, x, rtol=0, atol=1e-12)
    for value, mean, std in ((rho, 1.0, radial_std), (tau, 0.0, tangential_std)):
        if std == 0:
            assert value.sub(mean).abs().max().item() < 1e-12
            continue
        assert abs(value.mean().item() - mean) < Z * std / math.sqrt(n)
        assert abs(value.std().item() - std) < Z * std / math.sqrt(2 * n)
        assert abs(scipy.stats.skew(value.numpy())) < Z * math.sqrt(6 / n)  # Gaussian noise


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": 0}, ValueError, "n must be > 0"),
        ({"n": 10.0}, TypeError, "n must be an int"),
        ({"arms": 0}, ValueError, "arms must be > 0"),
        ({"radial_std": -0.1}, ValueError, "radial_std must be >= 0"),
        ({"tangential_std": float("nan")}, ValueError, "tangential_std must be finite"),
        ({"rate": -1.0}, ValueError, "rate must be >= 0"),
        ({"scale": 0.0}, ValueError, "scale must be > 0"),
        ({"scale": "big"}, TypeError, "scale must be a number"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
    ],
)
def test_pinwheel_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        pinwheel(**kwargs)


# linear_mixture and digit_mixture ------------------------------------------------------------

MIXING = torch.tensor(
    [[1.0, 0.5, 0.0], [-2.0, 0.3, 1.0], [0.0, 0.0, 3.0], [0.7, -1.2, 0.4], [0.1, 0.2, -0.5]],
    dtype=torch.float64,
)


def test_linear_mixture_noise_is_standard_normal_and_independent_of_the_sources():
    n = 20000
    x, s = linear_mixture(MIXING, n, seed=5)
    assert x.shape == (n, 5) and s.shape == (n, 3)
    assert x.dtype == torch.float64 and s.dtype == torch.float64
    eta = x - s @ MIXING.T
    eye = torch.eye(5, dtype=torch.float64)
    # Means of unit-variance values: SE 1 / sqrt(n). Covariance entries: _cov_se(I, n).
    assert eta.mean(0).abs().max().item() < Z / math.sqrt(n)
    assert bool(((_cov(eta) - eye).abs() < Z * _cov_se(eye, n)).all())
    assert bool(((_cov(s) - eye[:3, :3]).abs() < Z * _cov_se(eye[:3, :3], n)).all())
    # Cross-covariance of independent unit-variance values: SE 1 / sqrt(n).
    assert (s.T @ eta / n).abs().max().item() < Z / math.sqrt(n)


def test_linear_mixture_covariance_is_a_at_plus_identity():
    n = 20000
    x, _ = linear_mixture(MIXING.tolist(), n, seed=6)  # a nested list is accepted too
    sigma = MIXING @ MIXING.T + torch.eye(5, dtype=torch.float64)
    assert bool(((_cov(x) - sigma).abs() < Z * _cov_se(sigma, n)).all())
    assert x.mean(0).abs().max().item() < Z * torch.diagonal(sigma).sqrt().max().item() / math.sqrt(
        n
    )


def test_linear_mixture_is_fixed_by_the_seed():
    a, b, c = (linear_mixture(MIXING, 50, seed=k) for k in (1, 1, 2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.allclose(a[0], c[0]) and not torch.allclose(a[1], c[1])


@pytest.mark.parametrize(
    ("A", "n", "error", "match"),
    [
        (torch.ones(3), 10, ValueError, r"A must be an \(N, k\) matrix"),
        (torch.ones(2, 2, 2), 10, ValueError, r"A must be an \(N, k\) matrix"),
        (torch.tensor([[1.0, float("nan")]]), 10, ValueError, "A must be finite"),
        (torch.tensor([[1.0], [float("inf")]]), 10, ValueError, "A must be finite"),
        ("A", 10, TypeError, "A must be a tensor"),
        (torch.ones(2, 2), 0, ValueError, "n must be > 0"),
        (torch.ones(2, 2), 5.0, TypeError, "n must be an int"),
    ],
)
def test_linear_mixture_bad_input(A, n, error, match):
    with pytest.raises(error, match=match):
        linear_mixture(A, n)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_digit_mixture_columns_are_the_first_image_of_each_digit(k):
    x, s, A = digit_mixture(k, 40, seed=7)
    bunch = load_digits()
    first = [bunch.images[np.flatnonzero(bunch.target == d)[0]].ravel() / 16 for d in range(k)]
    expected = torch.as_tensor(np.stack(first, 1), dtype=torch.float64)
    assert A.shape == (64, k) and A.dtype == torch.float64
    torch.testing.assert_close(A, expected, rtol=0, atol=0)
    assert x.shape == (40, 64) and s.shape == (40, k)
    x_ref, s_ref = linear_mixture(expected, 40, seed=7)
    assert torch.equal(x, x_ref) and torch.equal(s, s_ref)


@pytest.mark.parametrize(
    ("k", "error", "match"),
    [
        (11, ValueError, "k must be at most 10"),
        (0, ValueError, "k must be > 0"),
        (-2, ValueError, "k must be > 0"),
        (2.0, TypeError, "k must be an int"),
    ],
)
def test_digit_mixture_bad_k(k, error, match):
    with pytest.raises(error, match=match):
        digit_mixture(k, 10)


# digit_on_canvas -----------------------------------------------------------------------------

PAPER_CANVAS_MIXING = torch.tensor([[2.73, 0.73], [0.73, 2.73]], dtype=torch.float64)


def _first_digit(digit):
    bunch = load_digits()
    image = bunch.images[np.flatnonzero(bunch.target == digit)[0]] / 16
    return torch.as_tensor(image, dtype=torch.float32)


@pytest.mark.parametrize(("canvas", "ppu", "digit"), [(32, 2.0, 3), (20, 0.5, 0), (8, 1.0, 9)])
def test_digit_on_canvas_pastes_the_whole_digit_at_the_rounded_clipped_position(canvas, ppu, digit):
    n = 400
    images, positions, s = digit_on_canvas(n, canvas, ppu, digit, seed=8)
    assert images.shape == (n, canvas, canvas) and images.dtype == torch.float32
    assert positions.shape == (n, 2) and s.shape == (n, 2) and positions.dtype == torch.float64
    assert images.min().item() >= 0.0 and images.max().item() <= 1.0
    sprite = _first_digit(digit)
    # Documented placement: top-left corner round(canvas / 2 + ppu p - 4), clipped to the canvas;
    # column from p_x, row from p_y.
    raw = np.rint(canvas / 2 + ppu * positions.numpy() - 4).astype(np.int64)
    corner = np.clip(raw, 0, canvas - 8)
    if canvas == 32:  # the defaults clip some positions (beyond ~2 sd) but not most
        clipped = (raw != corner).any(1)
        assert 0 < clipped.sum() < n // 4
    # Find the placement from the image alone: the cross-correlation with the sprite is at most
    # |sprite|^2, with equality only where the window equals the sprite (Cauchy-Schwarz).
    corr = F.conv2d(images[:, None].double(), sprite[None, None].double())[:, 0]
    flat = corr.flatten(1).argmax(1)
    width = canvas - 7
    torch.testing.assert_close(
        corr.flatten(1).max(1).values,
        torch.full((n,), sprite.double().square().sum().item(), dtype=torch.float64),
    )
    assert np.array_equal((flat // width).numpy(), corner[:, 1])  # rows follow p_y
    assert np.array_equal((flat % width).numpy(), corner[:, 0])  # columns follow p_x
    for i in range(n):
        col, row = corner[i]
        assert torch.equal(images[i, row : row + 8, col : col + 8], sprite)
        rest = images[i].clone()
        rest[row : row + 8, col : col + 8] = 0
        assert not rest.any()  # nothing but the sprite


def test_digit_on_canvas_positions_are_the_papers_linear_mixture():
    n = 20000  # canvas 8 keeps the images small; positions do not depend on the canvas
    _, positions, s = digit_on_canvas(n, canvas=8, seed=9)
    sigma = PAPER_CANVAS_MIXING @ PAPER_CANVAS_MIXING.T + torch.eye(2, dtype=torch.float64)
    assert bool(((_cov(positions) - sigma).abs() < Z * _cov_se(sigma, n)).all())
    eye = torch.eye(2, dtype=torch.float64)
    eta = positions - s @ PAPER_CANVAS_MIXING.T
    assert bool(((_cov(eta) - eye).abs() < Z * _cov_se(eye, n)).all())
    assert bool(((_cov(s) - eye).abs() < Z * _cov_se(eye, n)).all())
    assert eta.mean(0).abs().max().item() < Z / math.sqrt(n)
    a, b = digit_on_canvas(5, seed=1), digit_on_canvas(5, seed=1)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[1], digit_on_canvas(5, seed=2)[1])


def test_digit_on_canvas_centroid_moves_with_the_position():
    # The intensity centroid is the sprite's centroid plus the corner, i.e. about ppu * p up to
    # rounding and clipping, so it correlates strongly (> 0.9) with the coordinate it follows;
    # with swapped axes the correlation would be that of p_x with p_y, about 0.44.
    images, positions, _ = digit_on_canvas(2000, seed=10)
    grid = torch.arange(32, dtype=torch.float64)
    mass = images.double().sum((1, 2))
    centroid_col = (images.double().sum(1) * grid).sum(1) / mass
    centroid_row = (images.double().sum(2) * grid).sum(1) / mass
    corr = np.corrcoef(np.stack([centroid_col, centroid_row, positions[:, 0], positions[:, 1]]))
    assert corr[0, 2] > 0.9 and corr[1, 3] > 0.9
    assert corr[0, 3] < 0.6 and corr[1, 2] < 0.6


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"canvas": 7}, ValueError, "canvas must be at least 8"),
        ({"canvas": 0}, ValueError, "canvas must be > 0"),
        ({"digit": 10}, ValueError, "digit must be 0..9"),
        ({"digit": -1}, ValueError, "digit must be >= 0"),
        ({"pixels_per_unit": -1.0}, ValueError, "pixels_per_unit must be > 0"),
        ({"pixels_per_unit": 0.0}, ValueError, "pixels_per_unit must be > 0"),
        ({"n": 0}, ValueError, "n must be > 0"),
    ],
)
def test_digit_on_canvas_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        digit_on_canvas(**{"n": 4, **kwargs})


# ink_centroid --------------------------------------------------------------------------------


def test_ink_centroid_of_a_single_lit_pixel_is_that_pixel():
    images = torch.zeros(3, 5, 7)
    images[0, 1, 4] = 0.3  # row 1, column 4
    images[1, 4, 0] = 2.0
    images[2, 0, 6] = 1.0
    torch.testing.assert_close(
        ink_centroid(images), torch.tensor([[4.0, 1.0], [0.0, 4.0], [6.0, 0.0]])
    )


def test_ink_centroid_is_the_weighted_mean_of_the_pixel_coordinates(gen):
    images = torch.rand(4, 6, 9, generator=gen, dtype=torch.float64)
    rows, cols = np.indices((6, 9))
    for image, (x, y) in zip(images.numpy(), ink_centroid(images).numpy(), strict=True):
        assert x == pytest.approx(np.average(cols, weights=image), rel=1e-14)
        assert y == pytest.approx(np.average(rows, weights=image), rel=1e-14)
    assert ink_centroid(images).dtype == torch.float64


def test_ink_centroid_reads_back_the_corner_of_digit_on_canvas():
    # The sprite is pasted whole at its corner, so the centroid is the corner plus the sprite's
    # own centroid, and it recovers the position to within the rounding (0.5 / ppu) when the
    # corner is not clipped.
    canvas, ppu = 24, 1.5
    images, positions, _ = digit_on_canvas(500, canvas, ppu, seed=4)
    sprite = _first_digit(3)
    raw = np.rint(canvas / 2 + ppu * positions.numpy() - 4)
    corner = np.clip(raw, 0, canvas - 8)
    offset = ink_centroid(sprite[None])[0].numpy()
    np.testing.assert_allclose(ink_centroid(images).numpy(), corner + offset, atol=1e-5)
    estimate = (ink_centroid(images).double().numpy() - offset + 4 - canvas / 2) / ppu
    inside = (raw == corner).all(1)
    assert 0.8 * len(inside) < inside.sum() < len(inside)
    assert np.abs(estimate - positions.numpy())[inside].max() <= 0.5 / ppu + 1e-5


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.ones(4, 4), ValueError, r"^images must be \(n, height, width\), got shape \(4, 4\)"),
        (-torch.ones(2, 3, 3), ValueError, r"^images must be >= 0"),
        (
            torch.zeros(2, 3, 3),
            ValueError,
            r"^images must each hold some ink; blank images at \[0, 1\]",
        ),
        (torch.full((1, 2, 2), float("nan")), ValueError, r"^images must be finite"),
        ("image", TypeError, r"^images must be a tensor"),
    ],
)
def test_ink_centroid_bad_input(images, error, match):
    with pytest.raises(error, match=match):
        ink_centroid(images)


# manifold ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("r", "d"), [(1, 3), (2, 5), (3, 4), (1, 2)])
def test_manifold_is_an_isometric_copy_of_the_documented_embedding(r, d):
    # Sound check of "x lies on an r-dimensional smooth manifold": x = Q h(u) with the
    # documented h and an orthonormal Q. (1) x is an exact linear function of h(u): least
    # squares fits it with residual ~0 and the fitted map has orthonormal rows (W W^T = I);
    # (2) x spans r + m > r dimensions, so the manifold is curved, not a flat subspace; (3) the
    # map u -> x is bi-Lipschitz, |u - v| <= |x - y| <= sqrt(1 + pi^2 / 4) |u - v|, hence
    # injective with an r-dimensional image. A wrong h, a non-orthonormal Q or a lost
    # coordinate fails one of these.
    n = 300
    x, u = manifold(r, d, n, seed=11)
    assert x.shape == (n, d) and u.shape == (n, r) and x.dtype == u.dtype == torch.float64
    m = min(r, d - r)
    h = torch.cat([u, 0.5 * torch.sin(math.pi * u[:, :m])], 1)
    W = torch.linalg.lstsq(h, x).solution  # (r + m, d)
    torch.testing.assert_close(h @ W, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(W @ W.T, torch.eye(r + m, dtype=torch.float64), rtol=0, atol=1e-10)
    sv = torch.linalg.svdvals(x - x.mean(0))
    assert sv[r + m - 1] > 1e-2 * sv[0] and bool((sv[r + m :] < 1e-10 * sv[0]).all())
    dx = (x[:, None] - x[None]).norm(dim=-1)  # exact differences (cdist's matmul path is not)
    du = (u[:, None] - u[None]).norm(dim=-1)
    assert bool((dx >= du - 1e-12).all())
    assert bool((dx <= math.sqrt(1 + math.pi**2 / 4) * du + 1e-12).all())


@pytest.mark.parametrize("d", [1, 3])
def test_manifold_with_r_equal_d_is_an_orthonormal_map_of_u(d):
    x, u = manifold(d, d, 200, seed=12)
    assert x.shape == (200, d)
    torch.testing.assert_close(x @ x.T, u @ u.T, rtol=0, atol=1e-10)  # x = Q u, Q orthogonal
    torch.testing.assert_close(x.norm(dim=1), u.norm(dim=1), rtol=0, atol=1e-12)
    assert int(torch.linalg.matrix_rank(x)) == d


@pytest.mark.parametrize("mode_std", [0.3, 0.15])
def test_manifold_coordinates_are_a_bimodal_mixture(mode_std):
    # u_j ~ 1/2 N(-1, s^2) + 1/2 N(1, s^2): the fraction above 0 is 1/2 up to P(sign flip);
    # E|u| = E|1 + s Z| = s sqrt(2/pi) exp(-1/(2 s^2)) + 1 - 2 Phi(-1/s); the KS test compares
    # the whole CDF, and the sign of one coordinate is independent of the other's.
    n, r = 20000, 2
    _, u = manifold(r, 4, n, mode_std=mode_std, seed=13)
    values = u.flatten().numpy()
    count = values.size
    assert abs((values > 0).mean() - 0.5) < Z * 0.5 / math.sqrt(count)
    phi = scipy.stats.norm.cdf
    mean_abs = (
        mode_std * math.sqrt(2 / math.pi) * math.exp(-0.5 / mode_std**2)
        + 1
        - 2 * phi(-1 / mode_std)
    )
    assert abs(np.abs(values).mean() - mean_abs) < Z * np.abs(values).std() / math.sqrt(count)

    # Spread within a mode: E(|u| - 1)^2 = E(|1 + s Z| - 1)^2
    # = s^2 + 4 Phi(-1/s) - 4 s phi(1/s) (the sign flips below -1/s), SE std / sqrt(count).
    spread = (np.abs(values) - 1) ** 2
    expected = (
        mode_std**2 + 4 * phi(-1 / mode_std) - 4 * mode_std * scipy.stats.norm.pdf(1 / mode_std)
    )
    assert abs(spread.mean() - expected) < Z * spread.std() / math.sqrt(count)

    def cdf(t):
        return 0.5 * phi((t + 1) / mode_std) + 0.5 * phi((t - 1) / mode_std)

    assert scipy.stats.kstest(values, cdf).pvalue > 1e-3
    # A Gaussian of the same variance 1 + s^2 would put ~1/4 of its mass in |u| < 0.3; the
    # mixture puts almost none there.
    assert (np.abs(values) < 0.3).mean() < 0.02
    signs = np.sign(u.numpy())
    assert abs((signs[:, 0] * signs[:, 1]).mean()) < Z / math.sqrt(n)


def test_manifold_is_fixed_by_the_seed_and_rejects_bad_input():
    a, b, c = manifold(2, 3, 20, seed=1), manifold(2, 3, 20, seed=1), manifold(2, 3, 20, seed=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.allclose(a[1], c[1])
    for args, kwargs, error, match in [
        ((3, 2, 10), {}, ValueError, "r must be at most d = 2"),
        ((0, 2, 10), {}, ValueError, "r must be > 0"),
        ((1, 0, 10), {}, ValueError, "d must be > 0"),
        ((1, 2, 0), {}, ValueError, "n must be > 0"),
        ((1, 2, 10), {"mode_std": 0.0}, ValueError, "mode_std must be > 0"),
        ((1, 2, 10), {"seed": -3}, ValueError, "seed must be >= 0"),
    ]:
        with pytest.raises(error, match=match):
            manifold(*args, **kwargs)


# lines_and_circles ---------------------------------------------------------------------------

# The book's fixed segments (the paper shows but does not give them; data.py documents them as
# a horizontal, a vertical and a diagonal segment of [-0.4, 0.4]^2): start and end points.
SEGMENTS = torch.tensor(
    [[[-0.4, 0.3], [0.4, 0.3]], [[0.3, -0.4], [0.3, 0.4]], [[-0.4, -0.4], [0.1, 0.1]]],
    dtype=torch.float64,
)
RADII = torch.tensor([0.1, 0.15, 0.2], dtype=torch.float64)


def _segment_coordinates(x, labels):
    """Position t along each point's segment (unclamped) and the distance to the segment."""
    start, end = SEGMENTS[labels, 0], SEGMENTS[labels, 1]
    direction = end - start
    t = ((x - start) * direction).sum(1) / direction.square().sum(1)
    nearest = start + t.clamp(0, 1)[:, None] * direction
    return t, (x - nearest).norm(dim=1)


def _fit_circles(x, labels):
    """Algebraic circle fit per label: |p|^2 = 2 c.p + (r^2 - |c|^2), exact for exact circles."""
    centres, radii = [], []
    for c in range(3):
        p = x[labels == c]
        design = torch.cat([2 * p, torch.ones(len(p), 1, dtype=p.dtype)], 1)
        a, b, k = torch.linalg.lstsq(design, p.square().sum(1, keepdim=True)).solution[:, 0]
        centres.append(torch.stack([a, b]))
        radii.append(torch.sqrt(k + a**2 + b**2))
    return torch.stack(centres), torch.stack(radii)


def test_noiseless_lines_lie_on_their_segments_uniformly():
    n = 3000
    x, labels = lines_and_circles("lines", n, noise=0.0, seed=14)
    assert x.shape == (n, 2) and x.dtype == torch.float64
    _assert_balanced(labels, n, 3)
    assert x.abs().max().item() <= 0.4 + 1e-12  # inside the square [-0.4, 0.4]^2
    t, dist = _segment_coordinates(x, labels)
    assert dist.max().item() < 1e-12
    for c in range(3):  # uniform along each segment, filling it
        assert scipy.stats.kstest(t[labels == c].numpy(), "uniform").pvalue > 1e-3
    # horizontal, vertical and diagonal (slope 1), as documented
    assert torch.equal(x[labels == 0, 1], torch.full_like(x[labels == 0, 1], 0.3))
    assert torch.equal(x[labels == 1, 0], torch.full_like(x[labels == 1, 0], 0.3))
    torch.testing.assert_close(x[labels == 2, 0], x[labels == 2, 1], rtol=0, atol=1e-15)


def test_noiseless_circles_lie_on_circles_of_the_documented_radii_uniformly():
    n = 3000
    x, labels = lines_and_circles("circles", n, noise=0.0, seed=15)
    _assert_balanced(labels, n, 3)
    centres, radii = _fit_circles(x, labels)
    torch.testing.assert_close(radii, RADII, rtol=0, atol=1e-12)
    offset = x - centres[labels]
    torch.testing.assert_close(offset.norm(dim=1), RADII[labels], rtol=0, atol=1e-12)
    for c in range(3):  # uniform angle around each circle
        angle = torch.atan2(offset[labels == c, 1], offset[labels == c, 0])
        fraction = (angle.numpy() + math.pi) / (2 * math.pi)
        assert scipy.stats.kstest(fraction, "uniform").pvalue > 1e-3
    # Another draw lies on the same circles (the geometry is fixed, not drawn from the seed).
    other = _fit_circles(*lines_and_circles("circles", 300, noise=0.0, seed=16))
    torch.testing.assert_close(other[0], centres, rtol=0, atol=1e-12)


@pytest.mark.parametrize("noise", [0.01, 0.03])
def test_lines_and_circles_residuals_have_the_noise_std(noise):
    # The residual across a line (signed distance to the segment's line) is one coordinate of the
    # isotropic noise: N(0, noise^2). The residual to a circle, |p - c| - r, is the radial noise
    # plus a curvature term: mean ~ noise^2 / (2 r), extra variance ~ noise^4 / (2 r^2) (< 2 %
    # of noise^2 here). Mean SE noise / sqrt(n), std SE noise / sqrt(2 n).
    n = 6000
    x, labels = lines_and_circles("lines", n, noise=noise, seed=17)
    start, end = SEGMENTS[labels, 0], SEGMENTS[labels, 1]
    normal = (end - start).flip(1) * torch.tensor([1.0, -1.0], dtype=torch.float64)
    across = ((x - start) * normal).sum(1) / normal.norm(dim=1)
    assert abs(across.mean().item()) < Z * noise / math.sqrt(n)
    assert abs(across.std().item() - noise) < Z * noise / math.sqrt(2 * n)

    x, labels = lines_and_circles("circles", n, noise=noise, seed=18)
    centres, _ = _fit_circles(*lines_and_circles("circles", 300, noise=0.0))
    radial = (x - centres[labels]).norm(dim=1) - RADII[labels]
    bias = (noise**2 / (2 * RADII[labels])).mean().item()
    assert abs(radial.mean().item() - bias) < Z * noise / math.sqrt(n)
    extra = (noise**4 / (2 * RADII**2)).max().item()
    assert abs(radial.var().item() - noise**2) < Z * noise**2 * math.sqrt(2 / n) + extra


def test_lines_and_circles_is_fixed_by_the_seed_and_rejects_bad_input():
    for kind in ("lines", "circles"):
        a, b = lines_and_circles(kind, seed=1), lines_and_circles(kind, seed=1)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.allclose(a[0], lines_and_circles(kind, seed=2)[0])
    with pytest.raises(ValueError, match="kind must be one of"):
        lines_and_circles("spirals")
    with pytest.raises(ValueError, match="noise must be >= 0"):
        lines_and_circles("lines", noise=-0.1)
    with pytest.raises(ValueError, match="n must be > 0"):
        lines_and_circles("circles", n=0)


# load_mnist_idx ------------------------------------------------------------------------------


def _idx_bytes(array, code):
    """An IDX file written from its specification: 0, 0, type code, ndim, big-endian dims, data."""
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def _idx_cases():
    rng = np.random.default_rng(19)
    images = rng.integers(0, 256, size=(5, 3, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5, dtype=np.uint8)
    signed = rng.integers(-(2**31), 2**31, size=(2, 3), dtype=np.int64).astype(np.int32)
    return [
        ("images", images, _idx_bytes(images, 0x08)),
        ("labels", labels, _idx_bytes(labels, 0x08)),
        ("int32", signed, _idx_bytes(signed.astype(">i4"), 0x0C)),
    ]


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_idx_round_trips(tmp_path, compress):
    for name, array, raw in _idx_cases():
        path = tmp_path / f"{name}-idx"
        path.write_bytes(gzip.compress(raw) if compress else raw)
        for arg in (path, str(path)):
            loaded = load_mnist_idx(arg)
            assert loaded.shape == array.shape and loaded.dtype == array.dtype
            assert loaded.dtype.isnative
            assert np.array_equal(loaded, array)


def test_load_mnist_idx_bad_files_raise_naming_the_path(tmp_path):
    images = np.arange(60, dtype=np.uint8).reshape(5, 3, 4)
    good = _idx_bytes(images, 0x08)
    cases = {
        "bad-magic": b"\x01" + good[1:],
        "bad-type": good[:2] + b"\x07" + good[3:],
        "empty": b"",
        "truncated-header": good[:9],  # 3 dimensions need 16 header bytes
        "short-data": good[:-1],
        "long-data": good + b"\x00",
        "gzipped-short-data": gzip.compress(good[:-3]),
        "corrupt-gzip": gzip.compress(good)[:-8],  # gzip trailer cut off
    }
    for name, raw in cases.items():
        path = tmp_path / name
        path.write_bytes(raw)
        with pytest.raises(ValueError, match=f"path {path}"):
            load_mnist_idx(path)
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike"):
        load_mnist_idx(123)
    with pytest.raises(FileNotFoundError):
        load_mnist_idx(tmp_path / "missing")


# squares_and_hearts ----------------------------------------------------------------------------


def test_squares_and_hearts_shapes_dtypes_and_fixed_factors():
    x, factors = squares_and_hearts(300, resolution=32, seed=0)
    assert x.shape == (300, 1, 32, 32) and x.dtype == torch.float32
    assert set(torch.unique(x).tolist()) == {0.0, 1.0}
    assert isinstance(factors, np.ndarray) and factors.shape == (300, 5)
    assert factors.dtype == np.int64
    assert set(np.unique(factors[:, 0]).tolist()) == {0, 2}  # square and heart only
    assert (factors[:, 1] == 5).all()  # the largest scale
    assert (factors[:, 2] == 0).all()  # orientation 0
    assert ((factors[:, 3:] >= 0) & (factors[:, 3:] < 32)).all()
    assert squares_and_hearts(4, resolution=16)[0].shape == (4, 1, 16, 16)


def test_squares_and_hearts_images_are_the_sprites_of_their_factors():
    for resolution in (16, 32):
        x, factors = squares_and_hearts(50, resolution=resolution, seed=3)
        assert torch.equal(x, Sprites(resolution).observations(factors))
        assert bool((x.flatten(1).sum(1) > 0).all())  # every image shows a sprite


def test_squares_and_hearts_hearts_stay_in_the_middle_column_and_squares_move():
    _, factors = squares_and_hearts(600, seed=1)
    hearts = factors[:, 0] == 2
    assert (factors[hearts, 3] == 16).all()
    squares = factors[~hearts]
    assert len(np.unique(squares[:, 3])) >= 28  # ~300 uniform draws over 32 classes
    assert scipy.stats.chisquare(np.bincount(squares[:, 3], minlength=32)).pvalue > 1e-4
    # posY is uniform for both shapes.
    assert scipy.stats.chisquare(np.bincount(factors[:, 4], minlength=32)).pvalue > 1e-4
    assert len(np.unique(factors[hearts, 4])) >= 25


@pytest.mark.parametrize("heart_share", [0.1, 0.5, 0.8])
def test_squares_and_hearts_heart_share_is_binomial(heart_share):
    n = 2000
    _, factors = squares_and_hearts(n, heart_share=heart_share, seed=2)
    share = (factors[:, 0] == 2).mean()
    assert abs(share - heart_share) < 5 * math.sqrt(heart_share * (1 - heart_share) / n)


def test_squares_and_hearts_is_fixed_by_the_seed():
    a, b, c = (
        squares_and_hearts(40, seed=4),
        squares_and_hearts(40, seed=4),
        squares_and_hearts(40, seed=5),
    )
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": 0}, ValueError, "n must be > 0"),
        ({"n": -3}, ValueError, "n must be > 0"),
        ({"n": 2.0}, TypeError, "n must be an int"),
        ({"heart_share": 0.0}, ValueError, "heart_share must be > 0"),
        ({"heart_share": -0.2}, ValueError, "heart_share must be > 0"),
        ({"heart_share": 1.0}, ValueError, r"heart_share must be in \(0, 1\)"),
        ({"heart_share": 1.5}, ValueError, r"heart_share must be in \(0, 1\)"),
        ({"heart_share": math.nan}, ValueError, "heart_share must be finite"),
        ({"heart_share": "half"}, TypeError, "heart_share must be a number"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
        ({"resolution": 8}, ValueError, "resolution must be >= 16"),
    ],
)
def test_squares_and_hearts_bad_input(kwargs, error, match):
    kwargs = {"n": 4, **kwargs}
    with pytest.raises(error, match=match):
        squares_and_hearts(**kwargs)
