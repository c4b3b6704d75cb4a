"""bench/ceiling.py must judge the users the generator makes, measure their behaviour without bias, and tell
personas apart by it as well as that much behaviour allows (no better: less activity, a lower ceiling)."""

from __future__ import annotations

import sqlite3
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import ceiling  # noqa: E402

from sandbox.generate import GenerationOptions, World, generate_org  # noqa: E402
from sandbox.generate.people import Population  # noqa: E402
from sandbox.generate.profiles import PERSONA_LABELS, RATE_NAMES  # noqa: E402
from sandbox.generate.worlds import OPTIONAL_FIELDS, OPTIONAL_OBJECTS  # noqa: E402
from sandbox.store import OrgStore  # noqa: E402

WORLD = World.draw(3)
WINDOW_DAYS = 90
CLOUDS = ("Sales", "Service", "Marketing")  # Population.cloud order


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[sqlite3.Connection, pd.DataFrame]:
    """A small org of the default world (every field filled, calls typed), generated as evaluate_orgs does
    (org seed = the plan's seed, as-of ceiling.AS_OF), and its truth details by Id."""
    folder = tmp_path_factory.mktemp("ceiling-org")
    store = OrgStore.create(folder / "org.db", {})
    generate_org(store, preset="small", seed=SEED, as_of=ceiling.AS_OF, options=GenerationOptions(),
                 truth_dir=folder / "truth")
    store.close()
    truth = pd.read_csv(folder / "truth" / "truth_details.csv", keep_default_na=False,
                        dtype={"is_active": str}).set_index("Id")
    db = sqlite3.connect(folder / "org.db")
    yield db, truth
    db.close()


SEED = 7


def _planned(truth: pd.DataFrame) -> Population:
    return ceiling.plan_users(World.default(), len(truth), noise=1.0, seed=SEED)


def test_the_ceiling_plans_the_users_the_generator_made(generated) -> None:
    """Same world, seed and as-of: the same users, by the org's truth file and its User rows."""
    db, truth = generated
    people = _planned(truth)

    planned = pd.DataFrame({
        "persona": np.array(PERSONA_LABELS, dtype=object)[people.persona],
        "secondary_persona": [PERSONA_LABELS[s] if s >= 0 else "" for s in people.secondary],
        "mix": np.round(people.mix, 3),
        "activity_level": np.where(people.silent, "silent", "normal"),
        "is_active": np.where(people.active, "true", "false"),
    }, index=pd.Index(people.ids, name="Id")).sort_index()
    pd.testing.assert_frame_equal(planned, truth[planned.columns], check_dtype=False)
    kinds = pd.Series(ceiling.kind_of_user(people), index=people.ids)
    assert (kinds[truth.index[truth["activity_level"] == "silent"]] == "quiet").all()
    assert (kinds[truth.index[(truth["secondary_persona"] != "") & (truth["activity_level"] == "normal")]]
            == "mixing two").all()
    # Reporting lines as the product counts them: active users whose ManagerId is this user.
    reports = dict(db.execute("SELECT ManagerId, count(*) FROM User WHERE IsActive = 1 AND ManagerId IS NOT NULL "
                              "GROUP BY ManagerId").fetchall())
    lines = ceiling.reporting_lines(people)["direct_reports"]
    assert {user: int(n) for user, n in zip(people.ids, lines) if n} == reports


def test_behaviour_is_measured_as_the_org_records_it(generated) -> None:
    """Per cloud, the window's calls, the share of them inbound and the share of Tasks about nothing, and per
    persona the setup-trail rows, are what the generated org holds (within the counts' own noise)."""
    db, truth = generated
    people = _planned(truth)
    creators = ceiling.choose_user_creators(ceiling.RandomStreams(SEED), people)
    measured = ceiling.measured_behaviour(people, WINDOW_DAYS, np.random.default_rng(0), user_creators=creators)
    since = (ceiling.AS_OF - timedelta(days=WINDOW_DAYS)).strftime("%Y-%m-%dT%H:%M:%S")
    cloud = pd.Series(np.array(CLOUDS)[people.cloud], index=people.ids)
    persona = pd.Series(np.array(PERSONA_LABELS)[people.persona], index=people.ids)
    tasks = pd.read_sql_query(
        "SELECT OwnerId, TaskSubtype, CallType, WhatId IS NULL AND WhoId IS NULL AS internal FROM Task "
        f"WHERE CreatedDate >= '{since}' AND TaskSubtype IN ('Call', 'Email', 'Task')", db)
    tasks["cloud"] = cloud.reindex(tasks["OwnerId"]).to_numpy()
    calls = tasks[tasks["TaskSubtype"] == "Call"]
    to_counts = WINDOW_DAYS / 30.0
    measured_cloud = cloud.loc[measured.index]
    for name in CLOUDS:
        mine = measured[measured_cloud == name]
        org_calls = calls[calls["cloud"] == name]
        assert _close_counts(mine["calls"].sum() * to_counts, len(org_calls)), name
        inbound = (mine["inbound_call_share"] * mine["calls"]).sum() / mine["calls"].sum()
        assert _close_shares(inbound, (org_calls["CallType"] == "Inbound").mean(), len(org_calls)), name
        logged = mine[["calls", "emails", "todos"]].sum(axis=1)
        org_tasks = tasks[tasks["cloud"] == name]
        assert _close_shares((mine["internal_task_share"] * logged).sum() / logged.sum(),
                             org_tasks["internal"].mean(), len(org_tasks)), name
    trail = pd.read_sql_query(f"SELECT CreatedById FROM SetupAuditTrail WHERE CreatedDate >= '{since}'", db)
    org_rows = persona.reindex(trail["CreatedById"]).value_counts()
    measured_rows = (measured["setup_rows"] * to_counts).groupby(persona.loc[measured.index]).sum()
    for label in ("Service Admin", "Data Expert", "IT Services"):
        assert _close_counts(measured_rows[label], org_rows[label]), label


