"""Operator extra link: "Ray job" opens the job this task instance ran in the Ray dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class RayJobLink(BaseOperatorLink):
    """Airflow 3 computes the link on the worker when the try ends, from the job the operator followed (also after a
    deferral: `execute_complete` records the job it completed)."""

    name = "Ray job"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        submission = getattr(operator, "last_submission_id", None)
        jobs = getattr(operator, "_jobs", None)
        if not submission or jobs is None:
            return ""
        return f"{jobs.address.rstrip('/')}/#/jobs/{submission}"
