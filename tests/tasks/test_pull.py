"""Pull against the sandbox: staging must equal the org, after every kind of change and failure."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from connectors.salesforce import SalesforceClient, connect
from connectors.salesforce.streams import STREAMS, Stream, streams_by_name
from connectors.staging import Staging
from connectors.state import LockedError, OrgMismatchError, StateStore
from core.errors import PersonaSyncError
from core.settings import Settings
from sandbox.ids import to_18
from sandbox.runner import RunningSandbox, SandboxConfig, start_sandbox
from tasks.pull import PullReport, StreamResult, run_pull
from tests.conftest import sandbox_environment, sandbox_settings

ACTIVITY = ["User", "Task", "Case", "LoginHistory", "SetupAuditTrail", "KnowledgeArticleVersion"]


def _settings(sandbox: RunningSandbox, home: Path, **overrides: object) -> Settings:
    defaults = {"home": home, "pull_history_days": 400, "pull_bulk_threshold": 5_000,
                "pull_bulk_page_rows": 4_000, "salesforce_retry_initial_seconds": 0.01,
                "salesforce_retry_max_seconds": 0.05}
    return sandbox_settings(sandbox, **(defaults | overrides))


def _pull(settings: Settings, names: list[str] | None = None, *, streams: list[Stream] | None = None,
          full_refresh: bool = False, reconcile: bool = False, **config: object) -> PullReport:
    """A pull as `persona-sync pull` runs it, with `config` changing the pull settings."""
    return run_pull(settings.salesforce(), settings.state(), settings.staging(),
                    settings.pull().model_copy(update=config), streams or streams_by_name(names),
                    full_refresh=full_refresh, reconcile=reconcile)


def _state(settings: Settings) -> StateStore:
    return StateStore.from_config(settings.state())


def _org_ids(sandbox: RunningSandbox, stream: Stream, settings: Settings) -> set[str]:
    """The oracle: the ids the sandbox holds for a stream within the pulled history window, deleted excluded."""
    conditions = ["IsDeleted = 0"] if stream.soft_delete else []
    watermark = _state(settings).watermark(stream.sobject)
    if not stream.full_history and watermark is not None:
        conditions.append(f"{stream.cursor} >= '{watermark.history_start.strftime('%Y-%m-%dT%H:%M:%S')}'")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    with sqlite3.connect(sandbox.org_path) as db:
        return {row[0] for row in db.execute(f'SELECT Id FROM "{stream.sobject}"{where}')}


def _staged(settings: Settings, sobject: str, columns: list[str] | None = None) -> pd.DataFrame:
    return Staging.from_config(settings.staging()).read(sobject, columns=columns)


def _assert_staging_equals_org(sandbox: RunningSandbox, settings: Settings, names: list[str], *,
                               quarantined: set[str] = frozenset(), held: set[str] = frozenset()) -> None:
    """Staging holds exactly the org's rows of each stream (within the pulled history window), each as the
    org has it now (the same cursor value): nothing lost, repeated, stale, or wrongly quarantined or
    tombstoned. `quarantined` and `held` are the Ids a test broke or held back on purpose."""
    assert {record.record_id for record in _state(settings).quarantined()} == set(quarantined)
    for stream in streams_by_name(names):
        org = _org_cursors(sandbox, stream, settings)
        expected = {record_id: cursor for record_id, cursor in org.items() if record_id not in quarantined | held}
        staged_frame = _staged(settings, stream.sobject, ["Id", stream.cursor])
        staged = dict(zip(staged_frame["Id"], staged_frame[stream.cursor]))
        assert len(staged_frame) == len(staged), f"{stream.sobject}: an Id is staged twice"
        assert set(staged) == set(expected), f"{stream.sobject}: {len(set(staged) ^ set(expected))} ids differ"
        stale = [record_id for record_id, cursor in expected.items() if staged[record_id] != cursor]
        assert not stale, f"{stream.sobject}: {len(stale)} rows are staged as they were, not as they are, e.g. {stale[:3]}"


def _org_cursors(sandbox: RunningSandbox, stream: Stream, settings: Settings) -> dict[str, pd.Timestamp]:
    """The oracle: Id -> cursor of the rows the sandbox holds for a stream in the pulled window, deleted excluded."""
    ids = _org_ids(sandbox, stream, settings)
    with sqlite3.connect(sandbox.org_path) as db:
        rows = db.execute(f'SELECT Id, "{stream.cursor}" FROM "{stream.sobject}"').fetchall()
    return {record_id: pd.Timestamp(cursor) for record_id, cursor in rows if record_id in ids}


def _result(report: PullReport, sobject: str) -> StreamResult:
    return next(result for result in report.streams if result.sobject == sobject)


def _staged_files(settings: Settings) -> set[tuple[str, int]]:
    """Every file under staging (the held area included), with its inode: a rewrite counts as a new file."""
    root = settings.staging().root
    return {(str(path), path.stat().st_ino) for path in root.rglob("*.parquet")}


def test_first_pull_equals_the_sandbox(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    report = _pull(settings)
    _assert_staging_equals_org(fresh_sandbox, settings, [stream.sobject for stream in STREAMS])
    modes = {result.sobject: result.mode for result in report.streams}
    assert modes["Task"] == "bulk" and modes["User"] == "rest"
    assert report.quarantined == 0 and report.api_calls > 0
    tasks = _staged(settings, "Task", ["Id", "OwnerId", "SystemModstamp", "IsClosed"])
    assert str(tasks["SystemModstamp"].dtype).startswith("datetime64") and tasks["IsClosed"].dtype == bool
    run = _state(settings).runs(limit=1)[0]
    assert run.status == "succeeded" and run.api_calls == report.api_calls
    assert _pull(settings).rows == 0  # and an incremental pull of every stream finds nothing new
    # The history start recorded is the whole second the query asked from: a row stamped within that second
    # is inside the pulled window for the staging checks too (found by a large-org run).
    assert all(mark.history_start.microsecond == 0 for mark in _state(settings).watermarks())


def test_rest_and_bulk_stage_the_same_rows(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    by_rest = _settings(fresh_sandbox, tmp_path / "rest")
    by_bulk = _settings(fresh_sandbox, tmp_path / "bulk")
    _pull(by_rest, ["User", "Task", "Case"], mode="rest")
    _pull(by_bulk, ["User", "Task", "Case"], mode="bulk")
    for sobject in ("User", "Task", "Case"):
        rest = _staged(by_rest, sobject).sort_values("Id").reset_index(drop=True)
        bulk = _staged(by_bulk, sobject).sort_values("Id").reset_index(drop=True)
        pd.testing.assert_frame_equal(rest, bulk[rest.columns], check_dtype=False)


def test_incremental_pull_fetches_only_what_changed(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    _pull(settings, ["User", "Task", "Case"])
    sf = connect(settings.salesforce())
    owner = sf.query("SELECT Id FROM User WHERE IsActive = true LIMIT 1")["records"][0]["Id"]
    created = sf.Task.create({"Subject": "Call back", "OwnerId": owner, "Status": "Completed", "TaskSubtype": "Call"})
    updated, deleted = [record["Id"] for record in sf.query("SELECT Id FROM Task ORDER BY Id LIMIT 2")["records"]]
    sf.Task.update(updated, {"Status": "Deferred"})
    sf.Task.delete(deleted)

    report = _pull(settings, ["User", "Task", "Case"])

    task = next(result for result in report.streams if result.sobject == "Task")
    assert task.rows == 2 and task.deleted == 1  # the insert and the update; then the deletion
    assert next(result for result in report.streams if result.sobject == "Case").rows == 0
    _assert_staging_equals_org(fresh_sandbox, settings, ["Task"])
    staged = _staged(settings, "Task", ["Id", "Status"]).set_index("Id")["Status"]
    assert staged[updated] == "Deferred" and created["id"] in staged.index and deleted not in staged.index


def test_a_pull_with_nothing_new_writes_no_file(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    _pull(settings, ["User", "Task", "Case"])
    sf = connect(settings.salesforce())
    deleted = sf.query("SELECT Id FROM Task ORDER BY Id LIMIT 1")["records"][0]["Id"]
    sf.Task.delete(deleted)
    assert _result(_pull(settings, ["User", "Task", "Case"]), "Task").deleted == 1  # the deletion, once
    files = _staged_files(settings)

    report = _pull(settings, ["User", "Task", "Case"])

    assert report.rows == 0 and sum(result.deleted for result in report.streams) == 0
    assert _staged_files(settings) == files  # not even the deletion's tombstone again
    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Task", "Case"])


def test_full_refresh_pulls_everything_again(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    first = _pull(settings, ["User", "Task"])
    again = _pull(settings, ["User", "Task"], full_refresh=True)
    assert again.rows == first.rows
    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Task"])


def test_a_field_added_to_a_stream_pulls_the_stream_again_in_full(fresh_sandbox: RunningSandbox,
                                                                  tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    user, task = streams_by_name(["User", "Task"])
    older_task = dataclasses.replace(task, fields=tuple(f for f in task.fields if f not in ("WhoId", "WhatId")))
    first = _pull(settings, streams=[user, older_task])
    assert _staged(settings, "Task", ["WhoId"])["WhoId"].isna().all()  # pulled before the fields existed

    again = _pull(settings, ["User", "Task"])
    assert again.rows == first.rows - first.streams[0].rows  # all of Task again; nothing new of User
    staged = _staged(settings, "Task", ["Id", "WhoId", "WhatId"])
    assert staged[["WhoId", "WhatId"]].notna().any(axis=None)
    with sqlite3.connect(fresh_sandbox.org_path) as db:
        org = dict(db.execute('SELECT Id, WhatId FROM "Task" WHERE IsDeleted = 0'))
    assert all(org[row.Id] == row.WhatId or (org[row.Id] is None and pd.isna(row.WhatId))
               for row in staged.itertuples())
    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Task"])
    assert _pull(settings, ["User", "Task"]).rows == 0  # and then incremental again


def test_rows_lacking_a_field_are_pulled_again_even_after_the_state_database_was_lost(
        fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    user, task = streams_by_name(["User", "Task"])
    older_task = dataclasses.replace(task, fields=tuple(f for f in task.fields if f != "CallType"))
    _pull(_settings(fresh_sandbox, tmp_path), streams=[user, older_task])
    settings = _settings(fresh_sandbox, tmp_path, state_database_url=f"sqlite:///{tmp_path / 'new-state.db'}")
    _pull(settings, ["User", "Task"])  # no watermark: a first pull, over rows staged without CallType
    assert _staged(settings, "Task", ["CallType"])["CallType"].notna().any()
    assert Staging.from_config(settings.staging()).columns_in_every_file("Task") >= set(task.columns)


def test_session_expiry_in_the_middle_of_a_pull_recovers(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    expired: list[int] = []

    def expire_once(sobject: str, rows: int, expected: int | None) -> None:
        if sobject == "Task" and not expired:
            expired.append(fresh_sandbox.expire_sessions())

    run_pull(settings.salesforce(), settings.state(), settings.staging(), settings.pull(),
             streams_by_name(["User", "Task"]), on_rows=expire_once)
    assert expired and expired[0] >= 1
    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Task"])


def test_a_rate_limit_storm_is_ridden_out(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    fresh_sandbox.set_faults(request_limit_after=8, request_limit_calls=3)
    _pull(settings, ["User", "Task"])
    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Task"])


def test_a_lasting_rate_limit_fails_with_a_clear_error(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    fresh_sandbox.set_faults(request_limit_after=8)
    with pytest.raises(PersonaSyncError, match="REQUEST_LIMIT_EXCEEDED") as raised:
        _pull(settings, ["User", "Task"])
    assert "Task" in str(raised.value) or "User" in str(raised.value)
    run = _state(settings).runs(limit=1)[0]
    assert run.status == "failed" and run.api_calls > 8  # what the failed run spent is in the ledger
    assert {stats.sobject for stats in _state(settings).pull_stats(run.id)} >= {"User"}


def test_a_bulk_download_cut_mid_stream_is_retried(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    fresh_sandbox.set_faults(cut_bulk_downloads=2)
    _pull(settings, ["User", "Task"], mode="bulk")
    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Task"])


def test_a_dead_server_names_the_url_and_what_to_check(tmp_path: Path, sandbox: RunningSandbox) -> None:
    settings = _settings(sandbox, tmp_path, salesforce_login_url="https://localhost:9")
    with pytest.raises(PersonaSyncError, match="https://localhost:9") as raised:
        _pull(settings, ["User"])
    assert "PERSONA_SYNC_SALESFORCE_LOGIN_URL" in str(raised.value)


def test_the_api_reserve_is_respected(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path, api_reserve=1_000_000)
    with pytest.raises(PersonaSyncError, match="reserve"):
        _pull(settings, ["User"])
    assert not (tmp_path / "staging" / "User").exists()


def test_broken_records_are_quarantined_not_dropped(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    with sqlite3.connect(fresh_sandbox.org_path) as db:
        ids = [row[0] for row in db.execute("SELECT Id FROM Task WHERE IsDeleted = 0 ORDER BY Id LIMIT 4")]
        account = db.execute("SELECT Id FROM Account LIMIT 1").fetchone()[0]
        db.execute("UPDATE Task SET OwnerId = NULL, CreatedById = NULL WHERE Id = ?", (ids[0],))
        db.execute("UPDATE Task SET OwnerId = ? WHERE Id = ?", (account, ids[1]))
        db.execute("UPDATE Task SET ActivityDate = 'someday' WHERE Id = ?", (ids[2],))
        db.execute("UPDATE Task SET OwnerId = NULL WHERE Id = ?", (ids[3],))  # its creator is still there

    report = _pull(settings, ["User", "Task"])

    task = next(result for result in report.streams if result.sobject == "Task")
    assert task.quarantined == 3
    reasons = {record.record_id: record.reason for record in _state(settings).quarantined("Task")}
    assert reasons[ids[0]] == "no OwnerId or CreatedById"
    assert "names neither a user" in reasons[ids[1]]
    assert "does not parse" in reasons[ids[2]]
    # A row without its owner is attributed by its creator, staged, and counted as a fallback.
    assert ids[3] not in reasons and task.fallbacks == {"CreatedById": 1}
    assert "Task: 1 rows attributed by CreatedById" in "\n".join(report.gaps())
    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Task"], quarantined=set(ids[:3]))


def test_a_run_killed_mid_pull_converges_when_run_again(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path, pull_bulk_page_rows=1_000)
    fresh_sandbox.set_faults(slow_ms=40)
    environment = {**os.environ, **sandbox_environment(fresh_sandbox, home=tmp_path, pull_history_days=400,
                                                       pull_bulk_page_rows=1000, pull_mode="bulk")}
    child = subprocess.Popen([sys.executable, "-m", "persona_sync", "pull", "--object", "User", "--object", "Task"],
                             env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    task_dir = tmp_path / "staging" / "Task"
    deadline = time.monotonic() + 60
    while not (task_dir.exists() and any(task_dir.glob("part-*"))):
        assert child.poll() is None, "the pull ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    fresh_sandbox.clear_faults()

    _pull(settings, ["User", "Task"])

    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Task"])


# --- nothing lost, nothing repeated --------------------------------------------------------------------

def test_activity_of_a_user_created_mid_pull_is_held_then_staged_when_the_user_arrives(
        fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    sf = connect(settings.salesforce())
    created: dict[str, str] = {}

    def create_a_user_after_the_users_were_pulled(sobject: str, rows: int, expected: int | None) -> None:
        if sobject == "User" and not created:
            profile = sf.query("SELECT Id FROM Profile LIMIT 1")["records"][0]["Id"]
            created["user"] = sf.User.create({"Username": "new.hire@acme.test", "LastName": "Hire",
                                              "Email": "new.hire@acme.test", "Alias": "nhire",
                                              "ProfileId": profile, "IsActive": True})["id"]
            created["task"] = sf.Task.create({"Subject": "First call", "OwnerId": created["user"],
                                              "Status": "Completed", "TaskSubtype": "Call"})["id"]

    first = run_pull(settings.salesforce(), settings.state(), settings.staging(), settings.pull(),
                     streams_by_name(["User", "Task"]), on_rows=create_a_user_after_the_users_were_pulled)

    assert _result(first, "Task").held == 1 and first.quarantined == 0
    _assert_staging_equals_org(fresh_sandbox, settings, ["Task"], held={created["task"]})
    task_stamp = _org_cursors(fresh_sandbox, streams_by_name(["Task"])[0], settings)[created["task"]]
    assert _state(settings).watermark("Task").value >= task_stamp  # the watermark moved past the held row

    second = _pull(settings, ["User", "Task"])

    assert _result(second, "Task").released == 1 and _result(second, "Task").held == 0
    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Task"])


def test_a_case_owned_by_a_queue_is_staged_and_counts_for_no_one(fresh_sandbox: RunningSandbox,
                                                                 tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    with sqlite3.connect(fresh_sandbox.org_path) as db:
        case_id = db.execute("SELECT Id FROM \"Case\" WHERE IsDeleted = 0 ORDER BY Id LIMIT 1").fetchone()[0]
        db.execute("UPDATE \"Case\" SET OwnerId = '00GHs0000000001AAA' WHERE Id = ?", (case_id,))

    report = _pull(settings, ["User", "Case"])

    assert report.quarantined == 0 and report.held == 0
    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Case"])
    staged = _staged(settings, "Case", ["Id", "OwnerId"]).set_index("Id")["OwnerId"]
    assert staged[case_id] == "00GHs0000000001AAA"


def test_a_stale_copy_on_a_later_page_never_replaces_the_newer_version_nor_removes_it(
        fresh_sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.pull as pull_module
    from connectors.salesforce import extract

    settings = _settings(fresh_sandbox, tmp_path)
    _pull(settings, ["User", "Task"])
    sf = connect(settings.salesforce())
    record_id = sf.query("SELECT Id FROM Task ORDER BY Id LIMIT 1")["records"][0]["Id"]
    stale_page = next(page for page in extract.read_by_id(
        SalesforceClient(settings.salesforce()), streams_by_name(["Task"])[0],
        extract.stream_schema(SalesforceClient(settings.salesforce()), streams_by_name(["Task"])[0]), [record_id]))
    sf.Task.update(record_id, {"Status": "Deferred"})
    real_pages = extract.read_pages

    def pages_then_a_stale_copy(client: SalesforceClient, stream: Stream, *args: object, **kwargs: object):
        yield from real_pages(client, stream, *args, **kwargs)
        if stream.sobject == "Task":
            yield stale_page  # what a broken source may send: a copy older than one already sent

    monkeypatch.setattr(pull_module.extract, "read_pages", pages_then_a_stale_copy)
    _pull(settings, ["User", "Task"])

    assert _staged(settings, "Task", ["Id", "Status"]).set_index("Id")["Status"][record_id] == "Deferred"
    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Task"])  # nothing of earlier nights removed


def test_a_row_purged_from_the_recycle_bin_is_removed_by_reconciliation(fresh_sandbox: RunningSandbox,
                                                                        tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    _pull(settings, ["User", "Task"])
    with sqlite3.connect(fresh_sandbox.org_path) as db:
        purged, model = [row[0] for row in db.execute("SELECT Id FROM Task WHERE IsDeleted = 0 ORDER BY Id LIMIT 2")]
        db.execute("DELETE FROM Task WHERE Id = ?", (purged,))  # gone for good: queryAll no longer sees it
        # A row committed long after its SystemModstamp, behind the watermark and its overlap: an
        # incremental pull cannot see it, only a reconciliation.
        columns = [row[1] for row in db.execute('PRAGMA table_info("Task")')]
        values = dict(zip(columns, db.execute("SELECT * FROM Task WHERE Id = ?", (model,)).fetchone()))
        lost = to_18("00THs0000009999")
        values |= {"Id": lost, "SystemModstamp": "2026-10-01T00:00:00.000Z"}
        db.execute(f'INSERT INTO Task ({", ".join(columns)}) VALUES ({", ".join("?" * len(columns))})',
                   [values[column] for column in columns])

    assert _result(_pull(settings, ["User", "Task"]), "Task").purged == 0  # not due: a week has not passed
    reconciled = _result(_pull(settings, ["User", "Task"], reconcile=True), "Task")

    assert reconciled.purged == 1 and reconciled.recovered == 1
    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Task"])
    assert _state(settings).watermark("Task").reconciled_at is not None


def test_a_second_pull_while_one_runs_stops_with_who_holds_the_lock_or_waits_for_it(
        fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    _pull(settings, ["User"])  # the state database exists; its org is bound
    fresh_sandbox.set_faults(slow_ms=30)
    first = threading.Thread(target=_pull, args=(settings, ["User", "Task"]))
    first.start()
    try:
        deadline = time.monotonic() + 30
        while not _state(settings).runs(limit=1)[0].status == "running" or not _lock_held(settings):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(LockedError, match=r"cannot pull the org into staging: .* \(pid \d+ on .*\) has held it"):
            _pull(settings, ["User", "Task"])
        waited = _pull(settings, ["User", "Task"], lock_wait_seconds=120)  # waits for the first, then pulls
    finally:
        first.join()
        fresh_sandbox.clear_faults()
    assert waited.rows == 0
    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Task"])


def _lock_held(settings: Settings) -> bool:
    import sqlalchemy

    engine = sqlalchemy.create_engine(settings.state().url.get_secret_value())
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text("SELECT count(*) FROM locks")).scalar() == 1
    finally:
        engine.dispose()


def test_a_state_database_of_another_org_refuses_to_pull(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    _pull(settings, ["User"])
    assert _state(settings).bound_org() is not None  # bound to the sandbox's org by the first pull
    fresh_sandbox.stop()
    with sqlite3.connect(fresh_sandbox.org_path) as db:
        db.execute("UPDATE _meta SET value = '00DHs0000000999' WHERE key = 'organization_id'")
    other_org = start_sandbox(SandboxConfig(data_dir=fresh_sandbox.data_dir, preset="small", seed=7, port=0))
    try:
        with pytest.raises(OrgMismatchError, match="belongs to org .* but the configured login reached org "
                                                   "00DHs0000000999"):
            _pull(_settings(other_org, tmp_path), ["User"])
    finally:
        other_org.stop()


def test_api_calls_are_recorded_per_object(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    report = _pull(settings, ["User", "Task", "Case"])
    stats = {item.sobject: item.api_calls for item in _state(settings).pull_stats(report.run_id)}
    assert all(calls >= 3 for calls in stats.values())  # describe, count, and at least one page
    assert sum(stats.values()) < report.api_calls  # the rest: identity, reserve check
    assert stats == {result.sobject: result.api_calls for result in report.streams}


def test_staging_older_than_the_history_window_is_pruned(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    _pull(settings, ["User", "Task"])
    narrower = settings.updated(pull_history_days=60, staging_compact_after=0)
    _pull(narrower, ["User", "Task"])  # compacts (more parts than 0), and prunes then
    history_start = _state(settings).watermark("Task").history_start
    assert history_start > datetime.now(timezone.utc) - timedelta(days=61)
    staged = _staged(settings, "Task", ["SystemModstamp"])["SystemModstamp"]
    assert len(staged) and (staged >= history_start).all()
    _assert_staging_equals_org(fresh_sandbox, narrower, ["User", "Task"])


def test_an_optional_field_the_org_lacks_is_left_out_and_the_rest_is_pulled(fresh_sandbox: RunningSandbox,
                                                                             tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    user, task = streams_by_name(["User", "Task"])
    not_created_yet = dataclasses.replace(task, optional=("Persona_Hint__c",))
    _pull(settings, streams=[user, not_created_yet])
    assert "Persona_Hint__c" not in Staging.from_config(settings.staging()).columns_in_every_file("Task")
    assert "Persona__c" in Staging.from_config(settings.staging()).columns_in_every_file("User")  # the org has it
    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Task"])


def test_rows_read_by_a_reconciliation_never_move_the_watermark_past_changes_not_read(
        fresh_sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.pull as pull_module
    from connectors.salesforce import extract

    settings = _settings(fresh_sandbox, tmp_path)
    _pull(settings, ["User", "Task"])
    watermark = _state(settings).watermark("Task").value
    with sqlite3.connect(fresh_sandbox.org_path) as db:
        changed, model = [row[0] for row in db.execute("SELECT Id FROM Task WHERE IsDeleted = 0 ORDER BY Id LIMIT 2")]
    real_ids = extract.ids

    def ids_while_the_org_changes(client: SalesforceClient, stream: Stream, *args: object, **kwargs: object):
        # While the reconciliation reads Ids, a row changes, and a later one is created: the created one is
        # read by Id (missing), the changed one is staged already (not missing), but it changed.
        if stream.sobject != "Task":
            yield from real_ids(client, stream, *args, **kwargs)
            return
        with sqlite3.connect(fresh_sandbox.org_path) as db:
            changed_at = _soql_stamp(watermark + timedelta(minutes=30))
            created_at = _soql_stamp(watermark + timedelta(minutes=60))
            db.execute("UPDATE Task SET Status = 'Deferred', SystemModstamp = ? WHERE Id = ?", (changed_at, changed))
            columns = [row[1] for row in db.execute('PRAGMA table_info("Task")')]
            values = dict(zip(columns, db.execute("SELECT * FROM Task WHERE Id = ?", (model,)).fetchone()))
            values |= {"Id": to_18("00THs0000009998"), "SystemModstamp": created_at, "CreatedDate": created_at}
            db.execute(f'INSERT INTO Task ({", ".join(columns)}) VALUES ({", ".join("?" * len(columns))})',
                       [values[column] for column in columns])
        yield from real_ids(client, stream, *args, **kwargs)

    monkeypatch.setattr(pull_module.extract, "ids", ids_while_the_org_changes)
    assert _result(_pull(settings, ["User", "Task"], reconcile=True), "Task").recovered == 1
    monkeypatch.setattr(pull_module.extract, "ids", real_ids)
    assert _state(settings).watermark("Task").value == watermark  # not moved by the row read by Id

    _pull(settings, ["User", "Task"])

    assert _staged(settings, "Task", ["Id", "Status"]).set_index("Id")["Status"][changed] == "Deferred"
    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Task"])


def _soql_stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_a_reconciliation_runs_by_itself_once_its_interval_has_passed(fresh_sandbox: RunningSandbox,
                                                                      tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path, pull_reconcile_days=7)
    _pull(settings, ["User", "Task"])
    with sqlite3.connect(fresh_sandbox.org_path) as db:
        purged = db.execute("SELECT Id FROM Task WHERE IsDeleted = 0 ORDER BY Id LIMIT 1").fetchone()[0]
        db.execute("DELETE FROM Task WHERE Id = ?", (purged,))
    a_week_ago = datetime.now(timezone.utc) - timedelta(days=7, minutes=1)
    watermark = _state(settings).watermark("Task")
    _state(settings).set_watermark("Task", "SystemModstamp", watermark.value, watermark.history_start,
                                   watermark.run_id, reconciled_at=a_week_ago)

    assert _result(_pull(settings, ["User", "Task"]), "Task").purged == 1
    assert _state(settings).watermark("Task").reconciled_at > a_week_ago
    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Task"])


def test_deletions_have_a_watermark_of_their_own(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    _pull(settings, ["User", "Task"])
    sf = connect(settings.salesforce())
    deleted = sf.query("SELECT Id FROM Task ORDER BY Id LIMIT 1")["records"][0]["Id"]
    sf.Task.delete(deleted)
    rows_watermark = _state(settings).watermark("Task").value

    assert _result(_pull(settings, ["User", "Task"]), "Task").deleted == 1

    watermark = _state(settings).watermark("Task")
    assert watermark.value == rows_watermark  # no row changed: the rows' watermark stays
    assert watermark.deletions_value is not None and watermark.deletions_value > rows_watermark
    _assert_staging_equals_org(fresh_sandbox, settings, ["User", "Task"])


def test_a_staging_of_another_org_refuses_to_pull_even_with_a_new_state_database(
        fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    _pull(settings, ["User"])
    (settings.staging().root / ".owner").write_text("00DHs0000000999\n")  # as if another org had staged here
    fresh_state = settings.updated(state_database_url=f"sqlite:///{tmp_path / 'fresh-state.db'}")
    with pytest.raises(PersonaSyncError, match="holds the records of 00DHs0000000999"):
        _pull(fresh_state, ["User"])


def test_rows_staged_without_a_watermark_are_pulled_again_as_a_refresh(fresh_sandbox: RunningSandbox,
                                                                       tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    _pull(settings, ["User", "Task"])
    sf = connect(settings.salesforce())
    deleted = sf.query("SELECT Id FROM Task ORDER BY Id LIMIT 1")["records"][0]["Id"]
    sf.Task.delete(deleted)  # a deletion the lost state database will never hear of
    lost_state = settings.updated(state_database_url=f"sqlite:///{tmp_path / 'new-state.db'}")

    _pull(lost_state, ["User", "Task"])

    assert deleted not in set(_staged(lost_state, "Task", ["Id"])["Id"])
    _assert_staging_equals_org(fresh_sandbox, lost_state, ["User", "Task"])


def test_a_row_whose_user_never_arrives_goes_to_the_quarantine_once_older_than_the_history(
        fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    stranger = to_18("005Hs0000009999")  # a user the integration user cannot see
    with sqlite3.connect(fresh_sandbox.org_path) as db:
        record_id = db.execute("SELECT Id FROM Task WHERE IsDeleted = 0 ORDER BY Id LIMIT 1").fetchone()[0]
        long_ago = _soql_stamp(datetime.now(timezone.utc) - timedelta(days=300))
        db.execute("UPDATE Task SET OwnerId = ?, SystemModstamp = ? WHERE Id = ?", (stranger, long_ago, record_id))

    assert _result(_pull(settings, ["User", "Task"]), "Task").held == 1
    shorter = settings.updated(pull_history_days=200)
    result = _result(_pull(shorter, ["User", "Task"]), "Task")

    assert result.held == 0 and result.quarantined == 1
    (record,) = _state(settings).quarantined("Task")
    assert record.record_id == record_id and f"OwnerId {stranger}" in record.reason and "never staged" in record.reason
