"""vaebook: the numerical kernels of the executable textbook on the theory of VAEs.

Modules (one idea each):

- ``gaussian``: densities, entropies, KL divergences, reparameterised sampling;
- ``objectives``: the β-VAE objective and its terms;
- ``linear_gaussian``: the exactly solvable linear-Gaussian latent-variable model;
- ``linear_beta_vae``: Sikka et al.'s tractable linear β-VAE, solved in closed form;
- ``priors``: Mathieu et al.'s priors, their annealed versions and the KL to them;
  ``decomposition``: their Theorems 1-2 and Corollary 1 as checkable identities;
  ``aggregate_posterior``: the aggregate posterior, its divergences to the prior and entropy
  estimators; ``structured_vae``: objective (7) and the model trained on it;
- ``nets``: encoders, decoders and the VAE module; ``train``: the training loop;
- ``ensemble``: many small VAEs trained at once with stacked weights;
- ``two_stage``: Dai & Wipf's constructions and diagnostics; ``ivae``: the identifiable VAE
  and Bonheme & Grzes' polarised regime; ``high_capacity``: tilings, fixed points and phase
  transitions of high-capacity β-VAEs;
- ``data`` and ``sprites``: the datasets, all offline; ``metrics``: disentanglement scores;
- ``plotting``: recurring figures; ``verdicts``: reproduced / not reproduced / contradicted /
  inconclusive, computed from a measured effect and its confidence interval;
- ``notebook``: glue between the chapters and the book; ``checks``: input validation.
"""

__version__ = "0.1.0"
