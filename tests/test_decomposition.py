"""Tests of vaebook.decomposition (Mathieu et al., 2019) against scipy, closed forms,
brute force and Monte Carlo references."""

import math

import numpy as np
import pytest
import torch
from helpers import randn
from scipy import stats
from torch.distributions import Normal, kl_divergence
from torch.func import functional_call

from vaebook.decomposition import (
    MMD_SCALES,
    SpikeAndSlabPrior,
    StructuredVAE,
    StudentTPrior,
    aggregate_entropy_reference,
    anisotropic_gaussian,
    annealed_log_normaliser,
    annealed_log_prob,
    corollary1_constant,
    decomposition_objective,
    entropy_regularised_elbo,
    gaussian_mixture_2d,
    inclusive_kl_aggregate,
    isotropic_gaussian,
    kl_full_to_prior,
    kl_to_prior,
    log_aggregate_posterior,
    minibatch_log_aggregate_density,
    minibatch_weighted_entropy,
    mmd_imq,
    pca_variances,
    random_rotation,
    rescale_encoder,
    rescale_networks,
    rotate_encoder,
    spike_and_slab,
    student_t,
    theorem1_monte_carlo,
    theorem1_terms,
)
from vaebook.ensemble import EnsembleVAE
from vaebook.gaussian import (
    entropy_diag_normal,
    kl_diag_normal,
    log_normal,
    log_normal_diag,
    sample_diag_normal,
)
from vaebook.nets import VAE, mlp_decoder, mlp_encoder, seeded
from vaebook.objectives import ELBOTerms, gaussian_log_likelihood, reconstruction_log_likelihood
from vaebook.train import fit

F64 = torch.float64


def assert_within_5_se(samples: torch.Tensor, expected) -> None:
    """Mean over the first axis of ``samples`` agrees with ``expected`` to 5 standard errors."""
    se = samples.std(0) / math.sqrt(samples.shape[0])
    expected = torch.as_tensor(expected, dtype=samples.dtype)
    assert bool(((samples.mean(0) - expected).abs() < 5 * se).all()), (samples.mean(0), expected)


def tanh_decoder(gen, d, p=5):
    """A small fixed decoder ``z ↦ tanh(z W + b) V``: ``(..., d) -> (..., p)``."""
    w, b, v = randn(gen, d, 8), randn(gen, 8), randn(gen, 8, p)
    return lambda z: torch.tanh(z @ w + b) @ v


# --- priors: densities ---------------------------------------------------------------------


def test_gaussian_priors_log_prob_match_scipy_norm(gen):
    z = 2 * randn(gen, 6, 3)
    variances = np.array([0.3, 1.0, 4.0])
    for prior, var in (
        (isotropic_gaussian(3, 2.0), np.full(3, 2.0)),
        (anisotropic_gaussian(torch.tensor(variances)), variances),
    ):
        expected = stats.norm.logpdf(z.numpy(), scale=np.sqrt(var)).sum(-1)
        np.testing.assert_allclose(prior.log_prob(z).numpy(), expected, rtol=1e-12)


def test_student_t_log_prob_matches_scipy_t(gen):
    z = 3 * randn(gen, 6, 4)
    for nu in (0.7, 3.0, 30.0):
        expected = stats.t.logpdf(z.numpy(), df=nu).sum(-1)
        np.testing.assert_allclose(student_t(4, nu).log_prob(z).numpy(), expected, rtol=1e-12)


def test_gaussian_mixture_log_prob_matches_eq_9(gen):
    z = randn(gen, 7, 2)
    means = [(0, 1), (0, -1), (1, 0), (-1, 0)]
    dens = sum(0.25 * stats.multivariate_normal(m, 0.03 * np.eye(2)).pdf(z.numpy()) for m in means)
    np.testing.assert_allclose(gaussian_mixture_2d().log_prob(z).numpy(), np.log(dens), rtol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.9, 1.0])
def test_spike_and_slab_log_prob_matches_formula(gen, gamma):
    z = randn(gen, 6, 3)
    zn = z.numpy()
    with np.errstate(divide="ignore"):  # log 0 = -inf for the absent component at γ = 0, 1
        spike = np.log(gamma) + stats.norm.logpdf(zn, scale=0.05)
        slab = np.log(1 - gamma) + stats.norm.logpdf(zn)
    expected = np.logaddexp(spike, slab).sum(-1)
    got = spike_and_slab(3, gamma).log_prob(z).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_log_prob_keeps_batch_shape_and_dtype(gen):
    z = torch.randn(4, 5, 3, generator=gen)  # float32
    for prior in (isotropic_gaussian(3), student_t(3, 4.0), spike_and_slab(3, 0.5)):
        out = prior.log_prob(z)
        assert out.shape == (4, 5) and out.dtype == torch.float32
    assert gaussian_mixture_2d().log_prob(z[..., :2]).shape == (4, 5)


# --- priors: sampling ----------------------------------------------------------------------


SAMPLE_CASES = [
    (isotropic_gaussian(2, 0.5), torch.diag(torch.tensor([0.5, 0.5]))),
    (anisotropic_gaussian(torch.tensor([0.2, 3.0])), torch.diag(torch.tensor([0.2, 3.0]))),
    (student_t(2, 6.0), 1.5 * torch.eye(2)),  # var = ν/(ν-2)
    (gaussian_mixture_2d(), 0.53 * torch.eye(2)),  # 0.03 I + E[μμ^T] = (0.03 + 0.5) I
    (spike_and_slab(2, 0.7), (0.7 * 0.05**2 + 0.3) * torch.eye(2)),
]


@pytest.mark.parametrize(("prior", "cov"), SAMPLE_CASES, ids=lambda x: repr(x)[:20])
def test_sample_moments(gen, prior, cov):
    z = prior.sample(40_000, gen, dtype=F64)
    assert z.shape == (40_000, 2) and z.dtype == F64
    assert_within_5_se(z, torch.zeros(2))
    products = z.unsqueeze(-1) * z.unsqueeze(-2)
    assert_within_5_se(products, cov.to(F64))


