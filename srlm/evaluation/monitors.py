"""Reward-hacking monitors over a run's artifacts, per iteration.

What self-rewarding training can go wrong on, and what is measured for it:
- responses growing longer each iteration (the judge rewarding length): candidate length in tokens and characters;
- the judge collapsing to "everything is a 5": the judgment score histogram, flagged when more than
  `collapse_threshold` of parsed judgments are 5;
- judgments that stop following the rubric: parse rate;
- preference pairs that teach "longer is better": chosen-vs-rejected length gap and how often chosen is longer;
- a win rate that rises only through length: raw vs length-controlled win rate of the annotations stored with
  the run (<run>/eval/<checkpoint>/annotations/<name>).
Iteration t's candidates and judgments come from M_{t-1}, so each iteration row names that model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from srlm.checkpoint_ids import previous_checkpoint_id
from srlm.formatting import format_number, format_percent, is_missing
from srlm.judging.scores import score_histogram
from srlm.store import artifacts
from srlm.store.layout import RunLayout


@dataclass
class MonitorThresholds:
    collapse_threshold: float = field(default=0.8, metadata={"help": "Flag when more than this share of parsed judgments score 5."})
    parse_rate_floor: float = field(default=0.5, metadata={"help": "Flag when fewer than this share of judgments parse."})
    chosen_longer_threshold: float = field(
        default=0.75, metadata={"help": "Flag when chosen is longer than rejected in more than this share of pairs."}
    )
    length_growth_threshold: float = field(
        default=1.5, metadata={"help": "Flag when mean response length exceeds this multiple of iteration 1's."}
    )


@dataclass
class IterationMonitor:
    iteration: int
    model: str
    candidates: dict | None = None
    judgments: dict | None = None
    pairs: dict | None = None


@dataclass
class MonitorReport:
    run: str
    iterations: list[IterationMonitor]
    winrates: list[dict]
    flags: list[str]
    length_control: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "run": self.run,
            "iterations": [asdict(i) for i in self.iterations],
            "winrates": self.winrates,
            "length_control": self.length_control,
            "flags": self.flags,
        }

    def to_text(self) -> str:
        lines = [f"monitors for {self.run}"]
        if not self.iterations:
            lines.append("  no iteration artifacts yet")
        for it in self.iterations:
            lines.append(f"  iteration {it.iteration} (data from {it.model})")
            c, j, p = it.candidates, it.judgments, it.pairs
            lines.append(
                f"    candidates  {c['n']} responses, mean {c['mean_tokens']:.1f} tokens / {c['mean_chars']:.0f} chars, "
                f"{100 * c['truncated_rate']:.1f}% hit max tokens" if c else "    candidates  (none)"
            )
            if j:
                hist = " ".join(f"{k}:{v}" for k, v in j["histogram"].items())
                lines.append(
                    f"    judgments   parse {100 * j['parse_rate']:.1f}%, score 5 in {format_percent(j['five_rate'])} of parsed, "
                    f"mean {format_number(j['mean_score'])}; histogram {hist}"
                )
            else:
                lines.append("    judgments   (none)")
            lines.append(
                f"    pairs       {p['n']} pairs, chosen longer in {format_percent(p['chosen_longer_rate'])}, "
                f"gap {format_number(p['mean_char_gap'], '+.0f')} chars / {format_number(p['mean_token_gap'], '+.1f')} tokens"
                if p else "    pairs       (none)"
            )
        if self.winrates:
            lines.append("  win rates (raw → length-controlled)")
            for w in self.winrates:
                lc = format_number(w["length_controlled_winrate"], ".1f")
                lines.append(f"    {w['checkpoint']:<10} {w['name']:<24} {w['win_rate']:5.1f}% → {lc}% vs {w['baseline']}")
        lines.append("  flags: " + ("none" if not self.flags else ""))
        lines.extend(f"    ! {flag}" for flag in self.flags)
        return "\n".join(lines)


def candidate_stats(table: pa.Table) -> dict:
    chars = np.array([len(r) for r in table.column("response").to_pylist()], dtype=float)
    tokens = np.array([t for t in table.column("num_tokens").to_pylist() if t is not None], dtype=float)
    reasons = table.column("finish_reason").to_pylist()
    return {
        "n": int(table.num_rows),
        "mean_chars": _stat(chars, np.mean),
        "median_chars": _stat(chars, np.median),
        "p90_chars": _stat(chars, lambda a: np.percentile(a, 90)),
        "mean_tokens": _stat(tokens, np.mean),
        "median_tokens": _stat(tokens, np.median),
        "truncated_rate": (sum(1 for r in reasons if r == "length") / len(reasons)) if reasons else 0.0,
    }


def judgment_stats(table: pa.Table) -> dict:
    ok = table.column("parse_ok").to_pylist()
    scores = [s for s, parsed in zip(table.column("score").to_pylist(), ok) if parsed and s is not None]
    return {
        "n": len(ok),
        "parse_rate": sum(ok) / len(ok) if ok else 0.0,
        "mean_score": float(np.mean(scores)) if scores else None,
        "five_rate": sum(1 for s in scores if s >= 5.0) / len(scores) if scores else None,
        "histogram": score_histogram(scores),
    }


def pair_stats(table: pa.Table) -> dict:
    rows = table.to_pylist()
    if not rows:
        return {"n": 0, "chosen_longer_rate": None, "mean_char_gap": None, "mean_token_gap": None, "mean_margin": None}
    char_gap = [
        (r["chosen_chars"] if r["chosen_chars"] is not None else len(r["chosen"]))
        - (r["rejected_chars"] if r["rejected_chars"] is not None else len(r["rejected"]))
        for r in rows
    ]
    token_gap = [
        r["chosen_tokens"] - r["rejected_tokens"]
        for r in rows
        if r["chosen_tokens"] is not None and r["rejected_tokens"] is not None
    ]
    return {
        "n": len(rows),
        "chosen_longer_rate": sum(1 for g in char_gap if g > 0) / len(rows),
        "mean_char_gap": float(np.mean(char_gap)),
        "mean_token_gap": float(np.mean(token_gap)) if token_gap else None,
        "mean_margin": float(np.mean([r["margin"] for r in rows])),
    }


def compute_monitors(layout: RunLayout, thresholds: MonitorThresholds | None = None) -> MonitorReport:
    from srlm.evaluation.runs import iterations_of

    thresholds = thresholds or MonitorThresholds()
    iterations = []
    for t in iterations_of(layout):
        it = IterationMonitor(iteration=t, model=previous_checkpoint_id(t))
        if artifacts.is_committed(layout.candidates(t)):
            it.candidates = candidate_stats(
                artifacts.read_table(layout.candidates(t), "candidates", ["response", "num_tokens", "finish_reason"])
            )
        if artifacts.is_committed(layout.judgments(t)):
            it.judgments = judgment_stats(artifacts.read_table(layout.judgments(t), "judgments", ["score", "parse_ok"]))
        if artifacts.is_committed(layout.pairs(t)):
            it.pairs = pair_stats(artifacts.read_table(layout.pairs(t), "pairs"))
        iterations.append(it)
    winrates, fits = run_winrates(layout)
    report = MonitorReport(
        run=layout.run_uri, iterations=iterations, winrates=winrates, flags=[], length_control=fits
    )
    report.flags = flags_for(report, thresholds)
    return report


def run_winrates(layout: RunLayout) -> tuple[list[dict], list[dict]]:
    """Raw and LC win rates of every annotations table stored with the run, fitted jointly per baseline."""
    from srlm.evaluation.annotations import load_annotation_sets
    from srlm.evaluation.runs import annotation_artifacts
    from srlm.evaluation.winrate import evaluate_win_rates

    found = annotation_artifacts(layout)
    sets, owners = [], []
    for checkpoint, name, uri in found:
        for s in load_annotation_sets(uri):
            sets.append(s)
            owners.append((checkpoint, name))
    if not sets:
        return [], []
    report = evaluate_win_rates(sets)
    rows = []
    for (checkpoint, name), result in zip(owners, report.results):
        rows.append({"checkpoint": checkpoint, "name": name, **result.to_dict()})
    return rows, [f.summary() for f in report.length_control]


def flags_for(report: MonitorReport, th: MonitorThresholds) -> list[str]:
    flags = []
    first_len = next((i.candidates["mean_chars"] for i in report.iterations if i.candidates), None)
    for it in report.iterations:
        j, p, c = it.judgments, it.pairs, it.candidates
        if j and j["five_rate"] is not None and j["five_rate"] > th.collapse_threshold:
            flags.append(
                f"iteration {it.iteration}: {100 * j['five_rate']:.0f}% of parsed judgments are 5 "
                f"(> {100 * th.collapse_threshold:.0f}%): the judge may be collapsing to all-5s"
            )
        if j and j["parse_rate"] < th.parse_rate_floor:
            flags.append(f"iteration {it.iteration}: only {100 * j['parse_rate']:.0f}% of judgments parse")
        if p and p["chosen_longer_rate"] is not None and p["chosen_longer_rate"] > th.chosen_longer_threshold:
            flags.append(
                f"iteration {it.iteration}: chosen is longer than rejected in {100 * p['chosen_longer_rate']:.0f}% of "
                f"pairs (mean gap {p['mean_char_gap']:+.0f} chars): DPO will reward length"
            )
        if c and first_len and c["mean_chars"] and c["mean_chars"] > th.length_growth_threshold * first_len:
            flags.append(
                f"iteration {it.iteration}: responses are {c['mean_chars'] / first_len:.1f}x as long as in iteration 1"
            )
    for w in report.winrates:
        lc = w.get("length_controlled_winrate")
        if not is_missing(lc) and w["win_rate"] - lc > 10:
            flags.append(
                f"{w['checkpoint']} {w['name']}: win rate {w['win_rate']:.1f}% falls to {lc:.1f}% length-controlled"
            )
    return flags


def _stat(values: np.ndarray, fn) -> float | None:
    return float(fn(values)) if values.size else None


