"""The judge-health gate between pairs and DPO: its metrics, the one-line stop of `srlm iterate` on a collapsed
judge, --accept-judge-warnings, the committed result and its reuse (scripted backend, stand-in training job)."""

from __future__ import annotations

import math
import re

import pyarrow as pa
import pytest

from srlm.cli.main import main
from srlm.config import load_config
from srlm.errors import JudgeHealthError
from srlm.judging.health import assess, health_metrics, score_entropy
from srlm.steps.judge_health import committed_health, read_report
from srlm.steps.registry import ITERATION_STEPS, step
from srlm.store import artifacts
from srlm.store.schemas import schema
from srlm.training.registry import get_checkpoint
from tests.test_iteration import (  # noqa: F401  (fake_training is a fixture)
    ScriptedBackend,
    fake_training,
    is_judge,
    make_ctx,
    register_m0,
)


@pytest.fixture
def jobs(fake_training):  # noqa: F811  (tests.test_iteration's stand-in training job: the jobs it ran)
    return fake_training


RUN = ["--run", "it", "--no-progress", "--set", "prompts.num_prompts=4", "--set", "generate.num_candidates=4",
       "--set", "judge.num_samples=3"]


def judged(scores_by_prompt: dict[str, list[list[float | None]]]) -> pa.Table:
    """A judgments table: per prompt, per candidate, its judgment scores (None: unparsed)."""
    rows = []
    for prompt_id, candidates in scores_by_prompt.items():
        for c, samples in enumerate(candidates):
            for s, score in enumerate(samples):
                rows.append({"prompt_id": prompt_id, "candidate_id": f"{prompt_id}-{c}", "sample_index": s,
                             "judgment": f"Score: {score}", "score": score, "parse_ok": score is not None,
                             "parse_error": None if score is not None else "no score", "judge_model": "M0"})
    return pa.Table.from_pylist(rows, schema=schema("judgments"))


def paired(lengths: list[tuple[int, int]]) -> pa.Table:
    rows = [{"prompt_id": f"p{i}", "prompt": "q", "chosen": "c" * a, "rejected": "r" * b,
             "chosen_candidate_id": f"p{i}-0", "rejected_candidate_id": f"p{i}-1", "chosen_score": 5.0,
             "rejected_score": 1.0, "margin": 4.0, "chosen_chars": a, "rejected_chars": b, "chosen_tokens": None,
             "rejected_tokens": None} for i, (a, b) in enumerate(lengths)]
    return pa.Table.from_pylist(rows, schema=schema("pairs"))


def test_metrics_of_a_collapsed_judge_fail_and_those_of_a_spread_judge_pass():
    cfg = load_config(None, {}).judge_health
    collapsed = health_metrics(judged({"p1": [[5, 5, 5], [5, 5, 5]], "p2": [[5, 5, 5], [5, 5, 5]]}), paired([]))
    assert collapsed["share_of_fives"] == 1.0 and collapsed["score_entropy"] == 0.0 and collapsed["tie_rate"] == 1.0
    assert collapsed["length_gap"] is None  # no pairs: not measured, not failed
    report = assess(1, collapsed, cfg)
    assert [f.split(" ")[0] for f in report.failures] == ["share", "score", "tie"] and not report.passed

    spread = health_metrics(
        judged({"p1": [[1, 2, None], [4, 5, 3]], "p2": [[0, 1, 2], [3, 4, 5]]}), paired([(120, 100), (80, 100)])
    )
    assert spread["parse_rate"] == pytest.approx(11 / 12) and spread["tie_rate"] == 0.0
    assert spread["score_entropy"] == pytest.approx(score_entropy({"0": 1, "1": 2, "2": 2, "3": 2, "4": 2, "5": 2}))
    assert spread["length_gap"] == 0.0  # (100 − 100) / 100
    assert assess(1, spread, cfg).failures == []


