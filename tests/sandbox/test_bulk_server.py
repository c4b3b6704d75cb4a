"""Bulk API 2.0 in the sandbox, driven by simple-salesforce's real `bulk2` client over HTTPS.

The module serves an org of its own (a few hundred known Tasks and a handful of Users), so every
expected row is known here. Query tests read only the seeded Tasks (Subject 'Seeded ...'); ingest
tests insert and change Tasks of their own, and change only fields of Users no query test reads.
Its `sandbox` and `sf` fixtures override conftest's (the shared generated org) for that reason; they
start the org with the same runner and log in with the same connector.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.bulk2 import Operation
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceOperationError,
    SalesforceResourceNotFound,
)

from connectors.salesforce import connect
from sandbox.ids import make_id
from sandbox.runner import RunningSandbox, SandboxConfig, start_sandbox
from sandbox.schema import FieldSchema
from sandbox.server import bulk
from sandbox.server.bulk import BulkJob, csv_lines_sql
from sandbox.soql import CompiledQuery, OutputColumn
from sandbox.store import OrgStore
from tests.conftest import sandbox_settings

SEEDED_TASKS = 300
DELETED_TASKS = 20
OWNER_NAMES = ["Integration User", "Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra"]
CREATED = "2024-01-01T00:00:00.000Z"
SEEDED_QUERY = ("SELECT Id, Subject, Owner.Name, IsClosed, ActivityDate, CallDurationInSeconds FROM Task "
                "WHERE Subject LIKE 'Seeded%'")


@dataclass(frozen=True)
class Org:
    """What the module's org holds: users (the first is the integration user) and the seeded Tasks."""

    users: list[str]
    # Each seeded Task as a Bulk API CSV row would show it, by Id.
    tasks: dict[str, dict[str, str]]
    deleted: set[str]


def _build_org(path: Path) -> Org:
    store = OrgStore.create(path, {"source": "export", "preset": "export"})
    audit = {"CreatedDate": CREATED, "LastModifiedDate": CREATED, "SystemModstamp": CREATED}
    with store.transaction() as db:
        organization = store.new_ids("00D", 1, db)[0]
        profile = store.new_ids("00e", 1, db)[0]
        users = store.new_ids("005", len(OWNER_NAMES), db)
        store.insert_rows("Organization", ["Id", "Name", "CreatedById", "LastModifiedById", *audit],
                          [[organization, "Bulk Test Org", users[0], users[0], *audit.values()]], db)
        store.insert_rows("Profile", ["Id", "Name", "CreatedById", "LastModifiedById", *audit],
                          [[profile, "System Administrator", users[0], users[0], *audit.values()]], db)
        user_rows = []
        for user_id, name in zip(users, OWNER_NAMES):
            first, last = name.split(" ")
            user_rows.append([user_id, f"{first.lower()}@bulk.test", first, last, name, f"{first.lower()}@bulk.test",
                              profile, 1, "Standard", "Engineering", "Staff", users[0], users[0], *audit.values()])
        store.insert_rows("User", ["Id", "Username", "FirstName", "LastName", "Name", "Email", "ProfileId",
                                   "IsActive", "UserType", "Department", "Title", "CreatedById", "LastModifiedById",
                                   *audit], user_rows, db)
        task_ids = store.new_ids("00T", SEEDED_TASKS, db)
        tasks, deleted, task_rows = {}, set(), []
        for number, task_id in enumerate(task_ids):
            owner = number % len(users)
            closed = number % 3 == 0
            subject = f'Seeded call {number:03d}, "quoted"' if number % 50 == 0 else f"Seeded call {number:03d}"
            duration = None if number % 7 == 0 else number * 11
            is_deleted = number >= SEEDED_TASKS - DELETED_TASKS
            task_rows.append([task_id, subject, users[owner], "Completed" if closed else "Not Started", int(closed),
                              f"2024-02-{number % 28 + 1:02d}", duration, int(is_deleted), users[0], users[0],
                              *audit.values()])
            tasks[task_id] = {"Id": task_id, "Subject": subject, "Owner.Name": OWNER_NAMES[owner],
                              "IsClosed": "true" if closed else "false",
                              "ActivityDate": f"2024-02-{number % 28 + 1:02d}",
                              "CallDurationInSeconds": "" if duration is None else str(duration)}
            if is_deleted:
                deleted.add(task_id)
        store.insert_rows("Task", ["Id", "Subject", "OwnerId", "Status", "IsClosed", "ActivityDate",
                                   "CallDurationInSeconds", "IsDeleted", "CreatedById", "LastModifiedById", *audit],
                          task_rows, db)
    store.set_setting("integration_user_id", users[0])
    store.set_setting("organization_id", organization)
    store.close()
    return Org(users, tasks, deleted)


