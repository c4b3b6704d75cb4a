"""All settings of persona-sync, in one typed object.

Read once from environment variables prefixed `PERSONA_SYNC_` (and an optional `.env` file in the
working directory), then passed down. Credentials are secret types: they print as `**********`.
With no settings at all, persona-sync talks to the local sandbox with its documented local
credentials, and keeps its state under `.persona-sync/` in the working directory.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

AuthMode = Literal["client_credentials", "jwt", "password", "session"]


class Settings(BaseSettings):
    """persona-sync's configuration. Each field is set by `PERSONA_SYNC_<FIELD NAME IN CAPITALS>`."""

    model_config = SettingsConfigDict(env_prefix="PERSONA_SYNC_", env_file=".env", extra="ignore")

    home: Path = Field(Path(".persona-sync"), description="Where local state lives (sandbox, state database).")

    # --- the Salesforce org -------------------------------------------------------------------------
    salesforce_login_url: str | None = Field(
        None, description="Where logins go: https://login.salesforce.com, https://test.salesforce.com, your "
        "My Domain (https://acme.my.salesforce.com), or a sandbox URL. Unset: the local sandbox.")
    salesforce_auth: AuthMode = Field(
        "client_credentials", description="client_credentials, jwt (bearer, private key file), password "
        "(username + password + security token) or session (an existing session id + instance URL).")
    salesforce_client_id: str = Field("persona-sync-sandbox", description="The connected app's consumer key.")
    salesforce_client_secret: SecretStr = Field(SecretStr("sandbox-client-secret"),
                                                description="The connected app's consumer secret.")
    salesforce_username: str = Field("integration@persona-sync.sandbox", description="The integration user.")
    salesforce_password: SecretStr = Field(SecretStr("sandbox-password"), description="Its password.")
    salesforce_security_token: SecretStr = Field(SecretStr("sandboxtoken"), description="Its security token.")
    salesforce_private_key_file: Path | None = Field(
        None, description="PEM private key whose certificate the connected app holds (jwt mode). Unset with "
        "the local sandbox: the sandbox's own key.")
    salesforce_session_id: SecretStr | None = Field(None, description="An existing session id (session mode).")
    salesforce_instance_url: str | None = Field(None, description="The org's instance URL (session mode).")
    salesforce_ca_bundle: Path | None = Field(
        None, description="CA certificates to trust for TLS. Unset with the local sandbox: its own CA.")
    salesforce_api_version: str = Field("59.0", description="The Salesforce API version to call.")
    salesforce_timeout_seconds: float = Field(120.0, description="Timeout of one HTTP request.")
    salesforce_retry_attempts: int = Field(6, description="Attempts at a call that fails transiently (connection "
                                           "errors, 5xx, REQUEST_LIMIT_EXCEEDED) before giving up.")
    salesforce_retry_initial_seconds: float = Field(1.0, description="First wait between attempts; it doubles.")
    salesforce_retry_max_seconds: float = Field(60.0, description="Longest wait between attempts.")
    salesforce_bulk_poll_seconds: float = Field(
        0.5, description="Wait between polls of a Bulk API 2.0 job (the local sandbox answers a poll when the "
        "job is done, so it uses 0).")

    # --- the local sandbox --------------------------------------------------------------------------
    sandbox_dir: Path | None = Field(None, description="The sandbox's data directory. Unset: <home>/sandbox.")
    sandbox_preset: Literal["small", "medium", "large"] = Field("small", description="Size of the generated org.")
    sandbox_seed: int = Field(7, description="Seed of the generated org.")
    sandbox_port: int = Field(8443, description="Port the sandbox listens on (0: any free port).")

    # --- pulling -----------------------------------------------------------------------------------
    state_database_url: str | None = Field(
        None, description="SQLAlchemy URL of the state database (watermarks, run ledger, quarantine). Unset: "
        "SQLite at <home>/state.db. PostgreSQL: postgresql+psycopg://user:password@host/db")
    staging_dir: Path | None = Field(None, description="Where pulled records are staged (Parquet). Unset: <home>/staging.")
    staging_compact_after: int = Field(8, description="An object's staging is compacted into one file once it has "
                                       "more parts than this (fewer files: faster reads for features).")
    pull_mode: Literal["auto", "rest", "bulk"] = Field(
        "auto", description="auto picks REST or Bulk API 2.0 per object from its expected row count.")
    pull_bulk_threshold: int = Field(2_000, description="In auto mode, objects with at least this many rows to "
                                     "pull use Bulk API 2.0.")
    pull_overlap_minutes: float = Field(10, description="Each incremental pull starts this long before the watermark, "
                                        "so rows committed late are not missed.")
    pull_history_days: int = Field(180, description="How much history a first pull (or --full-refresh) fetches.")
    pull_workers: int = Field(3, description="Objects pulled at the same time (downloads overlap).")
    pull_bulk_page_rows: int = Field(100_000, description="Rows per Bulk API 2.0 results page (maxRecords).")
    api_reserve: int = Field(1_000, description="Refuse to start a run when fewer daily API requests than this remain.")

    # --- personas ----------------------------------------------------------------------------------
    catalog_file: Path | None = Field(None, description="The persona catalog (YAML). Unset: the default catalog "
                                      "of the 14 Salesforce personas shipped in catalogs/default.yaml.")
    feature_window_days: int = Field(90, description="Days of activity behind each feature, ending at the as-of.")
    feature_partitions: int = Field(4, description="User partitions features are computed in (units of work).")
    stability_margin: float = Field(0.1, description="A user keeps their current persona unless another scores "
                                    "this much higher.")

    # --- tests --------------------------------------------------------------------------------------
    test_postgres_url: str = Field(
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        description="PostgreSQL database the PostgreSQL tests use; they skip when it cannot be reached.")

    @cached_property
    def sandbox_data_dir(self) -> Path:
        return self.sandbox_dir or self.home / "sandbox"

    def updated(self, **changes: object) -> "Settings":
        """These settings with `changes`, validated like the rest (a plain string becomes a secret)."""
        return type(self)(_env_file=None, **(self.model_dump() | changes))

    @property
    def state_url(self) -> str:
        """The state database URL (SQLite under <home> unless set)."""
        return self.state_database_url or f"sqlite:///{(self.home / 'state.db').resolve()}"

    @property
    def staging_path(self) -> Path:
        return self.staging_dir or self.home / "staging"

    @property
    def uses_sandbox(self) -> bool:
        """Whether persona-sync talks to the local sandbox (no login URL and no instance URL set)."""
        return self.salesforce_login_url is None and self.salesforce_instance_url is None


def load_settings(**overrides: object) -> Settings:
    """The settings from the environment and `.env`, with `overrides` (from command-line options) on top."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})
