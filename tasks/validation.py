"""Validation stages: each gathers what one stage produced, runs its suites (expectations/) and says
whether the run may go on. Nothing here writes to Salesforce or to any SQL target.

- `check_staging`: every staged object row by row (Ids, users, times, booleans; Great Expectations over
  chunks of Id buckets, so memory stays bounded), then per object (rows not collapsed since the last
  good run, share quarantined) and the coverage of the fields the catalog reads (filled somewhere?).
  One pass over staging reads each object once, only the columns the checks need.
- `check_features`: the active users' features.
- `check_assignments`: the active users' candidate assignments, then the guardrails against the last
  good run's stored assignments (forced ones for this run only).
- `validate_now`: all of them on what is staged now, writing nothing (`persona-sync validate`).

Each returns a `StageChecks` (the checks and where its Data Docs are); `record` keeps them in the run
ledger and raises `ValidationFailed` (naming each failed check, the observed value and the limit) when
one failed. The run's Data Docs live under `<data-docs>/<run id>/`: one GX site per stage, and an
index page of every check of the run.
"""

from __future__ import annotations

import html
import logging
import math
import re
import shutil
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from connectors.salesforce.streams import Stream
from connectors.staging import Staging
from connectors.state import StateStore, Watermark
from core.configs import PersonasConfig, StagingConfig, StateConfig, ValidationConfig
from core.errors import ConfigurationError, ValidationFailed
from expectations import suites
from expectations.checks import STAGES, STATUS_ORDER, Check, failure_message
from expectations.guardrails import GUARDRAILS, check_guardrails
from expectations.runner import Expect, GxRunner
from personas.catalog import UNASSIGNED, Catalog
from personas.features import FEATURES, PER_30_DAYS, SHARE, source_fields, unavailable_features
from tasks.personas import assign_candidates, catalog_for, compute_and_store_features
from tasks.screening import row_users

log = logging.getLogger(__name__)

# Rows of a staged object validated at once (whole Id buckets are added until a chunk reaches this).
CHUNK_ROWS = 400_000
# The column the staging checks add: each row's user, from the first of its stream's user fields it fills.
USER_COLUMN = "user"
# The flows whose succeeded runs are the "last good run" a run is compared with.
SYNC_FLOWS = ("nightly_sync", "backfill")
# How far the org's clock (which stamps the cursor fields) may run ahead of ours.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class StageChecks:
    """What one validation stage found. `staged_rows`: rows per object (the staging stage only), kept in
    the ledger so the next run can tell a collapse from a quiet night."""

    checks: list[Check]
    data_docs: Path | None
    staged_rows: dict[str, int] | None = None
    # The staging stage only: each catalog field's share of rows where it is filled ("Task.WhoId" -> 0..1).
    coverage: dict[str, float] | None = None

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.stops_the_run]

    @property
    def warned(self) -> list[Check]:
        return [check for check in self.checks if check.status == "warned"]


def check_forcing(forced: Collection[str], reason: str | None) -> None:
    """Refuses a --force that names no guardrail, or comes without a reason, before anything runs."""
    unknown = sorted(set(forced) - set(GUARDRAILS))
    if unknown:
        raise ConfigurationError(f"--force {', '.join(unknown)}: only guardrails can be forced "
                                 f"({', '.join(GUARDRAILS)}); "
                                 "schema and data-quality checks cannot, fix the data instead")
    if forced and not (reason and reason.strip()):
        raise ConfigurationError("--force needs --reason TEXT: why this run may exceed the guardrail "
                                 "(it is recorded in the run ledger)")


def stage_docs_dir(config: ValidationConfig, run_name: str, stage: str) -> Path:
    """Where one stage's Data Docs go for a run (or a `persona-sync validate`)."""
    return config.data_docs_dir / run_name / stage


# --- staging ------------------------------------------------------------------------------------------

