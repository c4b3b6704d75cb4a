"""Getting generated columns into the org database: ids, stored-form conversion, batched inserts.

Generators build each object as NumPy columns (one array per field). `TableWriter` writes them inside
one transaction per object, converting a slice of rows at a time to the stored form (datetimes become
`YYYY-MM-DDTHH:MM:SS.fffZ` text, booleans 0/1), so the text form of millions of timestamps never sits in
memory at once.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from sandbox.ids import make_ids
from sandbox.store import OrgStore

# A missing time in a datetime or date column (stored as NULL).
NO_TIME = np.iinfo(np.int64).min
_BATCH_ROWS = 50_000


class GenerationError(RuntimeError):
    """The generator produced something the org schema does not accept (a bug in the generator)."""


@dataclass(frozen=True)
class DateTimes:
    """A datetime column given as epoch milliseconds (NO_TIME for NULL)."""

    ms: np.ndarray


@dataclass(frozen=True)
class Dates:
    """A date column given as epoch milliseconds of any instant in the day, UTC (NO_TIME for NULL)."""

    ms: np.ndarray


Column = np.ndarray | DateTimes | Dates | str | int | float | None


def stored_datetimes(ms: np.ndarray) -> list[str | None]:
    """Epoch milliseconds as stored datetime text (`YYYY-MM-DDTHH:MM:SS.fffZ`), vectorised."""
    text = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms")
    stored = np.strings.add(text, "Z").astype(object)
    stored[ms == NO_TIME] = None
    return stored.tolist()


def stored_dates(ms: np.ndarray) -> list[str | None]:
    """Epoch milliseconds as stored date text (`YYYY-MM-DD`, the UTC day), vectorised."""
    text = np.datetime_as_string(ms.astype("datetime64[ms]").astype("datetime64[D]"), unit="D").astype(object)
    text[ms == NO_TIME] = None
    return text.tolist()


def _stored_slice(column: Column, start: int, stop: int):
    if isinstance(column, DateTimes):
        return stored_datetimes(column.ms[start:stop])
    if isinstance(column, Dates):
        return stored_dates(column.ms[start:stop])
    if isinstance(column, np.ndarray):
        part = column[start:stop]
        if part.dtype == bool:
            part = part.astype(np.int8)
        return part.tolist()
    return itertools.repeat(column, stop - start)


class TableWriter:
    """Writes one object's rows inside a single transaction: `with TableWriter(store, "Task") as w: ...`.

    Columns are checked against the object's schema, so a misspelt field fails loudly here rather than
    as a silently empty column later.
    """

    def __init__(self, store: OrgStore, object_name: str) -> None:
        self.store = store
        self.object_name = object_name
        self.sobject = store.schema[object_name]
        self.rows_written = 0
        self._transaction = store.transaction()
        self.db: sqlite3.Connection | None = None

    def __enter__(self) -> "TableWriter":
        self.db = self._transaction.__enter__()
        return self

    def __exit__(self, error_type: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._transaction.__exit__(error_type, error, traceback)
        self.db = None

    def new_ids(self, count: int) -> np.ndarray:
        """`count` fresh ids of this object (inside this writer's transaction)."""
        return issue_ids(self.store, self.sobject.key_prefix, count, self.db)

    def write(self, columns: Mapping[str, Column]) -> int:
        """Inserts the rows given column-wise; arrays must share one length, scalars repeat. Returns rows."""
        if self.db is None:
            raise GenerationError(f"{self.object_name}: write() outside the writer's `with` block")
        unknown = [name for name in columns if self.sobject.field(name) is None]
        if unknown:
            raise GenerationError(f"{self.object_name} has no field(s) {unknown}; fix the generator")
        lengths = {_length(column) for column in columns.values()} - {None}
        if len(lengths) != 1:
            raise GenerationError(f"{self.object_name}: columns have different lengths {sorted(lengths)}")
        count = lengths.pop()
        names = list(columns)
        for start in range(0, count, _BATCH_ROWS):
            stop = min(start + _BATCH_ROWS, count)
            values = [_stored_slice(columns[name], start, stop) for name in names]
            self.store.insert_rows(self.object_name, names, zip(*values), self.db)
        self.rows_written += count
        return count


def _length(column: Column) -> int | None:
    if isinstance(column, (DateTimes, Dates)):
        return len(column.ms)
    if isinstance(column, np.ndarray):
        return len(column)
    return None


def issue_ids(store: OrgStore, key_prefix: str, count: int, db: sqlite3.Connection | None = None) -> np.ndarray:
    """`count` fresh 18-character ids for `key_prefix` (an object array), reserved in the org's counters.

    Uses the caller's transaction `db` when given, else a short transaction of its own.
    """
    if count == 0:
        return np.empty(0, dtype=object)
    if db is not None:
        start = store.allocate_counters(key_prefix, count, db)
    else:
        with store.transaction() as own:
            start = store.allocate_counters(key_prefix, count, own)
    return make_ids(key_prefix, start, count)


def pick(rng: np.random.Generator, choices: tuple | list, count: int,
         weights: tuple | list | np.ndarray | None = None) -> np.ndarray:
    """`count` values drawn from `choices` (with optional weights) as an object array ready to store."""
    table = np.empty(len(choices), dtype=object)
    table[:] = list(choices)
    if weights is None:
        return table[rng.integers(0, len(choices), count)]
    p = np.asarray(weights, dtype=float)
    return table[rng.choice(len(choices), size=count, p=p / p.sum())]


def lookup(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[index] with -1 meaning "none": an object array holding None there."""
    out = np.empty(len(index), dtype=object)
    found = index >= 0
    out[found] = values[index[found]]
    return out


def text_join(*parts: np.ndarray | str) -> np.ndarray:
    """Element-wise string concatenation of object/str arrays and literals, as an object array."""
    result = None
    for part in parts:
        piece = part.astype(str) if isinstance(part, np.ndarray) else np.asarray(part)
        result = piece if result is None else np.strings.add(result, piece)
    return np.asarray(result).astype(object)


def user_chunks(per_user: np.ndarray, rows_per_chunk: int) -> Iterator[tuple[int, int]]:
    """Contiguous user ranges [first, last) holding about `rows_per_chunk` rows each."""
    bounds = np.searchsorted(np.cumsum(per_user), np.arange(rows_per_chunk, per_user.sum(), rows_per_chunk))
    edges = np.unique(np.concatenate(([0], bounds + 1, [len(per_user)])))
    edges = edges[edges <= len(per_user)]
    for first, last in zip(edges[:-1], edges[1:]):
        yield int(first), int(last)
