"""The nightly_sync flow under Prefect, against a sandbox: one ledger run, stored assignments, repeatable."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from connectors.state import StateStore
from core.errors import ConfigurationError
from flows.nightly_sync import nightly_sync
from core.settings import Settings
from sandbox.runner import RunningSandbox
from tests.conftest import sandbox_environment


@pytest.fixture(scope="module", autouse=True)
def prefect_api() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def configured(fresh_sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The environment a nightly run reads: the sandbox as the org, a home of its own."""
    for name, value in sandbox_environment(fresh_sandbox, home=tmp_path, pull_history_days=400).items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def test_a_nightly_run_pulls_assigns_and_records_everything(configured: Settings) -> None:
    as_of = datetime(2026, 11, 1, tzinfo=timezone.utc)
    summary = nightly_sync(as_of=as_of)
    state = StateStore.from_config(configured.state())
    run = state.run(summary.run_id)
    assert run.flow == "nightly_sync" and run.status == "succeeded" and run.api_calls > 0
    assert run.counts["rows"] > 10_000 and run.counts["users"] == summary.users
    assignments = state.assignments(summary.run_id)
    assert len(assignments) == summary.users > 150
    assert set(assignments["as_of"]) == {as_of} and set(assignments["catalog_version"]) == {summary.catalog_version}
    assert (assignments["reason"].str.len() <= 255).all()
    assert sum(summary.distribution.values()) == summary.users


def test_the_same_as_of_gives_the_same_assignments(configured: Settings) -> None:
    as_of = datetime(2026, 11, 1, tzinfo=timezone.utc)
    first = nightly_sync(as_of=as_of)
    second = nightly_sync(as_of=as_of, full_refresh=True)  # staged again from scratch: decided again, not reused
    state = StateStore.from_config(configured.state())
    columns = ["persona", "score", "confidence", "reason"]
    assert "reused_from" not in state.run(second.run_id).counts
    assert state.assignments(first.run_id)[columns].equals(state.assignments(second.run_id)[columns])


def test_a_failing_run_is_marked_failed_in_the_ledger(configured: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_LOGIN_URL", "https://localhost:9")
    monkeypatch.setenv("PERSONA_SYNC_TASK_RETRIES", "1")
    monkeypatch.setenv("PERSONA_SYNC_TASK_RETRY_DELAY_SECONDS", "0")
    with pytest.raises(Exception, match="cannot reach https://localhost:9"):
        nightly_sync(as_of=datetime(2026, 11, 1, tzinfo=timezone.utc))
    run = StateStore.from_config(configured.state()).runs(limit=1)[0]
    assert run.flow == "nightly_sync" and run.status == "failed" and "localhost:9" in run.error
    # An unreachable org is transient: the pull was tried again once before the run failed.
    with get_client(sync_client=True) as client:
        [pull] = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="pulled-changes")),
                                       sort="EXPECTED_START_TIME_DESC", limit=1)
    assert pull.run_count == 2 and pull.state.is_failed()


def test_a_refused_credential_is_not_retried(configured: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_CLIENT_SECRET", "not-the-secret")
    monkeypatch.setenv("PERSONA_SYNC_TASK_RETRY_DELAY_SECONDS", "0")
    with pytest.raises(Exception, match="invalid_client"):
        nightly_sync(as_of=datetime(2026, 11, 1, tzinfo=timezone.utc))
    with get_client(sync_client=True) as client:
        [pull] = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="pulled-changes")),
                                       sort="EXPECTED_START_TIME_DESC", limit=1)
    assert pull.run_count == 1 and pull.state.is_failed()


