"""`srlm data import`: read a source in one format, validate every row, write three committed tables.

Output under `out`: `ift` and `eft` (`sft_examples` schema) and `eval_groups` (`eval_groups` schema), always all
three (one of them may be empty) so later steps have stable inputs, then `import_summary.json` beside them. An
import that yields no rows at all is an error (most likely the wrong file or format, or options that leave everything
out) and commits nothing, unless `allow_empty`; the summary counts every left-out record by reason.

Reruns: each table's manifest records the producer fingerprint of srlm.steps.reuse (format and options as
settings, the sha256 of every input file as inputs). Running the same import again over committed output is a no-op that reports the stored summary; a
different import into the same place is refused unless `force`, so a typo in --out cannot silently mix datasets.
A run that crashed part-way resumes: tables already committed by the same import are kept as they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from srlm.data.importers import importer
from srlm.data.importers.options import ReadOptions
from srlm.data.importers.records import EvalGroup, Issue, SftExample
from srlm.data.importers.sources import input_files, read_failure
from srlm.errors import DataError, StoreError
from srlm.judging.template import load_template
from srlm.store.uri import join_uri

log = logging.getLogger(__name__)

TABLES = {"ift": "sft_examples", "eft": "sft_examples", "eval_groups": "eval_groups"}
SUMMARY_NAME = "import_summary.json"
PRODUCER_KEY = "data_import"
# The ReadOptions fields that change what a format's import produces (the others are ignored by that importer).
FORMAT_OPTIONS = {
    "jsonl": ("judge_template",),
    "parquet": ("judge_template",),
    "alpaca": (),
    "oasst": ("lang", "include_synthetic", "tree_states"),
}


@dataclass(frozen=True)
class ImportRequest:
    format: str
    input: str
    out: str
    options: ReadOptions = field(default_factory=ReadOptions)
    skip_invalid: bool = False  # skip (and report) bad rows instead of failing on the first
    force: bool = False  # replace committed output
    allow_empty: bool = False  # commit empty tables when nothing could be imported (otherwise that is an error)
    max_listed_invalid: int = 100  # the summary lists at most this many skipped rows (all are counted)


@dataclass
class ImportSummary:
    format: str
    input: str
    out: dict[str, str]
    ift: int = 0
    eft: int = 0
    eval_groups: int = 0
    eval_responses: int = 0
    skipped: int = 0  # invalid rows skipped under skip_invalid
    duplicates: int = 0  # examples / groups seen before in this import (same id), dropped
    invalid: list[dict[str, Any]] = field(default_factory=list)  # first max_listed_invalid skipped rows
    filtered: dict[str, int] = field(default_factory=dict)  # left out on purpose (OASST rules), by reason
    reused: bool = False  # true when the committed output of an identical earlier import was kept

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        lines = [
            f"{'Kept existing import' if self.reused else 'Imported'} {self.format} from {self.input}",
            f"  ift:          {self.ift:>7} examples  → {self.out['ift']}",
            f"  eft:          {self.eft:>7} examples  → {self.out['eft']}",
            f"  eval_groups:  {self.eval_groups:>7} groups ({self.eval_responses} responses)"
            f"  → {self.out['eval_groups']}",
        ]
        if self.duplicates:
            lines.append(f"  duplicates dropped: {self.duplicates}")
        if self.filtered:
            lines.append("  left out: " + ", ".join(f"{k} {v}" for k, v in sorted(self.filtered.items())))
        if self.skipped:
            lines.append(f"  skipped {self.skipped} invalid rows, e.g.:")
            lines.extend(f"    {Issue(**item).message()}" for item in self.invalid[:5])
        return "\n".join(lines)


def output_uris(out: str) -> dict[str, str]:
    return {name: join_uri(out, name) for name in TABLES}


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise read_failure(str(path), exc) from exc
    return digest.hexdigest()


def fingerprint(request: ImportRequest, files: list[Path]) -> dict[str, Any]:
    """What determines the output: format, options and input content (not paths, not timestamps)."""
    options = {name: getattr(request.options, name) for name in FORMAT_OPTIONS[request.format]}
    if options.get("tree_states") is not None:
        options["tree_states"] = sorted(options["tree_states"])
    return {
        "format": request.format,
        "options": options,
        "inputs": [{"name": f.name, "sha256": _sha256_file(f)} for f in files],
    }


def _producer(expected: dict[str, Any]) -> dict[str, Any]:
    """The producer of an import's tables: its fingerprint covers the input files' content (inputs) and the format
    and options (settings), as srlm.steps.reuse's one rule wants; the raw fingerprint stays for the messages."""
    from srlm.steps.reuse import make_producer

    settings = {"format": expected["format"], "options": expected["options"]}
    return make_producer("data import", {"files": expected["inputs"]}, settings, **{PRODUCER_KEY: expected})


