"""The `persona-sync` command. Every command has --help; settings come from PERSONA_SYNC_* variables."""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

from core.errors import PersonaSyncError, ValidationFailed
from core.settings import Settings, load_settings
from persona_sync.embedded_org import exported, org_for_command
from sandbox.cli import CommandDefaults, sandbox_commands
from sandbox.runner import SandboxError
from sandbox.store import StoreError

app = typer.Typer(
    help="persona-sync: turn what people do in Salesforce into persona fields every system can act on.\n\n"
         "Settings come from PERSONA_SYNC_* environment variables (or .env). With no org configured, the "
         "commands that talk to an org use the local synthetic sandbox org, and say so first.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(sandbox_commands(lambda: _sandbox_defaults(load_settings())), name="sandbox")
console = Console()
# What the commands print instead of a traceback: our own errors, and the sandbox's when it cannot start.
_EXPECTED_ERRORS = (PersonaSyncError, SandboxError, StoreError)


@app.callback()
def main(quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log only warnings and errors.")] = False) -> None:
    """persona-sync."""
    _configure_logging(logging.WARNING if quiet else logging.INFO)


def _configure_logging(level: int) -> None:
    """Our own loggers at `level` (other libraries at WARNING), through rich so they sit well with progress bars."""
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.WARNING, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)], force=True)
    for name in ("persona_sync", "connectors", "tasks", "flows", "expectations"):
        logging.getLogger(name).setLevel(level)


@app.command()
def demo() -> None:
    """Query the org (with none configured, the local sandbox org) through simple-salesforce over HTTPS:
    REST, relationship fields, Bulk API 2.0 and the org's limits."""
    from connectors.salesforce import SalesforceClient

    started = time.monotonic()
    try:
        with _org(load_settings()) as resolved:
            console.print(f"Org: {resolved.salesforce_login_url}  (ready in {time.monotonic() - started:.1f} s)")
            _show_org(SalesforceClient(resolved.salesforce()), resolved.home)
    except _EXPECTED_ERRORS as error:
        _fail(error)


@app.command()
def query(
    soql: Annotated[str, typer.Argument(help="A SOQL query, e.g. \"SELECT Id, Name FROM User LIMIT 5\".")],
    bulk: Annotated[bool, typer.Option(help="Run it as a Bulk API 2.0 query job.")] = False,
    limit: Annotated[int, typer.Option(help="Print at most this many rows.")] = 20,
) -> None:
    """Run a SOQL query against the configured org and print the rows."""
    from connectors.salesforce import SalesforceClient
    from connectors.salesforce.soql import sobject_of

    try:
        sobject = sobject_of(soql)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="SOQL") from error
    try:
        with _org(load_settings()) as resolved:
            client = SalesforceClient(resolved.salesforce())
            records = (_bulk_records(client, soql, sobject, resolved.home) if bulk
                       else [record for page in client.rest_pages(soql, sobject=sobject) for record in page])
    except _EXPECTED_ERRORS as error:
        _fail(error)
    _print_records(records[:limit], title=f"{len(records):,} rows")


def _bulk_records(client, soql: str, sobject: str, home: Path) -> list[dict]:
    """A Bulk API 2.0 query's rows as dicts (each page downloaded under <home>, parsed, and removed)."""
    from connectors.salesforce.pages import csv_page_to_text_table

    return [row for page in client.bulk_pages(soql, sobject=sobject, download_dir=home / "downloads")
            for row in csv_page_to_text_table(page.path).to_pylist()]


