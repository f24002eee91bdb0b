"""Tests of vaebook.linear_beta_vae: the exactly solvable linear β-VAE of Sikka et al. (2019)."""

import itertools
import math
import time

import pytest
import torch
from helpers import randn
from torch.distributions import MultivariateNormal, Normal

import vaebook.linear_beta_vae as lbv
from vaebook.gaussian import entropy_normal, kl_diag_normal, kl_normal
from vaebook.linear_beta_vae import (
    InferenceErrors,
    LinearBetaVAE,
    LinearTerms,
    collapse_thresholds,
    inference_errors,
    mixing_matrix,
    objective,
    optimise,
    signed_permutations,
    solve,
    sweep,
    terms,
    tie_samples,
)
from vaebook.linear_gaussian import posterior

F64 = torch.float64
PAPER_A = mixing_matrix(128, 2)  # the paper's Fig. 1 setting


def random_model(gen, N, k, beta=1.5, sigma_scale=0.3):
    """A generic, non-optimal model: every parameter non-zero, x-dependent encoder variances."""
    return LinearBetaVAE(
        D=randn(gen, N, k),
        b_D=0.5 * randn(gen, N),
        W_mu=randn(gen, k, N) / math.sqrt(N),
        b_mu=0.5 * randn(gen, k),
        W_sigma=sigma_scale * randn(gen, k, N) / math.sqrt(N),
        b_sigma=0.5 * randn(gen, k),
        beta=beta,
    )


def sample_data(gen, A, n):
    """``x = A s + η`` with standard normal ``s`` and ``η``: ``(n, N)``."""
    return randn(gen, n, A.shape[1]) @ A.T + randn(gen, n, A.shape[0])


def encode(model, x):
    return x @ model.W_mu.T + model.b_mu, x @ model.W_sigma.T + model.b_sigma


def assert_within_5_se(samples, expected):
    """The mean over the first axis of ``samples`` is within 5 standard errors of ``expected``."""
    expected = torch.as_tensor(expected, dtype=F64)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    assert bool(((samples.mean(0) - expected).abs() < 5 * se).all()), (samples.mean(0), expected)


def sigma_x(A):
    return A @ A.T + torch.eye(A.shape[0], dtype=F64)


# ---------------------------------------------------------------------------------- the data


def test_mixing_matrix_and_its_collapse_thresholds():
    A = mixing_matrix(128, 2)
    assert A.dtype == F64 and A.shape == (128, 2)
    assert A[0, 0] == A[1, 1] == 1.0 and A[0, 1] == A[1, 0] == A[5, 1] == 0.5
    # AᵀA = [[a, b], [b, a]] with a = 1 + 127/4, b = 1 + 126/4: eigenvalues a ± b = 65.25, 0.25,
    # so Σx = A Aᵀ + I has top eigenvalues 66.25 and 1.25, where the latents collapse.
    torch.testing.assert_close(
        torch.linalg.eigvalsh(A.T @ A), torch.tensor([0.25, 65.25], dtype=F64)
    )
    torch.testing.assert_close(collapse_thresholds(A), torch.tensor([66.25, 1.25], dtype=F64))


