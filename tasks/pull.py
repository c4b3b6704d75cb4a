"""Pull: bring the org's users and what they did into local staging, incrementally, losing nothing.

For each declared stream (connectors/salesforce/streams.py): the users and other reference data first,
one after another, then the activity streams in parallel.

1. Window: from the stream's watermark minus an overlap (rows committed late are not missed), or on a
   first run (or --full-refresh) from the start of the history window, which is recorded.
2. Held rows (activity of a user not staged yet) whose user has arrived since are read again by Id and
   staged.
3. Pages (REST or Bulk API 2.0, chosen from a COUNT()) are screened (tasks/screening.py) and written as
   they arrive: rows to staging, rows waiting for their user to the held area, broken rows to the
   quarantine. Rows already staged with the same cursor value (the overlap's re-reads) are not written
   again, so a pull that finds no change writes no file.
4. Deleted rows since the deletions watermark become tombstones, for the rows staging still holds.
5. Every `reconcile_every_days` (or when asked), the org's Ids are compared with staging: rows the org
   no longer has (purged from the recycle bin, which queryAll sees for about 15 days only) are removed,
   and rows staging lacks are read by Id.
6. Only then the watermarks move. A crash anywhere before means the next run reads the same rows
   again; staging keeps the latest version of each Id by cursor, so nothing doubles and no stale copy
   ever wins over a newer one.
7. Now and then an object's files are compacted; rows older than the history window are pruned then.

Memory: one page per stream in flight; whole-object work (the overlap's re-reads, looking up Ids,
compaction) runs one Id bucket at a time (connectors/staging/layout.py).

The clients are passed in (Salesforce, staging, state): this runs the same against the sandbox, a real
org, or in tests. It writes no SOQL and knows no HTTP: connectors/salesforce/extract.py does that.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from uuid import uuid4

import pyarrow as pa
import pyarrow.compute as pc

from connectors.salesforce import extract
from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.extract import Page, RawPage
from connectors.salesforce.pages import absent_fields
from connectors.salesforce.streams import REQUIRED_OBJECTS, Stream
from connectors.staging import BUCKETS, Prune, Staging
from connectors.state import PullStats, QuarantinedRecord, StateStore, Watermark
from core.configs import PullConfig, SalesforceConfig, StagingConfig, StateConfig, Transfer
from core.errors import PersonaSyncError
from tasks.screening import Rejected, row_users, screen

log = logging.getLogger(__name__)

RowsCallback = Callable[[str, int, int | None], None]  # (sobject, rows staged so far, rows expected)
# Rows whose user is not staged yet live here, under staging's root, apart from what features read.
HELD_DIR = ".held"
# Bulk API result pages are streamed to files here, and parsed from them (never held as text).
DOWNLOADS_DIR = ".downloads"
_TIMESTAMP = pa.timestamp("ms", tz="UTC")


class PullError(PersonaSyncError):
    """One or more streams failed; the others were pulled and their watermarks moved. `transient`: every
    failure may pass in a while (the org unreachable or failing on its side), so a retry may succeed."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass
