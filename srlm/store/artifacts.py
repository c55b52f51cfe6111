"""Atomic, manifest-committed artifacts on a local filesystem or S3.

CONTRACT (implemented by the store owner; every other module codes against these signatures):

An artifact is a "directory" URI. Writers put data files under <uri>/_attempts/<attempt_id>/… and then commit by
writing <uri>/_SUCCESS (one atomic, conditional object PUT on S3; an fsynced temp file linked or renamed into
place locally; see "Concurrent writers" below). The manifest lists the
files (paths relative to <uri>), row counts, byte sizes, sha256 checksums, the schema name + version, and the
producer (config dict + srlm code version + git sha if known). Readers only ever read what a manifest lists, so a
crashed writer leaves nothing that reads as committed; a rerun writes a fresh attempt and cleans stale ones.

    is_committed(uri) -> bool
    read_manifest(uri) -> Manifest                      # raises UncommittedArtifactError
    write_table(uri, table, schema_name, *, producer=None, force=False, rows_per_file=None) -> Manifest
        # Casts/validates table to schemas.schema(schema_name) (clear StoreError naming the column on mismatch).
        # If already committed and not force: no-op, returns the existing manifest (same producer; else
        # ConcurrentWriteError).
    read_table(uri, schema_name=None, columns=None) -> pa.Table   # refuses uncommitted; checks schema name/version
                                                        # and every file's size + sha256 (DamagedArtifactError)
    read_file(uri, name) -> bytes                       # one file of a directory artifact (e.g. config.json), checked
    write_directory(uri, local_dir, *, kind="checkpoint", producer=None, force=False) -> Manifest
    fetch_directory(uri, dest=None) -> pathlib.Path     # local store: the committed attempt dir itself (no copy);
                                                        # S3: download into dest or a cache dir keyed by manifest sha;
                                                        # either way every file is checked before the path returns
    commit_shards(uri, shard_uris, schema_name, *, producer=None) -> Manifest
        # For resumable steps: each shard is its own committed artifact (e.g. <uri>/shards/00003); the parent
        # manifest lists the shards' files. Readers of <uri> see the union.
    shard_uri(uri, index) -> str
    write_text(uri, text) / read_text(uri) -> str       # small atomic single objects (summaries, reports)
    list_committed(prefix_uri) -> list[str]              # immediate children of prefix that are committed artifacts
    delete_artifact(uri)                                 # for --force reruns

S3 settings come from StoreConfig or the environment (AWS_ENDPOINT_URL[_S3], AWS_REGION, AWS_ACCESS_KEY_ID, …);
credentials are never printed or logged.

Beyond the contract: read_table/fetch_directory take verify (default True), fetch_directory takes cache_dir,
the writers take replaces, commit_shards takes force, and exists(uri) tells whether a single object (e.g. a
write_text target) exists. A manifest is written only after every data file of its attempt is closed (and, on local
disks, fsynced); S3 objects become visible only once complete, so neither a killed writer nor a failed upload can
produce a manifest that lists a partial file.

Verified reads (srlm.store.integrity): every read of a committed artifact checks each listed file's size and
sha256 before its data is used; a table file is read once, hashed and parsed from the same buffer; a local
directory (a checkpoint used in place, or a fetched copy) is hashed before its path is returned. A mismatch raises
DamagedArtifactError "<uri>: <path in manifest>: checksum mismatch (…); the artifact is damaged" (or "…: missing;
…"), before anything downstream is computed or committed. A successful check of a local file is remembered by its
stat (size, mtime_ns, ctime_ns, inode, device), in-process and under <default_cache_dir()>/verified, so an unchanged
checkpoint is not re-hashed on every open; any stat change re-hashes (limits: srlm.store.integrity). S3 reads are
always hashed. verify=False skips the checks (benchmarks only).

Concurrent writers of one URI (two DAG runs of one run name, `srlm eval` beside the evaluate DAG):
- A non-force commit is an exclusive create: os.link of the fsynced temp manifest locally (on a filesystem
  without hard links: a check and rename under COMMIT_LOCK), PutObject with If-None-Match: * on S3 (boto3;
  pyarrow cannot send it). Exactly one writer commits. An S3-compatible endpoint that answers NotImplemented to
  conditional writes gets a plain PUT and a warning: there, races are unguarded.
- A force commit replaces the manifest that was committed when the writer decided to recompute: `replaces` (the
  manifest sha256 it judged stale, or None for nothing committed; default: what is committed when the call
  starts). None commits by exclusive create as above; a sha256 replaces only while that manifest is still there:
  the check and the replace run under a file lock in the artifact directory locally (COMMIT_LOCK; atomic between
  the processes of one host, across hosts only where the filesystem's flock is), and as a PutObject with If-Match
  on the ETag of the manifest checked on S3. Two force writers that judged the same manifest: the first replaces
  it, the second finds the first's. The default `replaces` guards only the write itself; a step whose reuse
  check ran long before (computing in between) passes the sha256 it judged, so a competing run's commit during
  that computation is not silently replaced.
- A writer that finds the URI committed by another writer (at the start of a non-force write, or at its commit)
  returns that manifest only if the other producer is the same (same step, inputs, settings and schema version;
  for producers without a step, the same producer record less code_version; a producer that claims nothing, no
  config and no step, matches any); otherwise it removes its own attempt and raises ConcurrentWriteError naming
  the URI and both attempts. Nobody waits: the loser's caller reruns, and the reuse rule then decides.
- A writer removes only attempts whose writer is gone: its own failed attempt, attempts of processes on this host
  that are no longer alive, attempts of this process that are not being written, attempt ids of the old format,
  and attempts from other hosts older than STALE_ATTEMPT_SECONDS. A live concurrent writer's files are never
  deleted under it. Attempt ids are <UTC start>-<host>-<pid>-<random>.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from srlm.errors import (
    ConcurrentWriteError,
    DamagedArtifactError,
    SrlmError,
    StoreError,
    UncommittedArtifactError,
)
from srlm.host import file_lock, process_alive
from srlm.store import integrity, schemas
from srlm.store.conform import TableLike, conform_table
from srlm.store.filesystems import configure_store, filesystem_for, s3_client
from srlm.store.manifest import MANIFEST_NAME, Manifest, ManifestFile, producer_record
from srlm.store.uri import check_uri, is_local, join_uri, relative_to, split_s3

__all__ = [
    "ATTEMPTS_DIR",
    "Manifest",
    "ManifestFile",
    "commit_shards",
    "configure_store",
    "default_cache_dir",
    "delete_artifact",
    "exists",
    "fetch_directory",
    "is_committed",
    "list_committed",
    "read_file",
    "read_manifest",
    "read_table",
    "read_text",
    "shard_uri",
    "verified_files",
    "write_directory",
    "write_table",
    "write_text",
]

log = logging.getLogger(__name__)

ATTEMPTS_DIR = "_attempts"
SHARDS_DIR = "shards"
# Written last into a fetched directory: its presence (with the manifest's sha256) marks the fetch complete.
FETCH_MARKER = ".srlm-manifest-sha256"
CACHE_DIR_ENV = "SRLM_CACHE_DIR"
# Under default_cache_dir(): the remembered verified state of local files (srlm.store.integrity).
VERIFIED_DIR = "verified"
# An attempt from another host is removed as stale only this long after it started (its writer cannot be asked).
STALE_ATTEMPT_SECONDS = 24 * 3600
# The producer keys that decide whether two writers made the same thing (srlm.steps.reuse.FINGERPRINTED; the
# store does not import the steps).
_FINGERPRINTED = ("step", "inputs", "settings", "schema_version")
# In a local artifact directory: held while a force commit checks and replaces the manifest.
COMMIT_LOCK = ".srlm-commit.lock"
_COMMIT_LOCK_TIMEOUT_S = 120.0
_CHUNK = integrity.CHUNK
_IO_THREADS = 8
_PARQUET_COMPRESSION = "zstd"
_PARTIAL = ".partial-"
_HOST = socket.gethostname().replace("-", "_") or "host"
# "Whatever is committed when the write starts" (the default of the writers' `replaces`).
_AT_START: Any = object()
# Attempts this process is writing now (threads of one process share a pid, so liveness needs this set).
_live_attempts: set[str] = set()
_live_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------------------- reading


def is_committed(uri: str) -> bool:
    fs, path = filesystem_for(uri)
    with _io_errors(uri, "check the manifest of"):
        return fs.get_file_info(f"{path}/{MANIFEST_NAME}").type == pafs.FileType.File


def read_manifest(uri: str) -> Manifest:
    fs, path = filesystem_for(uri)
    try:
        with fs.open_input_stream(f"{path}/{MANIFEST_NAME}") as stream:
            raw = stream.read()
    except FileNotFoundError as exc:
        raise UncommittedArtifactError(
            f"{uri}: not committed (no {MANIFEST_NAME} manifest: never written, still being written, or its writer "
            "crashed)"
        ) from exc
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"{uri}: cannot read {MANIFEST_NAME}: {_first_line(exc)}") from exc
    return Manifest.from_json(raw, uri)


def read_table(
    uri: str, schema_name: str | None = None, columns: Sequence[str] | None = None, *, verify: bool = True
) -> pa.Table:
    """The committed table at `uri` (files in manifest order), conformed to the current schema.

    schema_name, when given, must match the manifest's. Tables written under an older SCHEMA_VERSION read back
    with the columns added since as nulls; a newer version is refused. Every file's size and sha256 are checked
    against the manifest (DamagedArtifactError) unless verify=False.
    """
    manifest = read_manifest(uri)
    if manifest.kind != "table":
        raise StoreError(f"{uri}: is a {manifest.kind} artifact ({manifest.schema_name}), not a table")
    if schema_name is not None and manifest.schema_name != schema_name:
        raise StoreError(f"{uri}: holds {manifest.schema_name!r} rows, expected {schema_name!r}")
    if manifest.schema_version is None or manifest.schema_version > schemas.SCHEMA_VERSION:
        raise StoreError(
            f"{uri}: written with {manifest.schema_name!r} schema version {manifest.schema_version}, newer than this "
            f"srlm's {schemas.SCHEMA_VERSION}; upgrade srlm"
        )
    target = _schema(manifest.schema_name, uri)
    if columns is not None:
        unknown = [c for c in columns if target.get_field_index(c) < 0]
        if unknown:
            raise StoreError(f"{uri}: schema {manifest.schema_name!r} has no column(s) {', '.join(map(repr, unknown))}")
        columns = list(columns)
    if not manifest.files:
        table = target.empty_table()
        return table.select(columns) if columns is not None else table

    fs, base = filesystem_for(uri)
    paths = [f"{base}/{f.path}" for f in manifest.files]
    local = is_local(uri)
    with _io_errors(uri, "read table"):
        if not verify or (local and all(verified_files.holds(p, f) for p, f in zip(paths, manifest.files))):
            # Unchecked, or every file was checked before and is unchanged since: read only the columns asked for.
            return _read_parquet(paths, fs, target, columns)
        parts = []
        for entry, path in zip(manifest.files, paths):
            # One pass: the bytes are read once, hashed, and parsed from the same buffer (one file at a time).
            data = verified_files.read(uri, path, entry) if local else _read_remote_verified(fs, path, entry, uri)
            parts.append(pq.read_table(pa.py_buffer(data), schema=target, columns=columns))
        return pa.concat_tables(parts)


def _read_parquet(paths: list[str], fs: Any, target: pa.Schema, columns: list[str] | None) -> pa.Table:
    import pyarrow.dataset as ds

    # The dataset reads only these paths (never lists the directory) and fills columns that older schema
    # versions lacked with nulls; to_table keeps the files' order.
    return ds.dataset(paths, schema=target, format="parquet", filesystem=fs).to_table(columns=columns)


def _read_remote_verified(fs: Any, path: str, entry: ManifestFile, uri: str) -> bytes:
    """The bytes of one listed S3 object, checked against its manifest entry as they arrive."""
    try:
        with fs.open_input_stream(path) as stream:
            data = stream.read()
    except FileNotFoundError as exc:
        raise integrity.missing(uri, entry) from exc
    digest = integrity.new_digest()
    digest.update(data)
    integrity.check_size_and_digest(uri, entry, len(data), digest.hexdigest())
    return data


def read_file(uri: str, name: str) -> bytes:
    """One file of the committed directory artifact at `uri` (`name` relative to the directory, e.g.
    "config.json"), checked against the manifest like every read; StoreError when the manifest lists no such file.
    For reading a small part of a large checkpoint without fetching it."""
    manifest = read_manifest(uri)
    if manifest.kind != "directory":
        raise StoreError(f"{uri}: is a {manifest.kind} artifact ({manifest.schema_name}), not a directory")
    listed = f"{ATTEMPTS_DIR}/{manifest.attempt_id}/{name}"
    entry = next((f for f in manifest.files if f.path == listed), None)
    if entry is None:
        raise StoreError(f"{uri}: the committed {manifest.schema_name} lists no {name}")
    fs, base = filesystem_for(uri)
    with _io_errors(uri, f"read {name}"):
        if is_local(uri):
            return bytes(verified_files.read(uri, f"{base}/{entry.path}", entry))
        return _read_remote_verified(fs, f"{base}/{entry.path}", entry, uri)


def read_text(uri: str) -> str:
    fs, path = filesystem_for(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read().decode("utf-8")
    except FileNotFoundError as exc:
        raise StoreError(f"{uri}: not found") from exc
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise StoreError(f"{uri}: cannot read: {_first_line(exc)}") from exc


def exists(uri: str) -> bool:
    """Whether a single object (a write_text target, or any file) exists at `uri`."""
    fs, path = filesystem_for(uri)
    with _io_errors(uri, "look up"):
        return fs.get_file_info(path).type == pafs.FileType.File


def list_committed(prefix_uri: str) -> list[str]:
    """URIs of the immediate children of `prefix_uri` that are committed artifacts, sorted by name."""
    fs, path = filesystem_for(prefix_uri)
    with _io_errors(prefix_uri, "list"):
        children = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    names = sorted(child.base_name for child in children if child.type == pafs.FileType.Directory)
    uris = [join_uri(prefix_uri, name) for name in names]
    return [uri for uri, committed in zip(uris, _run_parallel(is_committed, uris)) if committed]


def fetch_directory(
    uri: str,
    dest: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    verify: bool = True,
) -> Path:
    """A local directory holding the committed directory artifact at `uri`, every file checked against the manifest.

    Local store without dest: the committed attempt directory itself (no copy), its files checked in place.
    Otherwise the files are copied into `dest`, or into `<cache_dir>/<manifest sha256>` (cache_dir defaults to
    $SRLM_CACHE_DIR/artifacts or ~/.cache/srlm/artifacts), hashed as they are copied. The copy is assembled in a
    temporary sibling directory and renamed into place, so a killed or concurrent fetch never leaves a partial
    directory where a complete one is expected; an existing complete copy is checked and reused (a damaged cache
    entry is fetched again; a damaged `dest` is an error). Checks of unchanged local files are remembered
    (srlm.store.integrity), so reopening a checkpoint does not re-hash it. verify=False skips the local checks.
    """
    manifest = read_manifest(uri)
    if manifest.kind != "directory":
        raise StoreError(f"{uri}: is a {manifest.kind} artifact ({manifest.schema_name}), not a directory")
    root = f"{ATTEMPTS_DIR}/{manifest.attempt_id}"
    fs, base = filesystem_for(uri)
    if dest is None and is_local(uri):
        if verify:
            _check_local_files(uri, [(f"{base}/{entry.path}", entry) for entry in manifest.files])
        return Path(base, root)

    target = Path(dest) if dest is not None else Path(cache_dir or default_cache_dir()) / manifest.sha256
    target = target.expanduser().absolute()

    def copy_of(entry: ManifestFile) -> Path:
        return target / entry.path[len(root) + 1 :]

    if _fetch_complete(target, manifest):
        try:
            if verify:
                _check_local_files(f"{uri} (copy in {target})", [(str(copy_of(e)), e) for e in manifest.files])
            return target
        except DamagedArtifactError as exc:
            if dest is not None:
                raise
            log.warning("%s; fetching it again", exc)
            shutil.rmtree(target)
    if target.exists():
        if dest is not None:
            raise StoreError(f"{target}: exists and does not hold a complete fetch of {uri}; remove it or pick another")
        shutil.rmtree(target)  # a cache entry without its marker was not made by this code; rebuild it
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_partials(target)
    partial = target.parent / f".{target.name}{_PARTIAL}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"

    def download(entry: ManifestFile) -> None:
        local = partial / entry.path[len(root) + 1 :]
        local.parent.mkdir(parents=True, exist_ok=True)
        with open(local, "wb") as out:
            _copy_verified(fs, f"{base}/{entry.path}", out, entry, uri)

    try:
        with _io_errors(uri, f"fetch into {target}"):
            partial.mkdir()
            _run_parallel(download, manifest.files)
            (partial / FETCH_MARKER).write_text(manifest.sha256 + "\n")
            try:
                os.rename(partial, target)
            except OSError:
                if not _fetch_complete(target, manifest):  # else a concurrent fetch of the same manifest won: fine
                    raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    for entry in manifest.files:  # hashed while copied: remember them (unless too fresh to trust their stat)
        with contextlib.suppress(OSError):
            verified_files.remember(str(copy_of(entry)), entry, os.stat(copy_of(entry)))
    log.info("fetched %s into %s (%d files, %d bytes)", uri, target, len(manifest.files), manifest.total_bytes)
    return target


def _check_local_files(uri: str, files: Sequence[tuple[str, ManifestFile]]) -> None:
    """Check local files against their manifest entries: those without a remembered check that still holds are
    hashed, on a few threads (hashing releases the GIL)."""
    pending = [item for item in files if not verified_files.holds(*item)]
    _run_parallel(lambda item: verified_files.check(uri, item[0], item[1], remembered=False), pending)


def default_cache_dir() -> Path:
    root = os.environ.get(CACHE_DIR_ENV) or "~/.cache/srlm"
    return Path(root).expanduser() / "artifacts"


# The remembered checks of local files, for this process and (on disk) later ones: see srlm.store.integrity.
verified_files = integrity.VerifiedFiles(lambda: default_cache_dir() / VERIFIED_DIR)


# ---------------------------------------------------------------------------------------------------------- writing


def write_table(
    uri: str,
    table: TableLike,
    schema_name: str,
    *,
    producer: Any = None,
    force: bool = False,
    rows_per_file: int | None = None,
    replaces: str | None = _AT_START,
) -> Manifest:
    """Validate `table` against schemas.schema(schema_name), write it as Parquet and commit it.

    `table` may be a pa.Table, a RecordBatch, a list of row dicts or a dict of columns. Already committed and not
    force: a no-op returning the existing manifest when its producer is the same (else ConcurrentWriteError).
    `producer` is a config (anything with to_dict(), or a mapping) recorded in the manifest with the code version.
    force: replace the manifest `replaces` (its sha256; None: nothing committed; default: whatever is committed
    when this call starts); if another writer committed in between, see the module docstring.
    """
    check_uri(uri)
    if rows_per_file is not None and rows_per_file < 1:
        raise StoreError(f"{uri}: rows_per_file must be at least 1, got {rows_per_file}")
    record = producer_record(producer)
    replaces, existing = _before_write(uri, record, force=force, replaces=replaces)
    if existing is not None:
        return existing
    data = conform_table(table, schema_name)
    with _attempt(uri) as attempt:
        files = []
        with _io_errors(uri, "write table"):
            for index, part in enumerate(_row_slices(data, rows_per_file)):
                rel = f"{ATTEMPTS_DIR}/{attempt}/part-{index:05d}.parquet"
                with _object_writer(join_uri(uri, rel)) as sink:
                    pq.write_table(part, sink, compression=_PARQUET_COMPRESSION)
                files.append(ManifestFile(path=rel, bytes=sink.bytes, sha256=sink.sha256, rows=part.num_rows))
        manifest = Manifest.new_table(schema_name, schemas.SCHEMA_VERSION, files, producer=record, attempt_id=attempt)
        return _commit(uri, manifest, force=force, replaces=replaces)


def write_directory(
    uri: str,
    local_dir: str | os.PathLike[str],
    *,
    kind: str = "checkpoint",
    producer: Any = None,
    force: bool = False,
    replaces: str | None = _AT_START,
) -> Manifest:
    """Copy every file under `local_dir` (e.g. a Hugging Face checkpoint) into the store and commit it.

    The manifest has kind "directory" and records `kind` as its schema_name. Already committed and not force: a
    no-op returning the existing manifest when its producer is the same. force and replaces: as write_table.
    """
    check_uri(uri)
    source = Path(local_dir)
    if not source.is_dir():
        raise StoreError(f"{source}: not a directory (writing {uri})")
    record = producer_record(producer)
    replaces, existing = _before_write(uri, record, force=force, replaces=replaces)
    if existing is not None:
        return existing
    # A directory that is itself a fetched copy carries our fetch marker: that belongs to the copy, not the content.
    sources = sorted(p for p in source.rglob("*") if p.is_file() and p.name != FETCH_MARKER)
    if not sources:
        raise StoreError(f"{source}: no files to store (writing {uri})")
    with _attempt(uri) as attempt:

        def upload(path: Path) -> ManifestFile:
            rel = f"{ATTEMPTS_DIR}/{attempt}/{path.relative_to(source).as_posix()}"
            with open(path, "rb") as src, _object_writer(join_uri(uri, rel)) as sink:
                shutil.copyfileobj(src, sink, _CHUNK)
            return ManifestFile(path=rel, bytes=sink.bytes, sha256=sink.sha256)

        with _io_errors(uri, "write directory"):
            files = _run_parallel(upload, sources)
        manifest = Manifest.new_directory(kind, files, producer=record, attempt_id=attempt)
        return _commit(uri, manifest, force=force, replaces=replaces)


def shard_uri(uri: str, index: int) -> str:
    """Where shard `index` of the sharded artifact `uri` lives: <uri>/shards/00003."""
    if index < 0:
        raise StoreError(f"{uri}: shard index must be non-negative, got {index}")
    return join_uri(uri, SHARDS_DIR, f"{index:05d}")


def commit_shards(
    uri: str,
    shard_uris: Sequence[str],
    schema_name: str,
    *,
    producer: Any = None,
    force: bool = False,
    replaces: str | None = _AT_START,
) -> Manifest:
    """Commit `uri` as the union of committed shard tables below it (in the order given).

    Every shard must be committed with `schema_name` at the current schema version; the parent's manifest lists
    the shards' files, so shards must stay in place (delete_artifact(uri) removes them with the parent).
    force and replaces: as write_table.
    """
    check_uri(uri)
    record = producer_record(producer)
    replaces, existing = _before_write(uri, record, force=force, replaces=replaces)
    if existing is not None:
        return existing
    if len(set(shard_uris)) != len(shard_uris):
        raise StoreError(f"{uri}: the same shard is listed more than once")
    files: list[ManifestFile] = []
    for shard in shard_uris:
        shard_manifest = read_manifest(shard)
        if shard_manifest.kind != "table" or shard_manifest.schema_name != schema_name:
            raise StoreError(
                f"{shard}: holds {shard_manifest.schema_name!r} {shard_manifest.kind}, expected {schema_name!r} table"
            )
        if shard_manifest.schema_version != schemas.SCHEMA_VERSION:
            raise StoreError(
                f"{shard}: schema version {shard_manifest.schema_version}, expected {schemas.SCHEMA_VERSION}"
            )
        prefix = relative_to(shard, uri)
        files += [dataclasses.replace(f, path=f"{prefix}/{f.path}") for f in shard_manifest.files]
    manifest = Manifest.new_table(schema_name, schemas.SCHEMA_VERSION, files, producer=record, attempt_id=None)
    return _commit(uri, manifest, force=force, replaces=replaces)


def write_text(uri: str, text: str) -> None:
    """Atomically write a small UTF-8 object (a summary, a report): readers see the old or the new text."""
    _write_atomic(uri, text.encode("utf-8"))


def delete_artifact(uri: str) -> None:
    """Remove an artifact: its manifest first (so it reads as uncommitted at once), then everything under it."""
    check_uri(uri)
    fs, path = filesystem_for(uri)
    if is_local(uri) and os.path.dirname(path) == path:
        raise StoreError(f"{uri}: refusing to delete a filesystem root")
    if "/" not in path.strip("/") and not is_local(uri):
        raise StoreError(f"{uri}: refusing to delete a whole bucket")
    with _io_errors(uri, "delete"):
        if fs.get_file_info(f"{path}/{MANIFEST_NAME}").type == pafs.FileType.File:
            fs.delete_file(f"{path}/{MANIFEST_NAME}")
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            fs.delete_dir(path)
    log.info("deleted %s", uri)


# -------------------------------------------------------------------------------------------------------- internals


class _HashingSink:
    """A writable file object that forwards bytes and records their size and sha256 (one pass over the data)."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.bytes = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        self._hash.update(data)
        self._out.write(data)
        size = memoryview(data).nbytes
        self.bytes += size
        return size

    def flush(self) -> None:
        self._out.flush()

    def tell(self) -> int:
        return self.bytes

    def writable(self) -> bool:
        return True

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


