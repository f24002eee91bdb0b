"""Tests of vaebook.objectives against torch.distributions and the β-VAE identities."""

import math

import numpy as np
import pytest
import torch
from helpers import randn
from torch.distributions import Bernoulli, Normal, kl_divergence

from vaebook.objectives import (
    LIKELIHOODS,
    ELBOTerms,
    bernoulli_log_likelihood,
    beta_vae_terms,
    decoder_mean,
    gaussian_log_likelihood,
    reconstruction_log_likelihood,
)

F64 = torch.float64


@pytest.mark.parametrize("log_gamma_shape", [None, (), (1, 3, 4)])
def test_gaussian_log_likelihood_matches_torch_normal(gen, log_gamma_shape):
    x, mean = randn(gen, 5, 1, 3, 4), randn(gen, 5, 1, 3, 4)
    log_gamma = -0.7 if log_gamma_shape is None else randn(gen, *log_gamma_shape)
    std = torch.exp(0.5 * torch.as_tensor(log_gamma, dtype=F64))
    expected = Normal(mean, std).log_prob(x).sum((1, 2, 3))
    got = gaussian_log_likelihood(x, mean, log_gamma)
    assert got.shape == (5,)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_gaussian_log_likelihood_gradient_reaches_a_learned_log_gamma(gen):
    x, mean = randn(gen, 4, 6), randn(gen, 4, 6)
    log_gamma = torch.tensor(0.3, dtype=F64, requires_grad=True)
    gaussian_log_likelihood(x, mean, log_gamma).sum().backward()
    # d/dlog γ of -1/2 [log γ + r²/γ] summed over the 24 entries.
    expected = -0.5 * (24 - ((x - mean) ** 2).sum() * math.exp(-0.3))
    torch.testing.assert_close(log_gamma.grad, expected)


def test_bernoulli_log_likelihood_matches_torch_bernoulli_for_binary_x(gen):
    logits = 3 * randn(gen, 6, 2, 5)
    x = (torch.rand(6, 2, 5, generator=gen, dtype=F64) < 0.4).to(F64)
    expected = Bernoulli(logits=logits).log_prob(x).sum((1, 2))
    torch.testing.assert_close(
        bernoulli_log_likelihood(x, logits), expected, rtol=1e-12, atol=1e-12
    )


def test_bernoulli_log_likelihood_is_the_cross_entropy_for_grey_levels(gen):
    logits, x = randn(gen, 4, 7), torch.rand(4, 7, generator=gen, dtype=F64)
    log_sig = torch.nn.functional.logsigmoid
    expected = (x * log_sig(logits) + (1 - x) * log_sig(-logits)).sum(-1)
    torch.testing.assert_close(
        bernoulli_log_likelihood(x, logits), expected, rtol=1e-12, atol=1e-12
    )