@app.command()
def pull(
    full_refresh: Annotated[bool, typer.Option(
        help="Pull the whole history window again instead of what changed since the last pull.")] = False,
    mode: Annotated[Optional[str], typer.Option(
        help="Force rest or bulk for every object. [default: PERSONA_SYNC_PULL_MODE, auto]")] = None,
    sobject: Annotated[Optional[list[str]], typer.Option(
        "--object", help="Pull only this object (repeatable). [default: every declared stream]")] = None,
    reconcile: Annotated[bool, typer.Option(
        help="Also compare the org's Ids with staging now: remove rows the org purged from its recycle bin, read "
             "rows staging lacks. [default: every PERSONA_SYNC_PULL_RECONCILE_DAYS days]")] = False,
) -> None:
    """Pull users and their activity from the org into local staging (incremental; REST or Bulk API 2.0)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from connectors.salesforce.streams import streams_by_name
    from tasks.pull import run_pull

    if mode not in (None, "auto", "rest", "bulk"):
        raise typer.BadParameter("use auto, rest or bulk", param_hint="--mode")
    try:
        streams = streams_by_name(sobject)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--object") from error
    settings = load_settings(pull_mode=mode)
    progress = Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=False)
    bars: dict[str, int] = {}

    def on_rows(name: str, rows: int, expected: int | None) -> None:
        if name not in bars:
            bars[name] = progress.add_task(name, total=expected or None)
        progress.update(bars[name], completed=rows, total=max(expected or 0, rows) or None)

    try:
        with _org(settings) as resolved, progress:
            report = run_pull(resolved.salesforce(), resolved.state(), resolved.staging(), resolved.pull(), streams,
                              full_refresh=full_refresh, reconcile=reconcile, on_rows=on_rows)
    except _EXPECTED_ERRORS as error:
        _fail(error)
    table = Table(title=f"Pull {report.run_id}: {report.rows:,} rows in {report.seconds:.1f} s, "
                        f"{report.api_calls:,} API calls")
    columns = ("object", "mode", "rows", "deleted", "quarantined", "held", "purged", "API calls", "seconds")
    for column in columns:
        table.add_column(column, justify="left" if column in ("object", "mode") else "right")
    for result in sorted(report.streams, key=lambda item: item.sobject):
        table.add_row(result.sobject, result.mode, f"{result.rows:,}", f"{result.deleted:,}",
                      f"{result.quarantined:,}", f"{result.held:,}", f"{result.purged:,}", f"{result.api_calls:,}",
                      f"{result.seconds:.1f}")
    console.print(table)
    for gap in report.gaps():
        console.print(f"[yellow]{gap}[/yellow]")


catalog_app = typer.Typer(help="Check persona catalogs.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("check")
def catalog_check(path: Annotated[Path, typer.Argument(help="The catalog YAML file to check.")]) -> None:
    """Validate a persona catalog: every problem with its file, line and field."""
    from personas.catalog import CatalogError, load_catalog

    try:
        catalog = load_catalog(path)
    except CatalogError as error:
        console.print(f"[red]{path}: the catalog has problems[/red]\n{error}", highlight=False)
        raise typer.Exit(2) from error
    console.print(f"{path}: OK\n{catalog.summary()}", highlight=False)


@app.command()
def run(
    as_of: Annotated[Optional[datetime], typer.Option(
        help="Compute personas as of this moment (UTC); activity after it is ignored. [default: today 00:00 UTC, "
             "the night being synced]")] = None,
    full_refresh: Annotated[bool, typer.Option(help="Pull the whole history window again.")] = False,
    force: Annotated[Optional[list[str]], typer.Option(
        "--force", metavar="GUARDRAIL", help="Let this run exceed a guardrail (persona_changes, assigned_share, "
        "distribution_drift, persona_loss); repeat for several. Needs --reason. Data-quality checks cannot be "
        "forced.")] = None,
    reason: Annotated[Optional[str], typer.Option(help="Why the forced guardrails may be exceeded (kept in the "
                                                       "run ledger).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Compute everything up to the push plan and show it: which users "
                                               "would change, how, and in how many API calls. Stores no assignment "
                                               "and writes nothing to the org.")] = False,
) -> None:
    """Run the nightly sync once (pull -> check -> features -> check -> assign -> check -> store -> push
    the persona fields and community roles) as a Prefect flow against the configured org. A failed check stops the run before anything is written
    and names the check, what was observed and the limit (exit code 1).

    With no org configured that is the local synthetic sandbox org (said on the first line), and the
    evaluation against the sandbox's truth is printed at the end. The flow runs on the Prefect API you
    configured (PREFECT_API_URL or a Prefect profile); with none, on a temporary local one under <home>/prefect.
    """
    settings = load_settings()
    moment = as_of.replace(tzinfo=as_of.tzinfo or timezone.utc) if as_of else None
    try:
        with _org(settings) as resolved, exported(resolved, settings):
            _use_local_prefect_unless_configured(resolved)
            from flows.nightly_sync import nightly_sync

            summary = nightly_sync(as_of=moment, full_refresh=full_refresh, force=force or [], force_reason=reason,
                                   dry_run=dry_run)
    except ValidationFailed as failed:
        console.print(f"[red]{failed}[/red]", highlight=False)
        raise typer.Exit(1) from failed
    except _EXPECTED_ERRORS as error:
        _fail(error)
    if summary is None:  # only a deployment's duplicate run of a night already synced
        return
    table = Table(title=f"Personas as of {summary.as_of:%Y-%m-%d %H:%M} UTC (catalog {summary.catalog_version}, "
                        f"run {summary.run_id})")
    table.add_column("persona")
    table.add_column("users", justify="right")
    for persona, users in sorted(summary.distribution.items(), key=lambda item: -item[1]):
        table.add_row(persona, f"{users:,}")
    console.print(table)
    _print_run_checks(settings, summary.run_id)
    _print_push(settings, summary.run_id)
    truth = settings.sandbox_data_dir / "truth" / "truth.csv"
    if not settings.org_configured and truth.exists():
        # A run that reused an earlier one's decisions stored none of its own: evaluate the ones it pushed.
        _print_evaluation(settings, summary.stored_run_id or summary.run_id, truth, None)
    _print_where_to_look(resolved, summary)


def _print_where_to_look(settings: Settings, summary) -> None:  # type: ignore[no-untyped-def]
    """Where the run can be seen afterwards: the Prefect UI, its summary, Data Docs, and our databases."""
    import os

    state = _state(settings)
    run = state.run(summary.run_id)
    api = os.environ.get("PREFECT_API_URL", "")
    ui = (f"{api.removesuffix('/api')} (flow run nightly-sync-{summary.as_of:%Y-%m-%d}: its artifacts "
          "`nightly-sync`, `persona-distribution`, `push`, `changed-users`)") if api else (
        f"the runs are kept in {os.environ.get('PREFECT_HOME', '~/.prefect')}; browse them with "
        f"`PREFECT_HOME={os.environ.get('PREFECT_HOME', '~/.prefect')} .venv/bin/prefect server start`, then "
        "http://127.0.0.1:4200 (the artifact `nightly-sync` is the run's summary)")
    community = settings.community()
    lines = [f"Prefect UI: {ui}",
             f"Data Docs: {run.data_docs if run and run.data_docs else 'none (the checks of the run it reused)'}",
             f"State database (run ledger, assignments, history): {state.where}",
             f"Staging: {settings.staging().root}",
             f"Community role table: {community.table + ' in ' + _hidden(community.url) if community else 'none configured'}",
             "Later: `persona-sync status` (recent runs), `persona-sync history USER_ID`, `persona-sync explain USER_ID`"]
    console.print("\nWhere to look:\n" + "\n".join(f"  {line}" for line in lines), highlight=False, soft_wrap=True)


def _hidden(url) -> str:  # type: ignore[no-untyped-def]
    """A database URL with its password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url.get_secret_value()).render_as_string(hide_password=True)


