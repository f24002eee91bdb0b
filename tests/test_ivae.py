"""Tests of vaebook.ivae (Bonheme & Grzes, 2023) against torch.distributions, the local-geometry
kernels on linear decoders and constructed statistics with known passive / active / mixed
answers (the kernels themselves: tests/test_local_geometry.py)."""

import math

import numpy as np
import pytest
import torch
from helpers import positive, randn, seeded_gen
from scipy import stats
from torch import nn
from torch.distributions import Bernoulli, Normal, kl_divergence

from vaebook.gaussian import sample_diag_normal
from vaebook.ivae import (
    IVAE,
    LATENT_LABELS,
    LatentClasses,
    Representations,
    classify_latents,
    laplace_posterior_variances,
    mlp_ivae,
    representations,
    rescale_latents,
)
from vaebook.local_geometry import decoder_jacobian, local_cost, optimal_posterior_variances
from vaebook.nets import VAE, mlp_decoder, mlp_encoder, seeded
from vaebook.train import fit

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)


# -- the IVAE ---------------------------------------------------------------------------------

X_SHAPE = (3, 4)  # one example: 12 "pixels"
KAPPA, AUX = 3, 2


def small_ivae(dtype=F64, **kwargs):
    return mlp_ivae(X_SHAPE, AUX, [16], KAPPA, prior_hidden=(8,), **kwargs).to(dtype)


def binary_batch(gen, n=6, dtype=F64):
    x = (torch.rand(n, *X_SHAPE, generator=gen) < 0.5).to(dtype)
    u = torch.rand(n, AUX, generator=gen).to(dtype)
    return x, u


def test_ivae_shapes_of_every_method(gen):
    model = small_ivae()
    x, u = binary_batch(gen)
    assert model.latent_dim == KAPPA
    mu, logvar = model.encode(x, u)
    assert mu.shape == logvar.shape == (6, KAPPA)
    prior_mu, prior_logvar = model.prior(u)
    assert prior_mu.shape == prior_logvar.shape == (6, KAPPA)
    assert model.decode(mu).shape == (6, *X_SHAPE)
    terms = model.terms(x, u, generator=gen)
    assert terms.reconstruction.shape == terms.kl.shape == (6,)
    assert terms.beta == 1.0
    assert model.sample(u, generator=gen).shape == (6, *X_SHAPE)
    assert model.reconstruct(x, u).shape == (6, *X_SHAPE)
    assert not model.reconstruct(x, u).requires_grad and not model.sample(u).requires_grad
    # A flat input shape and an int input shape.
    flat = mlp_ivae(12, AUX, [8], 2)
    assert flat.decode(torch.zeros(4, 2)).shape == (4, 12)


@pytest.mark.parametrize("learn_prior_mean", [False, True])
def test_ivae_kl_is_torch_distributions_kl_to_the_conditional_prior(gen, learn_prior_mean):
    model = small_ivae(learn_prior_mean=learn_prior_mean)
    x, u = binary_batch(gen)
    terms = model.terms(x, u, generator=seeded_gen(1))
    mu, logvar = model.encode(x, u)
    prior_mu, prior_logvar = model.prior(u)
    q = Normal(mu, (0.5 * logvar).exp())
    p = Normal(prior_mu, (0.5 * prior_logvar).exp())
    expected = kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(terms.kl, expected, rtol=1e-10, atol=1e-12)
    # Not the KL to the standard normal: the prior network matters.
    standard = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    assert not torch.allclose(terms.kl, standard, rtol=1e-3)


def test_ivae_prior_mean_is_zero_unless_learned(gen):
    _, u = binary_batch(gen)
    fixed = small_ivae()
    prior_mu, prior_logvar = fixed.prior(u)
    assert bool((prior_mu == 0).all())
    torch.testing.assert_close(prior_logvar, fixed.prior_net(u), rtol=0, atol=0)
    learned = small_ivae(learn_prior_mean=True)
    out = learned.prior_net(u)
    assert out.shape == (6, 2 * KAPPA)
    prior_mu, prior_logvar = learned.prior(u)
    torch.testing.assert_close(prior_mu, out[:, :KAPPA], rtol=0, atol=0)
    torch.testing.assert_close(prior_logvar, out[:, KAPPA:], rtol=0, atol=0)
    assert bool((prior_mu != 0).any())
    # The prior depends on u.
    assert not torch.allclose(fixed.prior(u + 1.0)[1], fixed.prior(u)[1])


@pytest.mark.parametrize("seed", [0, 7])
def test_ivae_reconstruction_is_the_bernoulli_log_likelihood_at_the_same_z(gen, seed):
    model = small_ivae()
    x, u = binary_batch(gen)
    terms = model.terms(x, u, generator=seeded_gen(seed))
    mu, logvar = model.encode(x, u)
    z = sample_diag_normal(mu, logvar, generator=seeded_gen(seed))
    expected = Bernoulli(logits=model.decode(z)).log_prob(x).sum((1, 2))
    torch.testing.assert_close(terms.reconstruction, expected, rtol=1e-12, atol=1e-12)
    # At another z the reconstruction differs: the sample is the one of the generator.
    other = sample_diag_normal(mu, logvar, generator=seeded_gen(seed + 1))
    moved = Bernoulli(logits=model.decode(other)).log_prob(x).sum((1, 2))
    assert not torch.allclose(terms.reconstruction, moved)
    torch.testing.assert_close(terms.objective, terms.reconstruction - terms.kl)


def test_ivae_gaussian_likelihood_and_beta(gen):
    with seeded(3):
        encoder = mlp_encoder((12 + AUX,), [8], KAPPA)
        decoder = mlp_decoder(KAPPA, [8], X_SHAPE)
        prior = nn.Linear(AUX, KAPPA)
    model = IVAE(encoder, decoder, prior, likelihood="gaussian", beta=2.5, log_gamma=-0.75)
    model = model.double()
    x = randn(gen, 5, *X_SHAPE)
    u = randn(gen, 5, AUX)
    terms = model.terms(x, u, generator=seeded_gen(2))
    mu, logvar = model.encode(x, u)
    z = sample_diag_normal(mu, logvar, generator=seeded_gen(2))
    std = math.exp(-0.75 / 2)
    expected = Normal(model.decode(z), std).log_prob(x).sum((1, 2))
    torch.testing.assert_close(terms.reconstruction, expected, rtol=1e-12, atol=1e-12)
    assert terms.beta == 2.5
    torch.testing.assert_close(terms.objective, terms.reconstruction - 2.5 * terms.kl)
    # Gaussian: E[x|z] is the decoder output itself.
    torch.testing.assert_close(model.reconstruct(x, u), model.decode(mu.detach()))
    # The default log_gamma is 0: a unit-variance decoder, the same as log_gamma = 0.0 given.
    default = IVAE(encoder, decoder, prior, likelihood="gaussian").double()
    explicit = IVAE(encoder, decoder, prior, likelihood="gaussian", log_gamma=0.0).double()
    terms = default.terms(x, u, generator=seeded_gen(2))
    expected = Normal(model.decode(z), 1.0).log_prob(x).sum((1, 2))
    torch.testing.assert_close(terms.reconstruction, expected, rtol=1e-12, atol=1e-12)
    other = explicit.terms(x, u, generator=seeded_gen(2))
    assert torch.equal(terms.reconstruction, other.reconstruction)
    assert torch.equal(terms.kl, other.kl)


def test_ivae_encoder_sees_x_and_u_concatenated(gen):
    model = small_ivae()
    x, u = binary_batch(gen)
    mu, logvar = model.encode(x, u)
    mu2, logvar2 = model.encoder(torch.cat([x.reshape(6, -1), u], dim=1))
    torch.testing.assert_close(mu, mu2, rtol=0, atol=0)
    torch.testing.assert_close(logvar, logvar2, rtol=0, atol=0)
    moved, _ = model.encode(x, u + 0.5)
    assert (moved - mu).abs().max().item() > 1e-4  # changing u changes the posterior
    # u as lists of Python floats is read in x's float64 (these values are not float32 ones):
    # exactly the posterior and the reconstruction of the float64 tensor.
    u64 = randn(gen, 6, AUX)
    for a, b in zip(model.encode(x, u64.tolist()), model.encode(x, u64), strict=True):
        assert a.dtype == F64 and torch.equal(a, b)
    assert torch.equal(model.reconstruct(x, u64.tolist()), model.reconstruct(x, u64))


