"""Bring an in-memory table to a named store schema, or say exactly which column is wrong."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from srlm.errors import StoreError
from srlm.store import schemas

TableLike = pa.Table | pa.RecordBatch | Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]


def conform_table(data: TableLike, schema_name: str) -> pa.Table:
    """Return `data` as a pa.Table with exactly the columns, order and types of schemas.schema(schema_name).

    Missing nullable columns are added as nulls. A missing required column, an unknown column, a value that
    cannot be cast, or a null in a non-nullable column raises StoreError naming the column and the schema.
    """
    target = _target_schema(schema_name)
    table = _as_table(data, target, schema_name)
    unknown = [name for name in table.column_names if target.get_field_index(name) < 0]
    if unknown:
        raise StoreError(
            f"schema {schema_name!r}: unknown column(s) {', '.join(map(repr, unknown))}; "
            f"expected {', '.join(target.names)}"
        )
    if len(set(table.column_names)) != len(table.column_names):
        raise StoreError(f"schema {schema_name!r}: duplicate column names in {table.column_names}")
    columns = []
    for fld in target:
        if fld.name not in table.column_names:
            if not fld.nullable:
                raise StoreError(f"schema {schema_name!r}: required column {fld.name!r} is missing")
            columns.append(pa.nulls(table.num_rows, fld.type))
            continue
        column = table.column(fld.name)
        if not column.type.equals(fld.type):
            try:
                column = column.cast(fld.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise StoreError(
                    f"schema {schema_name!r}: column {fld.name!r} has type {column.type}, "
                    f"which cannot be cast to {fld.type} ({_first_line(exc)})"
                ) from exc
        if not fld.nullable and column.null_count:
            raise StoreError(
                f"schema {schema_name!r}: column {fld.name!r} is required but has {column.null_count} null value(s)"
            )
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=target)


def conform_to_newer_schema(table: pa.Table, schema_name: str, where: str) -> pa.Table:
    """Widen a table read from an older SCHEMA_VERSION: columns added since then (nullable) come back as nulls."""
    target = _target_schema(schema_name)
    if table.schema.equals(target):
        return table
    columns = []
    for fld in target:
        if fld.name in table.column_names:
            column = table.column(fld.name)
            columns.append(column if column.type.equals(fld.type) else column.cast(fld.type))
        elif fld.nullable:
            columns.append(pa.nulls(table.num_rows, fld.type))
        else:
            raise StoreError(f"{where}: stored table lacks required column {fld.name!r} of schema {schema_name!r}")
    return pa.Table.from_arrays(columns, schema=target)


def _target_schema(schema_name: str) -> pa.Schema:
    try:
        return schemas.schema(schema_name)
    except KeyError as exc:
        raise StoreError(str(exc.args[0])) from exc


def _as_table(data: TableLike, target: pa.Schema, schema_name: str) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, Mapping):
        columns = {str(name): list(values) for name, values in data.items()}
    else:
        rows = list(data)
        names = list(dict.fromkeys(name for row in rows for name in row))
        columns = {name: [row.get(name) for row in rows] for name in names}
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise StoreError(f"schema {schema_name!r}: columns have different lengths {sorted(lengths)}")
    if not columns:  # no rows at all: an empty table of the schema
        return target.empty_table()
    return pa.table({name: _as_array(name, values, target, schema_name) for name, values in columns.items()})


def _as_array(name: str, values: list[Any], target: pa.Schema, schema_name: str) -> pa.Array:
    index = target.get_field_index(name)
    if index >= 0:
        try:
            return pa.array(values, type=target.field(index).type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise StoreError(
                f"schema {schema_name!r}: column {name!r} has a value that is not {target.field(index).type} "
                f"({_first_line(exc)})"
            ) from exc
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
        raise StoreError(f"schema {schema_name!r}: column {name!r}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
