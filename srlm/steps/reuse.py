"""Idempotence and resumption shared by the steps.

A step's committed output is reused when it was produced from the same inputs (the manifests' sha256 recorded in
its producer); with `force`, or when an input has changed since (an upstream step was redone), it is deleted and
recomputed. Sharded steps commit each shard as its own artifact, so a rerun redoes only the shards that are
missing or were made from other inputs, then commits the parent over all shards.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pyarrow as pa

from srlm.store import artifacts

log = logging.getLogger(__name__)


def fingerprint(uri: str) -> dict[str, Any]:
    """The identity of a committed input artifact: its URI and the sha256 of its manifest."""
    manifest = artifacts.read_manifest(uri)
    return {"uri": uri, "sha256": manifest.sha256}


def _stale_inputs(manifest: Any, producer: dict[str, Any]) -> list[str]:
    recorded = (manifest.producer or {}).get("inputs")
    if recorded is None:
        return []  # written outside the steps (an import): nothing to compare, take it as given
    current = producer.get("inputs") or {}
    return sorted(name for name in set(recorded) | set(current) if recorded.get(name) != current.get(name))


def _changed_params(manifest: Any, producer: dict[str, Any]) -> list[str]:
    recorded = (manifest.producer or {}).get("params") or {}
    current = producer.get("params") or {}
    if not isinstance(recorded, dict) or not isinstance(current, dict):
        return []
    return sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))


def reuse_committed(
    uri: str, producer: dict[str, Any], *, force: bool, what: str, echo: Callable[[str], None] | None = None
) -> Any | None:
    """The manifest of a committed output this step can stand on, or None when the step must (re)compute it.

    Deletes the old output first when forced or stale, so nothing half-old is ever read.
    """
    if force:
        artifacts.delete_artifact(uri)
        return None
    if not artifacts.is_committed(uri):
        return None
    manifest = artifacts.read_manifest(uri)
    stale = _stale_inputs(manifest, producer)
    if stale:
        message = f"{what}: committed output at {uri} was made from other {', '.join(stale)}; recomputing it"
        log.warning(message)
        if echo:
            echo(message)
        artifacts.delete_artifact(uri)
        return None
    changed = _changed_params(manifest, producer)
    if changed:
        message = (
            f"{what}: reusing committed {uri} although its settings differ ({', '.join(changed)}); "
            "pass --force to recompute"
        )
        log.warning(message)
        if echo:
            echo(message)
    return manifest


@dataclass
class ShardRun:
    """What a sharded step did: shards total, shards reused, and the output tokens/seconds of the new ones."""

    shards: int = 0
    reused: int = 0
    output_tokens: int = 0
    generate_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.generate_seconds if self.generate_seconds > 0 else float("nan")

    def generate(self, backend: Any, requests: Sequence[Any], sampling: Any, *, progress: bool) -> list[Any]:
        """`backend.generate`, with its output tokens and seconds counted towards this run's tokens/s."""
        began = time.perf_counter()
        completions = backend.generate(requests, sampling, progress=progress)
        self.generate_seconds += time.perf_counter() - began
        self.output_tokens += sum(sum(c.num_tokens) for c in completions)
        return completions


def run_sharded(
    uri: str,
    items: Sequence[Any],
    shard_size: int,
    *,
    schema_name: str,
    key_column: str,
    key_of: Callable[[Any], str],
    make_shard: Callable[[Sequence[Any], ShardRun], pa.Table],
    producer: dict[str, Any],
    what: str,
) -> ShardRun:
    """Compute and commit each missing shard of `items`, then commit `uri` over all shards.

    A committed shard is reused only if it was made from the same inputs and holds exactly the keys this shard
    should (a changed shard_size moves the boundaries, and such shards are redone rather than mixed).
    """
    if shard_size < 1:
        raise ValueError(f"{what}: shard_size must be at least 1, got {shard_size}")
    run = ShardRun()
    if not items:
        from srlm.store.schemas import schema

        artifacts.write_table(uri, schema(schema_name).empty_table(), schema_name, producer=producer, force=True)
        return run
    shard_uris: list[str] = []
    for index, first in enumerate(range(0, len(items), shard_size)):
        chunk = items[first : first + shard_size]
        target = artifacts.shard_uri(uri, index)
        shard_uris.append(target)
        run.shards += 1
        if _shard_reusable(target, producer, {key_of(item) for item in chunk}, key_column):
            run.reused += 1
            continue
        table = make_shard(chunk, run)
        artifacts.write_table(target, table, schema_name, producer=producer, force=True)
    if run.reused:
        log.info("%s: reused %d of %d committed shards", what, run.reused, run.shards)
    artifacts.commit_shards(uri, shard_uris, schema_name, producer=producer)
    return run


def _shard_reusable(target: str, producer: dict[str, Any], keys: set[str], key_column: str) -> bool:
    if not artifacts.is_committed(target):
        return False
    manifest = artifacts.read_manifest(target)
    if _stale_inputs(manifest, producer):
        return False
    found = set(artifacts.read_table(target, columns=[key_column]).column(key_column).to_pylist())
    return found == keys