def test_collapse_thresholds_are_the_top_eigenvalues_of_sigma_x(gen):
    for N, k in ((7, 3), (3, 5)):
        A = randn(gen, N, k)
        top = torch.linalg.eigvalsh(sigma_x(A)).flip(0)[: min(N, k)]
        expected = torch.cat([top, torch.zeros(k - min(N, k), dtype=F64)])
        torch.testing.assert_close(collapse_thresholds(A), expected, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------- the closed-form objective


def test_terms_match_monte_carlo_over_data_and_encoder_noise(gen):
    # Checks eq. 21 with every constant, the W^σ term (a log-normal mean) and the bias terms.
    N, k, n = 5, 3, 200_000
    A = randn(gen, N, k)
    model = random_model(gen, N, k, beta=2.5)
    t = terms(model, A)
    x = sample_data(gen, A, n)
    mu, logvar = encode(model, x)
    z = mu + torch.exp(0.5 * logvar) * randn(gen, n, k)
    rec = Normal(z @ model.D.T + model.b_D, 1.0).log_prob(x).sum(-1)
    kl = kl_diag_normal(mu, logvar)  # exact per x; the average over x is Monte Carlo
    cov = model.D @ model.D.T + torch.eye(N, dtype=F64)
    ll = MultivariateNormal(model.b_D, cov).log_prob(x)
    assert_within_5_se(rec, t.reconstruction)
    assert_within_5_se(kl, t.kl)
    assert_within_5_se(ll, t.log_likelihood)
    assert_within_5_se(rec - 2.5 * kl, t.objective)
    assert isinstance(t, LinearTerms) and t.beta == 2.5
    assert t.elbo == pytest.approx(t.reconstruction - t.kl, abs=1e-12)
    assert t.objective == pytest.approx(t.reconstruction - 2.5 * t.kl, abs=1e-12)
    assert objective(model, A).item() == pytest.approx(t.objective, abs=1e-10)


def test_log_likelihood_is_minus_the_cross_entropy_of_p_x_and_p_theta(gen):
    # E_p log p_θ = -H(p) - KL(p || p_θ), with the N x N Gaussian toolbox (no Woodbury).
    N, k = 6, 2
    A, model = randn(gen, N, k), random_model(gen, N, k)
    cov = model.D @ model.D.T + torch.eye(N, dtype=F64)
    zeros = torch.zeros(N, dtype=F64)
    expected = -entropy_normal(sigma_x(A)) - kl_normal(zeros, sigma_x(A), model.b_D, cov)
    assert terms(model, A).log_likelihood == pytest.approx(expected.item(), abs=1e-10)


def test_mie_is_the_gap_between_log_likelihood_and_elbo(gen):
    # Eq. (4)/(16): E log p_θ(x) - ELBO = E KL(q(z|x) || p_θ(z|x)), for any parameters.
    for N, k in ((5, 3), (8, 2)):
        A, model = randn(gen, N, k), random_model(gen, N, k)
        t, e = terms(model, A), inference_errors(model, A)
        assert e.mie == pytest.approx(t.log_likelihood - t.elbo, rel=1e-10, abs=1e-10)
        assert e.mie > 0


def test_input_dependent_encoder_variance_only_lowers_the_objective():
    # E_x exp(w·x + b) = exp(b + wᵀΣx w / 2) grows with w while E_x log σ² = b does not move.
    model = solve(PAPER_A, 0.7)
    w = torch.linspace(-1, 1, 128, dtype=F64)
    values = []
    for scale in (0.0, 0.01, 0.02, 0.05):
        W_sigma = scale * torch.stack([w, w.flip(0)])
        shifted = LinearBetaVAE(*model.tensors()[:4], W_sigma, model.b_sigma, beta=0.7)
        values.append(objective(shifted, PAPER_A).item())
    assert all(a > b for a, b in itertools.pairwise(values))


# ------------------------------------------------------------------------------- the optimum


@pytest.mark.parametrize("beta", [0.3, 1.0, 1.25, 2.0, 10.0, 100.0])
def test_solve_has_the_closed_form_structure(beta):
    A = PAPER_A
    model = solve(A, beta)
    lam, U = torch.linalg.eigh(sigma_x(A))
    lam, U = lam.flip(0)[:2], U.flip(1)[:, :2]
    d = torch.clamp(lam - beta, min=0)
    DtD = model.D.T @ model.D
    torch.testing.assert_close(DtD, torch.diag(d), rtol=1e-12, atol=1e-12)
    # Columns are eigenvectors of Σx (up to sign), zero once β >= λ_i.
    overlap = (U.T @ model.D).abs()
    torch.testing.assert_close(overlap, torch.diag(d.sqrt()), rtol=1e-10, atol=1e-10)
    # The encoder is the exact posterior of z ~ N(0, I), x | z ~ N(Dz, βI) (β as decoder
    # noise): conditioning the joint Gaussian in data space, cov(z, x) = Dᵀ and
    # cov(x) = DDᵀ + βI, gives mean Dᵀ(DDᵀ + βI)⁻¹x and covariance I - Dᵀ(DDᵀ + βI)⁻¹D,
    # a route independent of solve's latent-space (DᵀD + βI)⁻¹Dᵀ.
    cov_x = model.D @ model.D.T + beta * torch.eye(model.D.shape[0], dtype=F64)
    gain = torch.linalg.solve(cov_x, model.D).T  # Dᵀ(DDᵀ + βI)⁻¹ (cov_x is symmetric)
    torch.testing.assert_close(model.W_mu, gain, rtol=1e-10, atol=1e-12)
    posterior_cov = torch.eye(2, dtype=F64) - gain @ model.D
    torch.testing.assert_close(
        posterior_cov, torch.diag(torch.exp(model.b_sigma)), atol=1e-12, rtol=0
    )
    for zero in (model.b_D, model.b_mu, model.W_sigma):
        assert bool((zero == 0).all())


@pytest.mark.parametrize(
    ("A", "negative"),
    [
        ([[-2.2e-6], [1.0], [1.0], [1.0], [1.0]], (1, 0)),  # 2.2e-6 of the largest: clear
        ([[-2e-9], [1.0], [1.0], [1.0], [1.0]], (0, 0)),  # 2e-9 of it: not clear
        ([[3.0, 2e-9], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]], (0, 1)),
    ],
)
def test_solve_makes_the_first_clearly_non_zero_entry_of_each_column_positive(A, negative):
    # The documented sign convention, "clearly" meaning above 1e-6 of the column's largest
    # entry. The entry at `negative` is negative: the rule is not "the first entry positive".
    D = solve(torch.tensor(A, dtype=F64), 0.5).D
    for column in D.T:
        clear = column.abs() > 1e-6 * column.abs().max()
        assert column[clear][0] > 0, D
    assert D[negative] < 0, D


def test_second_latent_collapses_exactly_at_beta_equal_to_lambda_2():
    below, at, above = (solve(PAPER_A, b) for b in (1.25 - 1e-6, 1.25, 1.25 + 1e-6))
    assert below.D[:, 1].norm() == pytest.approx(1e-3, rel=1e-6)  # sqrt(λ_2 - β)
    assert below.b_sigma[1] < 0
    for collapsed in (at, above):
        assert bool((collapsed.D[:, 1] == 0).all()) and bool((collapsed.W_mu[1] == 0).all())
        assert collapsed.b_sigma[1] == 0  # σ² = 1: the encoder returns the prior
    assert bool((above.D[:, 0] != 0).any())