def check_staging(staging_config: StagingConfig, state_config: StateConfig, config: ValidationConfig,
                  streams: list[Stream], catalog: Catalog, run_name: str, *, history_days: int) -> StageChecks:
    """Staged objects, row by row and per object, and the coverage of the catalog's fields.

    `history_days`: the pull's history window; quarantined records last seen before it no longer count
    (their rows would have left staging by age too). Reads the state database, writes nothing to it.
    """
    staging = Staging.from_config(staging_config)
    coverage_fields = source_fields(catalog.features)
    runner = GxRunner(stage_docs_dir(config, run_name, "staging"))
    now = datetime.now(timezone.utc)
    with StateStore.from_config(state_config) as state:
        watermarks = {stream.sobject: state.watermark(stream.sobject) for stream in streams}
        quarantine = state.quarantine_counts(seen_since=now - timedelta(days=history_days))
        samples = {sobject: [record.record_id for record in state.quarantined(sobject, limit=3) if record.record_id]
                   for sobject in quarantine}
        good = state.last_good_run(SYNC_FLOWS, having="staged_rows")
        pruned = state.pruned_since(good.started_at) if good is not None else {}
    baseline = good.counts["staged_rows"] if good is not None and good.counts else {}
    checks: list[Check] = []
    rows: dict[str, int] = {}
    filled: dict[tuple[str, str], int] = {}
    for stream in streams:
        catalog_columns = [field for (sobject, field) in coverage_fields if sobject == stream.sobject]
        scan = _ObjectScan(staging, stream, catalog_columns)
        checks += runner.validate("staging", f"staged {stream.sobject}", _row_expects(stream, scan, watermarks),
                                  scan.frames(), id_column="Id")
        rows[stream.sobject] = scan.rows
        for field, count in scan.filled.items():
            filled[(stream.sobject, field)] = count
    summary = object_summary(rows, baseline, pruned, quarantine, samples, config)
    checks += runner.validate("staging", "staged objects", suites.staged_objects(
        summary, max_row_drop=config.max_row_drop, max_quarantined_share=config.max_quarantined_share),
        [summary], id_column="sobject")
    fields = _coverage_frame(coverage_fields, filled, rows)
    checks += runner.validate("coverage", "catalog fields", suites.catalog_fields(fields), [fields], id_column="field")
    coverage = {row.field: round(float(row.populated_share), 4) for row in fields.itertuples()}
    return StageChecks(checks, runner.build_docs(config.data_docs_dir / "static"), rows, coverage)


def _row_expects(stream: Stream, scan: _ObjectScan, watermarks: dict[str, Watermark | None]) -> list[Expect]:
    """The row checks of one object. The pulled window: from the watermark's history start (the whole
    history for reference data) to when the watermark was last set, plus the clock skew allowed between
    the org and us (rows read by Id, such as those a reconciliation recovers, may be newer than the
    watermark itself, never newer than the pull). The start is the whole second the pull asked from (SOQL
    datetimes have no fractions): a row stamped within that second, before the recorded instant, belongs."""
    watermark = watermarks[stream.sobject]
    cursor_from = None if stream.full_history or watermark is None else watermark.history_start.replace(microsecond=0)
    cursor_to = None if watermark is None else max(watermark.value, watermark.updated_at) + CLOCK_SKEW
    return suites.staged_rows(
        stream.sobject, stream.key_prefix, user_field=USER_COLUMN if scan.has_user else None,
        user_label=" or ".join(stream.user_fields),
        cursor=stream.cursor, cursor_from=cursor_from, cursor_to=cursor_to,
        created_field="CreatedDate" if scan.has("CreatedDate") else None, booleans=scan.booleans)


