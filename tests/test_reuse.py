"""The one reuse rule: a committed output stands only while its producer fingerprint (inputs, the settings that
affect its step, schema version) matches; a changed setting recomputes exactly its step and everything downstream,
each saying why in one line, and an unchanged rerun is a no-op.

Runs whole iterations with the scripted backend and the stand-in training launcher of tests/test_iteration.py."""

from __future__ import annotations

import pytest

from srlm.steps.dpo import train_iteration_model
from srlm.steps.iterate import iterate
from srlm.steps.registry import ITERATION_STEPS, step
from srlm.steps.reuse import producer_fingerprint, reuse_committed, stale_reasons
from srlm.store import artifacts
from srlm.training.registry import get_checkpoint, register_checkpoint
from tests.test_iteration import (
    fake_model_dir,
    fake_training,  # noqa: F401  (fixture)
    make_ctx,
    register_m0,
    scripted_opener,
)


def iteration_ctx(store: str, lines: list[str], **overrides):
    ctx = make_ctx(store, **overrides)
    ctx.echo = lines.append
    return ctx


def recomputed(result) -> list[str]:
    return [name for name, step in result.steps.items() if not step.reused]


def recompute_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if ": recomputing " in line]


@pytest.fixture
def first_iteration(tmp_store, tmp_path, fake_training):  # noqa: F811
    """Iteration 1 with the default settings, done once; returns the training jobs list."""
    ctx = make_ctx(tmp_store)
    register_m0(ctx, tmp_path)
    result = iterate(ctx, 1, opener=scripted_opener)
    assert list(result.steps) == list(ITERATION_STEPS) and len(fake_training) == 1
    return fake_training


def test_an_unchanged_rerun_is_a_no_op(tmp_store, first_iteration):
    lines: list[str] = []
    before = artifacts.read_manifest(make_ctx(tmp_store).layout.candidates(1))
    again = iterate(iteration_ctx(tmp_store, lines), 1, opener=scripted_opener)
    assert recomputed(again) == [] and again.backend_starts == 0 and len(first_iteration) == 1
    assert recompute_lines(lines) == []
    assert artifacts.read_manifest(make_ctx(tmp_store).layout.candidates(1)).sha256 == before.sha256
    # Operational keys (shard sizes, micro-batches, processes) do not change what a step makes.
    again = iterate(
        iteration_ctx(tmp_store, lines, **{"generate.shard_size": 1, "dpo.per_device_batch_size": 2}),
        1,
        opener=scripted_opener,
    )
    assert recomputed(again) == [] and len(first_iteration) == 1


def test_a_changed_training_hyperparameter_retrains_only_the_checkpoint(tmp_store, first_iteration):
    lines: list[str] = []
    ctx = iteration_ctx(tmp_store, lines, **{"dpo.beta": 0.2})
    m1_before = artifacts.read_manifest(ctx.layout.model("M1"))
    result = iterate(ctx, 1, opener=scripted_opener)
    assert recomputed(result) == ["dpo"] and result.backend_starts == 0  # no engine for the reused data steps
    assert len(first_iteration) == 2 and first_iteration[-1].config["beta"] == 0.2
    (line,) = recompute_lines(lines)
    assert line == f"dpo: recomputing M1 ({ctx.layout.model('M1')}): dpo.beta changed 0.1 → 0.2"
    # A new attempt replaced the commit; the registry says which config M1 was trained with now.
    assert artifacts.read_manifest(ctx.layout.model("M1")).attempt_id != m1_before.attempt_id
    assert get_checkpoint(ctx.layout, "M1").config["beta"] == 0.2
    assert result.steps["dpo"].summary.metrics["beta"] == 0.2
    # The new checkpoint stands on the new setting: rerunning with it is a no-op again.
    lines.clear()
    again = iterate(iteration_ctx(tmp_store, lines, **{"dpo.beta": 0.2}), 1, opener=scripted_opener)
    assert recomputed(again) == [] and len(first_iteration) == 2 and recompute_lines(lines) == []


