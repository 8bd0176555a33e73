"""btrans-verl: population Bayesian transformers (B-Trans) for RL post-training with verl.

One pretrained LLM becomes a population of minds: after every normalisation layer a Gaussian latent
z ~ N(mu, sigma^2 I), drawn once per sequence, shifts the activations. Where each part lives:

    latent.py     the latent's definition: z(seed, norm, ...) exactly, the same in every process and engine
    seeds.py      which mind each trajectory gets (step-unique, reproducible seeds)
    hf.py         the latent on Hugging Face models (modes off / mean / sample / replay)
    vllm/         the vLLM seam: every request carries its own mind        (vllm/__init__.py draws its flow)
    verl/         the verl seam: rollout minds, rewards, guard, mean shift (verl/__init__.py draws its flow)
    rewards/      the math reward and TTRL's majority vote, as plain functions
    eval/         population evaluation (Pass@K, maj@K, diversity, consistency)
    patching.py   the one way upstream code is changed (hooks, version guard, marker)
    cpu/          the CPU platform that runs verl here; nothing else imports it

    prompt -> verl/rollout (seed per trajectory) -> vllm (z added after each norm) -> verl/reward_managers
           -> verl/replay_buffer (metrics; proves z was applied) -> verl/mean_shift (update with z = mu)
"""

__version__ = "0.1.0"
