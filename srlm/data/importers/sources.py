"""Reading source files row by row, keeping each row's 1-based line number for error messages.

JSON Lines (optionally gzip-compressed), JSON arrays (each item keeps the line it starts on) and Parquet (the row
number stands in for the line). A line that is not valid JSON becomes a row carrying its Issue, so --skip-invalid
can skip it like any other bad row.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from srlm.data.importers.records import FieldError, Issue, RowOutcome, SftExample
from srlm.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_JSON_WHITESPACE = " \t\r\n"


@dataclass
class SourceRow:
    file: str
    line: int | None
    value: Any = None
    issue: Issue | None = None  # set instead of value when the row could not even be parsed


def input_files(path: str, suffixes: tuple[str, ...]) -> list[Path]:
    """The file itself, or every file in a directory whose name ends with one of `suffixes` (sorted)."""
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(suffixes))
        if not files:
            raise DataError(f"{path}: no input files ending in {', '.join(suffixes)} in this directory")
        return files
    if not p.exists():
        raise DataError(f"{path}: input file not found")
    if not p.is_file():
        raise DataError(f"{path}: not a regular file")
    return [p]


def _open_binary(path: Path) -> BinaryIO:
    """Open a file, transparently decompressing gzip (detected by its magic bytes, not the suffix)."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == _GZIP_MAGIC else open(path, "rb")


def _display(path: Path) -> str:
    return str(path)


def read_failure(name: str, exc: BaseException) -> DataError:
    """One line for a file that cannot be read (or decompressed) at all."""
    if isinstance(exc, (EOFError, gzip.BadGzipFile, zlib.error)):
        return DataError(f"{name}: truncated or corrupt gzip data: {exc}")
    if isinstance(exc, PermissionError):
        return DataError(f"{name}: cannot read: permission denied")
    if isinstance(exc, IsADirectoryError):
        return DataError(f"{name}: is a directory, expected a file")
    if isinstance(exc, OSError):
        return DataError(f"{name}: cannot read: {exc.strerror or exc}")
    return DataError(f"{name}: cannot read: {exc}")


def iter_json_lines(path: Path) -> Iterator[SourceRow]:
    """One row per non-blank line."""
    name = _display(path)
    try:
        with _open_binary(path) as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield SourceRow(name, number, issue=Issue(name, number, None, f"not UTF-8 text ({exc.reason})"))
                    continue
                if number == 1:
                    text = text.lstrip("\ufeff")
                if not text.strip():
                    continue
                try:
                    yield SourceRow(name, number, value=json.loads(text))
                except json.JSONDecodeError as exc:
                    reason = f"invalid JSON: {exc.msg} (column {exc.colno})"
                    yield SourceRow(name, number, issue=Issue(name, number, None, reason))
    except (OSError, EOFError, zlib.error) as exc:  # unreadable file, truncated gzip stream
        raise read_failure(name, exc) from exc


def read_text_file(path: Path) -> str:
    """A whole text file (gzip or not, a UTF-8 BOM dropped); DataError naming the file (and line, for bad UTF-8)."""
    name = _display(path)
    try:
        with _open_binary(path) as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise read_failure(name, exc) from exc
    try:
        return data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{name}:{line}: not UTF-8 text ({exc.reason})") from exc


def _document_layout(path: Path) -> str:
    """ "array" (a JSON array document), "object" (one JSON object spread over several lines) or "lines"."""
    try:
        with _open_binary(path) as handle:
            first_line = handle.readline()
    except (OSError, EOFError, zlib.error) as exc:
        raise read_failure(_display(path), exc) from exc
    if first_line.startswith(_PARQUET_MAGIC):
        raise DataError(f"{_display(path)}: is a Parquet file, not JSON (a Parquet input needs a .parquet name)")
    head = first_line.decode("utf-8", errors="replace").lstrip("\ufeff" + _JSON_WHITESPACE)
    if head.startswith("["):
        return "array"
    if head.startswith("{"):
        try:
            json.loads(head)
        except json.JSONDecodeError:
            return "object"  # the first line is not a whole record: a pretty-printed document, if it parses
    return "lines"


