"""The single homes of helpers several modules share: score binning, number formatting, checkpoint ids, JSON(L)
records, JSON job specs, file locks and process liveness, and the EFT phrasing tables."""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from srlm.checkpoint_ids import (
    ParsedCheckpointId,
    checkpoint_id,
    iteration_of,
    looks_like_checkpoint_id,
    parse_checkpoint_id,
    previous_checkpoint_id,
    step_checkpoint_id,
)
from srlm.errors import ConfigError, DataError
from srlm.formatting import format_duration, format_number, format_percent, format_rate, format_value, is_missing
from srlm.judging.scores import SCORE_BINS, score_bin, score_histogram

# --- score histogram ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "grade"),
    [(1.5, "2"), (2.49, "2"), (2.5, "3"), (3.67, "4"), (3.33, "3"), (4.67, "5"), (5, "5"), (0, "0"), (0.49, "0")],
)
def test_a_score_goes_to_the_nearest_grade_halves_up(score, grade):
    assert score_bin(score) == grade


def test_scores_outside_the_scale_are_clamped_to_its_ends():
    assert score_bin(-1.0) == "0" and score_bin(7) == "5"


def test_histogram_has_every_grade_in_order_and_skips_unparsed_scores():
    counts = score_histogram([1.5, 2.49, 3.67, 5, 5.0, None, math.nan])
    assert list(counts) == list(SCORE_BINS) == ["0", "1", "2", "3", "4", "5"]
    assert counts == {"0": 0, "1": 0, "2": 2, "3": 0, "4": 1, "5": 2}
    assert score_histogram([]) == dict.fromkeys(SCORE_BINS, 0)


def test_histogram_of_averaged_judgments_keeps_the_all_five_collapse_visible():
    # Two 5s and a 4 average to 4.67: the judge is "about a 5", so bin 5 carries it rather than bin 4.
    means = [(5 + 5 + 4) / 3] * 3 + [5.0]
    assert score_histogram(means)["5"] == 4


# --- formatting --------------------------------------------------------------------------------------------------


def test_missing_values_read_the_same_everywhere():
    assert is_missing(None) and is_missing(math.nan) and not is_missing(0.0) and not is_missing(0)
    assert format_number(None) == "n/a" and format_number(math.nan, missing="—") == "—"
    assert format_percent(None) == "n/a" and format_percent(math.nan, missing="—") == "—"


def test_numbers_and_percentages():
    assert format_number(0.12345, ".3f") == "0.123" and format_number(1234.56, ",.1f") == "1,234.6"
    assert format_number(2) == "2.00"
    assert format_percent(0.375) == "37.5%" and format_percent(0.375, digits=0) == "38%"
    assert format_percent(1.0) == "100.0%"


def test_rates_durations_and_summary_values():
    assert format_rate(3, 6) == "50.0% (3/6)" and format_rate(0, 0) == "n/a (0 rows)"
    assert format_rate(1234, 5000) == "24.7% (1,234/5,000)"
    assert format_duration(42) == "42.0s" and format_duration(75) == "1m 15s"
    assert format_duration(2 * 3600 + 3 * 60 + 4) == "2h 03m 04s" and format_duration(-5) == "0.0s"
    assert format_value(True) == "yes" and format_value(1234567) == "1,234,567" and format_value(math.nan) == "n/a"
    assert [format_value(v) for v in (1234.5, 12.34, 1.5, 0.1234, 0.5)] == ["1,234", "12.3", "1.5", "0.123", "0.5"]


# --- checkpoint ids ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("iteration", "step"), [(0, None), (1, None), (12, None), (1, 200), (3, 0)])
def test_checkpoint_ids_round_trip(iteration, step):
    text = checkpoint_id(iteration, step)
    assert parse_checkpoint_id(text) == ParsedCheckpointId(iteration, step)
    assert iteration_of(text) == iteration and looks_like_checkpoint_id(text)


def test_checkpoint_id_spellings():
    assert checkpoint_id(0) == "M0" and checkpoint_id(2, step=200) == "M2-step200"
    assert step_checkpoint_id("M1", 400) == "M1-step400"
    assert previous_checkpoint_id(1) == "M0" and previous_checkpoint_id(3) == "M2"


@pytest.mark.parametrize("bad", ["", "M", "m1", "M-1", "M1.5", "1", "M1-step", "M1-stepx", "M1-best", " M1", "X1"])
def test_bad_checkpoint_ids_are_refused_naming_the_text(bad):
    with pytest.raises(ValueError, match="checkpoint id"):
        parse_checkpoint_id(bad)


