"""Tests of vaebook.priors (Mathieu et al., 2019): the priors against scipy, their annealed
normalisers against quadrature, and the KL to them against torch and Monte Carlo."""

import math

import numpy as np
import pytest
import torch
from helpers import assert_within_5_se, encoder_members, randn
from scipy import stats
from torch.distributions import Normal, kl_divergence

from vaebook.gaussian import (
    entropy_diag_normal,
    log_normal_diag,
)
from vaebook.priors import (
    anisotropic_gaussian,
    annealed_log_normaliser,
    annealed_log_prob,
    gaussian_mixture_2d,
    isotropic_gaussian,
    kl_full_to_prior,
    kl_to_prior,
    pca_variances,
    spike_and_slab,
    student_t,
)

F64 = torch.float64


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


# --- ensembles -----------------------------------------------------------------------------


def test_batched_kl_to_prior_equals_a_loop_overencoder_members(gen):
    _, z, mu, logvar = encoder_members(gen)
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


# --- bad input -----------------------------------------------------------------------------


def _bad_calls():
    mu, lv = torch.zeros(4, 2), torch.zeros(4, 2)
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
        (lambda: kl_to_prior(mu, lv, student_t(2, 3.0), method="analytic"), ValueError, "analytic"),
        (lambda: kl_to_prior(mu, lv, p, method="mc"), ValueError, "z"),
        (lambda: kl_to_prior(mu, lv, p, z=torch.zeros(5, 2), method="mc"), ValueError, "z"),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_bad_input_names_the_argument(index):
    call, error, name = _bad_calls()[index]
    with pytest.raises(error, match=rf"\b{name}\b"):
        call()
