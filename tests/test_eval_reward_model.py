"""Reward-model metrics against human rankings, on groups whose answers are worked out by hand, and the
`srlm eval reward-model` command end to end on the tiny model."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pytest

from srlm.cli.main import main
from srlm.evaluation.reward_model import (
    RankedGroup,
    RankedResponse,
    groups_from_table,
    judge_instruction,
    reward_model_metrics,
    score_groups,
)
from srlm.generation.base import Completion, GenerationBackend
from srlm.judging.rubric import RubricSampling
from srlm.judging.template import load_template
from srlm.store.schemas import schema

# (group, human rank, judge samples) — "x" is a judgment without a parsable score
GROUPS = {
    "g1": [(0, "5,5,5"), (1, "3,3,3"), (2, "4,4,4")],
    "g2": [(0, "4,x,4"), (1, "4,4,4")],
    "g3": [(0, "2,2,2"), (1, "x,x,x")],
    "g4": [(0, "5,5,5"), (0, "5,5,5"), (1, "1,1,1")],
    "g5": [(0, "3,3,3"), (1, "5,5,5")],
}


class ScoreEchoBackend(GenerationBackend):
    """Answers each judge prompt with the scores written in the response under review ("scores:5,x,4"). A judge
    prompt longer than `max_prompt_chars` does not fit its context."""

    def __init__(self, max_prompt_chars=None):
        self.requests = []
        self.sampling = None
        self.max_prompt_chars = max_prompt_chars

    def fits(self, requests):
        limit = self.max_prompt_chars
        return [limit is None or len(request[-1]["content"]) <= limit for request in requests]

    def generate(self, requests, sampling, progress=True):
        self.requests.extend(requests)
        self.sampling = sampling
        out = []
        for request in requests:
            content = request[-1]["content"]
            scores = re.search(r"<response>scores:([^<]*)</response>", content).group(1).split(",")
            texts = ["I cannot say." if s == "x" else f"Fine answer.\nScore: {s}" for s in scores][: sampling.n]
            out.append(Completion(texts=texts, num_tokens=[5] * len(texts), finish_reasons=["stop"] * len(texts)))
        return out

    def close(self):
        pass


def _groups() -> list[RankedGroup]:
    return [
        RankedGroup(gid, [{"role": "user", "content": f"question {gid}"}],
                    [RankedResponse(f"{gid}-{i}", f"scores:{s}", rank) for i, (rank, s) in enumerate(rows)])
        for gid, rows in GROUPS.items()
    ]


def test_metrics_match_hand_computed_values():
    backend = ScoreEchoBackend()
    groups = score_groups(_groups(), backend, RubricSampling(load_template(), num_samples=3))
    assert backend.sampling.n == 3 and len(backend.requests) == 12
    assert "question g1" in backend.requests[0][0]["content"]
    m = reward_model_metrics(groups)
    # A response is scored only with all 3 judgments parsed: g2-0 (4,x,4) and g3-1 (x,x,x) are not, so g2 and g3
    # keep one scored response each. Human-ordered pairs: g1 (1, 1, 0), g4 (1, 1; its rank-0 tie is no pair), g5 0.
    assert m.n_pairs == 6
    assert m.pairwise_accuracy == pytest.approx(4 / 6)
    assert m.pairwise_accuracy_tie_half == pytest.approx(4 / 6) and m.model_tie_rate == 0.0
    assert m.exact_match == pytest.approx(1 / 3)  # only g4 (ties match ties)
    assert m.n_groups_ranked == 3
    assert m.spearman == pytest.approx((0.5 + 1.0 - 1.0) / 3)
    assert m.kendall_tau == pytest.approx((1 / 3 + 1.0 - 1.0) / 3)
    assert m.five_best == pytest.approx(3 / 4)  # perfect 5s: g1-0, g4-0, g4-1 are human-best; g5-1 is not
    assert m.n_perfect_five == 4
    assert m.best_scored_five == pytest.approx(2 / 5)
    assert m.parse_rate == pytest.approx(32 / 36)
    assert m.response_parse_rate == pytest.approx(10 / 12) and m.n_responses_partly_parsed == 1
    assert m.n_groups == 5


def test_metrics_with_one_parsed_judgment_enough():
    m = reward_model_metrics(score_groups(_groups(), ScoreEchoBackend(), RubricSampling(load_template())), min_parsed_samples=1)
    # g2-0 now scores 4 (the mean of its two parsed judgments) and ties g2-1: a 7th pair, not agreement.
    assert m.n_pairs == 7
    assert m.pairwise_accuracy == pytest.approx(4 / 7)
    assert m.pairwise_accuracy_tie_half == pytest.approx(4.5 / 7)
    assert m.model_tie_rate == pytest.approx(1 / 7)
    assert m.exact_match == pytest.approx(1 / 4)  # g1, g2 (model tie, human order), g4 ✓, g5
    assert m.spearman == pytest.approx((0.5 + 0.0 + 1.0 - 1.0) / 4)  # g2's constant model scores count 0
    assert m.kendall_tau == pytest.approx((1 / 3 + 0.0 + 1.0 - 1.0) / 4)
    assert m.response_parse_rate == pytest.approx(11 / 12) and m.n_responses_partly_parsed == 0
    assert (m.five_best, m.n_perfect_five) == (pytest.approx(3 / 4), 4)


def test_responses_too_long_for_the_judge_are_left_out_and_counted():
    groups = _groups()
    long_answer = "scores:1,1,1 " + "padding " * 400
    groups[0].responses.append(RankedResponse("g1-long", long_answer, 3))
    backend = ScoreEchoBackend(max_prompt_chars=2500)
    score_groups(groups, backend, RubricSampling(load_template(), num_samples=3))
    assert len(backend.requests) == 12 and not any("padding" in r[0]["content"] for r in backend.requests)
    long = groups[0].responses[-1]
    assert long.too_long and long.scores == []
    m = reward_model_metrics(groups)
    assert m.n_responses_too_long == 1
    # Everything else is as if the long response were not there; it does not count as a parse failure.
    reference = reward_model_metrics(score_groups(_groups(), ScoreEchoBackend(), RubricSampling(load_template())))
    assert (m.n_pairs, m.pairwise_accuracy, m.response_parse_rate) == (
        reference.n_pairs, reference.pairwise_accuracy, reference.response_parse_rate
    )
    assert "1 responses too long" in m.to_text()

def test_all_unparsed_gives_no_metrics_but_a_parse_rate():
    groups = [RankedGroup("g", [{"role": "user", "content": "q"}], [RankedResponse("a", "r", 0, [None]), RankedResponse("b", "s", 1, [None])])]
    m = reward_model_metrics(groups)
    assert m.pairwise_accuracy is None and m.spearman is None and m.parse_rate == 0.0 and m.n_pairs == 0


def test_multi_turn_instruction_keeps_the_conversation():
    text = judge_instruction([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                              {"role": "user", "content": "and then?"}])
    assert text.endswith("and then?") and "Assistant: hello" in text


def _eval_groups_table() -> pa.Table:
    rows = []
    for gid, items in GROUPS.items():
        for i, (rank, _) in enumerate(items):
            rows.append({"group_id": gid, "prompt_messages": [{"role": "user", "content": f"Question {gid}?"}],
                         "response_id": f"{gid}-{i}", "response": f"An answer {i}.", "human_rank": rank,
                         "lang": "en", "source": "test"})
    rows.append({"group_id": "deep", "prompt_messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                 {"role": "user", "content": "c"}], "response_id": "deep-0", "response": "d", "human_rank": 0,
                 "lang": "en", "source": "test"})
    return pa.Table.from_pylist(rows, schema=schema("eval_groups"))


def test_groups_from_table_first_turns_only():
    table = _eval_groups_table()
    assert [g.group_id for g in groups_from_table(table)] == list(GROUPS)
    assert [g.group_id for g in groups_from_table(table, first_turn_only=False)][-1] == "deep"


def test_cli_reward_model_on_tiny_model(tiny_model_dir, tmp_store, capsys, register_run_checkpoint):
    from srlm.store import artifacts
    from srlm.store.layout import RunLayout

    register_run_checkpoint(RunLayout(tmp_store, "demo"), "M0")

    data = f"{tmp_store}/import"
    artifacts.write_table(f"{data}/eval_groups", _eval_groups_table(), "eval_groups")
    run = f"{tmp_store}/runs/demo"
    args = ["eval", "reward-model", "--model", str(tiny_model_dir), "--data", data, "--samples", "2",
            "--backend", "transformers", "--set", "judge.max_new_tokens=4", "--max-groups", "3",
            "--run", run, "--checkpoint", "M0", "--json"]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["n_groups"] == 3 and payload["num_samples"] == 2
    assert 0.0 <= payload["parse_rate"] <= 1.0
    table = artifacts.read_table(payload["recorded"], "eval_results")
    assert "pairwise_accuracy" in table.column("metric").to_pylist()
    assert main(args) == 0
    assert "already committed" in capsys.readouterr().out
