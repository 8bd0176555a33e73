"""btrans-verl: population Bayesian transformers (B-Trans) for RL post-training with verl.

One pretrained LLM becomes a population of minds: after every normalisation layer a Gaussian latent
z ~ N(mu, sigma^2 I), drawn once per sequence, shifts the activations. `btrans_verl.latent` defines the latent;
`btrans_verl.hf` applies it to transformers models.
"""

__version__ = "0.1.0"
