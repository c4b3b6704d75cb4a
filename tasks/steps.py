"""The pipeline's steps as Prefect tasks, for the flows to compose.

Each is a thin wrapper over a stage function of this package (`pull.run_pull`,
`personas.compute_and_store_features`, ...), which runs and is tested without Prefect. A task is named
after what it produces, logs through Prefect's run logger, and passes on paths and small summaries,
never DataFrames: what crosses between tasks stays small, and each stage's output stays on disk.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
from prefect import Task, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from connectors.salesforce.streams import STREAMS
from connectors.state import StateStore
from core.configs import (CommunityConfig, PersonasConfig, PullConfig, PushConfig, SalesforceConfig, StagingConfig, StateConfig,
                          ValidationConfig)
from core.errors import ValidationFailed
from expectations.checks import Check, checks_markdown
from personas.catalog import UNASSIGNED
from tasks import validation
from tasks.community import CommunityReport, run_community_push
from tasks.personas import (AssignmentSummary, assign_candidates, catalog_for, compute_and_store_features,
                            store_assignments)
from tasks.pull import PullReport, run_pull
from tasks.reuse import inputs_fingerprint, reusable_run
from tasks.rollback import rollback
from tasks.push import PushReport, run_push
from tasks.reporting import distribution_rows, push_markdown, summary_markdown


def transient_only(_task: object, _task_run: object, state: State) -> bool:
    """Prefect's retry condition for the stages that talk to the org: retry only what may succeed in a
    while (the org unreachable or failing on its side, see SalesforceError.transient), never a refused
    credential, a failed check or a bug."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as raised:  # noqa: BLE001 - the failure being judged
            error = raised
    return bool(getattr(error, "transient", False))


def retried(stage: Task, retries: int, first_delay_seconds: float) -> Task:
    """`stage` with Prefect retries on transient failures, waiting `first_delay_seconds`, then twice as
    long each time. Safe for the network stages: a pull resumes from its watermarks, a push diffs with
    what the org holds, community grants settle against the table."""
    delays = [first_delay_seconds * 2 ** attempt for attempt in range(retries)]
    return stage.with_options(retries=retries, retry_delay_seconds=delays or 0, retry_condition_fn=transient_only)


@task(name="pulled-changes", cache_policy=NO_CACHE)
def pull_changes(org: SalesforceConfig, state: StateConfig, staging: StagingConfig, config: PullConfig, run_id: str,
                 full_refresh: bool) -> PullReport:
    """Pulls what changed in the org into staging (tasks/pull.py)."""
    report = run_pull(org, state, staging, config, list(STREAMS), full_refresh=full_refresh, run_id=run_id)
    get_run_logger().info("pulled %s rows (%s quarantined, %s waiting for their user) with %s API calls",
                          f"{report.rows:,}", f"{report.quarantined:,}", f"{report.held:,}", f"{report.api_calls:,}")
    return report


@task(name="unchanged-inputs", cache_policy=NO_CACHE)
def unchanged_inputs(staging: StagingConfig, state: StateConfig, personas: PersonasConfig, limits: dict[str, object],
                     push: PushConfig, as_of: datetime, forced: list[str]) -> tuple[str, str | None]:
    """The fingerprint of the run's inputs, and the last good run decided from the same ones (None: none),
    whose checks, features and assignments then stand (tasks/reuse.py)."""
    fingerprint = inputs_fingerprint(staging, state, list(STREAMS), personas, limits, push, as_of, forced)
    stored = reusable_run(state, fingerprint)
    if stored:
        get_run_logger().info("nothing the personas depend on changed since run %s: its checks, features and "
                              "assignments stand; only the push runs", stored)
    return fingerprint, stored


@task(name="features", cache_policy=NO_CACHE)
def features(config: PersonasConfig, staging: StagingConfig, as_of: datetime) -> Path:
    """Per-user features for the window ending at `as_of`; returns the file they are in."""
    path = compute_and_store_features(config, staging, as_of)
    get_run_logger().info("features up to %s in %s", as_of.isoformat(), path)
    return path


@task(name="assignments", cache_policy=NO_CACHE)
def assignments(config: PersonasConfig, state: StateConfig, features_file: Path, run_id: str,
                as_of: datetime) -> AssignmentSummary:
    """Personas from the catalog, decided but not stored yet (validation comes first)."""
    summary = assign_candidates(config, state, features_file, run_id, as_of)
    get_run_logger().info("assigned %s users with catalog %s", f"{summary.users:,}", summary.catalog_version)
    return summary


