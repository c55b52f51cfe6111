"""Engine pools: the vLLM replicas of one model as one detached, named Ray actor that outlives the step starting it.

Starting an engine costs a model load and a warm-up (tens of seconds on CPU, minutes for a large model on GPUs), so
the generation steps of an iteration (prompts, candidates, judging, meta-judging) share one pool instead of each
starting its own, whether they run in one process (`srlm iterate`) or as separate tasks (the srlm_iteration DAG).

A pool is an `EnginePoolActor` in the Ray namespace `srlm-engines`, named after its scope and its engines:

    srlm-pool-<digest of the scope>-<digest of the engine arguments (model, dtype, replicas, …)>

It creates the replica actors (srlm.generation.ray_engine.VLLMEngineActor) and, on GPU, their placement group
itself, so they belong to it: Ray ends an actor's children and placement groups with it, and killing the pool
frees every replica's memory.

Who shares it: the backends of one scope (backend.engine_scope) asking for the same engines attach to one pool;
the first starts it (Ray's get-if-exists naming makes that atomic), a retried step finds it running. A scope holds
one pool at a time: a pool for another model (M_t after M_{t-1}) first stops the scope's others, so two engines never
compete for the same memory. Without a scope a backend gets a private pool, owned by its process and stopped when
the backend closes: the same mechanism with the lifetime of one backend.

How pools end:
  - `stop_pool` / `stop_scope` (a backend closing its private pool, the DAG's teardown task, `srlm engines stop`);
  - the lease: attached backends renew it while they are open, and a pool nobody renewed for
    backend.engine_lease_s stops itself (a driver or DAG run that died without stopping it);
  - reaping, at every pool start: pools whose lease ran out or whose owner process on this host is gone (a killed
    `srlm iterate`) are stopped before the new one starts; the `engines` step's start also reaps the pools of
    scopes its caller declares over (`reap_orphans(scope_prefix_to_reap=…)`: the srlm_iteration DAG runs one run
    at a time, so any other run's pool is an orphan).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from srlm.errors import BackendError
from srlm.generation import ray_cluster

log = logging.getLogger(__name__)

NAMESPACE = "srlm-engines"
NAME_PREFIX = "srlm-pool-"
# How long replicas may take to load the model and warm up (a compiled CPU engine compiles for a minute or two).
ENGINE_START_TIMEOUT_S = 1800.0
# How long a pool answers a question or shuts its engines down before it is treated as unresponsive.
CONTROL_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 120.0
LEASE_CHECK_S = 5.0
# The line every pool start writes to its log (Ray's worker logs, and the driver's output): engine starts are
# counted from these (bench/iteration_overhead.py), not inferred.
START_LOG_MARK = "srlm engine pool started:"

STARTING, READY, FAILED, STOPPING = "starting", "ready", "failed", "stopping"


@dataclass(frozen=True)
class OwnerProcess:
    """The process a private pool belongs to: when it is gone (killed before it could stop the pool), the pool is
    an orphan. `started` (the process's start time) tells a reused pid from the owner."""

    host: str
    pid: int
    started: float

    @classmethod
    def this_process(cls) -> OwnerProcess:
        import psutil

        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time())

    def is_gone(self) -> bool | None:
        """True when the owner no longer runs, None when that cannot be told from here (another host)."""
        import psutil

        if self.host != socket.gethostname():
            return None
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) > 1.0
        except psutil.NoSuchProcess:
            return True


@dataclass(frozen=True)
class PoolSpec:
    """What a pool runs and who it belongs to: the vLLM arguments every replica shares, the number of replicas and
    GPUs per replica (the `engines`: two specs with equal engines and scope are the same pool). `labels` are shown
    by `srlm engines list` (model, store, run) and decide nothing."""

    scope: str
    llm_kwargs: dict[str, Any]
    replicas: int
    tensor_parallel_size: int
    lease_s: float
    owner: OwnerProcess | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        engines = {"llm": self.llm_kwargs, "replicas": self.replicas, "tensor_parallel_size": self.tensor_parallel_size}
        return f"{scope_prefix(self.scope)}{_digest(json.dumps(engines, sort_keys=True, default=str))}"


