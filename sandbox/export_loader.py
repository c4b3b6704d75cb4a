"""Seeds a sandbox org from a Data Loader style export, so a team can replay its real org locally.

The export is a directory with one CSV per object, named after the object's API name (`User.csv`,
`Task.csv`...), whose header holds API field names: any subset of the object's fields, Id required.
`load_export` builds the org in a temporary file beside the target and renames it into place only when
every file loaded; any problem raises `ExportError` pointing at the file, line and column to fix, and
leaves no org file behind.

How a file is read: the stdlib `csv` module (RFC 4180: quoted values may hold commas, quotes and line
breaks; strict, so a stray quote is an error) over the file decoded as UTF-8, in batches of records
(`_record_batches`). A batch is converted a column at a time by `sandbox.values.texts_to_stored` (what
`text_to_stored`, the code that reads Bulk API CSV, gives each value) and inserted with one
`executemany`, through `OrgStore.insert_rows` as the generator writes; each file is one transaction.

That fast path only notices problems; naming them is left to the exact path, which reads one record
and one value at a time (`_records`, `_RowChecker`): when a batch holds a problem (a ragged row, a
value its field refuses) or reading stops (broken quoting, bytes that are not UTF-8), the records from
there are checked again in file order and the first problem is raised with its physical line and
column. pyarrow.csv splits faster, but it silently accepts an unclosed quote at the end of a file, text
after a closing quote and bare CR line breaks, and cannot say which line a record started on.

Reading and converting is Python work bound to one CPU, writing is mostly SQLite's: for a large export,
and when there is a second CPU, a helper process reads and converts (`_converted_in_helper`) while this
one writes (a fifth faster on an idle two-CPU machine). It runs the same code and reports the same errors.

Columns the sandbox does not model are kept: a first pass over the file infers their type (see
`_ColumnEvidence`) and they join the org's schema through `OrgStore.add_fields`, so describe and SOQL
see them.
"""

from __future__ import annotations

import codecs
import csv
import gc
import marshal
import math
import os
import pickle
import re
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO, NoReturn

from sandbox.ids import highest_counters_by_prefix, id_problem, to_18, well_formed_ids
from sandbox.schema import FieldSchema, SObjectSchema, standard_objects
from sandbox.store import OrgStore, quote
from sandbox.values import (ValueProblem, format_datetime, parse_date_text, parse_datetime_text, text_to_stored,
                            texts_to_stored)