@task(name="staging-checks", cache_policy=NO_CACHE)
def staging_checks(staging: StagingConfig, state: StateConfig, config: ValidationConfig, personas: PersonasConfig,
                   pull: PullConfig, run_id: str) -> validation.StageChecks:
    """Staged objects and the coverage of the catalog's fields; stops the run when one fails."""
    checked = validation.check_staging(staging, state, config, list(STREAMS), catalog_for(personas), run_id,
                                       history_days=pull.history_days)
    return _settled(state, config, run_id, checked)


@task(name="feature-checks", cache_policy=NO_CACHE)
def feature_checks(features_file: Path, staging: StagingConfig, state: StateConfig, config: ValidationConfig,
                   personas: PersonasConfig, run_id: str, docs: bool = True) -> validation.StageChecks:
    """The active users' features; stops the run when one check fails. `docs`: GX Data Docs (a backfill's
    dates go without, see validation.record)."""
    checked = validation.check_features(features_file, staging, config, catalog_for(personas), run_id, docs=docs)
    return _settled(state, config, run_id, checked, docs)


@task(name="assignment-checks", cache_policy=NO_CACHE)
def assignment_checks(summary: AssignmentSummary, staging: StagingConfig, state: StateConfig,
                      config: ValidationConfig, personas: PersonasConfig, forced: list[str],
                      docs: bool = True) -> validation.StageChecks:
    """The candidate assignments and the guardrails; stops the run when one fails (a forced guardrail
    does not)."""
    checked = validation.check_assignments(summary.assignments_path, summary.features_path, staging, state, config,
                                           catalog_for(personas), summary.as_of, summary.run_id, forced=forced,
                                           docs=docs)
    return _settled(state, config, summary.run_id, checked, docs)


def _settled(state: StateConfig, config: ValidationConfig, run_id: str, checked: validation.StageChecks,
             docs: bool = True) -> validation.StageChecks:
    """Records a stage's checks; on a failure publishes the failing checks and the Data Docs link, then
    raises (the flow run ends Failed with the message)."""
    logger = get_run_logger()
    try:
        index = validation.record(state, config, run_id, checked, docs=docs)
    except ValidationFailed as failed:
        create_markdown_artifact(key="validation-failed", markdown=checks_markdown(
            checked.checks, title=f"Validation failed: nothing was written (run {run_id})",
            data_docs=failed.data_docs), description="The checks that stopped the run")
        _link_docs(failed.data_docs, run_id)
        logger.error("%s", failed)
        raise
    _link_docs(str(index) if index else None, run_id)
    logger.info("%s checks: %d passed, %d warned, %d forced; Data Docs: %s", checked.checks[0].stage if checked.checks
                else "no", sum(c.status == "passed" for c in checked.checks), len(checked.warned),
                sum(c.status == "forced" for c in checked.checks), index or "none (every check passed)")
    return checked


def _link_docs(path: str | None, run_id: str) -> None:
    if path:
        create_link_artifact(key="data-docs", link=Path(path).resolve().as_uri(), link_text="Data Docs",
                             description=f"The checks of run {run_id}, as HTML")


@task(name="stored-assignments", cache_policy=NO_CACHE)
def stored_assignments(state: StateConfig, summary: AssignmentSummary) -> int:
    """The validated assignments, stored as every user's current persona."""
    rows = store_assignments(state, summary)
    get_run_logger().info("stored %s assignments of run %s", f"{rows:,}", summary.run_id)
    return rows


@task(name="pushed-to-salesforce", cache_policy=NO_CACHE)
def pushed(org: SalesforceConfig, state: StateConfig, config: PushConfig, personas: PersonasConfig,
           summary: AssignmentSummary, dry_run: bool) -> PushReport | None:
    """The persona fields written to the org's User records (only what changed), or in a dry run the plan
    of it, shown as an artifact. None for a run of a past as-of (the org keeps the newest personas)."""
    if _in_the_past(summary, state):
        return None
    assignments = _assignments_of(summary, state, dry_run)
    catalog = catalog_for(personas)
    report = run_push(org, state, config, summary.run_id, assignments, [*catalog.labels, UNASSIGNED],
                      dry_run=dry_run)
    create_markdown_artifact(key="push-plan" if dry_run else "push", markdown=push_markdown(report))
    if report.changes:
        create_table_artifact(key="changed-users", table=[
            {"user": user, "in the org": before, "becomes": after, "status": status}
            for user, before, after, status in report.changes],
            description=f"Users whose persona fields {'would change' if dry_run else 'changed'} in run "
                        f"{summary.run_id} (the first {len(report.changes):,} of {report.planned + report.conflicts:,})")
    get_run_logger().info("%s", push_markdown(report).splitlines()[2])
    return report


