"""Seeds a sandbox org from a Data Loader style export, so a team can replay its real org locally.

The export is a directory with one CSV per object, named after the object's API name (`User.csv`,
`Task.csv`...), whose header holds API field names: any subset of the object's fields, Id required.
`load_export` builds the org in a temporary file beside the target and renames it into place only when
every file loaded; any problem raises `ExportError` pointing at the file, line and column to fix, and
leaves no org file behind.

How a file is read (the stdlib `csv` module, RFC 4180: quoted values may hold commas, quotes and line
breaks): bytes are split into physical lines and decoded as UTF-8 one line at a time, so an error names
the physical line the csv reader reports, and rows stream into SQLite in batches. Columns the sandbox
does not model are kept: a first pass over the file infers their type (see `_ColumnEvidence`) and they
join the org's schema through `OrgStore.add_fields`, so describe and SOQL see them.

Every value is converted by `sandbox.values.text_to_stored`, the same code that reads Bulk API CSV.
"""

from __future__ import annotations

import codecs
import csv
import math
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

# The id alphabet and counter width are the ones `make_id` writes; ids.py has no decoder of its own.
from sandbox.ids import id_counter, id_problem, to_18
from sandbox.schema import FieldSchema, SObjectSchema, standard_objects
from sandbox.store import OrgStore, quote
from sandbox.values import ValueProblem, format_datetime, parse_date_text, parse_datetime_text, text_to_stored

_BATCH_ROWS = 5000
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
                loaded_at: datetime | None = None) -> ExportLoadReport:
    """Creates the sandbox org at `org_path` (which must not exist) from the CSV export in `export_dir`.

    All or nothing: the org appears at `org_path` only when every file loaded; otherwise ExportError is
    raised and neither the org nor its temporary file (`<org_path>.loading`) is left behind. `settings`
    are saved in the org with `source=export` and `export_dir`; `integration_user_id` is set to the
    first exported user whose Username contains "integration" unless `settings` already names one.
    `loaded_at` (default: now, UTC) stands in for audit dates the export does not carry.
    """
    started = time.perf_counter()
    export_dir, org_path = Path(export_dir), Path(org_path)
    loaded_at_text = format_datetime(loaded_at or datetime.now(timezone.utc))
    if org_path.exists():
        raise ExportError(org_path, None, None, "already exists; remove it or choose another data directory")
    with _reported_against(export_dir):
        files = _export_files(export_dir)
    loading_path = org_path.with_name(org_path.name + ".loading")
    _remove_database(loading_path)  # left over from a load that was killed
    saved = {**(settings or {}), "source": "export", "export_dir": str(export_dir.resolve())}
    try:
        with _reported_against(org_path):
            store = OrgStore.create(loading_path, saved)
        try:
            report = ExportLoadReport({}, {}, 0.0)
            highest_counters: dict[str, str] = {}
            for sobject, path in files:
                with _reported_against(path), store.transaction() as db:
                    rows, inferred = _load_object(store, sobject, path, db, loaded_at_text, highest_counters)
                report.rows_per_object[sobject.name] = rows
                if inferred:
                    report.inferred_fields[sobject.name] = inferred
            with _reported_against(org_path), store.transaction() as db:
                _reserve_loaded_ids(store, highest_counters, db)
                store.create_indexes(db)
                if "integration_user_id" not in saved and "User" in report.rows_per_object:
                    _remember_integration_user(store, db)
            store.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            store.close()
        if org_path.exists():
            raise ExportError(org_path, None, None, "appeared while the export was loading; remove it and retry")
        os.replace(loading_path, org_path)
        _remove_database(loading_path)  # its -wal/-shm companions, if SQLite left any
    except BaseException:
        _remove_database(loading_path)
        raise
    report.seconds = time.perf_counter() - started
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