@app.command()
def backfill(
    start: Annotated[datetime, typer.Argument(formats=["%Y-%m-%d"], help="The first date (YYYY-MM-DD, UTC).")],
    end: Annotated[datetime, typer.Argument(formats=["%Y-%m-%d"], help="The last date (YYYY-MM-DD), included.")],
    step_days: Annotated[int, typer.Option(help="Days between two as-ofs.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Recompute the dates a backfill did already (else skipped).")] = False,
    push_latest: Annotated[bool, typer.Option(help="Push the last date's personas to the org's User records and "
                                                   "the community table, when no newer as-of is stored.")] = False,
    concurrency: Annotated[int, typer.Option(help="Dates whose features are computed at once (1-8).")] = 2,
    force: Annotated[Optional[list[str]], typer.Option("--force", metavar="GUARDRAIL", help="A guardrail the dates "
                                                       "may exceed (repeatable); needs --reason.")] = None,
    reason: Annotated[Optional[str], typer.Option(help="Why the forced guardrails may be exceeded.")] = None,
) -> None:
    """Compute personas as of every date from START to END (midnight UTC) from what is staged, as the
    `backfill` Prefect flow: each date checked, stored, and threaded into the persona history. Nothing is
    pulled; nothing is written to Salesforce or the community table unless --push-latest.

    Dates done by an earlier backfill are skipped (resume after an interruption by running it again); a
    range reaching before the staged history is refused with the first date that can be computed. Exit
    code 1 when a date fails its checks (the dates after it are not computed).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tasks.backfill import as_ofs

    settings = load_settings()
    try:
        dates = as_ofs(start.date(), end.date(), step_days, datetime.now(timezone.utc))
    except _EXPECTED_ERRORS as error:
        _fail(error)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console)
    try:
        with _org(settings) if push_latest else nullcontext(settings) as resolved, exported(resolved, settings), \
                progress, _LedgerProgress(resolved, dates, progress):
            _use_local_prefect_unless_configured(resolved)
            from flows.backfill import backfill as backfill_flow

            rows = backfill_flow(start=start.date(), end=end.date(), step_days=step_days, overwrite=overwrite,
                                 push_latest=push_latest, concurrency=concurrency, force=force or [],
                                 force_reason=reason)
    except ValidationFailed as failed:
        console.print(f"[red]{failed}[/red]", highlight=False)
        raise typer.Exit(1) from failed
    except _EXPECTED_ERRORS as error:
        _fail(error)
    table = Table(title=f"Backfill {start:%Y-%m-%d} to {end:%Y-%m-%d}")
    for column in ("date", "status", "run", "users", "changed since the date before", "largest personas"):
        table.add_column(column, justify="right" if column in ("users", "changed since the date before") else "left")
    for row in rows:
        table.add_row(*(str(row[column]) for column in ("date", "status", "run", "users",
                                                        "changed since the date before", "largest personas")))
    console.print(table)


class _LedgerProgress:
    """A progress bar of a backfill's dates, read from the run ledger once a second (the flow runs in this
    process; the ledger is where its dates are recorded as done)."""

    def __init__(self, settings: Settings, dates: list[datetime], progress) -> None:
        import threading

        self._keys = [f"backfill:{as_of:%Y-%m-%d}" for as_of in dates]
        self._settings = settings
        self._store = None  # opened by the first poll, closed at the end
        self._progress = progress
        self._bar = progress.add_task(f"backfill, {len(dates)} date(s)", total=len(dates))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True, name="backfill-progress")

    def __enter__(self) -> "_LedgerProgress":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        if self._store is not None:
            self._store.close()

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            self._update()

    def _update(self) -> None:
        try:
            self._store = self._store or _state(self._settings)
            done = len(self._store.runs_by_key("backfill", self._keys))
        except Exception:  # a progress bar must never stop the backfill
            return
        self._progress.update(self._bar, completed=done)


@app.command()
def validate(
    as_of: Annotated[Optional[datetime], typer.Option(
        help="Check the features and assignments a run at this moment (UTC) would decide. [default: today 00:00 "
             "UTC, as a run]")] = None,
) -> None:
    """Run every check and guardrail on what is staged now, and on the features and assignments a run
    would decide from it, without writing to the state database, Salesforce or any SQL target.

    Prints the checks that did not pass and where the Data Docs are (<home>/data-docs/validate-<time>/);
    exits 1 when a check fails, as the run would stop.
    """
    from connectors.salesforce.streams import STREAMS
    from tasks.validation import validate_now

    settings = load_settings()
    moment = as_of.replace(tzinfo=as_of.tzinfo or timezone.utc) if as_of else datetime.combine(
        datetime.now(timezone.utc).date(), datetime.min.time(), timezone.utc)
    try:
        checks, index = validate_now(settings.staging(), settings.state(), settings.validation(),
                                     settings.personas(), list(STREAMS), moment,
                                     history_days=settings.pull_history_days)
    except _EXPECTED_ERRORS as error:
        _fail(error)
    _print_checks(checks, index)
    if any(check.stops_the_run for check in checks):
        raise typer.Exit(1)


@app.command(name="rollback")
def rollback_command(run_id: Annotated[str, typer.Argument(help="The run to undo (from the run ledger).")]) -> None:
    """Put the org's persona fields and the community roles back as they were before RUN_ID: a user whose
    fields someone (or a later run) changed since is left as it is (and listed), roles others granted are
    never touched. Only the newest run that wrote or stored assignments can be rolled back. The rollback
    is recorded as a run of its own."""
    settings = load_settings()
    try:
        with _org(settings) as resolved, exported(resolved, settings):
            _use_local_prefect_unless_configured(resolved)
            from flows.rollback import rollback_run

            counts = rollback_run(run_id=run_id)
    except _EXPECTED_ERRORS as error:
        _fail(error)
    console.print(f"Rolled back run {run_id}: {counts['restored']:,} users' persona fields restored, "
                  f"{counts['skipped_changed_since']:,} left because they changed since, "
                  f"{len(counts['failed']):,} failed; community roles: {counts['roles_revoked']:,} revoked, "
                  f"{counts['roles_granted_again']:,} granted again.", highlight=False)


@app.command(name="db")
def db_command(action: Annotated[str, typer.Argument(help="upgrade: apply the state database's migrations.")]) -> None:
    """Manage persona-sync's own database: `persona-sync db upgrade` applies its Alembic migrations (runs
    also do this by themselves before they start)."""
    if action != "upgrade":
        console.print(f"[red]error:[/red] unknown action {action!r}; the one action is: upgrade", highlight=False)
        raise typer.Exit(2)
    from connectors.state.schema import head_revision

    settings = load_settings()
    try:
        state = _state(settings)
    except _EXPECTED_ERRORS as error:
        _fail(error)
    console.print(f"The state database {state.where} is at the newest revision ({head_revision()}).",
                  highlight=False)


@app.command()
def status(limit: Annotated[int, typer.Option(help="How many runs to show, newest first.")] = 10) -> None:
    """Recent runs from the run ledger: flow, as-of, state, how long, rows pulled, users changed, records
    written and failed, API calls, and why a failed run failed."""
    settings = load_settings()
    try:
        runs = _state(settings).runs(limit=limit)
    except _EXPECTED_ERRORS as error:
        _fail(error)
    if not runs:
        console.print(f"No runs yet in {settings.home}: `persona-sync run` makes the first.", highlight=False)
        return
    console.print("Recent runs, newest first:", highlight=False)
    for run in runs:
        counts = run.counts or {}
        push = counts.get("push") or {}
        took = f"{(run.finished_at - run.started_at).total_seconds():.0f} s" if run.finished_at else "running"
        as_of = str(run.parameters.get("as_of") or run.parameters.get("run_id") or "")[:16]
        facts = [f"{label} {_count(value)}" for label, value in (
            ("pulled", counts.get("rows")), ("changed", push.get("users_changed")), ("written", push.get("written")),
            ("failed", sum(push["failed"].values()) if push.get("failed") is not None else None),
            ("API calls", run.api_calls)) if value is not None]
        console.print(f"  {run.id[:8]}  {run.flow:<12} {as_of:<16} {run.status:<11} {took:>7}"
                      + (f"  {', '.join(facts)}" if facts else ""), highlight=False, soft_wrap=True)
        if run.status == "failed" and run.error:
            console.print(f"            failed: {run.error.splitlines()[0]}", highlight=False, markup=False,
                          soft_wrap=True)


def _count(value: object) -> str:
    return "" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


@app.command()
def history(user_id: Annotated[str, typer.Argument(help="The Salesforce User Id (15 or 18 characters).")]) -> None:
    """A user's persona story: each persona they held, from when to when, how sure, why, and the run and
    catalog that decided it."""
    try:
        rows = _state(load_settings()).history(user_id)
    except _EXPECTED_ERRORS as error:
        _fail(error)
    if not rows:
        console.print(f"[red]error:[/red] no persona history for {user_id}: no stored run has assigned this user",
                      highlight=False)
        raise typer.Exit(2)
    console.print(f"Persona history of {user_id}:", highlight=False)
    for row in rows:
        until = f"{row['valid_to']:%Y-%m-%d %H:%M}" if row["valid_to"] else "now"
        console.print(f"  {row['valid_from']:%Y-%m-%d %H:%M} -> {until}: {row['persona']} (score {row['score']:.2f}, "
                      f"confidence {row['confidence']:.2f}; catalog {row['catalog_version']}, run {row['run_id']})\n"
                      f"    {row['reason']}", highlight=False, markup=False)


@app.command()
def quarantine(
    sobject: Annotated[Optional[str], typer.Option("--object", help="Only this object (API name).")] = None,
    limit: Annotated[int, typer.Option(help="Records to list.")] = 10,
) -> None:
    """What the pull kept out of staging and why: counts per object and reason, then some records with
    their values. A record leaves the quarantine when it comes back clean (after a fix in the org, the
    next pull of it, or `persona-sync run --full-refresh`)."""
    from tasks.validation import reason_kinds

    settings = load_settings()
    state = _state(settings)
    counts = state.quarantine_counts()
    if sobject:
        counts = {name: reasons for name, reasons in counts.items() if name == sobject}
    if not counts:
        console.print(f"Nothing in quarantine{f' for {sobject}' if sobject else ''} ({settings.home}).",
                      highlight=False)
        return
    table = Table(title="Quarantined records")
    for column in ("object", "records", "why"):
        table.add_column(column, justify="right" if column == "records" else "left")
    for name, reasons in sorted(counts.items()):
        for reason, count in reason_kinds(reasons).items():
            table.add_row(name, f"{count:,}", reason)
    console.print(table)
    for record in state.quarantined(sobject, limit=limit):
        values = ", ".join(f"{key}={value}" for key, value in list(record.raw.items())[:6])
        console.print(f"{record.sobject} {record.record_id or '(no Id)'}: {record.reason} [{values}]",
                      highlight=False, markup=False)


def _print_push(settings: Settings, run_id: str) -> None:
    run = _state(settings).run(run_id)
    push = (run.counts or {}).get("push") if run else None
    if not push:
        return
    if push["dry_run"]:
        console.print(f"Dry run: {push['users_changed']:,} of {push['users_compared']:,} active users would be "
                      f"written in {push['calls_to_write']:,} API call(s); {push['conflicts']:,} kept as edited by "
                      "hand. Nothing was stored or written.", highlight=False)
    else:
        console.print(f"Push: {push['users_changed']:,} of {push['users_compared']:,} active users differed; "
                      f"{push['written']:,} written, {sum(push['failed'].values()):,} failed"
                      f"{' ' + str(push['failed']) if push['failed'] else ''}, "
                      f"{push['conflicts']:,} kept as edited by hand ({push['api_calls']:,} API calls).",
                      highlight=False)
    for before, after, count in push["transitions"][:15]:
        console.print(f"  {before} -> {after}: {count:,}", highlight=False)
    if push.get("conflicts_sample"):
        console.print(f"  kept as edited by hand: {', '.join(push['conflicts_sample'])}", highlight=False)
    for record_id, status, old, new in push.get("sample", []):
        console.print(f"  e.g. {record_id} ({status}): {old} -> {new}", highlight=False, markup=False)
    roles = (run.counts or {}).get("community")
    if roles:
        verb = "would grant" if roles["dry_run"] else "granted"
        console.print(f"Community roles ({roles['target']}): {verb} {roles['granted']:,}, "
                      f"{'would revoke' if roles['dry_run'] else 'revoked'} {roles['revoked']:,}; "
                      f"{roles['left_to_others']:,} already granted by others, left to them.", highlight=False,
                      soft_wrap=True)


def _print_run_checks(settings: Settings, run_id: str) -> None:
    from expectations.checks import Check

    state = _state(settings)
    run = state.run(run_id)
    reused = (run.counts or {}).get("reused_from") if run else None
    if reused:
        console.print(f"Checks: nothing the personas depend on changed since run {reused}; its checks, features and "
                      "assignments stand (only the push ran).", highlight=False)
        return
    _print_checks([Check(**check) for check in state.checks(run_id)], Path(run.data_docs) if run and run.data_docs
                  else None)


def _print_checks(checks, index: Path | None) -> None:
    counts = {status: sum(check.status == status for check in checks)
              for status in ("passed", "warned", "forced", "skipped", "failed")}
    console.print(f"Checks: " + ", ".join(f"{count} {status}" for status, count in counts.items() if count),
                  highlight=False)
    for check in checks:
        if check.status in ("failed", "warned", "forced"):
            colour = "red" if check.status == "failed" else "yellow"
            samples = f" (e.g. {', '.join(check.samples)})" if check.samples else ""
            console.print(f"  [{colour}]{check.status}[/{colour}] {check.stage}: {check.message}{samples}",
                          highlight=False)
    if index is not None:
        console.print(f"Data Docs: {index.resolve()}", highlight=False, soft_wrap=True)


@app.command()
def explain(
    user_id: Annotated[str, typer.Argument(help="The Salesforce User Id (15 or 18 characters).")],
    run_id: Annotated[Optional[str], typer.Option("--run", help="The run whose features to use. [default: latest]")] = None,
) -> None:
    """Print every persona's score for one user, condition by condition, and why the user got theirs."""
    import pandas as pd

    from personas.rules import explain as explain_user
    from tasks.personas import catalog_for, features_path

    settings = load_settings()
    assignments = _assignments_or_exit(settings, run_id)
    as_of = assignments["as_of"].iloc[0]
    features = pd.read_parquet(features_path(settings.personas(), as_of))
    key = _find_user(user_id, features.index)
    if key is None:
        console.print(f"[red]error:[/red] no user {user_id} in the features of {as_of:%Y-%m-%d %H:%M} UTC")
        raise typer.Exit(2)
    console.print(explain_user(key, features, catalog_for(settings.personas())), highlight=False)
    if key in assignments.index:
        console.print(f"Assigned in run {assignments.loc[key, 'run_id']}: {assignments.loc[key, 'reason']}",
                      highlight=False)