@pytest.mark.parametrize(
    ("A", "beta"),
    [
        (PAPER_A, 0.5),
        (PAPER_A, 1.0),
        (PAPER_A, 2.0),
        ("random", 0.5),
        ("random", 4.0),
        ("wide", 0.5),
    ],
)
def test_the_gradient_of_the_objective_vanishes_at_solve(gen, A, beta):
    # "wide": more latents than data dimensions (k = 5 > N = 3); the extra latents are off
    A = {"random": (6, 3), "wide": (3, 5)}.get(A, A)
    A = randn(gen, *A) if isinstance(A, tuple) else A
    params = [p.clone().requires_grad_() for p in solve(A, beta).tensors()]
    objective(LinearBetaVAE(*params, beta=beta), A).backward()
    for p in params:
        assert p.grad.abs().max() < 1e-10
    # and the check can fail: a small change of D leaves a clearly non-zero gradient
    moved = [p.detach().clone().requires_grad_() for p in params]
    with torch.no_grad():
        moved[0].add_(0.05 * randn(gen, *moved[0].shape))
    objective(LinearBetaVAE(*moved, beta=beta), A).backward()
    assert max(p.grad.abs().max() for p in moved) > 1e-3


@pytest.mark.parametrize(
    ("shape", "beta", "seeds", "max_iter"),
    [((4, 2), 0.5, 3, 500), ((4, 2), 2.0, 3, 500), ((6, 3), 4.0, 2, 400), ((128, 2), 2.0, 1, 300)],
)
def test_solve_beats_lbfgs_from_random_initialisations(gen, shape, beta, seeds, max_iter):
    A = PAPER_A if shape == (128, 2) else randn(gen, *shape)
    best = objective(solve(A, beta), A).item()
    found = []
    for seed in range(seeds):
        model = optimise(A, beta, seed=seed, restarts=1, max_iter=max_iter)
        found.append(objective(model, A).item())
    assert all(value <= best + 1e-8 * abs(best) for value in found), (best, found)
    # ...and the generic optimiser does reach it: the closed form is the attained maximum.
    assert max(found) >= best - 1e-6 * abs(best), (best, found)


@pytest.mark.parametrize("A", [PAPER_A, "random"])
def test_mie_vanishes_at_beta_one(gen, A):
    # At β = 1 the optimal encoder is the exact model posterior: its covariance (DᵀD + I)⁻¹ is
    # diagonal because the optimal D has orthogonal columns, so the diagonal encoder can
    # represent it. Then ELBO = log-likelihood, and D Dᵀ + I = Σx (maximum likelihood).
    A = randn(gen, 7, 3) if isinstance(A, str) else A
    at_one = solve(A, 1.0)
    assert abs(inference_errors(at_one, A).mie) < 1e-10
    t = terms(at_one, A)
    assert t.elbo == pytest.approx(t.log_likelihood, abs=1e-10)
    torch.testing.assert_close(at_one.D @ at_one.D.T, A @ A.T, rtol=1e-10, atol=1e-10)
    for beta in (0.5, 3.0):
        assert inference_errors(solve(A, beta), A).mie > 1e-4


# ---------------------------------------------------------------------- the sweep and Props 1-3


def test_sweep_satisfies_propositions_1_to_3():
    betas = torch.cat([torch.linspace(0.05, 0.95, 19), torch.linspace(1.0, 10.0, 91)]).to(F64)
    s = sweep(PAPER_A, betas)
    assert bool((s.elbo <= s.log_likelihood + 1e-10).all())
    assert s.beta[s.elbo.argmax()] == 1.0  # Prop. 3
    for name in ("objective", "kl", "reconstruction"):  # Props. 1 and 2
        assert bool((getattr(s, name).diff() <= 1e-12).all()), name


@pytest.mark.parametrize("seed", range(3))
def test_proposition4_maximisers_penalised_term_is_non_increasing_in_beta(seed):
    """Sikka et al., Proposition 4 (eq. 28) in its general form: for any O(κ; β) = A(κ) - β B(κ)
    and κ*(β) = argmax O, B(κ*(β)) is non-increasing in β, and so (for β ≥ 0) is A(κ*(β)).
    Random A, B on a finite grid of κ; exact maximisation over the grid."""
    gen = torch.Generator().manual_seed(seed)
    A, B = randn(gen, 2000), randn(gen, 2000)
    betas = torch.linspace(0.0, 30.0, 3001, dtype=F64)
    objective = A[None, :] - betas[:, None] * B[None, :]  # (β, κ)
    top2 = objective.topk(2, dim=1).values
    assert float((top2[:, 0] - top2[:, 1]).min()) > 1e-12  # no ties to within round-off
    best = objective.argmax(1)
    assert len(torch.unique(best)) >= 3  # κ* moves along the grid: the check is not vacuous
    assert bool((B[best].diff() <= 0).all())
    assert bool((A[best].diff() <= 0).all())
    # the same check on the minimiser (Prop. 4 for -O) finds the opposite order: it can fail
    assert bool((B[objective.argmin(1)].diff() >= 0).all())
    assert float(B[best][0] - B[best][-1]) > 0


@pytest.mark.parametrize("beta", [0.3, 1.0, 1.1, 2.0, 7.5])
def test_derivative_of_the_optimal_objective_is_minus_the_kl(beta):
    # Prop. 1 (envelope theorem): dL*/dβ = -KL at the optimum (L* is C¹, also at λ_2 = 1.25).
    h = 1e-5
    s = sweep(PAPER_A, [beta - h, beta, beta + h])
    slope = (s.objective[2] - s.objective[0]) / (2 * h)
    assert slope.item() == pytest.approx(-s.kl[1].item(), rel=1e-7)