def test_ivae_reconstruct_and_sample_decode_the_documented_latents(gen):
    model = small_ivae()
    x, u = binary_batch(gen)
    mu, _ = model.encode(x, u)
    torch.testing.assert_close(model.reconstruct(x, u), torch.sigmoid(model.decoder(mu)))
    prior_mu, prior_logvar = model.prior(u)
    eps = torch.randn(6, KAPPA, generator=seeded_gen(4), dtype=F64)
    z = prior_mu + (0.5 * prior_logvar).exp() * eps
    torch.testing.assert_close(
        model.sample(u, generator=seeded_gen(4)), torch.sigmoid(model.decoder(z))
    )
    assert torch.equal(model.sample(u, seeded_gen(4)), model.sample(u, seeded_gen(4)))


def test_mlp_ivae_is_seeded_and_has_the_documented_layers():
    a, b, c = small_ivae(seed=5), small_ivae(seed=5), small_ivae(seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa if sa[k].dtype.is_floating_point)
    linears = [m for m in a.encoder.modules() if isinstance(m, nn.Linear)]
    assert linears[0].in_features == 12 + AUX
    prior_linears = [m for m in a.prior_net.modules() if isinstance(m, nn.Linear)]
    assert [m.in_features for m in prior_linears] == [AUX, 8]
    assert prior_linears[-1].out_features == KAPPA
    assert any(isinstance(m, nn.LeakyReLU) for m in a.prior_net.modules())
    assert a.likelihood == "bernoulli" and not a.learn_prior_mean
    assert small_ivae(likelihood="gaussian").likelihood == "gaussian"
    # The default seed is 0.
    default, explicit = small_ivae().state_dict(), small_ivae(seed=0).state_dict()
    assert all(torch.equal(default[k], explicit[k]) for k in default)
    # The decoder mirrors the encoder: hidden (16, 8, 4) -> decoder widths κ, 4, 8, 16, 12.
    model = mlp_ivae(X_SHAPE, AUX, [16, 8, 4], KAPPA)
    encoder = [
        (m.in_features, m.out_features) for m in model.encoder.modules() if isinstance(m, nn.Linear)
    ]
    assert encoder[:3] == [(12 + AUX, 16), (16, 8), (8, 4)]
    decoder = [
        (m.in_features, m.out_features) for m in model.decoder.modules() if isinstance(m, nn.Linear)
    ]
    assert decoder == [(KAPPA, 4), (4, 8), (8, 16), (16, 12)]


def test_ivae_gradients_reach_the_prior_network(gen):
    model = small_ivae()
    x, u = binary_batch(gen)
    model.terms(x, u, generator=gen).mean().objective.backward()
    assert all(
        p.grad is not None and bool((p.grad != 0).any()) for p in model.prior_net.parameters()
    )


def test_fit_trains_an_ivae_from_the_pair_x_u():
    gen = seeded_gen(11)
    n = 96
    u = torch.rand(n, AUX, generator=gen)
    # Pixel probabilities that depend on u: sharp images the model can learn.
    weights = torch.randn(AUX, 12, generator=gen) * 4
    x = (
        (torch.rand(n, 12, generator=gen) < torch.sigmoid(u @ weights - 1))
        .float()
        .reshape(n, *X_SHAPE)
    )
    model = mlp_ivae(X_SHAPE, AUX, [32], 2, prior_hidden=(8,), seed=0)
    history = fit(model, (x, u), epochs=40, lr=1e-2, progress=False, device="cpu")
    assert len(history) == 40
    assert history["elbo"][-1] > history["elbo"][0] + 1.0
    # The trained model gives a better ELBO than a fresh one on the same data.
    fresh = mlp_ivae(X_SHAPE, AUX, [32], 2, prior_hidden=(8,), seed=0)
    with torch.no_grad():
        trained = model.terms(x, u, generator=seeded_gen(0)).mean().elbo.item()
        initial = fresh.terms(x, u, generator=seeded_gen(0)).mean().elbo.item()
    assert trained > initial + 1.0


with seeded(0):  # modules for the bad-input tables, without touching the global RNG
    ENC = mlp_encoder((12 + AUX,), [4], KAPPA)
    DEC = mlp_decoder(KAPPA, [4], X_SHAPE)
    PRIOR = nn.Linear(AUX, KAPPA)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        # the message names the argument and the type it got
        (("encoder", DEC, PRIOR), {}, TypeError, "encoder must be a torch.nn.Module, got str$"),
        (
            (ENC, lambda z: z, PRIOR),
            {},
            TypeError,
            "decoder must be a torch.nn.Module, got function$",
        ),
        ((ENC, DEC, None), {}, TypeError, "prior must be a torch.nn.Module, got NoneType$"),
        ((ENC, DEC, PRIOR), {"likelihood": "poisson"}, ValueError, "likelihood must be one of"),
        ((ENC, DEC, PRIOR), {"beta": 0.0}, ValueError, "beta must be > 0"),
        ((ENC, DEC, PRIOR), {"beta": -2.0}, ValueError, "beta must be > 0"),
        ((ENC, DEC, PRIOR), {"beta": math.nan}, ValueError, "beta must be finite"),
        ((ENC, DEC, PRIOR), {"beta": "1"}, TypeError, "beta must be a number"),
        ((ENC, DEC, PRIOR), {"log_gamma": math.inf}, ValueError, "log_gamma must be finite"),
        ((ENC, DEC, PRIOR), {"log_gamma": math.nan}, ValueError, "log_gamma must be finite"),
        ((ENC, DEC, PRIOR), {"log_gamma": "small"}, TypeError, "log_gamma must be a number"),
        ((ENC, DEC, PRIOR), {"log_gamma": None}, TypeError, "log_gamma must be a number"),
    ],
)
def test_ivae_constructor_rejects_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match="^" + match):
        IVAE(*args, **kwargs)


MODEL = small_ivae(dtype=torch.float32)
XB = torch.ones(4, *X_SHAPE)
UB = torch.zeros(4, AUX)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m: m.encode(torch.ones(12), UB), ValueError, r"x must be a batch \(n, \.\.\.\)"),
        (lambda m: m.encode(XB, torch.zeros(3, AUX)), ValueError, r"u must be \(n, m\) with n = 4"),
        (lambda m: m.encode(XB, torch.zeros(4)), ValueError, r"u must be \(n, m\)"),
        (lambda m: m.encode(XB, None), TypeError, "u must be a tensor"),
        (lambda m: m.encode("x", UB), TypeError, "x must be a tensor"),
        (lambda m: m.encode(XB * math.nan, UB), ValueError, "x must be finite"),
        (lambda m: m.encode(XB, UB + math.inf), ValueError, "u must be finite"),
        (lambda m: m.terms(XB, torch.zeros(5, AUX)), ValueError, r"u must be \(n, m\) with n = 4"),
        (lambda m: m.terms(XB * 2, UB), ValueError, r"x must lie in \[0, 1\]"),
        (lambda m: m.prior(torch.zeros(AUX)), ValueError, r"u must be \(n, m\)"),
        (lambda m: m.prior(torch.zeros(1, 2, AUX)), ValueError, r"u must be \(n, m\)"),
        (lambda m: m.prior(None), TypeError, "u must be a tensor"),
        (lambda m: m.sample(torch.zeros(AUX)), ValueError, r"u must be \(n, m\)"),
        (lambda m: m.sample(UB, generator="seed"), TypeError, "generator must be"),
        (lambda m: m.reconstruct(XB, torch.zeros(2, AUX)), ValueError, "u must be"),
    ],
)
def test_ivae_methods_reject_bad_input(call, error, match):
    with pytest.raises(error, match="^" + match):
        call(MODEL)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((X_SHAPE, 0, [4], 2), {}, ValueError, "aux_dim must be > 0"),
        ((X_SHAPE, 2.0, [4], 2), {}, TypeError, "aux_dim must be an int"),
        ((X_SHAPE, True, [4], 2), {}, TypeError, "aux_dim must be an int"),
        ((X_SHAPE, 2, [4], 0), {}, ValueError, "latent_dim must be > 0"),
        ((X_SHAPE, 2, [4], 1.5), {}, TypeError, "latent_dim must be an int"),
        (((0, 4), 2, [4], 2), {}, ValueError, "every entry of input_shape must be > 0"),
        (((3.0, 4), 2, [4], 2), {}, TypeError, "every entry of input_shape must be an int"),
        (("ab", 2, [4], 2), {}, TypeError, "every entry of input_shape must be an int"),
        ((0, 2, [4], 2), {}, ValueError, "every entry of input_shape must be > 0"),
        ((X_SHAPE, 2, [], 2), {}, ValueError, "hidden needs at least 1"),
        ((X_SHAPE, 2, [4], 2), {"prior_hidden": []}, ValueError, "prior_hidden needs at least 1"),
        (
            (X_SHAPE, 2, [4], 2),
            {"prior_hidden": (8, 0)},
            ValueError,
            "every entry of prior_hidden must be > 0",
        ),
        ((X_SHAPE, 2, [4], 2), {"likelihood": "poisson"}, ValueError, "likelihood must be one"),
        ((X_SHAPE, 2, [4], 2), {"seed": -1}, ValueError, "seed must be >= 0"),
        ((X_SHAPE, 2, [4], 2), {"seed": 1.5}, TypeError, "seed must be an int"),
        pytest.param(
            ((-2, -3), 2, [4], 2),
            {},
            ValueError,
            "every entry of input_shape must be > 0",
        ),
        pytest.param(
            (None, 2, [4], 2),
            {},
            TypeError,
            "input_shape",
        ),
    ],
)
def test_mlp_ivae_rejects_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match="^" + match):
        mlp_ivae(*args, **kwargs)