@app.command()
def calibrate(
    labels: Annotated[Path, typer.Option(help="CSV with columns Id,persona: users whose persona you know (a few "
                                              "per persona; the persona's label or id).", exists=True,
                                         dir_okay=False)],
    out: Annotated[Optional[Path], typer.Option(
        help="Where to write the calibrated catalog. [default: <home>/catalogs/catalog-<version>.yaml]")] = None,
    folds: Annotated[int, typer.Option(help="Cross-validation folds over the labelled users.")] = 5,
) -> None:
    """Fit the catalog's thresholds and weights (within bounds) to users whose persona you know, on the latest
    run's features; print macro-F1 over them before and cross-validated after, and write the calibrated
    catalog as a new version (with its diff). Use it by setting PERSONA_SYNC_CATALOG_FILE to the file."""
    from tasks.personas import calibrate_catalog

    settings = load_settings()
    try:
        done = calibrate_catalog(settings.personas(), settings.state(), labels, out, folds=folds)
    except _EXPECTED_ERRORS as error:
        _fail(error)
    report = done.report
    console.print(f"Calibrated on {report.labelled} labelled users of {report.personas} personas (features as of "
                  f"{done.as_of:%Y-%m-%d %H:%M} UTC), {report.folds}-fold cross-validation:", highlight=False)
    console.print(f"  macro-F1 over the labelled users: before {report.before:.3f}, after {report.cross_validated:.3f} "
                  f"(cross-validated: each fold fitted without it), {report.fitted:.3f} fitted on all of them",
                  highlight=False)
    console.print("  Calibration helped." if report.helped else
                  "  Calibration did not help on users it was not fitted to: keep the catalog as written, or "
                  "label more users.", highlight=False)
    console.print(done.diff or "  (no number moved)", highlight=False, markup=False)
    console.print(f"Wrote {done.path}; to use it: PERSONA_SYNC_CATALOG_FILE={done.path}", highlight=False,
                  soft_wrap=True)


