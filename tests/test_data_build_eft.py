"""`srlm data build-eft`: EFT from human-ranked groups, judged by a scripted judge whose judgments are written into
the responses it reviews, so which groups agree with the humans is worked out by hand."""

from __future__ import annotations

import json
import random
import re

import pyarrow as pa
import pytest

from srlm.config import load_config
from srlm.data.eft_from_rankings import (
    DISAGREES,
    HUMAN_TIES,
    TOO_FEW,
    UNPARSED,
    BuildEftRequest,
    BuildEftSettings,
    JudgedResponse,
    Judgment,
    agreeing_choice,
    balance_by_score,
    build_eft,
    is_eval_group,
)
from srlm.errors import DataError
from srlm.generation.base import Completion, GenerationBackend
from srlm.steps.context import StepContext
from srlm.store import artifacts
from srlm.store.schemas import schema


class ScriptedJudge(GenerationBackend):
    """Answers a judge prompt with the judgments written in the response under review: "scores:5,x,L4" gives three
    samples: Score 5, an unparsable one, and a Score 4 cut off at max_new_tokens. A response containing "HUGE"
    does not fit the context."""

    def __init__(self):
        self.requests = []

    def fits(self, requests):
        return ["HUGE" not in request[-1]["content"] for request in requests]

    def generate(self, requests, sampling, progress=True):
        self.requests.extend(requests)
        out = []
        for request in requests:
            samples = re.search(r"scores:([\w,.]*)", request[-1]["content"]).group(1).split(",")[: sampling.n]
            texts = ["I cannot tell." if s == "x" else f"Judged {s}.\nScore: {s.lstrip('L')}" for s in samples]
            reasons = ["length" if s.startswith("L") else "stop" for s in samples]
            out.append(Completion(texts=texts, num_tokens=[4] * len(texts), finish_reasons=reasons))
        return out

    def close(self):
        pass


# group -> [(human rank, judgments)]; what the agreement filter must do with each, K = 2
GROUPS = {
    "agree": [(0, "5,5"), (1, "3,3"), (2, "1,1")],  # kept: 5 > 3 > 1
    "second-sample": [(0, "2,4"), (1, "3,3")],  # kept: only the second sample of the best response agrees
    "disagree": [(0, "2,2"), (1, "4,4")],  # discarded: the model prefers the human-worse response
    "model-tie": [(0, "3,3"), (1, "3,3")],  # discarded: a tie on a human-ordered pair is not agreement
    "human-tie": [(0, "4,4"), (0, "2,2"), (1, "1,1")],  # kept: the tied pair constrains nothing
    "all-tied": [(0, "4,4"), (0, "2,2")],  # discarded: nothing to agree with
    "unparsed": [(0, "x,x"), (1, "1,1")],  # discarded: the best response has no usable judgment
    "cut-off": [(0, "L5,L5"), (1, "1,1")],  # discarded: both judgments of the best response were cut off
    "too-long": [(0, "4,4 HUGE"), (1, "2,2")],  # discarded: one judged response is left, too few to agree
}


def _groups_table(groups=GROUPS) -> pa.Table:
    rows = []
    for gid, items in groups.items():
        for i, (rank, scores) in enumerate(items):
            rows.append({"group_id": gid, "prompt_messages": [{"role": "user", "content": f"Question {gid}?"}],
                         "response_id": f"{gid}-{i}", "response": f"Answer {i}: scores:{scores}", "human_rank": rank,
                         "lang": "en", "source": "test"})
    return pa.Table.from_pylist(rows, schema=schema("eval_groups"))


def _ctx(store: str, **overrides) -> StepContext:
    return StepContext.from_config(
        load_config(None, {"store.uri": store, "run.name": "eft", **overrides}), echo=lambda _: None, progress=False
    )


def _build(tmp_store, *, settings=None, groups_table=None, out="eft", **request):
    groups_uri = f"{tmp_store}/import/eval_groups"
    if not artifacts.is_committed(groups_uri):
        artifacts.write_table(groups_uri, groups_table or _groups_table(), "eval_groups")
    settings = settings or BuildEftSettings(samples=2, eval_fraction=0.0, balance=False)
    req = BuildEftRequest("judge-model-dir", f"{tmp_store}/import", f"{tmp_store}/{out}", settings, **request)
    backend = ScriptedJudge()
    return build_eft(_ctx(tmp_store), req, backend=backend), backend


def _response(rank, *scores):
    return JudgedResponse(f"r{rank}", "", rank, "", [Judgment(f"Score: {s}", s) for s in scores])


