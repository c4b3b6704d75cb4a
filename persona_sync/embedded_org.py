"""The `persona-sync` command's zero-configuration org: the local synthetic sandbox.

With no org configured (neither PERSONA_SYNC_SALESFORCE_LOGIN_URL nor an instance URL), the command
starts the local sandbox for its own duration (or uses one already serving the data directory, from
`persona-sync sandbox start`) and points persona-sync at it, and, unless one is configured, at a demo
community database (<home>/community.db) whose role table already holds grants made by others. This module is the one place where
persona-sync is pointed at the sandbox: connectors, tasks, flows and deployments never import it (nor
the sandbox), and a flow run with no org configured fails instead (core/settings.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from pydantic import SecretStr

from core.settings import Settings
from sandbox.runner import RunningSandbox, SandboxConfig, SandboxError, start_sandbox
from sandbox.server.context import Credentials


@contextmanager
def org_for_command(settings: Settings, announce: Callable[[str], None] = print) -> Iterator[Settings]:
    """Settings for the configured org; with none, for the local sandbox, started for the duration.

    `announce` is told, first thing, when the org is the local synthetic one, so nobody mistakes its
    generated users and personas for a real org's.
    """
    if settings.org_configured:
        yield settings
        return
    directory = settings.sandbox_data_dir
    url = running_sandbox_url(directory)
    sandbox = None
    if url is None:
        sandbox = _start(settings)
        url = sandbox.url
        which = f"{settings.sandbox_preset} preset, seed {settings.sandbox_seed}"
    else:
        which = f"already running on {directory}"
    announce(f"Using the local synthetic sandbox org at {url} ({which}): no PERSONA_SYNC_SALESFORCE_LOGIN_URL is "
             "set. Its users and activity are generated, not a real org's.")
    community = {} if settings.community_database_url else demo_community(settings.home, directory / "org.db")
    try:
        yield settings.updated(**sandbox_org(url, directory), **community)
    finally:
        if sandbox is not None:
            sandbox.stop()


def _start(settings: Settings) -> RunningSandbox:
    try:
        return start_sandbox(SandboxConfig(data_dir=settings.sandbox_data_dir, preset=settings.sandbox_preset,
                                           seed=settings.sandbox_seed, port=settings.sandbox_port))
    except SandboxError as error:
        raise SandboxError(f"{error} (the command starts the local sandbox on PERSONA_SYNC_SANDBOX_PORT, "
                           f"{settings.sandbox_port}; 0 picks any free port)") from error


# The demo community platform's role table, and the grants "someone else" made in it before persona-sync
# ever ran: two of them hold a role the catalog would grant too, and must never be touched.
DEMO_TABLE = "community_members"
_DEMO_FOREIGN_ROLES = ("Service Community", "Sales Community", "Beta Testers", "Partner Portal")


def demo_community(home: Path, org_db: Path) -> dict[str, object]:
    """Settings for the demo community database (<home>/community.db), made on first use: a role table
    (member_email, role, granted_by) holding a few grants by others, for members of the sandbox org."""
    path = home / "community.db"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(org_db) as org:
            emails = [row[0] for row in org.execute(
                "SELECT Email FROM User WHERE IsActive = 1 AND Email IS NOT NULL ORDER BY Id LIMIT 8")]
        temporary = path.with_suffix(".tmp")
        temporary.unlink(missing_ok=True)
        with sqlite3.connect(temporary) as community:
            community.execute(f"CREATE TABLE {DEMO_TABLE} (member_email TEXT NOT NULL, role TEXT NOT NULL, "
                              "granted_by TEXT, PRIMARY KEY (member_email, role))")
            community.executemany(f"INSERT INTO {DEMO_TABLE} VALUES (?, ?, 'community-admin')",
                                  [(email, _DEMO_FOREIGN_ROLES[index % len(_DEMO_FOREIGN_ROLES)])
                                   for index, email in enumerate(emails)])
        temporary.replace(path)
    return {"community_database_url": SecretStr(f"sqlite:///{path.resolve()}"), "community_table": DEMO_TABLE,
            "community_user_column": "member_email", "community_role_column": "role", "community_user_field": "Email"}


def sandbox_org(url: str, data_dir: Path, credentials: Credentials = Credentials()) -> dict[str, object]:
    """The settings that point persona-sync at a sandbox: its URL, CA, connected app and integration user."""
    return {
        "salesforce_login_url": url,
        "salesforce_ca_bundle": data_dir / "tls" / "ca.pem",
        "salesforce_private_key_file": data_dir / "jwt" / "jwt-key.pem",
        "salesforce_client_id": credentials.client_id,
        "salesforce_client_secret": SecretStr(credentials.client_secret),
        "salesforce_username": credentials.username,
        "salesforce_password": SecretStr(credentials.password),
        "salesforce_security_token": SecretStr(credentials.security_token),
        "salesforce_bulk_poll_seconds": 0.0,  # the sandbox answers a poll when the job is done
    }


def pointed_at(settings: Settings, sandbox: RunningSandbox) -> Settings:
    """`settings` pointed at a running sandbox (tests and benchmarks start their own)."""
    return settings.updated(**sandbox_org(sandbox.url, sandbox.data_dir, sandbox.credentials))


@contextmanager
def exported(settings: Settings, original: Settings) -> Iterator[None]:
    """Puts the settings that differ from `original` into the environment for the block, as
    PERSONA_SYNC_* variables: flows read their settings from the environment, as a deployment does."""
    changed = {name: value for name in type(settings).model_fields
               if (value := getattr(settings, name)) != getattr(original, name)}
    saved = {name: os.environ.get(_variable(name)) for name in changed}
    os.environ.update({_variable(name): _text(value) for name, value in changed.items()})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(_variable(name), None)
            else:
                os.environ[_variable(name)] = value


def running_sandbox_url(data_dir: Path) -> str | None:
    """The URL of a sandbox already serving `data_dir`, if one answers."""
    status_file = data_dir / "sandbox.json"
    if not status_file.exists():
        return None
    url = json.loads(status_file.read_text())["url"]
    session = requests.Session()
    session.trust_env = False
    session.verify = str(data_dir / "tls" / "ca.pem")
    try:
        session.get(f"{url}/services/data/", timeout=3).raise_for_status()
    except requests.RequestException:
        return None
    return url


def _variable(name: str) -> str:
    return f"PERSONA_SYNC_{name.upper()}"


def _text(value: object) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)
