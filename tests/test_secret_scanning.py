"""No secret leaks into anything a run leaves behind.

`dag.test()` of srlm_seed (plan → seed SFT as a Ray job → evaluate M0 as a Ray job → publish) on the tiny model,
on the local Ray head, with the store on moto S3, then `srlm report` of the run. The run sees known fake secrets:
the S3 secret key of the `aws_default` connection (which the operators hand to every Ray job), the store's own
environment credentials, and the API key of an OpenAI-compatible judge endpoint (in the `srlm_judge` connection
and SRLM_JUDGE_API_KEY, in the Airflow worker and in every Ray job; it is never called). Then every task log (the
runner's output and the Airflow home), Ray job log (the head's log directory and the Jobs API), XCom value, the
Airflow database, and every object of the store (manifests, tables, checkpoints, summaries, the report) is scanned:
none of the secrets may appear.

srlm_seed is the smallest DAG that runs steps as Ray jobs with the S3 connection and writes manifests, a checkpoint,
evaluation summaries and XComs (a full iteration adds minutes, not new places a secret could go).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.fixtures.orchestration import SHIMS_DIR
from tests.fixtures.store import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, FAKE_SESSION_TOKEN
from tests.test_dags_e2e import write_config, write_seed_data

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

RUN = "e2e"  # write_seed_data's run
REPO_ROOT = Path(__file__).resolve().parents[1]


def find_secrets(data: bytes, needles: dict[str, bytes]) -> list[str]:
    return [name for name, needle in needles.items() if needle in data]


def scan_directory(root: Path, needles: dict[str, bytes]) -> dict[str, list[str]]:
    found = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        try:
            hits = find_secrets(path.read_bytes(), needles)
        except OSError:  # a socket or a file removed while we walk
            continue
        if hits:
            found[str(path)] = hits
    return found


def scan_store(store: str, needles: dict[str, bytes]) -> tuple[int, dict[str, list[str]]]:
    """Every object under the S3 store prefix."""
    from srlm.store.filesystems import s3_client

    bucket, _, prefix = store.removeprefix("s3://").partition("/")
    client = s3_client()
    found, count = {}, 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            count += 1
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            hits = find_secrets(body, needles)
            if hits:
                found[f"s3://{bucket}/{item['Key']}"] = hits
    return count, found


def test_no_secret_reaches_a_log_xcom_manifest_summary_or_report(
    ray_head, run_dag, airflow_home, s3_server, s3_store, tiny_model_dir, tmp_path, monkeypatch
):
    from srlm.orchestration.ray_jobs import RayJobs
    from srlm.store import RunLayout
    from srlm.training.registry import get_checkpoint

    connection_secret = f"srlm-scan-s3-{secrets.token_hex(12)}"
    judge_key = f"sk-srlm-scan-judge-{secrets.token_hex(12)}"
    needles = {
        "aws_default password": connection_secret.encode(),
        "judge API key": judge_key.encode(),
        "environment secret key": FAKE_SECRET_ACCESS_KEY.encode(),
        "environment session token": FAKE_SESSION_TOKEN.encode(),
    }
    aws_default = {
        "conn_type": "aws", "login": FAKE_ACCESS_KEY_ID, "password": connection_secret,
        "extra": {"endpoint_url": s3_server, "region_name": "us-east-1"},
    }  # fmt: skip
    judge_connection = f"http://judge:{quote(judge_key)}@127.0.0.1:9/v1?model=judge-model"  # never called
    monkeypatch.setenv("SRLM_CACHE_DIR", str(tmp_path / "srlm-cache"))
    seed = write_seed_data(s3_store)
    config = write_config(tmp_path / "scan.yaml", tiny_model_dir, tmp_path / "model-cache", seed)
    conf = {"config_path": str(config), "store_uri": s3_store, "run_name": RUN}
    env = {
        "RAY_JOBS_ADDRESS": ray_head.address,
        "SRLM_CACHE_DIR": str(tmp_path / "srlm-cache"),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws_default),
        "AIRFLOW_CONN_SRLM_JUDGE": judge_connection,
        "SRLM_JUDGE_API_KEY": judge_key,
    }
    job_env = {
        "PYTHONPATH": str(SHIMS_DIR), "SRLM_TEST_QUALITY_SHIM": "1", "SRLM_CACHE_DIR": env["SRLM_CACHE_DIR"],
        "SRLM_JUDGE_API_KEY": judge_key,
    }  # fmt: skip

    seeded, output = run_dag("srlm_seed", conf, env=env, job_env=job_env)
    assert seeded["state"] == "success", seeded["tasks"]
    layout = RunLayout(s3_store, RUN)
    m0 = get_checkpoint(layout, "M0")
    assert seeded["xcoms"]["publish"] == m0.uri  # the run did write a checkpoint, summaries and XComs
    assert "[ray]" in output  # the Ray jobs' logs are in the task logs we scan

    # os.environ: the store's endpoint and credentials, set by s3_server.
    report = subprocess.run(
        [sys.executable, "-m", "srlm.cli.main", "report", "--run", RUN, "--store", s3_store, "--json"],
        env={**os.environ, **env}, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]

    leaks: dict[str, list[str]] = {}
    for name, text in {
        "task logs (dag.test output)": output,
        "XCom values": json.dumps(seeded["xcoms"], default=str),
        "srlm report output": report.stdout + report.stderr,
    }.items():
        if hits := find_secrets(text.encode(), needles):
            leaks[name] = hits
    jobs = RayJobs(ray_head.address)
    for job in jobs.client.list_jobs():
        if job.submission_id and (hits := find_secrets(jobs.logs(job.submission_id).encode(), needles)):
            leaks[f"Ray job log {job.submission_id}"] = hits
    leaks.update(scan_directory(Path(airflow_home["AIRFLOW_HOME"]), needles))  # logs, airflow.db (XCom, fields)
    leaks.update(scan_directory(Path(ray_head.temp_dir), needles))  # every Ray log of the head's sessions
    objects, store_leaks = scan_store(s3_store, needles)
    leaks.update(store_leaks)
    assert objects >= 10  # manifests, tables, the checkpoint's files, eval results, the report
    assert leaks == {}, "secrets found:\n" + "\n".join(f"{where}: {', '.join(what)}" for where, what in leaks.items())
