"""The one rule for "is this committed output still current?", and resumption of sharded steps.

A committed output is reused only while its producer fingerprint matches what the step would produce now:
- the fingerprints of its input artifacts (their manifests' sha256, the model's, the seed prompts' digest, …):
  what they hold, not where they were read from (`content_identity`), so a moved, renamed or copied store, or
  its root spelled another way, reuses everything,
- the settings that affect the step: the config keys the registry lists for it (srlm.steps.registry: training
  hyperparameters for sft/dpo, sampling for prompts/generate/judge, pair rules for pairs) or, for outputs outside
  the registry's steps, the settings the caller records (evaluation suites, imports),
- the schema version of the tables.
On a mismatch the step recomputes into a new attempt (written with force, so the store replaces the committed
manifest atomically and removes the old attempt's files) and says why in one line:

    dpo: recomputing M1 (…/runs/x/models/M1): dpo.beta changed 0.1 → 0.2

Nothing is reused silently: an output written outside the steps (no producer to compare: an import, a table put
in place by hand) is reused with a line saying so. Downstream outputs then recompute in turn, because their
inputs' fingerprints changed.

Sharded steps commit each shard as its own artifact with the same producer, so a rerun redoes only the shards
that are missing or were made by another producer, then commits the parent over all shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from srlm.errors import UncommittedArtifactError
from srlm.generation.base import tokens_per_second
from srlm.store import artifacts
from srlm.store.schemas import SCHEMA_VERSION

log = logging.getLogger(__name__)

# The producer keys the fingerprint covers; everything else in a producer (the full config, the run, round
# statistics) is provenance.
FINGERPRINTED = ("step", "inputs", "settings", "schema_version")


# How an input was named or where it was read from (a URI, a path, a model's spec or label): not what it is.
# Dropped before comparing an input that carries a content digest, so a moved or renamed store, or another
# spelling of its root ('./x' and '/abs/x'), reuses its outputs; kept where the name is all that identifies an
# input (a model alias, a file srlm cannot hash).
NAMING_KEYS = frozenset({"uri", "path", "spec", "label"})
DIGEST_KEYS = frozenset({"sha256", "fingerprint"})


def fingerprint(uri: str) -> dict[str, Any]:
    """The identity of a committed input artifact: the sha256 of its manifest.

    The manifest lists every file's sha256 and size, and when and by which attempt it was committed, so its digest
    names exactly one committed content wherever the store lives (a moved store or a copy on S3 holds the same
    manifest bytes), and changes whenever the artifact is recomputed. The URI is not part of it: the same table
    read through another spelling of the store root is the same input.
    """
    manifest = artifacts.read_manifest(uri)
    return {"sha256": manifest.sha256}


def content_identity(value: Any) -> Any:
    """An input fingerprint as reuse compares it: without the naming keys (NAMING_KEYS) wherever a content digest
    identifies it, at any depth. Producers written before fingerprints dropped the URI ({"uri": …, "sha256": …})
    compare equal to today's ({"sha256": …})."""
    if isinstance(value, Mapping):
        named_only = not DIGEST_KEYS & set(value)
        return {k: content_identity(v) for k, v in value.items() if named_only or k not in NAMING_KEYS}
    if isinstance(value, (list, tuple)):
        return [content_identity(v) for v in value]
    return value


def step_settings(config: Any, step: str) -> dict[str, Any] | None:
    """The values of the config keys that affect registered step `step`, as {dotted key: value}; None when `step`
    is not in the registry."""
    from srlm.steps.registry import is_step, step as step_def

    if not is_step(step):
        return None
    definition = step_def(step)
    data = config.to_dict()
    out: dict[str, Any] = {}
    for key in definition.config_keys:
        value: Any = data
        for part in key.split("."):
            value = value[part]
        _flatten(key, value, out)
    for key in definition.operational_keys:
        for name in [k for k in out if k == key or k.startswith(key + ".")]:
            del out[name]
    return out


def make_producer(step: str, inputs: Mapping[str, Any], settings: Mapping[str, Any], **provenance: Any) -> dict:
    """A producer with its fingerprint, for outputs made outside a StepContext (imports)."""
    producer = {
        "step": step,
        "inputs": dict(inputs),
        "settings": dict(settings),
        "schema_version": SCHEMA_VERSION,
        **provenance,
    }
    producer["fingerprint"] = producer_fingerprint(producer)
    return producer


