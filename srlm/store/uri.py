"""Store URIs: a local path, file://path, or s3://bucket/key.

Artifacts are addressed by "directory" URIs; these helpers join, split and classify them without touching any
filesystem, so they are safe to call anywhere (including at DAG parse time).
"""

from __future__ import annotations

import os

from srlm.errors import StoreError

S3_SCHEME = "s3://"
FILE_SCHEME = "file://"


def join_uri(base: str, *parts: str) -> str:
    """Join path parts onto a URI with '/', keeping the scheme ('s3://b/p' + 'x' -> 's3://b/p/x')."""
    scheme, sep, path = base.partition("://") if "://" in base else ("", "", base)
    out = scheme + sep + (path.rstrip("/") or path[:1])  # a bare root ("/", "file:///") keeps its slash
    for part in parts:
        part = str(part).strip("/")
        if part:
            out = f"{out}{part}" if out.endswith("/") else f"{out}/{part}"
    return out


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def is_local(uri: str) -> bool:
    """True for plain paths and file:// URIs."""
    if uri.startswith(FILE_SCHEME):
        return True
    return "://" not in uri


def check_uri(uri: str) -> str:
    """Return `uri` unchanged if srlm can address it; otherwise raise StoreError naming it."""
    if not isinstance(uri, str) or not uri:
        raise StoreError(f"store URI must be a non-empty string, got {uri!r}")
    if is_s3(uri):
        bucket, _ = split_s3(uri)
        if not bucket:
            raise StoreError(f"{uri}: S3 URI has no bucket (expected s3://bucket/prefix)")
        return uri
    if not is_local(uri):
        scheme = uri.split("://", 1)[0]
        raise StoreError(
            f"{uri}: unsupported URI scheme {scheme!r}; use a local path, file://path, or s3://bucket/prefix"
        )
    return uri


def local_path(uri: str) -> str:
    """The absolute filesystem path of a local path or file:// URI."""
    path = uri[len(FILE_SCHEME) :] if uri.startswith(FILE_SCHEME) else uri
    return os.path.abspath(os.path.expanduser(path))


def canonical_store_uri(uri: str) -> str:
    """One spelling per store root, so a store is the same store however it is typed.

    Local: an absolute, normalised path ('./x', 'x/', '~/x' and '/abs/x' agree; file:// is kept as given). Symlinks
    are not resolved: the path the user opened the store by stays what messages show, and nothing the store
    records depends on it (artifacts are recorded relative to the root). S3: no trailing '/'.
    """
    check_uri(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return join_uri(S3_SCHEME + bucket, key)
    absolute = local_path(uri)
    return FILE_SCHEME + absolute if uri.startswith(FILE_SCHEME) else absolute


def split_s3(uri: str) -> tuple[str, str]:
    """'s3://bucket/a/b' -> ('bucket', 'a/b'); the key has no leading or trailing '/'."""
    rest = uri[len(S3_SCHEME) :]
    bucket, _, key = rest.partition("/")
    return bucket, key.strip("/")


def relative_to(uri: str, base: str) -> str:
    """The part of `uri` below `base` ('s3://b/x/y/z', 's3://b/x' -> 'y/z'); StoreError if it is not below it."""
    base = base.rstrip("/")
    prefix = base + "/"
    if not uri.startswith(prefix):
        raise StoreError(f"{uri} is not inside {base}")
    return uri[len(prefix) :].strip("/")


def basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]
