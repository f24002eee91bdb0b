"""Tests of vaebook.decomposition (Mathieu et al., 2019): Theorem 1, Corollaries 1-2 and
Theorem 2 against closed forms, brute force and Monte Carlo references."""

import math

import numpy as np
import pytest
import torch
from helpers import randn
from scipy import stats
from torch.distributions import Normal, kl_divergence
from torch.func import functional_call

from vaebook.decomposition import (
    corollary1_constant,
    entropy_regularised_elbo,
    random_rotation,
    rescale_encoder,
    rescale_jacobian,
    rescale_networks,
    rotate_encoder,
    theorem1_monte_carlo,
    theorem1_terms,
)
from vaebook.gaussian import (
    kl_diag_normal,
    log_normal,
)
from vaebook.nets import mlp_decoder, mlp_encoder, seeded
from vaebook.objectives import ELBOTerms, gaussian_log_likelihood
from vaebook.priors import (
    SpikeAndSlabPrior,
    StudentTPrior,
    anisotropic_gaussian,
    annealed_log_normaliser,
    isotropic_gaussian,
    kl_full_to_prior,
    spike_and_slab,
    student_t,
)

F64 = torch.float64


def tanh_decoder(gen, d, p=5):
    """A small fixed decoder ``z ↦ tanh(z W + b) V``: ``(..., d) -> (..., p)``."""
    w, b, v = randn(gen, d, 8), randn(gen, 8), randn(gen, 8, p)
    return lambda z: torch.tanh(z @ w + b) @ v


@pytest.mark.parametrize("beta", [0.3, 1.0, 4.0])
@pytest.mark.parametrize("variances", [[1.0, 1.0, 1.0], [0.2, 1.0, 3.0]])
def test_theorem1_holds_in_closed_form_for_gaussian_priors(gen, beta, variances):
    mu, logvar, log_lik = randn(gen, 6, 3), randn(gen, 6, 3), randn(gen, 6)
    prior = anisotropic_gaussian(torch.tensor(variances, dtype=F64))
    terms = theorem1_terms(mu, logvar, prior, beta, log_lik)
    assert terms.gap.abs().max().item() < 1e-8
    lhs = ELBOTerms(
        log_lik, kl_diag_normal(mu, logvar, 0.0, torch.tensor(variances, dtype=F64).log()), beta
    )
    torch.testing.assert_close(terms.beta_objective, lhs.objective, rtol=1e-12, atol=1e-12)


def annealed_reference(prior, beta):
    """``(log p, log f_β, log F_β)`` per coordinate, reached without the kernel: scipy
    densities, the closed-form annealed Student-t and Gaussian, and for the spike-and-slab a
    brute-force trapezoid normaliser on a fine grid."""
    if isinstance(prior, StudentTPrior):
        nu = prior.nu
        nu_prime = beta * (nu + 1) - 1  # f_β is Student-t (ν', scale √(ν/ν'))
        log_p = stats.t(nu).logpdf
        log_f = stats.t(nu_prime, scale=math.sqrt(nu / nu_prime)).logpdf
        t = 0.7
        return log_p, log_f, beta * log_p(t) - log_f(t)
    if isinstance(prior, SpikeAndSlabPrior):
        g, s0 = prior.gamma, prior.sigma0

        def log_p(t):
            return np.log(g * stats.norm(0, s0).pdf(t) + (1 - g) * stats.norm.pdf(t))

        grid = np.linspace(-14, 14, 1_400_001)  # step 2e-5, 1/1000 of the spike's width
        log_norm = math.log(np.trapezoid(np.exp(beta * log_p(grid)), grid))
        return log_p, lambda t: beta * log_p(t) - log_norm, log_norm
    sd = math.sqrt(prior.variances[0].item())  # isotropic Gaussian: f_β is N(0, σ²/β)
    log_p = stats.norm(0, sd).logpdf
    log_f = stats.norm(0, sd / math.sqrt(beta)).logpdf
    return log_p, log_f, beta * log_p(0.0) - log_f(0.0)


