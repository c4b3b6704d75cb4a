"""The community push against a role table (and the state database) in SQLite and PostgreSQL: only our own
grants are ever changed.

The truth is the table itself (read with plain SQL) and an uninterrupted run, not the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from connectors.community import CommunityError, CommunityTable
from connectors.staging import Staging
from connectors.state import StateStore
from core.configs import CommunityConfig, StagingConfig, StateConfig
from personas.catalog import default_catalog_path, load_catalog
from tasks.community import run_community_push

CATALOG = load_catalog(default_catalog_path())
USERS = {f"005A0000000000{n}AAA": f"user{n}@acme.test" for n in range(1, 5)}


@pytest.fixture(params=["sqlite", "postgresql"])
def community_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'community.db'}"
        return
    url = request.getfixturevalue("fresh_postgres_url")
    yield url


@pytest.fixture
def world(community_url: str, tmp_path: Path) -> tuple[CommunityConfig, StagingConfig, StateConfig, sa.Engine]:
    engine = sa.create_engine(community_url)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE community_members (member_email VARCHAR(255) NOT NULL, "
                                   "role VARCHAR(255) NOT NULL, granted_by VARCHAR(50), "
                                   "PRIMARY KEY (member_email, role))"))
        # Someone else's grants: one holds the very role persona-sync would grant, one a role of its own.
        connection.execute(sa.text("INSERT INTO community_members VALUES ('user1@acme.test', 'Service Community', "
                                   "'admin'), ('user2@acme.test', 'Beta Testers', 'admin')"))
    staging = StagingConfig(root=tmp_path / "staging")
    Staging.from_config(staging).write_part("User", _users_table())
    # On PostgreSQL the state database (grant ledger, sync log) is there too.
    state_url = community_url if community_url.startswith("postgresql") else f"sqlite:///{tmp_path / 'state.db'}"
    state = StateConfig(url=SecretStr(state_url))
    StateStore.from_config(state).ensure_schema()
    config = CommunityConfig(url=SecretStr(community_url))
    return config, staging, state, engine


def _users_table():
    import pyarrow as pa

    return pa.table({"Id": list(USERS), "Email": list(USERS.values()), "IsActive": [True, True, True, True]})


def _assignments(*personas: str) -> pd.DataFrame:
    return pd.DataFrame({"persona": list(personas)}, index=pd.Index(list(USERS)[:len(personas)]))


def _table(engine: sa.Engine) -> set[tuple[str, str, str | None]]:
    with engine.connect() as connection:
        return set(connection.execute(sa.text("SELECT member_email, role, granted_by FROM community_members")))


def _push(world, personas: tuple[str, ...], *, dry_run: bool = False):
    config, staging, state, _ = world
    run_id = StateStore.from_config(state).start_run("test", {})
    return run_community_push(config, staging, state, run_id, _assignments(*personas), CATALOG, dry_run=dry_run)


def test_roles_are_granted_others_grants_untouched_and_a_rerun_changes_nothing(world) -> None:
    engine = world[3]
    report = _push(world, ("Case Solver", "Team Leader", "Unassigned", "Case Solver"))
    rows = _table(engine)
    assert ("user1@acme.test", "Service Community", "admin") in rows  # someone else's, left as it was
    assert ("user2@acme.test", "Beta Testers", "admin") in rows
    ours = {(member, role) for member, role, by in rows if by is None}
    assert ours == {("user2@acme.test", "Service Leaders"), ("user2@acme.test", "Service Community"),
                    ("user4@acme.test", "Service Community")}
    assert (report.granted, report.revoked, report.foreign) == (3, 0, 1)
    again = _push(world, ("Case Solver", "Team Leader", "Unassigned", "Case Solver"))
    assert (again.granted, again.revoked) == (0, 0) and _table(engine) == rows


def test_only_our_own_grants_are_revoked(world) -> None:
    engine = world[3]
    _push(world, ("Case Solver", "Team Leader", "Unassigned", "Case Solver"))
    report = _push(world, ("Deal Closer", "Unassigned", "Unassigned", "Unassigned"))
    rows = _table(engine)
    # user1's Service Community was never ours: it stays although user1 is no Case Solver any more.
    assert ("user1@acme.test", "Service Community", "admin") in rows
    assert {(member, role) for member, role, by in rows if by is None} == {("user1@acme.test", "Sales Community")}
    assert (report.granted, report.revoked) == (1, 3)


def test_a_dry_run_counts_and_writes_nothing(world) -> None:
    engine = world[3]
    before = _table(engine)
    report = _push(world, ("Case Solver", "Team Leader"), dry_run=True)
    assert report.granted == 2 and _table(engine) == before
    assert StateStore.from_config(world[2]).grants(report.target, status=None) == set()


def test_a_crash_between_the_ledger_and_the_table_converges(world, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = world[3]
    personas = ("Case Solver", "Team Leader", "Unassigned", "Case Solver")

    def crash(self, grants, revokes):  # the table's transaction commits, then the process dies
        original(self, grants, revokes)
        raise SystemExit("killed")

    original = CommunityTable.apply
    monkeypatch.setattr(CommunityTable, "apply", crash)
    with pytest.raises(SystemExit):
        _push(world, personas)
    monkeypatch.setattr(CommunityTable, "apply", original)
    _push(world, personas)  # the next run settles the ledger first: no double grant, nothing left unowned
    rows = _table(engine)
    assert len([row for row in rows if row[2] is None]) == 3
    # The grants the crashed run made are ours: a later run revokes them.
    _push(world, ("Unassigned",) * 4)
    assert {row for row in _table(engine) if row[2] is None} == set()


def test_a_missing_table_or_column_is_a_clear_error(world) -> None:
    config = world[0]
    with pytest.raises(CommunityError, match="no table 'members'"):
        CommunityTable(config.model_copy(update={"table": "members"}))
    with pytest.raises(CommunityError, match="no column 'email' .*PERSONA_SYNC_COMMUNITY_USER_COLUMN"):
        CommunityTable(config.model_copy(update={"user_column": "email"}))


def test_a_role_someone_grants_meanwhile_stays_theirs(world, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = world[3]
    original = CommunityTable.apply

    def racing(self, grants, revokes):  # an admin grants the same role between our read and our write
        with engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO community_members VALUES ('user4@acme.test', 'Service Community', "
                                       "'admin')"))
        return original(self, grants, revokes)

    monkeypatch.setattr(CommunityTable, "apply", racing)
    with pytest.raises(CommunityError, match="run again"):
        _push(world, ("Case Solver", "Team Leader", "Unassigned", "Case Solver"))
    monkeypatch.setattr(CommunityTable, "apply", original)
    report = _push(world, ("Case Solver", "Team Leader", "Unassigned", "Case Solver"))
    assert (report.granted, report.foreign) == (2, 2)
    _push(world, ("Unassigned",) * 4)  # none of ours is desired any more: the admin's rows stay
    assert {(member, role) for member, role, by in _table(engine)} == {
        ("user1@acme.test", "Service Community"), ("user2@acme.test", "Beta Testers"),
        ("user4@acme.test", "Service Community")}


def test_a_member_key_the_org_does_not_fill_revokes_nothing(world) -> None:
    import pyarrow as pa

    config, staging, state, engine = world
    _push(world, ("Case Solver", "Team Leader", "Unassigned", "Case Solver"))
    before = _table(engine)
    Staging.from_config(staging).write_part("User", pa.table({
        "Id": list(USERS), "Email": pa.nulls(4, pa.string()), "IsActive": [True] * 4}))
    with pytest.raises(CommunityError, match="4 of 4 active users have no Email"):
        _push(world, ("Case Solver", "Team Leader", "Unassigned", "Case Solver"))
    assert _table(engine) == before
