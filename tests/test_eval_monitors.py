"""Monitors, the eval_results table and `srlm report` on a small hand-built run (and on an empty one)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from srlm.cli.main import main
from srlm.evaluation.monitors import MonitorThresholds, compute_monitors
from srlm.evaluation.report import write_report
from srlm.evaluation.results import EvalRecord, read_run_results, record_once, results_by_checkpoint, write_eval_results
from srlm.evaluation.runs import annotations_uri, iterations_of, layout_for
from srlm.store import artifacts
from srlm.store.layout import RunLayout
from srlm.store.schemas import schema


def _candidates(t: int, length: int) -> pa.Table:
    rows = [
        {"prompt_id": f"p{i}", "candidate_id": f"p{i}-c{c}", "candidate_index": c, "prompt": f"prompt {i}",
         "response": "x" * (length + 10 * c), "num_tokens": (length + 10 * c) // 4,
         "finish_reason": "length" if c == 3 else "stop", "model": f"M{t - 1}"}
        for i in range(5) for c in range(4)
    ]
    return pa.Table.from_pylist(rows, schema=schema("candidates"))


def _judgments(scores: list[float | None]) -> pa.Table:
    rows = [
        {"prompt_id": "p", "candidate_id": f"c{k}", "sample_index": 0, "judgment": "...", "score": s,
         "parse_ok": s is not None, "parse_error": None if s is not None else "no score"}
        for k, s in enumerate(scores)
    ]
    return pa.Table.from_pylist(rows, schema=schema("judgments"))


def _pairs(gaps: list[int]) -> pa.Table:
    rows = [
        {"prompt_id": f"p{i}", "prompt": "q", "chosen": "c" * (100 + g), "rejected": "r" * 100,
         "chosen_candidate_id": f"p{i}-c0", "rejected_candidate_id": f"p{i}-c1", "chosen_score": 5.0,
         "rejected_score": 3.0, "margin": 2.0, "chosen_chars": 100 + g, "rejected_chars": 100,
         "chosen_tokens": (100 + g) // 4, "rejected_tokens": 25}
        for i, g in enumerate(gaps)
    ]
    return pa.Table.from_pylist(rows, schema=schema("pairs"))


def _annotations(model: str, baseline: str, prefs: list[float], long: bool) -> pa.Table:
    rows = [
        {"instruction": f"instruction {i}", "output_1": "b" * 100, "output_2": "m" * (150 + 40 * i if long else 80 + i),
         "generator_1": baseline, "generator_2": model, "preference": p}
        for i, p in enumerate(prefs)
    ]
    return pa.Table.from_pylist(rows, schema=schema("annotations"))


@pytest.fixture
def run_layout(tmp_store) -> RunLayout:
    layout = RunLayout(tmp_store, "demo")
    artifacts.write_table(layout.candidates(1), _candidates(1, 40), "candidates")
    artifacts.write_table(layout.judgments(1), _judgments([3, 4, 5, 2, None, 4, 3, 5]), "judgments")
    artifacts.write_table(layout.pairs(1), _pairs([30, -20, 10, -5]), "pairs")
    artifacts.write_table(layout.candidates(2), _candidates(2, 120), "candidates")
    artifacts.write_table(layout.judgments(2), _judgments([5] * 9 + [4]), "judgments")
    artifacts.write_table(layout.pairs(2), _pairs([200, 150, 90, 300]), "pairs")
    prefs = [1.9, 1.2, 1.7, 1.1, 1.8, 1.6, 1.3, 1.9]
    artifacts.write_table(annotations_uri(layout, "M2", "vs-M0"), _annotations("M2", "M0", prefs, True), "annotations")
    artifacts.write_table(annotations_uri(layout, "M1", "vs-M0"), _annotations("M1", "M0", [1.4, 1.5, 1.3, 1.6, 1.5, 1.4, 1.2, 1.5], False), "annotations")
    for ckpt, acc in (("M0", 0.6), ("M1", 0.7)):
        write_eval_results(layout, ckpt, "reward_model", "v1", EvalRecord({"pairwise_accuracy": acc, "exact_match": acc / 2, "spearman": 0.3}))
    write_eval_results(layout, "M2", "head2head", "v1", EvalRecord({"a_win_pct": 55.0, "tie_pct": 25.0, "b_win_pct": 20.0}))
    return layout


def test_layout_for_run_uri_and_name(tmp_store):
    assert layout_for(f"{tmp_store}/runs/demo") == RunLayout(tmp_store, "demo")
    assert layout_for("s3://bucket/store/runs/x/") == RunLayout("s3://bucket/store", "x")
    assert layout_for("demo", tmp_store) == RunLayout(tmp_store, "demo")
    from srlm.errors import ConfigError

    with pytest.raises(ConfigError, match="runs/<name>"):
        layout_for(f"{tmp_store}/demo")


def test_monitors_measure_and_flag(run_layout):
    assert iterations_of(run_layout) == [1, 2]
    report = compute_monitors(run_layout)
    first, second = report.iterations
    assert first.model == "M0" and second.model == "M1"
    assert first.candidates["n"] == 20 and first.candidates["mean_chars"] == pytest.approx(55.0)
    assert first.candidates["truncated_rate"] == pytest.approx(0.25)
    assert first.judgments["parse_rate"] == pytest.approx(7 / 8)
    assert first.judgments["histogram"] == {"0": 0, "1": 0, "2": 1, "3": 2, "4": 2, "5": 2}
    assert second.judgments["five_rate"] == pytest.approx(0.9)
    assert first.pairs["chosen_longer_rate"] == pytest.approx(0.5) and second.pairs["mean_char_gap"] == pytest.approx(185.0)
    flags = "\n".join(report.flags)
    assert "iteration 2: 90% of parsed judgments are 5" in flags
    assert "iteration 1" not in flags.split("iteration 2")[0]  # nothing flagged for the healthy iteration
    assert "chosen is longer than rejected in 100%" in flags
    assert "as long as in iteration 1" in flags
    by_ckpt = {w["checkpoint"]: w for w in report.winrates}
    assert set(by_ckpt) == {"M1", "M2"}
    assert by_ckpt["M2"]["win_rate"] == pytest.approx(56.25)
    assert by_ckpt["M2"]["length_controlled_winrate"] is not None
    # stricter thresholds flag less
    assert not any("are 5" in f for f in compute_monitors(run_layout, MonitorThresholds(collapse_threshold=0.95)).flags)


def test_results_are_idempotent_and_gathered(run_layout):
    calls = []

    def compute():
        calls.append(1)
        return EvalRecord({"win_rate": 40.0, "length_controlled_winrate": 35.0}, n={"win_rate": 8})

    uri, computed = record_once(run_layout, "M1", "winrate", "v1", compute)
    assert computed and uri.endswith("runs/demo/eval/M1/winrate/v1")
    assert record_once(run_layout, "M1", "winrate", "v1", compute) == (uri, False)
    assert len(calls) == 1  # a backfill rerun neither recomputes nor rewrites
    manifest = artifacts.read_manifest(uri)
    write_eval_results(run_layout, "M1", "winrate", "v1", EvalRecord({"win_rate": 99.0}))  # committed: no-op
    assert artifacts.read_manifest(uri).created_at == manifest.created_at
    record_once(run_layout, "M1", "winrate", "v1", compute, force=True)
    assert len(calls) == 2
    results = results_by_checkpoint(read_run_results(run_layout))
    assert results["M1"]["winrate"] == {"win_rate": 40.0, "length_controlled_winrate": 35.0}
    assert results["M0"]["reward_model"]["pairwise_accuracy"] == 0.6
    assert results["M2"]["head2head"]["a_win_pct"] == 55.0


def test_report_renders_everything(run_layout, tmp_path):
    files = write_report(run_layout, tmp_path / "report")
    html = (tmp_path / "report" / "report.html").read_text()
    assert {p.split("/")[-1] for p in files.charts} == {"winrates.png", "reward_model.png", "lengths.png", "scores.png"}
    for chart in files.charts:
        assert open(chart, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert html.count("data:image/png;base64,") == 4  # self-contained
    assert "90% of parsed judgments are 5" in html and "M2" in html
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "| M1 |" in md and "![lengths](lengths.png)" in md
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["checkpoints"] == ["M0", "M1", "M2"]


def test_report_of_a_run_with_only_its_seed_model_says_what_is_missing(tmp_store, tmp_path, capsys, register_run_checkpoint):
    register_run_checkpoint(RunLayout(tmp_store, "empty"), "M0")
    assert main(["report", "--run", f"{tmp_store}/runs/empty", "--out", str(tmp_path / "r"), "--json"]) == 0
    files = json.loads(capsys.readouterr().out)
    html = open(files["html"]).read()
    assert files["charts"] == []
    assert "No reward-model results yet" in html and "No iteration artifacts yet" in html


def test_report_into_the_store_and_monitors_cli(run_layout, capsys):
    assert main(["report", "--run", run_layout.run_uri]) == 0
    assert artifacts.is_committed(run_layout.report)
    assert "committed to" in capsys.readouterr().out
    assert main(["eval", "monitors", "--run", run_layout.run_uri, "--record", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["iterations"]) == 2 and payload["flags"]
    assert [uri.split("/eval/")[1] for uri in payload["recorded"]] == ["M0/monitors/v1", "M1/monitors/v1"]
    assert main(["eval", "monitors", "--run", run_layout.run_uri]) == 0
    assert "iteration 2 (data from M1)" in capsys.readouterr().out


def test_report_and_monitors_of_a_run_that_does_not_exist_fail(tmp_store, tmp_path, capsys):
    run = f"{tmp_store}/runs/nope"
    assert main(["report", "--run", run, "--out", str(tmp_path / "r")]) == 1
    assert main(["eval", "monitors", "--run", run]) == 1
    assert capsys.readouterr().err.count(f"srlm: error: {run}: no such run") == 2
    assert not (tmp_path / "r").exists()
