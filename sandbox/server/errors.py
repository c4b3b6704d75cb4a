"""Errors in Salesforce's own shapes, so simple-salesforce raises its own exception types.

REST and Bulk API errors are a JSON array: `[{"message": ..., "errorCode": ..., "fields": [...]}]`.
The status code picks the client's exception (400 MalformedRequest, 401 ExpiredSession, 403
RefusedRequest, 404 ResourceNotFound, anything else GeneralError).
"""

from __future__ import annotations

import json

from starlette.responses import Response


class ApiError(Exception):
    """A request the sandbox refuses, as Salesforce would: HTTP status, errorCode, message, fields."""

    def __init__(self, status: int, error_code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(f"{error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = fields

    def body(self) -> list[dict]:
        entry: dict = {"message": self.message, "errorCode": self.error_code}
        if self.fields is not None:
            entry["fields"] = self.fields
        return [entry]

    def response(self, headers: dict[str, str] | None = None) -> Response:
        return json_response(self.body(), status=self.status, headers=headers)


def json_response(content: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response (Salesforce's own content type, UTF-8 declared so clients skip detection)."""
    body = json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json;charset=UTF-8")


def invalid_session() -> ApiError:
    return ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")


def not_found(message: str = "The requested resource does not exist") -> ApiError:
    return ApiError(404, "NOT_FOUND", message)


def malformed(message: str) -> ApiError:
    return ApiError(400, "JSON_PARSER_ERROR", message)
