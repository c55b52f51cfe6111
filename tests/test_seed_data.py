"""The shipped seed data (IFT + EFT), its loader, and the EFT builder that must reproduce eft.jsonl exactly."""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict

import pytest

from srlm.data import eft_builder
from srlm.data.eft_builder import build_eft, eft_jsonl, is_eval_source
from srlm.data.seed_data import (
    EFT_FILE,
    read_ift_rows,
    seed_path,
    seed_prompts,
    shipped_eft_rows,
    shipped_eft_table,
    shipped_ift_rows,
    shipped_ift_table,
)
from srlm.errors import ConfigError, DataError
from srlm.judging.parse import parse_score
from srlm.judging.template import load_template, render_judge_prompt
from srlm.store.schemas import schema


@pytest.fixture(scope="module")
def ift():
    return shipped_ift_rows()


@pytest.fixture(scope="module")
def eft():
    return shipped_eft_rows()


# --- IFT --------------------------------------------------------------------------------------------------------


def test_ift_has_enough_unique_nonempty_rows(ift):
    assert len(ift) >= 150
    assert len({row["id"] for row in ift}) == len(ift)
    normalised = {re.sub(r"\W+", " ", row["prompt"].lower()).strip() for row in ift}
    assert len(normalised) == len(ift), "two instructions differ only in case or punctuation"
    assert len({row["topic"] for row in ift}) == len(ift)
    for row in ift:
        assert re.fullmatch(r"ift-\d{4}", row["id"])
        for name in ("category", "topic", "prompt", "response"):
            assert row[name].strip() == row[name] and row[name], (row["id"], name)


def test_ift_covers_many_kinds_of_request(ift):
    categories = Counter(row["category"] for row in ift)
    assert len(categories) >= 12
    assert max(categories.values()) <= 0.15 * len(ift)