# -- representations --------------------------------------------------------------------------


def small_vae():
    with seeded(0):
        return VAE(mlp_encoder(X_SHAPE, [8], KAPPA), mlp_decoder(KAPPA, [8], X_SHAPE)).double()


def test_representations_of_an_ivae(gen):
    model = small_ivae()
    x, u = binary_batch(gen, n=9)
    reps = representations(model, x, u, seed=3)
    assert isinstance(reps, Representations)
    for name in ("mean", "variance", "sample", "prior_mean", "prior_variance", "prior_sample"):
        value = getattr(reps, name)
        assert isinstance(value, np.ndarray) and value.shape == (9, KAPPA), name
        assert value.dtype == np.float64, name
    with torch.no_grad():
        mu, logvar = model.encode(x, u)
        prior_mu, prior_logvar = model.prior(u)
    np.testing.assert_array_equal(reps.mean, mu.numpy())
    np.testing.assert_allclose(reps.variance, np.exp(logvar.numpy()), rtol=1e-15)
    np.testing.assert_array_equal(reps.prior_mean, 0.0)
    np.testing.assert_allclose(reps.prior_variance, np.exp(prior_logvar.numpy()), rtol=1e-15)
    # z = μ + σ^½ ε and z† = μ† + (σ†)^½ ε†, ε then ε† from one generator seeded by `seed`.
    g = seeded_gen(3)
    eps = torch.randn(9, KAPPA, generator=g, dtype=F64).numpy()
    eps_prior = torch.randn(9, KAPPA, generator=g, dtype=F64).numpy()
    np.testing.assert_allclose(reps.sample, reps.mean + np.sqrt(reps.variance) * eps, rtol=1e-12)
    np.testing.assert_allclose(
        reps.prior_sample, prior_mu.numpy() + np.sqrt(reps.prior_variance) * eps_prior, rtol=1e-12
    )
    # A float32 model gives float64 arrays too, and encodes x and u in its own dtype: float64
    # inputs give exactly what their float32 copies give.
    model32 = small_ivae(torch.float32)
    reps32 = representations(model32, x.float(), u.float())
    assert reps32.mean.dtype == np.float64
    from64 = representations(model32, x, u)
    for name in ("mean", "variance", "sample", "prior_mean", "prior_variance", "prior_sample"):
        np.testing.assert_array_equal(getattr(from64, name), getattr(reps32, name), name)
    # the same for a plain VAE
    vae32 = small_vae().float()
    np.testing.assert_array_equal(
        representations(vae32, x).sample, representations(vae32, x.float()).sample
    )


def test_representations_of_a_plain_vae_use_the_standard_prior(gen):
    model = small_vae()
    x = torch.rand(8, *X_SHAPE, generator=gen, dtype=F64)
    reps = representations(model, x, seed=1)
    np.testing.assert_array_equal(reps.prior_mean, np.zeros((8, KAPPA)))
    np.testing.assert_array_equal(reps.prior_variance, np.ones((8, KAPPA)))
    g = seeded_gen(1)
    eps = torch.randn(8, KAPPA, generator=g, dtype=F64).numpy()
    np.testing.assert_array_equal(reps.prior_sample, torch.randn(8, KAPPA, generator=g, dtype=F64))
    with torch.no_grad():
        mu, logvar = model.encode(x)
    np.testing.assert_array_equal(reps.mean, mu.numpy())
    np.testing.assert_allclose(
        reps.sample, mu.numpy() + np.exp(logvar.numpy() / 2) * eps, rtol=1e-12
    )


def test_representations_do_not_depend_on_the_batch_size_and_follow_the_seed(gen):
    model = small_ivae()
    x, u = binary_batch(gen, n=11)
    whole = representations(model, x, u, seed=2)
    for batch_size in (1, 3, 11, 50):
        parts = representations(model, x, u, seed=2, batch_size=batch_size)
        for name in ("mean", "variance", "sample", "prior_mean", "prior_variance", "prior_sample"):
            np.testing.assert_allclose(
                getattr(parts, name), getattr(whole, name), rtol=1e-13, atol=1e-15
            )
    again = representations(model, x, u, seed=2)
    np.testing.assert_array_equal(again.sample, whole.sample)
    np.testing.assert_array_equal(again.prior_sample, whole.prior_sample)
    other = representations(model, x, u, seed=3)
    assert not np.allclose(other.sample, whole.sample)
    np.testing.assert_array_equal(other.mean, whole.mean)
    # The default seed is 0.
    default, explicit = representations(model, x, u), representations(model, x, u, seed=0)
    np.testing.assert_array_equal(default.sample, explicit.sample)
    np.testing.assert_array_equal(default.prior_sample, explicit.prior_sample)


def test_representation_samples_are_gaussian_around_the_mean(gen):
    model = small_ivae()
    x, u = binary_batch(gen, n=1500)
    reps = representations(model, x, u, seed=0)
    eps = (reps.sample - reps.mean) / np.sqrt(reps.variance)
    eps_prior = (reps.prior_sample - reps.prior_mean) / np.sqrt(reps.prior_variance)
    for j in range(KAPPA):
        assert stats.kstest(eps[:, j], "norm").pvalue > 1e-3
        assert stats.kstest(eps_prior[:, j], "norm").pvalue > 1e-3
        # ε and ε† are independent draws.
        assert abs(np.corrcoef(eps[:, j], eps_prior[:, j])[0, 1]) < 4 / math.sqrt(1500)


IVAE_MODEL = small_ivae()
VAE_MODEL = small_vae()
XR = torch.ones(4, *X_SHAPE, dtype=F64)
UR = torch.zeros(4, AUX, dtype=F64)


@pytest.mark.parametrize(
    ("model", "x", "u", "kwargs", "error", "match"),
    [
        (IVAE_MODEL, XR, None, {}, ValueError, "u is required for an IVAE"),
        (VAE_MODEL, XR, UR, {}, ValueError, "u must be None for a plain VAE"),
        (nn.Linear(2, 2), XR, None, {}, TypeError, "model must be an IVAE or a VAE, got Linear$"),
        (IVAE_MODEL, XR, torch.zeros(3, AUX), {}, ValueError, r"u must be \(n, m\) with n = 4"),
        (IVAE_MODEL, XR * math.nan, UR, {}, ValueError, "x must be finite"),
        (IVAE_MODEL, "x", UR, {}, TypeError, "x must be a tensor"),
        (IVAE_MODEL, torch.ones(4), UR, {}, ValueError, r"x must be a non-empty batch"),
        (IVAE_MODEL, XR, UR, {"seed": -1}, ValueError, "seed must be >= 0"),
        (IVAE_MODEL, XR, UR, {"seed": 0.5}, TypeError, "seed must be an int"),
        (IVAE_MODEL, XR, UR, {"batch_size": 0}, ValueError, "batch_size must be > 0"),
        (IVAE_MODEL, XR, UR, {"batch_size": 2.0}, TypeError, "batch_size must be an int"),
        pytest.param(
            IVAE_MODEL,
            torch.ones(0, *X_SHAPE, dtype=F64),
            torch.zeros(0, AUX, dtype=F64),
            {},
            ValueError,
            "x must",
        ),
    ],
)
def test_representations_reject_bad_input(model, x, u, kwargs, error, match):
    with pytest.raises(error, match="^" + match):
        representations(model, x, u, **kwargs)


