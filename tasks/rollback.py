"""Rolling a run back: the org's persona fields and the community grants as they were before it.

From the run's sync log and grant ledger:
- **User fields**: each record the run wrote gets its old values back, unless it no longer holds what
  the run wrote (a person, or a later run, changed it since): those are skipped and listed;
- **community roles**: the roles it granted are revoked (if still there), the roles it revoked granted
  again (if still missing); nobody else's row is touched;
- **its assignments and history** stop counting: the run is marked rolled back in the ledger, so the
  next run neither keeps its personas stable nor compares with them, and the history rows it opened
  are removed (the ones it closed open again).

Only the newest run that wrote can be rolled back (roll back newer ones first): undoing an older one
under a newer one's writes would mix two pasts. The rollback is a run of its own, with its own sync log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from connectors.community import CommunityTable
from connectors.salesforce import SalesforceClient
from connectors.salesforce.write import describe_fields, read_records, update_records
from connectors.state import StateStore
from core.configs import CommunityConfig, PushConfig, SalesforceConfig, StateConfig
from core.errors import ConfigurationError
from tasks.community import apply_grants
from tasks.push import PUSH_LOCK_WAIT_SECONDS, TARGET, same_value

log = logging.getLogger(__name__)


@dataclass
class RollbackReport:
    """What a rollback put back, and what it left because it changed since."""

    run_id: str
    restored: int = 0
    skipped: list[str] = field(default_factory=list)  # record Ids changed since the run
    failed: dict[str, str] = field(default_factory=dict)  # record Id -> status code
    revoked: int = 0
    regranted: int = 0

    def counts(self) -> dict[str, object]:
        return {"rolled_back": self.run_id, "restored": self.restored, "skipped_changed_since": len(self.skipped),
                "failed": self.failed, "roles_revoked": self.revoked, "roles_granted_again": self.regranted}


def rollback(org: SalesforceConfig, state_config: StateConfig, push: PushConfig, community: CommunityConfig | None,
             run_id: str, rollback_run_id: str) -> RollbackReport:
    """Puts back what run `run_id` wrote; see the module. `rollback_run_id` is the rollback's own run."""
    report = RollbackReport(run_id)
    with StateStore.from_config(state_config) as state, \
            state.lock("push", purpose="roll back a run", wait_seconds=PUSH_LOCK_WAIT_SECONDS), \
            state.lock("community", purpose="roll back a run", wait_seconds=PUSH_LOCK_WAIT_SECONDS):
        _check_rollbackable(state, run_id, community)
        _restore_user_fields(org, state, push, run_id, rollback_run_id, report)
        if community is not None:
            _restore_grants(community, state, run_id, rollback_run_id, report)
        state.roll_back_run(run_id)
    log.info("rollback of %s: %d records restored, %d skipped (changed since), %d failed; roles: %d revoked, "
             "%d granted again", run_id, report.restored, len(report.skipped), len(report.failed), report.revoked,
             report.regranted)
    return report


def _check_rollbackable(state: StateStore, run_id: str, community: CommunityConfig | None) -> None:
    run = state.run(run_id)
    if run is None:
        raise ConfigurationError(f"no run {run_id} in the run ledger ({state.where})")
    if run.status == "rolled_back":
        raise ConfigurationError(f"run {run_id} was rolled back already")
    newest = state.newest_writing_run()
    if newest is not None and newest != run_id:
        newer = state.run(newest)
        if newer is not None and newer.started_at > run.started_at:
            raise ConfigurationError(f"run {newest} wrote or stored assignments after run {run_id}: roll it back "
                                     "first (only the newest such run can be rolled back)")
    if community is None and state.grant_count(run_id):
        raise ConfigurationError(f"run {run_id} granted or revoked community roles, but no community database is "
                                 "configured (PERSONA_SYNC_COMMUNITY_DATABASE_URL): configure the one it wrote to")


def _restore_user_fields(org: SalesforceConfig, state: StateStore, push: PushConfig, run_id: str,
                         rollback_run_id: str, report: RollbackReport) -> None:
    written = [row for row in state.sync_log(run_id, TARGET) if row["status"] == "done"]
    if not written:
        return
    client = SalesforceClient(org)
    state.bind_org(client.org_id, client.instance_url)  # never another org's users
    described = describe_fields(client, "User")
    names = sorted({name for row in written for name in row["new_values"]})
    current = {record["Id"]: record for record in read_records(client, "User", names,
                                                               ids=[row["record_id"] for row in written])}
    compared = [name for name in names if name != push.updated_field]
    restore = []
    for row in written:
        held = current.get(row["record_id"], {})
        if all(same_value(held.get(name), row["new_values"].get(name), described[name]) for name in compared
               if name in row["new_values"]):
            restore.append(row)
        else:
            report.skipped.append(row["record_id"])
    state.plan_writes(rollback_run_id, TARGET, [
        {"record_id": row["record_id"], "operation": "update", "old_values": row["new_values"],
         "new_values": row["old_values"], "status": "planned", "message": f"rollback of run {run_id}"}
        for row in restore])
    outcomes = update_records(client, "User", [{"Id": row["record_id"], **row["old_values"]} for row in restore],
                              attempts=push.attempts, first_wait=push.first_wait_seconds,
                              on_outcomes=lambda done: state.mark_writes(rollback_run_id, TARGET,
                                                                         [vars(outcome) for outcome in done]))
    state.add_api_calls(rollback_run_id, client.api_calls)
    report.restored = sum(outcome.success for outcome in outcomes)
    report.failed = {outcome.record_id: outcome.status_code or "" for outcome in outcomes if not outcome.success}


def _restore_grants(config: CommunityConfig, state: StateStore, run_id: str, rollback_run_id: str,
                    report: RollbackReport) -> None:
    with CommunityTable(config) as table:
        present = table.rows()
        state.settle_grants(table.name, present)
        granted, revoked = state.grants_of_run(table.name, run_id)
        to_revoke = sorted(granted & present)
        to_grant = sorted(revoked - present)
        if not (to_revoke or to_grant):
            return
        apply_grants(table, state, rollback_run_id, to_grant, to_revoke)
    report.revoked, report.regranted = len(to_revoke), len(to_grant)
