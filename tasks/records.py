"""From a page of Salesforce records to a typed Arrow table, with broken records set aside.

Pure functions, no I/O: the pull feeds them pages (Bulk API 2.0 CSV text or REST JSON records) and
writes what they return. Parsing stays in Arrow's C++ code, so a million-row page costs well under a
second and never becomes a million Python dicts.

Broken records are not staged and not dropped: they come back as `Rejected` rows with the reason and
the raw record, for the quarantine. A record is broken when it has no user (the owner, creator or
login user a feature would count it for), when that user is not a known user, when a date or number
does not parse, or when the same Id appears twice in one pull with different content.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from connectors.salesforce.streams import Stream

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


@dataclass(frozen=True)
class Rejected:
    """A record kept out of staging, with why."""

    record_id: str | None
    reason: str
    raw: dict


def arrow_schema(stream: Stream, field_types: Mapping[str, str]) -> pa.Schema:
    """The staged schema of a stream, from the org's describe (`field name -> Salesforce type`)."""
    missing = [name for name in stream.columns if name not in field_types]
    if missing:
        raise KeyError(f"{stream.sobject} in this org has no field {missing}: check the org's field-level "
                       f"security for the integration user, or the stream declaration")
    return pa.schema([(name, _ARROW_TYPES.get(field_types[name], pa.string())) for name in stream.columns])


def csv_page_to_text_table(csv_text: str, columns: Sequence[str]) -> pa.Table:
    """A Bulk API 2.0 CSV page as an all-text table (empty cells are null, as Salesforce means them)."""
    if not csv_text.strip():
        return pa.table({name: pa.array([], pa.string()) for name in columns})
    options = pa_csv.ConvertOptions(column_types={name: pa.string() for name in columns},
                                    strings_can_be_null=True, quoted_strings_can_be_null=True,
                                    include_columns=list(columns))
    # Text fields may hold line breaks inside their quotes; Arrow must not split rows there.
    parsing = pa_csv.ParseOptions(newlines_in_values=True)
    return pa_csv.read_csv(io.BytesIO(csv_text.encode("utf-8")), parse_options=parsing, convert_options=options)


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


def screen(table: pa.Table, unparsable: pa.Array, stream: Stream, known_users: set[str] | None,
           text: pa.Table) -> tuple[pa.Table, list[Rejected]]:
    """Splits a typed page into rows to stage and rejected rows (with reasons and raw text values).

    `known_users` None means "do not check" (the User stream itself, or reference data).
    """
    reasons: list[tuple[pa.Array, str]] = [(unparsable, "a date or number does not parse")]
    if stream.user_field is not None:
        user = table.column(stream.user_field)
        reasons.append((pc.is_null(user), f"no {stream.user_field}"))
        if known_users is not None:
            known = pc.is_in(user, value_set=pa.array(sorted(known_users), pa.string()))
            reasons.append((pc.and_(pc.is_valid(user), pc.invert(known)),
                            f"{stream.user_field} is not a known user"))
    rejected_mask = pa.array([False] * table.num_rows, pa.bool_())
    for mask, _ in reasons:
        rejected_mask = pc.or_(rejected_mask, pc.fill_null(mask, False))
    if not pc.any(rejected_mask).as_py():
        return table, []
    raw_rows = text.filter(rejected_mask).to_pylist()
    # Each reason's mask, restricted to the rejected rows: one Arrow filter per reason, not per row.
    flags = [(pc.fill_null(mask, False).filter(rejected_mask).to_pylist(), reason) for mask, reason in reasons]
    rejected = [Rejected(raw.get("Id"), "; ".join(reason for flagged, reason in flags if flagged[position]), raw)
                for position, raw in enumerate(raw_rows)]
    return table.filter(pc.invert(rejected_mask)), rejected


def split_conflicting_duplicates(table: pa.Table, cursor: str) -> tuple[pa.Table, list[Rejected]]:
    """Within one pull, keeps one row per Id; an Id seen twice with different content is rejected.

    Two copies with the same content are one record seen twice (the overlap window does that). Copies
    that differ but carry different cursor values are an update seen mid-pull: the later one is kept.
    Copies that differ with the same cursor value cannot be ordered: both are rejected.
    """
    if table.num_rows == 0 or pc.count_distinct(table.column("Id")).as_py() == table.num_rows:
        return table, []  # the usual case, checked in Arrow without building a DataFrame
    frame = table.to_pandas(types_mapper=pd.ArrowDtype)
    frame["_position"] = range(len(frame))
    distinct = frame.drop_duplicates(subset=[c for c in frame.columns if c != "_position"], keep="last")
    if distinct["Id"].is_unique:
        keep = sorted(distinct["_position"])
        return table.take(pa.array(keep)), []
    ordered = distinct.sort_values([cursor, "_position"], kind="stable")
    last = ordered.groupby("Id", sort=False).tail(1)
    ties = ordered.merge(last[["Id", cursor]], on=["Id", cursor])
    ambiguous_ids = set(ties.loc[ties.duplicated("Id", keep=False), "Id"])
    rejected = [Rejected(row["Id"], "the same Id arrived twice with different content",
                         {key: _plain(value) for key, value in row.items() if key != "_position"})
                for row in distinct[distinct["Id"].isin(ambiguous_ids)].to_dict("records")]
    keep = sorted(last.loc[~last["Id"].isin(ambiguous_ids), "_position"])
    return table.take(pa.array(keep, pa.int64())), rejected


def _plain(value: object) -> object:
    """A JSON-friendly version of a value for the quarantine's raw record."""
    if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
