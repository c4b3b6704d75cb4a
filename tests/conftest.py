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

# The test files that take half a minute or more (servers, child processes, flow runs), longest first. The two
# workers (pytest-xdist, a file at a time, `--no-loadscope-reorder` in pyproject.toml) take these first, so
# neither ends the run alone on one of them; the other files keep their order. A name that no longer exists
# fails here, so the list cannot go stale without notice.
LONGEST_FILES: tuple[str, ...] = (  # seconds each took in a full run on 2 cores, 2026-12-02
    "tests/flows/test_validation_flow.py",  # 134
    "tests/flows/test_deployments.py",  # 122 (more where chromium checks the UI)
    "tests/flows/test_nightly_sync.py",  # 117
    "tests/flows/test_crash_safety.py",  # 116
    "tests/test_main_job.py",  # 77
    "tests/tasks/test_pull.py",  # 76
    "tests/flows/test_backfill.py",  # 47
    "tests/flows/test_secrets.py",  # 42
    "tests/test_cli_personas.py",  # 39
    "tests/personas/test_calibration.py",  # 38
)
_ROOT = Path(__file__).resolve().parents[1]
assert all((_ROOT / name).is_file() for name in LONGEST_FILES), [n for n in LONGEST_FILES if not (_ROOT / n).is_file()]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest test files first (LONGEST_FILES), every test otherwise in its collected order."""
    rank = {name: position for position, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


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
