"""Shared fixtures: a real sandbox over a real HTTPS socket, and clients logged in to it.

The session-wide `sandbox` serves the small generated org; tests that change records or inject faults
either use their own records, clear what they set (the `faults` fixture), or take a `fresh_sandbox`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from simple_salesforce import Salesforce

from connectors.salesforce import connect
from persona_sync.local_sandbox import settings_for
from persona_sync.settings import Settings
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
    return settings_for(base, running).updated(**overrides)


@pytest.fixture
def settings(sandbox: RunningSandbox) -> Settings:
    return sandbox_settings(sandbox)


@pytest.fixture
def sf(settings: Settings) -> Salesforce:
    """A simple-salesforce client logged in to the shared sandbox."""
    return connect(settings)


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
