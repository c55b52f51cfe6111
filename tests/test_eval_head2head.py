"""Pairwise judging in both orders and `srlm eval head2head`: verdict parsing, order combination, annotations
that `srlm eval winrate` reads, outputs-vs-outputs through an HTTP judge, and a tiny model end to end."""

from __future__ import annotations

import json
import re

import pytest

from srlm.cli.main import main
from srlm.evaluation.annotations import sets_from_records
from srlm.evaluation.head2head import System, compare, load_outputs, load_prompts
from srlm.evaluation.pairwise import (
    PairToJudge,
    combine_orders,
    judge_pairs,
    load_pairwise_template,
    parse_verdict,
    render_pairwise_prompt,
)
from srlm.evaluation.winrate import raw_win_rate
from tests.test_eval_judges import FakeChatServer, ScriptedJudge

_RESPONSE = re.compile(r"\[Response ([AB])\]\n(.*?)\n\[End of response \1\]", re.S)


def prefer_good(prompt: str) -> str:
    """A content judge: the response containing GOOD wins; otherwise it answers 'tie'."""
    responses = dict(_RESPONSE.findall(prompt))
    good = [k for k, v in responses.items() if "GOOD" in v]
    return f"Reasoning.\nWinner: {good[0] if len(good) == 1 else 'tie'}"


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("Winner: A", "A"),
        ("blah\n**Winner:** Response B", "B"),
        ("Winner: tie", "tie"),
        ("I prefer A.\nWinner = b", "B"),
        ("Winner: A ... on reflection\nWinner: B", "B"),
        ("Response A is better.", None),
        ("", None),
    ],
)
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


def test_combine_orders():
    # forward shows output_1 as A; reverse shows output_2 as A
    assert combine_orders("A", "B")[0] == 1.0  # output_1 both times
    assert combine_orders("B", "A")[0] == 2.0  # output_2 both times
    assert combine_orders("A", "A")[0] == 1.5  # position bias: disagreement is a tie
    assert combine_orders("tie", "tie")[0] == 1.5
    assert combine_orders("B", None)[0] == 1.5  # an unparsed order is a tie
    assert combine_orders(None, None)[0] == 1.5


def test_template_is_filled_in_one_pass():
    template = load_pairwise_template()
    prompt = render_pairwise_prompt(template, "Say {output_2}", "first {instruction}", "second")
    assert "Say {output_2}" in prompt and "first {instruction}" in prompt
    assert prompt.index("first {instruction}") < prompt.index("second")


def test_judge_pairs_both_orders_and_position_bias_gives_ties():
    pairs = [PairToJudge("q1", "plain", "GOOD answer", "B", "A"), PairToJudge("q2", "GOOD too", "meh", "B", "A")]
    table, stats = judge_pairs(pairs, ScriptedJudge(prefer_good))
    assert table.column("preference").to_pylist() == [2.0, 1.0]
    assert stats == {"n_pairs": 2, "order_parse_rate": 1.0, "order_agreement": 1.0}
    raw = json.loads(table.column("raw_judgments_json")[0].as_py())
    assert raw["forward"]["winner"] == "2" and raw["reverse"]["winner"] == "2"

    biased, stats = judge_pairs(pairs, ScriptedJudge(lambda p: "Winner: A"))
    assert biased.column("preference").to_pylist() == [1.5, 1.5]
    assert stats["order_agreement"] == 0.0

    unparsed, stats = judge_pairs(pairs, ScriptedJudge(lambda p: "no verdict"))
    assert unparsed.column("preference").to_pylist() == [1.5, 1.5] and stats["order_parse_rate"] == 0.0


def test_compare_counts_and_annotations_feed_winrate():
    prompts = [f"p{i}" for i in range(5)]
    a = System("A-model", "a", "outputs", {p: ("GOOD " if i < 3 else "") + p for i, p in enumerate(prompts)})
    b = System("B-model", "b", "outputs", {p: ("GOOD " if i == 4 else "") + p for i, p in enumerate(prompts)})
    result = compare(a, b, prompts, ScriptedJudge(prefer_good))
    assert (result.a_wins, result.ties, result.b_wins) == (3, 1, 1)
    assert result.a_win_pct == pytest.approx(60.0)
    [annotations] = sets_from_records(result.annotations.to_pylist(), "h2h")
    assert (annotations.model, annotations.baseline) == ("A-model", "B-model")
    assert raw_win_rate(annotations).win_rate == pytest.approx(100 * (3 + 0.5) / 5)
    assert "A wins  60.0%" in result.to_text()