# Records converted and inserted at a time: small enough that a batch's values stay in the CPU cache
# while each column is checked.
_BATCH_ROWS = 1000
# Below this many bytes of CSV, starting a helper process costs more than it saves.
_HELPER_MIN_BYTES = 16 * 2**20
# An integer column holds 64-bit values; a longer run of digits in an unknown column (an external
# key, an account number) is kept as text.
_INT64_MAX = 2**63 - 1
# A leading + or 0 marks a phone number or a code (postal code, employee number), not a quantity.
_INTEGER_TEXT = re.compile(r"^-?(?:0|[1-9]\d*)$")
_NUMBER_TEXT = re.compile(r"^-?(?:(?:0|[1-9]\d*)(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_STRING_LENGTH = 255
_TEXTAREA_LENGTH = 32768
_AUDIT_DATES = ("CreatedDate", "LastModifiedDate", "SystemModstamp")
_AUDIT_USERS = ("CreatedById", "LastModifiedById")
_NAMED_PEOPLE = ("User", "Contact", "Lead")
_EXPECTED_FORMAT = {
    "boolean": "a boolean (true or false)",
    "int": "a whole number (e.g. 42)",
    "double": "a number (e.g. 1234.5)",
    "currency": "a number (e.g. 1234.5)",
    "percent": "a number (e.g. 12.5)",
    "date": "a date (YYYY-MM-DD)",
    "datetime": "a datetime (ISO 8601, e.g. 2024-01-15T10:23:45.000Z)",
}
_UTF8_HINT = "save the file as UTF-8 (in Excel: Save As > 'CSV UTF-8')"


class ExportError(Exception):
    """An export that cannot be loaded, with where the problem is and what to fix.

    `file` is the CSV (or the export directory / org file for problems not inside one CSV), `line` the
    1-based physical line in the file (a record spanning lines is reported at its first line), `column`
    the header name as written in the file; either may be None.
    """

    def __init__(self, file: Path, line: int | None, column: str | None, message: str) -> None:
        self.file = Path(file)
        self.line = line
        self.column = column
        self.message = message
        super().__init__(str(self))

    def __reduce__(self):  # picklable despite the keyword-free constructor (Prefect ships exceptions)
        return (ExportError, (self.file, self.line, self.column, self.message))

    def __str__(self) -> str:
        parts = [self.file.name if self.file.suffix.lower() == ".csv" else str(self.file)]
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.column is not None:
            parts.append(f"column {self.column}")
        return ", ".join(parts) + ": " + self.message


@dataclass
class ExportLoadReport:
    """What a load did: rows per object, the fields it added to the schema, and how long it took."""

    rows_per_object: dict[str, int]
    inferred_fields: dict[str, list[FieldSchema]]
    seconds: float


def load_export(export_dir: Path, org_path: Path, *, settings: dict[str, str] | None = None,
                loaded_at: datetime | None = None, helper_process: bool | None = None) -> ExportLoadReport:
    """Creates the sandbox org at `org_path` (which must not exist) from the CSV export in `export_dir`.

    All or nothing: the org appears at `org_path` only when every file loaded; otherwise ExportError is
    raised and neither the org nor its temporary file (`<org_path>.loading`) is left behind. `settings`
    are saved in the org with `source=export` and `export_dir`; `integration_user_id` is set to the
    first exported user whose Username contains "integration" unless `settings` already names one.
    `loaded_at` (default: now, UTC) stands in for audit dates the export does not carry.
    `helper_process`: read the CSVs in a helper process while this one writes (default: for an export of
    16 MiB or more, on a POSIX machine with a second CPU); the result is the same either way.
    """
    started = time.perf_counter()
    export_dir, org_path = Path(export_dir), Path(org_path)
    loaded_at_text = format_datetime(loaded_at or datetime.now(timezone.utc))
    if org_path.exists():
        raise ExportError(org_path, None, None, "already exists; remove it or choose another data directory")
    with _reported_against(export_dir):
        files = _export_files(export_dir)
    if helper_process is None:
        helper_process = _helper_pays_off(files)
    loading_path = org_path.with_name(org_path.name + ".loading")
    _remove_database(loading_path)  # left over from a load that was killed
    saved = {**(settings or {}), "source": "export", "export_dir": str(export_dir.resolve())}
    try:
        with _cycle_collection_paused():
            report = _build_org(loading_path, org_path, saved, files, loaded_at_text, helper_process)
        if org_path.exists():
            raise ExportError(org_path, None, None, "appeared while the export was loading; remove it and retry")
        os.replace(loading_path, org_path)
        _remove_database(loading_path)  # its -wal/-shm companions, if SQLite left any
    except BaseException:
        _remove_database(loading_path)
        raise
    report.seconds = time.perf_counter() - started
    return report


def _build_org(path: Path, org_path: Path, settings: dict[str, str], files: list[tuple[SObjectSchema, Path]],
               loaded_at: str, helper_process: bool) -> ExportLoadReport:
    """Creates the org database at `path` (which becomes `org_path`) and loads `files` into it; the file is
    complete and synced to disk when this returns."""
    with _reported_against(org_path):
        store = OrgStore.create(path, settings)
        # The file is renamed into place only when complete, so while it loads it needs no crash safety:
        # no journal on disk, no sync per commit (the rollback journal kept in memory still serves the
        # savepoints).
        db = store.connection()
        db.execute("PRAGMA journal_mode=MEMORY")
        db.execute("PRAGMA synchronous=OFF")
    try:
        report = ExportLoadReport({}, {}, 0.0)
        highest_counters: dict[str, int] = {}
        reading = _converted_in_helper(files, loaded_at) if helper_process else _converted_files(files, loaded_at)
        with closing(reading) as converted_files:  # on an error, stops the helper now
            for converted in converted_files:
                with _reported_against(converted.path), store.transaction() as db:
                    rows = _write_file(store, converted, db)
                report.rows_per_object[converted.object_name] = rows
                if converted.inferred:
                    report.inferred_fields[converted.object_name] = converted.inferred
                for prefix, counter in converted.highest_counters.items():
                    highest_counters[prefix] = max(counter, highest_counters.get(prefix, 0))
        with _reported_against(org_path):
            with store.transaction() as db:
                _reserve_loaded_ids(store, highest_counters, db)
                store.create_indexes(db)
                if "integration_user_id" not in settings and "User" in report.rows_per_object:
                    _remember_integration_user(store, db)
            store.connection().execute("PRAGMA journal_mode=WAL")  # how every org is used (OrgStore.connection)
    finally:
        store.close()
    with _reported_against(org_path), open(path, "rb") as written:
        os.fsync(written.fileno())
    return report


# --- the export directory ---------------------------------------------------------------------------

def _export_files(export_dir: Path) -> list[tuple[SObjectSchema, Path]]:
    """The export's CSVs with the object each loads into, in object name order.

    Names match objects case-insensitively; other files are ignored, and so are hidden ones (`.`-prefixed:
    editor lock files, macOS `._` companions).
    """
    if not export_dir.is_dir():
        raise ExportError(export_dir, None, None, "is not a directory; pass the folder holding the export's CSV files")
    objects = {name.lower(): sobject for name, sobject in standard_objects().items()}
    found: dict[str, tuple[SObjectSchema, Path]] = {}
    for path in sorted(export_dir.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() != ".csv" or not path.is_file():
            continue
        sobject = objects.get(path.stem.lower())
        if sobject is None:
            modelled = ", ".join(sorted(standard_objects()))
            raise ExportError(path, None, None,
                              f"the sandbox does not model an object called {path.stem!r}; rename the file "
                              f"after one of the objects it models or remove it: {modelled}")
        if sobject.name in found:
            raise ExportError(path, None, None,
                              f"{found[sobject.name][1].name} already holds {sobject.name}; keep one file per object")
        found[sobject.name] = (sobject, path)
    if not found:
        raise ExportError(export_dir, None, None,
                          "holds no CSV files; an export has one file per object named after it, e.g. User.csv")
    return [found[name] for name in sorted(found)]


class _reported_against:
    """Turns I/O and database failures in its block into an ExportError about `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, error_type, error, traceback) -> None:
        if isinstance(error, OSError):
            raise ExportError(self.path, None, None,
                              f"{error.strerror or error} ({error.filename or self.path})") from error
        if isinstance(error, sqlite3.Error):
            raise ExportError(self.path, None, None, f"writing the sandbox org database failed: {error}") from error


@contextmanager
def _cycle_collection_paused() -> Iterator[None]:
    """Pauses Python's cycle collector (not reference counting) for the block. A load allocates millions of
    short-lived lists and tuples and makes no reference cycles; the collector's repeated passes over
    them cost about a tenth of a load."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _remove_database(path: Path) -> None:
    for leftover in (path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))):
        leftover.unlink(missing_ok=True)


