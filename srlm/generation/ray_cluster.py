"""Connecting to Ray for the vLLM engines: an existing cluster when one is named, else a local head we own.

A local head started here is shut down when the last backend using it closes; a cluster srlm did not start (an
address in the config or RAY_ADDRESS, or a `ray.init` the caller already made) is never shut down. Like the
embedded head of `srlm.orchestration.ray_head`, it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

from srlm.errors import BackendError
from srlm.orchestration.ray_head import LOOPBACK_IP, LOOPBACK_RAY_ENV

log = logging.getLogger(__name__)

_lock = threading.Lock()
_local_head_users = 0  # open backends using the local head this process started


def connect(address: str | None) -> bool:
    """Make sure this process is connected to Ray. Returns True when it uses a local head started by srlm (the
    caller must then call `release()` when done)."""
    global _local_head_users
    import ray

    with _lock:
        if ray.is_initialized():
            if _local_head_users:
                _local_head_users += 1
                return True
            return False
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            # A head on the loopback address (srlm's embedded one: `make up`, srlm.orchestration.ray_head) runs in
            # Ray's single-node mode, and a driver joins it only in that mode too (otherwise it looks for a raylet
            # on the machine's routable address and waits for ever).
            on_loopback = address.split("://")[-1].startswith(f"{LOOPBACK_IP}:")
            if on_loopback:
                _send_the_local_token()
            try:
                with _single_node_on_loopback() if on_loopback else contextlib.nullcontext():
                    ray.init(address=address, log_to_driver=True)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise BackendError(f"backend.ray_address {address}: cannot connect to Ray: {exc}") from exc
            return False
        # "local" starts a fresh head even when another Ray instance runs on this machine (other users' clusters
        # are not ours to schedule onto or to shut down).
        with _single_node_on_loopback():
            ray.init(
                address="local",
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                log_to_driver=True,
                _node_ip_address=LOOPBACK_IP,
            )
        _local_head_users = 1
        log.info("started a local Ray head for the vLLM engines")
        return True


def _send_the_local_token() -> None:
    """Ray 2.60 turns token authentication on for a head started while ~/.ray/auth_token exists (srlm's local
    heads too; a first local `ray.init` writes that file), but a driver joining it sends the token only in token
    mode: a driver the head starts (a Ray job's) inherits the mode, one started beside it (`srlm engines`, a step
    given the head's address) takes it the way `ray start` does, when the token file is there and RAY_AUTH_MODE
    says nothing else. (Ray caches the mode in its config, so setting the variable alone is too late.)"""
    from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


@contextlib.contextmanager
def _single_node_on_loopback() -> Iterator[None]:
    """While a local head starts: Ray's single-node mode, in which the node IP stays 127.0.0.1 (instead of being
    rewritten to the machine's address) and every process the head spawns binds it. Ray reads the switch into
    `ray_constants.ENABLE_RAY_CLUSTER` when it is first imported, which may have happened already (vLLM imports
    Ray), so the constant is set for the call as well as the variable its processes inherit; both are restored,
    so a later connection to a real cluster from this process resolves its node address as usual."""
    from ray._private import ray_constants

    saved_env = {key: os.environ.get(key) for key in LOOPBACK_RAY_ENV}
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(LOOPBACK_RAY_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def release() -> None:
    """One user of the local head is done; the last one shuts it down."""
    global _local_head_users
    import ray

    with _lock:
        if _local_head_users == 0:
            return
        _local_head_users -= 1
        if _local_head_users == 0 and ray.is_initialized():
            ray.shutdown()
            log.info("shut down the local Ray head")


def has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def cpus_per_node() -> int:
    """CPUs of the largest alive node: one CPU engine runs on one node, so it can use at most this many."""
    import ray

    sizes = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    return max(sizes, default=1) or 1
