"""Logins, with Salesforce's request and response shapes.

- `POST /services/oauth2/token`: OAuth 2.0 client credentials (Basic auth or form), username-password,
  and JWT bearer (an RS256 assertion signed by the key whose certificate the connected app holds).
- `POST /services/Soap/u/{version}`: SOAP `login()` (username, password + security token).

Each success opens a session (see `sessions.py`) acting as the integration user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import xml.etree.ElementTree as ElementTree
from html import escape
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from starlette.requests import Request
from starlette.responses import Response

from sandbox.server.context import SandboxState, instance_url, sandbox_state
from sandbox.server.errors import json_response

_JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_SOAP_NS = {"soapenv": "http://schemas.xmlsoap.org/soap/envelope/", "urn": "urn:partner.soap.sforce.com"}


async def oauth_token(request: Request) -> Response:
    """The OAuth 2.0 token endpoint: answers `access_token` + `instance_url`, or an OAuth error."""
    state = sandbox_state(request)
    form = {key: values[0] for key, values in parse_qs((await request.body()).decode()).items()}
    form.update({key: value for key, value in request.query_params.items() if key not in form})
    grant = form.get("grant_type", "")
    if grant == "client_credentials":
        client_id, client_secret = _client_from_basic(request.headers.get("authorization"))
        client_id = client_id or form.get("client_id", "")
        client_secret = client_secret or form.get("client_secret", "")
        if client_id != state.credentials.client_id:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if not _same(client_secret, state.credentials.client_secret):
            return _oauth_error("invalid_client", "invalid client credentials")
    elif grant == "password":
        if form.get("client_id") != state.credentials.client_id:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if not _same(form.get("client_secret", ""), state.credentials.client_secret):
            return _oauth_error("invalid_client", "invalid client credentials")
        if not _password_ok(state, form.get("username", ""), form.get("password", "")):
            return _oauth_error("invalid_grant", "authentication failure")
    elif grant == _JWT_GRANT:
        problem = _jwt_problem(state, form.get("assertion", ""), instance_url(request))
        if problem:
            return _oauth_error(*problem)
    else:
        return _oauth_error("unsupported_grant_type", "grant type not supported")
    session = state.sessions.issue(state.integration_user_id)
    issued_at = str(int(time.time() * 1000))
    base = instance_url(request)
    identity = f"{base}/id/{state.organization_id}/{state.integration_user_id}"
    signature = base64.b64encode(
        hmac.new(state.admin_token.encode(), (identity + issued_at).encode(), hashlib.sha256).digest()).decode()
    return json_response({
        "access_token": session.token,
        "instance_url": base,
        "id": identity,
        "token_type": "Bearer",
        "issued_at": issued_at,
        "signature": signature,
        "scope": "api",
    })


async def soap_login(request: Request) -> Response:
    """SOAP `login()`: a loginResponse with sessionId and serverUrl, or an INVALID_LOGIN fault."""
    state = sandbox_state(request)
    version = request.path_params["version"]
    try:
        envelope = ElementTree.fromstring(await request.body())
        username = envelope.findtext(".//urn:login/urn:username", default="", namespaces=_SOAP_NS)
        password = envelope.findtext(".//urn:login/urn:password", default="", namespaces=_SOAP_NS)
    except ElementTree.ParseError:
        return _soap_fault("INVALID_REQUEST", "The request is not a well-formed SOAP envelope")
    if not _password_ok(state, username, password):
        return _soap_fault("INVALID_LOGIN", "INVALID_LOGIN: Invalid username, password, security token; "
                                            "or user locked out.")
    session = state.sessions.issue(state.integration_user_id)
    base = instance_url(request)
    org = state.organization_id
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><loginResponse><result><metadataServerUrl>{base}/services/Soap/m/{version}/{org}</metadataServerUrl><passwordExpired>false</passwordExpired><sandbox>true</sandbox><serverUrl>{base}/services/Soap/u/{version}/{org}</serverUrl><sessionId>{escape(session.token)}</sessionId><userId>{state.integration_user_id}</userId><userInfo><organizationId>{org}</organizationId><userName>{escape(state.credentials.username)}</userName></userInfo></result></loginResponse></soapenv:Body></soapenv:Envelope>"""
    return Response(body, media_type="text/xml; charset=UTF-8")


def _password_ok(state: SandboxState, username: str, password: str) -> bool:
    """Password plus security token, appended, as Salesforce expects from outside trusted IP ranges."""
    credentials = state.credentials
    return username.lower() == credentials.username.lower() and _same(
        password, credentials.password + credentials.security_token)


def _jwt_problem(state: SandboxState, assertion: str, base_url: str) -> tuple[str, str] | None:
    """Why a JWT bearer assertion is refused, as (error, description); None when it is good."""
    certificate_path = state.credentials.jwt_certificate
    if certificate_path is None or not certificate_path.exists():
        return "invalid_client", "no certificate is registered for JWT bearer logins"
    public_key = x509.load_pem_x509_certificate(certificate_path.read_bytes()).public_key()
    try:
        # Signature first; the claims are checked below by hand because simple-salesforce sends `exp`
        # as a string, which strict JWT libraries refuse but Salesforce accepts.
        claims = jwt.decode(assertion, public_key, algorithms=["RS256"],
                            options={"verify_exp": False, "verify_aud": False, "verify_iat": False,
                                     "verify_nbf": False})
    except jwt.PyJWTError:
        return "invalid_grant", "invalid assertion"
    if claims.get("iss") != state.credentials.client_id:
        return "invalid_client_id", "client identifier invalid"
    if str(claims.get("sub", "")).lower() != state.credentials.username.lower():
        return "invalid_grant", "user hasn't approved this consumer"
    audience = str(claims.get("aud", "")).rstrip("/")
    if audience not in (base_url, "https://login.salesforce.com", "https://test.salesforce.com"):
        return "invalid_grant", "audience is invalid"
    try:
        expires = float(claims.get("exp", 0))
    except (TypeError, ValueError):
        return "invalid_grant", "expiration time is invalid"
    if expires < time.time():
        return "invalid_grant", "expired authorization code"
    return None


def _client_from_basic(authorization: str | None) -> tuple[str, str]:
    if not authorization or not authorization.lower().startswith("basic "):
        return "", ""
    try:
        decoded = base64.b64decode(authorization.split(" ", 1)[1]).decode()
    except (ValueError, UnicodeDecodeError):
        return "", ""
    client_id, _, client_secret = decoded.partition(":")
    return client_id, client_secret


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())


def _oauth_error(error: str, description: str) -> Response:
    return json_response({"error": error, "error_description": description}, status=400)


def _soap_fault(code: str, message: str) -> Response:
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:sf="urn:fault.partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>sf:{code}</faultcode><faultstring>{escape(message)}</faultstring><detail><sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>{code}</sf:exceptionCode><sf:exceptionMessage>{escape(message)}</sf:exceptionMessage></sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"""
    return Response(body, status_code=500, media_type="text/xml; charset=UTF-8")
