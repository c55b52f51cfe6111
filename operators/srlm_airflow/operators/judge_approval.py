"""JudgeApprovalOperator: a person approves or rejects a judge that failed its health check (srlm.judging.health).

An Airflow human-in-the-loop ApprovalOperator that asks only when there is something to decide: `health` is the
judge_health task's result ({"passed": …, "message": …}); when the gate passed (or was accepted already), the task
succeeds at once without a request, so a healthy iteration runs every task and skips none. When it failed, the
task waits in Airflow's awaiting-input state for Approve or Reject (the message is the request's body): Approve lets
the downstream tasks run (the DAG's accept_judge task then records the override in the gate's artifact); Reject,
or no answer within `response_timeout`, skips them, so DPO never trains on a judge nobody vouched for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator


class JudgeApprovalOperator(ApprovalOperator):
    """ApprovalOperator that asks only when the judge-health gate's result (`health`, templated) says it failed."""

    template_fields: Sequence[str] = (*ApprovalOperator.template_fields, "health")

    def __init__(self, *, health: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.health = health

    def execute(self, context: Any) -> Any:
        if not needs_approval(self.health):
            self.log.info("the judge-health gate passed: nothing to approve")
            return None
        return super().execute(context)


def needs_approval(health: Any) -> bool:
    """Whether a judge_health result asks for a person: it failed and nobody accepted it yet."""
    return isinstance(health, dict) and health.get("passed") is False
