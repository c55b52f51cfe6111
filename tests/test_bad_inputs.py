"""The catalogue of bad and damaged inputs (issue 14): each one, given to the real `srlm` command line, must end
with exit 1, exactly one stderr line `srlm: error: …` that names the file, key or run at fault, no traceback, and
no new `_SUCCESS` manifest anywhere (nothing committed).

Every input is built here, in tmp_path, by one small builder per case; a builder returns the argv and the names
the error line must contain. The cheap cases (files, configs, runs) come first; the damaged committed artifacts
(caught by the store's verified reads: "checksum mismatch" / "missing") and the model cases (the tiny test model)
come last. A few cases also run as a subprocess, to check what a user's terminal shows (log lines aside).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from srlm.cli.main import main

Built = tuple[list[str], list[str]]  # (argv, substrings the one error line must contain)
CASES: dict[str, Callable[..., Built]] = {}
MODEL_CASES: dict[str, Callable[..., Built]] = {}


def case(name: str, *, model: bool = False):
    def register(build: Callable[..., Built]) -> Callable[..., Built]:
        (MODEL_CASES if model else CASES)[name] = build
        return build

    return register


# ------------------------------------------------------------------------------------------------- building blocks

CHAT_ROW = {"prompt": "Name a colour.", "response": "Blue."}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def message(message_id: str, parent: str | None, role: str, text: str = "Some text.", **extra) -> dict:
    """One message of an OpenAssistant flat export."""
    return {"message_id": message_id, "parent_id": parent, "message_tree_id": "t", "role": role, "text": text,
            "lang": "en", **extra}  # fmt: skip


RANKED = [
    message("p", None, "prompter"),
    message("a", "p", "assistant", rank=0),
    message("b", "p", "assistant", rank=1),
]


def import_argv(tmp_path: Path, fmt: str, source: Path | str, *extra: str) -> list[str]:
    return ["data", "import", "--format", fmt, "--input", str(source), "--out", str(tmp_path / "out"), *extra]


def gzip_bytes(rows: int = 400) -> bytes:
    return gzip.compress(b"".join(json.dumps(CHAT_ROW).encode() + b"\n" for _ in range(rows)))


def chat_parquet(path: Path, rows: int = 2000, compression: str = "snappy") -> Path:
    table = pa.table(
        {"prompt": [f"Question {i}?" for i in range(rows)], "response": [f"Answer {i}." for i in range(rows)]}
    )
    pq.write_table(table, path, compression=compression, data_page_size=4096)
    return path


def corrupt_data_pages(path: Path, start_at: float = 0.0, end_at: float = 0.5) -> Path:
    """Overwrite part of a Parquet file's data pages with garbage, leaving the footer readable."""
    data = bytearray(path.read_bytes())
    start, end = max(8, int(len(data) * start_at)), int(len(data) * end_at)
    data[start:end] = bytes((i * 131 + 7) % 256 for i in range(end - start))
    path.write_bytes(bytes(data))
    return path


def annotations(instructions: list[str], model: str = "model-x") -> list[dict]:
    return [{"instruction": inst, "output_1": "base answer", "output_2": f"{model} answer", "generator_1": "base",
             "generator_2": model, "preference": 1.0 + (i % 2)} for i, inst in enumerate(instructions)]  # fmt: skip


def store_with_run(tmp_path: Path, run: str = "r") -> tuple[str, object]:
    """A store holding a run with iteration 1's candidates and judgments committed (what `srlm pairs` reads)."""
    from srlm.store import artifacts
    from srlm.store.layout import RunLayout

    store = str(tmp_path / "store")
    layout = RunLayout(store, run)
    candidates = [{"prompt_id": f"p{p}", "candidate_id": f"p{p}-c{i}", "candidate_index": i, "prompt": f"Q{p}",
                   "response": f"answer {p}.{i}"} for p in range(8) for i in range(2)]  # fmt: skip
    judgments = [{"prompt_id": f"p{p}", "candidate_id": f"p{p}-c{i}", "sample_index": 0, "judgment": f"Score: {i + 3}",
                  "score": float(i + 3), "parse_ok": True} for p in range(8) for i in range(2)]  # fmt: skip
    artifacts.write_table(layout.candidates(1), candidates, "candidates")
    artifacts.write_table(layout.judgments(1), judgments, "judgments")
    return store, layout