# --- writing ----------------------------------------------------------------------------------------

@dataclass
class _ConvertedFile:
    """One CSV of the export, read and converted: its rows come as `batches` of stored-form columns."""

    object_name: str
    path: Path
    header: _Header
    inferred: list[FieldSchema]  # the fields its unknown columns become, added to the object before its rows
    columns: list[str]  # the table columns every batch holds, in order
    # The highest id counter per key prefix among its ids and references, complete once `batches` is.
    highest_counters: dict[str, int]
    batches: Iterator[list[list]] | None


def _write_file(store: OrgStore, converted: _ConvertedFile, db: sqlite3.Connection) -> int:
    """Writes one converted file into its object's table inside `db`; returns the rows written."""
    if converted.inferred:
        store.add_fields(converted.object_name, converted.inferred, db)
    rows = 0
    for values in converted.batches or ():
        rows += _insert_batch(store, converted, values, db)
    return rows


def _insert_batch(store: OrgStore, converted: _ConvertedFile, values: list[list], db: sqlite3.Connection) -> int:
    """Inserts a batch given column-wise; the Id column's UNIQUE constraint is what catches a duplicate Id,
    without holding every Id of the file in memory. Only when it fires is the batch replayed row by row
    to find the Id."""
    db.execute("SAVEPOINT export_batch")
    try:
        store.insert_rows(converted.object_name, converted.columns, zip(*values), db)
    except sqlite3.IntegrityError:
        db.execute("ROLLBACK TO export_batch")
        id_index = converted.columns.index("Id")
        for row in zip(*values):
            try:
                store.insert_rows(converted.object_name, converted.columns, [row], db)
            except sqlite3.IntegrityError:
                raise _duplicate_id_error(converted.path, converted.header, row[id_index]) from None
        raise
    db.execute("RELEASE export_batch")
    return len(values[0])


def _duplicate_id_error(path: Path, header: _Header, record_id: str) -> ExportError:
    """The error for an Id the file holds twice, naming both lines (found by reading the file again)."""
    id_index = [name.lower() for name in header.names].index("id")
    lines = list(islice((start for start, cells in _records(path, header.line + 1)
                         if to_18(cells[id_index]) == record_id), 2))
    if len(lines) < 2:
        return ExportError(path, None, header.names[id_index], f"Id {record_id!r} appears twice; each record "
                                                               "must appear once")
    return ExportError(path, lines[1], header.names[id_index],
                       f"Id {record_id!r} appears twice (first on line {lines[0]}); each record must appear once")


# --- reading: converted files, in this process or a helper one ---------------------------------------

def _converted_files(files: Sequence[tuple[SObjectSchema, Path]], loaded_at: str) -> Iterator[_ConvertedFile]:
    """Each file of the export read and converted, in turn: header and inferred fields first, then the
    rows in batches (consume a file's batches before asking for the next file)."""
    for sobject, path in files:
        with _reported_against(path):
            header = _read_header(path, sobject, *_first_record(path))
            inferred = _infer_unknown_columns(path, header, sobject)
        if inferred:
            sobject = sobject.with_fields(inferred)  # what OrgStore.add_fields makes of it
            header.fields = [sobject.field(name) for name in header.names]
        converter = _BatchConverter(path, sobject, header, loaded_at)
        converted = _ConvertedFile(sobject.name, path, header, inferred, converter.columns, {}, None)
        converted.batches = _converted_batches(path, converter, converted.highest_counters)
        yield converted


def _converted_batches(path: Path, converter: _BatchConverter,
                       highest_counters: dict[str, int]) -> Iterator[list[list]]:
    """The file's records after the header as batches of stored-form columns, noting the highest id
    counters of its ids and references; raises the ExportError of the first problem."""
    try:
        for batch in _record_batches(path, converter.header.line):
            values = converter.convert(batch)
            for index in converter.id_like:
                for prefix, counter in highest_counters_by_prefix(list(filter(None, values[index]))).items():
                    highest_counters[prefix] = max(counter, highest_counters.get(prefix, 0))
            yield values
    except _UnreadableFrom as stop:
        _raise_first_problem(path, _records(path, stop.line), converter.check)


