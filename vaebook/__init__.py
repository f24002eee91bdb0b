"""vaebook: the numerical kernels of the executable textbook on the theory of VAEs.

Modules (one idea each): :mod:`~vaebook.gaussian` (densities, KL, sampling),
:mod:`~vaebook.objectives` (the β-VAE objective), :mod:`~vaebook.linear_gaussian`
(the exactly solvable linear-Gaussian latent-variable model), :mod:`~vaebook.nets`
(encoders, decoders, the VAE module), :mod:`~vaebook.train` (the training loop),
:mod:`~vaebook.data` (offline datasets), :mod:`~vaebook.plotting` (recurring figures)
and :mod:`~vaebook.checks` (input validation).
"""

__version__ = "0.1.0"