def committed_file(uri: str, index: int = 0) -> Path:
    """The local path of the index-th file a committed artifact's manifest lists."""
    from srlm.store import artifacts

    return Path(uri) / artifacts.read_manifest(uri).files[index].path


def flip_byte(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


# ------------------------------------------------------------------------------ files given to `srlm data import`


def jsonl_bytes(rows: list) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def messages(*rows: dict) -> bytes:
    return jsonl_bytes(list(rows))


def changed_byte(data: bytes, at: float) -> bytes:
    changed = bytearray(data)
    changed[int(len(changed) * at)] ^= 0xFF
    return bytes(changed)


UNRANKED_TREE = {
    "message_tree_id": "t",
    "tree_state": "ready_for_export",
    "prompt": {"message_id": "p", "role": "prompter", "text": "Hi?", "lang": "en",
               "replies": [{"message_id": "a", "role": "assistant", "text": "Hello.", "lang": "en"}]},
}  # fmt: skip
ALPACA_GZIP = gzip.compress(json.dumps([{"instruction": "i", "output": "o"}] * 300).encode())

# name: (format, file name, its bytes, what the error line names ({path}: the file), extra options)
IMPORT_FILES: dict[str, tuple[str, str, bytes, list[str], tuple[str, ...]]] = {
    # nothing to import
    "import-empty-jsonl": ("jsonl", "empty.jsonl", b"", ["{path}", "--allow-empty"], ()),
    "import-blank-lines-only": ("jsonl", "blank.jsonl", b"\n  \n\t\n", ["{path}", "no records"], ()),
    "import-empty-json-array": ("jsonl", "empty.json", b"[ ]\n", ["{path}", "--allow-empty"], ()),
    "import-empty-alpaca": ("alpaca", "alpaca.json", b"[]", ["{path}", "--allow-empty"], ()),
    "import-empty-gzip": ("jsonl", "empty.jsonl.gz", gzip.compress(b""), ["{path}", "--allow-empty"], ()),
    "oasst-flat-without-ranks": (
        "oasst", "unranked.messages.jsonl",
        messages(message("p", None, "prompter"), message("a", "p", "assistant"), message("b", "p", "assistant")),
        ["{path}", "assistant_replies_unranked 2"], (),
    ),
    "oasst-tree-without-ranks": (
        "oasst", "unranked.trees.jsonl", jsonl_bytes([UNRANKED_TREE]), ["{path}", "assistant_replies_unranked 1"], ()
    ),
    "oasst-parent-links-form-a-cycle": (
        "oasst", "cycle.messages.jsonl", messages(dict(RANKED[0], parent_id="b"), *RANKED[1:]),
        ["{path}", "messages_in_cycle 3"], (),
    ),
    "oasst-every-message-orphaned": (
        "oasst", "orphans.messages.jsonl",
        messages(message("a", "gone", "assistant", rank=0), message("b", "gone", "assistant", rank=1)),
        ["{path}", "messages_orphaned 2"], (),
    ),
    "oasst-every-root-deleted": (
        "oasst", "deleted.messages.jsonl", messages(dict(RANKED[0], deleted=True), *RANKED[1:]),
        ["{path}", "messages_deleted 1", "messages_below_dropped 2"], (),
    ),
    "oasst-other-language-only": (
        "oasst", "en.messages.jsonl", messages(*RANKED), ["{path}", "ranked_prompts_other_language 1"], ("--lang", "de")
    ),
    "oasst-tree-states-keep-none": (
        "oasst", "states.messages.jsonl", messages(*(dict(m, tree_state="ready_for_export") for m in RANKED)),
        ["{path}", "trees_ready_for_export 1"], ("--tree-states", "nope"),
    ),
    "import-every-row-invalid-with-skip": (
        "jsonl", "allbad.jsonl", jsonl_bytes([{"prompt": "x"}, {"response": "y"}, [1, 2]]),
        ["{path}", "none of its 3 rows"], ("--skip-invalid",),
    ),
    # damaged or mislabelled files
    "import-truncated-gzip": (
        "jsonl", "cut.jsonl.gz", gzip_bytes()[: len(gzip_bytes()) // 2], ["{path}", "truncated or corrupt gzip"], ()
    ),
    "import-gzip-with-corrupt-stream": ("jsonl", "crc.jsonl.gz", changed_byte(gzip_bytes(), 0.5), ["{path}", "gzip"], ()),
    "import-gzip-header-only": ("jsonl", "header.jsonl.gz", gzip_bytes()[:12], ["{path}", "gzip"], ()),
    "alpaca-truncated-gzip": ("alpaca", "alpaca.json.gz", ALPACA_GZIP[:-20], ["{path}", "gzip"], ()),
    "import-parquet-not-parquet": (
        "parquet", "text.parquet", b"prompt,response\nq,a\n", ["{path}", "not a readable Parquet file"], ()
    ),
    "import-latin-1-encoding": (
        "jsonl", "latin1.jsonl", jsonl_bytes([CHAT_ROW]) + '{"prompt": "caf\xe9", "response": "ok"}\n'.encode("latin-1"),
        ["{path}:2", "not UTF-8"], (),
    ),
    "alpaca-utf-16-encoding": (
        "alpaca", "utf16.json", json.dumps([{"instruction": "i", "output": "o"}]).encode("utf-16"), ["{path}", "UTF-8"], ()
    ),
    # records wrapped in an object
    "import-wrapped-data-object-one-line": (
        "jsonl", "wrapped.jsonl", jsonl_bytes([{"data": [CHAT_ROW, CHAT_ROW]}]),
        ["{path}:1", "'data' holds a list of 2 records", "expected"], (),
    ),
    "import-wrapped-data-object-pretty": (
        "jsonl", "wrapped.json", json.dumps({"data": [CHAT_ROW]}, indent=2).encode(),
        ["{path}:1", "'data' holds a list of 1 records"], (),
    ),
    "alpaca-wrapped-records": (
        "alpaca", "alpaca.json", json.dumps({"records": [{"instruction": "i", "output": "o"}]}, indent=1).encode(),
        ["{path}", "'records' holds a list"], (),
    ),
    "oasst-wrapped-messages": (
        "oasst", "oasst.json", json.dumps({"messages": RANKED}, indent=1).encode(),
        ["{path}", "'messages' holds a list of 3 records"], (),
    ),
    # invalid JSON
    "import-invalid-jsonl-line-3": (
        "jsonl", "bad.jsonl", jsonl_bytes([CHAT_ROW, CHAT_ROW]) + b'{"prompt": "x", "response": \n',
        ["{path}:3", "invalid JSON"], (),
    ),
    "import-json-array-cut-short": (
        "jsonl", "cut.json", json.dumps([CHAT_ROW] * 3, indent=1)[:-30].encode(), ["{path}", "invalid JSON"], ()
    ),
    "import-content-after-json-array": (
        "jsonl", "extra.json", (json.dumps([CHAT_ROW]) + "\n{}\n").encode(), ["{path}:2", "after the JSON array"], ()
    ),
    # invalid rows
    "import-row-missing-field": (
        "jsonl", "rows.jsonl", jsonl_bytes([CHAT_ROW, {"prompt": "only a prompt"}]), ["{path}:2", "field 'response'"], ()
    ),
    "import-row-bad-role": (
        "jsonl", "roles.jsonl",
        jsonl_bytes([{"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]),
        ["{path}:1", "messages[0].role"], (),
    ),
    "import-row-bad-kind": ("jsonl", "kind.jsonl", jsonl_bytes([dict(CHAT_ROW, kind="sft")]), ["{path}:1", "field 'kind'"], ()),
    "import-eft-row-without-score": (
        "jsonl", "eft.jsonl", jsonl_bytes([dict(CHAT_ROW, kind="eft")]), ["{path}:1", "field 'response'", "Score: N"], ()
    ),
    "import-row-is-an-array": (
        "jsonl", "arrays.jsonl", jsonl_bytes([CHAT_ROW, ["Name a colour.", "Blue."]]), ["{path}:2", "expected an object"], ()
    ),
    "alpaca-record-missing-output": (
        "alpaca", "alpaca.json", json.dumps([{"instruction": "i", "output": "o"}, {"instruction": "j"}], indent=1).encode(),
        ["{path}:", "field 'output'"], (),
    ),
    "oasst-negative-rank": (
        "oasst", "rank.messages.jsonl", messages(*RANKED[:2], message("b", "p", "assistant", rank=-1)),
        ["{path}:3", "field 'rank'"], (),
    ),
    "oasst-message-without-tree-id": (
        "oasst", "tree.messages.jsonl",
        messages(*RANKED[:2], {k: v for k, v in RANKED[2].items() if k != "message_tree_id"}),
        ["{path}:3", "message_tree_id"], (),
    ),
    "import-unknown-judge-template": (
        "jsonl", "rows.jsonl", jsonl_bytes([CHAT_ROW]), ["no-such-template"], ("--judge-template", "no-such-template")
    ),
}  # fmt: skip


def import_file_case(name: str) -> Callable[..., Built]:
    fmt, filename, content, names, extra = IMPORT_FILES[name]

    def build(tmp_path: Path) -> Built:
        path = tmp_path / filename
        path.write_bytes(content)
        return import_argv(tmp_path, fmt, path, *extra), [n.format(path=path) for n in names]

    return build


for _name in IMPORT_FILES:
    case(_name)(import_file_case(_name))


# ---------------------------------------------------------------------------------------- data import: no rows


@case("import-empty-parquet")
def _(tmp_path):
    path = chat_parquet(tmp_path / "none.parquet", rows=0)
    return import_argv(tmp_path, "parquet", path), [str(path), "--allow-empty"]


# ------------------------------------------------------------------------------------- data import: damaged files


@case("import-parquet-corrupt-pages")
def _(tmp_path):
    path = corrupt_data_pages(chat_parquet(tmp_path / "pages.parquet"))
    return import_argv(tmp_path, "parquet", path), [str(path), "corrupt Parquet data"]


@case("import-parquet-corrupt-pages-uncompressed")
def _(tmp_path):
    path = corrupt_data_pages(chat_parquet(tmp_path / "plain.parquet", compression="none"))
    return import_argv(tmp_path, "parquet", path), [str(path), "corrupt Parquet data"]


@case("import-parquet-corrupt-page-after-good-ones")
def _(tmp_path):
    path = corrupt_data_pages(chat_parquet(tmp_path / "deep.parquet", compression="zstd"), 0.4, 0.42)
    return import_argv(tmp_path, "parquet", path), [str(path), "corrupt Parquet data"]


@case("import-parquet-truncated")
def _(tmp_path):
    path = chat_parquet(tmp_path / "cut.parquet")
    truncate(path)
    return import_argv(tmp_path, "parquet", path), [str(path), "not a readable Parquet file"]


@case("oasst-parquet-corrupt-pages")
def _(tmp_path):
    path = tmp_path / "train.parquet"
    rows = [dict(m, message_id=f"{m['message_id']}{i}", parent_id=m["parent_id"] and f"{m['parent_id']}{i}")
            for i in range(300) for m in RANKED]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), path, data_page_size=4096)
    corrupt_data_pages(path)
    return import_argv(tmp_path, "oasst", path), [str(path), "corrupt Parquet data"]


@case("import-parquet-file-as-jsonl")
def _(tmp_path):
    path = chat_parquet(tmp_path / "data.jsonl", rows=20)
    return import_argv(tmp_path, "jsonl", path), [str(path), "is a Parquet file"]


@case("import-directory-without-inputs")
def _(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    return import_argv(tmp_path, "jsonl", folder), [str(folder), "no input files"]


@case("import-input-not-found")
def _(tmp_path):
    path = tmp_path / "nope.jsonl"
    return import_argv(tmp_path, "jsonl", path), [str(path), "not found"]


@case("import-input-not-a-regular-file")
def _(tmp_path):
    path = tmp_path / "pipe.jsonl"
    os.mkfifo(path)
    return import_argv(tmp_path, "jsonl", path), [str(path), "not a regular file"]


@case("import-unreadable-permissions")
def _(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "locked.jsonl", [CHAT_ROW])
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the open fail as it would for a user
        real_open = open

        def deny(file, *args, **kwargs):
            if Path(file) == path:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("builtins.open", deny)
    return import_argv(tmp_path, "jsonl", path), [str(path), "permission denied"]


@case("import-over-a-different-import")
def _(tmp_path):
    first = write_jsonl(tmp_path / "first.jsonl", [CHAT_ROW])
    assert main(import_argv(tmp_path, "jsonl", first)) == 0
    second = write_jsonl(tmp_path / "second.jsonl", [dict(CHAT_ROW, response="Red.")])
    return import_argv(tmp_path, "jsonl", second), [str(tmp_path / "out" / "ift"), "--force"]


# ---------------------------------------------------------------------------------------------- config and --set


# name: (the config file's bytes, the command ({path}: the file, {tmp}: a fresh folder), what the error line names)
CONFIG_FILES: dict[str, tuple[bytes, tuple[str, ...], list[str]]] = {
    "config-duplicate-key": (
        b"dpo:\n  beta: 0.1\n  lr_schedule: linear\n  beta: 0.3\n", ("config", "check", "{path}"),
        ["{path}:4", "'dpo.beta' given twice", "line 2"],
    ),
    "config-duplicate-section": (
        b"judge:\n  num_samples: 3\ndpo:\n  beta: 0.1\njudge:\n  top_p: 0.9\n", ("config", "show", "--config", "{path}"),
        ["{path}:5", "'judge' given twice"],
    ),
    "config-duplicate-key-in-flow-mapping": (
        b"run: {name: a, name: b}\n", ("config", "check", "{path}"), ["{path}:1", "'run.name' given twice"]
    ),
    "config-duplicate-key-read-by-a-step": (
        b"pairs:\n  min_margin: 0.5\n  min_margin: 1.0\n", ("pairs", "--config", "{path}", "--store", "{tmp}/store"),
        ["{path}:3", "'pairs.min_margin'"],
    ),
    "config-invalid-yaml": (b"dpo:\n  beta: [0.1\n", ("config", "check", "{path}"), ["{path}", "not valid YAML", "line"]),
    "config-top-level-list": (b"- dpo\n- judge\n", ("config", "check", "{path}"), ["{path}", "mapping of sections"]),
    "config-not-utf8": ("run:\n  name: caf\xe9\n".encode("latin-1"), ("config", "check", "{path}"), ["{path}", "not UTF-8"]),
    "config-unknown-key": (b"dpo:\n  betta: 0.2\n", ("config", "check", "{path}"), ["{path}", "betta"]),
    "config-wrong-type": (b"judge:\n  num_samples: many\n", ("config", "check", "{path}"), ["{path}", "judge.num_samples"]),
}  # fmt: skip


def config_file_case(name: str) -> Callable[..., Built]:
    content, command, names = CONFIG_FILES[name]

    def build(tmp_path: Path) -> Built:
        path = tmp_path / "config.yaml"
        path.write_bytes(content)
        return [part.format(path=path, tmp=tmp_path) for part in command], [n.format(path=path) for n in names]

    return build


for _name in CONFIG_FILES:
    case(_name)(config_file_case(_name))


@case("config-is-a-directory")
def _(tmp_path):
    return ["config", "check", str(tmp_path)], [str(tmp_path), "not a file"]


@case("config-not-found")
def _(tmp_path):
    path = tmp_path / "missing.yaml"
    return ["config", "show", "--config", str(path)], [str(path), "not found"]


@case("set-malformed-yaml-value")
def _(tmp_path):
    return ["config", "show", "--set", "dpo.beta=[0.1"], ["--set dpo.beta", "not a YAML value"]


@case("set-malformed-flow-mapping")
def _(tmp_path):
    return ["pairs", "--store", str(tmp_path / "s"), "--set", "judge.top_p={a: 1"], ["--set judge.top_p"]


@case("set-without-equals")
def _(tmp_path):
    return ["config", "show", "--set", "dpo.beta"], ["--set dpo.beta", "section.key=value"]


@case("set-without-key")
def _(tmp_path):
    return ["config", "show", "--set", "=0.2"], ["--set =0.2", "no key"]


@case("set-unknown-key")
def _(tmp_path):
    return ["config", "show", "--set", "dpo.betta=0.2"], ["dpo.betta", "unknown key"]


@case("set-wrong-type")
def _(tmp_path):
    return ["config", "show", "--set", "dpo.beta=abc"], ["dpo.beta"]


# ----------------------------------------------------------------------------------------- runs, reports, evals


@case("report-of-a-run-that-does-not-exist")
def _(tmp_path):
    run = f"{tmp_path}/store/runs/nope"
    return ["report", "--run", run, "--out", str(tmp_path / "report")], [run, "no such run"]


@case("report-of-a-run-name-the-store-does-not-hold")
def _(tmp_path):
    store, _ = store_with_run(tmp_path)
    return ["report", "--store", store, "--run", "typo"], [f"{store}/runs/typo", "no such run"]


@case("monitors-of-a-run-that-does-not-exist")
def _(tmp_path):
    run = f"{tmp_path}/store/runs/nope"
    return ["eval", "monitors", "--run", run], [run, "no such run"]


@case("winrate-recorded-into-a-run-that-does-not-exist")
def _(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(annotations(["q1", "q2", "q3"])))
    run = f"{tmp_path}/store/runs/nope"
    argv = ["eval", "winrate", "--annotations", str(path), "--run", run, "--checkpoint", "M1"]
    return argv, [run, "no such run"]


@case("winrate-recorded-for-an-unregistered-checkpoint")
def _(tmp_path):
    store, layout = store_with_run(tmp_path)
    path = tmp_path / "a.json"
    path.write_text(json.dumps(annotations(["q1", "q2", "q3"])))
    argv = ["eval", "winrate", "--annotations", str(path), "--run", layout.run_uri, "--checkpoint", "M7"]
    return argv, [layout.run_uri, "checkpoint M7 is not registered"]


@case("winrate-difficulty-from-a-set-sharing-no-instruction")
def _(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    target, other = tmp_path / "x" / "model-x.json", tmp_path / "y" / "model-y.json"
    target.write_text(json.dumps(annotations([f"q{i}" for i in range(8)])))
    other.write_text(json.dumps(annotations([f"other {i}" for i in range(8)], model="model-y")))
    argv = ["eval", "winrate", "--annotations", str(target), "--difficulty-from", str(other)]
    return argv, [str(other), "shares no instruction", "--allow-length-only-fit"]


@case("winrate-annotations-not-found")
def _(tmp_path):
    path = tmp_path / "missing.json"
    return ["eval", "winrate", "--annotations", str(path)], [str(path), "not found"]


@case("winrate-annotations-invalid-jsonl-line")
def _(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in annotations(["q1", "q2"])) + "{nope\n")
    return ["eval", "winrate", "--annotations", str(path)], [f"{path}:3", "invalid JSON"]


@case("winrate-annotations-wrapped")
def _(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"data": annotations(["q1", "q2"])}, indent=1))
    return ["eval", "winrate", "--annotations", str(path)], [str(path), "'data' holds a list of 2 records"]


@case("winrate-annotations-truncated-gzip")
def _(tmp_path):
    path = tmp_path / "a.json.gz"
    data = gzip.compress(json.dumps(annotations([f"q{i}" for i in range(200)])).encode())
    path.write_bytes(data[: len(data) // 2])
    return ["eval", "winrate", "--annotations", str(path)], [str(path), "gzip"]


@case("winrate-annotations-corrupt-parquet")
def _(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(annotations([f"q{i}" for i in range(3000)])), path, data_page_size=4096)
    corrupt_data_pages(path)
    return ["eval", "winrate", "--annotations", str(path)], [str(path), "corrupt Parquet data"]


@case("winrate-annotations-bad-preference")
def _(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([dict(r, preference=7) for r in annotations(["q1"])]))
    return ["eval", "winrate", "--annotations", str(path)], [str(path), "record 0", "preference"]


@case("winrate-leaderboard-is-a-directory")
def _(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(annotations(["q1", "q2"])))
    board = tmp_path / "board"
    board.mkdir()
    return ["eval", "winrate", "--annotations", str(path), "--compare", str(board)], [str(board), "is a directory"]


def head2head_argv(tmp_path: Path, a: Path, *extra: str) -> list[str]:
    """Head-to-head of two outputs files, judged by an endpoint that is never reached (the input fails first)."""
    b = tmp_path / "b.json"
    b.write_text(json.dumps([{"instruction": "q1", "output": "baseline answer"}]))
    return ["eval", "head2head", "--a", str(a), "--b", str(b), "--judge", "http://127.0.0.1:9/v1", *extra]


@case("head2head-outputs-wrapped")
def _(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"outputs": [{"instruction": "q1", "output": "x"}]}))
    return head2head_argv(tmp_path, a), [f"{a}: record 0", "'outputs' holds a list of 1 records"]


@case("head2head-outputs-record-not-an-object")
def _(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "q1", "output": "x"}, "just text"])
    return head2head_argv(tmp_path, a), [f"{a}: record 1", "expected an object"]


