"""The persona commands: catalog check, explain, evaluate (stages run directly, without Prefect)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from connectors.state import StateStore
from persona_sync.cli import app
from personas.catalog import default_catalog_path, load_catalog
from sandbox.runner import RunningSandbox
from tasks.personas import assign_candidates, compute_and_store_features, store_assignments
from tests.conftest import pull_org, sandbox_environment, sandbox_settings

runner = CliRunner()
AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)


def test_catalog_check_accepts_the_default_catalog() -> None:
    result = runner.invoke(app, ["catalog", "check", str(default_catalog_path())])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


def test_catalog_check_names_file_line_and_field_of_a_mistake(tmp_path: Path) -> None:
    broken = tmp_path / "catalog.yaml"
    broken.write_text(default_catalog_path().read_text().replace("feature: direct_reports", "feature: direct_report", 1))
    result = runner.invoke(app, ["catalog", "check", str(broken)])
    assert result.exit_code == 2
    text = "".join(result.output.split())  # the console wraps long paths anywhere, even inside a name
    assert "catalog.yaml" in text and "direct_report" in text and "direct_reports" in text


@pytest.fixture
def assigned(fresh_sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunningSandbox:
    """A pulled, featured and assigned sandbox org, with the environment pointing at it."""
    settings = sandbox_settings(fresh_sandbox, home=tmp_path, pull_history_days=400)
    for name, value in sandbox_environment(fresh_sandbox, home=tmp_path).items():
        monkeypatch.setenv(name, value)
    state = StateStore.from_config(settings.state())
    state.ensure_schema()
    run_id = state.start_run("test", {})
    pull_org(settings, run_id=run_id)
    features_file = compute_and_store_features(settings.personas(), settings.staging(), AS_OF)
    store_assignments(settings.state(), assign_candidates(settings.personas(), settings.state(), features_file, run_id, AS_OF))
    return fresh_sandbox


def test_explain_prints_every_persona_for_a_user(assigned: RunningSandbox) -> None:
    user_id = assigned.truth_csv.read_text().splitlines()[1].split(",")[0]
    result = runner.invoke(app, ["explain", user_id[:15]])
    assert result.exit_code == 0, result.output
    assert "Case Solver" in result.output and "Deal Closer" in result.output and "Assigned in run" in result.output


def test_explain_an_unknown_user_is_a_clear_error(assigned: RunningSandbox) -> None:
    result = runner.invoke(app, ["explain", "005000000000000AAA"])
    assert result.exit_code == 2 and "no user 005000000000000AAA" in result.output


def test_evaluate_prints_metrics_and_saves_the_picture(assigned: RunningSandbox, tmp_path: Path) -> None:
    picture = tmp_path / "confusion.png"
    result = runner.invoke(app, ["evaluate", "--truth", str(assigned.truth_csv), "--png", str(picture)])
    assert result.exit_code == 0, result.output
    assert "macro F1" in result.output and "Confusion matrix" in result.output
    assert "Right by confidence" in result.output and ">= 0.2" in result.output
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _state_snapshot(state: StateStore) -> tuple:
    runs = state.runs(limit=100)
    return (tuple((run.id, run.status, run.data_docs) for run in runs),
            tuple(len(state.assignments(run.id)) for run in runs), tuple(len(state.checks(run.id)) for run in runs))


def test_validate_checks_what_is_staged_and_writes_nothing(assigned: RunningSandbox, tmp_path: Path) -> None:
    state = StateStore.from_config(sandbox_settings(assigned, home=tmp_path).state())
    before = _state_snapshot(state)
    staging = sorted(path.stat().st_mtime_ns for path in (tmp_path / "staging").rglob("*") if path.is_file())
    result = runner.invoke(app, ["validate", "--as-of", "2026-11-01T00:00:00"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Checks: " in text and " passed" in text and "failed" not in text
    docs = Path(result.output.split("Data Docs: ")[1].splitlines()[0])
    assert docs.is_file() and (docs.parent / "staging" / "index.html").is_file()
    assert _state_snapshot(state) == before
    assert sorted(path.stat().st_mtime_ns for path in (tmp_path / "staging").rglob("*") if path.is_file()) == staging


def test_validate_exits_1_and_names_a_failing_guardrail(assigned: RunningSandbox,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONA_SYNC_GUARD_ASSIGNED_SHARE_FAIL", "0.999")
    result = runner.invoke(app, ["validate", "--as-of", "2026-11-01T00:00:00"])
    assert result.exit_code == 2 and "PERSONA_SYNC_GUARD_ASSIGNED_SHARE_WARN / _FAIL: a guardrail's warn level (0.7) " \
        "must be at or above its fail level (0.999)" in " ".join(result.output.split())
    monkeypatch.setenv("PERSONA_SYNC_GUARD_ASSIGNED_SHARE_WARN", "0.999")
    result = runner.invoke(app, ["validate", "--as-of", "2026-11-01T00:00:00"])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "failed guardrails: assigned_share:" in text and "the fail level is below 100%" in text


def test_calibrate_writes_a_new_catalog_version_and_says_whether_it_helped(assigned: RunningSandbox,
                                                                           tmp_path: Path) -> None:
    with sqlite3.connect(assigned.org_path) as org:
        active = {row[0] for row in org.execute("SELECT Id FROM User WHERE IsActive = 1")}
    truth = pd.read_csv(assigned.truth_csv)
    truth = truth[truth["Id"].isin(active)]
    labels = tmp_path / "labels.csv"
    truth.groupby("persona").head(3)[["Id", "persona"]].to_csv(labels, index=False)  # three known users each
    out = tmp_path / "calibrated.yaml"
    result = runner.invoke(app, ["calibrate", "--labels", str(labels), "--out", str(out), "--folds", "3"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Calibrated on 42 labelled users of 14 personas" in text and "before " in text and "after " in text
    calibrated = load_catalog(out)
    assert calibrated.version.startswith(f"{load_catalog(default_catalog_path()).version}-calibrated-2026")
    assert f"PERSONA_SYNC_CATALOG_FILE={out}" in "".join(result.output.split())
    labels.write_text("Id,persona\n005XXXXXXXXXXXXAAA,Case Solver\n")
    failed = runner.invoke(app, ["calibrate", "--labels", str(labels)])
    assert failed.exit_code != 0 and "is not an active user of the staged org" in failed.output
