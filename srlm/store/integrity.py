"""Checking committed files against their manifest (size and sha256), and remembering what was checked.

Every read of a committed artifact goes through here before its bytes are used: a table file is read once into
memory, hashed, and parsed from that same buffer (one pass, one file's bytes in memory at a time); a directory's
files (a checkpoint) are hashed in place before its path is handed out. A file that is absent, of another size
or of another sha256 raises DamagedArtifactError, one line:

    <artifact uri>: <path in manifest>: checksum mismatch (sha256 expected 1a2b3c4d5e6f…, actual …); the artifact is damaged

The verified state (`VerifiedFiles`). Re-hashing a multi-GB checkpoint on every open would cost seconds each
time, so a successful check of a *local* file is remembered: key = (absolute path, expected sha256, expected
size); value = the file's stat taken with fstat on the descriptor that was read (size, mtime_ns, ctime_ns, inode,
device). A later check whose fresh stat equals the record skips hashing; any difference in any of those fields
re-hashes (and a mismatch then raises). The record lives in process memory and, so that a later process of the
same attempt (a training launcher after the step that fetched its model) does not re-hash either, as one small
JSON file per data file under `<default_cache_dir()>/verified/` (written atomically; losing one only costs a
re-hash; a record that cannot be written is skipped).

What invalidates a record, and its limits:
- Any write through the filesystem changes mtime and ctime (and truncation the size); replacing the file changes
  the inode. `os.utime`/`touch -d` can put mtime back, but not ctime: the kernel sets ctime to the current time
  on every inode change, and no system call sets it (only changing the system clock or editing the unmounted
  filesystem, both root-only). Checked: a write followed by os.utime restoring mtime leaves ctime changed.
- Timestamps advance at the kernel's clock tick (milliseconds; whole seconds on some filesystems), so a change
  within the same tick as the previous one could keep the same stat. As git does for "racily clean" files, a
  file changed less than RACY_WINDOW_NS before it was checked is not remembered (it is re-hashed next time).
- Damage that bypasses the filesystem (media bit rot, writes to the raw block device, another host writing an
  NFS file whose attributes this host caches) changes no stat and is not caught by a remembered check.
  `srlm store verify` never uses the records: it re-hashes every byte.
- S3 objects are never remembered: a table read from S3 is hashed as it is downloaded (the download dominates),
  and a fetched directory is a local copy, remembered like any local file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from srlm.errors import DamagedArtifactError
from srlm.store.manifest import ManifestFile

log = logging.getLogger(__name__)

CHUNK = 8 * 1024 * 1024
# A file changed this recently before its check is not remembered (timestamps are coarse; see the docstring).
RACY_WINDOW_NS = 2_000_000_000
_RECORD_FORMAT = 1


@dataclass(frozen=True)
class FileStat:
    """What a remembered check is keyed on: any change re-hashes the file."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def new_digest() -> Any:
    """The hash every check uses (one place, so tests can count how many files were hashed)."""
    return hashlib.sha256()


def missing(uri: str, entry: ManifestFile) -> DamagedArtifactError:
    return DamagedArtifactError(f"{uri}: {entry.path}: missing; the artifact is damaged")


def check_size_and_digest(uri: str, entry: ManifestFile, size: int, sha256: str) -> None:
    """Raise DamagedArtifactError unless (size, sha256) is what the manifest lists for `entry`."""
    if size != entry.bytes:
        raise DamagedArtifactError(
            f"{uri}: {entry.path}: checksum mismatch (expected {entry.bytes} bytes, found {size}: truncated or "
            "overwritten); the artifact is damaged"
        )
    if sha256 != entry.sha256:
        raise DamagedArtifactError(
            f"{uri}: {entry.path}: checksum mismatch (sha256 expected {entry.sha256[:12]}…, actual {sha256[:12]}…); "
            "the artifact is damaged"
        )


def hash_stream(stream: BinaryIO, out: Any = None) -> tuple[int, str]:
    """(bytes, sha256) of everything left in `stream`, copying it to `out` when given (one pass)."""
    digest = new_digest()
    size = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
    return size, digest.hexdigest()