@app.command()
def evaluate(
    truth: Annotated[Path, typer.Option(help="CSV with columns Id,persona: the true personas.", exists=True,
                                        dir_okay=False)],
    run_id: Annotated[Optional[str], typer.Option("--run", help="The run to evaluate. [default: latest]")] = None,
    picture: Annotated[Optional[Path], typer.Option(
        "--png", help="Where to save the confusion matrix. [default: <home>/evaluation-<run>.png]")] = None,
) -> None:
    """Compare a run's assignments with the truth: accuracy, macro F1, per-persona precision and recall,
    confusion matrix (printed, and saved as a PNG), and how many are right in each confidence band."""
    settings = load_settings()
    assignments = _assignments_or_exit(settings, run_id)
    _print_evaluation(settings, str(assignments["run_id"].iloc[0]), truth, picture)


def _print_evaluation(settings: Settings, run_id: str, truth_file: Path, picture: Path | None) -> None:
    import pandas as pd

    from personas.evaluation import evaluate as compare, save_confusion_png
    from tasks.personas import catalog_for, features_path

    state = _state(settings)
    assignments = state.assignments(run_id)
    if assignments.empty:  # a dry run stores none
        console.print(f"Run {run_id} stored no assignments (a dry run stores none): nothing to evaluate.",
                      highlight=False)
        return
    features = pd.read_parquet(features_path(settings.personas(), assignments["as_of"].iloc[0]),
                               columns=["IsActive"])
    active = features.index[features["IsActive"].astype(bool)]
    result = compare(assignments, pd.read_csv(truth_file), only=active, labels=catalog_for(settings.personas()).labels)
    console.print(f"Evaluation of run {run_id} against {truth_file} (active users):", highlight=False)
    console.print(result.table(), highlight=False)
    path = save_confusion_png(result, picture or settings.home / f"evaluation-{run_id}.png")
    console.print(f"Confusion matrix saved to {path}", highlight=False)