def test_ift_answers_are_short_enough_for_cpu_training(ift):
    words = sorted(len(row["response"].split()) for row in ift)
    assert words[-1] <= 200
    assert 30 <= words[len(words) // 2] <= 150


def test_factual_errors_change_the_answer(ift):
    with_errors = [row for row in ift if row.get("factual_error")]
    assert len(with_errors) >= 50
    for row in with_errors:
        wrong = row["response"].replace(row["factual_error"]["find"], row["factual_error"]["replace"])
        assert wrong != row["response"]


def test_seed_prompts_are_the_ift_instructions(ift):
    assert seed_prompts() == [row["prompt"] for row in ift]


# --- EFT --------------------------------------------------------------------------------------------------------


def test_every_eft_target_ends_with_its_score(eft):
    for row in eft:
        justification, last_line = row["response"].rsplit("\n", 1)
        assert last_line == f"Score: {row['score']}"
        assert parse_score(last_line).score == row["score"]
        assert parse_score(row["response"]).score == row["score"]
        assert 10 <= len(justification.split()) <= 100, row["id"]


def test_every_eft_prompt_is_the_rendered_judge_template(eft, ift):
    template = load_template("additive_5pt")
    instruction_of = {row["id"]: row["prompt"] for row in ift}
    for row in eft:
        assert row["instruction"] == instruction_of[row["source_ift_id"]]
        assert row["prompt"] == render_judge_prompt(template, row["instruction"], row["candidate"])


def test_eft_scores_are_balanced_and_follow_the_degradation(eft):
    by_score = Counter(row["score"] for row in eft)
    assert set(by_score) == {0, 1, 2, 3, 4, 5}
    assert min(by_score.values()) >= 0.14 * len(eft)
    score_of = {d.name: d.score for d in eft_builder.DEGRADATIONS}
    for row in eft:
        assert row["score"] == score_of[row["degradation"]]
    assert set(Counter(row["degradation"] for row in eft)) == set(score_of)


def test_eft_ids_unique_and_one_score_per_candidate_per_prompt(eft):
    assert len({row["id"] for row in eft}) == len(eft)
    scores = defaultdict(list)
    for row in eft:
        scores[row["source_ift_id"]].append(row["score"])
    assert all(len(s) == len(set(s)) == eft_builder.DEFAULT_PER_PROMPT for s in scores.values())


def test_eval_split_is_held_out_by_source_prompt(eft):
    split_of = defaultdict(set)
    for row in eft:
        split_of[row["source_ift_id"]].add(row["split"])
    assert all(len(splits) == 1 for splits in split_of.values())
    eval_sources = {source for source, splits in split_of.items() if splits == {"eval"}}
    assert eval_sources == {source for source in split_of if is_eval_source(source)}
    assert 0.05 <= len(eval_sources) / len(split_of) <= 0.2


def test_builder_reproduces_the_committed_file(ift):
    committed = seed_path(EFT_FILE).read_text(encoding="utf-8")
    assert eft_jsonl(build_eft(ift)) == committed


def test_builder_is_deterministic_and_seeded(ift):
    first = build_eft(ift[:40], per_prompt=3, seed=7)
    assert build_eft(ift[:40], per_prompt=3, seed=7) == first
    assert build_eft(ift[:40], per_prompt=3, seed=8) != first


def test_fewer_candidates_per_prompt_keep_the_balance(ift):
    rows = build_eft(ift, per_prompt=2)
    assert len(rows) == 2 * len(ift)
    counts = Counter(row["score"] for row in rows)
    assert max(counts.values()) - min(counts.values()) <= 2


def test_per_prompt_out_of_range_is_a_config_error(ift):
    with pytest.raises(ConfigError, match="per_prompt"):
        build_eft(ift, per_prompt=7)


# --- what each degradation does ---------------------------------------------------------------------------------

LIST_ANSWER = (
    "Try these:\n- First idea here.\n- Second idea here.\n- Third idea here.\n- Fourth idea here.\n\nGood luck!"
)
PROSE_ANSWER = " ".join(f"Sentence number {i} explains one more part of the answer clearly." for i in range(1, 8))


def _rows():
    return [
        {"id": "ift-0001", "category": "a", "topic": "listing ideas", "prompt": "Give me ideas.",
         "response": LIST_ANSWER},
        {"id": "ift-0002", "category": "b", "topic": "a long explanation", "prompt": "Explain it.",
         "response": PROSE_ANSWER, "factual_error": {"find": "number 3", "replace": "number 33"}},
    ]


def _candidate(name: str, row_index: int, seed: int = 0):
    degradation = next(d for d in eft_builder.DEGRADATIONS if d.name == name)
    rows = _rows()
    return degradation.make(rows[row_index], rows, random.Random(seed))


def test_truncated_is_a_prefix_that_stops_mid_sentence():
    for seed in range(20):
        candidate = _candidate("truncated", 1, seed)
        assert PROSE_ANSWER.startswith(candidate.text) and len(candidate.text) < 0.7 * len(PROSE_ANSWER)
        assert not candidate.text.endswith((".", "!", "?"))


def test_list_degradations_keep_the_leading_items_only():
    half = _candidate("list_half", 0)
    assert half.text == "Try these:\n- First idea here.\n- Second idea here."
    assert half.facts["dropped"] == "Third idea here"
    first = _candidate("list_first", 0)
    assert first.text == "Try these:\n- First idea here."
    assert "\n" not in _candidate("flattened", 0).text


def test_wrong_fact_off_topic_and_wrappers():
    assert "number 33" in _candidate("wrong_fact", 1).text
    assert _candidate("off_topic", 1).text == LIST_ANSWER  # the only row of another category
    for name in ("chatty", "padded"):
        candidate = _candidate(name, 1)
        assert PROSE_ANSWER in candidate.text and candidate.text != PROSE_ANSWER
    assert PROSE_ANSWER not in _candidate("evasive", 1).text


def test_list_degradations_apply_only_to_list_answers():
    rows = _rows()
    applicable = {d.name for d in eft_builder.DEGRADATIONS if d.applies(rows[1])}
    assert not applicable & {"list_half", "list_first", "flattened"}
    assert "wrong_fact" in applicable
    assert "wrong_fact" not in {d.name for d in eft_builder.DEGRADATIONS if d.applies(rows[0])}


# --- tables and loader ------------------------------------------------------------------------------------------


def test_ift_table_matches_the_sft_schema(ift):
    table = shipped_ift_table()
    assert table.schema.equals(schema("sft_examples"))
    assert table.num_rows == len(ift)
    first = table.slice(0, 1).to_pylist()[0]
    assert first == {
        "example_id": ift[0]["id"],
        "kind": "ift",
        "prompt_messages": [{"role": "user", "content": ift[0]["prompt"]}],
        "completion": ift[0]["response"],
        "source": "srlm-seed",
        "score": None,
    }


def test_eft_table_splits(eft):
    train, held_out, everything = (shipped_eft_table(s) for s in ("train", "eval", "all"))
    for table in (train, held_out, everything):
        assert table.schema.equals(schema("sft_examples"))
        assert set(table.column("kind").to_pylist()) == {"eft"}
    assert train.num_rows + held_out.num_rows == everything.num_rows == len(eft)
    assert held_out.num_rows > 0
    assert everything.column("score").to_pylist() == [float(row["score"]) for row in eft]
    with pytest.raises(ConfigError, match="split"):
        shipped_eft_table("test")


def test_eft_table_with_fewer_candidates_per_prompt(ift):
    small = shipped_eft_table("all", per_prompt=2)
    assert small.num_rows == 2 * len(ift)
    assert small.schema.equals(schema("sft_examples"))
    train_ids = set(shipped_eft_table("train", per_prompt=2).column("example_id").to_pylist())
    eval_ids = set(shipped_eft_table("eval", per_prompt=2).column("example_id").to_pylist())
    assert train_ids | eval_ids == set(small.column("example_id").to_pylist()) and not train_ids & eval_ids


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"id": "x", "category": "c", "topic": "t", "prompt": "p"}, r"bad\.jsonl:2: field 'response'"),
        ({"id": "x", "category": "c", "topic": "t", "prompt": "p", "response": "r",
          "factual_error": {"find": "zzz", "replace": "y"}}, r"bad\.jsonl:2: field 'factual_error\.find'"),
        ({"id": "ift-1", "category": "c", "topic": "t", "prompt": "p", "response": "r"}, r"already used on line 1"),
    ],
)
def test_bad_ift_rows_name_file_line_and_field(tmp_path, line, message):
    good = {"id": "ift-1", "category": "c", "topic": "t", "prompt": "p", "response": "r"}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_ift_rows(path)


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"id": "ift-1"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.jsonl:1"):
        read_ift_rows(path)


def test_cli_check_detects_a_stale_file(tmp_path, capsys):
    assert eft_builder.main(["--check"]) == 0
    stale = tmp_path / "eft.jsonl"
    stale.write_text(seed_path(EFT_FILE).read_text(encoding="utf-8").replace("Score: 5", "Score: 4", 1))
    assert eft_builder.main(["--check", "--output", str(stale)]) == 1
    written = tmp_path / "small.jsonl"
    assert eft_builder.main(["--output", str(written), "--per-prompt", "1"]) == 0
    assert len(written.read_text(encoding="utf-8").splitlines()) == len(shipped_ift_rows())
