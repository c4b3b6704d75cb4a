"""The catalog tuner (bench/tune_catalog.py) must score, assign and write catalogs as the product does."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from personas.catalog import UNASSIGNED, default_catalog_path, load_catalog
from personas.evaluation import evaluate
from personas.features import FEATURES, PEOPLE, SHARE
from personas.rules import assign, score_personas

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import tune_catalog  # noqa: E402


@pytest.fixture(scope="module")
def random_org() -> tune_catalog.Org:
    """Made-up features (with zeros, so ratios divide by zero too) and made-up true personas."""
    return made_up_org(7)


def made_up_org(seed: int) -> tune_catalog.Org:
    """An org of made-up features and true personas, drawn from `seed`."""
    rng = np.random.default_rng(seed)
    users = 3000
    columns = {}
    for feature in FEATURES:
        if feature.unit == SHARE:
            values = rng.uniform(0, 1, users) ** 2
        elif feature.unit == PEOPLE:
            values = rng.poisson(1.5, users).astype(float)
        else:
            values = rng.exponential(5, users)
        columns[feature.name] = np.where(rng.uniform(size=users) < 0.2, 0.0, values)
    features = pd.DataFrame(columns, index=[f"005RANDOM{n:06d}" for n in range(users)])
    truth = rng.integers(-1, 14, users)
    return tune_catalog.Org("medium", features, truth, pure=truth >= 0)


def test_tuner_scores_like_the_rule_engine(random_org: tune_catalog.Org) -> None:
    catalog = load_catalog(default_catalog_path())
    tunable = tune_catalog.read_tunable(default_catalog_path())
    expected = score_personas(random_org.features, catalog).to_numpy()
    scorer = tune_catalog.Scorer([random_org], tunable)
    np.testing.assert_allclose(scorer.matrices[0], expected, atol=1e-9)


def test_tuner_assigns_and_measures_like_the_product(random_org: tune_catalog.Org) -> None:
    catalog = load_catalog(default_catalog_path())
    tunable = tune_catalog.read_tunable(default_catalog_path())
    assignments = assign(random_org.features, catalog)
    truth = pd.DataFrame({"Id": random_org.features.index,
                          "persona": [catalog.labels[code] if code >= 0 else "Somebody else"
                                      for code in random_org.truth]})
    known = truth["Id"][random_org.truth >= 0]
    product = evaluate(assignments, truth, only=known, labels=catalog.labels)

    scorer = tune_catalog.Scorer([random_org], tunable)
    assert scorer.f1s()[0] == pytest.approx(product.macro_f1)
    assert (assignments["persona"] != UNASSIGNED).any()


def test_written_catalog_keeps_the_conditions_it_was_read_with(random_org: tune_catalog.Org,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    shutil.copy(default_catalog_path(), path)
    tunable = tune_catalog.read_tunable(path)
    tune_catalog.write_catalog(path, tunable, [random_org])
    again = tune_catalog.read_tunable(path)
    assert again.min_scores == tunable.min_scores
    assert [sorted(conds, key=repr) for conds in again.conditions] == \
        [sorted(conds, key=repr) for conds in tunable.conditions]
    before = load_catalog(default_catalog_path())
    after = load_catalog(path)
    assert [p.reference for p in after.personas] == [p.reference for p in before.personas]
    assert after.version == before.version


def test_a_tuning_pass_never_lowers_the_objective(random_org: tune_catalog.Org) -> None:
    tunable = tune_catalog.read_tunable(default_catalog_path())
    tunable.conditions = [conds[:3] for conds in tunable.conditions]  # a quick pass
    scorer = tune_catalog.Scorer([random_org], tunable)
    before = scorer.objective()
    after = tune_catalog.coordinate_pass(scorer, min_gain=0.0)
    assert after >= before
    assert after == pytest.approx(tune_catalog.Scorer([random_org], tunable).objective())


def test_idle_score_is_the_rule_engines_score_for_no_activity() -> None:
    catalog = load_catalog(default_catalog_path())
    tunable = tune_catalog.read_tunable(default_catalog_path())
    idle = pd.DataFrame({feature.name: [0.0] for feature in FEATURES}, index=["005IDLE"])
    # An org where someone has some of everything, so `scale: org` tests have a scale, as in a real org.
    org = pd.concat([idle, pd.DataFrame({feature.name: [1.0] for feature in FEATURES}, index=["005BUSY"])])
    expected = score_personas(idle, catalog, org=org).iloc[0].tolist()
    assert [tune_catalog.idle_score(conds) for conds in tunable.conditions] == pytest.approx(expected, abs=1e-6)


def test_the_worst_weight_adds_the_worst_orgs_macro_f1(random_org: tune_catalog.Org) -> None:
    catalog = load_catalog(default_catalog_path())
    orgs = [random_org, made_up_org(11)]
    product = []
    for org in orgs:
        truth = pd.DataFrame({"Id": org.features.index,
                              "persona": [catalog.labels[code] if code >= 0 else "Somebody else"
                                          for code in org.truth]})
        product.append(evaluate(assign(org.features, catalog), truth, only=truth["Id"][org.truth >= 0],
                                labels=catalog.labels).macro_f1)
    plain = tune_catalog.Scorer(orgs, tune_catalog.read_tunable(default_catalog_path()))
    weighted = tune_catalog.Scorer(orgs, tune_catalog.read_tunable(default_catalog_path()), worst_weight=0.5)
    assert plain.objective() == pytest.approx(np.mean(product))
    assert weighted.objective() == pytest.approx(np.mean(product) + 0.5 * min(product))