class VerifiedFiles:
    """Local files checked against a manifest entry, remembered by their stat (see the module docstring)."""

    def __init__(self, record_dir: Callable[[], Path | None]) -> None:
        self._record_dir = record_dir
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str, int], FileStat] = {}

    def read(self, uri: str, path: str, entry: ManifestFile) -> memoryview:
        """The bytes of local file `path`, checked against `entry` (hashed from the buffer they were read into)."""
        try:
            with open(path, "rb") as stream:
                st = os.fstat(stream.fileno())
                if st.st_size != entry.bytes:
                    check_size_and_digest(uri, entry, st.st_size, "")
                buffer = bytearray(st.st_size)
                view = memoryview(buffer)
                filled = 0
                while filled < st.st_size and (n := stream.readinto(view[filled:])):
                    filled += n
        except FileNotFoundError as exc:
            raise missing(uri, entry) from exc
        digest = new_digest()
        digest.update(view[:filled])
        check_size_and_digest(uri, entry, filled, digest.hexdigest())
        self.remember(path, entry, st)
        return view

    def check(self, uri: str, path: str, entry: ManifestFile, *, remembered: bool = True) -> None:
        """Check local file `path` against `entry`: skipped when a remembered check still holds (`remembered`)."""
        if remembered and self.holds(path, entry):
            return
        try:
            with open(path, "rb") as stream:
                st = os.fstat(stream.fileno())
                if st.st_size != entry.bytes:
                    check_size_and_digest(uri, entry, st.st_size, "")
                size, sha256 = hash_stream(stream)
        except FileNotFoundError as exc:
            raise missing(uri, entry) from exc
        check_size_and_digest(uri, entry, size, sha256)
        self.remember(path, entry, st)

    def holds(self, path: str, entry: ManifestFile) -> bool:
        """Whether a remembered check of `path` against `entry` still describes the file as it is now."""
        key = _key(path, entry)
        try:
            now = FileStat.of(os.stat(key[0]))
        except OSError:
            return False
        with self._lock:
            known = self._known.get(key)
        if known is None and (known := self._load(key)) is not None:
            with self._lock:
                self._known[key] = known
        return known == now

    def remember(self, path: str, entry: ManifestFile, st: os.stat_result) -> None:
        """Record that `path` with stat `st` matched `entry` (unless it changed too recently to trust the stat)."""
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_WINDOW_NS:
            return
        key = _key(path, entry)
        stat = FileStat.of(st)
        with self._lock:
            if self._known.get(key) == stat:
                return
            self._known[key] = stat
        self._store(key, stat)

    def forget(self) -> None:
        """Drop the in-process records (the on-disk ones stay; they are checked against the files' stat)."""
        with self._lock:
            self._known.clear()

    def _record_path(self, key: tuple[str, str, int]) -> Path | None:
        directory = self._record_dir()
        if directory is None:
            return None
        return directory / f"{hashlib.sha256(key[0].encode('utf-8')).hexdigest()[:40]}.json"

    def _load(self, key: tuple[str, str, int]) -> FileStat | None:
        record_path = self._record_path(key)
        if record_path is None:
            return None
        try:
            record = json.loads(record_path.read_text())
            if record.get("format") != _RECORD_FORMAT or [record["path"], record["sha256"], record["bytes"]] != list(
                key
            ):
                return None
            return FileStat(*record["stat"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _store(self, key: tuple[str, str, int], stat: FileStat) -> None:
        record_path = self._record_path(key)
        if record_path is None:
            return
        path, sha256, size = key
        record = {"format": _RECORD_FORMAT, "path": path, "sha256": sha256, "bytes": size, "stat": astuple(stat)}
        temp = record_path.with_name(f".{record_path.name}.tmp-{uuid.uuid4().hex[:12]}")
        try:
            record_path.parent.mkdir(parents=True, exist_ok=True)
            temp.write_text(json.dumps(record))
            os.replace(temp, record_path)
        except OSError as exc:  # only a re-hash next time
            log.debug("cannot record the verified state of %s: %s", path, exc)
            with contextlib.suppress(OSError):
                temp.unlink()


def _key(path: str, entry: ManifestFile) -> tuple[str, str, int]:
    return (os.path.abspath(path), entry.sha256, entry.bytes)