def scope_prefix(scope: str) -> str:
    """The start of the names of every pool of `scope`."""
    return f"{NAME_PREFIX}{_digest(scope)}-"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def renew_every(lease_s: float) -> float:
    """How often an attached backend renews its pool's lease: three times per lease."""
    return max(1.0, lease_s / 3)


def private_scope() -> str:
    """A scope no other backend shares: a pool with the lifetime of one backend."""
    return f"private:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------------ the pool actor

# Runs inside the pool: given the list to add placement groups to, returns per replica its Ray actor options, its
# vLLM arguments and the environment variables it must drop before vLLM starts.
ReplicaPlan = Callable[[list[Any]], list[tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]]]


class EnginePoolActor:
    """Starts and holds one pool's replicas; answers who it is and renews its lease from any thread.

    The replicas start on a thread of their own, so the pool answers `describe` (srlm engines list) and `renew`
    while they load; `wait_ready` blocks until they are up (or failed) and returns their handles.
    """

    def __init__(self, spec: PoolSpec, plan: ReplicaPlan) -> None:
        self._spec = spec
        self._claimed_by: str | None = None
        self._created = time.time()
        self._lease_until = self._created + spec.lease_s
        self._holders: dict[str, float] = {}
        self._state = STARTING
        self._error = ""
        self._replicas: list[Any] = []
        self._placement_groups: list[Any] = []
        self._engine_info: list[dict[str, Any]] = []
        self._start_seconds = 0.0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        threading.Thread(target=self._start, args=(plan,), name="srlm-pool-start", daemon=True).start()
        threading.Thread(target=self._watch_lease, name="srlm-pool-lease", daemon=True).start()

    def _start(self, plan: ReplicaPlan) -> None:
        import ray

        from srlm.generation.ray_engine import VLLMEngineActor

        start = time.perf_counter()
        try:
            remote_cls = ray.remote(VLLMEngineActor)
            for options, llm_kwargs, unset_env in plan(self._placement_groups):
                llm = {**self._spec.llm_kwargs, **llm_kwargs}
                self._replicas.append(remote_cls.options(**options).remote(llm, unset_env))
            self._engine_info = ray.get([r.info.remote() for r in self._replicas], timeout=ENGINE_START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            self._fail(
                f"{len(self._replicas)} replica(s) did not start within {ENGINE_START_TIMEOUT_S:.0f} s; does the Ray "
                "cluster have the CPUs/GPUs for them?"
            )
            return
        except BaseException as exc:  # reported to every attacher; the pool then waits to be stopped
            self._fail(f"an engine replica failed to start: {cause(exc)}")
            return
        self._start_seconds = time.perf_counter() - start
        with self._lock:
            self._state = READY
            # The lease runs from when the engines are up: a start may take longer than the lease.
            self._lease_until = max(self._lease_until, time.time() + self._spec.lease_s)
        nodes = sorted({info["node_id"] for info in self._engine_info})
        print(
            f"{START_LOG_MARK} {self._spec.name} scope={self._spec.scope} replicas={len(self._replicas)} "
            f"seconds={self._start_seconds:.1f} nodes={','.join(nodes)}",
            flush=True,
        )
        self._ready.set()

    def _fail(self, message: str) -> None:
        with self._lock:
            self._state, self._error = FAILED, message
        self._ready.set()

    def claim_start(self, holder: str) -> bool:
        """True for the first attacher only: the one that counts this pool's engine start as its own."""
        with self._lock:
            if self._claimed_by is None:
                self._claimed_by = holder
                return True
            return False

    def wait_ready(self, holder: str, timeout: float) -> dict[str, Any]:
        """Block until the replicas are up; renew the lease for `holder`; return their handles and info."""
        if not self._ready.wait(timeout):
            raise BackendError(f"engine pool {self._spec.name}: replicas not ready within {timeout:.0f} s")
        if self._state == FAILED:
            raise BackendError(self._error)
        if self._state == STOPPING:
            raise BackendError(f"engine pool {self._spec.name} is stopping")
        self.renew(holder)
        return {"replicas": list(self._replicas), "engine_info": self._engine_info}

    def check_replicas(self) -> list[str]:
        """The replicas that no longer answer (a killed engine process): such a pool must be replaced."""
        import ray

        dead = []
        for index, replica in enumerate(self._replicas):
            try:
                ray.get(replica.progress.remote(), timeout=CONTROL_TIMEOUT_S)
            except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as exc:
                dead.append(f"replica {index}: {cause(exc)}")
        return dead

    def renew(self, holder: str) -> float:
        now = time.time()
        with self._lock:
            self._holders[holder] = now
            self._lease_until = max(self._lease_until, now + self._spec.lease_s)
            return self._lease_until

    def release(self, holder: str) -> None:
        with self._lock:
            self._holders.pop(holder, None)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self._spec.name,
                "scope": self._spec.scope,
                "labels": dict(self._spec.labels),
                "owner": asdict(self._spec.owner) if self._spec.owner else None,
                "state": self._state,
                "error": self._error,
                "created": self._created,
                "lease_until": self._lease_until,
                "lease_s": self._spec.lease_s,
                # A holder that missed two renewals (its process was killed before it could release) is not shown.
                "holders": sorted(
                    h for h, seen in self._holders.items() if time.time() - seen <= 2 * renew_every(self._spec.lease_s)
                ),
                "replicas": len(self._engine_info),
                "nodes": sorted({info["node_id"] for info in self._engine_info}),
                "pids": [info["pid"] for info in self._engine_info],
                "start_s": self._start_seconds,
            }

    def stop_engines(self) -> None:
        """Stop every engine, kill the replicas and wait until they are gone, so their RAM / GPU memory is free."""
        import ray

        with self._lock:
            self._state = STOPPING
            replicas, self._replicas = self._replicas, []
            groups, self._placement_groups = self._placement_groups, []
        shutdowns = [replica.shutdown.remote() for replica in replicas]
        try:
            ray.get(shutdowns, timeout=SHUTDOWN_TIMEOUT_S)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as exc:
            log.warning("vLLM engine shutdown failed, killing the actor anyway: %s", cause(exc))
        for replica in replicas:
            ray.kill(replica, no_restart=True)
        for replica in replicas:
            wait_dead(replica)
        for group in groups:
            ray.util.remove_placement_group(group)

    def _watch_lease(self) -> None:
        import ray

        while True:
            time.sleep(min(LEASE_CHECK_S, self._spec.lease_s / 4))
            with self._lock:
                expired = time.time() > self._lease_until and self._state in (READY, FAILED)
            if expired:
                print(f"srlm engine pool {self._spec.name}: lease expired (nobody renewed it for "
                      f"{self._spec.lease_s:.0f} s); stopping", flush=True)
                self.stop_engines()
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                return


