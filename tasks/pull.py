"""Pull: bring the org's users and what they did into local staging, incrementally, losing nothing.

For each declared stream (connectors/salesforce/streams.py):

1. Window: from the stream's watermark minus an overlap (rows committed late are not missed), or on
   a first run (or --full-refresh) from the start of the history window, which is recorded.
2. Mode: REST or Bulk API 2.0, chosen from the expected row count (a COUNT() query) unless forced.
3. Pages are typed (tasks/records.py), screened (broken records go to the quarantine with a reason)
   and written to staging as they arrive: never the whole object in memory.
4. Deleted rows (queryAll, IsDeleted = true) since the watermark become tombstones in staging.
5. Only then the watermark moves, to the largest cursor value staged. A crash anywhere before that
   means the next run pulls the same rows again (staging upserts by Id), never that it skips any.

The clients are passed in (Salesforce, staging, state), so this runs the same against the sandbox,
a real org, or in tests; nothing here knows HTTP.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.streams import Stream
from connectors.staging import Staging
from connectors.state import PullStats, QuarantinedRecord, StateStore
from persona_sync.errors import PersonaSyncError
from tasks.records import (
    Rejected,
    arrow_schema,
    csv_page_to_text_table,
    rest_records_to_text_table,
    screen,
    split_conflicting_duplicates,
    typed_table,
)

if TYPE_CHECKING:
    from persona_sync.settings import Settings

log = logging.getLogger(__name__)

PullMode = Literal["auto", "rest", "bulk"]
RowsCallback = Callable[[str, int, int | None], None]  # (sobject, rows staged so far, rows expected)


class PullError(PersonaSyncError):
    """One or more streams failed; the others were pulled and their watermarks moved."""


@dataclass(frozen=True)
class PullOptions:
    """How to pull. Defaults suit a nightly run."""

    mode: PullMode = "auto"
    # From this many expected rows a stream is pulled with Bulk API 2.0 (Salesforce's own advice puts
    # the break-even around 2,000 rows; a Bulk job costs a few calls and a poll, pulled in parallel).
    bulk_threshold: int = 2_000
    # How far before the watermark each incremental pull starts again.
    overlap: timedelta = timedelta(minutes=10)
    # A first run (or a full refresh) pulls this much history.
    history_days: int = 180
    full_refresh: bool = False
    bulk_page_rows: int = 100_000
    # REST pages (2,000 rows) are gathered into staging parts of about this many rows.
    rest_part_rows: int = 50_000
    # Streams pulled at the same time (after the reference data, which goes first).
    workers: int = 3
    # Wait between polls of a Bulk job.
    bulk_poll_seconds: float = 0.5


@dataclass
class StreamResult:
    """What one stream's pull did."""

    sobject: str
    mode: str
    rows: int = 0
    deleted: int = 0
    quarantined: int = 0
    seconds: float = 0.0
    watermark_from: datetime | None = None
    watermark_to: datetime | None = None


@dataclass
class PullReport:
    """What a whole pull did, per stream."""

    run_id: str
    streams: list[StreamResult] = field(default_factory=list)
    api_calls: int = 0
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(result.rows for result in self.streams)

    @property
    def quarantined(self) -> int:
        return sum(result.quarantined for result in self.streams)

    def counts(self) -> dict[str, int]:
        """The counts the run ledger keeps."""
        return {"rows": self.rows, "quarantined": self.quarantined,
                "deleted": sum(result.deleted for result in self.streams)}


def pull(client: SalesforceClient, staging: Staging, state: StateStore, streams: list[Stream], *, run_id: str,
         now: datetime | None = None, options: PullOptions = PullOptions(),
         on_rows: RowsCallback | None = None) -> PullReport:
    """Pulls every stream into staging; reference data (users) first, then the rest in parallel.

    Raises PullError naming every stream that failed, after the others have finished.
    """
    started = time.monotonic()
    calls_before = client.api_calls
    now = now or datetime.now(timezone.utc)
    report = PullReport(run_id)
    reference = [stream for stream in streams if stream.user_field is None]
    activity = [stream for stream in streams if stream.user_field is not None]
    failures: list[tuple[str, BaseException]] = []
    for stream in reference:
        try:
            report.streams.append(_pull_stream(client, staging, state, stream, None, run_id, now, options, on_rows))
        except (PersonaSyncError, KeyError, OSError) as error:
            failures.append((stream.sobject, error))
    known_users = _known_users(staging)
    with ThreadPoolExecutor(max_workers=max(options.workers, 1), thread_name_prefix="pull") as pool:
        futures = {stream.sobject: pool.submit(_pull_stream, client, staging, state, stream, known_users, run_id,
                                               now, options, on_rows) for stream in activity}
        for sobject, future in futures.items():
            try:
                report.streams.append(future.result())
            except (PersonaSyncError, KeyError, OSError) as error:
                failures.append((sobject, error))
    report.api_calls = client.api_calls - calls_before
    report.seconds = time.monotonic() - started
    if failures:
        details = "; ".join(f"{sobject}: {error}" for sobject, error in failures)
        raise PullError(f"{len(failures)} of {len(streams)} streams failed to pull ({details}). The others were "
                        "staged and their watermarks moved; the next run retries the failed ones from their "
                        "own watermarks")
    return report


