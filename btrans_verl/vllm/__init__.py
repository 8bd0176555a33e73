"""B-Trans inside vLLM: every request carries its own mind.

A request asks for a latent through `SamplingParams.extra_args` (see `btrans_verl.vllm.requests`); the plugin
(`btrans_verl.vllm.plugin`, loaded by vLLM's `vllm.general_plugins` entry point in every vLLM process) wraps
the model's target norms at load time and, before each forward, writes one 32-bit hypothesis key, mu and sigma
per scheduled token into fixed buffers that the wrapped norms read (`btrans_verl.vllm.worker`).
"""

from btrans_verl.vllm.requests import LatentRequest, latent_args, parse_latent_request

__all__ = ["LatentRequest", "latent_args", "parse_latent_request"]