def _close_counts(measured: float, recorded: int) -> bool:
    """Two Poisson counts of the same expectation: within four standard deviations (and 3 %)."""
    return abs(measured - recorded) <= 4 * np.sqrt(2 * max(recorded, 1)) + 0.03 * recorded


def _close_shares(measured: float, recorded: float, records: int) -> bool:
    """Two shares drawn from about `records` records each: within four standard deviations (and 0.01)."""
    return abs(measured - recorded) <= 4 * np.sqrt(2 * recorded * (1 - recorded) / max(records, 1)) + 0.01


def test_behaviour_is_measured_at_the_users_own_rates() -> None:
    """Over users active the whole window, each busy activity's mean measured rate is the mean true rate."""
    people = ceiling.plan_users(WORLD, 4000, noise=1.0)
    measured = ceiling.measured_behaviour(people, WINDOW_DAYS, np.random.default_rng(0))
    as_of_ms = int(ceiling.AS_OF.timestamp() * 1000)
    whole = (people.start_ms <= as_of_ms - WINDOW_DAYS * 86_400_000) & (people.end_ms >= as_of_ms)
    assert (ceiling.days_in_window(people, WINDOW_DAYS)[whole] == WINDOW_DAYS).all()
    assert whole.sum() > 2000
    for k, name in enumerate(RATE_NAMES):
        truth = people.rates[whole, k].mean()
        if truth * whole.sum() * 3 < 20_000:  # too few records for a tight mean
            continue
        assert measured[name].to_numpy()[whole].mean() == pytest.approx(truth, rel=0.03), name


def test_less_activity_lowers_the_ceiling() -> None:
    """Personas are told apart well from 90 days of behaviour, better from true rates, far worse from 3 days."""
    ninety = ceiling.measure_ceiling(WORLD, 700, window_days=90)
    three = ceiling.measure_ceiling(WORLD, 700, window_days=3)

    assert ninety.measured > 0.75
    assert ninety.noiseless > ninety.measured + 0.02
    assert three.measured < ninety.measured - 0.1


def test_each_optional_object_holds_the_activity_kind_a_partial_export_loses(generated) -> None:
    """Every object and field a partial export may leave out is accounted for, and each object holds, in the
    generated org, as many rows in the window per persona (of the user who created them) as the ceiling
    measures of the kind it says that object holds: totals alone could not tell two kinds of similar volume
    apart, who does them can."""
    db, truth = generated
    assert set(ceiling.WITHHELD_BY_OBJECT) == set(OPTIONAL_OBJECTS)
    assert set(ceiling.WITHHELD_BY_FIELD) == set(OPTIONAL_FIELDS)
    people = _planned(truth)
    measured = ceiling.measured_behaviour(people, WINDOW_DAYS, np.random.default_rng(0))
    persona = pd.Series(np.array(PERSONA_LABELS)[people.persona], index=people.ids)
    since = (ceiling.AS_OF - timedelta(days=WINDOW_DAYS)).strftime("%Y-%m-%dT%H:%M:%S")
    only = {"CaseHistory": " AND Field = 'Owner'"}  # its other rows are escalations, read from Case
    for name, kind in ceiling.WITHHELD_BY_OBJECT.items():
        creators = pd.read_sql_query(f"SELECT CreatedById FROM {name} WHERE CreatedDate >= '{since}'"
                                     f"{only.get(name, '')}", db)["CreatedById"]
        org_rows = persona.reindex(creators).value_counts()
        measured_rows = (measured[kind] * WINDOW_DAYS / 30.0).groupby(persona.loc[measured.index]).sum()
        busy = [label for label in PERSONA_LABELS if max(org_rows.get(label, 0), measured_rows.get(label, 0)) > 20]
        assert busy, name
        for label in busy:
            assert _close_counts(measured_rows.get(label, 0.0), int(org_rows.get(label, 0))), (name, label)


def test_a_partial_export_is_measured_without_what_it_left_out() -> None:
    """With every optional object and field left out, their kinds and proportions are not measured (in nobody's
    share either), and the rest is measured as in the full export."""
    full = World.default()
    partial = full.exported("partial")
    people = ceiling.plan_users(full, 500, noise=1.0)
    kinds, columns = ceiling.withheld(partial)
    assert kinds == set(ceiling.WITHHELD_BY_OBJECT.values()) and columns == {"inbound_call_share"}

    measured = ceiling.measured_behaviour(people, WINDOW_DAYS, np.random.default_rng(0), world=partial)
    everything = ceiling.measured_behaviour(people, WINDOW_DAYS, np.random.default_rng(0))
    lost = {*kinds, *(f"{kind}_share" for kind in kinds), *columns}
    assert set(measured.columns) == set(everything.columns) - lost
    shares = measured[[f"{name}_share" for name in RATE_NAMES if name not in kinds]].sum(axis=1)
    assert np.allclose(shares[shares > 0], 1.0)
    assert measured["calls"].equals(everything["calls"])
    assert not set(ceiling.noiseless_behaviour(people, partial).columns) & kinds
    # An org whose calls carry no CallType has no call direction, whatever its export.
    assert ceiling.withheld(replace(full, call_type_logged=False)) == (frozenset(), {"inbound_call_share"})