# -- rescale_latents: the scale freedom ------------------------------------------------------

SCALES = [0.1, 1.0, 3.0, 0.5]  # one per latent of rescalable_ivae()


def rescalable_ivae(**kwargs):
    """Four latents (one per entry of SCALES), two hidden layers so the decoder's first linear
    layer is not its only one, and a learned prior that moves with u."""
    return mlp_ivae(X_SHAPE, AUX, [16, 8], 4, prior_hidden=(8,), seed=1, **kwargs).double()


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("learn_prior_mean", [False, True])
def test_rescale_latents_leaves_every_term_of_the_objective_unchanged(
    gen, learn_prior_mean, likelihood
):
    model = rescalable_ivae(learn_prior_mean=learn_prior_mean, likelihood=likelihood)
    x, u = binary_batch(gen, n=8)
    scaled = rescale_latents(model, SCALES)
    with torch.no_grad():
        before = model.terms(x, u, generator=seeded_gen(5))
        after = scaled.terms(x, u, generator=seeded_gen(5))
    torch.testing.assert_close(after.reconstruction, before.reconstruction, rtol=0, atol=1e-12)
    torch.testing.assert_close(after.kl, before.kl, rtol=0, atol=1e-12)
    assert after.beta == before.beta
    # the check can fail: with another draw of z the reconstruction moves by far more
    with torch.no_grad():
        other = scaled.terms(x, u, generator=seeded_gen(6))
    assert (other.reconstruction - before.reconstruction).abs().max().item() > 1e-3