class _ObjectScan:
    """One pass over a staged object: frames of the columns the checks read, in chunks of whole Id
    buckets, counting its rows and how many fill each coverage field on the way."""

    def __init__(self, staging: Staging, stream: Stream, coverage: list[str]) -> None:
        self.staging = staging
        self.stream = stream
        staged = staging.columns_in_every_file(stream.sobject) or set()
        self._staged = staged
        wanted = ["Id", *stream.user_fields, stream.cursor, "CreatedDate", *self.booleans_of(stream, staged)]
        self.check_columns = [name for name in dict.fromkeys(wanted) if name and name in staged]
        # Each row's user (the first user field it fills) is checked as one column: a row may have its
        # owner, or only its creator where the org lacks owners (tasks/screening.py).
        self.has_user = any(name in self.check_columns for name in stream.user_fields)
        self.coverage = [name for name in dict.fromkeys(coverage) if name in staged]
        # A coverage field no staged file has is empty for the whole org.
        self.filled = {name: 0 for name in dict.fromkeys(coverage)}
        self.rows = 0

    @staticmethod
    def booleans_of(stream: Stream, staged: set[str]) -> list[str]:
        # Salesforce names its checkbox fields Is...: IsActive, IsClosed, IsWon, IsConverted, IsEscalated.
        return [name for name in stream.columns if name.startswith("Is") and name[2:3].isupper() and name in staged]

    @property
    def booleans(self) -> list[str]:
        return self.booleans_of(self.stream, self._staged)

    def has(self, column: str | None) -> bool:
        return column is not None and column in self.check_columns

    def frames(self) -> Iterator[pd.DataFrame]:
        if not self.check_columns:
            return
        columns = list(dict.fromkeys([*self.check_columns, *self.coverage]))
        pending: list[pa.Table] = []
        pending_rows = 0
        for bucket in self.staging.buckets(self.stream.sobject, columns):
            if not bucket.num_rows:
                continue
            self.rows += bucket.num_rows
            for name in self.coverage:
                self.filled[name] += _filled(bucket[name])
            checked = bucket.select(self.check_columns)
            if self.has_user:
                checked = checked.append_column(USER_COLUMN, row_users(checked, self.stream)[0])
            pending.append(checked)
            pending_rows += bucket.num_rows
            if pending_rows >= CHUNK_ROWS:
                yield _frame(pending)
                pending, pending_rows = [], 0
        if pending:
            yield _frame(pending)


def _filled(column: pa.ChunkedArray) -> int:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return int(pc.sum(pc.and_(pc.is_valid(column), pc.not_equal(column, ""))).as_py() or 0)
    return len(column) - column.null_count


def _frame(tables: list[pa.Table]) -> pd.DataFrame:
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return table.to_pandas()


def object_summary(rows: dict[str, int], baseline: dict[str, int], pruned: dict[str, int],
                    quarantine: dict[str, dict[str, int]], samples: dict[str, list[str]],
                    config: ValidationConfig) -> pd.DataFrame:
    """One row per object: rows staged against the last good run's (less what pulls since pruned by age:
    that is history leaving the window, not a loss), and rows quarantined (NaN where not judged: too few
    rows to tell, unless every row of the object is quarantined)."""
    records = []
    for sobject, count in rows.items():
        expected = int(baseline.get(sobject, 0)) - pruned.get(sobject, 0)
        drop = (expected - count) / expected if expected >= config.min_rows_for_drop else math.nan
        reasons = quarantine.get(sobject, {})
        quarantined = sum(reasons.values())
        total = quarantined + count
        judged = total >= config.min_rows_for_share or (quarantined > 0 and count == 0)
        records.append({"sobject": sobject, "rows": count, "baseline_rows": expected, "row_drop": drop,
                        "quarantined": quarantined, "quarantined_share": quarantined / total if judged else math.nan,
                        "reasons": _reasons(reasons), "sample_ids": ", ".join(samples.get(sobject, []))})
    return pd.DataFrame.from_records(records, columns=["sobject", "rows", "baseline_rows", "row_drop", "quarantined",
                                                       "quarantined_share", "reasons", "sample_ids"])


_RECORD_ID = re.compile(r"\b(?=[0-9A-Za-z]*[0-9])[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?\b")


def reason_kinds(reasons: dict[str, int]) -> dict[str, int]:
    """Quarantine reasons (reason -> records) by kind: the record Ids in them (a missing user's) taken out,
    so a thousand users who never arrived are one line."""
    kinds: dict[str, int] = {}
    for reason, count in reasons.items():
        for part in reason.split("; "):
            kind = _RECORD_ID.sub("...", part)
            kinds[kind] = kinds.get(kind, 0) + count
    return dict(sorted(kinds.items(), key=lambda item: -item[1]))


def _reasons(reasons: dict[str, int]) -> str:
    return "; ".join(sorted(reason_kinds(reasons)))


def _coverage_frame(fields: dict[tuple[str, str], list[str]], filled: dict[tuple[str, str], int],
                    rows: dict[str, int]) -> pd.DataFrame:
    records = []
    for (sobject, field), rates in fields.items():
        total = rows.get(sobject, 0)
        if not total:
            continue  # an object with no rows at all: nothing tells whether the org fills the field
        shown = ", ".join(rates[:4]) + (f" and {len(rates) - 4} more" if len(rates) > 4 else "")
        records.append({"field": f"{sobject}.{field}", "features": shown,
                        "populated_share": filled.get((sobject, field), 0) / total})
    return pd.DataFrame.from_records(records, columns=["field", "features", "populated_share"])