def _needs_full_pull(staging: Staging, stream: Stream, schema: pa.Schema) -> bool:
    """Whether rows staged earlier lack a field the stream now selects (a field added to the stream
    since): an incremental pull would leave those rows without it for good, so the stream is pulled again
    from its history start, as a full refresh that swaps in atomically."""
    staged = staging.columns_in_every_file(stream.sobject)
    if staged is None:
        return False
    missing = [column for column in schema.names if column not in staged]
    if missing:
        log.warning("pull %s: the staged rows lack %s (added to the stream since they were pulled); pulling "
                    "the stream again in full", stream.sobject, ", ".join(missing))
    return bool(missing)


def _known_users(staging: Staging) -> set[str] | None:
    users = staging.read("User", columns=["Id"])
    return set(users["Id"]) if len(users) else None


# --- one stream ----------------------------------------------------------------------------------------

def _pull_stream(client: SalesforceClient, staging: Staging, state: StateStore, stream: Stream,
                 known_users: set[str] | None, run_id: str, now: datetime, options: PullOptions,
                 on_rows: RowsCallback | None) -> StreamResult:
    started = time.monotonic()
    name = stream.sobject
    schema = arrow_schema(stream, _field_types(client, name))
    stored = None if options.full_refresh else state.watermark(name)
    refreshing = options.full_refresh or _needs_full_pull(staging, stream, schema)
    watermark = None if refreshing else stored
    history_start = stored.history_start if stored else now - timedelta(days=options.history_days)
    since = _since(stream, watermark.value if watermark else None, history_start, options.overlap)
    where = _where(stream, since)
    expected = client.count(f"SELECT COUNT() FROM {name}{where}", sobject=name)
    mode = options.mode if options.mode != "auto" else ("bulk" if expected >= options.bulk_threshold else "rest")
    result = StreamResult(name, mode, watermark_from=watermark.value if watermark else None)
    log.info("pull %s: %s rows expected since %s (%s)", name, f"{expected:,}", since or "the beginning", mode)

    refresh = staging.begin_refresh(name) if refreshing else None
    sink = refresh if refresh is not None else _StagingSink(staging, name)
    tracker = _DuplicateTracker()
    previously_quarantined = {record.record_id for record in state.quarantined(name) if record.record_id}
    already_staged = _staged_versions(staging, stream, since) if refresh is None and since is not None else None
    max_cursor: datetime | None = None
    try:
        for text in _text_pages(client, stream, where, mode, options):
            typed, unparsable = typed_table(text, schema)
            clean, rejected = screen(typed, unparsable, stream, known_users, text)
            clean, conflicting = split_conflicting_duplicates(clean, stream.cursor)
            rejected += conflicting
            if already_staged is not None:
                clean = _without_unchanged(clean, already_staged, stream.cursor)
            tracker.add(clean)
            if clean.num_rows:
                sink.write_part(clean)
                max_cursor = _later(max_cursor, pc.max(clean.column(stream.cursor)).as_py())
            result.rows += clean.num_rows
            result.quarantined += _quarantine(state, name, rejected, run_id)
            _release(state, name, clean, previously_quarantined)
            if on_rows is not None:
                on_rows(name, result.rows, expected)
        conflicts = tracker.conflicting_ids()
        if conflicts:
            # The same Id came in two pages of one snapshot: neither copy can be trusted.
            sink.write_tombstones(conflicts, [now] * len(conflicts))
            result.quarantined += _quarantine(state, name, [
                Rejected(record_id, "the same Id arrived in more than one page of one pull", {"Id": record_id})
                for record_id in conflicts], run_id)
            result.rows -= len(conflicts)
        if watermark is not None and stream.soft_delete and refresh is None:
            result.deleted = _pull_deletions(client, staging, stream, since)
        if refresh is not None:
            refresh.commit()
    except BaseException:
        if refresh is not None:
            refresh.abort()
        raise
    new_value = max_cursor or (watermark.value if watermark else history_start)
    state.set_watermark(name, stream.cursor, new_value, history_start, run_id)
    if staging.needs_compaction(name):
        staging.compact(name)
    result.watermark_to = new_value
    result.seconds = time.monotonic() - started
    state.record_pull(PullStats(run_id=run_id, sobject=name, mode=mode, rows=result.rows, deleted=result.deleted,
                                quarantined=result.quarantined, api_calls=0, seconds=result.seconds,
                                watermark_from=result.watermark_from, watermark_to=new_value))
    log.info("pull %s: %s rows staged, %s deleted, %s quarantined in %.1f s", name, f"{result.rows:,}",
             f"{result.deleted:,}", f"{result.quarantined:,}", result.seconds)
    return result


