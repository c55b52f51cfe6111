"""`srlm report`: one self-contained HTML page, PNG charts and a Markdown summary of a run.

Every section renders whatever exists; a suite with no data says so instead of failing, so the report works from
the first iteration on. The data comes from srlm.evaluation.report_data, the charts from
srlm.evaluation.report_charts, the pages from the jinja2 templates in srlm/evaluation/templates (report.html.j2
with autoescape on, summary.md.j2); the HTML embeds the charts as data URIs so the single file can be mailed or
attached to an Airflow task.
"""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from srlm.evaluation.monitors import MonitorThresholds
from srlm.evaluation.report_data import ReportData, checkpoint_rows, gather, iteration_rows
from srlm.store.layout import RunLayout

HTML_TEMPLATE = "report.html.j2"
MARKDOWN_TEMPLATE = "summary.md.j2"


@dataclass
class ReportFiles:
    directory: str
    html: str
    markdown: str
    charts: list[str]
    uri: str | None = None


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
    """Write report.html, summary.md, report.json and one PNG per chart with data into `out_dir`."""
    from srlm.evaluation.report_charts import render_charts

    out_dir.mkdir(parents=True, exist_ok=True)
    png = render_charts(data)
    for name, image in png.items():
        (out_dir / f"{name}.png").write_bytes(image)
    (out_dir / "report.html").write_text(render_html(data, png), encoding="utf-8")
    (out_dir / "summary.md").write_text(render_markdown(data, list(png)), encoding="utf-8")
    (out_dir / "report.json").write_text(json.dumps(data.to_dict(), indent=1, default=str), encoding="utf-8")
    return ReportFiles(
        directory=str(out_dir),
        html=str(out_dir / "report.html"),
        markdown=str(out_dir / "summary.md"),
        charts=[str(out_dir / f"{name}.png") for name in png],
    )


def render_html(data: ReportData, png: dict[str, bytes]) -> str:
    images = {name: base64.b64encode(image).decode("ascii") for name, image in png.items()}
    return _templates().get_template(HTML_TEMPLATE).render(
        data=data, checkpoint_rows=checkpoint_rows(data), iteration_rows=iteration_rows(data), images=images
    )


def render_markdown(data: ReportData, charts: list[str]) -> str:
    return _templates().get_template(MARKDOWN_TEMPLATE).render(
        data=data, checkpoint_rows=checkpoint_rows(data), iteration_rows=iteration_rows(data), charts=charts
    )


@cache
def _templates():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("srlm.evaluation", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), disabled_extensions=("md.j2",), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
