"""The embedded default org: with no Salesforce login URL configured, persona-sync uses the local sandbox.

This module is the one place that joins the two: it starts (or finds) the sandbox named by the
settings and returns settings that point the Salesforce connector at it (its URL, its CA, its key).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from collections.abc import Iterator

import requests

from persona_sync.settings import Settings
from sandbox.runner import RunningSandbox, SandboxConfig, start_sandbox


def settings_for(settings: Settings, sandbox: RunningSandbox) -> Settings:
    """`settings` pointed at `sandbox`: its login URL, CA bundle and connected-app key."""
    return settings.updated(**{
        "salesforce_login_url": sandbox.url,
        "salesforce_ca_bundle": sandbox.ca_cert,
        "salesforce_private_key_file": settings.salesforce_private_key_file or sandbox.jwt_private_key,
        "salesforce_bulk_poll_seconds": 0.0,  # the sandbox answers a poll when the job is done
    })


def running_sandbox_url(settings: Settings) -> str | None:
    """The URL of a sandbox already serving the configured data directory, if one answers."""
    status_file = settings.sandbox_data_dir / "sandbox.json"
    if not status_file.exists():
        return None
    url = json.loads(status_file.read_text())["url"]
    session = requests.Session()
    session.trust_env = False
    session.verify = str(settings.sandbox_data_dir / "tls" / "ca.pem")
    try:
        session.get(f"{url}/services/data/", timeout=3).raise_for_status()
    except requests.RequestException:
        return None
    return url


@contextmanager
def org_settings(settings: Settings) -> Iterator[Settings]:
    """Settings for the configured org; starts the local sandbox for the duration when that is the org.

    A sandbox already running on the data directory (`persona-sync sandbox start`) is used as it is.
    """
    if not settings.uses_sandbox:
        yield settings
        return
    url = running_sandbox_url(settings)
    if url is not None:
        directory = settings.sandbox_data_dir
        yield settings.updated(**{
            "salesforce_login_url": url,
            "salesforce_ca_bundle": directory / "tls" / "ca.pem",
            "salesforce_private_key_file": settings.salesforce_private_key_file or directory / "jwt" / "jwt-key.pem",
            "salesforce_bulk_poll_seconds": 0.0,
        })
        return
    sandbox = start_sandbox(SandboxConfig(data_dir=settings.sandbox_data_dir, preset=settings.sandbox_preset,
                                          seed=settings.sandbox_seed, port=0))
    try:
        yield settings_for(settings, sandbox)
    finally:
        sandbox.stop()