def _existing_import(uris: dict[str, str], producer: dict[str, Any]) -> bool:
    """Whether every output table is committed by this same import; raises if any is from a different one.

    The rule is srlm.steps.reuse's; what differs is the answer to a mismatch: an import's output is a place the
    user names, so another import found there more likely means a mistyped --out than a wish to replace it, and
    it is refused (naming what changed) unless --force.
    """
    from srlm.steps.reuse import check_committed

    committed = 0
    for uri in uris.values():
        verdict = check_committed(uri, producer)
        if verdict.manifest is None:
            continue
        committed += 1
        found = (verdict.manifest.producer or {}).get(PRODUCER_KEY)
        if (verdict.reusable and not verdict.outside) or found == producer[PRODUCER_KEY]:  # older srlm: raw ones
            continue
        what = "data from another producer"
        if isinstance(found, dict):
            names = ", ".join(str(i.get("name")) for i in found.get("inputs", []))
            what = f"an import of {found.get('format')} input {names}"
        why = f" ({'; '.join(verdict.reasons)})" if verdict.reasons else ""
        raise StoreError(
            f"{uri} already holds {what} with different content or options{why}; pass --force to replace it"
        )
    return committed == len(uris)


def _stored_summary(request: ImportRequest, uris: dict[str, str]) -> ImportSummary | None:
    from srlm.store import read_text

    try:
        stored = json.loads(read_text(join_uri(request.out, SUMMARY_NAME)))
    except (StoreError, FileNotFoundError, ValueError):
        return None
    summary = ImportSummary(**{k: v for k, v in stored.items() if k in ImportSummary.__dataclass_fields__})
    summary.input, summary.out, summary.reused = request.input, uris, True
    return summary


def _collect(request: ImportRequest, files: list[Path]) -> tuple[list[SftExample], list[EvalGroup], ImportSummary]:
    module = importer(request.format)
    summary = ImportSummary(format=request.format, input=request.input, out=output_uris(request.out))
    examples: dict[str, SftExample] = {}
    groups: dict[str, EvalGroup] = {}
    filtered: Counter = Counter()
    first_issue: Issue | None = None
    rows = 0
    for path in files:
        for outcome in module.read(path, request.options):
            rows += 1
            if outcome.issue is not None:
                if not request.skip_invalid:
                    raise DataError(outcome.issue.message())
                first_issue = first_issue or outcome.issue
                summary.skipped += 1
                if len(summary.invalid) < request.max_listed_invalid:
                    summary.invalid.append(outcome.issue.to_dict())
                continue
            filtered.update(outcome.filtered)
            for example in outcome.examples:
                if examples.setdefault(example.example_id, example) is not example:
                    summary.duplicates += 1
            for group in outcome.groups:
                if groups.setdefault(group.group_id, group) is not group:
                    summary.duplicates += 1
    if first_issue is not None and summary.skipped == rows:
        raise DataError(
            f"{request.input}: none of its {rows} rows could be imported; the first: {first_issue.message()}"
        )
    summary.filtered = dict(sorted(filtered.items()))
    return list(examples.values()), list(groups.values()), summary


def _nothing_imported(summary: ImportSummary) -> str:
    """Why an import yielded no rows, from the summary's counts of what was left out."""
    left_out = dict(summary.filtered)
    if summary.duplicates:
        left_out["duplicates"] = summary.duplicates
    if summary.skipped:
        left_out["invalid"] = summary.skipped
    if not left_out:
        return "holds no records to import"
    return (
        "no rows to import, every record was left out ("
        + ", ".join(f"{k} {v}" for k, v in sorted(left_out.items()))
        + ")"
    )


def _tables(examples: list[SftExample], groups: list[EvalGroup]) -> dict[str, Any]:
    import pyarrow as pa

    from srlm.store.schemas import schema

    sft = schema("sft_examples")
    return {
        "ift": pa.Table.from_pylist([e.to_row() for e in examples if e.kind == "ift"], schema=sft),
        "eft": pa.Table.from_pylist([e.to_row() for e in examples if e.kind == "eft"], schema=sft),
        "eval_groups": pa.Table.from_pylist([row for g in groups for row in g.to_rows()], schema=schema("eval_groups")),
    }


def run_import(request: ImportRequest) -> ImportSummary:
    """Import request.input into request.out; see the module docstring for rerun behaviour."""
    from srlm.store import write_table, write_text

    module = importer(request.format)
    files = input_files(request.input, module.SUFFIXES)
    if request.format in ("jsonl", "parquet"):
        load_template(request.options.judge_template)  # a wrong template name fails before any reading
    uris = output_uris(request.out)
    producer = _producer(fingerprint(request, files))
    if not request.force and _existing_import(uris, producer):
        stored = _stored_summary(request, uris)
        if stored is not None:
            log.info("%s already holds this import; nothing to do (pass --force to redo it)", request.out)
            return stored

    examples, groups, summary = _collect(request, files)
    if not examples and not groups and not request.allow_empty:
        raise DataError(
            f"{request.input}: {_nothing_imported(summary)}; nothing committed (pass --allow-empty to commit empty tables)"
        )
    for name, table in _tables(examples, groups).items():
        write_table(uris[name], table, TABLES[name], producer=producer, force=request.force)
    summary.ift = sum(e.kind == "ift" for e in examples)
    summary.eft = sum(e.kind == "eft" for e in examples)
    summary.eval_groups = len(groups)
    summary.eval_responses = sum(len(g.responses) for g in groups)
    write_text(join_uri(request.out, SUMMARY_NAME), json.dumps(summary.to_dict(), indent=1, ensure_ascii=False) + "\n")
    return summary