def test_sweep_matches_the_closed_form_values_and_the_unbatched_functions():
    betas = torch.tensor([0.2, 1.0, 1.2, 1.6, 80.0], dtype=F64)
    s = sweep(PAPER_A, betas)
    lam = collapse_thresholds(PAPER_A)
    active = lam > betas[:, None]
    # KL* = 1/2 Σ_active log(λ_i / β) and rec* = -N/2 log 2π - 1/2 tr Σx + 1/2 Σ (λ_i - β)_+
    kl = 0.5 * torch.where(active, torch.log(lam / betas[:, None]), 0).sum(-1)
    trace = torch.trace(sigma_x(PAPER_A))
    rec = (
        -64 * math.log(2 * math.pi)
        - 0.5 * trace
        + 0.5 * torch.clamp(lam - betas[:, None], 0).sum(-1)
    )
    torch.testing.assert_close(s.kl, kl, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s.reconstruction, rec, rtol=1e-12, atol=1e-10)
    var = torch.where(active, betas[:, None] / lam, 1.0)
    torch.testing.assert_close(s.encoder_variances, var, rtol=1e-12, atol=0)
    norms = torch.clamp(lam - betas[:, None], 0).sqrt()
    torch.testing.assert_close(s.column_norms, norms, rtol=1e-12, atol=1e-12)
    # MIE* per active latent and E log p_θ* (derivation note), with c_i = 1 + (λ_i - β)_+
    b = betas[:, None]
    mie = (1 + lam - b) * b / lam + (lam - b) * (b - 1) ** 2 / (lam * (1 + lam - b))
    mie = 0.5 * torch.where(active, mie - 1 - torch.log(b * (1 + lam - b) / lam), 0).sum(-1)
    torch.testing.assert_close(s.mie, mie, rtol=1e-10, atol=1e-12)
    c = 1 + torch.clamp(lam - b, 0)
    ll = -0.5 * (128 * math.log(2 * math.pi) + (torch.log(c) + lam / c).sum(-1) + 126)
    torch.testing.assert_close(s.log_likelihood, ll, rtol=1e-12, atol=1e-10)
    for i, beta in enumerate(betas.tolist()):
        model = solve(PAPER_A, beta)
        t, e = terms(model, PAPER_A), inference_errors(model, PAPER_A)
        for name in ("reconstruction", "kl", "elbo", "objective", "log_likelihood"):
            assert getattr(s, name)[i].item() == pytest.approx(getattr(t, name), abs=1e-10)
        assert s.mie[i].item() == pytest.approx(e.mie, abs=1e-10)
        assert s.tie[i].item() == pytest.approx(e.tie, abs=1e-10)


def test_python_floats_are_read_in_float64():
    # a list of floats must not be rounded to float32 on the way in
    s = sweep(PAPER_A.tolist(), [0.1 + 1e-12, 1.0 + 1e-12])
    assert s.beta[0].item() == 0.1 + 1e-12 and s.beta[1].item() == 1.0 + 1e-12
    exact = solve(PAPER_A, 0.1 + 1e-12)
    assert s.kl[0].item() == pytest.approx(terms(exact, PAPER_A).kl, rel=1e-14)


def test_sweep_of_400_betas_is_fast():
    betas = torch.linspace(0.05, 10, 400, dtype=F64)
    start = time.perf_counter()
    s = sweep(PAPER_A, betas)
    assert time.perf_counter() - start < 1.0
    assert s.tie.shape == (400,) and s.column_norms.shape == (400, 2)
    assert s.beta.dtype == F64 and bool(torch.isfinite(s.tie).all())


# ------------------------------------------------------------------------ inference errors


def test_mie_and_tie_match_monte_carlo(gen):
    N, k, n = 4, 2, 40_000
    A, model = randn(gen, N, k), random_model(gen, N, k)
    e = inference_errors(model, A)
    assert isinstance(e, InferenceErrors)
    x = sample_data(gen, A, n)
    mu, logvar = encode(model, x)
    var = torch.exp(logvar)
    # Posteriors from vaebook.linear_gaussian (independent code): model (eq. 24), truth (eq. 19).
    m_model, c_model = posterior(x, model.D, model.b_D, 1.0)
    m_true, c_true = posterior(x, A, 0.0, 1.0)
    assert_within_5_se(kl_normal(mu, torch.diag_embed(var), m_model, c_model), e.mie)
    perms = signed_permutations(k)
    per_p = torch.stack(
        [kl_normal(mu @ P.T, torch.diag_embed(var @ P.abs().T), m_true, c_true) for P in perms], 1
    )  # (n, 8)
    assert_within_5_se(per_p, e.tie_per_relabelling)
    assert e.tie == e.tie_per_relabelling.min().item()
    assert torch.equal(e.tie_relabelling, perms[e.tie_per_relabelling.argmin()])


def test_tie_vanishes_at_beta_one_when_the_sources_are_the_principal_axes(gen):
    # With orthogonal columns of distinct norms, the optimal D at β = 1 is A up to a signed
    # permutation (here a reversal with sign flips), so the minimised TIE is 0 and the
    # un-relabelled KL is not.
    Q, _ = torch.linalg.qr(randn(gen, 9, 3))
    A = Q @ torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    e = inference_errors(solve(A, 1.0), A)
    assert abs(e.tie) < 1e-10
    assert e.tie_per_relabelling[0] > 1.0
    assert e.tie_relabelling.abs().flip(1).equal(torch.eye(3, dtype=F64))  # latents reversed
    assert inference_errors(solve(A, 2.0), A).tie > 1e-3


