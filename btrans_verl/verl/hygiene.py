"""Failure hygiene: when a Ray actor or a vLLM process dies, end the run promptly, non-zero, and leave nothing.

What stock verl 0.9.1 does (reproduced on CPU with the test plugin `tests/plugins/btrans_faults.py`,
`BTRANS_TEST_FAULT=vllm_worker_update:2`):
a vLLM worker process dies during the weight sync at the end of step 1. vLLM notices at once: the EngineCore
logs "Worker proc VllmWorker-0 died unexpectedly, shutting down executor" and exits, and the front end
(`AsyncLLM`, inside verl's `vLLMHttpServer` Ray actor) raises EngineDeadError. But nothing reaches verl:
- the `vLLMHttpServer` actor stays ALIVE (the engine died, not the actor), so Ray reports nothing;
- the trainer worker is blocked in `BucketedWeightSender.async_send_weights`
  (`verl/workers/rollout/vllm_rollout/bucketed_weight_transfer.py:135-160`): a ZMQ REQ `socket.recv()` with no
  timeout, called synchronously inside an async actor method, so its event loop is blocked too. The
  `collective_rpc` future that carries the EngineDeadError is only awaited after the send completes
  (`verl/workers/rollout/vllm_rollout/vllm_rollout.py:228-245`), i.e. never;
- the TaskRunner waits on the trainer worker and the driver waits in `ray.get(runner.run.remote(config))`
  (`verl/trainer/main_ppo.py:91`) forever, with the Ray cluster and every process alive.

Two small mechanisms close the gap, both installed by the verl plugin (`btrans_verl.verl.plugin`) in every
process, on every platform (a dead vLLM worker hangs a GPU run just the same):

1. `install_server_monitor()` (every process; acts in the vLLMHttpServer actor): after
   `vLLMHttpServer.launch_server` (`vllm_async_server.py:277`) a daemon thread polls vLLM's public
   `EngineClient.errored` flag (`vllm/v1/engine/async_llm.py:1095`; set by vLLM's own engine-core monitor) and,
   once the engine is dead, prints the cause and exits the actor process. The vLLM failure thereby becomes a Ray
   actor failure.
2. `install_driver_watchdog()` (acts in the process that calls `ray.init`, i.e. the main_ppo driver): once Ray is
   up, a daemon thread polls Ray's actor table (`ray.util.state.list_actors`, falling back to the GCS table)
   every `BTRANS_WATCHDOG_INTERVAL` seconds (default 3) for actors of this job that died unexpectedly
   (worker/node died, OOM, failed constructor or runtime env, unschedulable). Deaths by `ray.kill`, out of scope
   or owner death are ignored (verl kills the TransferQueue actors on purpose at the end). On a failure it prints
   the actor and Ray's death cause to stderr, SIGKILLs the process trees of this job's actors on this node (Ray
   workers and their vLLM children), and exits the driver with `EXIT_CODE` (3); a local Ray cluster started by the
   driver shares its fate (Ray starts GCS/raylet with kill-on-parent-death) and goes with it.

The watchdog stops as soon as `ray.shutdown()` starts or the interpreter exits, so normal ends are untouched.
On by default; set `BTRANS_WATCHDOG=0` to disable both. Neither needs the CPU platform (tested on CPU, where the
end-to-end test kills a vLLM worker mid-run and checks that the run ends non-zero with nothing left behind).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time

from btrans_verl.patching import patch, when_imported
from btrans_verl.verl import patch_verl

logger = logging.getLogger(__name__)

SERVER_MODULE = "verl.workers.rollout.vllm_rollout.vllm_async_server"
ENABLE_ENV = "BTRANS_WATCHDOG"
INTERVAL_ENV = "BTRANS_WATCHDOG_INTERVAL"
EXIT_CODE = 3

# ActorDiedErrorContext.Reason values that are somebody's decision, not a failure.
_BENIGN_REASONS = {"RAY_KILL", "OUT_OF_SCOPE", "REF_DELETED", "OWNER_DIED"}
_FAILURE_CONTEXTS = ("creation_task_failure_context", "runtime_env_failed_context", "actor_unschedulable_context",
                     "oom_context")


def enabled() -> bool:
    return os.environ.get(ENABLE_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def _say(message: str) -> None:
    print(f"[btrans_verl.verl.hygiene] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------- death classification
def failure_reason(death_cause) -> str | None:
    """A short description if `death_cause` (dict from Ray's state API) is an unexpected death, else None."""
    if not death_cause:
        return None
    for key in _FAILURE_CONTEXTS:
        context = death_cause.get(key)
        if context:
            return f"{key}: {context.get('error_message') or context}"
    died = death_cause.get("actor_died_error_context")
    if died:
        reason = died.get("reason", "UNSPECIFIED")
        if reason in _BENIGN_REASONS:
            return None
        return f"{reason}: {died.get('error_message', '')}".strip()
    return None


def _death_cause_dict(cause) -> dict:
    if cause is None or isinstance(cause, dict):
        return cause or {}
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(cause, preserving_proto_field_name=True)


def dead_actors(job_id: str) -> list[dict]:
    """DEAD actors of `job_id`: dicts with class_name, name, pid, node_id, death_cause (state-API shape)."""
    try:
        from ray.util.state import list_actors

        rows = list_actors(filters=[("state", "=", "DEAD"), ("job_id", "=", job_id)], detail=True, limit=10_000,
                           raise_on_missing_output=False, timeout=10)
        return [{"class_name": r.class_name, "name": r.name, "pid": r.pid, "node_id": r.node_id,
                 "actor_id": r.actor_id, "death_cause": r.death_cause} for r in rows]
    except Exception as exc:  # no dashboard (minimal Ray install) or a transient error: read the GCS table
        logger.debug("state API unavailable (%s); reading the GCS actor table", exc)
    from ray._private import state

    rows = []
    for actor_id, info in state.actors().items():
        if info.get("State") == "DEAD" and info.get("JobID") == job_id:
            rows.append({"class_name": info.get("ActorClassName"), "name": info.get("Name"), "pid": info.get("Pid"),
                         "node_id": (info.get("Address") or {}).get("NodeID"), "actor_id": actor_id,
                         "death_cause": _death_cause_dict(info.get("DeathCause"))})
    return rows


def alive_actor_pids(job_id: str, node_id: str | None) -> list[int]:
    pids = []
    try:
        from ray.util.state import list_actors

        for r in list_actors(filters=[("state", "=", "ALIVE"), ("job_id", "=", job_id)], detail=True,
                             limit=10_000, raise_on_missing_output=False, timeout=10):
            if r.pid and (node_id is None or r.node_id == node_id):
                pids.append(int(r.pid))
        return pids
    except Exception:
        pass
    from ray._private import state

    for info in state.actors().values():
        if info.get("State") == "ALIVE" and info.get("JobID") == job_id and info.get("Pid"):
            if node_id is None or (info.get("Address") or {}).get("NodeID") == node_id:
                pids.append(int(info["Pid"]))
    return pids


def kill_process_trees(pids: list[int]) -> int:
    """SIGKILL each pid and all its descendants (children first listed, then parents). Returns the count."""
    import psutil

    victims = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for child in proc.children(recursive=True):
                victims[child.pid] = child
            victims[proc.pid] = proc
        except psutil.Error:
            continue
    victims.pop(os.getpid(), None)
    for proc in victims.values():
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    return len(victims)


# ------------------------------------------------------------------------------------------- driver watchdog
class DriverWatchdog:
    def __init__(self, interval: float):
        import ray

        self.interval = interval
        self.job_id = ray.get_runtime_context().get_job_id()
        self.node_id = ray.get_runtime_context().get_node_id()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="btrans-watchdog", daemon=True)

    def start(self) -> DriverWatchdog:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()

    def check(self) -> list[tuple[dict, str]]:
        failures = []
        for actor in dead_actors(self.job_id):
            reason = failure_reason(actor.get("death_cause"))
            if reason:
                failures.append((actor, reason))
        return failures

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                failures = self.check()
            except Exception as exc:  # never let the watchdog itself kill a healthy run
                logger.debug("watchdog check failed: %s", exc)
                continue
            if failures and not self.stop_event.is_set():
                self._abort(failures)
                return

    def _abort(self, failures) -> None:
        for actor, reason in failures:
            label = actor.get("class_name") or "actor"
            if actor.get("name"):
                label += f" {actor['name']!r}"
            _say(f"Ray actor {label} (pid {actor.get('pid')}) died: {reason}")
        _say(f"aborting the run (exit code {EXIT_CODE}); killing this job's actor processes on this node")
        # Once the actors are gone (or Ray shuts down below) the main thread may leave its ray.get and end the
        # interpreter before this thread reaches os._exit: its exit code would then be verl's, possibly 0. The
        # last atexit handler registered runs first, so the run's exit code is ours whichever thread ends it.
        atexit.register(_exit_aborted)
        try:
            killed = kill_process_trees(alive_actor_pids(self.job_id, self.node_id))
            _say(f"killed {killed} processes")
        except Exception as exc:
            _say(f"could not kill actor processes: {exc}")
        self.stop()
        _exit_aborted()


