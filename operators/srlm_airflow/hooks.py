"""RayJobsHook: the `ray` connection type (where the Ray Jobs API is) and the client the operators and the trigger use.

A `ray` connection (default id `ray_default`): host + port of the Ray dashboard (the Jobs API), schema http/https;
or extra {"address": "http://…:8265"}; optional extra {"headers": {...}, "verify": false}. With no such connection,
RAY_JOBS_ADDRESS / RAY_API_SERVER_ADDRESS / an http(s) RAY_ADDRESS from the environment are used, and failing those
the embedded local Ray head (http://127.0.0.1:8265), started on demand when nothing answers there.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import BaseHook

from srlm.orchestration.ray_jobs import RayJobs

log = logging.getLogger(__name__)

DEFAULT_JOBS_API_PORT = 8265
ADDRESS_ENV_VARS = ("RAY_JOBS_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


@dataclass(frozen=True)
class RayEndpoint:
    address: str
    headers: dict[str, str] = field(default_factory=dict)
    verify: bool | str = True
    embedded: bool = False  # the local head `make up` starts (or this process started on demand)


def endpoint_from_connection(conn: Any) -> RayEndpoint:
    """The Jobs API endpoint a connection names: extra.address, else schema://host:port (port 8265 by default)."""
    extra = conn.extra_dejson or {}
    address = extra.get("address")
    if not address:
        if not conn.host:
            raise ValueError(f"Airflow connection {conn.conn_id!r} has neither a host nor extra.address")
        host = conn.host if "://" in conn.host else f"{conn.schema or 'http'}://{conn.host}"
        address = f"{host}:{conn.port or DEFAULT_JOBS_API_PORT}"
    return RayEndpoint(str(address), dict(extra.get("headers") or {}), extra.get("verify", True))


def endpoint_from_environment(environ: dict[str, str] | None = None) -> RayEndpoint | None:
    environ = os.environ if environ is None else environ
    for name in ADDRESS_ENV_VARS:
        value = environ.get(name, "")
        if value.startswith(("http://", "https://")):
            return RayEndpoint(value)
    return None


def optional_connection(conn_id: str | None) -> Any | None:
    """The Airflow connection `conn_id`, or None when it is not configured (a missing connection is not an error:
    the operators then fall back to the environment)."""
    if not conn_id:
        return None
    from airflow.sdk.exceptions import AirflowNotFoundException, AirflowRuntimeError

    try:
        return BaseHook.get_connection(conn_id)
    except (AirflowNotFoundException, AirflowRuntimeError):
        return None


class RayJobsHook(BaseHook):
    """Interact with a Ray cluster's Jobs API (submit, status, logs, stop) through srlm's RayJobs client.

    The connection form (which fields show, their labels and placeholders) is declared with the connection type in
    srlm_airflow.get_provider_info.

    :param ray_conn_id: a `ray` connection; missing → RAY_*ADDRESS from the environment → the embedded local head.
    :param address: pin the Jobs API address (the trigger follows the job on the cluster the operator submitted
        to); the connection then contributes only its headers and TLS setting.
    """

    conn_name_attr = "ray_conn_id"
    default_conn_name = "ray_default"
    conn_type = "ray"
    hook_name = "Ray Jobs API"

    def __init__(self, ray_conn_id: str | None = default_conn_name, *, address: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.ray_conn_id = ray_conn_id
        self.address = address
        self._jobs: RayJobs | None = None

    def get_endpoint(self) -> RayEndpoint:
        conn = optional_connection(self.ray_conn_id)
        if self.address:
            pinned = endpoint_from_connection(conn) if conn is not None else RayEndpoint(self.address)
            return RayEndpoint(self.address, pinned.headers, pinned.verify)
        if conn is not None:
            return endpoint_from_connection(conn)
        from_env = endpoint_from_environment()
        if from_env is not None:
            return from_env
        from srlm.orchestration.ray_head import ensure_local_head

        log.info("no Airflow connection %r and no RAY_*ADDRESS: using the embedded local Ray head", self.ray_conn_id)
        return RayEndpoint(ensure_local_head(), embedded=True)

    def get_conn(self) -> RayJobs:
        if self._jobs is None:
            endpoint = self.get_endpoint()
            self._jobs = RayJobs(endpoint.address, headers=endpoint.headers or None, verify=endpoint.verify)
        return self._jobs

    def test_connection(self) -> tuple[bool, str]:
        """What the UI's *Test* button runs: does a Jobs API answer at the endpoint?"""
        from srlm.orchestration.ray_head import jobs_api_ready

        address = self.get_endpoint().address
        if jobs_api_ready(address):
            return True, f"Ray Jobs API answers at {address}"
        return False, f"no Ray Jobs API answers at {address}"