def test_tie_depends_on_the_mixing_geometry_only(gen):
    # The chapter's scan describes A by two column norms and an angle. That is enough because
    # the relabelled MIE and TIE of the optimum are unchanged by an orthogonal map of the data
    # space (x -> Qx), by noise-only data dimensions (zero rows of A) and by reordering or
    # flipping the sources (columns of A), at every β.
    A = randn(gen, 5, 2) * torch.tensor([2.0, 0.7], dtype=F64)
    Q, _ = torch.linalg.qr(randn(gen, 5, 5))
    padded = torch.cat([A, torch.zeros(4, 2, dtype=F64)])
    swapped = A[:, [1, 0]] * torch.tensor([1.0, -1.0], dtype=F64)
    for beta in (0.3, 1.0, 1.7, 6.0):
        base = inference_errors(solve(A, beta), A)
        for other in (Q @ A, padded, swapped):
            moved = inference_errors(solve(other, beta), other)
            assert moved.tie == pytest.approx(base.tie, rel=1e-9, abs=1e-12)
            assert moved.mie == pytest.approx(base.mie, rel=1e-9, abs=1e-12)
    # The un-relabelled divergence does depend on the labelling: the invariance is the
    # minimum's, not an accident of the closed forms.
    flipped = A * torch.tensor([-1.0, 1.0], dtype=F64)
    literal = inference_errors(solve(flipped, 1.0), flipped).tie_per_relabelling[0]
    assert abs(literal - inference_errors(solve(A, 1.0), A).tie_per_relabelling[0]) > 1e-3


@pytest.mark.parametrize(("A", "beta"), [(PAPER_A, 0.5), (PAPER_A, 3.0), ("random", 1.0)])
def test_relabelling_leaves_objective_and_mie_unchanged_and_tie_minimised(gen, A, beta):
    A = randn(gen, 6, 3) if isinstance(A, str) else A
    k = A.shape[1]
    model = solve(A, beta)
    t, e = terms(model, A), inference_errors(model, A)
    naive = set()
    for P in signed_permutations(k)[1:]:
        other = model.relabelled(P)
        t2, e2 = terms(other, A), inference_errors(other, A)
        for name in ("reconstruction", "kl", "elbo", "objective", "log_likelihood"):
            assert getattr(t2, name) == pytest.approx(getattr(t, name), abs=1e-10)
        assert e2.mie == pytest.approx(e.mie, abs=1e-10)
        assert e2.tie == pytest.approx(e.tie, abs=1e-10)
        naive.add(round(e2.tie_per_relabelling[0].item(), 6))
    assert max(naive) - min(naive) > 1.0  # the un-minimised KL does depend on the labels
    best = model.relabelled(e.tie_relabelling)
    assert inference_errors(best, A).tie_per_relabelling[0].item() == pytest.approx(
        e.tie, abs=1e-10
    )


@pytest.mark.parametrize("which", ["optimal", "random"])
def test_tie_samples_agrees_with_the_closed_form(gen, which):
    n = 20_000
    if which == "optimal":
        A, model = PAPER_A, solve(PAPER_A, 0.5)
    else:
        A = randn(gen, 4, 2)
        model = random_model(gen, 4, 2)
    exact = inference_errors(model, A)
    x = sample_data(gen, A, n)
    mu, logvar = encode(model, x)
    est = tie_samples(mu, logvar, x, A)
    assert 0 < est.standard_error < 0.05 * est.tie
    assert abs(est.tie - exact.tie) < 5 * est.standard_error + 1e-12
    chosen = int((signed_permutations(2) == est.tie_relabelling).all((1, 2)).nonzero()[0, 0])
    assert exact.tie_per_relabelling[chosen] < exact.tie + 5 * est.standard_error
    assert bool(
        (
            (est.tie_per_relabelling - exact.tie_per_relabelling).abs() < 5 * est.standard_errors
        ).all()
    )


@pytest.mark.parametrize("n", [1, 2, 5])
def test_tie_samples_averages_the_exact_kl_with_bessel_corrected_standard_errors(gen, n):
    # Per relabelling: the sample mean of the exact per-point KL and its standard error
    # std / sqrt(n) with the n - 1 (Bessel) correction; with a single point it is 0, not NaN.
    A = randn(gen, 3, 2)
    mu, logvar, x = randn(gen, n, 2), 0.3 * randn(gen, n, 2), randn(gen, n, 3)
    est = tie_samples(mu, logvar, x, A)
    m_true, c_true = posterior(x, A, 0.0, 1.0)
    var = torch.exp(logvar)
    per_p = torch.stack(
        [
            kl_normal(mu @ P.T, torch.diag_embed(var @ P.abs().T), m_true, c_true)
            for P in signed_permutations(2)
        ]
    )  # (8, n)
    torch.testing.assert_close(est.tie_per_relabelling, per_p.mean(1), rtol=1e-12, atol=1e-12)
    se = per_p.std(1) / math.sqrt(n) if n > 1 else torch.zeros(8, dtype=F64)
    torch.testing.assert_close(est.standard_errors, se, rtol=1e-10, atol=0)
    best = int(per_p.mean(1).argmin())
    assert est.tie == est.tie_per_relabelling[best].item()
    assert est.standard_error == est.standard_errors[best].item()
    assert torch.equal(est.tie_relabelling, signed_permutations(2)[best])


