"""Tests of vaebook.metrics: Hoyer sparsity and the FactorVAE score."""

import math

import numpy as np
import pytest
import torch

from vaebook.metrics import FactorVAEScore, dataset_hoyer, factor_vae_score, hoyer
from vaebook.sprites import Sprites

# -- Hoyer sparsity ---------------------------------------------------------------------------


def test_hoyer_known_rows():
    z = torch.tensor(
        [
            [2.0, -2.0, 2.0, 2.0],  # constant magnitude -> 0
            [0.0, -3.0, 0.0, 0.0],  # one-hot -> 1
            [1.0, 1.0, 0.0, 0.0],  # l1 / l2 = sqrt(2): (2 - sqrt(2)) / (2 - 1)
            [0.0, 0.0, 0.0, 0.0],  # all zero: defined as 0
        ],
        dtype=torch.float64,
    )
    expected = torch.tensor([0.0, 1.0, 2.0 - math.sqrt(2.0), 0.0], dtype=torch.float64)
    torch.testing.assert_close(hoyer(z), expected)
    # d = 2 by hand: (3, 4) has l1 / l2 = 7 / 5.
    want = (math.sqrt(2.0) - 1.4) / (math.sqrt(2.0) - 1.0)
    assert hoyer(torch.tensor([3.0, 4.0], dtype=torch.float64)).item() == pytest.approx(want)


def test_hoyer_is_scale_invariant_and_in_unit_interval(gen):
    z = torch.randn(50, 6, generator=gen, dtype=torch.float64)
    h = hoyer(z)
    assert h.shape == (50,) and bool(((h >= 0) & (h <= 1)).all())
    for c in (-3.5, 1e-3, 1e3):
        torch.testing.assert_close(hoyer(c * z), h)


def test_dataset_hoyer_normalises_each_dimension_by_its_std(gen):
    z = torch.randn(200, 5, generator=gen, dtype=torch.float64).abs() + 0.1
    scales = torch.tensor([100.0, 1.0, 0.01, 5.0, 0.3], dtype=torch.float64)
    manual = hoyer(z / z.std(0)).mean()
    torch.testing.assert_close(dataset_hoyer(z), manual)
    # Rescaling dimensions leaves it unchanged, although the raw per-example Hoyer moves a lot.
    torch.testing.assert_close(dataset_hoyer(z * scales), dataset_hoyer(z))
    assert hoyer(z * scales).mean() > hoyer(z).mean() + 0.3
    # Rows one-hot in dimensions of very different scale: sparse once normalised.
    one_hot = torch.eye(4, dtype=torch.float64).repeat(5, 1) * torch.tensor([1e3, 1, 1e-2, 7.0])
    assert dataset_hoyer(one_hot).item() == pytest.approx(1.0)


def test_hoyer_rejects_bad_input():
    with pytest.raises(ValueError, match="z"):
        hoyer(torch.ones(3, 1))
    with pytest.raises(TypeError, match="z"):
        hoyer("codes")
    with pytest.raises(ValueError, match="z"):
        hoyer(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="constant"):
        dataset_hoyer(torch.tensor([[1.0, 2.0], [1.0, 3.0]]))
    with pytest.raises(ValueError, match="z"):
        dataset_hoyer(torch.ones(1, 3))


# -- FactorVAE score ----------------------------------------------------------------------------


class FakeFactors:
    """The factor protocol on a tiny grid: the observation of a row of factors is the row."""

    def __init__(self, factor_sizes=(3, 4, 5)):
        self.factor_sizes = tuple(factor_sizes)

    def sample_factors(self, n, generator):
        cols = [torch.randint(s, (n,), generator=generator) for s in self.factor_sizes]
        return torch.stack(cols, 1).numpy()

    def observations(self, factors):
        return torch.as_tensor(factors, dtype=torch.float64)


def _pseudo_noise(f):
    """A deterministic function of all factors that looks like noise: std about 0.7."""
    return torch.sin(12.9898 * f[:, 0] + 78.233 * f[:, 1] + 37.719 * f[:, 2] + 0.5)


