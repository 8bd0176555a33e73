"""B-Trans inside vLLM: every request carries its own mind.

    request (SamplingParams.extra_args["btrans"])  -> requests.py   parsed and validated (the latent contract)
    engine opted in (additional_config["btrans"])   -> settings.py   which norms, which granularity
    scheduler: a request gets a slot                -> worker.py     its mind's z computed once per norm into
                                                                      a fixed [norms, slots, hidden] table
    each step: per-token slot indices               -> worker.py     every wrapped norm: out + table[slot]
    counters / canary                               -> counters.py, canary.py   prove what the norms add

The plugin (`plugin.py`, loaded by vLLM's `vllm.general_plugins` entry point in every vLLM process) wraps the
target norms at load time on engines that opt in; every other engine is stock vLLM and refuses latents.
"""

from btrans_verl.vllm.requests import LatentRequest, latent_args, parse_latent_request

__all__ = ["LatentRequest", "latent_args", "parse_latent_request"]
