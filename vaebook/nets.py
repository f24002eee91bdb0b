"""Encoder and decoder builders, and the :class:`VAE` module that ties them to the objective.

Builders return plain ``torch.nn`` modules so that a reader can print them and see every
layer. Images are ``(n, channels, height, width)`` or ``(n, height, width)``; MLPs flatten
them and decoders give them their shape back.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from .checks import check_choice, check_number, check_positive, check_positive_int, check_sizes
from .data import ink_centroid
from .gaussian import log_normal_diag, sample_diag_normal
from .objectives import (
    LIKELIHOODS,
    ELBOTerms,
    beta_vae_terms,
    decoder_mean,
    reconstruction_log_likelihood,
)

__all__ = [
    "ACTIVATIONS",
    "VAE",
    "AffineCoupling",
    "FlowEncoder",
    "FlowVAE",
    "GaussianEncoder",
    "InkCentroid",
    "centroid_encoder",
    "conv_decoder",
    "conv_encoder",
    "mlp",
    "mlp_decoder",
    "mlp_encoder",
    "seeded",
]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
}


@contextlib.contextmanager
def seeded(seed: int):
    """Run the block with torch's CPU random state set to ``seed``, restoring it afterwards.

    Parameter initialisation in ``torch.nn`` draws from the global generator; building a
    network inside ``with seeded(seed):`` makes it reproducible without changing the global
    state seen by the rest of a notebook.
    """
    check_positive_int(seed, "seed", allow_zero=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def mlp(sizes: Sequence[int], activation: str = "relu", final_activation: str | None = None):
    """A fully connected network ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    The activation follows every hidden layer; ``final_activation`` (default none) follows
    the last one.
    """
    sizes = check_sizes(sizes, "sizes", minimum=2)
    check_choice(activation, "activation", ACTIVATIONS)
    if final_activation is not None:
        check_choice(final_activation, "final_activation", ACTIVATIONS)
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(fan_in, fan_out))
        last = i == len(sizes) - 2
        if not last:
            layers.append(ACTIVATIONS[activation]())
        elif final_activation is not None:
            layers.append(ACTIVATIONS[final_activation]())
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """``x -> (mu, logvar)``: a feature network followed by two linear heads.

    Parameters
    ----------
    body : module mapping a batch ``(n, ...)`` to features ``(n, feature_dim)``.
    feature_dim, latent_dim : ints.
    """

    def __init__(self, body: nn.Module, feature_dim: int, latent_dim: int):
        super().__init__()
        check_positive_int(feature_dim, "feature_dim")
        check_positive_int(latent_dim, "latent_dim")
        self.body = body
        self.mu = nn.Linear(feature_dim, latent_dim)
        self.logvar = nn.Linear(feature_dim, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)``, each ``(n, latent_dim)``, for a batch ``x``."""
        h = self.body(x)
        return self.mu(h), self.logvar(h)


def mlp_encoder(input_shape, hidden: Sequence[int], latent_dim: int, activation: str = "relu"):
    """A :class:`GaussianEncoder` whose body flattens the input and applies an MLP.

    ``input_shape`` is the shape of one example (e.g. ``(8, 8)`` or ``(64,)``).
    """
    input_dim = math.prod(check_sizes(input_shape, "input_shape", minimum=1))
    hidden = check_sizes(hidden, "hidden", minimum=1)
    body = nn.Sequential(nn.Flatten(), mlp([input_dim, *hidden], activation, activation))
    return GaussianEncoder(body, hidden[-1], latent_dim)


def mlp_decoder(latent_dim: int, hidden: Sequence[int], output_shape, activation: str = "relu"):
    """An MLP ``z -> output`` reshaped to ``output_shape`` (the shape of one example)."""
    output_shape = check_sizes(output_shape, "output_shape", minimum=1)
    check_positive_int(latent_dim, "latent_dim")
    hidden = check_sizes(hidden, "hidden", minimum=1)
    net = mlp([latent_dim, *hidden, math.prod(output_shape)], activation)
    return nn.Sequential(net, nn.Unflatten(1, tuple(output_shape)))


