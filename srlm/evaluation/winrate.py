"""AlpacaEval-style win rates of annotation sets, raw and length-controlled.

The raw figures follow AlpacaEval 2.0's `get_winrate` conventions exactly (they reproduce its published
leaderboard from the annotation files):

- only rows with a preference count (null = the annotator gave none; those rows are not in n_total);
- win_rate = 100 * mean(preference - 1); standard_error = 100 * its standard error of the mean (ddof = 1);
- n_wins: preference > 1.5, n_wins_base: < 1.5, n_draws: exactly 1.5;
- discrete_win_rate = 100 * (n_wins + n_draws / 2) / n_total;
- avg_length = int(mean character length of the model's outputs), truncated like AlpacaEval, over every output the
  model produced: rows with a null preference count, and so do instructions of the evaluation set that the set
  lacks (AlpacaEval averages over all model outputs but only writes annotations for those it could judge, such as
  non-empty ones), which are taken as empty outputs. The evaluation set is the union of instructions over every
  set given with the same baseline; `n_unannotated` says how many instructions a set lacks.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from srlm.errors import DataError
from srlm.evaluation.annotations import AnnotationSet
from srlm.evaluation.length_control import DEFAULT_DIFFICULTY_PRIOR_SD, LengthControlledFit, fit_length_controlled
from srlm.formatting import format_number


@dataclass
class WinRate:
    model: str
    baseline: str | None
    win_rate: float
    standard_error: float | None
    n_wins: int
    n_wins_base: int
    n_draws: int
    n_total: int
    discrete_win_rate: float
    avg_length: int
    length_controlled_winrate: float | None = None
    n_unannotated: int = 0
    source: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class WinRateReport:
    """Win rates of the requested sets plus the length-control fit of each baseline group."""

    results: list[WinRate]
    length_control: list[LengthControlledFit]

    def to_dict(self) -> dict:
        return {
            "models": [r.to_dict() for r in self.results],
            "length_control": [fit.summary() for fit in self.length_control],
        }


def raw_win_rate(annotations: AnnotationSet, evaluation_instructions: set[str] | None = None) -> WinRate:
    """The non-length-controlled figures of one set (see the module docstring for the conventions)."""
    prefs = annotations.preferences
    valid = prefs[np.isfinite(prefs)]
    n_total = int(valid.size)
    if annotations.is_self_comparison:
        # AlpacaEval scores a system against itself as all draws whatever its annotator said.
        valid = np.full(n_total, 1.5)
    shifted = valid - 1.0
    n_wins = int((shifted > 0.5).sum())
    n_wins_base = int((shifted < 0.5).sum())
    n_draws = int((shifted == 0.5).sum())
    win_rate = float(shifted.mean() * 100.0) if n_total else math.nan
    standard_error = float(shifted.std(ddof=1) / math.sqrt(n_total) * 100.0) if n_total > 1 else None
    discrete = (n_wins + n_draws / 2.0) / n_total * 100.0 if n_total else math.nan

    missing = 0
    if evaluation_instructions:
        missing = len(evaluation_instructions - set(annotations.instructions))
    n_outputs = len(annotations) + missing
    avg_length = int(annotations.output_2_chars.sum() / n_outputs) if n_outputs else 0
    return WinRate(
        model=annotations.model,
        baseline=annotations.baseline,
        win_rate=win_rate,
        standard_error=standard_error,
        n_wins=n_wins,
        n_wins_base=n_wins_base,
        n_draws=n_draws,
        n_total=n_total,
        discrete_win_rate=discrete,
        avg_length=avg_length,
        n_unannotated=missing,
        source=annotations.source,
    )


def evaluate_win_rates(
    targets: Sequence[AnnotationSet],
    difficulty_sets: Sequence[AnnotationSet] = (),
    *,
    length_control: bool = True,
    difficulty_prior_sd: float = DEFAULT_DIFFICULTY_PRIOR_SD,
    allow_length_only_fit: bool = False,
) -> WinRateReport:
    """Raw and LC win rates of `targets`; `difficulty_sets` only help estimate instruction difficulty.

    Sets are grouped by baseline; each group gets one joint length-control fit over its targets and its
    difficulty sets (a difficulty set holding the same annotations as a target is used once). Difficulty sets
    that share no instruction with the others leave the fit without a difficulty term: that is an error (the LC
    figure would silently be the length-only GLM's) unless `allow_length_only_fit`.
    """
    if not targets:
        raise DataError("no annotation sets to evaluate")
    extra = [d for d in difficulty_sets if not any(_same_set(d, t) for t in targets)]
    pool = list(targets) + extra
    groups: dict[str | None, list[int]] = {}
    for i, s in enumerate(pool):
        groups.setdefault(s.baseline, []).append(i)

    results: list[WinRate | None] = [None] * len(targets)
    fits: list[LengthControlledFit] = []
    for baseline, members in groups.items():
        # Sets with an unknown baseline cannot be assumed to share one: each is its own group.
        member_groups = [[i] for i in members] if baseline is None else [members]
        for group in member_groups:
            group_sets = [pool[i] for i in group]
            universe = set().union(*(s.instructions for s in group_sets)) if len(group_sets) > 1 else None
            fit = (
                fit_length_controlled(group_sets, difficulty_prior_sd=difficulty_prior_sd) if length_control else None
            )
            helpers = [pool[i].source for i in group if i >= len(targets)]
            if fit is not None and fit.method == "length-only" and helpers and not allow_length_only_fit:
                raise DataError(
                    f"--difficulty-from {', '.join(map(str, helpers))}: shares no instruction with "
                    f"{', '.join(str(pool[i].source) for i in group if i < len(targets))}, so instruction "
                    "difficulty cannot be estimated; pass annotation sets of the same instructions, or "
                    "--allow-length-only-fit to accept the length-only GLM"
                )
            if fit is not None and any(i < len(targets) for i in group):
                fits.append(fit)
            for pos, i in enumerate(group):
                if i >= len(targets):
                    continue
                result = raw_win_rate(pool[i], universe)
                if fit is not None:
                    result.length_controlled_winrate = fit.winrates.get(pos)
                results[i] = result
    return WinRateReport([r for r in results if r is not None], fits)


def read_leaderboard(path: str | Path) -> dict[str, dict[str, str]]:
    """An AlpacaEval leaderboard CSV as {model: row}."""
    from srlm.data.importers.sources import read_text_file

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: leaderboard CSV {'is a directory' if path.is_dir() else 'not found'}")
    try:
        rows = list(csv.DictReader(io.StringIO(read_text_file(path), newline="")))
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable leaderboard CSV: {exc}") from exc
    key = "model" if rows and "model" in rows[0] else (next(iter(rows[0])) if rows else "model")
    return {row[key]: row for row in rows}


INTEGER_FIELDS = ("n_wins", "n_wins_base", "n_draws", "n_total", "avg_length")
FLOAT_FIELDS = ("win_rate", "standard_error", "discrete_win_rate")


def compare_to_leaderboard(results: Sequence[WinRate], leaderboard: dict[str, dict[str, str]]) -> dict:
    """Per-model differences to a published leaderboard, and the LC mean absolute difference.

    Raw figures match when integers are equal and floats agree to 1e-12 relative: the published floats were
    summed in another order, so the last bit or two can differ. The LC mean absolute difference is over models
    that are not the baseline itself (whose LC is 50 by construction in both).
    """
    per_model, lc_diffs = [], []
    for r in results:
        row = leaderboard.get(r.model)
        if row is None:
            continue
        mismatches = []
        for name in INTEGER_FIELDS:
            if row.get(name) not in (None, "") and int(float(row[name])) != getattr(r, name):
                mismatches.append(f"{name}: {getattr(r, name)} vs {row[name]}")
        for name in FLOAT_FIELDS:
            ours = getattr(r, name)
            theirs = float(row[name]) if row.get(name) not in (None, "") else None
            if theirs is None:
                continue
            if ours is None or not math.isclose(ours, theirs, rel_tol=1e-12, abs_tol=1e-12):
                mismatches.append(f"{name}: {ours!r} vs {theirs!r}")
        entry = {"model": r.model, "raw_match": not mismatches, "mismatches": mismatches}
        published_lc = row.get("length_controlled_winrate")
        if published_lc not in (None, "") and r.length_controlled_winrate is not None:
            entry["lc"] = r.length_controlled_winrate
            entry["published_lc"] = float(published_lc)
            entry["lc_difference"] = r.length_controlled_winrate - float(published_lc)
            if r.model != r.baseline:
                lc_diffs.append(abs(entry["lc_difference"]))
        per_model.append(entry)
    return {
        "models": per_model,
        "raw_all_match": bool(per_model) and all(e["raw_match"] for e in per_model),
        "lc_mean_abs_difference": float(np.mean(lc_diffs)) if lc_diffs else None,
        "n_compared": len(per_model),
    }


def win_rates_text(payload: dict) -> str:
    """The one-screen table of `srlm eval winrate` from its JSON payload (WinRateReport.to_dict() and extras)."""
    header = f"{'model':<40} {'win rate':>9} {'± se':>6} {'LC':>7} {'discrete':>9} {'wins':>5} {'base':>5} {'draws':>5} {'n':>5} {'avg len':>8}"
    lines = [header, "-" * len(header)]
    for r in payload["models"]:
        se = format_number(r["standard_error"], missing="")
        lc_text = format_number(r["length_controlled_winrate"])
        lines.append(
            f"{r['model'][:40]:<40} {r['win_rate']:>9.2f} {se:>6} {lc_text:>7} {r['discrete_win_rate']:>9.2f} "
            f"{r['n_wins']:>5} {r['n_wins_base']:>5} {r['n_draws']:>5} {r['n_total']:>5} {r['avg_length']:>8}"
        )
    for fit in payload["length_control"]:
        lines.append(
            f"LC fit vs {fit['baseline']}: {fit['method']} over {fit['n_sets']} set(s), {fit['n_rows']} rows, "
            f"difficulty for {fit['n_instructions_with_difficulty']} instructions, length coefficient "
            + format_number(fit["length_coefficient"], ".3f")
        )
        if fit["method"] == "length-only":
            lines.append("  (no instruction difficulty: pass other models' annotation sets with --difficulty-from)")
        elif fit["n_sets"] < 4:
            lines.append(f"  (difficulty from only {fit['n_sets']} sets: more sets with this baseline give a steadier LC)")
    comparison = payload.get("comparison")
    if comparison:
        lines.append(
            f"vs published leaderboard: raw figures match for "
            f"{sum(m['raw_match'] for m in comparison['models'])}/{comparison['n_compared']} models; "
            f"LC mean absolute difference {format_number(comparison['lc_mean_abs_difference'])} points"
        )
        for m in comparison["models"]:
            if m["mismatches"]:
                lines.append(f"  {m['model']}: " + "; ".join(m["mismatches"]))
    if payload.get("recorded"):
        lines.append(f"recorded: {payload['recorded']}")
    return "\n".join(lines)


def _same_set(a: AnnotationSet, b: AnnotationSet) -> bool:
    """The same annotations, however their path was spelled (a target also found in a --difficulty-from folder)."""
    return (
        a.model == b.model
        and a.baseline == b.baseline
        and a.instructions == b.instructions
        and np.array_equal(a.preferences, b.preferences, equal_nan=True)
    )
