"""Typed configuration for each part of persona-sync, one small object per connector or stage.

Each connector takes its own config and nothing else: the Salesforce connector never sees where the
state database is, and the state database never sees a Salesforce password. `core.settings.Settings`
(the one object read from PERSONA_SYNC_* variables) builds all of them, in one place.

Secrets are `SecretStr`: they print as `**********` in reprs, logs and error messages, and only the
code that hands them to the remote system calls `get_secret_value()`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

# How a pull reads an object: `auto` picks REST or Bulk API 2.0 from the expected row count.
PullMode = Literal["auto", "rest", "bulk"]
# How an object was actually read (what `auto` chose).
Transfer = Literal["rest", "bulk"]
AuthMode = Literal["client_credentials", "jwt", "password", "session"]
# What the push does with a persona field a person (or another system) changed since persona-sync wrote it.
ManualEditPolicy = Literal["overwrite", "keep-manual"]


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetryConfig(_Config):
    """Retries of transient failures: exponential backoff with jitter (see connectors/salesforce/client.py)."""

    attempts: int = 6
    initial_seconds: float = 1.0
    max_seconds: float = 60.0


class SalesforceConfig(_Config):
    """One org: where to log in, as whom, and how patiently to talk to it.

    Which credentials are needed depends on `auth`: client_credentials needs `client_id` and
    `client_secret`; password also `username`, `password` and `security_token`; jwt `client_id`,
    `username` and `private_key_file`; session `session_id` and `instance_url`. `login()` names the
    missing setting.
    """

    login_url: str | None = None
    auth: AuthMode = "client_credentials"
    client_id: str | None = None
    client_secret: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr = SecretStr("")
    private_key_file: Path | None = None
    session_id: SecretStr | None = None
    instance_url: str | None = None
    ca_bundle: Path | None = None
    api_version: str = "59.0"
    timeout_seconds: float = 120.0
    retry: RetryConfig = RetryConfig()
    bulk_poll_seconds: float = 0.5


class StateConfig(_Config):
    """The state database (watermarks, run ledger, quarantine, assignments). Its URL may hold a password."""

    url: SecretStr


# An object's staging is compacted into one base file once it holds more small files than this
# (connectors/staging/store.py, Staging.needs_compaction).
DEFAULT_COMPACT_AFTER = 8


class StagingConfig(_Config):
    """Where pulled records are staged (Parquet), and how often an object's files are compacted."""

    root: Path
    compact_after: int = DEFAULT_COMPACT_AFTER


class PullConfig(_Config):
    """How the pull reads the org. Defaults suit a nightly run."""

    mode: PullMode = "auto"
    # From this many expected rows an object is read with Bulk API 2.0 (Salesforce's own break-even).
    bulk_threshold: int = 2_000
    bulk_page_rows: int = 100_000
    # REST pages (2,000 rows) are gathered into staged parts of about this many rows.
    rest_part_rows: int = 50_000
    # Each incremental pull starts this long before the watermark, so rows committed late are not missed.
    overlap: timedelta = timedelta(minutes=10)
    # A first pull (or a full refresh) reads this much history; staging older than it is pruned.
    history_days: int = 180
    # Objects pulled at the same time (after the users, which go first).
    workers: int = 3
    # Refuse to start when fewer daily API requests than this remain.
    api_reserve: int = 1_000
    # Every this many days a pull also compares the org's Ids with staging, to find rows purged from the
    # recycle bin (queryAll sees deletions for about 15 days only). 0: only when asked (--reconcile).
    reconcile_every_days: float = 7.0
    # A second pull waits this long for the one running to finish, then exits with a clear message.
    lock_wait_seconds: float = 0.0


class PersonasConfig(_Config):
    """Features, catalog and assignment."""

    catalog_file: Path | None = None
    window_days: int = 90
    partitions: int = 4
    stability_margin: float = 0.1
    # Where features are kept, one file per as-of.
    features_dir: Path


