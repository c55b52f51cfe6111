"""The judging and pair-selection findings of issue 12: a strict score regex, robust pairwise verdicts, candidates
with too few parsed judgments or cut off at max_new_tokens, and judge prompts longer than the context."""

from __future__ import annotations

import pytest

from srlm.config import PairsConfig, load_config
from srlm.errors import ConfigError
from srlm.evaluation.pairwise import parse_verdict
from srlm.judging.parse import parse_score
from srlm.steps.backends import BackendPool
from srlm.steps.judge import judge_candidates
from srlm.steps.pairs import ScoredCandidate, build_pairs, competing_candidates, scored_candidates, select_pair
from srlm.steps.reuse import step_settings
from srlm.store import artifacts
from tests.test_steps import MODEL, ScriptedBackend, make_ctx, scripted_judge, summary_json, user_text
from tests.test_steps_pairs import candidates_table, judgments_table

# ------------------------------------------------------------------------------------------------- score regex


@pytest.mark.parametrize(
    ("judgment", "score"),
    [
        ("Score: 4", 4.0),
        ("**Score:** 4/5", 4.0),
        ("Score = 2", 2.0),
        ("Relevant and clear. Score: 3", 3.0),
        ("**Final Score:** 5", 5.0),
        ("Total score: 1", 1.0),
        ("I would give it a score: 3", 3.0),
        # Another score named along the way is not the rubric's: before the fix these read 0.9 and 3.
        ("F1 score: 0.9", None),
        ("subscore: 3", None),
        ("Score: 4\nFor comparison, its F1 score: 0.9", 4.0),
        ("The quality score = 2 of the original.\nScore: 4\n(subscore: 1)", 4.0),
        # The last rubric score counts (a quoted one earlier does not).
        ("The response says 'Score: 5'.\nScore: 2", 2.0),
    ],
)
def test_score_needs_its_own_word(judgment, score):
    assert parse_score(judgment).score == score


# -------------------------------------------------------------------------------------------- pairwise verdicts


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        # Ties said in words: before the fix "a tie" and "it's a tie" read as A.
        ("Winner: a tie", "tie"),
        ("Winner: it's a tie", "tie"),
        ("Winner: It is a tie.", "tie"),
        ("Winner: neither", "tie"),
        ("Winner: Both", "tie"),
        ("**Winner:** Tie", "tie"),
        # Sides, named or bare.
        ("Winner: Response A", "A"),
        ("**Winner:** B", "B"),
        ("Winner: Assistant A", "A"),
        ("Winner: Answer B", "B"),
        ("Winner: **Response B**", "B"),
        ("Winner: [[A]]", "A"),
        ("Winner: A, because it answers the question.", "A"),
        ("Winner = b", "B"),
        # No readable verdict is no verdict, never a side.
        ("Winner: a close call, hard to say", None),
        ("Winner: Average", None),
        ("Winner: the first one", None),
        ("Winner: None", None),
        # The last label counts, even when it cannot be read.
        ("Winner: A\nOn reflection... Winner: neither", "tie"),
    ],
)
def test_parse_verdict_reads_ties_and_never_guesses_a_side(text, verdict):
    assert parse_verdict(text) == verdict


# -------------------------------------------------------------------------------- selection: parsed judgments


def cand(index: int, score: float, num_scores: int = 3, truncated: bool = False) -> ScoredCandidate:
    return ScoredCandidate(
        prompt_id="p1", prompt="Q", candidate_id=f"p1-c{index}", candidate_index=index, response=f"r{index}",
        num_tokens=3, mean_score=score, num_scores=num_scores, truncated=truncated,
    )  # fmt: skip


def ids(pair):
    return (pair[0].candidate_id, pair[1].candidate_id) if pair else None


def test_a_candidate_with_fewer_parsed_judgments_does_not_compete():
    # c0's 5.0 is one parsed judgment of three: with all three required it is left out, not chosen.
    by_prompt = {"p1": [cand(0, 5.0, num_scores=1), cand(1, 4.0), cand(2, 2.0)], "p2": [cand(3, 1.0, num_scores=2)]}
    competing, left_out = competing_candidates(by_prompt, min_scores=3)
    assert left_out == 2
    assert [c.candidate_id for c in competing["p1"]] == ["p1-c1", "p1-c2"] and competing["p2"] == []
    assert ids(select_pair(competing["p1"], PairsConfig())[0]) == ("p1-c1", "p1-c2")
    relaxed, left_out = competing_candidates(by_prompt, min_scores=1)
    assert left_out == 0 and ids(select_pair(relaxed["p1"], PairsConfig())[0]) == ("p1-c0", "p1-c2")


def test_min_parsed_samples_defaults_to_all_samples_and_cannot_exceed_them():
    assert load_config(None, {"judge.num_samples": 4}).judge.required_parsed_samples == 4
    assert load_config(None, {"judge.min_parsed_samples": 2}).judge.required_parsed_samples == 2
    with pytest.raises(ConfigError, match=r"judge\.min_parsed_samples.*above num_samples 3"):
        load_config(None, {"judge.min_parsed_samples": 4})