@pytest.mark.parametrize("learn_prior_mean", [False, True])
def test_rescale_latents_scales_encoder_prior_and_decoder_as_documented(gen, learn_prior_mean):
    model = rescalable_ivae(learn_prior_mean=learn_prior_mean)
    x, u = binary_batch(gen, n=8)
    a = torch.tensor(SCALES, dtype=F64)
    scaled = rescale_latents(model, SCALES)
    with torch.no_grad():
        mu, logvar = model.encode(x, u)
        mu2, logvar2 = scaled.encode(x, u)
        prior_mu, prior_logvar = model.prior(u)
        prior_mu2, prior_logvar2 = scaled.prior(u)
        z = 2 * randn(gen, 8, 4)
        decoded, decoded2 = model.decode(z), scaled.decode(a * z)
    torch.testing.assert_close(mu2, a * mu, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(logvar2.exp(), a**2 * logvar.exp(), rtol=1e-12, atol=0)
    torch.testing.assert_close(prior_logvar2.exp(), a**2 * prior_logvar.exp(), rtol=1e-12, atol=0)
    torch.testing.assert_close(prior_mu2, a * prior_mu, rtol=1e-12, atol=1e-13)
    if learn_prior_mean:
        assert prior_mu.abs().min().item() > 1e-4  # a * μ† differs from μ†: the check can fail
    else:
        assert bool((prior_mu2 == 0).all())
    torch.testing.assert_close(decoded2, decoded, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(scaled.decode(z), decoded)  # the copy's decoder did change
    # one number scales every latent
    torch.testing.assert_close(
        rescale_latents(model, 2.0).encode(x, u)[0], 2.0 * mu, rtol=1e-12, atol=1e-13
    )


@pytest.mark.parametrize("learn_prior_mean", [False, True])
def test_rescale_latents_leaves_the_original_model_unchanged(learn_prior_mean):
    model = rescalable_ivae(learn_prior_mean=learn_prior_mean)
    before = state(model)
    scaled = rescale_latents(model, SCALES)
    after = state(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the copy shares no parameter storage with the original: changing it leaves model alone
    with torch.no_grad():
        for p in scaled.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(scaled, IVAE) and scaled is not model
    assert scaled.learn_prior_mean == learn_prior_mean and scaled.likelihood == model.likelihood


def _softplus_prior_ivae():
    with seeded(0):
        encoder = mlp_encoder((12 + AUX,), [4], KAPPA)
        decoder = mlp_decoder(KAPPA, [4], X_SHAPE)
        prior = nn.Sequential(nn.Linear(AUX, KAPPA), nn.Softplus())
    return IVAE(encoder, decoder, prior).double()


def _tanh_first_decoder_ivae():
    with seeded(0):
        encoder = mlp_encoder((12 + AUX,), [4], KAPPA)
        decoder = nn.Sequential(nn.Tanh(), mlp_decoder(KAPPA, [4], X_SHAPE))
        prior = nn.Linear(AUX, KAPPA)
    return IVAE(encoder, decoder, prior).double()


@pytest.mark.parametrize(
    ("model", "scales", "error", "match"),
    [
        ("model", [1.0] * KAPPA, TypeError, "model"),
        (VAE_MODEL, [1.0] * KAPPA, TypeError, "model"),
        (nn.Linear(3, 3), [1.0] * KAPPA, TypeError, "model"),
        (small_ivae(), [1.0, 2.0], ValueError, "scales"),
        (small_ivae(), [1.0] * (KAPPA + 1), ValueError, "scales"),
        (small_ivae(), [1.0, 0.0, 2.0], ValueError, "scales"),
        (small_ivae(), [1.0, -2.0, 2.0], ValueError, "scales"),
        (small_ivae(), 0.0, ValueError, "scales"),
        (small_ivae(), -1.0, ValueError, "scales"),
        # the documented structure: the prior network must end with a linear layer, the
        # decoder must start with one (else the rescaled copy would not be equivalent)
        pytest.param(
            _softplus_prior_ivae(), [1.0] * KAPPA, ValueError, "model", id="prior-ends-softplus"
        ),
        pytest.param(
            _tanh_first_decoder_ivae(), [1.0] * KAPPA, ValueError, "model", id="decoder-tanh-first"
        ),
    ],
)
def test_rescale_latents_rejects_bad_input(model, scales, error, match):
    with pytest.raises(error, match="^" + match):
        rescale_latents(model, scales)


# -- classify_latents -------------------------------------------------------------------------


def constructed_statistics():
    """n = 20 examples, 5 latents with known labels (columns):

    0 passive (μ ≈ μ†, σ ≈ σ† = 1); 1 active (σ = 1e-3 σ†); 2 mixed (active on the first half,
    passive on the second); 3 passive under an iVAE prior of variance 0.01 (σ = 0.01 too);
    4 noisy but 3 prior sds off its mean: neither, so mixed.
    """
    n = 20
    half = np.arange(n) < n // 2
    rng = np.random.default_rng(0)
    prior_mu = np.zeros((n, 5))
    prior_mu[:, 4] = rng.normal(size=n)
    prior_var = np.ones((n, 5))
    prior_var[:, 3] = 0.01
    prior_var[:, 4] = 4.0
    mu = 0.1 * rng.normal(size=(n, 5)) * np.sqrt(prior_var)
    var = prior_var * rng.uniform(0.8, 1.2, size=(n, 5))
    var[:, 1] = 1e-3
    mu[:, 1] = rng.normal(size=n)  # an active latent moves its mean freely
    var[half, 2] = 1e-3
    mu[half, 2] = rng.normal(size=half.sum())
    mu[:, 4] = prior_mu[:, 4] + 3.0 * 2.0 * rng.choice([-1.0, 1.0], size=n)
    return mu, var, prior_mu, prior_var


def test_classify_latents_on_constructed_statistics():
    mu, var, prior_mu, prior_var = constructed_statistics()
    classes = classify_latents(mu, var, prior_mu, prior_var)
    assert isinstance(classes, LatentClasses)
    assert list(classes.labels) == ["passive", "active", "mixed", "passive", "mixed"]
    np.testing.assert_array_equal(classes.passive_fraction, [1.0, 0.0, 0.5, 1.0, 0.0])
    np.testing.assert_array_equal(classes.active_fraction, [0.0, 1.0, 0.5, 0.0, 0.0])
    np.testing.assert_array_equal(classes.passive, [0, 3])
    np.testing.assert_array_equal(classes.active, [1])
    np.testing.assert_array_equal(classes.mixed, [2, 4])
    for label in LATENT_LABELS:
        np.testing.assert_array_equal(classes.indices(label), getattr(classes, label))
    assert classes.counts() == {"passive": 2, "active": 1, "mixed": 2}
    assert classes.indices("active").dtype.kind == "i"


def test_classify_latents_is_relative_to_the_prior_variance():
    # σ = σ† = 0.01: passive for the iVAE prior, but active against a standard prior.
    mu = np.zeros((10, 1))
    var = np.full((10, 1), 0.01)
    assert list(classify_latents(mu, var, prior_var=0.01).labels) == ["passive"]
    assert list(classify_latents(mu, var).labels) == ["active"]
    # The mean condition scales with the prior sd: 0.3 is 3 sds of a 0.01 prior but 0.3 of 1.
    mu = np.full((10, 1), 0.3)
    noisy = np.full((10, 1), 0.01)
    assert list(classify_latents(mu, noisy, prior_var=0.01).labels) == ["mixed"]
    assert list(classify_latents(mu, np.ones((10, 1))).labels) == ["passive"]


def test_classify_latents_defaults_to_the_standard_prior_and_broadcasts():
    mu, var, prior_mu, prior_var = constructed_statistics()
    row_mu, row_var = prior_mu[0], prior_var[0]
    full = classify_latents(mu[:, :4], var[:, :4], prior_mu[:, :4], prior_var[:, :4])
    rows = classify_latents(mu[:, :4], var[:, :4], row_mu[:4], row_var[:4])
    assert list(rows.labels) == list(full.labels)
    np.testing.assert_array_equal(rows.passive_fraction, full.passive_fraction)
    standard = classify_latents(mu[:, :3], var[:, :3])
    explicit = classify_latents(mu[:, :3], var[:, :3], 0.0, 1.0)
    assert list(standard.labels) == list(explicit.labels) == ["passive", "active", "mixed"]
    # Tensors are accepted.
    tensors = classify_latents(torch.as_tensor(mu[:, :3]), torch.as_tensor(var[:, :3]))
    assert list(tensors.labels) == ["passive", "active", "mixed"]


def test_classify_latents_defaults_are_the_documented_thresholds():
    # variance ratios ρ in (0.1, 1.5) and mean offsets up to 2 prior sds in latents 0-2: their
    # fractions move with variance_ratio and mean_tolerance; latent 3 is passive for 37 of 40
    # examples, passive at consistency 0.9 but mixed at 0.95. The defaults are 0.5, 0.5, 0.95.
    rng = np.random.default_rng(1)
    n = 40
    prior_mu, prior_var = rng.normal(size=(n, 4)), rng.uniform(0.5, 2.0, size=(n, 4))
    var = prior_var * rng.uniform(0.1, 1.5, size=(n, 4))
    mu = prior_mu + np.sqrt(prior_var) * rng.uniform(-2.0, 2.0, size=(n, 4))
    var[:, 3] = prior_var[:, 3]
    mu[:, 3] = prior_mu[:, 3] + 5.0 * np.sqrt(prior_var[:, 3]) * (np.arange(n) < 3)
    documented = {"variance_ratio": 0.5, "mean_tolerance": 0.5, "consistency": 0.95}
    explicit = classify_latents(mu, var, prior_mu, prior_var, **documented)
    default = classify_latents(mu, var, prior_mu, prior_var)
    assert list(default.labels) == list(explicit.labels)
    np.testing.assert_array_equal(default.passive_fraction, explicit.passive_fraction)
    np.testing.assert_array_equal(default.active_fraction, explicit.active_fraction)
    assert default.labels[3] == "mixed"
    # the data can tell each threshold from another value
    for name, value in (("variance_ratio", 0.7), ("mean_tolerance", 1.5), ("consistency", 0.9)):
        moved = classify_latents(mu, var, prior_mu, prior_var, **{**documented, name: value})
        assert not (
            np.array_equal(moved.passive_fraction, explicit.passive_fraction)
            and np.array_equal(moved.active_fraction, explicit.active_fraction)
            and list(moved.labels) == list(explicit.labels)
        ), name


@pytest.mark.parametrize(
    ("mu", "var", "prior_mu", "prior_var", "label"),
    [
        # |μ - μ†| = 1 > 0.5 prior sd, ρ = 1: neither (float32 would round 1e8 + 1 to 1e8)
        ([[1e8 + 1.0]], [[1.0]], np.array([1e8]), None, "mixed"),
        # ρ = 0.5 - 1e-10 < 0.5: active (float32 would round it to 0.5)
        ([[0.0]], [[0.5 - 1e-10]], None, None, "active"),
        # μ† = μ = 1e8 + 1: passive (float32 would move μ† by 1 prior sd)
        (np.array([[1e8 + 1.0]]), [[1.0]], [1e8 + 1.0], None, "passive"),
        # ρ = 0.5 / (1 + 1e-9) < 0.5: active (float32 would round σ† to 1)
        ([[0.0]], [[0.5]], None, [1.0 + 1e-9], "active"),
    ],
)
def test_classify_latents_reads_python_floats_in_float64(mu, var, prior_mu, prior_var, label):
    classes = classify_latents(mu, var, prior_mu, prior_var)
    assert list(classes.labels) == [label]
    # the same as float64 arrays of the same numbers
    args = (mu, var, prior_mu, prior_var)
    arrays = [None if v is None else np.asarray(v, dtype=np.float64) for v in args]
    assert list(classify_latents(*arrays).labels) == [label]


def test_classify_latents_thresholds_at_their_boundaries():
    n = 20
    # variance ratio exactly at the threshold is not active; a mean exactly at the tolerance
    # is near the prior mean (prior var 4, sd 2, tolerance 0.5: |μ| = 1 is passive).
    mu = np.full((n, 2), 1.0)
    mu[:, 1] = 1.0 + 1e-9
    var = np.full((n, 2), 2.0)
    classes = classify_latents(mu, var, 0.0, 4.0, variance_ratio=0.5, mean_tolerance=0.5)
    np.testing.assert_array_equal(classes.active_fraction, [0.0, 0.0])
    np.testing.assert_array_equal(classes.passive_fraction, [1.0, 0.0])
    just_below = classify_latents(mu, var * (1 - 1e-12), 0.0, 4.0, variance_ratio=0.5)
    np.testing.assert_array_equal(just_below.active_fraction, [1.0, 1.0])
    assert list(just_below.labels) == ["active", "active"]


@pytest.mark.parametrize("label", ["passive", "active"])
def test_classify_latents_consistency_boundary(label):
    n = 20
    mu = np.zeros((n, 2))
    if label == "passive":
        var = np.ones((n, 2))
        mu[:1, 0] = 5.0  # 19 of 20 passive
        mu[:2, 1] = 5.0  # 18 of 20 passive
    else:
        var = np.full((n, 2), 1e-4)
        var[:1, 0] = 1.0  # 19 of 20 active
        var[:2, 1] = 1.0  # 18 of 20 active
    fraction = f"{label}_fraction"
    classes = classify_latents(mu, var, consistency=0.95)
    np.testing.assert_array_equal(getattr(classes, fraction), [0.95, 0.9])
    assert list(classes.labels) == [label, "mixed"]
    assert list(classify_latents(mu, var, consistency=0.9).labels) == [label, label]
    assert list(classify_latents(mu, var, consistency=0.96).labels) == ["mixed", "mixed"]
    assert list(classify_latents(mu, var, consistency=1.0).labels) == ["mixed", "mixed"]


def test_classify_latents_mixed_is_the_catch_all_and_95_percent_is_enough():
    """Per input, "a" is active (ρ < 0.1), "p" passive (ρ ≈ 1, mean within 0.2 prior sds),
    "x" neither (ρ in (0.7, 1), mean 2-3 prior sds off); the inputs of each kind are spread
    at random. Over the 100 inputs: 90 a + 10 x is not active 95 % of the time, nor passive,
    so it is mixed; 97 p + 3 a is passive and 97 a + 3 x active (the 95 % rule); 100 x is
    mixed, the catch-all, although no input is passive or active."""
    n = 100
    rng = np.random.default_rng(2)
    # the label each latent must get, and how many of its inputs are of kind (a, p, x)
    latents = [("mixed", (90, 0, 10)), ("passive", (3, 97, 0))]
    latents += [("active", (97, 0, 3)), ("mixed", (0, 0, 100))]
    k = len(latents)
    prior_mu, prior_var = rng.normal(size=(n, k)), rng.uniform(0.5, 2.0, size=(n, k))
    sd = np.sqrt(prior_var)
    ratio = {"a": rng.uniform(0.01, 0.1, (n, k)), "p": rng.uniform(0.9, 1.1, (n, k))}
    ratio["x"] = rng.uniform(0.7, 1.0, (n, k))
    offset = {"a": rng.normal(0.0, 2.0, (n, k)), "p": rng.uniform(-0.2, 0.2, (n, k))}
    offset["x"] = rng.choice([-1.0, 1.0], (n, k)) * rng.uniform(2.0, 3.0, (n, k))
    mu, var = np.empty((n, k)), np.empty((n, k))
    for j, (_, counts) in enumerate(latents):
        per_input = rng.permutation(np.repeat(["a", "p", "x"], counts))
        for kind in "apx":
            rows = per_input == kind
            var[rows, j] = ratio[kind][rows, j] * prior_var[rows, j]
            mu[rows, j] = prior_mu[rows, j] + offset[kind][rows, j] * sd[rows, j]
    classes = classify_latents(mu, var, prior_mu, prior_var)
    np.testing.assert_allclose(classes.active_fraction, [0.9, 0.03, 0.97, 0.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(classes.passive_fraction, [0.0, 0.97, 0.0, 0.0], rtol=0, atol=1e-15)
    assert list(classes.labels) == [label for label, _ in latents]
    assert classes.counts() == {"passive": 1, "active": 1, "mixed": 2}


def test_latent_classes_indices_reject_an_unknown_label():
    classes = classify_latents(np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"^label must be one of"):
        classes.indices("dead")
    assert classes.counts() == {"passive": 3, "active": 0, "mixed": 0}
    assert classes.active.size == 0


MU = np.zeros((4, 3))
VAR = np.ones((4, 3))


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((np.zeros(3), np.ones(3)), {}, ValueError, r"mu must be \(n, kappa\) with n >= 1"),
        ((np.zeros((0, 3)), np.ones((0, 3))), {}, ValueError, r"mu must be \(n, kappa\)"),
        ((MU * math.nan, VAR), {}, ValueError, "mu must be finite"),
        (("mu", VAR), {}, TypeError, "mu must be a tensor"),
        ((MU, np.ones((4, 2))), {}, ValueError, r"var has shape \(4, 2\) but mu has \(4, 3\)"),
        ((MU, VAR * 0), {}, ValueError, "var must hold positive variances"),
        ((MU, -VAR), {}, ValueError, "var must hold positive variances"),
        ((MU, VAR * math.inf), {}, ValueError, "var must be finite"),
        ((MU, None), {}, TypeError, "var must be a tensor"),
        ((MU, VAR, np.zeros(2)), {}, ValueError, r"prior_mu of shape \(2,\) does not broadcast"),
        ((MU, VAR, np.full(3, math.nan)), {}, ValueError, "prior_mu must be finite"),
        ((MU, VAR, 0.0, np.ones((3, 3))), {}, ValueError, "prior_var of shape"),
        ((MU, VAR, 0.0, 0.0), {}, ValueError, "prior_var must hold positive variances"),
        ((MU, VAR, 0.0, -np.ones(3)), {}, ValueError, "prior_var must hold positive"),
        ((MU, VAR, 0.0, math.inf), {}, ValueError, "prior_var must be finite"),
        ((MU, VAR), {"variance_ratio": 0.0}, ValueError, "variance_ratio must be > 0"),
        ((MU, VAR), {"variance_ratio": 1.0}, ValueError, r"variance_ratio must be in \(0, 1\)"),
        ((MU, VAR), {"variance_ratio": 2.0}, ValueError, r"variance_ratio must be in \(0, 1\)"),
        ((MU, VAR), {"variance_ratio": math.nan}, ValueError, "variance_ratio must be finite"),
        ((MU, VAR), {"variance_ratio": "half"}, TypeError, "variance_ratio must be a number"),
        ((MU, VAR), {"mean_tolerance": 0.0}, ValueError, "mean_tolerance must be > 0"),
        ((MU, VAR), {"mean_tolerance": -1.0}, ValueError, "mean_tolerance must be > 0"),
        ((MU, VAR), {"mean_tolerance": math.inf}, ValueError, "mean_tolerance must be finite"),
        ((MU, VAR), {"mean_tolerance": None}, TypeError, "mean_tolerance must be a number"),
        ((MU, VAR), {"consistency": 0.5}, ValueError, r"consistency must be in \(0\.5, 1\]"),
        ((MU, VAR), {"consistency": 1.01}, ValueError, r"consistency must be in \(0\.5, 1\]"),
        ((MU, VAR), {"consistency": 0.0}, ValueError, "consistency must be > 0"),
        ((MU, VAR), {"consistency": math.nan}, ValueError, "consistency must be finite"),
        pytest.param(
            (MU, VAR, 0.0, np.ones((2, 4, 3))),
            {},
            ValueError,
            "prior_var",
        ),
    ],
)
def test_classify_latents_rejects_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match="^" + match):
        classify_latents(*args, **kwargs)


# -- laplace_posterior_variances --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vae", "ivae"])
def test_laplace_variances_of_a_linear_gaussian_decoder_are_eq_11_over_diagonals(gen, kind):
    d, kappa = 6, 3
    with seeded(1):
        decoder = nn.Linear(kappa, d)
        if kind == "vae":
            model = VAE(mlp_encoder((d,), [4], kappa), decoder, log_gamma=-1.25)
        else:
            model = IVAE(
                mlp_encoder((d + AUX,), [4], kappa),
                decoder,
                nn.Linear(AUX, kappa),
                likelihood="gaussian",
                log_gamma=-1.25,
            )
    model = model.double()
    W = decoder.weight.detach()
    mu = randn(gen, 5, kappa)
    prior_var = positive(gen, 5, kappa)
    got = laplace_posterior_variances(model, mu, prior_var)
    assert got.shape == (5, kappa) and got.dtype == F64
    gamma = math.exp(-1.25)
    expected = optimal_posterior_variances(W, prior_var, gamma)
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=0)
    # Independently: 1 / (1/σ† + |W_j|² / γ).
    np.testing.assert_allclose(
        got.numpy(),
        1 / (1 / prior_var.numpy() + (W**2).sum(0).numpy() / gamma),
        rtol=1e-12,
    )
    # A scalar prior broadcasts.
    np.testing.assert_allclose(
        laplace_posterior_variances(model, mu, 1.0).numpy(),
        np.broadcast_to(1 / (1 + (W**2).sum(0).numpy() / gamma), (5, kappa)),
        rtol=1e-12,
    )


def test_laplace_variances_of_a_bernoulli_decoder_use_the_fisher_weighted_jacobian(gen):
    model = small_ivae()
    mu = randn(gen, 4, KAPPA)
    prior_var = positive(gen, 4, KAPPA)
    got = laplace_posterior_variances(model, mu, prior_var)
    assert got.shape == (4, KAPPA)
    expected = []
    for i in range(4):

        def logits(z):
            return model.decode(z.unsqueeze(0)).flatten()

        with torch.no_grad():
            J = torch.autograd.functional.jacobian(logits, mu[i])  # (12, κ)
            p = torch.sigmoid(logits(mu[i]))
        weighted = J * torch.sqrt(p * (1 - p)).unsqueeze(-1)
        precision = 1 / prior_var[i] + (weighted**2).sum(0)  # γ = 1
        expected.append(1 / precision)
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-10, atol=0)
    # Without the Fisher weights (a plain Jacobian) the answer would differ.
    plain = optimal_posterior_variances(
        torch.autograd.functional.jacobian(lambda z: model.decode(z.unsqueeze(0)).flatten(), mu[0]),
        prior_var[0],
        1.0,
    )
    assert not torch.allclose(got[0], plain, rtol=1e-3)