class Limit(_Config):
    """A guardrail's two levels: past `warn` the run goes on with a warning, past `fail` it stops before it
    writes (unless forced for that run). `below` limits fail when the observed value is under them."""

    warn: float
    fail: float
    below: bool = False

    @model_validator(mode="after")
    def _warn_before_fail(self) -> "Limit":
        if (self.warn < self.fail) if self.below else (self.warn > self.fail):
            side = "at or above" if self.below else "at or below"
            raise ValueError(f"a guardrail's warn level ({self.warn:g}) must be {side} its fail level ({self.fail:g}): "
                             "it warns before it fails")
        return self

    def level(self, observed: float) -> Literal["passed", "warned", "failed"]:
        """Where `observed` falls."""
        past = (lambda limit: observed < limit) if self.below else (lambda limit: observed > limit)
        return "failed" if past(self.fail) else "warned" if past(self.warn) else "passed"


class ValidationConfig(_Config):
    """The checks of every run (expectations/) and the guardrails on what it would write.

    Data-quality limits cannot be overridden; guardrails can, for one run (`--force NAME --reason TEXT`).
    """

    # Where each run's Data Docs (HTML) are written, one folder per run; the newest `data_docs_keep` stay.
    data_docs_dir: Path
    data_docs_keep: int = 60
    # Data quality: an object whose staged rows fell by more than this share since the last good run is a
    # broken pull (objects that had fewer than `min_rows_for_drop` rows are not judged).
    max_row_drop: float = 0.5
    min_rows_for_drop: int = 100
    # Data quality: the share of an object's rows quarantined (rows that name no user or do not parse),
    # judged on objects of at least `min_rows_for_share` rows, or any object quarantined whole.
    max_quarantined_share: float = 0.05
    min_rows_for_share: int = 100
    # Guardrails.
    persona_changes: Limit = Limit(warn=0.10, fail=0.20)  # share of users whose persona changes
    assigned_share: Limit = Limit(warn=0.70, fail=0.60, below=True)  # share of active users given a persona
    distribution_drift: Limit = Limit(warn=0.10, fail=0.25)  # population stability index of the distribution
    persona_loss: Limit = Limit(warn=0.50, fail=0.99)  # share of a persona's users it loses in one run
    # A persona counts for persona_loss only when it had at least this many users.
    persona_loss_min_users: int = 5


class PushConfig(_Config):
    """Which User fields receive the persona, and how the push writes them."""

    persona_field: str = "Persona__c"
    score_field: str = "Persona_Score__c"
    confidence_field: str = "Persona_Confidence__c"
    reason_field: str = "Persona_Reason__c"
    updated_field: str | None = "Persona_Updated__c"
    # Per role (persona, score, confidence, reason): a value edited by hand is overwritten or kept. A kept
    # persona keeps the whole user as it is (the other fields describe persona-sync's persona).
    manual_edits: dict[str, ManualEditPolicy] = {"persona": "keep-manual", "score": "overwrite",
                                                 "confidence": "overwrite", "reason": "overwrite"}
    # From this many changed users on, one Bulk API 2.0 job instead of sObject Collections calls.
    bulk_threshold: int = 2_000
    # Records failing with UNABLE_TO_LOCK_ROW or REQUEST_LIMIT_EXCEEDED are tried this often in a run.
    attempts: int = 5
    first_wait_seconds: float = 1.0
    bulk_poll_seconds: float = 0.5

    @property
    def fields(self) -> dict[str, str]:
        """Role -> the User field it is written to (updated-at left out)."""
        return {"persona": self.persona_field, "score": self.score_field, "confidence": self.confidence_field,
                "reason": self.reason_field}


class CommunityConfig(_Config):
    """The community platform's role table: someone else's schema, named by configuration. persona-sync
    inserts and deletes only rows of roles it granted (its grant ledger says which)."""

    url: SecretStr  # SQLAlchemy URL of the community database (may hold a password)
    table: str = "community_members"
    user_column: str = "member_email"  # the column that names the member
    role_column: str = "role"
    # The User field whose value the user column holds: Email, Username or FederationIdentifier.
    user_field: Literal["Email", "Username", "FederationIdentifier"] = "Email"
