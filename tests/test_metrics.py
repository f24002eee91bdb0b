"""Tests of vaebook.metrics: Hoyer sparsity, the FactorVAE score and the Fréchet distance."""

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.stats import special_ortho_group

from vaebook.data import digits
from vaebook.metrics import (
    DigitsFeatures,
    FactorVAEScore,
    dataset_hoyer,
    factor_vae_score,
    frechet_distance,
    frechet_gaussian,
    hoyer,
    sqrtm_psd,
)
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
    # By hand, row by row with numpy (and the std with ddof 0: a common factor cancels); the
    # sums over 5 entries round at 1e-16, so 1e-12 is loose.
    codes = z.numpy() / z.numpy().std(0)
    by_row = [
        (math.sqrt(5) - np.abs(r).sum() / np.sqrt((r**2).sum())) / (math.sqrt(5) - 1) for r in codes
    ]
    assert dataset_hoyer(z).item() == pytest.approx(np.mean(by_row), rel=1e-12)
    # Rescaling dimensions leaves it unchanged, although the raw per-example Hoyer moves a lot.
    torch.testing.assert_close(dataset_hoyer(z * scales), dataset_hoyer(z))
    assert hoyer(z * scales).mean() > hoyer(z).mean() + 0.3
    # Rows one-hot in dimensions of very different scale: sparse once normalised.
    one_hot = torch.eye(4, dtype=torch.float64).repeat(5, 1) * torch.tensor([1e3, 1, 1e-2, 7.0])
    assert dataset_hoyer(one_hot).item() == pytest.approx(1.0)


def test_hoyer_rejects_bad_input():
    # Each message starts with the argument's name (anchored: a mangled name must fail).
    with pytest.raises(ValueError, match=r"^z must have shape \(\.\.\., d\) with d >= 2"):
        hoyer(torch.ones(3, 1))
    with pytest.raises(TypeError, match=r"^z must be a tensor"):
        hoyer("codes")
    with pytest.raises(ValueError, match=r"^z must be finite"):
        hoyer(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"^z has dimensions \[0\] constant"):
        dataset_hoyer(torch.tensor([[1.0, 2.0], [1.0, 3.0]]))
    with pytest.raises(ValueError, match=r"^z has dimensions \[1, 2\] constant"):
        dataset_hoyer(torch.tensor([[1.0, 2.0, 5.0], [3.0, 2.0, 5.0]]))
    with pytest.raises(ValueError, match=r"^z must have shape \(n, d\) with n >= 2"):
        dataset_hoyer(torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"^z must have shape \(n, d\) with n >= 2"):
        dataset_hoyer(torch.arange(5.0))  # one row of d = 5: not a dataset
    with pytest.raises(ValueError, match=r"^z must have shape \(\.\.\., d\) with d >= 2"):
        dataset_hoyer(torch.ones(4, 1))


def _raw_hoyer(z):
    """Hoyer's formula without the clip to [0, 1], to show where rounding takes it."""
    root_d = math.sqrt(z.shape[-1])
    ratio = z.abs().sum(-1) / torch.linalg.vector_norm(z, dim=-1)
    return (root_d - ratio) / (root_d - 1.0)


def test_hoyer_clips_rounding_back_into_the_unit_interval():
    # Constant-magnitude rows have l1 / l2 = sqrt(d) exactly and one-hot rows 1, but in floating
    # point the formula lands a rounding error on either side of [0, 1]; the result must not.
    cases = []  # (row, exact sparsity)
    for dtype in (torch.float32, torch.float64):
        for d in range(2, 40):
            for c in (0.1, 0.3, 0.7, 3.0):
                one_hot = torch.zeros(d, dtype=dtype)
                one_hot[d // 2] = -c
                cases += [(torch.full((d,), c, dtype=dtype), 0.0), (one_hot, 1.0)]
    raw = [float(_raw_hoyer(row)) for row, _ in cases]
    # Integrity: some of these rows do leave [0, 1] before the clip ...
    assert any(r < 0 for r, (_, exact) in zip(raw, cases, strict=True) if exact == 0.0)
    assert any(r > 1 for r, (_, exact) in zip(raw, cases, strict=True) if exact == 1.0)
    # ... and their sparsity is the exact value to rounding, inside [0, 1].
    for row, exact in cases:
        h = float(hoyer(row))
        assert 0.0 <= h <= 1.0 and h == pytest.approx(exact, abs=1e-6)


def test_hoyer_of_an_all_zero_row_has_finite_gradients():
    z = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]], dtype=torch.float64, requires_grad=True)
    hoyer(z).sum().backward()
    assert bool(torch.isfinite(z.grad).all())
    torch.testing.assert_close(z.grad[0], torch.zeros(3, dtype=torch.float64))


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
    # Chance is 1/4 (measured: mean 0.259, largest 0.325 over 20 seeds); 0.4 is 1/4 plus five
    # binomial standard deviations of 200 evaluation votes, sqrt(0.25 * 0.75 / 200) = 0.031.
    assert result.score < 0.4
    np.testing.assert_allclose(result.global_std, 1.0, atol=0.1)
    # Sanity: the unrotated standardised factors score 1 under the same protocol.
    identity = factor_vae_score(lambda f: rotated(f) @ HADAMARD, FakeFactors((3, 4, 5, 6)), **FAST)
    assert identity.score == 1.0


