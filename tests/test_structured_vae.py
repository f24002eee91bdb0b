"""Tests of vaebook.structured_vae (Mathieu et al., 2019): objective (7) and the
StructuredVAE model, against the objective computed by hand."""

import math

import numpy as np
import pytest
import torch
from helpers import encoder_members, randn

from vaebook.aggregate_posterior import (
    inclusive_kl_aggregate,
    mmd_imq,
)
from vaebook.ensemble import EnsembleVAE
from vaebook.gaussian import (
    kl_diag_normal,
    sample_diag_normal,
)
from vaebook.nets import VAE, mlp_decoder, mlp_encoder, seeded
from vaebook.objectives import ELBOTerms, reconstruction_log_likelihood
from vaebook.priors import (
    anisotropic_gaussian,
    gaussian_mixture_2d,
    isotropic_gaussian,
    kl_to_prior,
    spike_and_slab,
    student_t,
)
from vaebook.structured_vae import (
    StructuredVAE,
    decomposition_objective,
)
from vaebook.train import fit

F64 = torch.float64


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


def test_per_coordinate_mmd_divergence_is_the_sum_of_one_mmd_per_latent(gen):
    log_lik, z, mu, logvar = _batch(gen, b=9, d=3)
    prior = spike_and_slab(3, 0.8)
    zp = prior.sample(11, gen, dtype=F64)
    terms = decomposition_objective(
        log_lik,
        z,
        mu,
        logvar,
        prior,
        alpha=3.0,
        beta=2.0,
        prior_samples=zp,
        divergence="mmd_per_coordinate",
        mmd_scales=(0.5, 4.0),
    )
    # one joint MMD per latent coordinate, each with 1-D kernels (C = 2 s)
    by_coordinate = sum(mmd_imq(z[:, [j]], zp[:, [j]], scales=(0.5, 4.0)) for j in range(3))
    torch.testing.assert_close(terms.divergence, by_coordinate, rtol=1e-12, atol=1e-12)
    joint = mmd_imq(z, zp, scales=(0.5, 4.0))
    assert abs(terms.divergence.item() - joint.item()) > 1e-3  # not the joint kernel
    kl = kl_to_prior(mu, logvar, prior, z=z, method="mc")
    expected = log_lik.mean() - 2.0 * kl.mean() - 3.0 * by_coordinate
    torch.testing.assert_close(terms.objective, expected, rtol=1e-12, atol=1e-12)
    ensemble = StructuredVAE(
        _ensemble(2, d=3), prior, alpha=[0.0, 10.0], divergence="mmd_per_coordinate"
    )
    assert ensemble.divergence == "mmd_per_coordinate"
    history = fit(ensemble, randn(gen, 20, 5), epochs=2, progress=False, device="cpu")
    assert history["divergence"][-1].shape == (2,)


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


@pytest.mark.parametrize("divergence", ["kl", "mmd"])
def test_batched_decomposition_objective_with_per_member_weights_equals_a_loop(gen, divergence):
    log_lik, z, mu, logvar = encoder_members(gen)
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


def test_decomposition_objective_uses_the_requested_kl_method(gen):
    log_lik, z, mu, logvar = _batch(gen)
    prior = isotropic_gaussian(2)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64))
    by_hand = {  # log q(z|x) integrated exactly, log p(z) at the single sample z
        "mc": -q.entropy().sum(-1) - p.log_prob(z).sum(-1),
        "analytic": torch.distributions.kl_divergence(q, p).sum(-1),
    }
    for method, expected in by_hand.items():
        terms = decomposition_objective(
            log_lik, z, mu, logvar, prior, alpha=0.0, beta=1.0, kl=method, generator=gen
        )
        torch.testing.assert_close(terms.kl, expected, rtol=1e-12, atol=1e-12)
    assert (by_hand["mc"] - by_hand["analytic"]).abs().max().item() > 1e-3


