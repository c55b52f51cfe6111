"""The report's charts: matplotlib (Agg backend, no display needed) figures of srlm.evaluation.report_data, as PNG.

A chart with nothing to show is left out (the report says what is missing instead).
"""

from __future__ import annotations

import io
import logging
import math

from srlm.evaluation.report_data import ReportData, iteration_label, reward_model_series, win_rate_series

PNG_DPI = 110


def render_charts(data: ReportData) -> dict[str, bytes]:
    """chart name -> PNG bytes, for the charts that have data: winrates, reward_model, lengths, scores."""
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # font-cache chatter under the CLI's INFO logging
    import matplotlib.pyplot as plt

    figures = {
        "winrates": _winrate_chart(data),
        "reward_model": _reward_model_chart(data),
        "lengths": _length_chart(data),
        "scores": _score_chart(data),
    }
    png: dict[str, bytes] = {}
    for name, fig in figures.items():
        if fig is None:
            continue
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=PNG_DPI, bbox_inches="tight")
        plt.close(fig)
        png[name] = buffer.getvalue()
    return png


def _winrate_chart(data: ReportData):
    import matplotlib.pyplot as plt

    series = win_rate_series(data)
    if not series.checkpoints:
        return None
    has_h2h = any(series.head2head)
    fig, axes = plt.subplots(1, 2 if has_h2h else 1, figsize=(11 if has_h2h else 6, 3.8), squeeze=False)
    ax = axes[0][0]
    x = range(len(series.checkpoints))
    ax.bar([i - 0.2 for i in x], [v or 0 for v in series.raw], width=0.4, label="win rate", color="#4c72b0")
    ax.bar([i + 0.2 for i in x], [v or 0 for v in series.length_controlled], width=0.4, label="length-controlled", color="#dd8452")
    ax.set_xticks(list(x), series.checkpoints)
    ax.set_ylabel("%")
    ax.set_title("Win rate vs baseline")
    ax.legend()
    if has_h2h:
        ax = axes[0][1]
        labels = [c for c, h in zip(series.checkpoints, series.head2head) if h]
        vals = [h for h in series.head2head if h]
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

    ckpts, metrics = reward_model_series(data)
    if not ckpts:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = list(range(len(ckpts)))
    for metric, values in metrics.items():
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
    labels = [iteration_label(i.iteration, i.model) for i in its]
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
