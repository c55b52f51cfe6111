"""`srlm report`: one self-contained HTML page, PNG charts and a Markdown summary of a run.

Sources: the run's eval_results (reward-model metrics, win rates, head-to-head) and the monitors computed from
its iteration artifacts. Every section renders whatever exists; a suite with no data says so instead of failing,
so the report works from the first iteration on. Charts are matplotlib (Agg backend, no display needed); the
HTML embeds them as data URIs so the single file can be mailed or attached to an Airflow task.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from srlm.evaluation.monitors import MonitorReport, MonitorThresholds, compute_monitors
from srlm.evaluation.results import read_run_results, results_by_checkpoint
from srlm.store.layout import RunLayout

RM_METRICS = ("pairwise_accuracy", "exact_match", "five_best", "spearman", "kendall_tau", "parse_rate")


@dataclass
class ReportData:
    run: str
    generated_at: str
    checkpoints: list[str]
    results: dict[str, dict[str, dict[str, float | None]]]
    monitors: MonitorReport

    def to_dict(self) -> dict:
        return {
            "run": self.run,
            "generated_at": self.generated_at,
            "checkpoints": self.checkpoints,
            "results": self.results,
            "monitors": self.monitors.to_dict(),
        }


@dataclass
class ReportFiles:
    directory: str
    html: str
    markdown: str
    charts: list[str]
    uri: str | None = None


def gather(layout: RunLayout, thresholds: MonitorThresholds | None = None) -> ReportData:
    results = results_by_checkpoint(read_run_results(layout))
    monitors = compute_monitors(layout, thresholds)
    checkpoints = set(results) | {w["checkpoint"] for w in monitors.winrates}
    try:
        from srlm.training.registry import list_records

        checkpoints |= {r.checkpoint_id for r in list_records(layout)}
    except ImportError:  # registry not available: the results and annotations name the checkpoints
        pass
    return ReportData(
        run=layout.run_uri,
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        checkpoints=sorted(checkpoints, key=_natural_key),
        results=results,
        monitors=monitors,
    )


def write_report(layout: RunLayout, out_dir: str | Path | None = None, *, thresholds: MonitorThresholds | None = None) -> ReportFiles:
    """Render into `out_dir`, or (None) into the run's report artifact in the store (replacing the previous one)."""
    data = gather(layout, thresholds)
    if out_dir is not None:
        return render(data, Path(out_dir))
    from srlm.store import artifacts

    with tempfile.TemporaryDirectory(prefix="srlm-report-") as tmp:
        files = render(data, Path(tmp))
        artifacts.write_directory(layout.report, tmp, kind="report", force=True)
    local = Path(artifacts.fetch_directory(layout.report))
    return ReportFiles(
        directory=str(local),
        html=str(local / "report.html"),
        markdown=str(local / "summary.md"),
        charts=[str(local / Path(c).name) for c in files.charts],
        uri=layout.report,
    )


def render(data: ReportData, out_dir: Path) -> ReportFiles:
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = {name: fig for name, fig in _charts(data).items() if fig is not None}
    png: dict[str, bytes] = {}
    for name, fig in charts.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        png[name] = buffer.getvalue()
        (out_dir / f"{name}.png").write_bytes(png[name])
    import matplotlib.pyplot as plt

    for fig in charts.values():
        plt.close(fig)
    (out_dir / "report.html").write_text(_html(data, png), encoding="utf-8")
    (out_dir / "summary.md").write_text(_markdown(data, list(png)), encoding="utf-8")
    (out_dir / "report.json").write_text(json.dumps(data.to_dict(), indent=1, default=str), encoding="utf-8")
    return ReportFiles(
        directory=str(out_dir),
        html=str(out_dir / "report.html"),
        markdown=str(out_dir / "summary.md"),
        charts=[str(out_dir / f"{name}.png") for name in png],
    )


# ------------------------------------------------------------------------------------------------------ tables


def checkpoint_rows(data: ReportData) -> list[dict[str, str]]:
    lc_by_ckpt: dict[str, list[dict]] = {}
    for w in data.monitors.winrates:
        lc_by_ckpt.setdefault(w["checkpoint"], []).append(w)
    rows = []
    for ckpt in data.checkpoints:
        suites = data.results.get(ckpt, {})
        h2h, wr, rm = suites.get("head2head", {}), suites.get("winrate", {}), suites.get("reward_model", {})
        stored = lc_by_ckpt.get(ckpt, [])
        raw = wr.get("win_rate", stored[0]["win_rate"] if stored else None)
        lc = wr.get("length_controlled_winrate", stored[0]["length_controlled_winrate"] if stored else None)
        rows.append(
            {
                "checkpoint": ckpt,
                "head-to-head A / tie / B": (
                    f"{_f(h2h.get('a_win_pct'), '.1f')} / {_f(h2h.get('tie_pct'), '.1f')} / {_f(h2h.get('b_win_pct'), '.1f')}"
                    if h2h else "—"
                ),
                "win rate": _f(raw, ".1f"),
                "LC win rate": _f(lc, ".1f"),
                "pairwise acc.": _pct(rm.get("pairwise_accuracy")),
                "exact match": _pct(rm.get("exact_match")),
                "5-best": _pct(rm.get("five_best")),
                "spearman": _f(rm.get("spearman"), ".3f"),
                "kendall τ": _f(rm.get("kendall_tau"), ".3f"),
                "judge parse": _pct(rm.get("parse_rate")),
            }
        )
    return rows


