"""B-Trans on transformers models (Qwen2, Qwen3, Llama): modes off / mean / sample / replay."""

import pytest
import torch

from btrans_verl.hf import attach
from btrans_verl.latent import LatentConfig, norm_index, sample_latent
from btrans_verl.tiny import tiny_model

PROMPT = torch.tensor([[5, 17, 42, 7, 99, 3, 250, 11]])


def gen(model, ids=PROMPT, n=12, **kw):
    return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                          pad_token_id=0, eos_token_id=None, **kw)


def test_sigma_zero_and_mean_with_mu_zero_give_identical_logits(family):
    model = tiny_model(family)
    with torch.no_grad():
        base = model(PROMPT).logits
        pop = attach(model, LatentConfig(sigma=0.0), mode="sample", seed=0)
        assert torch.equal(model(PROMPT).logits, base)
        pop.set_mode("mean")
        assert torch.equal(model(PROMPT).logits, base)
        with pop.replay([123]):
            assert torch.equal(model(PROMPT).logits, base)
    assert pop.counters.norm_calls_shifted > 0  # the hooks ran: identity came from sigma = 0, not a skip


def test_same_seed_same_generation_and_different_seeds_differ(family):
    model = tiny_model(family)
    pop = attach(model, LatentConfig(sigma=1.0), mode="mean")
    outs = {}
    for seed in (1, 2, 3, 1):
        with pop.replay([seed]):
            outs.setdefault(seed, []).append(gen(model)[0, PROMPT.shape[1]:].tolist())
    assert outs[1][0] == outs[1][1]
    assert len({tuple(outs[s][0]) for s in (1, 2, 3)}) == 3


def _recorder(model, pop_targets=("input_layernorm",)):
    """Forward hooks registered BEFORE attach() see the plain norm output; the ones after see it shifted."""
    raw, shifted = [], []
    norm = model.model.layers[0].input_layernorm
    norm.register_forward_hook(lambda m, i, o: raw.append(o.detach().clone()))
    return norm, raw, shifted


@pytest.mark.parametrize("granularity", ["sequence", "token"])
def test_latent_is_frozen_per_sequence_and_fresh_per_token_in_the_ablation(granularity):
    model = tiny_model("qwen3")
    norm, raw, shifted = _recorder(model)
    pop = attach(model, LatentConfig(sigma=0.5, granularity=granularity), mode="mean")
    norm.register_forward_hook(lambda m, i, o: shifted.append(o.detach().clone()))
    with pop.replay([77]):
        gen(model, n=6)
    deltas = [s - r for r, s in zip(raw, shifted)]  # [1, seq, hidden] per step: prefill, then 1 token
    assert len(deltas) == 6  # one prefill + 5 cached decode steps
    assert all(d.shape[1] == 1 for d in deltas[1:])  # KV cache in use
    per_token = torch.cat(deltas, dim=1)[0]  # [tokens, hidden]
    if granularity == "sequence":
        z = sample_latent(77, norm_index(0, "input_layernorm"), per_token.shape[1], 0.0, 0.5)
        assert torch.allclose(per_token, z.expand_as(per_token), atol=1e-6)
    else:
        n = per_token.shape[0]
        assert len({tuple(per_token[i].tolist()) for i in range(n)}) == n
        for pos in (0, n - 1):  # the token at position p carries the z of (seed, p)
            z = sample_latent(77, norm_index(0, "input_layernorm"), per_token.shape[1], 0.0, 0.5, position=pos)
            assert torch.allclose(per_token[pos], z, atol=1e-6)


def test_rows_with_different_seeds_in_one_batch_equal_each_row_alone(family):
    model = tiny_model(family)
    pop = attach(model, LatentConfig(sigma=0.7), mode="mean")
    torch.manual_seed(1)
    ids = torch.randint(3, 256, (3, 10))
    seeds = [11, 22, 33]
    with torch.no_grad(), pop.replay(seeds):
        batched = model(ids).logits
        tokens = gen(model, ids, n=8)
    for i, s in enumerate(seeds):
        with torch.no_grad(), pop.replay([s]):
            assert torch.allclose(model(ids[i:i + 1]).logits, batched[i:i + 1], atol=1e-5)
            assert torch.equal(gen(model, ids[i:i + 1], n=8)[0], tokens[i])