class InkCentroid(nn.Module):
    """Features ``(n, 2)``: where the ink of each image is, standardised; no parameters.

    The ink centroid (:func:`vaebook.data.ink_centroid`) minus the mean, divided by the standard
    deviation, of the centroids of ``reference`` images ``(m, height, width)``, ``m >= 2``,
    whose centroids must vary along both axes. Images are ``(n, height, width)``.
    """

    def __init__(self, reference):
        super().__init__()
        centroids = ink_centroid(reference)
        if centroids.shape[0] < 2:
            raise ValueError(f"reference must hold at least 2 images, got {centroids.shape[0]}")
        spread = centroids.std(0)
        if not bool((spread > 0).all()):
            raise ValueError("reference images must have ink centroids that vary along both axes")
        self.register_buffer("centre", centroids.mean(0))
        self.register_buffer("spread", spread)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The standardised centroids ``(n, 2)`` of images ``x`` ``(n, height, width)``."""
        return (ink_centroid(x).to(self.centre) - self.centre) / self.spread


def centroid_encoder(reference, latent_dim: int = 2) -> GaussianEncoder:
    """A :class:`GaussianEncoder` that sees only where the ink is.

    Its mean and log-variance are affine functions of the image's ink centroid
    (:class:`InkCentroid`, standardised on ``reference`` images). For one object on a blank
    canvas it can carry the object's position along both axes and nothing else: a VAE with this
    encoder shows what a code of the position is worth under a β-VAE objective (Sikka et al.'s
    Fig. 3 asks whether trained codes carry both axes of motion).
    """
    return GaussianEncoder(InkCentroid(reference), 2, latent_dim)


def conv_encoder(image_shape, latent_dim: int, channels=(32, 64), hidden: int = 128):
    """A convolutional :class:`GaussianEncoder` for images ``(c, h, w)``.

    Each entry of ``channels`` is a 4x4 convolution of stride 2 (halving the resolution,
    so ``h`` and ``w`` must be divisible by ``2 ** len(channels)``), followed by ReLU; then
    a linear layer of ``hidden`` units.
    """
    channels = check_sizes(channels, "channels", minimum=1)
    c, h, w = _image_shape(image_shape, len(channels))
    check_positive_int(hidden, "hidden")
    layers: list[nn.Module] = []
    for c_in, c_out in zip((c, *channels[:-1]), channels, strict=True):
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
    scale = 2 ** len(channels)
    flat = channels[-1] * (h // scale) * (w // scale)
    layers += [nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU()]
    return GaussianEncoder(nn.Sequential(*layers), hidden, latent_dim)


def conv_decoder(latent_dim: int, image_shape, channels=(64, 32), hidden: int = 128):
    """The mirror of :func:`conv_encoder`: ``z -> (c, h, w)`` with stride-2 transposed convs."""
    channels = check_sizes(channels, "channels", minimum=1)
    c, h, w = _image_shape(image_shape, len(channels))
    check_positive_int(latent_dim, "latent_dim")
    check_positive_int(hidden, "hidden")
    scale = 2 ** len(channels)
    start = (channels[0], h // scale, w // scale)
    layers: list[nn.Module] = [
        nn.Linear(latent_dim, hidden),
        nn.ReLU(),
        nn.Linear(hidden, math.prod(start)),
        nn.ReLU(),
        nn.Unflatten(1, start),
    ]
    for c_in, c_out in zip(channels, (*channels[1:], c), strict=True):
        layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
        layers.append(nn.ReLU())
    layers.pop()  # no activation on the output: it is a Gaussian mean or Bernoulli logits
    return nn.Sequential(*layers)


class AffineCoupling(nn.Module):
    r"""A RealNVP affine coupling layer on ``z ∈ R^d`` conditioned on a context ``h``.

    The coordinates where ``mask`` is true pass unchanged; the others become
    ``z_k exp(s_k) + t_k`` with ``(s, t) = net([z_masked, h])``. The Jacobian is triangular
    with diagonal ``exp(s)`` on the changed coordinates, so ``log |det| = Σ_k s_k`` exactly.
    ``s`` goes through ``tanh`` (times a learned scale) to keep the first steps of training
    stable.

    Parameters
    ----------
    mask : bool sequence of length ``d`` (the coordinates kept), neither all true nor all false.
    context_dim : int >= 0, the size of ``h``; hidden : widths of the MLP ``net``.
    """

    def __init__(self, mask, context_dim: int, hidden: Sequence[int]):
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.dim() != 1 or bool(mask.all()) or not bool(mask.any()):
            raise ValueError("mask must be 1-D with at least one true and one false entry")
        check_positive_int(context_dim, "context_dim", allow_zero=True)
        hidden = check_sizes(hidden, "hidden", minimum=1)
        self.register_buffer("mask", mask)
        d, kept = len(mask), int(mask.sum())
        self.net = mlp([kept + context_dim, *hidden, 2 * (d - kept)], "relu")
        self.scale = nn.Parameter(torch.zeros(d - kept))

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z', log |det ∂z'/∂z|)`` for ``z`` ``(n, d)`` and a context ``h`` ``(n, c)``."""
        s, t = self.net(torch.cat([z[:, self.mask], h], dim=1)).chunk(2, dim=1)
        s = self.scale * torch.tanh(s)
        out = z.clone()
        out[:, ~self.mask] = z[:, ~self.mask] * torch.exp(s) + t
        return out, s.sum(1)