def test_student_t_and_spike_and_slab_samples_pass_ks_tests(gen):
    t = student_t(3, 2.5).sample(20_000, gen, dtype=F64).flatten().numpy()
    assert stats.kstest(t, stats.t(df=2.5).cdf).pvalue > 1e-3
    s = spike_and_slab(3, 0.6, 0.1).sample(20_000, gen, dtype=F64).flatten().numpy()

    def cdf(x):
        return 0.6 * stats.norm.cdf(x, scale=0.1) + 0.4 * stats.norm.cdf(x)

    assert stats.kstest(s, cdf).pvalue > 1e-3
    assert stats.kstest(s, stats.norm.cdf).pvalue < 1e-6  # the test can tell a wrong law


def test_sampling_is_reproducible_with_a_generator():
    for prior in (student_t(3, 4.0), gaussian_mixture_2d(), spike_and_slab(3, 0.5)):
        a = prior.sample(50, torch.Generator().manual_seed(3))
        b = prior.sample(50, torch.Generator().manual_seed(3))
        assert torch.equal(a, b) and a.dtype == torch.get_default_dtype()


def test_pca_variances_are_rescaled_top_eigenvalues(gen):
    x = randn(gen, 5000, 4) * torch.tensor([3.0, 0.5, 2.0, 1.0], dtype=F64)
    v = pca_variances(x, 3)
    eig = np.sort(np.linalg.eigvalsh(np.cov(x.numpy().T)))[::-1][:3]
    np.testing.assert_allclose(v.numpy(), 3 * eig / eig.sum(), rtol=1e-10)
    assert abs(v.sum().item() - 3) < 1e-12 and bool((v[:-1] >= v[1:]).all())
    assert anisotropic_gaussian(v).dim == 3


# --- Theorem 1: annealed prior -------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 4.0])
def test_annealed_log_normaliser_closed_forms_match_quadrature(beta):
    for prior in (
        anisotropic_gaussian(torch.tensor([0.3, 1.0, 2.5], dtype=F64)),
        student_t(2, 3.0),
        student_t(2, 1.5),
    ):
        closed = annealed_log_normaliser(prior, beta, method="closed_form")
        quad = annealed_log_normaliser(prior, beta, method="quadrature")
        assert abs(closed - quad) < 1e-9, (prior, closed, quad)
    if beta == 1.0:
        for prior in (spike_and_slab(2, 0.9), gaussian_mixture_2d()):
            assert abs(annealed_log_normaliser(prior, beta)) < 1e-10


def test_gaussian_annealed_normaliser_formula():
    var = torch.tensor([0.3, 1.0, 2.5], dtype=F64)
    beta = 2.7
    expected = sum((1 - beta) / 2 * math.log(2 * math.pi * v) for v in var.tolist())
    expected -= 1.5 * math.log(beta)
    assert abs(annealed_log_normaliser(anisotropic_gaussian(var), beta) - expected) < 1e-12


def test_mixture_normalisers_at_beta_2_match_gaussian_product_integrals():
    # ∫ p² = Σ_ab w_a w_b N(m_a; m_b, (s_a² + s_b²) I): closed form for any Gaussian mixture.
    gamma, s0 = 0.8, 0.05
    w, s2 = [gamma, 1 - gamma], [s0**2, 1.0]
    per = sum(
        w[a] * w[b] * stats.norm.pdf(0, scale=math.sqrt(s2[a] + s2[b]))
        for a in range(2)
        for b in range(2)
    )
    got = annealed_log_normaliser(spike_and_slab(3, gamma, s0), 2.0)
    assert abs(got - 3 * math.log(per)) < 1e-10
    means = gaussian_mixture_2d().means.numpy()
    f2 = sum(
        stats.multivariate_normal(ma, 0.06 * np.eye(2)).pdf(mb) / 16 for ma in means for mb in means
    )
    assert abs(annealed_log_normaliser(gaussian_mixture_2d(), 2.0) - math.log(f2)) < 1e-10


@pytest.mark.parametrize(
    ("prior", "beta"),
    [
        (isotropic_gaussian(1, 2.0), 0.5),
        (isotropic_gaussian(1, 2.0), 3.0),
        (student_t(1, 4.0), 1.5),  # tails |t|^{-7.5}: the grid's cut-off costs < 1e-12
        (student_t(1, 4.0), 3.0),
        (spike_and_slab(1, 0.9), 0.5),
        (spike_and_slab(1, 0.9), 3.0),
    ],
    ids=repr,
)
def test_annealed_prior_integrates_to_one(prior, beta):
    t = torch.linspace(-150, 150, 600_001, dtype=F64).unsqueeze(-1)  # step 5e-4
    dens = torch.exp(annealed_log_prob(prior, beta, t))
    assert abs(torch.trapezoid(dens, t.squeeze(-1)).item() - 1) < 1e-6


def test_gaussian_annealed_prior_is_a_gaussian_with_variance_over_beta(gen):
    var = torch.tensor([0.5, 2.0], dtype=F64)
    z, beta = randn(gen, 5, 2), 3.0
    expected = log_normal_diag(z, 0.0, torch.log(var / beta))
    got = annealed_log_prob(anisotropic_gaussian(var), beta, z)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


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
    # ∂T_β/∂θ, per parameter tensor (encoder names as they are; decoder's first weight)
    jacobian = {"mu.weight": math.sqrt(beta), "mu.bias": math.sqrt(beta)}
    jacobian["0.0.weight"] = 1 / math.sqrt(beta)
    scale = max(v.abs().max().item() for v in g.values())
    for name in g:
        transformed = jacobian.get(name, 1.0) * g_r[name]
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


# --- KL(q(z|x) || p(z)) --------------------------------------------------------------------


