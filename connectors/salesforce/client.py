"""One resilient Salesforce client that every stage uses: timeouts, retries, session renewal, API counting.

simple-salesforce does the protocol work (URLs, headers, error mapping, Bulk API 2.0 requests), but on
its own it sets no timeouts, never retries, cannot renew a session it was handed (we give it a session
id and instance URL, so it has nothing to log in with), and its `bulk2` handler copies the bearer token
once, when it is built. `SalesforceClient` wraps it so that:

- every HTTP request has a timeout (`PERSONA_SYNC_SALESFORCE_TIMEOUT_SECONDS`), applied by the transport
  adapter of the shared `requests.Session`, so no call site can forget it;
- every operation goes through `SalesforceClient.call`, which renews an expired session once (logging
  in again and rebuilding the simple-salesforce client, so `bulk2` picks up the new token) and retries
  transient failures with exponential backoff and jitter (tenacity);
- paging (REST `nextRecordsUrl`, Bulk API 2.0 `Sforce-Locator`) runs one page per `call`, so an expiry
  or a dropped connection repeats only the page that failed and the chain continues where it was:
  query locators and Bulk job ids outlive sessions;
- what fails for good raises `core.errors.SalesforceError` naming the org, the object and the
  call, with Salesforce's own reason and what to check.

Retries are declared once, as a `RetryPolicy`; tests pass a policy with tiny waits.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.bulk2 import ColumnDelimiter, LineEnding, Operation, _Bulk2Client
from simple_salesforce.exceptions import SalesforceError as SimpleSalesforceError
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceOperationError,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception, stop_after_attempt
from tenacity import wait_exponential_jitter
from urllib3.exceptions import ProtocolError

from connectors.salesforce.login import OrgSession, http_session, login
from core.configs import RetryConfig, SalesforceConfig
from core.errors import ApiReserveError, SalesforceAuthError, SalesforceError

__all__ = ["ApiReserveError", "BulkPage", "RetryPolicy", "SalesforceClient"]

_log = logging.getLogger(__name__)

T = TypeVar("T")

# Failures of the connection or the transfer: worth another try. (SSLError is a ConnectionError too;
# a certificate that does not verify is sorted out in `_is_transient`.)
_TRANSIENT_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    ProtocolError,
)
# Everything `call` turns into the project's SalesforceError when it fails for good. Anything else
# (a KeyError from a reply that breaks the protocol, a bug of ours) propagates unchanged.
_SALESFORCE_FAILURES: tuple[type[BaseException], ...] = (
    SimpleSalesforceError,
    SalesforceOperationError,
    requests.exceptions.RequestException,
    ProtocolError,
)
# Bulk results are streamed to their file this much at a time.
_DOWNLOAD_CHUNK = 1 << 20
_API_USAGE = re.compile(r"(?:^|[;,\s])api-usage=(\d+)/(\d+)")
_OBJECT_ADDRESS = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>: ")


@dataclass(frozen=True)
class RetryPolicy:
    """How `SalesforceClient.call` retries transient failures (exponential backoff with jitter).

    The wait before retry n (1-based) is `min(initial_wait * 2**(n-1) + uniform(0, jitter), max_wait)`.
    The defaults ride out a few minutes-long blips of a real org (6 attempts: about 31 s of waiting plus
    jitter); tests pass e.g. `RetryPolicy(initial_wait=0.01, max_wait=0.05)`, whose waits the cap keeps
    tiny whatever the jitter.
    """

    attempts: int = 6
    initial_wait: float = 1.0
    max_wait: float = 60.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, not {self.attempts}")
        if min(self.initial_wait, self.max_wait, self.jitter) < 0:
            raise ValueError("RetryPolicy waits and jitter must not be negative")

    @classmethod
    def from_config(cls, config: RetryConfig) -> "RetryPolicy":
        """The policy the PERSONA_SYNC_SALESFORCE_RETRY_* settings describe (jitter capped by the max wait)."""
        return cls(attempts=config.attempts, initial_wait=config.initial_seconds, max_wait=config.max_seconds,
                   jitter=min(1.0, config.max_seconds))


@dataclass(frozen=True)
class BulkPage:
    """One page of a Bulk API 2.0 query's results, as Salesforce sent it, in a file.

    `path` holds a complete CSV document with its own header row (every value quoted, columns in SELECT
    order); it exists until the next page is asked for. `locator` is the locator this page was fetched
    with ("" for the first page), so (`job_id`, `locator`) names the page and fetching it again gives the
    same rows while the job's results are kept (7 days); `next_locator` is the one to fetch next ("" after
    the last page).
    """

    path: Path
    rows: int
    job_id: str
    locator: str
    next_locator: str = ""

    def read_text(self) -> str:
        return self.path.read_text(encoding="utf-8")


class _TimeoutAdapter(HTTPAdapter):
    """Applies a default timeout to every request that names none (simple-salesforce never does)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: bool | str = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        return super().send(request, stream=stream, timeout=self._timeout if timeout is None else timeout,
                            verify=verify, cert=cert, proxies=proxies)


