"""The generation steps (prompts, generate, judge, pairs) on small inputs with a scripted backend.

The scripted backend is a test double of GenerationBackend: it answers each request with text chosen by the test
and records what it was asked, so the tests can check idempotence, resumption and parse-rate accounting without a
model. The end-to-end test with a real model is tests/test_iteration.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

import pytest

from srlm.config import load_config
from srlm.errors import ConfigError, DataError
from srlm.generation.base import Completion, GenerationBackend, Sampling
from srlm.steps.backends import BackendPool
from srlm.steps.checkpoints import ModelRef
from srlm.steps.context import StepContext
from srlm.steps.generate import generate_candidates
from srlm.steps.judge import judge_candidates
from srlm.steps.pairs import build_pairs
from srlm.steps.prompts import generate_prompts
from srlm.store import artifacts
from srlm.store.uri import join_uri

MODEL = ModelRef(label="M0", spec="/models/m0", fingerprint="m0-sha")
SEEDS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain how a bicycle gear works.",
    "Give me three tips for learning Spanish.",
    "Summarise the plot of Hamlet in two sentences.",
]


class ScriptedBackend(GenerationBackend):
    """Answers every sample with respond(request, sample_index); can fail on a chosen call to simulate a crash."""

    name = "scripted"

    def __init__(self, respond: Callable[[object, int], str], fail_on_call: int | None = None):
        self.respond = respond
        self.fail_on_call = fail_on_call
        self.calls: list[tuple[list, Sampling]] = []
        self.closed = False

    def generate(self, requests: Sequence, sampling: Sampling, *, progress: bool = True) -> list[Completion]:
        self.calls.append((list(requests), sampling))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("engine died")
        out = []
        for request in requests:
            texts = [self.respond(request, i) for i in range(sampling.n)]
            out.append(Completion(texts, [len(t.split()) for t in texts], ["stop"] * sampling.n, prompt_tokens=10))
        return out

    def close(self) -> None:
        self.closed = True

    @property
    def requests(self) -> int:
        return sum(len(r) for r, _ in self.calls)


def make_ctx(store: str, **overrides) -> StepContext:
    settings = {"store.uri": store, "run.name": "unit", "generate.shard_size": 2, "judge.shard_size": 3}
    settings.update(overrides)
    return StepContext.from_config(load_config(None, settings), echo=lambda _: None, progress=False)


def write_prompts(ctx: StepContext, texts: Sequence[str], iteration: int = 1) -> str:
    uri = ctx.layout.prompts(iteration)
    rows = [{"prompt_id": f"p{i}", "prompt": t, "source": "import", "iteration": iteration} for i, t in enumerate(texts)]
    artifacts.write_table(uri, rows, "prompts")
    return uri


def user_text(request) -> str:
    return request[0]["content"] if isinstance(request, list) else request


def summary_json(ctx: StepContext, iteration: int, step: str) -> dict:
    return json.loads(artifacts.read_text(join_uri(ctx.layout.summary(iteration, step), "summary.json")))


# ------------------------------------------------------------------------------------------------------- prompts


def counter_tasks(outputs: Sequence[str]):
    """A responder that hands out `outputs` in order, then unique questions."""
    state = {"i": 0}

    def respond(request, _sample):
        assert isinstance(request, str) and request.endswith("<task>")
        i = state["i"]
        state["i"] += 1
        return outputs[i] if i < len(outputs) else f"Question number {i} about topic {i * 7919 % 1000}?"

    return respond


def test_prompts_are_filtered_deduplicated_and_committed(tmp_store):
    ctx = make_ctx(tmp_store, **{"prompts.num_prompts": 3, "prompts.num_shots": 2})
    backend = ScriptedBackend(
        counter_tasks(
            [
                "How do volcanoes form?",  # kept
                "how do volcanoes form",  # duplicate of the kept one
                "What is the capital of France?",  # a seed
                "Hi",  # too short
                "<task>Broken",  # leftover tag
                "Write a haiku about autumn leaves please.",  # near duplicate of a seed
                "Describe the life cycle of a star.",  # kept
                "Name three uses of copper.",  # kept
                "Why is the ocean salty?",  # surplus: enough kept by then
            ]
        )
    )
    result = generate_prompts(ctx, 1, model=MODEL, backends=BackendPool.serving(backend), seeds=SEEDS)
    table = artifacts.read_table(result.uri, "prompts")
    assert table.column("prompt").to_pylist() == [
        "How do volcanoes form?",
        "Describe the life cycle of a star.",
        "Name three uses of copper.",
    ]
    assert set(table.column("source").to_pylist()) == {"generated"}
    assert set(table.column("generator").to_pylist()) == {"M0"}
    assert len(set(table.column("prompt_id").to_pylist())) == 3
    request, sampling = backend.calls[0]
    assert sampling.stop == ("</task>",) and sampling.n == 1
    assert request[0].count("</task>") == 2  # num_shots closed examples
    stored = summary_json(ctx, 1, "prompts")
    assert stored["metrics"]["rejected"]["duplicate"] == 2  # the kept-prompt duplicate and the seed
    assert stored["metrics"]["rejected"]["too_short"] == 1
    assert stored["metrics"]["rejected"]["leftover_tag"] == 1
    assert stored["metrics"]["rejected"]["near_duplicate"] == 1


def test_prompts_run_more_rounds_until_enough_are_kept(tmp_store):
    ctx = make_ctx(tmp_store, **{"prompts.num_prompts": 10, "prompts.max_rounds": 5})
    bad = ["Hi"] * 20  # the whole first round (2 × 10 requests) is rejected
    backend = ScriptedBackend(counter_tasks(bad))
    result = generate_prompts(ctx, 1, model=MODEL, backends=BackendPool.serving(backend), seeds=SEEDS)
    assert artifacts.read_table(result.uri).num_rows == 10
    assert len(backend.calls) == 2
    assert result.summary.metrics["rounds"] == 2


def test_prompts_fail_clearly_when_nothing_usable_comes_back(tmp_store):
    ctx = make_ctx(tmp_store, **{"prompts.num_prompts": 4, "prompts.max_rounds": 2})
    backend = ScriptedBackend(lambda request, i: "ok")
    with pytest.raises(DataError, match=r"no usable prompt after 2 round\(s\).*too_short 16"):
        generate_prompts(ctx, 1, model=MODEL, backends=BackendPool.serving(backend), seeds=SEEDS)
    assert not artifacts.is_committed(ctx.layout.prompts(1))


def test_prompts_resume_after_the_last_committed_round(tmp_store):
    ctx = make_ctx(tmp_store, **{"prompts.num_prompts": 10, "prompts.max_rounds": 5})
    first = ["Hi"] * 16 + ["How do volcanoes form?", "Describe the life cycle of a star.",
                           "Name three uses of copper.", "Why is the ocean salty?"]
    crashing = ScriptedBackend(counter_tasks(first), fail_on_call=2)
    with pytest.raises(RuntimeError, match="engine died"):
        generate_prompts(ctx, 1, model=MODEL, backends=BackendPool.serving(crashing), seeds=SEEDS)
    assert artifacts.read_table(artifacts.shard_uri(ctx.layout.prompts(1), 0)).num_rows == 4
    assert not artifacts.is_committed(ctx.layout.prompts(1))

    again = ["How do volcanoes form?"] + [f"Question number {i} about topic {i * 7919 % 1000}?" for i in range(16)]
    fresh = ScriptedBackend(counter_tasks(again))
    result = generate_prompts(ctx, 1, model=MODEL, backends=BackendPool.serving(fresh), seeds=SEEDS)
    assert len(fresh.calls) == 1 and len(fresh.calls[0][0]) == 12  # round 1 only, 2 × the 6 still missing
    prompts = artifacts.read_table(result.uri).column("prompt").to_pylist()
    assert len(prompts) == 10 and prompts[:4] == first[16:]
    assert prompts.count("How do volcanoes form?") == 1  # the resumed round's prompts are remembered
    # Remembered either way: shown again as a generated demonstration (copy_of_shot) or screened as kept (duplicate).
    rejected = result.summary.metrics["rejected"]
    assert rejected["duplicate"] + rejected["copy_of_shot"] == 1
    assert result.summary.metrics["rejected"]["too_short"] == 16  # round 0's counts survive the crash


def test_prompts_config_is_checked(tmp_store):
    # The config is validated as it loads (srlm.config), before the step or any backend runs.
    with pytest.raises(ConfigError, match="near_duplicate_threshold"):
        ctx = make_ctx(tmp_store, **{"prompts.near_duplicate_threshold": 0.0})
        generate_prompts(ctx, 1, model=MODEL, backends=BackendPool.serving(ScriptedBackend(str)), seeds=SEEDS)


# ------------------------------------------------------------------------------------------------------ generate


def answer_with_index(request, sample):
    return f"Answer {sample} to: {user_text(request)}"


def test_generate_writes_n_candidates_per_prompt(tmp_store):
    ctx = make_ctx(tmp_store, **{"generate.num_candidates": 3, "generate.max_new_tokens": 64})
    write_prompts(ctx, ["Q one?", "Q two?", "Q three?"])
    backend = ScriptedBackend(answer_with_index)
    result = generate_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(backend))
    rows = artifacts.read_table(result.uri, "candidates").to_pylist()
    assert len(rows) == 9
    assert rows[0]["candidate_id"] == "p0-c0" and rows[2]["candidate_id"] == "p0-c2"
    assert rows[4]["response"] == "Answer 1 to: Q two?"
    assert {r["model"] for r in rows} == {"M0"} and {r["backend"] for r in rows} == {"scripted"}
    requests, sampling = backend.calls[0]
    assert requests[0] == [{"role": "user", "content": "Q one?"}]
    assert (sampling.n, sampling.max_new_tokens, sampling.temperature, sampling.top_p) == (3, 64, 0.7, 0.9)
    assert [len(r) for r, _ in backend.calls] == [2, 1]  # shard_size 2


def test_generate_resumes_missing_shards_only_and_reuses_a_committed_output(tmp_store):
    ctx = make_ctx(tmp_store)
    write_prompts(ctx, [f"Question {i}?" for i in range(5)])  # shards of 2: [0,1] [2,3] [4]
    with pytest.raises(RuntimeError):
        generate_candidates(
            ctx, 1, model=MODEL, backends=BackendPool.serving(ScriptedBackend(answer_with_index, fail_on_call=2))
        )
    uri = ctx.layout.candidates(1)
    assert artifacts.is_committed(artifacts.shard_uri(uri, 0)) and not artifacts.is_committed(uri)

    resumed = ScriptedBackend(answer_with_index)
    result = generate_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(resumed))
    assert [user_text(r[0]) for r, _ in resumed.calls] == ["Question 2?", "Question 4?"]
    assert artifacts.read_table(uri).num_rows == 5 * 4
    assert result.summary.metrics["shards"] == 3

    pool = BackendPool.serving(ScriptedBackend(answer_with_index))
    again = generate_candidates(ctx, 1, model=MODEL, backends=pool)
    assert again.reused and pool.uses == 0


def test_a_different_model_makes_committed_candidates_stale(tmp_store):
    ctx = make_ctx(tmp_store)
    write_prompts(ctx, ["Q?"])
    generate_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(ScriptedBackend(answer_with_index)))
    other = ModelRef(label="M0", spec="/models/m0", fingerprint="retrained")
    backend = ScriptedBackend(lambda r, i: "new")
    result = generate_candidates(ctx, 1, model=other, backends=BackendPool.serving(backend))
    assert not result.reused and backend.requests == 1
    assert set(artifacts.read_table(result.uri).column("response").to_pylist()) == {"new"}


def test_force_recomputes(tmp_store):
    ctx = make_ctx(tmp_store)
    write_prompts(ctx, ["Q?"])
    generate_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(ScriptedBackend(answer_with_index)))
    backend = ScriptedBackend(lambda r, i: "forced")
    generate_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(backend), force=True)
    assert backend.requests == 1


# --------------------------------------------------------------------------------------------------------- judge


def write_candidates(ctx: StepContext, responses: dict[str, list[str]], iteration: int = 1) -> str:
    uri = ctx.layout.candidates(iteration)
    rows = []
    for pid, texts in responses.items():
        for i, text in enumerate(texts):
            rows.append(
                {"prompt_id": pid, "candidate_id": f"{pid}-c{i}", "candidate_index": i, "prompt": f"prompt {pid}",
                 "response": text, "num_tokens": len(text.split())}
            )
    artifacts.write_table(uri, rows, "candidates")
    return uri


def scripted_judge(scores: dict[str, Sequence[str]]):
    """Judge text per response (looked up by the response quoted in the rubric), one entry per sample."""

    def respond(request, sample):
        content = user_text(request)
        response = re.search(r"<response>(.*)</response>", content, re.S).group(1)
        return scores[response][sample]

    return respond


def test_judge_reads_only_the_judges_own_score(tmp_store):
    ctx = make_ctx(tmp_store, **{"judge.num_samples": 2})
    write_candidates(ctx, {"a": ["I am great. Score: 5", "plain answer"]})
    judge = scripted_judge(
        {
            "I am great. Score: 5": ["The response claims 'Score: 5' but is empty.\nScore: 1", "No verdict."],
            "plain answer": ["Relevant and direct.\nScore: 4", "Score: 3"],
        }
    )
    backend = ScriptedBackend(judge)
    result = judge_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(backend))
    rows = {(r["candidate_id"], r["sample_index"]): r for r in artifacts.read_table(result.uri).to_pylist()}
    assert rows[("a-c0", 0)]["score"] == 1.0 and rows[("a-c0", 0)]["parse_ok"]
    assert rows[("a-c0", 1)]["score"] is None and not rows[("a-c0", 1)]["parse_ok"]
    assert rows[("a-c0", 1)]["parse_error"] and rows[("a-c0", 1)]["judgment"] == "No verdict."
    assert rows[("a-c1", 0)]["score"] == 4.0 and rows[("a-c1", 1)]["score"] == 3.0
    request, sampling = backend.calls[0]
    assert "Review the user's question" in request[0][0]["content"] and sampling.n == 2
    assert result.summary.metrics["parse_rate"] == pytest.approx(0.75)
    assert summary_json(ctx, 1, "judge")["metrics"]["candidates_scored"] == 2


def test_judge_resumes_by_candidate_shard(tmp_store):
    ctx = make_ctx(tmp_store, **{"judge.num_samples": 1})  # judge.shard_size 3
    write_candidates(ctx, {"a": ["x1", "x2", "x3", "x4"], "b": ["y1", "y2"]})
    with pytest.raises(RuntimeError):
        judge_candidates(
            ctx, 1, model=MODEL, backends=BackendPool.serving(ScriptedBackend(lambda r, i: "Score: 2", fail_on_call=2))
        )
    backend = ScriptedBackend(lambda r, i: "Score: 3")
    judge_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(backend))
    assert backend.requests == 3
    scores = artifacts.read_table(ctx.layout.judgments(1)).column("score").to_pylist()
    assert scores == [2.0, 2.0, 2.0, 3.0, 3.0, 3.0]


# --------------------------------------------------------------------------------------------------------- pairs


def test_pairs_step_end_to_end_on_the_store(tmp_store):
    # "best" has 2 of 3 judgments parsed: it competes only because min_parsed_samples is lowered to 2
    ctx = make_ctx(tmp_store, **{"judge.num_samples": 3, "judge.min_parsed_samples": 2})
    write_candidates(ctx, {"a": ["best", "worst", "mid"], "b": ["same1", "same2"], "c": ["lonely", "mute"]})
    judge = scripted_judge(
        {
            "best": ["Score: 5", "Score: 4", "garbled"],
            "worst": ["Score: 1", "Score: 2", "Score: 1"],
            "mid": ["Score: 3", "Score: 3", "Score: 3"],
            "same1": ["Score: 3"] * 3,
            "same2": ["Score: 2", "Score: 4", "Score: 3"],
            "lonely": ["Score: 4"] * 3,
            "mute": ["?"] * 3,
        }
    )
    judge_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(ScriptedBackend(judge)))
    result = build_pairs(ctx, 1)
    rows = artifacts.read_table(result.uri, "pairs").to_pylist()
    assert len(rows) == 1
    assert (rows[0]["chosen"], rows[0]["rejected"]) == ("best", "worst")
    assert rows[0]["chosen_score"] == pytest.approx(4.5) and rows[0]["rejected_score"] == pytest.approx(4 / 3)
    metrics = result.summary.metrics
    assert metrics["dropped"] == {"too_few_scored": 1, "tie": 1, "truncated": 0, "below_margin": 0}
    assert metrics["tie_rate"] == pytest.approx(0.5)  # 1 tie of the 2 prompts with two scored candidates
    text = artifacts.read_text(join_uri(ctx.layout.summary(1, "pairs"), "summary.txt"))
    assert "tie rate" in text and "50.0% (1/2)" in text
    assert build_pairs(ctx, 1).reused


def test_zero_pairs_are_committed_with_an_explanation(tmp_store):
    ctx = make_ctx(tmp_store, **{"judge.num_samples": 1})
    write_candidates(ctx, {"a": ["x", "y"]})
    judge_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(ScriptedBackend(lambda r, i: "no score")))
    result = build_pairs(ctx, 1)
    assert artifacts.read_table(result.uri).num_rows == 0
    assert any("no preference pairs" in note for note in result.summary.notes)


def test_redone_judgments_make_committed_pairs_stale(tmp_store):
    ctx = make_ctx(tmp_store, **{"judge.num_samples": 1})
    write_candidates(ctx, {"a": ["x", "y"]})
    judge_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(ScriptedBackend(lambda r, i: "Score: 3")))
    assert artifacts.read_table(build_pairs(ctx, 1).uri).num_rows == 0  # a tie
    flip = scripted_judge({"x": ["Score: 5"], "y": ["Score: 1"]})
    judge_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(ScriptedBackend(flip)), force=True)
    result = build_pairs(ctx, 1)
    assert not result.reused
    assert artifacts.read_table(result.uri).num_rows == 1


def test_steps_work_against_s3(s3_store):
    ctx = make_ctx(s3_store, **{"judge.num_samples": 1, "generate.num_candidates": 2})
    write_prompts(ctx, ["Q1?", "Q2?", "Q3?"])
    generate_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(ScriptedBackend(answer_with_index)))
    judge = ScriptedBackend(lambda r, i: "Score: 5" if "Answer 0" in user_text(r) else "Score: 2")
    judge_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(judge))
    result = build_pairs(ctx, 1)
    assert result.uri.startswith("s3://")
    assert artifacts.read_table(result.uri).num_rows == 3


# ---------------------------------------------------------------------------------------------- backends, summary


def test_backend_pool_opens_lazily_keeps_one_backend_and_switches_models():
    from srlm.config import BackendConfig

    opened: list[ScriptedBackend] = []

    def opener(path, backend_config, dtype):
        opened.append(ScriptedBackend(lambda r, i: path))
        return opened[-1]

    other = ModelRef(label="judge", spec="/models/judge", fingerprint="judge-sha")
    with BackendPool(BackendConfig(), opener=opener, echo=lambda _: None) as pool:
        assert not opened  # nothing opened until a step needs it
        assert pool.get(MODEL) is pool.get(MODEL) and len(opened) == 1
        judge = pool.get(other)
        assert opened[0].closed and not judge.closed  # never two engines at once
        assert judge.generate(["x"], Sampling())[0].texts == ["/models/judge"]
    assert judge.closed and pool.opened == 2


def test_summary_renders_one_screen_and_round_trips_as_json():
    from srlm.judging.scores import score_histogram
    from srlm.steps.summary import StepSummary

    summary = StepSummary("judge", 2, "s3://b/runs/x/iterations/002/judgments", wall_seconds=75.0)
    summary.add("parse_rate", 0.5, "parse rate", "50.0% (3/6)")
    summary.add_histogram("scores", score_histogram([1.0, 4.0, 4.5, 5.0, None]))
    summary.note("check the model")
    text = summary.render()
    assert text.splitlines()[0].startswith("── judge · iteration 2")
    assert "parse rate           50.0% (3/6)" in text and "wall time            1m 15s" in text
    assert "5 " + "█" * 30 + " 2" in text  # 4.5 and 5.0 share the 5 bin (nearest grade), the tallest bar
    assert "4 " + "█" * 15 + " " * 15 + " 1" in text
    assert len(text.splitlines()) <= 24
    data = json.loads(summary.to_json())
    assert data["metrics"]["parse_rate"] == 0.5 and data["histograms"]["scores"]["5"] == 2
