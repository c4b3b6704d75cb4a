"""The nightly sync: pull -> features -> assign, as one Prefect flow and one run in the ledger.

It reads top to bottom like a recipe: each step is a task of `tasks/steps.py`, itself a thin wrapper
over a stage function in `tasks/`. Later stages (validation, push, history) extend it.

Settings come from PERSONA_SYNC_* variables (core/settings.py). The org must be configured: with none,
the flow fails at once and says what to set. It never falls back to the local synthetic sandbox; only
the `persona-sync` command does that, for a first try on a laptop.
"""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger

from connectors.state import StateStore
from core.settings import load_settings
from tasks import steps
from tasks.personas import AssignmentSummary
from tasks.reporting import run_counts


@flow(name="nightly_sync")
def nightly_sync(as_of: datetime | None = None, full_refresh: bool = False) -> AssignmentSummary:
    """Pull the org, compute features up to `as_of` (default: now) and assign personas.

    One ledger run covers the whole flow: on any failure it is marked failed with the error, and the
    next run starts again from the watermarks, so nothing is lost or counted twice.
    """
    as_of = (as_of or datetime.now(timezone.utc)).astimezone(timezone.utc)
    settings = load_settings()
    org = settings.salesforce()  # no org configured: stop here, before anything is touched
    with StateStore.from_config(settings.state()) as state:
        state.ensure_schema()
        with state.recorded_run("nightly_sync", {"as_of": as_of.isoformat(), "full_refresh": full_refresh}) as run:
            get_run_logger().info("run %s: as-of %s", run.id, as_of.isoformat())
            report = steps.pull_changes(org, settings.state(), settings.staging(), settings.pull(), run.id,
                                        full_refresh)
            features_file = steps.features(settings.personas(), settings.staging(), as_of)
            summary = steps.assignments(settings.personas(), settings.state(), features_file, run.id, as_of)
            run.counts.update(run_counts(report, summary))
    steps.run_summary(report, summary)
    return summary
