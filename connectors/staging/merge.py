"""The merge: from the staged files of one object to its current state, vectorised in Arrow.

Rules (the same for every reader, and what compaction writes down):

- Upsert by Id: of all versions of an Id, the one in the file with the highest sequence number wins;
  within one file, the later row wins.
- Tombstones: a tombstone removes an Id's row when the tombstone's file is numbered higher than the
  row's file. This is safe because Salesforce gives an undeleted record a newer SystemModstamp, so it
  comes back in a later part (numbered above the tombstone) and is live again. Writers keep one
  promise: within a pull, the rows go in before the tombstones of the same pull.
- Columns are the union over the files; a column a file lacks reads as null there (schema evolution),
  and types widen where Arrow can (int32 -> int64, string -> large_string).

No Python loop touches rows: versions are stacked with one int64 helper column (file sequence in the
high bits, row number in the low bits), sorted by (Id, that order), and the last row of each Id kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.staging.errors import StagingError

ID = "Id"
HELPER_PREFIX = "__"
_ORDER = "__staging_order"
_SEQ = "__staging_seq"
_ROW_BITS = 32


def current_state(versions: Sequence[tuple[int, pa.Table]], tombstones: Sequence[tuple[int, pa.Table]],
                  *, sobject: str) -> pa.Table:
    """The live rows of `sobject`, one per Id, sorted by Id, without helper columns.

    `versions` and `tombstones` are (sequence number, table) pairs; every table has an `Id` column.
    """
    stacked = _stack_versions(versions, sobject=sobject)
    latest = _latest_per_id(stacked)
    live = _without_tombstoned(latest, tombstones)
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


def _latest_per_id(stacked: pa.Table) -> pa.Table:
    """The last version of each Id: sort by (Id, order) and keep the rows where the next Id differs."""
    if stacked.num_rows == 0:
        return stacked
    order = pc.sort_indices(stacked, sort_keys=[(ID, "ascending"), (_ORDER, "ascending")])
    ids = pc.take(stacked[ID], order).combine_chunks()
    next_differs = pc.not_equal(ids.slice(0, len(ids) - 1), ids.slice(1))
    is_last = pa.concat_arrays([next_differs, pa.array([True])])
    return stacked.take(pc.filter(order, is_last))


def _without_tombstoned(latest: pa.Table, tombstones: Sequence[tuple[int, pa.Table]]) -> pa.Table:
    """`latest` minus the rows a tombstone in a later file removes (order kept)."""
    tagged = [table.select([ID]).append_column(_SEQ, pa.array(np.full(table.num_rows, seq, dtype=np.int64)))
              for seq, table in tombstones if table.num_rows]
    if not tagged or latest.num_rows == 0:
        return latest
    newest = pa.concat_tables(tagged).group_by(ID).aggregate([(_SEQ, "max")])
    position = pc.index_in(latest[ID], value_set=newest[ID])
    tombstone_seq = pc.take(newest[f"{_SEQ}_max"], position)
    row_seq = pc.shift_right(latest[_ORDER], _ROW_BITS)
    removed = pc.fill_null(pc.greater(tombstone_seq, row_seq), False)
    return latest.filter(pc.invert(removed))
