"""The supervised reference of bench/evaluate_orgs.py must learn what the features say, and nothing more."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import evaluate_orgs  # noqa: E402

LABELS = ["Case Solver", "Deal Closer", "Data Expert"]


@pytest.fixture(scope="module")
def org() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Made-up features where each persona leans on its own feature, one feature the org cannot measure
    (NaN for all) and one that is noise; the truth the features were drawn from."""
    rng = np.random.default_rng(3)
    users = 600
    persona = rng.integers(0, len(LABELS), users)
    ids = [f"005REF{n:06d}" for n in range(users)]
    features = pd.DataFrame({f"{label}_signal": (persona == code) * 5.0 + rng.normal(0, 1, users)
                             for code, label in enumerate(LABELS)}, index=ids)
    features["unmeasured"] = np.nan
    features["noise"] = rng.normal(0, 1, users)
    features["IsActive"] = True
    truth = pd.DataFrame({"Id": ids, "persona": np.array(LABELS)[persona]})
    return features, truth


def test_the_reference_learns_separable_personas(org: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    features, truth = org
    reference = evaluate_orgs.measure_reference(features, truth, features.index, truth.iloc[:0], LABELS)
    assert reference.every_user > 0.97
    assert reference.known_users is None


def test_the_reference_trained_on_a_few_known_users(org: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    features, truth = org
    known = truth.groupby("persona").head(5)
    judged = features.index.difference(pd.Index(known["Id"]))
    reference = evaluate_orgs.measure_reference(features, truth, judged, known, LABELS)
    assert reference.known_users is not None and reference.known_users > 0.9


def test_the_reference_cannot_learn_labels_the_features_do_not_carry(org: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """Shuffled labels: a reference that saw the users it is judged on would still score high."""
    features, truth = org
    shuffled = truth.assign(persona=np.random.default_rng(5).permutation(truth["persona"].to_numpy()))
    known = shuffled.groupby("persona").head(5)
    judged = features.index.difference(pd.Index(known["Id"]))
    reference = evaluate_orgs.measure_reference(features, shuffled, judged, known, LABELS)
    assert reference.every_user < 0.5  # chance is about 1/3
    assert reference.known_users is not None and reference.known_users < 0.5


def test_accuracy_is_split_by_kind_of_user(tmp_path: Path) -> None:
    truth_dir = tmp_path / "sandbox" / "truth"
    truth_dir.mkdir(parents=True)
    pd.DataFrame({"Id": ["a", "b", "c", "d"], "persona": ["Case Solver"] * 4,
                  "secondary_persona": ["", "", "Deal Closer", ""],
                  "mix": [1.0, 1.0, 0.6, 1.0], "activity_level": ["normal", "normal", "normal", "silent"],
                  "is_active": [True] * 4}).to_csv(truth_dir / "truth_details.csv", index=False)
    truth = pd.DataFrame({"Id": ["a", "b", "c", "d"], "persona": ["Case Solver"] * 4})
    assignments = pd.DataFrame({"persona": ["Case Solver", "Deal Closer", "Deal Closer", "Case Solver"]},
                               index=["a", "b", "c", "d"])
    line = evaluate_orgs.accuracy_by_kind(assignments, truth, evaluate_orgs.kinds_of_user(tmp_path), assignments.index)
    assert line == "one persona 0.500 (2), mixing two 0.000 (1), quiet 1.000 (1)"