def test_a_flow_with_no_org_configured_fails_and_touches_nothing(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("PERSONA_SYNC_SALESFORCE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PERSONA_SYNC_HOME", str(tmp_path))
    with pytest.raises(ConfigurationError, match="no Salesforce org is configured") as raised:
        nightly_sync(as_of=datetime(2026, 11, 1, tzinfo=timezone.utc))
    assert "PERSONA_SYNC_SALESFORCE_LOGIN_URL" in str(raised.value)
    assert not list(tmp_path.iterdir())  # no state database, no staging, no sandbox


def test_a_nightly_run_pushes_once_and_a_rerun_writes_nothing(configured: Settings) -> None:
    from connectors.salesforce import connect
    from typer.testing import CliRunner

    from persona_sync.cli import app

    as_of = datetime(2026, 11, 1, tzinfo=timezone.utc)
    sf = connect(configured.salesforce())
    dry = nightly_sync(as_of=as_of, dry_run=True)
    state = StateStore.from_config(configured.state())
    plan = state.run(dry.run_id).counts["push"]
    assert plan["dry_run"] and plan["users_changed"] == plan["users_compared"] > 150 and plan["written"] == 0
    assert state.assignments(dry.run_id).empty and state.sync_log(dry.run_id) == []
    assert sf.query("SELECT COUNT() FROM User WHERE Persona__c != null")["totalSize"] == 0

    first = nightly_sync(as_of=as_of)
    pushed = state.run(first.run_id).counts["push"]
    assert pushed["written"] == plan["users_changed"] and pushed["failed"] == {}
    in_org = {row["Id"]: row["Persona__c"] for row in sf.query_all(
        "SELECT Id, Persona__c FROM User WHERE IsActive = true")["records"]}
    stored = state.assignments(first.run_id)["persona"]
    assert in_org == {user: stored[user] for user in in_org}

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        changed = [artifact for artifact in client.read_artifacts() if artifact.key == "changed-users"]
    assert changed and first.run_id in max(changed, key=lambda artifact: artifact.created).description

    second = nightly_sync(as_of=as_of)
    assert state.run(second.run_id).counts["push"]["written"] == 0 and state.sync_log(second.run_id) == []
    # Nothing the personas depend on changed (the push's own User fields aside): the first run's checks,
    # features and assignments stand; the rerun only pulled and compared.
    assert state.run(second.run_id).counts["reused_from"] == first.run_id
    assert state.checks(second.run_id) == [] and state.assignments(second.run_id).empty
    user = next(iter(in_org))
    shown = CliRunner().invoke(app, ["history", user])
    assert shown.exit_code == 0 and in_org[user] in shown.output and first.run_id[:8] in shown.output
    assert len(state.history(user)) == 1  # the rerun added no history row
    # Once the org's activity changes, the same as-of is decided again.
    case = sf.query("SELECT Id FROM Case WHERE IsClosed = true LIMIT 1")["records"][0]["Id"]
    sf.Case.update(case, {"OwnerId": user})
    third = nightly_sync(as_of=as_of)
    assert "reused_from" not in state.run(third.run_id).counts and len(state.checks(third.run_id)) > 100


def test_a_run_is_rolled_back_except_what_changed_since(configured: Settings, fresh_sandbox: RunningSandbox,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from connectors.salesforce import connect
    from flows.rollback import rollback_run
    from persona_sync.embedded_org import demo_community

    for name, value in demo_community(tmp_path, fresh_sandbox.org_path).items():
        monkeypatch.setenv(f"PERSONA_SYNC_{name.upper()}", value.get_secret_value() if hasattr(value, "get_secret_value")
                           else str(value))
    community = sqlite3.connect(tmp_path / "community.db")
    others = set(community.execute("SELECT member_email, role FROM community_members"))
    sf = connect(configured.salesforce())
    fields = "SELECT Id, Persona__c, Persona_Reason__c FROM User WHERE IsActive = true ORDER BY Id"
    before = sf.query_all(fields)["records"]

    run = nightly_sync(as_of=datetime(2026, 11, 1, tzinfo=timezone.utc))
    granted = set(community.execute("SELECT member_email, role FROM community_members")) - others
    assert granted and others <= set(community.execute("SELECT member_email, role FROM community_members"))
    edited = before[0]["Id"]
    sf.User.update(edited, {"Persona__c": "Pinned by hand"})

    counts = rollback_run(run_id=run.run_id)
    after = {row["Id"]: row for row in sf.query_all(fields)["records"]}
    assert counts["skipped_changed_since"] == 1 and after[edited]["Persona__c"] == "Pinned by hand"
    assert all(after[row["Id"]] == row for row in before if row["Id"] != edited)  # as before the run
    assert set(community.execute("SELECT member_email, role FROM community_members")) == others
    state = StateStore.from_config(configured.state())
    assert state.run(run.run_id).status == "rolled_back" and state.latest_assignments().empty
    assert state.history(edited) == []
    assert state.runs(limit=1)[0].flow == "rollback" and state.runs(limit=1)[0].status == "succeeded"
    with pytest.raises(Exception, match="rolled back already"):
        rollback_run(run_id=run.run_id)
    from typer.testing import CliRunner

    from persona_sync.cli import app

    shown = CliRunner().invoke(app, ["status", "--limit", "3"])
    assert shown.exit_code == 0, shown.output
    rows = [line for line in shown.output.splitlines() if line.startswith(f"  {run.run_id[:8]}")]
    assert len(rows) == 1 and "rolled_back" in rows[0] and "nightly_sync" in rows[0] and "written" in rows[0]
    # The refused second rollback is a failed run of its own, with why.
    assert f"failed: run {run.run_id} was rolled back already" in shown.output


def test_a_second_night_after_changes_moves_and_writes_only_what_changed(configured: Settings,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client

    monkeypatch.setenv("PERSONA_SYNC_STABILITY_MARGIN", "0")  # a clear new winner is enough to move

    from connectors.salesforce import connect

    night = datetime(2026, 11, 1, tzinfo=timezone.utc)
    fields = "SELECT Id, Persona__c, Persona_Score__c, Persona_Confidence__c, Persona_Reason__c FROM User " \
             "WHERE IsActive = true ORDER BY Id"
    first = nightly_sync(as_of=night)
    sf = connect(configured.salesforce())
    before = {row["Id"]: row for row in sf.query_all(fields)["records"]}
    state = StateStore.from_config(configured.state())
    stored = state.assignments(first.run_id)["persona"]
    # Between the nights, a team leader's team moves to a case solver, who now leads it.
    leader = stored[stored == "Team Leader"].index[0]
    solver = stored[stored == "Case Solver"].index[0]
    team = sf.query_all(f"SELECT Id FROM User WHERE ManagerId = '{leader}' AND IsActive = true")["records"]
    assert len(team) >= 3
    for member in team:
        sf.User.update(member["Id"], {"ManagerId": solver})

    second = nightly_sync(as_of=night + timedelta(hours=1))
    after = {row["Id"]: row for row in sf.query_all(fields)["records"]}
    changed_in_org = {user for user in after if after[user] != before[user]}
    pushed = state.run(second.run_id).counts["push"]
    assert pushed["written"] == len(changed_in_org) and pushed["failed"] == {}
    assert {leader, solver} & changed_in_org
    # The summary shows the night's personas before and after, and every movement the org saw.
    from collections import Counter

    moves = Counter((before[user]["Persona__c"], after[user]["Persona__c"]) for user in changed_in_org
                    if before[user]["Persona__c"] != after[user]["Persona__c"])
    assert moves  # the leader without a team, the new leader, or both
    with get_client(sync_client=True) as client:
        summaries = [artifact for artifact in client.read_artifacts() if artifact.key == "nightly-sync"]
    text = max(summaries, key=lambda artifact: artifact.created).data
    assert second.run_id in text and "## Personas before and after" in text and "API calls" in text
    for (was, now), users in moves.items():
        assert f"| {was} | {now} | {users:,} |" in text


def test_secrets_come_from_prefect_secret_blocks_when_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.blocks.system import Secret

    from flows.settings import flow_settings

    Secret(value="from-the-block").save("persona-sync-test-client-secret", overwrite=True)
    monkeypatch.setenv("PERSONA_SYNC_HOME", str(tmp_path))
    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_CLIENT_SECRET", "from-the-environment")
    monkeypatch.setenv("PERSONA_SYNC_SECRET_BLOCKS", '{"salesforce_client_secret": "persona-sync-test-client-secret"}')
    assert flow_settings().salesforce_client_secret.get_secret_value() == "from-the-block"
    monkeypatch.setenv("PERSONA_SYNC_SECRET_BLOCKS", '{"salesforce_client_secret": "no-such-block"}')
    with pytest.raises(ConfigurationError, match="'no-such-block'"):
        flow_settings()
    monkeypatch.setenv("PERSONA_SYNC_SECRET_BLOCKS", '{"salesforce_login_url": "some-block"}')
    with pytest.raises(Exception, match="salesforce_login_url, which are not secret settings"):
        flow_settings()
