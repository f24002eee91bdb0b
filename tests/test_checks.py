"""Tests of vaebook.checks: every helper accepts good values and names the argument otherwise."""

import math

import numpy as np
import pytest
import torch

from vaebook.checks import (
    as_tensor,
    check_choice,
    check_finite,
    check_number,
    check_per_member,
    check_positive,
    check_positive_int,
    check_same_last_dim,
    per_member_values,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2.5, torch.tensor(2.5)),
        (3, torch.tensor(3.0)),
        ([1, 2], torch.tensor([1.0, 2.0])),
        (np.array([0.5, 1.5]), torch.tensor([0.5, 1.5], dtype=torch.float64)),
        (torch.tensor([1, 2]), torch.tensor([1.0, 2.0])),
    ],
)
def test_as_tensor_converts_numbers_lists_arrays_and_integer_tensors(value, expected):
    out = as_tensor(value, "x")
    assert out.dtype == expected.dtype
    torch.testing.assert_close(out, expected)


def test_as_tensor_returns_a_float_tensor_itself_so_gradients_flow():
    t = torch.ones(3, requires_grad=True)
    assert as_tensor(t, "x") is t


def test_as_tensor_takes_dtype_and_device_from_like_and_honours_dtype():
    like = torch.zeros(2, dtype=torch.float64)
    assert as_tensor(1.0, "x", like=like).dtype == torch.float64
    assert as_tensor(torch.ones(2), "x", dtype=torch.float64).dtype == torch.float64


def test_as_tensor_converts_python_floats_straight_to_the_dtype_asked_for():
    # 1e8 + 1 is not representable in float32: no detour through the default dtype.
    assert as_tensor([1e8 + 1.0], "x", dtype=torch.float64).item() == 1e8 + 1.0
    assert as_tensor(1e8 + 1.0, "x", dtype=torch.float64).item() == 1e8 + 1.0


@pytest.mark.parametrize("value", [None, True, "1.0", {"a": 1}, ["a", "b"]])
def test_as_tensor_rejects_non_numbers_naming_the_argument(value):
    with pytest.raises(TypeError, match="myarg"):
        as_tensor(value, "myarg")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_as_tensor_rejects_non_finite_values(bad):
    with pytest.raises(ValueError, match="myarg must be finite"):
        as_tensor([0.0, bad], "myarg")


def test_check_finite_passes_finite_and_integer_tensors_through():
    t = torch.tensor([1.0, -2.0])
    assert check_finite(t, "x") is t
    ints = torch.tensor([1, 2])
    assert check_finite(ints, "x") is ints


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_check_finite_names_the_argument(bad):
    with pytest.raises(ValueError, match="myarg must be finite"):
        check_finite(torch.tensor([1.0, bad]), "myarg")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2, 2.0), (0.5, 0.5), (torch.tensor(3.0), 3.0), (torch.tensor([4]), 4.0)],
)
def test_check_positive_returns_a_float(value, expected):
    out = check_positive(value, "beta")
    assert isinstance(out, float)
    assert out == expected


def test_check_positive_accepts_zero_only_when_allowed():
    assert check_positive(0, "beta", allow_zero=True) == 0.0
    with pytest.raises(ValueError, match="beta must be > 0"):
        check_positive(0, "beta")


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (-1.0, ValueError, "beta must be > 0"),
        (math.nan, ValueError, "beta must be finite"),
        (math.inf, ValueError, "beta must be finite"),
        (True, TypeError, "beta must be a number"),
        ("1", TypeError, "beta must be a number"),
        (torch.ones(2), TypeError, "beta must be a number"),
    ],
)
def test_check_positive_rejects_bad_values(value, error, match):
    with pytest.raises(error, match=match):
        check_positive(value, "beta")


def test_check_positive_int_accepts_ints_and_zero_only_when_allowed():
    assert check_positive_int(3, "n") == 3
    assert check_positive_int(0, "n", allow_zero=True) == 0
    with pytest.raises(ValueError, match="n must be > 0"):
        check_positive_int(0, "n")


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (-2, ValueError, "n must be > 0"),
        (2.0, TypeError, "n must be an int"),
        (False, TypeError, "n must be an int"),
        ("3", TypeError, "n must be an int"),
    ],
)
def test_check_positive_int_rejects_bad_values(value, error, match):
    with pytest.raises(error, match=match):
        check_positive_int(value, "n")


