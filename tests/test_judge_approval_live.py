"""The judge-approval step against a live Airflow: srlm_iteration triggered through the REST API as the UI's user,
with a judge that fails its health check and *Ask for approval when the judge fails* on. A person first rejects
(the run ends without DPO, nothing is trained or accepted), then, in a second run of the same iteration, approves
(every committed step is reused, the approval is recorded in the gate's artifact with the approving run, M1 is
trained). Real scheduler, DAG processor, triggerer and API server (tests/fixtures/live_airflow.py); every step is a
Ray job on a local head running the tiny model with its test stand-ins.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest

from tests.fixtures.live_airflow import LiveAirflow, prepare_tiny_run, stand_in_env

pytestmark = [pytest.mark.slow]

DAG = "srlm_iteration"
RUN_TIMEOUT_S = 1500.0
APPROVE_TASK = "approve_judge"
# Past the gate: everything that must not run after a rejection.
AFTER_THE_GATE = ("accept_judge", "dpo", "evaluate", "publish")


def test_a_person_rejects_then_approves_a_failed_judge_through_the_rest_api(tmp_path, monkeypatch):
    from srlm.orchestration.ray_head import free_port, start_local_head
    from srlm.steps.judge_health import read_report
    from srlm.steps.registry import step
    from srlm.store import RunLayout
    from srlm.training.registry import get_checkpoint, list_records
    from tests.fixtures.chaos import ProcessWatch
    from tests.test_dags_e2e import RUN

    # No grade histogram reaches 3 bits of entropy (uniform over 0–5 is 2.58): the gate fails on every judge.
    store, config = prepare_tiny_run(tmp_path, judge_health={"min_score_entropy": 3.0})
    layout = RunLayout(store, RUN)
    gate_uri = step("judge_health").output_uri(layout, 1)
    for name, value in stand_in_env(tmp_path).items():
        monkeypatch.setenv(name, value)  # the Ray head's jobs inherit them
    conf = {"config_path": str(config), "store_uri": store, "run_name": RUN, "iteration": 1, "judge_approval": True}

    with ProcessWatch(also=str(tmp_path), interval=1.0) as watch:
        ray_temp = tempfile.mkdtemp(prefix="srlm-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        head = start_local_head(dashboard_port=free_port(), num_cpus=2, num_gpus=0, temp_dir=ray_temp,
                                cwd=str(tmp_path))  # fmt: skip
        try:
            with LiveAirflow(tmp_path, head.address) as airflow:
                api = airflow.api()

                def awaiting_approval(run_id: str) -> dict:
                    waiting = api.wait_for_run(DAG, run_id, RUN_TIMEOUT_S, on_timeout=airflow.log_tail,
                                               until=lambda tasks: tasks.get(APPROVE_TASK) == "awaiting_input")  # fmt: skip
                    airflow.wait_for_worker_exit(DAG, run_id, APPROVE_TASK)  # as a person would: not within 1 s
                    return waiting

                # -- run 1: the gate fails, the run waits for a person, who rejects ---------------------------
                api.trigger(DAG, "rejected", conf)
                waiting = awaiting_approval("rejected")
                assert waiting["state"] == "running", waiting
                assert waiting["tasks"]["judge_health"] == "success"  # on_failure=report: the failure is a result
                assert all(waiting["tasks"][task] is None for task in AFTER_THE_GATE), waiting["tasks"]
                detail = api.hitl_detail(DAG, "rejected", APPROVE_TASK)
                assert detail["options"] == ["Approve", "Reject"]
                assert "score_entropy" in detail["body"]  # the gate's one-line reason is what the person reads
                assert not read_report(gate_uri).override

                answer = api.respond(DAG, "rejected", APPROVE_TASK, "Reject")
                assert answer["chosen_options"] == ["Reject"]
                rejected = api.wait_for_run(DAG, "rejected", RUN_TIMEOUT_S, on_timeout=airflow.log_tail)
                assert rejected["tasks"][APPROVE_TASK] == "success", rejected["tasks"]
                assert all(rejected["tasks"][task] == "skipped" for task in AFTER_THE_GATE), rejected["tasks"]
                assert [c.checkpoint_id for c in list_records(layout)] == ["M0"]  # nothing trained
                assert read_report(gate_uri).override is None  # nothing accepted

                # -- run 2 of the same iteration: every step reused, the gate asks again, a person approves ----
                api.trigger(DAG, "approved", conf)
                awaiting_approval("approved")
                api.respond(DAG, "approved", APPROVE_TASK, "Approve")
                approved = api.wait_for_run(DAG, "approved", RUN_TIMEOUT_S, on_timeout=airflow.log_tail)
                assert approved["state"] == "success", approved["tasks"]
                assert all(approved["tasks"][task] == "success" for task in AFTER_THE_GATE), approved["tasks"]
                responder = api.hitl_detail(DAG, "approved", APPROVE_TASK)["responded_by_user"]
                assert responder["name"] == "admin"
        finally:
            head.stop()
            shutil.rmtree(ray_temp, ignore_errors=True)
        assert not watch.stop()  # nothing this test started is left running

    report = read_report(gate_uri)
    assert report.failed and report.override["by"] == "Airflow approval (DAG run approved, task approve_judge)"
    m1 = get_checkpoint(layout, "M1")
    assert (m1.training, m1.iteration, m1.parent_id) == ("dpo", 1, "M0")
