"""The rule engine on tiny hand-made feature frames: scoring, assignment, confidence, reasons, ties, stability."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from personas.catalog import Catalog, default_catalog_path, load_catalog
from personas.features import FEATURE_NAMES
from personas.rules import (
    REASON_MAX_CHARS,
    UNASSIGNED,
    RuleInputError,
    assign,
    explain,
    score_personas,
)


def _persona(pid: str, label: str, conditions: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    rules = {"conditions": conditions, **{key: extra.pop(key) for key in ("required", "exclusions") if key in extra}}
    return {"id": pid, "label": label, "cloud": "Service", "description": f"{label} users.",
            "reference": f"What {label}s do.", "rules": rules, **extra}


def _catalog(*personas: dict[str, Any], **extra: Any) -> Catalog:
    return Catalog.model_validate({"version": "t1", "personas": list(personas), **extra})


def _frame(**columns: list[float]) -> pd.DataFrame:
    size = len(next(iter(columns.values())))
    return pd.DataFrame(columns, index=pd.Index([f"005U{i:02d}" for i in range(size)], name="Id"), dtype=float)


def _scores(condition: dict[str, Any], **columns: list[float]) -> list[float]:
    catalog = _catalog(_persona("p", "P", [condition]))
    return score_personas(_frame(**columns), catalog)["P"].tolist()


# --- scoring ----------------------------------------------------------------------------------------

def test_threshold_at_least_and_at_most_include_the_threshold() -> None:
    assert _scores({"feature": "cases_closed", "at_least": 20}, cases_closed=[19.9, 20, 50]) == [0, 1, 1]
    assert _scores({"feature": "cases_closed", "at_most": 5}, cases_closed=[4, 5, 5.1]) == [1, 1, 0]


def test_range_includes_both_ends() -> None:
    values = [0.19, 0.2, 0.4, 0.6, 0.61]
    assert _scores({"feature": "login_share_api", "between": [0.2, 0.6]}, login_share_api=values) == [0, 1, 1, 1, 0]


def test_soft_ramps_linearly_up_to_the_threshold() -> None:
    condition = {"feature": "cases_closed", "at_least": 20, "soft": 10}
    assert _scores(condition, cases_closed=[5, 10, 15, 20, 40]) == [0, 0, 0.5, 1, 1]
    condition = {"feature": "setup_changes", "at_most": 4, "soft": 2}
    assert _scores(condition, setup_changes=[3, 4, 5, 6, 9]) == [1, 1, 0.5, 0, 0]
    condition = {"feature": "meetings_share", "between": [0.2, 0.4], "soft": 0.1}
    assert _scores(condition, meetings_share=[0.15, 0.3, 0.45]) == pytest.approx([0.5, 1, 0.5])


def test_ratio_of_two_features_and_a_zero_denominator_fails() -> None:
    condition = {"ratio": ["case_comments", "cases_closed"], "at_least": 2}
    assert _scores(condition, case_comments=[8, 4, 3, 0], cases_closed=[4, 4, 0, 0]) == [1, 0, 0, 0]


def test_score_is_the_weighted_mean_of_credits() -> None:
    catalog = _catalog(_persona("p", "P", [{"feature": "calls", "at_least": 10, "weight": 3},
                                            {"feature": "emails", "at_least": 10, "weight": 1}]))
    scores = score_personas(_frame(calls=[12, 0, 12], emails=[0, 12, 12]), catalog)["P"]
    assert scores.tolist() == [0.75, 0.25, 1.0]


def test_required_must_all_hold_and_any_exclusion_zeroes_the_score() -> None:
    catalog = _catalog(_persona("p", "P", [{"feature": "calls", "at_least": 1}],
                                required=[{"feature": "quotes", "at_least": 1}],
                                exclusions=[{"feature": "cases_closed", "at_least": 5}]))
    frame = _frame(calls=[5, 5, 5, 5], quotes=[2, 0, 2, 0], cases_closed=[0, 0, 9, 9])
    assert score_personas(frame, catalog)["P"].tolist() == [1, 0, 0, 0]


def test_scores_are_within_0_and_1_for_the_default_catalog() -> None:
    catalog = load_catalog(default_catalog_path())
    rng = np.random.default_rng(3)
    frame = _frame(**{name: rng.exponential(5, 50).tolist() for name in FEATURE_NAMES})
    scores = score_personas(frame, catalog)
    assert list(scores.columns) == catalog.labels and list(scores.index) == list(frame.index)
    assert ((scores >= 0) & (scores <= 1)).all().all()


def test_a_missing_feature_column_is_an_error_naming_it() -> None:
    catalog = _catalog(_persona("p", "P", [{"feature": "calls", "at_least": 1}]))
    with pytest.raises(RuleInputError, match="calls"):
        score_personas(_frame(emails=[1.0]), catalog)


# --- assignment -------------------------------------------------------------------------------------

SOLVER = _persona("case_solver", "Case Solver", [{"feature": "cases_closed", "at_least": 20, "weight": 3},
                                                 {"feature": "case_comments", "at_least": 5}])
EXPERT = _persona("expert_agent", "Expert Agent", [{"feature": "articles_written", "at_least": 2},
                                                   {"feature": "case_comments", "at_least": 5}])


def test_the_best_persona_wins_with_confidence_from_the_margin() -> None:
    frame = _frame(cases_closed=[49], case_comments=[22], articles_written=[0])
    row = assign(frame, _catalog(SOLVER, EXPERT)).iloc[0]
    assert (row["persona"], row["score"], row["runner_up"], row["runner_up_score"]) == \
        ("Case Solver", 1.0, "Expert Agent", 0.5)
    assert row["confidence"] == pytest.approx(0.5)  # best - runner-up


def test_confidence_grows_with_the_margin_and_never_exceeds_the_score() -> None:
    frame = _frame(cases_closed=[20, 20, 20], case_comments=[5, 5, 0], articles_written=[2, 0, 0])
    result = assign(frame, _catalog(SOLVER, EXPERT))
    assert result["persona"].tolist() == ["Case Solver"] * 3
    assert result["confidence"].tolist() == [0.0, 0.5, 0.75]  # margins 1-1, 1-0.5, 0.75-0
    assert (result["confidence"] <= result["score"]).all()


def test_below_min_score_is_unassigned_with_the_closest_persona_named() -> None:
    catalog = _catalog({**SOLVER, "min_score": 0.8}, {**EXPERT, "min_score": 0.8})
    row = assign(_frame(cases_closed=[25], case_comments=[0], articles_written=[3]), catalog).iloc[0]
    assert row["persona"] == UNASSIGNED and row["confidence"] == 0
    assert (row["score"], row["runner_up"]) == (0.75, "Case Solver")
    assert row["reason"].startswith("Unassigned: no persona reaches its minimum; closest Case Solver 0.75 (needs 0.80)")


def test_equal_scores_go_to_the_persona_listed_first() -> None:
    twins = [_persona("a", "Alpha", [{"feature": "calls", "at_least": 1}]),
             _persona("b", "Beta", [{"feature": "calls", "at_least": 1}])]
    frame = _frame(calls=[3])
    assert assign(frame, _catalog(*twins))["persona"].iloc[0] == "Alpha"
    assert assign(frame, _catalog(*reversed(twins)))["persona"].iloc[0] == "Beta"


def test_a_user_keeps_their_current_persona_unless_beaten_by_the_margin() -> None:
    catalog = _catalog(_persona("a", "Alpha", [{"feature": "calls", "at_least": 10, "soft": 10}]),
                       _persona("b", "Beta", [{"feature": "emails", "at_least": 10, "soft": 10}]))
    # Beta is ahead by 0.05, 0.1 and 0.3; all three are Alpha today.
    frame = _frame(calls=[9.0, 9.0, 7.0], emails=[9.5, 10.0, 10.0])
    current = pd.Series(["Alpha", "Alpha", "Alpha"], index=frame.index)
    result = assign(frame, catalog, current=current, stability_margin=0.1)
    assert result["persona"].tolist() == ["Alpha", "Beta", "Beta"]
    kept = result.iloc[0]
    assert kept["runner_up"] == "Beta" and kept["confidence"] == 0.0
    assert "kept" in kept["reason"]
    assert assign(frame, catalog)["persona"].tolist() == ["Beta", "Beta", "Beta"]  # without history


def test_stability_never_keeps_a_persona_that_no_longer_qualifies() -> None:
    catalog = _catalog(_persona("a", "Alpha", [{"feature": "calls", "at_least": 10, "soft": 10}], min_score=0.5),
                       _persona("b", "Beta", [{"feature": "emails", "at_least": 10, "soft": 10}], min_score=0.1))
    frame = _frame(calls=[4.0], emails=[4.5])  # Alpha 0.4 (below its minimum), Beta 0.45
    result = assign(frame, catalog, current=pd.Series(["Alpha"], index=frame.index))
    assert result["persona"].iloc[0] == "Beta"


def test_current_personas_may_be_ids_and_unknown_ones_are_ignored() -> None:
    catalog = _catalog(_persona("a", "Alpha", [{"feature": "calls", "at_least": 10, "soft": 10}]),
                       _persona("b", "Beta", [{"feature": "emails", "at_least": 10, "soft": 10}]))
    frame = _frame(calls=[9.0, 9.0, 9.0], emails=[9.5, 9.5, 9.5])
    current = pd.Series(["a", "Retired Persona", UNASSIGNED], index=frame.index)
    assert assign(frame, catalog, current=current)["persona"].tolist() == ["Alpha", "Beta", "Beta"]


def test_assignment_is_deterministic_and_independent_of_row_order() -> None:
    catalog = load_catalog(default_catalog_path())
    rng = np.random.default_rng(11)
    frame = _frame(**{name: rng.exponential(3, 200).round(2).tolist() for name in FEATURE_NAMES})
    first = assign(frame, catalog)
    pd.testing.assert_frame_equal(first, assign(frame, catalog))
    shuffled = assign(frame.sample(frac=1, random_state=5), catalog)
    pd.testing.assert_frame_equal(first, shuffled.loc[first.index])


def test_a_user_with_no_activity_is_unassigned_by_the_default_catalog() -> None:
    frame = _frame(**{name: [0.0] for name in FEATURE_NAMES})
    assert assign(frame, load_catalog(default_catalog_path()))["persona"].iloc[0] == UNASSIGNED


# --- reasons and explain ------------------------------------------------------------------------------

def test_the_reason_names_values_thresholds_and_the_runner_up() -> None:
    frame = _frame(cases_closed=[49], case_comments=[22], articles_written=[0])
    reason = assign(frame, _catalog(SOLVER, EXPERT))["reason"].iloc[0]
    assert reason == ("Case Solver (1.00): 49 cases closed/30d (>= 20), 22 case comments/30d (>= 5); "
                      "runner-up Expert Agent 0.50")


def test_the_reason_shows_a_share_with_the_rate_behind_it() -> None:
    catalog = _catalog(_persona("p", "Case Solver", [{"feature": "cases_closed_share", "at_least": 0.3, "soft": 0.2},
                                                     {"feature": "login_share_api", "at_most": 0.2},
                                                     {"feature": "direct_reports", "at_most": 1}]))
    frame = _frame(cases_closed_share=[0.25], cases_closed=[16.0], login_share_api=[0.0], logins_api=[0.0],
                   direct_reports=[0.0])
    reason = assign(frame, catalog)["reason"].iloc[0]
    assert reason.startswith("Case Solver (0.92): 16 cases closed/30d = 25% of activity (>= 30%, partly)")
    assert "0 direct reports (<= 1)" in reason and "0 logins api/30d = 0% of logins (<= 20%)" in reason


def test_reasons_always_fit_255_characters() -> None:
    long_label = "A Persona With A Remarkably Long Label " * 4
    conditions = [{"ratio": ["opportunities_created", "upsell_renewals"], "at_least": 0.5, "weight": w}
                  for w in (3, 2, 1)] + [{"feature": "case_reassignments_share", "at_least": 0.1}]
    catalog = _catalog(_persona("long", long_label.strip(), conditions),
                       _persona("other", "Other " + long_label.strip(), conditions))
    frame = _frame(opportunities_created=[12345.6, 0], upsell_renewals=[3.3, 0], case_reassignments_share=[0.5, 0],
                   case_reassignments=[40.0, 0])
    reasons = assign(frame, catalog)["reason"]
    assert reasons.str.len().max() <= REASON_MAX_CHARS
    assert all(reason.startswith("A Persona With") or reason.startswith(UNASSIGNED) for reason in reasons)


def test_default_catalog_reasons_fit_for_random_users() -> None:
    rng = np.random.default_rng(7)
    frame = _frame(**{name: (rng.exponential(20, 300) * rng.integers(0, 2, 300)).tolist() for name in FEATURE_NAMES})
    reasons = assign(frame, load_catalog(default_catalog_path()))["reason"]
    assert reasons.notna().all() and reasons.str.len().max() <= REASON_MAX_CHARS


def test_explain_prints_every_persona_and_condition() -> None:
    catalog = _catalog(SOLVER, EXPERT)
    frame = _frame(cases_closed=[49], case_comments=[22], articles_written=[1]).assign(Name=["Ada Agent"])
    text = explain("005U00", frame, catalog)
    assert text.splitlines()[0] == "User 005U00 (Name Ada Agent)"
    assert "Assigned: Case Solver (score 1.00" in text
    assert "Case Solver [case_solver]: score 1.00 (min 0.50)" in text
    assert "Expert Agent [expert_agent]: score 0.50 (min 0.50)" in text
    assert "weight 3: 49 cases closed/30d (>= 20) -> credit 1.00, contributes 0.75" in text
    assert "weight 1: 1 articles written/30d (>= 2) -> credit 0.00, contributes 0.00" in text


def test_explain_names_required_and_exclusion_outcomes() -> None:
    catalog = _catalog(_persona("p", "P", [{"feature": "calls", "at_least": 1}],
                                required=[{"feature": "quotes", "at_least": 1}],
                                exclusions=[{"feature": "cases_closed", "at_least": 5}]))
    text = explain("005U00", _frame(calls=[2], quotes=[0], cases_closed=[7]), catalog)
    assert "required  0 quotes/30d (>= 1): FAILS -> score 0" in text
    assert "exclusion 7 cases closed/30d (>= 5): HOLDS -> score 0" in text


def test_explain_an_unknown_user() -> None:
    with pytest.raises(RuleInputError, match="005NOPE"):
        explain("005NOPE", _frame(calls=[1]), _catalog(_persona("p", "P", [{"feature": "calls", "at_least": 1}])))


# --- features the org cannot measure ---------------------------------------------------------------

def test_conditions_on_an_unavailable_feature_are_dropped_and_the_weights_renormalised() -> None:
    catalog = _catalog(_persona("agent", "Agent", [
        {"feature": "cases_closed", "at_least": 10, "weight": 1},
        {"feature": "articles_written", "at_least": 2, "weight": 3}]))
    features = _frame(cases_closed=[12.0, 12.0], articles_written=[np.nan, np.nan])
    features.attrs["unavailable"] = {"articles_written": "no KnowledgeArticleVersion row in the window"}
    # Read as zero, the articles would cap both users at 0.25; dropped, cases closed alone decide.
    assert score_personas(features, catalog)["Agent"].tolist() == [1.0, 1.0]
    measured_zero = _frame(cases_closed=[12.0], articles_written=[0.0])
    assert score_personas(measured_zero, catalog)["Agent"].tolist() == [0.25]


def test_an_unavailable_required_test_or_exclusion_decides_nothing() -> None:
    catalog = _catalog(_persona("p", "P", [{"feature": "calls", "at_least": 1}],
                                required=[{"feature": "inbound_call_share", "at_least": 0.5}],
                                exclusions=[{"ratio": ["inbound_calls", "calls"], "at_least": 0.9}]))
    features = _frame(calls=[3.0], inbound_call_share=[np.nan], inbound_calls=[np.nan])  # all-NaN: unmeasured
    assert score_personas(features, catalog)["P"].tolist() == [1.0]


def test_a_persona_with_nothing_measured_scores_zero_and_explain_says_why() -> None:
    catalog = _catalog(_persona("writer", "Writer", [{"feature": "articles_written", "at_least": 1}]),
                       _persona("closer", "Closer", [{"feature": "cases_closed", "at_least": 1}]))
    features = _frame(articles_written=[np.nan], cases_closed=[3.0])
    features.attrs["unavailable"] = {"articles_written": "no KnowledgeArticleVersion row in the window"}
    assert score_personas(features, catalog).iloc[0].tolist() == [0.0, 1.0]
    text = explain(features.index[0], features, catalog)
    assert "articles_written: no KnowledgeArticleVersion row in the window" in text
    assert "-> dropped: articles_written is not measured on this org" in text


# --- thresholds relative to the org -----------------------------------------------------------------------

def _org(calls: list[float], active: list[bool] | None = None) -> pd.DataFrame:
    frame = _frame(calls=calls)
    frame["IsActive"] = active if active is not None else [True] * len(calls)
    return frame


def test_an_org_scaled_threshold_is_in_multiples_of_the_org_typical_value() -> None:
    catalog = _catalog(_persona("caller", "Caller", [{"feature": "calls", "scale": "org", "at_least": 2}]))
    # The typical caller (median of those with any calls) makes 10 calls here, and 100 in a busier org.
    quiet = _org([0.0, 10.0, 10.0, 10.0, 20.0, 25.0])
    busy = _org([0.0, 100.0, 100.0, 100.0, 200.0, 250.0])
    assert score_personas(quiet, catalog)["Caller"].tolist() == [0, 0, 0, 0, 1, 1]
    assert score_personas(busy, catalog)["Caller"].tolist() == [0, 0, 0, 0, 1, 1]  # the same people stand out
    absolute = _catalog(_persona("caller", "Caller", [{"feature": "calls", "at_least": 20}]))
    assert score_personas(busy, absolute)["Caller"].tolist() == [0, 1, 1, 1, 1, 1]  # a number of one org


def test_the_scale_comes_from_the_active_users_of_the_whole_org() -> None:
    catalog = _catalog(_persona("caller", "Caller", [{"feature": "calls", "scale": "org", "at_least": 2}]))
    org = _org([10.0, 10.0, 10.0, 25.0, 1000.0], active=[True, True, True, True, False])  # the leaver is ignored
    assert score_personas(org, catalog)["Caller"].tolist() == [0, 0, 0, 1, 1]
    one = org.iloc[[3]]
    assert score_personas(one, catalog, org=org)["Caller"].tolist() == [1]  # one user, scored against the org
    text = explain(org.index[3], org, catalog)
    assert "calls: 10" in text and "calls 2.5x the org's typical (>= 2x)" in text


def test_an_org_where_nobody_has_any_gives_no_scale_and_the_test_is_dropped() -> None:
    catalog = _catalog(_persona("p", "P", [{"feature": "calls", "scale": "org", "at_most": 1},
                                           {"feature": "cases_closed", "at_least": 1}]))
    org = _frame(calls=[0.0, 0.0], cases_closed=[2.0, 0.0])
    assert score_personas(org, catalog)["P"].tolist() == [1.0, 0.0]
    assert "dropped: no active user of this org has any calls" in explain(org.index[0], org, catalog)
