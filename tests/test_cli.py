"""The `persona-sync` command: help everywhere, the demo, queries, and the sandbox commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from persona_sync.cli import app
from persona_sync.settings import Settings
from sandbox.runner import RunningSandbox, SandboxConfig, start_sandbox_process
from tests.conftest import AS_OF

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
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "Organization: Acme Sandbox" in result.output
    assert "Bulk API 2.0:" in result.output and "Task rows" in result.output
    assert (tmp_path / "sandbox" / "truth" / "truth.csv").exists()


def test_query_runs_against_the_org_named_by_the_environment(sandbox: RunningSandbox,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_LOGIN_URL", sandbox.url)
    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_CA_BUNDLE", str(sandbox.ca_cert))
    result = runner.invoke(app, ["query", "SELECT Id, Name FROM Profile ORDER BY Name LIMIT 3"])
    assert result.exit_code == 0, result.output
    assert "3 rows" in result.output
    bulk = runner.invoke(app, ["query", "--bulk", "SELECT Id FROM Organization"])
    assert bulk.exit_code == 0 and "1 rows" in bulk.output


def test_query_shows_salesforce_errors_without_a_traceback(sandbox: RunningSandbox,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_LOGIN_URL", sandbox.url)
    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_CA_BUNDLE", str(sandbox.ca_cert))
    result = runner.invoke(app, ["query", "SELECT Nope FROM User"])
    assert result.exit_code == 2
    assert "INVALID_FIELD" in result.output and "Traceback" not in result.output


def test_a_dead_org_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_LOGIN_URL", "https://localhost:9")
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
    settings = Settings(_env_file=None, salesforce_client_secret="s3cr3t-value", salesforce_password="pw-value")
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert "s3cr3t-value" not in shown and "pw-value" not in shown