def test_agreement_needs_strict_order_on_human_ordered_pairs():
    rng = random.Random(0)
    assert agreeing_choice([_response(0, 4.0), _response(1, 2.0)], rng) == ([0, 0], None)
    assert agreeing_choice([_response(0, 2.0), _response(1, 4.0)], rng) == (None, DISAGREES)
    assert agreeing_choice([_response(0, 3.0), _response(1, 3.0)], rng) == (None, DISAGREES)
    assert agreeing_choice([_response(0, 1.0, 5.0), _response(1, 3.0, 5.0)], rng) == ([1, 0], None)
    assert agreeing_choice([_response(0, 2.0), _response(0, 2.0)], rng) == (None, HUMAN_TIES)
    assert agreeing_choice([_response(0, 2.0)], rng) == (None, TOO_FEW)
    assert agreeing_choice([_response(0), _response(1, 2.0)], rng) == (None, UNPARSED)
    # Among several agreeing choices the draw is seeded: the same seed gives the same choice.
    many = [_response(0, 5.0, 4.0, 3.0), _response(1, 2.0, 1.0, 0.0)]
    draws = {tuple(agreeing_choice(many, random.Random(seed))[0]) for seed in range(20)}
    assert len(draws) > 1
    assert agreeing_choice(many, random.Random(7)) == agreeing_choice(many, random.Random(7))


def test_build_keeps_exactly_the_groups_that_agree(tmp_store):
    summary, backend = _build(tmp_store)
    rows = artifacts.read_table(f"{tmp_store}/eft/train", "sft_examples").to_pylist()
    kept = {row["example_id"].split("/")[0] for row in rows}
    assert kept == {"agree", "second-sample", "human-tie"}
    assert summary.groups_kept == 3 and summary.train_examples == len(rows) == 3 + 2 + 3
    assert summary.groups_discarded == {DISAGREES: 2, HUMAN_TIES: 1, UNPARSED: 2, TOO_FEW: 1}
    assert summary.responses_too_long == 1 and summary.judgments_truncated == 2
    by_id = {row["example_id"]: row for row in rows}
    best = by_id["second-sample/second-sample-0"]
    assert best["score"] == 4.0 and best["completion"] == "Judged 4.\nScore: 4" and best["kind"] == "eft"
    # The prompt is the rendered judge prompt the model judged (the judge step's prompt), one user turn.
    assert best["prompt_messages"] == [backend.requests[3][0]]
    assert "Question second-sample?" in best["prompt_messages"][0]["content"]
    assert all(row["score"] == float(re.search(r"Score: (\S+)$", row["completion"]).group(1)) for row in rows)
    stored = json.loads(artifacts.read_text(f"{tmp_store}/eft/build_eft_summary.json"))
    assert stored["groups_discarded"] == summary.groups_discarded and stored["train_examples"] == 8


def test_balance_trims_the_dominant_score_to_the_runner_up():
    rows = [{"example_id": f"e{i}", "score": s} for i, s in enumerate([4.0] * 6 + [3.0] * 2 + [5.0] * 3 + [1.0])]
    balanced = balance_by_score(rows, seed=0)
    counts = {s: sum(r["score"] == s for r in balanced) for s in (1.0, 3.0, 4.0, 5.0)}
    assert counts == {1.0: 1, 3.0: 2, 4.0: 3, 5.0: 3}
    assert [r["example_id"] for r in balanced] == sorted((r["example_id"] for r in balanced), key=lambda e: int(e[1:]))
    assert balance_by_score(rows, seed=0) == balanced
    assert balance_by_score(rows[:3], seed=0) == rows[:3]  # one grade only: nothing to balance against


def test_summary_reports_the_histogram_before_and_after_balancing(tmp_store):
    groups = {f"g{i}": [(0, "4,4"), (1, "2,2")] for i in range(4)} | {"h": [(0, "5,5"), (1, "4,4")]}
    settings = BuildEftSettings(samples=2, eval_fraction=0.0, balance=True)
    summary, _ = _build(tmp_store, settings=settings, groups_table=_groups_table(groups))
    assert summary.histogram_agreeing == {"0": 0, "1": 0, "2": 4, "3": 0, "4": 5, "5": 1}
    assert summary.histogram_train == {"0": 0, "1": 0, "2": 4, "3": 0, "4": 4, "5": 1}
    assert summary.examples_balanced_out == 1 and summary.train_examples == 9