@pytest.mark.parametrize(
    ("model", "mu", "prior_var", "error", "match"),
    [
        (
            nn.Linear(3, 3),
            torch.zeros(2, KAPPA),
            1.0,
            TypeError,
            "model must be an IVAE or a VAE, got Linear$",
        ),
        (IVAE_MODEL, torch.zeros(2, KAPPA + 1), 1.0, ValueError, r"mu must be \(n, 3\)"),
        (IVAE_MODEL, torch.zeros(KAPPA), 1.0, ValueError, r"mu must be \(n, 3\)"),
        (IVAE_MODEL, [[math.nan] * KAPPA], 1.0, ValueError, "mu must be finite"),
        (IVAE_MODEL, "mu", 1.0, TypeError, "mu must be a tensor"),
        (IVAE_MODEL, [[0.0] * KAPPA], 0.0, ValueError, "prior_var must hold positive"),
        (IVAE_MODEL, [[0.0] * KAPPA], math.nan, ValueError, "prior_var must be finite"),
        (IVAE_MODEL, [[0.0] * KAPPA], torch.ones(5), ValueError, "prior_var of shape"),
        (IVAE_MODEL, [[0.0] * KAPPA], None, TypeError, "prior_var must be a tensor"),
    ],
)
def test_laplace_variances_reject_bad_input(model, mu, prior_var, error, match):
    with pytest.raises(error, match="^" + match):
        laplace_posterior_variances(model, mu, prior_var)


