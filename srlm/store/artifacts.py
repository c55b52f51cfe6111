"""Atomic, manifest-committed artifacts on a local filesystem or S3.

CONTRACT (implemented by the store owner; every other module codes against these signatures):

An artifact is a "directory" URI. Writers put data files under <uri>/_attempts/<attempt_id>/… and then commit by
writing <uri>/_SUCCESS (one atomic object PUT on S3; write-temp-then-os.replace locally). The manifest lists the
files (paths relative to <uri>), row counts, byte sizes, sha256 checksums, the schema name + version, and the
producer (config dict + srlm code version + git sha if known). Readers only ever read what a manifest lists, so a
crashed writer leaves nothing that reads as committed; a rerun writes a fresh attempt and cleans stale ones.

    is_committed(uri) -> bool
    read_manifest(uri) -> Manifest                      # raises UncommittedArtifactError
    write_table(uri, table, schema_name, *, producer=None, force=False, rows_per_file=None) -> Manifest
        # Casts/validates table to schemas.schema(schema_name) (clear StoreError naming the column on mismatch).
        # If already committed and not force: no-op, returns the existing manifest.
    read_table(uri, schema_name=None, columns=None) -> pa.Table   # refuses uncommitted; checks schema name/version
    write_directory(uri, local_dir, *, kind="checkpoint", producer=None, force=False) -> Manifest
    fetch_directory(uri, dest=None) -> pathlib.Path     # local store: the committed attempt dir itself (no copy);
                                                        # S3: download into dest or a cache dir keyed by manifest sha
    commit_shards(uri, shard_uris, schema_name, *, producer=None) -> Manifest
        # For resumable steps: each shard is its own committed artifact (e.g. <uri>/shards/00003); the parent
        # manifest lists the shards' files. Readers of <uri> see the union.
    shard_uri(uri, index) -> str
    write_text(uri, text) / read_text(uri) -> str       # small atomic single objects (summaries, reports)
    list_committed(prefix_uri) -> list[str]              # immediate children of prefix that are committed artifacts
    delete_artifact(uri)                                 # for --force reruns

S3 settings come from StoreConfig or the environment (AWS_ENDPOINT_URL[_S3], AWS_REGION, AWS_ACCESS_KEY_ID, …);
credentials are never printed or logged.

Beyond the contract: read_table/fetch_directory take verify=True (check every byte against the manifest's sha256),
fetch_directory takes cache_dir, commit_shards takes force, and exists(uri) tells whether a single object (e.g. a
write_text target) exists. A manifest is written only after every data file of its attempt is closed (and, on local
disks, fsynced); S3 objects become visible only once complete, so neither a killed writer nor a failed upload can
produce a manifest that lists a partial file. One writer per URI at a time is assumed (Airflow runs a task
instance once); a writer that finds the URI committed by someone else when it is about to commit discards its own
attempt and returns the other manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from srlm.errors import SrlmError, StoreError, UncommittedArtifactError
from srlm.host import process_alive
from srlm.store import schemas
from srlm.store.conform import TableLike, conform_table
from srlm.store.filesystems import configure_store, filesystem_for
from srlm.store.manifest import MANIFEST_NAME, Manifest, ManifestFile
from srlm.store.uri import check_uri, is_local, join_uri, relative_to

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
    "read_manifest",
    "read_table",
    "read_text",
    "shard_uri",
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
_CHUNK = 8 * 1024 * 1024
_IO_THREADS = 8
_PARQUET_COMPRESSION = "zstd"
_PARTIAL = ".partial-"
_HOST = socket.gethostname().replace("-", "_")


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
    uri: str, schema_name: str | None = None, columns: Sequence[str] | None = None, *, verify: bool = False
) -> pa.Table:
    """The committed table at `uri` (files in manifest order), conformed to the current schema.

    schema_name, when given, must match the manifest's. Tables written under an older SCHEMA_VERSION read back
    with the columns added since as nulls; a newer version is refused. verify=True checks every file's sha256.
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
    with _io_errors(uri, "read table"):
        if verify:
            parts = []
            for entry, path in zip(manifest.files, paths):
                data = _read_verified(fs, path, entry, uri)
                parts.append(pq.read_table(pa.BufferReader(data), schema=target, columns=columns))
            return pa.concat_tables(parts)
        import pyarrow.dataset as ds

        # The dataset reads only these paths (never lists the directory) and fills columns that older schema
        # versions lacked with nulls; to_table keeps the files' order.
        dataset = ds.dataset(paths, schema=target, format="parquet", filesystem=fs)
        return dataset.to_table(columns=columns)


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
    verify: bool = False,
) -> Path:
    """A local directory holding the committed directory artifact at `uri`.

    Local store without dest: the committed attempt directory itself (no copy; verify=True checks its checksums).
    Otherwise the files are copied into `dest`, or into `<cache_dir>/<manifest sha256>` (cache_dir defaults to
    $SRLM_CACHE_DIR/artifacts or ~/.cache/srlm/artifacts), always checking checksums. The copy is assembled in a
    temporary sibling directory and renamed into place, so a killed or concurrent fetch never leaves a partial
    directory where a complete one is expected; an existing complete copy is reused.
    """
    manifest = read_manifest(uri)
    if manifest.kind != "directory":
        raise StoreError(f"{uri}: is a {manifest.kind} artifact ({manifest.schema_name}), not a directory")
    root = f"{ATTEMPTS_DIR}/{manifest.attempt_id}"
    fs, base = filesystem_for(uri)
    if dest is None and is_local(uri):
        if verify:
            for entry in manifest.files:
                _read_verified(fs, f"{base}/{entry.path}", entry, uri, keep=False)
        return Path(base, root)

    target = Path(dest) if dest is not None else Path(cache_dir or default_cache_dir()) / manifest.sha256
    target = target.expanduser().absolute()
    if _fetch_complete(target, manifest):
        return target
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
    log.info("fetched %s into %s (%d files, %d bytes)", uri, target, len(manifest.files), manifest.total_bytes)
    return target


