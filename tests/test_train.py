"""Tests of vaebook.train: the loop learns, is reproducible, batches correctly and fails loudly."""

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from vaebook.data import digit_exemplars
from vaebook.nets import VAE, mlp_decoder, mlp_encoder, seeded
from vaebook.objectives import ELBOTerms
from vaebook.train import History, fit, resolve_device

TERM_KEYS = {"reconstruction", "kl", "elbo", "objective"}


@pytest.fixture(scope="module")
def images():
    """300 of the 8x8 digits (30 per class)."""
    return digit_exemplars(30)[0]


def small_vae(**kwargs):
    with seeded(0):
        return VAE(mlp_encoder((8, 8), [32], 2), mlp_decoder(2, [32], (8, 8)), **kwargs)


class Probe(nn.Module):
    """A float64 model whose terms are known: reconstruction = sum of the example, kl = 0.

    It records every batch it sees, and its objective becomes NaN from epoch ``nan_at`` on.
    """

    def __init__(self, nan_at=None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.nan_at, self.calls, self.batches = nan_at, 0, []

    def terms(self, x, generator):
        self.batches.append(x.clone())
        self.calls += 1
        rec = x.flatten(1).sum(1) + 0 * self.weight
        if self.nan_at is not None and self.calls > self.nan_at:
            rec = rec * math.nan
        return ELBOTerms(rec, torch.zeros_like(rec))


class EnsembleProbe(nn.Module):
    """M probes in one model: member m's reconstruction is ``(m + 1) * sum(x) - (w_m - m)^2``.

    Its terms are ``(M, n)`` like an ensemble's; under the summed loss each ``w_m`` is pulled
    towards its own target ``m`` only.
    """

    def __init__(self, members=3):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(members, dtype=torch.float64))

    def terms(self, x, generator):
        members = self.weight.shape[0]
        scale = torch.arange(1.0, members + 1, dtype=torch.float64).unsqueeze(-1)
        target = torch.arange(float(members), dtype=torch.float64)
        penalty = ((self.weight - target) ** 2).unsqueeze(-1)
        rec = scale * x.flatten(1).sum(1) - penalty
        return ELBOTerms(rec, torch.ones_like(rec), beta=scale / 10)


def test_history_appends_indexes_and_reports_the_last_epoch():
    history = History()
    assert len(history) == 0
    history.append({"elbo": -3.0, "kl": 1.0})
    history.append({"elbo": -2.0, "kl": 0.5})
    assert len(history) == 2
    assert history["elbo"] == [-3.0, -2.0]
    assert history.final() == {"elbo": -2.0, "kl": 0.5}


