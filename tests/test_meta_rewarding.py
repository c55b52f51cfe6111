"""Meta-Rewarding (run.method: meta_rewarding): the meta-judge's verdicts, battles → Elo ratings → judgment pairs, the
length-controlled actor pair, the meta_judge step on a scripted backend, and one iteration on the tiny model."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from srlm.config import load_config
from srlm.errors import ConfigError
from srlm.judging.meta import (
    ELO_SCALE,
    Battle,
    JudgedResponse,
    JudgmentSample,
    battle_matrix,
    battle_plan,
    elo_ratings,
    judgment_pair,
    length_controlled_chosen,
    length_controlled_pair,
    load_meta_template,
    parse_meta_verdict,
    position_weights,
    render_meta_prompt,
    response_to_meta_judge,
)
from srlm.steps.context import StepContext
from srlm.steps.iterate import iterate
from srlm.steps.meta_judge import meta_judgments_uri
from srlm.steps.registry import step
from srlm.store import artifacts
from srlm.store.uri import join_uri
from srlm.training.registry import get_checkpoint, register_checkpoint
from tests import test_iteration
from tests.fixtures.orchestration_shims.sitecustomize import META_MARK, is_meta, lower_score_wins
from tests.test_iteration import (
    QualityShim,
    ScriptedBackend,
    e2e_ctx,
    is_judge,
    make_ctx,
    register_m0,
)

fake_training = test_iteration.fake_training  # the stand-in training launcher (a fixture)


# ─────────────────────────────────────────────────────────────────────────────────────────── the meta-judge's verdict
@pytest.mark.parametrize(
    ("text", "winner"),
    [
        ("Judgment A misses the rubric.\nWinner: Judgment B", "B"),
        ("**Winner:** [Judgement A]", "A"),
        ("Winner = B", "B"),
        ("winner: judgment a", "A"),
        ("Winner: Judgment A\n...on reflection...\nWinner: Judgment B", "B"),  # the last one counts
        ("Winner: a tie", None),
        ("Winner: Both", None),
        ('Conclude with "Winner: [Judgement A | Judgement B]"', None),  # the format, copied
        ("Judgment A is better.", None),
        ("", None),
    ],
)
def test_meta_verdicts_are_read_strictly(text, winner):
    verdict = parse_meta_verdict(text)
    assert verdict.winner == winner and verdict.ok == (winner is not None)
    assert (verdict.error is None) == (winner is not None)


def test_the_shipped_meta_template_renders_without_reading_what_it_inserts():
    template = load_meta_template("meta_judge")
    text = render_meta_prompt(template, "Q {response}?", "R {judgment_a}", "first {x}", "second")
    assert "User: Q {response}?" in text and "Response: R {judgment_a}" in text
    assert "Judgment A: first {x}" in text and "Judgment B: second" in text
    assert "Winner: [Judgement A | Judgement B]" in text and META_MARK in text


def test_a_meta_template_without_its_placeholders_is_a_config_error(tmp_path):
    bad = tmp_path / "meta.txt"
    bad.write_text("{instruction} {response} {judgment_a}")
    with pytest.raises(ConfigError, match=r"meta_rewarding.template.*lacks \{judgment_b\}"):
        load_meta_template(str(bad))
    with pytest.raises(ConfigError, match="meta_rewarding.template: no shipped template 'nope'"):
        load_meta_template("nope")


# ────────────────────────────────────────────────────────────────────────────────────────── battles → ratings → pair
def verdicts(prefer, count: int) -> list[Battle]:
    """Both orders of every pair, the meta-judge's winner chosen by `prefer(first, second) -> index`."""
    out = []
    for first, second in battle_plan(count):
        won = prefer(first, second)
        out.append(Battle(first, second, None if won is None else ("A" if won == first else "B")))
    return out


def test_every_pair_of_judgments_meets_in_both_orders():
    assert battle_plan(3) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    assert battle_plan(1) == []