def test_a_changed_sampling_setting_recomputes_that_step_and_everything_downstream(tmp_store, first_iteration):
    lines: list[str] = []
    ctx = iteration_ctx(tmp_store, lines, **{"generate.temperature": 0.9})
    result = iterate(ctx, 1, opener=scripted_opener)
    assert recomputed(result) == ["generate", "judge", "meta_judge", "pairs", "judge_health", "dpo"]
    assert result.backend_starts == 1
    assert len(first_iteration) == 2
    assert recompute_lines(lines) == [
        f"generate: recomputing candidates ({ctx.layout.candidates(1)}): generate.temperature changed 0.7 → 0.9",
        f"judge: recomputing judgments ({ctx.layout.judgments(1)}): input candidates changed",
        f"meta_judge: recomputing judgment pairs ({step('meta_judge').output_uri(ctx.layout, 1)}): input judgments "
        "changed",
        f"pairs: recomputing pairs ({ctx.layout.pairs(1)}): input candidates changed; input judgments changed",
        f"judge_health: recomputing judge health ({step('judge_health').output_uri(ctx.layout, 1)}): input "
        "judgments changed; input pairs changed",
        f"dpo: recomputing M1 ({ctx.layout.model('M1')}): input pairs changed",
    ]
    produced = artifacts.read_manifest(ctx.layout.candidates(1)).producer
    assert produced["settings"]["generate.temperature"] == 0.9 and produced["config"]["generate"]["temperature"] == 0.9


def test_a_changed_pair_rule_recomputes_pairs_and_the_checkpoint(tmp_store, first_iteration):
    lines: list[str] = []
    ctx = iteration_ctx(tmp_store, lines, **{"pairs.min_margin": 0.5})
    result = iterate(ctx, 1, opener=scripted_opener)
    assert recomputed(result) == ["pairs", "judge_health", "dpo"] and result.backend_starts == 0
    assert len(first_iteration) == 2
    assert recompute_lines(lines) == [
        f"pairs: recomputing pairs ({ctx.layout.pairs(1)}): pairs.min_margin changed 0.0 → 0.5",
        f"judge_health: recomputing judge health ({step('judge_health').output_uri(ctx.layout, 1)}): input pairs "
        "changed",
        f"dpo: recomputing M1 ({ctx.layout.model('M1')}): input pairs changed",
    ]


def test_a_reused_checkpoint_reports_the_settings_it_was_trained_with(tmp_store, tmp_path, fake_training):  # noqa: F811
    """M1 registered outside the steps (no producer to compare) is reused with a line saying so, and its summary
    shows the learning rate it was trained with, not the current config's."""
    lines: list[str] = []
    ctx = iteration_ctx(tmp_store, lines)
    register_m0(ctx, tmp_path)
    artifacts.write_table(ctx.layout.pairs(1), [], "pairs")
    uri = ctx.layout.model("M1")
    artifacts.write_directory(uri, fake_model_dir(tmp_path, "m1"))
    trained = {
        "learning_rate": 3e-6,
        "final_learning_rate": 3e-7,
        "lr_schedule": "cosine",
        "num_train_epochs": 2.0,
        "beta": 0.5,
    }
    register_checkpoint(ctx.layout, "M1", 1, uri, "M0", "dpo", 5, True, None, trained)
    result = train_iteration_model(ctx, 1)
    assert result.reused and not fake_training
    assert f"dpo: reusing M1 ({uri}): written outside the steps, no producer fingerprint to compare" in lines
    assert result.summary.metrics["learning_rate"] == 3e-6 and result.summary.metrics["beta"] == 0.5
    assert "3e-06 → 3e-07 (cosine)" in result.summary.render()


def test_force_recomputes_without_deleting_first(tmp_store, first_iteration):
    ctx = make_ctx(tmp_store)
    before = artifacts.read_manifest(ctx.layout.judgments(1))
    result = iterate(ctx, 1, force_from="judge", opener=scripted_opener)
    assert recomputed(result) == ["judge", "meta_judge", "pairs", "judge_health", "dpo"]
    after = artifacts.read_manifest(ctx.layout.judgments(1))
    assert after.sha256 != before.sha256 and after.total_rows == before.total_rows


