"""How a step run elsewhere hands its output URIs back: one marked line at the end of its log.

A Ray job, a Kubernetes pod and a local subprocess all have a log the orchestrator already follows, so the result
travels there instead of through the store: the Airflow worker never needs store credentials, and the result of an
already-succeeded job is found again in its log. In a pod the same JSON is also written where the Kubernetes
operator's xcom sidecar reads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MARKER = "srlm-task-result: "
# Exit code of a step that failed in a way a retry cannot fix (bad config, bad data): orchestrators fail the task
# at once instead of spending its retries.
PERMANENT_FAILURE_EXIT_CODE = 3
KUBERNETES_XCOM_FILE = Path("/airflow/xcom/return.json")


def format_result(outputs: dict[str, Any]) -> str:
    return MARKER + json.dumps(outputs, sort_keys=True, separators=(",", ":"))


def parse_result(lines: Iterable[str]) -> dict[str, Any] | None:
    """The outputs of the last result line in `lines` (a log may hold earlier attempts' lines too)."""
    found: dict[str, Any] | None = None
    for line in lines:
        index = line.find(MARKER)
        if index < 0:
            continue
        try:
            value = json.loads(line[index + len(MARKER) :])
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            found = value
    return found


def publish_result(outputs: dict[str, Any], xcom_file: Path = KUBERNETES_XCOM_FILE) -> str:
    """Print the result line (flushed, last) and, inside a pod with an xcom sidecar, write its return file."""
    line = format_result(outputs)
    print(line, flush=True)
    if xcom_file.parent.is_dir():
        xcom_file.write_text(json.dumps(outputs))
    return line