@case("head2head-prompts-not-utf8")
def _(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps([{"instruction": "q1", "output": "x"}]))
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"q1\n\xff\xfe\n")
    return head2head_argv(tmp_path, a, "--prompts", str(prompts)), [f"{prompts}:2", "not UTF-8"]


@case("head2head-recorded-into-a-run-that-does-not-exist")
def _(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps([{"instruction": "q1", "output": "x"}]))
    run = f"{tmp_path}/store/runs/nope"
    return head2head_argv(tmp_path, a, "--run", run, "--checkpoint", "M1"), [run, "no such run"]


@case("reward-model-of-a-run-that-does-not-exist")
def _(tmp_path):
    run = f"{tmp_path}/store/runs/nope"
    argv = ["eval", "reward-model", "--model", "M1", "--run", run, "--data", f"{tmp_path}/store/import"]
    return argv, [run, "no such run"]


# ---------------------------------------------------------- damaged committed artifacts (verified reads, by checksum)


@case("pairs-reads-judgments-with-a-flipped-byte")
def _(tmp_path):
    store, layout = store_with_run(tmp_path)
    flip_byte(committed_file(layout.judgments(1)))
    return ["pairs", "--store", store, "--run", "r", "-t", "1"], [layout.judgments(1), "checksum mismatch"]