_exit_lock = threading.Lock()


def _exit_aborted() -> None:
    """Stop the local Ray cluster this driver started and exit with EXIT_CODE, whichever thread gets here first.

    No `ray.shutdown()`: called while the main thread sits in `ray.get`, it makes Ray's core worker end the
    process itself (exit code 1, "The core worker has already been shutdown") half-way through stopping the
    cluster, and the dashboard and runtime-env agents were left running. Instead every descendant of this
    process (the agents and workers under the raylet first, then GCS, raylet and Ray's other daemons) is
    SIGKILLed and the process exits at once. On a cluster the driver only joined, it has no such descendants."""
    with _exit_lock:
        try:
            import psutil

            me = psutil.Process()
            children = me.children()
            deeper = [p for child in children for p in child.children(recursive=True)]
            for proc in [*deeper, *children]:
                try:
                    proc.send_signal(signal.SIGKILL)
                except psutil.Error:
                    pass
        except Exception as exc:  # exit with our code all the same
            _say(f"could not stop the local Ray cluster: {exc}")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_CODE)


_watchdog: DriverWatchdog | None = None


def _stop_watchdog() -> None:
    if _watchdog is not None:
        _watchdog.stop()


def install_driver_watchdog() -> None:
    """Wrap `ray.init` so that a process that starts/joins Ray as a driver gets a DriverWatchdog."""
    if not enabled():
        return

    def make_init(original_init):
        def init(*args, **kwargs):
            result = original_init(*args, **kwargs)
            global _watchdog
            if _watchdog is None and enabled():
                _watchdog = DriverWatchdog(float(os.environ.get(INTERVAL_ENV, "3"))).start()
                atexit.register(_stop_watchdog)  # runs before Ray's own atexit shutdown (LIFO)
            return result

        return init

    def make_shutdown(original_shutdown):
        def shutdown(*args, **kwargs):
            _stop_watchdog()
            return original_shutdown(*args, **kwargs)

        return shutdown

    def _patch(ray):
        patch(ray, "init", make_init, what="hygiene: driver watchdog")
        patch(ray, "shutdown", make_shutdown, what="hygiene: driver watchdog stops first")

    when_imported("ray", _patch, key="btrans.hygiene.driver_watchdog")


