"""jsonl, parquet and alpaca importers: accepted row shapes, EFT detection, and one-line errors naming the field."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from srlm.data.import_job import ImportRequest, run_import
from srlm.data.importers import importer
from srlm.data.importers.options import ReadOptions
from srlm.errors import DataError
from srlm.judging.template import load_template, render_judge_prompt
from srlm.store import read_table

DATA = Path(__file__).parent / "data"


def read(format_name: str, path: Path, **options):
    outcomes = list(importer(format_name).read(path, ReadOptions(**options)))
    issues = [o.issue for o in outcomes if o.issue]
    examples = [e for o in outcomes for e in o.examples]
    return examples, issues


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def judge_prompt(instruction: str = "What is 2+2?", response: str = "4") -> str:
    return render_judge_prompt(load_template("additive_5pt"), instruction, response)


# ---- jsonl ----------------------------------------------------------------------------------------------------


def test_jsonl_row_shapes():
    examples, issues = read("jsonl", DATA / "chat.jsonl")
    assert issues == []
    assert [(e.prompt_messages, e.completion) for e in examples] == [
        ((("system", "You are terse."), ("user", "2+2?")), "4"),
        ((("user", "Name a fruit."), ("assistant", "Apple."), ("user", "Another one?")), "Pear."),
        ((("system", "You translate."), ("user", "Translate 'cat' to French.")), "chat"),
        (
            (("user", "Write a haiku about rain."),),
            "Soft rain on the roof\nwhispers to the sleeping town\nmorning smells of earth",
        ),
    ]
    assert {e.kind for e in examples} == {"ift"} and {e.source for e in examples} == {"jsonl:chat.jsonl"}


def test_gzip_input_gives_identical_examples(tmp_path):
    packed = tmp_path / "chat.jsonl.gz"
    packed.write_bytes(gzip.compress((DATA / "chat.jsonl").read_bytes()))
    plain, _ = read("jsonl", DATA / "chat.jsonl")
    zipped, _ = read("jsonl", packed)
    assert [e.to_row() | {"example_id": None, "source": None} for e in zipped] == [
        e.to_row() | {"example_id": None, "source": None} for e in plain
    ]


def test_example_ids_depend_on_source_and_content_only(tmp_path):
    first, _ = read("jsonl", DATA / "chat.jsonl")
    again, _ = read("jsonl", DATA / "chat.jsonl")
    assert [e.example_id for e in first] == [e.example_id for e in again]
    assert len({e.example_id for e in first}) == len(first)
    moved = write_jsonl(
        tmp_path / "chat.jsonl", [json.loads(line) for line in (DATA / "chat.jsonl").read_text().splitlines() if line]
    )
    assert [e.example_id for e in read("jsonl", moved)[0]] == [e.example_id for e in first]


def test_eft_is_detected_from_judge_prompt_and_final_score(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"prompt": judge_prompt(), "response": "Correct and direct.\nScore: 4"},
            {
                "messages": [
                    {"role": "user", "content": judge_prompt()},
                    {"role": "assistant", "content": "Fine.\n\n**Score:** 5/5\n"},
                ]
            },
            # the prompt is no judge prompt: a trailing "Score: 3" does not make it EFT
            {"prompt": "Rate this haiku.", "response": "Nice imagery.\nScore: 3"},
            # an explicit kind wins over detection
            {"prompt": judge_prompt(), "response": "I would rather not judge.", "kind": "ift"},
            {"prompt": "Grade: 'hi'", "response": "Polite.\nScore: 2", "kind": "eft"},
        ],
    )
    examples, issues = read("jsonl", path)
    assert issues == []
    assert [(e.kind, e.score) for e in examples] == [
        ("eft", 4.0),
        ("eft", 5.0),
        ("ift", None),
        ("ift", None),
        ("eft", 2.0),
    ]


def test_judge_prompt_whitespace_is_normalised(tmp_path):
    reflowed = " ".join(judge_prompt().split())
    path = write_jsonl(tmp_path / "r.jsonl", [{"prompt": reflowed, "response": "ok\nScore: 1"}])
    assert [e.kind for e in read("jsonl", path)[0]] == ["eft"]


@pytest.mark.parametrize(
    ("row", "field", "reason_start"),
    [
        (
            {"prompt": "JUDGE", "response": "Good answer, four points."},
            "response",
            "the prompt is a judge prompt but the answer does not end with a 'Score: N' line",
        ),
        (
            {"prompt": "JUDGE", "response": "Score: 4\nThen more words."},
            "response",
            "the prompt is a judge prompt but the answer does not end with a 'Score: N' line in [0, 5] "
            "(the 'Score: N' is not on the last line)",
        ),
        (
            {"prompt": "JUDGE", "response": "Score: 9"},
            "response",
            "the prompt is a judge prompt but the answer does not end with a 'Score: N' line in [0, 5] "
            "(score 9 outside [0, 5])",
        ),
        (
            {"prompt": "q", "response": "no score", "kind": "eft"},
            "response",
            "kind 'eft' needs a final 'Score: N' line",
        ),
        ({"prompt": "q", "response": "a", "kind": "dpo"}, "kind", "expected one of ift/eft or null, got 'dpo'"),
    ],
)
def test_bad_eft_rows(tmp_path, row, field, reason_start):
    row = {k: (judge_prompt() if v == "JUDGE" else v) for k, v in row.items()}
    _, issues = read("jsonl", write_jsonl(tmp_path / "e.jsonl", [row]))
    assert len(issues) == 1 and issues[0].field == field and issues[0].reason.startswith(reason_start), issues


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                    {"role": "bot", "content": "x"},
                ]
            },
            "field 'messages[2].role': expected one of user/assistant/system, got 'bot'",
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}]},
            "field 'messages[0].role': the last message must be the assistant's answer, got 'user'",
        ),
        (
            {"messages": [{"role": "assistant", "content": "hi"}]},
            "field 'messages': no user message before the assistant's answer",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                    {"role": "assistant", "content": "b"},
                ]
            },
            "field 'messages[1].role': the message before the assistant's answer must be the user's, got 'assistant'",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "field 'messages[1].role': a system message may only come first",
        ),
        (
            {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]},
            "field 'messages[0].content': expected a string, got int",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
            "field 'messages[1].content': empty",
        ),
        ({"messages": "hello"}, "field 'messages': expected a list of {role, content} messages, got str"),
        ({"messages": []}, "field 'messages': empty message list"),
        ({"prompt": "q"}, "field 'response': missing"),
        ({"prompt": "q", "response": "a", "system": 5}, "field 'system': expected a string, got int"),
        ({"text": "q"}, "field 'messages': missing: a row needs 'messages', or 'prompt' and 'response'"),
        ([1, 2], "expected an object, got list"),
        ("{not json", "invalid JSON: Expecting property name enclosed in double quotes (column 2)"),
    ],
)
def test_bad_jsonl_rows_name_file_line_and_field(tmp_path, row, message):
    good = {"prompt": "q", "response": "a"}
    path = write_jsonl(tmp_path / "data.jsonl", [good, good | {"response": "b"}, row])
    with pytest.raises(DataError) as err:
        run_import(ImportRequest("jsonl", str(path), str(tmp_path / "out")))
    assert str(err.value) == f"{path}:3: {message}"
    assert not (tmp_path / "out").exists()  # nothing written when the input is bad


def test_not_utf8_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        json.dumps({"prompt": "q", "response": "a"}).encode() + b"\n" + '{"prompt": "caf\xe9"}\n'.encode("latin-1")
    )
    _, issues = read("jsonl", path)
    assert [(i.line, i.reason.split(" (")[0]) for i in issues] == [(2, "not UTF-8 text")]


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: input file not found"):
        run_import(ImportRequest("jsonl", str(tmp_path / "nope.jsonl"), str(tmp_path / "out")))


def test_directory_input_reads_every_matching_file(tmp_path):
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"prompt": "q1", "response": "a1"}])
    write_jsonl(tmp_path / "in" / "b.jsonl", [{"prompt": "q2", "response": "a2"}])
    (tmp_path / "in" / "notes.txt").write_text("ignored")
    summary = run_import(ImportRequest("jsonl", str(tmp_path / "in"), str(tmp_path / "out")))
    assert summary.ift == 2
    rows = read_table(str(tmp_path / "out" / "ift")).to_pylist()
    assert [r["source"] for r in rows] == ["jsonl:a.jsonl", "jsonl:b.jsonl"]


# ---- parquet --------------------------------------------------------------------------------------------------


def test_parquet_with_struct_messages_and_reimport_of_srlm_tables(tmp_path):
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    table = pa.table(
        {
            "messages": pa.array(
                [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], None],
                pa.list_(message),
            ),
            "prompt": [None, judge_prompt()],
            "response": [None, "Solid.\nScore: 3"],
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    summary = run_import(ImportRequest("parquet", str(tmp_path / "in.parquet"), str(tmp_path / "first")))
    assert (summary.ift, summary.eft) == (1, 1)
    eft = read_table(str(tmp_path / "first" / "eft")).to_pylist()
    assert eft[0]["score"] == 3.0 and eft[0]["kind"] == "eft"

    # an sft_examples table written by srlm imports again as it is (prompt_messages + completion + kind)
    exported = tmp_path / "exported.parquet"
    pq.write_table(read_table(str(tmp_path / "first" / "eft")), exported)
    examples, issues = read("parquet", exported)
    assert issues == [] and [(e.kind, e.score, e.completion) for e in examples] == [("eft", 3.0, "Solid.\nScore: 3")]


def test_parquet_errors_name_the_row(tmp_path):
    pq.write_table(pa.table({"prompt": ["a", "b", "c"], "response": ["x", None, "z"]}), tmp_path / "p.parquet")
    with pytest.raises(DataError) as err:
        run_import(ImportRequest("parquet", str(tmp_path / "p.parquet"), str(tmp_path / "out")))
    assert str(err.value) == f"{tmp_path / 'p.parquet'}:2: field 'response': missing"


def test_not_a_parquet_file(tmp_path):
    (tmp_path / "x.parquet").write_text("hello")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        run_import(ImportRequest("parquet", str(tmp_path / "x.parquet"), str(tmp_path / "out")))


# ---- alpaca ---------------------------------------------------------------------------------------------------


def test_alpaca_json_array_appends_input_after_a_blank_line():
    examples, issues = read("alpaca", DATA / "alpaca.json")
    assert issues == []
    assert [(e.prompt_messages, e.completion, e.kind) for e in examples] == [
        ((("user", "Give three tips for staying healthy."),), "Eat well, sleep enough, move daily.", "ift"),
        (
            (("user", "Summarise the text.\n\nThe quick brown fox jumps over the lazy dog."),),
            "A fox jumps over a dog.",
            "ift",
        ),
        ((("user", "What is the boiling point of water at sea level?"),), "100 °C.", "ift"),
    ]


def test_alpaca_jsonl_matches_the_array(tmp_path):
    items = json.loads((DATA / "alpaca.json").read_text())
    path = write_jsonl(tmp_path / "alpaca.json", items)
    assert [e.completion for e in read("alpaca", path)[0]] == [i["output"] for i in items]


def test_alpaca_array_errors_point_at_the_items_line(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(
        '[\n  {"instruction": "i", "output": "o"},\n  {"instruction": "i2",\n   "input": 7, "output": "o"}\n]\n'
    )
    with pytest.raises(DataError) as err:
        run_import(ImportRequest("alpaca", str(path), str(tmp_path / "out")))
    assert str(err.value) == f"{path}:3: field 'input': expected a string, got int"


def test_broken_alpaca_array_is_fatal_even_when_skipping(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n {"instruction": "i", "output": "o"}\n {"instruction": "j", "output": "p"}\n]')
    with pytest.raises(DataError) as err:
        run_import(ImportRequest("alpaca", str(path), str(tmp_path / "out"), skip_invalid=True))
    assert str(err.value) == f"{path}:3: invalid JSON: expected ',' or ']' after an array item"
