r"""Many small VAEs trained at once: stacked weights and batched matrix products.

A chapter that sweeps β over a grid with many random initialisations per β trains dozens of
small networks. Trained one after the other, small MLPs spend most of their time in Python
and in per-operation overhead; stacked into one ensemble they do the same arithmetic in a few large
batched matrix products (``torch.baddbmm``). Member ``m`` of an ensemble is an ordinary
:class:`~vaebook.nets.VAE` in every respect: :meth:`EnsembleVAE.member` returns it as one,
and :func:`vaebook.train.fit` trains the ensemble with the book's one training loop, each
member exactly as if it were trained alone on the same mini-batches and noise.

Shapes: an ensemble of ``M`` members maps a batch ``(M, n, features)`` to
``(M, n, features')``; a batch ``(n, ...)`` shared by every member is accepted too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .checks import (
    as_tensor,
    check_choice,
    check_per_member,
    check_positive_int,
    check_sizes,
    per_member_values,
)
from .gaussian import kl_diag_normal, sample_diag_normal
from .nets import ACTIVATIONS, VAE, mlp_decoder, mlp_encoder, seeded
from .objectives import LIKELIHOODS, ELBOTerms, reconstruction_log_likelihood

__all__ = ["EnsembleLinear", "EnsembleVAE", "ensemble_mlp"]


class EnsembleLinear(nn.Module):
    """``M`` independent linear layers ``x_m -> x_m W_m + b_m`` applied in one ``baddbmm``.

    Parameters
    ----------
    members : int, the number ``M`` of layers.
    in_features, out_features : ints.

    Attributes
    ----------
    weight : parameter ``(M, in_features, out_features)``; ``weight[m]`` is the *transpose*
        of the ``(out, in)`` weight of the equivalent ``torch.nn.Linear``, so that the forward
        pass is a plain batched product with no transposition.
    bias : parameter ``(M, 1, out_features)``.

    Member ``m`` is initialised exactly as ``torch.nn.Linear(in_features, out_features)``
    (weights and biases uniform on ``±1/sqrt(in_features)``); the members draw one after
    the other from the global generator, so the layer built after ``torch.manual_seed(s)``
    holds the ``M`` layers ``nn.Linear`` would give, in sequence, after the same call.
    """

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.members = check_positive_int(members, "members")
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw each member's weight and bias as ``torch.nn.Linear.reset_parameters`` does."""
        bound = 1 / math.sqrt(self.in_features)
        for m in range(self.members):
            weight = torch.empty(self.out_features, self.in_features, dtype=self.weight.dtype)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # what nn.Linear does
            self.weight[m].copy_(weight.T)
            bias = torch.empty(self.out_features, dtype=self.bias.dtype)
            self.bias[m, 0].copy_(nn.init.uniform_(bias, -bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(M, n, in_features) -> (M, n, out_features)``; a shared ``(n, in)`` is broadcast."""
        if x.dim() == 2:
            x = x.expand(self.members, *x.shape)
        if x.dim() != 3 or x.shape[0] != self.members or x.shape[2] != self.in_features:
            raise ValueError(
                f"x must be ({self.members}, n, {self.in_features}) or (n, {self.in_features}), "
                f"got {tuple(x.shape)}"
            )
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return (
            f"members={self.members}, in_features={self.in_features}, "
            f"out_features={self.out_features}"
        )


def ensemble_mlp(
    members: int,
    sizes: Sequence[int],
    activation: str = "tanh",
    final_activation: str | None = None,
) -> nn.Sequential:
    """``M`` fully connected networks ``sizes[0] -> ... -> sizes[-1]`` evaluated together.

    The ensemble counterpart of :func:`vaebook.nets.mlp`: :class:`EnsembleLinear` layers with
    the activation after every hidden layer and ``final_activation`` (default none) after the
    last. Maps ``(M, n, sizes[0])`` (or a shared ``(n, sizes[0])``) to ``(M, n, sizes[-1])``.
    """
    check_positive_int(members, "members")
    sizes = check_sizes(sizes, "sizes", minimum=2)
    check_choice(activation, "activation", ACTIVATIONS)
    if final_activation is not None:
        check_choice(final_activation, "final_activation", ACTIVATIONS)
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(EnsembleLinear(members, sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
        elif final_activation is not None:
            layers.append(ACTIVATIONS[final_activation]())
    return nn.Sequential(*layers)


class EnsembleVAE(nn.Module):
    """``M`` independent MLP VAEs with stacked weights, each with its own β.

    Member ``m`` has exactly the architecture of ::

        VAE(mlp_encoder(input_shape, encoder_hidden, latent_dim, activation),
            mlp_decoder(latent_dim, decoder_hidden, input_shape, activation),
            likelihood=likelihood, beta=betas[m], log_gamma=log_gamma)

    (Gaussian encoder with linear ``mu`` and ``logvar`` heads, standard normal prior, fixed
    decoder variance ``exp(log_gamma)`` for a Gaussian likelihood), and :meth:`member` returns
    it as such a :class:`~vaebook.nets.VAE`.

    Parameters
    ----------
    members : int, the number ``M`` of VAEs.
    input_shape : shape of one example, e.g. ``(64,)`` or ``(8, 8)``.
    encoder_hidden, decoder_hidden : sequences of ints, hidden layer widths.
    latent_dim : int, ``k``.
    betas : float > 0 (shared by every member) or a sequence / 1-D tensor of ``M`` floats
        > 0: member ``m`` maximises ``reconstruction - betas[m] * kl``. One ensemble can hold
        a β grid times several initialisations, e.g. ``betas=np.repeat(grid, 16)``.
    likelihood : ``"gaussian"`` (decoder outputs the mean) or ``"bernoulli"`` (logits).
    log_gamma : log-variance of the Gaussian decoder (the initial value when it is learned):
        a finite number shared by every member, or a sequence / 1-D tensor of ``M`` finite
        numbers, one per member (e.g. a grid of fixed decoder variances in one ensemble).
    learn_gamma : whether each member learns its own decoder variance (Dai & Wipf): then
        ``log_gamma`` is a parameter of shape ``(M,)``; otherwise it is a fixed buffer, a
        scalar when one number was given and ``(M,)`` for one number per member.
    activation : a key of ``vaebook.nets.ACTIVATIONS`` (e.g. ``"tanh"``).
    seed : int >= 0. Member ``m`` holds the weights of the ``m``-th VAE built, one after the
        other, after ``torch.manual_seed(seed)``; in particular member 0 equals
        ``with seeded(seed): VAE(mlp_encoder(...), mlp_decoder(...))``, and enlarging the
        ensemble keeps its first members. The global random state is left untouched.

    Notes
    -----
    :meth:`terms` returns :class:`~vaebook.objectives.ELBOTerms` of shape ``(M, n)`` with a
    ``(M, 1)`` tensor ``beta``, and :func:`vaebook.train.fit` trains the ensemble. The
    reparameterisation noise of a step is one ``randn`` of shape ``(M, n, k)`` from the
    generator passed to :meth:`terms`; every member sees the same mini-batches.

    Memory grows with members x batch size x layer widths: full-batch training of 32 members
    of the Sikka et al. network (64 -> 256 -> 200 -> 200 -> 2 and back) on 1000 examples
    takes about 0.7 GB; use mini-batches, or several ensembles, when that is too much.
    """

    def __init__(
        self,
        members: int,
        input_shape,
        encoder_hidden: Sequence[int],
        latent_dim: int,
        decoder_hidden: Sequence[int],
        *,
        betas,
        likelihood: str = "gaussian",
        log_gamma: float = 0.0,
        learn_gamma: bool = False,
        activation: str = "tanh",
        seed: int = 0,
    ):
        super().__init__()
        self.members = check_positive_int(members, "members")
        self.input_shape = check_sizes(input_shape, "input_shape", minimum=1)
        self.encoder_hidden = check_sizes(encoder_hidden, "encoder_hidden", minimum=1)
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.decoder_hidden = check_sizes(decoder_hidden, "decoder_hidden", minimum=1)
        self.likelihood = check_choice(likelihood, "likelihood", LIKELIHOODS)
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        check_positive_int(seed, "seed", allow_zero=True)
        log_gamma = _log_gamma_per_member(log_gamma, members)
        self.register_buffer(
            "betas", check_per_member(betas, "betas", members).to(torch.get_default_dtype())
        )
        dtype = torch.get_default_dtype()
        if learn_gamma:
            self.log_gamma = nn.Parameter(log_gamma.expand(members).to(dtype).clone())
        else:
            self.register_buffer("log_gamma", log_gamma.to(dtype))

        input_dim = math.prod(self.input_shape)
        feature_dim = self.encoder_hidden[-1]
        with torch.random.fork_rng(devices=[]):  # placeholder values, overwritten below
            self.encoder_body = ensemble_mlp(
                members, [input_dim, *self.encoder_hidden], activation, activation
            )
            self.mu = EnsembleLinear(members, feature_dim, latent_dim)
            self.logvar = EnsembleLinear(members, feature_dim, latent_dim)
            self.decoder = ensemble_mlp(
                members, [latent_dim, *self.decoder_hidden, input_dim], activation
            )
        with seeded(seed):
            for m in range(members):
                self.load_member(m, self._single_vae(beta=1.0, log_gamma=self._log_gamma(m)))

    # -- members as ordinary VAEs ---------------------------------------------------------

    @property
    def learn_gamma(self) -> bool:
        """Whether the members learn their decoder variances."""
        return isinstance(self.log_gamma, nn.Parameter)

    def _single_vae(self, beta: float, log_gamma: float) -> VAE:
        """A freshly initialised VAE with a member's architecture (draws from the global RNG)."""
        return VAE(
            mlp_encoder(self.input_shape, self.encoder_hidden, self.latent_dim, self.activation),
            mlp_decoder(self.latent_dim, self.decoder_hidden, self.input_shape, self.activation),
            likelihood=self.likelihood,
            beta=beta,
            log_gamma=log_gamma,
            learn_gamma=self.learn_gamma,
        )

    def _log_gamma(self, m: int) -> float:
        """Member ``m``'s decoder log-variance as a float."""
        return (self.log_gamma[m] if self.log_gamma.dim() else self.log_gamma).item()

    def _linears(self) -> list[EnsembleLinear]:
        body = [layer for layer in self.encoder_body if isinstance(layer, EnsembleLinear)]
        head = [layer for layer in self.decoder if isinstance(layer, EnsembleLinear)]
        return [*body, self.mu, self.logvar, *head]

    def _member_index(self, m) -> int:
        check_positive_int(m, "m", allow_zero=True)
        if m >= self.members:
            raise ValueError(f"m must be < members = {self.members}, got {m}")
        return m

    @torch.no_grad()
    def member(self, m: int) -> VAE:
        """Member ``m`` as a :class:`~vaebook.nets.VAE` holding copies of its weights.

        The copy has the member's β, likelihood and ``log_gamma`` (learned or fixed, as in the
        ensemble), and lives on the
        ensemble's device in its dtype; changing it does not change the ensemble (see
        :meth:`load_member` for the way back). The global random state is left untouched.
        """
        m = self._member_index(m)
        with torch.random.fork_rng(devices=[]):
            vae = self._single_vae(beta=float(self.betas[m]), log_gamma=self._log_gamma(m))
        ref = self.mu.weight
        vae.to(device=ref.device, dtype=ref.dtype)
        if self.learn_gamma:
            vae.log_gamma.copy_(self.log_gamma[m])  # exact, not through a float32 number
        for layer, linear in zip(self._linears(), _vae_linears(vae), strict=True):
            linear.weight.copy_(layer.weight[m].T)
            linear.bias.copy_(layer.bias[m, 0])
        return vae

    @torch.no_grad()
    def load_member(self, m: int, vae: VAE) -> None:
        """Copy the weights of ``vae`` (a :class:`~vaebook.nets.VAE` with the members'
        architecture, e.g. from :meth:`member`) into member ``m``. β and the likelihood stay
        the ensemble's; a learned ``log_gamma`` is copied too, a fixed one stays the
        ensemble's."""
        m = self._member_index(m)
        if not isinstance(vae, VAE):
            raise TypeError(f"vae must be a vaebook.nets.VAE, got {type(vae).__name__}")
        linears = _vae_linears(vae)
        layers = self._linears()
        shapes = [tuple(linear.weight.shape) for linear in linears]
        expected = [(layer.out_features, layer.in_features) for layer in layers]
        activations = {
            type(module)
            for module in vae.modules()
            if isinstance(module, tuple(ACTIVATIONS.values()))
        }
        if shapes != expected or activations != {ACTIVATIONS[self.activation]}:
            raise ValueError(
                "vae must have the members' architecture: linear weights "
                f"{expected} with {self.activation} activations, got {shapes} with "
                f"{sorted(a.__name__ for a in activations)}"
            )
        for layer, linear in zip(layers, linears, strict=True):
            layer.weight[m].copy_(linear.weight.T)
            layer.bias[m, 0].copy_(linear.bias)
        if self.learn_gamma:
            self.log_gamma[m].copy_(vae.log_gamma)

    # -- the model ------------------------------------------------------------------------

    def _flat_input(self, x) -> tuple[torch.Tensor, bool]:
        """``x`` as ``(n, D)`` (shared) or ``(M, n, D)``, and whether it is shared."""
        x = as_tensor(x, "x", like=self.mu.weight)
        d = len(self.input_shape)
        if x.dim() == d + 1 and tuple(x.shape[1:]) == self.input_shape:
            return x.reshape(x.shape[0], -1), True
        if (
            x.dim() == d + 2
            and x.shape[0] == self.members
            and tuple(x.shape[2:]) == self.input_shape
        ):
            return x.reshape(self.members, x.shape[1], -1), False
        raise ValueError(
            f"x must be (n, *{self.input_shape}) shared by every member or "
            f"({self.members}, n, *{self.input_shape}), got {tuple(x.shape)}"
        )

    def encode(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of every member's ``q(z|x)``, each ``(M, n, latent_dim)``.

        ``x`` is ``(n, *input_shape)`` (the same batch for every member) or
        ``(M, n, *input_shape)`` (one batch per member).
        """
        x, _ = self._flat_input(x)
        h = self.encoder_body(x)
        return self.mu(h), self.logvar(h)

    def decode(self, z) -> torch.Tensor:
        """Decoder outputs ``(M, n, *input_shape)`` at ``z`` ``(M, n, latent_dim)`` (or a
        shared ``(n, latent_dim)``): Gaussian means or Bernoulli logits."""
        z = as_tensor(z, "z", like=self.mu.weight)
        k = self.latent_dim
        shared = z.dim() == 2 and z.shape[1] == k
        if not shared and (z.dim() != 3 or z.shape[0] != self.members or z.shape[2] != k):
            raise ValueError(
                f"z must be ({self.members}, n, {k}) or (n, {k}), got {tuple(z.shape)}"
            )
        out = self.decoder(z)
        return out.reshape(*out.shape[:2], *self.input_shape)

    def terms(self, x, generator: torch.Generator | None = None) -> ELBOTerms:
        """Per-example :class:`~vaebook.objectives.ELBOTerms` of every member.

        ``reconstruction`` and ``kl`` are ``(M, n)`` and ``beta`` is the ``(M, 1)`` tensor
        of the members' β. One reparameterised sample of ``z`` per example and member; the
        noise is one ``randn`` of shape ``(M, n, latent_dim)`` from ``generator``.
        """
        flat, shared = self._flat_input(x)
        h = self.encoder_body(flat)
        mu, logvar = self.mu(h), self.logvar(h)
        z = sample_diag_normal(mu, logvar, generator=generator)
        out = self.decoder(z)  # (M, n, D)
        rec = self.log_likelihood(flat.expand_as(out) if shared else flat, out)
        return ELBOTerms(rec, kl_diag_normal(mu, logvar), self.betas.unsqueeze(-1))

    def log_likelihood(self, x: torch.Tensor, decoder_output: torch.Tensor) -> torch.Tensor:
        """``log p(x|z)`` of every member: ``x`` and ``decoder_output`` are ``(M, n, D)``
        (flattened examples), the result ``(M, n)``; each member uses its own ``log_gamma``."""
        if x.shape != decoder_output.shape or x.dim() != 3 or x.shape[0] != self.members:
            raise ValueError(
                f"x and decoder_output must both be ({self.members}, n, D), got "
                f"{tuple(x.shape)} and {tuple(decoder_output.shape)}"
            )
        members, n, width = x.shape
        log_gamma = self.log_gamma.reshape(-1, 1, 1).expand(members, n, 1).reshape(-1, 1)
        return reconstruction_log_likelihood(
            x.reshape(-1, width), decoder_output.reshape(-1, width), self.likelihood, log_gamma
        ).reshape(members, n)

    def extra_repr(self) -> str:
        return f"members={self.members}, likelihood={self.likelihood!r}"


def _log_gamma_per_member(value, members: int) -> torch.Tensor:
    """``log_gamma`` as a float64 tensor: 0-dim for one number, ``(members,)`` for one each."""
    values = per_member_values(value, "log_gamma", members)
    if values.dim() == 0:
        return torch.tensor(_finite_number(values.item(), "log_gamma"), dtype=torch.float64)
    return values  # each member's VAE checks that its value is finite


def _finite_number(value, name: str) -> float:
    """``value`` as a float after checking it is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _vae_linears(vae: VAE) -> list[nn.Linear]:
    """The linear layers of an MLP :class:`~vaebook.nets.VAE`, in the order of the ensemble."""
    body = [module for module in vae.encoder.body.modules() if isinstance(module, nn.Linear)]
    head = [module for module in vae.decoder.modules() if isinstance(module, nn.Linear)]
    return [*body, vae.encoder.mu, vae.encoder.logvar, *head]
