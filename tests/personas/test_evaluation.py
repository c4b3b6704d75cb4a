"""Evaluation: metrics on a small known example, the picture, and the default catalog against the sandbox's truth."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from connectors.staging import Staging
from personas.catalog import default_catalog_path, load_catalog
from personas.evaluation import Evaluation, evaluate, save_confusion_png
from personas.features import Window, compute_features
from personas.rules import UNASSIGNED, assign
from sandbox.runner import RunningSandbox
from tests.conftest import AS_OF, pull_org, sandbox_settings


def _assignments(personas: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"persona": list(personas.values())}, index=pd.Index(list(personas), name="Id"))


def _truth(personas: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"Id": list(personas), "persona": list(personas.values())})


@pytest.fixture
def known() -> Evaluation:
    # A: 2 users (1 right, 1 taken for B); B: 2 users (both right); C: 1 user, Unassigned.
    truth = _truth({"u1": "A", "u2": "A", "u3": "B", "u4": "B", "u5": "C", "u6": "A"})
    assigned = _assignments({"u1": "A", "u2": "B", "u3": "B", "u4": "B", "u5": UNASSIGNED, "u9": "C"})
    return evaluate(assigned, truth, labels=["C", "B", "A"])


def test_metrics_of_a_known_example(known: Evaluation) -> None:
    assert known.users == 5 and known.missing == 1 and known.unassigned == 1  # u6 has no assignment; u9 no truth
    assert known.accuracy == pytest.approx(3 / 5)
    metrics = known.per_persona
    assert list(metrics.index) == ["C", "B", "A"]  # the order asked for
    assert metrics.loc["A"].tolist() == pytest.approx([1.0, 0.5, 2 / 3, 2])
    assert metrics.loc["B"].tolist() == pytest.approx([2 / 3, 1.0, 0.8, 2])
    assert metrics.loc["C"].tolist() == pytest.approx([0.0, 0.0, 0.0, 1])
    assert known.macro_f1 == pytest.approx((2 / 3 + 0.8 + 0) / 3)


def test_confusion_matrix_has_an_unassigned_column(known: Evaluation) -> None:
    confusion = known.confusion
    assert list(confusion.index) == ["C", "B", "A"] and list(confusion.columns) == ["C", "B", "A", UNASSIGNED]
    assert confusion.loc["A"].tolist() == [0, 1, 1, 0]
    assert confusion.loc["C", UNASSIGNED] == 1
    assert int(confusion.to_numpy().sum()) == known.users


def test_evaluation_can_be_limited_to_some_users() -> None:
    truth = _truth({"u1": "A", "u2": "A", "u3": "B"})
    result = evaluate(_assignments({"u1": "A", "u2": "B", "u3": "B"}), truth, only=["u1", "u3"])
    assert (result.users, result.accuracy, result.macro_f1) == (2, 1.0, 1.0)


def test_the_table_prints_headline_metrics_and_matrix(known: Evaluation) -> None:
    table = known.table()
    assert "accuracy 0.600" in table and f"macro F1 {known.macro_f1:.3f}" in table and "unassigned 1" in table
    assert "  3 A" in table and "0.667" in table
    header = [line for line in table.splitlines() if line.strip().startswith("1 ") and "U" in line]
    assert header and header[0].split() == ["1", "2", "3", "U"]


def test_confusion_picture_is_a_png(known: Evaluation, tmp_path: Path) -> None:
    path = save_confusion_png(known, tmp_path / "pictures" / "confusion.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000


# --- the default catalog on the small sandbox org ------------------------------------------------------

@pytest.fixture(scope="module")
def small_org_features(sandbox: RunningSandbox, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The small org pulled once over HTTPS into staging, and its features over the default 90 days."""
    settings = sandbox_settings(sandbox, home=tmp_path_factory.mktemp("evaluation"), pull_history_days=400)
    pull_org(settings)
    return compute_features(Staging.from_config(settings.staging()), Window(as_of=AS_OF, days=90))


def test_default_catalog_recognises_the_small_org(small_org_features: pd.DataFrame, sandbox: RunningSandbox,
                                                  tmp_path: Path) -> None:
    catalog = load_catalog(default_catalog_path())
    assignments = assign(small_org_features, catalog)
    active = small_org_features.index[small_org_features["IsActive"]]
    truth = pd.read_csv(sandbox.truth_csv)  # the persona users; the integration user has no persona
    result = evaluate(assignments, truth, only=active, labels=catalog.labels)
    # Measured 0.95 macro F1 on this org (seed 7, never used to tune the catalog); small orgs have few
    # users per persona, so one user moves a persona's F1 by several points: hence the margin.
    assert result.users == len(active.intersection(truth["Id"])) > 150 and result.missing == 0
    assert result.macro_f1 >= 0.85, result.table()
    assert result.accuracy >= 0.88, result.table()
    assert (result.per_persona["recall"] >= 0.6).all(), result.table()
    assert assignments["reason"].str.len().max() <= 255
    save_confusion_png(result, tmp_path / "small.png")


def test_users_are_counted_by_the_confidence_they_were_given() -> None:
    truth = _truth(dict.fromkeys("abcdef", "A"))
    assignments = pd.DataFrame({"persona": ["A", "B", "A", "A", UNASSIGNED, "A"],
                                "confidence": [0.5, 0.2, 0.15, 0.0, 0.0, 0.07]}, index=list("abcdef"))
    result = evaluate(assignments, truth)
    assert result.by_confidence.to_dict("index") == {
        ">= 0.2": {"users": 2, "right": 1}, "0.1-0.2": {"users": 1, "right": 1}, "0.05-0.1": {"users": 1, "right": 1},
        "0-0.05": {"users": 1, "right": 1}, UNASSIGNED: {"users": 1, "right": 0}}
    table = result.table()
    assert "Right by confidence" in table
    assert [line.split() for line in table.splitlines() if line.strip().startswith(">= 0.2")] == [
        [">=", "0.2", "2", "33.3%", "0.500"]]


def test_assignments_without_a_confidence_have_no_confidence_bands(known: Evaluation) -> None:
    assert known.by_confidence is None and "Right by confidence" not in known.table()
