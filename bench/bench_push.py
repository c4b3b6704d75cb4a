"""Benchmark of the push (tasks/push.py, tasks/community.py) on the large sandbox org, 10 % of users changed.

Run: .venv/bin/python bench/bench_push.py [--preset large] [--seed 1] [--change 0.10] [--postgres-url URL]

The org: a copy of the org `bench/bench_pull.py` generates (<data-dir>/<preset>-<seed>/org.db, copied once to
<data-dir>/push-<preset>-<seed>/, generated there when there is nothing to copy), so the pushes never
change the org the other benchmarks read. Before each run its persona fields are emptied (plain SQL on the
copy, sandbox stopped) and the bench home (<data-dir>/push-home-<preset>-<seed>/: state database, staging,
community database) starts empty, so every run measures the same thing. The sandbox runs in its own process.

Prints, for the org's active users (the assignments are made here: each user a catalog label, then a
deterministic sample of --change of them moved to another label, score and reason):
1. seed (not measured): everyone's first push (from 2,000 changed users on, the Bulk path);
2. the change through sObject Collections (bulk threshold above the change): API calls as the client counts
   them (PushReport.calls) and as the org counts them (DailyApiRequests before and after, from a separate
   connection, less the `limits` calls themselves), split into the fixed cost of reading back (describe,
   query pages: the calls of a dry run) and the writes, against the floor ceil(changed / 200); time, and
   where it went (login, describe, read-back, plan, state database, API writes);
3. a change of the same users through one Bulk API 2.0 job (bulk threshold low): the calls of the job by
   kind (create, upload, close, polls, results) and time;
4. a no-change rerun: users changed and written (target: 0), calls (describe and read-back only);
5. the community role table on SQLite (a file in the bench home) and PostgreSQL (a scratch database made
   next to --postgres-url and dropped after; skipped, saying why, when unreachable): a first grant of every
   active user's roles, then the same change of personas (grants and revokes), then a no-change rerun;
   time of each, split into reading the table, the ledger (state database) and the table's transaction.
Each push is checked against the org or the table afterwards (outside the measurements) and a mismatch
is printed. Nothing is asserted: compare the numbers with the targets (issue 12, "Done when").
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sqlite3
import sys
import time
import uuid
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from core.settings import Settings  # noqa: E402
from persona_sync.embedded_org import sandbox_org  # noqa: E402
from persona_sync.embedded_org import running_sandbox_url  # noqa: E402
from sandbox.runner import RunningSandbox, SandboxConfig  # noqa: E402
from sandbox.runner import start_sandbox_process  # noqa: E402

PERSONA_FIELDS = ("Persona__c", "Persona_Score__c", "Persona_Confidence__c", "Persona_Reason__c", "Persona_Updated__c")
COMMUNITY_TABLE = "community_members"
FOREIGN_ROLES = ("Service Community", "Sales Community", "Beta Testers", "Partner Portal")


# --- where the time and the calls go ------------------------------------------------------------------

class Probe:
    """Inclusive seconds and calls per wrapped function, and every HTTP response by kind of request."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()

    def wrap(self, owner: Any, name: str, label: str | None = None) -> None:
        original = getattr(owner, name)
        label = label or name

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started
                self.counts[label] += 1

        setattr(owner, name, timed)

    def reset(self) -> None:
        self.seconds.clear()
        self.counts.clear()
        self.requests.clear()

    def on_response(self, response: Any) -> None:
        self.requests[_request_kind(response.request.method, response.request.url)] += 1


def _request_kind(method: str, url: str) -> str:
    path = re.sub(r"^https?://[^/]+", "", url).split("?")[0]
    path = re.sub(r"/services/data/v[\d.]+", "", path)
    path = re.sub(r"/(7\d\d|0\w\w)[A-Za-z0-9]{12,15}(?=/|$)", "/{id}", path)  # job ids and record ids
    path = re.sub(r"/query/0\w{14,17}-\d+", "/query/{locator}", path)
    return f"{method} {path}"