def _helper_pays_off(files: Sequence[tuple[SObjectSchema, Path]]) -> bool:
    """Whether to read in a helper process: the export is large and a second CPU is there (on POSIX, where
    the helper's pipe is passed as a file descriptor)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return (os.name == "posix" and cpus > 1
            and sum(path.stat().st_size for _, path in files) >= _HELPER_MIN_BYTES)


@dataclass
class _EndOfFile:
    highest_counters: dict[str, int]


# How the helper sends messages: a batch of plain values with marshal (version 2, which does not track
# shared objects: three times faster than pickle for it, and both ends run the same Python), anything
# else with pickle.
_MARSHALLED, _PICKLED = b"m", b"p"
_MARSHAL_VERSION = 2


def _converted_in_helper(files: Sequence[tuple[SObjectSchema, Path]], loaded_at: str) -> Iterator[_ConvertedFile]:
    """`_converted_files`, run by a helper Python process that sends its results (and its first error)
    through a pipe; the pipe's buffer lets it read ahead by a batch or so.

    The helper is a plain subprocess, not multiprocessing: it imports this module and nothing of the
    caller's, so it works whatever started this process (a script without a main guard, a notebook).
    """
    results_fd, helper_fd = os.pipe()
    command = [sys.executable, "-c", f"from sandbox.export_loader import _read_in_helper; _read_in_helper({helper_fd})"]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}  # import what this process imports
    try:
        helper = subprocess.Popen(command, stdin=subprocess.PIPE, pass_fds=(helper_fd,), env=environment)
    finally:
        os.close(helper_fd)
    try:
        with open(results_fd, "rb") as results:
            assert helper.stdin is not None
            with helper.stdin as request:
                pickle.dump(([(sobject.name, path) for sobject, path in files], loaded_at), request)
            while (message := _received(results, helper)) is not None:
                message.batches = _received_batches(results, helper, message)
                yield message
    finally:
        helper.kill()  # when this process stopped early; nothing to do when the helper is done
        helper.wait()


def _received_batches(results: BinaryIO, helper: subprocess.Popen, converted: _ConvertedFile) -> Iterator[list[list]]:
    while not isinstance(message := _received(results, helper), _EndOfFile):
        yield message
    converted.highest_counters.update(message.highest_counters)


def _received(results: BinaryIO, helper: subprocess.Popen):
    """The helper's next message: a batch (marshalled), or anything else (pickled), after a byte saying which."""
    kind = results.read(1)
    if not kind:
        raise RuntimeError(f"the export reader process ended unexpectedly (exit status {helper.wait()}); "
                           "see its output above")
    if kind == _MARSHALLED:  # marshal reads a file a value at a time: read the batch whole
        message = marshal.loads(results.read(int.from_bytes(results.read(8), "little")))
    else:
        message = pickle.load(results)
    if isinstance(message, BaseException):
        raise message
    return message


def _read_in_helper(results_fd: int) -> None:
    """The helper process: reads what to convert from stdin, and writes to `results_fd` each converted file
    (then its batches, then an `_EndOfFile`), then None; or the first error."""
    gc.disable()  # as in `_cycle_collection_paused`; this process does nothing else
    files, loaded_at = pickle.load(sys.stdin.buffer)
    objects = standard_objects()
    with open(results_fd, "wb") as results:
        def send(message: object) -> None:
            results.write(_PICKLED)
            pickle.dump(message, results, protocol=pickle.HIGHEST_PROTOCOL)

        def send_batch(values: list[list]) -> None:
            data = marshal.dumps(values, _MARSHAL_VERSION)
            results.write(_MARSHALLED + len(data).to_bytes(8, "little") + data)

        try:
            try:
                for converted in _converted_files([(objects[name], path) for name, path in files], loaded_at):
                    send(replace(converted, batches=None))
                    with _reported_against(converted.path):
                        for values in converted.batches or ():
                            send_batch(values)
                    send(_EndOfFile(converted.highest_counters))
                send(None)
            except ExportError as error:
                send(error)
            except Exception:
                send(RuntimeError(f"reading the export failed:\n{traceback.format_exc()}"))
            results.flush()
        except (BrokenPipeError, KeyboardInterrupt):
            os._exit(1)  # the loading process stopped listening: it has its own error to report, or was interrupted


# --- one CSV file -----------------------------------------------------------------------------------

