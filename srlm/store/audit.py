"""`srlm store verify`: check every committed artifact under a URI (a store root, a run, or one artifact).

Every manifest is read and every file it lists is hashed again in full (remembered checks are not trusted here:
this is the command that catches damage a stat cannot see). Besides damage, it counts what is untidy but
harmless: files inside a committed attempt that its manifest does not list (a warning), and leftovers that no
manifest names (attempts of crashed, replaced or still-running writers, and artifacts with attempts but no
manifest).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from srlm.errors import SrlmError, StoreError
from srlm.store import artifacts, integrity
from srlm.store.filesystems import filesystem_for
from srlm.store.manifest import MANIFEST_NAME, ManifestFile
from srlm.store.uri import join_uri


@dataclass
class ArtifactCheck:
    """One committed artifact: what it holds, and what is wrong with it."""

    uri: str
    kind: str = "?"
    schema_name: str = "?"
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)  # one line each; any makes the artifact damaged
    unlisted_files: int = 0  # in a committed attempt but not in the manifest (warning)
    stale_attempts: int = 0  # attempts under it that no manifest names

    @property
    def damaged(self) -> bool:
        return bool(self.problems)


@dataclass
class StoreAudit:
    uri: str
    artifacts: list[ArtifactCheck]
    uncommitted: list[str]  # artifact directories with attempts but no manifest

    @property
    def damaged(self) -> list[ArtifactCheck]:
        return [a for a in self.artifacts if a.damaged]

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "checked": len(self.artifacts),
            "damaged": len(self.damaged),
            "unlisted_files": sum(a.unlisted_files for a in self.artifacts),
            "uncommitted_leftovers": sum(a.stale_attempts for a in self.artifacts) + len(self.uncommitted),
            "uncommitted": self.uncommitted,
            "artifacts": [
                {
                    "uri": a.uri,
                    "kind": a.kind,
                    "schema": a.schema_name,
                    "files": a.files,
                    "bytes": a.bytes,
                    "damaged": a.damaged,
                    "problems": a.problems,
                    "unlisted_files": a.unlisted_files,
                    "stale_attempts": a.stale_attempts,
                }
                for a in self.artifacts
            ],
        }


def audit(uri: str) -> StoreAudit:
    """Check every committed artifact at or under `uri`; StoreError when there is nothing there at all."""
    fs, base = filesystem_for(uri)
    try:
        listing = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=True))
        here = fs.get_file_info(base)
    except (OSError, ValueError) as exc:
        raise StoreError(f"{uri}: cannot list: {exc}") from exc
    if here.type == pafs.FileType.NotFound:
        raise StoreError(f"{uri}: no such store, run or artifact")
    if here.type != pafs.FileType.Directory:
        raise StoreError(f"{uri}: a file, not a store, run or artifact directory")
    files = {_relative(info.path, base) for info in listing if info.type == pafs.FileType.File}
    directories = {_relative(info.path, base) for info in listing if info.type == pafs.FileType.Directory}

    artifact_dirs = sorted(_parent(f) for f in files if _name(f) == MANIFEST_NAME)
    attempt_dirs = {d for d in directories if _name(_parent(d)) == artifacts.ATTEMPTS_DIR}
    listed_files: set[str] = set()  # relative to `uri`
    checked: dict[tuple[str, str], str | None] = {}  # (file, sha256) -> problem; shard files are listed twice
    results: dict[str, ArtifactCheck] = {}
    for directory in artifact_dirs:
        result = results[directory] = ArtifactCheck(_uri(uri, directory))
        try:
            manifest = artifacts.read_manifest(result.uri)
        except SrlmError as exc:
            result.problems.append(str(exc))
            continue
        result.kind, result.schema_name = manifest.kind, manifest.schema_name
        result.files, result.bytes = len(manifest.files), manifest.total_bytes
        for entry in manifest.files:
            path = _join(directory, entry.path)
            listed_files.add(path)
            key = (path, entry.sha256)
            if key not in checked:
                checked[key] = _problem(fs, f"{base}/{path}" if path else base, entry, result.uri)
            if checked[key] is not None:
                result.problems.append(checked[key])

    named_attempts = {attempt for f in listed_files if (attempt := _attempt_of(f))}
    for path in files:
        attempt = _attempt_of(path)
        if attempt in named_attempts and path not in listed_files:
            owner = _parent(_parent(attempt))
            if owner in results:
                results[owner].unlisted_files += 1
    for attempt in attempt_dirs - named_attempts:
        owner = _parent(_parent(attempt))
        if owner in results:
            results[owner].stale_attempts += 1
    uncommitted = sorted(
        _uri(uri, _parent(d)) for d in directories if _name(d) == artifacts.ATTEMPTS_DIR and _parent(d) not in results
    )
    return StoreAudit(uri, [results[d] for d in artifact_dirs], uncommitted)


def _problem(fs: Any, path: str, entry: ManifestFile, uri: str) -> str | None:
    """Why one listed file is damaged (hashing every byte, never a remembered check), or None."""
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            artifacts.verified_files.check(uri, path, entry, remembered=False)
        else:
            try:
                with fs.open_input_stream(path) as stream:
                    size, sha256 = integrity.hash_stream(stream)
            except FileNotFoundError as exc:
                raise integrity.missing(uri, entry) from exc
            integrity.check_size_and_digest(uri, entry, size, sha256)
    except SrlmError as exc:
        return str(exc)
    except OSError as exc:
        return f"{uri}: {entry.path}: cannot read: {exc}"
    return None


def _attempt_of(relative: str) -> str | None:
    """The attempt directory (…/_attempts/<id>) a file lies in, or None."""
    parts = relative.split("/")
    if artifacts.ATTEMPTS_DIR not in parts[:-2]:
        return None
    index = parts.index(artifacts.ATTEMPTS_DIR)
    return "/".join(parts[: index + 2])


def _relative(path: str, base: str) -> str:
    path = path.rstrip("/")
    base = base.rstrip("/")
    return "" if path == base else path[len(base) + 1 :]


def _parent(relative: str) -> str:
    return relative.rpartition("/")[0]


def _name(relative: str) -> str:
    return relative.rpartition("/")[2]


def _join(directory: str, relative: str) -> str:
    return f"{directory}/{relative}" if directory else relative


def _uri(root: str, relative: str) -> str:
    return join_uri(root, *relative.split("/")) if relative else root


def format_table(result: StoreAudit) -> Iterable[str]:
    """The human-readable report: one row per artifact, then a summary line."""
    rows = [("artifact", "kind", "files", "bytes", "status")]
    for a in result.artifacts:
        status = "DAMAGED" if a.damaged else "ok"
        notes = []
        if a.unlisted_files:
            notes.append(f"{a.unlisted_files} unlisted file(s)")
        if a.stale_attempts:
            notes.append(f"{a.stale_attempts} stale attempt(s)")
        if notes:
            status += f" ({', '.join(notes)})"
        rows.append((_short(a.uri, result.uri), f"{a.kind}:{a.schema_name}", str(a.files), str(a.bytes), status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        yield "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
    for a in result.damaged:
        for problem in a.problems:
            yield f"damaged: {problem}"
    for leftover in result.uncommitted:
        yield f"uncommitted: {leftover} (attempts but no manifest)"
    summary = result.to_dict()
    yield (
        f"{summary['checked']} artifact(s) checked, {summary['damaged']} damaged, {summary['unlisted_files']} "
        f"file(s) not in a manifest, {summary['uncommitted_leftovers']} uncommitted leftover(s)"
    )


def _short(uri: str, root: str) -> str:
    if uri == root:
        return "."
    prefix = root.rstrip("/") + "/"
    return uri[len(prefix) :] if uri.startswith(prefix) else uri
