"""Filesystem clients for store URIs: pyarrow.fs for data, boto3 where a plain S3 client is wanted.

S3 settings resolve in this order: `configure_store(StoreConfig)` (the `store` config section), then the
environment (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS_REGION, AWS_DEFAULT_REGION), then us-east-1. Credentials
come only from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN) or, when those are
unset, the AWS SDK's default chain (profile, web identity, instance metadata). Nothing in this module logs or
formats a credential; `S3Settings.__repr__` shows only whether one is set.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from srlm.store.uri import check_uri, is_s3, local_path, split_s3

if TYPE_CHECKING:
    import pyarrow.fs

    from srlm.config import StoreConfig

DEFAULT_REGION = "us-east-1"

_lock = threading.Lock()
_configured_endpoint: str | None = None
_configured_region: str | None = None


def configure_store(store_config: StoreConfig | None) -> None:
    """Apply a StoreConfig's S3 endpoint/region for this process (None: back to environment-only settings).

    Steps call this once before touching the store; settings left as None fall back to the environment.
    """
    global _configured_endpoint, _configured_region
    with _lock:
        _configured_endpoint = getattr(store_config, "s3_endpoint_url", None) or None
        _configured_region = getattr(store_config, "s3_region", None) or None


@dataclass(frozen=True)
class S3Settings:
    """Resolved S3 connection settings. Secrets are excluded from repr and compared only for cache identity."""

    endpoint_url: str | None
    region: str
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never show secrets, even in a traceback's locals
        explicit = "set" if self.access_key else "default chain"
        return f"S3Settings(endpoint_url={self.endpoint_url!r}, region={self.region!r}, credentials={explicit})"


def s3_settings() -> S3Settings:
    """The S3 settings in effect now (config overrides, then environment)."""
    env = os.environ
    endpoint = _configured_endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    region = _configured_region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    access_key = env.get("AWS_ACCESS_KEY_ID") or None
    secret_key = env.get("AWS_SECRET_ACCESS_KEY") or None
    if not (access_key and secret_key):
        # Half a key pair is no key pair: let the SDK's default chain (profile, IRSA, IMDS) decide.
        access_key = secret_key = None
    token = (env.get("AWS_SESSION_TOKEN") or None) if access_key else None
    return S3Settings(endpoint, region, access_key, secret_key, token)


def filesystem_for(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """(pyarrow filesystem, path within it) for a store URI. Clients are cached per settings."""
    check_uri(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return _s3_filesystem(s3_settings(), os.getpid()), f"{bucket}/{key}".rstrip("/")
    return _local_filesystem(), local_path(uri)


def s3_client(settings: S3Settings | None = None) -> Any:
    """A boto3 S3 client with the same endpoint, region and credentials the store uses."""
    return _boto3_client(settings or s3_settings(), os.getpid())


@functools.lru_cache(maxsize=1)
def _local_filesystem() -> pyarrow.fs.LocalFileSystem:
    import pyarrow.fs

    return pyarrow.fs.LocalFileSystem()


# Clients are cached per process id as well: AWS SDK clients must not be shared across fork() (Airflow's
# LocalExecutor and multiprocessing fork), so a forked child builds its own.
@functools.lru_cache(maxsize=8)
def _s3_filesystem(settings: S3Settings, pid: int) -> pyarrow.fs.S3FileSystem:
    import pyarrow.fs

    kwargs: dict[str, Any] = {"region": settings.region}
    if settings.endpoint_url:
        scheme, sep, host = settings.endpoint_url.partition("://")
        if sep:
            kwargs["scheme"] = scheme
            kwargs["endpoint_override"] = host.rstrip("/")
        else:
            kwargs["endpoint_override"] = settings.endpoint_url.rstrip("/")
    if settings.access_key:
        kwargs.update(
            access_key=settings.access_key, secret_key=settings.secret_key, session_token=settings.session_token
        )
    return pyarrow.fs.S3FileSystem(
        **kwargs,
        # Objects smaller than one multipart part (manifests, text, most Parquet parts) go up as one PutObject.
        allow_delayed_open=True,
        # The store never creates or deletes buckets; a missing bucket is a configuration error, reported as such.
        allow_bucket_creation=False,
        allow_bucket_deletion=False,
    )


@functools.lru_cache(maxsize=8)
def _boto3_client(settings: S3Settings, pid: int) -> Any:
    import boto3

    kwargs: dict[str, Any] = {"region_name": settings.region}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    if settings.access_key:
        kwargs.update(
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            aws_session_token=settings.session_token,
        )
    return boto3.session.Session().client("s3", **kwargs)