def _start(data_dir: Path) -> RunningSandbox:
    return start_sandbox(SandboxConfig(data_dir=data_dir, port=0))


@pytest.fixture(scope="module")
def org_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Org]:
    data_dir = tmp_path_factory.mktemp("bulk-sandbox")
    return data_dir, _build_org(data_dir / "org.db")


@pytest.fixture(scope="module")
def sandbox(org_dir: tuple[Path, Org]) -> Iterator[RunningSandbox]:
    """This module's org, served over HTTPS by the real runner."""
    running = _start(org_dir[0])
    yield running
    running.stop()


@pytest.fixture
def org(org_dir: tuple[Path, Org]) -> Org:
    return org_dir[1]


@pytest.fixture
def sf(sandbox: RunningSandbox) -> Iterator[Salesforce]:
    """A freshly logged-in client (a test may expire every session); faults are cleared afterwards."""
    client = connect(sandbox_settings(sandbox).salesforce())
    yield client
    client.session.close()
    sandbox.clear_faults()


def parse(page: str, delimiter: str = ",") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(page, newline=""), delimiter=delimiter))


def org_rows(sandbox: RunningSandbox, sql: str, *parameters: object) -> list[tuple]:
    with sqlite3.connect(sandbox.org_path) as db:
        return db.execute(sql, parameters).fetchall()


# --- query jobs ----------------------------------------------------------------------------------------


