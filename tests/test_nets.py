"""Tests of vaebook.nets: builders' shapes, reproducible initialisation and the VAE module."""

import math

import pytest
import torch
from torch import nn

from vaebook.gaussian import sample_diag_normal
from vaebook.nets import (
    ACTIVATIONS,
    VAE,
    AffineCoupling,
    FlowEncoder,
    FlowVAE,
    GaussianEncoder,
    InkCentroid,
    centroid_encoder,
    conv_decoder,
    conv_encoder,
    mlp,
    mlp_decoder,
    mlp_encoder,
    seeded,
)
from vaebook.objectives import beta_vae_terms


def small_vae(**kwargs):
    with seeded(0):
        return VAE(mlp_encoder((8, 8), [16], 2), mlp_decoder(2, [16], (8, 8)), **kwargs)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_mlp_has_a_linear_layer_per_step_and_the_activation_between_them(activation):
    net = mlp([5, 7, 6, 3], activation)
    kinds = [type(layer) for layer in net]
    act = ACTIVATIONS[activation]
    assert kinds == [nn.Linear, act, nn.Linear, act, nn.Linear]
    assert [(layer.in_features, layer.out_features) for layer in net[::2]] == [
        (5, 7),
        (7, 6),
        (6, 3),
    ]
    assert net(torch.zeros(4, 5)).shape == (4, 3)


def test_mlp_final_activation_follows_the_last_layer(gen):
    net = mlp([3, 4], final_activation="tanh")
    assert isinstance(net[-1], nn.Tanh)
    with torch.no_grad():
        net[0].weight.fill_(100.0)
    out = net(torch.randn(10, 3, generator=gen))
    assert bool((out.abs() <= 1).all())


def test_gaussian_encoder_applies_the_body_then_two_heads(gen):
    body = nn.Linear(6, 5)
    enc = GaussianEncoder(body, feature_dim=5, latent_dim=3)
    x = torch.randn(4, 6, generator=gen)
    mu, logvar = enc(x)
    assert mu.shape == logvar.shape == (4, 3)
    torch.testing.assert_close(mu, enc.mu(body(x)))
    torch.testing.assert_close(logvar, enc.logvar(body(x)))


@pytest.mark.parametrize("shape", [(8, 8), (1, 8, 8), (64,), 64])
def test_mlp_encoder_and_decoder_round_trip_the_example_shape(shape):
    enc, dec = mlp_encoder(shape, [16, 8], 3), mlp_decoder(3, [8, 16], shape)
    example = (shape,) if isinstance(shape, int) else shape
    mu, logvar = enc(torch.zeros(5, *example))
    assert mu.shape == logvar.shape == (5, 3)
    assert dec(mu).shape == (5, *example)