def _write_outputs(path, generator, good_indices, prompts):
    path.write_text(json.dumps([
        {"instruction": p, "output": ("GOOD " if i in good_indices else "") + f"answer {i}", "generator": generator}
        for i, p in enumerate(prompts)
    ]))


def test_cli_outputs_vs_outputs_with_endpoint_judge(tmp_path, tmp_store, capsys):
    prompts = [f"Question number {i}?" for i in range(6)]
    _write_outputs(tmp_path / "a.json", "sys-a", {0, 1, 2, 3}, prompts)
    _write_outputs(tmp_path / "b.json", "sys-b", {4}, prompts)
    out = f"{tmp_store}/h2h"
    with FakeChatServer(reply=prefer_good) as server:
        args = ["eval", "head2head", "--a", str(tmp_path / "a.json"), "--b", str(tmp_path / "b.json"),
                "--judge", server.url, "--judge-model", "fake", "--judge-cache", str(tmp_path / "cache"),
                "--judge-rps", "1000", "--out", out, "--json"]
        assert main(args) == 0
        payload = json.loads(capsys.readouterr().out)
        assert len(server.requests) == 12  # 6 prompts × 2 orders
        assert main(args) == 0  # rerun: every judgment comes from the cache
        capsys.readouterr()
        assert len(server.requests) == 12
    assert (payload["a_wins"], payload["ties"], payload["b_wins"]) == (4, 1, 1)
    assert main(["eval", "winrate", "--annotations", out, "--json"]) == 0
    [model] = json.loads(capsys.readouterr().out)["models"]
    assert model["n_total"] == 6 and model["win_rate"] == pytest.approx(100 * 4.5 / 6)


def test_prompt_and_output_sources(tmp_path, tmp_store):
    import pyarrow as pa

    from srlm.store import artifacts
    from srlm.store.schemas import schema

    (tmp_path / "p.txt").write_text("one\ntwo\n\none\n")
    assert load_prompts(str(tmp_path / "p.txt")) == ["one", "two"]
    rows = [
        {"prompt_id": "x", "candidate_id": "x-c1", "candidate_index": 1, "prompt": "one", "response": "second"},
        {"prompt_id": "x", "candidate_id": "x-c0", "candidate_index": 0, "prompt": "one", "response": "first"},
    ]
    uri = f"{tmp_store}/candidates"
    artifacts.write_table(uri, pa.Table.from_pylist(rows, schema=schema("candidates")), "candidates")
    assert load_outputs(uri) == {"one": "first"}
    assert load_prompts(uri) == ["one"]


def test_cli_tiny_model_self_judged(tiny_model_dir, tmp_path, tmp_store, capsys, register_run_checkpoint):
    from srlm.store.layout import RunLayout

    register_run_checkpoint(RunLayout(tmp_store, "demo"), "M9")
    prompts = ["Name a colour.", "Count to three."]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts))
    _write_outputs(tmp_path / "b.json", "reference", set(), prompts)
    run = f"{tmp_store}/runs/demo"
    args = ["eval", "head2head", "--a", str(tiny_model_dir), "--b", str(tmp_path / "b.json"),
            "--prompts", str(tmp_path / "prompts.txt"), "--judge", "self", "--backend", "transformers",
            "--judge-cache", "none", "--set", "generate.max_new_tokens=6", "--set", "judge.max_new_tokens=6",
            "--run", run, "--checkpoint", "M9", "--json"]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["n"] == 2 and payload["a_wins"] + payload["ties"] + payload["b_wins"] == 2
    assert payload["annotations_uri"].endswith("/eval/M9/annotations/vs-b.json")
    assert payload["recorded"].endswith("/eval/M9/head2head/v1")
    # recorded: a rerun is a no-op that does not load the model
    assert main(args) == 0
    assert "already committed" in capsys.readouterr().out
