"""The nightly sync: pull -> features -> assign, as one Prefect flow and one run in the ledger.

Read it top to bottom like a recipe; each step is a task (retries and logs in the Prefect UI), and
each task is a thin wrapper over a stage function in `tasks/` that can be tested without Prefect.
Later stages (validation, push, history) extend this flow.

With no settings, the flow runs against the local sandbox org (started for the run when none is
running) and keeps its state under `.persona-sync/`.
"""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from connectors.salesforce.streams import streams_by_name
from connectors.state import StateStore
from persona_sync.local_sandbox import org_settings
from persona_sync.settings import Settings, load_settings
from tasks.personas import AssignmentSummary, assign_and_store, compute_and_store_features
from tasks.pull import PullReport, options_from_settings, run_pull


@task(name="pull", cache_policy=NO_CACHE)
def pull_task(settings: Settings, run_id: str, full_refresh: bool) -> PullReport:
    """Pulls what changed in the org into staging (see tasks/pull.py)."""
    report = run_pull(settings, streams_by_name(None), options_from_settings(settings, full_refresh=full_refresh),
                      run_id=run_id)
    get_run_logger().info("pulled %s rows (%s quarantined) with %s API calls", f"{report.rows:,}",
                          f"{report.quarantined:,}", f"{report.api_calls:,}")
    return report


@task(name="features", cache_policy=NO_CACHE)
def features_task(settings: Settings, as_of: datetime) -> str:
    """Computes per-user features for the window ending at `as_of`; returns the file's path."""
    return str(compute_and_store_features(settings, as_of))


@task(name="assign", cache_policy=NO_CACHE)
def assign_task(settings: Settings, features_file: str, run_id: str, as_of: datetime) -> AssignmentSummary:
    """Assigns personas from the catalog and stores them with the run id, as-of and catalog version."""
    from pathlib import Path

    summary = assign_and_store(settings, Path(features_file), run_id, as_of)
    create_table_artifact(
        key="persona-distribution",
        table=[{"persona": persona, "users": users} for persona, users in summary.distribution.items()],
        description=f"Personas at {as_of:%Y-%m-%d %H:%M} UTC, catalog {summary.catalog_version}, run {run_id}")
    return summary


@flow(name="nightly_sync")
def nightly_sync(as_of: datetime | None = None, full_refresh: bool = False) -> AssignmentSummary:
    """Pull the org, compute features up to `as_of` (default: now) and assign personas.

    One ledger run covers the whole flow: on any failure it is marked failed with the error, and the
    next run starts again from the watermarks, so nothing is lost or counted twice.
    """
    as_of = (as_of or datetime.now(timezone.utc)).astimezone(timezone.utc)
    settings = load_settings()
    state = StateStore(settings.state_url)
    state.ensure_schema()
    run_id = state.start_run("nightly_sync", {"as_of": as_of.isoformat(), "full_refresh": full_refresh})
    logger = get_run_logger()
    logger.info("run %s: as-of %s", run_id, as_of.isoformat())
    try:
        with org_settings(settings) as resolved:
            report = pull_task(resolved, run_id, full_refresh)
            features_file = features_task(resolved, as_of)
            summary = assign_task(resolved, features_file, run_id, as_of)
    except BaseException as error:
        state.finish_run(run_id, "failed", error=str(error))
        raise
    state.finish_run(run_id, "succeeded", api_calls=report.api_calls,
                     counts={**report.counts(), "users": summary.users, "personas": summary.distribution})
    create_markdown_artifact(key="nightly-sync", markdown=_summary_markdown(report, summary))
    return summary


def _summary_markdown(report: PullReport, summary: AssignmentSummary) -> str:
    lines = [f"# Nightly sync {summary.run_id}", "",
             f"As-of **{summary.as_of:%Y-%m-%d %H:%M} UTC**, catalog **{summary.catalog_version}**.", "",
             f"Pulled {report.rows:,} rows ({report.quarantined:,} quarantined) with {report.api_calls:,} API calls.",
             "", "| persona | users |", "|---|---:|"]
    lines += [f"| {persona} | {users:,} |" for persona, users in summary.distribution.items()]
    return "\n".join(lines)
