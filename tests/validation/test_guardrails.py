"""Guardrails on crafted runs: each one warns, fails, is forced or is skipped when it should."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from core.configs import Limit, ValidationConfig
from core.errors import ConfigurationError
from expectations.guardrails import check_guardrails, population_stability_index
from tasks.validation import check_forcing

CONFIG = ValidationConfig(data_docs_dir=Path("docs"))


def _users(personas: list[str]) -> pd.Series:
    return pd.Series(personas, index=[f"005{n:012d}" for n in range(len(personas))])


def _baseline() -> pd.Series:
    return _users(["Case Solver"] * 40 + ["Deal Closer"] * 30 + ["Data Expert"] * 20 + ["Unassigned"] * 10)


def _checks(candidate: pd.Series, baseline: pd.Series | None = None, forced: tuple[str, ...] = (),
            config: ValidationConfig = CONFIG) -> dict[str, object]:
    checks = check_guardrails(candidate, baseline, candidate.index, config, unassigned="Unassigned", forced=forced)
    assert all(check.guardrail and check.stage == "guardrails" for check in checks)
    return {check.name: check for check in checks}


def _changed(share: float) -> pd.Series:
    """The baseline with `share` of its users (Case Solvers, at most 40 %) moved to Deal Closer."""
    moved = _baseline().copy()
    moved.iloc[: int(len(moved) * share)] = "Deal Closer"
    return moved


def test_an_unchanged_run_passes_every_guardrail() -> None:
    assert {check.status for check in _checks(_baseline(), _baseline()).values()} == {"passed"}


def test_persona_changes_warn_then_fail() -> None:
    assert _checks(_changed(0.125), _baseline())["persona_changes"].status == "warned"
    failing = _checks(_changed(0.25), _baseline())["persona_changes"]
    assert failing.status == "failed" and failing.observed.startswith("25.0% (")
    assert "the fail level is 20%" in failing.message and len(failing.samples) == 5


def test_a_forced_guardrail_lets_the_run_go_on_and_says_so() -> None:
    forced = _checks(_changed(0.25), _baseline(), forced=("persona_changes",))["persona_changes"]
    assert forced.status == "forced" and forced.message.endswith("(forced for this run)")
    # Forcing one guardrail does not force another.
    reshuffled = _users(["Deal Closer"] * 40 + ["Data Expert"] * 30 + ["Case Solver"] * 20 + ["Unassigned"] * 10)
    checks = _checks(reshuffled, _baseline(), forced=("persona_changes",))
    assert checks["persona_changes"].status == "forced" and checks["distribution_drift"].status in ("warned", "failed")


def test_too_few_users_assigned_fails() -> None:
    few = _users(["Case Solver"] * 55 + ["Unassigned"] * 45)
    check = _checks(few)["assigned_share"]
    assert check.status == "failed" and check.observed == "55.0% (55 of 100 active users)"
    assert _checks(_users(["Case Solver"] * 65 + ["Unassigned"] * 35))["assigned_share"].status == "warned"


def test_a_persona_that_empties_out_fails_and_is_named() -> None:
    emptied = _baseline().replace("Data Expert", "Case Solver")
    check = _checks(emptied, _baseline(), config=CONFIG.model_copy(update={
        "persona_changes": Limit(warn=0.5, fail=0.9), "distribution_drift": Limit(warn=5, fail=9)}))["persona_loss"]
    assert check.status == "failed" and check.samples == ("Data Expert",)
    assert "Data Expert 20 -> 0" in check.observed


def test_a_small_persona_may_empty_out() -> None:
    baseline = _users(["Case Solver"] * 97 + ["Data Expert"] * 3)
    check = _checks(_users(["Case Solver"] * 100), baseline)["persona_loss"]
    assert check.status == "passed"


def test_population_stability_index_matches_the_formula() -> None:
    now, before = pd.Series({"a": 60, "b": 40}), pd.Series({"a": 50, "b": 50})
    expected = (0.6 - 0.5) * math.log(0.6 / 0.5) + (0.4 - 0.5) * math.log(0.4 / 0.5)
    assert population_stability_index(now, before) == pytest.approx(expected)
    assert population_stability_index(before, before) == 0.0


def test_the_first_run_has_no_baseline_and_says_so() -> None:
    checks = _checks(_baseline(), None)
    assert {name: check.status for name, check in checks.items()} == {
        "assigned_share": "passed", "persona_changes": "skipped", "distribution_drift": "skipped",
        "persona_loss": "skipped"}


def test_only_guardrails_can_be_forced_and_only_with_a_reason() -> None:
    check_forcing(["persona_changes"], "catalog 2027.1")
    check_forcing([], None)
    with pytest.raises(ConfigurationError, match="only guardrails can be forced"):
        check_forcing(["staged rows not collapsed"], "why not")
    with pytest.raises(ConfigurationError, match="--reason"):
        check_forcing(["persona_changes"], "  ")


def test_a_warn_level_past_the_fail_level_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="warns before it fails"):
        Limit(warn=0.3, fail=0.2)
    with pytest.raises(ValidationError, match="warns before it fails"):
        Limit(warn=0.5, fail=0.6, below=True)