class _Utf8Lines:
    """The physical lines of a binary file as text, remembering the first one that is not UTF-8.

    Undecodable bytes become lone surrogates (`surrogateescape`) so the csv reader still splits the
    record, and the loader can say which column holds them.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.count = 0
        self.first_bad_line: int | None = None

    def __iter__(self) -> Iterator[str]:
        for raw in self._handle:
            self.count += 1
            if self.count == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                if self.first_bad_line is None:
                    self.first_bad_line = self.count
                text = raw.decode("utf-8", errors="surrogateescape")
            yield text


def _records(path: Path, from_line: int = 1) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank record of the CSV with the physical line it starts on, header first; the exact
    reader, which names the line and column of any reading problem. Records starting before `from_line`
    are read (a record may span lines) but not yielded."""
    with open(path, "rb") as handle:
        lines = _Utf8Lines(handle)
        reader = csv.reader(lines, strict=True)
        header: list[str] | None = None
        previous_end = 0
        while True:
            start = previous_end + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                raise ExportError(path, start, None, _csv_problem(str(error), start, reader.line_num)) from None
            previous_end = reader.line_num
            if lines.first_bad_line is not None:
                raise _encoding_error(path, lines.first_bad_line, header, row)
            if not row:
                continue
            if header is None:
                header = row
            if start >= from_line:
                yield start, row


@dataclass
class _Batch:
    """Consecutive records of a CSV, blank ones included (as []), and the physical line the first starts on."""

    first_line: int
    rows: list[list[str]]

    def records(self) -> list[list[str]]:
        """The non-blank records."""
        return [row for row in self.rows if row] if [] in self.rows else self.rows

    def lines(self) -> Iterator[tuple[int, list[str]]]:
        """Each non-blank record with the physical line it starts on. A record spans one line more than the
        line breaks its values hold: lines end at LF, and an LF inside a record is inside a quoted value."""
        line = self.first_line
        for row in self.rows:
            if row:
                yield line, row
            line += 1 + sum(cell.count("\n") for cell in row)


