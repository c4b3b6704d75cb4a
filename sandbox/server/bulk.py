"""Bulk API 2.0: query jobs and ingest jobs, request by request as simple-salesforce's `bulk2` drives them.

Query job: `POST jobs/query` checks the SOQL (a bad query is refused at once, as Salesforce does) and
answers `UploadComplete`; a background thread evaluates the query into a result table (`ResultSets`)
and marks the job `JobComplete`. The table holds each row already rendered as its CSV line in the
job's format: SQLite's printf quotes and escapes in C while the query runs, far cheaper than csv.writer
per row. `GET jobs/query/{id}/results?maxRecords=&locator=` then streams one page in chunks, never
the whole page in memory; the next chunks are read (and gzip-compressed, when the client accepts it)
on other threads while the current one is sent, so a large download keeps both cores busy.
`Sforce-Locator` (base 64 of the next row number, like Salesforce's) names the next page. A page can be
fetched again with the same locator, which is what a client does after a cut download
(`cut_bulk_downloads` fault).

Polls: `GET jobs/{query|ingest}/{id}` of a job being processed waits up to POLL_HOLD_SECONDS for it
to finish before answering. Salesforce answers at once; a client only sees a slower poll, and one
whose poll intervals grow (simple-salesforce sleeps up to 3 s) does not sleep long past completion.

Ingest job: `POST jobs/ingest` opens a job, `PUT .../batches` stores the CSV, `PATCH {"state":
"UploadComplete"}` queues it; a background thread applies the rows through the same `RecordWriter` as
REST (so validation, audit fields and injected failures match), 10,000 rows at a time, and writes the
per-row outcomes for `successfulResults`, `failedResults` and `unprocessedRecords`.

Where things are kept, so jobs survive a restart and any thread can answer a poll:
- job metadata: the `_bulk_jobs` table of the org database;
- query results: the `bulk_<job id>` table of `results.db`, one CSV line per row;
- ingest data and outcomes: CSV files in `<data dir>/bulk/`: `<id>.csv` as uploaded, then
  `<id>.successful.csv`, `<id>.failed.csv`, `<id>.unprocessed.csv`. Files rather than tables because
  the columns differ per upload, the outcomes are CSV anyway and are written once, in order, and then
  served byte for byte (streamed) without conversion.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import itertools
import json
import logging
import sqlite3
import threading
import time
import weakref
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from starlette.responses import FileResponse, Response, StreamingResponse

from sandbox.ids import is_valid_id, make_id, to_18
from sandbox.records import UNCHANGED, RecordResult
from sandbox.schema import FieldSchema, SObjectSchema
from sandbox.server.context import Call, SandboxState
from sandbox.server.errors import ApiError, json_response, malformed, not_found
from sandbox.soql import CompiledQuery, SoqlError, compile_soql
from sandbox.store import OrgStore, quote
from sandbox.values import ValueProblem, format_datetime, text_to_stored

_log = logging.getLogger(__name__)

JOB_KEY_PREFIX = "750"
CSV_MEDIA_TYPE = "text/csv; charset=UTF-8"  # the charset spares clients a slow encoding detection
DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`"}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
QUERY_OPERATIONS = ("query", "queryAll")
INGEST_OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
# Rows per results page when the client names no maxRecords, and the most one page holds.
DEFAULT_MAX_RECORDS = 50_000
MAX_RECORDS_PER_PAGE = 1_000_000
# Rows per streamed chunk (about 1-2 MB): gzip and TLS work on big blocks, memory stays small.
STREAM_CHUNK_ROWS = 10_000
# Compression of results pages, as the app's GZipMiddleware compresses other responses.
GZIP_LEVEL = 1
# SQLite functions take at most 127 arguments; wider queries are rendered with several printf calls.
_PRINTF_COLUMNS = 100
_QUOTE_FREE_TYPES = frozenset({"id", "reference", "boolean", "int", "double", "currency", "percent", "date",
                               "datetime"})
# How long a poll of a job being processed may wait for it to finish (see the module docstring).
POLL_HOLD_SECONDS = 5.0
# Rows applied per writer call (Salesforce also splits ingest data into batches of 10,000).
INGEST_CHUNK_ROWS = 10_000
MAX_UPLOAD_BYTES = 150 * 1024 * 1024
# A cell with this text sets the field to null; an empty cell leaves it unchanged (update) or unset (insert).
NULL_CELL = "#N/A"
_UNFINISHED = ("Open", "UploadComplete", "InProgress")


class DownloadCut(RuntimeError):
    """Raised inside a results stream to drop the connection mid-download (the `cut_bulk_downloads` fault).

    Not an OSError: Starlette would take that for the client going away and end the response cleanly.
    """


# --- job records ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BulkJob:
    """One Bulk API 2.0 job as stored in `_bulk_jobs`."""

    id: str
    kind: str  # "query" or "ingest"
    operation: str
    object: str
    state: str
    column_delimiter: str
    line_ending: str
    api_version: str
    created_by: str
    created_date: str
    system_modstamp: str
    soql: str | None = None
    query_now: str | None = None  # ISO time anchoring the query's relative dates (TODAY, LAST_N_DAYS)
    columns: str | None = None  # JSON list of the query's column paths: the CSV header
    external_id_field: str | None = None
    records_processed: int = 0
    records_failed: int = 0
    processing_ms: int = 0
    error_message: str | None = None
    results_ready: int = 0  # ingest: the three outcome files are complete and may be served

    @property
    def csv_format(self) -> dict:
        """csv.writer / csv.reader arguments for this job's data (every value quoted, as Salesforce writes)."""
        return {"delimiter": DELIMITERS[self.column_delimiter], "lineterminator": LINE_ENDINGS[self.line_ending],
                "quoting": csv.QUOTE_ALL}

    def info(self, detailed: bool = True) -> dict:
        """The job as Salesforce shows it: the short form in create/close answers, the long one in GETs."""
        content: dict = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": self.created_by,
            "createdDate": _json_time(self.created_date),
            "systemModstamp": _json_time(self.system_modstamp),
            "state": self.state,
        }
        if self.external_id_field:
            content["externalIdFieldName"] = self.external_id_field
        content |= {"concurrencyMode": "Parallel", "contentType": "CSV", "apiVersion": float(self.api_version)}
        if self.kind == "ingest":
            content["contentUrl"] = f"services/data/v{self.api_version}/jobs/ingest/{self.id}/batches"
        if detailed:
            content["jobType"] = "V2Ingest" if self.kind == "ingest" else "V2Query"
        content |= {"lineEnding": self.line_ending, "columnDelimiter": self.column_delimiter}
        if detailed:
            content["numberRecordsProcessed"] = self.records_processed
            if self.kind == "ingest":
                content["numberRecordsFailed"] = self.records_failed
            content |= {"retries": 0, "totalProcessingTime": self.processing_ms}
            if self.kind == "ingest":
                content |= {"apiActiveProcessingTime": self.processing_ms, "apexProcessingTime": 0}
            if self.error_message:
                content["errorMessage"] = self.error_message
        return content