# --- features --------------------------------------------------------------------------------------------

def check_features(features_file: Path, staging_config: StagingConfig, config: ValidationConfig, catalog: Catalog,
                   run_name: str, *, docs: bool = True) -> StageChecks:
    """The active users' features: one row each, no missing values, no negatives, sane bounds. `docs`: write
    the stage's GX Data Docs site (a backfill leaves it out for each of its dates: see `record`)."""
    features = pd.read_parquet(features_file)
    active_users = _active_user_count(staging_config)
    frame = features[features["IsActive"].astype(bool)].reset_index()
    units = {feature.name: feature.unit for feature in FEATURES}
    runner = GxRunner(stage_docs_dir(config, run_name, "features") if docs else None)
    checks = runner.validate("features", "features", suites.features(active_users=active_users), [frame[["Id"]]],
                             id_column="Id")
    columns = suites.feature_columns(frame, units, catalog.features, unavailable_features(features),
                                     share_unit=SHARE, rate_unit=PER_30_DAYS, active_users=active_users)
    checks += runner.validate("features", "feature columns", suites.feature_checks(columns), [columns],
                              id_column="feature")
    return StageChecks(checks, runner.build_docs(config.data_docs_dir / "static"))


def _active_user_count(staging_config: StagingConfig) -> int:
    """Active users as staging holds them: the truth the features and assignments are held to."""
    users = Staging.from_config(staging_config).read_arrow("User", ["Id", "IsActive"])
    return int(pc.sum(pc.fill_null(users["IsActive"], False)).as_py() or 0)


# --- assignments and guardrails --------------------------------------------------------------------------

def check_assignments(candidates_file: Path, features_file: Path, staging_config: StagingConfig,
                      state_config: StateConfig, config: ValidationConfig, catalog: Catalog, as_of: datetime,
                      run_name: str, *, forced: Collection[str] = (), docs: bool = True) -> StageChecks:
    """The active users' candidate assignments, then the guardrails against the last good run (`docs`: as
    for `check_features`)."""
    candidates = pd.read_parquet(candidates_file)
    active = pd.read_parquet(features_file, columns=["IsActive"])
    active_ids = active.index[active["IsActive"].astype(bool)]
    frame = candidates[candidates.index.isin(active_ids)].rename_axis("user_id").reset_index()
    runner = GxRunner(stage_docs_dir(config, run_name, "assignments") if docs else None)
    expects = suites.assignments(catalog.labels, UNASSIGNED, active_users=_active_user_count(staging_config))
    checks = runner.validate("assignments", "assignments", expects,
                             [frame[["user_id", "persona", "score", "confidence", "reason"]]], id_column="user_id")
    with StateStore.from_config(state_config) as state:
        # The last good run: the latest stored assignments up to this as-of (a rerun of the same as-of
        # is compared with the earlier run of it).
        baseline = state.latest_assignments(until=as_of)
    checks += check_guardrails(candidates["persona"], baseline["persona"] if len(baseline) else None, active_ids,
                               config, unassigned=UNASSIGNED, forced=forced)
    return StageChecks(checks, runner.build_docs(config.data_docs_dir / "static"))


# --- the ledger ------------------------------------------------------------------------------------------

def record(state_config: StateConfig, config: ValidationConfig, run_id: str, stage: StageChecks, *,
           docs: bool = True) -> Path | None:
    """Keeps a stage's checks in the run ledger and rewrites the run's Data Docs index; raises
    ValidationFailed when a check failed. Returns the index page.

    `docs` False (each date of a backfill): the index page is written only when a check of the run failed
    or warned, so a backfill of many dates neither fills the disk nor pushes the nightly runs' Data Docs
    out of the newest `data_docs_keep`; the ledger keeps every check either way. Returns None then."""
    with StateStore.from_config(state_config) as state:
        state.ensure_schema()
        state.save_checks(run_id, [asdict(check) for check in stage.checks])
        every = [Check(**check) for check in state.checks(run_id)]
        if not docs and not any(check.status in ("failed", "warned") for check in every):
            return None
        index = write_index(config.data_docs_dir / run_id, f"run {run_id}", every).resolve()
        state.set_data_docs(run_id, str(index))
    prune_data_docs(config)
    for check in stage.warned:
        log.warning("check warned: %s", check.message)
    if stage.failed:
        raise ValidationFailed(failure_message(stage.failed, str(index)),
                               failed=[check.name for check in stage.failed], data_docs=str(index))
    return index


