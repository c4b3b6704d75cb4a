"""The sandbox's ASGI application: every route, in one table.

Read this file to see what the sandbox answers. Handlers live by area: `auth` (logins), `rest`
(queries, describe, records, collections), `bulk` (Bulk API 2.0 jobs) and the admin endpoints below,
which tests use to inject faults (they need the admin token, never a Salesforce session).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware

from sandbox.server import auth, bulk, rest
from sandbox.server.context import SandboxState, api_endpoint, sandbox_state
from sandbox.server.errors import ApiError, json_response
from sandbox.server.faults import FaultSettings

ADMIN_HEADER = "X-Sandbox-Admin-Token"
_DATA = "/services/data/v{version}"
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def create_app(state: SandboxState, gzip_level: int = 1) -> Starlette:
    """The application serving `state`'s org. Responses are gzip-compressed when the client asks."""
    routes = [
        Route("/services/oauth2/token", auth.oauth_token, methods=["POST"]),
        Route("/services/Soap/u/{version}", auth.soap_login, methods=["POST"]),
        *_both("/services/data", {"GET": rest.versions}, public=True),
        *_both(_DATA, {"GET": rest.resources}),
        *_both(f"{_DATA}/limits", {"GET": rest.limits}),
        *_both(f"{_DATA}/query", {"GET": rest.query}),
        *_both(f"{_DATA}/queryAll", {"GET": rest.query_all}),
        Route(f"{_DATA}/query/{{locator}}", api_endpoint(rest.query_more), methods=["GET"]),
        Route(f"{_DATA}/queryAll/{{locator}}", api_endpoint(rest.query_more), methods=["GET"]),
        *_both(f"{_DATA}/sobjects", {"GET": rest.global_describe}),
        *_both(f"{_DATA}/sobjects/{{sobject}}/describe", {"GET": rest.describe}),
        *_both(f"{_DATA}/sobjects/{{sobject}}", {"GET": rest.sobject_metadata, "POST": rest.create_record}),
        *_both(f"{_DATA}/sobjects/{{sobject}}/{{record_id}}",
               {"GET": rest.get_record, "PATCH": rest.update_record, "DELETE": rest.delete_record}),
        *_both(f"{_DATA}/composite/sobjects", {"POST": rest.collection_create, "PATCH": rest.collection_update,
                                              "DELETE": rest.collection_delete}),
        *_both(f"{_DATA}/composite/sobjects/{{sobject}}", {"GET": rest.collection_get}),
        *[route for path, handlers in bulk.ROUTES for route in _both(f"{_DATA}/{path}", handlers)],
        Route("/_sandbox/faults", _admin(_faults), methods=["GET", "PUT", "DELETE"]),
        Route("/_sandbox/sessions/expire", _admin(_expire_sessions), methods=["POST"]),
        Route("/_sandbox/limits/reset", _admin(_reset_limits), methods=["POST"]),
        Route("/_sandbox/status", _admin(_status), methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(GZipMiddleware, minimum_size=1024, compresslevel=gzip_level)],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.sandbox = state
    return app


def _both(path: str, handlers: dict[str, Callable], public: bool = False) -> list[Route]:
    """Routes for `path` with and without a trailing slash (clients send both), one handler per method.

    Public handlers are async functions of the request; the others are API handlers of a `Call`.
    """
    endpoints = {method: handler if public else api_endpoint(handler) for method, handler in handlers.items()}

    async def dispatch(request: Request) -> Response:
        endpoint = endpoints.get(request.method)
        if endpoint is None:
            allowed = ",".join(endpoints)
            return ApiError(405, "METHOD_NOT_ALLOWED",
                            f"HTTP Method '{request.method}' not allowed. Allowed are {allowed}").response()
        return await endpoint(request)

    return [Route(path, dispatch, methods=_ALL_METHODS), Route(path + "/", dispatch, methods=_ALL_METHODS)]


async def _http_error(request: Request, error: Exception) -> Response:
    status = getattr(error, "status_code", 500)
    if status == 404:
        return ApiError(404, "NOT_FOUND", "The requested resource does not exist").response()
    return ApiError(status, "INVALID_REQUEST", str(getattr(error, "detail", error))).response()


# --- admin endpoints ---------------------------------------------------------------------------------

def _admin(handler: Callable[[Request, SandboxState], Response]) -> Callable:
    """Admin endpoints answer only to the admin token, which the sandbox writes to its data directory."""

    async def endpoint(request: Request) -> Response:
        state = sandbox_state(request)
        given = request.headers.get(ADMIN_HEADER, "")
        if not secrets.compare_digest(given.encode(), state.admin_token.encode()):
            return json_response([{"errorCode": "INSUFFICIENT_ACCESS", "message": f"the {ADMIN_HEADER} header is "
                                   "missing or wrong; the token is in the sandbox's data directory (admin-token)"}],
                                 status=403)
        request.state.body = await request.body()
        return handler(request, state)

    return endpoint


def _faults(request: Request, state: SandboxState) -> Response:
    if request.method == "PUT":
        try:
            changes = json.loads(request.state.body or b"{}")
            state.faults.update(changes)
        except (ValueError, TypeError) as error:
            return json_response([{"errorCode": "INVALID_FIELD", "message": str(error)}], status=400)
    elif request.method == "DELETE":
        state.faults.replace(FaultSettings())
    return json_response(state.faults.describe())


def _expire_sessions(request: Request, state: SandboxState) -> Response:
    return json_response({"expired": state.sessions.expire_all()})


def _reset_limits(request: Request, state: SandboxState) -> Response:
    state.usage.reset()
    return json_response({"used": state.usage.used, "max": state.usage.daily_limit})


def _status(request: Request, state: SandboxState) -> Response:
    return json_response({"settings": state.store.settings(), "api_requests_used": state.usage.used,
                          "faults": state.faults.describe()})