def test_wins_in_the_favoured_position_count_for_less():
    battles = [Battle(0, 1, "A"), Battle(1, 0, "A"), Battle(0, 2, "A"), Battle(2, 0, "B")]
    assert position_weights(battles) == (0.25, 0.75)
    matrix = battle_matrix(3, battles, (0.25, 0.75))
    assert matrix[0][1] == 0.25 and matrix[1][0] == 0.25 and matrix[0][2] == 0.25 + 0.75
    assert position_weights([Battle(0, 1, None)]) == (0.5, 0.5)


def test_the_consistently_preferred_judgment_is_chosen_and_the_consistently_beaten_one_rejected():
    # 1 beats everyone in both orders, 2 loses to everyone, whatever the position.
    rank = {1: 0, 0: 1, 2: 2}
    battles = verdicts(lambda a, b: a if rank[a] < rank[b] else b, 3)
    weights = position_weights(battles)
    assert weights == (0.5, 0.5)
    ratings = elo_ratings(battle_matrix(3, battles, weights))
    assert all(math.isfinite(r) for r in ratings)  # a judgment that wins every battle still gets a finite rating
    assert ratings[1] > ratings[0] > ratings[2]
    assert abs(sum(ratings) / 3 - 1000) < 1e-6  # centred on the Elo base
    assert judgment_pair(ratings) == (1, 2)


def test_ratings_are_the_bradley_terry_maximum_likelihood_fit():
    # Two judgments, 3 weighted wins against 1: the unregularised MLE puts their strengths log(3) apart.
    low, high = elo_ratings([[0.0, 1.0], [3.0, 0.0]], prior=1e-9)
    assert high - low == pytest.approx(ELO_SCALE * math.log(3.0), rel=1e-6)
    assert (low + high) / 2 == pytest.approx(1000.0)


def test_a_meta_judge_that_always_picks_position_a_yields_no_judgment_pair():
    battles = verdicts(lambda a, b: a, 3)  # "Winner: Judgment A" every time: no information about the judgments
    weights = position_weights(battles)
    assert weights == (0.0, 1.0)
    ratings = elo_ratings(battle_matrix(3, battles, weights))
    assert judgment_pair(ratings) is None


def test_unparsed_meta_judgments_count_for_nobody():
    battles = verdicts(lambda a, b: None, 2)
    assert judgment_pair(elo_ratings(battle_matrix(2, battles, position_weights(battles)))) is None


def test_the_meta_judged_response_is_the_one_whose_judgments_disagree_most():
    def response(index, *scores):
        judged = tuple(JudgmentSample(i, f"j{i}", s) for i, s in enumerate(scores))
        return JudgedResponse("p", "q", f"p-c{index}", index, f"r{index}", judged)

    calm, split, single = response(0, 4, 4, 4), response(1, 1, 5, 3), response(2, 0)
    assert response_to_meta_judge([calm, split, single]) is split
    assert response_to_meta_judge([single]) is None
    assert response_to_meta_judge([calm, response(3, 4, 4)]) is calm  # equal variance: the lowest index
    assert [j.sample_index for j in response_to_meta_judge([split], max_judgments=2).judgments] == [0, 1]


# ─────────────────────────────────────────────────────────────────────────────────────── length-controlled actor pair
@dataclass(frozen=True)
class Candidate:
    mean_score: float
    response: str
    candidate_index: int


def test_length_control_chooses_the_shortest_response_in_the_top_band_and_rejects_the_lowest():
    best, near, mid, worst = (
        Candidate(5.0, "x" * 100, 0),
        Candidate(4.8, "x" * 10, 1),
        Candidate(3.0, "x" * 5, 2),
        Candidate(2.0, "x" * 50, 3),
    )
    pool = [best, near, mid, worst]
    assert length_controlled_pair(pool, 0.1) == (near, worst)  # band: score ≥ 0.9·5 + 0.1·2 = 4.7
    assert length_controlled_pair(pool, 0.0) == (best, worst)  # ρ = 0: the top score only
    assert length_controlled_pair(pool, 0.5) == (near, worst)  # band: ≥ 3.5, so 3.0 is out
    assert length_controlled_pair(pool, 1.0) == (mid, worst)  # everything is in the band: the shortest wins