class StreamResult:
    """What one stream's pull did."""

    sobject: str
    mode: Transfer
    rows: int = 0  # rows staged (read, released from the held area, or recovered by a reconciliation)
    deleted: int = 0  # tombstones written for rows deleted in the org
    quarantined: int = 0
    held: int = 0  # rows waiting for their user after this pull
    released: int = 0  # held rows staged this pull, their user having arrived
    purged: int = 0  # rows the org no longer has, found by a reconciliation
    pruned: int = 0  # rows older than the history window, dropped from staging by a compaction
    recovered: int = 0  # rows staging lacked, found by a reconciliation and read by Id
    api_calls: int = 0
    seconds: float = 0.0
    watermark_from: datetime | None = None
    watermark_to: datetime | None = None
    # What the org lacks: the whole object (nothing pulled), or declared fields left out of the pull.
    absent: bool = False
    absent_fields: list[str] = field(default_factory=list)
    # Rows read this pull that name a user, by the field that named it, in the stream's order of
    # preference (OwnerId, then CreatedById, ...): rows under a later field needed a fallback.
    attributed: dict[str, int] = field(default_factory=dict)

    @property
    def fallbacks(self) -> dict[str, int]:
        """Rows attributed by a user field other than the stream's first (empty when none needed one)."""
        return {name: rows for name, rows in list(self.attributed.items())[1:] if rows}


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

    @property
    def held(self) -> int:
        return sum(result.held for result in self.streams)

    def gaps(self) -> list[str]:
        """What the org lacked, one line each: objects absent, fields left out of the pull, rows attributed
        by a fallback user field. Empty for an org that has everything the streams declare."""
        lines = []
        for result in sorted(self.streams, key=lambda item: item.sobject):
            if result.absent:
                lines.append(f"{result.sobject}: not in this org (or hidden from the integration user); not pulled")
                continue
            if result.absent_fields:
                lines.append(f"{result.sobject}: no {', '.join(result.absent_fields)} in this org; pulled without")
            for name, rows in result.fallbacks.items():
                lines.append(f"{result.sobject}: {rows:,} rows attributed by {name} (a fallback: "
                             f"{next(iter(result.attributed))} empty or absent)")
        return lines

    def counts(self) -> dict[str, int]:
        """The counts the run ledger keeps."""
        return {"rows": self.rows, "quarantined": self.quarantined, "held": self.held,
                "deleted": sum(result.deleted for result in self.streams),
                "purged": sum(result.purged for result in self.streams),
                "pruned": sum(result.pruned for result in self.streams)}


def held_area(staging: Staging) -> Staging:
    """Where rows wait for their user: a staging of its own, which features never read."""
    return Staging(staging.root / HELD_DIR, compact_after=staging.compact_after)


def pull(client: SalesforceClient, staging: Staging, state: StateStore, streams: list[Stream], *, run_id: str,
         config: PullConfig = PullConfig(), full_refresh: bool = False, reconcile: bool = False,
         now: datetime | None = None, on_rows: RowsCallback | None = None) -> PullReport:
    """Pulls every stream into staging; reference data (users) first, then the rest in parallel.

    Raises PullError naming every stream that failed, after the others have finished.
    """
    started = time.monotonic()
    now = now or datetime.now(timezone.utc)
    report = PullReport(run_id)
    failures: list[tuple[str, BaseException]] = []
    # Objects download at the same time, but their pages are processed one at a time: processing is CPU
    # work, which two cores do no faster in parallel, and one page at a time keeps memory to one page
    # (a page waits on disk, not in memory), whatever the org's size.
    processing = threading.Lock()

    def run(stream: Stream, known_users: pa.Array | None) -> None:
        one = _StreamPull(client, staging, state, stream, known_users, run_id=run_id, now=now, config=config,
                          full_refresh=full_refresh, reconcile=reconcile, on_rows=on_rows, processing=processing)
        try:
            report.streams.append(one.run())
        except PersonaSyncError as error:
            failures.append((stream.sobject, error))
            one.record_failed()

    for stream in (stream for stream in streams if not stream.is_activity):
        run(stream, None)
    activity = [stream for stream in streams if stream.is_activity]
    known_users = staging.read_arrow("User", ["Id"]).column("Id").combine_chunks()
    if activity and len(known_users) == 0:
        failures += [(stream.sobject, PullError("no users are staged yet, so its rows cannot be attributed; it "
                                                "is pulled once the User stream has been"))
                     for stream in activity]
        activity = []
    with ThreadPoolExecutor(max_workers=max(config.workers, 1), thread_name_prefix="pull") as pool:
        list(pool.map(lambda stream: run(stream, known_users), activity))
    report.api_calls = client.api_calls  # every call of this run's client: its identity and reserve check too
    report.seconds = time.monotonic() - started
    if failures:
        details = "; ".join(f"{sobject}: {error}" for sobject, error in failures)
        transient = all(getattr(error, "transient", False) for _, error in failures)
        raise PullError(f"{len(failures)} of {len(streams)} streams failed to pull ({details}). The others were "
                        "staged and their watermarks moved; the next run retries the failed ones from their "
                        "own watermarks", transient=transient)
    return report