def prune_data_docs(config: ValidationConfig) -> list[Path]:
    """Deletes the Data Docs of all but the newest `data_docs_keep` runs (and validations); returns what
    went. The ledger keeps every run's checks; only the HTML goes."""
    root = config.data_docs_dir
    if not root.is_dir():
        return []
    runs = sorted((entry for entry in root.iterdir() if entry.is_dir() and not entry.is_symlink()
                   and entry.name != "static"), key=lambda entry: entry.stat().st_mtime, reverse=True)
    old = runs[config.data_docs_keep:]
    for entry in old:
        shutil.rmtree(entry, ignore_errors=True)
    return old


def write_index(directory: Path, title: str, checks: list[Check]) -> Path:
    """A plain HTML page of every check of a run, failed first, linking each stage's GX Data Docs."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = "\n".join(
        f"<tr class='{check.status}'><td>{check.status}</td><td>{check.stage}</td><td>{html.escape(check.message)}</td>"
        f"<td>{html.escape(check.observed)}</td><td>{html.escape(check.limit)}</td>"
        f"<td>{html.escape(', '.join(check.samples))}</td></tr>"
        for check in sorted(checks, key=lambda check: (STATUS_ORDER[check.status], STAGES.index(check.stage))))
    links = " · ".join(f"<a href='{stage}/index.html'>{stage}</a>" for stage in ("staging", "features", "assignments")
                       if (directory / stage / "index.html").exists())
    page = directory / "index.html"
    temporary = page.with_suffix(".tmp")
    temporary.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>persona-sync checks, {html.escape(title)}</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px;text-align:left;vertical-align:top}}
tr.failed{{background:#fdd}} tr.warned{{background:#ffd}} tr.forced{{background:#fed}}</style></head><body>
<h1>persona-sync checks, {html.escape(title)}</h1>
<p>{sum(c.status == 'failed' for c in checks)} failed, {sum(c.status == 'warned' for c in checks)} warned,
{sum(c.status == 'forced' for c in checks)} forced, {sum(c.status == 'passed' for c in checks)} passed.
Great Expectations Data Docs by stage: {links or 'none'}</p>
<table><tr><th>status</th><th>stage</th><th>check</th><th>observed</th><th>limit</th><th>sample Ids</th></tr>
{rows}
</table></body></html>
""", encoding="utf-8")
    temporary.replace(page)
    return page



# --- checking without a run -----------------------------------------------------------------------------

def validate_now(staging_config: StagingConfig, state_config: StateConfig, config: ValidationConfig,
                 personas: PersonasConfig, streams: list[Stream], as_of: datetime, *,
                 history_days: int) -> tuple[list[Check], Path]:
    """Every check of a run, on what is staged now and on the features and assignments a run at `as_of`
    would decide, written nowhere but a scratch folder and the Data Docs (`persona-sync validate`).

    The state database is only read (the last good run, the quarantine, the current assignments).
    Returns the checks and the Data Docs index page.
    """
    if "User" not in Staging.from_config(staging_config).objects():
        raise ConfigurationError(f"nothing is staged under {staging_config.root}: run `persona-sync run` first")
    catalog = catalog_for(personas)
    run_name = f"validate-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    checks = check_staging(staging_config, state_config, config, streams, catalog, run_name,
                           history_days=history_days).checks
    with tempfile.TemporaryDirectory(prefix="persona-sync-validate-") as scratch:
        local = personas.model_copy(update={"features_dir": Path(scratch) / "features"})
        features_file = compute_and_store_features(local, staging_config, as_of)
        checks += check_features(features_file, staging_config, config, catalog, run_name).checks
        summary = assign_candidates(local, state_config, features_file, run_name, as_of)
        checks += check_assignments(summary.assignments_path, features_file, staging_config, state_config, config,
                                    catalog, as_of, run_name).checks
    index = write_index(config.data_docs_dir / run_name, run_name, checks)
    prune_data_docs(config)
    return checks, index