def _json_object_document(path: Path) -> Iterator[SourceRow] | None:
    """The whole file as one JSON object (one row at line 1), or None when it is not one."""
    try:
        value = json.loads(read_text_file(path))
    except json.JSONDecodeError:
        return None
    return iter([SourceRow(_display(path), 1, value=value)]) if isinstance(value, dict) else None


def iter_json_array(path: Path) -> Iterator[SourceRow]:
    """One row per item of a top-level JSON array; each item reports the line it starts on.

    A syntax error inside the array is fatal even with --skip-invalid: after it there is no reliable way to tell
    where the next item begins.
    """
    name = _display(path)
    text = read_text_file(path)
    decoder = json.JSONDecoder()

    def line_at(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def skip_ws(pos: int) -> int:
        while pos < len(text) and text[pos] in _JSON_WHITESPACE:
            pos += 1
        return pos

    pos = skip_ws(0)
    if pos >= len(text) or text[pos] != "[":
        raise DataError(f"{name}:{line_at(pos)}: expected a JSON array of objects")
    pos = skip_ws(pos + 1)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        start = pos
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataError(f"{name}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from exc
        yield SourceRow(name, line_at(start), value=value)
        pos = skip_ws(pos)
        if pos < len(text) and text[pos] == ",":
            pos = skip_ws(pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            if skip_ws(pos + 1) != len(text):
                raise DataError(f"{name}:{line_at(skip_ws(pos + 1))}: unexpected content after the JSON array")
            return
        raise DataError(f"{name}:{line_at(pos)}: invalid JSON: expected ',' or ']' after an array item")


def iter_json_documents(path: Path) -> Iterator[SourceRow]:
    """A JSON array document, JSON Lines, or one JSON object (a wrapper such as {"data": [...]}, which the
    importers then name), whichever the file holds."""
    layout = _document_layout(path)
    if layout == "array":
        return iter_json_array(path)
    if layout == "object":
        return _json_object_document(path) or iter_json_lines(path)
    return iter_json_lines(path)


def read_json_records(path: str | Path) -> list[Any]:
    """Every record of a JSON array document or JSON Lines file (gzip or not), strictly: the first line that is
    not valid JSON raises DataError naming file and line. The one reader for small .json/.jsonl[.gz] inputs
    (annotations, prompt files) that are read whole rather than row by row."""
    records = []
    for row in iter_json_documents(Path(path).expanduser()):
        if row.issue is not None:
            raise DataError(row.issue.message())
        records.append(row.value)
    return records


def iter_parquet_rows(path: Path, batch_rows: int = 1024) -> Iterator[SourceRow]:
    """One row per Parquet row (as a dict of Python values); the 1-based row number serves as the line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = _display(path)
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{name}: not a readable Parquet file: {_first_line(exc)}") from exc
    number = 0
    batches = parquet.iter_batches(batch_size=batch_rows)
    while True:
        try:
            batch = next(batches, None)
        except (OSError, pa.ArrowException) as exc:  # a damaged page or column chunk, found while reading
            raise DataError(f"{name}: corrupt Parquet data after row {number}: {_first_line(exc)}") from exc
        if batch is None:
            return
        for value in batch.to_pylist():
            number += 1
            yield SourceRow(name, number, value=value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def source_name(format_name: str, path: Path) -> str:
    """The `source` column: format and file name (not the full path, so ids survive moving the file)."""
    return f"{format_name}:{path.name}"


def sft_outcomes(rows: Iterator[SourceRow], convert: Callable[[Any], SftExample]) -> Iterator[RowOutcome]:
    """Run a one-row-one-example converter over rows, turning its FieldError into the row's Issue."""
    for row in rows:
        outcome = RowOutcome(row.file, row.line, issue=row.issue)
        if row.issue is None:
            try:
                outcome.examples.append(convert(row.value))
            except FieldError as exc:
                outcome.issue = Issue(row.file, row.line, exc.field, exc.reason)
        yield outcome
