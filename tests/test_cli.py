"""The `persona-sync` command: help everywhere, the demo, queries, and the sandbox commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from persona_sync.cli import app
from core.settings import Settings
from sandbox.runner import RunningSandbox, SandboxConfig, start_sandbox_process
from tests.conftest import AS_OF, sandbox_environment

runner = CliRunner()


def _command_paths(command: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    if hasattr(command, "commands"):  # a group (typer ships its own click classes)
        for name, sub in command.commands.items():
            paths += _command_paths(sub, prefix + (name,))
    return paths


@pytest.mark.parametrize("path", _command_paths(typer.main.get_command(app)), ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_demo_starts_the_sandbox_and_queries_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONA_SYNC_HOME", str(tmp_path))
    monkeypatch.setenv("PERSONA_SYNC_SANDBOX_PORT", "0")
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "Organization: Acme Sandbox" in result.output
    assert "Bulk API 2.0:" in result.output and "Task rows" in result.output
    assert (tmp_path / "sandbox" / "truth" / "truth.csv").exists()


def _point_at(sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in sandbox_environment(sandbox).items():
        monkeypatch.setenv(name, value)


def test_query_runs_against_the_org_named_by_the_environment(sandbox: RunningSandbox,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _point_at(sandbox, monkeypatch)
    result = runner.invoke(app, ["query", "SELECT Id, Name FROM Profile ORDER BY Name LIMIT 3"])
    assert result.exit_code == 0, result.output
    assert "3 rows" in result.output and "synthetic" not in result.output
    bulk = runner.invoke(app, ["query", "--bulk", "SELECT Id FROM Organization WHERE Name != 'x from User'"])
    assert bulk.exit_code == 0 and "1 rows" in bulk.output, bulk.output


def test_query_shows_salesforce_errors_without_a_traceback(sandbox: RunningSandbox,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _point_at(sandbox, monkeypatch)
    result = runner.invoke(app, ["query", "SELECT Nope FROM User"])
    assert result.exit_code == 2
    assert "INVALID_FIELD" in result.output and "Traceback" not in result.output


def test_a_dead_org_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_LOGIN_URL", "https://localhost:9")
    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_CLIENT_ID", "app")
    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_CLIENT_SECRET", "secret")
    result = runner.invoke(app, ["query", "SELECT Id FROM User"])
    assert result.exit_code == 2
    assert "cannot reach https://localhost:9" in " ".join(result.output.split())


def test_sandbox_generate_prints_rows_per_object(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sandbox", "generate", "--data-dir", str(tmp_path), "--as-of", "2026-11-01"])
    assert result.exit_code == 0, result.output
    assert "Task" in result.output and "total" in result.output


def test_sandbox_refuses_to_reuse_a_directory_of_another_org(tmp_path: Path) -> None:
    runner.invoke(app, ["sandbox", "generate", "--data-dir", str(tmp_path), "--as-of", "2026-11-01"])
    result = runner.invoke(app, ["sandbox", "generate", "--data-dir", str(tmp_path), "--seed", "99"])
    assert result.exit_code == 2
    assert "--reset" in result.output


def test_sandbox_start_serves_from_a_child_process(tmp_path: Path) -> None:
    config = SandboxConfig(data_dir=tmp_path, preset="small", seed=7, as_of=AS_OF, port=0)
    sandbox = start_sandbox_process(config)
    try:
        status = json.loads((tmp_path / "sandbox.json").read_text())
        assert status["url"] == sandbox.url
        assert sandbox.admin("GET", "status")["settings"]["preset"] == "small"
    finally:
        sandbox.stop()


def test_secrets_never_print() -> None:
    settings = Settings(_env_file=None, salesforce_login_url="https://login.salesforce.com",
                        salesforce_client_secret="s3cr3t-value", salesforce_password="pw-value",
                        state_database_url="postgresql+psycopg://user:db-pass-value@host/state")
    shown = (repr(settings) + str(settings) + settings.model_dump_json() + repr(settings.salesforce())
             + repr(settings.state()) + settings.state().model_dump_json())
    assert "s3cr3t-value" not in shown and "pw-value" not in shown and "db-pass-value" not in shown


def test_a_missing_credential_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONA_SYNC_HOME", str(tmp_path))
    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_LOGIN_URL", "https://login.salesforce.com")
    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_CLIENT_ID", "app")
    result = runner.invoke(app, ["pull"])
    assert result.exit_code == 2
    assert "PERSONA_SYNC_SALESFORCE_CLIENT_SECRET" in result.output and "Traceback" not in result.output


def test_with_no_org_configured_the_command_says_first_that_it_uses_the_synthetic_sandbox(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONA_SYNC_HOME", str(tmp_path))
    monkeypatch.setenv("PERSONA_SYNC_SANDBOX_PORT", "0")
    result = runner.invoke(app, ["query", "SELECT COUNT() FROM User"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("Using the local synthetic sandbox org at https://localhost:")


def test_the_sandbox_port_setting_is_where_the_command_starts_the_sandbox(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("PERSONA_SYNC_HOME", str(tmp_path))
    monkeypatch.setenv("PERSONA_SYNC_SANDBOX_PORT", str(port))
    result = runner.invoke(app, ["query", "SELECT COUNT() FROM User"])
    assert result.exit_code == 0, result.output
    assert f"https://localhost:{port}" in result.output.splitlines()[0]


def test_run_uses_a_configured_prefect_api_and_only_else_a_local_one(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from persona_sync.cli import _use_local_prefect_unless_configured

    environment = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}
    environment["HOME"] = str(tmp_path)
    monkeypatch.setattr(os, "environ", environment)  # what the function sets stays in this test
    settings = Settings(_env_file=None, home=tmp_path / "home")

    _use_local_prefect_unless_configured(settings)  # nothing configured: a temporary local API
    assert environment["PREFECT_HOME"] == str((tmp_path / "home" / "prefect").resolve())

    del environment["PREFECT_HOME"]
    profiles = tmp_path / ".prefect" / "profiles.toml"
    profiles.parent.mkdir()
    profiles.write_text('active = "work"\n[profiles.work]\nPREFECT_API_URL = "http://127.0.0.1:4200/api"\n')
    _use_local_prefect_unless_configured(settings)  # the active profile names a server: use it
    assert "PREFECT_HOME" not in environment

    profiles.unlink()
    environment["PREFECT_API_URL"] = "http://prefect.internal:4200/api"
    _use_local_prefect_unless_configured(settings)
    assert "PREFECT_HOME" not in environment


def test_backfill_refuses_a_range_it_cannot_compute_before_starting_anything(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONA_SYNC_HOME", str(tmp_path))
    result = runner.invoke(app, ["backfill", "2026-10-28", "2026-10-14"])
    assert result.exit_code == 2 and "starts (2026-10-28) after it ends (2026-10-14)" in result.output
    result = runner.invoke(app, ["backfill", "2026-10-14", "2026-10-28", "--step-days", "0"])
    assert result.exit_code == 2 and "step_days must be a whole number of days >= 1" in result.output
    assert not (tmp_path / "prefect").exists()  # refused before a Prefect API was started