def _remove_database(path: Path) -> None:
    for leftover in (path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))):
        leftover.unlink(missing_ok=True)


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


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank record of the CSV with the physical line it starts on, header first."""
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
            yield start, row


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


def _load_object(store: OrgStore, sobject: SObjectSchema, path: Path, db: sqlite3.Connection,
                 loaded_at: str, highest_counters: dict[str, str]) -> tuple[int, list[FieldSchema]]:
    """Loads one CSV into its object's table inside `db`; returns the row count and the fields it added."""
    records = _records(path)
    first = next(records, None)
    if first is None:
        raise ExportError(path, None, None, "the file is empty; it needs a header row naming the fields, Id among them")
    header = _read_header(path, sobject, *first)
    inferred = _infer_unknown_columns(path, header, sobject)
    if inferred:
        store.add_fields(sobject.name, inferred, db)
        sobject = store.schema[sobject.name]
        header.fields = [sobject.field(name) for name in header.names]
    converter = _RowConverter(path, sobject, header, loaded_at, highest_counters)
    rows = 0
    batch: list[tuple[int, tuple]] = []
    for line, cells in records:
        _check_width(path, line, cells, header.names)
        batch.append((line, converter.convert(line, cells)))
        if len(batch) >= _BATCH_ROWS:
            rows += _insert_batch(store, sobject, converter.columns, batch, db, path, header)
            batch = []
    rows += _insert_batch(store, sobject, converter.columns, batch, db, path, header)
    return rows, inferred


def _insert_batch(store: OrgStore, sobject: SObjectSchema, columns: list[str], batch: list[tuple[int, tuple]],
                  db: sqlite3.Connection, path: Path, header: _Header) -> int:
    """Inserts a batch; the Id column's UNIQUE constraint is what catches a duplicate Id, without holding
    every Id of the file in memory. Only when it fires is the batch replayed row by row to name the line."""
    if not batch:
        return 0
    db.execute("SAVEPOINT export_batch")
    try:
        store.insert_rows(sobject.name, columns, (row for _, row in batch), db)
    except sqlite3.IntegrityError:
        db.execute("ROLLBACK TO export_batch")
        id_index = columns.index("Id")
        for line, row in batch:
            try:
                store.insert_rows(sobject.name, columns, [row], db)
            except sqlite3.IntegrityError:
                raise _duplicate_id_error(path, header, line, row[id_index]) from None
        raise
    db.execute("RELEASE export_batch")
    return len(batch)


def _duplicate_id_error(path: Path, header: _Header, line: int, record_id: str) -> ExportError:
    id_index = [name.lower() for name in header.names].index("id")
    first_line = next((start for start, cells in _records(path)
                       if start > header.line and to_18(cells[id_index]) == record_id), None)
    earlier = f" (first on line {first_line})" if first_line is not None else ""
    return ExportError(path, line, header.names[id_index],
                       f"Id {record_id!r} appears twice{earlier}; each record must appear once")


# --- converting rows --------------------------------------------------------------------------------

class _RowConverter:
    """Turns the cells of one CSV row into a stored-form row of the object's table.

    Columns are the header's fields, then the fields Salesforce never leaves empty that the export did
    not carry (filled by `_fill_as_salesforce_would`).
    """

    def __init__(self, path: Path, sobject: SObjectSchema, header: _Header, loaded_at: str,
                 highest_counters: dict[str, str]) -> None:
        self.path = path
        self.sobject = sobject
        self.header = header
        self.loaded_at = loaded_at
        self.highest_counters = highest_counters
        # Unknown columns joined the schema before rows convert, so every column has its field.
        self.fields: list[FieldSchema] = [f for f in header.fields if f is not None]
        assert len(self.fields) == len(header.names), "unknown columns must be added to the schema first"
        given = {f.name for f in self.fields}
        self.columns = [f.name for f in self.fields] + [name for name in _defaulted_fields(sobject)
                                                         if name not in given]
        self.booleans = tuple(f.name for f in sobject.fields if f.type == "boolean")
        self.id_like = [index for index, f in enumerate(self.fields) if f.type in ("id", "reference")]

    def convert(self, line: int, cells: list[str]) -> tuple:
        values = [self._value(line, column, f, cell)
                  for column, f, cell in zip(self.header.names, self.fields, cells)]
        for index in self.id_like:
            self._note_counter(values[index])
        record = dict(zip(self.columns, values + [None] * (len(self.columns) - len(values))))
        _fill_as_salesforce_would(self.sobject.name, record, self.booleans, self.loaded_at)
        return tuple(record.values())

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

    def _note_counter(self, record_id: object) -> None:
        # Fixed-width base-62 counters in the alphabet 0-9A-Za-z sort as text in number order, so the
        # id with the highest counter is tracked as text and decoded once at the end.
        if record_id is None:
            return
        prefix = record_id[:3]  # type: ignore[index]
        if record_id[6:15] > self.highest_counters.get(prefix, "")[6:15]:  # type: ignore[index]
            self.highest_counters[prefix] = record_id  # type: ignore[assignment]


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


