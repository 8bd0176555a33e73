"""The eager forward's shortcut (`LatentState.one_slot`): when every token of a step reads one slot, the wrapped
norm adds that slot's row without a gather (nothing at all for slot 0). It must add exactly what the gather of
the graph path adds, for every way the slot indices are written: a step's fill, padding rows, the canary,
token-wise requests, a wake-up."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from btrans_verl.latent import norm_index, shift
from btrans_verl.vllm.requests import latent_args
from btrans_verl.vllm.settings import EngineSettings
from btrans_verl.vllm.worker import LatentState

HIDDEN = 8
KINDS = ("input_layernorm", "post_attention_layernorm")


def _state(dtype=torch.float32, **settings) -> LatentState:
    names = [f"model.layers.0.{k}" for k in KINDS] + ["model.norm"]
    idx = [norm_index(0, k) for k in KINDS] + [norm_index(None, "final_norm")]
    norms = [(n, i, k, HIDDEN, dtype) for n, i, k in zip(names, idx, (*KINDS, "final_norm"))]
    return LatentState(max_tokens=16, max_minds=4, device=torch.device("cpu"), norms=norms,
                       settings=EngineSettings(**settings))


def _req(seed=None, **kw):
    return SimpleNamespace(extra_args=latent_args(seed, 0.5, **kw) if seed is not None else None)


def _assert_eager_adds_what_the_graph_adds(state: LatentState, n: int) -> None:
    for j in range(3):
        normed = torch.randn(n, HIDDEN)  # [tokens, hidden]
        want = shift(normed, state.rows(0, j, n))  # the graph path: gather, then add
        got = state.add_rows_(normed.clone(), 0, j)
        assert torch.equal(got, want), (j, n, state.one_slot(n))


def test_one_slot_adds_exactly_what_the_gather_adds_in_every_case():
    state = _state()
    assert state.one_slot(16) == 0  # nothing written yet: the zero latent everywhere
    _assert_eager_adds_what_the_graph_adds(state, 5)

    # a lone request's prefill: every token reads its slot (a broadcast row); padding rows read slot 0
    state.fill(["a"], [_req(7)], np.array([5]), np.array([0]))
    slot = state.slot_of["a"]
    assert slot > 0 and state.one_slot(5) == slot and state.one_slot(6) is None
    assert state.groups[0].minds[:, slot].abs().sum() > 0  # the row is the mind's, not zeros
    _assert_eager_adds_what_the_graph_adds(state, 5)
    _assert_eager_adds_what_the_graph_adds(state, 6)

    # two minds in one step: the gather
    state.fill(["a", "b"], [_req(7), _req(8)], np.array([1, 1]), np.array([5, 0]))
    assert state.one_slot(2) is None
    assert state.slot_idx[:2].tolist() == [state.slot_of["a"], state.slot_of["b"]]
    assert not state.slot_idx[2:].any()  # the last step's longer rows are back to the zero latent
    _assert_eager_adds_what_the_graph_adds(state, 2)

    # a mind and a request without a latent: the gather (the plain request reads slot 0)
    state.fill(["a", "c"], [_req(7), _req()], np.array([1, 3]), np.array([6, 0]))
    assert state.one_slot(4) is None
    _assert_eager_adds_what_the_graph_adds(state, 4)

    # no latent in the step: nothing to add, the rows of the last step are back to zero
    state.fill(["c"], [_req()], np.array([1]), np.array([3]))
    assert state.one_slot(16) == 0 and not state.slot_idx.any()
    normed = torch.randn(4, HIDDEN)
    assert torch.equal(state.add_rows_(normed.clone(), 0, 2), normed)

    # the canary holds row 0 only: the gather; released: the zero latent
    from btrans_verl.vllm.canary import canary_mind

    state.hold_canary(canary_mind(["final_norm"]))
    assert state.one_slot(1) is None
    _assert_eager_adds_what_the_graph_adds(state, 3)
    state.release_canary()
    assert state.one_slot(16) == 0

    # a wake-up forgets every slot and zeroes the table
    state.fill(["a"], [_req(7)], np.array([2]), np.array([7]))
    assert state.one_slot(2) == state.slot_of["a"]
    state.restore()
    assert state.one_slot(16) == 0
    _assert_eager_adds_what_the_graph_adds(state, 2)


def test_token_wise_requests_read_slot_zero_and_keep_their_hash_path():
    state = _state(granularity="token")
    state.fill(["t"], [_req(9, granularity="token")], np.array([3]), np.array([0]))
    assert state.one_slot(3) == 0  # the sequence rows add nothing; the token path carries the latent
    assert state.keys[:3].any() and state.sigma[:, :3].any()
    state.fill(["t", "s"], [_req(9, granularity="token"), _req(4)], np.array([1, 2]), np.array([3, 0]))
    assert state.one_slot(3) is None  # the sequence mind's two tokens, the token-wise request's slot 0
    _assert_eager_adds_what_the_graph_adds(state, 3)


def test_a_fill_while_the_canary_holds_the_rows_leaves_them_to_it():
    # Model Runner V2 feeds its dummy forwards (the canary's graph check) through `fill` with unknown request
    # ids: the canary's row 0 must survive it, the eager forward must gather it, and no step is counted
    from btrans_verl.vllm.canary import canary_mind

    state = _state()
    state.fill(["a"], [_req(7)], np.array([3]), np.array([0]))  # a real step before the canary
    steps = state.counters.steps
    state.hold_canary(canary_mind(["final_norm"]))
    state.fill(["dummy"], [None], np.array([1]), np.array([0]))
    assert int(state.slot_idx[0]) == state.canary_slot and state.one_slot(1) is None
    assert state.counters.steps == steps
    _assert_eager_adds_what_the_graph_adds(state, 1)
    normed = torch.zeros(1, HIDDEN)
    assert torch.equal(state.add_rows_(normed, 0, 2)[0], state.groups[0].minds[2, state.canary_slot])
    state.release_canary()
    state.fill(["a"], [_req(7)], np.array([1]), np.array([3]))  # the next real step reads its own mind again
    assert state.one_slot(1) == state.slot_of["a"] and state.counters.steps == steps + 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # a numpy view / a tensor (no numpy bf16)
def test_a_cpu_engine_writes_each_mind_the_contracts_rows(dtype):
    # CPU engines compute rows on the host in numpy, devices in torch: either way a slot holds sample_latent's z
    from btrans_verl.latent import sample_latent

    state = _state(dtype)
    seeds = {"a": 7, "b": 2**63 - 1, "c": 0}
    state.fill(list(seeds), [_req(s, mu=0.25) for s in seeds.values()], np.array([2, 1, 1]), np.array([0, 0, 0]))
    g = state.groups[0]
    for rid, seed in seeds.items():
        for j, idx in enumerate(g.norm_list):
            want = sample_latent(seed, idx, HIDDEN, mu=0.25, sigma=0.5).to(dtype)
            assert torch.equal(g.minds[j, state.slot_of[rid]], want), (rid, j)
    state.restore()  # in place: the host views still write the table the forward reads
    state.fill(["d"], [_req(11)], np.array([1]), np.array([0]))
    assert torch.equal(g.minds[0, state.slot_of["d"]], sample_latent(11, g.norm_list[0], HIDDEN, sigma=0.5).to(dtype))


def test_a_step_with_the_last_steps_batch_keeps_its_rows_and_any_change_rewrites_them():
    # decode in steady state writes nothing; a request leaving, a weight sync, a wake-up or other token counts
    # make the next step write its rows again
    state = _state()
    reqs = [_req(7), _req(8, sigma_scale="weight_rms")]
    state.modules = {name: SimpleNamespace(weight=torch.full((HIDDEN,), 2.0)) for g in state.groups for name in g.names}
    state.fill(["a", "b"], reqs, np.array([3, 2]), np.array([0, 0]))
    rows = state.slot_idx[:5].tolist()
    assert rows == [state.slot_of["a"]] * 3 + [state.slot_of["b"]] * 2
    computed, shifted = state.counters.minds_computed, state.counters.tokens_shifted
    state.slot_idx[:5] = 0  # were the steady step to rewrite the rows, this would not stand
    state.fill(["a", "b"], reqs, np.array([3, 2]), np.array([3, 2]))
    assert not state.slot_idx[:5].any()
    assert state.counters.tokens_shifted == shifted + 5 and state.counters.minds_computed == computed
    state.fill(["a", "b"], reqs, np.array([1, 1]), np.array([6, 4]))  # other token counts: written
    assert state.slot_idx[:2].tolist() == [state.slot_of["a"], state.slot_of["b"]] and not state.slot_idx[2:].any()
    _assert_eager_adds_what_the_graph_adds(state, 2)

    state.weights_changed()  # b's relative mind loses its slot: the same batch must rebuild it
    assert "b" not in state.slot_of
    state.fill(["a", "b"], reqs, np.array([1, 1]), np.array([7, 5]))
    assert state.counters.minds_computed == computed + 1 and "b" in state.slot_of
    assert state.slot_idx[:2].tolist() == [state.slot_of["a"], state.slot_of["b"]]

    state.forget(["b"])  # b finished; a new request takes its place in the batch under the same id
    state.fill(["a", "b"], [reqs[0], _req(9)], np.array([1, 1]), np.array([8, 0]))
    assert state.requests["b"].seed == 9 and state.counters.minds_computed == computed + 2

    state.fill(["a"], reqs[:1], np.array([1]), np.array([9]))  # absolute minds only from here on
    state.fill(["a"], reqs[:1], np.array([1]), np.array([10]))
    state.restore()  # a wake-up forgets every slot: the same batch writes its rows again
    state.fill(["a"], reqs[:1], np.array([1]), np.array([11]))
    assert state.counters.minds_computed == computed + 3 and state.one_slot(1) == state.slot_of["a"] > 0
    _assert_eager_adds_what_the_graph_adds(state, 1)

    state.hold_canary(None)  # the canary's forwards take the rows, and give them back zeroed
    state.release_canary()
    state.fill(["a"], reqs[:1], np.array([1]), np.array([12]))
    assert state.slot_idx[0] == state.slot_of["a"] > 0 and state.one_slot(1) == state.slot_of["a"]

    state.fill(["c"], [_req(None)], np.array([1]), np.array([0]))  # a batch without latents, twice
    state.fill(["c"], [_req(None)], np.array([1]), np.array([1]))
    assert not state.slot_idx.any() and state.one_slot(16) == 0


def test_a_token_wise_step_between_two_equal_batches_makes_the_second_write_its_rows():
    state = _state(granularity="token")
    seq, tok = [_req(7)], [_req(8, granularity="token")]
    state.fill(["a"], seq, np.array([2]), np.array([0]))
    state.fill(["t"], tok, np.array([2]), np.array([0]))  # the token-wise step writes its own rows
    assert not state.slot_idx.any() and state.keys[:2].all()
    state.fill(["a"], seq, np.array([2]), np.array([2]))  # the first batch again: its rows written anew
    assert state.slot_idx[:2].tolist() == [state.slot_of["a"]] * 2 and not state.keys.any()
    _assert_eager_adds_what_the_graph_adds(state, 2)


def test_a_decode_steps_gathered_block_is_kept_while_its_rows_stand_and_gathered_anew_after_any_write():
    # a decode-sized step (tokens <= slots) gathers every norm's rows at once; the block serves its other norms
    # and the steady-state steps after it, and any write to a row or a slot index makes the next add gather again
    from btrans_verl.vllm.canary import canary_mind

    state = _state()
    g = state.groups[0]
    reqs = [_req(7), _req(8), _req(9, sigma_scale="weight_rms")]
    state.modules = {name: SimpleNamespace(weight=torch.full((HIDDEN,), 2.0)) for name in g.names}
    state.fill(["a", "b", "c"], reqs, np.array([1, 1, 1]), np.array([4, 4, 4]))
    _assert_eager_adds_what_the_graph_adds(state, 3)
    key = g.block_key
    assert key is not None and g.block_rows[0].shape == (3, HIDDEN)
    state.fill(["a", "b", "c"], reqs, np.array([1, 1, 1]), np.array([5, 5, 5]))  # steady state: no write
    _assert_eager_adds_what_the_graph_adds(state, 3)
    assert g.block_key == key  # not gathered again

    g.block.zero_()  # a stale block would now add zeros: every writer below must make the add gather anew
    for write, b in (
        (state.restore, reqs[1]),  # a wake-up: every slot forgotten, rows written again at the next fill
        (state.weights_changed, reqs[1]),  # c's relative mind loses its slot and is computed again
        (lambda: state.forget(["b"]), _req(10)),  # b finished; a new mind takes its slot under the same id
        (lambda: (state.hold_canary(canary_mind(["final_norm"])), state.release_canary()), _req(10)),
    ):
        write()
        reqs[1] = b
        state.fill(["a", "b", "c"], reqs, np.array([1, 1, 1]), np.array([6, 6, 6]))
        _assert_eager_adds_what_the_graph_adds(state, 3)
        assert g.block_key != key  # gathered again
        key = g.block_key
        g.block.zero_()

    # the same minds in another order: no row computed, only slot indices written
    state.fill(["c", "b", "a"], reqs[::-1], np.array([1, 1, 1]), np.array([7, 7, 7]))
    _assert_eager_adds_what_the_graph_adds(state, 3)
    assert g.block_key != key
    key = g.block_key
    g.block.zero_()

    # a step of more tokens than slots (a prefill) gathers norm by norm; the block is not touched
    state.fill(["a", "b", "c"], reqs, np.array([4, 2, 3]), np.array([8, 8, 8]))
    _assert_eager_adds_what_the_graph_adds(state, 9)
    assert g.block_key == key and not g.block.any()
