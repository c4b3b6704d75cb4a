"""SalesforceClient against the sandbox over a real socket: paging, renewal, retries, limits, failures.

Faults are injected through the `faults` fixture (cleared after each test) or on a `fresh_sandbox`
(tests that expire sessions or stop the server, so no other test's session is touched). Retries use
tiny waits, so the whole file runs in seconds.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from simple_salesforce import Salesforce

from connectors.salesforce import ApiReserveError, BulkPage, RetryPolicy, SalesforceClient, login
from connectors.salesforce.login import http_session
from core.errors import SalesforceAuthError, SalesforceError
from core.settings import Settings
from sandbox.runner import RunningSandbox
from tests.conftest import sandbox_settings

FAST = RetryPolicy(initial_wait=0.01, max_wait=0.05)
TASKS = "SELECT Id, Subject, Owner.Name FROM Task"
COUNT_TASKS = "SELECT COUNT() FROM Task"
CLIENT_LOG = "connectors.salesforce.client"


@pytest.fixture
def client(settings: Settings) -> SalesforceClient:
    return SalesforceClient(settings.salesforce(), retry=FAST)


@pytest.fixture
def fresh_client(fresh_sandbox: RunningSandbox) -> SalesforceClient:
    return SalesforceClient(sandbox_settings(fresh_sandbox).salesforce(), retry=FAST)


def _csv_ids(page: BulkPage) -> list[str]:
    rows = list(csv.DictReader(io.StringIO(page.read_text())))
    assert len(rows) == page.rows
    return [row["Id"] for row in rows]


def _read(pages: Iterator[BulkPage]) -> list[tuple[BulkPage, list[str]]]:
    """Each page with its Ids, read while the page's file exists (until the next page is asked for)."""
    return [(page, _csv_ids(page)) for page in pages]


def _retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == CLIENT_LOG and "retrying in" in record.getMessage()]


def _renewals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == CLIENT_LOG and "logging in again" in record.getMessage()]


# --- reading -------------------------------------------------------------------------------------------

def test_count_and_rest_pages_equal_a_direct_query(client: SalesforceClient, sf: Salesforce) -> None:
    direct = [dict(record) for record in sf.query_all_iter(TASKS)]

    pages = list(client.rest_pages(TASKS, sobject="Task"))

    assert len(pages) > 1
    records = [record for page in pages for record in page]
    assert client.count(COUNT_TASKS, sobject="Task") == len(direct) == len(records)
    assert [record["Id"] for record in records] == [record["Id"] for record in direct]
    assert all("attributes" not in record and "attributes" not in record["Owner"] for record in records)
    assert records[0]["Owner"]["Name"] == direct[0]["Owner"]["Name"]


