"""Store credentials for jobs: the environment variables an S3 client reads, from a connection or this process.

The Airflow side maps the standard AWS connection (`aws_default`: login = access key id, password = secret key,
extra = {"endpoint_url": …, "region_name": …, "aws_session_token": …}) through `env_from_aws_connection`; with no
connection, `env_from_environment` forwards what the worker itself was started with. The result goes only into a
job's environment (Ray runtime_env env_vars, a pod's env, a subprocess's env) and is never logged.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

# What boto3 / pyarrow's S3 filesystem / srlm.store read, in the order a person would set them.
STORE_ENV_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)
SECRET_ENV_VARS = frozenset({"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})


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


def env_from_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The store variables set in this process (forwarded when no connection is configured)."""
    environ = os.environ if environ is None else environ
    return {key: environ[key] for key in STORE_ENV_VARS if environ.get(key)}


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values a log masker must hide."""
    return [value for key, value in env.items() if key in SECRET_ENV_VARS or key == "AWS_ACCESS_KEY_ID"]
