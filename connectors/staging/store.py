"""`Staging`: the typed, columnar, durable staging area, one directory of Parquet files per object.

See the package docstring for why Parquet, `files.py` for the file layout and its crash-safety, and
`merge.py` for how the files combine into an object's current state.

Concurrency: one writer per object at a time (the flows guarantee it); any number of readers, at any
time, including during a compaction or a refresh commit.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connectors.staging.errors import StagingError
from connectors.staging.files import (FileKind, Snapshot, file_name, make_directory, snapshot, sweep,
                                      write_durably)
from connectors.staging.merge import HELPER_PREFIX, ID, current_state, empty_state
from connectors.staging.refresh import RefreshHandle

TIMESTAMP = pa.timestamp("ms", tz="UTC")
DELETED_AT = "deleted_at"
DEFAULT_COMPACT_AFTER = 32
REFRESH_DIR = ".refresh"

_SOBJECT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# A reader that lists the files just before a compaction removes them retries with a fresh listing.
_READ_ATTEMPTS = 5


class Staging:
    """Pulled records per Salesforce object, upserted by Id, readable as Arrow or pandas."""

    def __init__(self, root: Path, *, compact_after: int = DEFAULT_COMPACT_AFTER) -> None:
        self.root = Path(root)
        self.compact_after = compact_after

    # --- writing --------------------------------------------------------------------------------------

    def write_part(self, sobject: str, table: pa.Table) -> Path | None:
        """Stages rows as pulled; durable when this returns. Returns the new file, or None for an empty
        table (nothing is written: an empty part would change nothing but the file count).

        The table needs a non-empty string `Id` on every row; timestamps must be timezone-aware and are
        stored as timestamp[ms, UTC]; dictionary columns are stored decoded. Rows of a later part win over
        earlier ones for the same Id, and within a part the later row wins.
        """
        if table.num_rows == 0:
            return None
        prepared = _prepared_part(table, sobject)
        return self._append(sobject, "part", prepared)

    def write_tombstones(self, sobject: str, ids: Sequence[str], deleted_at: Sequence[datetime]) -> Path | None:
        """Stages deletions: each Id's row staged before this call stops being read. Returns the new file,
        or None when `ids` is empty. Write a pull's rows before its tombstones (see merge.py)."""
        if len(ids) != len(deleted_at):
            raise StagingError(f"tombstones of {sobject}: {len(ids)} ids but {len(deleted_at)} deleted_at values")
        if not ids:
            return None
        when = [_aware_utc(value, f"deleted_at of {sobject} {record_id}") for record_id, value in zip(ids, deleted_at)]
        table = pa.table({ID: pa.array(ids, type=pa.string()), DELETED_AT: pa.array(when, type=TIMESTAMP)})
        _check_ids(table[ID], sobject)
        return self._append(sobject, "deleted", table)

    def compact(self, sobject: str) -> Path | None:
        """Rewrites the object's files as one base file holding its current state; returns it, or None
        when there was nothing to merge. Reads give the same result before, during and after, and a
        crash at any step leaves a correct staging (the base is durable before any old file goes)."""
        directory = self._directory(sobject)
        found = snapshot(directory)
        if not found.parts and not found.tombstones:
            if directory.is_dir():
                sweep(directory)
            return None
        merged = self._read_snapshot(found, sobject, None)
        return self._install(directory, merged, found.next_seq)

    def needs_compaction(self, sobject: str) -> bool:
        """Whether reads of the object now merge more than `compact_after` part and tombstone files."""
        found = snapshot(self._directory(sobject))
        return len(found.parts) + len(found.tombstones) > self.compact_after

    def begin_refresh(self, sobject: str) -> RefreshHandle:
        """Starts a full refresh: stage the new pull through the handle, then `commit()` to swap it in
        atomically (or `abort()`). The current staging stays readable and unchanged until the commit.

        A scratch directory left by an earlier refresh of this object that never finished is removed. No
        incremental pull of the object may run meanwhile: the commit supersedes whatever was staged before.
        """
        self._directory(sobject)  # refuses a name that is not an object's
        refreshes = self.root / REFRESH_DIR
        if refreshes.is_dir():
            for stale in refreshes.glob(f"{sobject}-*"):
                shutil.rmtree(stale)
        scratch = Staging(refreshes / f"{sobject}-{uuid4().hex}", compact_after=self.compact_after)
        return RefreshHandle(self, sobject, scratch)

    def _commit_refresh(self, sobject: str, table: pa.Table) -> Path:
        """Makes `table` (one row per Id) the object's whole state, atomically (`RefreshHandle.commit`)."""
        directory = self._directory(sobject)
        make_directory(directory)
        return self._install(directory, table, snapshot(directory).next_seq)

    # --- reading --------------------------------------------------------------------------------------

    def read_arrow(self, sobject: str, columns: list[str] | None = None) -> pa.Table:
        """The object's current state: one row per live Id, sorted by Id.

        `columns` picks columns in that order (only those are read from disk); a column no file has reads
        as nulls. An object never staged reads as an empty table with `columns` (Id alone when None).
        """
        directory = self._directory(sobject)
        attempts_left = _READ_ATTEMPTS
        while True:
            try:
                return self._read_snapshot(snapshot(directory), sobject, columns)
            except FileNotFoundError as error:
                attempts_left -= 1
                if not attempts_left:
                    raise StagingError(f"the files of {sobject} kept changing while being read ({error}); "
                                       "is more than one process compacting it?") from error

    def read(self, sobject: str, columns: list[str] | None = None) -> pd.DataFrame:
        """`read_arrow` as a pandas DataFrame, by pyarrow's default conversion: timestamps as
        datetime64[ms, UTC], integer columns with nulls as floats."""
        return self.read_arrow(sobject, columns).to_pandas()

    def row_count(self, sobject: str) -> int:
        """How many live rows the object has (from the file footer alone when it is compacted)."""
        found = snapshot(self._directory(sobject))
        if found.parts or found.tombstones:
            return self.read_arrow(sobject, [ID]).num_rows
        if found.base is None:
            return 0
        try:
            with pq.ParquetFile(found.base.path) as parquet:
                return parquet.metadata.num_rows
        except FileNotFoundError:  # a refresh or compaction replaced the base just now
            return self.read_arrow(sobject, [ID]).num_rows

    def columns_in_every_file(self, sobject: str) -> set[str] | None:
        """The columns every staged file with rows has (None when no rows are staged): a column added to
        a stream later is missing from the files pulled before it. Ask before staging more: a compaction
        merges the files into one that has every column (nulls where rows lacked it)."""
        attempts_left = _READ_ATTEMPTS
        while True:
            files = snapshot(self._directory(sobject)).row_files
            try:
                footers = [pq.read_metadata(staged.path) for staged in files]
                schemas = [footer.schema.to_arrow_schema() for footer in footers if footer.num_rows]
            except FileNotFoundError:  # a compaction or refresh replaced the files just now
                attempts_left -= 1
                if attempts_left:
                    continue
                raise
            if not schemas:
                return None
            return set.intersection(*(set(schema.names) for schema in schemas))

    def objects(self) -> list[str]:
        """The objects with something staged, by name."""
        if not self.root.is_dir():
            return []
        return sorted(entry.name for entry in self.root.iterdir()
                      if entry.is_dir() and _SOBJECT_NAME.match(entry.name) and not snapshot(entry).is_empty)

    # --- plumbing -------------------------------------------------------------------------------------

    def _directory(self, sobject: str) -> Path:
        if not _SOBJECT_NAME.match(sobject):
            raise StagingError(f"{sobject!r} is not a Salesforce object API name (letters, digits, underscores)")
        return self.root / sobject

    def _append(self, sobject: str, kind: FileKind, table: pa.Table) -> Path:
        directory = self._directory(sobject)
        make_directory(directory)
        sweep(directory)
        path = directory / file_name(kind, snapshot(directory).next_seq)
        write_durably(table, path)
        return path

    def _install(self, directory: Path, table: pa.Table, seq: int) -> Path:
        """Writes the base durably, then removes the files it supersedes (never the other way round)."""
        path = directory / file_name("base", seq)
        write_durably(table, path)
        sweep(directory)
        return path

    def _read_snapshot(self, found: Snapshot, sobject: str, columns: list[str] | None) -> pa.Table:
        if not found.row_files:
            return empty_state(columns)
        wanted = None if columns is None else list(dict.fromkeys([ID, *columns]))
        versions = [(staged.seq, _read_columns(staged.path, wanted)) for staged in found.row_files]
        if found.base is not None and len(versions) == 1 and not found.tombstones:
            state = versions[0][1]  # a base alone is already one row per Id, sorted by Id
        else:
            tombstones = [(staged.seq, _read_columns(staged.path, [ID])) for staged in found.tombstones]
            state = current_state(versions, tombstones, sobject=sobject)
        return _shaped(state, columns)