class SalesforceClient:
    """The org, as every stage talks to it: logged in, counted, renewed and retried.

    Build one per run (it logs in at once) and pass it to the stages. It is safe to share between threads:
    the HTTP session is shared, counters are locked, and a renewal made by one thread is used by all.

    `api_calls` counts every HTTP response the org's API sent this client, including refused ones
    (401, 403, 503) and retried ones; logins (the OAuth token endpoint) are excluded, since Salesforce
    does not count them against DailyApiRequests. A request that never got an answer (connection refused,
    timeout) is not counted either. Salesforce counts only the calls it accepted, so without faults the
    two agree, and with faults `api_calls` is the larger.
    """

    def __init__(self, config: SalesforceConfig, *, retry: RetryPolicy | None = None) -> None:
        self._config = config
        self._retry = retry or RetryPolicy.from_config(config.retry)
        self._lock = threading.Lock()
        self._api_calls = 0
        self._calls_by_object: Counter[str] = Counter()
        self._calling = threading.local()  # the object this thread's current `call` is about
        self._org_id: str | None = None
        self._api_usage: tuple[int, int] | None = None
        # Logins use a session of their own, so the response hook below sees API calls only.
        self._login_http = http_session(config.ca_bundle)
        self._http = http_session(config.ca_bundle)
        adapter = _TimeoutAdapter(config.timeout_seconds)
        self._http.mount("https://", adapter)
        self._http.mount("http://", adapter)
        self._http.hooks["response"].append(self._on_response)
        self._sf = self._build(login(config, self._login_http))

    # --- what the caller may read -------------------------------------------------------------------

    @property
    def org(self) -> str:
        """The org's label in messages and logs: its instance host (with the port, if not 443)."""
        return self._org

    @property
    def instance_url(self) -> str:
        """The instance URL every API call goes to (from the latest login)."""
        return self._instance_url

    @property
    def api_calls(self) -> int:
        """HTTP calls this client made to the org's API (see the class docstring for what counts)."""
        with self._lock:
            return self._api_calls

    def api_calls_of(self, sobject: str) -> int:
        """HTTP calls made for `sobject` (through `call(..., sobject=...)`) by any thread of this client.

        Streams are pulled in parallel on one client; each thread's calls are counted for the object it
        is calling about, so the per-object counts add up to `api_calls` less the calls about no object.
        """
        with self._lock:
            return self._calls_by_object[sobject]

    @property
    def org_id(self) -> str:
        """The org's 15-character id, from the login's identity URL (or one query, in session mode).

        Bookkeeping is bound to it: state kept for one org must never be applied to another.
        """
        if self._org_id is None:
            records = self.call(lambda sf: sf.query("SELECT Id FROM Organization")["records"], sobject="Organization",
                                call="identify the org")
            self._org_id = str(records[0]["Id"])[:15]
        return self._org_id

    @property
    def api_usage(self) -> tuple[int, int] | None:
        """(used, max) of the org's daily API requests, from the latest `Sforce-Limit-Info` header seen."""
        with self._lock:
            return self._api_usage

    # --- the one way to call the org ---------------------------------------------------------------

    def call(self, operation: Callable[[Salesforce], T], *, sobject: str = "", call: str = "") -> T:
        """Runs `operation(client)` on the current simple-salesforce client, renewed and retried.

        - An expired session (401) is renewed once: we log in again, rebuild the client (so `bulk2` gets
          the new token) and run `operation` again. An expiry right after that raises SalesforceAuthError.
        - Transient failures (connection errors, timeouts, cut transfers, HTTP 5xx, REQUEST_LIMIT_EXCEEDED)
          are retried as `RetryPolicy` says, each retry logged with attempt, wait and reason.
        - Anything else (malformed request, not found, refused access, a failed Bulk job) is not retried.

        `operation` must be safe to repeat: it may run several times, always with the client to use then
        (never capture a client from outside). What fails for good raises SalesforceError naming the org,
        `sobject` and `call`.
        """
        retrying = Retrying(
            stop=stop_after_attempt(self._retry.attempts),
            wait=wait_exponential_jitter(multiplier=self._retry.initial_wait, max=self._retry.max_wait,
                                         jitter=self._retry.jitter),
            retry=retry_if_exception(_is_transient),
            before_sleep=lambda state: self._log_retry(state, sobject, call),
        )
        outer = getattr(self._calling, "sobject", "")
        self._calling.sobject = sobject
        try:
            return retrying(self._run_renewing, operation, sobject, call)
        except RetryError as gave_up:
            error = gave_up.last_attempt.exception()
            raise self._failure(error, sobject, call, gave_up.last_attempt.attempt_number) from error
        except _SALESFORCE_FAILURES as error:
            raise self._failure(error, sobject, call, 1) from error
        finally:
            self._calling.sobject = outer

    # --- the org's allowance -----------------------------------------------------------------------

    def limits(self) -> dict:
        """The org's limits (`GET limits/`), e.g. `{"DailyApiRequests": {"Max": .., "Remaining": ..}, ..}`."""
        return self.call(lambda sf: sf.limits(), call="limits")

    def check_api_reserve(self, reserve: int) -> int:
        """Returns the org's remaining daily API requests; raises ApiReserveError if fewer than `reserve`.

        The org's daily allowance is shared with every other integration; a run that starts below the
        reserve could starve them, so it refuses to start instead.
        """
        daily = self.limits()["DailyApiRequests"]
        remaining, maximum = int(daily["Remaining"]), int(daily["Max"])
        if remaining < reserve:
            raise ApiReserveError(
                f"only {remaining} of the org's {maximum} daily API requests remain, fewer than the reserve of "
                f"{reserve} persona-sync leaves for other integrations. Salesforce counts a rolling 24 h "
                "window, so requests free up as the calls of the last 24 hours age out: run later, or lower "
                "the reserve (PERSONA_SYNC_API_RESERVE)",
                org=self.org, sobject="", call="limits")
        return remaining

    # --- reading ---------------------------------------------------------------------------------------

    def count(self, soql_count: str, *, sobject: str) -> int:
        """The row count of a `SELECT COUNT() FROM ...` query (its totalSize)."""
        return int(self.call(lambda sf: sf.query(soql_count)["totalSize"], sobject=sobject, call="count"))

    def rest_pages(self, soql: str, *, sobject: str, include_deleted: bool = False) -> Iterator[list[dict]]:
        """Each page of a REST query's records (plain dicts, `attributes` removed), following nextRecordsUrl.

        Every page is fetched through `call`, so an expiry between or during pages renews the session and
        continues from the same nextRecordsUrl, and a transient error repeats that page only. The first
        page is yielded even when empty (a query matching nothing yields one empty list).
        `include_deleted` uses queryAll (deleted and archived rows too).
        """
        page = self.call(lambda sf: sf.query(soql, include_deleted=include_deleted), sobject=sobject,
                         call="queryAll" if include_deleted else "query")
        while True:
            yield [_without_attributes(record) for record in page["records"]]
            next_url = page.get("nextRecordsUrl")
            if page.get("done", True) or not next_url:
                return
            page = self.call(lambda sf: sf.query_more(next_url, identifier_is_url=True), sobject=sobject,
                             call=f"queryMore {next_url}")

    def bulk_pages(self, soql: str, *, sobject: str, download_dir: Path, include_deleted: bool = False,
                   max_records: int = 50_000, poll_seconds: float | None = None) -> Iterator[BulkPage]:
        """Runs a Bulk API 2.0 query job and yields its results page by page (at most `max_records` rows).

        Each page is streamed into a CSV file under `download_dir` (simple-salesforce's `download_job_data`,
        1 MiB at a time), so no page is ever held in memory as text; the file is removed when the next page
        is asked for, or when the caller stops.

        Each step (create the job, wait for it, fetch a page) goes through `call`, with simple-salesforce's
        own Bulk 2.0 client built from the current session: an expiry renews and the chain resumes from
        the current locator; a download cut mid-stream fetches the same locator again (the cut file is
        thrown away). A create retried after a lost answer may leave one orphan job behind in the org
        (harmless; it ages out).

        `poll_seconds` (default: the config's `bulk_poll_seconds`) is simple-salesforce's `wait_for_job`
        wait: it sleeps that long, then polls at intervals of `poll_seconds + e**n / 1000` s, growing until
        they reach 2 s and then fixed (about 3.5 s with the default 0.5). The default suits real orgs, whose
        jobs take seconds to minutes; the local sandbox holds a poll until its job completes, so 0 there
        costs no busy polling. `include_deleted` runs a queryAll job (deleted and archived rows too).
        """
        operation = Operation.query_all if include_deleted else Operation.query
        wait = self._config.bulk_poll_seconds if poll_seconds is None else poll_seconds

        def jobs(sf: Salesforce) -> _Bulk2Client:
            return getattr(sf.bulk2, sobject)._client  # built per access, with the current token

        job = self.call(lambda sf: jobs(sf).create_job(operation, soql, ColumnDelimiter.COMMA, LineEnding.LF),
                        sobject=sobject, call=f"bulk2 create {operation.value} job")
        job_id: str = job["id"]
        self.call(lambda sf: jobs(sf).wait_for_job(job_id, True, wait), sobject=sobject,
                  call=f"bulk2 wait for job {job_id}")
        Path(download_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=download_dir, prefix=f"{sobject}-") as scratch:

            def download(sf: Salesforce, locator: str) -> dict:
                for cut in Path(scratch).glob("*.csv"):  # what an attempt cut mid-stream left
                    cut.unlink()
                return jobs(sf).download_job_data(scratch, job_id, locator, max_records, _DOWNLOAD_CHUNK)

            locator = ""
            while True:
                result = self.call(lambda sf: download(sf, locator), sobject=sobject,
                                   call=f"bulk2 results of job {job_id} locator {locator or '(first)'}")
                page = BulkPage(path=Path(result["file"]), rows=result["number_of_records"], job_id=job_id,
                                locator=locator, next_locator=result["locator"] or "")
                try:
                    yield page
                finally:
                    page.path.unlink(missing_ok=True)
                if not page.next_locator:
                    return
                locator = page.next_locator

    # --- inside ----------------------------------------------------------------------------------------

    def _build(self, session: OrgSession) -> Salesforce:
        """A simple-salesforce client on `session`, sharing our HTTP session (timeouts, hook, TLS)."""
        self._instance_url = session.instance_url
        self._org = urlsplit(session.instance_url).netloc or session.instance_url
        if session.org_id is not None:
            if self._org_id is not None and session.org_id != self._org_id:
                raise SalesforceAuthError(f"logging in again reached org {session.org_id}, not org {self._org_id} "
                                          "this run started with; check PERSONA_SYNC_SALESFORCE_LOGIN_URL",
                                          org=self._org, call="login")
            self._org_id = session.org_id
        return Salesforce(instance_url=session.instance_url, session_id=session.session_id.get_secret_value(),
                          session=self._http, version=self._config.api_version)

    def _run_renewing(self, operation: Callable[[Salesforce], T], sobject: str, call: str) -> T:
        """One attempt: `operation` on the current client, and once more after a renewal if it expired."""
        client = self._sf
        try:
            return operation(client)
        except SalesforceExpiredSession:
            client = self._renew(client)
        try:
            return operation(client)
        except SalesforceExpiredSession as error:
            raise SalesforceAuthError(
                f"{self._org} refused a session right after logging in again ({_reason(error)}): "
                + self._renewal_advice(), org=self._org, sobject=sobject, call=call) from error

    def _renew(self, expired: Salesforce) -> Salesforce:
        """Logs in again unless another thread already replaced `expired`; returns the client to use."""
        with self._lock:
            if self._sf is expired:
                _log.info("the Salesforce session for %s expired; logging in again", self._org)
                self._sf = self._build(login(self._config, self._login_http))
            return self._sf

    def _renewal_advice(self) -> str:
        if self._config.auth == "session":
            return ("in session mode persona-sync cannot log in by itself: set a fresh "
                    "PERSONA_SYNC_SALESFORCE_SESSION_ID, or use client_credentials or jwt "
                    "(PERSONA_SYNC_SALESFORCE_AUTH)")
        return ("check that the integration user is active and the connected app's session policies "
                "(timeout, IP restrictions) allow it")

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Response hook: counts the call and keeps the latest `Sforce-Limit-Info` api-usage."""
        match = _API_USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
        sobject = getattr(self._calling, "sobject", "")
        with self._lock:
            self._api_calls += 1
            self._calls_by_object[sobject] += 1
            if match:
                self._api_usage = (int(match.group(1)), int(match.group(2)))

    def _log_retry(self, state: RetryCallState, sobject: str, call: str) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        _log.warning("Salesforce %s%s%s: attempt %d of %d failed (%s); retrying in %.2f s", self._org,
                     f" {sobject}" if sobject else "", f" {call}" if call else "", state.attempt_number,
                     self._retry.attempts, _reason(error) if error else "no error", wait)

    def _failure(self, error: BaseException | None, sobject: str, call: str, attempts: int) -> SalesforceError:
        """The project's error for a call that failed for good: what happened and what to check."""
        if isinstance(error, SalesforceError):  # ours already (a failed renewal)
            return error
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        reason = _reason(error) if error is not None else "no error recorded"
        if isinstance(error, requests.exceptions.SSLError) and not _is_transient(error):
            message = (f"TLS verification failed for {_url_of(error, self._instance_url)} ({reason}); check "
                       "PERSONA_SYNC_SALESFORCE_CA_BUNDLE")
        elif isinstance(error, _TRANSIENT_TRANSPORT_ERRORS):
            message = (f"cannot reach {_url_of(error, self._instance_url)}{tries} ({reason}): is the org "
                       "reachable from here, and are PERSONA_SYNC_SALESFORCE_LOGIN_URL (or "
                       "PERSONA_SYNC_SALESFORCE_INSTANCE_URL) right? A slow org may need a larger "
                       "PERSONA_SYNC_SALESFORCE_TIMEOUT_SECONDS")
        elif _is_request_limit(error):
            message = (f"the org's API request limit is reached{tries} ({reason}); Salesforce counts a rolling "
                       "24 h window: run later, or ask the org's admin to raise the limit")
        elif isinstance(error, SalesforceGeneralError) and error.status >= 500:
            message = (f"Salesforce failed on its side{tries} ({error.status} {reason}); check "
                       "https://status.salesforce.com and run again later")
        elif isinstance(error, SalesforceMalformedRequest):
            message = (f"Salesforce refused the request as malformed ({reason}); check the query and its field "
                       "names against the org's schema and PERSONA_SYNC_SALESFORCE_API_VERSION")
        elif isinstance(error, SalesforceResourceNotFound):
            message = (f"Salesforce has no such resource ({reason}); check the object name, that the "
                       "integration user can see it, and PERSONA_SYNC_SALESFORCE_API_VERSION")
        elif isinstance(error, SalesforceRefusedRequest):
            message = (f"Salesforce refused the request ({reason}); check the integration user's profile and "
                       "permission sets")
        elif isinstance(error, SalesforceExpiredSession):
            message = f"Salesforce refused the session ({reason}); " + self._renewal_advice()
        elif isinstance(error, SalesforceOperationError):
            message = (f"the Bulk API job failed ({reason}); check that the query suits Bulk API 2.0 (no "
                       "aggregates, GROUP BY, OFFSET or subqueries)")
        else:
            message = f"the call failed{tries} ({reason})"
        transient = error is not None and _is_transient(error) and not _is_request_limit(error)
        return SalesforceError(message, org=self._org, sobject=sobject, call=call, transient=transient)


