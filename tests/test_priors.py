"""Tests of vaebook.priors (Mathieu et al., 2019): the priors against scipy, their annealed
normalisers against quadrature, and the KL to them against torch and Monte Carlo."""

import math
import warnings

import numpy as np
import pytest
import torch
from helpers import assert_within_5_se, encoder_members, randn
from scipy import integrate, stats
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from vaebook.gaussian import (
    entropy_diag_normal,
    log_normal_diag,
)
from vaebook.priors import (
    GaussianMixturePrior,
    Prior,
    SpikeAndSlabPrior,
    _encoder,
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
    z32 = torch.randn(4, 5, 3, generator=gen)
    for z in (z32, z32.half()):
        for prior in (isotropic_gaussian(3), student_t(3, 4.0), spike_and_slab(3, 0.5)):
            out = prior.log_prob(z)
            assert out.shape == (4, 5) and out.dtype == z.dtype
        out = gaussian_mixture_2d().log_prob(z[..., :2])
        assert out.shape == (4, 5) and out.dtype == z.dtype


def test_log_prob_of_a_single_point_is_a_scalar():
    z = torch.tensor([0.3, -1.2], dtype=F64)
    out = student_t(2, 3.0).log_prob(z)
    assert out.shape == ()
    assert abs(out.item() - stats.t.logpdf(z.numpy(), df=3.0).sum()) < 1e-12


def test_prior_parameters_are_stored_exactly_in_float64():
    # Python floats such as 0.3 are not float32 numbers: a float32 detour would show at 1e-12.
    assert torch.equal(isotropic_gaussian(3).variances, torch.ones(3, dtype=F64))
    assert torch.equal(isotropic_gaussian(2, 0.3).variances, torch.full((2,), 0.3, dtype=F64))
    aniso = anisotropic_gaussian([0.3, 1.7])
    assert torch.equal(aniso.variances, torch.tensor([0.3, 1.7], dtype=F64))
    one = anisotropic_gaussian([0.3])  # d = 1 is allowed
    z = torch.tensor([[0.7], [-2.0]], dtype=F64)
    expected = stats.norm.logpdf(z.numpy(), scale=math.sqrt(0.3)).sum(-1)
    np.testing.assert_allclose(one.log_prob(z).numpy(), expected, rtol=1e-12)
    assert SpikeAndSlabPrior(2, 0.3).sigma0 == 0.05  # the default of spike_and_slab too


@pytest.mark.parametrize("weights", [None, [0.2, 0.3, 0.5], [0.0, 0.4, 0.6]])
def test_mixture_with_list_parameters_matches_scipy(gen, weights):
    means = [[0.1, -0.3], [0.7, 0.2], [-0.4, 0.5]]
    prior = GaussianMixturePrior(means, 0.2, weights)
    w = [1 / 3] * 3 if weights is None else weights
    assert prior.means.dtype == F64 and prior.weights.dtype == F64
    assert torch.equal(prior.weights, torch.tensor(w, dtype=F64))
    z = randn(gen, 6, 2)
    dens = sum(
        wc * stats.multivariate_normal(m, 0.2 * np.eye(2)).pdf(z.numpy())
        for wc, m in zip(w, means, strict=True)
    )
    np.testing.assert_allclose(prior.log_prob(z).numpy(), np.log(dens), rtol=1e-12)


def test_prior_repr_names_the_parameters():
    assert repr(gaussian_mixture_2d()) == "GaussianMixturePrior(C=4, variance=0.03)"


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


def test_mixture_samples_pass_a_ks_test_on_each_axis(gen):
    # eq. (9) projected on an axis: 1/2 N(0, 0.03) + 1/4 N(1, 0.03) + 1/4 N(-1, 0.03)
    z = gaussian_mixture_2d().sample(20_000, gen, dtype=F64).numpy()
    sd = math.sqrt(0.03)

    def cdf(x):
        return sum(
            w * stats.norm.cdf(x, loc=m, scale=sd) for w, m in ((0.5, 0), (0.25, 1), (0.25, -1))
        )

    for axis in range(2):
        assert stats.kstest(z[:, axis], cdf).pvalue > 1e-3


def _all_priors():
    return (
        isotropic_gaussian(3),
        anisotropic_gaussian(torch.tensor([0.2, 3.0])),
        student_t(3, 4.0),
        gaussian_mixture_2d(),
        spike_and_slab(3, 0.5),
    )


def test_every_prior_samples_reproducibly_with_a_generator():
    for prior in _all_priors():
        a = prior.sample(50, torch.Generator().manual_seed(3))
        b = prior.sample(50, torch.Generator().manual_seed(3))
        assert torch.equal(a, b) and a.dtype == torch.get_default_dtype()


def test_sampling_without_a_generator_uses_the_global_rng_on_the_cpu():
    with torch.random.fork_rng():
        for prior in _all_priors():
            torch.manual_seed(5)
            a = prior.sample(4)
            torch.manual_seed(5)
            b = prior.sample(4)
            assert a.shape == (4, prior.dim) and a.device.type == "cpu" and torch.equal(a, b)


def test_float64_samples_have_float64_resolution(gen):
    # With unit scale and zero mean, a float64 draw is the float64 normal (or Student-t) itself:
    # drawn in float32 and cast, every value would be a float32 number.
    priors = (
        isotropic_gaussian(3),
        GaussianMixturePrior(torch.zeros(1, 3), 1.0),
        student_t(3, 4.0),
    )
    for prior in priors:
        z = prior.sample(200, gen, dtype=F64)
        assert z.dtype == F64
        assert (z.float().double() != z).double().mean() > 0.9, prior


def test_spike_and_slab_with_gamma_0_never_draws_the_spike_even_in_bfloat16():
    # bfloat16 uniforms are exactly 0 with probability 2^-8: u < γ = 0 must still be false.
    slab = [
        spike_and_slab(10, 0.0, s0).sample(
            100, torch.Generator().manual_seed(0), dtype=torch.bfloat16
        )
        for s0 in (0.05, 0.5)
    ]
    assert torch.equal(slab[0], slab[1])


def test_distribution_of_a_factorised_prior_has_independent_coordinates():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        z = spike_and_slab(2, 0.5).distribution(dtype=F64).sample((20_000,))
    second = 0.5 * 0.05**2 + 0.5
    assert_within_5_se(z[:, 0] ** 2 * z[:, 1] ** 2, second**2)


def test_pca_variances_are_rescaled_top_eigenvalues(gen):
    x = randn(gen, 5000, 4) * torch.tensor([3.0, 0.5, 2.0, 1.0], dtype=F64)
    v = pca_variances(x, 3)
    eig = np.sort(np.linalg.eigvalsh(np.cov(x.numpy().T)))[::-1][:3]
    np.testing.assert_allclose(v.numpy(), 3 * eig / eig.sum(), rtol=1e-10)
    assert abs(v.sum().item() - 3) < 1e-12 and bool((v[:-1] >= v[1:]).all())
    assert anisotropic_gaussian(v).dim == 3


def test_pca_variances_at_the_smallest_shapes(gen):
    one = torch.ones(1, dtype=F64)
    assert torch.equal(pca_variances(randn(gen, 2, 3), 1), one)  # n = 2 rows
    assert torch.equal(pca_variances(randn(gen, 50, 1), 1), one)  # p = 1 column
    x = randn(gen, 50, 3) * torch.tensor([3.0, 0.5, 2.0], dtype=F64)
    v = pca_variances(x, 3)  # d = p
    eig = np.sort(np.linalg.eigvalsh(np.cov(x.numpy().T)))[::-1]
    np.testing.assert_allclose(v.numpy(), 3 * eig / eig.sum(), rtol=1e-10)


def test_pca_variances_do_not_depend_on_the_scale_of_x(gen):
    x = randn(gen, 1000, 3) * torch.tensor([3.0, 0.5, 2.0], dtype=F64)
    v = pca_variances(x, 2)
    np.testing.assert_allclose(pca_variances(1e-7 * x, 2).numpy(), v.numpy(), rtol=1e-10)
    # float32 data near the top of its range: n Σ x² ≈ 4e37 < 3.4e38
    big = pca_variances((1e17 * x).float(), 2)
    assert big.dtype == torch.float32
    np.testing.assert_allclose(big.numpy(), v.numpy(), rtol=1e-4)


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


def _spike_and_slab_normaliser(gamma, s0, beta):
    # ∫ (γ N(t; 0, s0²) + (1 - γ) N(t; 0, 1))^β dt for an integer β, expanded binomially:
    # each term integrates a product of centred Gaussian densities in closed form.
    total = 0.0
    for k in range(beta + 1):
        precision = k / s0**2 + (beta - k)
        norm = (2 * math.pi * s0**2) ** (-k / 2) * (2 * math.pi) ** (-(beta - k) / 2)
        weight = math.comb(beta, k) * gamma**k * (1 - gamma) ** (beta - k)
        total += weight * norm * math.sqrt(2 * math.pi / precision)
    return math.log(total)


@pytest.mark.parametrize(("gamma", "s0", "beta"), [(0.01, 1e-4, 2), (0.5, 1e-8, 2), (0.5, 1e-4, 5)])
def test_quadrature_resolves_a_narrow_spike(gamma, s0, beta):
    expected = _spike_and_slab_normaliser(gamma, s0, beta)
    got = annealed_log_normaliser(spike_and_slab(1, gamma, s0), beta)
    assert abs(got - expected) < 1e-12 * abs(expected), (got, expected)


def test_quadrature_is_accurate_near_the_edge_of_its_range():
    # Student-t with β(ν + 1) = 1.001: tails |t|^-1.001, a slowly convergent integral.
    prior = student_t(1, 1.0)
    closed = annealed_log_normaliser(prior, 0.5005, method="closed_form")
    quad = annealed_log_normaliser(prior, 0.5005, method="quadrature")
    assert abs(quad - closed) < 1e-12 * abs(closed)
    # A narrow Gaussian factor: its density at 0 is e^{500} times that at 1.
    prior = anisotropic_gaussian(torch.tensor([1e-3, 1.0, 3.0], dtype=F64))
    closed = annealed_log_normaliser(prior, 2.0, method="closed_form")
    assert abs(annealed_log_normaliser(prior, 2.0, method="quadrature") - closed) < 1e-11


def test_method_chooses_between_closed_form_and_scipy_quadrature(monkeypatch):
    calls = []
    quad = integrate.quad

    def spy(*args, **kwargs):
        calls.append(args[1:3])
        return quad(*args, **kwargs)

    monkeypatch.setattr(integrate, "quad", spy)

    def count(prior, beta, method):
        calls.clear()
        annealed_log_normaliser(prior, beta, method=method)
        return len(calls)

    for prior in (anisotropic_gaussian(torch.tensor([0.5, 2.0])), student_t(2, 3.0)):
        assert count(prior, 0.7, "auto") == 0 and count(prior, 0.7, "closed_form") == 0
        assert count(prior, 0.7, "quadrature") > 0
    assert count(spike_and_slab(2, 0.3), 0.7, "auto") > 0
    # i.i.d. coordinates share one 1-D integral: the cost does not grow with d
    assert count(isotropic_gaussian(8), 0.7, "quadrature") == count(
        isotropic_gaussian(1), 0.7, "quadrature"
    )
    assert (
        annealed_log_normaliser(isotropic_gaussian(3, 0.4), 1.0) == 0.0
    )  # exactly, in closed form


@pytest.mark.parametrize("beta", [0.05, 0.5, 3.0])
def test_mixture_normaliser_matches_gaussian_closed_forms(beta):
    # One component: a Gaussian, whatever its mean. Two components 50σ apart: the cross terms
    # of p^β vanish, F_β = (w_1^β + w_2^β) F_β(N(0, σ²)).
    one = GaussianMixturePrior(torch.tensor([[0.4, -0.7]]), 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning from the grid either
        got = annealed_log_normaliser(one, beta)
    assert abs(got - annealed_log_normaliser(isotropic_gaussian(2, 0.5), beta)) < 1e-10
    two = GaussianMixturePrior(torch.tensor([[0.0], [50.0]]), 0.5, weights=[0.3, 0.7])
    expected = annealed_log_normaliser(isotropic_gaussian(1, 0.5), beta) + math.log(
        0.3**beta + 0.7**beta
    )
    assert abs(annealed_log_normaliser(two, beta) - expected) < 1e-10


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


def test_kl_to_prior_auto_is_monte_carlo_for_a_non_gaussian_prior(gen):
    mu, logvar = randn(gen, 3, 2), randn(gen, 3, 2)
    z = mu + torch.exp(0.5 * logvar) * randn(gen, 50, 3, 2)
    prior = student_t(2, 3.0)
    cross = -stats.t.logpdf(z.numpy(), df=3.0).sum(-1).mean(0)
    expected = torch.from_numpy(cross) - entropy_diag_normal(logvar)
    for method in ("auto", "mc"):
        got = kl_to_prior(mu, logvar, prior, z=z, method=method)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_kl_to_prior_and_kl_full_to_prior_keep_float32(gen):
    mu, logvar = randn(gen, 3, 2).float(), randn(gen, 3, 2).float()
    prior = anisotropic_gaussian(torch.tensor([0.5, 2.0]))
    assert kl_to_prior(mu, logvar, prior).dtype == torch.float32
    assert kl_full_to_prior(mu, torch.diag_embed(logvar.exp()), prior).dtype == torch.float32


def test_list_arguments_take_the_dtype_of_mu(gen):
    # A list given with a float64 mu is read in float64, not via float32.
    mu, logvar = randn(gen, 3, 2), randn(gen, 3, 2)
    z = mu + torch.exp(0.5 * logvar) * randn(gen, 4, 3, 2)
    prior = student_t(2, 3.0)
    torch.testing.assert_close(
        kl_to_prior(mu, logvar.tolist(), prior, z=z.tolist()),
        kl_to_prior(mu, logvar, prior, z=z),
        rtol=1e-13,
        atol=0.0,
    )
    cov = torch.diag_embed(logvar.exp()) + 0.1
    gauss = anisotropic_gaussian(torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(
        kl_full_to_prior(mu, cov.tolist(), gauss),
        kl_full_to_prior(mu, cov, gauss),
        rtol=1e-13,
        atol=0.0,
    )


def test_kl_full_to_prior_monte_carlo_is_entropy_plus_cross_entropy(gen, make_spd):
    mu, cov = randn(gen, 3, 2), make_spd(2, 3)
    z = mu + (torch.linalg.cholesky(cov) @ randn(gen, 20_000, 3, 2, 1)).squeeze(-1)
    entropy = MultivariateNormal(mu, cov).entropy()
    prior = student_t(2, 3.0)
    log_p = torch.from_numpy(stats.t.logpdf(z.numpy(), df=3.0).sum(-1))
    got = kl_full_to_prior(mu, cov, prior, z=z)
    torch.testing.assert_close(got, -entropy - log_p.mean(0), rtol=1e-12, atol=1e-12)
    one = kl_full_to_prior(mu, cov, prior, z=z[0])  # a single sample (n, d)
    torch.testing.assert_close(one, -entropy - log_p[0], rtol=1e-12, atol=1e-12)
    gauss = anisotropic_gaussian(torch.tensor([0.5, 2.0]))
    per_sample = -entropy - gauss.log_prob(z)
    torch.testing.assert_close(kl_full_to_prior(mu, cov, gauss, z=z), per_sample.mean(0))
    assert_within_5_se(per_sample, kl_full_to_prior(mu, cov, gauss))


def test_unbatched_encoder_check_takes_exactly_n_by_d():
    # _encoder is shared with vaebook.decomposition, which calls it unbatched (the default).
    p = isotropic_gaussian(2)
    mu, logvar = torch.zeros(4, 2), torch.ones(4, 2)
    got = _encoder(mu, logvar, p)
    assert got[0] is mu and got[1] is logvar
    ensemble = torch.zeros(3, 4, 2)
    with pytest.raises(
        ValueError, match=r"^mu and logvar must both be \(n, d\), got \(3, 4, 2\) and"
    ):
        _encoder(ensemble, ensemble, p)
    assert _encoder(ensemble, ensemble, p, batched=True)[0] is ensemble


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


class _UniformSquare(Prior):
    """A prior none of whose normalisers is implemented: uniform on [0, 1]^2."""

    dim = 2

    def distribution(self, *, dtype=None, device=None):
        zeros = torch.zeros(2, dtype=dtype or F64, device=device)
        return torch.distributions.Independent(torch.distributions.Uniform(zeros, zeros + 1), 1)


def _bad_messages():
    mu, lv, cov = torch.zeros(4, 2), torch.zeros(4, 2), torch.eye(2).expand(4, 2, 2)
    p, t = isotropic_gaussian(2), student_t(2, 3.0)
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    means = torch.zeros(3, 2)
    prior_type = r"^prior must be a vaebook\.priors\.Prior, got str$"
    both = r"^mu and logvar must both be \(\.\.\., n, d\), got "
    z_shape = r"^z must be \(4, 2\) or \(S, \*\(4, 2\)\), got \(5, 4, 3\)$"
    return [
        (lambda: kl_to_prior(mu, lv, "normal"), TypeError, prior_type),
        (lambda: kl_to_prior(None, lv, p), TypeError, r"^mu must be a tensor"),
        (lambda: kl_to_prior(mu, None, p), TypeError, r"^logvar must be a tensor"),
        (
            lambda: kl_to_prior(mu, torch.zeros(4, 3), p),
            ValueError,
            both + r"\(4, 2\) and \(4, 3\)$",
        ),
        (
            lambda: kl_to_prior(torch.zeros(2), torch.zeros(2), p),
            ValueError,
            both + r"\(2,\) and \(2,\)$",
        ),
        (
            lambda: kl_to_prior(torch.zeros(2, 5, 3), torch.zeros(2, 5, 3), p),
            ValueError,
            r"^mu has latent dimension 3 but the prior has 2$",
        ),
        (lambda: kl_to_prior(mu, lv, p, method="exact"), ValueError, r"^method must be one of"),
        (
            lambda: kl_to_prior(mu, lv, p, method="mc"),
            ValueError,
            r"^z \(samples of q\(z\|x\)\) is required for method='mc'$",
        ),
        (lambda: kl_to_prior(mu, lv, t, z="z"), TypeError, r"^z must be a tensor"),
        (lambda: kl_to_prior(mu, lv, t, z=torch.zeros(5, 4, 3)), ValueError, z_shape),
        (lambda: kl_full_to_prior(mu, cov, "normal"), TypeError, prior_type),
        (lambda: kl_full_to_prior(None, cov, p), TypeError, r"^mu must be a tensor"),
        (lambda: kl_full_to_prior(mu, None, p), TypeError, r"^cov must be a tensor"),
        (
            lambda: kl_full_to_prior(torch.zeros(2), cov, p),
            ValueError,
            r"^mu must be \(n, 2\), got \(2,\)$",
        ),
        (
            lambda: kl_full_to_prior(torch.zeros(4, 3), cov, p),
            ValueError,
            r"^mu must be \(n, 2\), got \(4, 3\)$",
        ),
        (
            lambda: kl_full_to_prior(mu, cov, t),
            ValueError,
            r"^z \(samples of q\(z\|x\)\) is required for the prior StudentTPrior",
        ),
        (lambda: annealed_log_normaliser("normal", 1.0), TypeError, prior_type),
        (
            lambda: annealed_log_normaliser(student_t(2, 1.0), 0.5),  # β(ν + 1) = 1 exactly
            ValueError,
            r"^beta must exceed 1/\(nu \+ 1\) = 0\.5 for a Student-t prior",
        ),
        (
            lambda: annealed_log_normaliser(_UniformSquare(), 1.0),
            ValueError,
            r"^no way to compute F_β",
        ),
        (
            lambda: annealed_log_normaliser(GaussianMixturePrior(torch.zeros(1, 3), 1.0), 1.0),
            ValueError,
            r"^no way to compute F_β for GaussianMixturePrior",
        ),
        (lambda: annealed_log_prob(p, -1.0, mu), ValueError, r"^beta must be > 0"),
        (lambda: pca_variances(None, 1), TypeError, r"^x must be a tensor"),
        (lambda: pca_variances(x, 1.0), TypeError, r"^d must be an int"),
        (
            lambda: pca_variances(torch.ones(5), 1),
            ValueError,
            r"^x must be \(n, p\) with n >= 2, got \(5,\)$",
        ),
        (
            lambda: pca_variances(x[:1], 1),
            ValueError,
            r"^x must be \(n, p\) with n >= 2, got \(1, 3\)$",
        ),
        (lambda: anisotropic_gaussian(None), TypeError, r"^variances must be a tensor"),
        (
            lambda: anisotropic_gaussian(torch.ones(2, 2)),
            ValueError,
            r"^variances must be a 1-D tensor \(d,\), got \(2, 2\)$",
        ),
        (
            lambda: anisotropic_gaussian(torch.ones(0)),
            ValueError,
            r"^variances must be a 1-D tensor \(d,\), got \(0,\)$",
        ),
        (lambda: GaussianMixturePrior(None, 1.0), TypeError, r"^means must be a tensor"),
        (
            lambda: GaussianMixturePrior(torch.zeros(2), 1.0),
            ValueError,
            r"^means must be \(C, d\), got \(2,\)$",
        ),
        (lambda: GaussianMixturePrior(means, -1.0), ValueError, r"^variance must be > 0"),
        (lambda: GaussianMixturePrior(means, 1.0, "w"), TypeError, r"^weights must be a tensor"),
        (
            lambda: GaussianMixturePrior(means, 1.0, [0.5, 0.5]),
            ValueError,
            r"^weights must be 3 non-negative numbers$",
        ),
        (
            lambda: GaussianMixturePrior(means, 1.0, [-0.5, 0.5, 1.0]),
            ValueError,
            r"^weights must be 3 non-negative numbers$",
        ),
        (
            lambda: GaussianMixturePrior(means, 1.0, [0.5, 0.5, 0.5]),
            ValueError,
            r"^weights must sum to 1, got 1\.5$",
        ),
        (lambda: p.log_prob(None), TypeError, r"^z must be a tensor"),
        (
            lambda: p.log_prob(torch.tensor(0.0)),
            ValueError,
            r"^z must have shape \(\.\.\., 2\), got \(\)$",
        ),
        (
            lambda: p.sample(3, generator=1),
            TypeError,
            r"^generator must be a torch\.Generator, got int$",
        ),
        (lambda: spike_and_slab(0, 0.5), ValueError, r"^d must be > 0"),
        (lambda: spike_and_slab(2, -0.1), ValueError, r"^gamma must be >= 0"),
        (lambda: student_t(0, 1.0), ValueError, r"^d must be > 0"),
    ]


@pytest.mark.parametrize("index", range(len(_bad_messages())))
def test_bad_input_messages(index):
    call, error, message = _bad_messages()[index]
    with pytest.raises(error, match=message):
        call()