def test_entropy_tie_rate_and_length_gap_are_what_their_definitions_say():
    assert score_entropy({"0": 0, "1": 0, "2": 0, "3": 0, "4": 0, "5": 7}) == 0.0
    assert score_entropy(dict.fromkeys("012345", 3)) == pytest.approx(math.log2(6))
    assert score_entropy(dict.fromkeys("012345", 0)) is None
    # p1 tied (both means 4), p2 not, p3 has one scored candidate only: tie rate 1/2.
    metrics = health_metrics(judged({"p1": [[3, 5], [4, 4]], "p2": [[1, 1], [2, 2]], "p3": [[5, 5], [None, None]]}),
                             paired([(300, 100), (100, 100)]))
    assert (metrics["tie_rate"], metrics["tied_prompts"], metrics["contested_prompts"]) == (0.5, 1, 2)
    assert metrics["length_gap"] == pytest.approx(1.0)  # chosen 200 chars on average, rejected 100
    assert health_metrics(judged({}), paired([(10, 0)]))["length_gap"] == math.inf  # rejected all empty
    assert "chosen-minus-rejected length gap inf above" in assess(1, health_metrics(judged({}), paired([(10, 0)])),
                                                                  load_config(None, {}).judge_health).failures[0]
    # Counting only candidates with both judgments parsed (judge.min_parsed_samples = K), p3 is not contested.
    strict = health_metrics(judged({"p1": [[3, 5], [4, None]], "p2": [[1, 1], [2, 2]]}), paired([]), required_parsed=2)
    assert (strict["tied_prompts"], strict["contested_prompts"]) == (0, 1)


def test_the_gate_runs_between_pairs_and_dpo_on_the_cpu():
    assert ITERATION_STEPS.index("judge_health") == ITERATION_STEPS.index("pairs") + 1
    assert ITERATION_STEPS.index("dpo") == ITERATION_STEPS.index("judge_health") + 1
    assert step("judge_health").resources == "cpu"


class AllFives(ScriptedBackend):
    """A judge collapsed to "everything is a 5"."""

    def generate(self, requests, sampling, *, progress=True):
        out = super().generate(requests, sampling, progress=progress)
        for request, completion in zip(requests, out):
            if is_judge(request):
                completion.texts = ["The response is relevant, helpful and expert.\nScore: 5"] * len(completion.texts)
        return out


class NearlyAllFives(ScriptedBackend):
    """5 for everything except the first sample of candidate 0: 11 of 12 judgments per prompt are a 5, yet every
    prompt has a pair (4.67 against 5)."""

    def generate(self, requests, sampling, *, progress=True):
        out = super().generate(requests, sampling, progress=progress)
        for request, completion in zip(requests, out):
            if is_judge(request):
                first = "variant 0" in request[0]["content"]
                completion.texts = [f"Fine.\nScore: {4 if first and i == 0 else 5}" for i in range(len(completion.texts))]
        return out


def _use(monkeypatch, backend: type[ScriptedBackend]) -> None:
    monkeypatch.setattr("srlm.generation.factory.open_backend", lambda path, *a, **k: backend(path))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_all_five_judge_stops_srlm_iterate_at_the_gate_with_one_line(
    tmp_store, tmp_path, jobs, monkeypatch, capsys
):
    ctx = make_ctx(tmp_store)
    register_m0(ctx, tmp_path)
    _use(monkeypatch, AllFives)

    assert main(["iterate", "--store", tmp_store, *RUN]) == 1
    assert _one_error_line(capsys) == (
        "srlm: error: judge health: share of 5s 1.00 above judge_health.max_share_of_fives 0.90; "
        "score entropy (bits) 0.00 below judge_health.min_score_entropy 0.50; "
        "tie rate 1.00 above judge_health.max_tie_rate 0.50 (iteration 1); artifacts so far stay committed; "
        "pass --accept-judge-warnings to continue"
    )
    # Everything up to the gate is committed; DPO never ran and M1 does not exist.
    for uri in (ctx.layout.prompts(1), ctx.layout.candidates(1), ctx.layout.judgments(1), ctx.layout.pairs(1)):
        assert artifacts.is_committed(uri)
    assert not jobs and get_checkpoint(ctx.layout, "M1") is None
    gate = step("judge_health").output_uri(ctx.layout, 1)
    report = read_report(gate)
    assert report.metrics["share_of_fives"] == 1.0 and len(report.failures) == 3 and report.override is None
    assert committed_health(ctx.layout, 1) == report and committed_health(ctx.layout, 2) is None

    # Accepting the warnings passes the gate (the override is recorded); here DPO then refuses the empty pairs
    # table (every prompt tied), which shows the iteration went on past the gate.
    assert main(["iterate", "--store", tmp_store, *RUN, "--accept-judge-warnings"]) == 1
    line = _one_error_line(capsys)
    assert "0 preference pairs" in line and "judge health" not in line
    assert read_report(gate).override["by"].startswith("--accept-judge-warnings")


