"""The reward-model metrics as the paper defines them (Yuan et al., 2024, section 3: pairwise accuracy counts the
pairs whose order agrees with the humans'; "5-best %" is how often a response scored a perfect 5 is the one humans
ranked best), on groups small enough to check by eye."""

from __future__ import annotations

import pytest

from srlm.errors import DataError
from srlm.evaluation.reward_model import RankedGroup, RankedResponse, reward_model_metrics

X = None  # a judgment without a parsable score


def _group(*responses: tuple[int, list[float | None]], gid: str = "g") -> RankedGroup:
    """(human rank, K judge scores) per response."""
    return RankedGroup(gid, [{"role": "user", "content": "q"}],
                       [RankedResponse(f"{gid}-{i}", f"r{i}", rank, scores) for i, (rank, scores) in enumerate(responses)])


def test_a_model_tie_is_not_agreement():
    tied = _group((0, [4, 4, 4]), (1, [4, 4, 4]), gid="tied")
    right = _group((0, [5, 5, 5]), (1, [2, 2, 2]), gid="right")
    m = reward_model_metrics([tied, right])
    assert m.n_pairs == 2
    assert m.pairwise_accuracy == 0.5  # only "right" agrees; the tie earns nothing
    assert m.pairwise_accuracy_tie_half == 0.75  # the tie-credit variant, named as such
    assert m.model_tie_rate == 0.5
    assert m.headline()["pairwise_accuracy"] == 0.5 and m.headline()["pairwise_accuracy_tie_half"] == 0.75


def test_all_ties_is_chance_only_in_the_tie_half_variant():
    m = reward_model_metrics([_group((0, [3, 3, 3]), (1, [3, 3, 3]), (2, [3, 3, 3]))])
    assert (m.pairwise_accuracy, m.pairwise_accuracy_tie_half, m.model_tie_rate) == (0.0, 0.5, 1.0)


def test_one_parsed_five_is_not_a_perfect_five():
    group = _group((0, [5, 5, 5]), (1, [5, X, X]), (2, [2, 2, 2]))
    m = reward_model_metrics([group])
    assert m.n_perfect_five == 1 and m.five_best == 1.0  # only the human-best response has a mean of 5 over K
    # Even where one parsed judgment is enough for a score (the 5 competes in pairs), it is no perfect 5.
    lenient = reward_model_metrics([group], min_parsed_samples=1)
    assert lenient.n_perfect_five == 1 and lenient.five_best == 1.0
    assert lenient.n_pairs == 3 and lenient.pairwise_accuracy == pytest.approx(2 / 3)  # 5 vs 5 is a tie


def test_a_partly_parsed_response_has_no_score_by_default():
    group = _group((0, [2, X, X]), (1, [4, 4, 4]), (2, [1, 1, 1]))
    m = reward_model_metrics([group])
    assert group.responses[0].score() is None and group.responses[0].score(1) == 2.0
    assert m.n_pairs == 1 and m.pairwise_accuracy == 1.0  # rank 1 vs rank 2 only
    assert m.n_responses_partly_parsed == 1 and m.response_parse_rate == pytest.approx(2 / 3)
    assert "1 partly parsed left out" in m.to_text()
    assert m.best_scored_five == 0.0  # the human-best response was judged and got no 5


def test_the_text_names_the_strict_headline():
    m = reward_model_metrics([_group((0, [4, 4, 4]), (1, [4, 4, 4])), _group((0, [5, 5, 5]), (1, [1, 1, 1]), gid="h")])
    line = next(line for line in m.to_text().splitlines() if "pairwise accuracy" in line)
    assert "50.0%" in line and "strict" in line and "75.0% with a tie counted 0.5" in line


def test_min_parsed_samples_below_one_is_refused():
    with pytest.raises(DataError, match="min_parsed_samples"):
        reward_model_metrics([_group((0, [1]), (1, [2]))], min_parsed_samples=0)