def test_left_padded_rows_match_unpadded_runs():
    model = tiny_model("qwen2")
    pop = attach(model, LatentConfig(sigma=0.7, granularity="token"), mode="mean")
    short, long = torch.tensor([[9, 8, 7]]), torch.tensor([[4, 5, 6, 7, 8, 9]])
    ids = torch.tensor([[0, 0, 0, 9, 8, 7], [4, 5, 6, 7, 8, 9]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with pop.replay([5, 6]):
        both = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0,
                              eos_token_id=None)
    with pop.replay([5]):
        assert both[0, 6:].tolist() == gen(model, short, n=6)[0, 3:].tolist()
    with pop.replay([6]):
        assert both[1, 6:].tolist() == gen(model, long, n=6)[0, 6:].tolist()


def test_sample_mode_draws_fresh_minds_per_generate_call_and_replays_them():
    model = tiny_model("llama")
    pop = attach(model, LatentConfig(sigma=1.0), mode="sample", seed=0)
    ids = PROMPT.expand(4, -1)
    first = gen(model, ids)
    seeds1 = pop.last_seeds
    second = gen(model, ids)
    seeds2 = pop.last_seeds
    assert len(seeds1) == 4 and len(set(seeds1)) == 4 and set(seeds1).isdisjoint(seeds2)
    assert len({tuple(r.tolist()) for r in first}) > 1  # rows are different minds
    with pop.replay(seeds1):
        assert torch.equal(gen(model, ids), first)
    assert pop.mode == "sample"  # replay's block restored the mode
    assert not torch.equal(first, second)


def test_mean_mode_trains_the_base_weights_and_samples_nothing():
    model = tiny_model("qwen3")
    model.train()
    pop = attach(model, LatentConfig(mu=0.1, sigma=1.0), mode="mean")
    rng_before = torch.random.get_rng_state()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(PROMPT, labels=PROMPT).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "layers.0" in n)
    opt.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)
    assert pop.counters.rows_sampled == 0 and pop.last_seeds is None
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    # mean mode with mu != 0 really shifts; mu = 0 would be the identity (tested above)
    pop.set_mode("off")
    with torch.no_grad():
        off = model(PROMPT).logits
    pop.set_mode("mean")
    with torch.no_grad():
        assert not torch.equal(model(PROMPT).logits, off)


def test_no_state_leaks_between_calls_or_after_detach():
    model = tiny_model("qwen2")
    with torch.no_grad():
        base = model(PROMPT).logits
    pop = attach(model, LatentConfig(sigma=1.0), mode="sample", seed=3)
    gen(model)
    with pop.replay([1]):
        gen(model)
    pop.set_mode("mean")
    with torch.no_grad():
        assert torch.equal(model(PROMPT).logits, base)
    pop.detach()
    with torch.no_grad():
        assert torch.equal(model(PROMPT).logits, base)
    assert "generate" not in vars(model)


def test_qwen3_per_head_q_k_norms_only_when_asked():
    model = tiny_model("qwen3")
    pop = attach(model, LatentConfig(sigma=1.0), mode="mean")
    assert pop.counters.norms_patched == 2 * 2 + 1
    pop.detach()
    pop = attach(model, LatentConfig(sigma=1.0, targets=("q_norm", "k_norm")), mode="mean")
    assert pop.counters.norms_patched == 4
    with torch.no_grad():
        base = model(PROMPT).logits
        with pop.replay([4]):
            assert not torch.equal(model(PROMPT).logits, base)


def test_bad_input_is_rejected_before_any_work():
    import transformers

    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64,
                                                                bos_token_id=1, eos_token_id=2))
    with pytest.raises(ValueError, match="unsupported model family 'gpt2'"):
        attach(gpt2, LatentConfig())
    qwen2 = tiny_model("qwen2")
    with pytest.raises(ValueError, match="q_norm"):
        attach(qwen2, LatentConfig(targets=("q_norm",)))
    with pytest.raises(ValueError, match="mode 'greedy'"):
        attach(qwen2, LatentConfig(), mode="greedy")
    pop = attach(qwen2, LatentConfig(), mode="mean")
    with pytest.raises(ValueError, match="needs seeds"):
        pop.set_mode("replay")
    with pytest.raises(ValueError, match="seed"):
        pop.set_seeds([-3])
    with pop.replay([1, 2]):
        with pytest.raises(ValueError, match="2 seeds for a batch of 1 rows"):
            qwen2(PROMPT)