@contextlib.contextmanager
def _object_writer(uri: str) -> Iterator[_HashingSink]:
    """Write one data file. Locally it is fsynced before the manifest can name it; on S3 it appears only whole."""
    fs, path = filesystem_for(uri)
    if is_local(uri):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            sink = _HashingSink(out)
            yield sink
            out.flush()
            os.fsync(out.fileno())
    else:
        with _io_errors(uri, "write"), fs.open_output_stream(path) as out:
            sink = _HashingSink(out)
            yield sink


def _write_atomic(uri: str, data: bytes, *, exclusive: bool = False) -> bool:
    """Write the object at `uri` in one step: readers see the old or the new content, never part of it.

    exclusive=False replaces (temp file + os.replace locally, one PUT on S3). exclusive=True creates the object
    only if there is none (os.link of the temp file locally, PutObject with If-None-Match: * on S3) and returns
    False, writing nothing, when one exists.
    """
    check_uri(uri)
    fs, path = filesystem_for(uri)
    if not is_local(uri):
        if exclusive:
            return _put_if_absent(uri, data)
        # An S3 object becomes visible only when its upload completes: readers see the old or the new content.
        with _io_errors(uri, "write"), fs.open_output_stream(path) as out:
            out.write(data)
        return True
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    temp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        with open(temp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if not exclusive:
            os.replace(temp, path)
        elif not _create_exclusive(temp, path):
            return False
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise StoreError(f"{uri}: cannot write: {_first_line(exc)}") from exc
    _fsync_dir(directory)
    return True


def _create_exclusive(temp: str, path: str) -> bool:
    """Move the complete file `temp` to `path` unless `path` exists (False: `temp` is removed, nothing written)."""
    try:
        os.link(temp, path)  # atomic, and fails if the name exists: the complete file appears, or nothing
    except FileExistsError:
        os.unlink(temp)
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        # A filesystem without hard links (some FUSE and SMB mounts): check and rename under a file lock instead.
        with file_lock(os.path.join(os.path.dirname(path), COMMIT_LOCK), timeout_s=_COMMIT_LOCK_TIMEOUT_S):
            if os.path.exists(path):
                os.unlink(temp)
                return False
            os.replace(temp, path)
        return True
    os.unlink(temp)
    return True


def _put_if_absent(uri: str, data: bytes) -> bool:
    """One conditional PutObject (If-None-Match: *): False when the key exists (412) or a concurrent conditional
    PUT of the same key is in flight (409). pyarrow's S3 client cannot send the header, so boto3 does."""
    bucket, key = split_s3(uri)
    return _conditional_put(uri, Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")


def _put_if_unchanged(uri: str, data: bytes, replaces: str) -> bool:
    """PUT `data` at `uri` only while the object there is the manifest with sha256 `replaces` (If-Match on the
    ETag read with it), or create it when there is none."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(uri)
    try:
        current = s3_client().get_object(Bucket=bucket, Key=key)
        body = current["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return _put_if_absent(uri, data)
        raise _s3_error(uri, exc) from exc
    except BotoCoreError as exc:
        raise StoreError(f"{uri}: cannot read: {_first_line(exc)}") from exc
    if hashlib.sha256(body).hexdigest() != replaces:
        return False
    return _conditional_put(uri, Bucket=bucket, Key=key, Body=data, IfMatch=current["ETag"])


def _conditional_put(uri: str, **request: Any) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3_client().put_object(**request)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = exc.response.get("Error", {}).get("Code")
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey") or status in (404, 409, 412):
            return False
        if code == "NotImplemented" or status == 501:
            # An S3-compatible store without conditional writes: commit anyway, and say that races are unguarded.
            log.warning(
                "%s: the S3 endpoint does not support conditional writes; concurrent writers are unguarded", uri
            )
            request = {k: v for k, v in request.items() if k not in ("IfMatch", "IfNoneMatch")}
            return _conditional_put(uri, **request)
        raise _s3_error(uri, exc) from exc
    except BotoCoreError as exc:
        raise StoreError(f"{uri}: cannot write: {_first_line(exc)}") from exc
    return True


def _s3_error(uri: str, exc: Any) -> StoreError:
    error = exc.response.get("Error", {})
    return StoreError(f"{uri}: {error.get('Code', 'error')}: {_first_line(Exception(error.get('Message', '')))}")


def _before_write(
    uri: str, producer: dict[str, Any], *, force: bool, replaces: str | None
) -> tuple[str | None, Manifest | None]:
    """(the manifest sha256 a force write replaces, the committed manifest a non-force write returns instead)."""
    committed = _committed_manifest(uri)
    if force:
        return (committed.sha256 if committed else None) if replaces is _AT_START else replaces, None
    if committed is None:
        return None, None
    if not _same_producer(committed.producer, producer):
        raise _conflict(uri, committed, None)
    log.info("%s already committed; not rewriting (use force to replace it)", uri)
    return None, committed


def _commit(uri: str, manifest: Manifest, *, force: bool, replaces: str | None = None) -> Manifest:
    """Write the manifest that commits `manifest`'s attempt; see the module docstring for concurrent writers."""
    raw = manifest.to_json().encode("utf-8")
    target = join_uri(uri, MANIFEST_NAME)
    if force and replaces is not None:
        won = _replace_if_current(uri, target, raw, replaces)
    else:  # nothing committed is expected: only an exclusive create may commit
        won = _write_atomic(target, raw, exclusive=True)
    if not won:
        current = _committed_manifest(uri)
        if current is None:  # committed and deleted again meanwhile: nothing to stand on
            _discard_attempt(uri, manifest.attempt_id)
            raise ConcurrentWriteError(f"{uri}: another writer committed and removed it while this one wrote it")
        return _lost_race(uri, manifest, current)
    committed = dataclasses.replace(manifest, uri=uri, sha256=hashlib.sha256(raw).hexdigest())
    _delete_attempts(uri, keep=_attempts_of(committed))
    log.info(
        "committed %s (%s, %d file(s), %d bytes%s)",
        uri,
        manifest.schema_name,
        len(manifest.files),
        manifest.total_bytes,
        f", {manifest.total_rows} rows" if manifest.total_rows is not None else "",
    )
    return committed


def _replace_if_current(uri: str, target: str, raw: bytes, replaces: str) -> bool:
    """Replace the manifest at `target` with `raw` only while it is still the one with sha256 `replaces` (or
    create it when there is none); False, writing nothing, when another writer's manifest is there.

    Atomic: locally the check and the os.replace run under a file lock in the artifact directory (between the
    processes of one host, and across hosts where the filesystem's flock is); on S3 the PUT carries If-Match
    with the ETag of the manifest that was checked."""
    if not is_local(uri):
        return _put_if_unchanged(target, raw, replaces)
    with file_lock(os.path.join(filesystem_for(uri)[1], COMMIT_LOCK), timeout_s=_COMMIT_LOCK_TIMEOUT_S):
        current = _committed_manifest(uri)
        if current is None:
            return _write_atomic(target, raw, exclusive=True)
        if current.sha256 != replaces:
            return False
        return _write_atomic(target, raw)


def _lost_race(uri: str, ours: Manifest, theirs: Manifest) -> Manifest:
    """Another writer committed `uri` while this one wrote: theirs stands if it is the same producer's."""
    _discard_attempt(uri, ours.attempt_id)
    if not _same_producer(theirs.producer, ours.producer):
        raise _conflict(uri, theirs, ours.attempt_id)
    log.warning(
        "%s was committed by another writer (attempt %s) with the same producer meanwhile; using it and discarding "
        "attempt %s",
        uri,
        theirs.attempt_id,
        ours.attempt_id,
    )
    return theirs


def _conflict(uri: str, theirs: Manifest, our_attempt: str | None) -> ConcurrentWriteError:
    """The error of a writer that finds `uri` committed by a different producer (before writing, or at commit)."""
    other = (
        f"attempt {theirs.attempt_id or 'over shards'}, created {theirs.created_at}, producer "
        f"{_describe_producer(theirs.producer)}"
    )
    if our_attempt is None:
        return ConcurrentWriteError(
            f"{uri}: already committed by a different producer ({other}); not replacing it without force"
        )
    return ConcurrentWriteError(
        f"{uri}: committed meanwhile by another writer with a different producer ({other}); this writer's attempt "
        f"{our_attempt} was discarded. Rerun to reuse or recompute it"
    )


def _same_producer(theirs: dict[str, Any] | None, ours: dict[str, Any] | None) -> bool:
    """Whether two producer records made the same thing: their fingerprinted keys (step, inputs, settings, schema
    version) when either names a step, else the whole records less the code version. A record that claims nothing
    (no config, no step: written outside the steps) matches any, as the reuse rule treats such outputs."""
    theirs, ours = _claim(theirs), _claim(ours)
    if not theirs or not ours:
        return True
    if "step" in theirs or "step" in ours:
        return all(theirs.get(key) == ours.get(key) for key in _FINGERPRINTED)
    return theirs == ours


def _claim(producer: dict[str, Any] | None) -> dict[str, Any]:
    """A producer record less what does not describe the content (the code version, an absent config)."""
    claim = {key: value for key, value in (producer or {}).items() if key != "code_version"}
    if claim.get("config") is None:
        claim.pop("config", None)
    return claim


def _describe_producer(producer: dict[str, Any] | None) -> str:
    producer = producer or {}
    if "step" in producer:
        return f"step {producer['step']!r}"
    return "without a step" if producer.get("config") is None else "with a config"


def _attempts_of(manifest: Manifest) -> set[str]:
    """The attempt ids of <uri>/_attempts that a manifest's files live in."""
    prefix = f"{ATTEMPTS_DIR}/"
    return {f.path[len(prefix) :].split("/", 1)[0] for f in manifest.files if f.path.startswith(prefix)}


@contextlib.contextmanager
def _attempt(uri: str) -> Iterator[str]:
    """A new attempt id for one write of `uri`, known to be live while the write runs; a write that fails
    removes its own files."""
    attempt = _new_attempt_id()
    with _live_lock:
        _live_attempts.add(attempt)
    try:
        yield attempt
    except BaseException:
        _discard_attempt(uri, attempt)
        raise
    finally:
        with _live_lock:
            _live_attempts.discard(attempt)


def _discard_attempt(uri: str, attempt: str | None) -> None:
    """Best effort: remove this writer's own attempt (it lost a race or failed)."""
    if not attempt:
        return
    fs, path = filesystem_for(uri)
    try:
        if fs.get_file_info(f"{path}/{ATTEMPTS_DIR}/{attempt}").type == pafs.FileType.Directory:
            fs.delete_dir(f"{path}/{ATTEMPTS_DIR}/{attempt}")
    except (OSError, pa.ArrowException) as exc:
        log.warning("%s: could not remove attempt %s: %s", uri, attempt, _first_line(exc))


def _delete_attempts(uri: str, keep: set[str]) -> None:
    """Best effort: remove attempts no manifest names whose writer is gone (crashed or replaced writes); a live
    concurrent writer's attempt is left alone. Failures are only logged."""
    fs, path = filesystem_for(uri)
    attempts = f"{path}/{ATTEMPTS_DIR}"
    try:
        children = fs.get_file_info(pafs.FileSelector(attempts, allow_not_found=True, recursive=False))
        for child in children:
            if (
                child.type == pafs.FileType.Directory
                and child.base_name not in keep
                and _attempt_is_stale(child.base_name)
            ):
                fs.delete_dir(child.path)
                log.debug("removed stale attempt %s/%s/%s", uri, ATTEMPTS_DIR, child.base_name)
    except (OSError, pa.ArrowException) as exc:
        log.warning("%s: could not remove stale attempts: %s", uri, _first_line(exc))


def _attempt_is_stale(attempt: str) -> bool:
    """Whether nobody can still be writing `attempt` (ids: <UTC start>-<host>-<pid>-<random>)."""
    parts = attempt.split("-")
    if len(parts) != 4 or not parts[2].isdigit():
        return True  # an id of the old format (no writer recorded) or not ours: as before, stale
    started, host, pid = parts[0], parts[1], int(parts[2])
    if host == _HOST:
        if pid == os.getpid():
            with _live_lock:
                return attempt not in _live_attempts
        return not process_alive(pid)
    try:
        began = datetime.strptime(started, "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return True
    return time.time() - began > STALE_ATTEMPT_SECONDS


def _committed_manifest(uri: str) -> Manifest | None:
    try:
        return read_manifest(uri)
    except UncommittedArtifactError:
        return None


def _copy_verified(fs: Any, path: str, out: BinaryIO, entry: ManifestFile, uri: str) -> None:
    """Stream one listed file to `out`, checking its size and sha256 against the manifest as it passes."""
    try:
        with fs.open_input_stream(path) as stream:
            size, sha256 = integrity.hash_stream(stream, out)
    except FileNotFoundError as exc:
        raise integrity.missing(uri, entry) from exc
    integrity.check_size_and_digest(uri, entry, size, sha256)


def _fetch_complete(target: Path, manifest: Manifest) -> bool:
    marker = target / FETCH_MARKER
    try:
        return marker.read_text().strip() == manifest.sha256
    except OSError:
        return False


def _remove_dead_partials(target: Path) -> None:
    """Remove half-downloaded copies of `target` left by fetches on this host whose process has died."""
    for partial in target.parent.glob(f".{target.name}{_PARTIAL}*"):
        host, _, rest = partial.name.rpartition(_PARTIAL)[2].partition("-")
        pid = rest.split("-", 1)[0]
        if host == _HOST and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _run_parallel(fn: Any, items: Sequence[Any]) -> list[Any]:
    """Map `fn` over items on a few threads (I/O and hashing release the GIL); results keep the items' order."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(_IO_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))


def _row_slices(table: pa.Table, rows_per_file: int | None) -> Iterator[pa.Table]:
    if rows_per_file is None or table.num_rows <= rows_per_file:
        yield table
        return
    for offset in range(0, table.num_rows, rows_per_file):
        yield table.slice(offset, rows_per_file)


def _schema(name: str, uri: str) -> pa.Schema:
    try:
        return schemas.schema(name)
    except KeyError as exc:
        raise StoreError(f"{uri}: {exc.args[0]}") from exc


def _new_attempt_id() -> str:
    """Sortable by start time, unique across concurrent writers, naming its writer (so cleanup can tell whether it
    is still alive)."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _io_errors(uri: str, action: str) -> Iterator[None]:
    """Turn filesystem errors into one-line StoreErrors naming the URI (messages carry no credentials)."""
    try:
        yield
    except SrlmError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"{uri}: cannot {action}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