def test_kl_to_prior_analytic_matches_torch_and_mc(gen):
    var = torch.tensor([0.5, 2.0], dtype=F64)
    mu, logvar = randn(gen, 3, 2), randn(gen, 3, 2)
    prior = anisotropic_gaussian(var)
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, var.sqrt())).sum(-1)
    analytic = kl_to_prior(mu, logvar, prior)
    torch.testing.assert_close(analytic, expected, rtol=1e-12, atol=1e-12)
    z = mu + torch.exp(0.5 * logvar) * randn(gen, 20_000, 3, 2)
    per_sample = -entropy_diag_normal(logvar) - prior.log_prob(z)
    torch.testing.assert_close(kl_to_prior(mu, logvar, prior, z=z, method="mc"), per_sample.mean(0))
    assert_within_5_se(per_sample, analytic)
    full = kl_full_to_prior(mu, torch.diag_embed(logvar.exp()), prior)
    torch.testing.assert_close(full, analytic, rtol=1e-12, atol=1e-12)


# --- divergences ---------------------------------------------------------------------------


def test_mmd_imq_matches_brute_force(gen):
    x, y = randn(gen, 5, 3), randn(gen, 4, 3) + 0.5
    scales = (0.5, 2.0)

    def k(a, b):
        return sum(6 * s / (6 * s + ((a - b) ** 2).sum().item()) for s in scales)

    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(4)) / 20
    assert abs(mmd_imq(x, y, scales=scales).item() - (xx + yy - 2 * xy)) < 1e-12
    assert len(MMD_SCALES) == 7


def test_mmd_is_unbiased_zero_for_equal_laws_and_positive_for_shifted(gen):
    same, shifted = [], []
    for _ in range(200):
        x, y = randn(gen, 40, 2), randn(gen, 40, 2)
        same.append(mmd_imq(x, y).item())
        shifted.append(mmd_imq(x, y + torch.tensor([1.0, 0.0], dtype=F64)).item())
    same, shifted = torch.tensor(same), torch.tensor(shifted)
    se = same.std() / math.sqrt(200)
    assert abs(same.mean().item()) < 4 * se.item()
    assert bool((same < 0).any())  # a U-statistic, not clipped at zero
    assert shifted.mean().item() > 20 * (shifted.std() / math.sqrt(200)).item()
    assert shifted.mean().item() > 5 * same.std().item()


def test_inclusive_kl_is_zero_when_the_aggregate_posterior_is_the_prior(gen):
    prior = gaussian_mixture_2d()
    mu = prior.means.clone()
    logvar = torch.full((4, 2), math.log(0.03), dtype=F64)
    zp = prior.sample(500, gen, dtype=F64)
    assert abs(inclusive_kl_aggregate(zp, mu, logvar, prior).item()) < 1e-12
    assert inclusive_kl_aggregate(zp, 0.8 * mu, logvar, prior).item() > 0.3


def test_inclusive_kl_matches_closed_form_for_a_gaussian(gen):
    prior = isotropic_gaussian(2)
    m, lv = torch.tensor([[0.5, -0.3]], dtype=F64), torch.tensor([[0.4, -0.2]], dtype=F64)
    zp = prior.sample(20_000, gen, dtype=F64)
    per_sample = prior.log_prob(zp) - log_normal_diag(zp, m, lv)
    est = inclusive_kl_aggregate(zp, m, lv, prior)
    torch.testing.assert_close(est, per_sample.mean())
    assert_within_5_se(
        per_sample,
        kl_diag_normal(torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64), m[0], lv[0]),
    )


# --- objective (7) -------------------------------------------------------------------------


def _batch(gen, b=8, d=2):
    mu, logvar, log_lik = randn(gen, b, d), randn(gen, b, d) - 1, randn(gen, b)
    z = mu + torch.exp(0.5 * logvar) * randn(gen, b, d)
    return log_lik, z, mu, logvar


def test_decomposition_objective_reduces_to_beta_vae_at_alpha_zero(gen):
    log_lik, z, mu, logvar = _batch(gen)
    prior = isotropic_gaussian(2)
    terms = decomposition_objective(
        log_lik, z, mu, logvar, prior, alpha=0.0, beta=4.0, generator=gen
    )
    expected = ELBOTerms(log_lik, kl_diag_normal(mu, logvar), 4.0).mean().objective
    torch.testing.assert_close(terms.objective, expected, rtol=1e-12, atol=1e-12)
    assert terms.kl.shape == (8,) and terms.divergence.dim() == 0
    assert set(terms.as_dict()) == {"reconstruction", "kl", "elbo", "divergence", "objective"}
    assert terms.as_dict()["elbo"] == pytest.approx(float((log_lik - terms.kl).mean()))


@pytest.mark.parametrize("divergence", ["kl", "mmd"])
def test_decomposition_objective_adds_alpha_times_the_divergence(gen, divergence):
    log_lik, z, mu, logvar = _batch(gen)
    prior = gaussian_mixture_2d()
    zp = prior.sample(30, gen, dtype=F64)
    kw = dict(alpha=2.5, beta=0.5, divergence=divergence, prior_samples=zp)
    terms = decomposition_objective(log_lik, z, mu, logvar, prior, **kw)
    direct = inclusive_kl_aggregate(zp, mu, logvar, prior) if divergence == "kl" else mmd_imq(z, zp)
    torch.testing.assert_close(terms.divergence, direct, rtol=1e-12, atol=1e-12)
    kl = kl_to_prior(mu, logvar, prior, z=z, method="mc")  # a mixture prior: Monte Carlo KL
    expected = log_lik.mean() - 0.5 * kl.mean() - 2.5 * direct
    torch.testing.assert_close(terms.objective, expected, rtol=1e-12, atol=1e-12)

    def seeded_run():
        return decomposition_objective(
            log_lik,
            z,
            mu,
            logvar,
            prior,
            alpha=1.0,
            beta=1.0,
            divergence=divergence,
            generator=torch.Generator().manual_seed(5),
        )

    assert torch.equal(seeded_run().divergence, seeded_run().divergence)