def test_resolve_device_maps_auto_to_cuda_only_when_available(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("device", ["gpu", None, 1.5])
def test_resolve_device_rejects_unknown_devices(device):
    with pytest.raises(ValueError, match="device must be"):
        resolve_device(device)


@pytest.mark.parametrize("batch_size", [None, 64])
def test_fit_increases_the_objective_on_digits(images, batch_size):
    vae = small_vae(likelihood="bernoulli")
    history = fit(vae, images, epochs=15, batch_size=batch_size, lr=1e-2, progress=False)
    assert set(history.terms) == TERM_KEYS
    assert len(history) == 15
    assert all(math.isfinite(v) for values in history.terms.values() for v in values)
    # The Bernoulli reconstruction starts near -64 log 2 = -44 nats; training gains > 10 nats.
    assert history["objective"][-1] > history["objective"][0] + 10


def test_fit_history_records_the_model_terms(images):
    history = fit(small_vae(beta=4.0), images, epochs=3, batch_size=100, progress=False)
    rec, kl = torch.tensor(history["reconstruction"]), torch.tensor(history["kl"])
    torch.testing.assert_close(torch.tensor(history["elbo"]), rec - kl)
    torch.testing.assert_close(torch.tensor(history["objective"]), rec - 4.0 * kl)


@pytest.mark.parametrize("batch_size", [None, 3])
def test_fit_averages_each_epoch_over_every_example_once(batch_size):
    data = torch.arange(10.0).reshape(10, 1)
    probe = Probe()
    history = fit(probe, data, epochs=2, batch_size=batch_size, progress=False)
    assert history["reconstruction"] == pytest.approx([4.5, 4.5], rel=1e-12)  # mean of 0..9
    steps = 1 if batch_size is None else 4  # batches of 3, 3, 3 and 1
    epochs = [torch.cat(probe.batches[i * steps : (i + 1) * steps]) for i in range(2)]
    for seen in epochs:
        assert torch.equal(seen.flatten().sort().values, data.flatten())
    assert torch.equal(epochs[0], epochs[1]) == (batch_size is None)  # shuffled each epoch


def test_fit_with_a_batch_larger_than_the_data_is_full_batch():
    probe = Probe()
    fit(probe, torch.ones(5, 2), epochs=2, batch_size=50, progress=False)
    assert [b.shape[0] for b in probe.batches] == [5, 5]


@pytest.mark.parametrize("batch_size", [None, 100])
def test_fit_is_reproducible_for_a_seed_and_varies_with_it(images, batch_size):
    def run(seed):
        vae = small_vae()
        history = fit(vae, images, epochs=3, batch_size=batch_size, seed=seed, progress=False)
        return history, vae.state_dict()

    (h1, s1), (h2, s2), (h3, s3) = run(5), run(5), run(6)
    assert h1.terms == h2.terms
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert h1.terms != h3.terms
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


def test_fit_records_a_learned_log_gamma(images):
    vae = small_vae(log_gamma=0.0, learn_gamma=True)
    history = fit(vae, images, epochs=4, lr=1e-2, progress=False)
    assert len(history["log_gamma"]) == 4
    assert history["log_gamma"][-1] == vae.log_gamma.item()
    log_gamma = history["log_gamma"]
    assert all(a > b for a, b in itertools.pairwise(log_gamma))  # digits want a smaller variance
    assert "log_gamma" not in fit(small_vae(), images, epochs=1, progress=False).terms


def test_fit_trains_on_the_requested_device_in_the_model_dtype(images):
    vae = small_vae().double()
    history = fit(vae, images.float(), epochs=1, device="cpu", progress=False)
    assert len(history) == 1
    assert all(p.device.type == "cpu" and p.dtype == torch.float64 for p in vae.parameters())


@pytest.mark.parametrize("progress", [True, False])
def test_fit_shows_a_progress_bar_only_when_asked(capsys, progress):
    fit(Probe(), torch.ones(4, 2), epochs=2, progress=progress, description="probe-bar")
    assert ("probe-bar" in capsys.readouterr().err) == progress


def test_fit_raises_floating_point_error_when_the_objective_is_not_finite():
    with pytest.raises(FloatingPointError, match="at epoch 2"):
        fit(Probe(nan_at=2), torch.ones(4, 2), epochs=5, progress=False)


@pytest.mark.parametrize(
    ("model", "data", "kwargs", "error", "match"),
    [
        (nn.Linear(2, 2), torch.ones(4, 2), {}, TypeError, "model must have a terms"),
        (Probe(), torch.ones(4), {}, ValueError, r"data must be a batch \(n, \.\.\.\)"),
        (Probe(), torch.ones(0, 2), {}, ValueError, "data must hold at least one example"),
        (Probe(), torch.full((4, 2), math.nan), {}, ValueError, "data must be finite"),
        (Probe(), "data", {}, TypeError, "data must be a tensor"),
        (Probe(), torch.ones(4, 2), {"epochs": 0}, ValueError, "epochs must be > 0"),
        (Probe(), torch.ones(4, 2), {"epochs": 2.0}, TypeError, "epochs must be an int"),
        (Probe(), torch.ones(4, 2), {"batch_size": 0}, ValueError, "batch_size must be > 0"),
        (Probe(), torch.ones(4, 2), {"lr": 0.0}, ValueError, "lr must be > 0"),
        (Probe(), torch.ones(4, 2), {"lr": math.nan}, ValueError, "lr must be finite"),
        (Probe(), torch.ones(4, 2), {"seed": -1}, ValueError, "seed must be >= 0"),
        (Probe(), torch.ones(4, 2), {"device": "tpu0"}, ValueError, "device must be"),
    ],
)
def test_fit_bad_input_raises_naming_the_argument(model, data, kwargs, error, match):
    kwargs = {"epochs": 1, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        fit(model, data, **kwargs)


@pytest.mark.parametrize("batch_size", [None, 3])
def test_fit_trains_an_ensemble_with_one_history_entry_per_member(batch_size):
    data = torch.arange(10.0).reshape(10, 1)
    probe = EnsembleProbe(members=3)
    history = fit(probe, data, epochs=200, batch_size=batch_size, lr=0.05, progress=False)
    assert len(history) == 200
    for key in history.terms:
        assert all(isinstance(v, np.ndarray) and v.shape == (3,) for v in history[key])
        assert all(isinstance(v, np.ndarray) for v in history.final().values())
    # Epoch 0 averages over every example once, per member (before any step w = 0).
    first = history["reconstruction"][0] if batch_size is None else None
    if first is not None:
        np.testing.assert_allclose(first, [4.5 - 0.0, 9.0 - 1.0, 13.5 - 4.0])
    np.testing.assert_allclose(history["kl"][-1], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(history["objective"][-1], history["elbo"][-1] + 1 - [0.1, 0.2, 0.3])
    # Each member's weight went to its own target: the summed loss keeps members apart.
    torch.testing.assert_close(
        probe.weight.detach(), torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), atol=1e-3, rtol=0
    )


# -- per-member data, callbacks and the names of learned log-variances -------------------------


class PerMemberProbe(nn.Module):
    """An ensemble-shaped probe for data ``(M, n, 1)``: member m's reconstruction is its batch
    ``x[m]`` itself, so the epoch averages are the means of each member's own data."""

    def __init__(self, members=3):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(members, dtype=torch.float64))
        self.batches = []

    def terms(self, x, generator):
        self.batches.append(x.clone())
        rec = x[..., 0] + 0 * self.weight.sum()
        return ELBOTerms(rec, torch.zeros_like(rec))


@pytest.mark.parametrize("batch_size", [None, 3])
def test_fit_per_member_batches_along_the_example_axis(batch_size):
    # Member m's data are 100 m + 0..9: every batch row must come from its own member.
    data = (100.0 * torch.arange(3.0).reshape(3, 1) + torch.arange(10.0)).unsqueeze(-1)
    probe = PerMemberProbe()
    history = fit(probe, data, epochs=2, batch_size=batch_size, per_member=True, progress=False)
    assert len(history) == 2
    for epoch in history["reconstruction"]:
        np.testing.assert_allclose(epoch, [4.5, 104.5, 204.5], rtol=1e-12)
    steps = 1 if batch_size is None else 4  # batches of 3, 3, 3 and 1 examples
    assert len(probe.batches) == 2 * steps
    for batch in probe.batches:
        assert tuple(batch.shape) in (
            {(3, 10, 1)} if batch_size is None else {(3, 3, 1), (3, 1, 1)}
        )
        # The same example indices in every member's data.
        index = batch[0, :, 0]
        torch.testing.assert_close(batch[:, :, 0], index + 100 * torch.arange(3.0).unsqueeze(-1))
    for e in range(2):
        seen = torch.cat([b[0, :, 0] for b in probe.batches[e * steps : (e + 1) * steps]])
        assert torch.equal(seen.sort().values, torch.arange(10.0))


def test_fit_per_member_differs_from_batching_the_member_axis():
    data = torch.arange(30.0).reshape(3, 10, 1)
    per_member, shared = PerMemberProbe(), PerMemberProbe()
    fit(per_member, data, epochs=1, batch_size=2, per_member=True, progress=False)
    fit(shared, data, epochs=1, batch_size=2, progress=False)
    # Without per_member the 3 "examples" are the members' datasets: 2 steps, not 5.
    assert [tuple(b.shape) for b in per_member.batches] == [(3, 2, 1)] * 5
    assert [tuple(b.shape) for b in shared.batches] == [(2, 10, 1), (1, 10, 1)]


def test_fit_calls_the_callback_once_per_epoch_after_the_update():
    vae = small_vae(learn_gamma=True)
    calls = []

    def callback(epoch, model):
        calls.append((epoch, model, model.log_gamma.item()))

    images = digit_exemplars(3)[0]
    history = fit(vae, images, epochs=4, lr=1e-2, callback=callback, progress=False)
    assert [c[0] for c in calls] == [0, 1, 2, 3]
    assert all(c[1] is vae for c in calls)
    assert [c[2] for c in calls] == history["log_gamma"]  # the model as trained so far


class Nested(nn.Module):
    """A probe holding learned log-variances under several names, and a fixed one."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Module()
        self.inner.log_gamma = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
        self.log_gamma = nn.Parameter(torch.tensor(-0.5, dtype=torch.float64))
        self.my_log_gamma = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("fixed", torch.tensor(1.0, dtype=torch.float64))
        self.inner.register_buffer("log_gamma_buffer", torch.tensor(1.0))

    def terms(self, x, generator):
        rec = x.sum(1) * (self.inner.log_gamma + self.log_gamma + self.my_log_gamma)
        return ELBOTerms(rec, torch.zeros_like(rec))


def test_history_names_every_learned_log_gamma_by_its_parameter_name():
    history = fit(Nested(), torch.ones(4, 2), epochs=3, lr=0.1, progress=False)
    assert set(history.terms) == TERM_KEYS | {"log_gamma", "inner.log_gamma"}
    assert history["inner.log_gamma"][0] == pytest.approx(0.6)  # Adam's first step: lr
    assert history["log_gamma"][-1] == pytest.approx(-0.5 + 0.3, rel=1e-6)
    assert all(isinstance(v, float) for v in history["log_gamma"])


def test_history_of_an_ensembles_learned_gamma_holds_one_value_per_member():
    from vaebook.ensemble import EnsembleVAE

    ens = EnsembleVAE(2, (8, 8), [8], 2, [8], betas=1.0, learn_gamma=True)
    history = fit(ens, digit_exemplars(3)[0], epochs=3, lr=0.05, progress=False)
    values = np.stack(history["log_gamma"])
    assert values.shape == (3, 2)
    assert (np.diff(values, axis=0) != 0).all()  # one new value per epoch and member


def test_history_of_a_float64_learned_gamma_is_not_the_live_parameter():
    from vaebook.ensemble import EnsembleVAE

    ens = EnsembleVAE(2, (8, 8), [8], 2, [8], betas=1.0, learn_gamma=True).double()
    history = fit(ens, digit_exemplars(3)[0], epochs=3, lr=0.05, progress=False)
    values = np.stack(history["log_gamma"])
    assert (np.diff(values, axis=0) != 0).all()


@pytest.mark.parametrize(
    ("data", "kwargs", "error", "match"),
    [
        (
            torch.ones(4, 2),
            {"per_member": True},
            ValueError,
            r"per_member data must be \(M, n, \.\.\.\)",
        ),
        (
            torch.ones(2, 0, 3),
            {"per_member": True},
            ValueError,
            "data must hold at least one example",
        ),
        (torch.ones(4, 2), {"callback": "print"}, TypeError, "callback must be callable"),
        (torch.ones(4, 2), {"callback": 3}, TypeError, "callback must be callable"),
    ],
)
def test_fit_rejects_bad_per_member_data_and_callbacks(data, kwargs, error, match):
    with pytest.raises(error, match=match):
        fit(Probe(), data, epochs=1, progress=False, **kwargs)


# -- tuple data: (x, u) for models whose terms take several tensors ----------------------------


class PairProbe(nn.Module):
    """A float64 model taking ``terms(x, u, generator)``: it records both tensors it receives;
    reconstruction = sum of x + sum of u, kl = 0."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.batches = []

    def terms(self, x, u, generator):
        assert isinstance(generator, torch.Generator)
        self.batches.append((x.clone(), u.clone()))
        rec = x.flatten(1).sum(1) + u.flatten(1).sum(1) + 0 * self.weight
        return ELBOTerms(rec, torch.zeros_like(rec))


def _paired(n=10):
    """x = 0..n-1 and u = (1000 + 10 x, -x): each row of u is readable from its row of x."""
    x = torch.arange(float(n)).reshape(n, 1)
    u = torch.cat([1000 + 10 * x, -x], dim=1)
    return x, u


@pytest.mark.parametrize("batch_size", [None, 3])
@pytest.mark.parametrize("container", [tuple, list])
def test_fit_with_tuple_data_passes_matching_rows_of_every_tensor(batch_size, container):
    x, u = _paired()
    probe = PairProbe()
    history = fit(probe, container((x, u)), epochs=2, batch_size=batch_size, progress=False)
    # Epoch average of x + 1000 + 10 x - x over x = 0..9: 1000 + 10 * 4.5.
    assert history["reconstruction"] == pytest.approx([1045.0, 1045.0], rel=1e-12)
    steps = 1 if batch_size is None else 4
    assert len(probe.batches) == 2 * steps
    for xb, ub in probe.batches:
        assert xb.dtype == ub.dtype == torch.float64  # moved to the model's dtype
        assert xb.shape[0] == ub.shape[0] and ub.shape[1:] == (2,)
        torch.testing.assert_close(ub, torch.cat([1000 + 10 * xb, -xb], dim=1), rtol=0, atol=0)
    for e in range(2):
        seen = torch.cat([b[0] for b in probe.batches[e * steps : (e + 1) * steps]]).flatten()
        assert torch.equal(seen.sort().values, x.flatten())
    if batch_size is not None:  # shuffled: the batches are not the rows in order
        assert not torch.equal(probe.batches[0][0].flatten(), x[:3].flatten())


def test_fit_with_a_one_tensor_tuple_is_fit_with_the_tensor():
    data = torch.arange(10.0).reshape(10, 1)
    a, b = Probe(), Probe()
    ha = fit(a, (data,), epochs=2, batch_size=3, progress=False)
    hb = fit(b, data, epochs=2, batch_size=3, progress=False)
    assert ha.terms == hb.terms
    assert all(torch.equal(p, q) for p, q in zip(a.batches, b.batches, strict=True))


@pytest.mark.parametrize(
    ("data", "kwargs", "error", "match"),
    [
        ((torch.ones(4, 2), torch.ones(3, 2)), {}, ValueError, r"data\[1\] has 3 examples"),
        ((torch.ones(4, 2), torch.ones(5, 2)), {}, ValueError, r"data\[1\] has 5 examples but"),
        ((), {}, ValueError, "data must be a tensor or a non-empty tuple"),
        ([], {}, ValueError, "data must be a tensor or a non-empty tuple"),
        ((torch.ones(4, 2), torch.ones(4)), {}, ValueError, r"data\[1\] must be a batch"),
        ((torch.ones(4, 2), "u"), {}, TypeError, r"data\[1\] must be a tensor"),
        (
            (torch.ones(4, 2), torch.full((4, 2), math.nan)),
            {},
            ValueError,
            r"data\[1\] must be finite",
        ),
        ((torch.ones(0, 2), torch.ones(0, 2)), {}, ValueError, r"data\[0\] must hold at least"),
        (
            (torch.ones(2, 4, 1), torch.ones(4, 2)),
            {"per_member": True},
            ValueError,
            r"per_member data\[1\] must be \(M, n, \.\.\.\)",
        ),
        (
            (torch.ones(2, 4, 1), torch.ones(2, 3, 2)),
            {"per_member": True},
            ValueError,
            r"data\[1\] has 3 examples but data\[0\] has 4",
        ),
    ],
)
def test_fit_rejects_bad_tuple_data_naming_the_tensor(data, kwargs, error, match):
    with pytest.raises(error, match=match):
        fit(PairProbe(), data, epochs=1, progress=False, **kwargs)


class PerMemberPairProbe(nn.Module):
    """An ensemble-shaped probe for ``x (M, n, 1)`` and ``u (M, n, 1)``: records both."""

    def __init__(self, members=3):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(members, dtype=torch.float64))
        self.batches = []

    def terms(self, x, u, generator):
        self.batches.append((x.clone(), u.clone()))
        rec = x[..., 0] + u[..., 0] + 0 * self.weight.sum()
        return ELBOTerms(rec, torch.zeros_like(rec))


@pytest.mark.parametrize("batch_size", [None, 3])
def test_fit_per_member_with_tuple_data_takes_the_same_examples_from_every_tensor(batch_size):
    # Member m's x are 100 m + 0..9 and its u are -(100 m + 0..9) / 2.
    x = (100.0 * torch.arange(3.0).reshape(3, 1) + torch.arange(10.0)).unsqueeze(-1)
    u = -x / 2
    probe = PerMemberPairProbe()
    history = fit(probe, (x, u), epochs=2, batch_size=batch_size, per_member=True, progress=False)
    for epoch in history["reconstruction"]:
        np.testing.assert_allclose(epoch, [2.25, 52.25, 102.25], rtol=1e-12)
    steps = 1 if batch_size is None else 4
    assert len(probe.batches) == 2 * steps
    for xb, ub in probe.batches:
        assert xb.shape == ub.shape and xb.shape[0] == 3
        torch.testing.assert_close(ub, -xb / 2, rtol=0, atol=0)
        index = xb[0, :, 0]
        torch.testing.assert_close(xb[:, :, 0], index + 100 * torch.arange(3.0).unsqueeze(-1))
