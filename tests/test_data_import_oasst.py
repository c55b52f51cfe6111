"""OASST importer: which replies become IFT, which sibling groups become evaluation groups, and why others don't.

tests/data/oasst_trees.jsonl holds small hand-written trees (see tests/data/README.md for what each one tests).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from srlm.data.import_job import ImportRequest, run_import
from srlm.data.importers import oasst
from srlm.data.importers.options import ReadOptions
from srlm.errors import DataError
from srlm.store import read_table

DATA = Path(__file__).parent / "data"
TREES = DATA / "oasst_trees.jsonl"


def harvest(path: Path, **options):
    examples, groups, issues, filtered = [], [], [], Counter()
    for outcome in oasst.read(path, ReadOptions(**options)):
        examples += outcome.examples
        groups += outcome.groups
        filtered += outcome.filtered
        if outcome.issue:
            issues.append(outcome.issue)
    return examples, groups, issues, filtered


def group_ranks(groups) -> dict[str, dict[str, int]]:
    return {g.group_id: {r.response_id: r.human_rank for r in g.responses} for g in groups}


def test_english_ift_is_the_rank0_reply_to_each_first_turn():
    examples, _, issues, _ = harvest(TREES)
    assert issues == []
    pairs = [(e.prompt_messages, e.completion, e.kind) for e in examples]
    assert pairs == [
        ((("user", "What is the capital of France?"),), "The capital of France is Paris.", "ift"),
        # a tie at rank 0: the first reply in export order
        ((("user", "Say hello."),), "Hello!", "ift"),
    ]
    assert all(e.source == "oasst:oasst_trees.jsonl" and e.score is None for e in examples)


def test_eval_groups_at_every_depth_with_renumbered_ranks_and_ties():
    _, groups, _, _ = harvest(TREES)
    assert group_ranks(groups) == {
        # a-a3 deleted, a-a5 failed review, a-a4 unranked: the remaining ranks 1 and 0 stay as they are
        "a-p1": {"a-a1": 1, "a-a2": 0},
        # second turn: ranks 0, 0, 3 → 0, 0, 1 (tie kept, gap closed); a-p3's lone ranked reply is no group
        "a-p2": {"a-a6": 0, "a-a7": 0, "a-a8": 1},
        # the synthetic rank-0 reply is left out: 1, 2 → 0, 1
        "c-p1": {"c-a2": 0, "c-a3": 1},
        "g-p1": {"g-a1": 0, "g-a2": 0, "g-a3": 1},
    }
    deep = next(g for g in groups if g.group_id == "a-p2")
    assert deep.prompt_messages == (
        ("user", "What is the capital of France?"),
        ("assistant", "The capital of France is Paris."),
        ("user", "And of Germany?"),
    )
    assert deep.lang == "en"


def test_excluded_messages_take_their_subtree_with_them():
    _, groups, _, filtered = harvest(TREES)
    ids = {r.response_id for g in groups for r in g.responses}
    # a-p4 is deleted: its ranked replies a-a10/a-a11 must not surface as a group
    assert "a-p4" not in {g.group_id for g in groups} and not ids & {"a-a10", "a-a11", "a-a3", "a-a5", "c-a1"}
    assert filtered["messages_deleted"] == 3  # a-p4, a-a3, root of tree f
    assert filtered["messages_review_failed"] == 1
    assert filtered["messages_synthetic"] == 1


def test_tree_states_and_duplicate_trees():
    _, groups, _, filtered = harvest(TREES)
    assert filtered["trees_aborted_low_grade"] == 1 and filtered["trees_duplicate"] == 1
    assert "d-p1" not in {g.group_id for g in groups}
    examples, groups, _, filtered = harvest(TREES, tree_states=frozenset({"aborted_low_grade"}))
    assert [g.group_id for g in groups] == ["d-p1"] and [e.completion for e in examples] == [
        "Why did the chicken cross the road?"
    ]
    assert filtered["trees_ready_for_export"] == 5  # a, b, c, f, g (the repeated a is a duplicate first)


def test_language_selection():
    examples, groups, _, filtered = harvest(TREES, lang="de")
    assert [e.completion for e in examples] == ["Rom."]
    assert group_ranks(groups) == {"b-p1": {"b-a1": 0, "b-a2": 1}}
    assert groups[0].lang == "de"
    examples, groups, _, _ = harvest(TREES, lang="all")
    assert len(examples) == 3 and len(groups) == 5
    _, _, _, filtered = harvest(TREES)
    assert filtered["ranked_prompts_other_language"] == 1


def test_include_synthetic_keeps_the_synthetic_best_reply():
    examples, groups, _, _ = harvest(TREES, include_synthetic=True)
    assert "Red (machine-written)." in [e.completion for e in examples]
    assert group_ranks(groups)["c-p1"] == {"c-a1": 0, "c-a2": 1, "c-a3": 2}


def flatten(tree_file: Path) -> list[dict]:
    """The flat message export of a tree export (one message per row, parent links, tree fields per message)."""
    rows = []
    for line in tree_file.read_text().splitlines():
        tree = json.loads(line)
        pending = [tree["prompt"]]
        while pending:
            message = pending.pop(0)
            row = {k: v for k, v in message.items() if k != "replies"}
            row.update(message_tree_id=tree["message_tree_id"], tree_state=tree["tree_state"])
            rows.append(row)
            pending.extend(message["replies"])
    return rows


def test_flat_message_export_gives_the_same_result(tmp_path):
    flat = tmp_path / "oasst.messages.jsonl"
    flat.write_text("".join(json.dumps(row) + "\n" for row in flatten(TREES)))
    examples, groups, issues, filtered = harvest(flat)
    tree_examples, tree_groups, _, _ = harvest(TREES)
    assert issues == []
    assert [(e.prompt_messages, e.completion) for e in examples] == [
        (e.prompt_messages, e.completion) for e in tree_examples
    ]
    assert group_ranks(groups) == group_ranks(tree_groups)
    assert filtered["messages_duplicate"] == len(flatten(TREES)) - len({r["message_id"] for r in flatten(TREES)})


def test_flat_parquet_with_float_ranks_like_the_hugging_face_export(tmp_path):
    rows = flatten(TREES)
    table = pa.Table.from_pylist(rows).set_column(
        list(rows[0]).index("rank"), "rank", pa.array([r["rank"] for r in rows], pa.float64())
    )
    path = tmp_path / "train.parquet"
    pq.write_table(table, path)
    _, groups, issues, _ = harvest(path)
    assert issues == []
    assert group_ranks(groups) == group_ranks(harvest(TREES)[1])


def test_flat_export_with_a_missing_parent_drops_the_orphans(tmp_path):
    rows = [r for r in flatten(TREES) if r["message_id"] != "a-a2"]  # a-a2 carries the second turn
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, groups, _, filtered = harvest(path)
    assert "a-p2" not in {g.group_id for g in groups} and filtered["messages_orphaned"] >= 1


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (
            lambda t: t["prompt"]["replies"][0].update(rank="first"),
            "prompt.replies[0].rank",
            "expected a non-negative integer or null, got 'first'",
        ),
        (
            lambda t: t["prompt"]["replies"][1]["replies"][0].update(role="bot"),
            "prompt.replies[1].replies[0].role",
            "expected one of prompter/assistant, got 'bot'",
        ),
        (
            lambda t: t["prompt"]["replies"][1]["replies"][0].update(role="assistant"),
            "prompt.replies[1].replies[0].role",
            "expected a prompter reply to assistant message a-a2, got 'assistant'",
        ),
        (
            lambda t: t["prompt"].update(role="assistant"),
            "prompt.role",
            "the root message must be the prompter's, got 'assistant'",
        ),
        (lambda t: t["prompt"]["replies"][2].pop("text"), "prompt.replies[2].text", "missing"),
        (lambda t: t["prompt"].update(deleted="no"), "prompt.deleted", "expected true/false, got 'no'"),
    ],
)
def test_malformed_trees_name_line_and_field(tmp_path, mutate, field, reason):
    lines = TREES.read_text().splitlines()
    bad = json.loads(lines[0])
    mutate(bad)
    lines[0] = json.dumps(bad)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    _, _, issues, _ = harvest(path)
    assert [(i.line, i.field, i.reason) for i in issues] == [(1, field, reason)]
    with pytest.raises(DataError) as err:
        run_import(ImportRequest("oasst", str(path), str(tmp_path / "out")))
    assert str(err.value) == f"{path}:1: field '{field}': {reason}"


def test_import_writes_tables_with_the_expected_rows(tmp_store):
    summary = run_import(ImportRequest("oasst", str(TREES), tmp_store))
    assert (summary.ift, summary.eft, summary.eval_groups, summary.eval_responses) == (2, 0, 4, 10)
    groups = read_table(f"{tmp_store}/eval_groups", "eval_groups").to_pylist()
    row = next(r for r in groups if r["response_id"] == "a-a8")
    assert row == {
        "group_id": "a-p2",
        "prompt_messages": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."},
            {"role": "user", "content": "And of Germany?"},
        ],
        "response_id": "a-a8",
        "response": "Munich.",
        "human_rank": 1,
        "lang": "en",
        "source": "oasst:oasst_trees.jsonl",
    }
    assert read_table(f"{tmp_store}/eft", "sft_examples").num_rows == 0
