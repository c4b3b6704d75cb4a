"""`Staging`: the typed, columnar, durable staging area, one directory of Parquet files per object.

See the package docstring for why Parquet, `files.py` for the file layout and its crash-safety,
`layout.py` for how rows are grouped in a file (by a hash bucket of the Id), and `merge.py` for how the
files combine into an object's current state.

Memory: every whole-object operation (reading, compaction, a full refresh's commit, looking up Ids)
runs one bucket at a time, so it holds about 1/32 of an object at once, never all of it.

Concurrency: one writer per object at a time (the pull holds a lock for that); any number of
readers, at any time, including during a compaction or a refresh commit.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connectors.staging.errors import StagingError
from connectors.staging.files import (FileKind, Snapshot, StagedFile, file_name, make_directory, snapshot, sweep,
                                      write_durably)
from connectors.staging.layout import SMALL_FILE_ROWS, BucketWriter, StagedReader, buckets_for, write_bucketed
from connectors.staging.merge import DELETED_AT, HELPER_PREFIX, ID, TIMESTAMP, current_state, empty_state
from connectors.staging.refresh import RefreshHandle
from core.configs import DEFAULT_COMPACT_AFTER, StagingConfig

REFRESH_DIR = ".refresh"
# Compaction is due once an object has this many times `compact_after` files, however large they are.
LARGE_PARTS_FACTOR = 4
OWNER_FILE = ".owner"

_SOBJECT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# A reader that lists the files just before a compaction removes them retries with a fresh listing.
_READ_ATTEMPTS = 5

# A filter applied to each bucket's merged rows (e.g. only rows inside a time window).
RowFilter = Callable[[pa.Table], pa.Array | pa.ChunkedArray]


@dataclass(frozen=True)
class Prune:
    """Rows a compaction drops: those whose `column` is before `before` (rows where it is null stay)."""

    column: str
    before: datetime


class Staging:
    """Pulled records per Salesforce object, upserted by Id, readable as Arrow or pandas."""

    def __init__(self, root: Path, *, compact_after: int = DEFAULT_COMPACT_AFTER) -> None:
        self.root = Path(root)
        self.compact_after = compact_after

    @classmethod
    def from_config(cls, config: StagingConfig) -> Staging:
        """The staging a `StagingConfig` names."""
        return cls(config.root, compact_after=config.compact_after)

    def claim(self, owner: str) -> None:
        """Records whose records this staging holds (an org id), or refuses (StagingError) when it holds
        another's: rows of two orgs must never mix. The first claim writes `<root>/.owner`."""
        marker = self.root / OWNER_FILE
        if marker.exists():
            holder = marker.read_text(encoding="utf-8").strip()
            if holder != owner:
                raise StagingError(f"the staging under {self.root} holds the records of {holder}, not of {owner}: "
                                   "give each org its own staging (PERSONA_SYNC_HOME or PERSONA_SYNC_STAGING_DIR)")
            return
        make_directory(self.root)
        write_durably(marker, lambda temporary: temporary.write_text(owner + "\n", encoding="utf-8"))

    # --- writing --------------------------------------------------------------------------------------

    def write_part(self, sobject: str, table: pa.Table, *, version: str | None = None) -> Path | None:
        """Stages rows as pulled; durable when this returns. Returns the new file, or None for an empty
        table (nothing is written: an empty part would change nothing but the file count).

        The table needs a non-empty string `Id` on every row; timestamps must be timezone-aware and are
        stored as timestamp[ms, UTC]; dictionary columns are stored decoded. `version` names the column
        that orders the versions of an Id (the object's cursor, e.g. SystemModstamp): the latest value
        wins whatever the order parts were written in. Without it, or where it is equal, a later part
        wins over earlier ones, and within a part the later row.
        """
        if table.num_rows == 0:
            return None
        prepared = _prepared_part(table, sobject)
        if version is not None and version not in prepared.column_names:
            raise StagingError(f"a part of {sobject} has no version column {version!r}")
        return self._append(sobject, "part", prepared, version)

    def write_tombstones(self, sobject: str, ids: Sequence[str], deleted_at: Sequence[datetime]) -> Path | None:
        """Stages deletions: each Id's row stops being read, if its version is not later than the
        deletion (a row without a version: if it was staged before this call). Returns the new file, or
        None when `ids` is empty."""
        if len(ids) != len(deleted_at):
            raise StagingError(f"tombstones of {sobject}: {len(ids)} ids but {len(deleted_at)} deleted_at values")
        if not ids:
            return None
        when = [_aware_utc(value, f"deleted_at of {sobject} {record_id}") for record_id, value in zip(ids, deleted_at)]
        table = pa.table({ID: pa.array(ids, type=pa.string()), DELETED_AT: pa.array(when, type=TIMESTAMP)})
        _check_ids(table[ID], sobject)
        return self._append(sobject, "deleted", table, None)

    def compact(self, sobject: str, *, prune: Prune | None = None) -> Path | None:
        """Rewrites the object's files as one base file holding its current state (less the rows `prune`
        drops); returns it, or None when there was nothing to do. Reads give the same result before,
        during and after, and a crash at any step leaves a correct staging (the base is durable before
        any old file goes). Runs bucket by bucket: memory follows a bucket, not the object."""
        directory = self._directory(sobject)
        found = snapshot(directory)
        if not found.parts and not found.tombstones:
            if directory.is_dir():
                sweep(directory)
            return None
        return self._install(directory, found.next_seq, _BucketSource(self, sobject, prune))

    def needs_compaction(self, sobject: str) -> bool:
        """Whether reads of the object now merge more than `compact_after` small files (parts too small to
        have buckets, and tombstones), or more than `LARGE_PARTS_FACTOR` times as many files in all.

        Small files are what compaction is for: each costs a read of its own for every bucket. A large part
        (a page of a first pull, say) is already bucketed and cheap to read; rewriting the whole object right
        after writing it would gain nothing, so large parts wait for the next compaction the small ones
        call for."""
        found = snapshot(self._directory(sobject))
        if len(found.parts) + len(found.tombstones) > LARGE_PARTS_FACTOR * self.compact_after:
            return True
        small = sum(1 for staged in found.parts if pq.read_metadata(staged.path).num_rows < SMALL_FILE_ROWS)
        return small + len(found.tombstones) > self.compact_after

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

    def _commit_refresh(self, sobject: str, scratch: Staging) -> Path:
        """Makes the state staged in `scratch` the object's whole state, atomically (`RefreshHandle.commit`)."""
        directory = self._directory(sobject)
        make_directory(directory)
        return self._install(directory, snapshot(directory).next_seq, _BucketSource(scratch, sobject, None))

    # --- reading --------------------------------------------------------------------------------------

    def buckets(self, sobject: str, columns: list[str] | None = None, *, where: RowFilter | None = None,
                bucket_count: int | None = None) -> Iterator[pa.Table]:
        """The object's current state, one hash bucket of Ids at a time (rows in no particular order).

        Every Id is in exactly one bucket, so a caller that aggregates bucket by bucket gets what the whole
        object would give, holding one bucket at a time. `columns` as for `read_arrow`; `where` keeps the
        rows of each bucket it marks true (applied after the merge, so it sees each Id's current row, with
        the asked columns). With `bucket_count`, exactly that many buckets come, even for an object never
        staged (empty ones): two objects read with the same count have each Id in the same bucket.
        """
        found = self._open_snapshot(sobject)
        if found is None:
            for _ in range(bucket_count or 0):
                yield empty_state(columns)
            return
        with found:
            merging = None if columns is None else list(dict.fromkeys([ID, *columns]))
            for state in found.merged(merging, bucket_count=bucket_count):
                state = _shaped(state, columns)
                yield state if where is None else state.filter(where(state))

    def read_arrow(self, sobject: str, columns: list[str] | None = None) -> pa.Table:
        """The object's current state: one row per live Id, sorted by Id.

        `columns` picks columns in that order (only those are read from disk); a column no file has reads
        as nulls. An object never staged reads as an empty table with `columns` (Id alone when None).
        Holds the whole object: for large objects prefer `buckets`.
        """
        with_ids = columns if columns is None or ID in columns else [ID, *columns]
        parts = list(self.buckets(sobject, with_ids))
        if not parts:
            return empty_state(columns)
        state = pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]
        state = state.take(pc.sort_indices(state[ID]))
        return state if with_ids is columns else state.select(columns)

    def read(self, sobject: str, columns: list[str] | None = None) -> pd.DataFrame:
        """`read_arrow` as a pandas DataFrame, by pyarrow's default conversion: timestamps as
        datetime64[ms, UTC], integer columns with nulls as floats."""
        return self.read_arrow(sobject, columns).to_pandas()

    def row_count(self, sobject: str) -> int:
        """How many live rows the object has (from the file footer alone when it is compacted)."""
        found = self._open_snapshot(sobject)
        if found is None:
            return 0
        with found:
            if found.base_alone is not None:
                return found.base_alone.num_rows
            return sum(state.num_rows for state in found.merged([ID]))

    def live_ids(self, sobject: str, ids: pa.Array) -> pa.Array:
        """Those of `ids` that are live in staging (in no particular order)."""
        if len(ids) == 0:
            return pa.array([], pa.string())
        wanted = pc.unique(ids.cast(pa.string()))
        found = [state[ID].filter(pc.is_in(state[ID], value_set=wanted)) for state in self.buckets(sobject, [ID])]
        return pa.chunked_array(found, pa.string()).combine_chunks() if found else pa.array([], pa.string())

    def columns_in_every_file(self, sobject: str) -> set[str] | None:
        """The columns every staged file with rows has (None when no rows are staged): a column added to
        a stream later is missing from the files pulled before it. Ask before staging more: a compaction
        merges the files into one that has every column (nulls where rows lacked it)."""
        found = self._open_snapshot(sobject)
        if found is None:
            return None
        with found:
            schemas = [reader.schema for _, reader in found.rows if reader.num_rows]
        if not schemas:
            return None
        return set.intersection(*(set(schema.names) for schema in schemas))

    def version(self, sobject: str) -> int:
        """A number that changes whenever the object's staged rows may have: the sequence number of its newest
        file that counts (0: nothing staged). Files are immutable and numbered upwards, so a pull that
        staged nothing leaves it as it was; a compaction moves it although the rows stay the same."""
        files = snapshot(self._directory(sobject))
        counting = [*files.row_files, *files.tombstones]
        return max((staged.seq for staged in counting), default=0)

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

    def _append(self, sobject: str, kind: FileKind, table: pa.Table, version: str | None) -> Path:
        directory = self._directory(sobject)
        make_directory(directory)
        sweep(directory)
        path = directory / file_name(kind, snapshot(directory).next_seq)
        write_durably(path, lambda temporary: write_bucketed(table, temporary, version=version))
        return path

    def _open_snapshot(self, sobject: str) -> _OpenSnapshot | None:
        """The object's files that count now, opened (None when nothing is staged)."""
        directory = self._directory(sobject)
        for attempt in range(_READ_ATTEMPTS):
            found = snapshot(directory)
            if not found.row_files:
                return None
            try:
                return _OpenSnapshot(found, sobject)
            except FileNotFoundError as error:  # a compaction replaced the files just now: list them again
                if attempt == _READ_ATTEMPTS - 1:
                    raise StagingError(f"the files of {sobject} kept changing while being opened ({error}); "
                                       "is more than one process compacting it?") from error
        raise AssertionError("unreachable")

    def _install(self, directory: Path, seq: int, source: _BucketSource) -> Path:
        """Writes a base from `source` durably, then removes the files it supersedes (never the other way
        round). An object whose state is empty still gets a base: it supersedes what was there."""
        path = directory / file_name("base", seq)
        write_durably(path, source.write_to)
        sweep(directory)
        return path


