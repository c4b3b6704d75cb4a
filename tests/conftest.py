"""Shared fixtures: a real sandbox over a real HTTPS socket, and clients logged in to it.

The session-wide `sandbox` serves the small generated org; tests that change records or inject faults
either use their own records, clear what they set (the `faults` fixture), or take a `fresh_sandbox`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from uuid import uuid4

import pytest
from simple_salesforce import Salesforce

from connectors.salesforce import connect
from core.settings import Settings
from persona_sync.embedded_org import pointed_at, sandbox_org
from sandbox.runner import RunningSandbox, SandboxConfig, start_sandbox

# The generated test org's "today": fixed, so every run sees the same org.
AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _start(data_dir: Path, **overrides: object) -> RunningSandbox:
    config = SandboxConfig(data_dir=data_dir, preset="small", seed=7, as_of=AS_OF, port=0)
    for name, value in overrides.items():
        setattr(config, name, value)
    return start_sandbox(config)


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """The small generated org, served for the whole test session."""
    running = _start(tmp_path_factory.mktemp("sandbox"))
    yield running
    running.stop()


@pytest.fixture
def fresh_sandbox(tmp_path: Path) -> Iterator[RunningSandbox]:
    """A sandbox of its own (same org, own data directory), for tests that change records or limits."""
    running = _start(tmp_path / "sandbox")
    yield running
    running.stop()


@pytest.fixture
def faults(sandbox: RunningSandbox) -> Iterator[RunningSandbox]:
    """The shared sandbox, with every injected fault cleared after the test."""
    yield sandbox
    sandbox.clear_faults()


def sandbox_settings(running: RunningSandbox, **overrides: object) -> Settings:
    """Settings that point persona-sync at `running` (client credentials unless overridden)."""
    base = Settings(_env_file=None, home=running.data_dir.parent)
    return pointed_at(base, running).updated(**overrides)


def sandbox_environment(running: RunningSandbox, **overrides: object) -> dict[str, str]:
    """PERSONA_SYNC_* variables that point a process (or a flow) at `running`, plus `overrides`
    (by setting name, e.g. `home=tmp_path`)."""
    values = sandbox_org(running.url, running.data_dir, running.credentials) | overrides
    return {f"PERSONA_SYNC_{name.upper()}": value.get_secret_value() if hasattr(value, "get_secret_value")
            else str(value) for name, value in values.items()}


def pull_org(settings: Settings, names: list[str] | None = None, *, run_id: str | None = None):
    """Pulls every declared stream (or those named) as the settings say, as `persona-sync pull` does."""
    from connectors.salesforce.streams import streams_by_name
    from tasks.pull import run_pull

    return run_pull(settings.salesforce(), settings.state(), settings.staging(), settings.pull(),
                    streams_by_name(names), run_id=run_id)


@pytest.fixture
def settings(sandbox: RunningSandbox) -> Settings:
    return sandbox_settings(sandbox)


@pytest.fixture
def sf(settings: Settings) -> Salesforce:
    """A simple-salesforce client logged in to the shared sandbox."""
    return connect(settings.salesforce())


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test's own, created next to `postgres_url` and dropped afterwards."""
    import sqlalchemy

    name = f"persona_sync_test_{uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sqlalchemy.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A reachable PostgreSQL database URL (PERSONA_SYNC_TEST_POSTGRES_URL), or the test is skipped."""
    import sqlalchemy

    url = Settings(_env_file=None).test_postgres_url
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.OperationalError as error:
        pytest.skip(f"PostgreSQL is not reachable at {engine.url.render_as_string(hide_password=True)} "
                    f"({str(error.orig).strip().splitlines()[0]}); start it or set PERSONA_SYNC_TEST_POSTGRES_URL")
    finally:
        engine.dispose()
    return url