class _UnreadableFrom(Exception):
    """`_record_batches` stopped at a batch it could not read; `line` is where that batch starts. The exact
    reader, `_records`, says what is wrong from there."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def _record_batches(path: Path, header_line: int) -> Iterator[_Batch]:
    """The records after the header, `_BATCH_ROWS` at a time, read fast: the file is decoded by one streaming
    UTF-8 decoder rather than line by line, and physical lines are counted only where a problem needs one.
    Same csv reader, same records and lines as `_records`, which the loader falls back on when this raises
    `_UnreadableFrom`."""
    first_line = header_line + 1
    # newline="\n": lines end at LF only, as `_records`' binary lines do, and keep their line breaks.
    with open(path, encoding="utf-8-sig", newline="\n") as text:
        reader = csv.reader(text, strict=True)
        try:
            while reader.line_num < header_line:  # up to the header, which `_records` has read
                next(reader)
            first_line = reader.line_num + 1
            while rows := list(islice(reader, _BATCH_ROWS)):
                yield _Batch(first_line, rows)
                first_line = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError):  # the decoder reads ahead: the problem may be further on
            raise _UnreadableFrom(first_line) from None


def _raise_first_problem(path: Path, records: Iterable[tuple[int, list[str]]],
                         check: Callable[[int, list[str]], None]) -> NoReturn:
    """Checks `records` one at a time, in file order, raising the ExportError of the first problem.

    Only called where the fast path saw one; finding none means the file changed while it was read.
    """
    for line, cells in records:
        check(line, cells)
    raise ExportError(path, None, None, "changed while it was being loaded; load the export again")


def _csv_problem(reason: str, start: int, end: int) -> str:
    if "unexpected end of data" in reason:
        return (f"a quoted value opened in the record starting here is never closed (the file ends on line {end}); "
                "add the closing double quote")
    if "expected after" in reason:
        return (f"a closing double quote must be followed by a comma or the end of the line (line {end}); "
                'write a double quote inside a quoted value as two ("")')
    if "field larger than field limit" in reason:
        return f"a value is longer than {csv.field_size_limit()} characters; shorten it"
    return f"not valid CSV ({reason})"


def _encoding_error(path: Path, line: int, header: list[str] | None, row: list[str]) -> ExportError:
    for index, cell in enumerate(row):
        bad = next((char for char in cell if "\udc80" <= char <= "\udcff"), None)
        if bad is not None:
            column = header[index] if header is not None and index < len(header) else None
            shown = cell.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
            return ExportError(path, line, column,
                               f"not UTF-8 text: byte 0x{ord(bad) - 0xDC00:02X} in {_preview(shown)!r} cannot be "
                               f"decoded; {_UTF8_HINT}")
    return ExportError(path, line, None, f"not UTF-8 text; {_UTF8_HINT}")


def _preview(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _check_width(path: Path, line: int, row: list[str], header: list[str]) -> None:
    if len(row) != len(header):
        raise ExportError(path, line, None,
                          f"{len(row)} values, but the header has {len(header)} columns; every row needs one value "
                          "per column, and a value holding a comma, quote or line break must be in double quotes")


@dataclass
class _Header:
    line: int
    names: list[str]  # as written in the file, surrounding spaces removed
    fields: list[FieldSchema | None]  # the schema's field for each column, None for a column it lacks

    def unknown(self) -> list[int]:
        return [index for index, known in enumerate(self.fields) if known is None]


def _first_record(path: Path) -> tuple[int, list[str]]:
    records = _records(path)
    try:
        first = next(records, None)
    finally:
        records.close()
    if first is None:
        raise ExportError(path, None, None, "the file is empty; it needs a header row naming the fields, Id among them")
    return first


def _read_header(path: Path, sobject: SObjectSchema, line: int, cells: list[str]) -> _Header:
    names = [cell.strip() for cell in cells]
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if not name:
            raise ExportError(path, line, None, f"column {position} of the header has no name; name it after the "
                                                "field it holds or remove the column")
        if name.lower() in seen:
            raise ExportError(path, line, name, f"appears twice in the header (columns {seen[name.lower()]} and "
                                                f"{position}); keep one")
        seen[name.lower()] = position
        if sobject.field(name) is None and not _FIELD_NAME.match(name):
            hint = (" (a relationship column such as Owner.Name cannot be loaded; the sandbox resolves it "
                    "through the Id field, e.g. OwnerId)" if "." in name else "")
            raise ExportError(path, line, name, "is not a field API name (letters, digits and underscores, "
                                                f"starting with a letter){hint}; rename or remove the column")
    if "id" not in seen:
        raise ExportError(path, line, None, f"the header has no Id column; every {sobject.name} record needs its Id")
    return _Header(line, names, [sobject.field(name) for name in names])


# --- converting rows --------------------------------------------------------------------------------

class _Refused(Exception):
    """A batch holds a value the exact check refuses (which one, and why, is for `_RowChecker` to say)."""


class _RowChecker:
    """The exact check of one record, which names the problem: its width, then each value in column order."""

    def __init__(self, path: Path, sobject: SObjectSchema, header: _Header) -> None:
        self.path = path
        self.sobject = sobject
        self.header = header
        # Unknown columns joined the schema before rows convert, so every column has its field.
        self.fields: list[FieldSchema] = [f for f in header.fields if f is not None]
        assert len(self.fields) == len(header.names), "unknown columns must be added to the schema first"

    def check(self, line: int, cells: list[str]) -> None:
        _check_width(self.path, line, cells, self.header.names)
        for column, f, cell in zip(self.header.names, self.fields, cells):
            self._value(line, column, f, cell)

    def _value(self, line: int, column: str, f: FieldSchema, cell: str) -> object:
        if f.type == "id":
            problem = "it is empty" if cell == "" else id_problem(cell, self.sobject.key_prefix)
            if problem:
                raise ExportError(self.path, line, column,
                                  f"{_preview(cell)!r} is not a valid {self.sobject.name} Id: {problem}; every "
                                  f"record needs its own {self.sobject.name} Id (key prefix {self.sobject.key_prefix})")
            return to_18(cell)
        try:
            value = text_to_stored(f, cell)
        except ValueProblem as problem:
            raise ExportError(self.path, line, column, _value_problem(f, cell, problem)) from None
        return value


class _BatchConverter(_RowChecker):
    """Turns a batch of CSV rows into columns of stored values for the object's table.

    Columns are the header's fields, then the fields Salesforce never leaves empty that the export did
    not carry (filled by `_fill_as_salesforce_would`). Values convert exactly as `_RowChecker` converts
    them one at a time; a batch holding a problem is handed to it to name the first one.
    """

    def __init__(self, path: Path, sobject: SObjectSchema, header: _Header, loaded_at: str) -> None:
        super().__init__(path, sobject, header)
        self.loaded_at = loaded_at
        self.defaulted = set(_defaulted_fields(sobject))
        given = {f.name for f in self.fields}
        self.absent = [name for name in _defaulted_fields(sobject) if name not in given]  # filled in every row
        self.columns = [f.name for f in self.fields] + self.absent
        self.booleans = tuple(f.name for f in sobject.fields if f.type == "boolean")
        self.id_like = [index for index, f in enumerate(self.fields) if f.type in ("id", "reference")]

    def convert(self, batch: _Batch) -> list[list]:
        """The batch's rows as one list of stored values per column of `self.columns`."""
        records = batch.records()
        texts = list(zip(*records))
        try:
            if set(map(len, records)) != {len(self.fields)}:
                raise _Refused("a row without one value per column")
            stored = [self._column(f, column) for f, column in zip(self.fields, texts)]
        except (_Refused, ValueProblem):
            _raise_first_problem(self.path, batch.lines(), self.check)
        count = len(records)
        record = dict(zip(self.columns, stored + [[None] * count for _ in self.absent]))
        gaps = {*self.absent, *(f.name for f, column in zip(self.fields, texts)
                                if f.name in self.defaulted and "" in column)}  # "" is what converts to None
        _fill_as_salesforce_would(self.sobject.name, record, gaps, self.booleans, self.loaded_at)
        return list(record.values())

    def _column(self, f: FieldSchema, texts: Sequence[str]) -> list:
        stored = texts_to_stored(f, texts)  # for the Id field: checks each is an id and gives its 18 characters
        if f.type == "id" and ("" in texts or set(map(_KEY_PREFIX, stored)) != {self.sobject.key_prefix}):
            raise _Refused("an empty Id or one of another object")
        return stored


