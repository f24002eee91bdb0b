"""Tests of vaebook.data: the offline digits and their seeded per-class subsets."""

import pytest
import torch
from sklearn.datasets import load_digits

from vaebook.data import digit_exemplars, digits


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
