"""How a staged file lays out its rows: grouped by a hash bucket of the Id, one row group per bucket.

Every version of an Id, in every file of an object, falls in the same bucket. So any whole-object
operation (the merge by Id, compaction, a feature scan, comparing Ids) can run one bucket at a time,
reading row group `k` of each file: memory follows the size of a bucket, not of the object, and the
result is exactly what the whole object would give. That is how staging keeps memory bounded as an
org grows, without a database engine and without giving up Parquet's columnar reads.

A file records in its Parquet key-value metadata how many buckets it holds (`buckets`: row group `k`
holds bucket `k`, possibly empty) and which of its columns orders the versions of an Id (`version`,
for example SystemModstamp; absent when the writer gave none). Small files are written as one bucket:
reading them whole costs less than 32 tiny row groups. A file with another bucket count than the
object's largest (a small file, or one written before this layout) is read whole once and split by
the same hash, so files of every layout can be mixed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from connectors.staging.merge import ID

BUCKETS = 32
# Files with fewer rows than this are written as a single bucket.
SMALL_FILE_ROWS = 20_000
_METADATA_KEY = b"persona_sync.staging"
_COMPRESSION = "zstd"
# FNV-1a over the last characters of the 15-character id: where sequential Salesforce ids differ.
_FNV_OFFSET, _FNV_PRIME = np.uint32(2166136261), np.uint32(16777619)
_HASHED_CHARACTERS = 4
_CASE_SENSITIVE_LENGTH = 15


def buckets_for(rows: int) -> int:
    """How many buckets a file of `rows` rows is written with."""
    return 1 if rows < SMALL_FILE_ROWS else BUCKETS


def bucket_of(ids: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """The bucket (0..buckets-1) of each Id: a hash of the last characters of its 15-character form.

    The 15- and 18-character forms of an id hash alike (the last three characters of the 18-character
    form only encode the case of the first fifteen). Vectorised over Arrow's buffers: no Python per row.
    """
    if buckets == 1:
        return np.zeros(len(ids), dtype=np.int64)
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    ids = ids.cast(pa.string())
    count = len(ids)
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset:ids.offset + count + 1]
    data_buffer = ids.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(1, np.uint8)
    starts = offsets[:-1].astype(np.int64)
    ends = np.minimum(offsets[1:].astype(np.int64), starts + _CASE_SENSITIVE_LENGTH)
    hashed = np.full(count, _FNV_OFFSET, dtype=np.uint32)
    for back in range(1, _HASHED_CHARACTERS + 1):
        position = ends - back
        character = np.where(position >= starts, data[np.clip(position, 0, len(data) - 1)], 0).astype(np.uint32)
        hashed = (hashed ^ character) * _FNV_PRIME
    return (hashed % np.uint32(buckets)).astype(np.int64)


def write_bucketed(table: pa.Table, path: Path, *, version: str | None, buckets: int | None = None) -> None:
    """Writes `table` to `path` with one row group per bucket of its Ids (see the module docstring)."""
    count = buckets or buckets_for(table.num_rows)
    writer = BucketWriter(path, table.schema, buckets=count, version=version)
    try:
        if count == 1:
            writer.write_bucket(table)
        else:
            assignment = bucket_of(table.column(ID), count)
            order = np.argsort(assignment, kind="stable")
            ordered = table.take(pa.array(order))  # one copy, sorted by bucket: five times cheaper than a take per bucket
            bounds = np.searchsorted(assignment[order], np.arange(count + 1))
            for bucket in range(count):
                writer.write_bucket(ordered.slice(bounds[bucket], bounds[bucket + 1] - bounds[bucket]))
    finally:
        writer.close()


class BucketWriter:
    """Writes a file bucket by bucket: call `write_bucket` once per bucket, in order, then `close`."""

    def __init__(self, path: Path, schema: pa.Schema, *, buckets: int, version: str | None) -> None:
        layout = {"buckets": buckets, "version": version}
        self.schema = schema.with_metadata({**(schema.metadata or {}), _METADATA_KEY: json.dumps(layout).encode()})
        self.buckets = buckets
        # No dictionary encoding: most staged columns are Ids, unique per row, where building a dictionary
        # is wasted work (writes take a third less time, and files come out smaller). No column statistics:
        # nothing reads them (a bucket is found by its row group, not by value ranges), and they cost
        # another quarter of the writing time.
        self._writer = pq.ParquetWriter(path, self.schema, compression=_COMPRESSION, use_dictionary=False,
                                        write_statistics=False)
        self._written = 0

    def write_bucket(self, table: pa.Table) -> None:
        if self._written >= self.buckets:
            raise ValueError(f"all {self.buckets} buckets are already written")
        table = table.select(self.schema.names).cast(self.schema)
        # One row group per bucket, however large (an empty bucket is an empty row group).
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._written += 1

    def close(self) -> None:
        while self._written < self.buckets:  # buckets never written are empty
            self.write_bucket(self.schema.empty_table())
        self._writer.close()


class StagedReader:
    """One open staged file, read bucket by bucket (on the calling thread: a bucket is small, and the pull
    reads several objects at once already; Arrow's own threads would only add contention and memory).

    Opening keeps the file readable even if a compaction removes it meanwhile (an open file outlives
    its directory entry), so an iteration over an object sees one consistent set of files.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = pq.ParquetFile(path)
        self.schema = self._file.schema_arrow
        raw = (self.schema.metadata or {}).get(_METADATA_KEY)
        layout = json.loads(raw) if raw else {}
        self.buckets: int = int(layout.get("buckets", 1))
        self.version: str | None = layout.get("version")
        if self.buckets > 1 and self._file.metadata.num_row_groups != self.buckets:
            self.buckets = 1  # not written by BucketWriter after all: read it whole
        self._whole: pa.Table | None = None
        self._whole_buckets: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return self._file.metadata.num_rows

    def present(self, columns: Sequence[str] | None) -> list[str] | None:
        """The asked columns this file has (None: all of them)."""
        if columns is None:
            return None
        names = set(self.schema.names)
        return [name for name in columns if name in names]

    def read_bucket(self, bucket: int, buckets: int, columns: Sequence[str] | None) -> pa.Table:
        """The rows of this file in `bucket` of `buckets`, with the asked columns it has."""
        wanted = self.present(columns)
        if buckets == self.buckets:
            return self._file.read_row_group(bucket, columns=wanted, use_threads=False)
        if self._whole is None:  # another layout: read it whole once, split it by the same hash
            self._whole = self._file.read(use_threads=False)
            self._whole_buckets = bucket_of(self._whole.column(ID), buckets)
        assert self._whole_buckets is not None
        rows = self._whole.filter(pa.array(self._whole_buckets == bucket))
        return rows if wanted is None else rows.select(wanted)

    def close(self) -> None:
        self._file.close()
        self._whole = None