def test_query_pages_through_locators_and_returns_every_live_row(sf: Salesforce, org: Org) -> None:
    pages = list(sf.bulk2.Task.query(SEEDED_QUERY, max_records=100, wait=0))

    live = SEEDED_TASKS - DELETED_TASKS
    assert len(pages) == -(-live // 100)
    assert all(page.startswith('"Id","Subject","Owner.Name","IsClosed","ActivityDate","CallDurationInSeconds"\n')
               for page in pages)
    rows = [row for page in pages for row in parse(page)]
    assert len(rows) == live
    assert {row["Id"]: row for row in rows} == {task_id: task for task_id, task in org.tasks.items()
                                                 if task_id not in org.deleted}


def test_query_all_also_returns_deleted_rows(sf: Salesforce, org: Org) -> None:
    pages = list(sf.bulk2.Task.query_all(SEEDED_QUERY.replace("IsClosed", "IsDeleted"), wait=0))

    rows = [row for page in pages for row in parse(page)]
    assert len(rows) == SEEDED_TASKS
    assert {row["Id"] for row in rows if row["IsDeleted"] == "true"} == org.deleted


def test_query_honours_the_column_delimiter_and_line_ending(sf: Salesforce, org: Org) -> None:
    [page] = sf.bulk2.Task.query("SELECT Id, Subject FROM Task WHERE Subject LIKE 'Seeded call 050%'",
                                 column_delimiter="TAB", line_ending="CRLF", wait=0)

    assert page == f'"Id"\t"Subject"\r\n"{_task_id(org, 50)}"\t"Seeded call 050, ""quoted"""\r\n'


def test_pages_keep_the_order_by_of_the_query_across_chunks(sf: Salesforce, org: Org,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "STREAM_CHUNK_ROWS", 25)  # each page streams in several chunks

    pages = sf.bulk2.Task.query("SELECT Subject FROM Task WHERE Subject LIKE 'Seeded%' ORDER BY Subject DESC",
                                max_records=110, wait=0)

    subjects = [row["Subject"] for page in pages for row in parse(page)]
    assert subjects == sorted((task["Subject"] for task_id, task in org.tasks.items() if task_id not in org.deleted),
                              reverse=True)


def test_job_info_has_the_fields_clients_read(sf: Salesforce, org: Org) -> None:
    client = sf.bulk2.Task._client
    query_job = client.create_job(Operation.query, "SELECT Id FROM Task")
    client.wait_for_job(query_job["id"], is_query=True, wait=0)
    tasks = sf.query("SELECT COUNT() FROM Task")["totalSize"]
    [ingest] = sf.bulk2.Task.insert(records=[{"Subject": "Info", "Status": "Completed"}], wait=0)

    query_info = client.get_job(query_job["id"], is_query=True)
    ingest_info = client.get_job(ingest["job_id"], is_query=False)
    listed = sf.session.get(f"{sf.bulk2_url}ingest", headers=sf.headers).json()

    assert query_job["state"] == "UploadComplete" and query_job["id"].startswith("750")
    assert {"id", "operation", "object", "createdById", "createdDate", "systemModstamp", "state", "concurrencyMode",
            "contentType", "apiVersion", "lineEnding", "columnDelimiter"} <= set(query_job)
    assert (query_info["state"], query_info["jobType"], query_info["object"], query_info["createdById"]) == (
        "JobComplete", "V2Query", "Task", org.users[0])
    assert query_info["numberRecordsProcessed"] == tasks
    assert (ingest_info["jobType"], ingest_info["numberRecordsProcessed"], ingest_info["numberRecordsFailed"]) == (
        "V2Ingest", 1, 0)
    assert ingest_info["contentUrl"].endswith(f"/jobs/ingest/{ingest['job_id']}/batches")
    assert listed["done"] is True and ingest["job_id"] in [job["id"] for job in listed["records"]]


def test_results_are_utf8_csv_paged_by_headers_and_gzipped_when_asked(sf: Salesforce) -> None:
    client = sf.bulk2.Task._client
    job_id = client.create_job(Operation.query, SEEDED_QUERY)["id"]
    client.wait_for_job(job_id, is_query=True, wait=0)
    url = f"{sf.bulk2_url}query/{job_id}/results"

    first = sf.session.get(url, params={"maxRecords": 200}, headers=sf.headers)
    last = sf.session.get(url, params={"maxRecords": 200, "locator": first.headers["Sforce-Locator"]},
                          headers=sf.headers | {"Accept-Encoding": "identity"})

    assert first.headers["Content-Type"] == "text/csv; charset=UTF-8"
    assert first.headers["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in last.headers
    assert (first.headers["Sforce-NumberOfRecords"], last.headers["Sforce-NumberOfRecords"]) == ("200", "80")
    assert last.headers["Sforce-Locator"] == "null"
    assert len(parse(first.text)) + len(parse(last.text)) == SEEDED_TASKS - DELETED_TASKS
    bad = sf.session.get(url, params={"locator": "bm90IGEgbnVtYmVy"}, headers=sf.headers)
    assert (bad.status_code, bad.json()[0]["errorCode"]) == (400, "INVALID_QUERY_LOCATOR")


def test_a_query_matching_nothing_gives_the_header_alone(sf: Salesforce) -> None:
    pages = list(sf.bulk2.Task.query("SELECT Id, Subject FROM Task WHERE Subject = 'nothing like this'", wait=0))

    assert pages == ['"Id","Subject"\n']


def test_a_query_wider_than_one_printf_call_renders_every_column() -> None:
    columns = [OutputColumn(f"F{n}", FieldSchema(f"F{n}", "string"), None, n) for n in range(230)]
    values = ", ".join("NULL" if n % 3 == 0 else f"'v\"{n}'" for n in range(230))
    compiled = CompiledQuery(None, columns, f"SELECT {values}", [], False, None, None, {})  # type: ignore[arg-type]
    job = BulkJob("750", "query", "query", "Task", "InProgress", "PIPE", "CRLF", "59.0", "005", "", "")

    [(line,)] = sqlite3.connect(":memory:").execute(csv_lines_sql(compiled, job)).fetchall()

    assert line == "|".join('""' if n % 3 == 0 else f'"v""{n}"' for n in range(230)) + "\r\n"


@pytest.mark.parametrize(("soql", "message"), [
    ("SELECT Id FROM Task WHERE", "MALFORMED_QUERY"),
    ("SELECT Nope FROM Task", "INVALID_FIELD"),
    ("SELECT COUNT() FROM Task", "not supported in Bulk API 2.0"),
])
def test_a_bad_query_is_refused_when_the_job_is_created(sf: Salesforce, soql: str, message: str) -> None:
    with pytest.raises(SalesforceMalformedRequest, match=message):
        next(sf.bulk2.Task.query(soql, wait=0))


def test_download_writes_each_page_to_its_own_file(sf: Salesforce, tmp_path: Path) -> None:
    pages = sf.bulk2.Task.download(SEEDED_QUERY, str(tmp_path), max_records=120, wait=0)

    assert [page["number_of_records"] for page in pages] == [120, 120, 40]
    assert [bool(page["locator"]) for page in pages] == [True, True, False]
    rows = [row for page in pages for row in parse(Path(page["file"]).read_text(encoding="utf-8"))]
    assert len({row["Id"] for row in rows}) == SEEDED_TASKS - DELETED_TASKS


def test_a_cut_download_fails_mid_stream_and_the_same_page_can_be_fetched_again(
        sf: Salesforce, sandbox: RunningSandbox) -> None:
    client = sf.bulk2.Task._client  # the calls `query` makes, one by one, so the page can be fetched again
    job_id = client.create_job(Operation.query, SEEDED_QUERY)["id"]
    client.wait_for_job(job_id, is_query=True, wait=0)
    second_page = client.get_query_results(job_id, max_records=100)["locator"]
    sandbox.set_faults(cut_bulk_downloads=1)

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        client.get_query_results(job_id, locator=second_page, max_records=100)
    again = client.get_query_results(job_id, locator=second_page, max_records=100)

    assert again["number_of_records"] == 100
    assert len(parse(again["records"])) == 100


def test_results_of_an_unknown_job_are_not_found(sf: Salesforce) -> None:
    with pytest.raises(SalesforceResourceNotFound):
        sf.bulk2.Task._client.get_query_results("750Hs00000zzzzzAAA")
    with pytest.raises(SalesforceResourceNotFound):
        sf.bulk2.Task.get_failed_records("750Hs00000zzzzzAAA")


def test_an_expired_session_raises_expired_session(sf: Salesforce, sandbox: RunningSandbox) -> None:
    sandbox.expire_sessions()

    with pytest.raises(SalesforceExpiredSession):
        next(sf.bulk2.Task.query(SEEDED_QUERY, wait=0))
    with pytest.raises(SalesforceExpiredSession):
        sf.bulk2.Task.insert(records=[{"Subject": "never written", "Status": "Not Started"}], wait=0)


# --- ingest jobs ---------------------------------------------------------------------------------------


def test_insert_update_and_delete_report_every_row(sf: Salesforce, sandbox: RunningSandbox, org: Org) -> None:
    records = [{"Subject": f"Inserted {number}", "Status": "Completed", "OwnerId": org.users[1]}
               for number in range(3)] + [{"Subject": "No status", "Status": ""}]

    [inserted] = sf.bulk2.Task.insert(records=records, wait=0)

    assert (inserted["numberRecordsProcessed"], inserted["numberRecordsFailed"]) == (4, 1)
    created = parse(sf.bulk2.Task.get_successful_records(inserted["job_id"]))
    assert [(row["sf__Created"], row["Subject"]) for row in created] == [("true", f"Inserted {n}") for n in range(3)]
    [failed] = parse(sf.bulk2.Task.get_failed_records(inserted["job_id"]))
    assert failed["sf__Error"] == "REQUIRED_FIELD_MISSING:Required fields are missing: [Status]:Status --"
    ids = [row["sf__Id"] for row in created]
    assert org_rows(sandbox, "SELECT IsClosed, OwnerId, CreatedById FROM Task WHERE Id IN (?, ?, ?)", *ids) == [
        (1, org.users[1], org.users[0])] * 3

    sandbox.set_faults(fail_update_ids=[ids[0]])
    [updated] = sf.bulk2.Task.update(records=[{"Id": task_id, "Status": "Not Started"} for task_id in ids], wait=0)

    assert (updated["numberRecordsProcessed"], updated["numberRecordsFailed"]) == (3, 1)
    [refused] = parse(sf.bulk2.Task.get_failed_records(updated["job_id"]))
    assert refused["sf__Id"] == ids[0]
    assert refused["sf__Error"].startswith("FIELD_CUSTOM_VALIDATION_EXCEPTION:")
    assert [row["sf__Created"] for row in parse(sf.bulk2.Task.get_successful_records(updated["job_id"]))] == [
        "false", "false"]
    assert org_rows(sandbox, "SELECT Id, IsClosed FROM Task WHERE Id IN (?, ?, ?) ORDER BY Id", *ids) == [
        (ids[0], 1), (ids[1], 0), (ids[2], 0)]

    missing = make_id("00T", 999_999)
    [deleted] = sf.bulk2.Task.delete(records=[{"Id": ids[1]}, {"Id": missing}], wait=0)

    assert (deleted["numberRecordsProcessed"], deleted["numberRecordsFailed"]) == (2, 1)
    assert org_rows(sandbox, "SELECT IsDeleted FROM Task WHERE Id = ?", ids[1]) == [(1,)]
    [unknown] = parse(sf.bulk2.Task.get_failed_records(deleted["job_id"]))
    assert (unknown["sf__Id"], unknown["sf__Error"]) == (
        missing, "INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--")

    [purged] = sf.bulk2.Task.hard_delete(records=[{"Id": ids[2]}], wait=0)

    assert purged["numberRecordsFailed"] == 0
    assert org_rows(sandbox, "SELECT COUNT(*) FROM Task WHERE Id = ?", ids[2]) == [(0,)]


def test_upsert_by_id_updates_known_rows_and_inserts_the_others(sf: Salesforce) -> None:
    [first] = sf.bulk2.Task.insert(records=[{"Subject": "Upsert me", "Status": "Not Started"}], wait=0)
    [existing] = parse(sf.bulk2.Task.get_successful_records(first["job_id"]))

    [upserted] = sf.bulk2.Task.upsert(records=[{"Id": existing["sf__Id"], "Subject": "Upserted", "Status": ""},
                                               {"Id": "", "Subject": "Upsert new", "Status": "Completed"}],
                                      external_id_field="Id", wait=0)

    outcomes = parse(sf.bulk2.Task.get_successful_records(upserted["job_id"]))
    assert {(row["Subject"], row["sf__Created"]) for row in outcomes} == {("Upserted", "false"),
                                                                           ("Upsert new", "true")}


def test_an_empty_cell_leaves_a_value_and_na_sets_it_null(sf: Salesforce, sandbox: RunningSandbox, org: Org) -> None:
    user = org.users[2]

    [result] = sf.bulk2.User.update(records=[{"Id": user, "Title": "", "Department": "#N/A"}], wait=0)

    assert result["numberRecordsFailed"] == 0
    assert org_rows(sandbox, "SELECT Title, Department FROM User WHERE Id = ?", user) == [("Staff", None)]


def test_a_too_long_value_fails_its_row_with_string_too_long(sf: Salesforce, org: Org) -> None:
    [result] = sf.bulk2.User.update(records=[{"Id": org.users[3], "Persona_Reason__c": "x" * 300},
                                             {"Id": org.users[4], "Persona_Reason__c": "fits"}], wait=0)

    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (2, 1)
    [failed] = parse(sf.bulk2.User.get_failed_records(result["job_id"]))
    assert failed["sf__Id"] == org.users[3]
    assert failed["sf__Error"].startswith("STRING_TOO_LONG:Persona Reason: data value too large")
    assert failed["sf__Error"].endswith(":Persona_Reason__c --")


def test_an_unknown_column_fails_the_whole_job(sf: Salesforce) -> None:
    with pytest.raises(SalesforceOperationError, match="InvalidBatch : Field name not found : Foo"):
        sf.bulk2.Task.insert(records=[{"Subject": "x", "Status": "Completed", "Foo": "bar"}], wait=0)


def test_an_aborted_job_reports_its_rows_unprocessed(sf: Salesforce, sandbox: RunningSandbox) -> None:
    client = sf.bulk2.Task._client
    job_id = client.create_job(Operation.insert)["id"]
    client.upload_job_data(job_id, "Subject,Status\nFirst,Completed\n")
    client.upload_job_data(job_id, "Subject,Status\nSecond,Completed\n")

    client.abort_job(job_id, is_query=False)

    assert client.get_job(job_id, is_query=False)["state"] == "Aborted"
    expected = '"Subject","Status"\n"First","Completed"\n"Second","Completed"\n'
    assert sf.bulk2.Task.get_unprocessed_records(job_id) == expected
    lowercase = sf.session.get(f"{sf.bulk2_url}ingest/{job_id}/unprocessedrecords", headers=sf.headers)
    assert (lowercase.status_code, lowercase.text) == (200, expected)
    assert lowercase.headers["Content-Type"] == "text/csv; charset=UTF-8"
    assert org_rows(sandbox, "SELECT COUNT(*) FROM Task WHERE Subject IN ('First', 'Second')") == [(0,)]


def test_an_unknown_object_is_refused_when_the_job_is_created(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest, match="INVALIDENTITY"):
        sf.bulk2.Nope.insert(records=[{"Name": "x"}], wait=0)


# --- durability ----------------------------------------------------------------------------------------


def test_jobs_and_their_results_survive_a_restart(tmp_path: Path) -> None:
    _build_org(tmp_path / "org.db")
    running = _start(tmp_path)
    client = connect(sandbox_settings(running).salesforce()).bulk2.Task._client
    try:
        job_id = client.create_job(Operation.query, SEEDED_QUERY)["id"]
        client.wait_for_job(job_id, is_query=True, wait=0)
    finally:
        client.session.close()  # an idle keep-alive connection would hold up the server's shutdown
        running.stop()

    running = _start(tmp_path)
    client = connect(sandbox_settings(running).salesforce()).bulk2.Task._client
    try:
        assert client.get_job(job_id, is_query=True)["state"] == "JobComplete"
        page = client.get_query_results(job_id, max_records=1000)
    finally:
        client.session.close()
        running.stop()
    assert page["number_of_records"] == SEEDED_TASKS - DELETED_TASKS


def test_a_query_job_interrupted_by_a_restart_runs_again(tmp_path: Path) -> None:
    _build_org(tmp_path / "org.db")
    running = _start(tmp_path)
    client = connect(sandbox_settings(running).salesforce()).bulk2.Task._client
    try:
        job_id = client.create_job(Operation.query, SEEDED_QUERY)["id"]
        client.wait_for_job(job_id, is_query=True, wait=0)
    finally:
        client.session.close()
        running.stop()
    with sqlite3.connect(tmp_path / "org.db") as db:  # as if the server had died while evaluating it
        db.execute("UPDATE _bulk_jobs SET state = 'InProgress' WHERE id = ?", (job_id,))
    with sqlite3.connect(tmp_path / "results.db") as db:
        db.execute(f"DROP TABLE bulk_{job_id}")

    running = _start(tmp_path)
    client = connect(sandbox_settings(running).salesforce()).bulk2.Task._client
    try:
        client.wait_for_job(job_id, is_query=True, wait=0)
        page = client.get_query_results(job_id, max_records=1000)
    finally:
        client.session.close()
        running.stop()
    assert page["number_of_records"] == SEEDED_TASKS - DELETED_TASKS


def _task_id(org: Org, number: int) -> str:
    return next(task_id for task_id, task in org.tasks.items()
                if task["Subject"].startswith(f"Seeded call {number:03d}"))