class _StreamPull:
    """The pull of one stream, step by step (see the module docstring)."""

    def __init__(self, client: SalesforceClient, staging: Staging, state: StateStore, stream: Stream,
                 known_users: pa.Array | None, *, run_id: str, now: datetime, config: PullConfig,
                 full_refresh: bool, reconcile: bool, on_rows: RowsCallback | None,
                 processing: threading.Lock) -> None:
        self.client, self.staging, self.state, self.stream = client, staging, state, stream
        self.processing = processing
        self.held = held_area(staging)
        self.downloads = staging.root / DOWNLOADS_DIR
        self.known_users = known_users
        self.run_id, self.now, self.config = run_id, now, config
        self.reconcile_asked = reconcile
        self.on_rows = on_rows
        self.name, self.cursor = stream.sobject, stream.cursor
        self.stored = None if full_refresh else state.watermark(self.name)
        self.full_refresh = full_refresh
        self.max_cursor: datetime | None = None
        self.already_staged: pa.Table | None = None
        self.already_held: pa.Table | None = None
        self.previously_quarantined: set[str] = set()
        self.result: StreamResult | None = None

    def run(self) -> StreamResult:
        self.started = time.monotonic()
        self.calls_before = self.client.api_calls_of(self.name)
        schema = extract.stream_schema(self.client, self.stream)
        if schema is None:
            return self._absent()
        self.schema = schema
        self.user_columns = [name for name in self.stream.user_fields if name in schema.names]
        refreshing = self.full_refresh or self._needs_full_pull()
        watermark = None if refreshing else self.stored
        # In whole seconds, as the query asks (SOQL datetimes have no fractions).
        history_start = self.stored.history_start if self.stored else (
            self.now - timedelta(days=self.config.history_days)).replace(microsecond=0)
        since = self._since(watermark, history_start)
        expected = extract.count(self.client, self.stream, since=since)
        transfer: Transfer = self.config.mode if self.config.mode != "auto" else (
            "bulk" if expected >= self.config.bulk_threshold else "rest")
        self.result = StreamResult(self.name, transfer, watermark_from=watermark.value if watermark else None,
                                   absent_fields=absent_fields(self.stream, self.schema),
                                   attributed={name: 0 for name in self.stream.user_fields})
        if self.result.absent_fields:
            log.warning("pull %s: the org lacks %s (not in its describe, or hidden from the integration user); "
                        "pulled without them, and the features they feed are unavailable", self.name,
                        ", ".join(self.result.absent_fields))
        log.info("pull %s: %s rows expected since %s (%s)", self.name, f"{expected:,}", since or "the beginning",
                 transfer)

        self.refresh = self.staging.begin_refresh(self.name) if refreshing else None
        self.previously_quarantined = {record.record_id for record in self.state.quarantined(self.name)
                                       if record.record_id}
        if self.refresh is None and since is not None:
            self.already_staged = _versions_since(self.staging, self.stream, since)
            self.already_held = _versions_since(self.held, self.stream, since)
        deletions_value = reconciled_at = None
        try:
            self._release_held()
            pages = extract.read_pages(self.client, self.stream, self.schema, since=since, transfer=transfer,
                                       bulk_page_rows=self.config.bulk_page_rows,
                                       rest_part_rows=self.config.rest_part_rows, download_dir=self.downloads)
            for page in pages:
                self._stage(page, moves_watermark=True)
                del page  # gone before the next page is read: one page of each stream in memory, not two
                if self.on_rows is not None:
                    self.on_rows(self.name, self.result.rows, expected)
            if watermark is not None and self.stream.soft_delete:
                deletions_value = self._pull_deletions(watermark)
            if watermark is None:
                reconciled_at = self.now  # a first pull or a refresh read everything: as good as a reconciliation
            elif self._reconciliation_due(watermark):
                self._reconcile(history_start)
                reconciled_at = self.now
            if self.refresh is not None:
                self.refresh.commit()
        except BaseException:
            if self.refresh is not None:
                self.refresh.abort()
            raise
        history_start = self._compact(history_start)
        reached = [value for value in (self.max_cursor, watermark.value if watermark else None) if value is not None]
        new_value = max(reached) if reached else history_start
        self.state.set_watermark(self.name, self.cursor, new_value, history_start, self.run_id,
                                 deletions_value=deletions_value, reconciled_at=reconciled_at)
        self.result.held = self.held.row_count(self.name)
        self.result.watermark_to = new_value
        self._record()
        return self.result

    def _absent(self) -> StreamResult:
        """An object the org lacks (or hides from the integration user): nothing to pull, its watermark
        left as it was. The reference data every row is checked against cannot be absent."""
        if self.name in REQUIRED_OBJECTS:
            raise PullError(f"the org has no {self.name} object the integration user can read, and nothing can be "
                            "attributed without it: check the integration user's profile (View Setup and "
                            "Configuration, API Enabled)")
        log.warning("pull %s: the org has no such object, or does not show it to the integration user; "
                    "skipped, and the features it feeds are unavailable", self.name)
        self.result = StreamResult(self.name, "rest", absent=True)
        self._record()
        return self.result

    def record_failed(self) -> None:
        """Records what a stream that failed did before it failed: its API calls above all (its watermark
        stays where it was, so what it staged is read again next time)."""
        if self.result is not None:
            self._record()

    # --- the steps -----------------------------------------------------------------------------------

    def _needs_full_pull(self) -> bool:
        """Whether what is staged cannot be built on, so the stream is pulled again from its history start,
        as a full refresh that swaps in atomically:

        - rows are staged but there is no watermark (the state database was lost or replaced): what changed
          or was deleted since they were staged is unknown;
        - rows staged earlier lack a field the stream now selects (a field added since): an incremental
          pull would leave those rows without it for good.
        """
        staged = self.staging.columns_in_every_file(self.name)
        if staged is None:
            return False
        if self.stored is None:
            log.warning("pull %s: rows are staged but the state database has no watermark for them; pulling the "
                        "stream again in full", self.name)
            return True
        missing = [column for column in self.schema.names if column not in staged]
        if missing:
            log.warning("pull %s: the staged rows lack %s (added to the stream since they were pulled); pulling "
                        "the stream again in full", self.name, ", ".join(missing))
        return bool(missing)

    def _since(self, watermark: Watermark | None, history_start: datetime) -> datetime | None:
        """Where this pull starts: the watermark less the overlap, else the history start (None: everything).

        In whole seconds, as SOQL datetime literals are: the rows the query returns and the rows the overlap
        check compares them with (`already_staged`) must start at the same instant."""
        if watermark is not None:
            return (watermark.value - self.config.overlap).replace(microsecond=0)
        return None if self.stream.full_history else history_start.replace(microsecond=0)

    def _release_held(self) -> None:
        """Stages the held rows whose user is staged now, read again by Id (so they come with every field
        the stream selects, and as the org has them now). Rows whose user never came within the history
        window go to the quarantine, with why: waiting longer would only keep them from being seen."""
        if self.known_users is None or not self.stream.is_activity:
            return
        held = self.held.read_arrow(self.name, ["Id", *self.user_columns, self.cursor])
        if held.num_rows == 0:
            return
        user_known = pc.fill_null(pc.is_in(row_users(held, self.stream)[0], value_set=self.known_users), False)
        cutoff = pa.scalar(self.now - timedelta(days=self.config.history_days), _TIMESTAMP)
        self._give_up_on(held.filter(pc.and_(pc.invert(user_known), pc.less(held.column(self.cursor), cutoff))))
        ready = held.filter(user_known)
        if ready.num_rows == 0:
            return
        log.info("pull %s: %d held rows have their user now; reading them again", self.name, ready.num_rows)
        before = self.result.rows
        for page in extract.read_by_id(self.client, self.stream, self.schema, ready.column("Id").to_pylist()):
            self._stage(page)
        self.result.released += self.result.rows - before
        # Whatever came back was staged, held again or quarantined anew; a row that did not come back is
        # gone from the org. Either way these versions leave the held area.
        self.held.write_tombstones(self.name, ready.column("Id").to_pylist(), ready.column(self.cursor).to_pylist())

    def _give_up_on(self, stale: pa.Table) -> None:
        """Moves held rows older than the history window to the quarantine."""
        if stale.num_rows == 0:
            return
        def named_by(row: dict) -> str:
            name = next((name for name in self.user_columns if row.get(name)), None)
            return f"{name} {row[name]}" if name else "none"

        self.result.quarantined += self._quarantine([
            Rejected(row["Id"], f"its user ({named_by(row)}) was never staged within the "
                                f"{self.config.history_days}-day history window", row)
            for row in stale.to_pylist()])
        self.held.write_tombstones(self.name, stale.column("Id").to_pylist(), stale.column(self.cursor).to_pylist())

    def _stage(self, raw: RawPage, *, moves_watermark: bool = False) -> None:
        """Parses one page, screens it and writes each part where it belongs. One page at a time across the
        objects pulled at once (see `pull`).

        Only the pages of the incremental query itself move the watermark: it promises that every change up
        to it was read. Rows read by Id (held rows released, rows a reconciliation found missing) may be
        newer than changes that query has not seen yet; moving the watermark to them would skip those."""
        with self.processing:
            self._screen_and_write(raw.parse(), moves_watermark)
            _return_freed_memory()

    def _screen_and_write(self, page: Page, moves_watermark: bool) -> None:
        screened = screen(page, self.stream, self.known_users)
        clean = screened.clean
        held = screened.held.select(["Id", *self.user_columns, self.cursor]) if screened.held.num_rows else None
        for name, rows in screened.attributed.items():
            self.result.attributed[name] = self.result.attributed.get(name, 0) + rows
        if self.already_staged is not None:
            clean = _without_unchanged(clean, self.already_staged, self.cursor)
        if held is not None and self.already_held is not None:
            held = _without_unchanged(held, self.already_held, self.cursor)
        if clean.num_rows:
            if self.refresh is not None:
                self.refresh.write_part(clean, version=self.cursor)
            else:
                self.staging.write_part(self.name, clean, version=self.cursor)
            self._release_quarantined(clean)
        if held is not None and held.num_rows:
            self.held.write_part(self.name, held, version=self.cursor)
        for table in (clean, held) if moves_watermark else ():
            if table is not None and table.num_rows:
                self.max_cursor = _later(self.max_cursor, pc.max(table.column(self.cursor)).as_py())
        self.result.rows += clean.num_rows
        self.result.quarantined += self._quarantine(screened.rejected)

    def _pull_deletions(self, watermark: Watermark) -> datetime | None:
        """Tombstones for rows deleted since the deletions watermark (less the overlap) that staging or the
        held area still holds; returns the new deletions watermark."""
        start = ((watermark.deletions_value or watermark.value) - self.config.overlap).replace(microsecond=0)
        found = extract.deletions(self.client, self.stream, since=start)
        if found.ids:
            ids = pa.array(found.ids, pa.string())
            when = dict(zip(found.ids, found.deleted_at))
            for area in (self.staging, self.held):
                live = area.live_ids(self.name, ids).to_pylist()
                if live:
                    area.write_tombstones(self.name, live, [when[record_id] for record_id in live])
                    if area is self.staging:
                        self.result.deleted += len(live)
        latest = [value for value in (found.latest, watermark.deletions_value) if value is not None]
        return max(latest) if latest else None

    def _reconciliation_due(self, watermark: Watermark) -> bool:
        if self.reconcile_asked:
            return True
        every = self.config.reconcile_every_days
        return every > 0 and (watermark.reconciled_at is None
                              or self.now - watermark.reconciled_at >= timedelta(days=every))

    def _reconcile(self, history_start: datetime) -> None:
        """Compares the org's Ids with staging's (within the history window): removes what the org no longer
        has, reads by Id what staging lacks. An Id-only read, cheap next to reading the rows. The org's Ids
        are staged aside, so the two sides are compared one Id bucket at a time."""
        bound = None if self.stream.full_history else history_start
        asked_at = datetime.now(timezone.utc)
        expected = extract.count(self.client, self.stream, since=bound)
        transfer: Transfer = "bulk" if expected >= self.config.bulk_threshold else "rest"
        org = Staging(self.downloads / f"reconcile-{self.name}-{uuid4().hex}")
        try:
            for ids in extract.ids(self.client, self.stream, since=bound, transfer=transfer,
                                   bulk_page_rows=self.config.bulk_page_rows, download_dir=self.downloads):
                org.write_part(self.name, pa.table({"Id": ids}))
            gone, missing = _compare_ids(self.staging, org, self.name, self.cursor, bound)
        finally:
            shutil.rmtree(org.root, ignore_errors=True)
        if gone:
            log.warning("pull %s: %d staged rows are gone from the org (purged from the recycle bin); removing "
                        "them", self.name, len(gone))
            self.staging.write_tombstones(self.name, gone, [asked_at] * len(gone))
            self.result.purged = len(gone)
        # Rows the org has that staging lacks, unless they are held or quarantined (known, and waiting).
        waiting = set(self.held.read_arrow(self.name, ["Id"]).column("Id").to_pylist()) | self.previously_quarantined
        missing = [record_id for record_id in missing if record_id not in waiting]
        if missing:
            log.warning("pull %s: %d rows of the org were missing from staging; reading them by Id",
                        self.name, len(missing))
            before = self.result.rows
            for page in extract.read_by_id(self.client, self.stream, self.schema, missing):
                self._stage(page)
            self.result.recovered = self.result.rows - before

    def _compact(self, history_start: datetime) -> datetime:
        """Compacts the object's files when there are many; prunes rows older than the history window then.
        Returns the history start, moved to the pruning cutoff when rows before it were dropped."""
        if self.held.needs_compaction(self.name):
            self.held.compact(self.name)
        if not self.staging.needs_compaction(self.name):
            return history_start
        cutoff = self.now - timedelta(days=self.config.history_days)
        prune = None if self.stream.full_history or cutoff <= history_start else Prune(self.cursor, cutoff)
        before = self.staging.row_count(self.name) if prune is not None else 0
        with self.processing:
            self.staging.compact(self.name, prune=prune)
            _return_freed_memory()
        if prune is not None:  # what left staging by age, so a check of row counts does not take it for a loss
            self.result.pruned = before - self.staging.row_count(self.name)
        return cutoff if prune is not None else history_start

    # --- bookkeeping ---------------------------------------------------------------------------------

    def _quarantine(self, rejected: list[Rejected]) -> int:
        if not rejected:
            return 0
        log.warning("pull %s: %d records quarantined (%s)", self.name, len(rejected), rejected[0].reason)
        self.state.quarantine([QuarantinedRecord(sobject=self.name, record_id=item.record_id, reason=item.reason,
                                                 raw=item.raw, run_id=self.run_id) for item in rejected])
        return len(rejected)

    def _release_quarantined(self, clean: pa.Table) -> None:
        """Records that arrive clean now leave the quarantine they were in."""
        if not self.previously_quarantined:
            return
        arrived = set(clean.column("Id").to_pylist()) & self.previously_quarantined
        if arrived:
            self.state.release_quarantine(self.name, sorted(arrived))
            self.previously_quarantined -= arrived

    def _record(self) -> None:
        result = self.result
        result.api_calls = self.client.api_calls_of(self.name) - self.calls_before
        result.seconds = time.monotonic() - self.started
        self.state.record_pull(PullStats(
            run_id=self.run_id, sobject=self.name, mode=result.mode, rows=result.rows, deleted=result.deleted,
            quarantined=result.quarantined, held=result.held, purged=result.purged, pruned=result.pruned,
            api_calls=result.api_calls,
            seconds=result.seconds, watermark_from=result.watermark_from, watermark_to=result.watermark_to))
        log.info("pull %s: %s rows staged, %s deleted, %s quarantined, %s held in %.1f s (%d API calls)", self.name,
                 f"{result.rows:,}", f"{result.deleted:,}", f"{result.quarantined:,}", f"{result.held:,}",
                 result.seconds, result.api_calls)