def _assignments_or_exit(settings: Settings, run_id: str | None):
    """The assignments of `run_id` (default: the latest run), or a clear error when there are none."""
    state = _state(settings)
    assignments = state.assignments(run_id) if run_id else state.latest_assignments()
    if assignments.empty:
        which = f"run {run_id} stored no assignments" if run_id else "no run has stored assignments yet"
        console.print(f"[red]error:[/red] {which}: run `persona-sync run` first")
        raise typer.Exit(2)
    return assignments


def _state(settings: Settings):
    from connectors.state import StateStore

    state = StateStore.from_config(settings.state())
    state.ensure_schema()
    return state


def _sandbox_defaults(settings: Settings) -> CommandDefaults:
    """`persona-sync sandbox ...` follows the same settings as the sandbox the command starts by itself."""
    return CommandDefaults(data_dir=settings.sandbox_data_dir, port=settings.sandbox_port,
                           preset=settings.sandbox_preset, seed=settings.sandbox_seed)


def _org(settings: Settings):
    """The configured org, or the local synthetic sandbox (announced on the first line) when there is none."""
    def announce(message: str) -> None:
        console.print(f"[yellow]{message}[/yellow]", highlight=False)

    return org_for_command(settings, announce)


def _fail(error: BaseException) -> NoReturn:
    console.print(f"[red]error:[/red] {error}", highlight=False)
    raise typer.Exit(2) from error