class _OpenSnapshot:
    """An object's counting files, open for reading bucket by bucket; close it (a context manager)."""

    def __init__(self, found: Snapshot, sobject: str) -> None:
        self.sobject = sobject
        self._stack = ExitStack()
        try:
            self.rows = [(staged.seq, self._open(staged)) for staged in found.row_files]
            self.tombstones = [(staged.seq, self._open(staged)) for staged in found.tombstones]
        except BaseException:
            self._stack.close()
            raise
        self.base_alone = self.rows[0][1] if found.base is not None and len(self.rows) == 1 and not self.tombstones \
            else None
        versions = {reader.version for _, reader in self.rows if reader.version is not None}
        if len(versions) > 1:
            self._stack.close()
            raise StagingError(f"the staged files of {sobject} disagree on which column orders versions "
                               f"({sorted(versions)}); run a full refresh of it")
        self.version = versions.pop() if versions else None
        self.bucket_count = max(reader.buckets for _, reader in self.rows + self.tombstones)
        try:
            self.schema = pa.unify_schemas([reader.schema.remove_metadata() for _, reader in self.rows],
                                           promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            self._stack.close()
            raise StagingError(f"the staged files of {sobject} disagree on a column's type: {error}. Stage the "
                               "object with explicit column types, or run a full refresh of it") from error

    def _open(self, staged: StagedFile) -> StagedReader:
        reader = StagedReader(staged.path)
        self._stack.callback(reader.close)
        return reader

    def merged(self, columns: list[str] | None, *, bucket_count: int | None = None) -> Iterator[pa.Table]:
        """Each bucket's current state: one row per live Id (all columns when None), in the files' own
        bucketing unless `bucket_count` asks for another."""
        count = bucket_count or self.bucket_count
        wanted = columns
        if wanted is not None and self.version is not None and self.version not in wanted:
            wanted = [*wanted, self.version]  # the merge needs it; dropped again below
        for bucket in range(count):
            versions = [(seq, reader.read_bucket(bucket, count, wanted)) for seq, reader in self.rows]
            if self.base_alone is not None:
                state = versions[0][1]  # a base alone is already one row per Id
            else:
                tombstones = [(seq, reader.read_bucket(bucket, count, [ID, DELETED_AT]))
                              for seq, reader in self.tombstones]
                state = current_state(versions, tombstones, sobject=self.sobject, version=self.version)
            if columns is not None and wanted is not columns:
                state = state.select([name for name in state.column_names if name in columns])
            yield state

    def __enter__(self) -> _OpenSnapshot:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stack.close()


class _BucketSource:
    """The merged buckets of one object, written out as a new base file (compaction, refresh commit)."""

    def __init__(self, staging: Staging, sobject: str, prune: Prune | None) -> None:
        self._staging = staging
        self._sobject = sobject
        self._prune = prune

    def write_to(self, path: Path) -> None:
        found = self._staging._open_snapshot(self._sobject)
        if found is None:  # nothing staged: an empty base (an object that is now empty)
            write_bucketed(pa.table({ID: pa.array([], pa.string())}), path, version=None)
            return
        with found:
            # A base as large as this gets its buckets even if the files it merges had none (small nightly
            # parts of an object that grew): memory stays a bucket's from then on.
            buckets = buckets_for(sum(reader.num_rows for _, reader in found.rows))
            writer = BucketWriter(path, found.schema, buckets=buckets, version=found.version)
            try:
                pending: list[pa.Table] = []
                for state in found.merged(None, bucket_count=buckets if buckets > 1 else None):
                    if self._prune is not None and self._prune.column in state.column_names:
                        state = state.filter(pc.invert(pc.fill_null(
                            pc.less(state[self._prune.column], pa.scalar(self._prune.before, TIMESTAMP)), False)))
                    if buckets == 1:
                        pending.append(state)
                    else:
                        writer.write_bucket(state)
                if buckets == 1:
                    writer.write_bucket(pa.concat_tables(pending, promote_options="permissive")
                                        if pending else found.schema.empty_table())
            finally:
                writer.close()


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
