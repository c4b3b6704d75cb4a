"""What every request handler of the sandbox shares: the org, its sessions, counters and faults.

`api_endpoint` wraps each REST and Bulk API handler so that every call goes through the same steps,
in Salesforce's order: injected faults (slowness, 503, rate limit), the session check (401), the
daily API counter (403), then the handler; and every response carries `Sforce-Limit-Info`.
Handlers are plain functions run in the thread pool, where blocking SQLite work is fine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sandbox.records import RecordWriter
from sandbox.server.errors import ApiError, not_found
from sandbox.server.faults import Faults
from sandbox.server.result_sets import ResultSets
from sandbox.server.sessions import ApiUsage, Session, SessionRegistry
from sandbox.store import OrgStore
from sandbox.values import format_datetime

# API versions the sandbox answers, oldest first (Bulk API 2.0 queries need 47.0 or later).
API_VERSIONS = tuple(f"{number}.0" for number in range(31, 63))
_RELEASES = {59: "Winter '24", 60: "Spring '24", 61: "Summer '24", 62: "Winter '25"}


@dataclass(frozen=True)
class Credentials:
    """Who may log in to the sandbox: one connected app and one integration user.

    The defaults are for a local sandbox only and are documented in the README; a team replaying its
    own export can set its own.
    """

    client_id: str = "persona-sync-sandbox"
    client_secret: str = "sandbox-client-secret"
    username: str = "integration@persona-sync.sandbox"
    password: str = "sandbox-password"
    security_token: str = "sandboxtoken"
    # PEM certificate whose key signs JWT bearer assertions (the "digital signature" of a connected app).
    jwt_certificate: Path | None = None


@dataclass
class SandboxState:
    """The running sandbox: the org database and everything the server keeps beside it."""

    store: OrgStore
    results: ResultSets
    sessions: SessionRegistry
    usage: ApiUsage
    faults: Faults
    credentials: Credentials
    admin_token: str
    integration_user_id: str
    organization_id: str
    bulk_poll_seconds: float = 0.0
    writer: RecordWriter = field(init=False)

    def __post_init__(self) -> None:
        self.writer = RecordWriter(self.store, self.faults.update_error)


@dataclass(frozen=True)
class Call:
    """One authenticated API call: the sandbox, the caller's session and the API version asked for."""

    state: SandboxState
    session: Session
    version: str
    request: Request

    @property
    def now(self) -> str:
        """The current time in stored form; writes stamp SystemModstamp with it."""
        return format_datetime(datetime.now(timezone.utc))

    @property
    def instance_url(self) -> str:
        return instance_url(self.request)


Handler = Callable[[Call], Response]


def sandbox_state(request: Request) -> SandboxState:
    return request.app.state.sandbox


def instance_url(request: Request) -> str:
    """The sandbox's base URL as the client reached it (Salesforce's instance URL)."""
    return f"https://{request.headers.get('host', request.url.netloc)}"


def api_endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wraps a handler with the faults, session check and API counting every API call goes through.

    The request body is read first (into `request.state.body`), then the handler runs in the thread
    pool, where blocking SQLite work does not stall other connections.
    """

    async def endpoint(request: Request) -> Response:
        request.state.body = await request.body()
        return await run_in_threadpool(_handle, handler, request)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def _handle(handler: Handler, request: Request) -> Response:
    state = sandbox_state(request)
    try:
        state.faults.before_api_call()
        session = state.sessions.authenticate(request.headers.get("authorization"))
        state.usage.count_call()
        version = request.path_params.get("version", API_VERSIONS[-1])
        if version not in API_VERSIONS:
            raise not_found()
        response = handler(Call(state, session, version, request))
    except ApiError as error:
        response = error.response()
    response.headers["Sforce-Limit-Info"] = f"api-usage={state.usage.used}/{state.usage.daily_limit}"
    return response


def release_label(version: str) -> str:
    major = int(float(version))
    return _RELEASES.get(major, f"API {version}")
