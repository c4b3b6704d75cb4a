"""Sessions and the daily API request counter: who is calling, and how many calls the org has left.

Sessions live in the org database, so a client's session survives a sandbox restart as a Salesforce
session survives a server deploy. A session expires after `idle_seconds` without a call; from then on
every call answers 401 INVALID_SESSION_ID, exactly as Salesforce does.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from sandbox.server.errors import ApiError, invalid_session
from sandbox.store import OrgStore

# How stale a session's last-use time may get before it is written back (saves a write per call).
_TOUCH_EVERY_SECONDS = 5.0


@dataclass(frozen=True)
class Session:
    """An authenticated caller: the token it presents and the user it acts as."""

    token: str
    user_id: str


class SessionRegistry:
    """Issues, checks and expires session tokens."""

    def __init__(self, store: OrgStore, idle_seconds: float) -> None:
        self.store = store
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._last_touch: dict[str, float] = {}
        store.connection().execute(
            "CREATE TABLE IF NOT EXISTS _sessions (token TEXT PRIMARY KEY, user_id TEXT NOT NULL, "
            "created REAL NOT NULL, last_used REAL NOT NULL, expired INTEGER NOT NULL DEFAULT 0)"
        )

    def issue(self, user_id: str) -> Session:
        """A new session for `user_id`. Tokens look like Salesforce's: org id prefix, '!', random part."""
        org_id = self.store.setting("organization_id") or "00D000000000000"
        token = f"{org_id[:15]}!{secrets.token_urlsafe(72)}"
        now = time.time()
        self.store.connection().execute(
            "INSERT INTO _sessions (token, user_id, created, last_used) VALUES (?, ?, ?, ?)",
            (token, user_id, now, now),
        )
        return Session(token, user_id)

    def authenticate(self, authorization: str | None) -> Session:
        """The session named by an `Authorization: Bearer <token>` header; raises 401 INVALID_SESSION_ID."""
        if not authorization or not authorization.lower().startswith(("bearer ", "oauth ")):
            raise invalid_session()
        token = authorization.split(" ", 1)[1].strip()
        row = self.store.connection().execute(
            "SELECT user_id, last_used, expired FROM _sessions WHERE token = ?", (token,)
        ).fetchone()
        now = time.time()
        if row is None or row[2] or now - row[1] > self.idle_seconds:
            raise invalid_session()
        with self._lock:
            stale = now - self._last_touch.get(token, 0.0) > _TOUCH_EVERY_SECONDS
            if stale:
                self._last_touch[token] = now
        if stale:
            self.store.connection().execute("UPDATE _sessions SET last_used = ? WHERE token = ?", (now, token))
        return Session(token, row[0])

    def expire_all(self) -> int:
        """Expires every session now (a fault for tests); returns how many were live."""
        cursor = self.store.connection().execute("UPDATE _sessions SET expired = 1 WHERE expired = 0")
        return cursor.rowcount


class ApiUsage:
    """Counts every API call against the org's daily allowance (DailyApiRequests).

    The count is kept in memory and saved to the org database at most once a second and at shutdown,
    so it survives restarts without a write on every call.
    """

    def __init__(self, store: OrgStore, daily_limit: int) -> None:
        self.store = store
        self.daily_limit = daily_limit
        self._lock = threading.Lock()
        self.used = int(store.setting("api_requests_used") or 0)
        self._saved_at = 0.0

    def count_call(self) -> int:
        """Counts one call; raises 403 REQUEST_LIMIT_EXCEEDED when the allowance is spent."""
        with self._lock:
            if self.used >= self.daily_limit:
                raise ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            self.used += 1
            used = self.used
            save = time.monotonic() - self._saved_at > 1.0
            if save:
                self._saved_at = time.monotonic()
        if save:
            self.save()
        return used

    @property
    def remaining(self) -> int:
        return max(self.daily_limit - self.used, 0)

    def save(self) -> None:
        self.store.set_setting("api_requests_used", str(self.used))

    def reset(self) -> None:
        with self._lock:
            self.used = 0
        self.save()
