"""The pipeline's steps as Prefect tasks, for the flows to compose.

Each is a thin wrapper over a stage function of this package (`pull.run_pull`,
`personas.compute_and_store_features`, ...), which runs and is tested without Prefect. A task is named
after what it produces, logs through Prefect's run logger, and passes on paths and small summaries,
never DataFrames: what crosses between tasks stays small, and each stage's output stays on disk.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from connectors.salesforce.streams import STREAMS
from core.configs import PersonasConfig, PullConfig, SalesforceConfig, StagingConfig, StateConfig
from tasks.personas import AssignmentSummary, assign_and_store, compute_and_store_features
from tasks.pull import PullReport, run_pull
from tasks.reporting import distribution_rows, summary_markdown


@task(name="pulled-changes", cache_policy=NO_CACHE)
def pull_changes(org: SalesforceConfig, state: StateConfig, staging: StagingConfig, config: PullConfig, run_id: str,
                 full_refresh: bool) -> PullReport:
    """Pulls what changed in the org into staging (tasks/pull.py)."""
    report = run_pull(org, state, staging, config, list(STREAMS), full_refresh=full_refresh, run_id=run_id)
    get_run_logger().info("pulled %s rows (%s quarantined, %s waiting for their user) with %s API calls",
                          f"{report.rows:,}", f"{report.quarantined:,}", f"{report.held:,}", f"{report.api_calls:,}")
    return report


@task(name="features", cache_policy=NO_CACHE)
def features(config: PersonasConfig, staging: StagingConfig, as_of: datetime) -> Path:
    """Per-user features for the window ending at `as_of`; returns the file they are in."""
    path = compute_and_store_features(config, staging, as_of)
    get_run_logger().info("features up to %s in %s", as_of.isoformat(), path)
    return path


@task(name="assignments", cache_policy=NO_CACHE)
def assignments(config: PersonasConfig, state: StateConfig, features_file: Path, run_id: str,
                as_of: datetime) -> AssignmentSummary:
    """Personas from the catalog, stored with the run id, as-of and catalog version."""
    summary = assign_and_store(config, state, features_file, run_id, as_of)
    get_run_logger().info("assigned %s users with catalog %s", f"{summary.users:,}", summary.catalog_version)
    return summary


@task(name="run-summary", cache_policy=NO_CACHE)
def run_summary(report: PullReport, summary: AssignmentSummary) -> None:
    """The run's summary and persona distribution, as artifacts in the Prefect UI."""
    create_table_artifact(key="persona-distribution", table=distribution_rows(summary),
                          description=f"Personas at {summary.as_of:%Y-%m-%d %H:%M} UTC, catalog "
                                      f"{summary.catalog_version}, run {summary.run_id}")
    create_markdown_artifact(key="nightly-sync", markdown=summary_markdown(report, summary))
