"""Worker side: wrap an opted-in engine's target norms and feed them each step's minds.

How a latent reaches a token (V1 model runner, CPU and GPU; V2 feeds the same state, `runner_v2`):

    1. load_model     only for an engine opted in (`btrans_verl.vllm.settings`): every norm of a kind in its
                      `targets` gets `forward` wrapped (norm index from its module name). Allocated here, before
                      any profiling run or graph capture, at fixed addresses:
                          minds     [norms, slots, hidden]  per hidden size, activation dtype: row s of norm j
                                    is the z of the mind in slot s (slot 0: the zero latent; one slot per
                                    running request, max_num_seqs; one for the canary)
                          slot_idx  int64 [max_tokens]      which slot each scheduled token reads
                      and, only for engines that serve token-wise latents (granularity "token"): per-token
                      keys int64 [max_tokens], mu / sigma / sigma_rel float32 [kinds, max_tokens] and the norms'
                      relative-sigma scales float32 [norms], with the contract's normal table, element salts and
                      norm salts on the device (the sequence path uses them to fill rows).
    2. each step      after the runner's `_prepare_inputs` (which fixed this step's request order and token
                      counts), `fill()`: a request seen for the first time gets a free slot and its z for every
                      wrapped norm, computed once from `btrans_verl.latent` (on the device; a CPU engine on the
                      host, in numpy; a kind it does not target: zeros); then every scheduled token's slot index
                      is written (tokens without a latent and padding read slot 0; a step whose tokens all read
                      one slot writes that one value; a step with the last step's batch, in the same order with
                      as many tokens each, writes nothing: a decode step in steady state). Token-wise requests
                      write keys / mu / sigma instead.
    3. forward        norm output [tokens, hidden] + minds[norm][slot_idx]: one gather and one add per norm,
                      the same ops for every batch, no Python branching on request content, graph-safe
                      (token-wise engines add the contract's hash latent on top: keys, mu, sigma rows).
                      Eager forwards skip the gather when every token of the step reads one slot
                      (`one_slot`): none for a step without latents, a broadcast row for a lone prefill; a
                      decode-sized step gathers every norm's rows in one op, kept until a row is written (a
                      decode step in steady state only adds).
    relative sigma    (`sigma_scale="weight_rms"`) a norm's sigma is sigma * rms(its weight): the scales are read
                      from the weights on the host, exactly (`btrans_verl.latent.norm_scale`), when a request first
                      needs them, and read again after `model.load_weights` (verl's weight sync) or a wake-up.
    4. wake_up        after sleep mode wakes the weights up (level 2 leaves every tensor allocated in
                      `load_model` undefined), `restore()` rebuilds the table and salts in place, zeroes the
                      rows and forgets every slot (running minds are recomputed at their next step).

Bit-for-bit the contract: a row holds `z.to(activation dtype)` of the contract's float32 z, and the forward adds
it as `shift` does. A request keeps its slot until it finishes (preempted requests too); when every slot is
taken, a slot of a request outside this step's batch is reused (its mind is recomputed when it returns).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch

from btrans_verl.latent import (
    NORM_KINDS,
    check_family,
    element_salts,
    hypothesis_key,
    latent_from_keys,
    norm_salt,
    norm_scale,
    normal_table,
    shift,
    target_norms,
)
from btrans_verl.vllm.requests import LatentRequest, latent_of
from btrans_verl.vllm.settings import OPT_IN, EngineSettings, engine_settings

logger = logging.getLogger("btrans_verl.vllm")

_ROW_BUDGET = 1 << 22  # elements per pass when computing minds' rows (bounds the int64 temporaries)
TOKEN_RELATIVE_SCALE = "weight_rms"  # the relative sigma the token-wise path serves (its scale row on the device)


@dataclass
class WorkerCounters:
    """Proof that latents reached the model, per worker process."""

    norms_patched: int = 0
    requests_with_latent: int = 0  # distinct requests seen carrying a latent
    tokens_shifted: int = 0  # scheduled tokens that carried a (non-zero-sigma or non-zero-mu) latent
    steps_with_latent: int = 0
    steps: int = 0
    minds_computed: int = 0  # mind rows written into the slot table (a request's first step, or after eviction)
    slot_table_bytes: int = 0  # memory of the slot table (0: a stock engine, nothing allocated)


def engine_refusal(vllm_config) -> str | None:
    """Why this engine cannot carry latents at all (None: it can). Dual batch overlap (`enable_dbo`) runs the
    forward on token slices of the batch while the wrappers read latent rows from 0, so the second slice
    would get the first one's latents."""
    parallel = getattr(vllm_config, "parallel_config", None)
    if getattr(parallel, "enable_dbo", False):
        return ("dual batch overlap (enable_dbo=True) splits the batch into micro-batches that the latent rows do "
                "not follow; start the engine without enable_dbo to serve B-Trans requests")
    return None


