r"""The aggregate posterior :math:`q(z) = \frac1N \sum_n q(z|x_n)` (Mathieu et al., 2019).

- **Its density**: :func:`log_aggregate_posterior`, the exact mixture log-density over a set of
  encodings.
- **Divergences to the prior**, the :math:`\mathbb D(q(z), p(z))` of objective (7) (Appendix B):
  :func:`inclusive_kl_aggregate`, a sample estimate of :math:`\mathrm{KL}(p(z) \| q(z))`, and
  :func:`mmd_imq`, the MMD with a sum of inverse multiquadratic kernels (:data:`MMD_SCALES`),
  and :func:`mmd_imq_per_coordinate`, the sum of one such MMD per latent coordinate (the
  divergence of the authors' released code for the sparsity experiment).
- **Samples**: :func:`sample_aggregate_posterior` draws from the mixture itself, and
  :func:`sample_gaussian_fit` from the Gaussian with the mean and covariance of latent samples
  (Dai & Wipf's second stage asks whether anything beyond these moments can be learned).
- **Appendix C** (eq. 10): the minibatch estimator of :math:`H[q(z)]` and its bias:
  :func:`minibatch_log_aggregate_density`, :func:`minibatch_weighted_entropy`, and the
  full-dataset Monte Carlo reference :func:`aggregate_entropy_reference`.

Shapes: ``d`` is the latent dimension, ``n``/``B`` the number of examples in a (mini)batch,
``N`` the dataset size, ``S`` a number of Monte Carlo samples.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .checks import (
    as_tensor,
    check_choice,
    check_positive,
    check_positive_int,
)
from .gaussian import (
    log_normal_diag,
    sample_diag_normal,
    sample_normal,
)
from .priors import Prior, _encoder

__all__ = [
    "MMD_SCALES",
    "MonteCarloEstimate",
    "aggregate_entropy_reference",
    "inclusive_kl_aggregate",
    "log_aggregate_posterior",
    "minibatch_log_aggregate_density",
    "minibatch_weighted_entropy",
    "mmd_imq",
    "mmd_imq_per_coordinate",
    "sample_aggregate_posterior",
    "sample_gaussian_fit",
]

#: Default MMD scales ``s``: the kernel constants are ``C = 2 d s`` (Tolstikhin et al., 2017).
MMD_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


# --- D(q(z), p(z)) -----------------------------------------------------------------------


def inclusive_kl_aggregate(prior_samples, mu, logvar, prior: Prior) -> torch.Tensor:
    r"""``KL(p(z) || q(z))`` with ``q(z) ≈ (1/B) sum_i q(z|x_i)`` (Appendix B, pinwheel).

    .. math::

        \widehat{\mathrm{KL}} = \frac1M \sum_{j=1}^M \Big[\log p(z_j)
        - \log \frac1B \sum_{i=1}^B q(z_j | x_i)\Big], \quad z_j \sim p(z).

    The paper's display omits the :math:`1/B` (a constant offset ``log B``); with it the
    estimate is consistent for the KL to the minibatch aggregate posterior, and it is exactly
    0 when that aggregate equals the prior.

    Parameters
    ----------
    prior_samples : tensor ``(M, d)``, draws of ``p(z)``.
    mu, logvar : tensors ``(B, d)``, the minibatch's encoders, or ``(..., B, d)`` for
        several models at once (e.g. an ensemble), each with its own aggregate posterior.
    prior : :class:`vaebook.priors.Prior`.

    Returns
    -------
    tensor ``mu.shape[:-2]`` (0-dim for one model).
    """
    mu, logvar = _encoder(mu, logvar, prior, batched=True)
    zp = _prior_samples(prior_samples, mu)
    return (prior.log_prob(zp) - log_aggregate_posterior(zp, mu, logvar)).mean(-1)


def log_aggregate_posterior(z, mu, logvar) -> torch.Tensor:
    r"""The log-density of the aggregate posterior of ``B`` Gaussian encoders at points ``z``:
    :math:`\log \frac1B \sum_{i=1}^B \mathcal N(z; \mu_i, \mathrm{diag}\,e^{\mathrm{logvar}_i})`.

    Parameters
    ----------
    z : tensor ``(P, d)``, the points (e.g. a plotting grid or prior draws).
    mu, logvar : tensors ``(B, d)``, or ``(..., B, d)`` for several models at once.

    Returns
    -------
    tensor ``(..., P)``.
    """
    mu = as_tensor(mu, "mu")
    logvar = as_tensor(logvar, "logvar", like=mu)
    z = as_tensor(z, "z", like=mu)
    if mu.dim() < 2 or logvar.shape != mu.shape:
        raise ValueError(
            f"mu and logvar must both be (..., B, d), got {tuple(mu.shape)} and "
            f"{tuple(logvar.shape)}"
        )
    if z.dim() != 2 or z.shape[1] != mu.shape[-1]:
        raise ValueError(f"z must be (P, {mu.shape[-1]}), got {tuple(z.shape)}")
    # (..., P, B): log q(z_p | x_i) for every point p and example i
    log_q = log_normal_diag(z.unsqueeze(-2), mu.unsqueeze(-3), logvar.unsqueeze(-3))
    return torch.logsumexp(log_q, -1) - math.log(mu.shape[-2])


def sample_aggregate_posterior(mu, logvar, n: int, *, generator=None) -> torch.Tensor:
    r"""``n`` draws from the aggregate posterior :math:`\frac1N\sum_i q(z|x_i)` of ``N``
    Gaussian encodings: pick ``i`` uniformly (with replacement), then draw
    :math:`z \sim \mathcal N(\mu_i, \mathrm{diag}\,e^{\mathrm{logvar}_i})`.

    Parameters
    ----------
    mu, logvar : tensors ``(N, d)``, or ``(..., N, d)`` for several models encoding the same
        examples (all models then use the same picked indices, so draw ``j`` of every model
        comes from the same example).
    n : int > 0, the number of draws.
    generator : optional ``torch.Generator`` for the indices and the noise.

    Returns
    -------
    tensor ``(..., n, d)``.
    """
    mu = as_tensor(mu, "mu")
    logvar = as_tensor(logvar, "logvar", like=mu)
    if mu.dim() < 2 or logvar.shape != mu.shape:
        raise ValueError(
            f"mu and logvar must both be (..., N, d), got {tuple(mu.shape)} and "
            f"{tuple(logvar.shape)}"
        )
    n = check_positive_int(n, "n")
    picked = torch.randint(mu.shape[-2], (n,), generator=generator, device=mu.device)
    return sample_diag_normal(mu[..., picked, :], logvar[..., picked, :], generator=generator)


def sample_gaussian_fit(z, n: int, *, generator=None) -> torch.Tensor:
    r"""``n`` draws from the Gaussian with the sample mean and covariance of the rows of ``z``.

    Parameters
    ----------
    z : tensor ``(N, d)`` of latent samples, ``N > d``, or ``(..., N, d)`` (one fit per
        leading index); the covariance is the unbiased one and must be positive definite.
    n : int > 0, the number of draws.
    generator : optional ``torch.Generator``.

    Returns
    -------
    tensor ``(..., n, d)``.
    """
    z = as_tensor(z, "z")
    if z.dim() < 2 or z.shape[-2] <= z.shape[-1]:
        raise ValueError(f"z must be (..., N, d) with N > d samples, got {tuple(z.shape)}")
    n = check_positive_int(n, "n")
    mean = z.mean(-2)
    centred = z - mean.unsqueeze(-2)
    cov = centred.mT @ centred / (z.shape[-2] - 1)
    draws = sample_normal(mean, cov, n_samples=n, generator=generator)  # (n, ..., d)
    return draws.movedim(0, -2)


def mmd_imq(x, y, *, scales=MMD_SCALES) -> torch.Tensor:
    r"""Unbiased MMD² between samples ``x`` and ``y`` with inverse multiquadratic kernels.

    :math:`k(a, b) = \sum_s C_s / (C_s + \|a - b\|^2)` with :math:`C_s = 2 d s` for ``s`` in
    ``scales`` (Tolstikhin et al., 2017; the paper's Appendix B writes the norm unsquared, we
    follow WAE's squared form). The U-statistic

    .. math::

        \frac{1}{m(m-1)}\sum_{i\ne i'} k(x_i, x_{i'}) + \frac{1}{n(n-1)}\sum_{j\ne j'}
        k(y_j, y_{j'}) - \frac{2}{mn}\sum_{i,j} k(x_i, y_j)

    is unbiased for MMD², so it can be negative; its mean is 0 when ``x`` and ``y`` have the
    same law.

    Parameters
    ----------
    x : tensor ``(m, d)``, ``m ≥ 2``; y : tensor ``(n, d)``, ``n ≥ 2``. Leading axes
        ``(..., m, d)`` compare several sample sets at once (they broadcast between ``x``
        and ``y``, e.g. an ensemble's codes ``(M, m, d)`` against shared prior draws).
    scales : non-empty sequence of positive numbers.

    Returns
    -------
    tensor of the broadcast leading shape (0-dim for two plain samples).
    """
    x = as_tensor(x, "x")
    y = as_tensor(y, "y", like=x)
    for t, name in ((x, "x"), (y, "y")):
        if t.dim() < 2 or t.shape[-2] < 2:
            raise ValueError(f"{name} must be (m, d) with m >= 2, got {tuple(t.shape)}")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"y has dimension {y.shape[-1]} but x has {x.shape[-1]}")
    if isinstance(scales, (str, bytes)) or not hasattr(scales, "__len__") or len(scales) == 0:
        raise TypeError("scales must be a non-empty sequence of positive numbers")
    consts = [2 * x.shape[-1] * check_positive(s, "scales") for s in scales]
    m, n = x.shape[-2], y.shape[-2]

    def kernel(a, b):
        # squared distances as |a|² + |b|² - 2 a·b: memory (..., m, n), not (..., m, n, d)
        sq = (a * a).sum(-1).unsqueeze(-1) + (b * b).sum(-1).unsqueeze(-2)
        sq = (sq - 2 * a @ b.transpose(-1, -2)).clamp_min(0)
        return sum(c / (c + sq) for c in consts)

    def off_diagonal_sum(k):
        return k.sum((-2, -1)) - k.diagonal(dim1=-2, dim2=-1).sum(-1)

    return (
        off_diagonal_sum(kernel(x, x)) / (m * (m - 1))
        + off_diagonal_sum(kernel(y, y)) / (n * (n - 1))
        - 2 * kernel(x, y).mean((-2, -1))
    )


def mmd_imq_per_coordinate(x, y, *, scales=MMD_SCALES) -> torch.Tensor:
    r"""Sum over the coordinates of the 1-D unbiased IMQ MMD²: :math:`\sum_j
    \mathrm{MMD}^2(x_{\cdot j}, y_{\cdot j})`.

    Each term is :func:`mmd_imq` of one coordinate of ``x`` against the same coordinate of
    ``y`` (kernel constants :math:`C_s = 2s`, the 1-D case of :math:`2ds`). It compares only
    the marginals, so it is blind to dependence between coordinates, but it sees the shape of
    each marginal (a spike at zero, heavy tails) far more sharply than the joint kernel, whose
    distances in ``d`` dimensions blur it. The authors' released code for the sparsity
    experiment uses this divergence (``imq_dim_kernel``).

    Parameters
    ----------
    x : tensor ``(..., m, d)``, ``m ≥ 2``; y : tensor ``(..., n, d)``, ``n ≥ 2``; leading axes
        broadcast as in :func:`mmd_imq`.
    scales : non-empty sequence of positive numbers.

    Returns
    -------
    tensor of the broadcast leading shape (0-dim for two plain samples).
    """
    x = as_tensor(x, "x")
    y = as_tensor(y, "y", like=x)
    if x.dim() < 2 or y.dim() < 2 or x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"x and y must be (..., m, d) and (..., n, d) with the same d, got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    # coordinate j becomes the last leading axis of 1-D samples: (..., d, m, 1)
    per_coordinate = mmd_imq(
        x.transpose(-1, -2)[..., None], y.transpose(-1, -2)[..., None], scales=scales
    )
    return per_coordinate.sum(-1)


# --- Appendix C: minibatch entropy estimators --------------------------------------------

_WEIGHTINGS = ("stratified", "mws")


def minibatch_log_aggregate_density(z, mu, logvar, dataset_size: int, *, weighting="stratified"):
    r"""Minibatch estimates :math:`\log \hat q(z_b)` of the aggregate posterior (eq. 10b).

    For a minibatch :math:`x_1..x_B` drawn without replacement from a dataset of size ``N``
    and :math:`z_b \sim q(z|x_b)`:

    - ``"stratified"`` (eq. 10b, the paper's; "minibatch stratified sampling" of Chen et al.):
      :math:`\hat q(z_b) = \frac1N q(z_b|x_b) + \frac{N-1}{N(B-1)}\sum_{b'\ne b} q(z_b|x_{b'})`.
      The weights make :math:`\hat q(z_b)` unbiased for
      :math:`q(z_b) = \frac1N\sum_{m=1}^N q(z_b|x_m)`: the own term is exact, and each of the
      ``B - 1`` other points is uniform over the remaining ``N - 1``, so
      :math:`\mathbb E\sum_{b'\ne b} q(z_b|x_{b'}) = \frac{B-1}{N-1}\sum_{m\ne b} q(z_b|x_m)`,
      which the weight :math:`\frac{N-1}{N(B-1)}` turns into :math:`\frac1N\sum_{m\ne b}`.
      At ``B = N`` it is the exact mixture density. Needs ``B ≥ 2``.
    - ``"mws"`` (minibatch weighted sampling, Chen et al. 2018, as in their code):
      :math:`\hat q(z_b) = \frac1{NB}\sum_{b'} q(z_b|x_{b'})`; at ``B = N`` this is
      :math:`q(z_b)/N`, so it is low by a constant factor ``N`` there (harmless for gradients).

    Parameters
    ----------
    z : tensor ``(B, d)``, ``z_b ~ q(z|x_b)``.
    mu, logvar : tensors ``(B, d)``.
    dataset_size : int ``N ≥ B``.
    weighting : ``"stratified"`` or ``"mws"``.

    Returns
    -------
    tensor ``(B,)``.
    """
    check_choice(weighting, "weighting", _WEIGHTINGS)
    mu = as_tensor(mu, "mu")
    logvar = as_tensor(logvar, "logvar", like=mu)
    z = as_tensor(z, "z", like=mu)
    if mu.dim() != 2 or logvar.shape != mu.shape or z.shape != mu.shape:
        raise ValueError(
            f"z, mu and logvar must all be (B, d), got {tuple(z.shape)}, {tuple(mu.shape)} "
            f"and {tuple(logvar.shape)}"
        )
    n = check_positive_int(dataset_size, "dataset_size")
    b = mu.shape[0]
    if n < b:
        raise ValueError(f"dataset_size must be >= the batch size {b}, got {n}")
    log_q = log_normal_diag(z.unsqueeze(1), mu, logvar)  # (B, B): [b, b'] = log q(z_b | x_b')
    if weighting == "mws":
        return torch.logsumexp(log_q, 1) - math.log(n * b)
    if b < 2:
        raise ValueError("z: the stratified estimator needs a batch of at least 2 examples")
    eye = torch.eye(b, dtype=torch.bool, device=mu.device)
    log_w = torch.where(
        eye,
        torch.full_like(log_q, -math.log(n)),
        torch.full_like(log_q, math.log(n - 1) - math.log(n) - math.log(b - 1)),
    )
    return torch.logsumexp(log_w + log_q, 1)


def minibatch_weighted_entropy(z, mu, logvar, dataset_size: int, *, weighting="stratified"):
    r"""Minibatch estimate :math:`\hat H = -\frac1B\sum_b \log\hat q(z_b)` of
    :math:`H[q(z)]` (eq. 10a), with :math:`\hat q` from :func:`minibatch_log_aggregate_density`.

    Bias (Appendix C). Even with the unbiased stratified :math:`\hat q`, Jensen's inequality
    gives :math:`\mathbb E\log\hat q \le \log q`, so :math:`\mathbb E\hat H \ge H[q(z)]`
    (a nested-estimation bias). When ``B ≪ N`` and encodings of different points rarely
    overlap within a minibatch, the own term dominates and
    :math:`\mathbb E\hat H \approx \log N + \mathbb E_{p(x)} H[q(z|x)]`: the KL built on it
    behaves like the β-VAE's KL term shifted by ``log N``. At ``B = N`` (stratified) it is an
    unbiased Monte Carlo estimate of :math:`H[q(z)]`; ``"mws"`` adds ``log(N B)`` instead of
    ``log N`` to the own term, i.e. it is larger by about ``log B``, and by exactly ``log N``
    at ``B = N``.

    Parameters and shapes as :func:`minibatch_log_aggregate_density`; returns a 0-dim tensor.
    """
    return -minibatch_log_aggregate_density(z, mu, logvar, dataset_size, weighting=weighting).mean()


class MonteCarloEstimate(NamedTuple):
    """A Monte Carlo estimate (0-dim tensor) and its standard error (0-dim tensor)."""

    estimate: torch.Tensor
    standard_error: torch.Tensor


def aggregate_entropy_reference(
    mu, logvar, n_samples: int, generator=None, *, chunk_size: int = 1024
) -> MonteCarloEstimate:
    r"""Reference estimate of :math:`H[q(z)]`, :math:`q(z) = \frac1N\sum_n q(z|x_n)`.

    Draws ``z_s`` from the full mixture (component uniform, then Gaussian) and averages
    :math:`-\log q(z_s)` with the *exact* mixture density (log-mean-exp over all ``N``
    components), so the estimate is unbiased; its standard error is returned too.
    Cost ``O(n_samples N d)``, computed ``chunk_size`` samples at a time.

    Parameters
    ----------
    mu, logvar : tensors ``(N, d)``, the encoders of the whole dataset.
    n_samples : int, number of Monte Carlo draws (≥ 2).
    generator : optional ``torch.Generator``.

    Returns
    -------
    :class:`MonteCarloEstimate`.
    """
    mu = as_tensor(mu, "mu")
    logvar = as_tensor(logvar, "logvar", like=mu)
    if mu.dim() != 2 or logvar.shape != mu.shape:
        raise ValueError(
            f"mu and logvar must both be (N, d), got {tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    s = check_positive_int(n_samples, "n_samples")
    if s < 2:
        raise ValueError(f"n_samples must be >= 2, got {s}")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    n = mu.shape[0]
    k = torch.randint(n, (s,), generator=generator, device=mu.device)
    eps = torch.randn(s, mu.shape[1], generator=generator, dtype=mu.dtype, device=mu.device)
    z = mu[k] + torch.exp(0.5 * logvar[k]) * eps
    neg_log_q = torch.cat(
        [
            math.log(n) - torch.logsumexp(log_normal_diag(c.unsqueeze(1), mu, logvar), 1)
            for c in z.split(chunk_size)
        ]
    )
    return MonteCarloEstimate(neg_log_q.mean(), neg_log_q.std() / math.sqrt(s))


def _prior_samples(samples, mu):
    samples = as_tensor(samples, "prior_samples", like=mu)
    if samples.dim() != 2 or samples.shape[1] != mu.shape[-1] or samples.shape[0] < 2:
        raise ValueError(
            f"prior_samples must be (M, {mu.shape[-1]}) with M >= 2, got {tuple(samples.shape)}"
        )
    return samples
