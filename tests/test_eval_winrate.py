"""Win rates: AlpacaEval's raw conventions, annotation loading, and the length-controlled GLM on synthetic data
whose truth is known (plus the published leaderboard, when ../shared is present)."""

from __future__ import annotations

import gzip
import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from srlm.cli.main import main
from srlm.errors import DataError
from srlm.evaluation.annotations import load_annotation_sets, sets_from_records
from srlm.evaluation.length_control import fit_length_controlled
from srlm.evaluation.winrate import compare_to_leaderboard, evaluate_win_rates, raw_win_rate, read_leaderboard

DATA = Path(__file__).parent / "data" / "eval"
SMALL = DATA / "annotations_small.json"


def test_raw_conventions_on_hand_made_annotations():
    [annotations] = load_annotation_sets(SMALL)
    result = raw_win_rate(annotations)
    assert (annotations.model, annotations.baseline) == ("model-x", "base")
    assert result.n_total == 5  # the null preference is not counted
    assert (result.n_wins, result.n_wins_base, result.n_draws) == (2, 1, 2)  # legacy 0 is a draw
    assert result.win_rate == pytest.approx(56.0)
    shifted = np.array([1, 0.5, 0, 0.8, 0.5])
    assert result.standard_error == pytest.approx(shifted.std(ddof=1) / math.sqrt(5) * 100)
    assert result.discrete_win_rate == pytest.approx(60.0)
    assert result.avg_length == 11  # all six outputs, truncated


def test_missing_instructions_of_the_evaluation_set_count_as_empty_outputs():
    [annotations] = load_annotation_sets(SMALL)
    universe = set(annotations.instructions) | {"an instruction this set never got annotated"}
    result = raw_win_rate(annotations, universe)
    assert result.n_unannotated == 1
    assert result.avg_length == 70 // 7
    assert result.n_total == 5


def test_formats_load_the_same(tmp_path, tmp_store):
    records = json.loads(SMALL.read_text())
    gz = tmp_path / "a.json.gz"
    with gzip.open(gz, "wt") as f:
        json.dump(records, f)
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records))
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in ("instruction", "output_1", "output_2", "generator_1", "generator_2")}
                                         | {"preference": float(r["preference"]) if r["preference"] is not None else None}
                                         for r in records]), parquet)
    from srlm.store import artifacts

    store_uri = f"{tmp_store}/annotations"
    artifacts.write_table(store_uri, pq.read_table(parquet), "annotations")
    expected = raw_win_rate(load_annotation_sets(SMALL)[0])
    for source in (gz, jsonl, parquet, store_uri):
        [s] = load_annotation_sets(source)
        got = raw_win_rate(s)
        assert (got.win_rate, got.n_total, got.n_draws, got.avg_length) == (
            expected.win_rate, expected.n_total, expected.n_draws, expected.avg_length
        ), source


def test_directory_loads_every_file_and_splits_by_generator(tmp_path):
    records = json.loads(SMALL.read_text())
    (tmp_path / "one.json").write_text(json.dumps(records))
    other = [dict(r, generator_2="model-y") for r in records] + [dict(records[0], generator_2="model-z")]
    (tmp_path / "two.json").write_text(json.dumps(other))
    sets = load_annotation_sets(tmp_path)
    assert sorted(s.model for s in sets) == ["model-x", "model-y", "model-z"]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"instruction": "i", "output_1": "a", "output_2": "b", "preference": 3}, "record 0: field 'preference' must be in [1, 2]"),
        ({"instruction": "i", "output_1": "a", "output_2": "b", "preference": "left"}, "record 0: field 'preference' must be a number"),
        ({"instruction": "i", "output_1": "a", "preference": 1.0}, "record 0: field 'output_2' must be a string"),
    ],
)
def test_bad_records_name_the_record_and_field(record, message):
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sets_from_records([record], "bad.json")


def test_baseline_against_itself_is_fifty():
    records = [{"instruction": f"q{i}", "output_1": "same", "output_2": "same", "generator_1": "b", "generator_2": "b",
                "preference": 1.2} for i in range(4)]
    report = evaluate_win_rates(sets_from_records(records, "self.json"))
    [r] = report.results
    assert (r.win_rate, r.n_draws, r.length_controlled_winrate) == (50.0, 4, 50.0)


# ------------------------------------------------------------------------------------------- length control