def test_decomposition_objective_draws_n_prior_samples_from_the_generator(gen):
    log_lik, z, mu, logvar = _batch(gen)  # B = 8
    prior = gaussian_mixture_2d()
    for n, divergence in ((5, "kl"), (3, "mmd")):
        kw = dict(alpha=1.0, beta=1.0, divergence=divergence)
        drawn = decomposition_objective(
            log_lik,
            z,
            mu,
            logvar,
            prior,
            generator=torch.Generator().manual_seed(7),
            n_prior_samples=n,
            **kw,
        )
        zp = prior.sample(n, torch.Generator().manual_seed(7), dtype=F64)
        given = decomposition_objective(log_lik, z, mu, logvar, prior, prior_samples=zp, **kw)
        torch.testing.assert_close(drawn.divergence, given.divergence, rtol=1e-12, atol=1e-12)
        batch = decomposition_objective(
            log_lik, z, mu, logvar, prior, generator=torch.Generator().manual_seed(7), **kw
        )  # default: B draws
        assert abs(batch.divergence.item() - drawn.divergence.item()) > 1e-6


def _mmd_brute_force(x, y, scale):
    """Unbiased IMQ MMD² with one kernel ``C / (C + |a - b|²)``, ``C = 2 d scale``, by loops."""
    c = 2 * x.shape[1] * scale

    def mean_k(a, b, skip_diagonal):
        values = [
            c / (c + ((a[i] - b[j]) ** 2).sum().item())
            for i in range(len(a))
            for j in range(len(b))
            if not (skip_diagonal and i == j)
        ]
        return sum(values) / len(values)

    return mean_k(x, x, True) + mean_k(y, y, True) - 2 * mean_k(x, y, False)


def test_decomposition_objective_passes_mmd_scales_to_the_kernel(gen):
    log_lik, z, mu, logvar = _batch(gen, b=5)
    prior = isotropic_gaussian(2)
    zp = prior.sample(4, gen, dtype=F64)
    kw = dict(alpha=1.0, beta=1.0, divergence="mmd", prior_samples=zp)
    for scale in (0.1, 3.0):
        terms = decomposition_objective(log_lik, z, mu, logvar, prior, mmd_scales=(scale,), **kw)
        assert terms.divergence.item() == pytest.approx(_mmd_brute_force(z, zp, scale), rel=1e-10)


def test_decomposition_objective_takes_z_as_a_list_in_the_dtype_of_mu(gen):
    log_lik, z, mu, logvar = _batch(gen)
    zp = isotropic_gaussian(2).sample(6, gen, dtype=F64)
    kw = dict(alpha=1.0, beta=1.0, divergence="mmd", prior_samples=zp, kl="mc")
    prior = isotropic_gaussian(2)
    from_list = decomposition_objective(log_lik, z.tolist(), mu, logvar, prior, **kw)
    from_tensor = decomposition_objective(log_lik, z, mu, logvar, prior, **kw)
    assert from_list.objective.dtype == F64
    _assert_same_terms(from_list, from_tensor)


def test_decomposition_objective_weights_are_floats_or_tensors_in_the_dtype_of_mu(gen):
    log_lik, z, mu, logvar = _batch(gen)
    prior = isotropic_gaussian(2)
    zp = prior.sample(6, gen, dtype=F64)
    # a 0-dim tensor is a number: a float for one model, shared by every member of an ensemble
    terms = decomposition_objective(
        log_lik,
        z,
        mu,
        logvar,
        prior,
        alpha=torch.tensor(2.0),
        beta=torch.tensor(0.5),
        prior_samples=zp,
    )
    assert isinstance(terms.alpha, float) and isinstance(terms.beta, float)
    assert (terms.alpha, terms.beta) == (2.0, 0.5)
    log_lik, z, mu, logvar = (t.float() for t in encoder_members(gen))
    kw = dict(beta=1.0, prior_samples=zp.float())
    shared = decomposition_objective(log_lik, z, mu, logvar, prior, alpha=torch.tensor(1.5), **kw)
    assert shared.alpha == 1.5
    # per-member weights given in float64 are used in the (float32) dtype of the encoders
    alpha = torch.tensor([0.1, 1.5, 0.3], dtype=F64)
    per_member = decomposition_objective(log_lik, z, mu, logvar, prior, alpha=alpha, **kw)
    assert per_member.alpha.dtype == torch.float32
    assert per_member.objective.dtype == torch.float32
    torch.testing.assert_close(per_member.objective[1], shared.objective[1])


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
        ("mmd_per_coordinate", spike_and_slab(2, 0.8)),
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
def test_structured_vae_over_an_ensemble_matches_itsencoder_members(gen, divergence):
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


