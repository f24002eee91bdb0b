"""Disentanglement and sparsity metrics of a representation against ground-truth factors.

- :func:`hoyer` and :func:`dataset_hoyer`: the Hoyer sparsity of codes, per example and the
  dataset-normalised average Mathieu et al. (2019) plot in their Fig. 4;
- :func:`factor_vae_score`: the FactorVAE disentanglement score of Kim & Mnih (2018);
- :func:`frechet_distance` between two samples (the Gaussian closed form
  :func:`frechet_gaussian`, with the matrix square root :func:`sqrtm_psd`), and
  :class:`DigitsFeatures`, a small classifier of the 8x8 digits whose hidden layer is the
  feature space of the book's "digits Fréchet distance" (:meth:`DigitsFeatures.frechet`).

The metrics that need ground truth take a ``data`` object following the factor protocol of
:class:`vaebook.sprites.FactorDataset`: ``factor_sizes`` (K ints), ``sample_factors(n,
generator)`` -> int64 numpy ``(n, K)`` and ``observations(factors)`` -> a tensor batch, and a
``represent`` callable mapping such a batch to codes ``(n, d)`` (e.g. an encoder's mean).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .checks import as_tensor, check_positive, check_positive_int

__all__ = [
    "DigitsFeatures",
    "FactorVAEScore",
    "dataset_hoyer",
    "factor_vae_score",
    "frechet_distance",
    "frechet_gaussian",
    "hoyer",
    "sqrtm_psd",
]

_CHUNK = 4096  # at most this many observations per call of ``represent``


# -- Hoyer sparsity ---------------------------------------------------------------------------


def _check_codes(z, name: str) -> torch.Tensor:
    z = as_tensor(z, name)
    if z.dim() < 1 or z.shape[-1] < 2:
        raise ValueError(f"{name} must have shape (..., d) with d >= 2, got {tuple(z.shape)}")
    return z


def hoyer(z) -> torch.Tensor:
    """Hoyer sparsity of each row: ``(sqrt(d) - ||z||_1 / ||z||_2) / (sqrt(d) - 1)``.

    1 for a one-hot row (one non-zero entry), 0 for a row whose entries all have the same
    magnitude, in between otherwise; invariant to rescaling a row by any non-zero number.
    An all-zero row has no direction to be sparse in: its sparsity is defined as 0 (the value
    of a constant-magnitude row), so the result never holds NaN. Rounding is clipped to [0, 1].

    Parameters
    ----------
    z : ``(n, d)`` (or any ``(..., d)``) real codes, d >= 2.

    Returns
    -------
    ``(n,)`` (or ``(...)``), in the dtype of ``z``.
    """
    z = _check_codes(z, "z")
    root_d = math.sqrt(z.shape[-1])
    l1 = z.abs().sum(-1)
    l2 = torch.linalg.vector_norm(z, dim=-1)
    ratio = torch.where(l2 > 0, l1 / torch.where(l2 > 0, l2, 1.0), root_d)
    return ((root_d - ratio) / (root_d - 1.0)).clamp(0.0, 1.0)


def dataset_hoyer(z) -> torch.Tensor:
    """Mean Hoyer sparsity of a dataset of codes, each dimension first divided by its std.

    As Mathieu et al. (2019, Sec. 5 and Fig. 4) measure sparsity: every dimension ``j`` is
    divided by its standard deviation ``std_j`` over the ``n`` examples (not centred; any common
    factor in the std cancels, so ``ddof`` does not matter), then :func:`hoyer` is taken per
    example and averaged. The normalisation stops a dimension that is simply larger than the
    others everywhere from counting as sparsity; the result is invariant to rescaling dimensions.

    Parameters
    ----------
    z : ``(n, d)`` codes of n >= 2 examples (e.g. encoder means), d >= 2.

    Returns
    -------
    Scalar tensor in [0, 1].

    A dimension that is constant over the dataset raises ``ValueError`` (its normalisation
    is undefined).
    """
    z = _check_codes(z, "z")
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"z must have shape (n, d) with n >= 2, got {tuple(z.shape)}")
    std = z.std(0)
    if bool((std == 0).any()):
        dims = torch.nonzero(std == 0).flatten().tolist()
        raise ValueError(f"z has dimensions {dims} constant over the dataset; drop them first")
    return hoyer(z / std).mean()


# -- FactorVAE score ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FactorVAEScore:
    """Result of :func:`factor_vae_score`.

    Fields:

    - ``score``: accuracy of the majority-vote classifier on the evaluation votes, in [0, 1];
    - ``train_votes``, ``eval_votes``: int64 ``(d, K)``; entry ``(j, k)`` counts the votes
      where factor ``k`` was fixed and dimension ``j`` had the lowest normalised variance. Rows
      of dropped (collapsed) dimensions are zero;
    - ``classifier``: int64 ``(d,)``, the factor each dimension predicts (argmax of its row of
      ``train_votes``, lowest factor on ties); -1 for a dimension with no training vote;
    - ``kept``: int64 ``(d_kept,)``, the dimensions kept (global std >= ``collapse_threshold``);
    - ``global_std``: float64 ``(d,)``, the per-dimension std over the ``n_global`` observations.
    """

    score: float
    train_votes: np.ndarray
    eval_votes: np.ndarray
    classifier: np.ndarray
    kept: np.ndarray
    global_std: np.ndarray


def _check_data(data) -> tuple[int, ...]:
    """The factor sizes of ``data``, after checking it follows the factor protocol."""
    for attr in ("factor_sizes", "sample_factors", "observations"):
        if not hasattr(data, attr):
            raise TypeError(
                f"data must follow the factor protocol (factor_sizes, sample_factors, "
                f"observations), but {type(data).__name__} has no {attr!r}"
            )
    sizes = tuple(data.factor_sizes)
    if not sizes or any(isinstance(s, bool) or int(s) != s or s < 1 for s in sizes):
        raise ValueError(f"data.factor_sizes must be positive ints, got {sizes}")
    return tuple(int(s) for s in sizes)


def _sample(data, n: int, n_factors: int, generator: torch.Generator) -> np.ndarray:
    factors = np.array(data.sample_factors(n, generator), dtype=np.int64)  # writable copy
    if factors.shape != (n, n_factors):
        raise ValueError(
            f"data.sample_factors({n}, ...) must return shape ({n}, {n_factors}), "
            f"got {factors.shape}"
        )
    return factors


def _represent(represent: Callable, data, factors: np.ndarray, d: int | None) -> torch.Tensor:
    """Codes float64 ``(n, d)`` of the observations of ``factors``, in chunks of ``_CHUNK``."""
    parts = []
    for start in range(0, len(factors), _CHUNK):
        chunk = factors[start : start + _CHUNK]
        with torch.no_grad():
            z = represent(data.observations(chunk))
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"represent must return a tensor, got {type(z).__name__}")
        want = f"({len(chunk)}, {'d' if d is None else d})"
        if z.dim() != 2 or z.shape[0] != len(chunk) or (d is not None and z.shape[1] != d):
            raise ValueError(f"represent must return shape {want}, got {tuple(z.shape)}")
        if not bool(torch.isfinite(z).all()):
            raise ValueError("represent returned NaN or infinite values")
        d = z.shape[1]
        parts.append(z.detach().to(device="cpu", dtype=torch.float64))
    return torch.cat(parts)


def _votes(represent, data, sizes, n_votes, batch_size, scale, kept, generator) -> np.ndarray:
    """Vote counts ``(d, K)``: for each vote fix one factor, find the least-varying dimension."""
    d, n_factors = len(scale), len(sizes)
    votes = np.zeros((d, n_factors), dtype=np.int64)
    per_call = max(1, _CHUNK // batch_size)
    for first in range(0, n_votes, per_call):
        n = min(per_call, n_votes - first)
        ks = torch.randint(n_factors, (n,), generator=generator).numpy()
        batches = []
        for k in ks:
            factors = _sample(data, batch_size, n_factors, generator)
            factors[:, k] = factors[0, k]  # factor k fixed to the (uniform) value of the first
            batches.append(factors)
        z = _represent(represent, data, np.concatenate(batches), d)
        z = z.reshape(n, batch_size, d)[:, :, kept] / scale[kept]
        lowest = kept[z.var(1).argmin(1).numpy()]  # (n,) in the original numbering
        np.add.at(votes, (lowest, ks), 1)
    return votes


def factor_vae_score(
    represent: Callable,
    data,
    *,
    seed: int = 0,
    n_votes_train: int = 800,
    n_votes_eval: int = 400,
    batch_size: int = 64,
    n_global: int = 10000,
    collapse_threshold: float = 0.05,
) -> FactorVAEScore:
    """FactorVAE disentanglement score (Kim & Mnih, 2018, "A new metric for disentanglement").

    Protocol, with one seeded ``torch.Generator(seed)`` supplying every draw in this order:

    1. codes of ``n_global`` observations drawn with ``data.sample_factors`` give the global
       std ``s_j`` of each dimension (``ddof=1``);
    2. collapsed dimensions are dropped: ``j`` is kept iff ``s_j >= collapse_threshold`` and
       ``s_j > 0``: an absolute threshold in the units of the codes (disentanglement_lib's
       rule, std 0.05; Kim & Mnih prune dimensions of near-zero variance). If no dimension is
       kept, the score is 0;
    3. each vote: pick a factor ``k`` uniformly, draw ``batch_size`` factor rows and set column
       ``k`` of all of them to the first row's value, represent their observations, divide each
       kept dimension by ``s_j``, and take the kept dimension ``j`` of lowest variance
       (``ddof=1``, lowest index on ties); the vote is ``(j, k)``;
    4. ``n_votes_train`` votes train the majority-vote classifier: dimension ``j`` predicts the
       factor it voted for most (lowest factor on ties; none if it got no vote);
    5. the score is the classifier's accuracy on ``n_votes_eval`` further votes (a vote for a
       dimension that predicts nothing counts as wrong).

    The defaults (800 training / 400 evaluation votes of batches of 64, ``n_global`` 10,000)
    suit a laptop CPU; disentanglement_lib's defaults are larger (10,000 training and 5,000
    evaluation votes of batch 64). The score's sampling error is about
    ``sqrt(score (1 - score) / n_votes_eval)``.

    Parameters
    ----------
    represent : callable mapping an observation batch (what ``data.observations`` returns for
        ``m`` rows) to codes ``(m, d)``; it should be deterministic (e.g. an encoder's mean).
        It is called under ``torch.no_grad()`` on at most 4096 observations at a time.
    data : object with ``factor_sizes`` (K ints), ``sample_factors(n, generator)`` -> int64
        ``(n, K)`` and ``observations(factors)``, e.g. :class:`vaebook.sprites.Sprites`.
    seed : int >= 0. The result is a deterministic function of the seed.
    n_votes_train, n_votes_eval : int > 0, numbers of votes.
    batch_size : int >= 2, observations per vote. n_global : int >= 2.
    collapse_threshold : float >= 0.

    Returns
    -------
    :class:`FactorVAEScore` (score, vote matrices ``(d, K)``, classifier, kept dimensions).
    """
    if not callable(represent):
        raise TypeError(f"represent must be callable, got {type(represent).__name__}")
    sizes = _check_data(data)
    seed = check_positive_int(seed, "seed", allow_zero=True)
    n_votes_train = check_positive_int(n_votes_train, "n_votes_train")
    n_votes_eval = check_positive_int(n_votes_eval, "n_votes_eval")
    for name, value in (("batch_size", batch_size), ("n_global", n_global)):
        if check_positive_int(value, name) < 2:
            raise ValueError(f"{name} must be >= 2 to estimate a variance, got {value}")
    collapse_threshold = check_positive(collapse_threshold, "collapse_threshold", allow_zero=True)

    generator = torch.Generator().manual_seed(seed)
    factors = _sample(data, n_global, len(sizes), generator)
    scale = _represent(represent, data, factors, None).std(0)
    d = len(scale)
    kept = np.flatnonzero((scale >= collapse_threshold).numpy() & (scale > 0).numpy())
    empty = np.zeros((d, len(sizes)), dtype=np.int64)
    if kept.size == 0:
        return FactorVAEScore(0.0, empty, empty.copy(), np.full(d, -1), kept, scale.numpy())
    args = (represent, data, sizes)
    train = _votes(*args, n_votes_train, batch_size, scale, kept, generator)
    evals = _votes(*args, n_votes_eval, batch_size, scale, kept, generator)
    classifier = np.where(train.sum(1) > 0, train.argmax(1), -1)
    hits = sum(int(evals[j, classifier[j]]) for j in range(d) if classifier[j] >= 0)
    return FactorVAEScore(hits / n_votes_eval, train, evals, classifier, kept, scale.numpy())


# -- Fréchet distance -------------------------------------------------------------------------


def _psd_matrix(a, name: str) -> torch.Tensor:
    a = as_tensor(a, name, dtype=torch.float64)
    if a.dim() != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square matrix (d, d), got {tuple(a.shape)}")
    if not torch.allclose(a, a.T, rtol=1e-8, atol=1e-10 * float(a.abs().max().clamp_min(1.0))):
        raise ValueError(f"{name} must be symmetric")
    return 0.5 * (a + a.T)


def _psd_eigh(a: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of a symmetric PSD matrix, round-off negatives set to 0."""
    values, vectors = torch.linalg.eigh(a)
    tolerance = 1e-10 * max(float(values.abs().max()), 1e-300) * a.shape[0]
    if float(values.min()) < -tolerance:
        raise ValueError(
            f"{name} must be positive semi-definite, has eigenvalue {float(values.min()):.3g}"
        )
    return values.clamp_min(0.0), vectors


def sqrtm_psd(a) -> torch.Tensor:
    """The symmetric square root ``a^{1/2}`` of a symmetric positive semi-definite ``a`` (d, d).

    Computed from the eigen-decomposition ``a = V diag(w) V^T`` as ``V diag(sqrt(w)) V^T`` in
    float64; eigenvalues that round-off made slightly negative (above ``-1e-10 d max|w|``) are
    set to 0, clearly negative ones raise ``ValueError``. ``a`` counts as symmetric when
    ``|a - a^T| <= 1e-10 max(1, max|a|) + 1e-8 |a^T|`` entrywise (round-off asymmetry); it is
    symmetrised before the decomposition. Unlike a general ``sqrtm`` it never
    returns complex values, and it is exact to round-off for singular matrices.
    """
    return _sqrtm(_psd_matrix(a, "a"), "a")


def _sqrtm(a: torch.Tensor, name: str) -> torch.Tensor:
    values, vectors = _psd_eigh(a, name)
    return (vectors * values.sqrt()) @ vectors.T


def frechet_gaussian(mu1, cov1, mu2, cov2) -> float:
    r"""The Fréchet (2-Wasserstein squared) distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``.

    ``‖mu1 - mu2‖² + tr(cov1 + cov2 - 2 (cov1^{1/2} cov2 cov1^{1/2})^{1/2})``. The cross term
    is the trace of the square root of a symmetric PSD matrix, i.e. the sum of the square
    roots of its eigenvalues (float64), which avoids the complex round-off of
    ``sqrtm(cov1 @ cov2)``. Means ``(d,)``, covariances ``(d, d)``; returns a float >= 0.
    """
    mu1 = as_tensor(mu1, "mu1", dtype=torch.float64)
    mu2 = as_tensor(mu2, "mu2", dtype=torch.float64)
    cov1, cov2 = _psd_matrix(cov1, "cov1"), _psd_matrix(cov2, "cov2")
    if mu1.dim() != 1:
        raise ValueError(f"mu1 must be a vector (d,), got shape {tuple(mu1.shape)}")
    d = mu1.shape[0]
    for name, value in (("mu2", mu2), ("cov1", cov1), ("cov2", cov2)):
        if value.shape[0] != d or (name == "mu2" and value.dim() != 1):
            raise ValueError(
                f"{name} must match mu1 of shape ({d},), got shape {tuple(value.shape)}"
            )
    _psd_eigh(cov2, "cov2")
    root1 = _sqrtm(cov1, "cov1")
    middle = root1 @ cov2 @ root1
    # PSD by construction; a round-off negative eigenvalue of cov2 may make one of its
    # eigenvalues slightly negative, relative to a much smaller scale: clamp, do not check.
    cross = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp_min(0.0)
    value = ((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * cross.sqrt().sum()
    return max(float(value), 0.0)


def frechet_distance(x, y) -> float:
    """The Fréchet distance between the Gaussians fitted to two samples ``(n, d)`` and ``(m, d)``.

    Means and covariances (``ddof=1``) in float64, then :func:`frechet_gaussian`. This is the
    formula of the FID (Heusel et al., 2017); the FID applies it to Inception-v3 features.
    It is biased upwards for finite samples: two independent samples of one distribution
    give a small positive value that falls like ``d^2 / n``.
    """
    x = as_tensor(x, "x", dtype=torch.float64)
    y = as_tensor(y, "y", dtype=torch.float64)
    for name, value in (("x", x), ("y", y)):
        if value.dim() != 2 or value.shape[0] < 2:
            raise ValueError(f"{name} must be (n, d) with n >= 2, got {tuple(value.shape)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same d, got {x.shape[1]} and {y.shape[1]}")
    return frechet_gaussian(
        x.mean(0),
        torch.cov(x.T).reshape(x.shape[1], -1),
        y.mean(0),
        torch.cov(y.T).reshape(y.shape[1], -1),
    )


class DigitsFeatures:
    """A small classifier of the 8x8 digits whose hidden layer gives the "digits Fréchet distance".

    The FID compares images in the feature space of an Inception-v3 network trained on
    ImageNet; that network is a download, which this book does not do. In its place:
    an MLP ``64 -> 128 -> 64 -> 10`` (ReLU), trained once, deterministically from ``seed``,
    with Adam on a seeded 80% of scikit-learn's digits; its 64 penultimate activations are
    the features. Numbers on this scale are not comparable with published FIDs, only with
    each other.

    Parameters
    ----------
    seed : int >= 0, for the split, the initialisation and the mini-batches.
    epochs : int > 0, passes over the training split (batches of 128, learning rate 3e-3).

    Attributes: ``network`` (the ``torch.nn.Sequential``), ``test_accuracy`` (on the held-out
    20%).
    """

    def __init__(self, seed: int = 0, epochs: int = 60):
        from .data import digits
        from .nets import mlp, seeded

        check_positive_int(seed, "seed", allow_zero=True)
        check_positive_int(epochs, "epochs")
        images, labels = digits()
        x = images.reshape(len(images), -1)
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(x), generator=gen)
        n_train = int(0.8 * len(x))
        train, test = order[:n_train], order[n_train:]
        with seeded(seed):
            self.network = mlp([64, 128, 64, 10], "relu")
        optimiser = torch.optim.Adam(self.network.parameters(), lr=3e-3)
        for _ in range(epochs):
            perm = train[torch.randperm(n_train, generator=gen)]
            for start in range(0, n_train, 128):
                batch = perm[start : start + 128]
                loss = torch.nn.functional.cross_entropy(self.network(x[batch]), labels[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        self.network.eval()
        with torch.no_grad():
            predicted = self.network(x[test]).argmax(-1)
        self.test_accuracy = float((predicted == labels[test]).float().mean())

    def features(self, images) -> torch.Tensor:
        """The 64 hidden features ``(n, 64)`` of images ``(n, 8, 8)`` or ``(n, 64)`` in [0, 1]."""
        images = as_tensor(images, "images", dtype=torch.float32)
        if images.dim() < 2 or images[0].numel() != 64:
            raise ValueError(f"images must be (n, 8, 8) or (n, 64), got {tuple(images.shape)}")
        with torch.no_grad():
            return self.network[:-1](images.reshape(len(images), 64))

    def frechet(self, images, reference) -> float:
        """The digits Fréchet distance: :func:`frechet_distance` between the features."""
        return frechet_distance(self.features(images), self.features(reference))