def test_accepting_a_failed_gate_trains_and_the_override_is_kept_for_reruns(
    tmp_store, tmp_path, jobs, monkeypatch, capsys
):
    ctx = make_ctx(tmp_store)
    register_m0(ctx, tmp_path)
    _use(monkeypatch, NearlyAllFives)

    assert main(["iterate", "--store", tmp_store, *RUN]) == 1
    line = _one_error_line(capsys)
    assert re.search(r"share of 5s 0\.92 above judge_health\.max_share_of_fives 0\.90; score entropy \(bits\) 0\.41 "
                     r"below judge_health\.min_score_entropy 0\.50 \(iteration 1\)", line), line
    assert artifacts.read_table(ctx.layout.pairs(1)).num_rows == 4 and not jobs

    assert main(["iterate", "--store", tmp_store, *RUN, "--accept-judge-warnings", "-t", "1"]) == 0
    assert len(jobs) == 1 and get_checkpoint(ctx.layout, "M1") is not None
    gate = step("judge_health").output_uri(ctx.layout, 1)
    accepted = read_report(gate)
    assert accepted.failures and accepted.override["by"].startswith("--accept-judge-warnings")

    # A rerun of the iteration without the flag stands on the accepted result: nothing stops, nothing retrains.
    assert main(["iterate", "--store", tmp_store, *RUN, "-t", "1"]) == 0
    assert len(jobs) == 1 and read_report(gate).override == accepted.override

    # New thresholds measure again, and the old override no longer holds.
    assert main(["iterate", "--store", tmp_store, *RUN, "-t", "1", "--set", "judge_health.max_share_of_fives=0.8"]) == 1
    assert "judge_health.max_share_of_fives 0.80" in _one_error_line(capsys)
    assert read_report(gate).override is None


def test_a_judge_that_never_parses_stops_at_the_gate_on_its_parse_rate(tmp_store, tmp_path, jobs):
    from srlm.steps.iterate import iterate

    class NoVerdicts(ScriptedBackend):
        def generate(self, requests, sampling, *, progress=True):
            out = super().generate(requests, sampling, progress=progress)
            for request, completion in zip(requests, out):
                if is_judge(request):
                    completion.texts = ["I cannot decide."] * len(completion.texts)
            return out

    ctx = make_ctx(tmp_store)
    register_m0(ctx, tmp_path)
    with pytest.raises(JudgeHealthError) as info:
        iterate(ctx, 1, opener=lambda path, *a: NoVerdicts(path))
    # Nothing parsed, so there is no score spread, tie or pair to measure: the parse rate alone fails.
    assert str(info.value).startswith(
        "judge health: parse rate 0.00 below judge_health.min_parse_rate 0.50 (iteration 1);"
    )
    assert not jobs and artifacts.read_table(ctx.layout.pairs(1)).num_rows == 0


def test_a_healthy_judge_passes_and_a_disabled_gate_only_measures(tmp_store, tmp_path, jobs):
    from srlm.steps.iterate import iterate
    from tests.test_iteration import scripted_opener

    ctx = make_ctx(tmp_store)
    register_m0(ctx, tmp_path)
    result = iterate(ctx, 1, opener=scripted_opener)
    health = result.steps["judge_health"]
    assert health.summary.metrics["passed"] and health.summary.metrics["failures"] == []
    assert health.outputs["health"] == {"passed": True, "failed_checks": 0, "message": "judge health: every check passed"}

    disabled = make_ctx(tmp_store, **{"run.name": "off", "judge_health.enabled": False,
                                      "generate.num_candidates": 4, "judge.num_samples": 3})
    register_m0(disabled, tmp_path)
    result = iterate(disabled, 1, opener=lambda path, *a: NearlyAllFives(path))
    assert result.steps["judge_health"].summary.metrics["failures"]  # measured and recorded, not enforced
    assert len(jobs) == 2 and get_checkpoint(disabled.layout, "M1") is not None


