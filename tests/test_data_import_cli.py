"""`srlm data import` end to end: summary output, --skip-invalid, reruns, --force, S3, and the console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from srlm.cli.main import main
from srlm.store import is_committed, read_manifest, read_table

DATA = Path(__file__).parent / "data"
TREES = DATA / "oasst_trees.jsonl"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["data", "import", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys, *argv: str) -> dict:
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_oasst_import_reports_counts_and_commits_three_tables(capsys, tmp_store):
    summary = run_json(capsys, "--format", "oasst", "--input", str(TREES), "--out", tmp_store)
    assert {k: summary[k] for k in ("ift", "eft", "eval_groups", "eval_responses", "skipped", "invalid")} == {
        "ift": 2,
        "eft": 0,
        "eval_groups": 4,
        "eval_responses": 10,
        "skipped": 0,
        "invalid": [],
    }
    assert summary["out"] == {name: f"{tmp_store}/{name}" for name in ("ift", "eft", "eval_groups")}
    for name, schema in (("ift", "sft_examples"), ("eft", "sft_examples"), ("eval_groups", "eval_groups")):
        assert read_manifest(f"{tmp_store}/{name}").schema_name == schema
    assert read_table(f"{tmp_store}/ift").num_rows == 2


def test_human_summary(capsys, tmp_store):
    code, out, _ = run_cli(capsys, "--format", "alpaca", "--input", str(DATA / "alpaca.json"), "--out", tmp_store)
    assert code == 0
    assert out.splitlines()[0] == f"Imported alpaca from {DATA / 'alpaca.json'}"
    assert "ift:" in out and "3 examples" in out and "0 groups (0 responses)" in out


def test_skip_invalid_reports_every_bad_row(capsys, tmp_path, tmp_store):
    path = tmp_path / "data.jsonl"
    rows = [
        {"prompt": "q1", "response": "a1"},
        {"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]},
        "not json",
        {"prompt": "q2", "response": "a2"},
        {"prompt": "q3"},
    ]
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))

    code, _, err = run_cli(capsys, "--format", "jsonl", "--input", str(path), "--out", tmp_store)
    assert code == 1
    assert (
        err.strip()
        == f"srlm: error: {path}:2: field 'messages[1].role': expected one of user/assistant/system, got 'bot'"
    )
    assert not is_committed(f"{tmp_store}/ift")

    summary = run_json(capsys, "--format", "jsonl", "--input", str(path), "--out", tmp_store, "--skip-invalid")
    assert (summary["ift"], summary["skipped"]) == (2, 3)
    assert [(i["line"], i["field"]) for i in summary["invalid"]] == [
        (2, "messages[1].role"),
        (3, None),
        (5, "response"),
    ]
    assert summary["invalid"][2] == {"file": str(path), "line": 5, "field": "response", "reason": "missing"}


def test_every_row_invalid_is_an_error_even_when_skipping(capsys, tmp_path, tmp_store):
    # e.g. the wrong --format: alpaca records given as chat jsonl
    code, _, err = run_cli(
        capsys, "--format", "jsonl", "--input", str(DATA / "alpaca.json"), "--out", tmp_store, "--skip-invalid"
    )
    assert code == 1 and "none of its 3 rows could be imported" in err
    assert "alpaca.json:2: field 'messages': missing" in err


def test_rerun_is_a_no_op_and_force_rewrites(capsys, tmp_store):
    args = ("--format", "oasst", "--input", str(TREES), "--out", tmp_store)
    first = run_json(capsys, *args)
    manifests = {n: read_manifest(f"{tmp_store}/{n}") for n in ("ift", "eft", "eval_groups")}
    again = run_json(capsys, *args)
    assert again["reused"] is True and not first["reused"]
    assert {k: again[k] for k in ("ift", "eval_groups", "eval_responses")} == {
        k: first[k] for k in ("ift", "eval_groups", "eval_responses")
    }
    assert {n: read_manifest(f"{tmp_store}/{n}").attempt_id for n in manifests} == {
        n: m.attempt_id for n, m in manifests.items()
    }
    forced = run_json(capsys, *args, "--force")
    assert forced["reused"] is False
    assert read_manifest(f"{tmp_store}/ift").attempt_id != manifests["ift"].attempt_id
    # same input, same ids
    ids = lambda: sorted(r["example_id"] for r in read_table(f"{tmp_store}/ift").to_pylist())  # noqa: E731
    before = ids()
    run_json(capsys, *args, "--force")
    assert ids() == before


def test_a_different_import_into_committed_output_needs_force(capsys, tmp_store):
    run_json(capsys, "--format", "oasst", "--input", str(TREES), "--out", tmp_store)
    code, _, err = run_cli(capsys, "--format", "oasst", "--input", str(TREES), "--out", tmp_store, "--lang", "all")
    assert code == 1 and "already holds an import of oasst input oasst_trees.jsonl" in err and "--force" in err
    summary = run_json(
        capsys, "--format", "oasst", "--input", str(TREES), "--out", tmp_store, "--lang", "all", "--force"
    )
    assert summary["ift"] == 3 and read_table(f"{tmp_store}/ift").num_rows == 3


def test_resume_after_a_crash_keeps_committed_tables(capsys, tmp_store):
    args = ("--format", "oasst", "--input", str(TREES), "--out", tmp_store)
    run_json(capsys, *args)
    kept = read_manifest(f"{tmp_store}/ift").attempt_id
    shutil.rmtree(Path(tmp_store) / "eval_groups")  # as if the run died before committing it
    (Path(tmp_store) / "import_summary.json").unlink()
    summary = run_json(capsys, *args)
    assert summary["reused"] is False and summary["eval_groups"] == 4
    assert read_manifest(f"{tmp_store}/ift").attempt_id == kept
    assert read_table(f"{tmp_store}/eval_groups").num_rows == 10


def test_oasst_options_on_the_command_line(capsys, tmp_path):
    synthetic = run_json(
        capsys, "--format", "oasst", "--input", str(TREES), "--out", str(tmp_path / "s"), "--include-synthetic"
    )
    assert synthetic["ift"] == 3
    states = run_json(
        capsys,
        "--format",
        "oasst",
        "--input",
        str(TREES),
        "--out",
        str(tmp_path / "t"),
        "--tree-states",
        "aborted_low_grade",
    )
    assert (states["ift"], states["eval_groups"]) == (1, 1)


def test_unknown_judge_template_fails_before_reading(capsys, tmp_store):
    code, _, err = run_cli(
        capsys, "--format", "jsonl", "--input", str(DATA / "chat.jsonl"), "--out", tmp_store, "--judge-template", "nope"
    )
    assert code == 1 and "no shipped template 'nope'" in err


def test_import_to_s3(capsys, s3_server, s3_store):
    from srlm.store.filesystems import configure_store

    out = f"{s3_store}/seed"
    try:
        summary = run_json(
            capsys, "--format", "oasst", "--input", str(TREES), "--out", out, "--s3-endpoint-url", s3_server
        )
    finally:
        configure_store(None)
    assert (summary["ift"], summary["eval_groups"]) == (2, 4)
    assert summary["out"]["eval_groups"] == f"{out}/eval_groups"
    assert read_table(f"{out}/eval_groups", "eval_groups").num_rows == 10
    assert run_json(capsys, "--format", "oasst", "--input", str(TREES), "--out", out)["reused"] is True


def test_console_script(tmp_path):
    script = Path(sys.executable).with_name("srlm")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "srlm.cli.main"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = tmp_path / "out"
    result = subprocess.run(
        [*command, "data", "import", "--format", "oasst", "--input", str(TREES), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["eval_groups"] == 4
    missing = subprocess.run(
        [*command, "data", "import", "--format", "jsonl", "--input", str(tmp_path / "nope.jsonl"), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"srlm: error: {tmp_path / 'nope.jsonl'}: input file not found"


@pytest.mark.parametrize("argv", [["data"], ["data", "import", "--format", "csv", "--input", "x", "--out", "y"]])
def test_usage_errors(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects an unknown --format
        code = exc.code
    assert code == 2


def test_options_a_format_ignores_do_not_block_a_rerun(capsys, tmp_store):
    args = ("--format", "jsonl", "--input", str(DATA / "chat.jsonl"), "--out", tmp_store)
    assert run_json(capsys, *args)["ift"] == 4
    assert run_json(capsys, *args, "--lang", "de")["reused"] is True  # --lang only matters to oasst


def _messages(tmp_path, rows: list[dict]) -> Path:
    path = tmp_path / "export.messages.jsonl"
    base = {"message_tree_id": "t", "lang": "en"}
    path.write_text("".join(json.dumps(base | row) + "\n" for row in rows))
    return path


def test_every_left_out_message_is_counted_by_reason(capsys, tmp_path, tmp_store):
    rows = [
        {"message_id": "p", "parent_id": None, "role": "prompter", "text": "Hi?"},
        {"message_id": "a", "parent_id": "p", "role": "assistant", "text": "Hello.", "rank": 0},
        {"message_id": "b", "parent_id": "p", "role": "assistant", "text": "Hey.", "rank": 1},
        {"message_id": "c", "parent_id": "p", "role": "assistant", "text": "Yo."},  # unranked
        {"message_id": "d", "parent_id": "p", "role": "assistant", "text": "Gone.", "rank": 2, "deleted": True},
        {"message_id": "e", "parent_id": "d", "role": "prompter", "text": "Below the deleted one."},
        {"message_id": "x", "parent_id": "y", "role": "prompter", "text": "In a cycle."},
        {"message_id": "y", "parent_id": "x", "role": "assistant", "text": "Also.", "rank": 0},
        {"message_id": "o", "parent_id": "missing", "role": "assistant", "text": "Orphan.", "rank": 0},
        {"message_id": "o2", "parent_id": "o", "role": "prompter", "text": "Below the orphan."},
    ]
    summary = run_json(capsys, "--format", "oasst", "--input", str(_messages(tmp_path, rows)), "--out", tmp_store)
    assert (summary["ift"], summary["eval_groups"]) == (1, 1)
    assert summary["filtered"] == {
        "assistant_replies_unranked": 1,
        "messages_below_dropped": 1,
        "messages_deleted": 1,
        "messages_in_cycle": 2,
        "messages_orphaned": 2,
    }
    code, out, _ = run_cli(capsys, "--format", "oasst", "--input", str(tmp_path / "export.messages.jsonl"),
                           "--out", str(tmp_path / "again"))  # fmt: skip
    assert code == 0 and "messages_in_cycle 2" in out and "assistant_replies_unranked 1" in out


def test_an_import_of_nothing_fails_unless_allowed(capsys, tmp_path):
    rows = [
        {"message_id": "p", "parent_id": None, "role": "prompter", "text": "Hi?"},
        {"message_id": "a", "parent_id": "p", "role": "assistant", "text": "Hello."},
    ]
    source = _messages(tmp_path, rows)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "--format", "oasst", "--input", str(source), "--out", str(out))
    assert code == 1 and err.strip() == (
        f"srlm: error: {source}: no rows to import, every record was left out (assistant_replies_unranked 1); "
        "nothing committed (pass --allow-empty to commit empty tables)"
    )
    assert not out.exists()
    summary = run_json(capsys, "--format", "oasst", "--input", str(source), "--out", str(out), "--allow-empty")
    assert summary["filtered"] == {"assistant_replies_unranked": 1}
    assert all(is_committed(str(out / name)) and read_table(str(out / name)).num_rows == 0 for name in summary["out"])
