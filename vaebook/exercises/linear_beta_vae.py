"""Answer checkers for the exercises of book/linear_beta_vae.md (see :mod:`vaebook.exercises`).

Every reference below is a closed form derived in the exercise's solution; the tests compare
each with an independent computation (the kernels of :mod:`vaebook.linear_beta_vae`, or
torch.distributions), so a checker never trusts its own algebra alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..linear_beta_vae import LinearBetaVAE
from . import as_values, checker, diagnose, evaluate

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)


def _vector(values) -> torch.Tensor:
    """A 1-D float64 tensor, the form in which the checkers pass eigenvalues or norms."""
    return torch.tensor(values, dtype=F64)


def _ragged(answer, cases, sizes) -> np.ndarray:
    """``answer(*case)`` for each case, each of the given length, concatenated; a
    ``ValueError`` naming ``answer`` when a case returns the wrong number of values."""
    if not callable(answer):
        raise TypeError(f"answer must be a function, got {type(answer).__name__}")
    rows = []
    for case, size in zip(cases, sizes, strict=True):
        row = as_values(answer(*case), f"answer{tuple(case)}").reshape(-1)
        if row.size != size:
            raise ValueError(f"answer{tuple(case)} must return {size} values, got {row.size}")
        rows.append(row)
    return np.concatenate(rows)


# -- ex-sikka-rate: the KL term at the optimum --------------------------------------------------

# (λ_1 >= ... >= λ_k, β): every latent active, some collapsed, all collapsed, β < 1
_RATE_CASES = [
    ([5.0, 2.0], 0.4),
    ([5.0, 2.0], 3.0),
    ([9.0, 4.0, 1.5], 2.5),
    ([3.0], 0.8),
    ([7.5, 1.2], 8.0),
    ([40.0, 6.0, 2.2], 1.0),
]


def _rate(lam, beta, *, eigen_shift=0.0, positive_part=True) -> float:
    """½ Σ_i log((λ_i - shift) / β), summed over the active latents when ``positive_part``."""
    logs = np.log((np.asarray(lam) - eigen_shift) / beta)
    return 0.5 * float(np.sum(np.maximum(logs, 0.0) if positive_part else logs))


@checker("ex-sikka-rate")
def rate(answer):
    """``answer(lam, beta)``: the KL term K*(β) of the optimal linear β-VAE from the top-k
    eigenvalues ``lam`` of Σx (a 1-D float64 tensor) and β."""
    cases = [(_vector(lam), beta) for lam, beta in _RATE_CASES]
    got = evaluate(answer, cases).reshape(-1)
    expected = np.array([_rate(lam, beta) for lam, beta in _RATE_CASES])
    mistakes = {
        "It goes negative once a latent collapses: a latent with β >= λ_i has the prior as its "
        "encoder and contributes 0, not ½ log(λ_i/β).": np.array(
            [_rate(lam, beta, positive_part=False) for lam, beta in _RATE_CASES]
        ),
        "It is twice the KL term: look at the factor ½ of the Gaussian KL.": 2 * expected,
        "It has the wrong sign: the KL term is non-negative, and log(β/λ_i) < 0 for an active "
        "latent.": -expected,
        "It uses the eigenvalues of AᵀA (γ_i = λ_i - 1) where those of Σx = AAᵀ + I belong.": (
            np.array([_rate(lam, beta, eigen_shift=1.0) for lam, beta in _RATE_CASES])
        ),
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-sikka-thresholds: the collapse thresholds of mixing_matrix(N, k) ------------------------

_THRESHOLD_CASES = [(7, 1), (9, 3), (20, 4), (50, 2), (4, 4), (300, 5)]


def _thresholds(N, k, *, plus=1.0, diagonal=2, descending=True) -> np.ndarray:
    """1 + the eigenvalues of AᵀA = ¼[(N + 2) 11ᵀ + I] (top one first), with knobs for the
    typical mistakes (``plus`` 0: the γ_i; ``diagonal`` 0: the diagonal's share forgotten)."""
    values = np.full(k, plus + 0.25)
    values[0] = plus + ((N + diagonal) * k + 1) / 4
    return values if descending else values[::-1]


@checker("ex-sikka-thresholds")
def thresholds(answer):
    """``answer(N, k)``: the k collapse thresholds of ``mixing_matrix(N, k)``, N >= k, largest
    first."""
    sizes = [k for _, k in _THRESHOLD_CASES]
    got = _ragged(answer, _THRESHOLD_CASES, sizes)

    def every(**knobs):
        return np.concatenate([_thresholds(N, k, **knobs) for N, k in _THRESHOLD_CASES])

    mistakes = {
        "These are the eigenvalues γ_i of AᵀA; a latent collapses at λ_i = 1 + γ_i, the "
        "eigenvalue of Σx = AAᵀ + I.": every(plus=0.0),
        "The order is reversed: collapse_thresholds lists the largest threshold first.": every(
            descending=False
        ),
        "The top threshold misses the diagonal: AᵀA = ¼(J + E)ᵀ(J + E) has the cross terms "
        "JᵀE + EᵀJ = 2·11ᵀ, not only JᵀJ = N·11ᵀ.": every(diagonal=0),
    }
    return diagnose(got, every(), mistakes, rtol=1e-9, atol=1e-12)


# -- ex-sikka-rotation: TIE of a rotated optimum when the objective cannot see the rotation ----

_ROTATION_CASES = [(0.7, 0.2), (1.5, 0.9), (3.0, 1.3), (2.0, 2.0), (1.1, -0.4), (2.5, math.pi / 4)]


def _rotated_tie(a, phi, *, factor=2.0, scale="a2", relabel=True) -> float:
    """factor · s · (1 - best |trace|/2) with s = a² (or λ = 1 + a²); the best over signed
    permutations is max(|cos φ|, |sin φ|), without relabelling cos φ."""
    best = max(abs(math.cos(phi)), abs(math.sin(phi))) if relabel else math.cos(phi)
    s = a**2 if scale == "a2" else 1 + a**2
    return factor * s * (1 - best)


@checker("ex-sikka-rotation")
def rotation(answer):
    """``answer(a, phi)``: TIE at β = 1 of the optimum for orthogonal columns of norm a, its
    latents rotated by φ radians, after the best relabelling."""
    got = evaluate(answer, _ROTATION_CASES).reshape(-1)
    expected = np.array([_rotated_tie(a, phi) for a, phi in _ROTATION_CASES])
    mistakes = {
        "It does not relabel: TIE is the minimum over the signed permutations, and beyond 45° a "
        "quarter turn brings the code closer to the sources.": np.array(
            [_rotated_tie(a, phi, relabel=False) for a, phi in _ROTATION_CASES]
        ),
        "It is half the TIE: both latents contribute.": expected / 2,
        "It scales with λ = 1 + a²; recheck the variance of the posterior means, Uᵀx has "
        "covariance λI and the gain is a/λ.": np.array(
            [_rotated_tie(a, phi, scale="lambda") for a, phi in _ROTATION_CASES]
        ),
    }
    return diagnose(got, expected, mistakes, rtol=1e-7, atol=1e-9)


# -- ex-sikka-orthogonal: TIE(β) in closed form for orthogonal columns --------------------------

_ORTHOGONAL_CASES = [
    ([3.0, 1.0], 0.3),
    ([3.0, 1.0], 1.7),
    ([3.0, 1.0], 4.0),
    ([0.5], 2.0),
    ([2.0, 1.5, 0.6], 1.0),
    ([2.0, 1.5, 0.6], 0.6),
    ([4.0, 0.8], 20.0),
]


def _orthogonal_tie(norms, beta, *, variance=True, collapse=True) -> float:
    """½ Σ_i [β - 1 - log β + (√(λ_i - β) - √(λ_i - 1))²] over active latents (λ_i = 1 + a_i²)
    and ½ [2λ_i - 2 - log λ_i] over collapsed ones; knobs drop the variance part or the
    collapse branch."""
    total = 0.0
    for a in norms:
        lam = 1 + a**2
        if beta < lam or not collapse:
            mean_part = (math.sqrt(max(lam - beta, 0.0)) - math.sqrt(lam - 1)) ** 2
            total += 0.5 * ((beta - 1 - math.log(beta) if variance else 0.0) + mean_part)
        else:
            total += 0.5 * ((2 * lam - 2 - math.log(lam)) if variance else lam - 1)
    return total


@checker("ex-sikka-orthogonal")
def orthogonal(answer):
    """``answer(norms, beta)``: TIE of the optimal linear β-VAE when A has orthogonal columns
    of the given norms (a 1-D float64 tensor)."""
    cases = [(_vector(norms), beta) for norms, beta in _ORTHOGONAL_CASES]
    got = evaluate(answer, cases).reshape(-1)
    expected = np.array([_orthogonal_tie(n, b) for n, b in _ORTHOGONAL_CASES])
    mistakes = {
        "It misses the variance part: the encoder's variance β/λ_i differs from the "
        "posterior's 1/λ_i unless β = 1.": np.array(
            [_orthogonal_tie(n, b, variance=False) for n, b in _ORTHOGONAL_CASES]
        ),
        "It treats a collapsed latent (β >= λ_i) with the active formula: once collapsed its "
        "encoder is the prior N(0, 1), not variance β/λ_i.": np.array(
            [_orthogonal_tie(n, b, collapse=False) for n, b in _ORTHOGONAL_CASES]
        ),
        "It is twice the TIE: look at the factor ½ of the Gaussian KL.": 2 * expected,
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-sikka-adam: the minibatch loss that Adam minimises --------------------------------------


def _adam_cases() -> list[tuple[LinearBetaVAE, torch.Tensor, torch.Tensor]]:
    """(model, x, eps) with every parameter non-zero, β ≠ 1, two sizes."""
    gen = torch.Generator().manual_seed(2024)
    cases = []
    for N, k, n, beta in [(5, 2, 7, 0.4), (3, 3, 4, 2.5)]:

        def draw(*shape, scale=1.0):
            return scale * torch.randn(*shape, generator=gen, dtype=F64)

        model = LinearBetaVAE(
            D=draw(N, k),
            b_D=draw(N, scale=0.5),
            W_mu=draw(k, N, scale=0.4),
            b_mu=draw(k, scale=0.5),
            W_sigma=draw(k, N, scale=0.3),
            b_sigma=draw(k, scale=0.5),
            beta=beta,
        )
        cases.append((model, draw(n, N, scale=1.5), draw(n, k)))
    return cases


def _minibatch_loss(model, x, eps, *, beta=None, constant=True, std_as_logvar=False):
    """Mean over rows of -(log N(x; Dz + b_D, I) - β KL(q(z|x) || N(0, I))), z = μ + σ ε."""
    beta = model.beta if beta is None else beta
    mu = x @ model.W_mu.T + model.b_mu
    logvar = x @ model.W_sigma.T + model.b_sigma
    std = logvar.exp() if std_as_logvar else (0.5 * logvar).exp()
    z = mu + std * eps
    residual = x - z @ model.D.T - model.b_D
    log_lik = -0.5 * (residual**2).sum(1) - (0.5 * x.shape[1] * LOG_2PI if constant else 0.0)
    variance = std**2
    kl = 0.5 * (variance + mu**2 - 1 - variance.log()).sum(1)
    return float(-(log_lik - beta * kl).mean())


@checker("ex-sikka-adam")
def adam(answer):
    """``answer(model, x, eps)``: the minibatch loss -mean(log p(x|z) - β KL) with
    z = μ + σ ε, for a :class:`LinearBetaVAE` ``model``, data ``x`` (n, N), noise ``eps``
    (n, k)."""
    cases = _adam_cases()
    got = evaluate(answer, [(m, x.clone(), e.clone()) for m, x, e in cases]).reshape(-1)

    def every(**knobs):
        return np.array([_minibatch_loss(*case, **knobs) for case in cases])

    expected = every()
    n_rows = np.array([x.shape[0] for _, x, _ in cases])
    mistakes = {
        "It has the wrong sign: Adam minimises the negative of the β-objective.": -expected,
        "It weights the KL term by 1, not β: that is the ELBO, the β = 1 objective.": every(
            beta=1.0
        ),
        "It misses the constant N/2 log 2π of the Gaussian likelihood: harmless for Adam, but "
        "the objective is no longer comparable with linear_beta_vae.objective.": every(
            constant=False
        ),
        "It reads the log-variance as a log standard deviation: σ = exp(logvar / 2).": every(
            std_as_logvar=True
        ),
        "It sums over the minibatch: take the mean over its rows.": n_rows * expected,
    }
    return diagnose(got, expected, mistakes, rtol=1e-6, atol=1e-8)


# -- ex-sikka-floor: the smallest TIE any diagonal-Gaussian encoder can reach -------------------

_FLOOR_SHAPES = [(6, 2), (10, 3), (4, 1), (5, 4)]


def _floor_cases() -> list[torch.Tensor]:
    """Mixing matrices with correlated columns (a shared direction), so the floor is not 0."""
    gen = torch.Generator().manual_seed(7)
    cases = []
    for N, k in _FLOOR_SHAPES:
        common = torch.randn(N, 1, generator=gen, dtype=F64)
        cases.append(1.5 * common + torch.randn(N, k, generator=gen, dtype=F64))
    return cases


def _floor(A, *, identity=True, direction="reverse", diagonal="precision") -> float:
    """½[Σ log P_ii - log det P], P = I + AᵀA; knobs for the typical mistakes."""
    P = A.T @ A + (torch.eye(A.shape[1], dtype=F64) if identity else 0.0)
    logdet = torch.logdet(P).item()
    if direction == "forward":  # KL(p || q): moment matching, q's variances E_ii
        return 0.5 * (torch.linalg.inv(P).diagonal().log().sum().item() + logdet)
    diag = P.diagonal() if diagonal == "precision" else 1 / torch.linalg.inv(P).diagonal()
    return 0.5 * (diag.log().sum().item() - logdet)


@checker("ex-sikka-floor")
def floor(answer):
    """``answer(A)``: min over encoders with diagonal Gaussian q(z|x) of E_x KL(q || p_gt(s|x))
    for data x = A s + η, ``A`` an (N, k) float64 tensor."""
    cases = _floor_cases()
    got = evaluate(answer, [(A.clone(),) for A in cases]).reshape(-1)

    def every(**knobs):
        return np.array([_floor(A, **knobs) for A in cases])

    expected = every()
    mistakes = {
        "It takes 1/E_ii for (E⁻¹)_ii, the misreading of eq. 25 the chapter corrects: the best "
        "diagonal variance is 1/(E⁻¹)_ii, not E_ii.": every(diagonal="covariance"),
        "It is KL(p_gt || q), whose best diagonal q matches the marginal variances E_ii; TIE "
        "is KL(q || p_gt).": every(direction="forward"),
        "It is twice the floor: look at the factor ½ of the Gaussian KL.": 2 * expected,
        "It uses AᵀA for the posterior precision; the prior adds I: E⁻¹ = I + AᵀA.": every(
            identity=False
        ),
        "It has the wrong sign: a KL divergence is non-negative.": -expected,
    }
    return diagnose(got, expected, mistakes, rtol=1e-8, atol=1e-10)


# -- ex-sikka-member: the angle between the sources and the principal axes ----------------------


def _member_cases() -> list[torch.Tensor]:
    """Two-column mixing matrices: generic ones, equal norms (45°), orthogonal columns (0°)."""
    gen = torch.Generator().manual_seed(11)
    generic = [
        torch.randn(N, 2, generator=gen, dtype=F64) * torch.tensor([1.0, s], dtype=F64)
        for N, s in [(5, 1.7), (12, 0.6), (3, 2.5)]
    ]
    q, _ = torch.linalg.qr(torch.randn(7, 2, generator=gen, dtype=F64))
    equal = q @ torch.tensor([[2.0, 2.0 * math.cos(1.1)], [0.0, 2.0 * math.sin(1.1)]], dtype=F64)
    return [*generic, equal, q * torch.tensor([3.0, 1.0], dtype=F64)]


def _fold(degrees) -> np.ndarray:
    """An angle between two pairs of axes, modulo the relabellings: into [0°, 45°]."""
    turn = np.mod(degrees, 90.0)
    return np.minimum(turn, 90.0 - turn)


def _misalignment(A) -> float:
    """Degrees between the source axes and the nearest eigenvector of AᵀA, folded."""
    _, vectors = torch.linalg.eigh(A.T @ A)
    top = vectors[:, -1]
    return float(_fold(math.degrees(math.atan2(top[1].item(), top[0].item()))))


def _column_angle(A) -> float:
    """Degrees between the two columns of A."""
    cosine = (A[:, 0] @ A[:, 1] / (A[:, 0].norm() * A[:, 1].norm())).item()
    return math.degrees(math.acos(cosine))


@checker("ex-sikka-member")
def member(answer):
    """``answer(A)``: for an (N, 2) mixing matrix, the angle in degrees, folded into [0°, 45°],
    between the source axes and the principal axes (eigenvectors of AᵀA) in the sources' plane."""
    cases = _member_cases()
    got = evaluate(answer, [(A.clone(),) for A in cases]).reshape(-1)
    expected = np.array([_misalignment(A) for A in cases])
    if (
        got.shape == expected.shape
        and not np.allclose(got, expected, atol=1e-6)
        and np.allclose(_fold(got), expected, atol=1e-6)
    ):
        return False, (
            "It is the right axis but not folded: a relabelling turns the axes by multiples of "
            "90° or reflects them, so report the angle in [0°, 45°]."
        )
    columns = np.array([_column_angle(A) for A in cases])
    mistakes = {
        "It is in radians: the statement asks for degrees.": np.radians(expected),
        "It is the angle between the columns of A, a property of the data space; the principal "
        "axes in the sources' plane are the eigenvectors of AᵀA.": columns,
    }
    return diagnose(got, expected, mistakes, rtol=1e-7, atol=1e-6)