def _read_columns(path: Path, wanted: list[str] | None) -> pa.Table:
    """The `wanted` columns this file has (all when None): a part from before a new field lacks it."""
    with pq.ParquetFile(path) as parquet:
        present = parquet.schema_arrow.names
        return parquet.read(columns=None if wanted is None else [name for name in wanted if name in present])


def _shaped(state: pa.Table, columns: list[str] | None) -> pa.Table:
    """The asked columns in the asked order (null where no file had one); all columns, Id first, when None."""
    if columns is None:
        return state.select([ID, *(name for name in state.column_names if name != ID)])
    present = set(state.column_names)
    return pa.table({name: state[name] if name in present else pa.nulls(state.num_rows) for name in columns})


def _prepared_part(table: pa.Table, sobject: str) -> pa.Table:
    """`table` as staging stores it, or a StagingError that names the column to fix."""
    names = table.column_names
    if ID not in names:
        raise StagingError(f"a part of {sobject} has no Id column (columns: {', '.join(names) or 'none'})")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise StagingError(f"a part of {sobject} repeats columns {duplicated}")
    reserved = [name for name in names if name.startswith(HELPER_PREFIX)]
    if reserved:
        raise StagingError(f"a part of {sobject} has columns {reserved}: names starting with "
                           f"{HELPER_PREFIX!r} are staging's own (from pandas, pass preserve_index=False)")
    columns = [_stored_column(name, table[name], sobject) for name in names]
    prepared = pa.table(columns, names=names)
    _check_ids(prepared[ID], sobject)
    return prepared


def _stored_column(name: str, column: pa.ChunkedArray, sobject: str) -> pa.ChunkedArray:
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if name == ID:
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise StagingError(f"the Id column of {sobject} is {kind}, not a string")
        return column.cast(pa.string())
    if pa.types.is_timestamp(kind):
        if kind.tz is None:
            raise StagingError(f"column {name} of {sobject} holds timestamps without a time zone; Salesforce "
                               "sends UTC: parse them as UTC (e.g. timestamp('ms', tz='UTC'))")
        return column.cast(TIMESTAMP, safe=False)  # Salesforce keeps milliseconds; finer digits are noise
    return column


def _check_ids(ids: pa.ChunkedArray, sobject: str) -> None:
    missing = ids.null_count + (pc.sum(pc.equal(ids, "")).as_py() or 0)
    if missing:
        raise StagingError(f"{missing} rows of {sobject} have no Id; quarantine them before staging")


def _aware_utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise StagingError(f"{what} is a naive datetime ({value.isoformat()}); pass it timezone-aware (UTC)")
    return value.astimezone(UTC)