def test_factor_vae_score_of_a_generic_rotation_stays_well_above_chance():
    # Unlike the Hadamard mixing, a generic rotation leaves each factor a most-aligned code,
    # so the score is not a rotation-invariant measure of disentanglement: over ten random
    # rotations (seeded) every score clears the Hadamard bound and most are near 1.
    scores = []
    for seed in range(10):
        R = torch.tensor(special_ortho_group.rvs(4, random_state=seed), dtype=torch.float64)

        def turned(f, R=R):  # the standardised factors, rotated by R
            return rotated(f) @ HADAMARD @ R.T

        scores.append(factor_vae_score(turned, FakeFactors((3, 4, 5, 6)), **FAST).score)
    assert min(scores) > 0.4  # above chance plus five binomial standard deviations
    assert np.mean(scores) > 0.7
    assert min(scores) < 1.0  # and still not the unrotated code's perfect score everywhere


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
        with pytest.raises(error, match=rf"^{name} must be"):
            factor_vae_score(monotone, data, **{**small, name: value})


def test_factor_vae_score_defaults_are_the_documented_protocol():
    data = FakeFactors((3, 4, 5, 6))
    default = factor_vae_score(rotated, data)
    documented = factor_vae_score(
        rotated,
        data,
        seed=0,
        n_votes_train=800,
        n_votes_eval=400,
        batch_size=64,
        n_global=10000,
        collapse_threshold=0.05,
    )
    assert default.train_votes.sum() == 800 and default.eval_votes.sum() == 400
    np.testing.assert_array_equal(default.train_votes, documented.train_votes)
    np.testing.assert_array_equal(default.eval_votes, documented.eval_votes)
    np.testing.assert_array_equal(default.global_std, documented.global_std)


class RecordingFactors(FakeFactors):
    """FakeFactors whose draws come back as int32 and whose observation batches are recorded."""

    def __init__(self, factor_sizes=(3, 4, 5)):
        super().__init__(factor_sizes)
        self.sampled, self.observed = [], []

    def sample_factors(self, n, generator):
        factors = super().sample_factors(n, generator).astype(np.int32)
        self.sampled.append(factors.copy())
        return factors

    def observations(self, factors):
        self.observed.append(np.array(factors))
        return super().observations(factors)


def test_factor_vae_score_fixes_one_factor_per_vote_to_the_first_rows_value():
    data = RecordingFactors()
    batch, votes = 8, 6
    factor_vae_score(
        monotone, data, n_votes_train=votes, n_votes_eval=votes, batch_size=batch, n_global=40
    )
    # One call for the global std, then one per vote set (6 votes of 8 rows fit one call).
    assert [len(o) for o in data.observed] == [40, votes * batch, votes * batch]
    assert all(o.dtype == np.int64 for o in data.observed)  # the protocol's dtype
    np.testing.assert_array_equal(data.observed[0], data.sampled[0])
    blocks = np.concatenate(data.observed[1:]).reshape(2 * votes, batch, 3)
    for observed, sampled in zip(blocks, data.sampled[1:], strict=True):
        np.testing.assert_array_equal(observed[0], sampled[0])  # the first row is untouched
        changed = np.flatnonzero((observed != sampled).any(0))
        assert changed.size <= 1  # at most the fixed factor's column differs from the draw
        fixed = [k for k in range(3) if (observed[:, k] == sampled[0, k]).all()]
        assert fixed, "no factor is fixed to the first row's value"
        assert set(changed) <= set(fixed)