def test_selection_rules_read_by_the_pairs_step_decide_its_reuse():
    base = load_config(None, {})
    pairs = step_settings(base, "pairs")
    for key in ("judge.min_parsed_samples", "judge.num_samples", "generate.drop_truncated"):
        assert key in pairs
    changed = load_config(None, {"judge.min_parsed_samples": 1, "generate.drop_truncated": False})
    assert step_settings(changed, "pairs") != pairs
    # They do not change the candidates or judgments, so those stay reusable.
    assert step_settings(changed, "judge") == step_settings(base, "judge")
    assert step_settings(changed, "generate") == step_settings(base, "generate")
    # The context decides which judge prompts are set aside.
    assert step_settings(load_config(None, {"backend.max_model_len": 4096}), "judge") != step_settings(base, "judge")


# ------------------------------------------------------------------------------------ selection: truncation


def test_a_truncated_candidate_is_never_chosen_but_can_be_rejected():
    scored = [cand(0, 5.0, truncated=True), cand(1, 4.0), cand(2, 1.0, truncated=True)]
    assert ids(select_pair(scored, PairsConfig())[0]) == ("p1-c0", "p1-c2")  # the paper's rule, off
    assert ids(select_pair(scored, PairsConfig(), drop_truncated=True)[0]) == ("p1-c1", "p1-c2")


def test_a_prompt_where_only_truncated_candidates_beat_the_lowest_is_dropped():
    assert select_pair([cand(0, 5.0, truncated=True), cand(1, 2.0)], PairsConfig(), drop_truncated=True) == (
        None,
        "truncated",
    )
    all_cut = [cand(0, 5.0, truncated=True), cand(1, 2.0, truncated=True)]
    assert select_pair(all_cut, PairsConfig(), drop_truncated=True) == (None, "truncated")
    # A tie stays a tie, and length control keeps its own reason.
    assert select_pair([cand(0, 3.0, truncated=True), cand(1, 3.0)], PairsConfig(), drop_truncated=True)[1] == "tie"


def test_truncation_is_read_from_the_finish_reason():
    cands = candidates_table(
        [{"prompt_id": "p1", "candidate_id": f"p1-c{i}", "candidate_index": i, "prompt": "Q", "response": f"r{i}",
          "num_tokens": 3, "finish_reason": reason} for i, reason in enumerate(["length", "stop", None])]
    )  # fmt: skip
    judg = judgments_table(
        [{"prompt_id": "p1", "candidate_id": f"p1-c{i}", "sample_index": 0, "judgment": "Score: 3", "score": 3.0,
          "parse_ok": True} for i in range(3)]
    )  # fmt: skip
    scored = scored_candidates(cands, judg, "judgments")["p1"]
    assert [c.truncated for c in scored] == [True, False, False]


# ----------------------------------------------------------------------------------------- the pairs step


def write_candidates(ctx, rows_by_prompt):
    """rows_by_prompt: prompt id -> [(response, finish_reason)]."""
    rows = [
        {"prompt_id": pid, "candidate_id": f"{pid}-c{i}", "candidate_index": i, "prompt": f"prompt {pid}",
         "response": text, "num_tokens": len(text.split()), "finish_reason": reason}
        for pid, responses in rows_by_prompt.items() for i, (text, reason) in enumerate(responses)
    ]  # fmt: skip
    artifacts.write_table(ctx.layout.candidates(1), rows, "candidates")


def test_pairs_step_leaves_out_underjudged_and_truncated_candidates_and_says_so(tmp_store):
    ctx = make_ctx(tmp_store, **{"judge.num_samples": 3})
    write_candidates(
        ctx,
        {
            "a": [("lucky", "stop"), ("good", "stop"), ("bad", "stop")],
            "b": [("cut off", "length"), ("fine", "stop"), ("poor", "stop")],
        },
    )
    judge = scripted_judge(
        {
            "lucky": ["Score: 5", "?", "?"],  # one of three parsed: does not compete
            "good": ["Score: 4"] * 3,
            "bad": ["Score: 1"] * 3,
            "cut off": ["Score: 5"] * 3,  # truncated: may not be chosen
            "fine": ["Score: 3"] * 3,
            "poor": ["Score: 2"] * 3,
        }
    )
    judge_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(ScriptedBackend(judge)))
    result = build_pairs(ctx, 1)
    rows = {r["prompt_id"]: (r["chosen"], r["rejected"]) for r in artifacts.read_table(result.uri).to_pylist()}
    assert rows == {"a": ("good", "bad"), "b": ("fine", "poor")}
    metrics = summary_json(ctx, 1, "pairs")["metrics"]
    assert metrics["candidates_too_few_parsed"] == 1
    assert metrics["truncated_candidates"] == 1 and metrics["truncated_excluded"] == 1

    # Relaxing both rules is a new selection (not a reuse of the committed pairs) and brings back the paper's.
    relaxed = make_ctx(tmp_store, **{"judge.num_samples": 3, "judge.min_parsed_samples": 1,
                                     "generate.drop_truncated": False})  # fmt: skip
    result = build_pairs(relaxed, 1)
    assert not result.reused
    rows = {r["prompt_id"]: (r["chosen"], r["rejected"]) for r in artifacts.read_table(result.uri).to_pylist()}
    assert rows == {"a": ("lucky", "bad"), "b": ("cut off", "poor")}
    assert result.summary.metrics["candidates_too_few_parsed"] == 0
    assert result.summary.metrics["truncated_excluded"] == 0


