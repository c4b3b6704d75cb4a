"""From a page of Salesforce records to a typed Arrow table: the org's types, Bulk CSV and REST JSON.

Pure functions, no I/O: the extraction (extract.py) feeds them pages and hands the typed tables on.
Parsing stays in Arrow's C++ code, so a million-row page costs well under a second and never becomes a
million Python dicts.

A value that does not parse (a date that is not a date) becomes null, and a mask says which rows had
one, so the caller can set those rows aside with their raw text rather than stage a wrong value.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from connectors.salesforce.streams import Stream
from core.errors import SalesforceError

# Salesforce field types (describe's `type`) and the Arrow type each is staged as.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "int": pa.int64(),
    "double": pa.float64(),
    "currency": pa.float64(),
    "percent": pa.float64(),
    "date": pa.date32(),
    "datetime": pa.timestamp("ms", tz="UTC"),
}


def arrow_schema(stream: Stream, field_types: Mapping[str, str]) -> pa.Schema:
    """The staged schema of a stream, from the org's describe (`field name -> Salesforce type`): the columns
    to read, in order. A field the org lacks is left out (`absent_fields` names them), except the Id and the
    cursor; an activity stream needs one of its user fields too. Those missing are an error."""
    missing = [name for name in stream.required if name not in field_types]
    if stream.is_activity and not any(name in field_types for name in stream.user_fields):
        missing.append(" or ".join(stream.user_fields))
    if missing:
        raise SalesforceError(f"{stream.sobject} in this org has no field {missing}, which the pull cannot do "
                              "without: check the org's field-level security for the integration user, or the "
                              "stream declaration", sobject=stream.sobject, call="describe")
    return pa.schema([(name, _ARROW_TYPES.get(field_types[name], pa.string())) for name in stream.columns
                      if name in field_types])


def absent_fields(stream: Stream, schema: pa.Schema) -> list[str]:
    """The declared fields (not the optional ones) the org's describe lacked, so `arrow_schema` left out."""
    return [name for name in stream.columns if name not in schema.names and name not in stream.optional]


def csv_page_to_text_table(page: Path | str, columns: Sequence[str] | None = None) -> pa.Table:
    """A Bulk API 2.0 CSV page (a file, or its text) as an all-text table (empty cells are null, as
    Salesforce means them), with `columns` (default: the page's own). A file is parsed straight from
    disk, never held as text."""
    if (page.stat().st_size == 0) if isinstance(page, Path) else not page.strip():
        return pa.table({name: pa.array([], pa.string()) for name in columns or []})
    names = list(columns) if columns is not None else _header(page)
    options = pa_csv.ConvertOptions(column_types={name: pa.string() for name in names},
                                    strings_can_be_null=True, quoted_strings_can_be_null=True,
                                    include_columns=names)
    # Text fields may hold line breaks inside their quotes; Arrow must not split rows there.
    parsing = pa_csv.ParseOptions(newlines_in_values=True)
    # One thread: the pull already reads several objects at once, and Arrow's own threads on top of that
    # only add contention (and memory each thread's allocator keeps).
    reading = pa_csv.ReadOptions(use_threads=False)
    with pa.OSFile(str(page)) if isinstance(page, Path) else io.BytesIO(page.encode("utf-8")) as source:
        return pa_csv.read_csv(source, read_options=reading, parse_options=parsing, convert_options=options)


def csv_page_to_typed_table(page: Path, schema: pa.Schema) -> pa.Table | None:
    """A Bulk API 2.0 CSV page parsed straight into `schema`'s types, or None when some value does not fit
    them (then `csv_page_to_text_table` and `typed_table` find which). Same result as those two, in half
    the time: no text table in between."""
    if page.stat().st_size == 0:
        return None
    options = pa_csv.ConvertOptions(column_types={field.name: field.type for field in schema},
                                    include_columns=schema.names, strings_can_be_null=True,
                                    quoted_strings_can_be_null=True, true_values=["true"], false_values=["false"],
                                    timestamp_parsers=[pa_csv.ISO8601])
    try:
        with pa.OSFile(str(page)) as source:
            return pa_csv.read_csv(source, read_options=pa_csv.ReadOptions(use_threads=False),
                                   parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                                   convert_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _header(page: Path | str) -> list[str]:
    """The column names of a CSV page (its first record)."""
    with page.open(newline="", encoding="utf-8") if isinstance(page, Path) else io.StringIO(page) as lines:
        return next(csv.reader(lines))


def rest_records_to_text_table(records: Iterable[Mapping[str, object]], columns: Sequence[str]) -> pa.Table:
    """REST records as an all-text table (booleans become 'true'/'false', numbers their text)."""
    values: dict[str, list] = {name: [] for name in columns}
    for record in records:
        for name in columns:
            value = record.get(name)
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif value is not None and not isinstance(value, str):
                value = repr(value) if isinstance(value, float) else str(value)
            values[name].append(value)
    return pa.table({name: pa.array(column, pa.string()) for name, column in values.items()})


def typed_table(text: pa.Table, schema: pa.Schema) -> tuple[pa.Table, pa.Array]:
    """Converts an all-text table to `schema`; returns it and a mask of rows with an unparsable value.

    Unparsable values become null in the typed table; the mask lets the caller reject those rows.
    """
    columns = []
    bad = pa.array([False] * text.num_rows, pa.bool_())
    for field in schema:
        raw = text.column(field.name)
        converted, failed = _convert(raw, field.type)
        columns.append(converted)
        bad = pc.or_(bad, failed)
    return pa.Table.from_arrays(columns, schema=schema), bad


def _convert(raw: pa.ChunkedArray, target: pa.DataType) -> tuple[pa.ChunkedArray, pa.Array]:
    raw = raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw
    no_failures = pa.array([False] * len(raw), pa.bool_())
    if pa.types.is_string(target):
        return raw, no_failures
    if pa.types.is_boolean(target):
        lowered = pc.utf8_lower(raw)
        converted = pc.if_else(pc.equal(lowered, "true"), True, pc.if_else(pc.equal(lowered, "false"), False, None))
        failed = pc.and_(pc.is_valid(raw), pc.is_null(converted))
        return converted.cast(pa.bool_()), pc.fill_null(failed, False)
    try:
        return pc.cast(raw, target), no_failures
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _convert_leniently(raw, target)


def _convert_leniently(raw: pa.Array, target: pa.DataType) -> tuple[pa.Array, pa.Array]:
    """The slow path, only for a page holding a value Arrow cannot parse: value by value via pandas."""
    series = pd.Series(raw.to_pylist(), dtype="object")
    if pa.types.is_timestamp(target) or pa.types.is_date(target):
        parsed = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
        converted = pa.array(parsed.dt.date if pa.types.is_date(target) else parsed, type=target, from_pandas=True)
    else:
        parsed = pd.to_numeric(series, errors="coerce")
        converted = pa.array(parsed, from_pandas=True).cast(target, safe=False)
    failed = pc.and_(pc.is_valid(raw), pc.is_null(converted))
    return converted, pc.fill_null(failed, False)