def test_factor_vae_score_edge_sizes_and_thresholds():
    def with_constant(f):
        return torch.cat([torch.full((len(f), 1), 0.3, dtype=torch.float64), monotone(f)], 1)

    base = factor_vae_score(with_constant, FakeFactors(), **FAST)
    assert base.train_votes.dtype == np.int64 and base.eval_votes.dtype == np.int64
    assert base.global_std.dtype == np.float64 and base.global_std[0] == 0.0
    # A dimension whose std equals the threshold is kept (s_j >= threshold) ...
    smallest = int(np.argmin(base.global_std[1:])) + 1
    at = factor_vae_score(
        with_constant, FakeFactors(), collapse_threshold=float(base.global_std[smallest]), **FAST
    )
    assert smallest in at.kept
    np.testing.assert_array_equal(at.kept, [1, 2, 3, 4])
    # ... and a constant one is dropped even at threshold 0 (s_j > 0).
    zero = factor_vae_score(with_constant, FakeFactors(), collapse_threshold=0.0, **FAST)
    np.testing.assert_array_equal(zero.kept, [1, 2, 3, 4])
    # Nothing kept: score 0, zero int64 vote matrices (two arrays), no predictions, the stds.
    none = factor_vae_score(with_constant, FakeFactors(), collapse_threshold=1e9, **FAST)
    assert none.score == 0.0 and none.kept.size == 0
    for votes in (none.train_votes, none.eval_votes):
        assert votes.shape == (5, 3) and votes.dtype == np.int64 and not votes.any()
    assert none.train_votes is not none.eval_votes
    np.testing.assert_array_equal(none.classifier, [-1] * 5)
    np.testing.assert_array_equal(none.global_std, base.global_std)
    # One training vote is enough for its dimension to predict (monotone votes (k, k)).
    one = factor_vae_score(monotone, FakeFactors(), **{**FAST, "n_votes_train": 1})
    voted = np.flatnonzero(one.train_votes.sum(1))
    assert voted.size == 1
    np.testing.assert_array_equal(
        one.classifier, [voted[0] if j == voted[0] else -1 for j in range(4)]
    )
    # The smallest sizes that estimate a variance, and a factor with a single value.
    tiny = {"n_votes_train": 3, "n_votes_eval": 3, "batch_size": 2, "n_global": 2}
    assert 0.0 <= factor_vae_score(monotone, FakeFactors(), **tiny).score <= 1.0
    single = factor_vae_score(monotone, FakeFactors((1, 4, 5)), **FAST)
    np.testing.assert_array_equal(single.kept, [1, 2, 3])  # dimension 0 is constant
    # Float32 codes are measured in float64.
    as_float = factor_vae_score(lambda f: monotone(f).float(), FakeFactors(), **FAST)
    assert as_float.global_std.dtype == np.float64


def test_factor_vae_score_error_messages_name_the_culprit():
    data = FakeFactors()
    small = {"n_votes_train": 5, "n_votes_eval": 5, "batch_size": 8, "n_global": 50}
    with pytest.raises(TypeError, match=r"^represent must be callable, got int"):
        factor_vae_score(3, data, **small)
    with pytest.raises(TypeError, match=r"^represent must return a tensor, got list"):
        factor_vae_score(lambda f: f.tolist(), data, **small)
    with pytest.raises(ValueError, match=r"^represent must return shape \(50, d\), got \(50,\)"):
        factor_vae_score(lambda f: f[:, 0], data, **small)
    with pytest.raises(ValueError, match=r"^represent returned NaN or infinite values"):
        factor_vae_score(lambda f: f / 0.0, data, **small)
    calls = []

    def changing(f):  # 3 dimensions at the first call, 2 after
        calls.append(1)
        return f[:, :3] if len(calls) == 1 else f[:, :2]

    with pytest.raises(ValueError, match=r"^represent must return shape \(40, 3\), got \(40, 2\)"):
        factor_vae_score(changing, data, **small)
    # Within one call of more than 4096 observations the chunks must agree too.
    calls.clear()
    with pytest.raises(ValueError, match=r"^represent must return shape \(904, 3\)"):
        factor_vae_score(changing, data, **{**small, "n_global": 5000})

    class NoObservations:
        factor_sizes = (2, 3)

        def sample_factors(self, n, generator):
            return np.zeros((n, 2), dtype=np.int64)

    with pytest.raises(TypeError, match=r"NoObservations has no 'observations'$"):
        factor_vae_score(monotone, NoObservations(), **small)
    with pytest.raises(ValueError, match=r"^data.factor_sizes must be positive ints"):
        factor_vae_score(monotone, FakeFactors((True, 3)), **small)

    class WrongShape(FakeFactors):
        def sample_factors(self, n, generator):
            return super().sample_factors(n, generator)[:, :2]

    with pytest.raises(
        ValueError, match=r"^data.sample_factors\(50, \.\.\.\) must return shape \(50, 3\), got"
    ):
        factor_vae_score(monotone, WrongShape(), **small)
    with pytest.raises(ValueError, match=r"^batch_size must be > 0"):
        factor_vae_score(monotone, data, **{**small, "batch_size": 0})


