"""The store's S3 credentials for a job, from Airflow's AWS connection (or the worker's own environment).

`aws_default` (conn type `aws`): login = access key id, password = secret key, extra {"endpoint_url": …,
"region_name": …, "aws_session_token": …}. With no such connection, the worker's own AWS_* environment is
forwarded. Either way the values are registered with Airflow's secrets masker before anything could log them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from srlm.orchestration.store_env import env_from_environment, secret_values
from srlm_airflow.hooks import optional_connection


def env_from_aws_connection(
    login: str | None, password: str | None, extra: Mapping[str, Any] | None
) -> dict[str, str]:
    """Environment for the fields of an AWS connection; empty fields are left out (so a job's own defaults apply)."""
    extra = dict(extra or {})
    endpoint = extra.get("endpoint_url") or (extra.get("service_config", {}).get("s3", {}) or {}).get("endpoint_url")
    region = extra.get("region_name") or extra.get("region")
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": login or extra.get("aws_access_key_id"),
        "AWS_SECRET_ACCESS_KEY": password or extra.get("aws_secret_access_key"),
        "AWS_SESSION_TOKEN": extra.get("aws_session_token"),
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }
    return {key: str(value) for key, value in env.items() if value}


def store_environment(aws_conn_id: str | None) -> dict[str, str]:
    """AWS_* variables for the job, from the AWS connection or this worker's environment; masked in logs.

    `aws_conn_id=None` forwards nothing.
    """
    if aws_conn_id is None:
        return {}
    conn = optional_connection(aws_conn_id)
    if conn is not None:
        env = env_from_aws_connection(conn.login, conn.password, conn.extra_dejson)
    else:
        env = env_from_environment()
    from airflow.sdk.log import mask_secret

    for value in secret_values(env):
        mask_secret(value)
    return env
