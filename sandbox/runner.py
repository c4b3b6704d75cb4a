"""Starting and stopping a sandbox: from a data directory to a live HTTPS server.

A sandbox lives in one data directory:

    org.db            the org (generated from a preset and seed, or loaded from an export)
    results.db        query results being paged (REST locators, Bulk API 2.0 jobs)
    bulk/             uploaded Bulk ingest data
    tls/ca.pem        the CA clients must trust; tls/server.pem, tls/server-key.pem
    jwt/              the connected app's certificate and the matching private key (JWT bearer logins)
    truth/truth.csv   Id,persona for a generated org: the answer key, never visible through the API
    admin-token       the token for the admin (fault injection) endpoints
    sandbox.json      written while a server runs: its URL and process id, so other commands find it

`start_sandbox` runs the server in a background thread of this process (tests); `start_sandbox_process`
runs it in a child process (benchmarks and the demo, so client and server use both cores).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import requests
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from sandbox.server.app import ADMIN_HEADER, create_app
from sandbox.server.context import Credentials, SandboxState
from sandbox.server.faults import FaultSettings, Faults
from sandbox.server.result_sets import ResultSets
from sandbox.server.sessions import ApiUsage, SessionRegistry
from sandbox.store import OrgStore, StoreError
from sandbox.tls import ensure_tls_files
from sandbox.values import format_datetime

if TYPE_CHECKING:
    from sandbox.generate.worlds import World


class SandboxError(RuntimeError):
    """The sandbox cannot start as asked; the message says what to change."""


@dataclass
class SandboxConfig:
    """Everything a sandbox start needs. The defaults give the small demo org on a free port."""

    data_dir: Path
    preset: str = "small"
    seed: int = 7
    # The org's "today": history ends here. None: the current hour (UTC) at generation.
    as_of: datetime | None = None
    hybrid_share: float = 0.10
    noise: float = 1.0
    # The generated org's habits (sandbox.generate.worlds); None: the default world, today's org.
    world: World | None = None
    from_export: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    session_idle_seconds: float = 2 * 3600
    daily_api_limit: int = 100_000
    faults: FaultSettings = field(default_factory=FaultSettings)
    credentials: Credentials = field(default_factory=Credentials)
    gzip_level: int = 1

    @property
    def org_path(self) -> Path:
        return self.data_dir / "org.db"


@dataclass
class RunningSandbox:
    """A live sandbox: where it listens, what clients need to trust and log in, and how to stop it."""

    url: str
    data_dir: Path
    ca_cert: Path
    admin_token: str
    credentials: Credentials
    jwt_private_key: Path
    _stop: object = None

    @property
    def truth_csv(self) -> Path:
        return self.data_dir / "truth" / "truth.csv"

    @property
    def org_path(self) -> Path:
        return self.data_dir / "org.db"

    def admin(self, method: str, path: str, payload: dict | None = None) -> dict:
        """Calls an admin endpoint (`/_sandbox/...`) with the admin token; returns its JSON."""
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise replace our CA
        session.verify = str(self.ca_cert)
        response = session.request(method, f"{self.url}/_sandbox/{path}", json=payload,
                                   headers={ADMIN_HEADER: self.admin_token}, timeout=30)
        response.raise_for_status()
        return response.json()

    def set_faults(self, **changes: object) -> dict:
        """Injects faults (see `FaultSettings`); returns the settings now in force."""
        return self.admin("PUT", "faults", changes)

    def clear_faults(self) -> dict:
        return self.admin("DELETE", "faults")

    def expire_sessions(self) -> int:
        return self.admin("POST", "sessions/expire")["expired"]

    def stop(self) -> None:
        if callable(self._stop):
            self._stop()
            self._stop = None


# --- preparing the data directory ----------------------------------------------------------------------

def prepare_org(config: SandboxConfig) -> OrgStore:
    """The org for `config`: opened when it exists (and matches), else generated or loaded from an export."""
    path = config.org_path
    if path.exists():
        store = OrgStore.open(path)
        _check_same_org(store, config)
        return store
    config.data_dir.mkdir(parents=True, exist_ok=True)
    if config.from_export is not None:
        from sandbox.export_loader import load_export

        load_export(config.from_export, path, settings={"preset": "export"})
        store = OrgStore.open(path)
        _ensure_api_identity(store, config.credentials)
        return store
    from sandbox.generate import GenerationOptions, World, generate_org

    as_of = config.as_of or datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    temporary = path.with_suffix(".generating")
    temporary.unlink(missing_ok=True)
    store = OrgStore.create(temporary, {})
    generate_org(store, preset=config.preset, seed=config.seed, as_of=as_of,
                 options=GenerationOptions(hybrid_share=config.hybrid_share, noise=config.noise,
                                           world=config.world or World.default()),
                 truth_dir=config.data_dir / "truth")
    store.close()
    os.replace(temporary, path)  # an interrupted generation never leaves a half-made org behind
    return OrgStore.open(path)


def _ensure_api_identity(store: OrgStore, credentials: Credentials) -> None:
    """Gives an org loaded from an export what the API needs to log in: an Organization and an integration user.

    A real org has both; an export often carries neither (Data Loader exports records, not the org).
    What is added is marked in the org settings, so it is never mistaken for exported data.
    """
    now = format_datetime(datetime.now(timezone.utc))
    with store.transaction() as db:
        if not store.setting("organization_id"):
            row = db.execute('SELECT Id FROM "Organization" LIMIT 1').fetchone()
            organization_id = row[0] if row else store.new_ids("00D", 1, db)[0]
            if row is None:
                store.insert_rows("Organization", ["Id", "Name", "IsSandbox", "OrganizationType", "CreatedDate",
                                                   "LastModifiedDate", "SystemModstamp"],
                                  [[organization_id, "Exported Org", 1, "Enterprise Edition", now, now, now]], db)
            store.set_setting("organization_id", organization_id)
        if not store.setting("integration_user_id"):
            profile = db.execute('SELECT Id FROM "Profile" LIMIT 1').fetchone()
            user_id = store.new_ids("005", 1, db)[0]
            store.insert_rows("User", ["Id", "Username", "FirstName", "LastName", "Name", "Email", "IsActive",
                                       "UserType", "ProfileId", "CreatedDate", "LastModifiedDate", "SystemModstamp"],
                              [[user_id, credentials.username, "Integration", "User", "Integration User",
                                credentials.username, 1, "Standard", profile[0] if profile else None, now, now, now]],
                              db)
            store.set_setting("integration_user_id", user_id)
            store.set_setting("integration_user_added", "true")


def _check_same_org(store: OrgStore, config: SandboxConfig) -> None:
    settings = store.settings()
    if config.from_export is not None or settings.get("source") == "export":
        return
    stored = (settings.get("preset"), settings.get("seed"))
    wanted = (config.preset, str(config.seed))
    if stored != wanted:
        raise SandboxError(
            f"{config.org_path} holds the org generated with preset={stored[0]} seed={stored[1]}, not "
            f"preset={wanted[0]} seed={wanted[1]}: choose another --data-dir, or --reset to regenerate it")
    from sandbox.generate import World

    world = config.world or World.default()
    # An org generated before worlds existed was generated in the default world.
    stored_world = settings.get("world_settings", World.default().to_settings())
    if stored_world != world.to_settings():
        raise SandboxError(
            f"{config.org_path} holds the org generated in world {settings.get('world', 'default')}, not in world "
            f"{world.name} (or the world's ranges changed since): choose another --data-dir, or --reset to "
            "regenerate it")


def _admin_token(data_dir: Path) -> str:
    path = data_dir / "admin-token"
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def ensure_jwt_files(directory: Path) -> tuple[Path, Path]:
    """The connected app's certificate and its private key (for clients using JWT bearer logins)."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / "jwt-key.pem", directory / "jwt-cert.pem"
    if key_path.exists() and cert_path.exists():
        return key_path, cert_path
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "persona-sync sandbox connected app")])
    now = datetime.now(timezone.utc) - timedelta(minutes=5)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + timedelta(days=3650)).sign(key, hashes.SHA256()))
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def build_state(config: SandboxConfig) -> SandboxState:
    """The server state for `config`: org prepared, sessions, counters and faults ready."""
    store = prepare_org(config)
    _, jwt_cert = ensure_jwt_files(config.data_dir / "jwt")
    credentials = config.credentials
    if credentials.jwt_certificate is None:
        credentials = Credentials(**{**asdict(credentials), "jwt_certificate": jwt_cert})
    integration_user = store.setting("integration_user_id")
    organization = store.setting("organization_id")
    if not integration_user or not organization:
        raise SandboxError(f"{config.org_path} names no integration user or organization (integration_user_id, "
                           "organization_id); regenerate it, or start again with --from-export")
    return SandboxState(
        store=store,
        results=ResultSets(config.data_dir / "results.db", config.org_path),
        sessions=SessionRegistry(store, config.session_idle_seconds),
        usage=ApiUsage(store, config.daily_api_limit),
        faults=Faults(config.faults),
        credentials=credentials,
        admin_token=_admin_token(config.data_dir),
        integration_user_id=integration_user,
        organization_id=organization,
    )


