"""The push against a sandbox: minimal diff, batching, failure classes, manual edits, dry run, rerun.

Each test compares with the org itself (the User records read back, the org's own API counter), not with
the push's own bookkeeping.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from simple_salesforce import Salesforce

from connectors.salesforce import connect
from connectors.salesforce.write import update_records
from connectors.salesforce import SalesforceClient
from connectors.state import StateStore
from core.configs import PushConfig
from core.errors import ConfigurationError
from core.settings import Settings
from sandbox.runner import RunningSandbox
from tasks.push import TARGET, run_push
from tests.conftest import sandbox_settings

LABELS = ["Case Solver", "Deal Closer", "Unassigned"]
NOW = datetime(2026, 11, 1, 6, 0, tzinfo=timezone.utc)
FIELDS = "Id, Persona__c, Persona_Score__c, Persona_Confidence__c, Persona_Reason__c, Persona_Updated__c"


@pytest.fixture
def org(fresh_sandbox: RunningSandbox, tmp_path: Path) -> tuple[RunningSandbox, Settings, StateStore]:
    settings = sandbox_settings(fresh_sandbox, home=tmp_path)
    state = StateStore.from_config(settings.state())
    state.ensure_schema()
    return fresh_sandbox, settings, state


def _active_users(sf: Salesforce) -> list[str]:
    return [row["Id"] for row in sf.query_all("SELECT Id FROM User WHERE IsActive = true ORDER BY Id")["records"]]


def _assignments(user_ids: list[str], persona: str = "Case Solver", score: float = 0.912345) -> pd.DataFrame:
    return pd.DataFrame({"persona": persona, "score": score, "confidence": 0.4, "reason": f"{persona} because"},
                        index=pd.Index(user_ids, name="user_id"))


def _org_fields(sf: Salesforce) -> dict[str, dict]:
    return {row["Id"]: row for row in sf.query_all(f"SELECT {FIELDS} FROM User ORDER BY Id")["records"]}


def _api_used(sf: Salesforce) -> int:
    daily = sf.limits()["DailyApiRequests"]
    return daily["Max"] - daily["Remaining"]


def _push(settings: Settings, state: StateStore, run: str, assignments: pd.DataFrame, *, dry_run: bool = False,
          config: PushConfig | None = None):
    run_id = state.start_run("test", {"run": run})
    return run_push(settings.salesforce(), settings.state(), config or settings.push(), run_id, assignments, LABELS,
                    dry_run=dry_run, now=NOW)


def test_only_users_who_differ_are_written_and_a_rerun_writes_nothing(org) -> None:
    sandbox, settings, state = org
    sf = connect(settings.salesforce())
    users = _active_users(sf)
    first = _push(settings, state, "first", _assignments(users))
    fields = _org_fields(sf)
    assert first.written == first.planned == len(users) and first.calls_to_write == 1
    assert {fields[user]["Persona__c"] for user in users} == {"Case Solver"}
    assert fields[users[0]]["Persona_Score__c"] == pytest.approx(0.9123)  # at the field's scale (4)
    assert fields[users[0]]["Persona_Updated__c"].startswith("2026-11-01T06:00:00")

    before = _api_used(sf)
    again = _push(settings, state, "again", _assignments(users, score=0.91234999))  # the same at scale 4
    spent = _api_used(sf) - before - 1  # less the limits call itself
    # describe and one page of users read back, nothing else
    assert again.planned == again.written == 0 and spent == again.calls == 2
    assert _org_fields(sf) == fields

    three = _push(settings, state, "three", pd.concat([_assignments(users[:3], "Deal Closer"),
                                                       _assignments(users[3:])]))
    assert three.written == 3 and dict(three.transitions) == {("Case Solver", "Deal Closer"): 3}
    changed = {user for user, row in _org_fields(sf).items() if row != fields[user]}
    assert changed == set(users[:3])


def test_collections_batches_hold_200_records(org) -> None:
    sandbox, settings, _ = org
    sf = connect(settings.salesforce())
    every_user = [row["Id"] for row in sf.query_all("SELECT Id FROM User")["records"]]
    assert len(every_user) > 200
    before = _api_used(sf)
    outcomes = update_records(SalesforceClient(settings.salesforce()), "User",
                              [{"Id": user, "Persona__c": "Deal Closer"} for user in every_user])
    assert all(outcome.success for outcome in outcomes) and len(outcomes) == len(every_user)
    assert _api_used(sf) - before == -(-len(every_user) // 200) + 1  # ceil(n / 200), and the limits call


def test_failures_are_recorded_per_record_and_locks_retried(org) -> None:
    sandbox, settings, state = org
    sf = connect(settings.salesforce())
    users = _active_users(sf)
    locked, inactive, rule = users[:3]
    sandbox.set_faults(locked_ids={locked: 2}, update_errors={inactive: "INACTIVE_OWNER_OR_USER"},
                       fail_update_ids=[rule])
    config = settings.push().model_copy(update={"first_wait_seconds": 0.01})
    report = _push(settings, state, "faults", _assignments(users), config=config)
    assert report.written == len(users) - 2
    assert dict(report.failed) == {"INACTIVE_OWNER_OR_USER": 1, "FIELD_CUSTOM_VALIDATION_EXCEPTION": 1}
    fields = _org_fields(sf)
    assert fields[locked]["Persona__c"] == "Case Solver"  # went through on its third try
    assert fields[inactive]["Persona__c"] is None and fields[rule]["Persona__c"] is None
    log = {row["record_id"]: row for row in state.sync_log(state.runs(1)[0].id, TARGET)}
    assert log[locked]["status"] == "done" and log[locked]["attempts"] == 3
    assert (log[inactive]["status"], log[inactive]["error_code"]) == ("failed", "INACTIVE_OWNER_OR_USER")
    assert log[rule]["error_code"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION" and "validation rule" in log[rule]["message"]

    sandbox.clear_faults()  # the next run writes what failed, and only that
    retry = _push(settings, state, "retry", _assignments(users))
    assert retry.written == 2 and {row["Persona__c"] for row in _org_fields(sf).values() if row["Id"] in users} == \
        {"Case Solver"}


def test_a_persona_edited_by_hand_is_kept_and_reported(org) -> None:
    sandbox, settings, state = org
    sf = connect(settings.salesforce())
    users = _active_users(sf)
    _push(settings, state, "first", _assignments(users))
    pinned, reworded = users[:2]
    sf.User.update(pinned, {"Persona__c": "Sales Leader"})  # a manager pins a persona by hand
    sf.User.update(reworded, {"Persona_Reason__c": "edited by an admin"})

    report = _push(settings, state, "second", _assignments(users, "Deal Closer"))
    fields = _org_fields(sf)
    assert fields[pinned]["Persona__c"] == "Sales Leader" and report.conflicts == 1
    assert fields[reworded]["Persona__c"] == "Deal Closer" and fields[reworded]["Persona_Reason__c"] == \
        "Deal Closer because"  # the reason's policy is overwrite
    conflict = [row for row in state.sync_log(state.runs(1)[0].id, TARGET) if row["status"] == "conflict"]
    assert [row["record_id"] for row in conflict] == [pinned] and "persona kept" in conflict[0]["message"]

    overwrite = settings.push().model_copy(update={"manual_edits": {**settings.push().manual_edits,
                                                                    "persona": "overwrite"}})
    _push(settings, state, "third", _assignments(users, "Deal Closer"), config=overwrite)
    assert _org_fields(sf)[pinned]["Persona__c"] == "Deal Closer"


def test_a_dry_run_plans_and_writes_nothing(org) -> None:
    sandbox, settings, state = org
    sf = connect(settings.salesforce())
    users = _active_users(sf)
    before = _org_fields(sf)
    plan = _push(settings, state, "dry", _assignments(users), dry_run=True)
    assert plan.planned == len(users) and plan.calls_to_write == 1 and plan.written == 0
    assert dict(plan.transitions) == {("(none)", "Case Solver"): len(users)}
    assert _org_fields(sf) == before and state.sync_log(state.runs(1)[0].id) == []


def test_missing_fields_stop_the_push_with_what_to_create(org) -> None:
    sandbox, settings, state = org
    config = settings.push().model_copy(update={"persona_field": "Persona_Label__c", "reason_field": "Title"})
    with pytest.raises(ConfigurationError) as raised:
        _push(settings, state, "fields", _assignments(_active_users(connect(settings.salesforce()))), config=config)
    message = str(raised.value)
    assert "Persona_Label__c: missing (create a Text field of at least 11 characters" in message
    assert "Title: holds 80 characters, needs at least 255" in message


def test_a_bulk_job_writes_and_reports_each_record(org) -> None:
    sandbox, settings, state = org
    sf = connect(settings.salesforce())
    users = _active_users(sf)
    sandbox.set_faults(update_errors={users[0]: "INACTIVE_OWNER_OR_USER"})
    config = settings.push().model_copy(update={"bulk_threshold": 1})
    before = _api_used(sf)
    report = _push(settings, state, "bulk", _assignments(users), config=config)
    spent = _api_used(sf) - before - 1
    assert report.written == len(users) - 1 and dict(report.failed) == {"INACTIVE_OWNER_OR_USER": 1}
    assert spent == report.calls == 2 + report.calls_to_write  # describe + read-back, then the job's 6 calls
    fields = _org_fields(sf)
    assert fields[users[0]]["Persona__c"] is None and {fields[user]["Persona__c"] for user in users[1:]} == \
        {"Case Solver"}
    # Only what changes is sent: a later job leaves the fields it does not change as they are.
    again = _push(settings, state, "bulk again", _assignments(users[1:], score=0.5), config=config)
    assert again.written == len(users) - 1
    fields = _org_fields(sf)
    assert {(fields[user]["Persona__c"], fields[user]["Persona_Score__c"]) for user in users[1:]} == \
        {("Case Solver", 0.5)}


def test_a_persona_written_before_a_score_only_change_is_still_ours(org) -> None:
    sandbox, settings, state = org
    sf = connect(settings.salesforce())
    users = _active_users(sf)
    _push(settings, state, "first", _assignments(users, score=0.9))
    assert _push(settings, state, "score only", _assignments(users, score=0.5)).written == len(users)
    third = _push(settings, state, "new persona", _assignments(users, "Deal Closer", score=0.5))
    assert third.conflicts == 0 and third.written == len(users)
    assert {row["Persona__c"] for user, row in _org_fields(sf).items() if user in users} == {"Deal Closer"}
