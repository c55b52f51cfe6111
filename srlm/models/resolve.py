"""Turn whatever names a model (alias, local directory, store URI, hub id) into something transformers loads."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from srlm.errors import ModelError
from srlm.models.known import KNOWN_MODELS
from srlm.store.uri import FILE_SCHEME, S3_SCHEME, local_path

log = logging.getLogger(__name__)

SUCCESS_FILE = "_SUCCESS"  # the store's commit marker (srlm.store.artifacts)


def resolve_model(spec: str, cache_dir: str | os.PathLike | None = None) -> str:
    """A local model directory (or hub id) for `spec`:

    - a known alias (smollm2-135m): its prepared directory, prepared on first use;
    - a local Hugging Face directory (has config.json): the directory itself;
    - a committed checkpoint artifact (s3://… or a local path holding _SUCCESS): fetched with
      srlm.store.fetch_directory (a local store returns the committed directory in place, S3 downloads into the
      cache);
    - anything else: returned unchanged as a hub id, for environments with hub access.

    Raises ModelError for a local path that does not exist or is not a model, and for an uncommitted S3 URI.
    """
    spec = str(spec).strip()
    if not spec:
        raise ModelError("model spec is empty: give an alias, a model directory, a checkpoint URI or a hub id")
    if spec in KNOWN_MODELS:
        from srlm.models.prepare import prepare_model

        return str(prepare_model(spec, cache_dir=cache_dir))
    if spec.startswith(S3_SCHEME):
        return str(_fetch_checkpoint(spec, cache_dir))
    path = Path(local_path(spec))
    if path.exists():
        if (path / SUCCESS_FILE).is_file():
            return str(_fetch_checkpoint(spec, cache_dir))
        if (path / "config.json").is_file():
            return str(path.resolve())
        raise ModelError(
            f"{spec}: not a model directory (no config.json) and not a committed checkpoint artifact "
            f"(no {SUCCESS_FILE})"
        )
    if _looks_local(spec):
        raise ModelError(f"{spec}: no such model directory")
    log.info("%s is not an alias, local directory or store URI; passing it to transformers as a hub id", spec)
    return spec


def _looks_local(spec: str) -> bool:
    """Paths a hub id can never be: absolute, home- or dot-relative, file://, or with more than one '/'."""
    return spec.startswith(("/", "~", "./", "../", FILE_SCHEME)) or spec.count("/") > 1 or "\\" in spec


def _fetch_checkpoint(uri: str, cache_dir: str | os.PathLike | None) -> Path:
    from srlm.errors import UncommittedArtifactError
    from srlm.models.cache import models_dir
    from srlm.store import fetch_directory

    try:
        # Local artifacts are used in place; S3 ones are cached by manifest checksum under <models cache>/fetched.
        path = Path(fetch_directory(uri, cache_dir=models_dir(cache_dir) / "fetched"))
    except UncommittedArtifactError as exc:
        raise ModelError(f"{uri}: not a committed checkpoint ({exc})") from exc
    if not (path / "config.json").is_file():
        raise ModelError(f"{uri}: the committed artifact holds no config.json, so it is not a model checkpoint")
    return path