@task(name="community-roles", cache_policy=NO_CACHE)
def community_roles(config: CommunityConfig | None, staging: StagingConfig, state: StateConfig,
                    personas: PersonasConfig, summary: AssignmentSummary, dry_run: bool) -> CommunityReport | None:
    """The community roles of each active user's persona granted, and ours that no longer fit revoked (in a
    dry run: counted only). None when no community database is configured."""
    if config is None:
        get_run_logger().info("no community database configured (PERSONA_SYNC_COMMUNITY_DATABASE_URL): no roles")
        return None
    if _in_the_past(summary, state):
        return None
    report = run_community_push(config, staging, state, summary.run_id, _assignments_of(summary, state, dry_run),
                                catalog_for(personas), dry_run=dry_run)
    get_run_logger().info("community %s: %d granted, %d revoked, %d left to whoever granted them%s", report.target,
                          report.granted, report.revoked, report.foreign, " (dry run: nothing written)"
                          if dry_run else "")
    return report


@task(name="rolled-back", cache_policy=NO_CACHE)
def rolled_back(org: SalesforceConfig, state: StateConfig, push: PushConfig, community: CommunityConfig | None,
                run_id: str, rollback_run_id: str) -> dict[str, object]:
    """What run `run_id` wrote, put back; the outcome as an artifact."""
    report = rollback(org, state, push, community, run_id, rollback_run_id)
    skipped = ", ".join(report.skipped[:20]) + (" ..." if len(report.skipped) > 20 else "")
    create_markdown_artifact(key="rollback", markdown="\n".join([
        f"# Rollback of run {run_id}", "",
        f"{report.restored:,} users' persona fields restored, {len(report.failed):,} failed {report.failed or ''}; "
        f"community roles: {report.revoked:,} revoked, {report.regranted:,} granted again.", "",
        f"{len(report.skipped):,} users changed since the run (by hand or by a later run) were left as they are"
        + (f": {skipped}" if skipped else ".")]))
    return report.counts()


def _in_the_past(summary: AssignmentSummary, state: StateConfig) -> bool:
    """Whether the run's as-of is before the newest stored one: a backfill of the past, whose personas
    must not replace the newer ones in the org or the community table."""
    with StateStore.from_config(state) as store:
        newest = store.newest_as_of(other_than=summary.run_id)
    if newest is None or summary.as_of >= newest:
        return False
    get_run_logger().info("as-of %s is before the newest stored run's (%s): nothing is written to the org or the "
                          "community table", summary.as_of.isoformat(), newest.isoformat())
    return True


def _assignments_of(summary: AssignmentSummary, state: StateConfig, dry_run: bool) -> pd.DataFrame:
    """The run's assignments: stored (a real run), or still the candidates (a dry run stores none)."""
    if dry_run and summary.stored_run_id is None:
        return pd.read_parquet(summary.assignments_path)
    with StateStore.from_config(state) as store:
        return store.assignments(summary.stored_run_id or summary.run_id)


@task(name="run-summary", cache_policy=NO_CACHE)
def run_summary(state: StateConfig, report: PullReport, summary: AssignmentSummary, checks: list[Check],
                push: PushReport | None = None, community: CommunityReport | None = None,
                dry_run: bool = False) -> None:
    """The run's summary (stages, API calls, personas before and after, biggest movements, checks, Data
    Docs) and persona distribution, as artifacts."""
    with StateStore.from_config(state) as store:
        before = store.latest_assignments(before=summary.as_of)
        run = store.run(summary.run_id)
    after = _assignments_of(summary, state, dry_run)["persona"]
    create_table_artifact(key="persona-distribution", table=distribution_rows(summary),
                          description=f"Personas at {summary.as_of:%Y-%m-%d %H:%M} UTC, catalog "
                                      f"{summary.catalog_version}, run {summary.run_id}")
    create_markdown_artifact(key="nightly-sync", markdown=summary_markdown(
        report, summary, checks, before=before["persona"] if len(before) else None, after=after, push=push,
        community=community, api_calls=run.api_calls if run else None, data_docs=run.data_docs if run else None))
