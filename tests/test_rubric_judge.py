"""RubricJudge: a head-to-head compared by the loop's own judge (each response scored with the additive rubric, the
higher mean of parsed scores wins), and its guards: too few parsed scores, equal means and over-long prompts are
ties, never a side; an endpoint judge cannot score."""

from __future__ import annotations

import json

import pytest

from srlm.errors import ConfigError
from srlm.evaluation.head2head import System, compare
from srlm.evaluation.judges import RubricJudge
from srlm.evaluation.pairwise import PairToJudge
from srlm.generation.base import Completion, GenerationBackend
from srlm.judging.rubric import RubricSampling
from srlm.judging.template import load_template


class ScoringBackend(GenerationBackend):
    """Judges by a table: response text → the judgment texts to return (one per sample); a response named in
    `too_long` does not fit the context."""

    name = "scoring"

    def __init__(self, judgments: dict[str, list[str]], too_long: frozenset[str] = frozenset()):
        self.judgments, self.too_long, self.requests = judgments, too_long, []

    def _response(self, request) -> str:
        content = request[0]["content"]
        return content.split("<response>", 1)[1].split("</response>", 1)[0]

    def fits(self, requests):
        return [self._response(r) not in self.too_long for r in requests]

    def generate(self, requests, sampling, *, progress=True):
        self.requests.extend(requests)
        out = []
        for request in requests:
            texts = self.judgments[self._response(request)][: sampling.n]
            out.append(Completion(texts, [len(t.split()) for t in texts], ["stop"] * len(texts)))
        return out

    def close(self) -> None:
        pass


def judge_with(judgments, *, too_long=frozenset(), num_samples=3, required_parsed=3) -> RubricJudge:
    return RubricJudge(
        ScoringBackend(judgments, too_long), identity="local:m",
        sampling=RubricSampling(load_template(), num_samples=num_samples), template_name="additive_5pt",
        required_parsed=required_parsed,
    )


def scored(*scores) -> list[str]:
    return [f"Fine.\nScore: {s}" if s is not None else "I cannot tell." for s in scores]


def test_the_higher_mean_wins_and_equal_means_tie():
    judge = judge_with({"good": scored(4, 5, 4), "poor": scored(2, 1, 2), "also good": scored(5, 4, 4)})
    pairs = [PairToJudge("Q1", "poor", "good"), PairToJudge("Q2", "good", "poor"), PairToJudge("Q3", "good", "also good")]
    verdicts = judge.pair_verdicts(pairs)
    assert [v.preference for v in verdicts] == [2.0, 1.0, 1.5]
    assert [v.forward for v in verdicts] == ["2", "1", "tie"]  # an equal mean is a decided tie: both scored
    assert verdicts[0].rubric["output_2"] == {
        "judgments": scored(4, 5, 4), "scores": [4.0, 5.0, 4.0], "mean": pytest.approx(13 / 3), "too_long": False
    }
    # Every response judged with the judge step's template, K samples in one request.
    assert all("additive 5-point" in r[0]["content"] for r in judge.backend.requests)
    assert len(judge.backend.requests) == 6


def test_too_few_parsed_scores_or_a_prompt_too_long_is_a_tie_not_a_side():
    judgments = {"parsed": scored(1, 1, 1), "two of three": scored(5, None, 5), "long": scored(5, 5, 5)}
    strict = judge_with(judgments)
    missing, long = strict.pair_verdicts([PairToJudge("Q", "parsed", "two of three"), PairToJudge("Q", "parsed", "long")])
    assert (missing.preference, missing.forward, missing.parsed_orders) == (1.5, None, 0)
    assert missing.rubric["output_2"]["mean"] is None and missing.rubric["output_2"]["scores"] == [5.0, None, 5.0]
    # judge.min_parsed_samples 2: two of three parsed scores compete, and win.
    lenient = judge_with(judgments, required_parsed=2)
    assert lenient.pair_verdicts([PairToJudge("Q", "parsed", "two of three")])[0].preference == 2.0
    too_long = judge_with(judgments, too_long=frozenset({"long"}))
    verdict = too_long.pair_verdicts([PairToJudge("Q", "parsed", "long")])[0]
    assert verdict.preference == 1.5 and verdict.rubric["output_2"]["too_long"] and verdict.forward is None


def test_compare_reports_a_rubric_comparison_without_position_statistics():
    judge = judge_with({"A's": scored(4, 4, 4), "B's": scored(1, 2, 1)})
    a = System("A", "A", "outputs", {"Q1": "A's", "Q2": "B's"})
    b = System("B", "B", "outputs", {"Q1": "B's", "Q2": "B's"})
    result = compare(a, b, ["Q1", "Q2"], judge)
    assert (result.a_wins, result.ties, result.b_wins, result.comparison) == (1, 1, 0, "rubric")
    assert result.position_consistency is None and result.first_position_rate is None
    assert result.order_parse_rate == 1.0  # both responses scored on every prompt
    assert "both responses scored on 100.0% of prompts" in result.to_text()
    assert "position consistency" not in result.to_text()
    raw = json.loads(result.annotations.column("raw_judgments_json")[0].as_py())
    assert raw["rubric"]["output_2"]["mean"] == 4.0 and raw["judge"] == judge.name


def test_required_parsed_outside_the_samples_is_a_config_error():
    with pytest.raises(ConfigError, match="min_parsed_samples"):
        judge_with({}, num_samples=2, required_parsed=3)


def test_head2head_rubric_with_an_endpoint_judge_is_one_clear_error(tmp_path):
    from srlm.config import load_config
    from srlm.evaluation.use_cases import JudgeChoice, make_judge
    from srlm.steps.context import StepContext

    ctx = StepContext.from_config(load_config(None, {"store.uri": str(tmp_path)}), echo=lambda *_: None)
    with pytest.raises(ConfigError, match="--template rubric: scores with a local model's judge"):
        make_judge(ctx, JudgeChoice(spec="http://127.0.0.1:9/v1"), kept_backend=None, a_spec="M1", rubric=True)
