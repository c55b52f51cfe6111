"""The verdict that ends `srlm run` (srlm.steps.verdict): M_t vs M_(t-1) head to head on held-out prompts,
self-judged by its rubric (or pairwise in both orders), recorded; monitors recorded; report written; one line; a rerun reuses. Fast: a scripted
backend and a stand-in training job; slow: the tiny model end to end."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import pytest

from srlm.config import load_config
from srlm.data.seed_data import seed_prompts
from srlm.errors import ConfigError
from srlm.generation.base import Completion, GenerationBackend
from srlm.steps.context import StepContext
from srlm.steps.iterate import run
from srlm.steps.verdict import held_out_prompts, verdict_prompts_uri
from srlm.store import artifacts
from tests.test_iteration import (  # noqa: F401  (fake_training is a fixture)
    e2e_ctx,
    fake_model_dir,
    fake_training,
    scripted_opener,
)

PAIRWISE_MARK = "You are an impartial judge"
RUBRIC_MARK = "using the additive 5-point"
VERDICT_LINE = re.compile(
    r"^== verdict: M1 vs M0 \(self-judged by M1, (?:by its judge's rubric|pairwise, both orders), (\d+) prompts\): "
    r"M1 wins ([\d.]+)%, loses ([\d.]+)%, ties ([\d.]+)% — report: (\S+)$"
)


def prefers_m1(instruction: str) -> bool:
    """The scripted judge's taste: M1's answer on 'even' prompts; on the others it always says A (position bias)
    when comparing, and scores both answers the same when scoring."""
    return hashlib.sha256(instruction.encode()).digest()[0] % 2 == 0


class VerdictBackend(GenerationBackend):
    """Serves one model: answers name the model (its directory's config.json), pairwise judgments and rubric
    scores follow prefers_m1. Counts the backends opened, so a rerun can show it opens none."""

    name = "scripted-verdict"
    opened: list[str] = []
    backends: list[str] = []  # backend.backend of the context each was opened with

    def __init__(self, path: str, backend: str = "auto"):
        self.model = json.loads((Path(path) / "config.json").read_text())["name"].split("-")[0]
        VerdictBackend.opened.append(self.model)
        VerdictBackend.backends.append(backend)

    def generate(self, requests, sampling, *, progress=True):
        texts = []
        for request in requests:
            content = request[0]["content"]
            if PAIRWISE_MARK in content:
                instruction = re.search(r"\[User instruction\]\n(.*)\n\[End of user instruction\]", content, re.S).group(1)
                a = re.search(r"\[Response A\]\n(.*)\n\[End of response A\]", content, re.S).group(1)
                winner = ("A" if a.startswith("M1") else "B") if prefers_m1(instruction) else "A"
                texts.append([f"Compared the two.\nWinner: {winner}"] * sampling.n)
            elif RUBRIC_MARK in content:
                instruction = re.search(r"\nUser: (.*)\n<response>", content, re.S).group(1)
                response = re.search(r"<response>(.*)</response>", content, re.S).group(1)
                score = 4 if prefers_m1(instruction) and response.startswith("M1") else 2
                texts.append([f"Relevant and partly useful.\nScore: {score}"] * sampling.n)
            else:
                texts.append([f"{self.model} answers: {content[:30]}"] * sampling.n)
        return [Completion(t, [len(x.split()) for x in t], ["stop"] * len(t)) for t in texts]

    def close(self) -> None:
        pass


@pytest.fixture
def verdict_backends(monkeypatch, tmp_path):
    """The head-to-head opens its models through use_cases.open_model_backend: serve them with VerdictBackend."""
    from srlm.evaluation import use_cases

    VerdictBackend.opened, VerdictBackend.backends = [], []
    monkeypatch.setenv("SRLM_CACHE_DIR", str(tmp_path / "srlm-cache"))  # the judgment cache
    monkeypatch.setattr(
        use_cases,
        "open_model_backend",
        lambda ctx, model: VerdictBackend(use_cases.local_model_path_of(ctx, model), ctx.config.backend.backend),
    )
    return VerdictBackend.opened


def verdict_ctx(store: str, tmp_path: Path, lines: list[str], **overrides) -> StepContext:
    settings = {
        "store.uri": store,
        "run.name": "verdict",
        "run.iterations": 1,
        "model.base": str(fake_model_dir(tmp_path, "base")),
        "prompts.num_prompts": 4,
        "generate.num_candidates": 3,
        "judge.num_samples": 2,
        "seed_data.max_ift_examples": 8,
        "seed_data.max_eft_examples": 6,
        "verdict.enabled": True,
        "verdict.num_prompts": 12,
    }
    settings.update(overrides)
    return StepContext.from_config(load_config(None, settings), echo=lines.append, progress=False)


@pytest.mark.parametrize("comparison", ["rubric", "pairwise"])
def test_run_ends_with_the_verdict_report_and_a_rerun_reuses(
    tmp_store, tmp_path, fake_training, verdict_backends, comparison  # noqa: F811
):
    lines: list[str] = []
    ctx = verdict_ctx(tmp_store, tmp_path, lines, **{"verdict.comparison": comparison})
    result = run(ctx, opener=scripted_opener)

    # The prompts: held out from everything the run trained on, the first verdict.num_prompts of them.
    prompts = artifacts.read_table(verdict_prompts_uri(ctx, 1), "prompts").column("prompt").to_pylist()
    assert len(prompts) == 12
    trained = [m[0]["content"] for m in artifacts.read_table(ctx.layout.seed_ift).column("prompt_messages").to_pylist()]
    generated = artifacts.read_table(ctx.layout.prompts(1)).column("prompt").to_pylist()
    assert not set(prompts) & (set(trained) | set(generated))

    # The line: the last thing the run says, with the shares the scripted judge implies (rubric: equal scores are a
    # tie; pairwise, both orders: a position-biased "A, A" is a tie).
    match = VERDICT_LINE.match(lines[-1])
    assert match, lines[-1]
    assert ("by its judge's rubric" in lines[-1]) == (comparison == "rubric")
    n, wins, losses, ties, report = match.groups()
    expected_wins = sum(prefers_m1(p) for p in prompts)
    assert int(n) == 12
    assert float(wins) == pytest.approx(round(100 * expected_wins / 12, 1))
    assert float(losses) == 0.0 and float(ties) == pytest.approx(round(100 * (12 - expected_wins) / 12, 1))
    assert 0 < expected_wins < 12  # the test data exercises both wins and ties
    assert Path(report).name == "report.html" and Path(report).is_file()
    assert any("monitors:" in line for line in lines[-4:])
    assert result.verdict is not None and result.verdict.judge == "self" and not result.verdict.reused
    assert verdict_backends == ["M0", "M1"]  # M0 answers first and closes; M1 answers, then judges

    # Recorded where `srlm eval head2head --run R --checkpoint M1` records, and the report shows the run.
    h2h = artifacts.read_table(ctx.layout.eval_result("M1", "head2head", "v1"), "eval_results")
    assert {r["metric"]: r["value"] for r in h2h.to_pylist()}["a_win_pct"] == pytest.approx(100 * expected_wins / 12)
    assert artifacts.is_committed(ctx.layout.eval_result("M0", "monitors", "v1"))
    assert artifacts.is_committed(ctx.layout.report)
    # The rubric's judgments and scores stay in the annotations (judge.num_samples = 2 per response).
    raw = [json.loads(r) for r in artifacts.read_table(result.verdict.annotations_uri).column("raw_judgments_json").to_pylist()]
    if comparison == "rubric":
        assert all(len(r["rubric"]["output_1"]["scores"]) == 2 and r["rubric"]["output_1"]["mean"] == 2.0 for r in raw)
    else:
        assert not any("rubric" in r for r in raw)

    # A rerun: every step and the head-to-head are reused; no model is opened; the same line.
    lines.clear()
    again = run(ctx, opener=scripted_opener)
    assert verdict_backends == ["M0", "M1"]
    assert again.verdict.reused and lines[-1] == VERDICT_LINE.match(lines[-1]).string
    assert VERDICT_LINE.match(lines[-1]).groups()[:4] == (n, wins, losses, ties)


def test_verdict_off_by_default_and_skipped_without_an_iteration(tmp_store, tmp_path, fake_training, verdict_backends):  # noqa: F811
    lines: list[str] = []
    result = run(verdict_ctx(tmp_store, tmp_path, lines, **{"verdict.enabled": False}), opener=scripted_opener)
    assert result.verdict is None and not any(line.startswith("== verdict") for line in lines)
    assert load_config(None, {}).verdict.enabled is False

    lines.clear()
    result = run(verdict_ctx(tmp_store, tmp_path, lines, **{"run.name": "seed-only", "run.iterations": 0}))
    assert result.verdict is None and verdict_backends == []
    assert any(line.startswith("== verdict: skipped: no iteration ran") for line in lines)


def test_held_out_prompts_exclude_seed_sft_and_iteration_prompts(tmp_store, tmp_path):
    from srlm.data.seed_data import shipped_ift_table

    ctx = verdict_ctx(tmp_store, tmp_path, [])
    pool = seed_prompts()
    # Seed IFT: the first 3 shipped rows; the EFT table: a judge prompt embedding the 4th; iteration 1: the 5th.
    artifacts.write_table(ctx.layout.seed_ift, shipped_ift_table().slice(0, 3), "sft_examples")
    from srlm.judging.template import load_template, render_judge_prompt

    eft = [{"example_id": "e", "kind": "eft", "source": "t", "score": 3.0, "completion": "Score: 3",
            "prompt_messages": [{"role": "user", "content": render_judge_prompt(load_template(), pool[3], "x")}]}]
    artifacts.write_table(ctx.layout.seed_eft, eft, "sft_examples")
    artifacts.write_table(
        ctx.layout.prompts(1),
        [{"prompt_id": "p", "prompt": pool[4], "source": "generated", "iteration": 1, "generator": "M0"}],
        "prompts",
    )
    held = held_out_prompts(ctx, 1)
    assert held[:3] == pool[5:8] and not set(held) & set(pool[:5])
    assert held_out_prompts(ctx, 0)[0] == pool[4]  # iteration 1's prompts do not count before iteration 1


def test_no_held_out_prompt_is_one_clear_error(tmp_store, tmp_path, monkeypatch):
    from srlm.data.seed_data import shipped_ift_table
    from srlm.steps.verdict import commit_held_out_prompts

    ctx = verdict_ctx(tmp_store, tmp_path, [])
    artifacts.write_table(ctx.layout.seed_ift, shipped_ift_table(), "sft_examples")  # trained on all of them
    with pytest.raises(ConfigError, match="verdict.prompts"):
        commit_held_out_prompts(ctx, 1)


@pytest.mark.slow
def test_run_on_the_tiny_model_ends_with_the_verdict(tmp_store, tiny_model_dir, tmp_path, monkeypatch):
    """Real transformers backend, real TRL training: the random-weight judge parses nothing, so every prompt ties."""
    from tests.test_iteration import shimmed_transformers

    monkeypatch.setenv("SRLM_CACHE_DIR", str(tmp_path / "srlm-cache"))
    lines: list[str] = []
    ctx = dataclasses.replace(e2e_ctx(tmp_store, tiny_model_dir, tmp_path), echo=lines.append)
    ctx.config.verdict.enabled, ctx.config.verdict.num_prompts = True, 4
    # A random-weight model never ends a 12-token answer: let truncated candidates be chosen, or no pair forms.
    ctx.config.generate.drop_truncated = False
    result = run(ctx, opener=shimmed_transformers)
    match = VERDICT_LINE.match(lines[-1])
    assert match and match.group(1) == "4", lines[-4:]
    assert Path(match.group(5)).is_file() and result.verdict.n == 4
    lines.clear()
    again = run(ctx, opener=shimmed_transformers)
    assert again.verdict.reused and VERDICT_LINE.match(lines[-1]).groups()[:4] == match.groups()[:4]



def test_verdict_on_named_prompts_with_its_own_backend(tmp_store, tmp_path, fake_training, verdict_backends):  # noqa: F811
    prompts = ["Name a colour.", "Count to three.", "Say hello.", "Spell cat.", "Add 1 and 1."]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts))
    lines: list[str] = []
    overrides = {"verdict.prompts": str(tmp_path / "prompts.txt"), "verdict.num_prompts": 3,
                 "verdict.backend": "transformers"}
    ctx = verdict_ctx(tmp_store, tmp_path, lines, **overrides)
    result = run(ctx, opener=scripted_opener)
    assert result.verdict.n == 3 and VERDICT_LINE.match(lines[-1]).group(1) == "3"
    annotations = artifacts.read_table(result.verdict.annotations_uri, "annotations")
    assert annotations.column("instruction").to_pylist() == prompts[:3]
    assert not artifacts.is_committed(verdict_prompts_uri(ctx, 1))  # nothing held out needed
    # The verdict's engines use verdict.backend; the run's own backend setting is untouched.
    assert VerdictBackend.backends == ["transformers", "transformers"] and ctx.config.backend.backend == "auto"
