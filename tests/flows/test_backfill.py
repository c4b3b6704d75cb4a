"""The backfill flow against a sandbox: two weeks of past dates from staged history, interrupted and resumed
with the same history as an uninterrupted run, features as they were at each date, and dates outside the
staged history refused."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness

from connectors.state import StateStore
from core.errors import BackfillError
from core.settings import Settings
from flows.backfill import backfill
from flows.nightly_sync import nightly_sync
from sandbox.runner import RunningSandbox
from tests.conftest import pull_org, sandbox_environment

NIGHT = datetime(2026, 11, 1, tzinfo=timezone.utc)
# Two weeks, a date a week (three as-ofs): each date runs the feature and assignment checks, which cost
# seconds each even on a small org, so the test stays within its time.
FIRST, LAST, STEP = date(2026, 10, 14), date(2026, 10, 28), 7


@pytest.fixture(scope="module", autouse=True)
def prefect_api() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _use_home(monkeypatch: pytest.MonkeyPatch, running: RunningSandbox, home: Path,
              history_from: datetime = datetime(2025, 10, 1, tzinfo=timezone.utc)) -> Settings:
    """Points the flows at `running`, with a home of their own and history pulled from `history_from` on."""
    history_days = (datetime.now(timezone.utc) - history_from).days
    for name, value in sandbox_environment(running, home=home, pull_history_days=history_days).items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


@pytest.fixture(scope="module")
def org_and_night(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningSandbox, Path]]:
    """A sandbox of this module's own, and a home where one night was synced (the org's history staged,
    the night's personas stored); each test works on a copy of that home."""
    from tests.conftest import _start

    running = _start(tmp_path_factory.mktemp("backfill-sandbox"))
    home = tmp_path_factory.mktemp("backfill-night") / "home"
    with pytest.MonkeyPatch.context() as patch:
        _use_home(patch, running, home)
        nightly_sync(as_of=NIGHT)
    yield running, home
    running.stop()


def _copy_of_the_night(org_and_night: tuple[RunningSandbox, Path], into: Path, monkeypatch: pytest.MonkeyPatch,
                       ) -> Settings:
    running, home = org_and_night
    shutil.copytree(home, into)
    return _use_home(monkeypatch, running, into)


def _story(settings: Settings) -> pd.DataFrame:
    """The whole persona history table, as (user, persona, from, to), in a stable order."""
    with StateStore.from_config(settings.state()) as state:
        users = state.latest_assignments().index
        rows = [(user, row["persona"], row["valid_from"], row["valid_to"]) for user in users
                for row in state.history(user)]
    return pd.DataFrame(rows, columns=["user", "persona", "from", "to"]).sort_values(["user", "from"],
                                                                                      ignore_index=True)


def _personas_by_date(settings: Settings, outcome: list[dict[str, object]]) -> dict[str, pd.Series]:
    with StateStore.from_config(settings.state()) as state:
        runs = {run.parameters.get("key"): run.id for run in state.runs(limit=200) if run.flow == "backfill"
                and run.status == "succeeded"}
        return {row["date"]: state.assignments(runs[f"backfill:{row['date']}"])["persona"] for row in outcome}