def _since(stream: Stream, watermark: datetime | None, history_start: datetime, overlap: timedelta) -> datetime | None:
    """Where this pull starts: the watermark less the overlap, else the history start (None: everything)."""
    if watermark is not None:
        return watermark - overlap
    return None if stream.full_history else history_start


def _where(stream: Stream, since: datetime | None) -> str:
    conditions = []
    if since is not None:
        conditions.append(f"{stream.cursor} >= {_soql_datetime(since)}")
    if stream.required_filter:
        conditions.append(stream.required_filter)
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def _soql_datetime(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _field_types(client: SalesforceClient, sobject: str) -> dict[str, str]:
    describe = client.call(lambda sf: getattr(sf, sobject).describe(), sobject=sobject, call="describe")
    return {field["name"]: field["type"] for field in describe["fields"]}


def _text_pages(client: SalesforceClient, stream: Stream, where: str, mode: str,
                options: PullOptions) -> Iterator[pa.Table]:
    """The stream's rows as all-text Arrow tables, one per Bulk page or per group of REST pages."""
    columns = stream.columns
    select = f"SELECT {', '.join(columns)} FROM {stream.sobject}{where}"
    if mode == "bulk":
        for page in client.bulk_pages(select, sobject=stream.sobject, max_records=options.bulk_page_rows,
                                      poll_seconds=options.bulk_poll_seconds):
            yield csv_page_to_text_table(page.csv_text, columns)
        return
    buffered: list[dict] = []
    for records in client.rest_pages(f"{select} ORDER BY {stream.cursor}, Id", sobject=stream.sobject):
        buffered.extend(records)
        if len(buffered) >= options.rest_part_rows:
            yield rest_records_to_text_table(buffered, columns)
            buffered = []
    if buffered:
        yield rest_records_to_text_table(buffered, columns)


def _pull_deletions(client: SalesforceClient, staging: Staging, stream: Stream, since: datetime | None) -> int:
    """Writes tombstones for rows deleted since `since` (queryAll sees the recycle bin); returns how many."""
    condition = f" AND SystemModstamp >= {_soql_datetime(since)}" if since is not None else ""
    ids: list[str] = []
    deleted_at: list[datetime] = []
    soql = f"SELECT Id, SystemModstamp FROM {stream.sobject} WHERE IsDeleted = true{condition}"
    for records in client.rest_pages(soql, sobject=stream.sobject, include_deleted=True):
        for record in records:
            ids.append(record["Id"])
            deleted_at.append(pd.Timestamp(record["SystemModstamp"]).to_pydatetime())
    if ids:
        staging.write_tombstones(stream.sobject, ids, deleted_at)
    return len(ids)


def _staged_versions(staging: Staging, stream: Stream, since: datetime) -> pa.Table:
    """(Id, cursor) of the rows already staged inside the overlap window: re-fetching them is no change."""
    staged = staging.read_arrow(stream.sobject, columns=["Id", stream.cursor])
    if staged.num_rows == 0:
        return staged
    cursor = staged.column(stream.cursor)
    return staged.filter(pc.greater_equal(cursor, pa.scalar(since, cursor.type)))


def _without_unchanged(page: pa.Table, staged: pa.Table, cursor: str) -> pa.Table:
    """The rows of a page that are not already staged with the same cursor value (the overlap's re-reads)."""
    if staged.num_rows == 0 or page.num_rows == 0:
        return page
    seen = staged.select(["Id", cursor]).append_column("_staged", pa.array([True] * staged.num_rows))
    joined = page.join(seen, keys=["Id", cursor], join_type="left outer")
    return joined.filter(pc.is_null(joined.column("_staged"))).drop_columns(["_staged"]).select(page.column_names)


def _quarantine(state: StateStore, sobject: str, rejected: list[Rejected], run_id: str) -> int:
    if not rejected:
        return 0
    log.warning("pull %s: %d records quarantined (%s)", sobject, len(rejected), rejected[0].reason)
    state.quarantine([QuarantinedRecord(sobject=sobject, record_id=item.record_id, reason=item.reason,
                                        raw=item.raw, run_id=run_id) for item in rejected])
    return len(rejected)


def _release(state: StateStore, sobject: str, clean: pa.Table, quarantined_ids: set[str]) -> None:
    """Records that arrive clean now leave the quarantine they were in."""
    if not quarantined_ids or clean.num_rows == 0:
        return
    arrived = set(clean.column("Id").to_pylist()) & quarantined_ids
    if arrived:
        state.release_quarantine(sobject, sorted(arrived))
        quarantined_ids -= arrived


def _later(current: datetime | None, candidate: object) -> datetime | None:
    if candidate is None:
        return current
    if isinstance(candidate, datetime):
        value = candidate if candidate.tzinfo else candidate.replace(tzinfo=timezone.utc)
    else:  # a date cursor (not used by the declared streams, but allowed)
        value = datetime(candidate.year, candidate.month, candidate.day, tzinfo=timezone.utc)  # type: ignore[attr-defined]
    return value if current is None or value > current else current


class _StagingSink:
    """Writes one stream's parts straight into staging (an incremental pull)."""

    def __init__(self, staging: Staging, sobject: str) -> None:
        self.staging = staging
        self.sobject = sobject

    def write_part(self, table: pa.Table) -> None:
        self.staging.write_part(self.sobject, table)

    def write_tombstones(self, ids: list[str], deleted_at: list[datetime]) -> None:
        self.staging.write_tombstones(self.sobject, ids, deleted_at)


class _DuplicateTracker:
    """Finds Ids that came in more than one page of one pull.

    A Bulk job or a REST query cursor is a snapshot: each record comes once. An Id in two pages means
    the source is broken, and neither copy can be trusted. Only the Ids are kept (Arrow arrays, no
    copies), so even a million-row stream costs a few megabytes.
    """

    def __init__(self) -> None:
        self._ids: list[pa.Array] = []

    def add(self, table: pa.Table) -> None:
        if table.num_rows:
            self._ids.append(table.column("Id").combine_chunks())

    def conflicting_ids(self) -> list[str]:
        if len(self._ids) < 2:
            return []
        counts = pa.table({"Id": pa.concat_arrays(self._ids)}).group_by("Id").aggregate([("Id", "count")])
        return sorted(counts.filter(pc.greater(counts.column("Id_count"), 1)).column("Id").to_pylist())


# --- a whole pull run, as the CLI and the flows start it -----------------------------------------------------

def open_staging(settings: "Settings") -> Staging:
    """The staging the settings name, with their compaction threshold."""
    return Staging(settings.staging_path, compact_after=settings.staging_compact_after)


def options_from_settings(settings: "Settings", *, full_refresh: bool = False, mode: PullMode | None = None) -> PullOptions:
    """The pull options the settings ask for (command-line choices on top)."""
    return PullOptions(mode=mode or settings.pull_mode, bulk_threshold=settings.pull_bulk_threshold,
                       overlap=timedelta(minutes=settings.pull_overlap_minutes),
                       history_days=settings.pull_history_days, full_refresh=full_refresh,
                       bulk_page_rows=settings.pull_bulk_page_rows, workers=settings.pull_workers,
                       bulk_poll_seconds=settings.salesforce_bulk_poll_seconds)


def run_pull(settings: "Settings", streams: list[Stream], options: PullOptions, *,
             on_rows: RowsCallback | None = None, run_id: str | None = None) -> PullReport:
    """A recorded pull: checks the API reserve, pulls, and writes the outcome to the run ledger.

    With `run_id` the pull is part of a larger run (a flow) that records its own outcome; without it,
    the pull is a run of its own: the ledger gets its parameters, counts, API calls and any error.
    """
    state = StateStore(settings.state_url)
    state.ensure_schema()
    own_run = run_id is None
    if run_id is None:
        run_id = state.start_run("pull", {"streams": [stream.sobject for stream in streams],
                                          "mode": options.mode, "full_refresh": options.full_refresh})
    client: SalesforceClient | None = None
    try:
        client = SalesforceClient(settings)
        client.check_api_reserve(settings.api_reserve)
        report = pull(client, open_staging(settings), state, streams, run_id=run_id, options=options,
                      on_rows=on_rows)
    except BaseException as error:
        if own_run:
            state.finish_run(run_id, "failed", api_calls=client.api_calls if client else 0, error=str(error))
        raise
    if own_run:
        state.finish_run(run_id, "succeeded", api_calls=report.api_calls, counts=report.counts())
    return report