def _is_transient(error: BaseException) -> bool:
    """Whether another try may succeed: transport failures, HTTP 5xx and REQUEST_LIMIT_EXCEEDED."""
    if isinstance(error, requests.exceptions.SSLError):
        return "CERTIFICATE_VERIFY_FAILED" not in str(error)  # a bad certificate stays bad
    if isinstance(error, _TRANSIENT_TRANSPORT_ERRORS):
        return True
    if isinstance(error, SalesforceGeneralError):
        return error.status >= 500
    return _is_request_limit(error)


def _is_request_limit(error: BaseException | None) -> bool:
    return isinstance(error, SalesforceRefusedRequest) and "REQUEST_LIMIT_EXCEEDED" in _error_codes(error)


def _error_codes(error: SimpleSalesforceError) -> list[str]:
    content = error.content
    if isinstance(content, list):
        return [str(item.get("errorCode", "")) for item in content if isinstance(item, dict)]
    return []


def _reason(error: BaseException) -> str:
    """Salesforce's own words for `error` ("MALFORMED_QUERY: ..."), or the transport's, kept short."""
    if isinstance(error, SimpleSalesforceError):
        content = error.content
        if isinstance(content, list) and content and all(isinstance(item, dict) for item in content):
            return "; ".join(f"{item.get('errorCode', '?')}: {item.get('message', '')}" for item in content)
        if isinstance(content, bytes):
            content = content.decode("utf-8", "replace")
        return f"HTTP {error.status}: {str(content)[:300]}"
    cause: object = error
    if isinstance(error, requests.exceptions.RequestException) and error.args:
        cause = getattr(error.args[0], "reason", error.args[0])  # urllib3's MaxRetryError wraps the cause
    text = _OBJECT_ADDRESS.sub("", str(cause)) or type(error).__name__
    return f"{type(error).__name__}: {text[:300]}"


def _url_of(error: BaseException, fallback: str) -> str:
    """The URL a transport error happened on, without its query string (which may hold a whole SOQL)."""
    request = getattr(error, "request", None)
    url = getattr(request, "url", None) or fallback
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _without_attributes(value: Any) -> Any:
    """A record as plain dicts and lists, without the `attributes` entries (also in related records)."""
    if isinstance(value, dict):
        return {key: _without_attributes(item) for key, item in value.items() if key != "attributes"}
    if isinstance(value, list):
        return [_without_attributes(item) for item in value]
    return value
