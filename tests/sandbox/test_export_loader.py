"""Seeding a sandbox org from a Data Loader style export: what loads, what is filled in, what is refused."""

from __future__ import annotations

import csv
import pickle
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sandbox.export_loader import ExportError, ExportLoadReport, load_export
from sandbox.ids import case_safe_suffix, make_id
from sandbox.schema import FieldSchema
from sandbox.store import OrgStore
from sandbox.values import ValueProblem, text_to_stored, texts_to_stored

LOADED_AT = datetime(2024, 6, 1, 12, 0, 0, tzinfo=timezone.utc)

USER_1 = make_id("005", 1)
USER_2 = make_id("005", 2)
ACCOUNT_1 = make_id("001", 7)
TASK_1 = make_id("00T", 1)
TASK_2 = make_id("00T", 2)
TASK_3 = make_id("00T", 900)


def write_csv(directory: Path, name: str, rows: list[list[str]]) -> Path:
    """A CSV as Data Loader writes it: every value quoted, CRLF line ends."""
    path = directory / name
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL).writerows(rows)
    return path


def write_text(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "export"
    directory.mkdir()
    return directory


@pytest.fixture
def org_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "org.sqlite"


def load(export_dir: Path, org_path: Path, **options) -> ExportLoadReport:
    return load_export(export_dir, org_path, loaded_at=LOADED_AT, **options)


def rows(org_path: Path, sql: str, *parameters) -> list[tuple]:
    with sqlite3.connect(org_path) as db:
        return db.execute(sql, parameters).fetchall()


def load_error(export_dir: Path, org_path: Path, **options) -> ExportError:
    """The ExportError the export raises; checks nothing was left behind."""
    with pytest.raises(ExportError) as raised:
        load(export_dir, org_path, **options)
    leftovers = list(org_path.parent.iterdir()) if org_path.parent.exists() else []
    assert leftovers == [], f"left behind after a failed load: {leftovers}"
    return raised.value


def write_multi_object_export(directory: Path) -> None:
    write_csv(directory, "User.csv", [
        ["Id", "Username", "FirstName", "LastName", "Email", "IsActive"],
        [USER_1, "ada@example.com", "Ada", "Lovelace", "ada@example.com", "true"],
        [USER_2, "Integration.User@example.com", "", "Integration", "int@example.com", "false"],
    ])
    write_csv(directory, "Account.csv", [
        ["Id", "Name", "NumberOfEmployees", "AnnualRevenue"],
        [ACCOUNT_1, "Acme, Inc.", "120", "1500000.5"],
    ])
    write_csv(directory, "task.CSV", [
        ["Id", "subject", "OwnerId", "Status", "ActivityDate", "CompletedDateTime", "CallDurationInSeconds",
         "Flag__c", "Count__c", "Score__c", "Seen__c", "Due__c", "Account__c", "Notes__c", "Label__c",
         "Nothing__c", "ReviewerId", "Custom__c"],
        [TASK_1[:15], "Call Ada", USER_1[:15], "Completed", "2024-01-15", "2024-01-15T10:23:45+01:00", "60",
         "TRUE", "3", "1.5", "2024-01-15T10:23:45.000Z", "2024-01-15", ACCOUNT_1, "short", "02134", "",
         USER_1, "x"],
        [TASK_2, "Email", USER_2, "Not Started", "", "", "", "false", "-4", "2", "2024-02-01 08:00", "2024-02-29",
         ACCOUNT_1[:15], "n" * 300, "007", "", USER_2[:15], "y"],
    ])
    (directory / "README.txt").write_text("not a CSV, ignored")


LARGE_HEADER = ["Id", "Subject", "WhoId", "ActivityDate", "CreatedDate", "IsClosed", "CallDurationInSeconds",
                "Account__c"]


def write_large_task_export(directory: Path, records: int = 2_500, values: dict[tuple[int, str], str] | None = None,
                            header: list[str] = LARGE_HEADER) -> list[int]:
    """A Task.csv of `records` records, several load batches long; every 7th has a Subject broken over
    lines, WhoId points at contacts and leads; Seen__c and Due__c are left out unless `header` names them.
    `values` replaces the value of (record, column). Returns the physical line each record starts on, then
    the line after the last."""
    starts, rows, line = [], [], 2
    for n in range(records):
        record = {
            "Id": make_id("00T", n + 1),
            "Subject": f'Call {n}\r\nabout "pricing", then\nmore' if n % 7 == 0 else f"Call {n}",
            "WhoId": "" if n % 3 == 0 else make_id("003" if n % 2 else "00Q", n + 1),
            "ActivityDate": "" if n % 5 == 0 else "2024-02-29",
            "CreatedDate": "2024-01-15T10:23:45.000Z",
            "IsClosed": "true" if n % 2 else "false",
            "CallDurationInSeconds": str(n),
            "Account__c": make_id("001", n + 1),
            "Seen__c": f"2024-01-{n % 28 + 1:02d}T10:{n % 60:02d}:00.000Z",
            "Due__c": f"2023-{n % 12 + 1:02d}-{n % 28 + 1:02d}",
        } | {column: value for (index, column), value in (values or {}).items() if index == n}
        rows.append([record[column] for column in header])
        starts.append(line)
        line += 1 + sum(record[column].count("\n") for column in header)
    write_csv(directory, "Task.csv", [header, *rows])
    return [*starts, line]


@pytest.fixture(params=[False, True], ids=["in-process", "helper-process"])
def helper_process(request: pytest.FixtureRequest) -> bool:
    """Both ways of reading an export: in the loading process, and in a helper process."""
    return request.param


# --- loading --------------------------------------------------------------------------------------

def test_valid_multi_object_export_loads_every_row(export_dir, org_path):
    write_multi_object_export(export_dir)

    report = load(export_dir, org_path)

    assert report.rows_per_object == {"Account": 1, "Task": 2, "User": 2}
    assert report.seconds >= 0
    assert org_path.is_file()
    assert sorted(path.name for path in org_path.parent.iterdir()) == ["org.sqlite"]
    assert OrgStore.open(org_path).count("Task") == 2


def test_values_are_stored_in_the_stored_form(export_dir, org_path):
    write_multi_object_export(export_dir)

    load(export_dir, org_path)

    task = rows(org_path, 'SELECT Id, Subject, OwnerId, ActivityDate, CompletedDateTime, CallDurationInSeconds '
                          'FROM "Task" ORDER BY Id')
    assert task == [
        (TASK_1, "Call Ada", USER_1, "2024-01-15", "2024-01-15T09:23:45.000Z", 60),
        (TASK_2, "Email", USER_2, None, None, None),
    ]
    assert rows(org_path, 'SELECT Name, NumberOfEmployees, AnnualRevenue FROM "Account"') == [
        ("Acme, Inc.", 120, 1500000.5)]
    assert rows(org_path, 'SELECT Id, IsActive FROM "User" ORDER BY Id') == [(USER_1, 1), (USER_2, 0)]


def test_fifteen_character_ids_are_stored_in_their_eighteen_character_form(export_dir, org_path):
    write_multi_object_export(export_dir)

    load(export_dir, org_path)

    assert rows(org_path, 'SELECT Id, OwnerId FROM "Task" WHERE Subject = ?', "Call Ada") == [(TASK_1, USER_1)]
    assert len(TASK_1[:15]) == 15 and len(TASK_1) == 18


def test_unknown_columns_join_the_schema_with_inferred_types(export_dir, org_path):
    write_multi_object_export(export_dir)

    report = load(export_dir, org_path)

    task = OrgStore.open(org_path).schema["Task"]
    kinds = {name: (task.field(name).type, task.field(name).length)
             for name in ("Flag__c", "Count__c", "Score__c", "Seen__c", "Due__c", "Account__c", "Notes__c",
                          "Label__c", "Nothing__c", "ReviewerId", "Custom__c")}
    assert kinds == {
        "Flag__c": ("boolean", 0), "Count__c": ("int", 0), "Score__c": ("double", 0),
        "Seen__c": ("datetime", 0), "Due__c": ("date", 0), "Account__c": ("reference", 18),
        "Notes__c": ("textarea", 32768), "Label__c": ("string", 255), "Nothing__c": ("string", 255),
        "ReviewerId": ("reference", 18), "Custom__c": ("string", 255),
    }
    assert task.field("Custom__c").custom and not task.field("ReviewerId").custom
    account = task.field("Account__c")
    assert (account.reference_to, account.relationship_name) == (("Account",), "Account__r")
    reviewer = task.field("ReviewerId")
    assert (reviewer.reference_to, reviewer.relationship_name) == (("User",), "Reviewer")
    assert [f.name for f in report.inferred_fields["Task"]] == list(kinds)
    assert "User" not in report.inferred_fields


def test_inferred_columns_hold_stored_values(export_dir, org_path):
    write_multi_object_export(export_dir)

    load(export_dir, org_path)

    assert rows(org_path, 'SELECT Flag__c, Count__c, Score__c, Seen__c, Due__c, Account__c, Label__c, '
                          'Nothing__c, ReviewerId FROM "Task" ORDER BY Id') == [
        (1, 3, 1.5, "2024-01-15T10:23:45.000Z", "2024-01-15", ACCOUNT_1, "02134", None, USER_1),
        (0, -4, 2.0, "2024-02-01T08:00:00.000Z", "2024-02-29", ACCOUNT_1, "007", None, USER_2),
    ]


def test_headers_match_fields_case_insensitively_under_the_schemas_casing(export_dir, org_path):
    write_multi_object_export(export_dir)

    report = load(export_dir, org_path)

    assert "subject" not in [f.name for f in report.inferred_fields["Task"]]
    assert rows(org_path, 'SELECT Subject FROM "Task" WHERE Id = ?', TASK_1) == [("Call Ada",)]


def test_fields_the_export_lacks_are_filled_as_salesforce_would(export_dir, org_path):
    write_csv(export_dir, "Contact.csv", [
        ["Id", "FirstName", "LastName", "LastModifiedDate", "CreatedById"],
        [make_id("003", 1), "Ada", "Lovelace", "2024-03-01T09:00:00.000Z", USER_1],
        [make_id("003", 2), "", "Hopper", "", ""],
    ])
    write_csv(export_dir, "Opportunity.csv", [
        ["Id", "Name", "StageName", "CloseDate"],
        [make_id("006", 1), "Won deal", "Closed Won", "2024-01-01"],
        [make_id("006", 2), "Lost deal", "Closed Lost", "2024-01-01"],
        [make_id("006", 3), "Open deal", "Prospecting", "2024-01-01"],
    ])
    write_csv(export_dir, "Case.csv", [
        ["Id", "Status"], [make_id("500", 1), "Closed"], [make_id("500", 2), "New"]])
    write_csv(export_dir, "User.csv", [["Id", "LastName"], [USER_1, "Lovelace"]])

    load(export_dir, org_path)

    assert rows(org_path, 'SELECT Name, IsDeleted, CreatedDate, LastModifiedDate, SystemModstamp, CreatedById, '
                          'LastModifiedById FROM "Contact" ORDER BY Id') == [
        ("Ada Lovelace", 0, "2024-03-01T09:00:00.000Z", "2024-03-01T09:00:00.000Z", "2024-03-01T09:00:00.000Z",
         USER_1, USER_1),
        ("Hopper", 0, "2024-06-01T12:00:00.000Z", "2024-06-01T12:00:00.000Z", "2024-06-01T12:00:00.000Z",
         None, None),
    ]
    assert rows(org_path, 'SELECT Name, IsClosed, IsWon FROM "Opportunity" ORDER BY Id') == [
        ("Won deal", 1, 1), ("Lost deal", 1, 0), ("Open deal", 0, 0)]
    assert rows(org_path, 'SELECT IsClosed, IsEscalated FROM "Case" ORDER BY Id') == [(1, 0), (0, 0)]
    assert rows(org_path, 'SELECT Name, IsActive FROM "User"') == [("Lovelace", 1)]


def test_given_values_are_never_overwritten_by_defaults(export_dir, org_path):
    write_csv(export_dir, "Opportunity.csv", [
        ["Id", "Name", "StageName", "IsClosed", "IsWon", "CreatedDate", "SystemModstamp"],
        [make_id("006", 1), "Odd deal", "Prospecting", "true", "true", "2024-01-01T00:00:00Z",
         "2024-02-01T00:00:00Z"],
    ])

    load(export_dir, org_path)

    assert rows(org_path, 'SELECT IsClosed, IsWon, CreatedDate, LastModifiedDate, SystemModstamp '
                          'FROM "Opportunity"') == [
        (1, 1, "2024-01-01T00:00:00.000Z", "2024-02-01T00:00:00.000Z", "2024-02-01T00:00:00.000Z")]


def test_new_ids_never_collide_with_exported_or_referenced_ones(export_dir, org_path):
    write_csv(export_dir, "Task.csv", [
        ["Id", "OwnerId"], [TASK_1, USER_1], [TASK_3, make_id("005", 5000)], [TASK_2, ""]])

    load(export_dir, org_path)

    store = OrgStore.open(org_path)
    with store.transaction() as db:
        assert store.new_ids("00T", 1, db) == [make_id("00T", 901)]
        assert store.new_ids("005", 1, db) == [make_id("005", 5001)]
        assert store.new_ids("001", 1, db) == [make_id("001", 1)]


def test_settings_are_saved_with_the_export_source_and_integration_user(export_dir, org_path):
    write_multi_object_export(export_dir)

    load(export_dir, org_path, settings={"instance_url": "https://localhost:8443"})

    settings = OrgStore.open(org_path).settings()
    assert settings["instance_url"] == "https://localhost:8443"
    assert settings["source"] == "export"
    assert settings["export_dir"] == str(export_dir.resolve())
    assert settings["integration_user_id"] == USER_2


def test_no_integration_user_is_set_when_the_export_has_none(export_dir, org_path):
    write_csv(export_dir, "User.csv", [["Id", "Username"], [USER_1, "ada@example.com"]])

    load(export_dir, org_path)

    assert OrgStore.open(org_path).setting("integration_user_id") is None


def test_indexes_are_created(export_dir, org_path):
    write_multi_object_export(export_dir)

    load(export_dir, org_path)

    indexes = {name for (name,) in rows(org_path, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "ix_Task_SystemModstamp" in indexes


def test_quoted_values_hold_commas_quotes_and_line_breaks(export_dir, org_path):
    write_text(export_dir, "Task.csv",
               'Id,Subject,Description__c\r\n'
               f'{TASK_1},"Call, then ""follow up""","line one\r\nline two\r\nline three"\r\n'
               f'{TASK_2},Plain,\r\n')

    load(export_dir, org_path)

    assert rows(org_path, 'SELECT Subject, Description__c FROM "Task" ORDER BY Id') == [
        ('Call, then "follow up"', "line one\r\nline two\r\nline three"), ("Plain", None)]


def test_line_numbers_stay_physical_after_a_multi_line_value(export_dir, org_path):
    write_text(export_dir, "Task.csv",
               "Id,Subject,ActivityDate\n"
               f'{TASK_1},"first\nsecond\nthird",2024-01-01\n'
               "\n"
               f"{TASK_2},Later,tomorrow\n")

    error = load_error(export_dir, org_path)

    assert (error.file.name, error.line, error.column) == ("Task.csv", 6, "ActivityDate")
    assert str(error) == "Task.csv, line 6, column ActivityDate: 'tomorrow' is not a date (YYYY-MM-DD)"


def test_a_large_file_loads_every_row_with_its_multi_line_values(export_dir, org_path, helper_process):
    write_large_task_export(export_dir)

    report = load(export_dir, org_path, helper_process=helper_process)

    assert report.rows_per_object == {"Task": 2500}
    assert [(f.name, f.type, f.reference_to) for f in report.inferred_fields["Task"]] == [
        ("Account__c", "reference", ("Account",))]
    assert rows(org_path, 'SELECT Subject, WhoId, ActivityDate, IsClosed, CallDurationInSeconds FROM "Task" '
                          "WHERE Id = ?", make_id("00T", 2031)) == [
        ('Call 2030\r\nabout "pricing", then\nmore', make_id("00Q", 2031), None, 0, 2030)]
    store = OrgStore.open(org_path)
    with store.transaction() as db:
        assert store.new_ids("00T", 1, db) == [make_id("00T", 2501)]
        assert store.new_ids("003", 1, db) == [make_id("003", 2499)]
        assert store.new_ids("00Q", 1, db) == [make_id("00Q", 2500)]


def test_the_helper_process_loads_the_same_org(export_dir, tmp_path):
    write_multi_object_export(export_dir)

    load(export_dir, tmp_path / "in-process.db", helper_process=False)
    load(export_dir, tmp_path / "helper.db", helper_process=True)

    for table in ("User", "Account", "Task", "_extra_fields", "_id_counters", "_meta"):
        assert rows(tmp_path / "helper.db", f'SELECT * FROM "{table}" ORDER BY 1, 2') == rows(
            tmp_path / "in-process.db", f'SELECT * FROM "{table}" ORDER BY 1, 2'), table


def test_a_byte_order_mark_is_not_part_of_the_first_column(export_dir, org_path):
    (export_dir / "Task.csv").write_bytes(f"\ufeffId,Subject\r\n{TASK_1},Hi\r\n".encode())

    assert load(export_dir, org_path).rows_per_object == {"Task": 1}


def test_a_header_only_file_loads_no_rows(export_dir, org_path):
    write_csv(export_dir, "Task.csv", [["Id", "Subject"]])

    assert load(export_dir, org_path).rows_per_object == {"Task": 0}


# --- refusals ---------------------------------------------------------------------------------------

def test_a_ragged_row_is_refused(export_dir, org_path):
    write_text(export_dir, "Task.csv", f"Id,Subject\n{TASK_1},Hi\n{TASK_2},Hi,extra\n")

    error = load_error(export_dir, org_path)

    assert (error.file.name, error.line, error.column) == ("Task.csv", 3, None)
    assert "3 values, but the header has 2 columns" in error.message


def test_a_short_row_is_refused_even_with_unknown_columns(export_dir, org_path):
    write_text(export_dir, "Task.csv", f"Id,Mood__c\n{TASK_1},happy\n{TASK_2}\n")

    error = load_error(export_dir, org_path)

    assert (error.file.name, error.line) == ("Task.csv", 3)


def test_a_file_that_is_not_utf8_is_refused_at_the_bad_byte(export_dir, org_path):
    (export_dir / "Account.csv").write_bytes(
        f"Id,Name\n{make_id('001', 1)},Plain\n{make_id('001', 2)},Caf\u00e9 Noir\n".encode("latin-1"))

    error = load_error(export_dir, org_path)

    assert (error.file.name, error.line, error.column) == ("Account.csv", 3, "Name")
    assert "byte 0xE9" in error.message and "save the file as UTF-8" in error.message


def test_an_id_with_another_objects_key_prefix_is_refused(export_dir, org_path):
    write_csv(export_dir, "Task.csv", [["Id", "Subject"], [TASK_1, "ok"], [USER_1, "a user id"]])

    error = load_error(export_dir, org_path)

    assert (error.file.name, error.line, error.column) == ("Task.csv", 3, "Id")
    assert "key prefix '005'" in error.message


def test_an_id_with_a_wrong_case_safe_suffix_is_refused(export_dir, org_path):
    wrong = TASK_1[:15] + ("AAB" if case_safe_suffix(TASK_1[:15]) != "AAB" else "AAC")
    write_csv(export_dir, "Task.csv", [["Id"], [wrong]])

    error = load_error(export_dir, org_path)

    assert (error.file.name, error.line, error.column) == ("Task.csv", 2, "Id")
    assert "case-safe suffix" in error.message


def test_a_duplicate_id_is_refused_naming_both_lines(export_dir, org_path):
    write_csv(export_dir, "Task.csv", [["Id", "Subject"], [TASK_1, "a"], [TASK_2, "b"], [TASK_1[:15], "c"]])

    error = load_error(export_dir, org_path)

    assert (error.file.name, error.line, error.column) == ("Task.csv", 4, "Id")
    assert "first on line 2" in error.message


@pytest.mark.parametrize(("column", "value", "expected"), [
    ("ActivityDate", "15/01/2024", "is not a date (YYYY-MM-DD)"),
    ("CompletedDateTime", "yesterday noon", "is not a datetime (ISO 8601, e.g. 2024-01-15T10:23:45.000Z)"),
    ("IsArchived", "maybe", "is not a boolean (true or false)"),
    ("CallDurationInSeconds", "sixty", "is not a whole number"),
    ("OwnerId", "not-an-id", "is not a Salesforce id"),
])
def test_a_value_that_does_not_fit_its_typed_column_is_refused(export_dir, org_path, column, value, expected):
    write_csv(export_dir, "Task.csv", [["Id", column], [TASK_1, ""], [TASK_2, value]])

    error = load_error(export_dir, org_path)

    assert (error.file.name, error.line, error.column) == ("Task.csv", 3, column)
    assert error.message == f"{value!r} {expected}" or error.message.startswith(f"{value!r} {expected}")


@pytest.mark.parametrize("record", [3, 1500, 2499])
def test_a_bad_value_anywhere_in_a_large_file_is_reported_at_its_physical_line(export_dir, org_path, helper_process,
                                                                               record):
    starts = write_large_task_export(export_dir, values={(record, "ActivityDate"): "someday"})

    error = load_error(export_dir, org_path, helper_process=helper_process)

    assert (error.file.name, error.line, error.column) == ("Task.csv", starts[record], "ActivityDate")
    assert error.message == "'someday' is not a date (YYYY-MM-DD)"


def test_the_first_problem_in_file_order_is_reported_whatever_its_column(export_dir, org_path):
    starts = write_large_task_export(export_dir, values={
        (1600, "CallDurationInSeconds"): "sixty", (1600, "ActivityDate"): "2024-02-30",
        (1601, "Subject"): "s" * 256, (1602, "Id"): make_id("005", 1)})

    error = load_error(export_dir, org_path)

    assert (error.line, error.column) == (starts[1600], "ActivityDate")


def test_a_duplicate_id_deep_in_a_large_file_names_both_lines(export_dir, org_path, helper_process):
    starts = write_large_task_export(export_dir, values={(2300, "Id"): make_id("00T", 11)})

    error = load_error(export_dir, org_path, helper_process=helper_process)

    assert (error.file.name, error.line, error.column) == ("Task.csv", starts[2300], "Id")
    assert f"first on line {starts[10]}" in error.message


def test_bytes_that_are_not_utf8_deep_in_a_large_file_are_refused_at_their_line(export_dir, org_path,
                                                                               helper_process):
    starts = write_large_task_export(export_dir, values={(2200, "Subject"): "Caf\u00e9"})
    path = export_dir / "Task.csv"
    path.write_bytes(path.read_bytes().replace("Caf\u00e9".encode(), "Caf\u00e9".encode("latin-1")))

    error = load_error(export_dir, org_path, helper_process=helper_process)

    assert (error.line, error.column) == (starts[2200], "Subject")
    assert "byte 0xE9" in error.message


def test_a_bad_value_just_before_bad_bytes_is_reported_first(export_dir, org_path):
    # No unknown column: with one, the first pass (type inference) reads the whole file before converting.
    starts = write_large_task_export(export_dir, header=LARGE_HEADER[:-1],
                                     values={(2198, "ActivityDate"): "soon", (2200, "Subject"): "Caf\u00e9"})
    path = export_dir / "Task.csv"
    path.write_bytes(path.read_bytes().replace("Caf\u00e9".encode(), "Caf\u00e9".encode("latin-1")))

    error = load_error(export_dir, org_path)

    assert (error.line, error.column) == (starts[2198], "ActivityDate")
    assert error.message == "'soon' is not a date (YYYY-MM-DD)"


@pytest.mark.parametrize(("tail", "fragment"), [
    ('"{id}","never closed\r\nstill open\r\n', "never closed"),
    ('"{id}","two columns"\r\n', "2 values, but the header has 8 columns"),
    ('"{id}","text" after the quote\r\n', "must be followed by a comma"),
])
def test_a_broken_record_at_the_end_of_a_large_file_is_reported_where_it_starts(export_dir, org_path, helper_process,
                                                                                 tail, fragment):
    starts = write_large_task_export(export_dir)
    path = export_dir / "Task.csv"
    with open(path, "a", encoding="utf-8", newline="") as handle:
        handle.write(tail.format(id=make_id("00T", 9999)))

    error = load_error(export_dir, org_path, helper_process=helper_process)

    assert (error.file.name, error.line) == ("Task.csv", starts[-1])
    assert fragment in error.message


@pytest.mark.parametrize(("values", "types"), [
    ({}, ["reference", "datetime", "date"]),
    ({(2450, "Seen__c"): "2024-01-15T10:23:45+01:00", (2451, "Due__c"): ""}, ["reference", "datetime", "date"]),
    ({(2450, "Account__c"): make_id("003", 1), (2451, "Seen__c"): "2024-02-30T00:00:00.000Z",
      (2452, "Due__c"): "2024-13-01"}, ["string", "string", "string"]),
])
def test_an_unknown_column_is_inferred_from_every_row_of_a_large_file(export_dir, org_path, values, types):
    write_large_task_export(export_dir, values=values, header=[*LARGE_HEADER, "Seen__c", "Due__c"])

    report = load(export_dir, org_path)

    assert [(f.name, f.type) for f in report.inferred_fields["Task"]] == list(
        zip(["Account__c", "Seen__c", "Due__c"], types))


BULK_SAMPLES = {
    "boolean": ["", "true", "false", "TRUE", "False", "1", "0", "yes", " no "],
    "int": ["", "0", "-0", "42", "007", " 7 ", "+5", "1_000", "42.0", "9" * 18, "9" * 19, "-9223372036854775808"],
    "double": ["", "1.5", "-0.0", "1e308", "1500000.5", ".5", "5.", " 2 ", "1_0.5"],
    "date": ["", "2024-01-15", "2024-02-29", "2000-02-29", "0999-01-01", "2024-01-15 ", "9999-12-31"],
    "datetime": ["", "2024-01-15T10:23:45.000Z", "2024-01-15T10:23:45.123Z", "2024-01-15T10:23:45+01:00",
                 "2024-01-15 10:23:45.000Z", "2024-01-15T10:23:45Z", "0999-01-15T10:23:45.000Z",
                 "2024-02-29T23:59:59.999Z"],
    "reference": ["", make_id("005", 1), make_id("005", 1)[:15], make_id("001", 99999)],
    "string": ["", "a", "a,b", "x" * 10, "line\nbreak", "\u00e9" * 10],
}
BULK_REFUSED = {"boolean": "maybe", "int": "9" * 20, "double": "inf", "date": "2023-02-29",
                "datetime": "2024-01-15T24:00:00.000Z", "reference": make_id("005", 2)[:17] + "X", "string": "x" * 11}


def converted_one_at_a_time(f: FieldSchema, texts: list[str]) -> object:
    try:
        return [(type(value), value) for value in (text_to_stored(f, text) for text in texts)]
    except ValueProblem as problem:
        return problem.message


def converted_in_bulk(f: FieldSchema, texts: list[str]) -> object:
    try:
        return [(type(value), value) for value in texts_to_stored(f, texts)]
    except ValueProblem as problem:
        return problem.message


@pytest.mark.parametrize("kind", sorted(BULK_SAMPLES))
def test_columns_convert_in_bulk_exactly_as_one_value_at_a_time(kind):
    f = FieldSchema("Value__c", kind, length=10 if kind == "string" else 0)
    valid = [text for text in BULK_SAMPLES[kind] if text]
    columns = [
        [valid[1]] * 50 + [""] * 10,  # the forms exports write: decided in bulk
        BULK_SAMPLES[kind] * 5,  # mixed forms: some or all converted one at a time
        BULK_SAMPLES[kind] + [BULK_REFUSED[kind]] + BULK_SAMPLES[kind],  # refused: the same error
    ]
    for texts in columns:
        assert converted_in_bulk(f, texts) == converted_one_at_a_time(f, texts)


def test_a_non_number_in_a_currency_column_is_refused(export_dir, org_path):
    write_csv(export_dir, "Account.csv", [["Id", "AnnualRevenue"], [ACCOUNT_1, "$1,000"]])

    error = load_error(export_dir, org_path)

    assert (error.file.name, error.line, error.column) == ("Account.csv", 2, "AnnualRevenue")
    assert error.message == "'$1,000' is not a number (e.g. 1234.5)"


def test_a_string_longer_than_its_field_is_refused(export_dir, org_path):
    write_csv(export_dir, "Task.csv", [["Id", "Subject"], [TASK_1, "s" * 256]])

    error = load_error(export_dir, org_path)

    assert (error.file.name, error.line, error.column) == ("Task.csv", 2, "Subject")
    assert "STRING_TOO_LONG" in error.message and "255" in error.message


def test_a_file_for_an_object_the_sandbox_does_not_model_is_refused(export_dir, org_path):
    write_csv(export_dir, "Task.csv", [["Id"], [TASK_1]])
    write_csv(export_dir, "Invoice__c.csv", [["Id"], ["a00000000000001"]])

    error = load_error(export_dir, org_path)

    assert (error.file.name, error.line, error.column) == ("Invoice__c.csv", None, None)
    assert "'Invoice__c'" in error.message and "Opportunity" in error.message and "User" in error.message


@pytest.mark.parametrize(("header", "column", "fragment"), [
    (["Subject", "Status"], None, "no Id column"),
    (["Id", "Subject", "subject"], "subject", "appears twice in the header (columns 2 and 3)"),
    (["Id", "", "Subject"], None, "column 2 of the header has no name"),
    (["Id", "Owner.Name"], "Owner.Name", "relationship column"),
])
def test_a_bad_header_is_refused(export_dir, org_path, header, column, fragment):
    write_csv(export_dir, "Task.csv", [header, ["x"] * len(header)])

    error = load_error(export_dir, org_path)

    assert (error.file.name, error.line, error.column) == ("Task.csv", 1, column)
    assert fragment in error.message


def test_an_unclosed_quote_is_refused(export_dir, org_path):
    write_text(export_dir, "Task.csv", f'Id,Subject\n{TASK_1},ok\n{TASK_2},"never closed\nmore\n')

    error = load_error(export_dir, org_path)

    assert (error.file.name, error.line) == ("Task.csv", 3)
    assert "never closed" in error.message


@pytest.mark.parametrize("files", [[], ["notes.txt"]])
def test_a_directory_without_csv_files_is_refused(export_dir, org_path, files):
    for name in files:
        (export_dir / name).write_text("hello")

    error = load_error(export_dir, org_path)

    assert error.file == export_dir and "no CSV files" in error.message


def test_an_existing_org_is_never_replaced(export_dir, org_path):
    write_csv(export_dir, "Task.csv", [["Id"], [TASK_1]])
    org_path.parent.mkdir(parents=True)
    org_path.write_text("keep me")

    with pytest.raises(ExportError, match="already exists"):
        load(export_dir, org_path)

    assert org_path.read_text() == "keep me"


def test_an_error_in_a_later_file_leaves_nothing_behind(export_dir, org_path):
    write_multi_object_export(export_dir)
    write_csv(export_dir, "Opportunity.csv", [["Id", "CloseDate"], [make_id("006", 1), "soon"]])

    error = load_error(export_dir, org_path)

    assert (error.file.name, error.line, error.column) == ("Opportunity.csv", 2, "CloseDate")


def test_export_errors_survive_pickling(export_dir, org_path):
    error = ExportError(export_dir / "Task.csv", 3, "Subject", "too long")

    copy = pickle.loads(pickle.dumps(error))

    assert (str(copy), copy.line, copy.column) == ("Task.csv, line 3, column Subject: too long", 3, "Subject")