# --- running ------------------------------------------------------------------------------------------

def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise SandboxError(f"cannot listen on {host}:{port} ({error.strerror}); choose another --port") from error
    sock.listen(2048)
    return sock


class _QuietShutdown(logging.Filter):
    """Drops uvicorn's "timeout graceful shutdown exceeded" line: idle pooled connections are expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "timeout graceful shutdown exceeded" not in record.getMessage()


def _uvicorn_server(config: SandboxConfig, state: SandboxState) -> uvicorn.Server:
    tls = ensure_tls_files(config.data_dir / "tls")
    app = create_app(state, gzip_level=config.gzip_level)
    server_config = uvicorn.Config(app, ssl_certfile=str(tls.server_cert), ssl_keyfile=str(tls.server_key),
                                   log_level="warning", access_log=False, http="httptools", loop="uvloop",
                                   lifespan="off", timeout_keep_alive=30,
                                   # Clients keep idle TLS connections pooled; don't wait on them to stop.
                                   timeout_graceful_shutdown=0.5)
    server = uvicorn.Server(server_config)  # its Config sets up uvicorn's loggers
    logging.getLogger("uvicorn.error").addFilter(_QuietShutdown())
    return server


def _running(config: SandboxConfig, state: SandboxState, url: str, stop) -> RunningSandbox:
    key, _ = ensure_jwt_files(config.data_dir / "jwt")
    return RunningSandbox(url=url, data_dir=config.data_dir, ca_cert=config.data_dir / "tls" / "ca.pem",
                          admin_token=state.admin_token, credentials=state.credentials, jwt_private_key=key,
                          _stop=stop)


def start_sandbox(config: SandboxConfig) -> RunningSandbox:
    """Starts a sandbox in a background thread of this process; returns once it accepts connections."""
    state = build_state(config)
    sock = _bind(config.host, config.port)
    port = sock.getsockname()[1]
    server = _uvicorn_server(config, state)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="sandbox-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SandboxError("the sandbox server did not start; see the log above")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        state.usage.save()
        sock.close()

    return _running(config, state, f"https://localhost:{port}", stop)


def serve(config: SandboxConfig, on_ready=None) -> None:
    """Runs a sandbox in the foreground until interrupted (the CLI's `sandbox start`).

    Writes `sandbox.json` (URL, pid) while it runs, so other commands and processes find it.
    """
    state = build_state(config)
    sock = _bind(config.host, config.port)
    port = sock.getsockname()[1]
    server = _uvicorn_server(config, state)
    url = f"https://localhost:{port}"
    status_file = config.data_dir / "sandbox.json"

    def announce_when_ready() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.01)
        if server.started:
            status_file.write_text(json.dumps({"url": url, "pid": os.getpid()}))
            if on_ready is not None:
                on_ready(_running(config, state, url, None))

    threading.Thread(target=announce_when_ready, name="sandbox-announce", daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        state.usage.save()
        status_file.unlink(missing_ok=True)
        sock.close()


def start_sandbox_process(config: SandboxConfig, timeout: float = 300) -> RunningSandbox:
    """Starts a sandbox in a child process (`persona-sync sandbox start`); returns once it listens.

    The org is prepared in this process first, so a generation error is raised here, not lost in a child.
    """
    prepare_org(config).close()
    status_file = config.data_dir / "sandbox.json"
    status_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "persona_sync", "sandbox", "start", "--data-dir", str(config.data_dir),
               "--preset", config.preset, "--seed", str(config.seed), "--port", str(config.port),
               "--host", config.host, "--daily-api-limit", str(config.daily_api_limit),
               "--session-idle-seconds", str(config.session_idle_seconds), "--quiet"]
    if config.from_export is not None:
        command += ["--from-export", str(config.from_export)]
    if config.world is not None:
        command += ["--world", config.world.to_settings()]  # exact, even for a world built by hand
    process = subprocess.Popen(command)
    deadline = time.monotonic() + timeout
    while not status_file.exists():
        if process.poll() is not None:
            raise SandboxError(f"the sandbox process exited with code {process.returncode}; see its output above")
        if time.monotonic() > deadline:
            process.terminate()
            raise SandboxError(f"the sandbox did not start within {timeout:.0f} s")
        time.sleep(0.05)
    url = json.loads(status_file.read_text())["url"]

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()

    key, _ = ensure_jwt_files(config.data_dir / "jwt")
    credentials = Credentials(**{**asdict(config.credentials), "jwt_certificate": config.data_dir / "jwt" / "jwt-cert.pem"})
    return RunningSandbox(url=url, data_dir=config.data_dir, ca_cert=config.data_dir / "tls" / "ca.pem",
                          admin_token=_admin_token(config.data_dir), credentials=credentials, jwt_private_key=key,
                          _stop=stop)


__all__ = ["SandboxConfig", "RunningSandbox", "SandboxError", "StoreError", "start_sandbox",
           "start_sandbox_process", "serve", "prepare_org", "build_state"]