# -- Fréchet distance ---------------------------------------------------------------------------

F64 = torch.float64


def random_psd(gen, d, rank):
    """A random symmetric PSD ``(d, d)`` matrix of the given rank, float64."""
    b = torch.randn(d, rank, generator=gen, dtype=F64)
    return b @ b.T


@pytest.mark.parametrize(("d", "rank"), [(1, 1), (4, 4), (6, 6), (6, 3), (5, 1), (3, 0)])
def test_sqrtm_psd_squares_back_to_the_matrix(gen, d, rank):
    a = random_psd(gen, d, rank) if rank else torch.zeros(d, d, dtype=F64)
    root = sqrtm_psd(a)
    assert root.shape == (d, d) and root.dtype == F64
    scale = max(float(a.abs().max()), 1.0)
    assert float((root - root.T).abs().max()) < 1e-14 * math.sqrt(scale)
    assert float((root @ root - a).abs().max()) < 1e-10 * scale
    # The principal root: positive semi-definite, and of the matrix's rank.
    values = torch.linalg.eigvalsh(root)
    assert float(values.min()) > -1e-7 * math.sqrt(scale)
    assert int((values > 1e-6 * math.sqrt(scale)).sum()) == rank


def test_sqrtm_psd_matches_scipy_and_the_diagonal_case(make_spd):
    from scipy.linalg import sqrtm

    a = make_spd(5)
    expected = np.real(sqrtm(a.numpy()))
    np.testing.assert_allclose(sqrtm_psd(a).numpy(), expected, rtol=1e-10, atol=1e-12)
    diag = torch.diag(torch.tensor([4.0, 0.25, 0.0, 9.0], dtype=F64))
    torch.testing.assert_close(
        sqrtm_psd(diag), torch.diag(torch.tensor([2.0, 0.5, 0.0, 3.0], dtype=F64))
    )
    # Round-off asymmetry and round-off negative eigenvalues are accepted.
    b = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    singular = b @ b.T
    nudged = singular + 1e-13 * torch.tensor(
        [[0.0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    )
    assert float((sqrtm_psd(nudged) @ sqrtm_psd(nudged) - singular).abs().max()) < 1e-10
    # A list of lists is a matrix too.
    torch.testing.assert_close(
        sqrtm_psd([[4.0, 0.0], [0.0, 1.0]]), torch.diag(torch.tensor([2.0, 1.0], dtype=F64))
    )


@pytest.mark.parametrize(
    ("a", "error", "match"),
    [
        (torch.tensor([[1.0, 2.0], [0.0, 1.0]]), ValueError, "a must be symmetric"),
        (-torch.eye(3), ValueError, "a must be positive semi-definite"),
        (torch.tensor([[1.0, 2.0], [2.0, 1.0]]), ValueError, "a must be positive semi-definite"),
        (torch.ones(2, 3), ValueError, r"a must be a square matrix \(d, d\)"),
        (torch.ones(3), ValueError, "a must be a square matrix"),
        (torch.ones(2, 2, 2), ValueError, "a must be a square matrix"),
        (torch.tensor([[1.0, math.nan], [math.nan, 1.0]]), ValueError, "a must be finite"),
        ("matrix", TypeError, "a must be a tensor"),
    ],
)
def test_sqrtm_psd_rejects_bad_matrices(a, error, match):
    with pytest.raises(error, match=r"^" + match):
        sqrtm_psd(a)


def test_frechet_gaussian_closed_forms(gen, make_spd):
    mu1, mu2 = torch.randn(4, generator=gen, dtype=F64), torch.randn(4, generator=gen, dtype=F64)
    cov1, cov2 = make_spd(4), make_spd(4)
    # Equal Gaussians: 0. The same covariance: the squared distance of the means.
    assert frechet_gaussian(mu1, cov1, mu1, cov1) == pytest.approx(0.0, abs=1e-10)
    assert frechet_gaussian(mu1, cov1, mu2, cov1) == pytest.approx(
        float(((mu1 - mu2) ** 2).sum()), rel=1e-10
    )
    # Commuting covariances (one eigenbasis): Σ (sqrt a_i - sqrt b_i)² plus the means' term.
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=F64))
    a, b = (
        torch.tensor([0.5, 2.0, 3.0, 0.2], dtype=F64),
        torch.tensor([1.5, 2.0, 0.1, 4.0], dtype=F64),
    )
    expected = float(((a.sqrt() - b.sqrt()) ** 2).sum() + ((mu1 - mu2) ** 2).sum())
    got = frechet_gaussian(mu1, q * a @ q.T, mu2, q * b @ q.T)
    assert got == pytest.approx(expected, rel=1e-10)
    # Diagonal and singular: a zero eigenvalue of cov1^½ cov2 cov1^½ is known to round-off
    # ε only, and its square root to sqrt(ε) ≈ 1e-8.
    a[3] = 0.0
    assert frechet_gaussian(mu1, torch.diag(a), mu1, torch.diag(b)) == pytest.approx(
        float(((a.sqrt() - b.sqrt()) ** 2).sum()), rel=1e-12
    )
    got = frechet_gaussian(mu1, q * a @ q.T, mu2, q * b @ q.T)
    expected = float(((a.sqrt() - b.sqrt()) ** 2).sum() + ((mu1 - mu2) ** 2).sum())
    assert got == pytest.approx(expected, abs=1e-6)
    # 1-D: (m1 - m2)² + (s1 - s2)².
    one = frechet_gaussian(
        torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-1.0]), torch.tensor([[9.0]])
    )
    assert one == pytest.approx(4.0 + 1.0, rel=1e-14)
    # Symmetric in its two Gaussians and >= 0; a float.
    d12, d21 = frechet_gaussian(mu1, cov1, mu2, cov2), frechet_gaussian(mu2, cov2, mu1, cov1)
    assert isinstance(d12, float) and d12 > 0 and d12 == pytest.approx(d21, rel=1e-10)