def _fill_as_salesforce_would(object_name: str, record: dict[str, object], booleans: tuple[str, ...],
                              loaded_at: str) -> None:
    """Fills, in place, the empty fields that Salesforce never leaves empty but a partial export may lack.

    Only keys already in `record` are set, and only where the value is None (absent or an empty cell).
    """
    def fill(name: str, value: object) -> None:
        if name in record and record[name] is None:
            record[name] = value

    dates = [record[name] for name in _AUDIT_DATES if record.get(name) is not None]
    fill("CreatedDate", min(dates, default=loaded_at))  # type: ignore[type-var]
    fill("LastModifiedDate", record.get("SystemModstamp") or max(dates, default=loaded_at))  # type: ignore[type-var]
    fill("SystemModstamp", max(dates, default=loaded_at))  # type: ignore[type-var]
    fill("CreatedById", record.get("LastModifiedById"))
    fill("LastModifiedById", record.get("CreatedById"))
    if object_name in _NAMED_PEOPLE:
        fill("Name", " ".join(str(part) for part in (record.get("FirstName"), record.get("LastName")) if part) or None)
    if object_name == "Opportunity":
        fill("IsClosed", int(record.get("StageName") in ("Closed Won", "Closed Lost")))
        fill("IsWon", int(record.get("StageName") == "Closed Won"))
    elif object_name == "Case":
        fill("IsClosed", int(record.get("Status") == "Closed"))
    elif object_name == "Task":
        fill("IsClosed", int(record.get("Status") == "Completed"))
    elif object_name == "User":
        fill("IsActive", 1)
    for name in booleans:  # a Salesforce checkbox is false, never null
        fill(name, 0)


# --- columns the sandbox does not model -------------------------------------------------------------

@dataclass
class _ColumnEvidence:
    """What the values of one unknown column allow its type to be, gathered a value at a time.

    The first type every non-empty value fits wins, in this order: boolean (true/false), int, double,
    datetime (with a time), date, reference (ids of one modelled object); else string, or textarea when
    a value is longer than 255 characters.
    """

    name: str
    candidates: list[str] = field(default_factory=lambda: ["boolean", "int", "double", "datetime", "date",
                                                           "reference"])
    key_prefix: str | None = None
    longest: int = 0

    def observe(self, text: str, prefixes: dict[str, tuple[str, ...]]) -> None:
        if text == "":
            return
        self.longest = max(self.longest, len(text))
        if self.candidates:
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
    """Types for the header's columns the object lacks, from a first pass over the file's values."""
    unknown = header.unknown()
    if not unknown:
        return []
    prefixes: dict[str, tuple[str, ...]] = {}
    for candidate in standard_objects().values():
        prefixes[candidate.key_prefix] = prefixes.get(candidate.key_prefix, ()) + (candidate.name,)
    evidence = {index: _ColumnEvidence(header.names[index]) for index in unknown}
    for line, cells in _records(path):
        if line == header.line:
            continue
        _check_width(path, line, cells, header.names)
        for index, column in evidence.items():
            column.observe(cells[index], prefixes)
    return [column.field(sobject, prefixes) for column in evidence.values()]


# --- after the rows ---------------------------------------------------------------------------------

def _reserve_loaded_ids(store: OrgStore, highest_counters: dict[str, str], db: sqlite3.Connection) -> None:
    """Moves each key prefix's id counter past the highest counter the export holds or points at, so new
    records never take an exported id (nor one a reference names that the export lacks).

    Relies on the org being new: `allocate_counters` starts a prefix at 1, so reserving N counters
    leaves the next at N + 1. Every valid id decodes (only base-62 characters), whatever its pod.
    """
    for prefix, record_id in sorted(highest_counters.items()):
        counter = id_counter(record_id) or 0
        if counter:
            store.allocate_counters(prefix, counter, db)


def _remember_integration_user(store: OrgStore, db: sqlite3.Connection) -> None:
    """Saves the first exported user (file order) whose Username contains 'integration' (any case)."""
    row = db.execute(f"SELECT Id FROM {quote('User')} WHERE instr(lower(Username), 'integration') > 0 "
                     "ORDER BY rowid LIMIT 1").fetchone()
    if row is not None:
        store.set_setting("integration_user_id", row[0])
