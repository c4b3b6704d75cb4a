"""No secret in the open: the nightly flow runs with every secret set to a recognisable value, and no
output holds any of them: logs (ours, the libraries', Prefect's), the console, Prefect's artifacts and
stored logs, the run ledger, error messages, the state database and every file persona-sync wrote."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy
from prefect.client.orchestration import get_client
from prefect.testing.utilities import prefect_test_harness

from connectors.state import StateStore
from flows.nightly_sync import nightly_sync
from sandbox.runner import RunningSandbox, SandboxConfig, start_sandbox
from sandbox.server.context import Credentials
from tests.conftest import AS_OF, sandbox_environment

SECRETS = {
    "client secret": "SECRET-client-7f3a91",
    "password": "SECRET-password-9b1c44",
    "security token": "SECRET-token-2d8e07",
    "database password": "SECRET-dbpass-4e6f12",
    "session id": "SECRET-session-00DHs0000005",
}


@pytest.fixture(scope="module", autouse=True)
def prefect_api() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def guarded_sandbox(tmp_path: Path) -> Iterator[RunningSandbox]:
    """A sandbox whose connected app and integration user have the recognisable secrets."""
    credentials = Credentials(client_secret=SECRETS["client secret"], password=SECRETS["password"],
                              security_token=SECRETS["security token"])
    running = start_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox", preset="small", seed=7, as_of=AS_OF, port=0,
                                          credentials=credentials))
    yield running
    running.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The state database: SQLite (no password to hold), or PostgreSQL with the recognisable password
    (the test servers trust local connections, so any password is accepted and must still never show)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'home' / 'state.db'}"
    url = sqlalchemy.make_url(request.getfixturevalue("fresh_postgres_url"))
    return url.set(password=SECRETS["database password"]).render_as_string(hide_password=False)


def test_no_output_of_a_nightly_run_holds_a_secret(guarded_sandbox: RunningSandbox, state_url: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    environment = sandbox_environment(guarded_sandbox, home=home, pull_history_days=400, salesforce_auth="password",
                                      state_database_url=state_url)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)  # every logger, the HTTP and database libraries' too

    summary = nightly_sync(as_of=datetime(2026, 11, 1, tzinfo=timezone.utc))
    failures = _failed_runs(guarded_sandbox, monkeypatch)

    assert summary.users > 150  # the run really happened, secrets and all
    outputs = {
        "log records": "\n".join(f"{record.name} {record.getMessage()} {record.exc_text or ''}"
                                 for record in caplog.records),
        "console": "".join(capfd.readouterr()),
        "error messages": "\n".join(failures),
        **_prefect_outputs(),
        **_state_database(state_url),
        **_files_under(home),
    }
    assert len(outputs) > 8
    issued = _sessions_the_org_issued(guarded_sandbox)
    assert issued  # the runs logged in: the tokens they were given are secrets too
    for where, text in outputs.items():
        for secret, value in SECRETS.items():
            assert value not in text, f"the {secret} is in {where}"
        for token in issued:
            assert token not in text, f"a session token the org issued is in {where}"


def _sessions_the_org_issued(sandbox: RunningSandbox) -> list[str]:
    """The secret part of every session token the sandbox issued (after the org id and '!')."""
    import sqlite3

    with sqlite3.connect(sandbox.org_path) as db:
        return [token.split("!", 1)[1] for (token,) in db.execute("SELECT token FROM _sessions")]


def _failed_runs(sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Runs that fail with the secrets in play (a wrong password, a session the org does not know), and what
    they said."""
    messages = []
    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_PASSWORD", SECRETS["password"] + "-but-wrong")
    messages.append(_failure_of_a_run())
    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_AUTH", "session")
    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_INSTANCE_URL", sandbox.url)
    monkeypatch.setenv("PERSONA_SYNC_SALESFORCE_SESSION_ID", SECRETS["session id"])
    messages.append(_failure_of_a_run())
    return messages


def _failure_of_a_run() -> str:
    with pytest.raises(Exception) as raised:
        nightly_sync(as_of=datetime(2026, 11, 1, tzinfo=timezone.utc))
    return f"{type(raised.value).__name__}: {raised.value}"


def _prefect_outputs() -> dict[str, str]:
    """What the Prefect API holds: artifacts, stored logs, flow and task run parameters and states."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
        logs = client.read_logs()
        flow_runs = client.read_flow_runs()
        task_runs = client.read_task_runs()
    return {
        "Prefect artifacts": "\n".join(f"{artifact.key} {artifact.description} {artifact.data}" for artifact in artifacts),
        "Prefect logs": "\n".join(log.message for log in logs),
        "Prefect flow runs": "\n".join(f"{run.parameters} {run.state}" for run in flow_runs),
        "Prefect task runs": "\n".join(f"{run.task_inputs} {run.state}" for run in task_runs),
    }


def _state_database(url: str) -> dict[str, str]:
    """Every row of every table of the state database (the ledger among them), as text."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            tables = sqlalchemy.inspect(connection).get_table_names()
            text = {f"state table {table}": "\n".join(str(tuple(row)) for row in connection.execute(
                sqlalchemy.text(f'SELECT * FROM "{table}"'))) for table in tables}
    finally:
        engine.dispose()
    runs = StateStore(url).runs(limit=100)
    assert {run.status for run in runs} == {"succeeded", "failed"}
    return text | {"run ledger": "\n".join(repr(run) for run in runs)}


def _files_under(home: Path) -> dict[str, str]:
    """Every file persona-sync wrote under its home (state database, staging, features), byte for byte."""
    contents = {}
    for path in home.rglob("*"):
        try:
            contents[f"file {path.relative_to(home)}"] = path.read_bytes().decode("latin-1")
        except (IsADirectoryError, FileNotFoundError):  # a folder, or SQLite's journal just checkpointed
            continue
    assert any(name.endswith(".parquet") for name in contents)
    return contents