def test_frechet_gaussian_matches_the_scipy_sqrtm_formula(gen, make_spd):
    from scipy.linalg import sqrtm

    for d in (2, 5, 8):
        mu1, mu2 = torch.randn(2, d, generator=gen, dtype=F64)
        cov1, cov2 = make_spd(d), make_spd(d)
        c1, c2 = cov1.numpy(), cov2.numpy()
        expected = float(((mu1 - mu2) ** 2).sum()) + np.trace(c1 + c2 - 2 * np.real(sqrtm(c1 @ c2)))
        assert frechet_gaussian(mu1, cov1, mu2, cov2) == pytest.approx(expected, rel=1e-9)
    # A singular covariance (rank 1 in 3-D) is fine.
    v = torch.tensor([[1.0], [2.0], [-1.0]], dtype=F64)
    singular, eye = v @ v.T, torch.eye(3, dtype=F64)
    zeros = torch.zeros(3, dtype=F64)
    # Eigenvalues of the singular one: |v|² = 6, 0, 0; with the identity they commute.
    assert frechet_gaussian(zeros, singular, zeros, eye) == pytest.approx(
        (math.sqrt(6) - 1) ** 2 + 2
    )


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (
            (torch.zeros(2, 1), torch.eye(2), torch.zeros(2), torch.eye(2)),
            ValueError,
            "mu1 must be",
        ),
        (
            (torch.zeros(2), torch.eye(2), torch.zeros(3), torch.eye(2)),
            ValueError,
            "mu2 must match",
        ),
        (
            (torch.zeros(2), torch.eye(3), torch.zeros(2), torch.eye(2)),
            ValueError,
            "cov1 must match",
        ),
        (
            (torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(3)),
            ValueError,
            "cov2 must match",
        ),
        (
            (torch.zeros(2), torch.eye(2), torch.tensor([0.0, math.inf]), torch.eye(2)),
            ValueError,
            "mu2 must be finite",
        ),
        (
            (torch.zeros(2), torch.full((2, 2), math.nan), torch.zeros(2), torch.eye(2)),
            ValueError,
            "cov1 must be finite",
        ),
        (
            (torch.zeros(2), torch.eye(2), torch.zeros(2), torch.full((2, 2), math.nan)),
            ValueError,
            "cov2 must be finite",
        ),
        (
            (torch.zeros(2), torch.ones(2, 3), torch.zeros(2), torch.eye(2)),
            ValueError,
            "cov1 must be a square",
        ),
        (
            (torch.zeros(2), torch.tensor([[1.0, 1.0], [0.0, 1.0]]), torch.zeros(2), torch.eye(2)),
            ValueError,
            "cov1 must be symmetric",
        ),
        (
            (torch.tensor([math.nan, 0.0]), torch.eye(2), torch.zeros(2), torch.eye(2)),
            ValueError,
            "mu1 must be finite",
        ),
        ((torch.zeros(2), torch.eye(2), "mu", torch.eye(2)), TypeError, "mu2 must be a tensor"),
    ],
)
def test_frechet_gaussian_rejects_bad_input(args, error, match):
    with pytest.raises(error, match=r"^" + match):
        frechet_gaussian(*args)