def _return_freed_memory() -> None:
    """Hands the memory of the page or compaction just done back to the system. Arrow's allocator keeps
    freed memory per thread, to reuse it; with several objects pulled at once that kept memory adds up
    with every page, so the pull's peak would grow with the org. (Costs microseconds.)"""
    pa.default_memory_pool().release_unused()


def _compare_ids(staging: Staging, org: Staging, sobject: str, cursor: str,
                 since: datetime | None) -> tuple[list[str], list[str]]:
    """(Ids staged with the cursor at or after `since` but not in the org, Ids in the org but not staged),
    compared a bucket at a time: the same bucket count on both sides puts each Id in the same bucket."""
    gone: list[str] = []
    missing: list[str] = []
    in_window = None if since is None else _at_or_after(cursor, since)
    pairs = zip(staging.buckets(sobject, ["Id", cursor], where=in_window, bucket_count=BUCKETS),
                org.buckets(sobject, ["Id"], bucket_count=BUCKETS))
    for staged, present in pairs:
        gone += staged["Id"].filter(pc.invert(pc.is_in(staged["Id"], value_set=present["Id"]))).to_pylist()
        missing += present["Id"].filter(pc.invert(pc.is_in(present["Id"], value_set=staged["Id"]))).to_pylist()
    return gone, missing


