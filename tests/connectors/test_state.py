"""The state store: every method, on SQLite and on PostgreSQL (a fresh database per test, dropped after)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from uuid import uuid4

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from connectors.state import (LockedError, OrgMismatchError, PullStats, QuarantinedRecord, StateError, StateStore,
                              Watermark)
from connectors.state.schema import head_revision
from connectors.state.tables import LockRow, StateBase

HISTORY_START = datetime(2024, 1, 1, tzinfo=UTC)
CET = timezone(timedelta(hours=1))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state/state.db"
    return request.getfixturevalue("fresh_postgres_url")


@pytest.fixture
def store(state_url: str) -> Iterator[StateStore]:
    with StateStore(state_url) as opened:
        opened.ensure_schema()
        yield opened


@pytest.fixture
def run_id(store: StateStore) -> str:
    return store.start_run("nightly_sync", {"as_of": "2026-11-01"})


# --- schema ---------------------------------------------------------------------------------------------

def test_ensure_schema_is_idempotent_and_reaches_head(state_url: str) -> None:
    with StateStore(state_url) as store:
        store.ensure_schema()
        store.ensure_schema()
        with store._engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    assert current == head_revision()


def test_migrations_at_head_match_the_models(store: StateStore) -> None:
    with store._engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, StateBase.metadata) == []


def test_sqlite_database_gets_its_directory_wal_and_foreign_keys(tmp_path: Path) -> None:
    with StateStore(f"sqlite:///{tmp_path}/deep/er/state.db") as store:
        store.ensure_schema()
        with store._engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert (tmp_path / "deep" / "er" / "state.db").is_file()


def test_unsupported_database_is_refused() -> None:
    with pytest.raises(StateError, match="SQLite or PostgreSQL"):
        StateStore("mysql+pymysql://user@localhost/state")


# --- run ledger -----------------------------------------------------------------------------------------

def test_start_run_records_a_running_run_with_its_parameters(store: StateStore) -> None:
    before = datetime.now(UTC)
    run_id = store.start_run("backfill", {"as_of": datetime(2026, 11, 1, tzinfo=UTC), "objects": ["Task"]})
    run = store.run(run_id)
    assert run is not None
    assert (run.flow, run.status, run.finished_at) == ("backfill", "running", None)
    assert run.parameters == {"as_of": "2026-11-01T00:00:00+00:00", "objects": ["Task"]}
    assert run.started_at.tzinfo == UTC and before <= run.started_at <= datetime.now(UTC)


def test_finish_run_records_the_outcome(store: StateStore, run_id: str) -> None:
    store.finish_run(run_id, "failed", counts={"Task": 10}, api_calls=3, error="Bulk job timed out")
    run = store.run(run_id)
    assert run is not None
    assert (run.status, run.counts, run.api_calls, run.error) == ("failed", {"Task": 10}, 3, "Bulk job timed out")
    assert run.finished_at is not None and run.finished_at >= run.started_at


def test_finishing_an_unknown_run_or_with_running_status_is_refused(store: StateStore, run_id: str) -> None:
    with pytest.raises(StateError, match="not in the run ledger"):
        store.finish_run(str(uuid4()), "succeeded")
    with pytest.raises(StateError, match="final status"):
        store.finish_run(run_id, "running")


def test_runs_lists_the_newest_first_up_to_the_limit(store: StateStore) -> None:
    ids = [store.start_run("nightly_sync", {"n": n}) for n in range(3)]
    assert [run.id for run in store.runs()] == ids[::-1]
    assert [run.id for run in store.runs(limit=2)] == ids[:0:-1]
    assert store.run(str(uuid4())) is None


def test_parameters_json_cannot_hold_are_refused_with_a_state_error(store: StateStore) -> None:
    with pytest.raises(StateError, match="parameters of flow 'nightly_sync'"):
        store.start_run("nightly_sync", {"client": object()})


# --- watermarks -----------------------------------------------------------------------------------------

def test_an_object_never_pulled_has_no_watermark(store: StateStore) -> None:
    assert store.watermark("Task") is None


def test_set_watermark_inserts_then_moves_the_one_watermark(store: StateStore, run_id: str) -> None:
    first = datetime(2026, 10, 1, 12, tzinfo=UTC)
    store.set_watermark("Task", "SystemModstamp", first, HISTORY_START, run_id)
    later_run = store.start_run("nightly_sync", {})
    second = datetime(2026, 10, 2, 12, tzinfo=UTC)
    store.set_watermark("Task", "SystemModstamp", second, HISTORY_START, later_run)

    watermark = store.watermark("Task")
    assert watermark == Watermark("Task", "SystemModstamp", second, HISTORY_START, watermark.updated_at, later_run)
    assert watermark.updated_at.tzinfo == UTC


def test_datetimes_round_trip_as_the_same_instant_in_utc(store: StateStore, run_id: str) -> None:
    in_cet = datetime(2026, 3, 29, 2, 30, 15, 123456, tzinfo=CET)
    store.set_watermark("LoginHistory", "LoginTime", in_cet, HISTORY_START.astimezone(CET), run_id)
    watermark = store.watermark("LoginHistory")
    assert watermark is not None
    assert watermark.value == in_cet and watermark.value.tzinfo == UTC
    assert watermark.value == datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=UTC)
    assert watermark.history_start == HISTORY_START and watermark.history_start.tzinfo == UTC


def test_naive_datetimes_are_refused(store: StateStore, run_id: str) -> None:
    with pytest.raises(StateError, match="naive datetime"):
        store.set_watermark("Task", "SystemModstamp", datetime(2026, 10, 1), HISTORY_START, run_id)


def test_a_watermark_needs_a_run_from_the_ledger(store: StateStore) -> None:
    with pytest.raises(StateError, match="watermark of Task"):
        store.set_watermark("Task", "SystemModstamp", HISTORY_START, HISTORY_START, str(uuid4()))


def test_clear_watermarks_clears_the_named_objects_or_all(store: StateStore, run_id: str) -> None:
    for sobject in ("Task", "Event", "Case"):
        store.set_watermark(sobject, "SystemModstamp", HISTORY_START, HISTORY_START, run_id)
    store.clear_watermarks([])
    assert store.watermark("Task") is not None
    store.clear_watermarks(["Task"])
    assert store.watermark("Task") is None and store.watermark("Event") is not None
    store.clear_watermarks()
    assert store.watermark("Event") is None and store.watermark("Case") is None


# --- quarantine -----------------------------------------------------------------------------------------

def _broken(run_id: str) -> list[QuarantinedRecord]:
    return [
        QuarantinedRecord("Task", "00T000000000001AAA", "unparseable ActivityDate", {"ActivityDate": "31/02"}, run_id),
        QuarantinedRecord("Task", None, "missing Id", {"Subject": "Call"}, run_id),
        QuarantinedRecord("Case", "500000000000001AAA", "unknown OwnerId", {"OwnerId": "x"}, run_id),
    ]


def test_quarantine_keeps_records_and_a_rerun_does_not_duplicate_them(store: StateStore, run_id: str) -> None:
    assert store.quarantine(_broken(run_id)) == 3
    rerun = store.start_run("nightly_sync", {})
    assert store.quarantine(_broken(rerun)) == 3

    kept = store.quarantined()
    assert len(kept) == 3
    assert {record.run_id for record in kept} == {rerun}
    assert all(record.first_seen_at < record.last_seen_at for record in kept)
    assert store.quarantined(run_id=run_id) == []


def test_quarantine_dedupes_within_a_batch_and_keeps_distinct_reasons(store: StateStore, run_id: str) -> None:
    record = QuarantinedRecord("Task", "00T000000000001AAA", "bad date", {"v": 1}, run_id)
    same_later = QuarantinedRecord("Task", "00T000000000001AAA", "bad date", {"v": 2}, run_id)
    other_reason = QuarantinedRecord("Task", "00T000000000001AAA", "bad owner", {"v": 1}, run_id)
    other_raw_without_id = QuarantinedRecord("Task", None, "missing Id", {"v": 3}, run_id)
    same_raw_without_id = QuarantinedRecord("Task", None, "missing Id", {"v": 3}, run_id)
    assert store.quarantine([record, same_later, other_reason, other_raw_without_id, same_raw_without_id]) == 3
    assert {(r.record_id, r.reason, r.raw["v"]) for r in store.quarantined("Task")} == {
        ("00T000000000001AAA", "bad date", 2), ("00T000000000001AAA", "bad owner", 1), (None, "missing Id", 3)}


def test_quarantined_filters_by_object_and_run(store: StateStore, run_id: str) -> None:
    store.quarantine(_broken(run_id))
    other_run = store.start_run("nightly_sync", {})
    store.quarantine([QuarantinedRecord("Event", "00U000000000001AAA", "bad", {}, other_run)])
    assert [record.record_id for record in store.quarantined("Case")] == ["500000000000001AAA"]
    assert [record.sobject for record in store.quarantined(run_id=other_run)] == ["Event"]
    assert store.quarantined("Task", run_id=other_run) == []
    assert store.quarantine([]) == 0


def test_a_record_that_arrives_clean_leaves_quarantine(store: StateStore, run_id: str) -> None:
    store.quarantine(_broken(run_id) + [
        QuarantinedRecord("Task", "00T000000000001AAA", "bad owner", {}, run_id)])
    store.release_quarantine("Task", ["00T000000000001AAA", "00T00000000000XAAA"])
    assert [(r.sobject, r.record_id) for r in store.quarantined()] == [("Case", "500000000000001AAA"), ("Task", None)]


# --- pull statistics ------------------------------------------------------------------------------------

def test_record_pull_keeps_one_entry_per_run_and_object(store: StateStore, run_id: str) -> None:
    window_from = datetime(2026, 10, 1, tzinfo=CET)
    window_to = datetime(2026, 10, 2, tzinfo=UTC)
    task = PullStats(run_id, "Task", "bulk", 1000, 2, 1, 4, 12.5, window_from, window_to)
    store.record_pull(task)
    store.record_pull(PullStats(run_id, "Event", "rest", 10, 0, 0, 1, 0.4, None, window_to))
    retried = PullStats(run_id, "Task", "bulk", 1001, 2, 1, 5, 13.0, window_from, window_to)
    store.record_pull(retried)

    stats = store.pull_stats(run_id)
    assert [entry.sobject for entry in stats] == ["Event", "Task"]
    assert stats[1] == retried
    assert stats[1].watermark_from.tzinfo == UTC and stats[1].watermark_from == window_from
    assert store.pull_stats(str(uuid4())) == []


def test_record_pull_refuses_an_unknown_mode_or_run(store: StateStore, run_id: str) -> None:
    with pytest.raises(StateError, match="pull mode"):
        store.record_pull(PullStats(run_id, "Task", "soap", 1, 0, 0, 1, 1.0, None, None))  # type: ignore[arg-type]
    with pytest.raises(StateError, match="record the pull of Task"):
        store.record_pull(PullStats(str(uuid4()), "Task", "rest", 1, 0, 0, 1, 1.0, None, None))


# --- assignments ---------------------------------------------------------------------------------------------

def _assignments(personas: dict[str, str]) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame({"persona": list(personas.values()), "score": 0.9, "confidence": 0.5,
                         "runner_up": "Expert Agent", "runner_up_score": 0.4,
                         "reason": "Case Solver (0.90): 49 cases closed/30d (>= 20)"},
                        index=pd.Index(list(personas), name="user_id"))


def test_assignments_are_stored_per_run_and_saving_again_replaces_them(store: StateStore, run_id: str) -> None:
    as_of = datetime(2026, 11, 1, tzinfo=UTC)
    store.save_assignments(run_id, as_of, "1.0", _assignments({"005A": "Case Solver", "005B": "Deal Closer"}))
    assert store.save_assignments(run_id, as_of, "1.0", _assignments({"005A": "Expert Agent"})) == 1
    saved = store.assignments(run_id)
    assert list(saved.index) == ["005A"] and saved.loc["005A", "persona"] == "Expert Agent"
    assert saved.loc["005A", "catalog_version"] == "1.0" and saved.loc["005A", "as_of"] == as_of


def test_latest_assignments_come_from_the_latest_as_of(store: StateStore) -> None:
    earlier, later = store.start_run("nightly_sync", {}), store.start_run("nightly_sync", {})
    store.save_assignments(later, datetime(2026, 11, 2, tzinfo=UTC), "1.0", _assignments({"005A": "Deal Closer"}))
    store.save_assignments(earlier, datetime(2026, 11, 1, tzinfo=UTC), "1.0", _assignments({"005A": "Case Solver"}))
    assert store.latest_assignments().loc["005A", "persona"] == "Deal Closer"
    before = store.latest_assignments(before=datetime(2026, 11, 2, tzinfo=UTC))
    assert before.loc["005A", "persona"] == "Case Solver"
    assert store.latest_assignments(before=datetime(2026, 1, 1, tzinfo=UTC)).empty


# --- recorded runs, org binding, locks ------------------------------------------------------------------

def test_a_recorded_run_succeeds_with_what_the_block_put_in_it(store: StateStore) -> None:
    with store.recorded_run("pull", {"mode": "auto"}) as run:
        assert store.run(run.id).status == "running"
        run.counts["rows"] = 12
        run.api_calls = 7
    recorded = store.run(run.id)
    assert recorded.status == "succeeded" and recorded.counts == {"rows": 12} and recorded.api_calls == 7


def test_a_recorded_run_that_raises_is_failed_with_the_error_and_the_error_goes_on(store: StateStore) -> None:
    with pytest.raises(ValueError, match="the org went away"):
        with store.recorded_run("pull", {}) as run:
            run.api_calls = 3
            raise ValueError("the org went away")
    recorded = store.run(run.id)
    assert recorded.status == "failed" and recorded.error == "the org went away" and recorded.api_calls == 3


def test_the_state_belongs_to_the_first_org_bound_and_refuses_another(store: StateStore) -> None:
    assert store.bound_org() is None
    store.bind_org("00DHs0000000001AAA", "https://acme.my.salesforce.com")
    store.bind_org("00DHs0000000001", "https://acme.my.salesforce.com")  # its 15-character form: the same org
    with pytest.raises(OrgMismatchError, match="belongs to org 00DHs0000000001 .* reached org 00DHs0000000002"):
        store.bind_org("00DHs0000000002AAA", "https://other.my.salesforce.com")
    assert store.bound_org() == "00DHs0000000001"


def test_a_lock_is_held_by_one_at_a_time_and_says_who_holds_it(store: StateStore) -> None:
    with store.lock("pull", purpose="pull the org into staging"):
        with pytest.raises(LockedError, match=r"cannot pull again: pull the org into staging \(pid \d+ on "):
            with store.lock("pull", purpose="pull again"):
                pass
        with store.lock("push", purpose="push"):  # another lock is another lock
            pass
    with store.lock("pull", purpose="pull again"):  # released
        pass


def test_a_lock_left_by_a_process_that_died_is_taken_over(store: StateStore) -> None:
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has ended
    now = datetime.now(UTC)
    with store._transaction() as session:
        session.add(LockRow(name="pull", owner="gone", host=socket.gethostname(), pid=pid, purpose="pull",
                            acquired_at=now, heartbeat_at=now))
    with store.lock("pull", purpose="pull"):
        pass


def test_a_waiting_lock_gets_it_once_the_holder_releases(store: StateStore) -> None:
    import threading

    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with store.lock("pull", purpose="first"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    threading.Timer(0.5, release.set).start()
    with store.lock("pull", purpose="second", wait_seconds=30):
        pass
    thread.join()


def test_of_two_processes_taking_over_a_dead_lock_at_once_one_wins(store: StateStore,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import connectors.state.store as state_store

    now = datetime.now(UTC)
    with store._transaction() as session:
        session.add(LockRow(name="pull", owner="gone", host="another-host", pid=1, purpose="pull",
                            acquired_at=now - timedelta(hours=1), heartbeat_at=now - timedelta(hours=1)))
    both_decided = threading.Barrier(2)
    judged = state_store._abandoned

    def abandoned_after_both_looked(*args: object) -> bool:
        both_decided.wait(10)  # both have read the dead holder's row before either takes it over
        return judged(*args)

    monkeypatch.setattr(state_store, "_abandoned", abandoned_after_both_looked)
    results: list[bool] = []
    contenders = [threading.Thread(target=lambda owner=owner: results.append(store._try_lock("pull", owner, owner)))
                  for owner in ("first", "second")]
    for contender in contenders:
        contender.start()
    for contender in contenders:
        contender.join()
    assert sorted(results) == [False, True]
    with store._sessions() as session:
        assert session.get(LockRow, "pull").owner in ("first", "second")


def test_persona_history_opens_a_row_only_when_a_persona_changes(tmp_path: Path) -> None:
    import pandas as pd

    state = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    state.ensure_schema()
    day = datetime(2026, 11, 1, tzinfo=timezone.utc)

    def run(as_of: datetime, persona_a: str, persona_b: str) -> int:
        """A run as the flow stores it: its assignments, then the history."""
        assignments = pd.DataFrame({"persona": [persona_a, persona_b], "score": [0.9, 0.8], "confidence": [0.5, 0.4],
                                    "runner_up": None, "runner_up_score": 0.0, "reason": ["a", "b"]},
                                   index=pd.Index(["005A00000000001AAA", "005A00000000002AAA"]))
        run_id = state.start_run("nightly_sync", {})
        state.save_assignments(run_id, as_of, "v1", assignments)
        return state.record_history(run_id, as_of, "v1", assignments)

    assert run(day, "Case Solver", "Deal Closer") == 2
    assert run(day + timedelta(days=1), "Case Solver", "Deal Closer") == 0
    assert run(day + timedelta(days=2), "Expert Agent", "Deal Closer") == 1
    assert run(day + timedelta(days=2), "Expert Agent", "Deal Closer") == 0
    assert run(day + timedelta(days=2), "Team Leader", "Deal Closer") == 1  # the same as-of again corrects
    story = state.history("005A00000000001")  # the 15-character form finds the 18-character one
    assert [(row["persona"], row["valid_from"], row["valid_to"]) for row in story] == [
        ("Case Solver", day, day + timedelta(days=2)), ("Team Leader", day + timedelta(days=2), None)]
    # A backfill of an earlier day is threaded into the story where it belongs: the same history as if
    # the days had been run in date order (the latest run of an as-of counts).
    assert run(day - timedelta(days=5), "Sales Leader", "Sales Leader") == 5
    assert [(row["persona"], row["valid_from"], row["valid_to"]) for row in state.history("005A00000000001AAA")] == [
        ("Sales Leader", day - timedelta(days=5), day), ("Case Solver", day, day + timedelta(days=2)),
        ("Team Leader", day + timedelta(days=2), None)]
    assert [(row["persona"], row["valid_to"]) for row in state.history("005A00000000002AAA")] == [
        ("Sales Leader", day), ("Deal Closer", None)]
    # Replaying again changes nothing.
    before = state.history("005A00000000001AAA")
    state.replay_history(since=day - timedelta(days=30))
    assert [(r["persona"], r["valid_from"], r["valid_to"]) for r in state.history("005A00000000001AAA")] == [
        (r["persona"], r["valid_from"], r["valid_to"]) for r in before]