# ------------------------------------------------------------------------------------------------ driver side


@dataclass
class AttachedPool:
    """A backend's hold on a pool: the replicas to send work to, and a thread renewing the lease while held."""

    name: str
    handle: Any
    holder: str
    replicas: list[Any]
    engine_info: list[dict[str, Any]]
    started_here: bool  # whether this attach paid the engine start (False: the pool was already running)
    _stop_renewing: threading.Event = field(default_factory=threading.Event)

    def keep_renewed(self, lease_s: float) -> None:
        threading.Thread(target=self._renew, args=(lease_s,), name="srlm-pool-renew", daemon=True).start()

    def _renew(self, lease_s: float) -> None:
        import ray

        while not self._stop_renewing.wait(renew_every(lease_s)):
            try:
                ray.get(self.handle.renew.remote(self.holder), timeout=CONTROL_TIMEOUT_S)
            except Exception as exc:  # a failed renewal is retried; generation itself reports a dead pool
                log.warning("engine pool %s: lease renewal failed: %s", self.name, cause(exc))

    def detach(self) -> None:
        """Let go of the pool and leave it running for the scope's next step."""
        import ray

        self._stop_renewing.set()
        if ray.is_initialized():
            try:
                ray.get(self.handle.release.remote(self.holder), timeout=CONTROL_TIMEOUT_S)
            except Exception as exc:  # a pool that is gone needs no release
                log.debug("engine pool %s: release: %s", self.name, cause(exc))

    def stop(self) -> None:
        self._stop_renewing.set()
        stop_pool(self.name)


