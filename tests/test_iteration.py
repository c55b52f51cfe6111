"""`iterate` and `run`: orchestration with a scripted backend and a stand-in training job (fast), and end to end
with the tiny model, the transformers backend and real TRL training, on a local store and on S3 (slow)."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from srlm.config import load_config
from srlm.errors import DataError, ModelError
from srlm.generation.base import Completion, GenerationBackend, Sampling
from srlm.steps.context import StepContext
from srlm.steps.iterate import iterate, next_iteration, run
from srlm.store import artifacts
from srlm.store.uri import join_uri
from srlm.training.registry import get_checkpoint, register_checkpoint

RUBRIC_MARK = "Review the user's question"
_unique = itertools.count()


def is_judge(request) -> bool:
    return isinstance(request, list) and RUBRIC_MARK in request[0]["content"]


def is_self_instruct(request) -> bool:
    return isinstance(request, str) and request.endswith("<task>")


def scripted_text(request, sample: int) -> str:
    """A plausible model: new questions for self-instruct, distinct answers, and judge scores that follow them."""
    if is_self_instruct(request):
        n = next(_unique)
        return f"Question {n}: what is {n * 7919 % 10007} times {n % 97}?"
    if is_judge(request):
        quality = int(re.search(r"variant (\d)", request[0]["content"]).group(1))
        return f"Judged on relevance and clarity.\nScore: {min(5, quality + 1)}"
    return f"Answer variant {sample} for: {request[0]['content']}"


class ScriptedBackend(GenerationBackend):
    name = "scripted"
    opened: list[ScriptedBackend] = []

    def __init__(self, path: str):
        self.path = path
        self.closed = False
        ScriptedBackend.opened.append(self)

    def generate(self, requests, sampling: Sampling, *, progress: bool = True):
        assert not self.closed
        texts = [[scripted_text(r, i) for i in range(sampling.n)] for r in requests]
        return [Completion(t, [len(x.split()) for x in t], ["stop"] * len(t)) for t in texts]

    def close(self) -> None:
        self.closed = True


def scripted_opener(path, backend_config, dtype):
    return ScriptedBackend(path)


def fake_model_dir(tmp_path: Path, name: str) -> Path:
    directory = tmp_path / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "llama", "name": name}))
    return directory


@pytest.fixture
def fake_training(monkeypatch, tmp_path):
    """Stand-in for the training launcher: commits a small directory and registers it, recording each job."""
    jobs = []

    def run_training_job(spec, num_processes=None, *, force=False, echo=True):
        assert all(b.closed for b in ScriptedBackend.opened), "the generation backend must be closed before training"
        jobs.append(spec)
        out = fake_model_dir(tmp_path / "trained", f"{spec.checkpoint_id}-{len(jobs)}")
        # As the launcher does: the step's producer (its fingerprint) goes into the checkpoint's manifest.
        artifacts.write_directory(spec.output_uri, out, producer={"config": spec.config, **spec.producer}, force=force)
        return register_checkpoint(
            spec.layout, spec.checkpoint_id, spec.iteration, spec.output_uri, spec.parent_id, spec.kind, 7, True,
            ",".join(spec.data_uris), spec.config, force=force,
        )

    monkeypatch.setattr("srlm.training.launch.run_training_job", run_training_job)
    ScriptedBackend.opened = []
    return jobs


def make_ctx(store: str, **overrides) -> StepContext:
    settings = {
        "store.uri": store,
        "run.name": "it",
        "prompts.num_prompts": 4,
        "generate.num_candidates": 3,
        "judge.num_samples": 2,
    }
    settings.update(overrides)
    return StepContext.from_config(load_config(None, settings), echo=lambda _: None, progress=False)


def register_m0(ctx: StepContext, tmp_path: Path) -> None:
    uri = ctx.layout.model("M0")
    artifacts.write_directory(uri, fake_model_dir(tmp_path, "m0"))
    register_checkpoint(ctx.layout, "M0", 0, uri, None, "sft", 1, True, None, {})


def test_iterate_uses_one_backend_for_three_steps_then_trains_and_registers(tmp_store, tmp_path, fake_training):
    ctx = make_ctx(tmp_store)
    register_m0(ctx, tmp_path)
    assert next_iteration(ctx) == 1
    result = iterate(ctx, opener=scripted_opener)

    assert result.checkpoint_id == "M1" and result.backend_starts == 1
    assert len(ScriptedBackend.opened) == 1 and ScriptedBackend.opened[0].closed
    assert ScriptedBackend.opened[0].path.endswith("_attempts/" + artifacts.read_manifest(ctx.layout.model("M0")).attempt_id)
    (job,) = fake_training
    assert (job.kind, job.checkpoint_id, job.parent_id, job.iteration) == ("dpo", "M1", "M0", 1)
    assert job.model == ctx.layout.model("M0") and job.data_uris == [ctx.layout.pairs(1)]
    assert job.ref_model is None  # the launcher's default reference: the input model M0
    pairs = artifacts.read_table(ctx.layout.pairs(1), "pairs").to_pylist()
    assert len(pairs) == 4 and all(p["chosen"].startswith("Answer variant 2") for p in pairs)
    assert get_checkpoint(ctx.layout, "M1").parent_id == "M0"
    assert next_iteration(ctx) == 2
    for step in ("prompts", "generate", "judge", "pairs", "dpo"):
        assert artifacts.exists(join_uri(ctx.layout.summary(1, step), "summary.txt"))
    assert result.steps["judge"].summary.metrics["parse_rate"] == 1.0


def test_rerunning_a_finished_iteration_opens_no_backend_and_trains_nothing(tmp_store, tmp_path, fake_training):
    ctx = make_ctx(tmp_store)
    register_m0(ctx, tmp_path)
    first = iterate(ctx, 1, opener=scripted_opener)
    again = iterate(ctx, 1, opener=scripted_opener)
    assert again.backend_starts == 0 and len(fake_training) == 1
    assert all(step.reused for step in again.steps.values())
    assert again.checkpoint_uri == first.checkpoint_uri


def test_from_step_recomputes_that_step_and_everything_after_it(tmp_store, tmp_path, fake_training):
    ctx = make_ctx(tmp_store)
    register_m0(ctx, tmp_path)
    iterate(ctx, 1, opener=scripted_opener)
    again = iterate(ctx, 1, force_from="judge", opener=scripted_opener)
    assert [name for name, step in again.steps.items() if step.reused] == ["prompts", "generate"]
    assert len(fake_training) == 2 and fake_training[1].checkpoint_id == "M1"


def test_iteration_without_pairs_fails_clearly_and_registers_nothing(tmp_store, tmp_path, fake_training):
    # The judge-health gate would stop this judge first (parse rate 0; tests/test_judge_health.py): off, so the
    # DPO step's own refusal of zero pairs is what is tested here.
    ctx = make_ctx(tmp_store, **{"judge_health.enabled": False})
    register_m0(ctx, tmp_path)

    class NoVerdicts(ScriptedBackend):
        def generate(self, requests, sampling, *, progress=True):
            out = super().generate(requests, sampling, progress=progress)
            for request, completion in zip(requests, out):
                if is_judge(request):
                    completion.texts = ["I cannot decide."] * len(completion.texts)
            return out

    with pytest.raises(DataError, match=r"0 preference pairs.*M1 cannot be trained"):
        iterate(ctx, 1, opener=lambda *a: NoVerdicts(a[0]))
    assert get_checkpoint(ctx.layout, "M1") is None and not fake_training
    judged = artifacts.read_table(ctx.layout.judgments(1))
    assert judged.num_rows == 4 * 3 * 2 and not any(judged.column("parse_ok").to_pylist())


def test_iterate_needs_the_previous_model(tmp_store, fake_training):
    ctx = make_ctx(tmp_store)
    with pytest.raises(ModelError, match="M0 is not registered.*srlm sft"):
        iterate(ctx, 1, opener=scripted_opener)


# ------------------------------------------------------------------------------------------ end to end, real model


class QualityShim(GenerationBackend):
    """Wraps the real backend: every request really runs on the model, then the texts a random-weight model cannot
    produce (a well-formed task, a final 'Score: N') are substituted, keeping the real token counts."""

    def __init__(self, real: GenerationBackend):
        self.real = real
        self.name = real.name
        self.closed = False

    def generate(self, requests, sampling, *, progress=True):
        out = self.real.generate(requests, sampling, progress=progress)
        for request, completion in zip(requests, out):
            if is_self_instruct(request):
                completion.texts = [scripted_text(request, i) for i in range(len(completion.texts))]
                completion.finish_reasons = ["stop"] * len(completion.texts)
            elif is_judge(request):
                length = len(re.search(r"<response>(.*)</response>", request[0]["content"], re.S).group(1))
                completion.texts = [f"{t[:40]}\nScore: {(length + i) % 5 + 1}" for i, t in enumerate(completion.texts)]
        return out

    def close(self):
        self.closed = True
        self.real.close()


def shimmed_transformers(path, backend_config, dtype):
    from srlm.generation.factory import open_backend

    return QualityShim(open_backend(path, backend_config, dtype=dtype))


def tiny_seed_tables(store: str) -> tuple[str, str]:
    from srlm.judging.template import load_template, render_judge_prompt

    ift = [
        {"example_id": f"ift-{i}", "kind": "ift", "prompt_messages": [{"role": "user", "content": q}], "completion": a}
        for i, (q, a) in enumerate(
            [
                ("What is the capital of France?", "Paris."),
                ("Name a primary colour.", "Red."),
                ("How many legs does a spider have?", "Eight."),
                ("Write a greeting.", "Hello there!"),
                ("What is 2 + 2?", "4."),
                ("Give a synonym for happy.", "Joyful."),
            ]
        )
    ]
    template = load_template("additive_5pt")
    eft = [
        {
            "example_id": f"eft-{i}",
            "kind": "eft",
            "prompt_messages": [{"role": "user", "content": render_judge_prompt(template, "What is 2 + 2?", answer)}],
            "completion": f"Short justification.\nScore: {score}",
            "score": float(score),
        }
        for i, (answer, score) in enumerate([("4.", 5), ("5.", 1)])
    ]
    ift_uri, eft_uri = join_uri(store, "data", "ift"), join_uri(store, "data", "eft")
    artifacts.write_table(ift_uri, ift, "sft_examples")
    artifacts.write_table(eft_uri, eft, "sft_examples")
    return ift_uri, eft_uri


def e2e_ctx(store: str, tiny_model_dir: Path, tmp_path: Path) -> StepContext:
    ift, eft = tiny_seed_tables(store)
    overrides = {
        "store.uri": store,
        "run.name": "e2e",
        "run.iterations": 1,
        "model.base": str(tiny_model_dir),
        "model.cache_dir": str(tmp_path / "model-cache"),
        "model.dtype": "float32",
        "seed_data.ift_uri": ift,
        "seed_data.eft_uri": eft,
        "backend.backend": "transformers",
        "backend.max_model_len": 1024,
        "prompts.num_prompts": 4,
        "prompts.max_new_tokens": 8,
        "generate.num_candidates": 3,
        "generate.max_new_tokens": 12,
        "generate.shard_size": 2,
        # A random-weight model never ends a response: every candidate hits max_new_tokens, and with drop_truncated
        # on (the default) none could be chosen.
        "generate.drop_truncated": False,
        "judge.num_samples": 2,
        "judge.max_new_tokens": 8,
        "sft.batch_size": 4,
        "sft.per_device_batch_size": 2,
        "sft.max_length": 768,
        "dpo.batch_size": 4,
        "dpo.per_device_batch_size": 2,
        "dpo.max_length": 256,
    }
    return StepContext.from_config(load_config(None, overrides), echo=lambda _: None, progress=False)


def check_finished_run(ctx: StepContext, result) -> None:
    m0, m1 = get_checkpoint(ctx.layout, "M0"), get_checkpoint(ctx.layout, "M1")
    assert (m0.training, m0.iteration, m0.parent_id) == ("sft", 0, None)
    assert (m1.training, m1.iteration, m1.parent_id) == ("dpo", 1, "M0")
    assert result.final_checkpoint_uri == m1.uri
    assert artifacts.read_table(ctx.layout.pairs(1)).num_rows > 0
    assert artifacts.read_table(ctx.layout.candidates(1)).num_rows == 4 * 3
    text = artifacts.read_text(join_uri(ctx.layout.summary(1, "judge"), "summary.txt"))
    assert "parse rate" in text and "100.0%" in text
    assert (Path(artifacts.fetch_directory(m1.uri)) / "config.json").is_file()


@pytest.mark.slow
def test_run_end_to_end_on_the_tiny_model_local_store(tmp_store, tiny_model_dir, tmp_path):
    ctx = e2e_ctx(tmp_store, tiny_model_dir, tmp_path)
    result = run(ctx, opener=shimmed_transformers)
    check_finished_run(ctx, result)
    assert result.iterations[0].backend_starts == 1
    # Rerun: everything is committed and registered; nothing is opened or trained again.
    again = run(ctx, opener=shimmed_transformers)
    assert again.seed.reused and again.iterations[0].backend_starts == 0
    assert again.final_checkpoint_uri == result.final_checkpoint_uri


@pytest.mark.slow
def test_iterate_end_to_end_on_the_tiny_model_s3_store(s3_store, tiny_model_dir, tmp_path, monkeypatch):
    """M0 (the tiny model itself) lives in S3: the backend fetches it, DPO reads S3 pairs and writes M1 to S3."""
    monkeypatch.setenv("SRLM_CACHE_DIR", str(tmp_path / "srlm-cache"))
    ctx = e2e_ctx(s3_store, tiny_model_dir, tmp_path)
    m0_uri = ctx.layout.model("M0")
    artifacts.write_directory(m0_uri, tiny_model_dir)
    register_checkpoint(ctx.layout, "M0", 0, m0_uri, None, "sft", 0, True, None, {})
    result = iterate(ctx, opener=shimmed_transformers)
    m1 = get_checkpoint(ctx.layout, "M1")
    assert result.checkpoint_uri == m1.uri and m1.uri.startswith("s3://") and m1.parent_id == "M0"
    assert artifacts.read_table(ctx.layout.pairs(1)).num_rows > 0
    fetched = artifacts.fetch_directory(m1.uri, cache_dir=tmp_path / "fetch")
    assert (Path(fetched) / "config.json").is_file()