def test_split_is_by_group_id_only_and_held_out_groups_are_never_judged(tmp_store):
    ids = [f"group-{i}" for i in range(400)]
    held = {g for g in ids if is_eval_group(g, 0.25)}
    assert 60 < len(held) < 140  # about a quarter
    assert held == {g for g in reversed(ids) if is_eval_group(g, 0.25)}
    assert {g for g in ids if is_eval_group(g, 0.0)} == set()

    groups = {f"q{i}": [(0, "5,5"), (1, "1,1")] for i in range(12)}
    settings = BuildEftSettings(samples=2, eval_fraction=0.4, balance=False)
    summary, backend = _build(tmp_store, settings=settings, groups_table=_groups_table(groups))
    expected = {g for g in groups if is_eval_group(g, 0.4)}
    assert 0 < len(expected) < len(groups)
    eval_table = artifacts.read_table(f"{tmp_store}/eft/eval_groups", "eval_groups")
    assert set(eval_table.column("group_id").to_pylist()) == expected
    assert eval_table.num_rows == 2 * len(expected) == summary.eval_responses
    train_ids = {row.split("/")[0] for row in artifacts.read_table(f"{tmp_store}/eft/train").column("example_id").to_pylist()}
    assert train_ids == set(groups) - expected
    judged = {re.search(r"Question (\w+)\?", r[0]["content"]).group(1) for r in backend.requests}
    assert judged == set(groups) - expected


def test_nothing_agreeing_is_one_clear_error_and_commits_nothing(tmp_store):
    groups = {"disagree": GROUPS["disagree"], "unparsed": GROUPS["unparsed"]}
    with pytest.raises(DataError, match=r"eval_groups: no judgment of judge-model-dir agreed .*--allow-empty"):
        _build(tmp_store, groups_table=_groups_table(groups))
    assert not artifacts.is_committed(f"{tmp_store}/eft/train")
    summary, _ = _build(tmp_store, allow_empty=True)
    assert summary.train_examples == 0 and artifacts.read_table(f"{tmp_store}/eft/train").num_rows == 0


def test_rerun_is_a_no_op_and_a_different_build_needs_force(tmp_store):
    first, _ = _build(tmp_store)
    again, backend = _build(tmp_store)
    assert again.reused and again.train_examples == first.train_examples and backend.requests == []
    other = BuildEftSettings(samples=1, eval_fraction=0.0, balance=False)
    with pytest.raises(DataError, match=r"eft/train: already holds another EFT build.*--force"):
        _build(tmp_store, settings=other)
    forced, _ = _build(tmp_store, settings=other, force=True)
    assert not forced.reused and forced.settings["samples"] == 1


def test_bad_settings_name_the_option(tmp_store):
    with pytest.raises(DataError, match="--samples"):
        _build(tmp_store, settings=BuildEftSettings(samples=0))
    with pytest.raises(DataError, match="--eval-fraction"):
        _build(tmp_store, settings=BuildEftSettings(eval_fraction=1.0))


def test_seed_sft_takes_the_train_table_through_seed_data_eft_uri(tmp_store):
    from srlm.steps.seeds import seed_tables
    from srlm.training.data import sft_dataset

    _build(tmp_store)
    ctx = _ctx(tmp_store, **{"seed_data.eft_uri": f"{tmp_store}/eft/train"})
    ift, eft = seed_tables(ctx)
    copied = artifacts.read_table(eft, "sft_examples")
    assert copied.num_rows == 8 and set(copied.column("kind").to_pylist()) == {"eft"}
    dataset = sft_dataset([ift, eft])
    last = dataset[len(dataset) - 1]
    assert last["completion"][0]["role"] == "assistant" and "Score:" in last["completion"][0]["content"]


def test_cli_builds_from_an_import_prefix_on_the_tiny_model(tiny_model_dir, tmp_store, capsys):
    from srlm.cli.main import main

    artifacts.write_table(f"{tmp_store}/import/eval_groups", _groups_table(), "eval_groups")
    args = ["data", "build-eft", "--model", str(tiny_model_dir), "--groups", f"{tmp_store}/import",
            "--out", f"{tmp_store}/eft", "--samples", "1", "--eval-fraction", "0.3", "--max-groups", "4",
            "--backend", "transformers", "--set", "judge.max_new_tokens=4", "--allow-empty", "--json"]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["groups_read"] == 4 and payload["settings"]["samples"] == 1
    assert payload["train_groups"] + payload["eval_groups"] == 4
    assert payload["judgments"] == sum(len(GROUPS[g]) for g in list(GROUPS)[:4] if not is_eval_group(g, 0.3))
    assert artifacts.is_committed(f"{tmp_store}/eft/train") and artifacts.is_committed(f"{tmp_store}/eft/eval_groups")