@case("pairs-reads-candidates-with-a-flipped-byte")
def _(tmp_path):
    store, layout = store_with_run(tmp_path)
    flip_byte(committed_file(layout.candidates(1)), at=0.3)
    return ["pairs", "--store", store, "--run", "r", "-t", "1"], [layout.candidates(1), "checksum mismatch"]


@case("pairs-reads-a-truncated-table-file")
def _(tmp_path):
    store, layout = store_with_run(tmp_path)
    truncate(committed_file(layout.judgments(1)))
    return ["pairs", "--store", store, "--run", "r", "-t", "1"], [layout.judgments(1), "checksum mismatch"]


@case("pairs-reads-a-table-whose-listed-file-is-deleted")
def _(tmp_path):
    store, layout = store_with_run(tmp_path)
    committed_file(layout.judgments(1)).unlink()
    return ["pairs", "--store", store, "--run", "r", "-t", "1"], [layout.judgments(1), "missing"]


@case("winrate-reads-an-annotations-table-with-a-flipped-byte")
def _(tmp_path):
    from srlm.store import artifacts
    from srlm.store.schemas import schema

    uri = str(tmp_path / "store" / "annotations" / "model-x")
    table = pa.Table.from_pylist(annotations([f"q{i}" for i in range(50)]), schema=schema("annotations"))
    artifacts.write_table(uri, table, "annotations")
    flip_byte(committed_file(uri))
    return ["eval", "winrate", "--annotations", uri, "--difficulty-from", "none"], [uri, "checksum mismatch"]