@pytest.mark.parametrize(
    ("image_shape", "channels"), [((1, 8, 8), (8, 16)), ((1, 32, 32), (32, 64)), ((3, 8, 4), (4,))]
)
def test_conv_encoder_and_decoder_round_trip_the_image_shape(image_shape, channels):
    enc = conv_encoder(image_shape, 4, channels=channels, hidden=32)
    dec = conv_decoder(4, image_shape, channels=channels[::-1], hidden=32)
    mu, logvar = enc(torch.zeros(2, *image_shape))
    assert mu.shape == logvar.shape == (2, 4)
    assert dec(mu).shape == (2, *image_shape)
    convs = [m for m in enc.body if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == list(channels)


def test_conv_decoder_output_has_no_final_activation():
    dec = conv_decoder(2, (1, 8, 8), channels=(8,), hidden=8)
    assert isinstance(dec[-1], nn.ConvTranspose2d)


def test_seeded_gives_identical_parameters_and_different_seeds_differ():
    def build(seed):
        with seeded(seed):
            return mlp([4, 8, 2])

    a, b, c = build(3), build(3), build(4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a[0].weight, c[0].weight)


def test_seeded_leaves_the_global_random_state_unchanged():
    before = torch.get_rng_state()
    with seeded(1):
        torch.randn(10)
    assert torch.equal(torch.get_rng_state(), before)
    with pytest.raises(RuntimeError, match="inside"), seeded(2):
        raise RuntimeError("inside")
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_vae_terms_are_beta_vae_terms_at_a_reparameterised_sample(gen, likelihood):
    vae = small_vae(likelihood=likelihood, beta=3.0, log_gamma=-1.0)
    x = torch.rand(6, 8, 8, generator=gen)
    terms = vae.terms(x, torch.Generator().manual_seed(5))
    mu, logvar = vae.encode(x)
    z = sample_diag_normal(mu, logvar, generator=torch.Generator().manual_seed(5))
    expected = beta_vae_terms(
        x, vae.decode(z), mu, logvar, beta=3.0, likelihood=likelihood, log_gamma=-1.0
    )
    assert terms.reconstruction.shape == terms.kl.shape == (6,)
    assert terms.beta == 3.0
    torch.testing.assert_close(terms.reconstruction, expected.reconstruction)
    torch.testing.assert_close(terms.kl, expected.kl)


def test_vae_terms_backpropagate_to_encoder_and_decoder(gen):
    vae = small_vae()
    vae.terms(torch.rand(4, 8, 8, generator=gen), gen).mean().objective.backward()
    assert all(p.grad is not None and bool((p.grad != 0).any()) for p in vae.parameters())


def test_vae_reconstruct_decodes_the_posterior_mean_without_gradients(gen):
    vae = small_vae(likelihood="bernoulli")
    x = torch.rand(5, 8, 8, generator=gen)
    rec = vae.reconstruct(x)
    assert rec.shape == (5, 8, 8) and not rec.requires_grad
    torch.testing.assert_close(rec, torch.sigmoid(vae.decoder(vae.encoder(x)[0])))


def test_vae_sample_decodes_prior_draws_reproducibly():
    vae = small_vae()
    s1 = vae.sample(7, torch.Generator().manual_seed(2))
    s2 = vae.sample(7, torch.Generator().manual_seed(2))
    assert s1.shape == (7, 8, 8) and not s1.requires_grad
    assert torch.equal(s1, s2)
    z = torch.randn(7, 2, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(s1, vae.decoder(z))


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_vae_mean_image_is_the_decoder_mean(gen, likelihood):
    vae = small_vae(likelihood=likelihood)
    with torch.no_grad():
        vae.decoder[0][-1].bias.mul_(20.0)  # spread the raw outputs well beyond [0, 1]
    z = 3 * torch.randn(50, 2, generator=gen)
    out = vae.mean_image(z)
    if likelihood == "bernoulli":
        raw = vae.decode(z)
        assert bool((raw < 0).any()) and bool((raw > 1).any())
        assert bool(((out > 0) & (out < 1)).all())
        torch.testing.assert_close(out, torch.sigmoid(vae.decode(z)))
    else:
        torch.testing.assert_close(out, vae.decode(z))


@pytest.mark.parametrize("learn_gamma", [True, False])
def test_vae_learn_gamma_makes_log_gamma_a_parameter(learn_gamma):
    vae = small_vae(log_gamma=-2.0, learn_gamma=learn_gamma)
    assert isinstance(vae.log_gamma, nn.Parameter) == learn_gamma
    assert any(p is vae.log_gamma for p in vae.parameters()) == learn_gamma
    assert "log_gamma" in vae.state_dict() and vae.log_gamma.item() == -2.0


def test_vae_moves_to_float64_with_its_log_gamma(gen):
    vae = small_vae().double()
    assert vae.log_gamma.dtype == torch.float64
    x = torch.rand(3, 8, 8, generator=gen, dtype=torch.float64)
    assert vae.terms(x, gen).elbo.dtype == torch.float64
    assert vae.sample(2, gen).dtype == torch.float64


# two images of a vertical bar, in the first and in the last column: x varies, y does not
BARS = torch.zeros(2, 4, 4)
BARS[0, :, 0] = 1.0
BARS[1, :, 3] = 1.0
ENC, DEC = mlp_encoder((4,), [4], 2), mlp_decoder(2, [4], (4,))


@pytest.mark.parametrize(
    ("func", "args", "kwargs", "error", "match"),
    [
        (mlp, ([5],), {}, ValueError, "sizes needs at least 2"),
        (mlp, ([5, 0],), {}, ValueError, "every entry of sizes must be > 0"),
        (mlp, ([5, 2.5],), {}, TypeError, "every entry of sizes must be an int"),
        (mlp, (None,), {}, TypeError, "sizes must be a sequence"),
        (mlp, ([5, 3],), {"activation": "gelu"}, ValueError, "activation must be one of"),
        (mlp, ([5, 3],), {"final_activation": "sigmoid"}, ValueError, "final_activation"),
        (GaussianEncoder, (nn.Identity(), 0, 2), {}, ValueError, "feature_dim must be > 0"),
        (GaussianEncoder, (nn.Identity(), 3, -1), {}, ValueError, "latent_dim must be > 0"),
        (mlp_encoder, ((8, 0), [4], 2), {}, ValueError, "input_shape"),
        (mlp_encoder, ((8, 8), [], 2), {}, ValueError, "hidden needs at least 1"),
        (mlp_encoder, ((8, 8), [4], 0), {}, ValueError, "latent_dim"),
        (mlp_decoder, (0, [4], (8, 8)), {}, ValueError, "latent_dim"),
        (mlp_decoder, (2, [4], ()), {}, ValueError, "output_shape"),
        (conv_encoder, ((8, 8), 2), {}, ValueError, "image_shape"),
        (conv_encoder, ((1, 6, 8), 2), {}, ValueError, "image_shape height and width"),
        (conv_encoder, ((1, 8, 8), 2), {"channels": (4, 0)}, ValueError, "channels"),
        (conv_encoder, ((1, 8, 8), 2), {"channels": None}, TypeError, "channels"),
        (conv_encoder, ((1, 8, 8), 2), {"hidden": 0}, ValueError, "hidden"),
        (conv_decoder, (2, (1, 8, 8, 1)), {}, ValueError, "image_shape"),
        (conv_decoder, (2, (1, 8, 8)), {"channels": ()}, ValueError, "channels"),
        (conv_decoder, (2, (1, 8, 8)), {"channels": None}, TypeError, "channels"),
        (conv_decoder, (0, (1, 8, 8)), {}, ValueError, "latent_dim"),
        (VAE, (ENC, DEC), {"likelihood": "poisson"}, ValueError, "likelihood must be one of"),
        (VAE, (ENC, DEC), {"beta": 0.0}, ValueError, "beta must be > 0"),
        (VAE, (ENC, DEC), {"beta": -1.0}, ValueError, "beta must be > 0"),
        (VAE, (ENC, DEC), {"log_gamma": math.inf}, ValueError, "log_gamma must be finite"),
        (seeded(-1).__enter__, (), {}, ValueError, "seed must be >= 0"),
        (InkCentroid, (torch.ones(1, 4, 4),), {}, ValueError, r"^reference must hold at least 2"),
        (
            InkCentroid,
            (torch.ones(3, 4, 4),),
            {},
            ValueError,
            r"^reference images must have ink centroids that vary along both axes",
        ),
        (
            InkCentroid,
            (BARS,),
            {},
            ValueError,
            r"^reference images must have ink centroids that vary along both axes",
        ),
        (InkCentroid, (torch.ones(3, 4),), {}, ValueError, r"^images must be \(n, height, width\)"),
        (centroid_encoder, (torch.ones(1, 4, 4),), {}, ValueError, r"^reference must hold"),
        (VAE(ENC, DEC).sample, (0,), {}, ValueError, "n must be > 0"),
    ],
)
def test_bad_input_raises_naming_the_argument(func, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        func(*args, **kwargs)


# -- an encoder that sees only where the ink is -------------------------------------------------


def _shifted_blobs(shifts, size=12):
    """Images ``(n, size, size)``: a fixed 3x3 blob with its top-left pixel at each (x, y)."""
    blob = torch.tensor([[0.2, 0.5, 0.1], [0.7, 1.0, 0.4], [0.3, 0.6, 0.2]])
    images = torch.zeros(len(shifts), size, size)
    for image, (x, y) in zip(images, shifts, strict=True):
        image[y : y + 3, x : x + 3] = blob
    return images


def test_ink_centroid_features_are_the_standardised_centroids():
    reference = _shifted_blobs([(0, 0), (4, 1), (2, 7), (8, 5)])
    body = InkCentroid(reference)
    assert not list(body.parameters())  # nothing to learn in the body
    # blob centroid offset: column 1.0 + 0.1 / 4.0, row 1.0 + 0.0; the offset cancels in the
    # standardisation, so the features are the standardised shifts
    shifts = torch.tensor([[0.0, 0.0], [4.0, 1.0], [2.0, 7.0], [8.0, 5.0]])
    expected = (shifts - shifts.mean(0)) / shifts.std(0)
    torch.testing.assert_close(body(reference), expected)
    new = _shifted_blobs([(3, 3), (6, 2)])
    torch.testing.assert_close(
        body(new), (torch.tensor([[3.0, 3.0], [6.0, 2.0]]) - shifts.mean(0)) / shifts.std(0)
    )


def test_centroid_encoder_is_affine_in_the_position_and_blind_to_the_shape():
    reference = _shifted_blobs([(0, 0), (4, 1), (2, 7), (8, 5)])
    with seeded(0):
        encoder = centroid_encoder(reference, latent_dim=3)
    mu, logvar = encoder(_shifted_blobs([(1, 1), (5, 1), (1, 4), (5, 4)]))
    assert mu.shape == logvar.shape == (4, 3)
    torch.testing.assert_close(mu[3] - mu[2], mu[1] - mu[0])  # a parallelogram of positions
    torch.testing.assert_close(logvar[3] - logvar[2], logvar[1] - logvar[0])
    assert not torch.allclose(mu[1], mu[0])
    # a different shape with the same centroid gets the same code
    dot, pair = torch.zeros(1, 12, 12), torch.zeros(1, 12, 12)
    dot[0, 6, 5] = 1.0  # x = 5, y = 6
    pair[0, 6, 4], pair[0, 6, 6] = 0.5, 0.5  # centroid x = 5, y = 6
    torch.testing.assert_close(encoder(pair)[0], encoder(dot)[0])
    torch.testing.assert_close(encoder(pair)[1], encoder(dot)[1])
    vae = VAE(encoder, mlp_decoder(3, [8], (12, 12)), likelihood="bernoulli")
    assert vae.latent_dim == 3
    terms = vae.terms(reference, torch.Generator().manual_seed(0))
    terms.mean().objective.backward()
    assert encoder.mu.weight.grad is not None and encoder.logvar.bias.grad is not None


# -- normalising-flow encoder ------------------------------------------------------------------


def _flow(seed=0, latent_dim=2, layers=3):
    with seeded(seed):
        encoder = FlowEncoder((3, 3), [16], latent_dim, layers=layers, coupling_hidden=(8,))
    for coupling in encoder.couplings:  # non-trivial scales (they start at zero)
        with torch.no_grad():
            coupling.scale.uniform_(0.5, 1.5)
    return encoder.double()


@pytest.mark.parametrize("latent_dim", [2, 3, 5])
def test_affine_coupling_log_det_matches_autograd(latent_dim):
    encoder = _flow(latent_dim=latent_dim)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 3, generator=gen, dtype=torch.float64)
    h = encoder.gaussian.body(x)
    z = torch.randn(4, latent_dim, generator=gen, dtype=torch.float64)
    for coupling in encoder.couplings:
        _, log_det = coupling(z, h)
        for i in range(4):
            jac = torch.autograd.functional.jacobian(
                lambda zi, i=i, layer=coupling: layer(zi[None], h[i : i + 1])[0][0], z[i]
            )
            assert log_det[i].item() == pytest.approx(
                torch.linalg.slogdet(jac)[1].item(), abs=1e-10
            )


def test_flow_encoder_log_density_is_the_change_of_variables():
    encoder = _flow(latent_dim=2, layers=4)
    x = torch.rand(3, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    z, log_q = encoder.sample(x, torch.Generator().manual_seed(5))
    # rebuild z0 from the same noise and push it through the flow by hand
    h = encoder.gaussian.body(x)
    mu, logvar = encoder.gaussian.mu(h), encoder.gaussian.logvar(h)
    z0 = sample_diag_normal(mu, logvar, generator=torch.Generator().manual_seed(5))
    for i in range(3):

        def flow(v, i=i):
            out = v[None]
            for coupling in encoder.couplings:
                out, _ = coupling(out, h[i : i + 1])
            return out[0]

        jac = torch.autograd.functional.jacobian(flow, z0[i])
        base = torch.distributions.Normal(mu[i], torch.exp(0.5 * logvar[i])).log_prob(z0[i]).sum()
        expected = base - torch.linalg.slogdet(jac)[1]
        assert log_q[i].item() == pytest.approx(expected.item(), abs=1e-10)
        assert torch.allclose(flow(z0[i]), z[i])


def test_flow_vae_terms_and_training():
    with seeded(0):
        encoder = FlowEncoder((2, 2), [16], 2, layers=2, coupling_hidden=(8,))
        vae = FlowVAE(encoder, mlp_decoder(2, [16], (2, 2)), log_gamma=math.log(0.1))
    x = torch.rand(8, 2, 2, generator=torch.Generator().manual_seed(0))
    terms = vae.terms(x, torch.Generator().manual_seed(3))
    z, log_q = encoder.sample(x, torch.Generator().manual_seed(3))
    log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(terms.kl, log_q - log_prior)
    from vaebook.train import fit

    history = fit(vae, x, epochs=150, lr=1e-2, seed=0, device="cpu", progress=False)
    assert history["elbo"][-1] > history["elbo"][0] + 1.0


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: AffineCoupling([True, True], 0, [4]), ValueError, "mask"),
        (lambda: AffineCoupling([False, False], 0, [4]), ValueError, "mask"),
        (lambda: AffineCoupling([True, False], -1, [4]), ValueError, "context_dim"),
        (lambda: AffineCoupling([True, False], 0, []), ValueError, "hidden"),
        (lambda: FlowEncoder((4,), [8], 1), ValueError, "latent_dim"),
        (lambda: FlowEncoder((4,), [8], 2, layers=0), ValueError, "layers"),
        (lambda: FlowVAE(nn.Linear(2, 2), nn.Linear(2, 2)), TypeError, "encoder"),
        (lambda: FlowVAE(FlowEncoder((4,), [8], 2), nn.Linear(2, 4), beta=0.0), ValueError, "beta"),
        (
            lambda: FlowVAE(FlowEncoder((4,), [8], 2), nn.Linear(2, 4), log_gamma="x"),
            TypeError,
            "log_gamma",
        ),
    ],
)
def test_flow_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("bad", ["small", None])
def test_vae_rejects_a_log_gamma_that_is_not_a_number(bad):
    with pytest.raises(TypeError, match="log_gamma must be a number"):
        VAE(nn.Linear(2, 2), nn.Linear(2, 2), log_gamma=bad)