def monotone(f):
    """A different monotone map of each factor, plus one nuisance dimension.

    With factor k fixed, dimension k is constant within the batch (variance exactly 0) while
    every other dimension, the nuisance included, still varies with the other factors (positive
    variance): the lowest-variance dimension is always k, so every vote is (k, k) and the score
    is exactly 1. The nuisance dimension never gets a vote.
    """
    return torch.stack(
        [2.0 * f[:, 0] + 1.0, -10.0 * f[:, 1], torch.exp(0.3 * f[:, 2]), _pseudo_noise(f)], 1
    )


# The 4x4 Hadamard rotation: every code mixes every factor with weight 1/2.
HADAMARD = (
    torch.tensor(
        [[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float64
    )
    / 2.0
)
SIZES4 = torch.tensor([3.0, 4.0, 5.0, 6.0], dtype=torch.float64)


def rotated(f):
    """Standardised factors rotated by HADAMARD.

    Each factor has exact mean (s - 1) / 2 and variance (s^2 - 1) / 12 on its grid, so each
    code has global variance 1, and fixing any factor leaves every code with expected variance
    3/4: the lowest-variance dimension is chosen by sampling noise, not by the factor, and the
    majority vote is right for about a quarter of the votes. (A generic rotation would still
    have a most-aligned code per factor and could score high; this one has none.)
    """
    standard = (f - (SIZES4 - 1) / 2) / torch.sqrt((SIZES4**2 - 1) / 12)
    return standard @ HADAMARD.T


FAST = {"n_votes_train": 200, "n_votes_eval": 200, "batch_size": 32, "n_global": 2000}


def test_factor_vae_score_is_one_for_a_monotone_map_of_the_factors():
    result = factor_vae_score(monotone, FakeFactors(), **FAST)
    assert isinstance(result, FactorVAEScore)
    assert result.score == 1.0
    assert result.train_votes.shape == (4, 3) and result.train_votes.sum() == 200
    assert result.eval_votes.sum() == 200
    assert (np.diag(result.train_votes[:3]) == result.train_votes[:3].sum(1)).all()
    assert result.train_votes[3].sum() == 0
    np.testing.assert_array_equal(result.classifier, [0, 1, 2, -1])
    np.testing.assert_array_equal(result.kept, [0, 1, 2, 3])


def test_factor_vae_score_is_low_for_a_mixing_rotation():
    result = factor_vae_score(rotated, FakeFactors((3, 4, 5, 6)), **FAST)
    assert result.score < 0.7
    np.testing.assert_allclose(result.global_std, 1.0, atol=0.1)
    # Sanity: the unrotated standardised factors score 1 under the same protocol.
    identity = factor_vae_score(lambda f: rotated(f) @ HADAMARD, FakeFactors((3, 4, 5, 6)), **FAST)
    assert identity.score == 1.0


def test_factor_vae_score_invariant_to_permuting_and_rescaling_dimensions():
    perm = [2, 0, 3, 1]
    scales = torch.tensor([3.0, -0.5, 7.0, 0.25], dtype=torch.float64)
    data = FakeFactors((3, 4, 5, 6))
    base = factor_vae_score(rotated, data, **FAST)
    moved = factor_vae_score(lambda f: rotated(f)[:, perm] * scales, data, **FAST)
    assert moved.score == base.score
    np.testing.assert_array_equal(moved.train_votes, base.train_votes[perm])
    np.testing.assert_array_equal(moved.eval_votes, base.eval_votes[perm])


def test_factor_vae_score_is_deterministic_given_the_seed():
    data = FakeFactors((3, 4, 5, 6))
    a = factor_vae_score(rotated, data, seed=3, **FAST)
    b = factor_vae_score(rotated, data, seed=3, **FAST)
    c = factor_vae_score(rotated, data, seed=4, **FAST)
    assert a.score == b.score
    np.testing.assert_array_equal(a.train_votes, b.train_votes)
    np.testing.assert_array_equal(a.eval_votes, b.eval_votes)
    assert not np.array_equal(a.train_votes, c.train_votes)


def test_factor_vae_score_drops_collapsed_dimensions():
    def with_collapsed(f):
        z = monotone(f)
        small = 0.01 * _pseudo_noise(f)  # std about 0.007 < 0.05
        return torch.cat([torch.full((len(f), 1), 0.3, dtype=z.dtype), z, small[:, None]], 1)

    # Without the pruning, the constant dimension 0 would have variance 0 in every batch (and
    # a 0/0 normalisation), and would take the votes.
    result = factor_vae_score(with_collapsed, FakeFactors(), **FAST)
    np.testing.assert_array_equal(result.kept, [1, 2, 3, 4])
    assert result.score == 1.0
    assert result.train_votes[[0, 5]].sum() == 0 and result.eval_votes[[0, 5]].sum() == 0
    assert result.global_std[0] == 0.0
    looser = factor_vae_score(with_collapsed, FakeFactors(), collapse_threshold=1e-3, **FAST)
    np.testing.assert_array_equal(looser.kept, [1, 2, 3, 4, 5])
    nothing = factor_vae_score(lambda f: 1e-3 * monotone(f), FakeFactors(), **FAST)
    assert nothing.score == 0.0 and nothing.kept.size == 0


def test_factor_vae_score_on_sprites_smoke():
    data = Sprites(resolution=16)
    grid = torch.arange(16, dtype=torch.float32) + 0.5

    def centroid_and_mass(x):
        images = x[:, 0]
        mass = images.sum((1, 2))
        cx = (images.sum(1) * grid).sum(1) / mass
        cy = (images.sum(2) * grid).sum(1) / mass
        return torch.stack([cx, cy, mass], 1)

    kwargs = {"n_votes_train": 200, "n_votes_eval": 200, "batch_size": 32, "n_global": 1000}
    result = factor_vae_score(centroid_and_mass, data, seed=1, **kwargs)
    assert result.train_votes.shape == (3, 5)
    # The x centroid is nearly constant when posX (factor 3) is fixed, y when posY (4) is, and
    # the pixel count when the scale (1) is; shape and orientation have no code of their own,
    # so about 3/5 of the votes can be right (0.555..0.655 measured over seeds 0..14).
    np.testing.assert_array_equal(result.classifier, [3, 4, 1])
    assert 0.45 < result.score < 0.8
    again = factor_vae_score(centroid_and_mass, data, seed=1, **kwargs)
    np.testing.assert_array_equal(again.eval_votes, result.eval_votes)


def test_factor_vae_score_rejects_bad_input():
    data = FakeFactors()
    small = {"n_votes_train": 5, "n_votes_eval": 5, "batch_size": 8, "n_global": 50}
    with pytest.raises(TypeError, match="represent"):
        factor_vae_score("encoder", data, **small)
    with pytest.raises(ValueError, match="represent"):
        factor_vae_score(lambda f: f[:, 0], data, **small)
    with pytest.raises(ValueError, match="represent"):
        factor_vae_score(lambda f: f[:-1], data, **small)
    with pytest.raises(TypeError, match="represent"):
        factor_vae_score(lambda f: f.numpy(), data, **small)
    with pytest.raises(ValueError, match="represent"):
        factor_vae_score(lambda f: f / 0.0, data, **small)
    calls = []

    def changing(f):  # 3 dimensions at the first call, 2 after
        calls.append(1)
        return f[:, :3] if len(calls) == 1 else f[:, :2]

    with pytest.raises(ValueError, match="represent"):
        factor_vae_score(changing, data, **small)
    with pytest.raises(TypeError, match="data"):
        factor_vae_score(monotone, object(), **small)
    with pytest.raises(ValueError, match="factor_sizes"):
        factor_vae_score(monotone, FakeFactors((0, 3)), **small)
    bad = [
        ("n_votes_train", 0, ValueError),
        ("n_votes_eval", 1.5, TypeError),
        ("batch_size", 1, ValueError),
        ("n_global", 1, ValueError),
        ("seed", -1, ValueError),
        ("collapse_threshold", -0.1, ValueError),
        ("collapse_threshold", "high", TypeError),
    ]
    for name, value, error in bad:
        with pytest.raises(error, match=name):
            factor_vae_score(monotone, data, **{**small, name: value})