def test_decomposition_objective_gradients_flow_to_the_encoder(gen):
    log_lik, _, mu, logvar = _batch(gen)
    mu.requires_grad_(True)
    z = mu + torch.exp(0.5 * logvar) * randn(gen, 8, 2)
    terms = decomposition_objective(
        log_lik,
        z,
        mu,
        logvar,
        student_t(2, 3.0),
        alpha=1.0,
        beta=1.0,
        divergence="mmd",
        generator=gen,
    )
    terms.objective.backward()
    assert mu.grad is not None and bool(torch.isfinite(mu.grad).all())
    assert mu.grad.abs().sum().item() > 0


# --- Appendix C: minibatch entropy ---------------------------------------------------------


def _dataset_encoders(gen, n=2000, sigma=0.002):
    mu = randn(gen, n, 1)
    return mu, torch.full((n, 1), 2 * math.log(sigma), dtype=F64)


def test_stratified_estimator_at_full_batch_is_the_exact_mixture_estimate(gen):
    mu, logvar = randn(gen, 50, 2), randn(gen, 50, 2) - 1
    z = mu + torch.exp(0.5 * logvar) * randn(gen, 50, 2)
    log_q = torch.logsumexp(log_normal_diag(z.unsqueeze(1), mu, logvar), 1) - math.log(50)
    strat = minibatch_weighted_entropy(z, mu, logvar, 50)
    torch.testing.assert_close(strat, -log_q.mean(), rtol=1e-12, atol=1e-12)
    mws = minibatch_weighted_entropy(z, mu, logvar, 50, weighting="mws")
    torch.testing.assert_close(mws, strat + math.log(50), rtol=1e-12, atol=1e-12)


def test_stratified_q_hat_is_unbiased_for_the_mixture_density(gen):
    # Over minibatches containing x_0, E[q̂(z_0)] = q(z_0) = (1/N) Σ_m q(z_0|x_m) (eq. 10b).
    n, b, repeats = 12, 4, 5_000
    mu, logvar = randn(gen, n, 2), randn(gen, n, 2)
    z0 = mu[0] + torch.exp(0.5 * logvar[0]) * randn(gen, 2)
    exact = torch.exp(log_normal_diag(z0, mu, logvar)).mean()
    others = 1 + torch.rand(repeats, n - 1, generator=gen).argsort(1)[:, : b - 1]
    idx = torch.cat([torch.zeros(repeats, 1, dtype=torch.long), others], 1)  # (repeats, B)
    q_hat = torch.stack(
        [minibatch_log_aggregate_density(mu[i] * 0 + z0, mu[i], logvar[i], n)[0].exp() for i in idx]
    )  # only z_0 = z[0] matters for q̂(z_0)
    assert_within_5_se(q_hat, exact)
    mws = torch.stack(
        [
            minibatch_log_aggregate_density(mu[i] * 0 + z0, mu[i], logvar[i], n, weighting="mws")[0]
            for i in idx[:2000]
        ]
    ).exp()
    assert mws.mean().item() < 0.5 * exact.item()  # MWS is not an unbiased density estimate


def test_appendix_c_small_batches_estimate_log_n_plus_conditional_entropy(gen):
    n = 2000
    mu, logvar = _dataset_encoders(gen, n)
    sigma = math.exp(0.5 * logvar[0, 0].item())
    reference = aggregate_entropy_reference(mu, logvar, 4000, gen)
    log_n_plus_h = math.log(n) + entropy_diag_normal(logvar).mean().item()

    def mean_estimate(b, repeats=300):
        values = []
        for _ in range(repeats):
            idx = torch.randperm(n, generator=gen)[:b]
            z = mu[idx] + sigma * randn(gen, b, 1)
            values.append(minibatch_weighted_entropy(z, mu[idx], logvar[idx], n).item())
        return torch.tensor(values).mean().item()

    small, medium = mean_estimate(8), mean_estimate(128)
    z_all = mu + sigma * randn(gen, n, 1)
    full = minibatch_weighted_entropy(z_all, mu, logvar, n).item()
    # B ≪ N: close to log N + E H[q(z|x)] (2.81 nats), far above H[q(z)] (≈ 1.19 nats) ...
    assert abs(small - log_n_plus_h) < 0.25, (small, log_n_plus_h)
    assert small - reference.estimate.item() > 1.0
    # ... the bias shrinks as B grows, and at B = N the estimate agrees with the reference.
    assert reference.estimate.item() + 0.2 < medium < small
    assert abs(full - reference.estimate.item()) < 0.06
    assert reference.standard_error.item() < 0.015


# --- bad input -----------------------------------------------------------------------------


