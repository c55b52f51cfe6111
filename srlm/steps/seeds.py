"""The seed data a run starts from: IFT + EFT tables for the seed SFT, and the seed prompts self-instruct shows.

The run's own copies live at RunLayout.seed_ift / seed_eft, written once from the configured tables
(seed_data.ift_uri / eft_uri) or srlm's shipped seed set, optionally subsampled (seed_data.max_*_examples). So
every run records exactly which examples its M0 saw, and a changed source or limit rewrites them (and, through
their fingerprints, retrains M0).
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from srlm.errors import ConfigError, DataError
from srlm.steps.context import StepContext
from srlm.steps.reuse import fingerprint, reuse_committed
from srlm.store import artifacts

SUBSAMPLE_SEED = 0


def seed_tables(ctx: StepContext) -> tuple[str, str]:
    """(IFT URI, EFT URI) of the run's seed SFT data, written into the run first if needed."""
    cfg = ctx.config.seed_data
    ift = _materialise(ctx, "ift", cfg.ift_uri, cfg.max_ift_examples, ctx.layout.seed_ift)
    eft = _materialise(ctx, "eft", cfg.eft_uri, cfg.max_eft_examples, ctx.layout.seed_eft)
    return ift, eft


def _materialise(ctx: StepContext, kind: str, source_uri: str | None, limit: int | None, target: str) -> str:
    if limit is not None and limit < 1:
        raise ConfigError(f"seed_data.max_{kind}_examples: must be at least 1 (or null for all), got {limit}")
    if source_uri is not None and ctx.layout.portable(source_uri) == ctx.layout.portable(target):  # any spelling
        if limit is not None:
            raise ConfigError(f"seed_data.{kind}_uri is the run's own seed table; it cannot also be subsampled")
        return target
    source: dict[str, Any] = fingerprint(source_uri) if source_uri else {"shipped": _shipped_digest(kind)}
    # The limit decides the content like the source does, so both are inputs: changing either rewrites the copy.
    producer = ctx.producer("seed_data", 0, inputs={"source": source, "limit": limit})
    if reuse_committed(target, producer, force=False, what=f"seed {kind}", echo=ctx.echo) is not None:
        return target
    table = artifacts.read_table(source_uri, "sft_examples") if source_uri else _shipped_table(kind)
    table = table.filter(pc.equal(table.column("kind"), kind))
    if table.num_rows == 0:
        where = source_uri or "the shipped seed set"
        raise DataError(f"{where}: no rows of kind {kind!r} for the seed SFT")
    if limit is not None and table.num_rows > limit:
        table = subsample_by_score(table, limit) if kind == "eft" else subsample(table, limit)
    artifacts.write_table(target, table, "sft_examples", producer=producer, force=True)
    return target


def _shipped_table(kind: str) -> pa.Table:
    from srlm.data import seed_data

    # EFT: the train split only; the shipped eval split stays unseen for measuring judge agreement.
    return seed_data.shipped_ift_table() if kind == "ift" else seed_data.shipped_eft_table("train")


def _shipped_digest(kind: str) -> str:
    from srlm.data import seed_data

    path = seed_data.seed_path(seed_data.IFT_FILE if kind == "ift" else seed_data.EFT_FILE)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def subsample(table: pa.Table, limit: int) -> pa.Table:
    """A seeded random subset of `limit` rows, kept in the original order."""
    keep = sorted(random.Random(SUBSAMPLE_SEED).sample(range(table.num_rows), limit))
    return table.take(pa.array(keep, type=pa.int64()))


def subsample_by_score(table: pa.Table, limit: int) -> pa.Table:
    """`limit` rows drawn round-robin over score levels, so the judge sees every score about equally often."""
    rng = random.Random(SUBSAMPLE_SEED)
    buckets: dict[Any, list[int]] = defaultdict(list)
    for index, score in enumerate(table.column("score").to_pylist()):
        buckets[score].append(index)
    queues = []
    for score in sorted(buckets, key=lambda s: (s is None, s)):
        rows = buckets[score]
        rng.shuffle(rows)
        queues.append(rows)
    keep: list[int] = []
    while len(keep) < limit:
        for rows in queues:
            if rows and len(keep) < limit:
                keep.append(rows.pop())
    return table.take(pa.array(sorted(keep), type=pa.int64()))


def seed_prompt_texts(ctx: StepContext, seeds_uri: str | None = None) -> list[str]:
    """The prompts self-instruct samples its shots from (paper: the seed IFT prompts).

    From `seeds_uri` (a prompts or sft_examples table) when given, else the run's seed IFT table (all of the
    configured or shipped IFT data, not only the subset M0 trained on), else the shipped seed prompts.
    """
    if seeds_uri:
        return prompts_from_table(seeds_uri)
    if ctx.config.seed_data.ift_uri:
        return prompts_from_table(ctx.config.seed_data.ift_uri)
    from srlm.data.seed_data import seed_prompts

    return list(seed_prompts())


def prompts_from_table(uri: str) -> list[str]:
    """Seed prompts from a `prompts` table, or the single-turn user prompts of an `sft_examples` table's IFT rows."""
    manifest = artifacts.read_manifest(uri)
    if manifest.schema_name == "prompts":
        return [p for p in artifacts.read_table(uri, "prompts", columns=["prompt"]).column("prompt").to_pylist() if p]
    if manifest.schema_name != "sft_examples":
        raise DataError(f"{uri}: seed prompts come from a prompts or sft_examples table, not {manifest.schema_name!r}")
    table = artifacts.read_table(uri, "sft_examples", columns=["kind", "prompt_messages"])
    single_turn: list[str] = []
    last_turn: list[str] = []
    for kind, messages in zip(table.column("kind").to_pylist(), table.column("prompt_messages").to_pylist()):
        if kind != "ift":
            continue
        users = [m["content"] for m in messages if m["role"] == "user" and m["content"]]
        if not users:
            continue
        last_turn.append(users[-1])
        if len(users) == 1 and all(m["role"] in ("user", "system") for m in messages):
            single_turn.append(users[0])
    # Multi-turn follow-ups ("and shorter?") make poor stand-alone examples; use them only if nothing else exists.
    found = single_turn or last_turn
    if not found:
        raise DataError(f"{uri}: no IFT user prompts to use as self-instruct seeds")
    return found
