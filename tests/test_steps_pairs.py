"""Pair selection: parsed-only means, ties, margins and length control (pure functions, no store or model)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from srlm.config import PairsConfig
from srlm.errors import DataError
from srlm.steps.pairs import ScoredCandidate, pair_row, scored_candidates, select_pair
from srlm.store.schemas import schema


def cand(index: int, score: float, response: str | None = None, tokens: int | None = None) -> ScoredCandidate:
    response = response if response is not None else f"response {index}"
    return ScoredCandidate(
        prompt_id="p1",
        prompt="Explain rain.",
        candidate_id=f"p1-c{index}",
        candidate_index=index,
        response=response,
        num_tokens=tokens if tokens is not None else len(response.split()),
        mean_score=score,
        num_scores=3,
    )


def ids(pair):
    return (pair[0].candidate_id, pair[1].candidate_id) if pair else None


def test_highest_against_lowest():
    pair, reason = select_pair([cand(0, 3.0), cand(1, 4.5), cand(2, 1.0), cand(3, 2.0)], PairsConfig())
    assert reason is None
    assert ids(pair) == ("p1-c1", "p1-c2")


def test_all_equal_is_a_tie_and_dropped():
    assert select_pair([cand(0, 3.0), cand(1, 3.0), cand(2, 3.0)], PairsConfig()) == (None, "tie")


def test_fewer_than_two_scored_candidates_is_dropped():
    assert select_pair([cand(0, 4.0)], PairsConfig()) == (None, "too_few_scored")
    assert select_pair([], PairsConfig()) == (None, "too_few_scored")


def test_equal_top_scores_pick_the_first_candidate_deterministically():
    pair, _ = select_pair([cand(3, 5.0), cand(1, 5.0), cand(2, 1.0), cand(0, 1.0)], PairsConfig())
    assert ids(pair) == ("p1-c1", "p1-c0")


def test_min_margin_drops_close_pairs_and_keeps_wider_ones():
    close = [cand(0, 4.0), cand(1, 3.5)]
    assert select_pair(close, PairsConfig(min_margin=0.5)) == (None, "below_margin")
    assert select_pair(close, PairsConfig(min_margin=0.4))[1] is None
    assert select_pair(close, PairsConfig(min_margin=0.0))[1] is None


def test_length_control_prefers_the_shortest_near_top_candidate():
    candidates = [cand(0, 5.0, "long " * 40), cand(1, 4.8, "short"), cand(2, 4.0, "mid " * 10), cand(3, 1.0, "bad")]
    off, _ = select_pair(candidates, PairsConfig())
    on, _ = select_pair(candidates, PairsConfig(length_control=True, length_control_tolerance=0.25))
    assert ids(off) == ("p1-c0", "p1-c3")
    assert ids(on) == ("p1-c1", "p1-c3")
    # a tolerance that admits nothing but the top behaves like the paper's rule
    strict, _ = select_pair(candidates, PairsConfig(length_control=True, length_control_tolerance=0.0))
    assert ids(strict) == ("p1-c0", "p1-c3")


def test_length_control_never_pairs_a_candidate_with_itself_or_a_better_one():
    # Both within tolerance; the shorter is also the lowest: the pair would prefer a worse answer, so it drops.
    candidates = [cand(0, 4.0, "a long and thorough answer"), cand(1, 3.9, "short")]
    assert select_pair(candidates, PairsConfig(length_control=True, length_control_tolerance=0.25)) == (
        None,
        "below_margin",
    )


def candidates_table(rows):
    return pa.Table.from_pylist(rows, schema=schema("candidates"))


def judgments_table(rows):
    return pa.Table.from_pylist(rows, schema=schema("judgments"))


def test_means_use_parsed_judgments_only_and_unscored_candidates_are_left_out():
    cands = candidates_table(
        [
            {"prompt_id": "p1", "candidate_id": f"p1-c{i}", "candidate_index": i, "prompt": "Q", "response": f"r{i}",
             "num_tokens": 3}
            for i in range(3)
        ]
    )
    judg = judgments_table(
        [
            {"prompt_id": "p1", "candidate_id": "p1-c0", "sample_index": 0, "judgment": "Score: 4", "score": 4.0,
             "parse_ok": True},
            {"prompt_id": "p1", "candidate_id": "p1-c0", "sample_index": 1, "judgment": "??", "score": None,
             "parse_ok": False, "parse_error": "no 'Score: N' in judgment"},
            {"prompt_id": "p1", "candidate_id": "p1-c0", "sample_index": 2, "judgment": "Score: 2", "score": 2.0,
             "parse_ok": True},
            {"prompt_id": "p1", "candidate_id": "p1-c1", "sample_index": 0, "judgment": "nothing", "score": None,
             "parse_ok": False, "parse_error": "no 'Score: N' in judgment"},
            {"prompt_id": "p1", "candidate_id": "p1-c2", "sample_index": 0, "judgment": "Score: 1", "score": 1.0,
             "parse_ok": True},
        ]
    )
    by_prompt = scored_candidates(cands, judg, "judgments")
    scored = {c.candidate_id: c for c in by_prompt["p1"]}
    assert set(scored) == {"p1-c0", "p1-c2"}  # c1 has no parsed judgment: excluded, not scored 0
    assert scored["p1-c0"].mean_score == pytest.approx(3.0) and scored["p1-c0"].num_scores == 2
    pair, _ = select_pair(by_prompt["p1"], PairsConfig())
    row = pair_row(*pair)
    assert (row["chosen"], row["rejected"], row["margin"]) == ("r0", "r2", 2.0)
    assert (row["chosen_chars"], row["chosen_tokens"]) == (2, 3)


def test_a_prompt_with_no_parsed_judgment_still_counts_as_a_prompt():
    cands = candidates_table(
        [{"prompt_id": "p9", "candidate_id": "p9-c0", "candidate_index": 0, "prompt": "Q", "response": "r"}]
    )
    judg = judgments_table([])
    assert scored_candidates(cands, judg, "judgments") == {"p9": []}


def test_judgment_of_an_unknown_candidate_is_an_error():
    cands = candidates_table([])
    judg = judgments_table(
        [{"prompt_id": "p1", "candidate_id": "ghost", "sample_index": 0, "judgment": "Score: 1", "score": 1.0,
          "parse_ok": True}]
    )
    with pytest.raises(DataError, match="ghost"):
        scored_candidates(cands, judg, "judgments")
