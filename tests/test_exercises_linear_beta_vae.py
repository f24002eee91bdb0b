"""Checkers of book/linear_beta_vae.md's exercises: the reference answers (computed here
independently, mostly through the kernels of vaebook.linear_beta_vae) pass, typical mistakes get
their message, answers of the wrong kind raise."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as dist

from vaebook import linear_beta_vae as lbv
from vaebook.exercises import check

F64 = torch.float64


def orthonormal_columns(N: int, k: int, seed: int = 0) -> torch.Tensor:
    """N x k with orthonormal columns."""
    q, _ = torch.linalg.qr(
        torch.randn(N, k, generator=torch.Generator().manual_seed(seed), dtype=F64)
    )
    return q


def wrong(label, answer, message):
    feedback = check(label, answer)
    assert not feedback and message in feedback.message, feedback.message


# -- ex-sikka-rate --------------------------------------------------------------------------


def rate_by_sweep(lam, beta):
    """K*(β) from the kernel: A with orthogonal columns of norms √(λ_i - 1) has these λ_i."""
    A = orthonormal_columns(len(lam) + 2, len(lam)) * (lam - 1).sqrt()
    return lbv.sweep(A, [beta]).kl[0]


def test_rate_accepts_the_kernel_and_names_mistakes():
    assert check("ex-sikka-rate", rate_by_sweep)
    wrong("ex-sikka-rate", lambda lam, b: 0.5 * torch.log(lam / b).sum(), "goes negative")
    wrong("ex-sikka-rate", lambda lam, b: 2 * rate_by_sweep(lam, b), "twice")
    wrong("ex-sikka-rate", lambda lam, b: -rate_by_sweep(lam, b), "wrong sign")
    wrong(
        "ex-sikka-rate",
        lambda lam, b: 0.5 * torch.log(((lam - 1) / b).clamp(min=1)).sum(),
        "eigenvalues of AᵀA",
    )
    wrong("ex-sikka-rate", lambda lam, b: 1.0, "differs from the reference")
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-sikka-rate", 1.3)


# -- ex-sikka-thresholds ----------------------------------------------------------------------


def thresholds_by_kernel(N, k):
    return lbv.collapse_thresholds(lbv.mixing_matrix(N, k))


def test_thresholds_accepts_the_kernel_and_names_mistakes():
    assert check("ex-sikka-thresholds", thresholds_by_kernel)
    wrong("ex-sikka-thresholds", lambda N, k: thresholds_by_kernel(N, k) - 1, "eigenvalues γ_i")
    wrong("ex-sikka-thresholds", lambda N, k: thresholds_by_kernel(N, k).flip(0), "reversed")
    wrong(
        "ex-sikka-thresholds",
        lambda N, k: [1 + (N * k + 1) / 4] + [1.25] * (k - 1),
        "misses the diagonal",
    )
    with pytest.raises(ValueError, match=r"answer\(9, 3\) must return 3 values, got 2"):
        check("ex-sikka-thresholds", lambda N, k: thresholds_by_kernel(N, k)[:2])
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-sikka-thresholds", [66.25, 1.25])


# -- ex-sikka-rotation ----------------------------------------------------------------------


def rotated_tie(a, phi, relabel=True):
    """TIE of the β = 1 optimum rotated by φ, from inference_errors (relabel False: the identity
    labelling only)."""
    A = a * orthonormal_columns(6, 2)
    m = lbv.optimal_encoder(A, 1.0)  # decoder D = A: aligned with the sources
    c, s = math.cos(phi), math.sin(phi)
    R = torch.tensor([[c, -s], [s, c]], dtype=F64)
    turned = lbv.LinearBetaVAE(
        m.D @ R.T, m.b_D, R @ m.W_mu, R @ m.b_mu, m.W_sigma, m.b_sigma, beta=1.0
    )
    errors = lbv.inference_errors(turned, A)
    return errors.tie if relabel else errors.tie_per_relabelling[0]


def test_rotation_accepts_the_kernel_and_names_mistakes():
    assert check("ex-sikka-rotation", rotated_tie)
    wrong("ex-sikka-rotation", lambda a, p: rotated_tie(a, p, relabel=False), "does not relabel")
    wrong("ex-sikka-rotation", lambda a, p: rotated_tie(a, p) / 2, "half")
    wrong("ex-sikka-rotation", lambda a, p: rotated_tie(a, p) * (1 + a**2) / a**2, "λ = 1 + a²")
    wrong("ex-sikka-rotation", lambda a, p: 0.0, "differs from the reference")
    with pytest.raises(TypeError, match=r"^answer.* must be a number"):
        check("ex-sikka-rotation", lambda a, p: "0.1")


# -- ex-sikka-orthogonal --------------------------------------------------------------------


def orthogonal_tie(norms, beta, parts=("mean", "variance")):
    """TIE of the optimum for orthogonal columns from inference_errors; with one part only,
    per latent from the encoder and posterior of that latent."""
    A = orthonormal_columns(8, len(norms)) * norms
    if parts == ("mean", "variance"):
        return lbv.inference_errors(lbv.solve(A, beta), A).tie
    lam = 1 + norms**2
    d = (lam - beta).clamp(min=0)
    return 0.5 * ((d.sqrt() - (lam - 1).sqrt()) ** 2).sum()  # the mean part only


def test_orthogonal_accepts_the_kernel_and_names_mistakes():
    assert check("ex-sikka-orthogonal", orthogonal_tie)
    wrong("ex-sikka-orthogonal", lambda n, b: orthogonal_tie(n, b, ("mean",)), "variance part")

    def active_formula(norms, beta):
        lam = 1 + norms**2
        return (
            0.5
            * (
                beta
                - 1
                - math.log(beta)
                + ((lam - beta).clamp(min=0).sqrt() - (lam - 1).sqrt()) ** 2
            ).sum()
        )

    wrong("ex-sikka-orthogonal", active_formula, "collapsed latent")
    wrong("ex-sikka-orthogonal", lambda n, b: 2 * orthogonal_tie(n, b), "twice")
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-sikka-orthogonal", 0.0)


# -- ex-sikka-adam --------------------------------------------------------------------------


def minibatch_loss(model, x, eps, beta=None, std_power=0.5, reduce="mean"):
    """With torch.distributions: -(log p(x|z) - β KL(q || N(0, I))), z = μ + σ ε, where
    σ = exp(std_power · logvar) (0.5 is right)."""
    beta = model.beta if beta is None else beta
    mu = x @ model.W_mu.T + model.b_mu
    std = (std_power * (x @ model.W_sigma.T + model.b_sigma)).exp()
    z = mu + std * eps
    log_lik = dist.Normal(z @ model.D.T + model.b_D, 1.0).log_prob(x).sum(1)
    kl = dist.kl_divergence(dist.Normal(mu, std), dist.Normal(0.0, 1.0)).sum(1)
    per_row = -(log_lik - beta * kl)
    return per_row.mean() if reduce == "mean" else per_row.sum()


def test_adam_accepts_torch_distributions_and_names_mistakes():
    assert check("ex-sikka-adam", minibatch_loss)
    wrong("ex-sikka-adam", lambda m, x, e: -minibatch_loss(m, x, e), "wrong sign")
    wrong("ex-sikka-adam", lambda m, x, e: minibatch_loss(m, x, e, beta=1.0), "ELBO")
    wrong(
        "ex-sikka-adam",
        lambda m, x, e: minibatch_loss(m, x, e) - 0.5 * x.shape[1] * math.log(2 * math.pi),
        "constant N/2 log 2π",
    )
    wrong(
        "ex-sikka-adam",
        lambda m, x, e: minibatch_loss(m, x, e, std_power=1.0),
        "log standard deviation",
    )
    wrong("ex-sikka-adam", lambda m, x, e: minibatch_loss(m, x, e, reduce="sum"), "sums over")
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-sikka-adam", 3.0)


# -- ex-sikka-floor -------------------------------------------------------------------------


def floor_by_optimisation(A):
    """min over diagonal variances of KL(N(0, diag v) || N(0, E)) by L-BFGS: the mean part can
    always be zeroed, so this is the floor."""
    k = A.shape[1]
    E = torch.linalg.inv(torch.eye(k, dtype=F64) + A.T @ A)
    logvar = torch.zeros(k, dtype=F64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [logvar],
        max_iter=200,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
    )
    zero = torch.zeros(k, dtype=F64)

    def kl():
        opt.zero_grad()
        value = dist.kl_divergence(
            dist.MultivariateNormal(zero, torch.diag(logvar.exp())),
            dist.MultivariateNormal(zero, E),
        )
        value.backward()
        return value

    opt.step(kl)
    return kl().item()


def floor_formula(A, precision=True, forward=False, identity=True):
    P = A.T @ A + (torch.eye(A.shape[1], dtype=F64) if identity else 0)
    E = torch.linalg.inv(P)
    if forward:
        return 0.5 * (E.diagonal().log().sum() - torch.logdet(E))
    diag = P.diagonal() if precision else 1 / E.diagonal()
    return 0.5 * (diag.log().sum() - torch.logdet(P))


def test_floor_accepts_an_optimised_floor_and_names_mistakes():
    assert check("ex-sikka-floor", floor_by_optimisation)
    wrong("ex-sikka-floor", lambda A: floor_formula(A, precision=False), "1/E_ii")
    wrong("ex-sikka-floor", lambda A: floor_formula(A, forward=True), "KL(p_gt || q)")
    wrong("ex-sikka-floor", lambda A: 2 * floor_formula(A), "twice")
    wrong("ex-sikka-floor", lambda A: floor_formula(A, identity=False), "prior adds I")
    wrong("ex-sikka-floor", lambda A: -floor_formula(A), "wrong sign")
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-sikka-floor", 1.31)


# -- ex-sikka-member ------------------------------------------------------------------------


def misalignment_by_optimum(A, fold=True):
    """The folded angle of the rotation from the sources to the latents of the β = 1 optimum:
    the optimal encoder's mean map restricted to the sources' plane, W^μ A, is along the
    principal axes, so its polar part is the rotation."""
    U, _, Vh = torch.linalg.svd(lbv.solve(A, 1.0).W_mu @ A)
    R = U @ Vh
    R = torch.diag(torch.tensor([1.0, torch.linalg.det(R).item()], dtype=F64)) @ R
    angle = math.degrees(math.atan2(R[1, 0].item(), R[0, 0].item()))
    return min(angle % 90, 90 - angle % 90) if fold else angle % 180


def column_angle(A):
    return math.degrees(math.acos(torch.nn.functional.cosine_similarity(A[:, 0], A[:, 1], dim=0)))


def test_member_accepts_the_optimum_s_rotation_and_names_mistakes():
    assert check("ex-sikka-member", misalignment_by_optimum)
    wrong("ex-sikka-member", lambda A: misalignment_by_optimum(A, fold=False) + 90, "not folded")
    wrong("ex-sikka-member", lambda A: math.radians(misalignment_by_optimum(A)), "radians")
    wrong("ex-sikka-member", column_angle, "angle between the columns")
    wrong("ex-sikka-member", lambda A: 45.0, "differs from the reference")
    with pytest.raises(TypeError, match="answer must be a function"):
        check("ex-sikka-member", 36.5)