@pytest.mark.parametrize("beta", [0.5, 2.0])
@pytest.mark.parametrize(
    "prior", [student_t(3, 3.0), spike_and_slab(3, 0.7), isotropic_gaussian(3)], ids=repr
)
def test_theorem1_terms_with_samples_match_independent_monte_carlo(gen, beta, prior):
    """Every term of ``theorem1_terms`` (given samples) against a Monte Carlo estimate from
    independent samples with scipy's densities and an independently normalised f_β, and the
    theorem itself: the kernel's right side against the reference's left side."""
    n, d, s = 5, 3, 20_000
    mu, logvar, log_lik = randn(gen, n, d), randn(gen, n, d) - 1, randn(gen, n)
    sd = torch.exp(0.5 * logvar)
    z = mu + sd * randn(gen, s, n, d)
    terms = theorem1_terms(mu, logvar, prior, beta, log_lik, z=z)
    log_p, log_f, log_norm_1d = annealed_reference(prior, beta)
    z_ref = (mu + sd * randn(gen, s, n, d)).numpy()  # independent of z
    log_q = stats.norm(mu.numpy(), sd.numpy()).logpdf(z_ref).sum(-1)
    kl_p = log_q - log_p(z_ref).sum(-1)  # (s, n) per-sample KL(q || p)
    kl_f = log_q - log_f(z_ref).sum(-1)
    lhs = log_lik.numpy() - beta * kl_p
    annealed_elbo = log_lik.numpy() - kl_f
    entropy = -log_q.mean(0)

    def agree(kernel, samples):
        # the kernel's estimate has the same spread as the reference's: sqrt(2) standard errors
        se = math.sqrt(2) * samples.std(0) / math.sqrt(s)
        err = np.abs(kernel.numpy() - samples.mean(0))
        assert np.all(err < 5 * se), err / se

    assert abs(terms.log_normaliser - d * log_norm_1d) < 1e-6, (terms.log_normaliser, log_norm_1d)
    agree(terms.beta_objective, lhs)
    agree(terms.annealed_elbo, annealed_elbo)
    agree(terms.entropy, -log_q)
    rhs = terms.annealed_elbo.numpy() + (beta - 1) * entropy + d * log_norm_1d
    agree(torch.as_tensor(rhs), lhs)  # Theorem 1: right side (kernel) = left side (reference)


@pytest.mark.parametrize("beta", [0.5, 3.0])
def test_theorem1_monte_carlo_matches_closed_forms_for_a_gaussian_prior(gen, beta):
    mu, logvar, log_lik = randn(gen, 6, 2), randn(gen, 6, 2), randn(gen, 6)
    prior = anisotropic_gaussian(torch.tensor([0.5, 2.0], dtype=F64))
    annealed = torch.distributions.Independent(
        Normal(torch.zeros(2, dtype=F64), torch.tensor([0.5, 2.0], dtype=F64).div(beta).sqrt()),
        1,
    )
    mc = theorem1_monte_carlo(mu, logvar, prior, beta, log_lik, annealed, 4000, gen)
    kl = kl_divergence(
        Normal(mu, torch.exp(0.5 * logvar)),
        Normal(torch.zeros(2, dtype=F64), torch.tensor([0.5, 2.0], dtype=F64).sqrt()),
    ).sum(-1)
    exact = log_lik - beta * kl  # torch.distributions' closed-form KL
    assert bool(((mc.lhs - exact).abs() < 5 * mc.lhs_se).all())
    assert bool(((mc.rhs - exact).abs() < 5 * mc.rhs_se).all())
    assert bool((mc.gap_se > 0).all()) and bool(torch.isfinite(mc.gap_se).all())


def test_theorem1_monte_carlo_detects_a_wrong_annealed_prior(gen):
    """The check has power: f_β taken as the un-annealed Student-t gives a gap of many SEs,
    while the right one (ν' = β(ν + 1) - 1, scale √(ν/ν')) gives none."""
    nu, beta = 5.0, 2.0
    mu, logvar, log_lik = randn(gen, 8, 3), randn(gen, 8, 3) - 1, randn(gen, 8)
    prior = student_t(3, nu)

    def annealed(df, scale):
        return torch.distributions.Independent(
            torch.distributions.StudentT(torch.full((3,), df, dtype=F64), 0.0, scale), 1
        )

    nu_prime = beta * (nu + 1) - 1
    right = theorem1_monte_carlo(
        mu, logvar, prior, beta, log_lik, annealed(nu_prime, math.sqrt(nu / nu_prime)), 4000, gen
    )
    wrong = theorem1_monte_carlo(mu, logvar, prior, beta, log_lik, annealed(nu, 1.0), 4000, gen)
    assert (right.gap / right.gap_se).abs().max().item() < 5
    assert (wrong.gap / wrong.gap_se).abs().max().item() > 5