_KEY_PREFIX = itemgetter(slice(0, 3))


def _value_problem(f: FieldSchema, cell: str, problem: ValueProblem) -> str:
    shown = _preview(cell)
    if problem.status_code == "STRING_TOO_LONG":
        return (f"{shown!r} is {len(cell)} characters, longer than {f.name}'s maximum of {f.length} "
                "(STRING_TOO_LONG); shorten it")
    if f.type == "reference":
        return f"{shown!r} is not a Salesforce id: {id_problem(cell)}; leave it empty or give a 15- or 18-character id"
    return f"{shown!r} is not {_EXPECTED_FORMAT.get(f.type, f.type)}"


def _defaulted_fields(sobject: SObjectSchema) -> list[str]:
    """The fields of `sobject` that `_fill_as_salesforce_would` may fill."""
    names = [*_AUDIT_DATES, *_AUDIT_USERS]
    if sobject.name in _NAMED_PEOPLE:
        names.append("Name")
    names += [f.name for f in sobject.fields if f.type == "boolean"]
    return [name for name in dict.fromkeys(names) if sobject.field(name) is not None]


def _fill_as_salesforce_would(object_name: str, columns: dict[str, list], gaps: set[str], booleans: tuple[str, ...],
                              loaded_at: str) -> None:
    """Fills, in place, the empty fields that Salesforce never leaves empty but a partial export may lack.

    `columns` holds a batch of records column-wise (field name -> stored values); `gaps` names those that
    hold a None (absent or an empty cell), the only ones with something to fill. Only columns already
    there are filled, and only in rows where the value is None; what a row gets depends on that row's
    values alone, in the order below.
    """
    def value(name: str, row: int) -> object:
        column = columns.get(name)
        return None if column is None else column[row]

    def fill(name: str, value_at: Callable[[int], object]) -> None:
        column = columns.get(name)
        if column is not None and name in gaps:
            for row in [row for row, stored in enumerate(column) if stored is None]:
                column[row] = value_at(row)

    # the audit dates as exported, before any is filled
    given_dates = [list(columns[name]) for name in _AUDIT_DATES if name in columns] if gaps & {*_AUDIT_DATES} else []

    def dates(row: int) -> list:
        return [column[row] for column in given_dates if column[row] is not None]

    fill("CreatedDate", lambda row: min(dates(row), default=loaded_at))
    fill("LastModifiedDate", lambda row: value("SystemModstamp", row) or max(dates(row), default=loaded_at))
    fill("SystemModstamp", lambda row: max(dates(row), default=loaded_at))
    fill("CreatedById", lambda row: value("LastModifiedById", row))
    fill("LastModifiedById", lambda row: value("CreatedById", row))
    if object_name in _NAMED_PEOPLE:
        fill("Name", lambda row: " ".join(str(part) for part in (value("FirstName", row), value("LastName", row))
                                          if part) or None)
    if object_name == "Opportunity":
        fill("IsClosed", lambda row: int(value("StageName", row) in ("Closed Won", "Closed Lost")))
        fill("IsWon", lambda row: int(value("StageName", row) == "Closed Won"))
    elif object_name == "Case":
        fill("IsClosed", lambda row: int(value("Status", row) == "Closed"))
    elif object_name == "Task":
        fill("IsClosed", lambda row: int(value("Status", row) == "Completed"))
    elif object_name == "User":
        fill("IsActive", lambda row: 1)
    for name in booleans:  # a Salesforce checkbox is false, never null
        fill(name, lambda row: 0)


# --- columns the sandbox does not model -------------------------------------------------------------

