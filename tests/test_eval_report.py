"""The report's templates: autoescaped HTML, plain Markdown, and the same tables in both."""

from __future__ import annotations

from srlm.evaluation.monitors import IterationMonitor, MonitorReport
from srlm.evaluation.report import render_html, render_markdown
from srlm.evaluation.report_data import ReportData, checkpoint_rows


def _data(flag: str) -> ReportData:
    iteration = IterationMonitor(iteration=1, model="M0", pairs={"n": 3, "chosen_longer_rate": 0.5, "mean_char_gap": 12.0})
    return ReportData(
        run="s3://bucket/runs/<demo>",
        generated_at="2026-01-01 00:00 UTC",
        checkpoints=["M0", "M1"],
        results={"M1": {"reward_model": {"pairwise_accuracy": 0.625, "spearman": float("nan")}}},
        monitors=MonitorReport(run="s3://bucket/runs/<demo>", iterations=[iteration], winrates=[], flags=[flag]),
    )


def test_html_escapes_what_the_run_wrote_and_markdown_keeps_it():
    data = _data("<script>alert('x')</script> & more")
    html = render_html(data, {"lengths": b"\x89PNG"})
    assert "<script>" not in html and "&lt;script&gt;" in html and "&amp; more" in html
    assert "srlm report — s3://bucket/runs/&lt;demo&gt;" in html
    assert html.count("data:image/png;base64,") == 1  # only the chart that exists
    assert "No win-rate or head-to-head results yet" in html and "No judgments yet." in html
    md = render_markdown(data, ["lengths"])
    assert "- <script>alert('x')</script> & more" in md and "![lengths](lengths.png)" in md


def test_tables_show_missing_values_as_a_dash_in_both_pages():
    data = _data("a flag")
    [m0, m1] = checkpoint_rows(data)
    assert (m0["pairwise acc."], m1["pairwise acc."], m1["spearman"]) == ("—", "62.5%", "—")  # NaN is missing too
    html, md = render_html(data, {}), render_markdown(data, [])
    assert "<td>62.5%</td>" in html and "| M1 | — | — | — | 62.5% |" in md
    assert "| 1 | M0 | — | — | — | — | — | — | 3 | 50.0% | +12 |" in md
    assert "## Charts" not in md
