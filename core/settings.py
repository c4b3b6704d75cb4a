"""All settings of persona-sync, in one typed object, and the per-part configs built from it.

Read once from environment variables prefixed `PERSONA_SYNC_` (and an optional `.env` file in the
working directory), then passed down as the small typed configs of `core.configs`: this module is the
one place that turns settings into them. Credentials, and the state database URL (it may hold a
password), are secret types: they print as `**********`.

No org is configured by default: `salesforce()` then refuses with what to set, so a deployed or
scheduled flow never syncs anything by accident. The `persona-sync` command (and only it) starts the
local synthetic sandbox when no org is configured, and says so.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.configs import (
    DEFAULT_COMPACT_AFTER,
    AuthMode,
    CommunityConfig,
    Limit,
    ManualEditPolicy,
    PersonasConfig,
    PullConfig,
    PullMode,
    PushConfig,
    RetryConfig,
    SalesforceConfig,
    StagingConfig,
    StateConfig,
    ValidationConfig,
)
from core.errors import ConfigurationError

NO_ORG_MESSAGE = (
    "no Salesforce org is configured: set PERSONA_SYNC_SALESFORCE_LOGIN_URL (https://login.salesforce.com, "
    "https://test.salesforce.com or your My Domain) and the credentials of PERSONA_SYNC_SALESFORCE_AUTH (see the "
    "README's Configuration). Only the `persona-sync` command falls back to the local synthetic sandbox org "
    "when none is configured; deployed and scheduled flows never do")


class Settings(BaseSettings):
    """persona-sync's configuration. Each field is set by `PERSONA_SYNC_<FIELD NAME IN CAPITALS>`."""

    model_config = SettingsConfigDict(env_prefix="PERSONA_SYNC_", env_file=".env", extra="ignore")

    home: Path = Field(Path(".persona-sync"), description="Where local state lives (state database, staging, "
                       "features, the local sandbox).")

    # --- the Salesforce org -------------------------------------------------------------------------
    salesforce_login_url: str | None = Field(
        None, description="Where logins go: https://login.salesforce.com, https://test.salesforce.com or your "
        "My Domain (https://acme.my.salesforce.com). Unset (and no instance URL): no org is configured.")
    salesforce_auth: AuthMode = Field(
        "client_credentials", description="client_credentials, jwt (bearer, private key file), password "
        "(username + password + security token) or session (an existing session id + instance URL).")
    salesforce_client_id: str | None = Field(None, description="The connected app's consumer key.")
    salesforce_client_secret: SecretStr | None = Field(None, description="The connected app's consumer secret.")
    salesforce_username: str | None = Field(None, description="The integration user (password mode, JWT subject).")
    salesforce_password: SecretStr | None = Field(None, description="Its password (password mode).")
    salesforce_security_token: SecretStr = Field(SecretStr(""), description="Its security token (password mode).")
    salesforce_private_key_file: Path | None = Field(
        None, description="PEM private key whose certificate the connected app holds (jwt mode).")
    salesforce_session_id: SecretStr | None = Field(None, description="An existing session id (session mode).")
    salesforce_instance_url: str | None = Field(None, description="The org's instance URL (session mode).")
    salesforce_ca_bundle: Path | None = Field(None, description="CA certificates to trust for TLS (default: the "
                                              "system's).")
    salesforce_api_version: str = Field("59.0", description="The Salesforce API version to call.")
    salesforce_timeout_seconds: float = Field(120.0, description="Timeout of one HTTP request.")
    salesforce_retry_attempts: int = Field(6, description="Attempts at a call that fails transiently (connection "
                                           "errors, 5xx, REQUEST_LIMIT_EXCEEDED) before giving up.")
    salesforce_retry_initial_seconds: float = Field(1.0, description="First wait between attempts; it doubles.")
    salesforce_retry_max_seconds: float = Field(60.0, description="Longest wait between attempts.")
    secret_blocks: dict[str, str] = Field(default_factory=dict, description="Secret settings a flow reads from "
                                          "Prefect Secret blocks instead of the environment, as JSON {setting: block "
                                          "name}, e.g. {\"salesforce_client_secret\": \"sf-client-secret\", "
                                          "\"state_database_url\": \"persona-sync-state-db\"}. Only secret "
                                          "settings may be named.")
    task_retries: int = Field(2, ge=0, le=10, description="Times a flow retries a stage that talks to the org or a "
                              "database (pull, push, community roles) after it failed for a transient reason "
                              "(the org unreachable or failing on its side), once every call's own retries are "
                              "spent. Other failures are not retried.")
    task_retry_delay_seconds: float = Field(60.0, ge=0, description="Wait before a stage's first retry; it doubles "
                                            "for each next one.")
    salesforce_bulk_poll_seconds: float = Field(
        0.5, description="Wait between polls of a Bulk API 2.0 job (the local sandbox answers a poll when the "
        "job is done, so it uses 0).")

    # --- the local sandbox (the `persona-sync` command's zero-configuration org) ------------------------
    sandbox_dir: Path | None = Field(None, description="The sandbox's data directory. Unset: <home>/sandbox.")
    sandbox_preset: Literal["small", "medium", "large"] = Field("small", description="Size of the generated org.")
    sandbox_seed: int = Field(7, description="Seed of the generated org.")
    sandbox_port: int = Field(8443, description="Port the local sandbox listens on (0: any free port), for "
                              "`persona-sync sandbox start` and for the sandbox the command starts by itself.")

    # --- state and staging -----------------------------------------------------------------------------
    state_database_url: SecretStr | None = Field(
        None, description="SQLAlchemy URL of the state database (watermarks, run ledger, quarantine, "
        "assignments); a secret, since it may hold a password. Unset: SQLite at <home>/state.db. PostgreSQL: "
        "postgresql+psycopg://user:password@host/db")
    staging_dir: Path | None = Field(None, description="Where pulled records are staged (Parquet). Unset: "
                                     "<home>/staging.")
    staging_compact_after: int = Field(DEFAULT_COMPACT_AFTER, description="An object's staging is compacted "
                                       "into one base file once it has more small files (nightly parts, "
                                       "tombstones) than this, or four times as many files of any size.")

    # --- pulling -----------------------------------------------------------------------------------
    pull_mode: PullMode = Field(
        "auto", description="auto picks REST or Bulk API 2.0 per object from its expected row count.")
    pull_bulk_threshold: int = Field(2_000, description="In auto mode, objects with at least this many rows to "
                                     "pull use Bulk API 2.0.")
    pull_overlap_minutes: float = Field(10, description="Each incremental pull starts this long before the "
                                        "watermark, so rows committed late are not missed.")
    pull_history_days: int = Field(180, description="How much history a first pull (or --full-refresh) fetches; "
                                   "staging older than this is pruned.")
    pull_workers: int = Field(3, description="Objects pulled at the same time (downloads overlap).")
    pull_bulk_page_rows: int = Field(100_000, description="Rows per Bulk API 2.0 results page (maxRecords).")
    pull_reconcile_days: float = Field(7.0, description="Every this many days a pull compares the org's Ids with "
                                       "staging to find rows purged from the recycle bin (0: only with "
                                       "--reconcile).")
    pull_lock_wait_seconds: float = Field(0.0, description="How long a pull waits for another one to finish "
                                          "before it gives up with a message.")
    api_reserve: int = Field(1_000, description="Refuse to start a run when fewer daily API requests than this "
                             "remain.")

    # --- personas ----------------------------------------------------------------------------------
    catalog_file: Path | None = Field(None, description="The persona catalog (YAML). Unset: the default catalog "
                                      "of the 14 Salesforce personas shipped in catalogs/default.yaml.")
    feature_window_days: int = Field(90, description="Days of activity behind each feature, ending at the as-of.")
    feature_partitions: int = Field(4, description="User partitions features are computed in (units of work).")
    stability_margin: float = Field(0.1, description="A user keeps their current persona unless another scores "
                                    "this much higher.")

    # --- push ---------------------------------------------------------------------------------------
    push_persona_field: str = Field("Persona__c", description="The User field that receives the persona's label.")
    push_score_field: str = Field("Persona_Score__c", description="The User field that receives the score (0..1).")
    push_confidence_field: str = Field("Persona_Confidence__c", description="The User field that receives the "
                                       "confidence (0..1).")
    push_reason_field: str = Field("Persona_Reason__c", description="The User field that receives the reason.")
    push_updated_field: str | None = Field("Persona_Updated__c", description="The User field that receives when "
                                           "persona-sync last changed the others (empty: none).")
    push_manual_edits: dict[str, ManualEditPolicy] = Field(
        default_factory=lambda: dict(PushConfig().manual_edits), description="Per field role, what the push does with a value someone edited since persona-sync wrote it: "
        "overwrite or keep-manual (JSON, e.g. {\"persona\": \"keep-manual\", \"reason\": \"overwrite\"}).")
    push_bulk_threshold: int = Field(2_000, description="From this many changed users on, the push uses one Bulk "
                                     "API 2.0 job instead of sObject Collections calls (200 records each).")

    # --- community role tables -------------------------------------------------------------------------
    community_database_url: SecretStr | None = Field(
        None, description="SQLAlchemy URL of the community platform's database, whose role table persona-sync "
        "grants and revokes roles in (a secret). Unset: no community push (the persona-sync command alone uses "
        "a demo SQLite database under <home>).")
    community_table: str = Field("community_members", description="The community's role table.")
    community_user_column: str = Field("member_email", description="Its column naming the member.")
    community_role_column: str = Field("role", description="Its column naming the role.")
    community_user_field: Literal["Email", "Username", "FederationIdentifier"] = Field(
        "Email", description="The Salesforce User field the member column holds.")

    # --- validation and guardrails (expectations/, tasks/validation.py) ----------------------------------
    validate_max_row_drop: float = Field(0.5, description="A run stops when an object's staged rows fell by more "
                                         "than this share since the last good run (a broken pull, not a quiet "
                                         "org). Cannot be forced.")
    validate_max_quarantined_share: float = Field(0.05, description="A run stops when more than this share of an "
                                                  "object's rows are quarantined. Cannot be forced.")
    data_docs_keep: int = Field(60, description="Data Docs (HTML reports of each run's checks, under "
                                "<home>/data-docs) are kept for this many runs; the ledger keeps every run's checks.")
    guard_persona_changes_warn: float = Field(0.10, description="Warn when more than this share of users change "
                                              "persona in one run.")
    guard_persona_changes_fail: float = Field(0.20, description="Stop (unless forced) when more than this share of "
                                              "users change persona in one run.")
    guard_assigned_share_warn: float = Field(0.70, description="Warn when fewer than this share of active users "
                                             "get a persona.")
    guard_assigned_share_fail: float = Field(0.60, description="Stop (unless forced) when fewer than this share of "
                                             "active users get a persona.")
    guard_distribution_drift_warn: float = Field(0.10, description="Warn when the persona distribution's "
                                                 "population stability index against the last good run exceeds "
                                                 "this.")
    guard_distribution_drift_fail: float = Field(0.25, description="Stop (unless forced) when that index exceeds "
                                                 "this.")
    guard_persona_loss_warn: float = Field(0.50, description="Warn when a persona of at least "
                                           "GUARD_PERSONA_LOSS_MIN_USERS users loses more than this share of them.")
    guard_persona_loss_fail: float = Field(0.99, description="Stop (unless forced) when it loses more than this "
                                           "share (0.99: when it empties out).")
    guard_persona_loss_min_users: int = Field(5, description="Personas with fewer users are not judged by "
                                              "persona_loss.")

    # --- tests --------------------------------------------------------------------------------------
    test_postgres_url: str = Field(
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        description="PostgreSQL database the PostgreSQL tests use; they skip when it cannot be reached.")

    # --- what the parts get ---------------------------------------------------------------------------

    @property
    def org_configured(self) -> bool:
        """Whether an org is configured (a login URL, or an instance URL for session mode)."""
        return bool(self.salesforce_login_url or self.salesforce_instance_url)

    @property
    def sandbox_data_dir(self) -> Path:
        """The local sandbox's data directory."""
        return self.sandbox_dir or self.home / "sandbox"

    def salesforce(self) -> SalesforceConfig:
        """The configured org; ConfigurationError when there is none (never a silent default org)."""
        if not self.org_configured:
            raise ConfigurationError(NO_ORG_MESSAGE)
        return SalesforceConfig(
            login_url=self.salesforce_login_url, auth=self.salesforce_auth, client_id=self.salesforce_client_id,
            client_secret=self.salesforce_client_secret, username=self.salesforce_username,
            password=self.salesforce_password, security_token=self.salesforce_security_token,
            private_key_file=self.salesforce_private_key_file, session_id=self.salesforce_session_id,
            instance_url=self.salesforce_instance_url, ca_bundle=self.salesforce_ca_bundle,
            api_version=self.salesforce_api_version, timeout_seconds=self.salesforce_timeout_seconds,
            retry=RetryConfig(attempts=self.salesforce_retry_attempts,
                              initial_seconds=self.salesforce_retry_initial_seconds,
                              max_seconds=self.salesforce_retry_max_seconds),
            bulk_poll_seconds=self.salesforce_bulk_poll_seconds)

    def state(self) -> StateConfig:
        """The state database (SQLite under <home> unless set)."""
        default = f"sqlite:///{(self.home / 'state.db').resolve()}"
        return StateConfig(url=self.state_database_url or SecretStr(default))

    def staging(self) -> StagingConfig:
        return StagingConfig(root=self.staging_dir or self.home / "staging", compact_after=self.staging_compact_after)

    def pull(self) -> PullConfig:
        return PullConfig(mode=self.pull_mode, bulk_threshold=self.pull_bulk_threshold,
                          bulk_page_rows=self.pull_bulk_page_rows,
                          overlap=timedelta(minutes=self.pull_overlap_minutes), history_days=self.pull_history_days,
                          workers=self.pull_workers, api_reserve=self.api_reserve,
                          reconcile_every_days=self.pull_reconcile_days,
                          lock_wait_seconds=self.pull_lock_wait_seconds)

    def personas(self) -> PersonasConfig:
        return PersonasConfig(catalog_file=self.catalog_file, window_days=self.feature_window_days,
                              partitions=self.feature_partitions, stability_margin=self.stability_margin,
                              features_dir=self.home / "features")

    def community(self) -> CommunityConfig | None:
        """The community role table, or None when none is configured."""
        if self.community_database_url is None:
            return None
        return CommunityConfig(url=self.community_database_url, table=self.community_table,
                               user_column=self.community_user_column, role_column=self.community_role_column,
                               user_field=self.community_user_field)

    def push(self) -> PushConfig:
        """Which User fields the push writes, and how."""
        manual = dict(PushConfig().manual_edits)
        unknown = sorted(set(self.push_manual_edits) - set(manual))
        if unknown:
            raise ConfigurationError(f"PERSONA_SYNC_PUSH_MANUAL_EDITS names {unknown}; the roles are {sorted(manual)}")
        return PushConfig(persona_field=self.push_persona_field, score_field=self.push_score_field,
                          confidence_field=self.push_confidence_field, reason_field=self.push_reason_field,
                          updated_field=self.push_updated_field or None,
                          manual_edits=manual | dict(self.push_manual_edits), bulk_threshold=self.push_bulk_threshold,
                          bulk_poll_seconds=self.salesforce_bulk_poll_seconds)

    def validation(self) -> ValidationConfig:
        """The checks' limits and guardrails, and where Data Docs go (<home>/data-docs)."""
        limits = {}
        for name in ("persona_changes", "assigned_share", "distribution_drift", "persona_loss"):
            warn, fail = getattr(self, f"guard_{name}_warn"), getattr(self, f"guard_{name}_fail")
            try:
                limits[name] = Limit(warn=warn, fail=fail, below=name == "assigned_share")
            except ValueError as error:
                variables = f"PERSONA_SYNC_GUARD_{name.upper()}_WARN / _FAIL"
                raise ConfigurationError(f"{variables}: {error.errors()[0]['msg'].removeprefix('Value error, ')}"
                                         if hasattr(error, "errors") else f"{variables}: {error}") from None
        return ValidationConfig(
            data_docs_dir=self.home / "data-docs", data_docs_keep=self.data_docs_keep,
            max_row_drop=self.validate_max_row_drop, max_quarantined_share=self.validate_max_quarantined_share,
            persona_loss_min_users=self.guard_persona_loss_min_users, **limits)

    @field_validator("secret_blocks")
    @classmethod
    def _only_secrets_from_blocks(cls, blocks: dict[str, str]) -> dict[str, str]:
        secret = {name for name, info in cls.model_fields.items() if "SecretStr" in str(info.annotation)}
        wrong = sorted(set(blocks) - secret)
        if wrong:
            raise ValueError(f"PERSONA_SYNC_SECRET_BLOCKS names {', '.join(wrong)}, which are not secret settings; "
                             f"it may name: {', '.join(sorted(secret))}")
        return blocks

    def updated(self, **changes: object) -> "Settings":
        """These settings with `changes`, validated like the rest (a plain string becomes a secret)."""
        current = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(_env_file=None, **(current | changes))


def load_settings(**overrides: object) -> Settings:
    """The settings from the environment and `.env`, with `overrides` (from command-line options) on top."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})
