"""Backfills: personas as of past dates, computed from what is staged, without pulling.

A backfill answers "what was everyone's persona on each day of October?" for a team that starts
persona-sync today, or that changed its catalog. It plans the as-ofs of a date range (each at midnight
UTC), refuses any whose feature window reaches before the staged history (it would under-count, not
fail), and skips the dates a backfill did already (each date's run records the idempotency key
`backfill:YYYY-MM-DD`), unless asked to overwrite them.

What it can and cannot know about the past: features see only activity dated inside each as-of's
window, and a deal counts as won when it moved to Closed Won (personas/features.py). Staging keeps each
record as it is now, so a few facts are today's: a record's current owner, a case's escalation flag,
the users' IsActive, a report's latest modification only, and records deleted since are gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import pandas as pd

from connectors.salesforce.streams import Stream
from connectors.state import StateStore
from core.configs import StateConfig
from core.errors import BackfillError

FLOW = "backfill"
MAX_CONCURRENCY = 8
# How long a run waits for another run of the same as-of (a duplicate nightly, a backfill of today).
AS_OF_LOCK_WAIT_SECONDS = 2 * 3600.0


def as_of_lock(as_of: datetime) -> str:
    """The ledger lock a nightly run and a backfill date hold while they decide personas as of that day."""
    return f"as-of:{as_of:%Y-%m-%d}"


def date_key(as_of: datetime) -> str:
    """The idempotency key of one date of a backfill, as its ledger run records it."""
    return f"backfill:{as_of:%Y-%m-%d}"


def as_ofs(start: date, end: date, step_days: int, now: datetime) -> list[datetime]:
    """The as-ofs of the range: midnight UTC of `start`, then every `step_days` days up to `end` (inclusive)."""
    if isinstance(step_days, bool) or not isinstance(step_days, int) or step_days < 1:
        raise BackfillError(f"step_days must be a whole number of days >= 1, not {step_days!r}")
    if start > end:
        raise BackfillError(f"the backfill starts ({start}) after it ends ({end}); give START <= END")
    if end > now.astimezone(timezone.utc).date():
        raise BackfillError(f"the backfill ends ({end}) in the future (today is {now:%Y-%m-%d} UTC): a backfill "
                            "computes the past; the nightly sync does today")
    days = (end - start).days
    return [datetime.combine(start + timedelta(days=offset), time(), timezone.utc)
            for offset in range(0, days + 1, step_days)]


def earliest_as_of(state_config: StateConfig, streams: list[Stream], window_days: int) -> datetime:
    """The first midnight whose whole feature window staging covers: the latest history start among the
    staged activity objects, plus the window. Raises BackfillError when nothing is staged."""
    with StateStore.from_config(state_config) as state:
        state.ensure_schema()
        watermarks = {mark.sobject: mark for mark in state.watermarks()}
    activity = [stream.sobject for stream in streams if not stream.full_history]
    starts = [watermarks[name].history_start for name in activity if name in watermarks]
    if not starts:
        raise BackfillError("nothing is staged yet: run the nightly sync (`persona-sync run`) once, so the org's "
                            "history is pulled, then backfill")
    first = max(starts) + timedelta(days=window_days)
    midnight = datetime.combine(first.astimezone(timezone.utc).date(), time(), timezone.utc)
    return midnight if midnight >= first else midnight + timedelta(days=1)


@dataclass(frozen=True)
class BackfillPlan:
    """The as-ofs of a backfill: all of the range, those to compute, and those done already (skipped)."""

    dates: list[datetime]
    todo: list[datetime]
    done: dict[datetime, str]  # as-of -> the run that did it
    earliest: datetime


def plan_backfill(state_config: StateConfig, streams: list[Stream], window_days: int, start: date, end: date,
                  step_days: int, *, overwrite: bool, recompute_last: bool, now: datetime) -> BackfillPlan:
    """Which as-ofs to compute. Refuses (BackfillError) a range reaching before the staged history, saying
    the first date that can be computed and how to pull more history. `recompute_last`: the final date is
    computed even when done (a push of it is then a run of its own)."""
    dates = as_ofs(start, end, step_days, now)
    earliest = earliest_as_of(state_config, streams, window_days)
    if dates[0] < earliest:
        raise BackfillError(
            f"the backfill starts at {dates[0]:%Y-%m-%d}, but features as of it need activity from "
            f"{dates[0] - timedelta(days=window_days):%Y-%m-%d} ({window_days}-day window) and the staged history "
            f"starts later: the first date a backfill can compute is {earliest:%Y-%m-%d}. Start there, or pull "
            f"more history (PERSONA_SYNC_PULL_HISTORY_DAYS, then `persona-sync run --full-refresh`).")
    with StateStore.from_config(state_config) as state:
        keyed = state.runs_by_key(FLOW, [date_key(as_of) for as_of in dates])
    done = {as_of: keyed[date_key(as_of)] for as_of in dates if date_key(as_of) in keyed}
    todo = [as_of for as_of in dates
            if overwrite or as_of not in done or (recompute_last and as_of == dates[-1])]
    return BackfillPlan(dates, todo, {as_of: run for as_of, run in done.items() if as_of not in todo}, earliest)


def already_done(state_config: StateConfig, as_of: datetime) -> str | None:
    """The run that did this date of a backfill, if one succeeded (checked again under the date's lock, so
    two backfills started together compute a date once)."""
    with StateStore.from_config(state_config) as state:
        return state.runs_by_key(FLOW, [date_key(as_of)]).get(date_key(as_of))


def changed_since_previous(state_config: StateConfig, run_id: str, as_of: datetime) -> int:
    """How many users' persona in run `run_id` differs from the stored as-of before it (all of them when
    there is none)."""
    with StateStore.from_config(state_config) as state:
        now = state.assignments(run_id)["persona"]
        before = state.latest_assignments(before=as_of)
    if before.empty:
        return len(now)
    previous = before["persona"].reindex(now.index)
    return int((previous != now).sum())


@dataclass
class DateOutcome:
    """One date of a backfill, for its per-date table: what happened and what it found."""

    as_of: datetime
    status: str  # computed, skipped (done before), failed, not reached
    run_id: str | None = None
    users: int | None = None
    changed: int | None = None
    top: str = ""
    error: str = ""

    def row(self) -> dict[str, object]:
        return {"date": f"{self.as_of:%Y-%m-%d}", "status": self.status, "run": (self.run_id or "")[:8],
                "users": self.users if self.users is not None else "",
                "changed since the date before": self.changed if self.changed is not None else "",
                "largest personas": self.top, "error": self.error[:200]}


def top_personas(distribution: dict[str, int], n: int = 3) -> str:
    """The `n` largest personas as 'Case Solver 41, Deal Closer 30, ...'."""
    return ", ".join(f"{persona} {users:,}" for persona, users in
                     sorted(distribution.items(), key=lambda item: (-item[1], item[0]))[:n])


def backfill_markdown(name: str, plan: BackfillPlan, outcomes: list[DateOutcome]) -> str:
    """The backfill's summary: the range, what was computed, skipped and failed, and each date."""
    counts = pd.Series([outcome.status for outcome in outcomes]).value_counts().to_dict() if outcomes else {}
    lines = [f"# {name}", "",
             f"{len(plan.dates)} as-of(s) from {plan.dates[0]:%Y-%m-%d} to {plan.dates[-1]:%Y-%m-%d}: "
             + ", ".join(f"{count} {status}" for status, count in sorted(counts.items())) + ".", "",
             "| date | status | run | users | changed | largest personas |", "|---|---|---|---:|---:|---|"]
    lines += [f"| {row['date']} | {row['status']} | {row['run']} | {row['users']} | "
              f"{row['changed since the date before']} | {row['largest personas']} |"
              for row in (outcome.row() for outcome in outcomes)]
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    if failed:
        lines += ["", f"**{failed[0].as_of:%Y-%m-%d} failed**: {failed[0].error}", "",
                  "The dates after it were not computed (each date's personas start from the date before). "
                  "Fix the cause and run the backfill again: the dates done are skipped."]
    return "\n".join(lines)