def attach(spec: PoolSpec, plan: ReplicaPlan) -> AttachedPool:
    """The running pool for `spec`, started if it is not running (the caller must be connected to Ray).

    First reaps orphans and stops the scope's pools of other engines; a pool whose replicas failed or died is
    stopped and started again once. `plan(placement_groups)` runs inside the pool and returns, per replica, its
    actor options, vLLM arguments and environment variables to drop (it appends any placement group it makes).
    """
    import ray

    for other in list_pools():  # one listing serves both: orphans, and the scope's pools of other engines
        reason = orphan_reason(other)
        if reason is None and other["scope"] == spec.scope and other["name"] != spec.name:
            reason = f"scope {spec.scope} now runs other engines"
        if reason and stop_pool(other["name"]):
            log.warning("stopped engine pool %s (scope %s): %s", other["name"], other["scope"], reason)
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    for _try in (1, 2):  # a pool found with dead replicas is started again once
        handle = _get_or_create(spec, plan)
        try:
            started_here = ray.get(handle.claim_start.remote(holder), timeout=CONTROL_TIMEOUT_S)
            ready = ray.get(
                handle.wait_ready.remote(holder, ENGINE_START_TIMEOUT_S), timeout=ENGINE_START_TIMEOUT_S + 60
            )
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as exc:
            stop_pool(spec.name)  # a failed start frees its name, so a retry starts afresh
            raise BackendError(f"vLLM: {cause(exc)}") from exc
        dead = [] if started_here else ray.get(handle.check_replicas.remote(), timeout=CONTROL_TIMEOUT_S * 4)
        if not dead:
            pool = AttachedPool(
                spec.name, handle, holder, ready["replicas"], ready["engine_info"], started_here
            )
            pool.keep_renewed(spec.lease_s)
            return pool
        log.warning("engine pool %s lost replicas (%s); starting it again", spec.name, "; ".join(dead))
        stop_pool(spec.name)
    raise BackendError(f"engine pool {spec.name}: replicas died again right after a restart")


def _get_or_create(spec: PoolSpec, plan: ReplicaPlan) -> Any:
    import ray

    return (
        ray.remote(EnginePoolActor)
        .options(
            name=spec.name,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,  # its replicas hold the resources; the pool itself only waits and answers
            max_concurrency=16,
            max_restarts=0,
            runtime_env={"env_vars": {"RAY_worker_niceness": "0"}},
        )
        .remote(spec, plan)
    )


def _handle(name: str) -> Any | None:
    import ray

    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def _describe(handle: Any) -> dict[str, Any] | None:
    import ray

    try:
        return ray.get(handle.describe.remote(), timeout=CONTROL_TIMEOUT_S)
    except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
        return None


def list_pools() -> list[dict[str, Any]]:
    """Every pool on the connected cluster, as the pool describes itself (one that does not answer: state
    'unresponsive', with its name only)."""
    import ray

    pools = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry.get("namespace") != NAMESPACE or not entry["name"].startswith(NAME_PREFIX):
            continue
        handle = _handle(entry["name"])
        if handle is None:
            continue
        pools.append(_describe(handle) or {"name": entry["name"], "scope": "", "state": "unresponsive"})
    return sorted(pools, key=lambda pool: pool.get("created", 0.0))


def stop_pool(name: str) -> bool:
    """Stop a pool's engines and end it; True when there was one. Its resources are free when this returns."""
    import ray

    handle = _handle(name)
    if handle is None:
        return False
    try:
        ray.get(handle.stop_engines.remote(), timeout=SHUTDOWN_TIMEOUT_S + CONTROL_TIMEOUT_S)
    except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as exc:
        log.warning("engine pool %s did not stop its engines (%s); killing it", name, cause(exc))
    ray.kill(handle, no_restart=True)
    wait_dead(handle)
    log.info("stopped engine pool %s", name)
    return True


