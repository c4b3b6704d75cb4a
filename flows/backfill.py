"""The backfill: personas as of each date of a range, from staged history, as one Prefect flow.

For each as-of (midnight UTC of `start`, then every `step_days` days to `end`): features over the
window ending there, feature checks, assignments (kept stable against the date before), assignment checks
and guardrails, then stored, each date a ledger run of its own with the idempotency key
`backfill:YYYY-MM-DD`. The persona history takes each date where it belongs (connectors/state
`replay_history`), so a backfill interrupted and resumed, or run after the nightly syncs, tells the same
story as one uninterrupted run in date order.

Features of up to `concurrency` dates are computed at once (they only read staging); the dates are then
assigned and stored one by one in date order, because each starts from the personas of the date before.
Nothing is pulled, and nothing is written to Salesforce or the community tables unless `push_latest`: then
the final date's personas are pushed, when it is the newest as-of stored (the org keeps the newest).
A failed date stops the backfill there; run it again and the dates done are skipped (`overwrite`
recomputes them).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timezone

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, \
    update_progress_artifact
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run

from connectors.salesforce.streams import STREAMS
from connectors.state import StateStore
from core.errors import BackfillError
from flows.settings import flow_settings
from tasks import steps
from tasks.backfill import (AS_OF_LOCK_WAIT_SECONDS, FLOW, MAX_CONCURRENCY, as_of_lock, BackfillPlan, DateOutcome, already_done, backfill_markdown,
                            changed_since_previous, date_key, plan_backfill, top_personas)
from tasks.validation import check_forcing


def _run_name() -> str:
    """Backfill runs are named after their range, so the UI lists which days each covered."""
    parameters = flow_run.parameters
    return f"backfill-{parameters.get('start')}-to-{parameters.get('end')}"


@flow(name="backfill", flow_run_name=_run_name)
def backfill(start: date, end: date, step_days: int = 1, overwrite: bool = False, push_latest: bool = False,
             concurrency: int = 2, force: list[str] | None = None,
             force_reason: str | None = None) -> list[dict[str, object]]:
    """Personas as of every `step_days`-th day from `start` to `end` (inclusive, midnight UTC), from what
    is staged; returns a row per date (status, run, users, changes since the date before).

    `overwrite`: recompute dates a backfill did already (else skipped). `push_latest`: push the final
    date's personas to the org's User records and the community table (when no newer as-of is stored).
    `concurrency`: dates whose features are computed at once (1-8). `force`/`force_reason`: guardrails the
    dates may exceed, and why (as for the nightly sync). A range reaching before the staged history is
    refused with the first date that can be computed.
    """
    if isinstance(concurrency, bool) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise BackfillError(f"concurrency must be between 1 and {MAX_CONCURRENCY}, not {concurrency!r}")
    forced = sorted(set(force or []))
    check_forcing(forced, force_reason)
    settings = flow_settings()
    state_config, staging, personas, checks = (settings.state(), settings.staging(), settings.personas(),
                                               settings.validation())
    org = settings.salesforce() if push_latest else None  # only a push needs the org
    plan = plan_backfill(state_config, list(STREAMS), personas.window_days, start, end, step_days,
                         overwrite=overwrite, recompute_last=push_latest, now=datetime.now(timezone.utc))
    logger = get_run_logger()
    logger.info("backfill of %d date(s) from %s to %s: %d to compute, %d done already%s", len(plan.dates),
                f"{plan.dates[0]:%Y-%m-%d}", f"{plan.dates[-1]:%Y-%m-%d}", len(plan.todo), len(plan.done),
                " (recomputed: overwrite)" if overwrite else "")
    outcomes = {as_of: DateOutcome(as_of, "skipped (done before)", run_id=run) for as_of, run in plan.done.items()}
    progress = create_progress_artifact(progress=_percent(plan, outcomes), key="backfill-progress",
                                        description=f"Dates of the backfill done, {plan.dates[0]:%Y-%m-%d} to "
                                                    f"{plan.dates[-1]:%Y-%m-%d}")
    features = _FeaturesAhead(plan.todo, concurrency, lambda as_of: steps.features.with_options(
        task_run_name=f"features-{as_of:%Y-%m-%d}").submit(personas, staging, as_of))
    parameters = {"force": forced, "force_reason": force_reason, "backfill": flow_run.id,
                  "limits": checks.model_dump(mode="json", exclude={"data_docs_dir"})}
    try:
        for as_of in plan.todo:
            outcomes[as_of] = DateOutcome(as_of, "failed")  # until it is done
            features_file = features.result(as_of)
            with StateStore.from_config(state_config) as state, \
                    state.lock(as_of_lock(as_of), purpose=f"backfill {as_of:%Y-%m-%d}",
                               wait_seconds=AS_OF_LOCK_WAIT_SECONDS):
                done = already_done(state_config, as_of)
                if done and not overwrite and not (push_latest and as_of == plan.dates[-1]):
                    outcomes[as_of] = DateOutcome(as_of, "skipped (done before)", run_id=done)  # by another backfill
                    continue
                with state.recorded_run(FLOW, {"as_of": as_of.isoformat(), "key": date_key(as_of), **parameters}) as run:
                    outcomes[as_of] = DateOutcome(as_of, "failed", run_id=run.id)
                    steps.feature_checks(features_file, staging, state_config, checks, personas, run.id, docs=False)
                    summary = steps.assignments(personas, state_config, features_file, run.id, as_of)
                    assigned = steps.assignment_checks(summary, staging, state_config, checks, personas, forced,
                                                       docs=False)
                    steps.stored_assignments(state_config, summary)
                    changed = changed_since_previous(state_config, run.id, as_of)
                    run.counts.update({"users": summary.users, "catalog_version": summary.catalog_version,
                                       "personas": summary.distribution, "changed_since_previous": changed,
                                       "checks": {status: [c.name for c in assigned.checks if c.status == status]
                                                  for status in ("warned", "forced")}})
                    if push_latest and as_of == plan.dates[-1]:
                        retries = (settings.task_retries, settings.task_retry_delay_seconds)
                        pushed = steps.retried(steps.pushed, *retries)(org, state_config, settings.push(), personas,
                                                                       summary, False)
                        roles = steps.retried(steps.community_roles, *retries)(
                            settings.community(), staging, state_config, personas, summary, False)
                        run.counts.update({**(pushed.counts() if pushed else {}), **(roles.counts() if roles else {})})
                outcomes[as_of] = DateOutcome(as_of, "computed", run.id, summary.users, changed,
                                              top_personas(summary.distribution))
            update_progress_artifact(artifact_id=progress, progress=_percent(plan, outcomes))
            logger.info("%s: %s users, %s changed since the date before", f"{as_of:%Y-%m-%d}", f"{summary.users:,}",
                        f"{changed:,}")
    except BaseException as error:
        failed = next((outcome for outcome in outcomes.values() if outcome.status == "failed"), None)
        if failed is not None:
            failed.error = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise
    finally:
        features.cancel()
        rows = [outcomes.get(as_of, DateOutcome(as_of, "not reached")) for as_of in plan.dates]
        create_table_artifact(key="backfill-dates", table=[row.row() for row in rows],
                              description="Each date of the backfill: computed, skipped (done before), failed or "
                                          "not reached")
        create_markdown_artifact(key="backfill", markdown=backfill_markdown(_run_name(), plan, rows))
    return [row.row() for row in rows]


def _percent(plan: BackfillPlan, outcomes: dict[datetime, DateOutcome]) -> float:
    finished = sum(outcome.status != "failed" for outcome in outcomes.values())
    return round(100.0 * finished / len(plan.dates), 1)


class _FeaturesAhead:
    """Computes the features of the next `ahead` dates at once (Prefect task runs in threads) while the
    current date is assigned: `result(as_of)` waits for one date's file and starts the next date's."""

    def __init__(self, dates: list[datetime], ahead: int, submit: Callable[[datetime], PrefectFuture]) -> None:
        self._waiting = list(dates)
        self._submit = submit
        self._running: dict[datetime, PrefectFuture] = {}
        for _ in range(min(ahead, len(dates))):
            self._start_next()

    def _start_next(self) -> None:
        if self._waiting:
            as_of = self._waiting.pop(0)
            self._running[as_of] = self._submit(as_of)

    def result(self, as_of: datetime):
        future = self._running.pop(as_of)
        path = future.result()
        self._start_next()
        return path

    def cancel(self) -> None:
        """Waits for the features already started (they only write their own file) and starts no more."""
        self._waiting.clear()
        for future in self._running.values():
            future.wait()
        self._running.clear()