def iteration_rows(data: ReportData) -> list[dict[str, str]]:
    rows = []
    for it in data.monitors.iterations:
        c, j, p = it.candidates or {}, it.judgments or {}, it.pairs or {}
        rows.append(
            {
                "iteration": str(it.iteration),
                "model": it.model,
                "mean tokens": _f(c.get("mean_tokens"), ".1f"),
                "mean chars": _f(c.get("mean_chars"), ".0f"),
                "hit max tokens": _pct(c.get("truncated_rate")),
                "judge parse": _pct(j.get("parse_rate")),
                "scored 5": _pct(j.get("five_rate")),
                "mean score": _f(j.get("mean_score"), ".2f"),
                "pairs": str(p.get("n", "—")),
                "chosen longer": _pct(p.get("chosen_longer_rate")),
                "length gap (chars)": _f(p.get("mean_char_gap"), "+.0f"),
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------------ charts


def _charts(data: ReportData) -> dict:
    import logging

    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # font-cache chatter under the CLI's INFO logging
    return {
        "winrates": _winrate_chart(data),
        "reward_model": _reward_model_chart(data),
        "lengths": _length_chart(data),
        "scores": _score_chart(data),
    }


def _winrate_chart(data: ReportData):
    import matplotlib.pyplot as plt

    ckpts, raw, lc, h2h = [], [], [], []
    for row in checkpoint_rows(data):
        suites = data.results.get(row["checkpoint"], {})
        r, l = _num(row["win rate"]), _num(row["LC win rate"])
        h = suites.get("head2head", {})
        if r is None and l is None and not h:
            continue
        ckpts.append(row["checkpoint"])
        raw.append(r)
        lc.append(l)
        h2h.append((h.get("a_win_pct"), h.get("tie_pct"), h.get("b_win_pct")) if h else None)
    if not ckpts:
        return None
    has_h2h = any(h for h in h2h)
    fig, axes = plt.subplots(1, 2 if has_h2h else 1, figsize=(11 if has_h2h else 6, 3.8), squeeze=False)
    ax = axes[0][0]
    x = range(len(ckpts))
    ax.bar([i - 0.2 for i in x], [v or 0 for v in raw], width=0.4, label="win rate", color="#4c72b0")
    ax.bar([i + 0.2 for i in x], [v or 0 for v in lc], width=0.4, label="length-controlled", color="#dd8452")
    ax.set_xticks(list(x), ckpts)
    ax.set_ylabel("%")
    ax.set_title("Win rate vs baseline")
    ax.legend()
    if has_h2h:
        ax = axes[0][1]
        labels = [c for c, h in zip(ckpts, h2h) if h]
        vals = [h for h in h2h if h]
        a = [v[0] or 0 for v in vals]
        t = [v[1] or 0 for v in vals]
        b = [v[2] or 0 for v in vals]
        y = list(range(len(labels)))
        ax.barh(y, a, color="#55a868", label="A wins")
        ax.barh(y, t, left=a, color="#c7c7c7", label="tie")
        ax.barh(y, b, left=[i + j for i, j in zip(a, t)], color="#c44e52", label="B wins")
        ax.set_yticks(y, labels)
        ax.set_xlim(0, 100)
        ax.set_xlabel("%")
        ax.set_title("Head-to-head (A = checkpoint)")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def _reward_model_chart(data: ReportData):
    import matplotlib.pyplot as plt

    ckpts = [c for c in data.checkpoints if data.results.get(c, {}).get("reward_model")]
    if not ckpts:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = list(range(len(ckpts)))
    for metric in RM_METRICS:
        values = [data.results[c]["reward_model"].get(metric) for c in ckpts]
        if any(v is not None for v in values):
            ax.plot(x, [math.nan if v is None else v for v in values], marker="o", label=metric)
    ax.set_xticks(x, ckpts)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Reward-model metrics vs human rankings")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def _length_chart(data: ReportData):
    import matplotlib.pyplot as plt

    its = [i for i in data.monitors.iterations if i.candidates or i.pairs]
    if not its:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    labels = [f"it{i.iteration}\n({i.model})" for i in its]
    x = list(range(len(its)))
    axes[0].plot(x, [(i.candidates or {}).get("mean_tokens") or math.nan for i in its], marker="o", label="tokens")
    twin = axes[0].twinx()
    twin.plot(x, [(i.candidates or {}).get("mean_chars") or math.nan for i in its], marker="s", color="#dd8452", label="chars")
    axes[0].set_xticks(x, labels)
    lines = axes[0].get_lines() + twin.get_lines()
    axes[0].legend(lines, [line.get_label() for line in lines], fontsize=8, loc="upper left")
    axes[0].set_ylabel("mean tokens")
    twin.set_ylabel("mean chars")
    axes[0].set_title("Candidate response length")
    gaps = [(i.pairs or {}).get("mean_char_gap") for i in its]
    longer = [(i.pairs or {}).get("chosen_longer_rate") for i in its]
    axes[1].bar(x, [g if g is not None else 0 for g in gaps], color="#8172b3")
    axes[1].set_xticks(x, labels)
    axes[1].axhline(0, color="black", linewidth=0.8)
    axes[1].set_ylabel("chosen − rejected (chars)")
    axes[1].set_title("Preference-pair length gap")
    for k, rate in enumerate(longer):
        if rate is not None:
            axes[1].annotate(f"{100 * rate:.0f}% longer", (k, gaps[k] or 0), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    return fig


def _score_chart(data: ReportData):
    import matplotlib.pyplot as plt

    its = [i for i in data.monitors.iterations if i.judgments]
    if not its:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(its)
    for k, it in enumerate(its):
        hist = it.judgments["histogram"]
        total = sum(hist.values()) or 1
        xs = [int(s) + (k - (len(its) - 1) / 2) * width for s in hist]
        ax.bar(xs, [100 * v / total for v in hist.values()], width=width, label=f"iteration {it.iteration} ({it.model})")
    ax.set_xticks(range(6))
    ax.set_xlabel("judge score (rounded)")
    ax.set_ylabel("% of parsed judgments")
    ax.set_title("Judge score histogram")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------------ HTML / MD

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.flag{background:#fff3cd;border-left:4px solid #e0a800;padding:.4em .8em;margin:.3em 0}
.none{color:#777;font-style:italic}img{max-width:100%;margin:.5em 0}.meta{color:#666}
"""


def _html(data: ReportData, png: dict[str, bytes]) -> str:
    esc = html.escape

    def image(name: str, alt: str) -> str:
        if name not in png:
            return ""
        encoded = base64.b64encode(png[name]).decode("ascii")
        return f'<img alt="{esc(alt)}" src="data:image/png;base64,{encoded}">'

    def table(rows: list[dict[str, str]]) -> str:
        if not rows:
            return ""
        head = "".join(f"<th>{esc(k)}</th>" for k in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in r.values()) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    def none(text: str) -> str:
        return f'<p class="none">{esc(text)}</p>'

    m = data.monitors
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>srlm report — {esc(data.run)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Self-rewarding run report</h1><p class='meta'>{esc(data.run)}<br>generated {esc(data.generated_at)}</p>",
        "<h2>Flags</h2>",
        "".join(f"<div class='flag'>{esc(f)}</div>" for f in m.flags) or none("No monitor flags raised."),
        "<h2>Per checkpoint</h2>",
        table(checkpoint_rows(data)) or none("No checkpoints or evaluation results yet."),
        "<h2>Win rates</h2>",
        image("winrates", "win rates") or none("No win-rate or head-to-head results yet (srlm eval head2head / winrate)."),
        "<h2>Reward-model metrics</h2>",
        image("reward_model", "reward-model metrics") or none("No reward-model results yet (srlm eval reward-model)."),
        "<h2>Per iteration</h2>",
        table(iteration_rows(data)) or none("No iteration artifacts yet."),
        "<h2>Response lengths</h2>",
        image("lengths", "lengths") or none("No candidates or pairs yet."),
        "<h2>Judge scores</h2>",
        image("scores", "score histogram") or none("No judgments yet."),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _markdown(data: ReportData, charts: list[str]) -> str:
    def table(rows: list[dict[str, str]]) -> str:
        if not rows:
            return ""
        head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
        return head + "".join("| " + " | ".join(str(v) for v in r.values()) + " |\n" for r in rows)

    m = data.monitors
    lines = [f"# srlm run report: {data.run}", "", f"Generated {data.generated_at}.", "", "## Flags", ""]
    lines += [f"- {f}" for f in m.flags] or ["No monitor flags raised."]
    lines += ["", "## Per checkpoint", "", table(checkpoint_rows(data)) or "No checkpoints or evaluation results yet."]
    lines += ["", "## Per iteration", "", table(iteration_rows(data)) or "No iteration artifacts yet."]
    if charts:
        lines += ["", "## Charts", ""] + [f"![{c}]({c}.png)" for c in charts]
    return "\n".join(lines) + "\n"


def _f(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def _pct(value) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _num(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _natural_key(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