@pytest.mark.parametrize("shape", [(3, 1), (3, 4)])
def test_frechet_gaussian_rejects_a_mean_that_is_not_a_vector(shape):
    mu = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    with pytest.raises(ValueError, match=r"^mu2 must match mu1"):
        frechet_gaussian(mu, torch.eye(3), mu.reshape(3, 1).expand(shape), torch.eye(3))


@pytest.mark.parametrize(
    ("cov1", "cov2", "match"),
    [
        (torch.diag(torch.tensor([1.0, 0.0])), torch.diag(torch.tensor([0.0, -5.0])), "cov2"),
        (torch.zeros(2, 2), -torch.eye(2), "cov2"),
        (-torch.eye(2), torch.eye(2), "cov1"),
    ],
)
def test_frechet_gaussian_names_a_covariance_that_is_not_psd(cov1, cov2, match):
    with pytest.raises(ValueError, match=f"^{match} must be positive semi-definite"):
        frechet_gaussian(torch.zeros(2), cov1, torch.zeros(2), cov2)


def scipy_frechet(x, y):
    """The Fréchet distance of the Gaussians fitted to numpy samples, via scipy.linalg.sqrtm."""
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    with warnings.catch_warnings():  # dead ReLU units make C1 C2 of digit features singular;
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)  # the root stays accurate
        cross = np.real(scipy.linalg.sqrtm(c1 @ c2))
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(c1 + c2 - 2 * cross))


def test_frechet_distance_of_samples(gen):
    cov = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]], dtype=F64)
    chol = torch.linalg.cholesky(cov)
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    x = mean + torch.randn(20_000, 3, generator=gen, dtype=F64) @ chol.T
    y = mean + torch.randn(20_000, 3, generator=gen, dtype=F64) @ chol.T
    other = 1.5 * torch.randn(20_000, 3, generator=gen, dtype=F64) + mean + 0.5
    same, different = frechet_distance(x, y), frechet_distance(x, other)
    # The same law: the sampling noise alone, about d² / n plus the means' 2 tr(Σ) / n.
    assert 0 <= same < 5e-3
    assert different > 0.5 and different > 100 * same
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    # It is the Gaussian formula on the sample moments (ddof = 1), here by numpy and scipy's
    # sqrtm of C1 C2 (the pytorch-fid route); both are float64 on 3 x 3 matrices of condition
    # about 10, so 1e-10 is loose. Samples of different sizes and float32 ones too.
    assert different == pytest.approx(scipy_frechet(x.numpy(), other.numpy()), rel=1e-10)
    small = x[:500].float()
    expected = scipy_frechet(small.double().numpy(), other.numpy())
    assert frechet_distance(small, other) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_in_one_dimension(gen):
    x = 2.0 + 3.0 * torch.randn(5000, 1, generator=gen, dtype=F64)
    y = -1.0 + 0.5 * torch.randn(300, 1, generator=gen, dtype=F64)
    m1, s1 = float(x.mean()), float(x.std())
    m2, s2 = float(y.mean()), float(y.std())
    assert frechet_distance(x, y) == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-12)