def _synthetic_sets(thetas, length_ratios, *, phi, n=400, gamma_sd=1.5, seed=0, names=None):
    """Soft-label annotations from the GLM itself: p = sigmoid(theta_m + phi * tanh(std delta) + gamma_x)."""
    rng = np.random.default_rng(seed)
    gamma = rng.normal(0, gamma_sd, n)
    base_len = rng.lognormal(6.5, 0.5, n).astype(int) + 1
    sets, truths = [], []
    for k, (theta, ratio) in enumerate(zip(thetas, length_ratios)):
        model_len = np.maximum(1, (base_len * ratio * rng.lognormal(0, 0.3, n)).astype(int))
        delta = model_len - base_len
        t = np.tanh(delta / delta.std(ddof=1))
        p = 1 / (1 + np.exp(-(theta + phi * t + gamma)))
        name = names[k] if names else f"m{k}"
        records = [
            {"instruction": f"instruction {x}", "output_1": "b" * int(base_len[x]), "output_2": "m" * int(model_len[x]),
             "generator_1": "baseline", "generator_2": name, "preference": float(1 + p[x])}
            for x in range(n)
        ]
        sets.extend(sets_from_records(records, f"{name}.json"))
        truths.append(float(np.mean(1 / (1 + np.exp(-(theta + gamma)))) * 100))
    return sets, truths


def test_lc_is_fifty_when_preference_is_driven_by_length_only():
    sets, _ = _synthetic_sets([0.0, 0.0, 0.0], [0.5, 1.0, 2.0], phi=2.0, gamma_sd=0.0)
    report = evaluate_win_rates(sets)
    raw = [r.win_rate for r in report.results]
    assert raw[0] < 40 and raw[2] > 60  # length moves the raw win rate a lot …
    for r in report.results:
        assert r.length_controlled_winrate == pytest.approx(50.0, abs=0.5)  # … and LC removes it
    # A single set falls back to the length-only GLM, which also finds no model effect.
    [single] = evaluate_win_rates(sets[2:]).results
    assert single.length_controlled_winrate == pytest.approx(50.0, abs=0.5)
    assert evaluate_win_rates(sets[2:]).length_control[0].method == "length-only"


def test_joint_fit_recovers_the_true_length_controlled_win_rate():
    sets, truths = _synthetic_sets([-2.0, -0.7, 0.3, 1.2], [0.4, 0.8, 1.3, 0.6], phi=1.5, seed=1)
    report = evaluate_win_rates(sets)
    fit = report.length_control[0]
    assert fit.method == "joint-difficulty" and fit.n_instructions_with_difficulty == 400
    assert fit.length_coefficient == pytest.approx(1.5, abs=0.05)
    for r, truth in zip(report.results, truths):
        assert r.length_controlled_winrate == pytest.approx(truth, abs=0.5), r.model


def test_lc_shrinks_the_advantage_of_a_longer_variant_of_the_same_model():
    sets, truths = _synthetic_sets(
        [-1.0, -1.0, 0.5], [0.5, 1.5, 1.0], phi=1.5, seed=2, names=["m_concise", "m_verbose", "other"]
    )
    by_name = {r.model: r for r in evaluate_win_rates(sets).results}
    concise, verbose = by_name["m_concise"], by_name["m_verbose"]
    raw_ratio = verbose.win_rate / concise.win_rate
    lc_ratio = verbose.length_controlled_winrate / concise.length_controlled_winrate
    assert raw_ratio > 1.5
    assert lc_ratio < raw_ratio
    assert lc_ratio == pytest.approx(1.0, abs=0.05)  # same model quality: LC tells them apart by nothing


def test_difficulty_sets_only_inform_the_fit():
    sets, truths = _synthetic_sets([-1.0, 0.0, 1.0], [0.5, 1.0, 1.5], phi=1.0, seed=3)
    report = evaluate_win_rates(sets[:1], sets[1:])
    assert [r.model for r in report.results] == ["m0"]
    assert report.results[0].length_controlled_winrate == pytest.approx(truths[0], abs=0.5)
    assert report.length_control[0].n_sets == 3
    # the target found again among the difficulty sets (another spelling of its path) is fitted once
    import dataclasses

    again = evaluate_win_rates(sets[:1], [dataclasses.replace(s, source="./" + s.source) for s in sets])
    assert again.length_control[0].n_sets == 3
    assert again.results[0].length_controlled_winrate == pytest.approx(report.results[0].length_controlled_winrate)


def test_fit_rejects_mixed_baselines():
    a = sets_from_records([{"instruction": "i", "output_1": "x", "output_2": "y", "generator_1": "b1", "preference": 1}], "a")
    b = sets_from_records([{"instruction": "i", "output_1": "x", "output_2": "y", "generator_1": "b2", "preference": 2}], "b")
    with pytest.raises(ValueError, match="one shared baseline"):
        fit_length_controlled(a + b)
    # evaluate_win_rates groups by baseline instead of mixing them
    assert len(evaluate_win_rates(a + b).length_control) == 2