def _bad_calls():
    z, mu, lv = torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4, 2)
    p = isotropic_gaussian(2)
    return [
        (lambda: isotropic_gaussian(0), ValueError, "d"),
        (lambda: isotropic_gaussian(2, -1.0), ValueError, "variance"),
        (lambda: anisotropic_gaussian([1.0, 0.0]), ValueError, "variances"),
        (lambda: student_t(2, 0.0), ValueError, "nu"),
        (lambda: spike_and_slab(2, 1.5), ValueError, "gamma"),
        (lambda: spike_and_slab(2, 0.5, sigma0=0.0), ValueError, "sigma0"),
        (lambda: p.log_prob(torch.zeros(4, 3)), ValueError, "z"),
        (lambda: p.sample(0), ValueError, "n"),
        (lambda: p.sample(3, generator=1), TypeError, "generator"),
        (lambda: pca_variances(torch.zeros(10, 3), 2), ValueError, "x"),
        (lambda: pca_variances(torch.randn(10, 3), 4), ValueError, "d"),
        (lambda: annealed_log_normaliser(p, -1.0), ValueError, "beta"),
        (lambda: annealed_log_normaliser(student_t(2, 1.0), 0.4), ValueError, "beta"),
        (lambda: annealed_log_normaliser(p, 1.0, method="exact"), ValueError, "method"),
        (
            lambda: annealed_log_normaliser(spike_and_slab(2, 0.5), 2.0, method="closed_form"),
            ValueError,
            "closed_form",
        ),
        (lambda: annealed_log_normaliser("normal", 1.0), TypeError, "prior"),
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
        (lambda: kl_to_prior(mu, lv, student_t(2, 3.0), method="analytic"), ValueError, "analytic"),
        (lambda: kl_to_prior(mu, lv, p, method="mc"), ValueError, "z"),
        (lambda: kl_to_prior(mu, lv, p, z=torch.zeros(5, 2), method="mc"), ValueError, "z"),
        (lambda: mmd_imq(z, torch.zeros(1, 2)), ValueError, "y"),
        (lambda: mmd_imq(z, torch.zeros(3, 3)), ValueError, "y"),
        (lambda: mmd_imq(z, z, scales=(1.0, -1.0)), ValueError, "scales"),
        (lambda: inclusive_kl_aggregate(torch.zeros(5, 3), mu, lv, p), ValueError, "prior_samples"),
        (
            lambda: decomposition_objective(torch.zeros(4), z, mu, lv, p, alpha=-1, beta=1),
            ValueError,
            "alpha",
        ),
        (
            lambda: decomposition_objective(
                torch.zeros(4), z, mu, lv, p, alpha=1, beta=1, divergence="js"
            ),
            ValueError,
            "divergence",
        ),
        (
            lambda: decomposition_objective(
                torch.zeros(4), z, mu, lv, student_t(2, 3.0), alpha=1, beta=1, kl="analytic"
            ),
            ValueError,
            "kl",
        ),
        (
            lambda: decomposition_objective(torch.zeros(4), z[:3], mu, lv, p, alpha=1, beta=1),
            ValueError,
            "z",
        ),
        (lambda: minibatch_weighted_entropy(z, mu, lv, 3), ValueError, "dataset_size"),
        (lambda: minibatch_weighted_entropy(z, mu, lv, 10, weighting="x"), ValueError, "weighting"),
        (lambda: minibatch_weighted_entropy(z[:1], mu[:1], lv[:1], 10), ValueError, "2"),
        (lambda: aggregate_entropy_reference(mu, lv, 1), ValueError, "n_samples"),
        (
            lambda: theorem1_terms(mu, lv * float("nan"), p, 2.0, torch.zeros(4)),
            ValueError,
            "logvar",
        ),
    ]


# --- ensembles: leading member axes --------------------------------------------------------


def _members(gen, m=3, b=6, d=2):
    """``log_lik (M, B)``, ``z, mu, logvar (M, B, d)`` for ``M`` models of one minibatch."""
    mu, logvar = randn(gen, m, b, d), randn(gen, m, b, d) - 1
    z = mu + torch.exp(0.5 * logvar) * randn(gen, m, b, d)
    return randn(gen, m, b), z, mu, logvar


def test_batched_kl_to_prior_equals_a_loop_over_members(gen):
    _, z, mu, logvar = _members(gen)
    aniso = anisotropic_gaussian(torch.tensor([0.5, 1.5], dtype=F64))
    batched = kl_to_prior(mu, logvar, aniso)
    loop = torch.stack([kl_to_prior(mu[m], logvar[m], aniso) for m in range(3)])
    assert batched.shape == (3, 6)
    torch.testing.assert_close(batched, loop, rtol=1e-12, atol=1e-12)
    prior = student_t(2, 3.0)
    z_many = mu + torch.exp(0.5 * logvar) * randn(gen, 5, 3, 6, 2)  # (S, M, B, d)
    for samples in (z, z_many):
        batched = kl_to_prior(mu, logvar, prior, z=samples, method="mc")
        loop = torch.stack(
            [
                kl_to_prior(mu[m], logvar[m], prior, z=samples[..., m, :, :], method="mc")
                for m in range(3)
            ]
        )
        assert batched.shape == (3, 6)
        torch.testing.assert_close(batched, loop, rtol=1e-12, atol=1e-12)


def test_batched_inclusive_kl_and_mmd_equal_loops_over_members_with_shared_prior_draws(gen):
    _, z, mu, logvar = _members(gen)
    prior = gaussian_mixture_2d()
    zp = prior.sample(40, gen, dtype=F64)
    batched = inclusive_kl_aggregate(zp, mu, logvar, prior)
    loop = torch.stack([inclusive_kl_aggregate(zp, mu[m], logvar[m], prior) for m in range(3)])
    assert batched.shape == (3,)
    torch.testing.assert_close(batched, loop, rtol=1e-12, atol=1e-12)
    assert loop.std().item() > 1e-3  # the members really differ
    y = randn(gen, 7, 2)
    for scales in (MMD_SCALES, (0.5, 3.0)):
        batched = mmd_imq(z, y, scales=scales)
        loop = torch.stack([mmd_imq(z[m], y, scales=scales) for m in range(3)])
        assert batched.shape == (3,)
        torch.testing.assert_close(batched, loop, rtol=1e-12, atol=1e-12)
        assert loop.std().item() > 1e-6