def producer_fingerprint(producer: Mapping[str, Any]) -> str:
    """sha256 over what decides reuse (FINGERPRINTED), as canonical JSON."""
    covered = {key: producer.get(key) for key in FINGERPRINTED}
    covered["inputs"] = content_identity(covered["inputs"])
    text = json.dumps(covered, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def produced_with(manifest: Any) -> dict[str, Any]:
    """The settings a committed output was produced with (what its summary reports), {} when not recorded."""
    recorded = (manifest.producer or {}) if manifest is not None else {}
    settings = recorded.get("settings")
    return dict(settings) if isinstance(settings, dict) else {}


def stale_reasons(
    recorded: Mapping[str, Any] | None, current: Mapping[str, Any], *, ignore: Collection[str] = ()
) -> list[str] | None:
    """Why an output made by producer `recorded` is not what `current` would make ([] when it matches).

    None when `recorded` holds no producer to compare (written outside the steps). `ignore`: settings that do
    not count for this comparison (a resumed prompts round ignores how many prompts are wanted in total).
    """
    recorded = recorded or {}
    if "step" not in recorded:
        return None
    if "fingerprint" in current and "settings" not in recorded and (recorded.get("params") or _settings(current)):
        # Written before settings were recorded by key: its section dump cannot be compared key by key.
        return ["made by an older srlm without a producer fingerprint"]
    reasons: list[str] = []
    was_inputs, now_inputs = recorded.get("inputs") or {}, current.get("inputs") or {}
    for name in sorted(set(was_inputs) | set(now_inputs)):
        if content_identity(was_inputs.get(name)) != content_identity(now_inputs.get(name)):
            reasons.append(f"input {name} changed")
    was, now = _settings(recorded), _settings(current)
    for key in sorted((set(was) | set(now)) - set(ignore)):
        if was.get(key, _UNSET) != now.get(key, _UNSET):
            reasons.append(f"{key} changed {_show(was.get(key, _UNSET))} → {_show(now.get(key, _UNSET))}")
    was_version, now_version = recorded.get("schema_version"), current.get("schema_version")
    if was_version is not None and now_version is not None and was_version != now_version:
        reasons.append(f"schema version {was_version} → {now_version}")
    return reasons


@dataclass
class Verdict:
    """What the rule says about a committed output: reuse it (manifest), or recompute it and why."""

    manifest: Any | None  # the committed output's manifest (None when nothing is committed)
    reasons: list[str] = field(default_factory=list)  # why it is stale (empty: current)
    outside: bool = False  # committed without a producer to compare (written outside the steps)
    forced: bool = False

    @property
    def reusable(self) -> bool:
        return self.manifest is not None and not self.reasons and not self.forced


def committed_state(uri: str) -> str | None:
    """The sha256 of the manifest committed at `uri` now (None: nothing is committed). A step that decides to
    recompute takes it before deciding and passes it as its write's `replaces`, so that another writer committing
    the same output while this one computes makes this write fail (or, made by the same producer, stand on the
    other's) instead of silently replacing it (srlm.store.artifacts, concurrent writers)."""
    try:
        return artifacts.read_manifest(uri).sha256
    except UncommittedArtifactError:
        return None


def check_committed(uri: str, producer: Mapping[str, Any], *, force: bool = False) -> Verdict:
    """Apply the rule to `uri` without acting on it (see reuse_committed)."""
    if not artifacts.is_committed(uri):
        return Verdict(None)
    manifest = artifacts.read_manifest(uri)
    if force:
        return Verdict(manifest, forced=True)
    reasons = stale_reasons(manifest.producer, producer)
    if reasons is None:
        return Verdict(manifest, outside=True)
    # A table of another schema version cannot be read as this one, whatever its producer says.
    if manifest.kind == "table" and manifest.schema_version != SCHEMA_VERSION:
        if not any(reason.startswith("schema version") for reason in reasons):
            reasons.append(f"schema version {manifest.schema_version} → {SCHEMA_VERSION}")
    return Verdict(manifest, reasons)


def reuse_committed(
    uri: str,
    producer: dict[str, Any],
    *,
    force: bool,
    what: str,
    echo: Callable[[str], None] | None = None,
    label: str | None = None,
) -> Any | None:
    """The manifest of a committed output this step can stand on, or None when the step must (re)compute it.

    Nothing is deleted: the caller writes its new output with force=True, which commits a new attempt over the
    old one. A stale output is announced in one line naming what changed; `label` names the output in it
    (e.g. the checkpoint id).
    """
    verdict = check_committed(uri, producer, force=force)
    where = f"{label} ({uri})" if label else uri
    if verdict.manifest is None or verdict.forced:
        return None
    if verdict.outside:
        _say(echo, f"{what}: reusing {where}: written outside the steps, no producer fingerprint to compare")
        return verdict.manifest
    if verdict.reasons:
        _say(echo, f"{what}: recomputing {where}: {'; '.join(verdict.reasons)}")
        return None
    return verdict.manifest


@dataclass
class ShardRun:
    """What a sharded step did: shards total, shards reused, and the output tokens/seconds of the new ones."""

    shards: int = 0
    reused: int = 0
    output_tokens: int = 0
    generate_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return tokens_per_second(self.output_tokens, self.generate_seconds, untimed=float("nan"))

    def generate(self, backend: Any, requests: Sequence[Any], sampling: Any, *, progress: bool) -> list[Any]:
        """`backend.generate`, with its output tokens and seconds counted towards this run's tokens/s."""
        began = time.perf_counter()
        completions = backend.generate(requests, sampling, progress=progress)
        self.generate_seconds += time.perf_counter() - began
        self.output_tokens += sum(sum(c.num_tokens) for c in completions)
        return completions


def run_sharded(
    uri: str,
    items: Sequence[Mapping[str, Any]],
    shard_size: int,
    *,
    schema_name: str,
    key_column: str,
    make_shard: Callable[[Sequence[Any], ShardRun], pa.Table],
    producer: dict[str, Any],
    what: str,
    force: bool = False,
) -> ShardRun:
    """Compute and commit each missing shard of `items` (rows keyed by `key_column`), then commit `uri` over all.

    A committed shard is reused (unless `force`) only if its producer fingerprint matches and it holds exactly
    the keys this shard should (a changed shard_size moves the boundaries, and such shards are redone rather than
    mixed).
    """
    if shard_size < 1:
        raise ValueError(f"{what}: shard_size must be at least 1, got {shard_size}")
    run = ShardRun()
    # Taken when the caller has just decided to (re)compute `uri`: a writer that commits it meanwhile wins.
    replaces = committed_state(uri)
    if not items:
        from srlm.store.schemas import schema

        empty = schema(schema_name).empty_table()
        artifacts.write_table(uri, empty, schema_name, producer=producer, force=True, replaces=replaces)
        drop_unlisted_shards(uri, 0)
        return run
    shard_uris: list[str] = []
    for index, first in enumerate(range(0, len(items), shard_size)):
        chunk = items[first : first + shard_size]
        target = artifacts.shard_uri(uri, index)
        shard_uris.append(target)
        run.shards += 1
        shard_replaces = committed_state(target)
        if not force and _shard_reusable(target, producer, {item[key_column] for item in chunk}, key_column):
            run.reused += 1
            continue
        table = make_shard(chunk, run)
        artifacts.write_table(target, table, schema_name, producer=producer, force=True, replaces=shard_replaces)
    if run.reused:
        log.info("%s: reused %d of %d committed shards", what, run.reused, run.shards)
    artifacts.commit_shards(uri, shard_uris, schema_name, producer=producer, force=True, replaces=replaces)
    drop_unlisted_shards(uri, len(shard_uris))
    return run


def drop_unlisted_shards(uri: str, count: int) -> None:
    """Delete shards numbered `count` and up: a recomputed output with fewer shards no longer lists them, so
    nothing references them (and a later resume must not mistake them for its own)."""
    index = count
    while artifacts.is_committed(shard := artifacts.shard_uri(uri, index)):
        artifacts.delete_artifact(shard)
        index += 1


def _shard_reusable(target: str, producer: dict[str, Any], keys: set[str], key_column: str) -> bool:
    if not artifacts.is_committed(target):
        return False
    if stale_reasons(artifacts.read_manifest(target).producer, producer) != []:
        return False
    found = set(artifacts.read_table(target, columns=[key_column]).column(key_column).to_pylist())
    return found == keys


class _Unset:
    def __repr__(self) -> str:
        return "unset"


_UNSET = _Unset()


def _settings(producer: Mapping[str, Any]) -> dict[str, Any]:
    # "params": producers that name their settings so (evaluation results) or were written before "settings".
    settings = producer.get("settings", producer.get("params"))
    return dict(settings) if isinstance(settings, dict) else {}


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, out)
    else:
        out[prefix] = value


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _say(echo: Callable[[str], None] | None, message: str) -> None:
    log.info(message)
    if echo:
        echo(message)