def _find_user(user_id: str, index) -> str | None:
    """The index entry for a 15- or 18-character id."""
    if user_id in index:
        return user_id
    matches = [candidate for candidate in index if str(candidate)[:15] == user_id[:15]]
    return matches[0] if len(matches) == 1 else None


def _use_local_prefect_unless_configured(settings: Settings) -> None:
    """Flows run on the Prefect API the user configured: PREFECT_API_URL, or the active profile of their
    Prefect home (PREFECT_HOME, else ~/.prefect). With none, on a temporary local Prefect server whose
    state (runs, logs, artifacts) lives under <home>/prefect. Telemetry stays off either way (no internet
    needed). Must run before Prefect is imported: Prefect reads its settings once, at import."""
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if _prefect_api_configured() or "PREFECT_HOME" in os.environ:
        return
    home = (settings.home / "prefect").resolve()
    home.mkdir(parents=True, exist_ok=True)  # Prefect creates its home, but not missing parents of it
    os.environ["PREFECT_HOME"] = str(home)
    # The first start creates its database; on a busy 2-core machine that can take longer than 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _prefect_api_configured() -> bool:
    """Whether PREFECT_API_URL is set, in the environment or in the active Prefect profile."""
    import os
    import tomllib

    if os.environ.get("PREFECT_API_URL"):
        return True
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    profiles_file = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    if not profiles_file.is_file():
        return False
    try:
        profiles = tomllib.loads(profiles_file.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    return bool(profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL"))


def _show_org(client, home: Path) -> None:
    """The demo's tour: the org, counts, five users with relationship fields, a Bulk download, the limits."""
    def rest(soql: str, sobject: str) -> list[dict]:
        return [record for page in client.rest_pages(soql, sobject=sobject) for record in page]

    organization = rest("SELECT Name, OrganizationType, IsSandbox FROM Organization", "Organization")[0]
    console.print(f"Organization: {organization['Name']} ({organization['OrganizationType']})")
    users = client.count("SELECT COUNT() FROM User WHERE IsActive = true", sobject="User")
    tasks = client.count("SELECT COUNT() FROM Task", sobject="Task")
    recent = client.count("SELECT COUNT() FROM Task WHERE CreatedDate = LAST_N_DAYS:30", sobject="Task")
    console.print(f"Active users: {users:,}   Tasks: {tasks:,} ({recent:,} in the last 30 days)")
    sample = rest("SELECT Id, Name, Title, Department, Profile.Name, Manager.Name FROM User "
                  "WHERE IsActive = true ORDER BY Name LIMIT 5", "User")
    _print_records([{"Id": r["Id"], "Name": r["Name"], "Title": r["Title"], "Department": r["Department"],
                     "Profile": (r["Profile"] or {}).get("Name"), "Manager": (r["Manager"] or {}).get("Name")}
                    for r in sample], title="Five users (REST query, relationship fields)")
    started = time.monotonic()
    rows = sum(page.rows for page in client.bulk_pages("SELECT Id, OwnerId, TaskSubtype, CreatedDate FROM Task",
                                                        sobject="Task", download_dir=home / "downloads"))
    console.print(f"Bulk API 2.0: {rows:,} Task rows in {time.monotonic() - started:.2f} s")
    limits = client.limits()["DailyApiRequests"]
    console.print(f"API requests left today: {limits['Remaining']:,} of {limits['Max']:,}  (usage {client.api_usage})")


def _print_records(records: list[dict], title: str) -> None:
    table = Table(title=title)
    columns = list(records[0]) if records else []
    for column in columns:
        table.add_column(column)
    for record in records:
        table.add_row(*["" if record.get(column) is None else str(record.get(column)) for column in columns])
    console.print(table)