# ----------------------------------------------------------------------- models (the tiny test model; slowest last)


def committed_checkpoint(tmp_path: Path, model_dir: Path) -> tuple[str, object, str]:
    """A store whose run registers M0 = a committed copy of the tiny model, and an eval_groups table."""
    from srlm.store import artifacts
    from srlm.store.layout import RunLayout
    from srlm.training.registry import register_checkpoint

    store = str(tmp_path / "store")
    layout = RunLayout(store, "r")
    uri = layout.model("M0")
    artifacts.write_directory(uri, model_dir)
    register_checkpoint(layout, "M0", 0, uri, None, "sft", None, True, None, None)
    groups = [{"group_id": "g", "prompt_messages": [{"role": "user", "content": "Name a colour."}], "response_id": f"r{i}",
               "response": f"Colour {i}.", "human_rank": i, "lang": "en", "source": "test"} for i in range(2)]  # fmt: skip
    artifacts.write_table(layout.eval_groups, groups, "eval_groups")
    return store, layout, uri


def reward_model_argv(layout, model: str) -> list[str]:
    return ["eval", "reward-model", "--model", model, "--run", layout.run_uri, "--data", layout.eval_groups,
            "--samples", "1", "--backend", "transformers", "--set", "judge.max_new_tokens=2"]  # fmt: skip


