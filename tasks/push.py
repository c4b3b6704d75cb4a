"""The push to Salesforce: persona fields onto User records, only what changed, every write recorded.

1. **Check the fields** (`check_fields`): the configured User fields exist, may be updated and are long
   enough; if not, stop before any write with the list of what an admin must create.
2. **Read back** what the active users' fields hold now (Salesforce is the truth, not our cache), and
   what persona-sync last wrote to each (the sync log).
3. **Plan** (`plan_user_push`, pure): a user is written only where a value differs, numbers compared at
   the field's scale (so rounding never causes a write). A value that differs from what persona-sync
   last wrote was edited by someone else: per field role, `overwrite` it or `keep-manual` (the default
   for the persona itself: the user is left as is and a conflict is recorded).
4. **Record the plan** in the sync log before the first write, then **write**: sObject Collections, 200
   users a call, or one Bulk API 2.0 job from `bulk_threshold` users on; each outcome is marked in the
   sync log as its call returns. A record that fails stays failed in the log and differs next run, so
   the next run writes it again.

`dry_run` stops after the plan: nothing is recorded or written.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from connectors.salesforce import SalesforceClient
from connectors.salesforce.write import (COLLECTION_SIZE, RETRIED_IN_RUN, FieldInfo, WriteOutcome, bulk_update,
                                         describe_fields, read_records, update_records)
from connectors.state import StateStore
from core.configs import PushConfig, SalesforceConfig, StateConfig
from core.errors import ConfigurationError

log = logging.getLogger(__name__)

TARGET = "salesforce:User"
# Changed users listed in the run's table artifact.
CHANGES_SHOWN = 500
# How long a push waits for another push (or a rollback) writing the same org to finish.
PUSH_LOCK_WAIT_SECONDS = 600.0
# A Bulk API 2.0 update job (connectors/salesforce/write.py): create, upload, close, a poll (more while the
# org works on it), the successful and the failed results.
BULK_JOB_CALLS = 6
_NUMBER_TYPES = ("double", "percent", "currency")
_TEXT_TYPES = ("string", "textarea", "picklist")


@dataclass(frozen=True)
class PlannedWrite:
    """One user's planned update: what the fields hold and what they get (`conflict`: not written, a
    person changed a kept field)."""

    record_id: str
    old_values: dict[str, Any]
    new_values: dict[str, Any]
    status: str = "planned"  # or "conflict"
    message: str | None = None


@dataclass
class PushReport:
    """What a push did (or, in a dry run, would do)."""

    run_id: str
    dry_run: bool
    users: int = 0  # active users with an assignment, compared with the org
    planned: int = 0
    written: int = 0
    failed: Counter = field(default_factory=Counter)  # status code -> records
    conflicts: int = 0
    transitions: Counter = field(default_factory=Counter)  # (from persona, to persona) -> users
    calls: int = 0  # API calls of the push (in a dry run: those it made to plan)
    calls_to_write: int = 0  # API calls the writes take (or would take)
    samples: list[PlannedWrite] = field(default_factory=list)
    conflict_ids: list[str] = field(default_factory=list)  # users kept as edited by hand
    # Users whose fields differ (first CHANGES_SHOWN): user Id, persona in the org, persona they get, status.
    changes: list[tuple[str, str, str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        """What the run ledger keeps of the push."""
        return {"push": {"dry_run": self.dry_run, "users_compared": self.users, "users_changed": self.planned,
                         "written": self.written, "failed": dict(self.failed), "conflicts": self.conflicts,
                         "api_calls": self.calls, "calls_to_write": self.calls_to_write,
                         "transitions": [[before, after, count] for (before, after), count
                                         in self.transitions.most_common()],
                         "conflicts_sample": self.conflict_ids[:20],
                         "sample": [[write.record_id, write.status, write.old_values, write.new_values]
                                    for write in self.samples[:5]]}}


def check_fields(described: dict[str, FieldInfo], config: PushConfig, longest_label: int) -> None:
    """Raises ConfigurationError listing every configured User field that is missing, read-only, of the
    wrong type or too short, with what an admin must create."""
    wanted = [(config.persona_field, "Text", _TEXT_TYPES, longest_label, "the persona's label"),
              (config.score_field, "Number (scale >= 2)", _NUMBER_TYPES, 0, "the score"),
              (config.confidence_field, "Number (scale >= 2)", _NUMBER_TYPES, 0, "the confidence"),
              (config.reason_field, "Text", _TEXT_TYPES, 255, "the reason"),
              *([(config.updated_field, "Date/Time", ("datetime",), 0, "when persona-sync set them")]
                if config.updated_field else [])]
    problems = []
    for name, kind, types, length, holds in wanted:
        info = described.get(name)
        if info is None:
            size = f" of at least {length} characters" if length else ""
            problems.append(f"{name}: missing (create a {kind} field{size} for {holds})")
        elif info.type not in types:
            problems.append(f"{name}: is {info.type}, needs {kind}")
        elif length and info.length < length:
            problems.append(f"{name}: holds {info.length} characters, needs at least {length}")
        elif info.type in _NUMBER_TYPES and info.scale < 2:
            problems.append(f"{name}: has {info.scale} decimals, needs at least 2")
        elif not info.updateable:
            problems.append(f"{name}: not editable by the integration user (give it field-level edit access)")
    if problems:
        raise ConfigurationError("the org's User object cannot take the persona fields yet; an admin must fix: "
                                 + "; ".join(problems) + " (README, 'Connecting a real org')")


def plan_user_push(assignments: pd.DataFrame, current: dict[str, dict[str, Any]],
                   last_written: dict[str, dict[str, Any]], described: dict[str, FieldInfo], config: PushConfig,
                   now: datetime) -> list[PlannedWrite]:
    """The writes that bring each user's fields to their assignment (index user Id; columns persona,
    score, confidence, reason), for the users in `current` (their fields as the org holds them now)."""
    roles = config.fields
    writes = []
    for row in assignments.itertuples():
        user_id = row.Index
        held = current.get(str(user_id))
        if held is None:
            continue  # not an active user of the org (deactivated since, or never one)
        desired = {roles["persona"]: row.persona, roles["score"]: _at_scale(row.score, described[roles["score"]]),
                   roles["confidence"]: _at_scale(row.confidence, described[roles["confidence"]]),
                   roles["reason"]: str(row.reason)[:described[roles["reason"]].length or None]}
        changed = {name: value for name, value in desired.items() if not same_value(held.get(name), value, described[name])}
        if not changed:
            continue
        ours = last_written.get(str(user_id))
        edited = {role for role, name in roles.items() if _edited(held.get(name), ours, name, described[name])}
        kept = {role for role in edited if config.manual_edits.get(role) == "keep-manual"}
        old = {name: held.get(name) for name in changed}
        if "persona" in kept or not (set(changed) - {roles[role] for role in kept}):
            writes.append(PlannedWrite(str(user_id), old, changed, "conflict",
                                       f"edited by hand since persona-sync wrote it: {', '.join(sorted(kept))} kept"))
            continue
        new = {name: value for name, value in changed.items() if name not in {roles[role] for role in kept}}
        if config.updated_field:
            old[config.updated_field] = held.get(config.updated_field)
            new[config.updated_field] = f"{now.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}"
        writes.append(PlannedWrite(str(user_id), {name: old[name] for name in new}, new, "planned",
                                   f"kept by hand: {', '.join(sorted(kept))}" if kept else None))
    return writes


def _at_scale(value: float, info: FieldInfo) -> float:
    return round(float(value), info.scale) if info.scale else float(value)


def same_value(held: Any, wanted: Any, info: FieldInfo) -> bool:
    """Whether a field holding `held` already holds `wanted` (numbers compared at the field's scale)."""
    if held is None or wanted is None:
        return held is None and wanted is None
    if info.type in _NUMBER_TYPES:
        return math.isclose(round(float(held), info.scale), round(float(wanted), info.scale), abs_tol=1e-12)
    return str(held) == str(wanted)


def _edited(held: Any, ours: dict[str, Any] | None, name: str, info: FieldInfo) -> bool:
    """Whether the field holds something persona-sync did not write: a value that differs from its last
    write, or any value where it never wrote."""
    if ours is None or name not in ours:
        return held is not None
    return not same_value(held, ours[name], info)


def run_push(org: SalesforceConfig, state_config: StateConfig, config: PushConfig, run_id: str,
             assignments: pd.DataFrame, labels: list[str], *, dry_run: bool = False,
             now: datetime | None = None) -> PushReport:
    """Plans and (unless `dry_run`) writes a run's assignments to the org's User records; see the module.
    The API calls it spends go into the run ledger, failed or not."""
    client = SalesforceClient(org)
    with StateStore.from_config(state_config) as state:
        try:
            state.bind_org(client.org_id, client.instance_url)  # never another org's users
            moment = now or datetime.now(timezone.utc)
            with state.lock("push", purpose="write persona fields to the org", wait_seconds=PUSH_LOCK_WAIT_SECONDS):
                report = _push(client, state, config, run_id, assignments, labels, dry_run, moment)
        finally:
            state.add_api_calls(run_id, client.api_calls)
    log.info("push%s: %d of %d active users changed, %d written, %d failed %s, %d conflicts, %d API calls",
             " (dry run)" if dry_run else "", report.planned, report.users, report.written,
             sum(report.failed.values()), dict(report.failed), report.conflicts, report.calls)
    return report


def _push(client: SalesforceClient, state: StateStore, config: PushConfig, run_id: str, assignments: pd.DataFrame,
          labels: list[str], dry_run: bool, now: datetime) -> PushReport:
    report = PushReport(run_id, dry_run)
    described = describe_fields(client, "User")
    check_fields(described, config, max(len(label) for label in labels))
    names = [*config.fields.values(), *([config.updated_field] if config.updated_field else [])]
    current = {record["Id"]: record for record in read_records(client, "User", names, where="IsActive = true")}
    if not dry_run:
        _settle_unsettled(state, current, described, config)
    writes = plan_user_push(assignments, current, state.last_written(TARGET), described, config, now)
    planned = [write for write in writes if write.status == "planned"]
    report.users = int(assignments.index.isin(list(current)).sum())
    report.planned, report.conflicts = len(planned), len(writes) - len(planned)
    report.transitions = Counter(_transition(write, current[write.record_id], config.persona_field)
                                 for write in planned)
    report.samples = writes[:10]
    report.conflict_ids = [write.record_id for write in writes if write.status == "conflict"]
    report.changes = [(write.record_id, *_transition(write, current[write.record_id], config.persona_field),
                       write.status) for write in writes[:CHANGES_SHOWN]]
    use_bulk = len(planned) >= config.bulk_threshold
    report.calls_to_write = (BULK_JOB_CALLS if use_bulk else math.ceil(len(planned) / COLLECTION_SIZE)) if planned else 0
    if not dry_run:
        outcomes = _write(client, state, config, run_id, writes, planned, use_bulk)
        report.written = sum(outcome.success for outcome in outcomes)
        report.failed = Counter(outcome.status_code for outcome in outcomes if not outcome.success)
    report.calls = client.api_calls
    return report


def _settle_unsettled(state: StateStore, current: dict[str, dict[str, Any]], described: dict[str, FieldInfo],
                      config: PushConfig) -> None:
    """Marks done the planned writes of an earlier run that died before marking them, where the org holds
    what they wrote (the persona fields; the updated-at stamp is the org's own format): so those values
    count as ours (not as hand edits) from now on. The rest stay as they are: this run's plan writes what
    still differs."""
    compared = set(config.fields.values())
    taken: dict[str, list[dict[str, Any]]] = {}
    for write in state.unsettled_writes(TARGET):
        held = current.get(write["record_id"], {})
        if all(same_value(held.get(name), value, described[name]) for name, value in write["new_values"].items()
               if name in compared and name in described):
            taken.setdefault(write["run_id"], []).append({"record_id": write["record_id"], "success": True})
    for run_id, outcomes in taken.items():
        state.mark_writes(run_id, TARGET, outcomes)
        log.info("push: %d writes of run %s were in the org but never marked (the run died): marked done now",
                 len(outcomes), run_id)


def _write(client: SalesforceClient, state: StateStore, config: PushConfig, run_id: str, writes: list[PlannedWrite],
           planned: list[PlannedWrite], use_bulk: bool) -> list[WriteOutcome]:
    """Records the plan, then writes it, marking each outcome as its call returns."""
    state.plan_writes(run_id, TARGET, [{"record_id": write.record_id, "operation": "update",
                                        "old_values": write.old_values, "new_values": write.new_values,
                                        "status": write.status, "message": write.message} for write in writes])
    records = [{"Id": write.record_id, **write.new_values} for write in planned]

    def mark(outcomes: list[WriteOutcome]) -> None:
        state.mark_writes(run_id, TARGET, [vars(outcome) for outcome in outcomes])

    if not records:
        return []
    if use_bulk:
        outcomes = bulk_update(client, "User", records, poll_seconds=config.bulk_poll_seconds)
        again = {outcome.record_id for outcome in outcomes if outcome.status_code in RETRIED_IN_RUN}
        mark([outcome for outcome in outcomes if outcome.record_id not in again])
        if not again:
            return outcomes
        log.info("push: %d records of the Bulk job were locked or over the limit; sending them again", len(again))
        retried = update_records(client, "User", [record for record in records if record["Id"] in again],
                                 attempts=config.attempts, first_wait=config.first_wait_seconds, on_outcomes=mark)
        return [outcome for outcome in outcomes if outcome.record_id not in again] + retried
    return update_records(client, "User", records, attempts=config.attempts, first_wait=config.first_wait_seconds,
                          on_outcomes=mark)


def _transition(write: PlannedWrite, held: dict[str, Any], persona_field: str) -> tuple[str, str]:
    """(persona the user has in the org, persona they get): the same twice when only details change."""
    before = held.get(persona_field) or "(none)"
    return before, write.new_values.get(persona_field, before)