class FlowEncoder(nn.Module):
    r"""``q(z|x)``: a diagonal Gaussian pushed through affine couplings conditioned on ``x``.

    ``z_0 = μ(x) + σ(x) ε`` and ``z = f_K ∘ ... ∘ f_1 (z_0)`` with :class:`AffineCoupling`
    layers that alternate the kept half and all see the encoder's features ``h(x)``. Then
    ``log q(z|x) = log N(z_0; μ, σ²) - Σ_k log |det ∂f_k|`` exactly. A normalising-flow
    posterior can take shapes a Gaussian cannot (Rezende & Viola's Fig. 1 uses one to let
    the posteriors tile the latent space).

    Parameters
    ----------
    input_shape : shape of one example; hidden : encoder MLP widths (the features ``h`` have
    the last width); latent_dim : int >= 2; layers : number of couplings; coupling_hidden :
    widths of each coupling's MLP.
    """

    def __init__(
        self,
        input_shape,
        hidden: Sequence[int],
        latent_dim: int,
        layers: int = 4,
        coupling_hidden: Sequence[int] = (64,),
    ):
        super().__init__()
        latent_dim = check_positive_int(latent_dim, "latent_dim")
        if latent_dim < 2:
            raise ValueError(f"latent_dim must be >= 2 for a coupling flow, got {latent_dim}")
        layers = check_positive_int(layers, "layers")
        self.gaussian = mlp_encoder(input_shape, hidden, latent_dim)
        half = torch.arange(latent_dim) < latent_dim // 2
        self.couplings = nn.ModuleList(
            AffineCoupling(half if k % 2 == 0 else ~half, hidden[-1], coupling_hidden)
            for k in range(layers)
        )

    @property
    def latent_dim(self) -> int:
        """The number of latent dimensions."""
        return self.gaussian.mu.out_features

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """One ``z ~ q(z|x)`` per example and its ``log q(z|x)``: ``(n, d)`` and ``(n,)``."""
        h = self.gaussian.body(x)
        mu, logvar = self.gaussian.mu(h), self.gaussian.logvar(h)
        z = sample_diag_normal(mu, logvar, generator=generator)
        log_q = log_normal_diag(z, mu, logvar)
        for coupling in self.couplings:
            z, log_det = coupling(z, h)
            log_q = log_q - log_det
        return z, log_q


class FlowVAE(nn.Module):
    r"""A VAE with a :class:`FlowEncoder`, the prior ``N(0, I)`` and a Gaussian decoder.

    The KL term has no closed form, so :meth:`terms` uses the single-sample estimate
    ``log q(z|x) - log p(z)`` at the same ``z`` as the reconstruction (an unbiased estimate
    of the KL whose gradient is the usual reparameterised one).

    Parameters
    ----------
    encoder : :class:`FlowEncoder`; decoder : module ``z -> mean``; beta : float > 0;
    log_gamma : the decoder's fixed log-variance.
    """

    def __init__(
        self, encoder: FlowEncoder, decoder: nn.Module, *, beta: float = 1.0, log_gamma: float = 0.0
    ):
        super().__init__()
        if not isinstance(encoder, FlowEncoder):
            raise TypeError(f"encoder must be a FlowEncoder, got {type(encoder).__name__}")
        self.encoder = encoder
        self.decoder = decoder
        self.beta = check_positive(beta, "beta")
        self.register_buffer("log_gamma", torch.tensor(check_number(log_gamma, "log_gamma")))

    @property
    def latent_dim(self) -> int:
        """The number of latent dimensions."""
        return self.encoder.latent_dim

    def terms(self, x: torch.Tensor, generator: torch.Generator | None = None) -> ELBOTerms:
        """Per-example :class:`~vaebook.objectives.ELBOTerms` ``(n,)``, KL by one sample."""
        z, log_q = self.encoder.sample(x, generator)
        log_prior = log_normal_diag(z, torch.zeros_like(z), torch.zeros_like(z))
        rec = reconstruction_log_likelihood(x, self.decoder(z), "gaussian", self.log_gamma)
        return ELBOTerms(rec, log_q - log_prior, self.beta)