def test_length_control_drops_ties_and_single_candidates():
    same = [Candidate(4.0, "a", 0), Candidate(4.0, "bb", 1)]
    assert length_controlled_pair(same, 0.1) is None
    assert length_controlled_pair(same[:1], 0.1) is None
    # The shortest in the band is the lowest-scored candidate itself: no pair (never chosen == rejected).
    assert length_controlled_pair([Candidate(5.0, "long answer", 0), Candidate(4.0, "s", 1)], 1.0) is None
    with pytest.raises(ValueError, match="rho must be in"):
        length_controlled_pair(same, 1.5)


def test_meta_rewarding_settings_are_validated():
    with pytest.raises(ConfigError, match="length_control_rho"):
        load_config(None, {"meta_rewarding.length_control_rho": 1.5})
    with pytest.raises(ConfigError, match="max_judgments"):
        load_config(None, {"meta_rewarding.max_judgments": 1})


# ─────────────────────────────────────────────────────────────────────────────────── the step, on a scripted backend
def spread_judgment(request, sample: int) -> str:
    """Judgments of one response that disagree: sample i of a variant-q answer gives min(5, q + 2i)."""
    quality = int(re.search(r"variant (\d)", request[0]["content"]).group(1))
    return f"Judged sample {sample}.\nScore: {min(5, quality + 2 * sample)}"


class MetaScripted(ScriptedBackend):
    requests: list = []

    def generate(self, requests, sampling, *, progress=True):
        MetaScripted.requests.extend(requests)
        out = super().generate(requests, sampling, progress=progress)
        for request, completion in zip(requests, out):
            if is_meta(request):
                completion.texts = [lower_score_wins(request) for _ in completion.texts]
            elif is_judge(request):
                completion.texts = [spread_judgment(request, i) for i in range(len(completion.texts))]
        return out


def meta_opener(path, backend_config, dtype):
    return MetaScripted(path)


META_SETTINGS = {"run.method": "meta_rewarding", "judge.num_samples": 3, "judge_health.enabled": False}


def test_meta_rewarding_iteration_trains_on_actor_pairs_plus_judgment_pairs(tmp_store, tmp_path, fake_training):
    MetaScripted.requests = []
    ctx = make_ctx(tmp_store, **META_SETTINGS)
    register_m0(ctx, tmp_path)
    result = iterate(ctx, 1, opener=meta_opener)
    assert result.backend_starts == 1  # judge and meta_judge share the engine

    out = step("meta_judge").output_uri(ctx.layout, 1)
    records = artifacts.read_table(meta_judgments_uri(out), "meta_judgments").to_pylist()
    # 4 prompts; the candidate meta-judged has 3 parsed judgments: 3·2 ordered pairs, each order once.
    assert len(records) == 4 * 6 and all(r["parse_ok"] for r in records)
    shown = {(r["prompt_id"], r["first_sample_index"], r["second_sample_index"]) for r in records}
    assert all((p, b, a) in shown for p, a, b in shown)
    judgment_pairs = artifacts.read_table(out, "judgment_pairs").to_pylist()
    assert len(judgment_pairs) == 4
    for pair in judgment_pairs:
        # candidate 0 (variant 0) has scores 0, 2, 4 — the widest spread; the stricter judgment is preferred.
        assert pair["candidate_id"].endswith("-c0")
        assert (pair["chosen_sample_index"], pair["rejected_sample_index"]) == (0, 2)
        assert pair["chosen_score"] < pair["rejected_score"] and pair["chosen_elo"] > pair["rejected_elo"]
        assert (
            pair["prompt"].startswith("Review the user's question") and "<response>Answer variant 0" in pair["prompt"]
        )
        assert pair["battles"] == 6
    summary = result.steps["meta_judge"].summary.metrics
    assert summary["rows"] == 4 and summary["parse_rate"] == 1.0 and summary["first_position_win_rate"] == 0.5

    (job,) = fake_training
    dpo_pairs = join_uri(ctx.layout.iteration(1), "dpo_pairs")
    assert job.data_uris == [dpo_pairs]
    actor = artifacts.read_table(ctx.layout.pairs(1), "pairs").to_pylist()
    trained = artifacts.read_table(dpo_pairs, "pairs").to_pylist()
    assert len(trained) == len(actor) + 4 and trained[: len(actor)] == actor
    assert {t["chosen"] for t in trained[len(actor) :]} == {p["chosen"] for p in judgment_pairs}
    assert result.steps["dpo"].summary.metrics["judgment_pairs"] == 4
    assert get_checkpoint(ctx.layout, "M1").parent_id == "M0"

    # Rerun: the meta-judgments and the union are reused; nothing is generated or trained.
    MetaScripted.requests = []
    again = iterate(ctx, 1, opener=meta_opener)
    assert again.backend_starts == 0 and again.steps["meta_judge"].reused and len(fake_training) == 1