# -- Propositions 2-3 and Theorem 2: the polarised regime over a dataset ---------------------


def _numerical_diagonal_minimiser(J, prior_var, gamma):
    """argmin of eq. 10 over diagonal ``Σ = diag(exp(s))``, one per input: Newton steps in
    ``s`` with autograd's gradient and the diagonal of its Hessian, evaluating only the cost
    ``local_cost`` (not the closed form ``1/A_jj``). Starts at the prior; the final gradient
    check certifies the minimiser (the cost is strictly convex in ``s``)."""
    prior_cov = torch.diag_embed(prior_var)
    s = prior_var.log().clone()
    for _ in range(60):
        s = s.detach().requires_grad_(True)
        cost = local_cost(torch.diag_embed(s.exp()), J, prior_cov, gamma).sum()
        (grad,) = torch.autograd.grad(cost, s, create_graph=True)
        (curvature,) = torch.autograd.grad(grad.sum(), s)  # the cost separates over s
        s = s - (grad / curvature).clamp(-2.0, 2.0)
    s = s.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(
        local_cost(torch.diag_embed(s.exp()), J, prior_cov, gamma).sum(), s
    )
    # the gradient in s_j is (σ_j A_jj - 1)/2: below 1e-12 it pins σ_j to 2e-12 relative
    assert grad.abs().max().item() < 1e-12, grad.abs().max().item()
    return s.detach().exp()


def test_proposition3_passive_variances_are_the_prior_and_active_ones_are_order_gamma(gen):
    """Bonheme & Grzes, Proposition 3, against a numerical minimiser of eq. 10 (not the closed
    form): with per-input Jacobians whose columns in P are zero (the decoder ignores those
    latents for every input) and per-input prior variances σ†(u), the optimal variances on P
    are σ†(u) for every input, so their mean and variance over the inputs are the prior's (i);
    on the other columns σ_j = O(γ): σ_j/γ converges to a finite limit as γ → 0 (ii)."""
    n, d, kappa = 200, 6, 5
    passive, active = [1, 4], [0, 2, 3]
    J = randn(gen, n, d, kappa)
    J[:, :, passive] = 0.0
    prior_var = positive(gen, n, kappa)  # σ†(u_i), one row per input
    scaled = []  # σ/γ on the active latents, per γ
    for gamma in (1e-2, 1e-4, 1e-6):
        reference = _numerical_diagonal_minimiser(J, prior_var, gamma)
        var = optimal_posterior_variances(J, prior_var, gamma)
        torch.testing.assert_close(var, reference, rtol=1e-8, atol=0)  # the kernel is eq. 10's
        # (i) passive: the minimiser stays at σ†(u) per input, so mean and spread are the prior's
        torch.testing.assert_close(reference[:, passive], prior_var[:, passive], rtol=1e-8, atol=0)
        np.testing.assert_allclose(
            reference[:, passive].var(0), prior_var[:, passive].var(0), rtol=1e-7
        )
        scaled.append(reference[:, active] / gamma)
        # (ii) active: far below the prior at small γ
        assert (reference[:, active] / prior_var[:, active]).max().item() < 300 * gamma
    # O(γ): σ/γ settles to a limit (changes by < 1e-2 relative from γ = 1e-4 to 1e-6) ...
    torch.testing.assert_close(scaled[2], scaled[1], rtol=1e-2, atol=0)
    # ... which is not the trivial one: at γ = 1e-2 it still moves (the check can see a change)
    assert ((scaled[0] - scaled[2]).abs() / scaled[2]).max().item() > 1e-3


def _optimal_means(x, W, b, prior_mu, prior_var, gamma, start):
    """argmin over μ of the negative ELBO of the linear decoder N(Wz + b, γI): the local cost
    (eq. 10, exact for a linear decoder) plus the error at the mean |x - Wμ - b|²/2γ. It is
    quadratic in μ and separates over the inputs, so Newton's method with autograd's gradient
    and per-input Hessian (κ Hessian-vector products) lands on the minimiser in one step; a
    second step checks it. Σ is held at its diagonal optimum (it does not couple to μ)."""
    cov = torch.diag_embed(optimal_posterior_variances(W, prior_var, gamma))
    prior_cov = torch.diag_embed(prior_var)

    def cost(mu):
        error = ((x - mu @ W.T - b) ** 2).sum(-1) / (2 * gamma)
        return (error + local_cost(cov, W, prior_cov, gamma, mean_offset=prior_mu - mu)).sum()

    mu, eye = start, torch.eye(W.shape[1], dtype=F64)
    for _ in range(2):
        mu = mu.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(cost(mu), mu, create_graph=True)
        hessian = torch.stack(
            [torch.autograd.grad(grad, mu, e.expand_as(mu), retain_graph=True)[0] for e in eye], -1
        )
        mu = mu - torch.linalg.solve(hessian, grad.unsqueeze(-1)).squeeze(-1)
    assert grad.abs().max().item() < 1e-9  # the second step started at a stationary point
    return mu.detach()


@pytest.mark.parametrize("learned_prior_mean", [False, True])
def test_proposition2_passive_means_are_the_prior_mean(gen, learned_prior_mean):
    """Bonheme & Grzes, Proposition 2: the optimal mean of a latent the decoder ignores is the
    prior mean, for every input: (ii) with the prior mean fixed at 0 its variance over the
    inputs is 0; (i) with a learned prior mean μ†(u), μ_j = μ†_j(u) per input, so the mean
    and variance over inputs are the prior mean's. Exact minimiser: round-off tolerances."""
    n, d, kappa, gamma = 60, 6, 4, 0.05
    passive, active = [1, 3], [0, 2]
    W = randn(gen, d, kappa)
    W[:, passive] = 0.0
    b, x = randn(gen, d), randn(gen, n, d)  # the inputs x_i
    u = torch.rand(n, 1, generator=gen, dtype=F64)  # auxiliary variables u_i
    prior_var = 0.3 + torch.cat([u, 1 - u, u**2, 2 * u], 1)  # σ†(u)
    prior_mu = torch.cat([u, 2 * u - 1, -u, 3 * u**2], 1) if learned_prior_mean else 0 * prior_var
    mu = _optimal_means(x, W, b, prior_mu, prior_var, gamma, start=randn(gen, n, kappa))
    # the stationarity condition, solved directly: (Σ†⁻¹ + WᵀW/γ) μ = Σ†⁻¹ μ† + Wᵀ(x - b)/γ
    A = torch.diag_embed(1 / prior_var) + W.T @ W / gamma
    rhs = prior_mu / prior_var + (x - b) @ W / gamma
    torch.testing.assert_close(mu, torch.linalg.solve(A, rhs), rtol=0, atol=1e-12)
    torch.testing.assert_close(mu[:, passive], prior_mu[:, passive], rtol=0, atol=1e-12)
    if learned_prior_mean:  # (i)
        np.testing.assert_allclose(mu[:, passive].mean(0), prior_mu[:, passive].mean(0), atol=1e-12)
        np.testing.assert_allclose(mu[:, passive].var(0), prior_mu[:, passive].var(0), atol=1e-12)
    else:  # (ii)
        assert mu[:, passive].abs().max().item() < 1e-12
        assert mu[:, passive].var(0).max().item() < 1e-24
    assert mu[:, active].var(0).min().item() > 0.01  # active means follow x: the test can fail