# ------------------------------------------------------------------------------- judge prompts over the context


class CountingBackend(ScriptedBackend):
    """A scripted backend that counts a request's prompt tokens as its words, with a context of max_model_len."""

    def __init__(self, respond, max_model_len: int):
        super().__init__(respond)
        self.max_model_len = max_model_len

    def prompt_token_counts(self, requests):
        return [len(user_text(r).split()) for r in requests]

    def fits(self, requests):
        return [n < self.max_model_len for n in self.prompt_token_counts(requests)]

    def generate(self, requests, sampling, *, progress=True):
        too_long = [n for n in self.prompt_token_counts(requests) if n + sampling.max_new_tokens > self.max_model_len]
        assert not too_long, f"asked to judge prompts of {too_long} tokens"
        return super().generate(requests, sampling, progress=progress)


def test_judge_sets_aside_prompts_over_the_context_instead_of_failing(tmp_store):
    ctx = make_ctx(tmp_store, **{"judge.num_samples": 2, "judge.max_new_tokens": 50, "backend.max_model_len": 700})
    long = "word " * 600  # the rubric is ~250 words: fits max_model_len, but leaves less than max_new_tokens
    write_candidates(ctx, {"a": [("short answer", "stop"), (long, "stop")], "b": [("other", "stop")]})
    backend = CountingBackend(lambda r, i: "Score: 4", max_model_len=700)
    result = judge_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(backend))
    rows = artifacts.read_table(result.uri).to_pylist()
    aside = [r for r in rows if r["candidate_id"] == "a-c1"]
    assert len(aside) == 1 and not aside[0]["parse_ok"] and aside[0]["score"] is None
    assert aside[0]["parse_error"].startswith("prompt exceeds context (")
    assert aside[0]["parse_error"].endswith(f" > {700 - 50} tokens)")
    metrics = result.summary.metrics
    assert metrics["set_aside_too_long"] == 1
    assert metrics["parse_rate"] == 1.0 and metrics["rows"] == 4  # the judged ones all parsed
    assert backend.requests == 2
    # Never a score: the set-aside candidate does not compete.
    pairs = build_pairs(make_ctx(tmp_store, **{"judge.num_samples": 2, "judge.min_parsed_samples": 1}), 1)
    assert pairs.summary.metrics["dropped"]["too_few_scored"] == 2


def test_judge_on_the_tiny_model_sets_aside_a_prompt_it_cannot_take(tmp_store, tiny_model_dir):
    from srlm.generation.transformers_backend import TransformersBackend

    settings = {"judge.num_samples": 1, "judge.max_new_tokens": 4, "backend.max_model_len": 600,
                "prompts.max_new_tokens": 4, "generate.max_new_tokens": 4, "backend.backend": "transformers"}
    ctx = make_ctx(tmp_store, **settings)
    write_candidates(ctx, {"a": [("A short answer.", "stop"), ("word " * 2000, "stop")]})
    with TransformersBackend(str(tiny_model_dir), ctx.config.backend, dtype="float32") as backend:
        result = judge_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(backend))
    rows = {r["candidate_id"]: r for r in artifacts.read_table(result.uri).to_pylist()}
    assert rows["a-c1"]["parse_error"].startswith("prompt exceeds context") and rows["a-c1"]["score"] is None
    assert not (rows["a-c0"]["parse_error"] or "").startswith("prompt exceeds context")  # judged by the model
    assert result.summary.metrics["set_aside_too_long"] == 1



class CuttingBackend(ScriptedBackend):
    """Candidate sample 0 of every prompt runs into max_new_tokens."""

    def generate(self, requests, sampling, *, progress=True):
        out = super().generate(requests, sampling, progress=progress)
        for completion in out:
            completion.finish_reasons[0] = "length"
        return out


def test_generate_summary_counts_truncated_candidates_and_warns_when_many(tmp_store):
    from srlm.steps.generate import generate_candidates
    from tests.test_steps import write_prompts

    ctx = make_ctx(tmp_store, **{"generate.num_candidates": 2})
    write_prompts(ctx, ["Q one?", "Q two?"])
    result = generate_candidates(ctx, 1, model=MODEL, backends=BackendPool.serving(CuttingBackend(lambda r, i: "A")))
    assert result.summary.metrics["truncated"] == 2 and result.summary.metrics["truncated_fraction"] == 0.5
    assert any("drop_truncated" in note for note in result.summary.notes)
