"""Tests of vaebook.plotting: read back what each helper drew."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from vaebook.ivae import Representations
from vaebook.plotting import gaussian_ellipse, image_grid, latent_histograms, training_curves
from vaebook.train import History


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def canvas_of(ax):
    return np.asarray(ax.images[0].get_array())


def test_image_grid_places_each_image_in_its_tile(gen):
    images = torch.rand(7, 3, 4, generator=gen)
    canvas = canvas_of(image_grid(images, ncols=3, pad=2))
    assert canvas.shape == (3 * (3 + 2) + 2, 3 * (4 + 2) + 2)
    for i, img in enumerate(images.numpy()):
        r, c = divmod(i, 3)
        top, left = 2 + r * 5, 2 + c * 6
        np.testing.assert_array_equal(canvas[top : top + 3, left : left + 4], img)


def test_image_grid_padding_is_white(gen):
    ax = image_grid(torch.rand(3, 2, 2, generator=gen), ncols=2, pad=1)
    rgba = ax.images[0].to_rgba(canvas_of(ax))
    white = np.ones(4)
    for row, col in [(0, 0), (3, 1), (1, 3), (6, 6), (4, 4), (5, 5)]:  # padding, empty cell
        np.testing.assert_allclose(rgba[row, col], white, err_msg=f"pixel {(row, col)}")
    assert ax.images[0].to_rgba(np.array([[1.0]]))[0, 0, :3].max() == 0  # ink (1) is black


def test_image_grid_clips_values_and_accepts_a_channel_axis():
    images = np.array([[[-0.5, 0.25], [0.75, 1.5]]])
    expected = np.array([[0.0, 0.25], [0.75, 1.0]])
    for batch in (images, images[:, None]):
        np.testing.assert_array_equal(canvas_of(image_grid(batch, pad=0)), expected)


def test_image_grid_draws_on_the_given_axes_with_a_title():
    _, ax = plt.subplots()
    out = image_grid(torch.zeros(12, 2, 2), ncols=20, ax=ax, title="twelve")
    assert out is ax
    assert ax.get_title() == "twelve"
    assert canvas_of(ax).shape == (4, 12 * 3 + 1)  # ncols is capped at the number of images
    assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []


@pytest.mark.parametrize("angle", [0.0, 30.0, 100.0])
@pytest.mark.parametrize("n_std", [1.0, 2.0])
def test_gaussian_ellipse_size_and_orientation_for_a_known_covariance(angle, n_std):
    theta = math.radians(angle)
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov = rot @ torch.diag(torch.tensor([4.0, 0.25])) @ rot.T  # std 2 along angle, 0.5 across
    _, ax = plt.subplots()
    patch = gaussian_ellipse(ax, [1.0, -2.0], cov, n_std=n_std, edgecolor="red")
    assert patch in ax.patches
    assert patch.center == pytest.approx((1.0, -2.0))
    assert patch.width == pytest.approx(2 * n_std * 2.0)
    assert patch.height == pytest.approx(2 * n_std * 0.5)
    assert (patch.angle - angle) % 180 == pytest.approx(0.0, abs=1e-6) or (
        patch.angle - angle
    ) % 180 == pytest.approx(180.0, abs=1e-6)
    assert patch.get_facecolor()[3] == 0  # facecolor "none" by default
    assert patch.get_edgecolor()[:3] == (1.0, 0.0, 0.0)


def test_gaussian_ellipse_boundary_is_at_mahalanobis_distance_n_std():
    mean, cov = np.array([0.5, 1.0]), np.array([[2.0, 0.9], [0.9, 1.0]])
    _, ax = plt.subplots()
    patch = gaussian_ellipse(ax, mean, cov, n_std=1.5)
    t = np.linspace(0, 2 * np.pi, 50)
    unit_circle = np.stack([np.cos(t), np.sin(t)], axis=1)  # the patch maps it to the ellipse
    boundary = patch.get_patch_transform().transform(unit_circle)
    diff = boundary - mean
    distance = np.sqrt(np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff))
    np.testing.assert_allclose(distance, 1.5, rtol=1e-6)


def test_training_curves_plot_every_history_against_epochs():
    histories = {
        "β = 1": History({"elbo": [-3.0, -2.0, -1.5], "kl": [1.0, 2.0, 2.5]}),
        "β = 4": History({"elbo": [-4.0, -3.5, -3.0], "kl": [0.5, 0.4, 0.3]}),
    }
    axes = training_curves(histories)
    assert len(axes) == 2
    for ax, key in zip(axes, ("elbo", "kl"), strict=True):
        assert ax.get_ylabel() == key and ax.get_xlabel() == "epoch"
        assert [line.get_label() for line in ax.lines] == list(histories)
        for line, history in zip(ax.lines, histories.values(), strict=True):
            np.testing.assert_array_equal(line.get_xdata(), [0, 1, 2])
            np.testing.assert_array_equal(line.get_ydata(), history[key])
    legend = axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == list(histories)


def test_training_curves_draw_on_given_axes():
    _, ax = plt.subplots()
    out = training_curves(
        {"run": History({"objective": [1.0, 2.0]})}, keys=["objective"], axes=[ax]
    )
    assert out[0] is ax
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [1.0, 2.0])


EYE = torch.eye(2)


@pytest.mark.parametrize(
    ("func", "args", "kwargs", "error", "match"),
    [
        (image_grid, (torch.zeros(2, 3, 4, 4),), {}, ValueError, "images must be"),
        (image_grid, (torch.zeros(0, 4, 4),), {}, ValueError, "images must be"),
        (image_grid, (torch.zeros(4, 4),), {}, ValueError, "images must be"),
        (image_grid, (torch.full((1, 2, 2), math.nan),), {}, ValueError, "images must be finite"),
        (image_grid, ("pixels",), {}, TypeError, "images"),
        (image_grid, (torch.zeros(2, 4, 4),), {"ncols": 0}, ValueError, "ncols must be > 0"),
        (image_grid, (torch.zeros(2, 4, 4),), {"pad": -1}, ValueError, "pad must be >= 0"),
        (gaussian_ellipse, (None, [0.0, 0.0, 0.0], EYE), {}, ValueError, "mean must be"),
        (gaussian_ellipse, (None, [0.0, 0.0], torch.eye(3)), {}, ValueError, "cov"),
        (gaussian_ellipse, (None, [0.0, 0.0], -EYE), {}, ValueError, "cov must be positive"),
        (
            gaussian_ellipse,
            (None, [0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]]),
            {},
            ValueError,
            "cov must be sym",
        ),
        (gaussian_ellipse, (None, [0.0, math.inf], EYE), {}, ValueError, "mean must be finite"),
        (gaussian_ellipse, (None, [0.0, 0.0], EYE), {"n_std": 0.0}, ValueError, "n_std"),
        (training_curves, ({},), {}, ValueError, "histories must map"),
        (training_curves, ({"a": History({"elbo": [1.0]})},), {}, ValueError, "keys: 'kl'"),
    ],
)
def test_bad_input_raises_naming_the_argument(func, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        func(*args, **kwargs)


# -- latent_histograms ------------------------------------------------------------------------

PANELS = ("mean", "variance", "prior_variance", "sample", "prior_sample")
TITLES = ("mean μ", "variance σ", "prior variance σ†", "sample z", "prior sample z†")


def _representations(n=120, kappa=3, seed=0):
    """Representations whose five arrays live on disjoint ranges, so panels can be told apart."""
    rng = np.random.default_rng(seed)
    arrays = {name: 10.0 * k + rng.random((n, kappa)) for k, name in enumerate(PANELS)}
    arrays["prior_mean"] = np.zeros((n, kappa))
    return Representations(**arrays), arrays


def _bars(ax):
    """(left edges, heights, widths) of the histogram bars drawn on ``ax``."""
    patches = ax.patches
    return (
        np.array([p.get_x() for p in patches]),
        np.array([p.get_height() for p in patches]),
        np.array([p.get_width() for p in patches]),
    )


@pytest.mark.parametrize("j", [0, 2])
def test_latent_histograms_draw_the_five_representations_of_latent_j(j):
    reps, arrays = _representations()
    axes = latent_histograms(reps, j, bins=12)
    assert len(axes) == 5
    for ax, name, title in zip(axes, PANELS, TITLES, strict=True):
        left, heights, widths = _bars(ax)
        assert len(heights) == 12
        assert heights.sum() == 120  # every example once
        counts, edges = np.histogram(arrays[name][:, j], bins=12)
        np.testing.assert_array_equal(heights, counts)
        np.testing.assert_allclose(left, edges[:-1], rtol=1e-12)
        np.testing.assert_allclose(left + widths, edges[1:], rtol=1e-12)
        assert ax.get_title() == title
        assert list(ax.get_yticks()) == []
    # Another latent draws other data.
    other = latent_histograms(reps, 1 - j // 2, bins=12)
    assert not np.array_equal(_bars(other[0])[1], _bars(axes[0])[1])


def test_latent_histograms_draw_on_given_axes_with_a_label():
    reps, arrays = _representations(n=50)
    fig, axes = plt.subplots(5, 1)
    out = latent_histograms(reps, 1, axes=axes, bins=5, label="latent 1 (active)")
    assert all(a is b for a, b in zip(out, axes, strict=True))
    assert len(fig.axes) == 5
    assert [ax.get_title() for ax in axes] == [f"latent 1 (active): {t}" for t in TITLES]
    for ax, name in zip(axes, PANELS, strict=True):
        np.testing.assert_array_equal(_bars(ax)[1], np.histogram(arrays[name][:, 1], bins=5)[0])


@pytest.mark.parametrize(
    ("j", "kwargs", "error", "match"),
    [
        (3, {}, ValueError, r"j must be an int in 0\.\.2"),
        (-1, {}, ValueError, r"j must be an int in 0\.\.2"),
        (1.0, {}, ValueError, "j must be an int"),
        (True, {}, ValueError, "j must be an int"),
        ("0", {}, ValueError, "j must be an int"),
        (0, {"bins": 0}, ValueError, "bins must be > 0"),
        (0, {"bins": 2.5}, TypeError, "bins must be an int"),
        (0, {"axes": "four"}, ValueError, "axes must hold 5 axes, got 1"),
    ],
)
def test_latent_histograms_reject_bad_input_naming_the_argument(j, kwargs, error, match):
    reps, _ = _representations(n=10)
    with pytest.raises(error, match=match):
        latent_histograms(reps, j, **kwargs)


@pytest.mark.parametrize("count", [4, 6])
def test_latent_histograms_reject_the_wrong_number_of_axes(count):
    reps, _ = _representations(n=10)
    _, axes = plt.subplots(1, count)
    with pytest.raises(ValueError, match=f"axes must hold 5 axes, got {count}"):
        latent_histograms(reps, 0, axes=axes)