def test_self_rewarding_skips_meta_judging_without_a_model_and_trains_on_actor_pairs(
    tmp_store, tmp_path, fake_training
):
    MetaScripted.requests = []
    ctx = make_ctx(tmp_store, **{**META_SETTINGS, "run.method": "self_rewarding"})
    register_m0(ctx, tmp_path)
    result = iterate(ctx, 1, opener=meta_opener)
    assert not any(is_meta(r) for r in MetaScripted.requests)
    out = result.steps["meta_judge"]
    assert artifacts.read_table(out.uri, "judgment_pairs").num_rows == 0 and out.reused is False
    assert "no meta-judging" in out.summary.render()
    (job,) = fake_training
    assert job.data_uris == [ctx.layout.pairs(1)]
    # Switching the method recomputes the meta-judging (run.method is one of its settings).
    ctx = make_ctx(tmp_store, **META_SETTINGS)
    again = iterate(ctx, 1, opener=meta_opener)
    assert not again.steps["meta_judge"].reused and any(is_meta(r) for r in MetaScripted.requests)


def test_a_position_biased_meta_judge_gives_no_judgment_pairs(tmp_store, tmp_path, fake_training):
    class AlwaysA(MetaScripted):
        def generate(self, requests, sampling, *, progress=True):
            out = super().generate(requests, sampling, progress=progress)
            for request, completion in zip(requests, out):
                if is_meta(request):
                    completion.texts = ["Winner: Judgment A"] * len(completion.texts)
            return out

    ctx = make_ctx(tmp_store, **META_SETTINGS)
    register_m0(ctx, tmp_path)
    result = iterate(ctx, 1, opener=lambda *a: AlwaysA(a[0]))
    metrics = result.steps["meta_judge"].summary.metrics
    assert metrics["rows"] == 0 and metrics["first_position_win_rate"] == 1.0 and metrics["dropped"]["tie"] == 4
    assert result.steps["dpo"].summary.metrics["judgment_pairs"] == 0


def test_comparisons_too_long_for_the_context_are_set_aside_not_failed(tmp_store, tmp_path, fake_training):
    class CountsTokens(MetaScripted):
        generated: list = []

        def prompt_token_counts(self, requests):
            return [10**6 if is_meta(r) else 1 for r in requests]

        def generate(self, requests, sampling, *, progress=True):
            CountsTokens.generated.extend(requests)
            return super().generate(requests, sampling, progress=progress)

    ctx = make_ctx(tmp_store, **META_SETTINGS)
    register_m0(ctx, tmp_path)
    result = iterate(ctx, 1, opener=lambda *a: CountsTokens(a[0]))
    assert not any(is_meta(r) for r in CountsTokens.generated)
    out = step("meta_judge").output_uri(ctx.layout, 1)
    records = artifacts.read_table(meta_judgments_uri(out), "meta_judgments").to_pylist()
    assert len(records) == 4 * 6 and all(r["parse_error"].startswith("prompt exceeds context") for r in records)
    metrics = result.steps["meta_judge"].summary.metrics
    assert metrics["set_aside_too_long"] == 24 and metrics["meta_judgments"] == 0 and metrics["rows"] == 0
    assert len(fake_training) == 1  # the actor pairs still train M1