def _versions_since(area: Staging, stream: Stream, since: datetime) -> pa.Table:
    """(Id, cursor) of the rows `area` holds with the cursor at or after `since`: the overlap's re-reads."""
    parts = list(area.buckets(stream.sobject, ["Id", stream.cursor], where=_at_or_after(stream.cursor, since)))
    if not parts:
        return pa.table({"Id": pa.array([], pa.string()), stream.cursor: pa.array([], _TIMESTAMP)})
    return pa.concat_tables(parts)


def _at_or_after(column: str, moment: datetime) -> Callable[[pa.Table], pa.ChunkedArray]:
    bound = pa.scalar(moment, _TIMESTAMP)
    return lambda table: pc.fill_null(pc.greater_equal(table[column].cast(_TIMESTAMP), bound), False)


def _without_unchanged(page: pa.Table, staged: pa.Table, cursor: str) -> pa.Table:
    """The rows of a page that are not already staged with the same cursor value (the overlap's re-reads)."""
    if staged.num_rows == 0 or page.num_rows == 0:
        return page
    seen = staged.select(["Id", cursor]).append_column("_staged", pa.array([True] * staged.num_rows))
    joined = page.join(seen, keys=["Id", cursor], join_type="left outer")
    return joined.filter(pc.is_null(joined.column("_staged"))).drop_columns(["_staged"]).select(page.column_names)


