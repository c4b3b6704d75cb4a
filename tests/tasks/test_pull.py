"""Pull against the sandbox: staging must equal the org, after every kind of change and failure."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from connectors.salesforce import connect
from connectors.salesforce.streams import STREAMS, Stream, streams_by_name
from connectors.staging import Staging
from connectors.state import StateStore
from persona_sync.errors import PersonaSyncError
from persona_sync.settings import Settings
from sandbox.runner import RunningSandbox
from tasks.pull import PullOptions, options_from_settings, run_pull
from tests.conftest import sandbox_settings

ACTIVITY = ["User", "Task", "Case", "LoginHistory", "SetupAuditTrail", "KnowledgeArticleVersion"]


def _settings(sandbox: RunningSandbox, home: Path, **overrides: object) -> Settings:
    defaults = {"home": home, "pull_history_days": 400, "pull_bulk_threshold": 5_000,
                "pull_bulk_page_rows": 4_000, "salesforce_retry_initial_seconds": 0.01,
                "salesforce_retry_max_seconds": 0.05}
    return sandbox_settings(sandbox, **(defaults | overrides))


def _pull(settings: Settings, names: list[str] | None = None, **options: object):
    base = options_from_settings(settings)
    return run_pull(settings, streams_by_name(names), PullOptions(**{**base.__dict__, **options}))


def _org_ids(sandbox: RunningSandbox, stream: Stream, settings: Settings) -> set[str]:
    """The oracle: the ids the sandbox holds for a stream within the pulled history window, deleted excluded."""
    conditions = ["IsDeleted = 0"] if stream.soft_delete else []
    watermark = StateStore(settings.state_url).watermark(stream.sobject)
    if not stream.full_history and watermark is not None:
        conditions.append(f"{stream.cursor} >= '{watermark.history_start.strftime('%Y-%m-%dT%H:%M:%S')}'")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    with sqlite3.connect(sandbox.org_path) as db:
        return {row[0] for row in db.execute(f'SELECT Id FROM "{stream.sobject}"{where}')}


def _staged(settings: Settings, sobject: str, columns: list[str] | None = None) -> pd.DataFrame:
    return Staging(settings.staging_path).read(sobject, columns=columns)


def _assert_staging_equals_org(sandbox: RunningSandbox, settings: Settings, names: list[str]) -> None:
    quarantined = {(record.sobject, record.record_id) for record in StateStore(settings.state_url).quarantined()}
    for stream in streams_by_name(names):
        expected = {record_id for record_id in _org_ids(sandbox, stream, settings)
                    if (stream.sobject, record_id) not in quarantined}
        staged = set(_staged(settings, stream.sobject, ["Id"])["Id"])
        assert staged == expected, f"{stream.sobject}: {len(staged ^ expected)} ids differ"


def test_first_pull_equals_the_sandbox(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    report = _pull(settings)
    _assert_staging_equals_org(fresh_sandbox, settings, [stream.sobject for stream in STREAMS])
    modes = {result.sobject: result.mode for result in report.streams}
    assert modes["Task"] == "bulk" and modes["User"] == "rest"
    assert report.quarantined == 0 and report.api_calls > 0
    tasks = _staged(settings, "Task", ["Id", "OwnerId", "SystemModstamp", "IsClosed"])
    assert str(tasks["SystemModstamp"].dtype).startswith("datetime64") and tasks["IsClosed"].dtype == bool
    run = StateStore(settings.state_url).runs(limit=1)[0]
    assert run.status == "succeeded" and run.api_calls == report.api_calls
    assert _pull(settings).rows == 0  # and an incremental pull of every stream finds nothing new


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
    sf = connect(settings)
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


def test_a_pull_with_nothing_new_stages_nothing(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    _pull(settings, ["User", "Task"])
    report = _pull(settings, ["User", "Task"])
    assert report.rows == 0


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
    first = run_pull(settings, [user, older_task], options_from_settings(settings))
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
    run_pull(_settings(fresh_sandbox, tmp_path), [user, older_task],
             options_from_settings(_settings(fresh_sandbox, tmp_path)))
    settings = _settings(fresh_sandbox, tmp_path, state_database_url=f"sqlite:///{tmp_path / 'new-state.db'}")
    _pull(settings, ["User", "Task"])  # no watermark: a first pull, over rows staged without CallType
    assert _staged(settings, "Task", ["CallType"])["CallType"].notna().any()
    assert Staging(settings.staging_path).columns_in_every_file("Task") >= set(task.columns)


def test_session_expiry_in_the_middle_of_a_pull_recovers(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path)
    expired: list[int] = []

    def expire_once(sobject: str, rows: int, expected: int | None) -> None:
        if sobject == "Task" and not expired:
            expired.append(fresh_sandbox.expire_sessions())

    run_pull(settings, streams_by_name(["User", "Task"]), options_from_settings(settings), on_rows=expire_once)
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
    assert StateStore(settings.state_url).runs(limit=1)[0].status == "failed"


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
        ids = [row[0] for row in db.execute("SELECT Id FROM Task WHERE IsDeleted = 0 ORDER BY Id LIMIT 3")]
        account = db.execute("SELECT Id FROM Account LIMIT 1").fetchone()[0]
        db.execute("UPDATE Task SET OwnerId = NULL WHERE Id = ?", (ids[0],))
        db.execute("UPDATE Task SET OwnerId = ? WHERE Id = ?", (account, ids[1]))
        db.execute("UPDATE Task SET ActivityDate = 'someday' WHERE Id = ?", (ids[2],))

    report = _pull(settings, ["User", "Task"])

    assert next(result for result in report.streams if result.sobject == "Task").quarantined == 3
    reasons = {record.record_id: record.reason for record in StateStore(settings.state_url).quarantined("Task")}
    assert reasons[ids[0]] == "no OwnerId"
    assert reasons[ids[1]] == "OwnerId is not a known user"
    assert "does not parse" in reasons[ids[2]]
    staged = set(_staged(settings, "Task", ["Id"])["Id"])
    assert not staged & set(ids)


def test_a_run_killed_mid_pull_converges_when_run_again(fresh_sandbox: RunningSandbox, tmp_path: Path) -> None:
    settings = _settings(fresh_sandbox, tmp_path, pull_bulk_page_rows=1_000)
    fresh_sandbox.set_faults(slow_ms=40)
    environment = {**os.environ, "PERSONA_SYNC_HOME": str(tmp_path), "PERSONA_SYNC_SALESFORCE_LOGIN_URL": fresh_sandbox.url,
                   "PERSONA_SYNC_SALESFORCE_CA_BUNDLE": str(fresh_sandbox.ca_cert),
                   "PERSONA_SYNC_PULL_HISTORY_DAYS": "400", "PERSONA_SYNC_PULL_BULK_PAGE_ROWS": "1000",
                   "PERSONA_SYNC_PULL_MODE": "bulk"}
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