def test_bulk_pages_rows_equal_the_rest_count(client: SalesforceClient, tmp_path: Path) -> None:
    expected = client.count(COUNT_TASKS, sobject="Task")

    read = _read(client.bulk_pages(TASKS, sobject="Task", max_records=2000, poll_seconds=0, download_dir=tmp_path))
    pages = [page for page, _ in read]

    assert len(pages) == -(-expected // 2000)
    ids = [record_id for _, page_ids in read for record_id in page_ids]
    assert len(ids) == len(set(ids)) == expected
    assert pages[0].locator == "" and pages[-1].next_locator == ""
    assert [page.locator for page in pages[1:]] == [page.next_locator for page in pages[:-1]]
    assert len({page.job_id for page in pages}) == 1
    assert not list(tmp_path.rglob("*"))  # every page's file is gone, and the download folder too


def test_include_deleted_reads_through_query_all(client: SalesforceClient, tmp_path: Path) -> None:
    live = client.count(COUNT_TASKS, sobject="Task")
    with_deleted = sum(len(page) for page in client.rest_pages("SELECT Id FROM Task", sobject="Task",
                                                               include_deleted=True))
    bulk_with_deleted = sum(page.rows for page in client.bulk_pages(
        "SELECT Id FROM Task", sobject="Task", include_deleted=True, poll_seconds=0, download_dir=tmp_path))

    assert with_deleted == bulk_with_deleted >= live


# --- session renewal -----------------------------------------------------------------------------------

def test_session_expired_mid_rest_pagination_renews_and_continues(
        fresh_sandbox: RunningSandbox, fresh_client: SalesforceClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=CLIENT_LOG)
    expected = fresh_client.count(COUNT_TASKS, sobject="Task")
    pages = fresh_client.rest_pages("SELECT Id FROM Task", sobject="Task")
    ids = [record["Id"] for record in next(pages)]

    assert fresh_sandbox.expire_sessions() >= 1
    ids += [record["Id"] for page in pages for record in page]

    assert len(ids) == len(set(ids)) == expected
    assert len(_renewals(caplog)) == 1


def test_session_expired_mid_bulk_pagination_renews_and_resumes(
        fresh_sandbox: RunningSandbox, fresh_client: SalesforceClient, caplog: pytest.LogCaptureFixture,
        tmp_path: Path) -> None:
    caplog.set_level(logging.INFO, logger=CLIENT_LOG)
    expected = fresh_client.count(COUNT_TASKS, sobject="Task")
    pages = fresh_client.bulk_pages("SELECT Id FROM Task", sobject="Task", max_records=2000, poll_seconds=0,
                                    download_dir=tmp_path)
    first = next(pages)
    ids = _csv_ids(first)

    assert fresh_sandbox.expire_sessions() >= 1
    rest = _read(pages)

    ids += [record_id for _, page_ids in rest for record_id in page_ids]
    assert len(ids) == len(set(ids)) == expected
    assert {page.job_id for page, _ in rest} == {first.job_id}  # the same job, resumed at its locator
    assert len(_renewals(caplog)) == 1


def test_session_mode_cannot_renew_and_says_what_to_set(fresh_sandbox: RunningSandbox) -> None:
    settings = sandbox_settings(fresh_sandbox)
    session = login(settings.salesforce(), http_session(settings.salesforce_ca_bundle))
    session_settings = settings.updated(salesforce_auth="session", salesforce_instance_url=session.instance_url,
                                        salesforce_session_id=session.session_id.get_secret_value())
    client = SalesforceClient(session_settings.salesforce(), retry=FAST)
    fresh_sandbox.expire_sessions()

    with pytest.raises(SalesforceAuthError) as raised:
        client.count(COUNT_TASKS, sobject="Task")

    assert "PERSONA_SYNC_SALESFORCE_SESSION_ID" in str(raised.value)
    assert raised.value.sobject == "Task" and raised.value.call == "count"


# --- retries -------------------------------------------------------------------------------------------

def test_a_rate_limit_storm_is_ridden_out(faults: RunningSandbox, client: SalesforceClient,
                                          caplog: pytest.LogCaptureFixture) -> None:
    expected = client.count(COUNT_TASKS, sobject="Task")
    faults.set_faults(request_limit_after=0, request_limit_calls=3)

    assert client.count(COUNT_TASKS, sobject="Task") == expected

    retries = _retries(caplog)
    assert len(retries) == 3
    assert "REQUEST_LIMIT_EXCEEDED" in retries[0] and "attempt 1 of 6" in retries[0]


def test_a_permanent_rate_limit_fails_naming_the_object_and_call(faults: RunningSandbox,
                                                                 client: SalesforceClient) -> None:
    faults.set_faults(request_limit_after=0, request_limit_calls=None)
    calls_before = client.api_calls

    with pytest.raises(SalesforceError) as raised:
        client.count(COUNT_TASKS, sobject="Task")

    error = raised.value
    assert (error.org, error.sobject, error.call) == (client.org, "Task", "count")
    assert "REQUEST_LIMIT_EXCEEDED" in str(error) and "after 6 attempts" in str(error)
    assert "object Task" in str(error) and "call count" in str(error)
    assert client.api_calls - calls_before == FAST.attempts


def test_unavailable_answers_are_ridden_out(faults: RunningSandbox, client: SalesforceClient,
                                            caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    expected = client.count(COUNT_TASKS, sobject="Task")
    faults.set_faults(unavailable_share=0.3, seed=11)

    rows = sum(len(page) for page in client.rest_pages("SELECT Id FROM Task", sobject="Task"))
    rows_bulk = sum(page.rows for page in client.bulk_pages("SELECT Id FROM Task", sobject="Task",
                                                            max_records=5000, poll_seconds=0, download_dir=tmp_path))

    assert rows == rows_bulk == expected
    assert any("SERVER_UNAVAILABLE" in message for message in _retries(caplog))


def test_a_bulk_download_cut_mid_stream_is_fetched_again(faults: RunningSandbox, client: SalesforceClient,
                                                         caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    expected = client.count(COUNT_TASKS, sobject="Task")
    faults.set_faults(cut_bulk_downloads=1)

    read = _read(client.bulk_pages("SELECT Id, Subject FROM Task", sobject="Task", max_records=5000,
                                   poll_seconds=0, download_dir=tmp_path))

    ids = [record_id for _, page_ids in read for record_id in page_ids]
    assert not list(tmp_path.rglob("*"))  # the cut page's file too
    assert len(ids) == len(set(ids)) == expected
    assert len(_retries(caplog)) == 1
    assert faults.admin("GET", "faults")["cuts_left"] == 0


def test_malformed_soql_is_not_retried(client: SalesforceClient, caplog: pytest.LogCaptureFixture) -> None:
    calls_before = client.api_calls

    with pytest.raises(SalesforceError) as raised:
        client.count("SELECT COUNT() FROM Task WHERE NoSuchField__c = 1", sobject="Task")

    assert client.api_calls - calls_before == 1
    assert _retries(caplog) == []
    assert "malformed" in str(raised.value) and "NoSuchField__c" in str(raised.value)


# --- failing for good ----------------------------------------------------------------------------------

def test_a_dead_server_fails_naming_the_url_and_what_to_check(fresh_sandbox: RunningSandbox,
                                                              fresh_client: SalesforceClient) -> None:
    fresh_sandbox.stop()

    with pytest.raises(SalesforceError) as raised:
        fresh_client.count(COUNT_TASKS, sobject="Task")

    message = str(raised.value)
    assert f"cannot reach {fresh_sandbox.url}/services/data/" in message
    assert "PERSONA_SYNC_SALESFORCE_LOGIN_URL" in message and "after 6 attempts" in message
    assert "SELECT" not in message  # the URL is named without the query it carried


def test_every_request_has_the_configured_timeout(faults: RunningSandbox, settings: Settings) -> None:
    client = SalesforceClient(settings.updated(salesforce_timeout_seconds=0.2).salesforce(),
                              retry=RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.01))
    faults.set_faults(slow_ms=1000)

    with pytest.raises(SalesforceError) as raised:
        client.count(COUNT_TASKS, sobject="Task")

    assert "ReadTimeout" in str(raised.value) and "PERSONA_SYNC_SALESFORCE_TIMEOUT_SECONDS" in str(raised.value)


# --- the org's allowance -------------------------------------------------------------------------------

def test_check_api_reserve_refuses_below_the_reserve(client: SalesforceClient) -> None:
    remaining = client.check_api_reserve(0)

    with pytest.raises(ApiReserveError) as raised:
        client.check_api_reserve(remaining + 1000)

    message = str(raised.value)
    assert "rolling 24 h" in message and "PERSONA_SYNC_API_RESERVE" in message
    assert f"reserve of {remaining + 1000}" in message


def test_api_calls_count_what_the_org_counted(fresh_client: SalesforceClient, tmp_path: Path) -> None:
    before = fresh_client.limits()["DailyApiRequests"]["Remaining"]
    calls_before = fresh_client.api_calls

    fresh_client.count(COUNT_TASKS, sobject="Task")
    list(fresh_client.rest_pages("SELECT Id FROM Task", sobject="Task"))
    list(fresh_client.bulk_pages("SELECT Id FROM Task", sobject="Task", max_records=5000, poll_seconds=0,
                                 download_dir=tmp_path))
    limits = fresh_client.limits()["DailyApiRequests"]

    assert fresh_client.api_calls - calls_before == before - limits["Remaining"]
    assert fresh_client.api_usage == (limits["Max"] - limits["Remaining"], limits["Max"])


def test_api_calls_are_counted_per_object_across_threads(fresh_client: SalesforceClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    before = fresh_client.api_calls

    def read(sobject: str) -> int:
        return sum(len(page) for page in fresh_client.rest_pages(f"SELECT Id FROM {sobject}", sobject=sobject))

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(read, ["Task", "User"]))

    task_pages = -(-fresh_client.count(COUNT_TASKS, sobject="Task") // 2000)
    assert fresh_client.api_calls_of("Task") == task_pages + 1  # the pages, and the count just made
    assert fresh_client.api_calls_of("User") == 1
    assert fresh_client.api_calls - before == task_pages + 2


def test_the_org_id_comes_from_the_login(fresh_client: SalesforceClient, fresh_sandbox: RunningSandbox) -> None:
    import sqlite3

    with sqlite3.connect(fresh_sandbox.org_path) as db:
        org_id = db.execute("SELECT Id FROM Organization").fetchone()[0]
    calls = fresh_client.api_calls
    assert fresh_client.org_id == org_id[:15]
    assert fresh_client.api_calls == calls  # the OAuth identity named it: no query needed