def install_probe() -> Probe:
    """Wraps the push's steps (as tasks/push.py and tasks/community.py call them) with timers, and counts
    every HTTP response a SalesforceClient receives by kind."""
    import connectors.salesforce.client as client_module
    import tasks.community as community
    import tasks.push as push
    from connectors.community import CommunityTable
    from connectors.state import StateStore

    probe = Probe()
    for name in ("describe_fields", "read_records", "plan_user_push", "update_records", "bulk_update"):
        probe.wrap(push, name)
    for name in ("member_keys", "desired_pairs"):
        probe.wrap(community, name)
    for name in ("last_written", "plan_writes", "mark_writes", "grants", "begin_grants", "settle_grants"):
        probe.wrap(StateStore, name, f"state.{name}")
    probe.wrap(CommunityTable, "rows", "table.rows")
    probe.wrap(CommunityTable, "apply", "table.apply")
    probe.wrap(CommunityTable, "__init__", "table.open")
    client_class = client_module.SalesforceClient
    probe.wrap(client_class, "__init__", "login")
    original_hook = client_class._on_response

    def on_response(self: Any, response: Any, *args: Any, **kwargs: Any) -> None:
        probe.on_response(response)
        original_hook(self, response, *args, **kwargs)

    client_class._on_response = on_response  # bound when a client is built, so patched before any is
    return probe


# --- the org ------------------------------------------------------------------------------------------

def prepare_org_dir(target: Path, source: Path) -> str:
    """The org's data directory for the pushes: a copy of `source`'s org, made once; persona fields emptied."""
    org_db = target / "org.db"
    made = "reused"
    if not org_db.exists():
        target.mkdir(parents=True, exist_ok=True)
        if (source / "org.db").exists():
            if running_sandbox_url(source) is not None:
                print(f"note: a sandbox serves {source}; copying its org with SQLite's backup API (consistent)")
            started = time.perf_counter()
            temporary = target / "org.db.copying"
            temporary.unlink(missing_ok=True)
            with sqlite3.connect(f"file:{(source / 'org.db').resolve()}?mode=ro", uri=True) as original, \
                    sqlite3.connect(temporary) as copy:
                original.backup(copy)
            os.replace(temporary, org_db)
            made = f"copied from {source} in {time.perf_counter() - started:.0f} s"
        else:
            return "to be generated (nothing to copy)"
    with sqlite3.connect(org_db) as db:
        cleared = db.execute(f'UPDATE "User" SET {", ".join(f"{name} = NULL" for name in PERSONA_FIELDS)} '
                             f'WHERE {" OR ".join(f"{name} IS NOT NULL" for name in PERSONA_FIELDS)}').rowcount
    return f"{made}; persona fields emptied on {cleared:,} users"


def settings_for(sandbox: RunningSandbox, home: Path) -> Settings:
    return Settings(_env_file=None, home=home, api_reserve=0,
                    **sandbox_org(sandbox.url, sandbox.data_dir, sandbox.credentials))  # type: ignore[arg-type]


class OrgCounter:
    """The org's own count of API requests (DailyApiRequests), read through a connection of its own."""

    def __init__(self, settings: Settings) -> None:
        from connectors.salesforce import connect

        self.sf = connect(settings.salesforce())

    def used(self) -> int:
        daily = self.sf.limits()["DailyApiRequests"]
        return int(daily["Max"]) - int(daily["Remaining"])

    @contextmanager
    def spent(self, into: dict[str, int]) -> Iterator[None]:
        before = self.used()
        yield
        into["org_calls"] = self.used() - before - 1  # less the second limits call itself


# --- the assignments ----------------------------------------------------------------------------------

