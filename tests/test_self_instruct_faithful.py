"""Self-instruct as the paper runs it (Yuan et al., 2024, following Self-Instruct): a fixed prompt-generation model
when one is configured, demonstrations mixing seed prompts with prompts generated earlier in the run, Self-Instruct's
filters, and screening against every earlier iteration's prompts, all through the prompts step with a scripted
backend (tests/test_steps_self_instruct.py covers the filter functions on their own)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from srlm.config import load_config
from srlm.generation.base import Completion, GenerationBackend, Sampling
from srlm.steps.backends import BackendPool, new_backend_pool
from srlm.steps.checkpoints import ModelRef
from srlm.steps.context import StepCall, StepContext
from srlm.steps.prompts import generate_prompts
from srlm.store import artifacts
from srlm.store.uri import join_uri
from srlm.training.registry import register_checkpoint

MODEL = ModelRef(label="M0", spec="/models/m0", fingerprint="m0-sha")
SEEDS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain how a bicycle gear works.",
    "Give me three tips for learning Spanish.",
    "Summarise the plot of Hamlet in two sentences.",
    "Suggest a name for a friendly robot dog.",
    "Translate 'good morning' into Italian and German.",
    "Why does bread go stale so quickly?",
    "Recommend a weekend routine for better sleep.",
    "Compare tea and coffee for a morning boost.",
]
TASK = re.compile(r"<task>(.*?)</task>", re.S)


class ScriptedBackend(GenerationBackend):
    """Answers every request with respond(request) and records the requests it was sent."""

    name = "scripted"

    def __init__(self, respond: Callable[[object], str], path: str = ""):
        self.respond = respond
        self.path = path
        self.requests: list = []
        self.closed = False

    def generate(self, requests: Sequence, sampling: Sampling, *, progress: bool = True) -> list[Completion]:
        self.requests.extend(requests)
        out = []
        for request in requests:
            texts = [self.respond(request) for _ in range(sampling.n)]
            out.append(Completion(texts, [len(t.split()) for t in texts], ["stop"] * sampling.n, prompt_tokens=10))
        return out

    def close(self) -> None:
        self.closed = True


def handing_out(outputs: Sequence[str], tag: str = "x") -> Callable[[object], str]:
    """Self-instruct completions: `outputs` in order, then distinct questions no filter drops."""
    counter = itertools.count()

    def respond(request) -> str:
        i = next(counter)
        if i < len(outputs):
            return outputs[i]
        return f"Question {tag}{i}: what is {i * 7919 % 10007} plus {i % 97}?"

    return respond


def make_ctx(store: str, echo: Callable[[str], None] | None = None, **overrides) -> StepContext:
    settings = {"store.uri": store, "run.name": "faithful", "prompts.num_prompts": 4}
    settings.update(overrides)
    return StepContext.from_config(load_config(None, settings), echo=echo or (lambda _: None), progress=False)


def run_prompts(ctx: StepContext, iteration: int, backend: ScriptedBackend, **kwargs):
    return generate_prompts(ctx, iteration, model=MODEL, backends=BackendPool.serving(backend), seeds=SEEDS, **kwargs)


def kept(ctx: StepContext, iteration: int) -> list[str]:
    return artifacts.read_table(ctx.layout.prompts(iteration), "prompts").column("prompt").to_pylist()


def summary_json(ctx: StepContext, iteration: int) -> dict:
    return json.loads(artifacts.read_text(join_uri(ctx.layout.summary(iteration, "prompts"), "summary.json")))


# ------------------------------------------------------------------------------------------------------ filters


def test_a_keyword_prompt_is_dropped_and_counted(tmp_store):
    ctx = make_ctx(tmp_store, **{"prompts.num_prompts": 2})
    backend = ScriptedBackend(
        handing_out(
            [
                "Draw a map of your neighbourhood for a visitor.",  # two of Self-Instruct's keywords
                "How do volcanoes form under the ocean?",
                "Write a program that prints the first ten primes.",  # Self-Instruct's blocked prefix
                "Describe the life cycle of a star.",
            ]
        )
    )
    result = run_prompts(ctx, 1, backend)
    assert kept(ctx, 1) == ["How do volcanoes form under the ocean?", "Describe the life cycle of a star."]
    rejected = summary_json(ctx, 1)["metrics"]["rejected"]
    assert (rejected["keyword"], rejected["blocked_prefix"]) == (1, 1)
    assert "keyword 1" in dict(result.summary.lines)["rejected"]


def test_a_prompt_of_iteration_1_is_not_accepted_in_iteration_2(tmp_store):
    # Seed-only demonstrations, so that no earlier prompt is caught as a copy of what the request showed.
    ctx = make_ctx(tmp_store, **{"prompts.num_prompts": 3, "prompts.num_generated_shots": 0})
    first = [
        "Explain how rainbows form in the sky.",
        "List three facts about the planet Mars.",
        "How do bees make honey from nectar?",
    ]
    run_prompts(ctx, 1, ScriptedBackend(handing_out(first)))
    assert kept(ctx, 1) == first

    again = [
        "Explain how rainbows form in the sky.",  # iteration 1's prompt, verbatim
        "List three fun facts about the planet Mars.",  # a near duplicate of one (ROUGE-L 0.93)
        "How do bees make honey from nectar?",
    ]
    result = run_prompts(ctx, 2, ScriptedBackend(handing_out(again, tag="y")))
    second = kept(ctx, 2)
    assert len(second) == 3 and not set(second) & set(first)
    assert not any(p.startswith("List three fun facts") for p in second)
    metrics = result.summary.metrics
    assert metrics["rejected"]["earlier_iteration"] == 3 and metrics["earlier_prompts"] == 3
    # The earlier table is an input of the step, by content.
    (earlier,) = artifacts.read_manifest(ctx.layout.prompts(2)).producer["inputs"]["earlier_prompts"]
    assert earlier == {"iteration": 1, "rows": 3, "sha256": artifacts.read_manifest(ctx.layout.prompts(1)).sha256}


def test_an_iteration_without_a_prompts_table_is_noted_not_fatal(tmp_store):
    ctx = make_ctx(tmp_store)
    result = run_prompts(ctx, 2, ScriptedBackend(handing_out([])))
    assert result.summary.metrics["earlier_prompts"] == 0
    assert any("iteration(s) 1 of the run have no committed prompts table" in note for note in result.summary.notes)


# ------------------------------------------------------------------------------------------- demonstration mix


def shots_of(request: str) -> list[str]:
    return TASK.findall(request)


def test_iteration_2_shows_iteration_1_prompts_among_its_demonstrations(tmp_store):
    ctx = make_ctx(tmp_store)
    run_prompts(ctx, 1, ScriptedBackend(handing_out([])))
    first = set(kept(ctx, 1))
    backend = ScriptedBackend(handing_out([], tag="y"))
    result = run_prompts(ctx, 2, backend)
    assert backend.requests
    for request in backend.requests:
        shots = shots_of(request)
        # The paper: 8 demonstrations, 6 seed prompts and 2 generated ones.
        assert len(shots) == 8
        assert sum(s in first for s in shots) == 2 and sum(s in SEEDS for s in shots) == 6
    assert result.summary.metrics["generated_shots"] == [2]

    # Deterministic given the run's seed: recomputing shows the model the very same requests.
    again = ScriptedBackend(handing_out([], tag="y"))
    run_prompts(ctx, 2, again, force=True)
    assert again.requests == backend.requests


def test_the_first_round_shows_seeds_and_later_rounds_add_its_own_prompts(tmp_store):
    ctx = make_ctx(tmp_store, **{"prompts.num_prompts": 10, "prompts.max_rounds": 3})
    backend = ScriptedBackend(handing_out(["Hi"] * 16))  # round 0 keeps only 4 of its 20 requests
    result = run_prompts(ctx, 1, backend)
    round0, round1 = backend.requests[:20], backend.requests[20:]
    assert all(set(shots_of(r)) <= set(SEEDS) for r in round0)
    round0_kept = set(kept(ctx, 1)[:4])
    assert all(sum(s in round0_kept for s in shots_of(r)) == 2 for r in round1)
    assert result.summary.metrics["generated_shots"] == [0, 2]


def test_the_mix_is_configurable(tmp_store):
    ctx = make_ctx(tmp_store, **{"prompts.num_generated_shots": 0})
    run_prompts(ctx, 1, ScriptedBackend(handing_out([])))
    backend = ScriptedBackend(handing_out([], tag="y"))
    run_prompts(ctx, 2, backend)
    assert all(set(shots_of(r)) <= set(SEEDS) for r in backend.requests)


# --------------------------------------------------------------------------------------------------------- reuse


def test_changed_filter_or_mix_settings_recompute_the_prompts(tmp_store):
    said: list[str] = []
    ctx = make_ctx(tmp_store, echo=said.append)
    run_prompts(ctx, 1, ScriptedBackend(handing_out([])))
    assert run_prompts(ctx, 1, ScriptedBackend(handing_out([]))).reused
    for key, value in (("prompts.blocked_keywords", "image"), ("prompts.num_generated_shots", 1)):
        said.clear()
        changed = make_ctx(tmp_store, echo=said.append, **{key: value})
        assert not run_prompts(changed, 1, ScriptedBackend(handing_out([]))).reused
        assert any(key in line and "changed" in line for line in said), said


def test_a_recomputed_earlier_iteration_recomputes_the_later_prompts(tmp_store):
    said: list[str] = []
    ctx = make_ctx(tmp_store, echo=said.append)
    run_prompts(ctx, 1, ScriptedBackend(handing_out([])))
    run_prompts(ctx, 2, ScriptedBackend(handing_out([], tag="y")))
    assert run_prompts(ctx, 2, ScriptedBackend(handing_out([], tag="y"))).reused
    run_prompts(ctx, 1, ScriptedBackend(handing_out([], tag="z")), force=True)  # other prompts in iteration 1
    said.clear()
    assert not run_prompts(ctx, 2, ScriptedBackend(handing_out([], tag="y"))).reused
    assert any("input earlier_prompts changed" in line for line in said), said


# ------------------------------------------------------------------------------------------- the fixed model


def fake_model_dir(root: Path, name: str) -> Path:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "llama", "name": name}))
    return directory


def register(ctx: StepContext, root: Path, checkpoint: str, iteration: int) -> str:
    uri = ctx.layout.model(checkpoint)
    artifacts.write_directory(uri, fake_model_dir(root, checkpoint.lower()))
    parent = f"M{iteration - 1}" if iteration else None
    register_checkpoint(
        ctx.layout, checkpoint, iteration, uri, parent, "sft" if not iteration else "dpo", 1, True, None, {}
    )
    return str(Path(artifacts.fetch_directory(uri)))


class Opened:
    """A recording opener: every backend it opens, with the model directory it was opened on."""

    def __init__(self) -> None:
        self.backends: list[ScriptedBackend] = []

    def __call__(self, path, backend_config, dtype, chat_template=None) -> ScriptedBackend:
        respond = handing_out([], tag=f"o{len(self.backends)}-")

        def answer(request):  # self-instruct requests are raw text; a candidate request is chat messages
            return respond(request) if isinstance(request, str) else "An answer."

        backend = ScriptedBackend(answer, path=str(path))
        self.backends.append(backend)
        return backend

    def self_instruct_paths(self) -> list[str]:
        return [b.path for b in self.backends if any(isinstance(r, str) for r in b.requests)]


def test_the_configured_prompt_model_generates_prompts_in_every_iteration(tmp_store, tmp_path):
    from srlm.steps import generate, prompts

    fixed = fake_model_dir(tmp_path, "llama-2-70b-chat")
    ctx = make_ctx(tmp_store, **{"prompts.model": str(fixed)})
    m0, m1 = register(ctx, tmp_path, "M0", 0), register(ctx, tmp_path, "M1", 1)
    opened = Opened()
    with new_backend_pool(ctx, opener=opened) as pool:
        prompts.run_step(ctx, StepCall(iteration=1, backends=pool))
        generate.run_step(ctx, StepCall(iteration=1, backends=pool))  # the iteration's own model answers them
        prompts.run_step(ctx, StepCall(iteration=2, backends=pool))
    assert [b.path for b in opened.backends] == [str(fixed), m0, str(fixed)]
    assert opened.self_instruct_paths() == [str(fixed), str(fixed)]  # never M0 or M1
    assert all(isinstance(r, list) for r in opened.backends[1].requests)
    for iteration in (1, 2):
        table = artifacts.read_table(ctx.layout.prompts(iteration), "prompts")
        assert set(table.column("generator").to_pylist()) == {str(fixed)}
    assert m1 not in [b.path for b in opened.backends]


def test_without_a_prompt_model_each_iteration_uses_its_own_model(tmp_store, tmp_path):
    ctx = make_ctx(tmp_store)
    m0, m1 = register(ctx, tmp_path, "M0", 0), register(ctx, tmp_path, "M1", 1)
    from srlm.steps import prompts

    opened = Opened()
    with new_backend_pool(ctx, opener=opened) as pool:
        prompts.run_step(ctx, StepCall(iteration=1, backends=pool))
        prompts.run_step(ctx, StepCall(iteration=2, backends=pool))
    assert opened.self_instruct_paths() == [m0, m1]
    assert set(artifacts.read_table(ctx.layout.prompts(2), "prompts").column("generator").to_pylist()) == {"M1"}


def test_an_orchestrated_prompts_task_uses_the_configured_model(tmp_store, tmp_path, monkeypatch):
    from srlm.orchestration.spec import StepSpec
    from srlm.orchestration.task import run_step

    fixed = fake_model_dir(tmp_path, "llama-2-70b-chat")
    ctx = make_ctx(tmp_store, **{"prompts.model": str(fixed)})
    register(ctx, tmp_path, "M0", 0)
    m1 = register(ctx, tmp_path, "M1", 1)
    opened = Opened()
    monkeypatch.setattr("srlm.steps.backends.open_generation_backend", opened)
    outputs = run_step(StepSpec(step="prompts", config=ctx.config.to_dict(), iteration=2, model="M1"))
    assert outputs["uri"] == ctx.layout.prompts(2)
    assert [b.path for b in opened.backends] == [str(fixed)] and m1 != str(fixed)