class VAE(nn.Module):
    """A VAE with a Gaussian encoder, a standard normal prior and a Gaussian or Bernoulli decoder.

    Parameters
    ----------
    encoder : module ``x -> (mu, logvar)``, e.g. from :func:`mlp_encoder`.
    decoder : module ``z -> decoder output`` (shape of ``x``), e.g. from :func:`mlp_decoder`.
    likelihood : ``"gaussian"`` (decoder outputs the mean) or ``"bernoulli"`` (logits).
    beta : float > 0, weight of the KL term in :meth:`terms`.
    log_gamma : log-variance of the Gaussian decoder, ``γ = exp(log_gamma)`` (the initial
        value when it is learned).
    learn_gamma : whether ``log_gamma`` is a trained parameter (Dai & Wipf) or fixed.
        The learned ``log_gamma`` is unconstrained and has no floor: for a fixed decoder the
        γ maximising the Gaussian likelihood is the mean squared residual per dimension, so
        γ only runs to 0 as fast as the reconstructions become exact (Dai & Wipf's
        Theorem 4). On data lying exactly on a manifold that can fit, it keeps falling, by at
        most about ``lr`` in ``log_gamma`` per Adam step.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        *,
        likelihood: str = "gaussian",
        beta: float = 1.0,
        log_gamma: float = 0.0,
        learn_gamma: bool = False,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = check_choice(likelihood, "likelihood", LIKELIHOODS)
        self.beta = check_positive(beta, "beta")
        log_gamma = torch.tensor(check_number(log_gamma, "log_gamma"))
        if learn_gamma:
            self.log_gamma = nn.Parameter(log_gamma)
        else:
            self.register_buffer("log_gamma", log_gamma)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of ``q(z|x)``, each ``(n, latent_dim)``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output at ``z`` ``(n, latent_dim)``: Gaussian mean or Bernoulli logits."""
        return self.decoder(z)

    def mean_image(self, z: torch.Tensor) -> torch.Tensor:
        """``E[x|z]``: the decoder mean (Gaussian) or ``sigmoid(logits)`` (Bernoulli)."""
        return decoder_mean(self.decode(z), self.likelihood)

    def terms(self, x: torch.Tensor, generator: torch.Generator | None = None) -> ELBOTerms:
        """Per-example :class:`~vaebook.objectives.ELBOTerms` with one sample of ``z`` each."""
        mu, logvar = self.encode(x)
        z = sample_diag_normal(mu, logvar, generator=generator)
        return beta_vae_terms(
            x,
            self.decode(z),
            mu,
            logvar,
            beta=self.beta,
            likelihood=self.likelihood,
            log_gamma=self.log_gamma,
        )

    def log_likelihood(self, x: torch.Tensor, decoder_output: torch.Tensor) -> torch.Tensor:
        """``log p(x|z)`` per example ``(n,)`` for the decoder output at a sample ``z``."""
        return reconstruction_log_likelihood(x, decoder_output, self.likelihood, self.log_gamma)

    @property
    def latent_dim(self) -> int:
        """The number of latent dimensions."""
        return self.encoder.mu.out_features

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``E[x|z = mu(x)]``: the reconstruction at the posterior mean."""
        mu, _ = self.encode(x)
        return self.mean_image(mu)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoder means at ``n`` draws ``z ~ N(0, I)`` from the prior."""
        check_positive_int(n, "n")
        ref = next(self.decoder.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator, device=ref.device, dtype=ref.dtype)
        return self.mean_image(z)


def _image_shape(image_shape, n_halvings: int) -> tuple[int, int, int]:
    shape = check_sizes(image_shape, "image_shape", minimum=3)
    if len(shape) != 3:
        raise ValueError(f"image_shape must be (channels, height, width), got {shape}")
    scale = 2**n_halvings
    if shape[1] % scale or shape[2] % scale:
        raise ValueError(
            f"image_shape height and width must be divisible by {scale} "
            f"(one halving per entry of channels), got {shape[1:]}"
        )
    return shape
