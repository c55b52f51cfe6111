"""URI helpers. A URI is a local path, file://path, or s3://bucket/key. (Implementation: store helper.)"""

from __future__ import annotations


def join_uri(base: str, *parts: str) -> str:
    """Join path parts onto a URI with '/', keeping the scheme ('s3://b/p' + 'x' -> 's3://b/p/x')."""
    out = base.rstrip("/") if base not in ("/",) else base
    for part in parts:
        part = str(part).strip("/")
        if part:
            out = f"{out}/{part}"
    return out


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")