@case("reward-model-loads-a-checkpoint-with-a-flipped-weight-byte", model=True)
def _(tmp_path, tiny_model_dir):
    _, layout, uri = committed_checkpoint(tmp_path, tiny_model_dir)
    weights = next(e.path for e in __import__("srlm.store", fromlist=["x"]).read_manifest(uri).files
                   if e.path.endswith(".safetensors"))  # fmt: skip
    flip_byte(Path(uri) / weights, at=0.7)
    return reward_model_argv(layout, "M0"), [uri, "checksum mismatch"]


@case("reward-model-loads-a-checkpoint-missing-a-listed-file", model=True)
def _(tmp_path, tiny_model_dir):
    from srlm.store import read_manifest

    _, layout, uri = committed_checkpoint(tmp_path, tiny_model_dir)
    config = next(e.path for e in read_manifest(uri).files if e.path.endswith("config.json"))
    (Path(uri) / config).unlink()
    return reward_model_argv(layout, "M0"), [uri, "missing"]


@case("reward-model-loads-a-truncated-model-safetensors", model=True)
def _(tmp_path, tiny_model_dir):
    import shutil

    local = tmp_path / "cut-model"
    shutil.copytree(tiny_model_dir, local)
    weights = next(local.rglob("*.safetensors"))
    truncate(weights, keep=0.6)
    _, layout, _ = committed_checkpoint(tmp_path, tiny_model_dir)
    return reward_model_argv(layout, str(local)), [str(weights.name), "safetensors"]


