"""S3 credentials/endpoint as the environment variables an S3 client reads, and which of them are secret.

The orchestrator decides where the values come from (srlm_airflow maps Airflow's AWS connection); with no
connection, `env_from_environment` forwards what the worker itself was started with. The result goes only into a
job's environment (Ray runtime_env env_vars, a pod's env, a subprocess's env) and is never logged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

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


def env_from_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The store variables set in this process (forwarded when no connection is configured)."""
    environ = os.environ if environ is None else environ
    return {key: environ[key] for key in STORE_ENV_VARS if environ.get(key)}


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values a log masker must hide."""
    return [value for key, value in env.items() if key in SECRET_ENV_VARS or key == "AWS_ACCESS_KEY_ID"]
