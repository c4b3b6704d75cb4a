"""The nightly sync: pull -> check -> features -> check -> assign -> check -> store -> push (User fields,
community roles), as one Prefect flow and one run in the ledger.

It reads top to bottom like a recipe: each step is a task of `tasks/steps.py`, itself a thin wrapper
over a stage function in `tasks/`. A failed check (tasks/validation.py) stops the run before anything
is written: the assignments (and the persona history) are stored only after every check passed, and
the push to the org's User records and the community role table come after them. The staging checks run
beside the features and assignments (they do not depend on each other); the feature and assignment
checks wait for them.

When nothing the personas depend on changed since the last good run (tasks/reuse.py: a rerun of a
night), that run's checks, features and assignments stand and only the push runs.

Settings come from PERSONA_SYNC_* variables (core/settings.py). The org must be configured: with none,
the flow fails at once and says what to set. It never falls back to the local synthetic sandbox; only
the `persona-sync` command does that, for a first try on a laptop.
"""

from __future__ import annotations

from datetime import datetime, time, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import deployment, flow_run

from connectors.state import StateStore
from core.configs import SalesforceConfig
from core.settings import Settings
from flows.settings import flow_settings
from tasks import steps
from expectations.checks import Check
from tasks.community import CommunityReport
from tasks.personas import AssignmentSummary, reused_assignments
from tasks.pull import PullReport
from tasks.push import PushReport
from tasks.reporting import run_counts
from tasks.backfill import AS_OF_LOCK_WAIT_SECONDS, as_of_lock
from tasks.validation import check_forcing


def tonight() -> datetime:
    """The as-of of tonight's sync: today at 00:00 UTC."""
    return datetime.combine(datetime.now(timezone.utc).date(), time(), timezone.utc)


def _run_name() -> str:
    """Flow runs are named after their as-of (the night they sync), so the UI lists nights, not animals."""
    as_of = flow_run.parameters.get("as_of") or datetime.now(timezone.utc)
    return f"nightly-sync-{str(as_of)[:10] if isinstance(as_of, str) else f'{as_of:%Y-%m-%d}'}"


@flow(name="nightly_sync", flow_run_name=_run_name)
def nightly_sync(as_of: datetime | None = None, full_refresh: bool = False, force: list[str] | None = None,
                 force_reason: str | None = None, dry_run: bool = False) -> AssignmentSummary | None:
    """Pull the org, compute features up to `as_of`, assign personas, and store them once every check
    passed.

    `as_of` defaults to the night being synced: today at 00:00 UTC. Every run of a day then decides the
    same personas from the same activity (a rerun writes nothing unless the org changed), and a night
    lines up with a backfill's dates, which are midnights too. Activity after midnight counts the next
    night.

    `force`: guardrails (persona_changes, assigned_share, distribution_drift, persona_loss) this run may
    exceed, with `force_reason` saying why; both go into the ledger. Data-quality checks cannot be forced.
    `dry_run`: everything up to the push plan, shown as an artifact; no assignment is stored and nothing
    is written to the org.
    One ledger run covers the whole flow: on any failure it is marked failed with the error, and the
    next run starts again from the watermarks, so nothing is lost or counted twice.

    A run of a deployment with no as-of (the schedule's) syncs tonight: when a run of tonight already
    succeeded (a duplicate scheduled run, as happen after redeploys), it does nothing and returns None.
    """
    night = f"{datetime.now(timezone.utc):%Y-%m-%d}" if as_of is None and deployment.id else None
    as_of = (as_of or tonight()).astimezone(timezone.utc)
    forced = sorted(set(force or []))
    check_forcing(forced, force_reason)
    settings = flow_settings()
    org = settings.salesforce()  # no org configured: stop here, before anything is touched
    state_config, checks = settings.state(), settings.validation()
    parameters = {"as_of": as_of.isoformat(), "night": night, "full_refresh": full_refresh, "dry_run": dry_run,
                  "force": forced,
                  "force_reason": force_reason, "limits": checks.model_dump(mode="json", exclude={"data_docs_dir"})}
    with StateStore.from_config(state_config) as state:
        state.ensure_schema()
        # One run of an as-of date at a time: a duplicate (two schedulers, a redeploy) waits for the first,
        # then finds the night synced.
        with state.lock(as_of_lock(as_of), purpose=f"nightly sync of {as_of:%Y-%m-%d}",
                        wait_seconds=AS_OF_LOCK_WAIT_SECONDS):
            if night is not None and state.night_synced(night):
                get_run_logger().info("the night of %s is synced already (a duplicate scheduled run): nothing to do",
                                      night)
                return None
            summary, report, every_check, push, roles = _synced(state, settings, org, as_of, parameters, forced,
                                                               full_refresh, dry_run)
    steps.run_summary(state_config, report, summary, every_check, push, roles, dry_run)
    return summary


