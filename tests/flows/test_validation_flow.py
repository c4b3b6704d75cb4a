"""Validation through the nightly_sync flow against a sandbox: a bad run stops before it writes.

Each test makes one real kind of bad run (a truncated pull, an export whose activity names no user, a
catalog change that reshuffles everyone), runs the flow, and checks against the state database and
the org itself that nothing was stored, that the ledger says why, and that the Data Docs exist.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from connectors.salesforce import connect
from connectors.state import StateStore
from core.errors import ConfigurationError, ValidationFailed
from core.settings import Settings
from flows.nightly_sync import nightly_sync
from persona_sync.cli import app
from personas.catalog import default_catalog_path
from sandbox.runner import RunningSandbox, SandboxConfig, prepare_org, start_sandbox
from tests.conftest import AS_OF, sandbox_environment

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_export import export_org  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def prefect_api() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _configure(running: RunningSandbox, home: Path, monkeypatch: pytest.MonkeyPatch, **overrides: object) -> Settings:
    for name, value in sandbox_environment(running, home=home, pull_history_days=400, **overrides).items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def _persona_fields_in_org(settings: Settings) -> list[dict]:
    """The persona fields of every User, as the org holds them (what a push would change)."""
    sf = connect(settings.salesforce())
    return sf.query_all("SELECT Id, Persona__c, Persona_Score__c FROM User ORDER BY Id")["records"]


def _assert_stopped_before_writing(state: StateStore, failed: ValidationFailed, *, stored_runs: int) -> str:
    """The failed run is in the ledger with its checks and Data Docs, and stored no assignments."""
    run = state.runs(limit=1)[0]
    assert run.status == "failed" and "validation failed" in run.error
    assert state.assignments(run.id).empty
    stored = {record.id for record in state.runs(limit=50) if not state.assignments(record.id).empty}
    assert len(stored) == stored_runs
    assert failed.data_docs and Path(failed.data_docs).is_file() and run.data_docs == failed.data_docs
    assert any(check["status"] == "failed" for check in state.checks(run.id))
    return run.id


def test_a_truncated_pull_is_refused(fresh_sandbox: RunningSandbox, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _configure(fresh_sandbox, tmp_path, monkeypatch)
    first = nightly_sync(as_of=AS_OF)
    state = StateStore.from_config(settings.state())
    staged_tasks = state.run(first.run_id).counts["staged_rows"]["Task"]
    org_before = _persona_fields_in_org(settings)

    fresh_sandbox.set_faults(hidden_rows={"Task": 0.95})  # the integration user lost sight of most Tasks
    with pytest.raises(ValidationFailed, match=r"Task: [\d,]+ rows staged, [\d,]+ at the last good run") as raised:
        nightly_sync(as_of=AS_OF, full_refresh=True)

    assert "staged rows not collapsed" in raised.value.failed
    run_id = _assert_stopped_before_writing(state, raised.value, stored_runs=1)
    failed = [check for check in state.checks(run_id) if check["status"] == "failed"]
    assert [check["samples"] for check in failed] == [("Task",)]
    assert f"{staged_tasks:,} at the last good run" in failed[0]["message"]
    assert _persona_fields_in_org(settings) == org_before
    # A failed run is no baseline: the next run is held to the last good one, and passes once the org is whole.
    fresh_sandbox.clear_faults()
    assert nightly_sync(as_of=AS_OF, full_refresh=True).users == first.users


def test_an_incremental_pull_that_lost_sight_of_rows_is_refused_when_reconciled(
        fresh_sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Reconcile Ids on every run: the org's Ids are compared with staging, and rows gone from view leave it.
    settings = _configure(fresh_sandbox, tmp_path, monkeypatch, pull_reconcile_days=1e-9)
    nightly_sync(as_of=AS_OF)
    fresh_sandbox.set_faults(hidden_rows={"Case": 0.9})
    with pytest.raises(ValidationFailed, match=r"Case: [\d,]+ rows staged, [\d,]+ at the last good run") as raised:
        nightly_sync(as_of=AS_OF)
    _assert_stopped_before_writing(StateStore.from_config(settings.state()), raised.value, stored_runs=1)


def test_an_export_whose_activity_names_no_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generated = prepare_org(SandboxConfig(data_dir=tmp_path / "generated", preset="small", seed=7, as_of=AS_OF))
    export_org(generated, tmp_path / "export", extra_columns=False)
    _drop_columns(tmp_path / "export" / "ListEmail.csv", {"OwnerId", "CreatedById", "LastModifiedById"})
    replayed = start_sandbox(SandboxConfig(data_dir=tmp_path / "replayed", from_export=tmp_path / "export", port=0))
    try:
        settings = _configure(replayed, tmp_path / "home", monkeypatch)
        with pytest.raises(ValidationFailed,
                           match=r"ListEmail: ([\d,]+) of \1 rows name no user \(no OwnerId or CreatedById\)") as raised:
            nightly_sync(as_of=AS_OF)
        assert raised.value.failed == ["rows quarantined"]
        run_id = _assert_stopped_before_writing(StateStore.from_config(settings.state()), raised.value, stored_runs=0)
        listed = CliRunner().invoke(app, ["quarantine", "--object", "ListEmail", "--limit", "2"])
        assert listed.exit_code == 0, listed.output
        assert "ListEmail" in listed.output and "no OwnerId" in listed.output
        assert len([line for line in listed.output.splitlines() if line.startswith("ListEmail 0XB")]) == 2
    finally:
        replayed.stop()
    # The Prefect UI shows the failing checks with sample Ids, and links the Data Docs.
    artifacts = _artifacts()
    failed = artifacts["validation-failed"]
    assert f"run {run_id}" in failed.data and "ListEmail: " in failed.data and "| ListEmail |" in failed.data
    assert "(file:///" in artifacts["data-docs"].data and artifacts["data-docs"].data.endswith(f"{run_id}/index.html)")
    flow_run = _latest_flow_run()
    assert flow_run.state.is_failed() and "ListEmail" in flow_run.state.message


def _artifacts() -> dict:
    """The newest Prefect artifact of each key."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    newest: dict = {}
    for artifact in sorted(artifacts, key=lambda artifact: artifact.created):
        newest[artifact.key] = artifact
    return newest