# ─────────────────────────────────────────────────────────────────────────────────── one iteration on the tiny model
class MetaQualityShim(QualityShim):
    """QualityShim plus meta-judgments: every meta-judge request really runs on the model, then gets a verdict the
    random-weight model cannot write (the stricter judgment wins, wherever it is shown)."""

    def generate(self, requests, sampling, *, progress=True):
        if not any(is_meta(r) for r in requests):
            return super().generate(requests, sampling, progress=progress)
        out = self.real.generate(requests, sampling, progress=progress)
        for request, completion in zip(requests, out):
            completion.texts = [f"{t[:40]}\n{lower_score_wins(request)}" for t in completion.texts]
        return out


def meta_shimmed_transformers(path, backend_config, dtype):
    from srlm.generation.factory import open_backend

    return MetaQualityShim(open_backend(path, backend_config, dtype=dtype))


@pytest.mark.slow
def test_meta_rewarding_iteration_end_to_end_on_the_tiny_model(tmp_store, tiny_model_dir, tmp_path):
    """M0 is the tiny model itself; iteration 1 runs every step (meta_judge included) on the transformers backend
    and trains M1 with real TRL DPO on the actor pairs plus the judgment pairs."""
    base = e2e_ctx(tmp_store, tiny_model_dir, tmp_path)
    ctx = with_settings(
        base,
        tmp_path,
        {
            "run.method": "meta_rewarding",
            "judge_health.enabled": False,
            "meta_rewarding.max_new_tokens": 8,
            # the tiny model never stops within 12 tokens: without this every candidate is truncated, no actor pair
            "generate.drop_truncated": False,
        },
    )
    m0_uri = ctx.layout.model("M0")
    artifacts.write_directory(m0_uri, tiny_model_dir)
    register_checkpoint(ctx.layout, "M0", 0, m0_uri, None, "sft", 0, True, None, {})
    result = iterate(ctx, opener=meta_shimmed_transformers)

    out = step("meta_judge").output_uri(ctx.layout, 1)
    records = artifacts.read_table(meta_judgments_uri(out), "meta_judgments")
    judgment_pairs = artifacts.read_table(out, "judgment_pairs")
    actor = artifacts.read_table(ctx.layout.pairs(1), "pairs")
    trained = artifacts.read_table(join_uri(ctx.layout.iteration(1), "dpo_pairs"), "pairs")
    print(
        f"tiny meta_rewarding iteration: {records.num_rows} meta-judgments, {judgment_pairs.num_rows} judgment pairs, "
        f"{actor.num_rows} actor pairs, {trained.num_rows} DPO pairs"
    )
    assert records.num_rows == 4 * 2  # 2 judgments per candidate: one pair, both orders, per prompt
    assert judgment_pairs.num_rows > 0 and trained.num_rows == actor.num_rows + judgment_pairs.num_rows
    m1 = get_checkpoint(ctx.layout, "M1")
    assert result.checkpoint_uri == m1.uri and m1.parent_id == "M0"
    assert (Path(artifacts.fetch_directory(m1.uri)) / "config.json").is_file()


def with_settings(ctx: StepContext, tmp_path: Path, overrides: dict) -> StepContext:
    """ctx's settings (written out as a config file) plus `overrides`."""
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(ctx.config.to_dict()))
    return StepContext.from_config(load_config(path, overrides), echo=ctx.echo, progress=False)


def test_length_controlled_chosen_measures_the_band_from_the_prompts_lowest_score():
    high, short = Candidate(5.0, "x" * 100, 0), Candidate(4.0, "x", 1)
    # Among these two alone the band for ρ = 0.5 is ≥ 4.5; with the prompt's lowest score 1.0 it is ≥ 3.0.
    assert length_controlled_chosen([high, short], 0.5) is high
    assert length_controlled_chosen([high, short], 0.5, bottom=1.0) is short


def test_the_pairs_step_uses_meta_rewarding_length_control():
    from srlm.config import PairsConfig
    from srlm.steps.pairs import ScoredCandidate, select_pair

    def cand(index, score, length):
        return ScoredCandidate("p", "q", f"p-c{index}", index, "x" * length, length, score, 3)

    pool = [cand(0, 5.0, 100), cand(1, 4.8, 10), cand(2, 2.0, 50)]
    (chosen, rejected), reason = select_pair(pool, PairsConfig(), length_control_rho=0.1)
    assert (chosen.candidate_id, rejected.candidate_id, reason) == ("p-c1", "p-c2", None)