def request_refusal(vllm_config, lat: LatentRequest) -> str | None:
    """Why this engine cannot serve this request's latent (None: it can). The one owner of these rules: the
    front end refuses the request with this reason, and the worker guard stops the engine on it."""
    settings = engine_settings(vllm_config)
    if settings is None:
        return f"this vLLM engine is not configured for B-Trans (a stock engine): {OPT_IN}"
    reason = engine_refusal(vllm_config)
    if reason is not None:
        return reason
    unwrapped = [t for t in lat.targets if t not in settings.targets]
    if unwrapped:
        return (f"btrans targets {unwrapped} are not wrapped by this engine (it wraps {list(settings.targets)}; "
                f"add them to additional_config['btrans']['targets'] when starting the engine)")
    if lat.granularity == "token" and not settings.token_latents:
        return ("btrans granularity 'token' needs an engine started with additional_config['btrans']"
                "['granularity'] = 'token' (token-wise latents cost a hash in every norm on every step, so "
                "engines serve sequence latents only unless asked)")
    if lat.granularity == "token" and getattr(vllm_config, "speculative_config", None) is not None:
        return ("btrans granularity 'token' is not supported with speculative decoding (token positions are read "
                "before rejected drafts are accounted, so per-token latents would drift from the Hugging Face "
                "replay); use granularity 'sequence' or an engine without speculative_config")
    return None


class MindGroup:
    """The slot table of the wrapped norms that share one hidden size: minds [norms, slots, hidden]."""

    def __init__(self, hidden: int, dtype: torch.dtype, norm_indices: list[int], kind_rows: list[int],
                 slots: int, device: torch.device):
        self.hidden, self.dtype = hidden, dtype
        self.norm_list = tuple(norm_indices)
        self.norm_salts = norm_salt(torch.tensor(norm_indices, dtype=torch.int64)).to(device)  # [norms] int64
        self.kind_rows = np.asarray(kind_rows, dtype=np.int64)  # [norms] -> row of the request's mu / sigma
        self.names: list[str] = []  # [norms] the wrapped modules' names (their weights set relative sigmas)
        self.minds = torch.zeros(len(norm_indices), slots, hidden, dtype=dtype, device=device)  # [norms, slots, h]
        self.per_norm = self.minds.unbind(0)  # views: norm j's table [slots, hidden]
        self.scratch: torch.Tensor | None = None  # eager forwards: [max_tokens, hidden], one norm's gathered rows
        self.views: tuple | None = None  # eager forwards: (n, slot_idx[:n], scratch[:n]) of the last step's n
        # eager forwards of a decode-sized step (tokens <= slots): every norm's rows gathered at once into
        # `block` (flat, the table's size), viewed [norms, tokens, hidden]; kept while `block_key` (the state's
        # rows version, tokens) stands, so a decode step in steady state adds without gathering
        self.block: torch.Tensor | None = None
        self.block_key: tuple | None = None
        self.block_rows: tuple = ()  # per norm: [tokens, hidden] views of block
        self.host: tuple | None = None  # CPU engines: numpy views for `LatentState.write_minds`