def test_the_dag_mode_reports_a_failed_gate_instead_of_raising_then_records_the_approval(
    tmp_store, tmp_path, jobs, capsys
):
    from srlm.steps.context import StepCall
    from srlm.steps.iterate import iterate
    from srlm.steps.judge_health import run_step

    ctx = make_ctx(tmp_store)
    register_m0(ctx, tmp_path)
    with pytest.raises(JudgeHealthError, match=r"^judge health: share of 5s 1\.00"):
        iterate(ctx, 1, opener=lambda path, *a: AllFives(path))
    # As an orchestrated task (what the DAG's judge_health task runs): a permanent failure (exit 3, not retried).
    from srlm.orchestration import task
    from srlm.orchestration.result import parse_result
    from srlm.orchestration.spec import StepSpec

    spec = StepSpec(step="judge_health", config=ctx.config.to_dict(), iteration=1)
    assert task.main(["judge_health", "--spec", spec.to_json()]) == 3
    assert "judge health: share of 5s 1.00" in capsys.readouterr().err
    spec = StepSpec(step="judge_health", config=ctx.config.to_dict(), iteration=1, options={"on_failure": "report"})
    assert task.main(["judge_health", "--spec", spec.to_json()]) == 0
    assert parse_result(capsys.readouterr().out.splitlines())["health"]["passed"] is False

    reported = run_step(ctx, StepCall(iteration=1, options={"on_failure": "report"}))
    assert reported.reused and reported.outputs["health"]["passed"] is False
    assert reported.outputs["health"]["message"].startswith("judge health: share of 5s 1.00")
    approved = run_step(ctx, StepCall(iteration=1, options={"accepted_by": "Airflow approval (run r1)"}))
    assert approved.outputs["health"]["passed"] is True
    assert read_report(approved.uri).override["by"] == "Airflow approval (run r1)"


# ------------------------------------------------------------------ position consistency of the pairwise judge


def test_position_consistency_counts_pairs_whose_two_orders_agree_and_the_first_position_share():
    from srlm.evaluation.head2head import position_stats
    from srlm.evaluation.pairwise import PairToJudge, PairVerdict, annotations_table

    pairs = [PairToJudge(f"q{i}", "base", "model", "B", "A") for i in range(3)]
    verdicts = [
        PairVerdict(2.0, "2", "2", "Winner: B", "Winner: A"),  # consistent: output_2 both times
        PairVerdict(1.5, "1", "2", "Winner: A", "Winner: A"),  # always the first-shown response: inconsistent
        PairVerdict(1.5, None, "tie", "?", "Winner: tie"),  # one order unparsed: not counted for consistency
    ]
    stats = position_stats(annotations_table(pairs, verdicts, judge_name="j"))
    assert stats == {"both_orders_parsed": 2, "position_consistency": 0.5, "first_position_rate": 0.75}


def test_head_to_head_reports_the_judges_position_consistency():
    from srlm.evaluation.head2head import System, compare
    from tests.test_eval_judges import ScriptedJudge

    a = System("A", "a", "outputs", {"q1": "GOOD", "q2": "GOOD"})
    b = System("B", "b", "outputs", {"q1": "meh", "q2": "meh"})
    biased = compare(a, b, ["q1", "q2"], ScriptedJudge(lambda prompt: "Winner: A"))
    assert (biased.position_consistency, biased.first_position_rate) == (0.0, 1.0)
    assert "position consistency: 0.0% of pairs" in biased.to_text()
    assert biased.to_dict()["position_consistency"] == 0.0