def test_bernoulli_log_likelihood_is_finite_for_saturated_logits():
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    logits = torch.tensor([[-200.0, 200.0, 200.0, -200.0]])  # sigmoid is exactly 0 or 1 in float32
    torch.testing.assert_close(bernoulli_log_likelihood(x, logits), torch.tensor([-400.0]))


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_reconstruction_log_likelihood_dispatches_on_the_likelihood(gen, likelihood):
    x, out = torch.rand(3, 8, generator=gen, dtype=F64), randn(gen, 3, 8)
    got = reconstruction_log_likelihood(x, out, likelihood, log_gamma=-1.2)
    if likelihood == "gaussian":
        expected = gaussian_log_likelihood(x, out, -1.2)
    else:  # log_gamma plays no role for a Bernoulli decoder
        expected = bernoulli_log_likelihood(x, out)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_beta_vae_terms_combine_reconstruction_and_exact_kl(gen, likelihood):
    x, out = torch.rand(5, 2, 4, generator=gen, dtype=F64), randn(gen, 5, 2, 4)
    mu, logvar = randn(gen, 5, 3), randn(gen, 5, 3)
    terms = beta_vae_terms(x, out, mu, logvar, beta=4.0, likelihood=likelihood, log_gamma=0.5)
    q = Normal(mu, torch.exp(0.5 * logvar))
    kl = kl_divergence(q, Normal(torch.zeros_like(mu), 1.0)).sum(-1)
    rec = reconstruction_log_likelihood(x, out, likelihood, log_gamma=0.5)
    assert terms.beta == 4.0
    torch.testing.assert_close(terms.kl, kl, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(terms.reconstruction, rec, rtol=0, atol=0)
    torch.testing.assert_close(terms.elbo, rec - kl, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(terms.objective, rec - 4.0 * kl, rtol=1e-12, atol=1e-12)


def test_objective_equals_elbo_at_beta_one_and_falls_with_beta_while_kl_is_positive(gen):
    x, out, mu, logvar = randn(gen, 4, 6), randn(gen, 4, 6), randn(gen, 4, 2), randn(gen, 4, 2)
    at_one = beta_vae_terms(x, out, mu, logvar)
    torch.testing.assert_close(at_one.objective, at_one.elbo, rtol=0, atol=0)
    at_two = beta_vae_terms(x, out, mu, logvar, beta=2.0)
    assert bool((at_two.objective < at_one.objective).all())


def test_elbo_terms_mean_and_as_dict_average_over_examples():
    terms = ELBOTerms(torch.tensor([-1.0, -3.0]), torch.tensor([0.5, 1.5]), beta=2.0)
    mean = terms.mean()
    assert mean.reconstruction.shape == () and mean.beta == 2.0
    assert mean.reconstruction.item() == -2.0 and mean.kl.item() == 1.0
    assert terms.as_dict() == {"reconstruction": -2.0, "kl": 1.0, "elbo": -3.0, "objective": -4.0}
    assert all(type(v) is float for v in terms.as_dict().values())


def test_elbo_terms_of_an_ensemble_average_each_member_over_its_examples():
    """Ensemble terms (M, n) with one β per member (M, 1): mean() gives one value per member."""
    rec = torch.tensor([[-1.0, -3.0], [-5.0, -7.0], [0.0, 2.0]], dtype=F64)
    kl = torch.tensor([[0.5, 1.5], [1.0, 3.0], [2.0, 2.0]], dtype=F64)
    beta = torch.tensor([[1.0], [2.0], [4.0]], dtype=F64)
    terms = ELBOTerms(rec, kl, beta)
    torch.testing.assert_close(terms.objective, rec - beta * kl, rtol=0, atol=0)
    mean = terms.mean()
    assert mean.averaged and not terms.averaged
    assert mean.reconstruction.shape == mean.kl.shape == mean.beta.shape == (3,)
    torch.testing.assert_close(mean.objective, terms.objective.mean(-1), rtol=1e-15, atol=0)
    assert mean.mean() is mean  # already averaged: averaging again changes nothing
    values = terms.as_dict()
    assert values.keys() == {"reconstruction", "kl", "elbo", "objective"}
    for value in values.values():
        assert isinstance(value, np.ndarray) and value.shape == (3,) and value.dtype == np.float64
    np.testing.assert_array_equal(values["kl"], [1.0, 2.0, 2.0])
    np.testing.assert_array_equal(values["objective"], [-3.0, -10.0, -7.0])
    assert terms.mean().as_dict().keys() == values.keys()
    np.testing.assert_array_equal(terms.mean().as_dict()["objective"], values["objective"])


def test_elbo_terms_mean_of_averaged_single_model_terms_is_unchanged():
    terms = ELBOTerms(torch.tensor([-1.0, -3.0]), torch.tensor([0.5, 1.5]), beta=2.0).mean()
    assert terms.mean() is terms
    assert terms.as_dict()["objective"] == -4.0


@pytest.mark.parametrize("beta_shape", [(3, 2), (3,), (1, 3, 1)])
def test_elbo_terms_mean_rejects_a_beta_that_varies_over_the_examples(beta_shape):
    terms = ELBOTerms(torch.zeros(3, 2), torch.zeros(3, 2), torch.ones(beta_shape))
    with pytest.raises(ValueError, match=r"^beta must be a number or a tensor with size 1 along"):
        terms.mean()


def test_elbo_terms_mean_keeps_leading_axes_and_removes_the_example_axis_only(gen):
    """Terms (2, 3, n) with beta (2, 3, 1): mean() gives (2, 3) terms and a (2, 3) beta."""
    rec, kl = randn(gen, 2, 3, 4), randn(gen, 2, 3, 4).abs()
    beta = torch.arange(1.0, 7.0, dtype=F64).reshape(2, 3, 1)
    mean = ELBOTerms(rec, kl, beta).mean()
    assert mean.beta.shape == mean.reconstruction.shape == (2, 3)
    torch.testing.assert_close(mean.reconstruction, rec.sum(-1) / 4, rtol=1e-15, atol=0)
    torch.testing.assert_close(mean.objective, (rec - beta * kl).sum(-1) / 4)


def test_elbo_terms_take_a_zero_dim_tensor_beta_and_default_to_beta_one():
    rec, kl = torch.tensor([-1.0, -3.0]), torch.tensor([0.5, 1.5])
    assert ELBOTerms(rec, kl, torch.tensor(2.0)).mean().objective.item() == -4.0
    assert ELBOTerms(rec, kl).as_dict()["objective"] == -3.0  # the ELBO


def test_elbo_terms_as_dict_gives_float64_copies_for_float32_ensemble_terms():
    rec = torch.tensor([[-1.0, -2.0], [0.1, 0.2]])  # float32
    values = ELBOTerms(rec, torch.zeros(2, 2), torch.ones(2, 1)).as_dict()
    assert values["reconstruction"].dtype == np.float64
    np.testing.assert_array_equal(values["reconstruction"], rec.mean(-1).double().numpy())


def test_defaults_are_a_unit_variance_gaussian_decoder_and_beta_one(gen):
    x, out, mu, logvar = randn(gen, 4, 6), randn(gen, 4, 6), randn(gen, 4, 2), randn(gen, 4, 2)
    expected = Normal(out, 1.0).log_prob(x).sum(-1)
    torch.testing.assert_close(reconstruction_log_likelihood(x, out), expected)
    torch.testing.assert_close(gaussian_log_likelihood(x, out), expected)
    terms = beta_vae_terms(x, out, mu, logvar)
    torch.testing.assert_close(terms.reconstruction, expected)
    assert terms.beta == 1.0
    assert torch.equal(decoder_mean(out), out)


def test_plain_values_take_the_float64_dtype_of_the_data(gen):
    """Lists and numbers are converted in the dtype of ``x`` / ``mu``: no float32 rounding."""
    x, mean, mu, logvar = randn(gen, 3, 4), randn(gen, 3, 4), randn(gen, 3, 2), randn(gen, 3, 2)
    got = gaussian_log_likelihood(x, mean.tolist(), -0.7)
    expected = gaussian_log_likelihood(x, mean, torch.tensor(-0.7, dtype=F64))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    terms = beta_vae_terms(x, mean, mu, logvar.tolist())
    torch.testing.assert_close(terms.kl, beta_vae_terms(x, mean, mu, logvar).kl, rtol=0, atol=0)


def test_elbo_terms_are_immutable():
    terms = ELBOTerms(torch.zeros(2), torch.zeros(2))
    with pytest.raises(AttributeError):
        terms.beta = 3.0


X = torch.rand(3, 4)
MU, LOGVAR = torch.zeros(3, 2), torch.zeros(3, 2)
V25 = torch.zeros(2, 5)  # 2 examples, 5 latent dimensions
OUTSIDE = r"x must lie in \[0, 1\] for a Bernoulli likelihood$"


@pytest.mark.parametrize(
    ("func", "args", "kwargs", "error", "match"),
    [
        (gaussian_log_likelihood, (X, torch.zeros(3, 5)), {}, ValueError, "mean has shape"),
        (gaussian_log_likelihood, (X, X[:2]), {}, ValueError, r"mean has shape \(2, 4\) but x has"),
        (gaussian_log_likelihood, (X * math.nan, X), {}, ValueError, "x must be finite"),
        (gaussian_log_likelihood, (X, X * math.nan), {}, ValueError, "mean must be finite"),
        (gaussian_log_likelihood, (torch.tensor(1.0), 0.0), {}, ValueError, "x must have a"),
        (gaussian_log_likelihood, (X, X, math.nan), {}, ValueError, "log_gamma must be finite"),
        (gaussian_log_likelihood, (X, X, "big"), {}, TypeError, "log_gamma"),
        (bernoulli_log_likelihood, (X + 1.5, X), {}, ValueError, OUTSIDE),
        (bernoulli_log_likelihood, (X * 0 + 1.2, X), {}, ValueError, OUTSIDE),
        (bernoulli_log_likelihood, (X * 0 - 0.2, X), {}, ValueError, OUTSIDE),
        (bernoulli_log_likelihood, (X, X[:2]), {}, ValueError, r"logits has shape \(2, 4\) but x "),
        (bernoulli_log_likelihood, (X * math.nan, X), {}, ValueError, "x must be finite"),
        (bernoulli_log_likelihood, (X, X * math.inf), {}, ValueError, "logits must be finite"),
        (reconstruction_log_likelihood, (X, X, "poisson"), {}, ValueError, "likelihood must be "),
        (decoder_mean, (X, "poisson"), {}, ValueError, "likelihood must be one of"),
        (beta_vae_terms, (X, X, MU, LOGVAR), {"beta": 0.0}, ValueError, "beta must be > 0"),
        (beta_vae_terms, (X, X, MU, LOGVAR), {"beta": -1.0}, ValueError, "beta must be > 0"),
        (beta_vae_terms, (X, X, MU, LOGVAR), {"beta": math.inf}, ValueError, "beta"),
        (beta_vae_terms, (X, X, MU, LOGVAR), {"beta": "1"}, TypeError, "beta"),
        (beta_vae_terms, (X, X, MU[0], LOGVAR[0]), {}, ValueError, "mu and logvar"),
        (beta_vae_terms, (X, X, MU, LOGVAR[:, :1]), {}, ValueError, "mu and logvar"),
        (beta_vae_terms, (X, X, MU[:2], LOGVAR[:2]), {}, ValueError, "x has 3 examples"),
        (beta_vae_terms, (X, X, V25, V25), {}, ValueError, "x has 3 examples but mu has 2$"),
        (beta_vae_terms, (X, X, MU, LOGVAR * math.nan), {}, ValueError, "logvar must be finite"),
        (beta_vae_terms, (X, X, MU * math.nan, LOGVAR), {}, ValueError, "mu must be finite"),
        (beta_vae_terms, (X, X, MU, LOGVAR), {"likelihood": "cauchy"}, ValueError, "likelihood m"),
    ],
)
def test_bad_input_raises_naming_the_argument(func, args, kwargs, error, match):
    """The message starts with the argument's name (vaebook.checks promises it)."""
    with pytest.raises(error, match="^" + match):
        func(*args, **kwargs)


def test_decoder_mean_is_the_bernoulli_mean_or_the_gaussian_output():
    out = torch.tensor([[-2.0, 0.0, 3.0]], dtype=F64)
    assert torch.equal(decoder_mean(out, "gaussian"), out)
    expected = torch.distributions.Bernoulli(logits=out).mean
    torch.testing.assert_close(decoder_mean(out, "bernoulli"), expected)
    with pytest.raises(ValueError, match="likelihood"):
        decoder_mean(out, "poisson")