@pytest.mark.parametrize(
    ("x", "y", "error", "match"),
    [
        (torch.zeros(5), torch.zeros(5, 1), ValueError, r"x must be \(n, d\) with n >= 2"),
        (torch.zeros(5, 2), torch.zeros(1, 2), ValueError, r"y must be \(n, d\) with n >= 2"),
        (torch.zeros(5, 2, 2), torch.zeros(5, 2), ValueError, "x must be"),
        (torch.zeros(5, 2), torch.zeros(5, 3), ValueError, "x and y must have the same d"),
        (torch.full((5, 2), math.inf), torch.zeros(5, 2), ValueError, "x must be finite"),
        (torch.zeros(5, 2), "samples", TypeError, "y must be a tensor"),
        (torch.zeros(5, 2), torch.full((5, 2), math.nan), ValueError, "y must be finite"),
    ],
)
def test_frechet_distance_rejects_bad_input(x, y, error, match):
    with pytest.raises(error, match=r"^" + match):
        frechet_distance(x, y)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_sqrtm_psd_round_off_tolerances_are_relative(scale):
    # Eigenvalues: a negative one above -1e-10 d max|w| (d = 4: -4e-10 max|w|) is round-off.
    def diag(last):
        return scale * torch.diag(torch.tensor([1.0, 1.0, 1.0, last], dtype=F64))

    # Accepted and clamped, in the basis of H = HADAMARD (orthogonal, its entries ±1/2 exact in
    # binary): the root of H diag(s, s, s, 0) Hᵀ is H diag(√s, √s, √s, 0) Hᵀ. The eigenvalues
    # come with an error of about 1e-16 s, the root's entries of about 1e-16 √s: 1e-14 √s is loose.
    expected = HADAMARD @ diag(0.0).sqrt() @ HADAMARD.T
    got = sqrtm_psd(HADAMARD @ diag(-2e-10) @ HADAMARD.T)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-14 * math.sqrt(scale))
    with pytest.raises(ValueError, match=r"^a must be positive semi-definite"):
        sqrtm_psd(diag(-1e-9))
    # Asymmetry: accepted up to 1e-10 max(1, max|a|) absolute plus 1e-8 relative.
    big = scale * torch.eye(2, dtype=F64)
    big[0, 1] = 0.5e-10 * max(1.0, scale)
    # Symmetrised to [[s, c], [c, s]] (c = big[0, 1] / 2), eigenvalues s ± c on (1, ±1) / √2:
    # its root has √(s ± c) averaged on the diagonal, halved differences off it.
    c = big[0, 1] / 2
    plus, minus = torch.sqrt(scale + c), torch.sqrt(scale - c)
    root = torch.stack(
        [torch.stack([plus + minus, plus - minus]), torch.stack([plus - minus, plus + minus])]
    )
    torch.testing.assert_close(sqrtm_psd(big), root / 2, rtol=1e-14, atol=1e-14 * math.sqrt(scale))
    for off in (1.5e-10 * max(1.0, scale), 1e-9 * max(1.0, scale)):
        skew = scale * torch.eye(2, dtype=F64)
        skew[0, 1] = off
        with pytest.raises(ValueError, match=r"^a must be symmetric"):
            sqrtm_psd(skew)
    relative = torch.tensor([[2.0, 1.0 + 1e-6], [1.0, 2.0]], dtype=F64) * scale
    with pytest.raises(ValueError, match=r"^a must be symmetric"):
        sqrtm_psd(relative)


def test_frechet_keeps_python_floats_in_float64():
    # 1e8 + 1 is not a float32; lists of Python floats must not be rounded to one.
    assert frechet_gaussian([1e8 + 1.0], [[1.0]], [1e8], [[1.0]]) == 1.0
    assert frechet_gaussian([1e8], [[1.0]], [1e8 + 1.0], [[1.0]]) == 1.0
    sample = [[1e4 + 1e-3 * k] for k in range(10)]  # a float32 would round the spread
    assert frechet_distance(sample, sample) == pytest.approx(0.0, abs=1e-12)
    assert frechet_distance(torch.tensor(sample, dtype=F64), sample) == pytest.approx(
        0.0, abs=1e-12
    )


def test_frechet_gaussian_accepts_round_off_negative_eigenvalues_at_any_scale():
    # cov2's -1.8e-10 is round-off next to its eigenvalue 1; once multiplied by a cov1 of
    # scale 1e-6 it is the cross term's largest eigenvalue in magnitude: still round-off.
    cov1 = torch.diag(torch.tensor([1e-6, 1.0], dtype=F64))
    cov2 = torch.diag(torch.tensor([1.0, -1.8e-10], dtype=F64))
    value = frechet_gaussian(torch.zeros(2), cov1, torch.zeros(2), cov2)
    # Commuting covariances with the round-off eigenvalue as 0: Σ (√a_i - √b_i)². The traces
    # still hold the -1.8e-10; left unclamped the cross term would add 2 √1.8e-10 = 2.7e-5.
    assert value == pytest.approx((1e-3 - 1.0) ** 2 + (1.0 - 0.0) ** 2, abs=1e-9)


def test_frechet_distance_of_two_observations_each():
    x = torch.tensor([[0.0, 1.0], [2.0, 1.0]], dtype=F64)  # mean (1, 1), cov diag(2, 0)
    y = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=F64)  # mean (1, 1), cov diag(0, 2)
    # tr(C1 + C2) - 2 tr (C1^1/2 C2 C1^1/2)^1/2 = 4 - 0: the covariances are orthogonal.
    assert frechet_distance(x, y) == pytest.approx(4.0, abs=1e-12)


@pytest.fixture(scope="module")
def digits_features():
    """The default feature network, trained once for the module (about 2 s)."""
    return DigitsFeatures()