def make_assignments(users: list[str], labels: list[str], change: float, seed: int
                     ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """(seed, changed, changed again, the changed users): every user a label; then `change` of them moved
    to the next label with another score and reason; then the same users to the label after."""
    count = len(users)
    position = np.arange(count)
    rng = np.random.default_rng(seed)
    moved = np.zeros(count, dtype=bool)
    moved[rng.choice(count, size=round(change * count), replace=False)] = True

    def frame(shift: np.ndarray, tag: str, score_shift: np.ndarray) -> pd.DataFrame:
        persona = [labels[(index + offset) % len(labels)] for index, offset in zip(position, shift)]
        score = np.round(0.5 + (position % 400) / 1000 + score_shift, 6)
        return pd.DataFrame({"persona": persona, "score": score, "confidence": np.round(0.2 + (position % 50) / 100, 6),
                             "reason": [f"{name}: {tag} (bench)" for name in persona]},
                            index=pd.Index(users, name="user_id"))

    seeded = frame(np.zeros(count, dtype=int), "seed", np.zeros(count))
    changed, again = seeded.copy(), seeded.copy()
    changed.loc[moved] = frame(np.ones(count, dtype=int), "changed", np.full(count, 0.05)).loc[moved]
    again.loc[moved] = frame(np.full(count, 2), "changed again", np.full(count, 0.07)).loc[moved]
    return seeded, changed, again, [user for user, flag in zip(users, moved) if flag]


# --- the push phases ----------------------------------------------------------------------------------

def push_once(settings: Settings, probe: Probe, counter: OrgCounter, name: str, assignments: pd.DataFrame,
              labels: list[str], bulk_threshold: int, *, dry_run: bool = False) -> dict[str, Any]:
    from connectors.state import StateStore
    from tasks.push import run_push

    config = settings.push().model_copy(update={"bulk_threshold": bulk_threshold})
    with StateStore.from_config(settings.state()) as state:
        run_id = state.start_run("bench_push", {"phase": name, "dry_run": dry_run})
    probe.reset()
    result: dict[str, Any] = {"name": name}
    with counter.spent(result):
        started = time.perf_counter()
        report = run_push(settings.salesforce(), settings.state(), config, run_id, assignments, labels,
                          dry_run=dry_run)
        result["seconds"] = time.perf_counter() - started
    with StateStore.from_config(settings.state()) as state:
        state.finish_run(run_id, "succeeded", counts=report.counts())  # run_push recorded its API calls
    result.update(report=report, times=dict(probe.seconds), counts=dict(probe.counts), requests=dict(probe.requests))
    return result


def print_push(result: dict[str, Any], fixed_calls: int | None) -> None:
    report, times, requests = result["report"], result["times"], result["requests"]
    planned = report.planned
    floor = math.ceil(planned / 200)
    kind = "dry run" if report.dry_run else ("Bulk" if times.get("bulk_update") else "collections")
    print(f"  {result['name']}: {report.users:,} users compared, {planned:,} changed, {report.written:,} written, "
          f"failed {dict(report.failed) or 0}, {report.conflicts} conflicts ({kind})")
    write_calls = report.calls - fixed_calls if fixed_calls is not None else None
    print(f"    API calls: client {report.calls}, org {result['org_calls']}"
          + (f" = read-back {fixed_calls} + writes {write_calls}" if write_calls is not None else "")
          + f"; report.calls_to_write {report.calls_to_write}; floor ceil({planned:,}/200) = {floor}")
    print(f"    requests by kind: " + ", ".join(f"{kind_} x{count}" for kind_, count in sorted(requests.items())))
    marking = times.get("state.mark_writes", 0.0)
    api_write = times.get("update_records", 0.0) - (marking if times.get("update_records") else 0.0) \
        + times.get("bulk_update", 0.0)
    parts = {"login": times.get("login", 0.0), "describe": times.get("describe_fields", 0.0),
             "read-back": times.get("read_records", 0.0), "plan": times.get("plan_user_push", 0.0),
             "state.last_written": times.get("state.last_written", 0.0),
             "state.plan_writes": times.get("state.plan_writes", 0.0), "state.mark_writes": marking,
             "API writes": api_write}
    other = result["seconds"] - sum(parts.values())
    print(f"    time {result['seconds']:.2f} s: " + ", ".join(f"{key} {value:.2f}" for key, value in parts.items())
          + f", other {other:.2f}")


def check_org(counter: OrgCounter, expected: pd.DataFrame) -> str:
    """How many active users' persona fields differ from `expected` (read with plain SOQL, after measuring)."""
    rows = counter.sf.query_all("SELECT Id, Persona__c, Persona_Score__c, Persona_Confidence__c, Persona_Reason__c "
                                "FROM User WHERE IsActive = true")["records"]
    wrong = 0
    for row in rows:
        want = expected.loc[row["Id"]]
        if (row["Persona__c"] != want.persona or row["Persona_Reason__c"] != want.reason
                or row["Persona_Score__c"] is None or abs(row["Persona_Score__c"] - round(want.score, 4)) > 1e-9
                or row["Persona_Confidence__c"] is None
                or abs(row["Persona_Confidence__c"] - round(want.confidence, 4)) > 1e-9):
            wrong += 1
    return f"org check: {len(rows):,} active users read back, {wrong} differ from the assignments"


# --- the community phases -----------------------------------------------------------------------------

@contextmanager
def scratch_postgres(url: str) -> Iterator[str | None]:
    """A scratch PostgreSQL database next to `url` (as tests/conftest.py makes one), dropped afterwards;
    None (and why, printed) when PostgreSQL is unreachable."""
    import sqlalchemy

    admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"persona_sync_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as error:
        print(f"  PostgreSQL skipped: not reachable at {admin.url.render_as_string(hide_password=True)} "
              f"({str(error.orig).strip().splitlines()[0]}); start it or pass --postgres-url")
        admin.dispose()
        yield None
        return
    try:
        yield sqlalchemy.make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def make_role_table(url: str, emails: list[str]) -> int:
    """The community's role table (as the demo's), with grants "someone else" made to a few members."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    foreign = [{"member": email, "role": FOREIGN_ROLES[index % len(FOREIGN_ROLES)]} for index, email in enumerate(emails)]
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE TABLE {COMMUNITY_TABLE} (member_email VARCHAR(255) NOT NULL, "
                                   "role VARCHAR(255) NOT NULL, granted_by VARCHAR(50), "
                                   "PRIMARY KEY (member_email, role))"))
        connection.execute(sa.text(f"INSERT INTO {COMMUNITY_TABLE} VALUES (:member, :role, 'community-admin')"),
                           foreign)
    engine.dispose()
    return len(foreign)


def table_rows(url: str) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(rows of others, rows persona-sync inserted) in the role table, read with plain SQL."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as connection:
        rows = list(connection.execute(sa.text(f"SELECT member_email, role, granted_by FROM {COMMUNITY_TABLE}")))
    engine.dispose()
    return {(m, r) for m, r, by in rows if by is not None}, {(m, r) for m, r, by in rows if by is None}


def community_phases(settings: Settings, probe: Probe, backend: str, url: str, emails: list[str],
                     steps: list[tuple[str, pd.DataFrame]]) -> None:
    from pydantic import SecretStr

    from connectors.state import StateStore
    from personas.catalog import load_catalog
    from tasks.community import desired_pairs, run_community_push

    catalog = load_catalog(settings.catalog_file) if settings.catalog_file else _default_catalog()
    config = settings.updated(community_database_url=SecretStr(url)).community()
    foreign_count = make_role_table(url, emails[:8])
    foreign_before, _ = table_rows(url)
    print(f"  {backend}: role table with {foreign_count} grants by others; state database on "
          f"{settings.state().url.get_secret_value().split(':')[0]}")
    from tasks.community import member_keys

    members = member_keys(settings.staging(), config.user_field)
    for name, assignments in steps:
        with StateStore.from_config(settings.state()) as state:
            run_id = state.start_run("bench_push", {"phase": f"community {name}", "backend": backend})
        probe.reset()
        started = time.perf_counter()
        report = run_community_push(config, settings.staging(), settings.state(), run_id, assignments, catalog)
        seconds = time.perf_counter() - started
        times = probe.seconds
        ledger = sum(times.get(f"state.{step}", 0.0) for step in ("grants", "begin_grants", "settle_grants",
                                                                  "plan_writes", "mark_writes"))
        sql = times.get("table.rows", 0.0) + times.get("table.apply", 0.0) + times.get("table.open", 0.0)
        parts = {"staged users": times.get("member_keys", 0.0), "desired pairs": times.get("desired_pairs", 0.0),
                 "table open": times.get("table.open", 0.0), "table read": times.get("table.rows", 0.0),
                 "table transaction": times.get("table.apply", 0.0),
                 **{f"state.{step}": times.get(f"state.{step}", 0.0)
                    for step in ("settle_grants", "grants", "plan_writes", "begin_grants", "mark_writes")}}
        other = seconds - sum(parts.values())
        print(f"    {name}: {report.granted:,} granted, {report.revoked:,} revoked, {report.foreign} left to others; "
              f"{seconds:.2f} s (role table SQL {sql:.2f} s, ledger/sync log {ledger:.2f} s)")
        print("      " + ", ".join(f"{key} {value:.2f}" for key, value in parts.items()) + f", other {other:.2f}")
        foreign, ours = table_rows(url)
        desired = desired_pairs(assignments, members, catalog)
        print(f"      table check: {len(ours):,} rows of ours (desired and not granted by others: "
              f"{len(desired - foreign):,}, equal: {ours == desired - foreign}), others' rows unchanged: "
              f"{foreign == foreign_before}")


def _default_catalog():  # type: ignore[no-untyped-def]
    from personas.catalog import default_catalog_path, load_catalog

    return load_catalog(default_catalog_path())


def stage_users(settings: Settings, users: list[dict[str, Any]]) -> None:
    import pyarrow as pa

    from connectors.staging import Staging

    table = pa.table({"Id": [row["Id"] for row in users], "Email": [row["Email"] for row in users],
                      "IsActive": [bool(row["IsActive"]) for row in users]})
    Staging.from_config(settings.staging()).write_part("User", table)


# --- main ---------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="large", choices=["small", "medium", "large"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--change", type=float, default=0.10, help="share of active users whose persona changes")
    parser.add_argument("--data-dir", type=Path, default=Path(".persona-sync/bench"))
    parser.add_argument("--postgres-url", default=Settings(_env_file=None).test_postgres_url)
    parser.add_argument("--skip-community", action="store_true")
    args = parser.parse_args()

    org_dir = args.data_dir / f"push-{args.preset}-{args.seed}"
    home = args.data_dir / f"push-home-{args.preset}-{args.seed}"
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"org: {args.preset} (seed {args.seed}) in {org_dir}: "
          f"{prepare_org_dir(org_dir, args.data_dir / f'{args.preset}-{args.seed}')}")
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)

    probe = install_probe()
    sandbox = start_sandbox_process(SandboxConfig(data_dir=org_dir, preset=args.preset, seed=args.seed, port=0,
                                                  daily_api_limit=100_000_000))
    try:
        from connectors.state import StateStore

        settings = settings_for(sandbox, home)
        with StateStore.from_config(settings.state()) as state:
            state.ensure_schema()
        counter = OrgCounter(settings)
        everyone = counter.sf.query_all("SELECT Id, Email, IsActive FROM User ORDER BY Id")["records"]
        active = [row["Id"] for row in everyone if row["IsActive"]]
        catalog = _default_catalog()
        labels = [persona.label for persona in catalog.personas]
        seeded, changed, again, moved = make_assignments(active, labels, args.change, args.seed)
        print(f"users: {len(everyone):,} ({len(active):,} active); {len(moved):,} changed ({args.change:.0%}); "
              f"{len(labels)} catalog labels; state database {settings.state().url.get_secret_value()}")

        print("push to Salesforce User fields:")
        seed = push_once(settings, probe, counter, "1. seed (everyone, default bulk threshold "
                         f"{settings.push_bulk_threshold:,})", seeded, labels, settings.push_bulk_threshold)
        print_push(seed, None)
        print(f"    {check_org(counter, seeded)}")

        dry = push_once(settings, probe, counter, "dry run of the change (fixed cost of reading back)", changed,
                        labels, len(moved) + 1, dry_run=True)
        fixed = dry["report"].calls
        print_push(dry, None)
        collections = push_once(settings, probe, counter, f"2. {args.change:.0%} changed, sObject Collections",
                                changed, labels, len(moved) + 1)
        print_push(collections, fixed)
        print(f"    {check_org(counter, changed)}")

        bulk = push_once(settings, probe, counter, f"3. the same users changed again, Bulk API 2.0", again, labels, 1)
        print_push(bulk, fixed)
        print(f"    {check_org(counter, again)}")

        rerun = push_once(settings, probe, counter, "4. no-change rerun", again, labels, settings.push_bulk_threshold)
        print_push(rerun, fixed)

        if not args.skip_community:
            print("community role table (first grant of everyone, the change, a no-change rerun):")
            stage_users(settings, everyone)
            emails = [row["Email"] for row in everyone if row["IsActive"] and row["Email"]]
            steps = [("first grant", seeded), (f"{args.change:.0%} changed", changed), ("no-change rerun", changed)]
            sqlite_path = home / "community.db"
            community_phases(settings, probe, "SQLite", f"sqlite:///{sqlite_path.resolve()}", emails, steps)
            with scratch_postgres(args.postgres_url) as postgres:
                if postgres is not None:
                    community_phases(settings, probe, "PostgreSQL", postgres, emails, steps)
    finally:
        sandbox.stop()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
