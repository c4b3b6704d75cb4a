"""The merge: from the staged files of one object (or one bucket of it) to its current state, in Arrow.

Rules (the same for every reader, and what compaction writes down):

- Upsert by Id: of all versions of an Id, the one with the latest version value wins (the object's
  cursor, e.g. SystemModstamp: Salesforce moves it on every write, so a later value is a later state
  of the record). Equal or missing version values: the file with the higher sequence number wins, and
  within one file the later row. So the order in which pages arrive never matters: a stale copy of a
  record that turns up late (a second page, a row held back and released) cannot undo a newer one.
- Tombstones: a tombstone removes an Id's row when the row's version is not later than the deletion
  (`deleted_at`). Salesforce gives an undeleted record a newer SystemModstamp, so it comes back.
  Rows without a version value fall back to file order: removed by tombstones in later files.
- Columns are the union over the files; a column a file lacks reads as null there (schema evolution),
  and types widen where Arrow can (int32 -> int64, string -> large_string).

No Python loop touches rows: versions are stacked with one int64 helper column (file sequence in the
high bits, row number in the low bits), sorted by (Id, version, that order), and the last row of each
Id kept. When no Id has two versions (the files of a first pull, one snapshot), the sort is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.staging.errors import StagingError

ID = "Id"
DELETED_AT = "deleted_at"
TIMESTAMP = pa.timestamp("ms", tz="UTC")
HELPER_PREFIX = "__"
_ORDER = "__staging_order"
_SEQ = "__staging_seq"
_ROW_BITS = 32


def current_state(versions: Sequence[tuple[int, pa.Table]], tombstones: Sequence[tuple[int, pa.Table]],
                  *, sobject: str, version: str | None = None) -> pa.Table:
    """The live rows of `sobject`, one per Id, without helper columns, in no particular order.

    `versions` are (sequence number, table) pairs, every table with an `Id` column (and the `version`
    column when one is named); `tombstones` are (sequence number, table of Id and deleted_at) pairs.
    When no Id has two versions (files of a first pull: one snapshot), nothing needs sorting out.
    """
    stacked = _stack_versions(versions, sobject=sobject)
    versioned = version if version is not None and version in stacked.column_names else None
    unique = stacked.num_rows == 0 or pc.count_distinct(stacked[ID]).as_py() == stacked.num_rows
    latest = stacked if unique else _latest_per_id(stacked, versioned)
    live = _without_tombstoned(latest, tombstones, versioned)
    return live.drop_columns([_ORDER])


def empty_state(columns: Sequence[str] | None) -> pa.Table:
    """An object with nothing staged: no rows; the asked columns (Id as string, the rest untyped)."""
    names = list(columns) if columns is not None else [ID]
    return pa.table({name: pa.array([], type=pa.string() if name == ID else pa.null()) for name in names})


def _stack_versions(versions: Sequence[tuple[int, pa.Table]], *, sobject: str) -> pa.Table:
    """All row versions in one table, each tagged with its (file, row) order."""
    tagged = []
    for seq, table in versions:
        order = (np.int64(seq) << _ROW_BITS) + np.arange(table.num_rows, dtype=np.int64)
        tagged.append(table.append_column(_ORDER, pa.array(order)))
    try:
        return pa.concat_tables(tagged, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise StagingError(f"the staged parts of {sobject} disagree on a column's type: {error}. Stage the "
                           "object with explicit column types, or run a full refresh of it") from error


def _latest_per_id(stacked: pa.Table, version: str | None) -> pa.Table:
    """The last version of each Id: sort by (Id, version, order) and keep the rows where the next Id differs."""
    if stacked.num_rows == 0:
        return stacked
    keys = [(ID, "ascending", "at_start"), *([(version, "ascending", "at_start")] if version else []),
            (_ORDER, "ascending", "at_start")]
    order = pc.sort_indices(stacked, sort_keys=keys)
    ids = pc.take(stacked[ID], order).combine_chunks()
    next_differs = pc.not_equal(ids.slice(0, len(ids) - 1), ids.slice(1))
    is_last = pa.concat_arrays([next_differs, pa.array([True])])
    return stacked.take(pc.filter(order, is_last))


def _without_tombstoned(latest: pa.Table, tombstones: Sequence[tuple[int, pa.Table]],
                        version: str | None) -> pa.Table:
    """`latest` minus the rows a tombstone removes (order kept): by time where the row has a version,
    by file order where it has none."""
    tagged = [table.select([ID, DELETED_AT]).append_column(
                  _SEQ, pa.array(np.full(table.num_rows, seq, dtype=np.int64)))
              for seq, table in tombstones if table.num_rows]
    if not tagged or latest.num_rows == 0:
        return latest
    newest = pa.concat_tables(tagged).group_by(ID).aggregate([(_SEQ, "max"), (DELETED_AT, "max")])
    position = pc.index_in(latest[ID], value_set=newest[ID])
    tombstone_seq = pc.take(newest[f"{_SEQ}_max"], position)
    removed = pc.greater(tombstone_seq, pc.shift_right(latest[_ORDER], _ROW_BITS))
    if version is not None:
        deleted_at = pc.take(newest[f"{DELETED_AT}_max"], position)
        row_version = _as_timestamp(latest[version])
        by_time = pc.greater_equal(deleted_at.cast(row_version.type), row_version)
        removed = pc.if_else(pc.is_valid(row_version), by_time, removed)
    return latest.filter(pc.invert(pc.fill_null(removed, False)))


def _as_timestamp(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """A version column comparable with deletion times (a date counts as midnight UTC)."""
    if pa.types.is_timestamp(values.type):
        return values
    if pa.types.is_date(values.type) or pa.types.is_null(values.type):
        return values.cast(TIMESTAMP)
    raise StagingError(f"the version column holds {values.type}; versions are timestamps or dates")