class _GatedDecoder(nn.Module):
    """``z -> W (z_0, relu(z_2)) + b`` ``(n, 2)``: it ignores z_1, and z_2 where z_2 < 0."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.tensor([[1.5, 0.5], [-0.4, 2.0]], dtype=F64))
        self.b = nn.Parameter(torch.tensor([0.3, -0.2], dtype=F64))

    def forward(self, z):
        return torch.stack([z[:, 0], torch.relu(z[:, 2])], 1) @ self.W.T + self.b


class _GatedPrior(nn.Module):
    """``u (n, 1) -> (μ†(u), log σ†(u))`` ``(n, 6)``; latent 2's prior moves far with u."""

    def forward(self, u):
        mean = torch.cat([u, 2 * u - 1, -0.5 - 3 * u], 1)
        var = torch.cat([0.2 + u, 0.3 + u, 0.05 + u**2], 1)
        return torch.cat([mean, var.log()], 1)


class _OptimalEncoder(nn.Module):
    """``[x, u] -> (μ, log σ)``: the optimum of the ELBO for the decoder linearised through x.

    Nothing is set by hand per latent: ``z_lin`` is a point the decoder maps to x (for an x
    the decoder makes with z_2 <= 0, any z_2 <= 0 does; -1 is taken), ``J`` the decoder's
    Jacobian there (library), ``σ`` the optimal diagonal variances for ``J`` (library, eq. 11)
    and ``μ`` solves the stationarity condition ``(Σ†⁻¹ + JᵀJ/γ) μ = Σ†⁻¹ μ† + JᵀJ z_lin/γ``.
    """

    def __init__(self, decoder, prior, gamma):
        super().__init__()
        self.decoder, self.prior, self.gamma = decoder, prior, gamma

    def forward(self, xu):
        x, u = xu[:, :2], xu[:, 2:]
        prior_mu, prior_logvar = self.prior(u).chunk(2, dim=1)
        prior_var = prior_logvar.exp()
        h = torch.linalg.solve(self.decoder.W, (x - self.decoder.b).T).T  # (z_0, relu(z_2))
        on = h[:, 1] > 1e-8  # relu(z_2) > 0 beyond the round-off of the solve
        z_lin = torch.stack([h[:, 0], 0 * h[:, 0], torch.where(on, h[:, 1], -1.0)], 1)
        J = decoder_jacobian(self.decoder, z_lin)
        JtJ = J.mT @ J / self.gamma
        A = torch.diag_embed(1 / prior_var) + JtJ
        rhs = prior_mu / prior_var + (JtJ @ z_lin.unsqueeze(-1)).squeeze(-1)
        mu = torch.linalg.solve(A, rhs)
        return mu, optimal_posterior_variances(J, prior_var, self.gamma).log()


def _per_input_labels(reps, j):
    """``(passive, active)`` boolean ``(n,)``: latent j per input, by :func:`classify_latents`.

    The rule reads each (input, latent) pair on its own, so on the transpose of latent j's
    column (its "latents" are the inputs) the fractions are 1 or 0 per input.
    """
    columns = (reps.mean, reps.variance, reps.prior_mean, reps.prior_variance)
    classes = classify_latents(*(c[:, j : j + 1].T for c in columns))
    return classes.passive_fraction == 1.0, classes.active_fraction == 1.0


def _mixture(prior_part, mean_part, weight, rng):
    """The largest sample of the mixture ``weight p(prior_part) + (1 - weight) p(mean_part)``
    drawn without replacement (with ``weight`` the share of passive inputs, it is all of them)."""
    size = min(prior_part.size / weight, mean_part.size / (1 - weight))
    k = round(weight * size)
    return np.concatenate(
        [
            rng.choice(prior_part, k, replace=False),
            rng.choice(mean_part, round(size) - k, replace=False),
        ]
    )


def test_theorem2_sampled_representation_of_a_mixed_latent_is_the_conditional_mixture(gen):
    """Bonheme & Grzes, Theorem 2, on the ELBO optimum of a decoder that ignores latent 1 and
    ignores latent 2 for the inputs it makes with z_2 <= 0: :func:`representations` and
    :func:`classify_latents` must give (i) z_1 distributed as z†_1, (ii) z_0 as μ_0, and
    (iii) z_2 as the mixture, with weight c = the share of passive inputs, of z†_2 *on the
    passive inputs* and μ_2 *on the active ones*. Passive inputs have mostly large u, and
    latent 2's prior moves with u, so the conditioning matters: the unconditional mixture
    (z†_2 and μ_2 over all inputs), the mixture weighted 1 - c and z†_2 over all inputs must
    all be rejected. Two-sample Kolmogorov-Smirnov tests: p > 0.01 for the claims, p < 1e-6
    for the negative controls."""
    n, gamma = 4000, 1e-6
    u = torch.rand(n, 1, generator=gen, dtype=F64)
    gate = torch.rand(n, generator=gen, dtype=F64) < torch.where(u[:, 0] < 0.5, 0.95, 0.45)
    z_true = torch.stack(
        [
            randn(gen, n),
            torch.zeros(n, dtype=F64),
            torch.where(gate, 0.3 + 1.5 * torch.rand(n, generator=gen, dtype=F64), -1.0),
        ],
        1,
    )
    decoder, prior = _GatedDecoder(), _GatedPrior()
    encoder = _OptimalEncoder(decoder, prior, gamma)
    model = IVAE(
        encoder,
        decoder,
        prior,
        likelihood="gaussian",
        log_gamma=math.log(gamma),
        learn_prior_mean=True,
    ).double()
    with torch.no_grad():
        x = decoder(z_true)
    reps = representations(model, x, u, seed=0)
    # self-consistent: the encoder's variances are eq. 11's for the Jacobian at its own means
    at_means = decoder_jacobian(decoder, torch.as_tensor(reps.mean))
    np.testing.assert_allclose(
        optimal_posterior_variances(at_means, reps.prior_variance, gamma), reps.variance, rtol=1e-12
    )
    classes = classify_latents(reps.mean, reps.variance, reps.prior_mean, reps.prior_variance)
    assert list(classes.labels) == ["active", "passive", "mixed"]
    passive, active = _per_input_labels(reps, 2)
    np.testing.assert_array_equal(active, gate.numpy())  # active exactly where the decoder uses z_2
    np.testing.assert_array_equal(passive, ~active)
    c = classes.passive_fraction[2]
    assert c == passive.mean() and 0.2 < c < 0.4  # far from 1/2: c and 1 - c differ
    assert np.median(reps.prior_mean[passive, 2]) < np.median(reps.prior_mean[:, 2]) - 0.5
    z, z_prior, mu = reps.sample, reps.prior_sample, reps.mean
    rng = np.random.default_rng(0)

    def p_value(a, b):
        return stats.ks_2samp(a, b, method="asymp").pvalue

    assert p_value(z[:, 1], z_prior[:, 1]) > 0.01  # (i)
    assert p_value(z[:, 1], mu[:, 1]) < 1e-6
    assert p_value(z[:, 0], mu[:, 0]) > 0.01  # (ii)
    assert p_value(z[:, 0], z_prior[:, 0]) < 1e-6
    # (iii), component by component: on the passive inputs z_2 is z†_2 there, not over all
    assert p_value(z[passive, 2], z_prior[passive, 2]) > 0.01
    assert p_value(z[passive, 2], z_prior[:, 2]) < 1e-6
    assert p_value(z[active, 2], mu[active, 2]) > 0.01
    # (iii), pooled: the conditional mixture weighted c, and none of the others
    conditional = _mixture(z_prior[passive, 2], mu[active, 2], c, rng)
    assert conditional.size == n
    assert p_value(z[:, 2], conditional) > 0.01
    assert p_value(z[:, 2], _mixture(z_prior[:, 2], mu[:, 2], c, rng)) < 1e-6
    assert p_value(z[:, 2], _mixture(z_prior[passive, 2], mu[active, 2], 1 - c, rng)) < 1e-6
    assert p_value(z[:, 2], z_prior[:, 2]) < 1e-6  # nor the prior alone
