"""The push to the community role table: grant each active user the roles of their persona, revoke what
persona-sync granted that no longer fits, and never touch a row someone else granted.

The catalog maps personas to roles (`community_roles`); the member key is the configured User field
(Email by default) as staged. Against the table as it is now and the grant ledger in the state database:

- a desired (member, role) the table lacks is **granted** (inserted, and recorded as ours);
- a desired pair the table already holds and the ledger does not is someone else's grant: left as it is,
  and not ours to revoke later;
- a pair of ours no longer desired is **revoked** (deleted); nobody else's row is ever deleted.

Crash safety: the ledger records the intended grants and revokes before the table's transaction (all
of a run's changes in one), and is settled against the table after it, and again at the start of the
next run, so a crash anywhere converges to the same table and ledger with no double grants. Every
change is also in the sync log (target `community:<database>#<table>`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd
import pyarrow.compute as pc

from connectors.community import CommunityError, CommunityTable
from connectors.staging import Staging
from connectors.state import StateStore
from core.configs import CommunityConfig, StagingConfig, StateConfig
from personas.catalog import Catalog
from tasks.push import PUSH_LOCK_WAIT_SECONDS

log = logging.getLogger(__name__)

Pair = tuple[str, str]


@dataclass
class CommunityReport:
    """What a community push did (or, in a dry run, would do)."""

    target: str
    dry_run: bool
    granted: int = 0
    revoked: int = 0
    foreign: int = 0  # desired pairs someone else had already granted: left to them
    members_without_key: int = 0

    def counts(self) -> dict[str, object]:
        return {"community": {"target": self.target, "dry_run": self.dry_run, "granted": self.granted,
                              "revoked": self.revoked, "left_to_others": self.foreign,
                              "users_without_key": self.members_without_key}}


def apply_grants(table: CommunityTable, state: StateStore, run_id: str, grants: list[Pair], revokes: list[Pair]) -> None:
    """Ledger first, then the table's one transaction, then the ledger settled against the table. A
    transaction the table refuses (someone granted one of the same roles meanwhile) applies nothing,
    and the ledger forgets it: the next run plans again from what the table then holds."""
    state.begin_grants(run_id, table.name, grants, revokes)
    try:
        table.apply(grants, revokes)
    except CommunityError:
        state.abandon_grants(run_id, table.name)
        raise
    state.settle_grants(table.name, table.rows())


def desired_pairs(assignments: pd.DataFrame, members: dict[str, str], catalog: Catalog) -> set[Pair]:
    """(member key, role) for every user with a persona the catalog gives roles to."""
    roles_of = {persona.label: catalog.community_roles.get(persona.id, []) for persona in catalog.personas}
    return {(members[str(user)], role) for user, persona in assignments["persona"].items()
            if str(user) in members for role in roles_of.get(persona, [])}


def member_keys(staging_config: StagingConfig, field: str) -> tuple[dict[str, str], set[str]]:
    """Active users' member keys (user Id -> the configured User field, as staged), and every active user."""
    users = Staging.from_config(staging_config).read_arrow("User", ["Id", "IsActive", field])
    active = users.filter(pc.fill_null(users["IsActive"], False))
    ids = active["Id"].to_pylist()
    return {user: key for user, key in zip(ids, active[field].to_pylist()) if key}, set(ids)


def run_community_push(config: CommunityConfig, staging_config: StagingConfig, state_config: StateConfig,
                       run_id: str, assignments: pd.DataFrame, catalog: Catalog, *,
                       dry_run: bool = False) -> CommunityReport:
    """Grants and revokes the run's community roles; see the module."""
    members, active = member_keys(staging_config, config.user_field)
    assigned = {str(user) for user in assignments.index} & active
    without = len(assigned - set(members))
    if assigned and without > len(assigned) / 2:  # a key the org does not fill would revoke every grant of ours
        raise CommunityError(f"{without:,} of {len(assigned):,} active users have no {config.user_field}, the User "
                             "field community members are keyed by (PERSONA_SYNC_COMMUNITY_USER_FIELD): nothing was "
                             "granted or revoked. Choose a field the org fills")
    desired = desired_pairs(assignments, members, catalog)
    with CommunityTable(config) as table, StateStore.from_config(state_config) as state, \
            state.lock("community", purpose="grant and revoke community roles", wait_seconds=PUSH_LOCK_WAIT_SECONDS):
        report = CommunityReport(table.name, dry_run)
        report.members_without_key = without
        present = table.rows()
        if not dry_run:
            state.settle_grants(table.name, present)  # whatever a crashed run left half done
        ours = state.grants(table.name)
        to_grant = sorted(desired - present)
        to_revoke = sorted((ours - desired) & present)
        report.foreign = len((desired & present) - ours)
        report.granted, report.revoked = len(to_grant), len(to_revoke)
        if dry_run or not (to_grant or to_revoke):
            return report
        target = f"community:{table.name}"
        state.plan_writes(run_id, target, [
            *({"record_id": f"{member}|{role}", "operation": "grant", "old_values": {}, "new_values": {"role": role},
               "status": "planned"} for member, role in to_grant),
            *({"record_id": f"{member}|{role}", "operation": "revoke", "old_values": {"role": role},
               "new_values": {}, "status": "planned"} for member, role in to_revoke)])
        apply_grants(table, state, run_id, to_grant, to_revoke)
        state.mark_writes(run_id, target, [{"record_id": f"{member}|{role}", "success": True}
                                           for member, role in [*to_grant, *to_revoke]])
    log.info("community %s: %d roles granted, %d revoked, %d left to whoever granted them", report.target,
             report.granted, report.revoked, report.foreign)
    return report
