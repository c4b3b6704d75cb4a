"""Fault injection: the failures a real org throws at a client, on demand, for tests.

Faults are set when the sandbox starts (`SandboxConfig.faults`) or changed while it runs through the
admin endpoint (`PUT /_sandbox/faults`, which needs the admin token). Each one mimics what Salesforce
really does: the same status codes, error codes and message texts.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict, dataclass, field, fields

from sandbox.server.errors import ApiError


@dataclass
class FaultSettings:
    """What to break. Every field's zero value means "behave normally"."""

    # After this many further API calls, answer 403 REQUEST_LIMIT_EXCEEDED ...
    request_limit_after: int | None = None
    # ... for this many calls, then recover (None: until the fault is cleared). A "rate-limit storm".
    request_limit_calls: int | None = None
    # Share of API calls (0..1) answered 503 SERVER_UNAVAILABLE.
    unavailable_share: float = 0.0
    # How many of the next Bulk API result downloads are cut mid-stream (connection dropped).
    cut_bulk_downloads: int = 0
    # Record ids whose updates fail with FIELD_CUSTOM_VALIDATION_EXCEPTION (REST, collections, Bulk).
    fail_update_ids: list[str] = field(default_factory=list)
    # Record id -> the error code its updates fail with, e.g. INACTIVE_OWNER_OR_USER (every time).
    update_errors: dict[str, str] = field(default_factory=dict)
    # Record id -> how many of its next updates fail with UNABLE_TO_LOCK_ROW (another transaction holds
    # the row) before one goes through.
    locked_ids: dict[str, int] = field(default_factory=dict)
    # Object name -> share of its rows (0..1) hidden from every query, as from an integration user that
    # lost access to them: the pull succeeds with fewer rows (a truncated pull).
    hidden_rows: dict[str, float] = field(default_factory=dict)
    # Delay added to every API response, in milliseconds.
    slow_ms: int = 0
    # Seed for the random choices (which calls get a 503), so tests are repeatable.
    seed: int = 0

    @classmethod
    def from_json(cls, content: dict) -> "FaultSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(content) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s) {unknown}; known: {sorted(known)}")
        return cls(**content)


class Faults:
    """The faults in force, applied by the request handlers. Thread-safe."""

    def __init__(self, settings: FaultSettings | None = None) -> None:
        self._lock = threading.Lock()
        self._apply(settings or FaultSettings())

    def _apply(self, settings: FaultSettings) -> None:
        self.settings = settings
        self._random = random.Random(settings.seed)
        self._calls_until_limit = settings.request_limit_after
        self._limited_calls_left = settings.request_limit_calls
        self._cuts_left = settings.cut_bulk_downloads
        self._failing_ids = {record_id[:15] for record_id in settings.fail_update_ids}
        self._update_errors = {record_id[:15]: code for record_id, code in settings.update_errors.items()}
        self._locks_left = {record_id[:15]: int(times) for record_id, times in settings.locked_ids.items()}

    def replace(self, settings: FaultSettings) -> None:
        with self._lock:
            self._apply(settings)

    def update(self, changes: dict) -> FaultSettings:
        """Changes some settings (a JSON merge), restarting their counters; returns the new settings."""
        with self._lock:
            merged = FaultSettings.from_json(asdict(self.settings) | changes)
            self._apply(merged)
            return merged

    def describe(self) -> dict:
        with self._lock:
            return asdict(self.settings) | {
                "calls_until_limit": self._calls_until_limit,
                "limited_calls_left": self._limited_calls_left,
                "cuts_left": self._cuts_left,
            }

    def before_api_call(self) -> None:
        """Slows, or refuses with 503 / 403, an API call as the settings say."""
        with self._lock:
            delay = self.settings.slow_ms / 1000
            unavailable = self.settings.unavailable_share > 0 and self._random.random() < self.settings.unavailable_share
            limited = self._take_limit()
        if delay:
            time.sleep(delay)
        if unavailable:
            raise ApiError(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable, please try again later.")
        if limited:
            raise ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")

    def _take_limit(self) -> bool:
        if self._calls_until_limit is None:
            return False
        if self._calls_until_limit > 0:
            self._calls_until_limit -= 1
            return False
        if self._limited_calls_left is None:
            return True
        if self._limited_calls_left > 0:
            self._limited_calls_left -= 1
            return True
        return False

    def take_download_cut(self) -> bool:
        """Whether this Bulk results download is to be cut mid-stream (uses up one cut)."""
        with self._lock:
            if self._cuts_left > 0:
                self._cuts_left -= 1
                return True
            return False

    def hidden_rows(self) -> dict[str, float]:
        """Object name -> the share of its rows queries do not see."""
        with self._lock:
            return dict(self.settings.hidden_rows)

    def update_error(self, record_id: str) -> str | None:
        """The error code this update of `record_id` fails with (None: it goes through). A locked row uses up
        one of its failures."""
        key = record_id[:15]
        with self._lock:
            if key in self._failing_ids:
                return "FIELD_CUSTOM_VALIDATION_EXCEPTION"
            if self._locks_left.get(key, 0) > 0:
                self._locks_left[key] -= 1
                return "UNABLE_TO_LOCK_ROW"
            return self._update_errors.get(key)