class LatentState:
    """The slot table, buffers and request table of one model runner. `norms`: (module name, norm index, kind,
    hidden size, activation dtype) of every wrapped norm; `kinds`: the wrapped kinds, in NORM_KINDS order."""

    def __init__(self, max_tokens: int, max_minds: int, device: torch.device, norms: list[tuple],
                 settings: EngineSettings):
        self.device = device
        self.on_host = device.type == "cpu"  # a CPU engine: minds are computed in numpy (`write_minds`)
        self._shortcut = device.type in ("cpu", "cuda")  # where `one_slot` knows whether a graph is captured
        self.settings = settings
        self.kinds = tuple(k for k in NORM_KINDS if k in {kind for _, _, kind, _, _ in norms})
        self.token_latents = settings.token_latents
        self.canary_slot = max_minds + 1  # slots: 0 zero latent, 1..max_minds requests, the canary's
        slots = max_minds + 2
        self.slot_idx = torch.zeros(max_tokens, dtype=torch.int64, device=device)  # [max_tokens]
        # copies (never aliases of the contract's cached CPU tensors, which the canary compares against)
        self.table = normal_table().to(device, copy=True)  # [65536]
        hidden_sizes = sorted({h for _, _, _, h, _ in norms})
        self.salts = {h: element_salts(h).to(device, copy=True) for h in hidden_sizes}  # {hidden: [hidden]}
        self.groups: list[MindGroup] = []
        self.norms: dict[str, tuple[int, int]] = {}  # wrapped module name -> (norm index, kind row)
        self.place: dict[str, tuple[int, int]] = {}  # wrapped module name -> (group, row in the group)
        for h in hidden_sizes:
            members = [n for n in norms if n[3] == h]
            for j, (name, idx, kind, _, _) in enumerate(members):
                self.norms[name] = (idx, self.kinds.index(kind))
                self.place[name] = (len(self.groups), j)
            self.groups.append(MindGroup(h, members[0][4], [n[1] for n in members],
                                         [self.kinds.index(n[2]) for n in members], slots, device))
            self.groups[-1].names = [n[0] for n in members]
        self.position = {name: p for p, (name, _, _, _, _) in enumerate(norms)}  # wrapped name -> row of scale_t
        self.modules: dict[str, torch.nn.Module] = {}  # wrapped name -> module (set by `install`)
        self._scales: dict[str, list[np.ndarray]] = {}  # sigma_scale -> per group float32 [norms]
        if self.token_latents:
            self.keys = torch.zeros(max_tokens, dtype=torch.int64, device=device)  # [max_tokens]
            self.mu = torch.zeros(len(self.kinds), max_tokens, dtype=torch.float32, device=device)  # [kinds, T]
            self.sigma = torch.zeros(len(self.kinds), max_tokens, dtype=torch.float32, device=device)  # [kinds, T]
            # relative sigma: a token's std at norm p is sigma + sigma_rel * scale_t[p] (one of the two is 0)
            self.sigma_rel = torch.zeros(len(self.kinds), max_tokens, dtype=torch.float32, device=device)
            self.scale_t = torch.zeros(len(norms), dtype=torch.float32, device=device)  # [norms]
        self.requests: dict[str, LatentRequest | None] = {}
        self.slot_of: dict[str, int] = {}  # request id -> its slot
        self.free = list(range(max_minds, 0, -1))  # free request slots (pop() gives the lowest)
        self.counters = WorkerCounters(norms_patched=len(norms), slot_table_bytes=self.table_bytes())
        self._filled = 0  # rows written last step (to reset)
        self._one_slot: tuple[int, int] | None = (0, max_tokens)  # see `one_slot`
        # the last step's batch (request ids, tokens scheduled, tokens shifted) while its rows stand unchanged:
        # a step with the same batch (a decode step in steady state) has nothing to write (see `fill`)
        self._last_batch: tuple | None = None
        self._canary_held = False  # the canary owns slot_idx (hold_canary .. release_canary)
        self._rows_version = 0  # bumped by every write to slot_idx or to a mind's row (`_rows_written`)

    def _rows_written(self) -> None:
        """Run by every writer of slot_idx or of the minds' rows: the eager forwards' gathered blocks are stale."""
        self._rows_version += 1

    def _may_branch(self) -> bool:
        """Whether an eager forward may take a branch that depends on this step's rows: only on CPU and CUDA
        devices (where that is known) and never while a CUDA graph is being captured (the graph would keep this
        step's branch: vLLM captures eager forwards in FULL cudagraph mode without compilation)."""
        if not self._shortcut:
            return False
        return self.on_host or not torch.cuda.is_current_stream_capturing()

    def one_slot(self, num_tokens: int) -> int | None:
        """The slot every one of the first num_tokens rows reads, when they all read one (a step without
        latents: 0; a lone request's prefill: its slot); None when they differ. Kept by every writer of
        slot_idx; lets eager forwards skip the gather (where `_may_branch`)."""
        one = self._one_slot
        if one is None or num_tokens > one[1] or not self._may_branch():
            return None
        return one[0]

    def table_bytes(self) -> int:
        """Bytes of the slot table (what the latent takes from the KV cache)."""
        return sum(g.minds.numel() * g.minds.element_size() for g in self.groups)

    # ------------------------------------------------------------------------------------------ sleep / wake
    def restore(self) -> None:
        """Rebuild every tensor the latent reads, in place (same addresses: compiled graphs and captured CUDA
        graphs keep reading them): the normal table, element salts and norm salts from the contract, the slot
        table and per-token rows zeroed, every slot forgotten (minds are recomputed at their next step). Run
        after vLLM wakes the weights up: sleep level 2 (verl's default in hybrid mode) discards the memory pool
        that `load_model` allocated them in and restores only the model's registered buffers. (Every tensor of
        this state is rebuilt here; a new one must be added.)"""
        self.table.copy_(normal_table())
        for hidden, salts in self.salts.items():
            salts.copy_(element_salts(hidden))
        for g in self.groups:
            g.minds.zero_()
            g.norm_salts.copy_(norm_salt(torch.tensor(g.norm_list, dtype=torch.int64)))
        self.slot_idx.zero_()
        if self.token_latents:
            self.keys.zero_(), self.mu.zero_(), self.sigma.zero_(), self.sigma_rel.zero_(), self.scale_t.zero_()
        self.weights_changed()
        self.free = list(range(self.canary_slot - 1, 0, -1))
        self.slot_of.clear()
        self._filled = 0
        self._one_slot = (0, self.slot_idx.shape[0])
        self._last_batch = None
        self._rows_written()

    # ------------------------------------------------------------------------------------------ relative sigma
    def weights_changed(self) -> None:
        """Forget the relative-sigma scales (read again from the weights when next needed) and free the slots of
        running relative minds, whose rows were built from the old scales: they are recomputed at their next step
        (a request kept across a weight sync, e.g. a paused partial rollout, stays its mind of the new weights)."""
        self._scales.clear()
        for req_id, slot in list(self.slot_of.items()):
            lat = self.requests.get(req_id)
            if lat is not None and lat.sigma_scale != "absolute":
                del self.slot_of[req_id]
                self.free.append(slot)
                self._last_batch = None

    def scales(self, rule: str) -> list[np.ndarray]:
        """Per group, the float32 [norms] scales of `rule` (`btrans_verl.latent.SIGMA_SCALES`) read from the
        wrapped norms' current weights (one host copy of the norms' weights per weight update)."""
        if rule not in self._scales:
            self._scales[rule] = [np.array([norm_scale(rule, self.modules[name].weight) for name in g.names],
                                           dtype=np.float32) for g in self.groups]
            if self.token_latents and rule == TOKEN_RELATIVE_SCALE:
                flat = np.zeros(len(self.position), dtype=np.float32)
                for g, values in zip(self.groups, self._scales[rule]):
                    flat[[self.position[name] for name in g.names]] = values
                self.scale_t.copy_(torch.from_numpy(flat))
        return self._scales[rule]

    # ------------------------------------------------------------------------------------------ minds
    def write_minds(self, slots: list[int], lats: list[LatentRequest]) -> None:
        """Compute each mind's z at every wrapped norm (zeros at kinds it does not target) into its slot, from
        the contract with this state's table and salts: on the device, or, for a CPU engine, on the host (keys
        from Python ints, rows in numpy on views of the same buffers: a few arrays of [minds, norms, hidden],
        where numpy's per-op cost is a fraction of torch's; the same integers, table entries and float32
        roundings)."""
        host = self.on_host
        if host:
            keys = np.array([hypothesis_key(lat.seed) for lat in lats], dtype=np.uint32)  # [R]
        else:
            keys = hypothesis_key(torch.tensor([lat.seed for lat in lats], dtype=torch.int64)).to(self.device)
        mu = np.zeros((len(lats), len(self.kinds)), dtype=np.float32)  # [R, kinds]
        sigma = np.zeros((len(lats), len(self.kinds)), dtype=np.float32)  # [R, kinds]
        for r, lat in enumerate(lats):
            for k, kind in enumerate(self.kinds):
                if kind in lat.targets:
                    mu[r, k], sigma[r, k] = lat.mu, lat.sigma
        relative = {lat.sigma_scale for lat in lats} - {"absolute"}
        scales = {rule: self.scales(rule) for rule in relative}
        for gi, g in enumerate(self.groups):
            g_mu = mu[:, g.kind_rows]  # [R, norms] float32
            sig = sigma[:, g.kind_rows]  # [R, norms] float32
            for rule in relative:  # norm j's std: f32(sigma) * f32(scale_j), as latent.norm_sigma
                rows = [r for r, lat in enumerate(lats) if lat.sigma_scale == rule]
                sig[rows] = sig[rows] * scales[rule][gi][None, :]
            if not host:
                g_mu, sig = torch.from_numpy(g_mu).to(self.device), torch.from_numpy(sig).to(self.device)
            table, salts, norm_salts, minds = self._contract_arrays(g)
            step = max(1, _ROW_BUDGET // (len(g.kind_rows) * g.hidden))
            for a in range(0, len(lats), step):
                z = latent_from_keys(keys[a:a + step, None], g.norm_list, g.hidden, g_mu[a:a + step],
                                     sig[a:a + step], table=table, salts=salts, norm_salts=norm_salts)  # [r, N, h]
                if isinstance(minds, np.ndarray):  # a float32 table's numpy view
                    minds[:, slots[a:a + step]] = z.transpose(1, 0, 2)  # [N, r, h]
                else:
                    minds[:, slots[a:a + step]] = torch.as_tensor(z).to(self.device).transpose(0, 1).to(g.dtype)
        self._rows_written()
        self.counters.minds_computed += len(lats)

    def _contract_arrays(self, g: MindGroup) -> tuple:
        """What `write_minds` reads and writes for a group: the table, element salts, norm salts and minds of
        this state. On a CPU engine: the table and the minds as numpy views (the same memory: `restore` rewrites
        it in place; a minds table numpy cannot hold bit for bit, not float32, stays a tensor), the salts as
        uint32 arrays (the contract's hash in uint32 arithmetic: half the bytes, one op per product)."""
        if not self.on_host:
            return self.table, self.salts[g.hidden], g.norm_salts, g.minds
        if g.host is None:
            minds = g.minds.numpy() if g.dtype == torch.float32 else g.minds
            g.host = (self.table.numpy(), self.salts[g.hidden].numpy().astype(np.uint32),
                      g.norm_salts.numpy().astype(np.uint32), minds)
        return g.host

    def _slot_for(self, req_id: str, lat: LatentRequest, batch: set[str], new: list) -> int:
        slot = self.slot_of.get(req_id)
        if slot is None:
            if not self.free:  # every slot taken: reuse one of a request outside this step's batch
                victim = next(r for r in self.slot_of if r not in batch)
                self.free.append(self.slot_of.pop(victim))
            slot = self.free.pop()
            self.slot_of[req_id] = slot
            new.append((slot, lat))
        return slot

    # ------------------------------------------------------------------------------------------ per step
    def lookup(self, req_id: str, sampling_params) -> LatentRequest | None:
        if req_id not in self.requests:
            lat = latent_of(sampling_params)  # the worker guard's parse, in one process
            self.requests[req_id] = lat
            if lat is not None:
                self.counters.requests_with_latent += 1
        return self.requests[req_id]

    def unsupported(self, lat: LatentRequest) -> list[str]:
        """What of a request's latent this state cannot apply (it would silently miss it): unwrapped target
        kinds, or token granularity on an engine without the token path."""
        missing = [t for t in lat.targets if t not in self.kinds]
        if lat.granularity == "token" and not self.token_latents:
            missing.append("granularity 'token'")
        if lat.granularity == "token" and lat.sigma_scale not in ("absolute", TOKEN_RELATIVE_SCALE):
            missing.append(f"sigma_scale {lat.sigma_scale!r} with granularity 'token'")
        return missing

    def forget(self, req_ids) -> None:
        for r in req_ids:
            if self.requests.pop(r, None) is not None:
                self._last_batch = None
            slot = self.slot_of.pop(r, None)
            if slot is not None:
                self.free.append(slot)

    def fill(self, req_ids: list[str], sampling_params: list, num_scheduled: np.ndarray,
             num_computed: np.ndarray) -> None:
        """Write this step's per-token slot indices (and token-wise keys / mu / sigma). req_ids[i] has
        num_scheduled[i] tokens starting at absolute position num_computed[i], in the runner's current batch
        order."""
        if self._canary_held:  # the canary's dummy forwards (V2 feeds them through here): its rows stay
            return
        self.counters.steps += 1
        last = self._last_batch
        if last is not None and last[0] == req_ids and np.array_equal(last[1], num_scheduled):
            # the last step's requests, in the same order, with as many tokens each (decode in steady state): the
            # rows it wrote are this step's (every change to a slot or a request resets `_last_batch`)
            self._count_shifted(last[2])
            return
        self._last_batch = None
        self._rows_written()
        lats = [self.lookup(r, sp) for r, sp in zip(req_ids, sampling_params)]
        total = int(num_scheduled.sum())
        active = [i for i, lat in enumerate(lats) if lat is not None]
        token_wise = [i for i in active if lats[i].granularity == "token"]
        # rows of the last step that this one does not rewrite: back to the zero latent (padding reads zeros)
        if self._filled > (kept := total if active else 0):
            self.slot_idx[kept: self._filled].zero_()
        if self.token_latents and self._filled > (kept := total if token_wise else 0):
            self.mu[:, kept: self._filled].zero_(), self.sigma[:, kept: self._filled].zero_()
            self.sigma_rel[:, kept: self._filled].zero_(), self.keys[kept: self._filled].zero_()
        self._filled = 0
        self._one_slot = (0, self.slot_idx.shape[0])  # every row reads the zero latent
        if not active:
            self._last_batch = (list(req_ids), num_scheduled.copy(), 0)
            return
        slots = np.zeros(len(lats), dtype=np.int64)  # [reqs]
        batch, new = set(req_ids), []
        for i in active:
            if lats[i].granularity == "sequence":
                slots[i] = self._slot_for(req_ids[i], lats[i], batch, new)
        if new:
            self.write_minds([s for s, _ in new], [lat for _, lat in new])
        scheduled = slots[num_scheduled > 0]  # [reqs with tokens this step]
        first = int(scheduled[0]) if scheduled.size else 0
        if (scheduled == first).all():  # every token reads one slot: no per-token array (a lone prefill)
            self.slot_idx[:total].fill_(first)
            if first:
                self._one_slot = (first, total)
        else:
            self.slot_idx[:total].copy_(torch.from_numpy(np.repeat(slots, num_scheduled)), non_blocking=True)
            self._one_slot = None
        if token_wise:
            self._fill_token_wise(lats, token_wise, num_scheduled, num_computed, total)
        self._filled = total
        shifted = np.array([lat is not None and (lat.sigma != 0 or lat.mu != 0) for lat in lats])  # [reqs]
        n_shifted = int(num_scheduled[shifted].sum())
        self._count_shifted(n_shifted)
        if not token_wise:  # token-wise rows depend on positions: rewritten every step
            self._last_batch = (list(req_ids), num_scheduled.copy(), n_shifted)

    def _count_shifted(self, n_shifted: int) -> None:
        """A step's proof counters: its tokens that carried a non-zero latent, and whether it had any."""
        self.counters.tokens_shifted += n_shifted
        self.counters.steps_with_latent += int(n_shifted > 0)

    def _fill_token_wise(self, lats, token_wise, num_scheduled, num_computed, total) -> None:
        """The ablation's rows: a key per token (its request's seed and absolute position), mu / sigma per kind."""
        req_idx = np.repeat(np.arange(len(lats)), num_scheduled)  # [tokens] -> request
        seeds = np.zeros(len(lats), dtype=np.int64)
        mus = np.zeros((len(self.kinds), len(lats)), dtype=np.float32)  # [kinds, reqs]
        sigmas = np.zeros((2, len(self.kinds), len(lats)), dtype=np.float32)  # [absolute | relative, kinds, reqs]
        for i in token_wise:
            seeds[i] = lats[i].seed
            rel = int(lats[i].sigma_scale != "absolute")
            if rel:
                self.scales(lats[i].sigma_scale)  # scale_t holds the current weights' scales
            for k, kind in enumerate(self.kinds):
                if kind in lats[i].targets:
                    mus[k, i], sigmas[rel, k, i] = lats[i].mu, lats[i].sigma
        starts = np.cumsum(num_scheduled) - num_scheduled
        positions = num_computed[req_idx] + (np.arange(total) - starts[req_idx])  # [tokens]
        keys = hypothesis_key(torch.from_numpy(seeds[req_idx]), torch.from_numpy(positions))  # [tokens]
        self.keys[:total].copy_(keys, non_blocking=True)
        self.mu[:, :total].copy_(torch.from_numpy(mus[:, req_idx]), non_blocking=True)  # [kinds, tokens]
        self.sigma[:, :total].copy_(torch.from_numpy(sigmas[0][:, req_idx]), non_blocking=True)  # [kinds, tokens]
        self.sigma_rel[:, :total].copy_(torch.from_numpy(sigmas[1][:, req_idx]), non_blocking=True)

    # ------------------------------------------------------------------------------------------ canary
    def hold_canary(self, lat: LatentRequest | None) -> None:
        """Make row 0 of the batch read `lat`'s mind (None: the zero latent), computed into the canary's slot
        by the same code as every request's; every other row reads the zero latent."""
        self.slot_idx.zero_()
        if self.token_latents:
            self.keys.zero_(), self.mu.zero_(), self.sigma.zero_(), self.sigma_rel.zero_()
        self._filled = 0
        self._one_slot = (0, self.slot_idx.shape[0]) if lat is None else None
        self._canary_held = True
        self._rows_written()
        if lat is not None:
            self.write_minds([self.canary_slot], [lat])
            self.counters.minds_computed -= 1  # not a request's
            self.slot_idx[0] = self.canary_slot

    def release_canary(self) -> None:
        self.slot_idx.zero_()
        self._one_slot = (0, self.slot_idx.shape[0])
        self._last_batch = None
        self._canary_held = False
        for g in self.groups:
            g.minds[:, self.canary_slot].zero_()
        self._rows_written()

    # ------------------------------------------------------------------------------------------ forward
    def rows(self, group: int, j: int, num_tokens: int) -> torch.Tensor:
        """The minds' z of the first num_tokens rows of the batch at norm j of a group: [num_tokens, hidden]."""
        return self.groups[group].minds[j].index_select(0, self.slot_idx[:num_tokens])

    def add_rows_(self, normed: torch.Tensor, group: int, j: int) -> torch.Tensor:
        """Eager forwards: add the rows into `normed` in place, gathering them into a fixed scratch buffer (no
        allocation per norm and step: on CPU, fresh [tokens, hidden] tensors cost page faults). The same values
        as `shift(normed, rows(...))`. When every row reads one slot (`one_slot`), no gather: slot 0 adds
        nothing, another slot adds its row to every token (a broadcast, the same sums). A decode-sized step
        (tokens <= slots) gathers every norm's rows at its group's first norm, into the group's block, and its
        other norms, and the steps after it while no row is written (decode in steady state), only add."""
        n = normed.shape[0]
        g = self.groups[group]
        if g.scratch is None:  # the first eager forward (vLLM's profiling run), where profiling counts them
            g.scratch = torch.empty(self.slot_idx.shape[0], g.hidden, dtype=g.dtype, device=self.device)
            g.block = torch.empty(g.minds.numel(), dtype=g.dtype, device=self.device)
        one = self.one_slot(n)
        if one == 0:
            return normed
        if one is not None:
            return normed.add_(g.per_norm[j][one])  # [hidden] over [tokens, hidden] or [tokens, heads, head_dim]
        norms, slots, hidden = g.minds.shape
        if n <= slots and self._may_branch():
            if g.block_key != (self._rows_version, n):
                block = g.block[: norms * n * hidden].view(norms, n, hidden)  # [norms, tokens, hidden]
                torch.index_select(g.minds, 1, self.slot_idx[:n], out=block)
                g.block_rows, g.block_key = block.unbind(0), (self._rows_version, n)
            rows = g.block_rows[j]  # [tokens, hidden]
        else:
            views = g.views
            if views is None or views[0] != n:  # every norm of a step, and every step of a decode, has the same n
                views = g.views = (n, self.slot_idx[:n], g.scratch[:n])
            rows = torch.index_select(g.per_norm[j], 0, views[1], out=views[2])  # [tokens, hidden]
        return normed.add_(rows.unsqueeze(1) if normed.dim() == 3 else rows)

    def token_latent(self, num_tokens: int, norm_idx: int, kind: int, hidden: int, position: int) -> torch.Tensor:
        """Token-wise z of the first num_tokens rows at one norm of wrapped kind `kind` (row `position` of the
        scales): float32 [tokens, hidden]."""
        sigma = self.sigma[kind, :num_tokens] + self.sigma_rel[kind, :num_tokens] * self.scale_t[position]  # [T]
        return latent_from_keys(self.keys[:num_tokens], norm_idx, hidden, self.mu[kind, :num_tokens], sigma,
                                table=self.table, salts=self.salts[hidden])


def _wrap_norm(module: torch.nn.Module, state: LatentState, name: str) -> None:
    inner = module.forward
    group, j = state.place[name]
    norm_idx, kind = state.norms[name]
    position = state.position[name]
    token_latents = state.token_latents  # fixed for the engine's lifetime: no branching on request content

    def forward(x, residual=None, *args, **kwargs):
        out = inner(x, residual, *args, **kwargs) if residual is not None else inner(x, *args, **kwargs)
        normed = out[0] if isinstance(out, tuple) else out  # [tokens, hidden] or per-head [tokens, heads, head_dim]
        n, hidden = normed.shape[0], normed.shape[-1]
        if torch.compiler.is_compiling() or not torch.is_inference_mode_enabled() or \
                normed.dtype != state.groups[group].dtype:
            z = state.rows(group, j, n)  # [tokens, hidden]: a graph fuses the gather into the add
            if normed.dim() == 3:  # q_norm / k_norm: one z per token, shared by its heads (as on the HF side)
                z = z.unsqueeze(1)  # [tokens, 1, head_dim]
            shifted = shift(normed, z)
        else:  # eager (vLLM runs forwards in inference mode): the norm's output is this step's; add in place
            shifted = state.add_rows_(normed, group, j)
        if token_latents:
            zt = state.token_latent(n, norm_idx, kind, hidden, position)  # [tokens, hidden]
            shifted = shift(shifted, zt.unsqueeze(1) if normed.dim() == 3 else zt)
        return (shifted, *out[1:]) if isinstance(out, tuple) else shifted

    forward.btrans_state = state  # what the canary checks: this module's forward is ours, fed by `state`
    module.forward = forward
    module.btrans_norm_index = norm_idx


def _watch_weight_loads(model: torch.nn.Module, state: LatentState) -> None:
    """After `model.load_weights` (vLLM's loader and verl's weight sync call it), relative sigmas are read from
    the new weights."""
    inner = getattr(model, "load_weights", None)
    if inner is None:
        return

    def load_weights(*args, **kwargs):
        try:
            return inner(*args, **kwargs)
        finally:
            state.weights_changed()

    model.load_weights = load_weights


def is_missing_layer(module: torch.nn.Module) -> bool:
    """vLLM's pipeline-parallel placeholder (`PPMissingLayer`): a norm that lives on another stage."""
    return type(module).__name__ == "PPMissingLayer"


def install(model: torch.nn.Module, model_type: str, max_tokens: int, device: torch.device,
            settings: EngineSettings, max_minds: int = 256) -> LatentState | None:
    """Wrap the target norms of a freshly loaded vLLM model. Returns None (and logs why) when nothing can be
    wrapped; requests carrying a latent are then refused by the plugin's `Worker.execute_model` guard.

    Pipeline parallelism: a stage holds only its own layers; norms of other stages are `PPMissingLayer`
    placeholders (the final norm, on every stage but the last) or absent. They are skipped; a kind counts as
    present when any stage has it, so every stage keeps one mu / sigma row per engine target."""
    targets = settings.targets
    try:
        check_family(model_type, targets)
    except ValueError as e:
        logger.warning("B-Trans: latents disabled for this engine: %s", e)
        return None
    found, elsewhere = [], set()
    for name, kind, idx, module in target_norms(model, targets):
        if is_missing_layer(module):
            elsewhere.add(kind)
            continue
        if not hasattr(module, "weight") or "norm" not in type(module).__name__.lower():
            raise RuntimeError(f"B-Trans: {name} matched target {kind} but is a {type(module).__name__}")
        found.append((name, idx, kind, int(module.weight.shape[-1]), module.weight.dtype))
    present = {kind for _, _, kind, _, _ in found} | elsewhere
    missing = sorted(set(targets) - present)
    if not found or missing:
        logger.warning("B-Trans: latents disabled for this engine: targets %s match no module", missing or targets)
        return None
    state = LatentState(max_tokens, max_minds, device, found, settings)
    state.kinds = tuple(k for k in NORM_KINDS if k in targets)  # every stage: one row per engine target
    modules = dict(model.named_modules())
    state.modules = {name: modules[name] for name, _, _, _, _ in found}
    for name, _, _, _, _ in found:
        _wrap_norm(modules[name], state, name)
    _watch_weight_loads(model, state)
    logger.info("B-Trans: %d norms carry per-request latents (%s%s); slot table %.1f MiB for %d minds",
                len(found), settings.describe(),
                f"; on other pipeline stages: {sorted(elsewhere)}" if elsewhere else "",
                state.table_bytes() / 2**20, max_minds)
    return state


def install_for_runner(runner, model: torch.nn.Module, max_tokens: int) -> LatentState | None:
    """Run by both model runners (V1, V2) after loading the model: nothing for a stock engine; otherwise refuse
    an impossible layout or wrap the norms (one slot per `max_num_seqs`)."""
    config = getattr(runner, "vllm_config", None)
    settings = engine_settings(config)
    runner._btrans_refusal = None
    if settings is None:
        return None
    runner._btrans_refusal = engine_refusal(config)
    if runner._btrans_refusal is not None:
        logger.error("B-Trans: latents disabled for this engine: %s", runner._btrans_refusal)
        return None
    model_type = getattr(runner.model_config.hf_config, "model_type", None)
    max_minds = int(getattr(getattr(config, "scheduler_config", None), "max_num_seqs", None) or 256)
    return install(model, model_type, max_tokens, runner.device, settings, max_minds)


def counters_dict(state: LatentState | None) -> dict:
    return asdict(state.counters) if state is not None else asdict(WorkerCounters())