@pytest.mark.parametrize("bad", [-1, 1.0, "1", True, None])
def test_checkpoint_id_needs_a_non_negative_integer(bad):
    with pytest.raises(ValueError, match="iteration"):
        checkpoint_id(bad)
    with pytest.raises(ValueError):
        previous_checkpoint_id(0)


def test_which_model_specs_name_registered_checkpoints():
    assert all(looks_like_checkpoint_id(s) for s in ("M0", "M12", "M1-step200", "M1-best"))
    assert not any(
        looks_like_checkpoint_id(s) for s in ("M", "Mx", "M1x", "M1/x", "models/M1", "smollm2-135m", "s3://b/M1")
    )


# --- JSON(L) records ---------------------------------------------------------------------------------------------


def test_json_records_from_arrays_lines_and_gzip(tmp_path):
    from srlm.data.importers.sources import read_json_records

    records = [{"a": 1}, {"b": "ü"}]
    (tmp_path / "x.json").write_text(json.dumps(records), encoding="utf-8")
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    with gzip.open(tmp_path / "x.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps(r) for r in records))
    for name in ("x.json", "x.jsonl", "x.jsonl.gz"):
        assert read_json_records(tmp_path / name) == records


def test_json_records_name_the_file_and_line_of_bad_input(tmp_path):
    from srlm.data.importers.sources import read_json_records

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{bad}:2: invalid JSON"):
        read_json_records(bad)
    with pytest.raises(DataError, match="missing.json: cannot read"):
        read_json_records(tmp_path / "missing.json")


# --- JSON job specs ----------------------------------------------------------------------------------------------


@dataclass
class _Spec:
    kind: str
    steps: int = 1


def test_json_objects_refuse_unknown_keys_and_non_objects():
    from srlm.json_objects import check_fields, load_json_object

    assert check_fields(load_json_object('{"kind": "sft"}', "spec.json"), _Spec, "spec.json") == {"kind": "sft"}
    with pytest.raises(ConfigError, match=r"spec.json: unknown key\(s\) stesp; valid keys: kind, steps"):
        check_fields({"kind": "sft", "stesp": 2}, _Spec, "spec.json")
    with pytest.raises(ConfigError, match="spec.json: expected a JSON object, got list"):
        load_json_object("[1]", "spec.json")
    with pytest.raises(ConfigError, match="spec.json: not valid JSON at line 1 column 2"):
        load_json_object("{", "spec.json")


# --- file locks and processes ------------------------------------------------------------------------------------


def test_file_lock_excludes_another_process(tmp_path):
    from srlm.host import file_lock

    lock = tmp_path / "sub" / "x.lock"
    with file_lock(lock):
        assert lock.exists()  # its folder was created
        probe = (
            "import sys, filelock\n"
            "from srlm.host import file_lock\n"
            "try:\n"
            f"    with file_lock({str(lock)!r}, timeout_s=0.2):\n"
            "        sys.exit(0)\n"
            "except filelock.Timeout:\n"
            "    sys.exit(3)\n"
        )
        assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 3
    with file_lock(lock, timeout_s=0):  # released: taken at once
        pass


def test_process_liveness_and_descendants():
    from srlm.host import descendant_pids, process_alive, tree_cpu_seconds

    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_alive(child.pid) and child.pid in descendant_pids()
        assert tree_cpu_seconds() > 0
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid)  # reaped: gone


# --- EFT phrasing tables -----------------------------------------------------------------------------------------


def test_shipped_phrasings_cover_every_degradation():
    from srlm.data.eft_builder import DEGRADATIONS, SHORT_WRONG_FACT, phrasings

    tables = phrasings()
    assert {d.name for d in DEGRADATIONS} | {SHORT_WRONG_FACT} == set(tables.justifications)
    assert tables.openers and tables.closers and tables.evasions and tables.padding[0].intro


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda d: d["padding"][1].pop("outro"), "padding.1.outro"),
        (lambda d: d.__setitem__("openers", ["  "]), "openers.0"),
        (lambda d: d.__setitem__("opener", ["Hi"]), "opener"),
        (lambda d: d["justifications"].pop("evasive"), "justifications"),
    ],
)
def test_malformed_phrasings_name_the_key(change, key):
    from importlib import resources

    import yaml

    from srlm.data.eft_builder import PHRASINGS_FILE, PHRASINGS_PACKAGE, parse_phrasings

    data = yaml.safe_load(resources.files(PHRASINGS_PACKAGE).joinpath(PHRASINGS_FILE).read_text(encoding="utf-8"))
    change(data)
    with pytest.raises(DataError, match=rf"^{PHRASINGS_PACKAGE}/{PHRASINGS_FILE}: key '{key}'"):
        parse_phrasings(yaml.safe_dump(data), f"{PHRASINGS_PACKAGE}/{PHRASINGS_FILE}")