def _latest_flow_run():
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]


def test_a_warning_lets_the_run_go_on_and_is_in_the_summary_and_ledger(fresh_sandbox: RunningSandbox, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with sqlite3.connect(fresh_sandbox.org_path) as org:  # an org that never names whom a meeting was with
        org.execute('UPDATE Event SET WhoId = NULL')
    settings = _configure(fresh_sandbox, tmp_path, monkeypatch)
    summary = nightly_sync(as_of=AS_OF)
    state = StateStore.from_config(settings.state())
    run = state.run(summary.run_id)
    assert run.status == "succeeded" and run.counts["checks"]["warned"] == ["catalog fields filled"]
    [warned] = [check for check in state.checks(run.id) if check["status"] == "warned"]
    assert warned["samples"] == ("Event.WhoId",) and "customer_meetings" in warned["message"]
    assert run.counts["coverage"]["Event.WhoId"] == 0.0 and run.counts["coverage"]["Event.WhatId"] > 0.1
    assert warned["observed"].startswith("1 of ") and "least filled: Event.WhoId 0%" in warned["observed"]
    assert "Event.WhoId is empty in every staged row" in _artifacts()["nightly-sync"].data
    assert len(state.assignments(run.id)) == summary.users


def test_too_few_users_assigned_stops_the_first_run_unless_forced(fresh_sandbox: RunningSandbox, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _configure(fresh_sandbox, tmp_path, monkeypatch, guard_assigned_share_warn=0.999,
                          guard_assigned_share_fail=0.999)
    with pytest.raises(ValidationFailed, match=r"assigned_share: [\d.]+% \([\d,]+ of [\d,]+ active users\)"):
        nightly_sync(as_of=AS_OF)
    state = StateStore.from_config(settings.state())
    assert state.latest_assignments().empty
    forced = nightly_sync(as_of=AS_OF, force=["assigned_share"], force_reason="a new org: most users are idle")
    assert state.run(forced.run_id).counts["checks"]["forced"] == ["assigned_share"]


def _drop_columns(csv_file: Path, names: set[str]) -> None:
    import csv

    with open(csv_file, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    keep = [index for index, name in enumerate(rows[0]) if name not in names]
    with open(csv_file, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerows(
            [[row[index] for index in keep] for row in rows])


def test_a_catalog_that_reshuffles_everyone_stops_unless_forced(fresh_sandbox: RunningSandbox, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _configure(fresh_sandbox, tmp_path, monkeypatch)
    first = nightly_sync(as_of=AS_OF)
    reshuffled = _catalog_with_labels_rotated(tmp_path / "reshuffled.yaml")
    monkeypatch.setenv("PERSONA_SYNC_CATALOG_FILE", str(reshuffled))
    state = StateStore.from_config(settings.state())

    with pytest.raises(ValidationFailed, match=r"persona_changes: [\d.]+% \(\d+ of \d+ users\) would change") as raised:
        nightly_sync(as_of=AS_OF)
    assert "persona_changes" in raised.value.failed and "--force persona_changes" in str(raised.value)
    _assert_stopped_before_writing(state, raised.value, stored_runs=1)

    with pytest.raises(ConfigurationError, match="--reason"):
        nightly_sync(as_of=AS_OF, force=["persona_changes"])
    with pytest.raises(ConfigurationError, match="only guardrails can be forced"):
        nightly_sync(as_of=AS_OF, force=["rows quarantined"], force_reason="try")

    forced = nightly_sync(as_of=AS_OF, force=["persona_changes", "distribution_drift", "persona_loss"],
                          force_reason="catalog 2027.1 renames every persona")
    run = state.run(forced.run_id)
    assert run.status == "succeeded" and run.parameters["force_reason"] == "catalog 2027.1 renames every persona"
    assert {check["name"] for check in state.checks(run.id) if check["status"] == "forced"} >= {"persona_changes"}
    assert "persona_changes" in run.counts["checks"]["forced"]
    assert len(state.assignments(forced.run_id)) == forced.users == first.users


def _catalog_with_labels_rotated(path: Path) -> Path:
    """The default catalog with each persona's rules given to the next persona: the same people are found,
    under other names, so nearly everyone changes persona."""
    document = yaml.safe_load(default_catalog_path().read_text())
    personas = document["personas"]
    rules = [persona["rules"] for persona in personas]
    for persona, taken in zip(personas, rules[1:] + rules[:1]):
        persona["rules"] = taken
    document["version"] = "reshuffled"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