def test_the_rule_compares_inputs_settings_and_schema_version():
    recorded = {"step": "x", "inputs": {"a": 1}, "settings": {"k": 1}, "schema_version": 1, "fingerprint": "f"}
    assert stale_reasons(recorded, dict(recorded)) == []
    assert stale_reasons(recorded, {**recorded, "inputs": {"a": 2}}) == ["input a changed"]
    assert stale_reasons(recorded, {**recorded, "settings": {"k": 1, "new": "v"}}) == ["new changed unset → 'v'"]
    assert stale_reasons(recorded, {**recorded, "schema_version": 2}) == ["schema version 1 → 2"]
    assert stale_reasons({"config": None}, recorded) is None  # written outside the steps
    older = {"step": "x", "inputs": {"a": 1}, "params": {"k": 1}}
    assert stale_reasons(older, recorded) == ["made by an older srlm without a producer fingerprint"]


def test_reuse_committed_never_deletes_and_says_why(tmp_store):
    uri = f"{tmp_store}/t"
    producer = {"step": "x", "inputs": {}, "settings": {"k": 1}, "schema_version": 1}
    artifacts.write_table(uri, [], "pairs", producer=producer)
    lines: list[str] = []
    assert reuse_committed(uri, producer, force=False, what="x", echo=lines.append) is not None and not lines
    changed = {**producer, "settings": {"k": 2}}
    assert reuse_committed(uri, changed, force=False, what="x", echo=lines.append) is None
    assert lines == [f"x: recomputing {uri}: k changed 1 → 2"] and artifacts.is_committed(uri)
    assert reuse_committed(uri, producer, force=True, what="x") is None and artifacts.is_committed(uri)


def test_inputs_are_compared_by_content_not_by_where_they_were_read_from():
    """Older srlm recorded each input's URI beside its digest (and a model's spec): those spellings do not count,
    only the digests do; an input named only by its location (an alias) is still compared by it."""
    old = {"uri": "/abs/store/runs/r/iterations/001/prompts", "sha256": "abc"}
    old_model = {"label": "M0", "spec": "srlm-store/runs/r/models/M0", "fingerprint": "f0"}
    recorded = {"step": "x", "inputs": {"prompts": old, "model": old_model}, "settings": {}, "schema_version": 1}
    now = {**recorded, "inputs": {"prompts": {"sha256": "abc"}, "model": {"label": "M0", "fingerprint": "f0"}}}
    assert stale_reasons(recorded, now) == []
    assert producer_fingerprint(recorded) == producer_fingerprint(now)
    retrained = {**now, "inputs": {**now["inputs"], "model": {"label": "M0", "fingerprint": "f1"}}}
    assert stale_reasons(recorded, retrained) == ["input model changed"]
    aliased = {**recorded, "inputs": {"base": {"uri": "smollm2-135m"}}}
    assert stale_reasons(aliased, {**aliased, "inputs": {"base": {"uri": "other-model"}}}) == ["input base changed"]


def test_an_iteration_committed_with_absolute_input_uris_is_reused(tmp_store, first_iteration):
    """M1 committed by an older srlm (its producer names the inputs by absolute URI, the model by spec) from a store
    that was elsewhere then: the rerun reuses it, since what it was made from has not changed."""
    import json
    from pathlib import Path

    ctx = make_ctx(tmp_store)
    manifest_path = Path(ctx.layout.model("M1")) / "_SUCCESS"
    manifest = json.loads(manifest_path.read_text())
    inputs = manifest["producer"]["inputs"]
    inputs["pairs"] = {"uri": "/old/place/runs/it/iterations/001/pairs", **inputs["pairs"]}
    inputs["model"] = {**inputs["model"], "spec": "/old/place/runs/it/models/M0"}
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    lines: list[str] = []
    again = iterate(iteration_ctx(tmp_store, lines), 1, opener=scripted_opener)
    assert recomputed(again) == [] and len(first_iteration) == 1 and recompute_lines(lines) == []