@pytest.mark.parametrize("divergence", ["kl", "mmd"])
def test_batched_decomposition_objective_with_per_member_weights_equals_a_loop(gen, divergence):
    log_lik, z, mu, logvar = _members(gen)
    prior = student_t(2, 4.0)  # Monte Carlo KL through z
    zp = prior.sample(9, gen, dtype=F64)
    alpha = torch.tensor([0.0, 1.5, 3.0], dtype=F64)
    beta = torch.tensor([0.5, 1.0, 4.0], dtype=F64)
    kw = dict(divergence=divergence, prior_samples=zp)
    terms = decomposition_objective(log_lik, z, mu, logvar, prior, alpha=alpha, beta=beta, **kw)
    loop = [
        decomposition_objective(
            log_lik[m],
            z[m],
            mu[m],
            logvar[m],
            prior,
            alpha=alpha[m].item(),
            beta=beta[m].item(),
            **kw,
        )
        for m in range(3)
    ]
    assert terms.reconstruction.shape == terms.kl.shape == (3, 6)
    assert terms.divergence.shape == terms.objective.shape == terms.elbo.shape == (3,)
    for name in ("reconstruction", "kl", "divergence", "objective", "elbo"):
        expected = torch.stack([getattr(t, name) for t in loop])
        torch.testing.assert_close(getattr(terms, name), expected, rtol=1e-12, atol=1e-12)
    assert terms.mean() is terms
    values = terms.as_dict()
    assert set(values) == {"reconstruction", "kl", "elbo", "divergence", "objective"}
    for name, value in values.items():
        assert isinstance(value, np.ndarray) and value.shape == (3,)
        np.testing.assert_allclose(value, [t.as_dict()[name] for t in loop], rtol=1e-12)
    # drawing the prior samples from a generator: one shared draw of B samples
    drawn = decomposition_objective(
        log_lik,
        z,
        mu,
        logvar,
        prior,
        alpha=alpha,
        beta=beta,
        divergence=divergence,
        generator=torch.Generator().manual_seed(4),
    )
    shared = prior.sample(6, torch.Generator().manual_seed(4), dtype=F64)
    again = decomposition_objective(
        log_lik,
        z,
        mu,
        logvar,
        prior,
        alpha=alpha,
        beta=beta,
        divergence=divergence,
        prior_samples=shared,
    )
    torch.testing.assert_close(drawn.objective, again.objective, rtol=1e-12, atol=1e-12)


# --- StructuredVAE -------------------------------------------------------------------------

SHAPE = (5,)


def _vae(seed=0, d=2, **kwargs):
    """A small float64 MLP VAE ``(n, 5) -> (n, d) -> (n, 5)``."""
    with seeded(seed):
        encoder = mlp_encoder(SHAPE, [8], d, "tanh")
        decoder = mlp_decoder(d, [8], SHAPE, "tanh")
    return VAE(encoder, decoder, **kwargs).double()


def _ensemble(members=3, d=2):
    """A float64 ensemble of ``members`` VAEs with the architecture of :func:`_vae`; β = 1
    (StructuredVAE has its own β)."""
    return EnsembleVAE(members, SHAPE, [8], d, [8], betas=1.0, activation="tanh").double()


