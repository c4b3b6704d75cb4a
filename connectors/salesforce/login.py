"""Logging in to a Salesforce org and building the simple-salesforce client.

simple-salesforce sends its own logins only to `https://{domain}.salesforce.com`, so a My Domain with
a custom host, or the local sandbox, cannot be reached through it. We exchange the token ourselves
at the configured login URL (OAuth 2.0: client credentials, JWT bearer, or username-password) and give
simple-salesforce the session id and instance URL, which it then uses for every call.

TLS is always verified. With a CA bundle set, the `requests.Session` trusts exactly that bundle and
ignores REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (which would otherwise silently replace it).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import jwt
import requests
from pydantic import SecretStr
from simple_salesforce import Salesforce

from core.configs import SalesforceConfig
from core.errors import ConfigurationError, SalesforceAuthError

_JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
T = TypeVar("T")


_ORG_ID_IN_IDENTITY = re.compile(r"/id/(00D[0-9A-Za-z]{12}(?:[0-9A-Za-z]{3})?)/")


@dataclass(frozen=True)
class OrgSession:
    """A live session: the token (secret), the instance URL every API call goes to, and the org's id
    when the login told it (OAuth token responses do, in their identity URL; a given session does not)."""

    session_id: SecretStr
    instance_url: str
    org_id: str | None = None


def http_session(ca_bundle: Path | None) -> requests.Session:
    """The HTTP session all calls share: verified TLS against `ca_bundle` when one is given."""
    session = requests.Session()
    if ca_bundle is not None:
        if not Path(ca_bundle).is_file():
            raise ConfigurationError(f"the CA bundle {ca_bundle} does not exist (PERSONA_SYNC_SALESFORCE_CA_BUNDLE)")
        session.verify = str(ca_bundle)
        session.trust_env = False
    return session


def login(config: SalesforceConfig, http: requests.Session) -> OrgSession:
    """Logs in as `config.auth` says; raises ConfigurationError naming a missing setting, and
    SalesforceAuthError (with what to check, never a credential) when the org refuses or cannot be reached."""
    mode = config.auth
    if mode == "session":
        session_id = _required(config.session_id, "SESSION_ID", mode)
        instance_url = _required(config.instance_url, "INSTANCE_URL", mode)
        return OrgSession(session_id, instance_url.rstrip("/"))
    login_url = (config.login_url or "").rstrip("/")
    if not login_url.startswith("https://"):
        raise ConfigurationError(f"PERSONA_SYNC_SALESFORCE_LOGIN_URL must be an https:// URL, not {login_url!r}")
    client_id = _required(config.client_id, "CLIENT_ID", mode)
    form: dict[str, str]
    auth: tuple[str, str] | None = None
    if mode == "client_credentials":
        form = {"grant_type": "client_credentials"}
        auth = (client_id, _required(config.client_secret, "CLIENT_SECRET", mode).get_secret_value())
    elif mode == "password":
        form = {
            "grant_type": "password",
            "client_id": client_id,
            "client_secret": _required(config.client_secret, "CLIENT_SECRET", mode).get_secret_value(),
            "username": _required(config.username, "USERNAME", mode),
            "password": _required(config.password, "PASSWORD", mode).get_secret_value()
            + config.security_token.get_secret_value(),
        }
    else:
        form = {"grant_type": _JWT_GRANT, "assertion": _jwt_assertion(config, client_id, login_url)}
    token_url = f"{login_url}/services/oauth2/token"
    try:
        response = http.post(token_url, data=form, auth=auth, timeout=config.timeout_seconds)
    except requests.exceptions.SSLError as error:
        raise SalesforceAuthError(
            f"TLS verification failed for {token_url}: {error}. Check PERSONA_SYNC_SALESFORCE_CA_BUNDLE "
            "(the sandbox's CA is <sandbox dir>/tls/ca.pem)", call="oauth2/token") from error
    except requests.exceptions.ConnectionError as error:
        raise SalesforceAuthError(
            f"cannot reach {token_url}: is the org (or `persona-sync sandbox start`) running, and is "
            "PERSONA_SYNC_SALESFORCE_LOGIN_URL right?", call="oauth2/token", transient=True) from error
    if response.status_code != 200:
        try:
            detail = response.json()
            reason = f"{detail.get('error')}: {detail.get('error_description')}"
        except ValueError:
            reason = response.text[:200]
        raise SalesforceAuthError(f"{login_url} refused the {mode} login ({response.status_code} {reason}); check "
                                  "the PERSONA_SYNC_SALESFORCE_* credentials", call="oauth2/token")
    token = response.json()
    identity = _ORG_ID_IN_IDENTITY.search(str(token.get("id", "")))
    return OrgSession(SecretStr(token["access_token"]), token["instance_url"].rstrip("/"),
                      identity.group(1)[:15] if identity else None)


def connect(config: SalesforceConfig) -> Salesforce:
    """A simple-salesforce client logged in to the configured org, sharing one verified HTTP session."""
    http = http_session(config.ca_bundle)
    org = login(config, http)
    return Salesforce(instance_url=org.instance_url, session_id=org.session_id.get_secret_value(), session=http,
                      version=config.api_version)


def _required(value: T | None, setting: str, mode: str) -> T:
    """`value`, or a ConfigurationError naming the PERSONA_SYNC_SALESFORCE_ setting `mode` needs."""
    if value is None or value == "":
        raise ConfigurationError(f"{mode} logins need PERSONA_SYNC_SALESFORCE_{setting}; it is not set")
    return value


def _jwt_assertion(config: SalesforceConfig, client_id: str, login_url: str) -> str:
    key_file = config.private_key_file
    if key_file is None or not Path(key_file).is_file():
        raise ConfigurationError(f"jwt mode needs PERSONA_SYNC_SALESFORCE_PRIVATE_KEY_FILE (a PEM private key); "
                                 f"{key_file} does not exist")
    claims = {"iss": client_id, "sub": _required(config.username, "USERNAME", "jwt"), "aud": login_url,
              "exp": int(time.time()) + 180}
    return jwt.encode(claims, Path(key_file).read_bytes(), algorithm="RS256")