# -------------------------------------------------------------------------------------------------------- checks


def successes(root: Path) -> set[Path]:
    return set(root.rglob("_SUCCESS"))


def run_case(build: Callable[..., Built], tmp_path: Path, capsys, **fixtures) -> None:
    import inspect

    wanted = inspect.signature(build).parameters
    argv, names = build(tmp_path, **{k: v for k, v in fixtures.items() if k in wanted})
    committed = successes(tmp_path)
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 1, f"exit {code}; stdout: {captured.out[-500:]!r}"
    assert "Traceback" not in captured.err
    assert len(lines) == 1 and lines[0].startswith("srlm: error: "), lines
    assert "rerun with --debug" not in lines[0], f"a raw exception reached the CLI: {lines[0]}"
    for name in names:
        assert name in lines[0], f"{name!r} not named in: {lines[0]}"
    assert successes(tmp_path) == committed, "something was committed"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_naming_it_and_commits_nothing(name, tmp_path, capsys, monkeypatch):
    run_case(CASES[name], tmp_path, capsys, monkeypatch=monkeypatch)


@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_bad_model_is_one_line_naming_it_and_commits_nothing(name, tmp_path, capsys, tiny_model_dir):
    run_case(MODEL_CASES[name], tmp_path, capsys, tiny_model_dir=tiny_model_dir)


def test_the_catalogue_holds_at_least_60_inputs():
    assert len(CASES) + len(MODEL_CASES) >= 60


@pytest.mark.parametrize(
    "name", ["import-truncated-gzip", "config-duplicate-key", "report-of-a-run-that-does-not-exist"]
)
def test_a_user_sees_one_error_line_in_the_terminal(name, tmp_path):
    """The same, as a separate process: what reaches a terminal's stderr (srlm's INFO log lines aside)."""
    argv, names = CASES[name](tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "srlm.cli.main", *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    errors = [line for line in done.stderr.splitlines() if " INFO " not in line]
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(errors) == 1 and errors[0].startswith("srlm: error: ") and all(n in errors[0] for n in names), errors
    assert not successes(tmp_path)