def stop_scope(scope: str) -> list[str]:
    """Stop every pool of `scope`; returns their names."""
    prefix = scope_prefix(scope)
    return [pool["name"] for pool in list_pools() if pool["name"].startswith(prefix) and stop_pool(pool["name"])]


def orphan_reason(pool: dict[str, Any], *, scope_prefix_to_reap: str | None = None,
                  keep_scope: str | None = None) -> str | None:
    """Why a described pool is an orphan, or None while someone may still use it."""
    if pool.get("state") == "unresponsive":
        return None  # busy or dying; its own lease ends it
    if time.time() > pool["lease_until"]:
        return f"nobody renewed its lease for {pool['lease_s']:.0f} s"
    owner = pool.get("owner")
    if owner and OwnerProcess(**owner).is_gone():
        return f"its owner process {owner['pid']} on {owner['host']} is gone"
    if scope_prefix_to_reap and pool["scope"].startswith(scope_prefix_to_reap) and pool["scope"] != keep_scope:
        return f"its scope {pool['scope']} is over"
    return None


def reap_orphans(*, scope_prefix_to_reap: str | None = None, keep_scope: str | None = None) -> list[str]:
    """Stop every orphaned pool (see orphan_reason); returns their names."""
    reaped = []
    for pool in list_pools():
        reason = orphan_reason(pool, scope_prefix_to_reap=scope_prefix_to_reap, keep_scope=keep_scope)
        if reason and stop_pool(pool["name"]):
            log.warning("reaped engine pool %s (scope %s): %s", pool["name"], pool["scope"], reason)
            reaped.append(pool["name"])
    return reaped


def wait_for_free(resources: dict[str, float], timeout_s: float) -> None:
    """Block until the cluster shows `resources` (e.g. {"GPU": 8}) available, at most `timeout_s`; a clear error
    otherwise, naming what still holds them. Training waits here after the engines were stopped, because Ray
    returns a killed actor's resources asynchronously."""
    import ray

    deadline = time.monotonic() + timeout_s
    while True:
        available = ray.available_resources()
        short = {k: v for k, v in resources.items() if available.get(k, 0.0) + 1e-9 < v}
        if not short:
            return
        if time.monotonic() > deadline:
            holders = ", ".join(f"{p['name']} ({p['scope']})" for p in list_pools()) or "no srlm engine pool"
            wanted = ", ".join(f"{k} {v:g} (free: {available.get(k, 0.0):g})" for k, v in short.items())
            raise BackendError(
                f"training needs {wanted} but they were not released within {timeout_s:.0f} s; running pools: "
                f"{holders}. Stop them with `srlm engines stop`, or raise backend.engine_release_timeout_s."
            )
        time.sleep(0.5)


def cause(exc: BaseException) -> str:
    """One line for a Ray exception: the vLLM error it wraps, not Ray's traceback."""
    import ray

    if isinstance(exc, ray.exceptions.OutOfMemoryError):
        return (
            "Ray's memory monitor killed the engine because the node ran low on RAM; lower "
            "backend.gpu_memory_utilization (on CPU, the share of RAM for the KV cache) or free memory"
        )
    root = getattr(exc, "cause", None) or exc.__cause__ or exc
    lines = [line for line in str(root).strip().splitlines() if line.strip()]
    return f"{type(root).__name__}: {lines[-1] if lines else ''}"


def wait_dead(actor: Any, timeout: float = 60.0) -> None:
    """Return once Ray reports the actor dead, i.e. its worker process has exited (ray.kill returns at once)."""
    import ray

    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=left)
        except ray.exceptions.GetTimeoutError:
            break
        except ray.exceptions.RayError:  # ActorDiedError, or OutOfMemoryError when Ray's OOM killer got there first
            return
        time.sleep(0.1)  # the kill has not landed yet
    log.warning("a killed Ray actor was still not reported dead after %.0f s", timeout)


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Connected to Ray (ray_cluster.connect/release) for the block, for callers that only manage pools."""
    owns = ray_cluster.connect(address)
    try:
        yield
    finally:
        if owns:
            ray_cluster.release()
