r"""Mathieu et al. (2019), §4: what the β-VAE objective is, as identities one can check.

- **Theorem 1** (eq. 3): the β-VAE objective is the ELBO of the annealed prior
  :math:`f_\beta = p^\beta / F_\beta` (:mod:`vaebook.priors`) plus
  :math:`(\beta - 1) H[q(z|x)] + \log F_\beta`: :func:`theorem1_terms` (both sides, exact
  expectations where they exist) and :func:`theorem1_monte_carlo` (both sides on independent
  samples, with standard errors).
- **Corollary 1** (eqs. 4-5): for a Gaussian prior the β-VAE is, after rescaling the latent
  space by :math:`\sqrt\beta`, the entropy-regularised ELBO: :func:`rescale_encoder`,
  :func:`rescale_networks` (with its Jacobian, :func:`rescale_jacobian`),
  :func:`entropy_regularised_elbo`, :func:`corollary1_constant`.
- **Theorem 2** (eq. 6): rotation invariance under an isotropic Gaussian prior:
  :func:`random_rotation`, :func:`rotate_encoder` (with :func:`vaebook.priors.kl_full_to_prior`).

The objective (7) that the paper builds on these is in :mod:`vaebook.structured_vae`; the
aggregate posterior and its divergences to the prior in :mod:`vaebook.aggregate_posterior`.
Shapes: ``d`` is the latent dimension, ``n`` the number of examples, ``S`` a number of Monte
Carlo samples. Identities are checked in float64.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import distributions as td
from torch import nn

from .checks import (
    as_tensor,
    check_positive,
    check_positive_int,
)
from .gaussian import (
    entropy_diag_normal,
    kl_diag_normal,
    sample_diag_normal,
)
from .priors import Prior, _encoder, _samples, annealed_log_normaliser, annealed_log_prob

__all__ = [
    "Theorem1Estimate",
    "Theorem1Terms",
    "corollary1_constant",
    "entropy_regularised_elbo",
    "random_rotation",
    "rescale_encoder",
    "rescale_jacobian",
    "rescale_networks",
    "rotate_encoder",
    "theorem1_monte_carlo",
    "theorem1_terms",
]

_F64 = torch.float64


# --- Theorem 1: the β-VAE objective as an annealed-prior ELBO -------------------------------


@dataclass(frozen=True)
class Theorem1Terms:
    r"""Both sides of Theorem 1 (eq. 3), per example ``(n,)``.

    ``beta_objective`` is the left side :math:`\mathcal L_\beta = \mathbb E_q \log p(x|z)
    - \beta \mathrm{KL}(q\|p)`; ``annealed_elbo`` the ELBO with the annealed prior,
    ``E_q log p(x|z) - KL(q || f_β)``; ``entropy`` is :math:`H[q(z|x)]`; ``log_normaliser``
    is :math:`\log F_\beta`; ``beta`` the β used.
    """

    beta_objective: torch.Tensor
    annealed_elbo: torch.Tensor
    entropy: torch.Tensor
    log_normaliser: float
    beta: float

    @property
    def rhs(self) -> torch.Tensor:
        """``annealed_elbo + (β - 1) entropy + log F_β``: the right side of eq. (3)."""
        return self.annealed_elbo + (self.beta - 1) * self.entropy + self.log_normaliser

    @property
    def gap(self) -> torch.Tensor:
        """``beta_objective - rhs``: zero up to rounding when Theorem 1 holds."""
        return self.beta_objective - self.rhs


def theorem1_terms(mu, logvar, prior: Prior, beta, log_lik, *, z=None) -> Theorem1Terms:
    r"""Both sides of Theorem 1 (eq. 3) for a diagonal Gaussian encoder.

    Parameters
    ----------
    mu, logvar : tensors ``(n, d)``, the encoder ``q(z|x) = N(mu, diag(exp(logvar)))``.
    prior : :class:`vaebook.priors.Prior`.
    beta : float > 0.
    log_lik : tensor ``(n,)``, an estimate of ``E_q[log p(x|z)]``; it enters both sides alike.
    z : optional tensor ``(S, n, d)`` or ``(n, d)`` of samples of ``q(z|x)``; required for a
        non-Gaussian prior.

    Returns
    -------
    :class:`Theorem1Terms`; its ``gap`` is zero to rounding.

    Notes
    -----
    *Gaussian prior, ``z=None``*: every term has an independent closed form:
    ``KL(q || p)`` against ``N(0, Σ)``, ``KL(q || f_β)`` against ``N(0, Σ/β)`` (what
    :math:`p^\beta/F_\beta` is), the Gaussian entropy and the closed-form ``log F_β``. The
    identity then holds only if all four are right, so checking it to 1e-8 is a real test.

    *Otherwise* :math:`\mathbb E_q \log p(z)` is estimated by the mean over the given
    samples, the entropy is exact, and both sides use that same estimate
    (:math:`\mathrm{KL}(q\|p) = -H - \hat{\mathbb E}\log p`,
    :math:`\mathrm{KL}(q\|f_\beta) = -H - \beta\hat{\mathbb E}\log p + \log F_\beta`), so the
    gap is zero to rounding for *any* sample: eq. (3) is an algebraic identity once
    :math:`F_\beta < \infty`. What makes its right side an ELBO is that :math:`f_\beta`
    integrates to one, which is checked separately (by quadrature) in the tests. A check of
    the theorem that a wrong ``log F_β`` would fail is :func:`theorem1_monte_carlo`.
    """
    beta = check_positive(beta, "beta")
    mu, logvar = _encoder(mu, logvar, prior)
    log_lik = _per_example(log_lik, "log_lik", mu)
    entropy = entropy_diag_normal(logvar)
    log_f = annealed_log_normaliser(prior, beta)
    if z is None:
        if not prior.is_gaussian:
            raise ValueError(f"z (samples of q(z|x)) is required for the prior {prior!r}")
        log_var_p = prior.log_variances.to(mu)
        kl_p = kl_diag_normal(mu, logvar, 0.0, log_var_p)
        kl_f = kl_diag_normal(mu, logvar, 0.0, log_var_p - math.log(beta))
    else:
        z = _samples(z, mu)
        kl_p = -entropy - prior.log_prob(z).mean(0)
        kl_f = -entropy - annealed_log_prob(prior, beta, z, log_normaliser=log_f).mean(0)
    return Theorem1Terms(log_lik - beta * kl_p, log_lik - kl_f, entropy, log_f, beta)


class Theorem1Estimate(NamedTuple):
    """Monte Carlo estimates of both sides of Theorem 1, per example ``(n,)``, with their
    standard errors; the two sides use independent samples."""

    lhs: torch.Tensor
    lhs_se: torch.Tensor
    rhs: torch.Tensor
    rhs_se: torch.Tensor

    @property
    def gap(self) -> torch.Tensor:
        """``lhs - rhs``: zero in expectation when Theorem 1 holds."""
        return self.lhs - self.rhs

    @property
    def gap_se(self) -> torch.Tensor:
        """Standard error of :attr:`gap` (the sides are independent)."""
        return torch.sqrt(self.lhs_se**2 + self.rhs_se**2)


def theorem1_monte_carlo(
    mu,
    logvar,
    prior: Prior,
    beta,
    log_lik,
    annealed: td.Distribution,
    n_samples: int,
    generator=None,
    *,
    method: str = "quadrature",
) -> Theorem1Estimate:
    r"""Both sides of Theorem 1 (eq. 3) estimated by Monte Carlo, each from its own samples.

    Unlike :func:`theorem1_terms` (where ``log F_β`` cancels whatever its value), the two sides
    here share nothing but the data, so a wrong normaliser, a wrong annealed prior or a wrong
    β shows up as a gap of many standard errors.

    - Left side, from draws ``z ~ q(z|x)``: :math:`\mathcal L_\beta = \log\text{-lik}
      - \beta\,\mathrm{KL}(q\|p)`, with :math:`\mathrm{KL}(q\|p) = -H[q] - \hat{\mathbb E}
      \log p(z)` (``prior.log_prob``, exact Gaussian entropy).
    - Right side, from *independent* draws ``z' ~ q(z|x)``: :math:`\log\text{-lik}
      - \hat{\mathbb E}[\log q(z') - \log f_\beta(z')] + (\beta - 1)H[q] + \log F_\beta`, with
      ``log q`` from ``torch.distributions.Normal``, ``log f_β`` from ``annealed`` (the
      annealed prior reached by another route, e.g. the Student-t of the closed form) and
      ``log F_β`` from :func:`vaebook.priors.annealed_log_normaliser` (by ``method``).

    Parameters
    ----------
    mu, logvar : tensors ``(n, d)``, the encoder ``q(z|x) = N(mu, diag(exp(logvar)))``.
    prior : :class:`vaebook.priors.Prior`.
    beta : float > 0.
    log_lik : tensor ``(n,)``, an estimate of ``E_q[log p(x|z)]``; it enters both sides alike.
    annealed : ``torch.distributions.Distribution`` whose ``log_prob`` maps ``(..., d)`` to
        ``(...)``: the normalised density :math:`f_\beta = p^\beta / F_\beta`.
    n_samples : int >= 2, draws per side and example.
    generator : optional ``torch.Generator``.
    method : how :func:`vaebook.priors.annealed_log_normaliser` computes ``log F_β``
        (default quadrature).

    Returns
    -------
    :class:`Theorem1Estimate`; its ``gap`` is zero within a few ``gap_se`` when the theorem
    and every term hold.
    """
    beta = check_positive(beta, "beta")
    mu, logvar = _encoder(mu, logvar, prior)
    log_lik = _per_example(log_lik, "log_lik", mu)
    if not isinstance(annealed, td.Distribution):
        raise TypeError(
            f"annealed must be a torch.distributions.Distribution, got {type(annealed).__name__}"
        )
    s = check_positive_int(n_samples, "n_samples")
    if s < 2:
        raise ValueError(f"n_samples must be >= 2, got {s}")
    entropy = entropy_diag_normal(logvar)
    log_f = annealed_log_normaliser(prior, beta, method=method)
    z_left = sample_diag_normal(mu, logvar, n_samples=s, generator=generator)
    left = log_lik + beta * (entropy + prior.log_prob(z_left))  # (S, n)
    z_right = sample_diag_normal(mu, logvar, n_samples=s, generator=generator)
    encoder = td.Independent(td.Normal(mu, torch.exp(0.5 * logvar)), 1)
    kl_annealed = encoder.log_prob(z_right) - annealed.log_prob(z_right)
    right = log_lik - kl_annealed + (beta - 1) * entropy + log_f
    root = math.sqrt(s)
    return Theorem1Estimate(left.mean(0), left.std(0) / root, right.mean(0), right.std(0) / root)


# --- Corollary 1: rescaling --------------------------------------------------------------


def rescale_encoder(mu, logvar, beta) -> tuple[torch.Tensor, torch.Tensor]:
    """The rescaled encoder of Corollary 1: mean ``√β mu``, covariance ``β S``.

    Returns ``(sqrt(beta) * mu, logvar + log(beta))``, shapes as the inputs ``(..., d)``.
    The matching decoder is ``z ↦ g(z / √β)``: with common noise the rescaled sample is
    ``√β z`` and the decoder sees the same ``z``.
    """
    beta = check_positive(beta, "beta")
    mu, logvar = _pair_like(mu, "mu", logvar, "logvar")
    return math.sqrt(beta) * mu, logvar + math.log(beta)


def _first_linear(decoder) -> nn.Linear:
    first = next((m for m in decoder.modules() if isinstance(m, nn.Linear)), None)
    if first is None:
        raise TypeError("decoder must contain an nn.Linear acting on z")
    return first


def rescale_jacobian(encoder, decoder, beta) -> tuple[dict[str, float], dict[str, float]]:
    """The diagonal Jacobian ``J`` of the map ``T_β`` of Corollaries 1-2, per parameter tensor.

    ``T_β`` multiplies the encoder's mean head (weight and bias) by ``√β``, shifts the
    log-variance bias by ``log β`` (derivative 1) and divides the decoder's first weight by
    ``√β``; every other parameter is unchanged. It is affine, so its Jacobian is constant and
    diagonal, one factor per parameter tensor, and the chain rule gives
    ``∇L_β(θ) = J ∇L_{H,β}(T_β θ)`` (Corollary 2).

    Parameters
    ----------
    encoder : a :class:`~vaebook.nets.GaussianEncoder` (linear heads ``mu`` and ``logvar``).
    decoder : a module whose first ``nn.Linear`` (in ``decoder.modules()``) acts on ``z``.
    beta : float > 0.

    Returns
    -------
    ``(encoder_factors, decoder_factors)``: ``{name: factor}`` for every name of
    ``named_parameters()`` of each network.
    """
    beta = check_positive(beta, "beta")
    if not (
        isinstance(getattr(encoder, "mu", None), nn.Linear)
        and isinstance(getattr(encoder, "logvar", None), nn.Linear)
    ):
        raise TypeError("encoder must have linear heads `mu` and `logvar` (a GaussianEncoder)")
    first_weight = _first_linear(decoder).weight
    root = math.sqrt(beta)
    mean_head = {id(encoder.mu.weight), id(encoder.mu.bias)}
    encoder_factors = {
        name: root if id(p) in mean_head else 1.0 for name, p in encoder.named_parameters()
    }
    decoder_factors = {
        name: 1 / root if p is first_weight else 1.0 for name, p in decoder.named_parameters()
    }
    return encoder_factors, decoder_factors


def rescale_networks(encoder, decoder, beta):
    """The map ``T_β`` of Corollaries 1-2 on networks: rescaled copies ``(encoder', decoder')``.

    ``encoder`` is a :class:`~vaebook.nets.GaussianEncoder` (linear heads ``mu`` and
    ``logvar``); ``decoder`` a module whose first layer (first ``nn.Linear`` in
    ``decoder.modules()``) acts on ``z``. The copies compute exactly :func:`rescale_encoder`'s
    ``(√β mu, logvar + log β)`` and ``z ↦ g(z / √β)``: every parameter is multiplied by its
    factor in :func:`rescale_jacobian` (``√β`` on the mean head, ``1/√β`` on the decoder's
    first weight) and ``log β`` is added to the log-variance bias. The inputs are not
    modified.
    """
    encoder_factors, decoder_factors = rescale_jacobian(encoder, decoder, beta)
    encoder, decoder = copy.deepcopy(encoder), copy.deepcopy(decoder)
    with torch.no_grad():
        for network, factors in ((encoder, encoder_factors), (decoder, decoder_factors)):
            for name, p in network.named_parameters():
                p.mul_(factors[name])
        encoder.logvar.bias.add_(math.log(beta))
    return encoder, decoder


def entropy_regularised_elbo(elbo, logvar, beta) -> torch.Tensor:
    """Eq. (5): ``L_{H,β} = ELBO + (β - 1)/2 log|S|`` with ``log|S| = sum_j logvar_j``.

    ``elbo`` is ``(n,)`` (or broadcastable to ``logvar.shape[:-1]``), ``logvar`` ``(n, d)``.
    """
    beta = check_positive(beta, "beta")
    logvar = as_tensor(logvar, "logvar")
    if logvar.dim() == 0:
        raise ValueError("logvar must have a last (event) dimension")
    elbo = as_tensor(elbo, "elbo", like=logvar)
    return elbo + 0.5 * (beta - 1) * logvar.sum(-1)


def corollary1_constant(d: int, beta, *, variance: float = 1.0) -> float:
    r"""The constant ``c`` of Corollary 1 (eq. 4) for the prior ``N(0, variance I_d)``.

    .. math::

        c = \frac d2\Big[(\beta - 1) - \beta\log\beta - (\beta - 1)\log\sigma^2\Big] \le 0
        \quad (\sigma^2 = 1: c = \tfrac d2 [\beta - 1 - \beta\log\beta]).

    Derivation. The paper gives :math:`c = \frac{D(\beta-1)}2(1 + \log\frac{2\pi}\beta)
    + \log F_\beta`, from eq. (3) with :math:`\mathcal L(x; \pi_{\theta,\beta}, q_\phi) =
    \mathcal L(x; \theta', \phi')` and :math:`H_{q_\phi} = \frac D2(1 + \log\frac{2\pi}\beta)
    + \frac12\log|S_{\phi'}|` (since :math:`S_{\phi'} = \beta S_\phi`). Substituting
    :math:`\log F_\beta = \frac{D(1-\beta)}2\log 2\pi + \frac{1-\beta}2\log|\Sigma|
    - \frac D2\log\beta` for :math:`\Sigma = \sigma^2 I`, the :math:`\log 2\pi` terms cancel:
    :math:`c = \frac{D(\beta-1)}2 - \frac{D(\beta-1)}2\log\beta - \frac D2\log\beta
    - \frac{D(\beta-1)}2\log\sigma^2`, which is the formula above. It vanishes at β = 1
    and is ≤ 0 for σ² = 1 because :math:`\beta\log\beta \ge \beta - 1`.
    """
    d = check_positive_int(d, "d")
    beta = check_positive(beta, "beta")
    variance = check_positive(variance, "variance")
    return 0.5 * d * ((beta - 1) - beta * math.log(beta) - (beta - 1) * math.log(variance))


# --- Theorem 2: rotations ----------------------------------------------------------------


def random_rotation(d: int, generator=None, *, dtype=_F64) -> torch.Tensor:
    """A Haar-random rotation ``(d, d)`` (orthogonal, determinant +1), via QR with sign fix."""
    d = check_positive_int(d, "d")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    device = generator.device if generator is not None else None
    a = torch.randn(d, d, generator=generator, dtype=_F64, device=device)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


def rotate_encoder(mu, cov, R) -> tuple[torch.Tensor, torch.Tensor]:
    """Theorem 2 (eq. 6): the rotated encoder ``N(R mu, R S R^T)``.

    Parameters
    ----------
    mu : tensor ``(..., d)``; cov : tensor ``(..., d, d)``; R : orthogonal ``(d, d)``.

    Returns
    -------
    ``(mu @ R.T, R @ cov @ R.T)``. The matching decoder is ``z ↦ g(R^T z)``; with common
    noise the rotated sample is ``R z``. Use :func:`vaebook.priors.kl_full_to_prior` for the KL
    term.
    """
    mu = as_tensor(mu, "mu")
    cov = as_tensor(cov, "cov", like=mu)
    R = as_tensor(R, "R", like=mu)
    if mu.dim() == 0:
        raise ValueError("mu must have a last (event) dimension")
    d = mu.shape[-1]
    if R.shape != (d, d):
        raise ValueError(f"R must be ({d}, {d}) to match mu, got {tuple(R.shape)}")
    if cov.dim() < 2 or cov.shape[-2:] != (d, d):
        raise ValueError(f"cov must be (..., {d}, {d}), got {tuple(cov.shape)}")
    tol = 10 * math.sqrt(torch.finfo(R.dtype).eps)
    if not torch.allclose(R @ R.T, torch.eye(d, dtype=R.dtype, device=R.device), atol=tol):
        raise ValueError("R must be orthogonal (R R^T = I)")
    return mu @ R.T, R @ cov @ R.T


# --- shared argument checks -----------------------------------------------------------------


def _pair_like(a, a_name, b, b_name):
    a = as_tensor(a, a_name)
    b = as_tensor(b, b_name, like=a)
    if a.shape != b.shape or a.dim() == 0:
        raise ValueError(
            f"{a_name} and {b_name} must have the same shape (..., d), got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    return a, b


def _per_example(values, name, mu):
    values = as_tensor(values, name, like=mu)
    if values.shape != mu.shape[:-1]:
        raise ValueError(
            f"{name} must have shape {tuple(mu.shape[:-1])}, got {tuple(values.shape)}"
        )
    return values