def test_cli_winrate_json(capsys):
    assert main(["eval", "winrate", "--annotations", str(SMALL), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    [model] = payload["models"]
    assert model["model"] == "model-x" and model["n_total"] == 5 and model["win_rate"] == pytest.approx(56.0)


# ------------------------------------------------------------------------------ the published leaderboard


def _shared_alpaca_eval() -> Path | None:
    candidates = [os.environ.get("SRLM_SHARED_DIR"), str(Path(__file__).resolve().parents[2] / "shared")]
    for root in filter(None, candidates):
        path = Path(root) / "data" / "alpaca_eval"
        if (path / "leaderboard.csv").is_file() and (path / "annotations").is_dir():
            return path
    return None


@pytest.mark.skipif(_shared_alpaca_eval() is None, reason="needs ../shared/data/alpaca_eval (or SRLM_SHARED_DIR)")
def test_reproduces_the_published_alpaca_eval_leaderboard():
    root = _shared_alpaca_eval()
    report = evaluate_win_rates(load_annotation_sets(root / "annotations"))
    comparison = compare_to_leaderboard(report.results, read_leaderboard(root / "leaderboard.csv"))
    assert comparison["n_compared"] == len(report.results) >= 2
    assert comparison["raw_all_match"], [m for m in comparison["models"] if m["mismatches"]]
    assert comparison["lc_mean_abs_difference"] < 3.0
    by_name = {r.model: r for r in report.results}
    if {"alpaca-7b_verbose", "alpaca-7b_concise"} <= set(by_name):
        v, c = by_name["alpaca-7b_verbose"], by_name["alpaca-7b_concise"]
        assert v.length_controlled_winrate / c.length_controlled_winrate < v.win_rate / c.win_rate


def test_cli_uses_sibling_files_for_difficulty_unless_told_not_to(tmp_path, capsys):
    sets, truths = _synthetic_sets([-1.0, 0.0, 1.0], [0.5, 1.0, 1.5], phi=1.0, seed=4, n=150)
    for s in sets:  # one file per model, AlpacaEval's layout
        records = [
            {"instruction": inst, "output_1": "b" * int(l1), "output_2": "m" * int(l2), "generator_1": "baseline",
             "generator_2": s.model, "preference": float(p)}
            for inst, l1, l2, p in zip(s.instructions, s.output_1_chars, s.output_2_chars, s.preferences)
        ]
        (tmp_path / f"{s.model}.json").write_text(json.dumps(records))
    (tmp_path / "notes.json").write_text("not json")  # an unreadable sibling is skipped, not fatal
    assert main(["eval", "winrate", "--annotations", str(tmp_path / "m0.json"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["length_control"][0]["n_sets"] == 3
    assert payload["models"][0]["length_controlled_winrate"] == pytest.approx(truths[0], abs=0.5)
    assert main(["eval", "winrate", "--annotations", str(tmp_path / "m0.json"), "--difficulty-from", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["length_control"][0]["method"] == "length-only"


def test_cli_records_a_checkpoint_win_rate_once_and_again_when_the_annotations_change(
    tmp_path, tmp_store, capsys, register_run_checkpoint
):
    from srlm.store import artifacts
    from srlm.store.layout import RunLayout

    register_run_checkpoint(RunLayout(tmp_store, "demo"), "M1")

    folder = tmp_path / "annotations"
    folder.mkdir()
    records = json.loads(SMALL.read_text())
    (folder / "model-x.json").write_text(json.dumps(records))
    args = ["eval", "winrate", "--annotations", str(folder / "model-x.json"), "--run", f"{tmp_store}/runs/demo",
            "--checkpoint", "M1", "--json"]

    def recorded_win_rate(uri: str) -> float:
        rows = artifacts.read_table(uri, "eval_results").to_pylist()
        return next(r["value"] for r in rows if r["metric"] == "win_rate")

    assert main(args) == 0
    uri = json.loads(capsys.readouterr().out)["recorded"]
    assert uri.endswith("runs/demo/eval/M1/winrate/v1") and recorded_win_rate(uri) == pytest.approx(56.0)
    sha = artifacts.read_manifest(uri).sha256
    assert main(args) == 0  # unchanged: nothing recomputed or rewritten
    assert capsys.readouterr().out.strip() == f"{uri}: already committed; nothing to do (use --force to recompute)"
    assert artifacts.read_manifest(uri).sha256 == sha
    # Re-annotated (every row now prefers the model): the committed result is stale and recomputed.
    (folder / "model-x.json").write_text(json.dumps([dict(r, preference=2) for r in records]))
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["recorded"] == uri
    assert recorded_win_rate(uri) == pytest.approx(100.0)


def test_difficulty_sets_sharing_no_instruction_are_an_error_unless_a_length_only_fit_is_allowed(tmp_path, capsys):
    records = json.loads(SMALL.read_text())
    target, other = tmp_path / "model-x.json", tmp_path / "elsewhere" / "model-y.json"
    other.parent.mkdir()
    target.write_text(json.dumps(records))
    other.write_text(json.dumps([dict(r, instruction=f"other {i}", generator_2="model-y") for i, r in enumerate(records)]))
    args = ["eval", "winrate", "--annotations", str(target), "--difficulty-from", str(other), "--json"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"--difficulty-from {other}: shares no instruction with {target}" in err and "--allow-length-only-fit" in err
    assert main([*args, "--allow-length-only-fit"]) == 0
    assert json.loads(capsys.readouterr().out)["length_control"][0]["method"] == "length-only"
