"""CLI 'report': `srlm report --run URI [--out DIR]` writes the run's HTML report, PNG charts and Markdown summary."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    rep = subparsers.add_parser(
        "report",
        help="Write an HTML page, PNG charts and a Markdown summary of a run's evaluations and monitors.",
        description=(
            "Gathers the run's eval_results (win rates, head-to-head, reward-model metrics) and the monitors of its "
            "iterations (lengths, judge score histograms, parse rates, pair length gaps) into report.html "
            "(self-contained, charts embedded), <chart>.png, summary.md and report.json. Missing suites are shown as "
            "such. Without --out the report is committed to the store at <run>/report."
        ),
    )
    rep.add_argument("--run", required=True, metavar="URI", help="Run URI (<store>/runs/<name>) or a run name with --store.")
    rep.add_argument("--store", metavar="URI", help="Store root, when --run is a name.")
    rep.add_argument("--out", metavar="DIR", help="Local output directory (default: the run's report artifact in the store).")
    rep.add_argument("--collapse-threshold", type=float, default=0.8, metavar="F", help="Monitor flag: share of judgments at 5 (default 0.8).")
    rep.add_argument("--json", action="store_true", help="Print the written paths as one JSON object.")
    rep.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from srlm.evaluation.monitors import MonitorThresholds
    from srlm.evaluation.report import write_report
    from srlm.evaluation.runs import layout_for, require_run

    layout = require_run(layout_for(args.run, args.store))
    files = write_report(layout, args.out, thresholds=MonitorThresholds(collapse_threshold=args.collapse_threshold))
    if args.json:
        print(json.dumps(files.__dict__))
    else:
        print(f"report for {layout.run_uri}")
        print(f"  html:     {files.html}")
        print(f"  markdown: {files.markdown}")
        for chart in files.charts:
            print(f"  chart:    {chart}")
        if files.uri:
            print(f"  committed to {files.uri}")
    return 0