@dataclass
class _ColumnEvidence:
    """What the values of one unknown column allow its type to be, gathered a batch of values at a time.

    The first type every non-empty value fits wins, in this order: boolean (true/false), int, double,
    datetime (with a time), date, reference (ids of one modelled object); else string, or textarea when
    a value is longer than 255 characters.
    """

    name: str
    candidates: list[str] = field(default_factory=lambda: ["boolean", "int", "double", "datetime", "date",
                                                           "reference"])
    key_prefix: str | None = None
    longest: int = 0

    def observe(self, texts: Iterable[str], prefixes: dict[str, tuple[str, ...]]) -> None:
        """Takes in some of the column's values. Each distinct value is looked at once: what a value rules
        out does not depend on the others, except that a reference needs one key prefix throughout."""
        values = list(set(texts) - {""})
        if not values:
            return
        self.longest = max(self.longest, max(map(len, values)))
        self._narrow(values[:1], prefixes)  # the first value usually leaves one candidate
        rest = values[1:]
        if self.candidates == ["reference"]:  # an id column: check its ids in bulk
            well_formed = well_formed_ids(rest).tolist()
            # a well-formed id fits or not by its key prefix alone: one id per prefix says it
            one_per_prefix = {text[:3]: text for text, ok in zip(rest, well_formed) if ok}
            rest = [text for text, ok in zip(rest, well_formed) if not ok] + list(one_per_prefix.values())
        elif self.candidates in (["datetime"], ["date"]):  # a date or datetime column: check it in bulk
            try:
                texts_to_stored(FieldSchema(self.name, self.candidates[0]), rest)  # parses as `_fits` does
                rest = []
            except ValueProblem:
                pass  # some value is not one: `_fits` rules the type out
        self._narrow(rest, prefixes)

    def _narrow(self, values: Iterable[str], prefixes: dict[str, tuple[str, ...]]) -> None:
        for text in values:
            if not self.candidates:
                return
            self.candidates = [kind for kind in self.candidates if self._fits(kind, text, prefixes)]

    def _fits(self, kind: str, text: str, prefixes: dict[str, tuple[str, ...]]) -> bool:
        stripped = text.strip()
        if kind == "boolean":
            return stripped.lower() in ("true", "false")
        if kind == "int":
            return (len(stripped) <= 17 and bool(_INTEGER_TEXT.match(stripped))
                    and abs(int(stripped)) <= _INT64_MAX)
        if kind == "double":
            return bool(_NUMBER_TEXT.match(stripped)) and math.isfinite(float(stripped))
        if kind in ("datetime", "date"):
            try:
                (parse_datetime_text if kind == "datetime" else parse_date_text)(text)
            except (ValueError, OverflowError):
                return False
            return True
        # reference: every value an id whose key prefix is the same modelled object's
        if id_problem(text) is not None or text[:3] not in prefixes or self.key_prefix not in (None, text[:3]):
            return False
        self.key_prefix = text[:3]
        return True

    def field(self, sobject: SObjectSchema, prefixes: dict[str, tuple[str, ...]]) -> FieldSchema:
        custom = self.name.endswith("__c")
        kind = self.candidates[0] if self.candidates and self.longest else None
        if kind == "reference":
            assert self.key_prefix is not None
            return FieldSchema(self.name, "reference", custom=custom, reference_to=prefixes[self.key_prefix],
                               relationship_name=_relationship_name(self.name, sobject))
        if kind is not None:
            return FieldSchema(self.name, kind, custom=custom)
        if self.longest > _STRING_LENGTH:
            return FieldSchema(self.name, "textarea", length=_TEXTAREA_LENGTH, custom=custom)
        return FieldSchema(self.name, "string", length=_STRING_LENGTH, custom=custom)


def _relationship_name(name: str, sobject: SObjectSchema) -> str | None:
    """`Account__c` -> `Account__r`, `ManagerId` -> `Manager`; None when that would clash with a field or
    relationship the object already has (SOQL could not tell them apart)."""
    if name.endswith("__c"):
        relationship = name[:-3] + "__r"
    elif name.endswith("Id") and len(name) > 2:
        relationship = name[:-2]
    else:
        return None
    if sobject.field(relationship) is not None or sobject.relationship(relationship) is not None:
        return None
    return relationship


def _infer_unknown_columns(path: Path, header: _Header, sobject: SObjectSchema) -> list[FieldSchema]:
    """Types for the header's columns the object lacks, from a first pass over the file's values.

    The pass reads every record, so a reading problem or a ragged row anywhere in the file is reported
    before any value is converted.
    """
    unknown = header.unknown()
    if not unknown:
        return []
    prefixes: dict[str, tuple[str, ...]] = {}
    for candidate in standard_objects().values():
        prefixes[candidate.key_prefix] = prefixes.get(candidate.key_prefix, ()) + (candidate.name,)
    evidence = {index: _ColumnEvidence(header.names[index]) for index in unknown}

    def check_width(line: int, cells: list[str]) -> None:
        _check_width(path, line, cells, header.names)

    try:
        for batch in _record_batches(path, header.line):
            records = batch.records()
            if set(map(len, records)) != {len(header.names)}:
                _raise_first_problem(path, batch.lines(), check_width)
            for index, column in evidence.items():
                column.observe(map(itemgetter(index), records), prefixes)
    except _UnreadableFrom as stop:
        _raise_first_problem(path, _records(path, stop.line), check_width)
    return [column.field(sobject, prefixes) for column in evidence.values()]


# --- after the rows ---------------------------------------------------------------------------------

def _reserve_loaded_ids(store: OrgStore, highest_counters: dict[str, int], db: sqlite3.Connection) -> None:
    """Moves each key prefix's id counter past the highest counter the export holds or points at, so new
    records never take an exported id (nor one a reference names that the export lacks).

    Relies on the org being new: `allocate_counters` starts a prefix at 1, so reserving N counters
    leaves the next at N + 1. Every valid id decodes (only base-62 characters), whatever its pod.
    """
    for prefix, counter in sorted(highest_counters.items()):
        if counter:
            store.allocate_counters(prefix, counter, db)


def _remember_integration_user(store: OrgStore, db: sqlite3.Connection) -> None:
    """Saves the first exported user (file order) whose Username contains 'integration' (any case)."""
    row = db.execute(f"SELECT Id FROM {quote('User')} WHERE instr(lower(Username), 'integration') > 0 "
                     "ORDER BY rowid LIMIT 1").fetchone()
    if row is not None:
        store.set_setting("integration_user_id", row[0])