def default_cache_dir() -> Path:
    root = os.environ.get(CACHE_DIR_ENV) or "~/.cache/srlm"
    return Path(root).expanduser() / "artifacts"


# ---------------------------------------------------------------------------------------------------------- writing


def write_table(
    uri: str,
    table: TableLike,
    schema_name: str,
    *,
    producer: Any = None,
    force: bool = False,
    rows_per_file: int | None = None,
) -> Manifest:
    """Validate `table` against schemas.schema(schema_name), write it as Parquet and commit it.

    `table` may be a pa.Table, a RecordBatch, a list of row dicts or a dict of columns. Already committed and not
    force: a no-op returning the existing manifest. `producer` is a config (anything with to_dict(), or a mapping)
    recorded in the manifest with the code version.
    """
    check_uri(uri)
    if rows_per_file is not None and rows_per_file < 1:
        raise StoreError(f"{uri}: rows_per_file must be at least 1, got {rows_per_file}")
    if not force and (existing := _committed_manifest(uri)) is not None:
        log.info("%s already committed; not rewriting (use force to replace it)", uri)
        return existing
    data = conform_table(table, schema_name)
    attempt = _new_attempt_id()
    files = []
    with _io_errors(uri, "write table"):
        for index, part in enumerate(_row_slices(data, rows_per_file)):
            rel = f"{ATTEMPTS_DIR}/{attempt}/part-{index:05d}.parquet"
            with _object_writer(join_uri(uri, rel)) as sink:
                pq.write_table(part, sink, compression=_PARQUET_COMPRESSION)
            files.append(ManifestFile(path=rel, bytes=sink.bytes, sha256=sink.sha256, rows=part.num_rows))
    manifest = Manifest.new_table(schema_name, schemas.SCHEMA_VERSION, files, producer=producer, attempt_id=attempt)
    return _commit(uri, manifest, force=force)


def write_directory(
    uri: str,
    local_dir: str | os.PathLike[str],
    *,
    kind: str = "checkpoint",
    producer: Any = None,
    force: bool = False,
) -> Manifest:
    """Copy every file under `local_dir` (e.g. a Hugging Face checkpoint) into the store and commit it.

    The manifest has kind "directory" and records `kind` as its schema_name. Already committed and not force: a
    no-op returning the existing manifest.
    """
    check_uri(uri)
    source = Path(local_dir)
    if not source.is_dir():
        raise StoreError(f"{source}: not a directory (writing {uri})")
    if not force and (existing := _committed_manifest(uri)) is not None:
        log.info("%s already committed; not rewriting (use force to replace it)", uri)
        return existing
    # A directory that is itself a fetched copy carries our fetch marker: that belongs to the copy, not the content.
    sources = sorted(p for p in source.rglob("*") if p.is_file() and p.name != FETCH_MARKER)
    if not sources:
        raise StoreError(f"{source}: no files to store (writing {uri})")
    attempt = _new_attempt_id()

    def upload(path: Path) -> ManifestFile:
        rel = f"{ATTEMPTS_DIR}/{attempt}/{path.relative_to(source).as_posix()}"
        with open(path, "rb") as src, _object_writer(join_uri(uri, rel)) as sink:
            shutil.copyfileobj(src, sink, _CHUNK)
        return ManifestFile(path=rel, bytes=sink.bytes, sha256=sink.sha256)

    with _io_errors(uri, "write directory"):
        files = _run_parallel(upload, sources)
    manifest = Manifest.new_directory(kind, files, producer=producer, attempt_id=attempt)
    return _commit(uri, manifest, force=force)