def test_tie_samples_covers_every_relabelling_when_it_works_in_chunks(gen):
    # n k^2 = 27000 numbers per relabelling: the 48 relabellings of k = 3 are done in chunks.
    n, A = 3000, randn(gen, 4, 3)
    x = sample_data(gen, A, n)
    mu, logvar = 0.5 * randn(gen, n, 3), 0.2 * randn(gen, n, 3) - 1
    est = tie_samples(mu, logvar, x, A)
    assert est.tie_per_relabelling.shape == est.standard_errors.shape == (48,)
    m_true, c_true = posterior(x, A, 0.0, 1.0)
    P = signed_permutations(3)[-1]
    last = kl_normal(mu @ P.T, torch.diag_embed(torch.exp(logvar) @ P.abs().T), m_true, c_true)
    assert est.tie_per_relabelling[-1].item() == pytest.approx(last.mean().item(), rel=1e-12)


@pytest.mark.parametrize(("var", "mu", "best"), [(1000.0, -2.5e-10, 0), (0.5, -8.75e-13, 1)])
def test_tie_samples_treats_only_round_off_differences_as_ties(var, mu, best):
    # k = N = 1, A = 1, x = 1: the ground-truth posterior is N(1/2, 1/2) and P = -1 changes the
    # KL by exactly 2 mu. 5e-10 at KL ~ 1000 is within round-off (1e-12 relative): a tie, broken
    # towards the identity. 1.75e-12 at KL ~ 0.25 is more than that: P = -1 wins.
    est = tie_samples([[mu]], [[math.log(var)]], [[1.0]], [[1.0]])
    gap = est.tie_per_relabelling[0] - est.tie_per_relabelling[1]
    assert gap.item() == pytest.approx(-2 * mu, rel=1e-2)
    assert torch.equal(est.tie_relabelling, signed_permutations(1)[best])


# ------------------------------------------------------------------------ signed permutations


def test_signed_permutations_of_two_latents():
    perms = signed_permutations(2)
    assert perms.shape == (8, 2, 2) and perms.dtype == F64
    assert torch.equal(perms[0], torch.eye(2, dtype=F64))
    assert len({tuple(P.flatten().tolist()) for P in perms}) == 8
    eye = torch.eye(2, dtype=F64).expand(8, 2, 2)
    torch.testing.assert_close(perms @ perms.mT, eye, rtol=0, atol=0)


@pytest.mark.parametrize("k", [1, 3, 4])
def test_signed_permutations_are_all_distinct_signed_permutations(k):
    perms = signed_permutations(k)
    assert perms.shape == (math.factorial(k) * 2**k, k, k)
    assert len({tuple(P.flatten().tolist()) for P in perms}) == perms.shape[0]
    assert bool((perms.abs().sum(-1) == 1).all() and (perms.abs().sum(-2) == 1).all())


def test_signed_permutations_go_up_to_six_latents_without_negative_zeros():
    perms = signed_permutations(6)
    assert perms.shape == (46080, 6, 6) and torch.equal(perms[0], torch.eye(6, dtype=F64))
    assert not bool(torch.signbit(perms[perms == 0]).any())  # 0., never -0.


# ------------------------------------------------------------------------------ bad input

A_GOOD = mixing_matrix(4, 2)
GOOD = dict(
    D=torch.ones(4, 2),
    b_D=torch.zeros(4),
    W_mu=torch.ones(2, 4),
    b_mu=torch.zeros(2),
    W_sigma=torch.zeros(2, 4),
    b_sigma=torch.zeros(2),
    beta=1.0,
)
MODEL = LinearBetaVAE(**GOOD)
MU, X = torch.zeros(5, 2), torch.zeros(5, 4)