def _later(current: datetime | None, candidate: object) -> datetime | None:
    if candidate is None:
        return current
    if isinstance(candidate, datetime):
        value = candidate if candidate.tzinfo else candidate.replace(tzinfo=timezone.utc)
    else:  # a date cursor (not used by the declared streams, but allowed)
        value = datetime(candidate.year, candidate.month, candidate.day, tzinfo=timezone.utc)  # type: ignore[attr-defined]
    return value if current is None or value > current else current


# --- a whole pull run, as the CLI and the flows start it -----------------------------------------------------

def run_pull(org: SalesforceConfig, state_config: StateConfig, staging_config: StagingConfig, config: PullConfig,
             streams: list[Stream], *, full_refresh: bool = False, reconcile: bool = False, run_id: str | None = None,
             on_rows: RowsCallback | None = None) -> PullReport:
    """A pull as a whole: one writer at a time, against the org this state belongs to, recorded.

    Takes the state's "pull" lock (a second pull waits `config.lock_wait_seconds`, then stops with who
    holds it), logs in, binds the state to the org on its first run and refuses another org, checks the
    API reserve, and pulls. With `run_id` the pull is part of a larger run (a flow) that records its own
    outcome; without it, the pull is a run of its own in the ledger.
    """
    with StateStore.from_config(state_config) as state:
        state.ensure_schema()
        if run_id is not None:
            return _locked_pull(org, state, staging_config, config, streams, run_id=run_id,
                                full_refresh=full_refresh, reconcile=reconcile, on_rows=on_rows)
        parameters = {"streams": [stream.sobject for stream in streams], "mode": config.mode,
                      "full_refresh": full_refresh, "reconcile": reconcile}
        with state.recorded_run("pull", parameters) as run:
            report = _locked_pull(org, state, staging_config, config, streams, run_id=run.id,
                                  full_refresh=full_refresh, reconcile=reconcile, on_rows=on_rows)
            run.counts.update(report.counts())
        return report


def _locked_pull(org: SalesforceConfig, state: StateStore, staging_config: StagingConfig, config: PullConfig,
                 streams: list[Stream], *, run_id: str, full_refresh: bool, reconcile: bool,
                 on_rows: RowsCallback | None) -> PullReport:
    client: SalesforceClient | None = None
    try:
        with state.lock("pull", purpose="pull the org into staging", wait_seconds=config.lock_wait_seconds):
            client = SalesforceClient(org)
            staging = Staging.from_config(staging_config)
            state.bind_org(client.org_id, client.instance_url)
            staging.claim(client.org_id)
            client.check_api_reserve(config.api_reserve)
            return pull(client, staging, state, streams, run_id=run_id, config=config,
                        full_refresh=full_refresh, reconcile=reconcile, on_rows=on_rows)
    finally:
        if client is not None:
            state.add_api_calls(run_id, client.api_calls)  # in the ledger even when the pull failed
