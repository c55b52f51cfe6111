"""Head-to-head evaluation of two systems on the same prompts, judged pairwise in both orders.

A system is either a model (generate its responses here: greedy by default, or the config's sampling) or
responses that already exist (a `candidates` table, whose first candidate per prompt is used, or an
AlpacaEval-style outputs file with instruction/output). The result is an `annotations` table with system B as
output_1 (the baseline) and system A as output_2, so `srlm eval winrate` reads it as "A's win rate against B",
and the summary the paper's head-to-head figure shows: A wins %, tie %, B wins %.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from srlm.data.importers.records import type_name, wrapped_records
from srlm.data.importers.sources import read_text_file
from srlm.errors import DataError
from srlm.evaluation.pairwise import PairToJudge, judge_pairs, load_pairwise_template
from srlm.evaluation.sources import JSON_SUFFIXES, PARQUET_SUFFIXES, local_file_path, read_record_file
from srlm.formatting import format_percent

log = logging.getLogger(__name__)

OUTPUT_TABLE_SCHEMAS = ("candidates", "annotations")
PROMPT_TABLE_SCHEMAS = ("prompts", "candidates", "eval_groups", "annotations")
RESULT_FIELDS = (
    "a", "b", "judge", "n", "a_wins", "ties", "b_wins", "a_win_pct", "tie_pct", "b_win_pct", "order_parse_rate",
    "order_agreement", "position_consistency", "first_position_rate", "annotations_uri", "comparison",
)


@dataclass
class System:
    """One side of the comparison: `responses` maps prompt -> response once known."""

    label: str
    spec: str
    kind: str  # "model" or "outputs"
    responses: dict[str, str] = field(default_factory=dict)


@dataclass
class Head2HeadResult:
    a: str
    b: str
    judge: str
    n: int
    a_wins: int
    ties: int
    b_wins: int
    order_parse_rate: float | None
    order_agreement: float | None
    annotations: pa.Table | None = None
    # The judge's position consistency (see position_stats): None when no pair had both orders parsed.
    position_consistency: float | None = None
    first_position_rate: float | None = None
    annotations_uri: str | None = None
    # "pairwise": the pairwise template in both orders; "rubric": each response scored by the judge's rubric
    # (srlm.evaluation.judges.RubricJudge), where order_parse_rate is the share of prompts with both responses scored.
    comparison: str = "pairwise"

    @property
    def a_win_pct(self) -> float:
        return 100.0 * self.a_wins / self.n if self.n else float("nan")

    @property
    def tie_pct(self) -> float:
        return 100.0 * self.ties / self.n if self.n else float("nan")

    @property
    def b_win_pct(self) -> float:
        return 100.0 * self.b_wins / self.n if self.n else float("nan")

    def to_dict(self) -> dict:
        """The summary as `srlm eval head2head --json` prints it (without the annotations table)."""
        return {name: getattr(self, name) for name in RESULT_FIELDS}

    def to_text(self) -> str:
        width = 40
        bar_a = round(width * self.a_wins / self.n) if self.n else 0
        bar_b = round(width * self.b_wins / self.n) if self.n else 0
        bar = "A" * bar_a + "." * max(0, width - bar_a - bar_b) + "B" * bar_b
        parse, agree = format_percent(self.order_parse_rate), format_percent(self.order_agreement)
        lines = [
            f"head-to-head on {self.n} prompts, judge {self.judge}",
            f"  A = {self.a}",
            f"  B = {self.b}",
            f"  A wins {self.a_win_pct:5.1f}%   tie {self.tie_pct:5.1f}%   B wins {self.b_win_pct:5.1f}%",
            f"  [{bar}]",
        ]
        if self.comparison == "rubric":
            lines.append(f"  both responses scored on {parse} of prompts (equal means and unscored responses are ties)")
        else:
            lines += [
                f"  verdicts parsed: {parse} of orders; both orders agree: {agree} of prompts",
                f"  position consistency: {format_percent(self.position_consistency)} of pairs with both orders "
                f"parsed gave one verdict; the first-shown response won {format_percent(self.first_position_rate)} "
                "of decided orders (50% is unbiased)",
            ]
        if self.annotations_uri:
            lines.append(f"  annotations: {self.annotations_uri}")
        return "\n".join(lines)


def load_prompts(source: str) -> list[str]:
    """Prompts from a store table (prompts, candidates, eval_groups, annotations) or a .json/.jsonl/.txt file."""
    path = local_file_path(source)
    if path is not None and path.is_file():
        if path.suffix == ".txt":
            text = read_text_file(path)
            return _unique(line.strip() for line in text.splitlines() if line.strip())
        return _unique(_prompt_of(r, f"{path}: record {i}") for i, r in enumerate(read_record_file(path)))
    table, schema_name = _read_store_table(source, PROMPT_TABLE_SCHEMAS)
    if schema_name == "eval_groups":
        # The prompt of a group is its last user turn; single-turn groups only (the judge sees one instruction).
        prompts = []
        for messages in table.column("prompt_messages").to_pylist():
            if len(messages) == 1 and messages[0]["role"] == "user":
                prompts.append(messages[0]["content"])
        return _unique(prompts)
    column = "instruction" if schema_name == "annotations" else "prompt"
    return _unique(table.column(column).to_pylist())


def load_outputs(source: str) -> dict[str, str]:
    """prompt -> response from a candidates / annotations table or an outputs file (instruction + output)."""
    path = local_file_path(source)
    if path is not None and path.is_file():
        out: dict[str, str] = {}
        for i, record in enumerate(read_record_file(path)):
            where = f"{path}: record {i}"
            response = _record(record, where).get("output", record.get("response"))
            if not isinstance(response, str):
                raise DataError(f"{where}: field 'output' (or 'response') must be a string")
            out.setdefault(_prompt_of(record, where), response)
        return out
    table, schema_name = _read_store_table(source, OUTPUT_TABLE_SCHEMAS)
    if schema_name == "annotations":  # the model side of existing annotations
        return dict(zip(table.column("instruction").to_pylist(), table.column("output_2").to_pylist()))
    rows = sorted(table.select(["prompt", "candidate_index", "response"]).to_pylist(), key=lambda r: r["candidate_index"])
    out = {}
    for row in rows:
        out.setdefault(row["prompt"], row["response"])
    return out


def is_outputs_source(spec: str) -> bool:
    """Whether `spec` names existing responses (a file or a committed table) rather than a model."""
    path = local_file_path(spec)
    if path is not None and path.is_file():
        return path.name.endswith(JSON_SUFFIXES + PARQUET_SUFFIXES)
    from srlm.store import artifacts

    try:
        if not artifacts.is_committed(spec):
            return False
        manifest = artifacts.read_manifest(spec)
    except Exception:  # an alias or hub id is not a store URI at all
        return False
    return manifest.kind == "table" and manifest.schema_name in OUTPUT_TABLE_SCHEMAS


def generate_responses(
    backend, prompts: Sequence[str], *, temperature: float = 0.0, top_p: float = 1.0, max_new_tokens: int = 512
) -> list[str]:
    from srlm.generation.base import Sampling

    sampling = Sampling(n=1, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    completions = backend.generate([[{"role": "user", "content": p}] for p in prompts], sampling)
    return [c.texts[0] if c.texts else "" for c in completions]


def compare(a: System, b: System, prompts: Sequence[str], judge, *, template: str | None = None) -> Head2HeadResult:
    """Judge A against B on `prompts` (both must hold a response for every prompt)."""
    missing = [p for p in prompts if p not in a.responses or p not in b.responses]
    if missing:
        raise DataError(f"{len(missing)} prompt(s) lack a response from A or B, e.g. {missing[0][:80]!r}")
    pairs = [PairToJudge(p, b.responses[p], a.responses[p], generator_1=b.label, generator_2=a.label) for p in prompts]
    table, stats = judge_pairs(pairs, judge, template=template or load_pairwise_template())
    prefs = table.column("preference").to_pylist()
    pointwise = getattr(judge, "scores_pointwise", False)
    # Scoring one response at a time has no order, so position statistics do not apply to it.
    position = {"position_consistency": None, "first_position_rate": None} if pointwise else position_stats(table)
    return Head2HeadResult(
        a=a.label,
        b=b.label,
        judge=judge.name,
        n=len(prefs),
        a_wins=sum(1 for p in prefs if p == 2.0),
        ties=sum(1 for p in prefs if p == 1.5),
        b_wins=sum(1 for p in prefs if p == 1.0),
        order_parse_rate=stats["order_parse_rate"],
        order_agreement=stats["order_agreement"],
        annotations=table,
        position_consistency=position["position_consistency"],
        first_position_rate=position["first_position_rate"],
        comparison="rubric" if pointwise else "pairwise",
    )


def position_stats(annotations: pa.Table) -> dict[str, Any]:
    """How far the pairwise judge's verdict depends on which response it was shown first, from an annotations
    table's per-order verdicts (raw_judgments_json: forward shows output_1 first, reverse output_2; each winner is
    already mapped to "1", "2" or "tie", None when unparsed).

    position_consistency: of the pairs whose two orders both parsed, the share where both orders gave the same
    verdict (the same output, or tie both times); unlike order_agreement it does not count an unparsed order as a
    disagreement. first_position_rate: of the order verdicts that named a winner, the share naming the response
    shown first; a judge without position bias is near 0.5, one that always answers "A" is at 1.0.
    """
    import json

    both_parsed = consistent = decided = first = 0
    for raw in annotations.column("raw_judgments_json").to_pylist():
        detail = json.loads(raw) if raw else {}
        forward = (detail.get("forward") or {}).get("winner")
        reverse = (detail.get("reverse") or {}).get("winner")
        if forward is not None and reverse is not None:
            both_parsed += 1
            consistent += forward == reverse
        for winner, shown_first in ((forward, "1"), (reverse, "2")):
            if winner in ("1", "2"):
                decided += 1
                first += winner == shown_first
    return {
        "both_orders_parsed": both_parsed,
        "position_consistency": consistent / both_parsed if both_parsed else None,
        "first_position_rate": first / decided if decided else None,
    }


def fill_responses(
    systems: Sequence[System],
    prompts: Sequence[str],
    open_model: Callable[[System], object],
    *,
    keep_open: System | None = None,
    sampling: dict | None = None,
) -> object | None:
    """Generate responses for model systems, one backend at a time; returns `keep_open`'s backend, still open
    (so a self-judging model is not loaded twice), or None."""
    kept = None
    # The system whose backend stays open goes last, so two models are never in memory together.
    for system in sorted(systems, key=lambda s: s is keep_open):
        if system.kind != "model":
            continue
        backend = open_model(system)
        try:
            texts = generate_responses(backend, prompts, **(sampling or {}))
        except BaseException:
            backend.close()
            raise
        system.responses = dict(zip(prompts, texts))
        if system is keep_open:
            kept = backend
        else:
            backend.close()
    return kept


def _read_store_table(source: str, allowed: Sequence[str]) -> tuple[pa.Table, str]:
    from srlm.store import artifacts

    manifest = artifacts.read_manifest(source)
    if manifest.schema_name not in allowed:
        raise DataError(f"{source}: holds {manifest.schema_name!r} rows; expected one of {', '.join(allowed)}")
    return artifacts.read_table(source, manifest.schema_name), manifest.schema_name


def _record(value: Any, where: str) -> dict:
    """A record of an outputs / prompts file: an object, and not a wrapper around the records."""
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected an object, got {type_name(value)}")
    if "instruction" not in value and "prompt" not in value and (wrapper := wrapped_records(value)):
        raise DataError(f"{where}: {wrapper.reason}")
    return value


def _prompt_of(record: dict, where: str) -> str:
    value = _record(record, where).get("instruction", record.get("prompt"))
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field 'instruction' (or 'prompt') must be a non-empty string")
    return value


def _unique(items) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)