@pytest.fixture(scope="module")
def digit_images():
    return digits()[0]


def test_digits_features_classify_well_and_have_64_features(digits_features, digit_images):
    assert digits_features.test_accuracy > 0.9
    feats = digits_features.features(digit_images[:50])
    assert feats.shape == (50, 64) and bool((feats >= 0).all())  # ReLU activations
    flat = digits_features.features(digit_images[:50].reshape(50, 64))
    assert torch.equal(feats, flat)
    assert torch.equal(feats, digits_features.features(digit_images[:50].double()))


def test_digits_frechet_is_zero_for_the_same_images_and_large_for_noise(
    digits_features, digit_images
):
    real, other = digit_images[:800], digit_images[800:1600]
    noise = torch.rand(800, 8, 8, generator=torch.Generator().manual_seed(0))
    same = digits_features.frechet(real, real)
    halves = digits_features.frechet(real, other)
    to_noise = digits_features.frechet(real, noise)
    scale = float(digits_features.features(real).var(0).sum())  # tr Σ of the features
    assert same == pytest.approx(0.0, abs=1e-8 * scale)
    assert to_noise > 10 * halves > 0
    # Independent reference: numpy moments of the features and scipy's sqrtm of C1 C2 (the
    # pytorch-fid route: tr sqrt(C1 C2) = tr (C1^1/2 C2 C1^1/2)^1/2), not vaebook's formula.
    f1 = digits_features.features(real).double().numpy()
    for images, value in ((other, halves), (noise, to_noise)):
        reference = scipy_frechet(f1, digits_features.features(images).double().numpy())
        assert value == pytest.approx(reference, rel=1e-6)


def test_digits_features_are_deterministic_for_a_seed_and_leave_the_global_rng_alone(digit_images):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = DigitsFeatures(seed=1, epochs=2)
    assert torch.equal(torch.rand(3), expected)
    b, c = DigitsFeatures(seed=1, epochs=2), DigitsFeatures(seed=2, epochs=2)
    images = digit_images[:20]
    assert torch.equal(a.features(images), b.features(images))
    assert a.test_accuracy == b.test_accuracy
    assert not torch.equal(a.features(images), c.features(images))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda f: DigitsFeatures(seed=-1), ValueError, "seed must be >= 0"),
        (lambda f: DigitsFeatures(epochs=0), ValueError, "epochs must be > 0"),
        (lambda f: DigitsFeatures(epochs=1.5), TypeError, "epochs must be an int"),
        (
            lambda f: f.features(torch.zeros(5, 63)),
            ValueError,
            r"images must be \(n, 8, 8\) or \(n, 64\)",
        ),
        (lambda f: f.features(torch.zeros(64)), ValueError, "images must be"),
        (lambda f: f.features(torch.full((2, 64), math.nan)), ValueError, "images must be finite"),
        (lambda f: f.features("images"), TypeError, "images must be a tensor"),
        (lambda f: f.frechet(torch.zeros(5, 64), torch.zeros(1, 64)), ValueError, "y must be"),
    ],
)
def test_digits_features_reject_bad_input(digits_features, call, error, match):
    with pytest.raises(error, match=r"^" + match):
        call(digits_features)


def test_digits_features_train_as_documented(monkeypatch):
    batch_sizes, learning_rates = [], []
    cross_entropy, adam = torch.nn.functional.cross_entropy, torch.optim.Adam

    def recording_cross_entropy(logits, labels):
        assert logits.shape == (len(labels), 10)
        batch_sizes.append(len(labels))
        return cross_entropy(logits, labels)

    def recording_adam(params, **kwargs):
        optimiser = adam(params, **kwargs)
        learning_rates.append(optimiser.param_groups[0]["lr"])
        return optimiser

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", recording_cross_entropy)
    monkeypatch.setattr(torch.optim, "Adam", recording_adam)
    features = DigitsFeatures(seed=0, epochs=2)
    # Adam at 3e-3 over the seeded 80% (1437 of 1797 digits), each once per epoch, in 128s.
    n_train = int(0.8 * len(digits()[0]))
    per_epoch = [128] * (n_train // 128) + [n_train % 128]
    assert batch_sizes == 2 * per_epoch and learning_rates == [3e-3]
    layers = [m for m in features.network if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in layers] == [(128, 64), (64, 128), (10, 64)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in features.network) == 2


def test_digits_features_defaults_are_seed_0_and_60_epochs(digits_features, digit_images):
    documented = DigitsFeatures(seed=0, epochs=60)
    images = digit_images[:20]
    assert torch.equal(documented.features(images), digits_features.features(images))