def test_check_choice_returns_a_valid_choice_and_lists_the_choices_otherwise():
    assert check_choice("b", "mode", ("a", "b")) == "b"
    with pytest.raises(ValueError, match=r"mode must be one of \('a', 'b'\), got 'c'"):
        check_choice("c", "mode", iter(["a", "b"]))


def test_check_same_last_dim_accepts_broadcastable_shapes():
    check_same_last_dim(torch.zeros(4, 3), "a", torch.zeros(3), "b")
    check_same_last_dim(torch.zeros(4, 1, 3), "a", torch.zeros(2, 3), "b")


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        (torch.zeros(()), torch.zeros(3), "a and b must have a last"),
        (torch.zeros(4, 3), torch.zeros(2), "b has last dimension 2 but a has 3"),
        (torch.zeros(4, 3), torch.zeros(2, 3), "a of shape .* and b of shape .* do not broadcast"),
    ],
)
def test_check_same_last_dim_names_both_arguments(a, b, match):
    with pytest.raises(ValueError, match=match):
        check_same_last_dim(a, "a", b, "b")


def test_check_per_member_broadcasts_a_number_and_keeps_a_sequence():
    assert check_per_member(2, "beta", 3).tolist() == [2.0, 2.0, 2.0]
    assert check_per_member([1.0, 0.0], "alpha", 2, allow_zero=True).tolist() == [1.0, 0.0]
    single = check_per_member(0.5, "beta", None)
    assert single.shape == () and single.dtype == torch.float64 and single.item() == 0.5


@pytest.mark.parametrize(
    ("value", "members", "kwargs", "error", "match"),
    [
        (0.0, 2, {}, ValueError, "beta must be > 0"),
        ([1.0, -1.0], 2, {"allow_zero": True}, ValueError, r"beta\[1\] must be >= 0"),
        ([1.0, 2.0], 3, {}, ValueError, "beta must be a number or 3 numbers"),
        ([1.0, 2.0], None, {}, ValueError, "beta must be a number or 1 numbers"),
        (True, 2, {}, TypeError, "beta must be a number"),
        ([1.0, "a"], 2, {}, TypeError, "beta must be a number"),
    ],
)
def test_check_per_member_rejects_bad_values(value, members, kwargs, error, match):
    with pytest.raises(error, match=match):
        check_per_member(value, "beta", members, **kwargs)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3.0), (-2.5, -2.5), (np.float32(0.5), 0.5), (torch.tensor(-1.5), -1.5), (0, 0.0)],
)
def test_check_number_returns_a_float(value, expected):
    result = check_number(value, "log_gamma")
    assert isinstance(result, float) and result == expected


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("x", TypeError, "log_gamma must be a number, got str"),
        (None, TypeError, "log_gamma must be a number, got NoneType"),
        (True, TypeError, "log_gamma must be a number, got bool"),
        (torch.ones(2), TypeError, "log_gamma must be a number, got Tensor"),
        (math.inf, ValueError, "log_gamma must be finite, got inf"),
        (float("nan"), ValueError, "log_gamma must be finite, got nan"),
    ],
)
def test_check_number_rejects_what_is_not_a_finite_number(value, error, match):
    with pytest.raises(error, match=match):
        check_number(value, "log_gamma")


def test_per_member_values_keeps_a_number_and_a_sequence_apart_without_a_range_check():
    one = per_member_values(-2.5, "log_gamma", 3)
    assert one.shape == () and one.item() == -2.5 and one.dtype == torch.float64
    each = per_member_values([-1.0, 0.0, 2.0], "log_gamma", 3)
    assert each.tolist() == [-1.0, 0.0, 2.0]
    with pytest.raises(ValueError, match=r"^log_gamma must be a number or 3 numbers"):
        per_member_values([1.0, 2.0], "log_gamma", 3)
    with pytest.raises(ValueError, match=r"^scale must be a number or 1 numbers"):
        per_member_values([1.0], "scale", None)
    with pytest.raises(TypeError, match=r"^log_gamma must be a number or a sequence"):
        per_member_values("0", "log_gamma", 3)
