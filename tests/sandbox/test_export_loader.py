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
from sandbox.store import OrgStore

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


def load_error(export_dir: Path, org_path: Path) -> ExportError:
    """The ExportError the export raises; checks nothing was left behind."""
    with pytest.raises(ExportError) as raised:
        load(export_dir, org_path)
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