def test_structured_vae_defaults_are_alpha_zero_beta_one(gen):
    vae, x = _vae(), randn(gen, 10, 5)
    prior = student_t(2, 3.0)  # divergence and KL both > 0, so both weights show
    default = StructuredVAE(vae, prior)
    explicit = StructuredVAE(vae, prior, alpha=0.0, beta=1.0, divergence="kl", kl="auto")
    assert (default.alpha.item(), default.beta.item()) == (0.0, 1.0)
    terms = default.terms(x, torch.Generator().manual_seed(0))
    _assert_same_terms(terms, explicit.terms(x, torch.Generator().manual_seed(0)))
    assert terms.divergence.item() > 1e-3 and terms.kl_mean.item() > 1e-3
    # encode is the base VAE's encoder
    for got, expected in zip(default.encode(x), vae.encode(x), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_structured_vae_uses_its_kl_method(gen):
    vae, x = _vae(), randn(gen, 10, 5)
    prior = isotropic_gaussian(2)
    model = StructuredVAE(vae, prior, alpha=1.0, kl="mc")
    terms = model.terms(x, torch.Generator().manual_seed(3))
    expected = _by_hand(vae, prior, x, 3, alpha=1.0, beta=1.0, kl="mc")
    _assert_same_terms(terms, expected)
    analytic = _by_hand(vae, prior, x, 3, alpha=1.0, beta=1.0, kl="analytic")
    assert (terms.kl - analytic.kl).abs().max().item() > 1e-3


def test_structured_vae_weights_and_reconstruction_are_in_the_model_dtype(gen):
    ensemble = EnsembleVAE(3, SHAPE, [8], 2, [8], betas=1.0, activation="tanh")  # float32
    model = StructuredVAE(ensemble, isotropic_gaussian(2), alpha=(0.1, 0.2, 0.3), beta=0.7)
    assert model.alpha.dtype == model.beta.dtype == torch.float32
    assert model.terms(randn(gen, 4, 5).float()).objective.dtype == torch.float32

    class CastingVAE(VAE):  # an encoder that accepts data of any dtype
        def encode(self, x):
            return super().encode(x.float())

    with seeded(0):
        vae = CastingVAE(mlp_encoder(SHAPE, [8], 2, "tanh"), mlp_decoder(2, [8], SHAPE, "tanh"))
    model = StructuredVAE(vae, isotropic_gaussian(2))
    x = randn(gen, 4, 5)  # float64 data: compared with the float32 decoder output in float32
    terms = model.terms(x, torch.Generator().manual_seed(0))
    assert terms.reconstruction.dtype == torch.float32
    expected = model.terms(x.float(), torch.Generator().manual_seed(0))
    torch.testing.assert_close(terms.reconstruction, expected.reconstruction, rtol=0, atol=0)


def test_structured_vae_prior_variances_of_a_fixed_prior_match_the_learned_start():
    variances = torch.tensor([0.5, 1.5], dtype=F64)
    with seeded(0):
        vae = VAE(mlp_encoder(SHAPE, [8], 2, "tanh"), mlp_decoder(2, [8], SHAPE, "tanh"))
    fixed = StructuredVAE(vae, anisotropic_gaussian(variances)).prior_variances()
    learned = StructuredVAE(
        vae, anisotropic_gaussian(variances), learn_prior_variances=True
    ).prior_variances()
    assert fixed.dtype == learned.dtype == torch.get_default_dtype()
    torch.testing.assert_close(fixed, learned.detach())
    with pytest.raises(
        ValueError, match=r"^the prior StudentTPrior\(d=2, nu=3.0\) is not Gaussian$"
    ):
        StructuredVAE(vae, student_t(2, 3.0)).prior_variances()


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


def test_structured_vae_learned_prior_needs_variances_summing_to_d():
    with pytest.raises(ValueError, match=r"variances sum to 1 \(use pca_variances\)$"):
        StructuredVAE(_vae(), isotropic_gaussian(2, 0.5), learn_prior_variances=True)
    with pytest.raises(
        ValueError, match=r"^learn_prior_variances uses the analytic KL; kl='mc' is not used"
    ):
        StructuredVAE(_vae(), isotropic_gaussian(2), kl="mc", learn_prior_variances=True)


def test_structured_vae_learned_prior_terms_of_one_model(gen):
    model = StructuredVAE(_vae(), isotropic_gaussian(2), beta=2.0, learn_prior_variances=True)
    terms = model.terms(randn(gen, 1, 5))  # a minibatch of one example
    assert terms.kl.shape == (1,) and terms.divergence.shape == ()
    assert terms.divergence.item() == 0.0
    assert isinstance(terms.alpha, float) and isinstance(terms.beta, float)
    assert (terms.alpha, terms.beta) == (0.0, 2.0)


def test_structured_vae_learned_prior_accepts_a_total_off_by_rounding():
    # variances summing to d = 4 up to a relative 1e-7 (float32 rounding) are accepted
    variances = torch.tensor([1.0, 1.0, 1.0, 1.0 + 4e-7], dtype=F64)
    model = StructuredVAE(_vae(d=4), anisotropic_gaussian(variances), learn_prior_variances=True)
    assert model.prior_variances().sum().item() == pytest.approx(4.0, rel=1e-12)
    bad = torch.tensor([1.0, 1.0, 1.0, 1.0 + 4e-4], dtype=F64)  # off by a relative 1e-4
    with pytest.raises(ValueError, match=r"^learn_prior_variances holds the total prior"):
        StructuredVAE(_vae(d=4), anisotropic_gaussian(bad), learn_prior_variances=True)


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


# --- bad input -----------------------------------------------------------------------------


def _bad_calls():
    p = isotropic_gaussian(2)
    # one model (B, d), and an ensemble of three (M, B, d)
    z_one, mu_one, lv_one = torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4, 2)
    z, mu, lv = torch.zeros(3, 4, 2), torch.zeros(3, 4, 2), torch.zeros(3, 4, 2)
    return [
        (
            lambda: decomposition_objective(
                torch.zeros(4), z_one, mu_one, lv_one, p, alpha=-1, beta=1
            ),
            ValueError,
            "alpha",
        ),
        (
            lambda: decomposition_objective(
                torch.zeros(4), z_one, mu_one, lv_one, p, alpha=1, beta=1, divergence="js"
            ),
            ValueError,
            "divergence",
        ),
        (
            lambda: decomposition_objective(
                torch.zeros(4),
                z_one,
                mu_one,
                lv_one,
                student_t(2, 3.0),
                alpha=1,
                beta=1,
                kl="analytic",
            ),
            ValueError,
            "kl",
        ),
        (
            lambda: decomposition_objective(
                torch.zeros(4), z_one[:3], mu_one, lv_one, p, alpha=1, beta=1
            ),
            ValueError,
            "z",
        ),
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


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_bad_input_names_the_argument(index):
    call, error, name = _bad_calls()[index]
    with pytest.raises(error, match=rf"\b{name}\b"):
        call()


def test_error_messages_start_with_the_argument():
    p = isotropic_gaussian(2)
    log_lik, z, mu, lv = torch.zeros(4), torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4, 2)
    kw = dict(alpha=1.0, beta=1.0)
    cases = [
        (
            lambda: decomposition_objective(log_lik, z, mu, lv, p, kl="exact", **kw),
            r"kl must be one of",
        ),
        (
            lambda: decomposition_objective(log_lik, z.clone().fill_(math.nan), mu, lv, p, **kw),
            r"z must be finite",
        ),
        (
            lambda: decomposition_objective(log_lik, z, mu, lv, p, n_prior_samples=0, **kw),
            r"n_prior_samples must be > 0, got 0$",
        ),
        (
            lambda: decomposition_objective(
                torch.zeros(3, 4),
                z.expand(3, 4, 2),
                mu.expand(3, 4, 2),
                lv.expand(3, 4, 2),
                p,
                alpha=torch.ones(2),
                beta=1.0,
            ),
            r"alpha must be a number or a tensor \(3,\) \(one per model\), got shape \(2,\)$",
        ),
        (lambda: StructuredVAE(_vae(), p, kl="exact"), r"kl must be one of"),
        (
            lambda: StructuredVAE(_vae(), p, alpha=0.5, learn_prior_variances=True),
            r"learn_prior_variances needs alpha = 0 \(a β-VAE objective\)$",
        ),
        (
            lambda: StructuredVAE(_vae(), p).terms(torch.full((2, 5), math.nan)),
            r"x must be finite",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match="^" + message):
            call()
    with pytest.raises(
        TypeError,
        match=r"^base must be a vaebook\.nets\.VAE or vaebook\.ensemble\.EnsembleVAE, got Linear$",
    ):
        StructuredVAE(torch.nn.Linear(2, 2), p)
    with pytest.raises(TypeError, match=r"^prior must be a vaebook\.priors\.Prior, got str$"):
        StructuredVAE(_vae(), "normal")