# --- Corollary 1: rescaling ----------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.4, 1.0, 5.0])
@pytest.mark.parametrize("variance", [1.0, 2.5])
def test_corollary1_rescaled_networks_give_the_beta_objective(gen, beta, variance):
    d, n = 3, 6
    decode = tanh_decoder(gen, d)
    x, mu, logvar = randn(gen, n, 5), randn(gen, n, d), randn(gen, n, d) - 1
    eps = randn(gen, n, d)
    log_var_p = math.log(variance)
    # the β-VAE objective of (encoder, g)
    z = mu + torch.exp(0.5 * logvar) * eps
    lhs = gaussian_log_likelihood(x, decode(z)) - beta * kl_diag_normal(mu, logvar, 0.0, log_var_p)
    # the ELBO of the rescaled encoder (√β μ, β S) with decoder z ↦ g(z / √β), same noise
    mu2, logvar2 = rescale_encoder(mu, logvar, beta)
    z2 = mu2 + torch.exp(0.5 * logvar2) * eps
    torch.testing.assert_close(z2, math.sqrt(beta) * z, rtol=1e-13, atol=1e-13)
    elbo2 = gaussian_log_likelihood(x, decode(z2 / math.sqrt(beta))) - kl_diag_normal(
        mu2, logvar2, 0.0, log_var_p
    )
    rhs = entropy_regularised_elbo(elbo2, logvar2, beta) + corollary1_constant(
        d, beta, variance=variance
    )
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-6)
    assert (lhs - rhs).abs().max().item() < 1e-10


@pytest.mark.parametrize("beta", [0.2, 1.0, 3.0])
def test_corollary1_constant_matches_the_papers_form(beta):
    d, variance = 4, 1.7
    prior = isotropic_gaussian(d, variance)
    paper = d * (beta - 1) / 2 * (1 + math.log(2 * math.pi / beta))
    paper += annealed_log_normaliser(prior, beta)
    assert abs(corollary1_constant(d, beta, variance=variance) - paper) < 1e-12
    assert corollary1_constant(d, beta) <= 0


# --- Corollary 2: stationary points correspond under T_β -------------------------------------


def _cor2_networks(gen):
    """A tanh MLP encoder with linear heads, a tanh MLP decoder, data and shared noise (float64)."""
    with seeded(3):
        encoder = mlp_encoder((5,), [6], 2, "tanh").double()
        decoder = mlp_decoder(2, [6], (5,), "tanh").double()
    return encoder, decoder, randn(gen, 8, 5), randn(gen, 8, 2)


def _t_beta_by_hand(encoder, decoder, beta):
    """T_β on the parameters, written from the exercise's solution: √β on the mean head,
    + log β on the log-variance bias, 1/√β on the decoder's first weight; the rest unchanged."""
    enc = {name: p.detach().clone() for name, p in encoder.named_parameters()}
    dec = {name: p.detach().clone() for name, p in decoder.named_parameters()}
    enc["mu.weight"] = math.sqrt(beta) * enc["mu.weight"]
    enc["mu.bias"] = math.sqrt(beta) * enc["mu.bias"]
    enc["logvar.bias"] = enc["logvar.bias"] + math.log(beta)
    dec["0.0.weight"] = dec["0.0.weight"] / math.sqrt(beta)  # first nn.Linear of mlp_decoder
    return enc, dec


def _cor2_objectives(encoder, decoder, x, eps, beta):
    """(E L_β, E L_{H,β}) as functions of (encoder, decoder) parameter dicts, same noise ``eps``."""

    def forward(enc, dec):
        mu, logvar = functional_call(encoder, enc, (x,))
        z = mu + torch.exp(0.5 * logvar) * eps
        return mu, logvar, gaussian_log_likelihood(x, functional_call(decoder, dec, (z,)))

    def beta_objective(enc, dec):
        mu, logvar, rec = forward(enc, dec)
        return (rec - beta * kl_diag_normal(mu, logvar)).mean()

    def regularised_objective(enc, dec):
        mu, logvar, rec = forward(enc, dec)
        return entropy_regularised_elbo(rec - kl_diag_normal(mu, logvar), logvar, beta).mean()

    return beta_objective, regularised_objective