# -------------------------------------------------------------------------------------- vLLM server monitor
def _watch_engine(server, interval: float) -> None:
    while True:
        time.sleep(interval)
        engine = getattr(server, "engine", None)
        if engine is None:
            continue
        try:
            errored = bool(engine.errored)
        except Exception:
            continue
        if errored:
            _say(f"vLLM engine of {type(server).__name__} replica {getattr(server, 'replica_rank', '?')} is dead "
                 "(EngineDeadError; see vLLM's log above for the root cause); exiting this Ray actor so that the "
                 "driver sees the failure")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_CODE)


def install_server_monitor() -> None:
    """After verl's vLLMHttpServer.launch_server, watch the vLLM engine and exit the actor when it dies."""
    if not enabled():
        return

    def make(original):
        async def launch_server(self, *args, **kwargs):
            result = await original(self, *args, **kwargs)
            threading.Thread(target=_watch_engine, args=(self, 1.0), name="btrans-engine-monitor",
                             daemon=True).start()
            return result

        return launch_server

    patch_verl(SERVER_MODULE, "vLLMHttpServer", "launch_server", make, what="hygiene: vLLM server monitor")


def install() -> None:
    """Both mechanisms, in this process (the verl plugin calls it in every process; `BTRANS_WATCHDOG=0`: none)."""
    install_driver_watchdog()
    install_server_monitor()
