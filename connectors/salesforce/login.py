"""Logging in to a Salesforce org and building the simple-salesforce client.

simple-salesforce sends its own logins only to `https://{domain}.salesforce.com`, so a My Domain with
a custom host, or the local sandbox, cannot be reached through it. We exchange the token ourselves
at the configured login URL (OAuth 2.0: client credentials, JWT bearer, or username-password) and give
simple-salesforce the session id and instance URL, which it then uses for every call.

TLS is always verified. With a CA bundle set, the `requests.Session` trusts exactly that bundle and
ignores REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (which would otherwise silently replace it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jwt
import requests
from pydantic import SecretStr
from simple_salesforce import Salesforce

from persona_sync.errors import ConfigurationError, SalesforceAuthError
from persona_sync.settings import Settings

_JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass(frozen=True)
class OrgSession:
    """A live session: the token (secret) and the instance URL every API call goes to."""

    session_id: SecretStr
    instance_url: str


def http_session(ca_bundle: Path | None) -> requests.Session:
    """The HTTP session all calls share: verified TLS against `ca_bundle` when one is given."""
    session = requests.Session()
    if ca_bundle is not None:
        if not Path(ca_bundle).is_file():
            raise ConfigurationError(f"the CA bundle {ca_bundle} does not exist (PERSONA_SYNC_SALESFORCE_CA_BUNDLE)")
        session.verify = str(ca_bundle)
        session.trust_env = False
    return session


def login(settings: Settings, http: requests.Session) -> OrgSession:
    """Logs in as `settings.salesforce_auth` says; raises SalesforceAuthError with what to check."""
    mode = settings.salesforce_auth
    if mode == "session":
        if settings.salesforce_session_id is None or not settings.salesforce_instance_url:
            raise ConfigurationError("session mode needs PERSONA_SYNC_SALESFORCE_SESSION_ID and "
                                     "PERSONA_SYNC_SALESFORCE_INSTANCE_URL")
        return OrgSession(settings.salesforce_session_id, settings.salesforce_instance_url.rstrip("/"))
    login_url = (settings.salesforce_login_url or "").rstrip("/")
    if not login_url.startswith("https://"):
        raise ConfigurationError(f"PERSONA_SYNC_SALESFORCE_LOGIN_URL must be an https:// URL, not {login_url!r}")
    form: dict[str, str]
    auth: tuple[str, str] | None = None
    if mode == "client_credentials":
        form = {"grant_type": "client_credentials"}
        auth = (settings.salesforce_client_id, settings.salesforce_client_secret.get_secret_value())
    elif mode == "password":
        form = {
            "grant_type": "password",
            "client_id": settings.salesforce_client_id,
            "client_secret": settings.salesforce_client_secret.get_secret_value(),
            "username": settings.salesforce_username,
            "password": settings.salesforce_password.get_secret_value()
            + settings.salesforce_security_token.get_secret_value(),
        }
    else:
        form = {"grant_type": _JWT_GRANT, "assertion": _jwt_assertion(settings, login_url)}
    token_url = f"{login_url}/services/oauth2/token"
    try:
        response = http.post(token_url, data=form, auth=auth, timeout=settings.salesforce_timeout_seconds)
    except requests.exceptions.SSLError as error:
        raise SalesforceAuthError(
            f"TLS verification failed for {token_url}: {error}. Check PERSONA_SYNC_SALESFORCE_CA_BUNDLE "
            "(the sandbox's CA is <sandbox dir>/tls/ca.pem)", call="oauth2/token") from error
    except requests.exceptions.ConnectionError as error:
        raise SalesforceAuthError(
            f"cannot reach {token_url}: is the org (or `persona-sync sandbox start`) running, and is "
            "PERSONA_SYNC_SALESFORCE_LOGIN_URL right?", call="oauth2/token") from error
    if response.status_code != 200:
        try:
            detail = response.json()
            reason = f"{detail.get('error')}: {detail.get('error_description')}"
        except ValueError:
            reason = response.text[:200]
        raise SalesforceAuthError(f"{login_url} refused the {mode} login ({response.status_code} {reason}); check "
                                  "the PERSONA_SYNC_SALESFORCE_* credentials", call="oauth2/token")
    token = response.json()
    return OrgSession(SecretStr(token["access_token"]), token["instance_url"].rstrip("/"))


def connect(settings: Settings) -> Salesforce:
    """A simple-salesforce client logged in to the configured org, sharing one verified HTTP session."""
    http = http_session(settings.salesforce_ca_bundle)
    org = login(settings, http)
    return Salesforce(instance_url=org.instance_url, session_id=org.session_id.get_secret_value(), session=http,
                      version=settings.salesforce_api_version)


def _jwt_assertion(settings: Settings, login_url: str) -> str:
    key_file = settings.salesforce_private_key_file
    if key_file is None or not Path(key_file).is_file():
        raise ConfigurationError(f"jwt mode needs PERSONA_SYNC_SALESFORCE_PRIVATE_KEY_FILE (a PEM private key); "
                                 f"{key_file} does not exist")
    claims = {"iss": settings.salesforce_client_id, "sub": settings.salesforce_username, "aud": login_url,
              "exp": int(time.time()) + 180}
    return jwt.encode(claims, Path(key_file).read_bytes(), algorithm="RS256")
