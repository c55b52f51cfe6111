"""Airflow connections the srlm operators use: where the Ray Jobs API is, and the store's S3 credentials.

`ray_default` (conn type `ray`, or any type): host + port of the Ray dashboard (the Jobs API), schema http/https;
or extra {"address": "http://…:8265"}; optional extra {"headers": {...}, "verify": false}. With no such connection,
RAY_JOBS_ADDRESS / RAY_API_SERVER_ADDRESS / an http(s) RAY_ADDRESS from the environment are used, and failing those
the embedded local Ray head (http://127.0.0.1:8265), started on demand when nothing answers there.

`aws_default` (conn type `aws`): login = access key id, password = secret key, extra {"endpoint_url": …,
"region_name": …}. With no such connection, the worker's own AWS_* environment is forwarded. Either way the values
are registered with Airflow's secrets masker before anything could log them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayEndpoint:
    address: str
    headers: dict[str, str] = field(default_factory=dict)
    verify: bool | str = True
    embedded: bool = False  # the local head `make up` starts (or this process started on demand)


def _connection(conn_id: str | None):
    """The Airflow connection, or None when it is not configured."""
    if not conn_id:
        return None
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException, AirflowRuntimeError

    try:
        return BaseHook.get_connection(conn_id)
    except (AirflowNotFoundException, AirflowRuntimeError):
        return None


def ray_endpoint(conn_id: str | None) -> RayEndpoint:
    conn = _connection(conn_id)
    if conn is not None:
        extra = conn.extra_dejson or {}
        address = extra.get("address")
        if not address:
            if not conn.host:
                raise ValueError(f"Airflow connection {conn_id!r} has neither a host nor extra.address")
            host = conn.host if "://" in conn.host else f"{conn.schema or 'http'}://{conn.host}"
            address = f"{host}:{conn.port or 8265}"
        return RayEndpoint(address, dict(extra.get("headers") or {}), extra.get("verify", True))
    for name in ("RAY_JOBS_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        value = os.environ.get(name, "")
        if value.startswith(("http://", "https://")):
            return RayEndpoint(value)
    from srlm.orchestration.ray_head import ensure_local_head

    log.info("no Airflow connection %r and no RAY_*ADDRESS: using the embedded local Ray head", conn_id)
    return RayEndpoint(ensure_local_head(), embedded=True)


def store_environment(aws_conn_id: str | None) -> dict[str, str]:
    """AWS_* variables for the job, from the AWS connection or this worker's environment; masked in logs."""
    from srlm.orchestration.store_env import env_from_aws_connection, env_from_environment, secret_values

    conn = _connection(aws_conn_id)
    if conn is not None:
        env = env_from_aws_connection(conn.login, conn.password, conn.extra_dejson)
    else:
        env = env_from_environment()
    from airflow.sdk.log import mask_secret

    for value in secret_values(env):
        mask_secret(value)
    return env