_JOB_COLUMNS = tuple(f.name for f in fields(BulkJob))
_JOBS_TABLE_SQL = """CREATE TABLE IF NOT EXISTS _bulk_jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, operation TEXT NOT NULL, object TEXT NOT NULL,
    state TEXT NOT NULL, column_delimiter TEXT NOT NULL, line_ending TEXT NOT NULL, api_version TEXT NOT NULL,
    created_by TEXT NOT NULL, created_date TEXT NOT NULL, system_modstamp TEXT NOT NULL,
    soql TEXT, query_now TEXT, columns TEXT, external_id_field TEXT,
    records_processed INTEGER NOT NULL DEFAULT 0, records_failed INTEGER NOT NULL DEFAULT 0,
    processing_ms INTEGER NOT NULL DEFAULT 0, error_message TEXT, results_ready INTEGER NOT NULL DEFAULT 0)"""


class BulkJobs:
    """The jobs of one org, in its database. State changes are compare-and-set, so a poll, an abort and
    the job's own thread never overwrite each other."""

    def __init__(self, store: OrgStore) -> None:
        self.store = store

    def create(self, **values: object) -> BulkJob:
        now = _stamp()
        with self.store.transaction() as db:
            job_id = make_id(JOB_KEY_PREFIX, self.store.allocate_counters(JOB_KEY_PREFIX, 1, db))
            row = {"id": job_id, "created_date": now, "system_modstamp": now, **values}
            db.execute(f"INSERT INTO _bulk_jobs ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                       list(row.values()))
        return self.find(job_id)  # type: ignore[return-value]

    def find(self, job_id: str) -> BulkJob | None:
        row = self.store.connection().execute(
            f"SELECT {', '.join(_JOB_COLUMNS)} FROM _bulk_jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else BulkJob(*row)

    def all(self, kind: str) -> list[BulkJob]:
        rows = self.store.connection().execute(
            f"SELECT {', '.join(_JOB_COLUMNS)} FROM _bulk_jobs WHERE kind = ? ORDER BY id", (kind,))
        return [BulkJob(*row) for row in rows]

    def unfinished(self) -> list[BulkJob]:
        rows = self.store.connection().execute(
            f"SELECT {', '.join(_JOB_COLUMNS)} FROM _bulk_jobs WHERE state IN ('UploadComplete', 'InProgress')")
        return [BulkJob(*row) for row in rows]

    def transition(self, job_id: str, allowed: Iterable[str], new_state: str, **values: object) -> str | None:
        """Moves a job to `new_state` if it is in one of the `allowed` states; returns the state it was in,
        or None when it was in another state (or is gone) and nothing changed."""
        with self.store.transaction() as db:
            row = db.execute("SELECT state FROM _bulk_jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row[0] not in tuple(allowed):
                return None
            self._set(db, job_id, {"state": new_state, "system_modstamp": _stamp(), **values})
            return row[0]

    def finish(self, job_id: str, new_state: str, **values: object) -> bool:
        """Ends a job its thread was processing; False when it was aborted or deleted meanwhile."""
        return self.transition(job_id, ("InProgress",), new_state, **values) is not None

    def state(self, job_id: str) -> str | None:
        row = self.store.connection().execute("SELECT state FROM _bulk_jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else row[0]

    def update(self, job_id: str, **values: object) -> None:
        with self.store.transaction() as db:
            self._set(db, job_id, values)

    def count_rows(self, job_id: str, processed: int, failed: int) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE _bulk_jobs SET records_processed = records_processed + ?, "
                       "records_failed = records_failed + ? WHERE id = ?", (processed, failed, job_id))

    def delete(self, job_id: str) -> None:
        with self.store.transaction() as db:
            db.execute("DELETE FROM _bulk_jobs WHERE id = ?", (job_id,))

    @staticmethod
    def _set(db: sqlite3.Connection, job_id: str, values: dict[str, object]) -> None:
        assignments = ", ".join(f"{name} = ?" for name in values)
        db.execute(f"UPDATE _bulk_jobs SET {assignments} WHERE id = ?", [*values.values(), job_id])


_prepared_stores: weakref.WeakSet[OrgStore] = weakref.WeakSet()
_prepare_lock = threading.Lock()


def _jobs(state: SandboxState) -> BulkJobs:
    """The org's jobs; on first use in this process, creates the table and resumes interrupted jobs."""
    jobs = BulkJobs(state.store)
    with _prepare_lock:
        if state.store not in _prepared_stores:
            state.store.connection().execute(_JOBS_TABLE_SQL)
            _resume_interrupted(state, jobs)
            _prepared_stores.add(state.store)
    return jobs


def _resume_interrupted(state: SandboxState, jobs: BulkJobs) -> None:
    """Jobs a previous server left unfinished: queries run again, queued ingest jobs start, and an ingest
    job stopped half-way fails with its remaining rows reported unprocessed (its writes are not undone)."""
    for job in jobs.unfinished():
        if job.kind == "query":
            try:
                compiled = _compile_query(state, job.soql or "", job.operation,
                                          datetime.fromisoformat(job.query_now or ""))
            except ApiError as error:  # the org's schema changed under the job
                jobs.update(job.id, state="Failed", error_message=error.message)
                continue
            jobs.update(job.id, state="UploadComplete")
            _in_background(state, job.id, lambda job=job, compiled=compiled: _run_query(state, job, compiled))
        elif job.state == "UploadComplete":
            _in_background(state, job.id, lambda job=job: _run_ingest(state, job.id))
        else:
            jobs.finish(job.id, "Failed", error_message="The sandbox stopped while this job was being processed: "
                        f"{job.records_processed} rows were processed, the others are in unprocessedRecords")
            _write_unprocessed(_IngestFiles.of(state, job.id), job, skip_rows=job.records_processed)
            jobs.update(job.id, results_ready=1)


# Set when a job's thread ends; a poll waits on it. Entries vanish with the thread that holds them.
_processing: weakref.WeakValueDictionary[str, threading.Event] = weakref.WeakValueDictionary()


def _in_background(state: SandboxState, job_id: str, work: Callable[[], None]) -> None:
    """Runs a job's processing in a daemon thread; an unexpected error fails the job and is logged."""
    done = threading.Event()
    _processing[job_id] = done

    def run() -> None:
        try:
            work()
        except Exception as error:  # the job must end Failed, not stay InProgress forever
            _log.exception("Bulk API job %s failed", job_id)
            jobs = BulkJobs(state.store)
            jobs.finish(job_id, "Failed", error_message=f"The sandbox could not process the job: {error!r}")
            jobs.update(job_id, results_ready=1)
        finally:
            done.set()
            state.store.close()

    threading.Thread(target=run, name=f"bulk-job-{job_id}", daemon=True).start()


def _polled(call: Call, kind: str) -> BulkJob:
    """The job of a status poll, after waiting (up to POLL_HOLD_SECONDS) for its processing to end.

    A sandbox told to keep jobs in progress for a while (`bulk_poll_seconds`) answers at once instead,
    so its clients do see the job InProgress.
    """
    job = _job(call, kind)
    done = _processing.get(job.id)
    if done is not None and job.state in ("UploadComplete", "InProgress") and call.state.bulk_poll_seconds <= 0:
        done.wait(POLL_HOLD_SECONDS)
        job = _job(call, kind)
    return job


def _job(call: Call, kind: str) -> BulkJob:
    """The job named in the path, of this kind (a query job id on an ingest path is not found)."""
    job_id = call.request.path_params["job_id"]
    if not is_valid_id(job_id, JOB_KEY_PREFIX):
        raise not_found()
    job = _jobs(call.state).find(to_18(job_id))
    if job is None or job.kind != kind:
        raise not_found()
    return job


# --- query jobs ----------------------------------------------------------------------------------------

def create_query_job(call: Call) -> Response:
    """`POST jobs/query`: checks the SOQL now (an invalid query is a 400, as in Salesforce) and queues it."""
    body = _json_body(call)
    operation = body.get("operation")
    if operation not in QUERY_OPERATIONS:
        raise ApiError(400, "INVALIDJOB", f"InvalidJob : operation must be one of {', '.join(QUERY_OPERATIONS)}, "
                                          f"not {operation!r}")
    soql = body.get("query")
    if not isinstance(soql, str) or not soql.strip():
        raise ApiError(400, "INVALIDJOB", "InvalidJob : a query job needs a SOQL query in 'query'")
    delimiter, line_ending = _csv_options(body)
    now = datetime.now(timezone.utc)
    compiled = _compile_query(call.state, soql, operation, now)
    job: BulkJob = _jobs(call.state).create(
        kind="query", operation=operation, object=compiled.sobject.name, state="UploadComplete",
        column_delimiter=delimiter, line_ending=line_ending, api_version=call.version,
        created_by=call.session.user_id, soql=soql, query_now=now.isoformat(),
        columns=json.dumps([column.path for column in compiled.columns]))
    _in_background(call.state, job.id, lambda: _run_query(call.state, job, compiled))
    return json_response(job.info(detailed=False))


def _compile_query(state: SandboxState, soql: str, operation: str, now: datetime) -> CompiledQuery:
    try:
        return compile_soql(soql, state.store.schema, now=now, include_deleted=operation == "queryAll",
                            for_bulk=True, hidden_rows=state.faults.hidden_rows())
    except SoqlError as error:
        raise ApiError(400, error.error_code, error.message) from None


def _run_query(state: SandboxState, job: BulkJob, compiled: CompiledQuery) -> None:
    """The job's thread: evaluates the query into its result table of CSV lines, then JobComplete (or Failed)."""
    jobs, job_id = BulkJobs(state.store), job.id
    if jobs.transition(job_id, ("UploadComplete",), "InProgress") is None:
        return  # aborted or deleted before it started
    started = time.monotonic()
    table = _results_table(job_id)
    try:
        rows = state.results.materialise(table, csv_lines_sql(compiled, job), compiled.params,
                                         json.dumps({"bulk_job": job_id}))
    except sqlite3.Error as error:
        _log.exception("Bulk API query job %s failed", job_id)
        jobs.finish(job_id, "Failed", processing_ms=_elapsed_ms(started),
                    error_message=f"The query could not be evaluated: {error}")
        return
    _linger(state)
    if not jobs.finish(job_id, "JobComplete", records_processed=rows, processing_ms=_elapsed_ms(started)):
        state.results.drop(table)  # aborted or deleted while it ran


def get_query_job(call: Call) -> Response:
    """`GET jobs/query/{id}`: the job's state and counters; clients poll this until JobComplete."""
    return json_response(_polled(call, "query").info())


def list_query_jobs(call: Call) -> Response:
    """`GET jobs/query`: every query job, in one page."""
    return _job_list(call, "query")


def change_query_job(call: Call) -> Response:
    """`PATCH jobs/query/{id}` with `{"state": "Aborted"}`: stops a job that has not completed."""
    job = _job(call, "query")
    wanted = _json_body(call).get("state")
    if wanted != "Aborted":
        raise ApiError(400, "INVALIDJOBSTATE", f"InvalidJobState : a query job can only be set to Aborted, "
                                               f"not {wanted!r}")
    jobs = _jobs(call.state)
    if jobs.transition(job.id, ("UploadComplete", "InProgress"), "Aborted") is None:
        raise ApiError(400, "INVALIDJOBSTATE", f"InvalidJobState : job {job.id} is {jobs.state(job.id)} and can no "
                                               "longer be aborted")
    call.state.results.drop(_results_table(job.id))
    return json_response(jobs.find(job.id).info(detailed=False))  # type: ignore[union-attr]


def delete_query_job(call: Call) -> Response:
    """`DELETE jobs/query/{id}`: removes the job and its results (204)."""
    job = _job(call, "query")
    _check_deletable(job)
    _jobs(call.state).delete(job.id)
    call.state.results.drop(_results_table(job.id))
    return Response(status_code=204)


def query_results(call: Call) -> Response:
    """`GET jobs/query/{id}/results?maxRecords=N&locator=L`: one page of CSV, streamed.

    `Sforce-NumberOfRecords` counts the page's rows; `Sforce-Locator` names the next page, or is `null`
    on the last one. The same locator always gives the same page.
    """
    job = _job(call, "query")
    if job.state != "JobComplete":
        raise ApiError(400, "INVALIDJOBSTATE", f"InvalidJobState : job {job.id} is {job.state}; its results can be "
                                               "fetched once it is JobComplete")
    table = _results_table(job.id)
    found = call.state.results.info(table)
    if found is None:
        raise not_found(f"The results of job {job.id} are no longer available")
    total = found[0]
    params = call.request.query_params
    page_size = _max_records(params.get("maxRecords"))
    first = _offset_from_locator(params.get("locator") or "", total)
    count = min(page_size, total - first)
    following = first + count
    headers = {"Sforce-NumberOfRecords": str(count),
               "Sforce-Locator": _locator(following) if following < total else "null"}
    gzip = "gzip" in call.request.headers.get("accept-encoding", "")
    if gzip:  # compressed here, chunk by chunk on the render threads; GZipMiddleware passes it through
        headers |= {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
    cut_after = count // 2 if call.state.faults.take_download_cut() else None
    header = io.StringIO()
    csv.writer(header, **job.csv_format).writerow(json.loads(job.columns or "[]"))
    stream = _csv_page(call.state, _page_sql(table), header.getvalue(), first, count, cut_after, gzip)
    return StreamingResponse(stream, headers=headers, media_type=CSV_MEDIA_TYPE)


def csv_lines_sql(compiled: CompiledQuery, job: BulkJob) -> str:
    """The query with each row rendered as one CSV line in the job's format, as Salesforce writes it:
    every value quoted, quotes doubled (printf's %w), null as "". The SOQL compiler gives every bulk
    value as text; types whose text holds no quote skip the escaping scan (%s)."""
    delimiter = DELIMITERS[job.column_delimiter]  # none of them is a quote or %: safe in the literal
    names = [f"c{position}" for position in range(len(compiled.columns))]
    pieces = []
    for start in range(0, len(names), _PRINTF_COLUMNS):
        group = range(start, min(start + _PRINTF_COLUMNS, len(names)))
        template = delimiter.join('"%s"' if compiled.columns[position].field.type in _QUOTE_FREE_TYPES
                                  else '"%w"' for position in group)
        arguments = ", ".join(f"ifnull({names[position]}, '')" for position in group)
        pieces.append(f"printf('{template}', {arguments})")
    ending = "char(13, 10)" if job.line_ending == "CRLF" else "char(10)"
    line = f" || '{delimiter}' || ".join(pieces) + f" || {ending}"
    return f"WITH q({', '.join(names)}) AS ({compiled.sql}) SELECT {line} AS line FROM q"


def _page_sql(table: str) -> str:
    """SQL giving the CSV lines of rows `? < rowid <= ?` of a result table as one string, in row order.

    One aggregate step builds the whole chunk inside SQLite: no Python object per row. Rows are read
    by row number as `ResultSets.page` reads them; bulk result tables need no `last_used` stamp (they
    live until their job is deleted).
    """
    rows = f"SELECT rowid AS n, line FROM {quote(table)} WHERE rowid > ? AND rowid <= ? ORDER BY rowid"
    # SQLite before 3.44 cannot order inside an aggregate; it concatenates rows as they arrive, which
    # is rowid order here (tests check the order of multi-chunk pages).
    in_order = " ORDER BY n" if sqlite3.sqlite_version_info >= (3, 44) else ""
    return f"SELECT group_concat(line, ''{in_order}) FROM ({rows})"


# Reads (and compresses) the next chunks of each download while the current one is sent.
_renderers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bulk-csv")
_CHUNKS_AHEAD = 3


def _csv_page(state: SandboxState, page_sql: str, header: str, first: int, count: int, cut_after: int | None,
              gzip: bool) -> Iterator[bytes]:
    """The page's CSV in chunks of STREAM_CHUNK_ROWS rows, the next ones prepared ahead on other threads.

    SQLite and zlib release the GIL, so reading and compressing overlap with sending. With `gzip` each
    chunk is a gzip member of its own (a gzip stream may hold several, RFC 1952), which is what lets
    chunks be compressed in parallel. A chunk is read whole on the thread that prepares it: a SQLite
    cursor must not move between threads.
    """

    def render(start: int, size: int, prefix: str) -> bytes:
        lines = state.results.connection().execute(page_sql, (start, start + size)).fetchone()[0] if size else ""
        data = (prefix + (lines or "")).encode()
        return zlib.compress(data, GZIP_LEVEL, wbits=31) if gzip else data

    end = count if cut_after is None else cut_after
    chunks = iter([(first + done, min(STREAM_CHUNK_ROWS, end - done), "" if done else header)
                   for done in range(0, end, STREAM_CHUNK_ROWS)] or [(first, 0, header)])
    ahead: deque[Future[bytes]] = deque(_renderers.submit(render, *chunk)
                                        for chunk in itertools.islice(chunks, _CHUNKS_AHEAD))
    try:
        while ahead:
            data = ahead.popleft().result()
            ahead.extend(_renderers.submit(render, *chunk) for chunk in itertools.islice(chunks, 1))
            yield data
    finally:
        for future in ahead:
            future.cancel()  # the client went away
    if cut_after is not None:
        raise DownloadCut(f"sandbox fault cut_bulk_downloads: connection dropped after {cut_after} of {count} rows")


def _results_table(job_id: str) -> str:
    return f"bulk_{job_id}"


def _max_records(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_MAX_RECORDS
    if not text.isdigit() or int(text) < 1:
        raise ApiError(400, "INVALID_REQUEST", f"maxRecords must be a positive whole number, not {text!r}")
    return min(int(text), MAX_RECORDS_PER_PAGE)


def _locator(offset: int) -> str:
    """An opaque locator: base 64 of the row number where the page starts, as Salesforce's look."""
    return base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def _offset_from_locator(locator: str, total: int) -> int:
    if not locator:
        return 0
    try:
        text = base64.urlsafe_b64decode(locator + "=" * (-len(locator) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        text = ""
    if not text.isdigit() or _locator(int(text)) != locator or int(text) > total:
        raise ApiError(400, "INVALID_QUERY_LOCATOR", f"Invalid locator {locator!r}: use the Sforce-Locator "
                                                     "header of the previous results page")
    return int(text)


# --- ingest jobs ---------------------------------------------------------------------------------------

def create_ingest_job(call: Call) -> Response:
    """`POST jobs/ingest`: an Open job for one object and operation, waiting for its CSV."""
    body = _json_body(call)
    operation = body.get("operation")
    if operation not in INGEST_OPERATIONS:
        raise ApiError(400, "INVALIDJOB", f"InvalidJob : operation must be one of {', '.join(INGEST_OPERATIONS)}, "
                                          f"not {operation!r}")
    name = body.get("object")
    sobject = call.state.store.sobject(name) if isinstance(name, str) else None
    if sobject is None:
        raise ApiError(400, "INVALIDENTITY", f"InvalidEntity : sObject type '{name}' is not supported.")
    external_id = body.get("externalIdFieldName")
    if operation == "upsert":
        if not external_id:
            raise ApiError(400, "INVALIDJOB", f"InvalidJob : External ID was blank for {sobject.name}. An External ID "
                                              "must be specified for upsert.")
        if str(external_id).lower() != "id":
            raise ApiError(400, "INVALIDJOB", f"InvalidJob : the sandbox upserts by Id only, not by {external_id}")
        external_id = "Id"
    content_type = body.get("contentType", "CSV")
    if content_type != "CSV":
        raise ApiError(400, "INVALIDJOB", f"InvalidJob : contentType must be CSV, not {content_type!r}")
    delimiter, line_ending = _csv_options(body)
    job = _jobs(call.state).create(
        kind="ingest", operation=operation, object=sobject.name, state="Open", column_delimiter=delimiter,
        line_ending=line_ending, api_version=call.version, created_by=call.session.user_id,
        external_id_field=external_id if operation == "upsert" else None)
    return json_response(job.info(detailed=False))


def upload_job_data(call: Call) -> Response:
    """`PUT jobs/ingest/{id}/batches`: stores CSV for an Open job (201, empty). A further upload appends
    its rows; it must repeat the same header row."""
    job = _job(call, "ingest")
    if job.state != "Open":
        raise ApiError(400, "INVALIDJOBSTATE", f"InvalidJobState : job {job.id} is {job.state}; data can be "
                                               "uploaded only while it is Open")
    files = _IngestFiles.of(call.state, job.id)
    data: bytes = call.request.state.body
    stored = files.upload.stat().st_size if files.upload.exists() else 0
    if stored + len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(400, "EXCEEDEDQUOTA", f"ExceededQuota : a job takes at most {MAX_UPLOAD_BYTES // 2**20} MB "
                                             "of CSV; split the data into several jobs")
    if stored:
        data = _continuation(files.upload, data, LINE_ENDINGS[job.line_ending].encode())
    files.upload.parent.mkdir(parents=True, exist_ok=True)
    with open(files.upload, "ab") as target:
        target.write(data)
    return Response(status_code=201)


def _continuation(upload: Path, data: bytes, line_ending: bytes) -> bytes:
    """A further upload's bytes to append: its header row checked against the first one and dropped."""
    with open(upload, "rb") as stored:
        stored_header = stored.readline()
        stored.seek(-1, 2)
        ends_with_newline = stored.read(1) == b"\n"
    end = data.find(b"\n")
    header, rows = (data, b"") if end < 0 else (data[:end + 1], data[end + 1:])
    if _header_key(header) != _header_key(stored_header):
        raise ApiError(400, "INVALIDBATCH", "InvalidBatch : every upload to a job must start with the same header "
                                            "row as the first one")
    return rows if ends_with_newline else line_ending + rows


def _header_key(line: bytes) -> bytes:
    return line.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r\n")


def get_ingest_job(call: Call) -> Response:
    """`GET jobs/ingest/{id}`: state and counters (numberRecordsProcessed, numberRecordsFailed)."""
    return json_response(_polled(call, "ingest").info())


def list_ingest_jobs(call: Call) -> Response:
    """`GET jobs/ingest`: every ingest job, in one page."""
    return _job_list(call, "ingest")


def change_ingest_job(call: Call) -> Response:
    """`PATCH jobs/ingest/{id}`: `UploadComplete` queues an Open job; `Aborted` stops an unfinished one."""
    job = _job(call, "ingest")
    wanted = _json_body(call).get("state")
    jobs = _jobs(call.state)
    if wanted == "UploadComplete":
        if jobs.transition(job.id, ("Open",), "UploadComplete") is None:
            raise _cannot_change(job, wanted)
        _in_background(call.state, job.id, lambda: _run_ingest(call.state, job.id))
    elif wanted == "Aborted":
        before = jobs.transition(job.id, _UNFINISHED, "Aborted")
        if before is None:
            raise _cannot_change(job, wanted)
        if before != "InProgress":  # else the job's thread reports the rows it did not reach
            _write_unprocessed(_IngestFiles.of(call.state, job.id), job, skip_rows=0)
            jobs.update(job.id, results_ready=1)
    else:
        raise ApiError(400, "INVALIDJOBSTATE", f"InvalidJobState : an ingest job can be set to UploadComplete or "
                                               f"Aborted, not {wanted!r}")
    return json_response(jobs.find(job.id).info(detailed=False))  # type: ignore[union-attr]


def delete_ingest_job(call: Call) -> Response:
    """`DELETE jobs/ingest/{id}`: removes the job, its data and its results (204)."""
    job = _job(call, "ingest")
    _check_deletable(job)
    _jobs(call.state).delete(job.id)
    _IngestFiles.of(call.state, job.id).remove()
    return Response(status_code=204)


def _ingest_results(kind: str) -> Callable[[Call], Response]:
    def handler(call: Call) -> Response:
        job = _job(call, "ingest")
        if not job.results_ready:
            raise ApiError(400, "INVALIDJOBSTATE", f"InvalidJobState : job {job.id} is {job.state}; record results "
                                                   "are available once it is JobComplete, Failed or Aborted")
        path = getattr(_IngestFiles.of(call.state, job.id), kind)
        if not path.exists():
            raise not_found(f"The results of job {job.id} are no longer available")
        return FileResponse(path, media_type=CSV_MEDIA_TYPE)

    handler.__name__ = f"ingest_{kind}_results"
    handler.__doc__ = f"`GET jobs/ingest/{{id}}/...`: the job's {kind} records as CSV."
    return handler


@dataclass(frozen=True)
class _IngestFiles:
    """Where an ingest job's data and outcomes live (see the module docstring)."""

    upload: Path
    successful: Path
    failed: Path
    unprocessed: Path

    @classmethod
    def of(cls, state: SandboxState, job_id: str) -> "_IngestFiles":
        directory = state.store.path.parent / "bulk"
        return cls(*(directory / f"{job_id}{suffix}" for suffix in
                     (".csv", ".successful.csv", ".failed.csv", ".unprocessed.csv")))

    def remove(self) -> None:
        for path in (self.upload, self.successful, self.failed, self.unprocessed):
            path.unlink(missing_ok=True)


class _Outcomes:
    """The three outcome files of a job being processed, with their header rows."""

    def __init__(self, files: _IngestFiles, job: BulkJob, header: Sequence[str]) -> None:
        files.successful.parent.mkdir(parents=True, exist_ok=True)
        self._handles = [open(path, "w", newline="", encoding="utf-8")
                         for path in (files.successful, files.failed, files.unprocessed)]
        self.successful, self.failed, self.unprocessed = (csv.writer(handle, **job.csv_format)
                                                          for handle in self._handles)
        self.successful.writerow(["sf__Id", "sf__Created", *header])
        self.failed.writerow(["sf__Id", "sf__Error", *header])
        self.unprocessed.writerow(header)

    def record(self, rows: Sequence[list[str]], results: Sequence[RecordResult]) -> int:
        """Writes each row's outcome; returns how many failed."""
        failures = 0
        for row, result in zip(rows, results):
            if result.success:
                self.successful.writerow([result.id, "true" if result.created else "false", *row])
            else:
                failures += 1
                self.failed.writerow([result.id or "", _error_text(result), *row])
        for handle in self._handles:
            handle.flush()
        return failures

    def close(self) -> None:
        for handle in self._handles:
            handle.close()


def _error_text(result: RecordResult) -> str:
    """Salesforce's sf__Error: `STATUS_CODE:message:Field1,Field2 --`, or `STATUS_CODE:message:--`."""
    error = result.errors[0]
    names = ",".join(error["fields"])
    return f"{error['statusCode']}:{error['message']}:{names + ' ' if names else ''}--"


def _run_ingest(state: SandboxState, job_id: str) -> None:
    """The job's thread: applies the uploaded rows chunk by chunk and records every row's outcome."""
    jobs = BulkJobs(state.store)
    if jobs.transition(job_id, ("UploadComplete",), "InProgress") is None:
        return  # aborted or deleted before it started
    job: BulkJob = jobs.find(job_id)  # type: ignore[assignment]
    started = time.monotonic()
    files = _IngestFiles.of(state, job_id)
    try:
        problem = _apply_upload(state, jobs, job, files)
    except (csv.Error, UnicodeDecodeError) as error:
        problem = f"InvalidBatch : the data is not valid {job.column_delimiter}-separated UTF-8 CSV: {error}"
    _linger(state)
    if problem is None:
        jobs.finish(job_id, "JobComplete", processing_ms=_elapsed_ms(started))
    else:
        jobs.finish(job_id, "Failed", processing_ms=_elapsed_ms(started), error_message=problem)
    jobs.update(job_id, results_ready=1)


def _apply_upload(state: SandboxState, jobs: BulkJobs, job: BulkJob, files: _IngestFiles) -> str | None:
    """Applies the job's rows; returns why the whole upload was refused, or None when it was processed."""
    if not files.upload.exists():
        _Outcomes(files, job, []).close()
        return "InvalidBatch : no data was uploaded for this job"
    with open(files.upload, newline="", encoding="utf-8-sig") as source:
        rows = csv.reader(source, delimiter=DELIMITERS[job.column_delimiter])
        header = next(rows, [])
        outcomes = _Outcomes(files, job, header)
        try:
            sobject = state.store.sobject(job.object)
            if sobject is None:
                outcomes.unprocessed.writerows(rows)
                return f"InvalidEntity : sObject type '{job.object}' is not supported."
            columns, problem = _columns(sobject, job.operation, header)
            if problem:
                outcomes.unprocessed.writerows(rows)
                return problem
            data_rows = (row for row in rows if row)  # blank lines carry no record
            while chunk := list(itertools.islice(data_rows, INGEST_CHUNK_ROWS)):
                if jobs.state(job.id) != "InProgress":  # aborted: the rest is unprocessed
                    outcomes.unprocessed.writerows(chunk)
                    outcomes.unprocessed.writerows(data_rows)
                    break
                results = _apply_rows(state, job, sobject, columns, chunk)
                failures = outcomes.record(chunk, results)
                jobs.count_rows(job.id, len(chunk), failures)
        finally:
            outcomes.close()
    return None


def _columns(sobject: SObjectSchema, operation: str, header: list[str]) -> tuple[list[FieldSchema], str | None]:
    """The fields the header names, or why the upload cannot be processed (Salesforce's InvalidBatch)."""
    if not header:
        return [], "InvalidBatch : no data was uploaded for this job"
    columns = []
    for name in header:
        field = sobject.field(name.strip())
        if field is None:
            return [], f"InvalidBatch : Field name not found : {name}"
        if field in columns:
            return [], f"InvalidBatch : Duplicate field name : {name}"
        columns.append(field)
    if operation in ("delete", "hardDelete") and [field.name for field in columns] != ["Id"]:
        return [], f"InvalidBatch : a {operation} job takes one column, Id; found: {', '.join(header)}"
    return columns, None


def _apply_rows(state: SandboxState, job: BulkJob, sobject: SObjectSchema, columns: list[FieldSchema],
                rows: list[list[str]]) -> list[RecordResult]:
    """One chunk through the record writer, as the job's creator, in the row order of the upload."""
    results: list[RecordResult | None] = [None] * len(rows)
    actions: dict[str, list[tuple[int, object]]] = {"create": [], "update": [], "delete": []}
    for position, row in enumerate(rows):
        if len(row) != len(columns):
            results[position] = RecordResult.failure(
                None, "INVALID_FIELD", f"the row has {len(row)} values for {len(columns)} columns")
        elif job.operation in ("delete", "hardDelete"):
            actions["delete"].append((position, row[0].strip()))
        else:
            values = dict(zip((field.name for field in columns), row))
            creating = job.operation == "insert" or (job.operation == "upsert" and not values.get("Id"))
            actions["create" if creating else "update"].append((position, _record(values, creating)))
    writer, audit = state.writer, {"acting_user": job.created_by, "now": _stamp()}
    for action, entries in actions.items():
        if not entries:
            continue
        items = [(sobject, payload) for _, payload in entries]
        if action == "create":
            outcomes = writer.create(items, _csv_value, **audit)
        elif action == "update":
            outcomes = writer.update(items, _csv_value, **audit)
        else:
            outcomes = writer.delete(items, **audit)
            if job.operation == "hardDelete":
                _purge(state.store, sobject, [outcome.id for outcome in outcomes if outcome.success])
        for (position, _), outcome in zip(entries, outcomes):
            results[position] = outcome
    return results  # type: ignore[return-value]


def _record(values: dict[str, str], creating: bool) -> dict[str, object]:
    """A CSV row as a record: an empty cell is unset on insert and left unchanged on update."""
    if creating:
        return {name: text for name, text in values.items() if text != ""}
    return {name: UNCHANGED if text == "" else text for name, text in values.items()}


def _csv_value(field: FieldSchema, text: object) -> object:
    """A CSV cell in stored form; `#N/A` sets null (refused for a required field, false for a checkbox)."""
    if text == NULL_CELL:
        if field.type == "boolean":
            return 0
        if not field.nillable:
            raise ValueProblem("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{field.name}]", field.name)
        return None
    return text_to_stored(field, str(text))


def _purge(store: OrgStore, sobject: SObjectSchema, record_ids: list[str]) -> None:
    """hardDelete: records the writer moved to the recycle bin are removed for good."""
    if record_ids:
        with store.transaction() as db:
            db.executemany(f"DELETE FROM {quote(sobject.name)} WHERE Id = ?",
                           [(record_id,) for record_id in record_ids])


def _write_unprocessed(files: _IngestFiles, job: BulkJob, skip_rows: int) -> None:
    """Outcome files for a job stopped before (or while) processing: the uploaded rows after the first
    `skip_rows` are unprocessed; successful and failed results keep what was written, if anything."""
    source = open(files.upload, newline="", encoding="utf-8-sig") if files.upload.exists() else io.StringIO()
    with source:
        reader = csv.reader(source, delimiter=DELIMITERS[job.column_delimiter])
        header = next(reader, [])
        files.unprocessed.parent.mkdir(parents=True, exist_ok=True)
        for path, first_columns in ((files.successful, ["sf__Id", "sf__Created"]),
                                    (files.failed, ["sf__Id", "sf__Error"])):
            if not path.exists():
                with open(path, "w", newline="", encoding="utf-8") as target:
                    csv.writer(target, **job.csv_format).writerow([*first_columns, *header])
        with open(files.unprocessed, "w", newline="", encoding="utf-8") as target:
            writer = csv.writer(target, **job.csv_format)
            writer.writerow(header)
            writer.writerows(itertools.islice((row for row in reader if row), skip_rows, None))


# --- shared steps --------------------------------------------------------------------------------------

def _job_list(call: Call, kind: str) -> Response:
    records = [job.info(detailed=False) | {"jobType": "V2Ingest" if kind == "ingest" else "V2Query"}
               for job in _jobs(call.state).all(kind)]
    return json_response({"done": True, "records": records, "nextRecordsUrl": None})


def _check_deletable(job: BulkJob) -> None:
    if job.state in ("Open", "InProgress"):
        raise ApiError(400, "INVALIDJOBSTATE", f"InvalidJobState : job {job.id} is {job.state}; a job can be deleted "
                                               "once it is UploadComplete, JobComplete, Aborted or Failed")


def _cannot_change(job: BulkJob, wanted: str) -> ApiError:
    return ApiError(400, "INVALIDJOBSTATE", f"InvalidJobState : job {job.id} cannot be set to {wanted} from its "
                                            "current state")


def _json_body(call: Call) -> dict:
    try:
        content = json.loads(call.request.state.body or b"{}")
    except json.JSONDecodeError as error:
        raise malformed(f"Unexpected character at [line:{error.lineno}, column:{error.colno}]: {error.msg}") from None
    if not isinstance(content, dict):
        raise malformed("The request body must be a JSON object")
    return content


def _csv_options(body: dict) -> tuple[str, str]:
    delimiter = body.get("columnDelimiter", "COMMA")
    line_ending = body.get("lineEnding", "LF")
    if delimiter not in DELIMITERS:
        raise ApiError(400, "INVALIDJOB", f"InvalidJob : columnDelimiter must be one of {', '.join(DELIMITERS)}, "
                                          f"not {delimiter!r}")
    if line_ending not in LINE_ENDINGS:
        raise ApiError(400, "INVALIDJOB", f"InvalidJob : lineEnding must be LF or CRLF, not {line_ending!r}")
    return delimiter, line_ending


def _linger(state: SandboxState) -> None:
    """Keeps a processed job InProgress for `bulk_poll_seconds` (0 by default), so tests can watch it."""
    if state.bulk_poll_seconds > 0:
        time.sleep(state.bulk_poll_seconds)


def _stamp() -> str:
    return format_datetime(datetime.now(timezone.utc))


def _json_time(stored: str) -> str:
    return stored[:-1] + "+0000"


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


Handlers = dict[str, Callable[[Call], Response]]

ROUTES: list[tuple[str, Handlers]] = [
    ("jobs/query", {"POST": create_query_job, "GET": list_query_jobs}),
    ("jobs/query/{job_id}", {"GET": get_query_job, "PATCH": change_query_job, "DELETE": delete_query_job}),
    ("jobs/query/{job_id}/results", {"GET": query_results}),
    ("jobs/ingest", {"POST": create_ingest_job, "GET": list_ingest_jobs}),
    ("jobs/ingest/{job_id}", {"GET": get_ingest_job, "PATCH": change_ingest_job, "DELETE": delete_ingest_job}),
    ("jobs/ingest/{job_id}/batches", {"PUT": upload_job_data}),
    ("jobs/ingest/{job_id}/successfulResults", {"GET": _ingest_results("successful")}),
    ("jobs/ingest/{job_id}/failedResults", {"GET": _ingest_results("failed")}),
    # simple-salesforce asks for unprocessedRecords, the documentation spells unprocessedrecords.
    ("jobs/ingest/{job_id}/unprocessedRecords", {"GET": _ingest_results("unprocessed")}),
    ("jobs/ingest/{job_id}/unprocessedrecords", {"GET": _ingest_results("unprocessed")}),
]