def _by_hand(vae, prior, x, seed, **kwargs):
    """Objective (7) of ``vae`` with noise then prior draws from one generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    mu, logvar = vae.encode(x)
    z = sample_diag_normal(mu, logvar, generator=g)
    out = vae.decode(z)
    width = math.prod(SHAPE)
    log_lik = reconstruction_log_likelihood(
        x.expand(*mu.shape[:-1], width).reshape(-1, width),
        out.reshape(-1, width),
        vae.likelihood,
        vae.log_gamma,
    ).reshape(mu.shape[:-1])
    return decomposition_objective(log_lik, z, mu, logvar, prior, generator=g, **kwargs)


def _assert_same_terms(terms, expected, rtol=1e-12, atol=1e-12):
    for name in ("reconstruction", "kl", "divergence", "objective"):
        torch.testing.assert_close(
            getattr(terms, name), getattr(expected, name), rtol=rtol, atol=atol
        )


@pytest.mark.parametrize(
    ("divergence", "prior"),
    [
        ("kl", gaussian_mixture_2d()),
        ("mmd", gaussian_mixture_2d()),
        ("kl", student_t(2, 3.0)),
        ("mmd", anisotropic_gaussian(torch.tensor([0.4, 1.6]))),
    ],
)
def test_structured_vae_terms_equal_objective_7_computed_by_hand(gen, divergence, prior):
    vae, x = _vae(), randn(gen, 10, 5)
    model = StructuredVAE(vae, prior, alpha=2.0, beta=0.5, divergence=divergence, n_prior_samples=7)
    terms = model.terms(x, torch.Generator().manual_seed(3))
    expected = _by_hand(
        vae, prior, x, 3, alpha=2.0, beta=0.5, divergence=divergence, n_prior_samples=7
    )
    _assert_same_terms(terms, expected)
    assert terms.reconstruction.shape == terms.kl.shape == (10,)
    assert terms.objective.dim() == 0
    assert terms.alpha == 2.0 and terms.beta == 0.5
    # the reconstruction is the base VAE's own, from the same noise
    own = vae.terms(x, torch.Generator().manual_seed(3))
    torch.testing.assert_close(terms.reconstruction, own.reconstruction, rtol=1e-12, atol=1e-12)
    # the prior draws come from the generator: another seed gives another divergence
    other = model.terms(x, torch.Generator().manual_seed(4))
    assert abs(other.divergence.item() - terms.divergence.item()) > 1e-8
    terms.objective.backward()
    grads = [p.grad for p in vae.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_structured_vae_at_alpha_zero_with_a_standard_prior_is_the_beta_vae(gen):
    vae, x = _vae(beta=3.0), randn(gen, 10, 5)
    model = StructuredVAE(vae, isotropic_gaussian(2), alpha=0.0, beta=3.0)
    terms = model.terms(x, torch.Generator().manual_seed(1))
    expected = vae.terms(x, torch.Generator().manual_seed(1)).mean()
    torch.testing.assert_close(terms.objective, expected.objective, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(terms.elbo, expected.elbo, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("divergence", ["kl", "mmd"])
def test_structured_vae_over_an_ensemble_matches_its_members(gen, divergence):
    ensemble, x = _ensemble(), randn(gen, 10, 5)
    prior = student_t(2, 3.0)
    alpha, beta = (0.0, 1.0, 2.5), (0.5, 1.0, 4.0)
    model = StructuredVAE(ensemble, prior, alpha=alpha, beta=beta, divergence=divergence)
    terms = model.terms(x, torch.Generator().manual_seed(2))
    assert terms.reconstruction.shape == terms.kl.shape == (3, 10)
    assert terms.divergence.shape == terms.objective.shape == (3,)
    values = terms.as_dict()
    assert all(isinstance(v, np.ndarray) and v.shape == (3,) for v in values.values())
    # By hand: the ensemble's noise is one (M, B, d) draw, then B prior draws shared by all
    # members, with per-member α and β.
    weights = dict(alpha=torch.tensor(alpha, dtype=F64), beta=torch.tensor(beta, dtype=F64))
    expected = _by_hand(ensemble, prior, x, 2, divergence=divergence, **weights)
    _assert_same_terms(terms, expected)
    # Member m is the single VAE ensemble.member(m) with α_m, β_m, fed the m-th block of the
    # ensemble's noise and the shared prior draws. (A single model run with the same seed is
    # not a fair reference, not even for member 0: torch's CPU randn fills tensors of >= 16
    # elements in blocks of 16 and redraws the tail, so the first (B, d) block of an (M, B, d)
    # draw equals a (B, d) draw only when B d is a multiple of 16.)
    g = torch.Generator().manual_seed(2)
    eps = torch.randn(3, 10, 2, generator=g, dtype=F64)
    zp = prior.sample(10, g, dtype=F64)
    for m in range(3):
        vae = ensemble.member(m)
        mu, logvar = vae.encode(x)
        z = mu + torch.exp(0.5 * logvar) * eps[m]
        log_lik = reconstruction_log_likelihood(x, vae.decode(z), vae.likelihood, vae.log_gamma)
        single = decomposition_objective(
            log_lik,
            z,
            mu,
            logvar,
            prior,
            alpha=alpha[m],
            beta=beta[m],
            divergence=divergence,
            prior_samples=zp,
        )
        for name in ("reconstruction", "kl", "divergence", "objective"):
            torch.testing.assert_close(
                getattr(terms, name)[m], getattr(single, name), rtol=1e-10, atol=1e-10
            )
    assert terms.objective.std().item() > 1e-3  # the members really differ


def test_structured_vae_ensemble_trains_with_fit(gen):
    ensemble = EnsembleVAE(2, SHAPE, [8], 2, [8], betas=1.0, activation="tanh")
    model = StructuredVAE(ensemble, student_t(2, 3.0), alpha=(0.5, 2.0), beta=(1.0, 2.0))
    data = randn(gen, 40, 5).float()
    history = fit(model, data, epochs=3, batch_size=20, progress=False, device="cpu")
    assert len(history) == 3
    assert set(history.terms) == {"reconstruction", "kl", "elbo", "divergence", "objective"}
    assert all(v.shape == (2,) and np.isfinite(v).all() for v in history.final().values())


# --- StructuredVAE: learned Gaussian prior variances --------------------------------------


def test_structured_vae_learned_prior_variances_start_at_the_prior_and_sum_to_d(gen):
    variances = torch.tensor([0.25, 0.75, 2.0], dtype=F64)  # sums to d = 3
    prior = anisotropic_gaussian(variances)
    with seeded(0):
        vae = VAE(mlp_encoder(SHAPE, [8], 3, "tanh"), mlp_decoder(3, [8], SHAPE, "tanh"))
    model = StructuredVAE(vae, prior, beta=2.0, learn_prior_variances=True)
    start = model.prior_variances().detach().clone()
    torch.testing.assert_close(start.double(), variances, rtol=1e-6, atol=1e-6)
    # at the start the model is the fixed-prior β-VAE (α = 0) with that prior
    data = randn(gen, 64, 5).float()
    fixed = StructuredVAE(vae, prior, beta=2.0)
    terms = model.terms(data, torch.Generator().manual_seed(0))
    expected = fixed.terms(data, torch.Generator().manual_seed(0))
    for name in ("reconstruction", "kl", "objective"):
        torch.testing.assert_close(getattr(terms, name), getattr(expected, name))
    assert terms.divergence.shape == () and terms.divergence.item() == 0.0
    terms.objective.backward()
    grad = model.prior_logits.grad
    assert grad is not None and bool(torch.isfinite(grad).all()) and grad.abs().sum().item() > 0
    model.zero_grad()
    history = fit(model, data, epochs=20, lr=5e-2, progress=False, device="cpu")
    assert {"divergence", "elbo"} <= set(history.terms) and len(history) == 20
    learned = model.prior_variances().detach()
    assert learned.shape == (3,) and bool((learned > 0).all())
    assert learned.sum().item() == pytest.approx(3.0, rel=1e-5)
    assert (learned - start).abs().max().item() > 1e-2
    np.testing.assert_allclose(prior.variances.numpy(), variances.numpy())  # prior untouched


def test_structured_vae_ensemble_learns_one_set_of_prior_variances_per_member(gen):
    ensemble = EnsembleVAE(3, SHAPE, [8], 2, [8], betas=1.0, activation="tanh")
    variances = torch.tensor([0.5, 1.5], dtype=F64)
    model = StructuredVAE(
        ensemble, anisotropic_gaussian(variances), beta=(0.5, 1.0, 4.0), learn_prior_variances=True
    )
    start = model.prior_variances().detach().clone()
    assert start.shape == (3, 2)
    torch.testing.assert_close(start.double(), variances.expand(3, 2), rtol=1e-6, atol=1e-6)
    history = fit(
        model, randn(gen, 30, 5).float(), epochs=10, lr=5e-2, progress=False, device="cpu"
    )
    assert history["kl"][-1].shape == (3,)
    learned = model.prior_variances().detach()
    torch.testing.assert_close(learned.sum(-1), torch.full((3,), 2.0), rtol=1e-5, atol=1e-5)
    assert bool(((learned - start).abs().amax(-1) > 1e-2).all())


def test_structured_vae_learns_prior_variances_of_a_float64_model(gen):
    model = StructuredVAE(_vae(d=2), isotropic_gaussian(2), learn_prior_variances=True)
    history = fit(model, randn(gen, 20, 5), epochs=2, lr=5e-2, progress=False, device="cpu")
    assert len(history) == 2
    assert model.prior_logits.dtype == F64
    assert model.prior_variances().sum().item() == pytest.approx(2.0, rel=1e-12)


# --- StructuredVAE: bad input ---------------------------------------------------------------


def _structured_bad_calls():
    p = isotropic_gaussian(2)
    z, mu, lv = torch.zeros(3, 4, 2), torch.zeros(3, 4, 2), torch.zeros(3, 4, 2)
    return [
        (lambda: StructuredVAE(_vae(), "normal"), TypeError, "prior"),
        (lambda: StructuredVAE(torch.nn.Linear(2, 2), p), TypeError, "base"),
        (lambda: StructuredVAE(_vae(), p, alpha=-1.0), ValueError, "alpha"),
        (lambda: StructuredVAE(_vae(), p, beta=-0.5), ValueError, "beta"),
        (lambda: StructuredVAE(_ensemble(3), p, beta=[1.0, 2.0]), ValueError, "beta"),
        (lambda: StructuredVAE(_ensemble(3), p, alpha=[1.0, -1.0, 0.0]), ValueError, "alpha"),
        (lambda: StructuredVAE(_vae(), p, alpha=[1.0, 2.0]), ValueError, "alpha"),
        (
            lambda: StructuredVAE(_vae(), student_t(2, 3.0), learn_prior_variances=True),
            ValueError,
            "Gaussian",
        ),
        (
            lambda: StructuredVAE(_vae(), p, alpha=1.0, learn_prior_variances=True),
            ValueError,
            "alpha",
        ),
        (lambda: StructuredVAE(_vae(), p, divergence="js"), ValueError, "divergence"),
        (lambda: StructuredVAE(_vae(), p, n_prior_samples=0), ValueError, "n_prior_samples"),
        (
            lambda: decomposition_objective(
                torch.zeros(3, 4), z, mu, lv, p, alpha=torch.ones(2), beta=1.0
            ),
            ValueError,
            "alpha",
        ),
        (
            lambda: decomposition_objective(
                torch.zeros(4), z[0], mu[0], lv[0], p, alpha=torch.ones(3), beta=1.0
            ),
            ValueError,
            "alpha",
        ),
        (
            lambda: decomposition_objective(
                torch.zeros(3, 4), z, mu, lv, p, alpha=1.0, beta=torch.tensor([1.0, -1.0, 1.0])
            ),
            ValueError,
            "beta",
        ),
        (
            lambda: decomposition_objective(torch.zeros(3, 5), z, mu, lv, p, alpha=1.0, beta=1.0),
            ValueError,
            "log_lik",
        ),
    ]


# --- log_aggregate_posterior and StructuredVAE edge cases ------------------------------------


def test_log_aggregate_posterior_is_the_log_of_the_mixture_density(gen):
    mu, logvar, z = randn(gen, 6, 2), randn(gen, 6, 2) - 1, randn(gen, 7, 2)
    density = np.zeros(7)
    for m, v in zip(mu.numpy(), logvar.exp().numpy(), strict=True):
        density += stats.multivariate_normal(m, np.diag(v)).pdf(z.numpy()) / 6
    np.testing.assert_allclose(log_aggregate_posterior(z, mu, logvar).numpy(), np.log(density))
    batched = log_aggregate_posterior(z, torch.stack([mu, mu + 1]), torch.stack([logvar] * 2))
    assert batched.shape == (2, 7)
    torch.testing.assert_close(batched[1], log_aggregate_posterior(z, mu + 1, logvar))
    with pytest.raises(ValueError, match=r"^z"):
        log_aggregate_posterior(torch.zeros(7, 3), mu, logvar)
    with pytest.raises(ValueError, match=r"^mu and logvar must both be"):
        log_aggregate_posterior(z, mu, logvar[:3])


def test_structured_vae_learned_prior_needs_variances_summing_to_d():
    with pytest.raises(ValueError, match=r"variances sum to 1 \(use pca_variances\)$"):
        StructuredVAE(_vae(), isotropic_gaussian(2, 0.5), learn_prior_variances=True)
    with pytest.raises(
        ValueError, match=r"^learn_prior_variances uses the analytic KL; kl='mc' is not used"
    ):
        StructuredVAE(_vae(), isotropic_gaussian(2), kl="mc", learn_prior_variances=True)


def test_structured_vae_ensemble_accepts_one_batch_per_member(gen):
    ensemble = _ensemble(3)
    model = StructuredVAE(ensemble, isotropic_gaussian(2), beta=[0.5, 1.0, 2.0])
    x = randn(gen, 3, 4, *SHAPE)
    per_member = model.terms(x, torch.Generator().manual_seed(0))
    shared = model.terms(x[1], torch.Generator().manual_seed(0))
    assert per_member.reconstruction.shape == (3, 4)
    torch.testing.assert_close(per_member.kl[1], shared.kl[1])
    torch.testing.assert_close(per_member.reconstruction[1], shared.reconstruction[1])
    assert not torch.allclose(per_member.kl[0], shared.kl[0])


def _all_bad_calls():
    return _bad_calls() + _structured_bad_calls()


@pytest.mark.parametrize("index", range(len(_all_bad_calls())))
def test_bad_input_names_the_argument(index):
    call, error, name = _all_bad_calls()[index]
    with pytest.raises(error, match=rf"\b{name}\b"):
        call()
