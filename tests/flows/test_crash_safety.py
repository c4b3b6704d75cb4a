"""Kill -9 at any point of a push, run again: the end state equals that of an uninterrupted run.

A child process runs the real push (User fields, then community roles) and is killed with SIGKILL at a
point: before the first call, between sObject Collections calls, while a Bulk API 2.0 job is in the
org's hands, and inside the community table's SQL transaction. Then the push runs again, uninterrupted.
The end state, and that of a third run after it, is compared with the truth outside the code: the org's User records as the assignments
say, the community table as the catalog's roles say plus everyone else's grants, one ledger row per
grant, and every failure recorded.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from connectors.salesforce import connect
from connectors.staging import Staging
from connectors.state import StateStore
from personas.catalog import UNASSIGNED, default_catalog_path, load_catalog
from persona_sync.embedded_org import demo_community
from sandbox.runner import RunningSandbox
from tests.conftest import sandbox_environment

CHILD = Path(__file__).with_name("push_child.py")
CATALOG = load_catalog(default_catalog_path())
LABELS = [*CATALOG.labels, UNASSIGNED]


@pytest.fixture
def world(fresh_sandbox: RunningSandbox, tmp_path: Path) -> dict:
    env = sandbox_environment(fresh_sandbox, home=tmp_path)
    env |= {f"PERSONA_SYNC_{name.upper()}": value.get_secret_value() if hasattr(value, "get_secret_value")
            else str(value) for name, value in demo_community(tmp_path, fresh_sandbox.org_path).items()}
    sf = connect(_settings(env).salesforce())
    users = sf.query_all("SELECT Id, Email, IsActive FROM User ORDER BY Id")["records"]
    Staging(tmp_path / "staging").write_part("User", pa.table({
        "Id": [user["Id"] for user in users], "Email": [user["Email"] for user in users],
        "IsActive": [bool(user["IsActive"]) for user in users]}))
    StateStore.from_config(_settings(env).state()).ensure_schema()
    with sqlite3.connect(tmp_path / "community.db") as community:
        others = set(community.execute("SELECT member_email, role FROM community_members"))
    active = [user for user in users if user["IsActive"]]
    return {"sandbox": fresh_sandbox, "env": env, "sf": sf, "active": active, "others": others, "home": tmp_path}


def _settings(env: dict[str, str]):
    import os

    from core.settings import Settings

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return Settings(_env_file=None)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _assignments(world: dict, shift: int) -> pd.DataFrame:
    ids = [user["Id"] for user in world["active"]]
    personas = [LABELS[(index + shift) % len(LABELS)] for index in range(len(ids))]
    return pd.DataFrame({"persona": personas, "score": [0.5 + (index % 50) / 100 for index in range(len(ids))],
                         "confidence": 0.25, "reason": [f"{persona}: test run {shift}" for persona in personas]},
                        index=pd.Index(ids, name="user_id"))


def _run_child(world: dict, point: str, assignments: pd.DataFrame, **env: str) -> int:
    path = world["home"] / f"assignments-{point}.parquet"
    assignments.to_parquet(path)
    import os

    result = subprocess.run([sys.executable, str(CHILD), point, str(path)], env=os.environ | world["env"] | env,
                            capture_output=True, text=True, timeout=300)
    return result.returncode


def _check_end_state(world: dict, assignments: pd.DataFrame, failing: str | None = None) -> None:
    held = {row["Id"]: row for row in world["sf"].query_all(
        "SELECT Id, Persona__c, Persona_Score__c, Persona_Reason__c FROM User WHERE IsActive = true")["records"]}
    for user, row in assignments.iterrows():
        if user == failing:
            continue
        assert (held[user]["Persona__c"], held[user]["Persona_Reason__c"]) == (row.persona, row.reason), user
        assert held[user]["Persona_Score__c"] == pytest.approx(round(row.score, 4))
    emails = {user["Id"]: user["Email"] for user in world["active"]}
    roles = {persona.label: CATALOG.community_roles.get(persona.id, []) for persona in CATALOG.personas}
    desired = {(emails[user], role) for user, persona in assignments["persona"].items() for role in roles.get(persona, [])}
    with sqlite3.connect(world["home"] / "community.db") as community:
        rows = list(community.execute("SELECT member_email, role FROM community_members"))
    assert len(rows) == len(set(rows)) and set(rows) == desired | world["others"]
    state = StateStore.from_config(_settings(world["env"]).state())
    target = next(iter(state.grants_target_names()))
    assert state.grants(target) == desired - world["others"]  # ours: exactly what we inserted, once
    assert state.grants(target, status="granting") == set() and state.grants(target, status="revoking") == set()


@pytest.mark.parametrize("point", ["before-first-call", "between-calls", "after-first-call", "during-bulk-job",
                                   "inside-sql-transaction"])
def test_a_push_killed_at_any_point_converges_on_the_next_run(world: dict, point: str) -> None:
    failing = world["active"][5]["Id"]
    world["sandbox"].set_faults(update_errors={failing: "INACTIVE_OWNER_OR_USER"})
    bulk = {"PERSONA_SYNC_PUSH_BULK_THRESHOLD": "1"} if point == "during-bulk-job" else {}
    first = _assignments(world, 0)
    assert _run_child(world, "none", first) == 0  # an earlier night, uninterrupted
    _check_end_state(world, first, failing)

    changed = _assignments(world, 3)  # tonight: most users change persona
    assert _run_child(world, point, changed, **bulk) == -signal.SIGKILL
    assert _run_child(world, "none", changed, **bulk) == 0
    _check_end_state(world, changed, failing)
    state = StateStore.from_config(_settings(world["env"]).state())
    last = state.sync_log(state.runs(limit=1)[0].id, "salesforce:User")
    assert [row["error_code"] for row in last if row["record_id"] == failing] == ["INACTIVE_OWNER_OR_USER"]
    # What the killed run wrote counts as ours: the next change goes through, with no conflict.
    later = _assignments(world, 6)
    assert _run_child(world, "none", later, **bulk) == 0
    _check_end_state(world, later, failing)
    assert not [row for row in state.sync_log(state.runs(limit=1)[0].id, "salesforce:User")
                if row["status"] == "conflict"]