@pytest.mark.parametrize(
    ("func", "args", "error", "match"),
    [
        (mixing_matrix, (0, 2), ValueError, "N must be > 0"),
        (mixing_matrix, (3, 2.0), TypeError, "k must be an int"),
        (solve, (A_GOOD, 0.0), ValueError, "beta must be > 0"),
        (solve, (A_GOOD, -1.0), ValueError, "beta must be > 0"),
        (solve, (A_GOOD, math.nan), ValueError, "beta must be finite"),
        (solve, (A_GOOD, "1"), TypeError, "beta must be a number"),
        (solve, (A_GOOD[0], 1.0), ValueError, "A must be a non-empty"),
        (solve, (A_GOOD * math.inf, 1.0), ValueError, "A must be finite"),
        (solve, ("A", 1.0), TypeError, "A must be a tensor"),
        (solve, (True, 1.0), TypeError, "A must be a tensor or a number, got bool"),
        (optimise, (A_GOOD, 0.0), ValueError, "beta must be > 0"),
        (collapse_thresholds, (torch.zeros(0, 2),), ValueError, "A must be a non-empty"),
        (terms, (MODEL, mixing_matrix(5, 2)), ValueError, "A must have shape"),
        (terms, ("model", A_GOOD), TypeError, "model must be a LinearBetaVAE, got str"),
        (objective, (MODEL, A_GOOD.T), ValueError, "A must have shape"),
        (inference_errors, (MODEL, A_GOOD * math.nan), ValueError, "A must be finite"),
        (sweep, (A_GOOD, [1.0, -1.0]), ValueError, "betas must all be > 0"),
        (sweep, (A_GOOD, [1.0, 0.0]), ValueError, "betas must all be > 0"),
        (sweep, (A_GOOD, [[1.0]]), ValueError, "betas must be a non-empty 1-D"),
        (sweep, (A_GOOD, []), ValueError, "betas must be a non-empty 1-D"),
        (sweep, (A_GOOD, [1.0, math.nan]), ValueError, "betas must be finite"),
        (
            signed_permutations,
            (7,),
            ValueError,
            r"k must be at most 6 \(there are k! 2\^k signed permutations: 645120 for k = 7\)",
        ),
        (signed_permutations, (0,), ValueError, "k must be > 0"),
        (tie_samples, (MU, MU, X, mixing_matrix(4, 3)), ValueError, "mu must be"),
        (tie_samples, (MU, MU[:, :1], X, A_GOOD), ValueError, "logvar must have the shape"),
        (tie_samples, (MU, MU, X[:4], A_GOOD), ValueError, r"x must be \(5, 4\) to match mu"),
        (tie_samples, (MU * math.nan, MU, X, A_GOOD), ValueError, "mu must be finite"),
        (tie_samples, (MU, MU, X * math.nan, A_GOOD), ValueError, "x must be finite"),
        (tie_samples, (MU, MU, X[:, :3], A_GOOD), ValueError, "x must be"),
        (tie_samples, (MU, MU * math.nan, X, A_GOOD), ValueError, "logvar must be finite"),
        (MODEL.relabelled, (torch.ones(2, 2),), ValueError, "P must be a signed permutation"),
        (MODEL.relabelled, (2 * torch.eye(2),), ValueError, "P must be a signed permutation"),
        (MODEL.relabelled, (torch.eye(3),), ValueError, "P must be a"),
        (MODEL.relabelled, ([[1.0, 0.0], [1.0, 0.0]],), ValueError, "P must be a signed"),
        (MODEL.relabelled, ([[1.0, 1.0], [0.0, 0.0]],), ValueError, "P must be a signed"),
        (MODEL.relabelled, (torch.full((2, 2), math.nan),), ValueError, "P must be finite"),
    ],
)
def test_bad_input_raises_naming_the_argument(func, args, error, match):
    with pytest.raises(error, match="^" + match):
        func(*args)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"D": torch.ones(4)}, ValueError, "D must be an"),
        ({"D": torch.full((4, 2), math.nan)}, ValueError, "D must be finite"),
        ({"b_D": torch.zeros(3)}, ValueError, "b_D must have shape"),
        ({"W_mu": torch.ones(4, 2)}, ValueError, "W_mu must have shape"),
        ({"b_mu": torch.zeros(3)}, ValueError, "b_mu must have shape"),
        ({"W_sigma": torch.ones(2, 3)}, ValueError, "W_sigma must have shape"),
        ({"b_sigma": torch.zeros(2, 1)}, ValueError, "b_sigma must have shape"),
        ({"b_sigma": torch.tensor([0.0, math.inf])}, ValueError, "b_sigma must be finite"),
        ({"beta": 0.0}, ValueError, "beta must be > 0"),
        ({"beta": None}, TypeError, "beta must be a number"),
    ],
)
def test_bad_model_raises_naming_the_field(change, error, match):
    with pytest.raises(error, match="^" + match):
        LinearBetaVAE(**{**GOOD, **change})


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"restarts": 0}, ValueError, "restarts must be > 0"),
        ({"max_iter": 1.5}, TypeError, "max_iter must be an int"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"init_scale": 0.0}, ValueError, "init_scale must be > 0"),
    ],
)
def test_optimise_rejects_bad_settings(kwargs, error, match):
    with pytest.raises(error, match="^" + match):
        optimise(A_GOOD, 1.0, **kwargs)


def test_model_fields_are_float64_tensors_and_beta_a_float():
    # float32 tensors (GOOD), nested lists and a 0-d tensor beta are converted on construction
    lists = {name: value.tolist() for name, value in GOOD.items() if name != "beta"}
    from_lists = LinearBetaVAE(**lists, beta=torch.tensor(2.0))
    for model in (LinearBetaVAE(**GOOD), from_lists):
        assert all(isinstance(t, torch.Tensor) and t.dtype == F64 for t in model.tensors())
        assert torch.equal(model.D, torch.ones(4, 2, dtype=F64))
    assert type(from_lists.beta) is float and from_lists.beta == 2.0


def test_solve_accepts_and_ignores_a_seed():
    assert torch.equal(solve(A_GOOD, 0.5, seed=3).W_mu, solve(A_GOOD, 0.5).W_mu)
    with pytest.raises(ValueError, match=r"^seed must be >= 0"):
        solve(A_GOOD, 0.5, seed=-1)


class RecordingLBFGS(torch.optim.LBFGS):
    """torch.optim.LBFGS that records every run: its settings, start and (final) parameters."""

    runs: list

    def __init__(self, params, **kwargs):
        params = list(params)
        start = [p.detach().clone() for p in params]
        self.runs.append({"kwargs": kwargs, "start": start, "end": params})
        super().__init__(params, **kwargs)


@pytest.fixture
def lbfgs_runs(monkeypatch):
    runs = []
    monkeypatch.setattr(torch.optim, "LBFGS", type("Recording", (RecordingLBFGS,), {"runs": runs}))
    return runs