def shard_uri(uri: str, index: int) -> str:
    """Where shard `index` of the sharded artifact `uri` lives: <uri>/shards/00003."""
    if index < 0:
        raise StoreError(f"{uri}: shard index must be non-negative, got {index}")
    return join_uri(uri, SHARDS_DIR, f"{index:05d}")


def commit_shards(
    uri: str, shard_uris: Sequence[str], schema_name: str, *, producer: Any = None, force: bool = False
) -> Manifest:
    """Commit `uri` as the union of committed shard tables below it (in the order given).

    Every shard must be committed with `schema_name` at the current schema version; the parent's manifest lists
    the shards' files, so shards must stay in place (delete_artifact(uri) removes them with the parent).
    """
    check_uri(uri)
    if not force and (existing := _committed_manifest(uri)) is not None:
        log.info("%s already committed; not rewriting (use force to replace it)", uri)
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
    manifest = Manifest.new_table(schema_name, schemas.SCHEMA_VERSION, files, producer=producer, attempt_id=None)
    return _commit(uri, manifest, force=force)


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


def _write_atomic(uri: str, data: bytes) -> None:
    """Replace the object at `uri` with `data` in one step: temp file + os.replace locally, one PUT on S3."""
    check_uri(uri)
    fs, path = filesystem_for(uri)
    if not is_local(uri):
        # An S3 object becomes visible only when its upload completes: readers see the old or the new content.
        with _io_errors(uri, "write"), fs.open_output_stream(path) as out:
            out.write(data)
        return
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    temp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        with open(temp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise StoreError(f"{uri}: cannot write: {_first_line(exc)}") from exc
    _fsync_dir(directory)


def _commit(uri: str, manifest: Manifest, *, force: bool) -> Manifest:
    if not force and (existing := _committed_manifest(uri)) is not None:
        # Another writer committed while this one wrote: keep theirs, drop ours.
        log.warning("%s was committed by another writer meanwhile; discarding attempt %s", uri, manifest.attempt_id)
        if manifest.attempt_id:
            _delete_attempts(uri, keep=_attempts_of(existing))
        return existing
    raw = manifest.to_json().encode("utf-8")
    _write_atomic(join_uri(uri, MANIFEST_NAME), raw)
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


def _attempts_of(manifest: Manifest) -> set[str]:
    """The attempt ids of <uri>/_attempts that a manifest's files live in."""
    prefix = f"{ATTEMPTS_DIR}/"
    return {f.path[len(prefix) :].split("/", 1)[0] for f in manifest.files if f.path.startswith(prefix)}


def _delete_attempts(uri: str, keep: set[str]) -> None:
    """Best effort: remove attempts no manifest names (crashed or replaced writes). Failures are only logged."""
    fs, path = filesystem_for(uri)
    attempts = f"{path}/{ATTEMPTS_DIR}"
    try:
        children = fs.get_file_info(pafs.FileSelector(attempts, allow_not_found=True, recursive=False))
        for child in children:
            if child.type == pafs.FileType.Directory and child.base_name not in keep:
                fs.delete_dir(child.path)
                log.debug("removed stale attempt %s/%s/%s", uri, ATTEMPTS_DIR, child.base_name)
    except (OSError, pa.ArrowException) as exc:
        log.warning("%s: could not remove stale attempts: %s", uri, _first_line(exc))


def _committed_manifest(uri: str) -> Manifest | None:
    try:
        return read_manifest(uri)
    except UncommittedArtifactError:
        return None


def _read_verified(fs: Any, path: str, entry: ManifestFile, uri: str, *, keep: bool = True) -> bytes:
    buffer = _BytesSink() if keep else None
    _copy_verified(fs, path, buffer, entry, uri)
    return buffer.getvalue() if buffer is not None else b""


def _copy_verified(fs: Any, path: str, out: BinaryIO | _BytesSink | None, entry: ManifestFile, uri: str) -> None:
    """Stream one listed file to `out` (or nowhere), checking its size and sha256 against the manifest."""
    digest = hashlib.sha256()
    size = 0
    try:
        with fs.open_input_stream(path) as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if out is not None:
                    out.write(chunk)
    except FileNotFoundError as exc:
        raise StoreError(f"{uri}: listed file {entry.path} is missing; the artifact is damaged") from exc
    if size != entry.bytes or digest.hexdigest() != entry.sha256:
        raise StoreError(f"{uri}: {entry.path} does not match its manifest checksum; the artifact is damaged")


class _BytesSink:
    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def getvalue(self) -> bytes:
        return b"".join(self._chunks)


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
    """Sortable by start time, unique across concurrent writers."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"


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