@pytest.mark.parametrize("beta", [0.3, 4.0])
def test_corollary2_rescale_networks_is_t_beta(gen, beta):
    # T_β of Corollary 1 / Corollary 2 on networks: the encoder' outputs are rescale_encoder's
    # (√β μ, log S + log β), the decoder' is z ↦ g(z / √β), and the parameters are T_β's.
    encoder, decoder, x, _ = _cor2_networks(gen)
    before = {
        k: v.clone() for k, v in (*encoder.state_dict().items(), *decoder.state_dict().items())
    }
    encoder_r, decoder_r = rescale_networks(encoder, decoder, beta)
    enc, dec = _t_beta_by_hand(encoder, decoder, beta)
    for got, expected in ((encoder_r, enc), (decoder_r, dec)):
        for name, p in got.named_parameters():
            torch.testing.assert_close(p.detach(), expected[name], rtol=1e-15, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(encoder_r(x), rescale_encoder(*encoder(x), beta))
        z = randn(gen, 8, 2)
        torch.testing.assert_close(decoder_r(math.sqrt(beta) * z), decoder(z))
    after = {k: v for k, v in (*encoder.state_dict().items(), *decoder.state_dict().items())}
    assert all(torch.equal(before[k], after[k]) for k in before)  # the inputs are not modified


@pytest.mark.parametrize("beta", [0.3, 4.0])
def test_rescale_jacobian_is_the_derivative_of_rescale_networks(gen, beta):
    # T_β is affine: moving one parameter tensor by δ moves its image by J δ and nothing else
    encoder, decoder, _, _ = _cor2_networks(gen)
    factors = rescale_jacobian(encoder, decoder, beta)
    base = rescale_networks(encoder, decoder, beta)
    for k, network in enumerate((encoder, decoder)):
        for name, p in network.named_parameters():
            delta = randn(gen, *p.shape)
            with torch.no_grad():
                p.add_(delta)
            moved = rescale_networks(encoder, decoder, beta)
            with torch.no_grad():
                p.sub_(delta)
            for j in range(2):
                for other, q in moved[j].named_parameters():
                    change = q.detach() - dict(base[j].named_parameters())[other].detach()
                    expected = factors[k][name] * delta if (j, other) == (k, name) else 0 * q
                    torch.testing.assert_close(change, expected, rtol=1e-12, atol=1e-12)


def test_rescale_jacobian_rejects_networks_without_the_layers_it_rescales(gen):
    encoder, decoder, _, _ = _cor2_networks(gen)
    with pytest.raises(TypeError, match=r"^encoder must have linear heads"):
        rescale_jacobian(decoder, decoder, 2.0)
    with pytest.raises(TypeError, match=r"^decoder must contain an nn\.Linear"):
        rescale_jacobian(encoder, torch.nn.Tanh(), 2.0)
    with pytest.raises(ValueError, match=r"^beta must be > 0"):
        rescale_jacobian(encoder, decoder, 0.0)


def _gradients(value, params):
    """``{name: ∂value/∂param}`` for a dict of parameter tensors."""
    grads = torch.autograd.grad(value, list(params.values()))
    return dict(zip(params, grads, strict=True))


@pytest.mark.parametrize("beta", [0.25, 2.0, 8.0])
def test_corollary2_stationary_points_correspond(gen, beta):
    # Mathieu et al., Corollary 2: E L_β = L_{H,β} ∘ T_β + c (Cor. 1), T_β affine with constant
    # diagonal Jacobian J, so ∇E L_β(θ) = J ∇L_{H,β}(T_β θ) exactly (chain rule); J is invertible,
    # so one gradient vanishes iff the other does. Same noise on both sides: float64 round-off.
    encoder, decoder, x, eps = _cor2_networks(gen)
    beta_objective, regularised_objective = _cor2_objectives(encoder, decoder, x, eps, beta)
    enc = {name: p.detach().clone().requires_grad_() for name, p in encoder.named_parameters()}
    dec = {name: p.detach().clone().requires_grad_() for name, p in decoder.named_parameters()}
    enc_r, dec_r = (
        {name: p.requires_grad_() for name, p in part.items()}
        for part in _t_beta_by_hand(encoder, decoder, beta)
    )
    lhs = beta_objective(enc, dec)
    rhs = regularised_objective(enc_r, dec_r)
    assert abs(lhs.item() - rhs.item() - corollary1_constant(2, beta)) < 1e-10  # Cor. 1
    g, g_r = _gradients(lhs, {**enc, **dec}), _gradients(rhs, {**enc_r, **dec_r})  # names differ
    # ∂T_β/∂θ, per parameter tensor (checked against finite differences of T_β below)
    encoder_factors, decoder_factors = rescale_jacobian(encoder, decoder, beta)
    jacobian = {**encoder_factors, **decoder_factors}  # the two networks' names do not clash
    assert len(jacobian) == len(g)
    scale = max(v.abs().max().item() for v in g.values())
    for name in g:
        transformed = jacobian[name] * g_r[name]
        assert (g[name] - transformed).abs().max().item() < 1e-12 * scale, name
    # negative control: without J the mean-head gradients differ (β ≠ 1), so the test can fail
    assert (g["mu.weight"] - g_r["mu.weight"]).abs().max().item() > 1e-3 * scale
    # one vanishes iff the other does: min(J) |∇L_H| <= |∇L_β| <= max(J) |∇L_H|
    norm = torch.cat([v.flatten() for v in g.values()]).norm().item()
    norm_r = torch.cat([v.flatten() for v in g_r.values()]).norm().item()
    low, high = min(math.sqrt(beta), 1 / math.sqrt(beta)), max(math.sqrt(beta), 1 / math.sqrt(beta))
    assert low * norm_r * (1 - 1e-12) <= norm <= high * norm_r * (1 + 1e-12)


# --- Theorem 2: rotations ------------------------------------------------------------------


def test_random_rotation_is_a_rotation(gen):
    R = random_rotation(4, gen)
    torch.testing.assert_close(R @ R.T, torch.eye(4, dtype=F64), rtol=0, atol=1e-12)
    assert abs(torch.linalg.det(R).item() - 1) < 1e-12


def _rotation_setting(gen, make_spd, d=3, n=4, n_mc=4000):
    mu, cov = randn(gen, n, d), make_spd(d, n) / 3
    R = random_rotation(d, gen)
    mu_r, cov_r = rotate_encoder(mu, cov, R)
    chol = torch.linalg.cholesky(cov)
    eps = randn(gen, n_mc, n, d)
    z = mu + (chol @ eps.unsqueeze(-1)).squeeze(-1)
    z_r = mu_r + ((R @ chol) @ eps.unsqueeze(-1)).squeeze(-1)  # = R z: common noise
    return mu, cov, mu_r, cov_r, R, z, z_r


def test_theorem2_rotation_leaves_the_objective_unchanged_for_isotropic_prior(gen, make_spd):
    mu, cov, mu_r, cov_r, R, z, z_r = _rotation_setting(gen, make_spd)
    torch.testing.assert_close(z_r, z @ R.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_normal(z_r, mu_r, cov_r), log_normal(z, mu, cov))
    decode, x = tanh_decoder(gen, 3), randn(gen, 4, 5)
    rec = (
        gaussian_log_likelihood(x.expand(4000, 4, 5).reshape(-1, 5), decode(z).reshape(-1, 5))
        .reshape(4000, 4)
        .mean(0)
    )
    rec_r = (
        gaussian_log_likelihood(x.expand(4000, 4, 5).reshape(-1, 5), decode(z_r @ R).reshape(-1, 5))
        .reshape(4000, 4)
        .mean(0)
    )
    torch.testing.assert_close(rec_r, rec, rtol=1e-12, atol=1e-10)
    prior = isotropic_gaussian(3, 0.7)
    beta = 3.0
    obj = rec - beta * kl_full_to_prior(mu, cov, prior)
    obj_r = rec_r - beta * kl_full_to_prior(mu_r, cov_r, prior)
    torch.testing.assert_close(obj_r, obj, rtol=1e-12, atol=1e-10)
    mc, mc_r = kl_full_to_prior(mu, cov, prior, z=z), kl_full_to_prior(mu_r, cov_r, prior, z=z_r)
    torch.testing.assert_close(mc_r, mc, rtol=1e-12, atol=1e-10)


def test_theorem2_fails_for_anisotropic_and_student_t_priors(gen, make_spd):
    mu, cov, mu_r, cov_r, _, z, z_r = _rotation_setting(gen, make_spd)
    aniso = anisotropic_gaussian(torch.tensor([0.2, 1.0, 5.0]))
    change = kl_full_to_prior(mu_r, cov_r, aniso) - kl_full_to_prior(mu, cov, aniso)
    assert change.abs().min().item() > 1e-2
    prior = student_t(3, 2.0)
    diff = prior.log_prob(z) - prior.log_prob(z_r)  # (S, n): paired KL difference per sample
    change = kl_full_to_prior(mu_r, cov_r, prior, z=z_r) - kl_full_to_prior(mu, cov, prior, z=z)
    torch.testing.assert_close(change, diff.mean(0), rtol=1e-10, atol=1e-10)
    se = diff.std(0) / math.sqrt(diff.shape[0])
    assert bool((change.abs() > 5 * se).any()), (change, se)


# --- bad input -----------------------------------------------------------------------------


def _bad_calls():
    mu, lv = torch.zeros(4, 2), torch.zeros(4, 2)
    p = isotropic_gaussian(2)
    return [
        (lambda: theorem1_terms(mu, lv, student_t(2, 3.0), 2.0, torch.zeros(4)), ValueError, "z"),
        (lambda: theorem1_terms(mu, lv, p, 2.0, torch.zeros(3)), ValueError, "log_lik"),
        (
            lambda: theorem1_terms(mu, lv, isotropic_gaussian(3), 2.0, torch.zeros(4)),
            ValueError,
            "mu",
        ),
        (lambda: rescale_encoder(mu, torch.zeros(4, 3), 2.0), ValueError, "logvar"),
        (lambda: rescale_encoder(mu, lv, 0.0), ValueError, "beta"),
        (lambda: corollary1_constant(2, 1.0, variance=0.0), ValueError, "variance"),
        (lambda: rotate_encoder(mu, torch.eye(2), 2 * torch.eye(2)), ValueError, "R"),
        (lambda: rotate_encoder(mu, torch.eye(3), torch.eye(2)), ValueError, "cov"),
        (
            lambda: theorem1_terms(mu, lv * float("nan"), p, 2.0, torch.zeros(4)),
            ValueError,
            "logvar",
        ),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_bad_input_names_the_argument(index):
    call, error, name = _bad_calls()[index]
    with pytest.raises(error, match=rf"\b{name}\b"):
        call()


def _messages():
    """``(call, error, anchored start of the message)``: each error names its argument."""
    mu, lv, nan = torch.zeros(4, 2, dtype=F64), torch.zeros(4, 2, dtype=F64), float("nan")
    p = isotropic_gaussian(2)
    normal = torch.distributions.Independent(Normal(torch.zeros(2, dtype=F64), 1.0), 1)

    def mc(beta=2.0, log_lik=(0.0,) * 4, annealed=normal, n_samples=10, prior=p, **kw):
        return theorem1_monte_carlo(mu, lv, prior, beta, log_lik, annealed, n_samples, **kw)

    enc, dec = mlp_encoder((5,), [6], 2, "tanh"), mlp_decoder(2, [6], (5,), "tanh")
    half = torch.nn.Module()  # a linear mean head but no linear log-variance head
    half.mu, half.logvar = torch.nn.Linear(5, 2), torch.nn.Tanh()
    rot = torch.eye(2, dtype=F64)
    return [
        (lambda: theorem1_terms(mu, lv, p, 0.0, torch.zeros(4)), ValueError, r"beta must be > 0"),
        (lambda: mc(beta=-1.0), ValueError, r"beta must be > 0"),
        (lambda: mc(log_lik=torch.zeros(3)), ValueError, r"log_lik must have shape \(4,\), got"),
        (lambda: mc(log_lik=[nan] * 4), ValueError, r"log_lik must be finite"),
        (lambda: mc(annealed="t"), TypeError, r"annealed must be a torch\.distributions\.Dis"),
        (lambda: mc(annealed="t"), TypeError, r".*, got str$"),
        (lambda: mc(n_samples=0), ValueError, r"n_samples must be > 0"),
        (lambda: mc(n_samples=1), ValueError, r"n_samples must be >= 2, got 1$"),
        (
            lambda: mc(prior=spike_and_slab(2, 0.5), method="closed_form"),
            ValueError,
            r"method='closed_form' is not available",
        ),
        (lambda: corollary1_constant(0, 2.0), ValueError, r"d must be > 0"),
        (lambda: corollary1_constant(2, 0.0), ValueError, r"beta must be > 0"),
        (lambda: entropy_regularised_elbo(0.0, lv, 0.0), ValueError, r"beta must be > 0"),
        (lambda: entropy_regularised_elbo(0.0, lv * nan, 2.0), ValueError, r"logvar must be fin"),
        (lambda: entropy_regularised_elbo([nan] * 4, lv, 2.0), ValueError, r"elbo must be finite"),
        (
            lambda: entropy_regularised_elbo(0.0, torch.tensor(0.0), 2.0),
            ValueError,
            r"logvar must have a last \(event\) dimension$",
        ),
        (lambda: random_rotation(0), ValueError, r"d must be > 0"),
        (lambda: random_rotation(2, 7), TypeError, r"generator must be a torch\.Generator, got in"),
        (lambda: rescale_encoder(mu, torch.zeros(4, 3), 2.0), ValueError, r"mu and logvar must"),
        (lambda: rescale_encoder(mu * nan, lv, 2.0), ValueError, r"mu must be finite"),
        (lambda: rescale_encoder(mu, lv * nan, 2.0), ValueError, r"logvar must be finite"),
        (lambda: rescale_networks(enc, dec, 0.0), ValueError, r"beta must be > 0"),
        (
            lambda: rescale_networks(half, dec, 2.0),
            TypeError,
            r"encoder must have linear heads `mu` and `logvar` \(a GaussianEncoder\)$",
        ),
        (
            lambda: rescale_networks(enc, torch.nn.Tanh(), 2.0),
            TypeError,
            r"decoder must contain an nn\.Linear acting on z$",
        ),
        (lambda: rotate_encoder(mu * nan, torch.eye(2), rot), ValueError, r"mu must be finite"),
        (lambda: rotate_encoder(mu, torch.eye(2) * nan, rot), ValueError, r"cov must be finite"),
        (lambda: rotate_encoder(mu, torch.eye(2), rot * nan), ValueError, r"R must be finite"),
        (
            lambda: rotate_encoder(torch.tensor(0.0), torch.eye(2), rot),
            ValueError,
            r"mu must have a last \(event\) dimension$",
        ),
        (
            lambda: rotate_encoder(mu, torch.eye(2), torch.eye(3)),
            ValueError,
            r"R must be \(2, 2\) to match mu, got \(3, 3\)$",
        ),
        (
            lambda: rotate_encoder(mu, torch.eye(2), 2 * rot),
            ValueError,
            r"R must be orthogonal \(R R\^T = I\)$",
        ),
    ]


@pytest.mark.parametrize("index", range(len(_messages())))
def test_error_messages_start_with_the_argument(index):
    call, error, start = _messages()[index]
    with pytest.raises(error, match=rf"^{start}"):
        call()


def test_theorem1_terms_keeps_float32():
    prior = anisotropic_gaussian(torch.tensor([0.2, 1.0], dtype=F64))  # float64 variances
    zeros = torch.zeros(3, 2, dtype=torch.float32)
    terms = theorem1_terms(zeros, zeros, prior, 2.0, torch.zeros(3, dtype=torch.float32))
    assert terms.beta_objective.dtype == terms.annealed_elbo.dtype == torch.float32


def test_theorem1_monte_carlo_is_reproducible_and_per_example(gen):
    mu, logvar, log_lik = randn(gen, 3, 2), randn(gen, 3, 2) - 1, randn(gen, 3)
    prior = isotropic_gaussian(2)
    annealed = torch.distributions.Independent(
        Normal(torch.zeros(2, dtype=F64), math.sqrt(1 / 2.0)), 1
    )

    def run(seed, n_samples=200):
        g = torch.Generator().manual_seed(seed)
        return theorem1_monte_carlo(mu, logvar, prior, 2.0, log_lik, annealed, n_samples, g)

    first, again = run(0), run(0)
    for got, expected in zip(first, again, strict=True):
        assert got.shape == (3,)
        assert torch.equal(got, expected)  # same generator seed: same draws on both sides
    assert not torch.equal(run(1).lhs, first.lhs) and not torch.equal(run(1).rhs, first.rhs)
    small = run(0, n_samples=2)  # two draws per side are enough for a standard error
    assert bool(torch.isfinite(small.gap_se).all())
    # the method is used: closed form and quadrature of log F_β agree to ~1e-11, not exactly
    closed = theorem1_monte_carlo(
        mu,
        logvar,
        prior,
        2.0,
        log_lik,
        annealed,
        200,
        torch.Generator().manual_seed(0),
        method="closed_form",
    )
    torch.testing.assert_close(closed.rhs, first.rhs, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match=r"^method must be one of"):
        theorem1_monte_carlo(mu, logvar, prior, 2.0, log_lik, annealed, 200, method="bogus")


def test_argument_conversion_uses_the_dtype_of_the_tensors(gen):
    """Lists and numbers are converted at the dtype of the tensor arguments (float64 here),
    not at the default float32: a list [0.1] must give exactly the float64 result."""
    mu, logvar = randn(gen, 4, 2), randn(gen, 4, 2)
    lv_list = logvar.tolist()
    _, lv2 = rescale_encoder(mu, lv_list, 2.0)
    assert lv2.dtype == F64 and torch.equal(lv2, logvar + math.log(2.0))
    elbo = [0.1, 0.2, 0.3, 0.4]
    got = entropy_regularised_elbo(elbo, logvar, 3.0)
    assert got.dtype == F64
    assert torch.equal(got, torch.tensor(elbo, dtype=F64) + logvar.sum(-1))
    prior = isotropic_gaussian(2)
    log_lik = [0.1, 0.2, 0.3, 0.4]
    terms = theorem1_terms(mu, logvar, prior, 1.0, log_lik)  # β = 1: KL(q||p) = KL(q||f_1)
    expected = torch.tensor(log_lik, dtype=F64) - kl_diag_normal(mu, logvar)
    torch.testing.assert_close(terms.beta_objective, expected, rtol=0, atol=1e-15)
    R = random_rotation(2, gen)
    mu_r, cov_r = rotate_encoder(mu, torch.eye(2).tolist(), R.tolist())
    assert mu_r.dtype == cov_r.dtype == F64
    torch.testing.assert_close(mu_r, mu @ R.T, rtol=0, atol=1e-15)
    torch.testing.assert_close(cov_r, torch.eye(2, dtype=F64), rtol=0, atol=1e-15)


def test_single_encoders_without_a_batch_dimension(gen):
    """``(d,)`` inputs are one encoder (the documented ``(..., d)``), batches ``(m, n, d)``."""
    mu, logvar = randn(gen, 3), randn(gen, 3)
    mu2, logvar2 = rescale_encoder(mu, logvar, 4.0)
    torch.testing.assert_close(mu2, 2 * mu, rtol=1e-15, atol=0)
    torch.testing.assert_close(logvar2, logvar + math.log(4.0), rtol=1e-15, atol=0)
    got = entropy_regularised_elbo(0.5, logvar, 3.0)
    assert got.shape == () and abs(got.item() - (0.5 + logvar.sum().item())) < 1e-12
    batch = randn(gen, 2, 4, 3)
    got = entropy_regularised_elbo(torch.zeros(2, 4, dtype=F64), batch, 3.0)
    torch.testing.assert_close(got, batch.sum(-1), rtol=1e-15, atol=0)
    R = random_rotation(3, gen)
    mu_r, cov_r = rotate_encoder(mu, torch.diag(logvar.exp()), R)
    torch.testing.assert_close(mu_r, R @ mu, rtol=0, atol=1e-14)
    torch.testing.assert_close(cov_r, R @ torch.diag(logvar.exp()) @ R.T, rtol=0, atol=1e-14)


def test_random_rotation_over_many_seeds_without_and_with_a_generator():
    """Every draw is a rotation (det +1: the reflection branch is taken about half the time),
    a seeded generator makes it reproducible, and ``dtype`` is honoured."""
    dets = []
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))
        dets.append(torch.linalg.det(q * torch.sign(torch.diagonal(r))).item())  # before the flip
        R = random_rotation(3, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=F64), rtol=0, atol=1e-12)
        assert abs(torch.linalg.det(R).item() - 1) < 1e-12
        assert torch.equal(R, random_rotation(3, torch.Generator().manual_seed(seed)))
    assert min(dets) < 0 < max(dets)  # both branches are exercised
    R = random_rotation(4)  # no generator: the global one
    torch.testing.assert_close(R @ R.T, torch.eye(4, dtype=F64), rtol=0, atol=1e-12)
    R32 = random_rotation(5, torch.Generator().manual_seed(0), dtype=torch.float32)
    assert R32.dtype == torch.float32


def test_rotate_encoder_orthogonality_tolerance_is_ten_root_eps(gen):
    """``R`` is accepted when ``R R^T = I`` to ``10 sqrt(eps)`` of its dtype: a float32 rotation
    (error ~1e-7) passes, a float64 shear of 1.05 times the tolerance does not."""
    R32 = random_rotation(8, gen, dtype=torch.float32)
    mu = torch.zeros(2, 8, dtype=torch.float32)
    mu_r, _ = rotate_encoder(mu, torch.eye(8), R32)
    assert mu_r.dtype == torch.float32
    tol = 10 * math.sqrt(torch.finfo(F64).eps)
    mu, cov = torch.zeros(2, 2, dtype=F64), torch.eye(2, dtype=F64)
    rotate_encoder(mu, cov, torch.tensor([[1.0, 0.95 * tol], [0.0, 1.0]], dtype=F64))
    with pytest.raises(ValueError, match=r"^R must be orthogonal"):
        rotate_encoder(mu, cov, torch.tensor([[1.0, 1.05 * tol], [0.0, 1.0]], dtype=F64))