def test_an_interrupted_backfill_resumes_to_the_history_of_an_uninterrupted_one(
        org_and_night: tuple[RunningSandbox, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = _copy_of_the_night(org_and_night, tmp_path / "whole", monkeypatch)
    done = backfill(start=FIRST, end=LAST, step_days=STEP)
    assert [row["status"] for row in done] == ["computed"] * 3
    expected_story, expected_personas = _story(whole), _personas_by_date(whole, done)
    # Non-vacuous: every user's story starts at the first date, and the days before tonight are in it.
    assert set(expected_story.groupby("user")["from"].min()) == {datetime(2026, 10, 14, tzinfo=timezone.utc)}

    resumed = _copy_of_the_night(org_and_night, tmp_path / "resumed", monkeypatch)
    import tasks.steps

    real = tasks.steps.compute_and_store_features

    def crash_on_the_sixth_day(config, staging, as_of):
        if as_of.date() == FIRST + timedelta(days=STEP):
            raise RuntimeError("the worker died")
        return real(config, staging, as_of)

    monkeypatch.setattr(tasks.steps, "compute_and_store_features", crash_on_the_sixth_day)
    with pytest.raises(RuntimeError, match="the worker died"):
        backfill(start=FIRST, end=LAST, step_days=STEP)
    monkeypatch.setattr(tasks.steps, "compute_and_store_features", real)
    again = backfill(start=FIRST, end=LAST, step_days=STEP)
    assert [row["status"] for row in again] == ["skipped (done before)"] + ["computed"] * 2

    pd.testing.assert_frame_equal(_story(resumed), expected_story)
    got = _personas_by_date(resumed, again)
    assert got.keys() == expected_personas.keys()
    for day, personas in expected_personas.items():
        pd.testing.assert_series_equal(got[day], personas, check_names=False)

    # A third run has nothing to do; overwrite recomputes every date to the same result.
    assert {row["status"] for row in backfill(start=FIRST, end=LAST, step_days=STEP)} == {"skipped (done before)"}
    assert [row["status"] for row in backfill(start=LAST, end=LAST, overwrite=True)] == ["computed"]
    pd.testing.assert_frame_equal(_story(resumed), expected_story)


def test_a_deal_won_after_the_as_of_is_not_won_at_it(org_and_night: tuple[RunningSandbox, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.salesforce import connect
    from connectors.staging import Staging
    from personas.features import Window, compute_features

    settings = _copy_of_the_night(org_and_night, tmp_path / "home", monkeypatch)
    as_of = datetime(2026, 10, 20, tzinfo=timezone.utc)
    window = Window(as_of=as_of, days=settings.feature_window_days)
    then = compute_features(Staging.from_config(settings.staging()), window)

    # Today a rep wins deals that were open at the as-of, dating their close before it.
    sf = connect(settings.salesforce())
    open_deals = sf.query("SELECT Id, OwnerId FROM Opportunity WHERE IsClosed = false LIMIT 5")["records"]
    assert open_deals
    for deal in open_deals:
        sf.Opportunity.update(deal["Id"], {"StageName": "Closed Won", "CloseDate": f"{as_of - timedelta(days=3):%Y-%m-%d}"})
    pull_org(settings, ["Opportunity"])
    now = compute_features(Staging.from_config(settings.staging()), window)
    owners = sorted({deal["OwnerId"] for deal in open_deals})
    pd.testing.assert_series_equal(now.loc[owners, "opportunities_won"], then.loc[owners, "opportunities_won"])
    # ...and they do count as won today.
    today = compute_features(Staging.from_config(settings.staging()), Window(as_of=datetime.now(timezone.utc), days=30))
    assert (today.loc[owners, "opportunities_won"] > 0).all()


def test_dates_outside_the_staged_history_are_refused(org_and_night: tuple[RunningSandbox, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.salesforce.streams import STREAMS
    from tasks.backfill import plan_backfill

    _use_home(monkeypatch, org_and_night[0], tmp_path / "empty")
    with pytest.raises(BackfillError, match="nothing is staged yet"):
        backfill(start=FIRST, end=LAST)
    settings = _copy_of_the_night(org_and_night, tmp_path / "home", monkeypatch)
    with StateStore.from_config(settings.state()) as state:
        history_start = max(mark.history_start for mark in state.watermarks() if mark.sobject == "Task")
    window = settings.feature_window_days
    first_possible = (history_start + timedelta(days=window + 1)).date()  # the midnight after start + window
    with pytest.raises(BackfillError, match=f"the first date a backfill can compute is {first_possible}"):
        backfill(start=first_possible - timedelta(days=1), end=first_possible)
    plan = plan_backfill(settings.state(), list(STREAMS), window, first_possible, first_possible, 1,
                         overwrite=False, recompute_last=False, now=datetime.now(timezone.utc))
    assert plan.todo == [datetime.combine(first_possible, datetime.min.time(), timezone.utc)]
    with pytest.raises(BackfillError, match="in the future"):
        backfill(start=FIRST, end=date.today() + timedelta(days=2))
    with pytest.raises(BackfillError, match="starts .* after it ends"):
        backfill(start=LAST, end=FIRST)
    with pytest.raises(BackfillError, match="concurrency"):
        backfill(start=FIRST, end=LAST, concurrency=0)
