"""bench/ceiling.py must judge the users the generator makes, measure their behaviour without bias, and tell
personas apart by it as well as that much behaviour allows (no better: less activity, a lower ceiling)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import ceiling  # noqa: E402

from sandbox.generate import GenerationOptions, World, generate_org  # noqa: E402
from sandbox.generate.profiles import PERSONA_LABELS, RATE_NAMES  # noqa: E402
from sandbox.store import OrgStore  # noqa: E402

WORLD = World.draw(3)


def test_the_ceiling_plans_the_users_the_generator_made(tmp_path: Path) -> None:
    """Same world, same seed, same as-of (as evaluate_orgs generates it): the same users, by the truth file."""
    store = OrgStore.create(tmp_path / "org.db", {})
    generate_org(store, preset="small", seed=WORLD.seed, as_of=ceiling.AS_OF, options=GenerationOptions(world=WORLD),
                 truth_dir=tmp_path / "truth")
    store.close()
    truth = pd.read_csv(tmp_path / "truth" / "truth_details.csv", keep_default_na=False,
                        dtype={"is_active": str}).set_index("Id")

    people = ceiling.plan_users(WORLD, len(truth), noise=1.0)

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


def test_behaviour_is_measured_at_the_users_own_rates() -> None:
    """Over users active the whole window, each busy activity's mean measured rate is the mean true rate."""
    people = ceiling.plan_users(WORLD, 4000, noise=1.0)
    measured = ceiling.measured_behaviour(people, 90, np.random.default_rng(0))
    whole = ceiling.days_in_window(people, 90) == 90
    assert whole.sum() > 2000
    for k, name in enumerate(RATE_NAMES):
        truth = people.rates[whole, k].mean()
        if truth * whole.sum() * 3 < 20_000:  # too few records for a tight mean
            continue
        assert measured[name].to_numpy()[whole].mean() == pytest.approx(truth, rel=0.03), name
    reports = np.bincount(people.manager[(people.manager >= 0) & people.active], minlength=people.size)
    assert (measured["direct_reports"].to_numpy() == reports).all()


def test_less_activity_lowers_the_ceiling() -> None:
    """Personas are told apart well from 90 days of behaviour, better from true rates, far worse from 3 days."""
    ninety = ceiling.measure_ceiling(WORLD, 1200, window_days=90)
    three = ceiling.measure_ceiling(WORLD, 1200, window_days=3)

    assert ninety.measured > 0.75
    assert ninety.noiseless > ninety.measured + 0.02
    assert three.measured < ninety.measured - 0.1
    assert three.noiseless == ninety.noiseless  # the true rates do not depend on the window
