"""Tests of vaebook.ensemble: stacked layers equal their loops, members equal ordinary VAEs,
and training the ensemble with fit equals training each member alone."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vaebook import gaussian
from vaebook.data import digit_exemplars
from vaebook.ensemble import EnsembleLinear, EnsembleVAE, ensemble_mlp
from vaebook.nets import ACTIVATIONS, VAE, mlp, mlp_decoder, mlp_encoder, seeded
from vaebook.objectives import ELBOTerms, reconstruction_log_likelihood
from vaebook.train import fit

F64 = torch.float64
SHAPE = (8, 8)


def small_ensemble(members=3, betas=(0.5, 1.0, 4.0), **kwargs):
    kwargs = {"likelihood": "gaussian", "seed": 0, **kwargs}
    return EnsembleVAE(members, SHAPE, [12, 10], 2, [10, 12], betas=betas, **kwargs)


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class NoiseTape:
    """Records the standard normal noise drawn through vaebook.gaussian, or replays it.

    ``EnsembleVAE.terms`` and ``VAE.terms`` both draw their reparameterisation noise with
    ``vaebook.gaussian.sample_diag_normal``; the tape wraps the one function it calls, so a
    single model can be fed, step after step, its member's slice of the ensemble's noise.
    """

    def __init__(self, monkeypatch):
        self.monkeypatch, self.draws = monkeypatch, []
        self.original = gaussian._standard_normal

    def record(self):
        def draw(shape, like, generator):
            eps = self.original(shape, like, generator)
            self.draws.append(eps.clone())
            return eps

        self.monkeypatch.setattr(gaussian, "_standard_normal", draw)

    def replay(self, member):
        slices = iter([eps[member] for eps in self.draws])

        def draw(shape, like, generator):
            eps = next(slices)
            assert eps.shape == tuple(shape)
            return eps.to(like.dtype)

        self.monkeypatch.setattr(gaussian, "_standard_normal", draw)


@pytest.fixture
def tape(monkeypatch):
    return NoiseTape(monkeypatch)


@pytest.fixture(scope="module")
def images():
    """100 of the 8x8 digits (10 per class), float64."""
    return digit_exemplars(10, dtype=F64)[0]


# -- EnsembleLinear and ensemble_mlp ------------------------------------------------------


def test_ensemble_linear_equals_a_loop_of_linear_layers_forward_and_backward(gen):
    layer = EnsembleLinear(4, 5, 3).double()
    x = torch.randn(4, 6, 5, generator=gen, dtype=F64, requires_grad=True)
    out = layer(x)
    assert out.shape == (4, 6, 3)
    loop = [F.linear(x[m], layer.weight[m].T, layer.bias[m, 0]) for m in range(4)]
    torch.testing.assert_close(out, torch.stack(loop), rtol=1e-14, atol=1e-14)
    weights = torch.randn(4, 6, 3, generator=gen, dtype=F64)
    grads = torch.autograd.grad((out * weights).sum(), (x, layer.weight, layer.bias))
    loop_grads = torch.autograd.grad(
        (torch.stack(loop) * weights).sum(), (x, layer.weight, layer.bias)
    )
    for got, expected in zip(grads, loop_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)
    shared = x[0].detach()  # (n, in): one batch for every member
    torch.testing.assert_close(layer(shared), layer(shared.expand(4, 6, 5)), rtol=0, atol=0)


def test_ensemble_linear_members_are_initialised_like_successive_nn_linear_layers():
    with seeded(3):
        layer = EnsembleLinear(3, 7, 4)
    with seeded(3):
        linears = [nn.Linear(7, 4) for _ in range(3)]
    for m, linear in enumerate(linears):
        assert torch.equal(layer.weight[m], linear.weight.T)
        assert torch.equal(layer.bias[m, 0], linear.bias)


def test_ensemble_linear_initialisation_statistics_match_nn_linear_bounds():
    with seeded(0):
        layer = EnsembleLinear(64, 50, 40)
    bound = 1 / math.sqrt(50)  # nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both
    for values in (layer.weight.detach(), layer.bias.detach()):
        assert float(values.abs().max()) <= bound
        assert float(values.abs().max()) > 0.99 * bound  # the whole interval is used
    w = layer.weight.detach().double()  # 128 000 draws: mean and variance to < 1 %
    assert abs(float(w.mean())) < 0.01 * bound
    assert float(w.var()) == pytest.approx(bound**2 / 3, rel=0.02)
    # The members differ from each other (not one draw repeated).
    assert not torch.equal(layer.weight[0], layer.weight[1])


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_ensemble_mlp_mirrors_nets_mlp(gen, activation):
    net = ensemble_mlp(2, [5, 7, 3], activation, final_activation="tanh")
    single = mlp([5, 7, 3], activation, final_activation="tanh")
    kinds = [type(layer) for layer in net]
    assert kinds == [EnsembleLinear, ACTIVATIONS[activation], EnsembleLinear, nn.Tanh]
    assert [type(layer) for layer in single][1::2] == kinds[1::2]
    x = torch.randn(2, 4, 5, generator=gen)
    with torch.no_grad():
        for layer, linear in zip(net[::2], single[::2], strict=True):
            linear.weight.copy_(layer.weight[1].T)
            linear.bias.copy_(layer.bias[1, 0])
    torch.testing.assert_close(net(x)[1], single(x[1]))


# -- EnsembleVAE: members are ordinary VAEs ---------------------------------------------------


def test_members_are_the_vaes_built_in_sequence_after_the_seed():
    ens = small_ensemble(activation="elu", seed=5)
    with seeded(5):
        reference = [
            VAE(
                mlp_encoder(SHAPE, [12, 10], 2, "elu"),
                mlp_decoder(2, [10, 12], SHAPE, "elu"),
                beta=beta,
            )
            for beta in (0.5, 1.0, 4.0)
        ]
    for m, vae in enumerate(reference):
        member = ens.member(m)
        assert isinstance(member, VAE) and str(member) == str(vae)  # the same architecture
        assert same_state(member, vae)
        assert member.beta == vae.beta and member.likelihood == "gaussian"
    larger = EnsembleVAE(5, SHAPE, [12, 10], 2, [10, 12], betas=1.0, activation="elu", seed=5)
    assert all(same_state(larger.member(m), ens.member(m)) for m in range(3))


def test_construction_and_member_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ens = small_ensemble()
    ens.member(1)
    assert torch.equal(torch.rand(3), expected)


def test_member_is_a_copy_and_load_member_writes_it_back():
    ens = small_ensemble().double()
    vae = ens.member(2)
    assert all(p.dtype == F64 for p in vae.parameters())
    with torch.no_grad():
        vae.decoder[0][0].weight.add_(1.0)
    assert not same_state(ens.member(2), vae)  # the ensemble did not change
    ens.load_member(0, vae)
    assert same_state(ens.member(0), vae.to(F64)) and ens.member(0).beta == 0.5


def test_encode_decode_and_kl_equal_the_members(gen):
    ens = small_ensemble().double()
    x = torch.rand(5, *SHAPE, generator=gen, dtype=F64)
    per_member = torch.rand(3, 5, *SHAPE, generator=gen, dtype=F64)
    mu, logvar = ens.encode(x)
    mu_each, logvar_each = ens.encode(per_member)
    assert mu.shape == logvar.shape == (3, 5, 2)
    z = torch.randn(3, 5, 2, generator=gen, dtype=F64)
    out = ens.decode(z)
    assert out.shape == (3, 5, *SHAPE)
    for m in range(3):
        vae = ens.member(m)
        for got, expected in zip(ens.encode(x), vae.encode(x), strict=True):
            torch.testing.assert_close(got[m], expected, rtol=1e-13, atol=1e-13)
        for got, expected in zip((mu_each, logvar_each), vae.encode(per_member[m]), strict=True):
            torch.testing.assert_close(got[m], expected, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(out[m], vae.decode(z[m]), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(ens.decode(z[1])[2], ens.member(2).decode(z[1]))  # shared z


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_terms_row_m_equals_member_m_terms_with_the_same_noise(gen, tape, likelihood):
    ens = small_ensemble(likelihood=likelihood, log_gamma=-0.5).double()
    x = torch.rand(6, *SHAPE, generator=gen, dtype=F64)
    tape.record()
    terms = ens.terms(x, torch.Generator().manual_seed(1))
    assert terms.reconstruction.shape == terms.kl.shape == (3, 6)
    assert terms.beta.shape == (3, 1) and terms.beta.flatten().tolist() == [0.5, 1.0, 4.0]
    (eps,) = tape.draws  # one randn (M, n, k) for the whole ensemble
    assert eps.shape == (3, 6, 2)
    for m in range(3):
        tape.replay(m)
        single = ens.member(m).terms(x, torch.Generator())
        assert single.beta == ens.betas[m].item()
        torch.testing.assert_close(terms.kl[m], single.kl, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(
            terms.reconstruction[m], single.reconstruction, rtol=1e-13, atol=1e-12
        )
        torch.testing.assert_close(terms.objective[m], single.objective, rtol=1e-13, atol=1e-12)
    # The same check without the tape: decode z = mu + sigma * eps by hand.
    mu, logvar = ens.encode(x)
    z = mu + torch.exp(0.5 * logvar) * eps
    rec = reconstruction_log_likelihood(x, ens.member(1).decode(z[1]), likelihood, -0.5)
    torch.testing.assert_close(terms.reconstruction[1], rec, rtol=1e-13, atol=1e-12)


# -- training with fit -----------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 16])
def test_fit_on_the_ensemble_equals_fit_on_each_member_alone(images, tape, batch_size):
    """The key property: one fit of the ensemble = M separate fits of its members.

    Same initial weights, same data, same mini-batch order (fit draws it from ``seed``, which
    does not depend on the model) and the same noise: a single model's own noise stream
    cannot equal its slice of the ensemble's ``randn(M, n, k)``, so the ensemble's noise is
    recorded and member m's slice is replayed into member m's run. Everything else is the
    real fit with its real Adam, in float64.
    """
    data = images[:40]
    ens = small_ensemble(betas=(0.5, 1.0, 4.0)).double()
    singles = [ens.member(m) for m in range(3)]
    kwargs = {"epochs": 3, "batch_size": batch_size, "lr": 1e-2, "seed": 7, "progress": False}
    tape.record()
    history = fit(ens, data, **kwargs)
    assert len(tape.draws) == 3 * (1 if batch_size is None else 3)  # one draw per step
    for m, vae in enumerate(singles):
        tape.replay(m)
        single_history = fit(vae, data, **kwargs)
        trained = ens.member(m).state_dict()
        for key, value in vae.state_dict().items():
            torch.testing.assert_close(trained[key], value, rtol=1e-9, atol=1e-10)
        for key, values in single_history.terms.items():
            got = [epoch[m] for epoch in history[key]]
            np.testing.assert_allclose(got, values, rtol=1e-9, atol=1e-10)
    # Training moved the weights: the comparison above is not between initial weights.
    assert not same_state(ens.member(0), small_ensemble().double().member(0))


def test_history_of_an_ensemble_holds_one_value_per_member_and_epoch(images):
    ens = small_ensemble(members=4, betas=[0.5, 1.0, 2.0, 4.0])
    history = fit(ens, images.float(), epochs=3, batch_size=50, progress=False)
    assert set(history.terms) == {"reconstruction", "kl", "elbo", "objective"}
    assert len(history) == 3
    for values in history.terms.values():
        assert len(values) == 3
        assert all(isinstance(v, np.ndarray) and v.shape == (4,) for v in values)
    rec, kl = np.stack(history["reconstruction"]), np.stack(history["kl"])
    assert rec.shape == kl.shape == (3, 4)
    np.testing.assert_allclose(np.stack(history["elbo"]), rec - kl, rtol=1e-6)
    np.testing.assert_allclose(np.stack(history["objective"]), rec - [0.5, 1, 2, 4] * kl, rtol=1e-6)
    assert history.final()["kl"].shape == (4,)


def test_each_member_is_trained_with_its_own_beta(images):
    """Two members start from the same weights; the one with the larger β ends with less KL."""
    ens = EnsembleVAE(
        2, SHAPE, [32], 2, [32], betas=[0.5, 8.0], likelihood="bernoulli", seed=0
    ).double()
    ens.load_member(1, ens.member(0))
    history = fit(ens, images, epochs=30, batch_size=50, lr=1e-2, progress=False)
    kl_small_beta, kl_large_beta = history.final()["kl"]
    assert kl_small_beta > 1.0  # the β = 0.5 member uses its latents
    assert kl_large_beta < 0.5 * kl_small_beta


def test_ensemble_and_its_training_are_reproducible_for_a_seed(images):
    assert same_state(small_ensemble(seed=4), small_ensemble(seed=4))
    assert not same_state(small_ensemble(seed=4), small_ensemble(seed=5))

    def run():
        ens = small_ensemble(seed=4)
        history = fit(ens, images.float(), epochs=2, batch_size=50, seed=1, progress=False)
        return history, ens

    (h1, e1), (h2, e2) = run(), run()
    assert all(
        np.array_equal(a, b) for key in h1.terms for a, b in zip(h1[key], h2[key], strict=True)
    )
    assert same_state(e1, e2)


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("betas", "error", "match"),
    [
        (0.0, ValueError, "betas must be > 0"),
        (-1.0, ValueError, "betas must be > 0"),
        ([1.0, 0.0, 2.0], ValueError, r"betas\[1\] must be > 0"),
        ([1.0, -2.0, 2.0], ValueError, r"betas\[1\] must be > 0"),
        ([1.0, math.nan, 2.0], ValueError, r"betas\[1\] must be finite"),
        (math.inf, ValueError, "betas must be finite"),
        ([1.0, 2.0], ValueError, "betas must be a number or 3 numbers"),
        (torch.ones(3, 1), ValueError, "betas must be a number or 3 numbers"),
        ("1", TypeError, "betas must be a number"),
        (None, TypeError, "betas must be a number"),
        ([1.0, "a", 2.0], TypeError, "betas must be a number"),
    ],
)
def test_bad_betas_raise_naming_the_argument(betas, error, match):
    with pytest.raises(error, match=match):
        small_ensemble(betas=betas)


def test_betas_accept_a_number_a_sequence_an_array_or_a_tensor():
    for betas in (2, [2.0, 2.0, 2.0], np.full(3, 2.0), torch.full((3,), 2.0)):
        assert small_ensemble(betas=betas).betas.tolist() == [2.0, 2.0, 2.0]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"members": 0}, ValueError, "members must be > 0"),
        ({"members": 2.0}, TypeError, "members must be an int"),
        ({"input_shape": (8, 0)}, ValueError, "input_shape must be > 0"),
        ({"encoder_hidden": []}, ValueError, "encoder_hidden needs at least 1"),
        ({"latent_dim": 0}, ValueError, "latent_dim must be > 0"),
        ({"decoder_hidden": [4, -1]}, ValueError, "decoder_hidden must be > 0"),
        ({"likelihood": "poisson"}, ValueError, "likelihood must be one of"),
        ({"activation": "gelu"}, ValueError, "activation must be one of"),
        ({"log_gamma": math.nan}, ValueError, "log_gamma must be finite"),
        ({"log_gamma": "0"}, TypeError, "log_gamma must be a number"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
    ],
)
def test_bad_constructor_arguments_raise_naming_the_argument(kwargs, error, match):
    args = {
        "members": 2,
        "input_shape": SHAPE,
        "encoder_hidden": [4],
        "latent_dim": 2,
        "decoder_hidden": [4],
        "betas": 1.0,
        **kwargs,
    }
    with pytest.raises(error, match=match):
        EnsembleVAE(**args)


def test_bad_shapes_and_indices_raise_naming_the_argument():
    ens = small_ensemble()
    for x in (torch.zeros(5, 64), torch.zeros(2, 5, *SHAPE), torch.zeros(5, 8, 7)):
        with pytest.raises(ValueError, match="x must be"):
            ens.encode(x)
        with pytest.raises(ValueError, match="x must be"):
            ens.terms(x)
    with pytest.raises(ValueError, match="x must be finite"):
        ens.terms(torch.full((2, *SHAPE), math.nan))
    for z in (torch.zeros(5, 3), torch.zeros(2, 5, 2), torch.zeros(3, 5, 2, 1)):
        with pytest.raises(ValueError, match="z must be"):
            ens.decode(z)
    with pytest.raises(ValueError, match="m must be < members"):
        ens.member(3)
    with pytest.raises(ValueError, match="m must be >= 0"):
        ens.member(-1)
    with pytest.raises(TypeError, match=r"vae must be a vaebook\.nets\.VAE"):
        ens.load_member(0, nn.Linear(2, 2))
    other = small_ensemble(activation="relu").member(0)
    with pytest.raises(ValueError, match="vae must have the members' architecture"):
        ens.load_member(0, other)
    wider = EnsembleVAE(3, SHAPE, [13, 10], 2, [10, 12], betas=1.0).member(0)
    with pytest.raises(ValueError, match="vae must have the members' architecture"):
        ens.load_member(0, wider)
    with pytest.raises(ValueError, match=r"x must be \(4, n, 5\)"):
        EnsembleLinear(4, 5, 3)(torch.zeros(3, 2, 5))
    with pytest.raises(ValueError, match="sizes needs at least 2"):
        ensemble_mlp(2, [5])


def test_ensemble_terms_are_elbo_terms_whose_mean_is_per_member(gen):
    ens = small_ensemble()
    terms = ens.terms(torch.rand(4, *SHAPE, generator=gen), gen)
    assert isinstance(terms, ELBOTerms)
    mean = terms.mean()
    assert mean.reconstruction.shape == mean.kl.shape == mean.beta.shape == (3,)
    torch.testing.assert_close(mean.objective, terms.objective.mean(-1))


# -- learned per-member decoder variances (Dai & Wipf) ---------------------------------------

TERM_KEYS = ("reconstruction", "kl", "elbo", "objective")
GAMMAS = torch.tensor([-0.5, 0.25, -1.0], dtype=F64)  # exact in float32 too


def gamma_ensemble(**kwargs):
    ens = small_ensemble(learn_gamma=True, **kwargs).double()
    with torch.no_grad():
        ens.log_gamma.copy_(GAMMAS)
    return ens


def test_learned_log_gamma_is_one_parameter_per_member():
    ens = small_ensemble(learn_gamma=True, log_gamma=-0.75)
    assert ens.learn_gamma
    assert isinstance(ens.log_gamma, nn.Parameter) and ens.log_gamma.shape == (3,)
    assert ens.log_gamma.tolist() == [-0.75, -0.75, -0.75]
    assert "log_gamma" in dict(ens.named_parameters())
    fixed = small_ensemble(log_gamma=-0.75)
    assert not fixed.learn_gamma and not isinstance(fixed.log_gamma, nn.Parameter)
    assert fixed.log_gamma.shape == () and "log_gamma" not in dict(fixed.named_parameters())
    assert "log_gamma" in dict(fixed.named_buffers())
    # The rest of the initialisation does not depend on learn_gamma.
    weights = {k: v for k, v in ens.state_dict().items() if k != "log_gamma"}
    assert all(torch.equal(v, fixed.state_dict()[k]) for k, v in weights.items())


def test_member_carries_its_learned_log_gamma_and_load_member_writes_it_back():
    ens = gamma_ensemble()
    for m in range(3):
        vae = ens.member(m)
        assert isinstance(vae.log_gamma, nn.Parameter) and vae.log_gamma.dtype == F64
        assert vae.log_gamma.item() == GAMMAS[m].item()
    vae = ens.member(1)
    with torch.no_grad():
        vae.log_gamma.fill_(2.5)
    assert ens.log_gamma[1].item() == 0.25  # member() returned a copy
    ens.load_member(0, vae)
    assert ens.log_gamma.tolist() == [2.5, 0.25, -1.0]
    assert same_state(ens.member(0), vae)
    # A fixed log_gamma stays the ensemble's: a member with another value does not change it.
    fixed = small_ensemble(log_gamma=-0.5).double()
    other = small_ensemble(log_gamma=1.0).double().member(2)
    fixed.load_member(0, other)
    assert fixed.log_gamma.item() == -0.5 and fixed.member(0).log_gamma.item() == -0.5
    assert not isinstance(fixed.member(0).log_gamma, nn.Parameter)


def test_one_fixed_log_gamma_per_member_reaches_each_members_likelihood(gen, tape):
    ens = small_ensemble(log_gamma=GAMMAS.tolist()).double()
    assert not ens.learn_gamma and "log_gamma" in dict(ens.named_buffers())
    assert ens.log_gamma.tolist() == GAMMAS.tolist()
    # The decoder variances do not enter the initial weights.
    shared = small_ensemble(log_gamma=0.0).double()
    weights = {k: v for k, v in ens.state_dict().items() if k != "log_gamma"}
    assert all(torch.equal(v, shared.state_dict()[k]) for k, v in weights.items())
    x = torch.rand(5, *SHAPE, generator=gen, dtype=F64)
    tape.record()
    terms = ens.terms(x, torch.Generator().manual_seed(2))
    for m in range(3):
        single = ens.member(m)
        assert single.log_gamma.item() == GAMMAS[m].item()
        tape.replay(m)
        torch.testing.assert_close(
            terms.reconstruction[m],
            single.terms(x, torch.Generator()).reconstruction,
            rtol=1e-13,
            atol=1e-12,
        )
    # Member 1's reconstruction term with variance e^0.25 differs from member 0's (e^-0.5).
    assert not torch.allclose(terms.reconstruction[0], terms.reconstruction[1])
    learned = small_ensemble(learn_gamma=True, log_gamma=GAMMAS.tolist())
    assert isinstance(learned.log_gamma, nn.Parameter)
    assert learned.log_gamma.tolist() == GAMMAS.tolist()


@pytest.mark.parametrize(
    ("log_gamma", "error", "match"),
    [
        ([0.0, 1.0], ValueError, r"log_gamma must be a number or 3 numbers \(one per member\)"),
        ([[0.0, 1.0, 2.0]], ValueError, "got shape \\(1, 3\\)"),
        ([0.0, math.inf, 1.0], ValueError, "log_gamma must be finite"),
        (["a", "b", "c"], TypeError, "log_gamma must be a number or a sequence"),
        (None, TypeError, "log_gamma must be a number or a sequence"),
    ],
)
def test_bad_per_member_log_gamma_raises_naming_it(log_gamma, error, match):
    with pytest.raises(error, match=match):
        small_ensemble(log_gamma=log_gamma)


def test_member_keeps_a_float64_learned_log_gamma_exactly():
    ens = small_ensemble(learn_gamma=True).double()
    with torch.no_grad():
        ens.log_gamma.copy_(torch.tensor([0.1, -0.3, 1 / 3], dtype=F64))
    for m in range(3):
        assert ens.member(m).log_gamma.item() == ens.log_gamma[m].item()


def test_terms_with_learned_gammas_equal_each_members_terms(gen, tape):
    ens = gamma_ensemble()
    x = torch.rand(6, *SHAPE, generator=gen, dtype=F64)
    tape.record()
    terms = ens.terms(x, torch.Generator().manual_seed(1))
    for m in range(3):
        tape.replay(m)
        single = ens.member(m).terms(x, torch.Generator())
        torch.testing.assert_close(terms.kl[m], single.kl, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(
            terms.reconstruction[m], single.reconstruction, rtol=1e-13, atol=1e-12
        )
    # The reconstruction of member m uses γ_m: by hand from the recorded noise.
    (eps,) = tape.draws
    mu, logvar = ens.encode(x)
    out = ens.decode(mu + torch.exp(0.5 * logvar) * eps)
    for m in range(3):
        rec = reconstruction_log_likelihood(x, out[m], "gaussian", GAMMAS[m].item())
        torch.testing.assert_close(terms.reconstruction[m], rec, rtol=1e-13, atol=1e-12)
    # The gradient reaches each member's log_gamma from its own objective only.
    terms.mean().objective[1].backward()
    grad = ens.log_gamma.grad
    assert grad[1] != 0 and grad[0] == 0 and grad[2] == 0


def test_log_likelihood_uses_each_members_gamma(gen):
    ens = gamma_ensemble()
    x = torch.rand(3, 4, 64, generator=gen, dtype=F64)
    out = torch.rand(3, 4, 64, generator=gen, dtype=F64)
    got = ens.log_likelihood(x, out)
    assert got.shape == (3, 4)
    for m in range(3):
        expected = reconstruction_log_likelihood(x[m], out[m], "gaussian", GAMMAS[m].item())
        torch.testing.assert_close(got[m], expected, rtol=1e-14, atol=1e-12)
    fixed = small_ensemble(log_gamma=-0.5).double()
    expected = reconstruction_log_likelihood(x[2], out[2], "gaussian", -0.5)
    torch.testing.assert_close(fixed.log_likelihood(x, out)[2], expected, rtol=1e-14, atol=1e-12)


@pytest.mark.parametrize(
    ("x_shape", "out_shape"),
    [
        ((4, 64), (4, 64)),
        ((3, 4, 64), (3, 4, 63)),
        ((2, 4, 64), (2, 4, 64)),
        ((3, 4, 8, 8), (3, 4, 8, 8)),
    ],
)
def test_log_likelihood_rejects_bad_shapes(x_shape, out_shape):
    with pytest.raises(ValueError, match=r"x and decoder_output must both be \(3, n, D\)"):
        small_ensemble().log_likelihood(torch.zeros(x_shape), torch.zeros(out_shape))


@pytest.mark.parametrize("batch_size", [None, 8])
def test_fit_per_member_equals_fit_of_each_member_on_its_own_data(images, tape, batch_size):
    """per_member=True: member m sees batches of data[m] only, with the same indices as the
    other members, and learns its own γ; exactly M separate fits with the same noise."""
    data = torch.stack([images[:20], images[20:40], images[40:60]])  # (M, n, 8, 8)
    ens = gamma_ensemble()
    singles = [ens.member(m) for m in range(3)]
    kwargs = {"epochs": 3, "batch_size": batch_size, "lr": 1e-2, "seed": 3, "progress": False}
    tape.record()
    history = fit(ens, data, per_member=True, **kwargs)
    assert len(history) == 3
    assert all(v.shape == (3,) for v in history["log_gamma"])
    np.testing.assert_array_equal(history["log_gamma"][-1], ens.log_gamma.detach().numpy())
    for m, vae in enumerate(singles):
        tape.replay(m)
        single_history = fit(vae, data[m], **kwargs)
        trained = ens.member(m).state_dict()
        for key, value in vae.state_dict().items():
            torch.testing.assert_close(trained[key], value, rtol=1e-7, atol=1e-8)
        # (log_gamma's history is compared only at the end: see
        # test_train.py::test_history_of_a_float64_learned_gamma_is_not_the_live_parameter.)
        for key in TERM_KEYS:
            got = [epoch[m] for epoch in history[key]]
            np.testing.assert_allclose(got, single_history[key], rtol=1e-7, atol=1e-8)
        assert history["log_gamma"][-1][m] == pytest.approx(
            single_history["log_gamma"][-1], rel=1e-7
        )
    # Every γ moved, and differently: each member has its own data.
    final = history["log_gamma"][-1]
    assert bool((final != GAMMAS.numpy()).all()) and len(set(final - GAMMAS.numpy())) == 3
    # data[1] shared by every member, with the same noise: member 1 saw the same batches as
    # in the per-member run and ends identical; members 0 and 2 saw other data.
    tape.record()
    shared = gamma_ensemble()
    fit(shared, data[1], **kwargs)
    assert same_state(shared.member(1), ens.member(1))
    assert not same_state(shared.member(0), ens.member(0))
    assert not same_state(shared.member(2), ens.member(2))