def _synced(state: StateStore, settings: Settings, org: SalesforceConfig, as_of: datetime,
            parameters: dict[str, Any], forced: list[str], full_refresh: bool,
            dry_run: bool) -> tuple[AssignmentSummary, PullReport, list[Check], PushReport | None,
                                    CommunityReport | None]:
    """The run itself, one run in the ledger: pull, then decide (or reuse the decisions of a run with the
    same inputs), then push."""
    state_config, staging, personas, checks = (settings.state(), settings.staging(), settings.personas(),
                                               settings.validation())
    with state.recorded_run("nightly_sync", parameters) as run:
        get_run_logger().info("run %s: as-of %s", run.id, as_of.isoformat())
        pull_changes, pushed, community_roles = (
            steps.retried(stage, settings.task_retries, settings.task_retry_delay_seconds)
            for stage in (steps.pull_changes, steps.pushed, steps.community_roles))
        report = pull_changes(org, state_config, staging, settings.pull(), run.id, full_refresh)
        limits = parameters["limits"]
        fingerprint, stored_by = steps.unchanged_inputs(staging, state_config, personas, limits, settings.push(),
                                                        as_of, forced)
        if stored_by is not None:  # nothing the personas depend on changed: that run's decisions stand
            summary = reused_assignments(personas, state_config, run.id, stored_by, as_of)
            every_check: list[Check] = []
            staged_rows, coverage = _staged_counts_of(state, stored_by)
        else:
            # The staging checks run while the features and assignments are computed (two cores, and
            # neither waits for the other); every check has passed before anything is stored.
            staging_checked = steps.staging_checks.submit(staging, state_config, checks, personas, settings.pull(),
                                                          run.id)
            features_file = steps.features(personas, staging, as_of)
            summary = steps.assignments(personas, state_config, features_file, run.id, as_of)
            staged = staging_checked.result()
            featured = steps.feature_checks(features_file, staging, state_config, checks, personas, run.id)
            assigned = steps.assignment_checks(summary, staging, state_config, checks, personas, forced)
            if not dry_run:
                steps.stored_assignments(state_config, summary)
            every_check = [*staged.checks, *featured.checks, *assigned.checks]
            staged_rows, coverage = staged.staged_rows, staged.coverage
        push = pushed(org, state_config, settings.push(), personas, summary, dry_run)
        roles = community_roles(settings.community(), staging, state_config, personas, summary, dry_run)
        run.counts.update(run_counts(report, summary, every_check, staged_rows, coverage, push, roles))
        run.counts.update({"inputs": fingerprint, **({"reused_from": stored_by} if stored_by else {})})
    return summary, report, every_check, push, roles


def _staged_counts_of(state: StateStore, run_id: str) -> tuple[dict[str, int], dict[str, float]]:
    """The staged rows and field coverage run `run_id` recorded (a run reusing its decisions keeps them, so
    the next run's row-collapse check still has a baseline)."""
    run = state.run(run_id)
    counts = (run.counts or {}) if run else {}
    return counts.get("staged_rows") or {}, counts.get("coverage") or {}