def test_optimise_runs_strong_wolfe_lbfgs_from_documented_random_starts(lbfgs_runs, monkeypatch):
    monkeypatch.setattr(torch.optim.LBFGS, "step", lambda self, closure: None)  # starts only
    optimise(A_GOOD, 1.0)
    assert len(lbfgs_runs) == 4  # the default restarts
    for run in lbfgs_runs:
        assert run["kwargs"]["max_iter"] == 2000
        assert run["kwargs"]["line_search_fn"] == "strong_wolfe"
        assert all(p.dtype == F64 for p in run["start"])
    defaults = [run["start"] for run in lbfgs_runs]
    lbfgs_runs.clear()
    optimise(A_GOOD, 1.0, seed=0, restarts=4, max_iter=2000, init_scale=1.0)
    optimise(A_GOOD, 1.0, seed=1, restarts=1)
    # the documented defaults, and the starts come from the seed alone (not the global RNG)
    for run, start in zip(lbfgs_runs[:4], defaults, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(run["start"], start, strict=True))
    assert not torch.equal(lbfgs_runs[-1]["start"][0], defaults[0][0])
    # D, the biases and b^σ ~ init_scale N(0, 1); the encoder weights ~ init_scale N(0, 1/N)
    lbfgs_runs.clear()
    N = 400
    optimise(mixing_matrix(N, 100), 1.0, restarts=1, init_scale=0.5)
    scales = (0.5, 0.5, 0.5 / math.sqrt(N), 0.5, 0.5 / math.sqrt(N), 0.5)
    for start, scale in zip(lbfgs_runs[0]["start"], scales, strict=True):
        assert start.std().item() == pytest.approx(scale, rel=0.2)
        assert abs(start.mean().item()) < 0.3 * scale


def test_optimise_returns_the_best_of_its_restarts(gen, lbfgs_runs):
    A, beta = randn(gen, 4, 2), 0.5
    model = optimise(A, beta, seed=3, restarts=4, max_iter=2)  # short runs: different ends
    values = [
        objective(LinearBetaVAE(*(p.detach() for p in run["end"]), beta=beta), A).item()
        for run in lbfgs_runs
    ]
    assert len(set(values)) == 4
    best = values.index(max(values))
    assert best != 3, values  # not simply the last run
    for returned, found in zip(model.tensors(), lbfgs_runs[best]["end"], strict=True):
        assert torch.equal(returned, found)


def test_optimise_skips_a_run_that_overflows_and_raises_when_all_do(lbfgs_runs, monkeypatch):
    real_step = torch.optim.LBFGS.step

    def step(self, closure):  # the second of three runs overflows
        if len(lbfgs_runs) == 2:
            with torch.no_grad():
                self.param_groups[0]["params"][1].fill_(1e300)
        return real_step(self, closure)

    monkeypatch.setattr(torch.optim.LBFGS, "step", step)
    model = optimise(A_GOOD, 0.5, restarts=3, max_iter=50)
    assert len(lbfgs_runs) == 3
    assert objective(model, A_GOOD).item() == pytest.approx(
        objective(solve(A_GOOD, 0.5), A_GOOD).item(), abs=1e-6
    )
    monkeypatch.setattr(torch.optim.LBFGS, "step", real_step)
    all_diverged = r"^every L-BFGS run diverged; try a smaller init_scale$"
    with pytest.raises(RuntimeError, match=all_diverged):
        optimise(A_GOOD, 0.5, restarts=2, max_iter=50, init_scale=300.0)


@pytest.mark.parametrize("A", ["fixed", "random"])
def test_optimise_converges_to_the_closed_form_optimum_to_round_off(gen, A):
    A = (
        randn(gen, 5, 2)
        if A == "random"
        else torch.tensor([[1.0, 0.5], [0.3, 1.2], [0.7, -0.4], [0.2, 0.9]], dtype=F64)
    )
    best = objective(solve(A, 0.5), A).item()
    found = objective(optimise(A, 0.5, restarts=1), A).item()
    assert found == pytest.approx(best, abs=1e-11)


# ---- the fixed-decoder case (Section IV-A) ----------------------------------------------------


def test_optimal_encoder_is_stationary_for_its_fixed_decoder():
    A = lbv.mixing_matrix(12, 2)
    model = lbv.optimal_encoder(A, 1.7)
    params = [t.clone().requires_grad_() for t in model.tensors()]
    value = lbv.objective(lbv.LinearBetaVAE(*params, beta=model.beta), A)
    grads = torch.autograd.grad(value, params)
    for name, grad in zip(("W_mu", "b_mu", "W_sigma", "b_sigma"), grads[2:], strict=True):
        assert grad.abs().max() < 1e-9, name


def test_optimal_encoder_beats_perturbed_encoders():
    A = lbv.mixing_matrix(12, 2)
    best = lbv.optimal_encoder(A, 0.6)
    gen = torch.Generator().manual_seed(3)
    value = lbv.terms(best, A).objective
    for _ in range(5):
        noisy = [
            t + 0.01 * torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in best.tensors()
        ]
        noisy[0], noisy[1] = best.D, best.b_D  # the decoder stays fixed
        assert lbv.terms(lbv.LinearBetaVAE(*noisy, beta=best.beta), A).objective < value


def test_with_a_fixed_decoder_mie_is_smallest_at_beta_one():
    # Section IV-A: log p_θ(x) is fixed, ELBO* peaks at β = 1 (Prop. 3), so MIE = log p - ELBO
    # is smallest there, although with D = A (non-orthogonal columns) it is not zero.
    A = lbv.mixing_matrix(16, 2)
    betas = torch.linspace(0.5, 1.5, 101, dtype=torch.float64)
    mie = torch.tensor([lbv.inference_errors(lbv.optimal_encoder(A, b), A).mie for b in betas])
    assert betas[mie.argmin()].item() == pytest.approx(1.0, abs=1e-9)
    assert mie.min() > 1e-3


def test_optimal_encoder_rejects_bad_input():
    with pytest.raises(ValueError, match=r"^D must be"):
        lbv.optimal_encoder(torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match=r"^D must be finite"):
        lbv.optimal_encoder(torch.full((3, 2), math.nan), 1.0)
    with pytest.raises(ValueError, match=r"^beta"):
        lbv.optimal_encoder(torch.ones(3, 2), 0.0)
