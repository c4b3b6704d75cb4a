"""Calibration: fitting a catalog's numbers to a few users whose persona a team knows.

Most teams can name the persona of some colleagues. `calibrate` moves the catalog's thresholds, ramps,
weights and minimum scores, within bounds of what the catalog says, so that those users get their
persona, and says whether that helped:

- **Fit**: coordinate ascent, one number at a time (each condition's threshold and weight, each persona's
  min_score), keeping a change when it raises the macro-F1 over the labelled users (ties: the summed
  shortfall of the users still given a wrong persona, so a fit walks towards a label that no single
  step flips yet, and leaves users already right alone). Thresholds stay within x0.5-2 of the catalog's,
  weights within x0.5-2, min scores within 0.15, and no change may let a user with no activity reach a
  persona (the catalog's promise that such a user is Unassigned). Only personas someone labelled are
  moved. Scale and availability come from the whole org, whoever is labelled (personas.rules.OrgContext).
- **Judged by cross-validation**: the labelled users are split into folds (each persona spread over
  them); each fold is predicted by a catalog fitted without it. The report gives macro-F1 over the
  labelled users before (the catalog as written) and cross-validated after, so a team sees whether
  calibration helped on people it did not fit to, and the fit on all labels (optimistic).
- **Written as a new catalog version**: `catalog_yaml` renders a catalog in one canonical form, so the
  diff of the written file against the original (both rendered so) shows only the numbers that moved.
"""

from __future__ import annotations

import csv
import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import PersonaSyncError
from personas.catalog import UNASSIGNED, Catalog, Condition, Persona
from personas.evaluation import macro_f1_of_codes
from personas.rules import (AVOIDS, DOES, OrgContext, credit_of, holds, kind_of, measured, persona_score,
                            subject_values)

THRESHOLD_BOUNDS = (0.5, 2.0)  # a threshold moves within these multiples of the catalog's
WEIGHT_BOUNDS = (0.5, 2.0)
MIN_SCORE_REACH = 0.15
IDLE_MARGIN = 0.02  # how far below each min_score a user with no activity must stay
_THRESHOLD_STEPS = (0.7, 0.85, 1.15, 1.4)
_WEIGHT_STEPS = (0.67, 1.5)
_MIN_SCORE_STEPS = (-0.05, 0.05)


class CalibrationError(PersonaSyncError):
    """The labels cannot be used: a missing or malformed file, unknown personas or users, too few labels."""


# --- labels ----------------------------------------------------------------------------------------------

def read_labels(path: Path, catalog: Catalog, known_users: Sequence[str]) -> pd.Series:
    """The labelled users of a CSV file with the columns Id and persona (a persona's label or id), as a
    Series user Id -> persona label. Every problem is reported at once, with its line."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except OSError as error:
        raise CalibrationError(f"cannot read the labels file {path}: {error.strerror or error}") from error
    if not {"Id", "persona"} <= set(header):
        raise CalibrationError(f"{path}: the labels file needs the columns Id and persona (a header line "
                               f"'Id,persona'), found {', '.join(header) or 'none'}")
    by_key = {persona.id: persona.label for persona in catalog.personas} | \
        {persona.label: persona.label for persona in catalog.personas}
    known = set(known_users)
    by_prefix = {user[:15]: user for user in known_users}  # Salesforce shows 15-character Ids in its UI too
    labels: dict[str, str] = {}
    problems = []
    for line, row in enumerate(rows, start=2):
        user, persona = (row.get("Id") or "").strip(), (row.get("persona") or "").strip()
        user = by_prefix.get(user, user) if len(user) == 15 else user
        if persona not in by_key:
            close = difflib.get_close_matches(persona, list(by_key), n=1)
            problems.append(f"line {line}: unknown persona {persona!r}"
                            + (f"; did you mean {close[0]!r}?" if close else f" (catalog {catalog.version})"))
        elif user not in known:
            problems.append(f"line {line}: user {user!r} is not an active user of the staged org")
        elif user in labels and labels[user] != by_key[persona]:
            problems.append(f"line {line}: user {user} is labelled {labels[user]!r} already")
        else:
            labels[user] = by_key[persona]
    if problems:
        raise CalibrationError(f"{path}: {len(problems)} problem(s) with the labels:\n  " + "\n  ".join(problems))
    if len(set(labels.values())) < 2:
        raise CalibrationError(f"{path}: label users of at least two personas (found {len(labels)} users of "
                               f"{len(set(labels.values()))}); five per persona is a good start")
    return pd.Series(labels, name="persona")


# --- the fit ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CalibrationReport:
    """What calibration did and whether it helped (macro-F1 over the labelled users)."""

    labelled: int
    personas: int
    folds: int
    before: float  # the catalog as written
    cross_validated: float  # each fold predicted by a catalog fitted without it
    fitted: float  # the catalog fitted on every label, on those labels (optimistic)
    changes: list[str] = field(default_factory=list)

    @property
    def helped(self) -> bool:
        return self.cross_validated > self.before


@dataclass(frozen=True)
class _Test:
    """One weighted condition as numbers: its bounds, ramp and weight, and which side it tests."""

    low: float
    high: float
    soft: float | None
    weight: float

    def credit(self, values: np.ndarray) -> np.ndarray:
        return credit_of(values, self.low, self.high, self.soft)


class _Persona:
    """One persona's conditions as numbers, over the labelled users: each condition's values (as scoring
    reads them, org scale included) and credit, kept so a change to one condition rescores only it."""

    def __init__(self, persona: Persona, features: pd.DataFrame, org: OrgContext) -> None:
        self.persona = persona
        self.judged = [org.blind_to(condition) is None for condition in persona.rules.conditions]
        self.tests = [_Test(*condition.bounds, condition.soft, condition.weight)
                      for condition in persona.rules.conditions]
        self.kinds = [kind_of(condition) for condition in persona.rules.conditions]
        self.values = [subject_values(condition, features, org) for condition in persona.rules.conditions]
        # A user with no activity: every feature 0 (0 on the org's scale too), every ratio undefined.
        self.idle_values = [np.array([0.0 if condition.feature else np.nan]) for condition in persona.rules.conditions]
        self.credits = [test.credit(values) for test, values in zip(self.tests, self.values)]
        gate = np.ones(len(features), dtype=bool)
        for criterion in measured(persona.rules.required, org):
            gate &= holds(criterion, features, org)
        for criterion in measured(persona.rules.exclusions, org):
            gate &= ~holds(criterion, features, org)
        self.gate = gate
        self.min_score = persona.min_score
        self._sums()

    def _sums(self) -> None:
        """Per kind (does, avoids; see rules.persona_score): the weighted credits of the judged conditions,
        for the users and for an idle user, their weights, and the weights of all of the kind's conditions."""
        self.sums = {kind: self._kind_sums(kind) for kind in (DOES, AVOIDS)}

    def _kind_sums(self, kind: str, index: int | None = None, test: _Test | None = None) -> tuple:
        total, idle, kept, weights = np.zeros(len(self.gate)), 0.0, 0.0, 0.0
        for position, (judged, current) in enumerate(zip(self.judged, self.tests)):
            if self.kinds[position] != kind:
                continue
            credit = self.credits[position]
            if position == index and test is not None:
                current, credit = test, test.credit(self.values[position])
            weights += current.weight
            if judged:
                total = total + current.weight * credit
                idle += current.weight * float(current.credit(self.idle_values[position])[0])
                kept += current.weight
        return total, idle, kept, weights

    def _combine(self, index: int | None, test: _Test | None) -> tuple[np.ndarray, float]:
        sums = dict(self.sums)
        if index is not None and test is not None:
            sums[self.kinds[index]] = self._kind_sums(self.kinds[index], index, test)
        has_does = any(kind == DOES for kind in self.kinds)
        if (has_does and not sums[DOES][2]) or not any(kept for _, _, kept, _ in sums.values()):
            return np.zeros(len(self.gate)), 0.0
        score, idle, share = np.zeros(len(self.gate)), 0.0, 0.0
        for total, idle_total, kept, weights in sums.values():
            if kept:
                score = score + weights * total / kept
                idle += weights * idle_total / kept
                share += weights
        return score / share, idle / share

    def score(self, index: int | None = None, test: _Test | None = None) -> np.ndarray:
        """The persona's scores, with (judged) condition `index` replaced by `test` when given."""
        score, _ = self._combine(index, test)
        return np.where(self.gate, np.round(score, 6), 0.0)

    def idle_score(self, index: int | None = None, test: _Test | None = None, min_score: float | None = None) -> bool:
        """Whether a user with no activity stays IDLE_MARGIN below the min score, with the change applied."""
        _, idle = self._combine(index, test)
        return idle + IDLE_MARGIN <= (self.min_score if min_score is None else min_score)

    def accept(self, index: int, test: _Test) -> None:
        self.tests[index] = test
        self.credits[index] = test.credit(self.values[index])
        self._sums()

    def catalog_persona(self) -> Persona:
        """The persona with its current numbers, as a catalog persona."""
        conditions = []
        for condition, test in zip(self.persona.rules.conditions, self.tests):
            update = {"weight": test.weight, "soft": test.soft}
            if condition.at_least is not None:
                update["at_least"] = test.low
            elif condition.at_most is not None:
                update["at_most"] = test.high
            conditions.append(condition.model_copy(update=update))
        rules = self.persona.rules.model_copy(update={"conditions": conditions})
        return self.persona.model_copy(update={"rules": rules, "min_score": self.min_score})


def _predict(scores: np.ndarray, min_scores: np.ndarray) -> np.ndarray:
    best = np.argmax(scores, axis=1)  # the first of equal scores: catalog order
    return np.where(scores[np.arange(len(best)), best] >= min_scores[best], best, -1)


def _margin(scores: np.ndarray, truth: np.ndarray) -> float:
    """How far the labelled users given the wrong persona are from the right one (0 when none is): the
    mean of (right persona's score - best other score), counted only where it is negative. It lets the fit
    walk towards a label a single step does not flip yet, without pushing users already right further
    apart (which only fits the labels closer)."""
    rows = np.arange(len(truth))
    right = scores[rows, truth]
    wrong = scores.copy()
    wrong[rows, truth] = -np.inf
    return float(np.clip(right - wrong.max(axis=1), -1, 0).mean())


def _threshold_variants(original: Condition, test: _Test) -> list[_Test]:
    """`test` with its threshold (and ramp) moved by each step, within the bounds around `original`'s."""
    if original.at_least is not None:
        side, value, start = "low", test.low, original.at_least
    elif original.at_most is not None:
        side, value, start = "high", test.high, original.at_most
    else:
        return []
    if not start:
        return []
    out = []
    for step in _THRESHOLD_STEPS:
        moved = float(f"{value * step:.3g}")
        if THRESHOLD_BOUNDS[0] * start <= moved <= THRESHOLD_BOUNDS[1] * start:
            soft = float(f"{test.soft * step:.3g}") if test.soft else test.soft
            out.append(replace(test, **{side: moved}, soft=soft))
    return out


def _weight_variants(original: Condition, test: _Test) -> list[_Test]:
    out = []
    for step in _WEIGHT_STEPS:
        weight = float(f"{test.weight * step:.3g}")
        if WEIGHT_BOUNDS[0] * original.weight <= weight <= WEIGHT_BOUNDS[1] * original.weight:
            out.append(replace(test, weight=weight))
    return out


def fit(catalog: Catalog, features: pd.DataFrame, org: OrgContext, labels: pd.Series, *, passes: int = 2,
        margins: bool = True) -> Catalog:
    """The catalog with its numbers fitted to `labels` (user Id -> persona label; see the module docstring)."""
    labelled = features.loc[labels.index]
    truth = np.array([catalog.labels.index(label) for label in labels])
    personas = [_Persona(persona, labelled, org) for persona in catalog.personas]
    scores = np.column_stack([persona.score() for persona in personas])

    def objective(column: int, values: np.ndarray, min_score: float) -> tuple[float, float]:
        trial = scores.copy()
        trial[:, column] = values
        minimum = np.array([persona.min_score for persona in personas])
        minimum[column] = min_score
        f1 = macro_f1_of_codes(truth, _predict(trial, minimum), len(personas))
        return f1, _margin(trial, truth) if margins else 0.0

    current = objective(0, scores[:, 0], personas[0].min_score)
    for _ in range(passes):
        improved = False
        for column, (persona, original) in enumerate(zip(personas, catalog.personas)):
            if original.label not in set(labels):
                continue  # nobody labelled it: its numbers stay as the catalog has them
            while True:
                best, choice = current, None
                for index, condition in enumerate(original.rules.conditions):
                    if not persona.judged[index]:
                        continue
                    test = persona.tests[index]
                    for variant in (*_threshold_variants(condition, test), *_weight_variants(condition, test)):
                        if not persona.idle_score(index, variant):
                            continue
                        value = objective(column, persona.score(index, variant), persona.min_score)
                        if value > best:
                            best, choice = value, (index, variant)
                for step in _MIN_SCORE_STEPS:
                    min_score = round(persona.min_score + step, 3)
                    if abs(min_score - original.min_score) <= MIN_SCORE_REACH + 1e-9 and 0 < min_score < 1 \
                            and persona.idle_score(min_score=min_score):
                        value = objective(column, scores[:, column], min_score)
                        if value > best:
                            best, choice = value, min_score
                if choice is None:
                    break
                if isinstance(choice, tuple):
                    persona.accept(*choice)
                    scores[:, column] = persona.score()
                else:
                    persona.min_score = choice
                current, improved = best, True
        if not improved:
            break
    return catalog.model_copy(update={"personas": [persona.catalog_persona() for persona in personas]})


def calibrate(catalog: Catalog, features: pd.DataFrame, labels: pd.Series, *, folds: int = 5, passes: int = 2,
              version: str | None = None, margins: bool = True) -> tuple[Catalog, CalibrationReport]:
    """Fits `catalog` to `labels` and judges the fit by cross-validation (see the module docstring).

    `features`: the whole org's features (its active users set the scale); `labels`: user Id -> persona
    label, for users among them. Returns the catalog fitted on every label, as version `version`
    (default: the catalog's version + "-calibrated"), and the report.
    """
    org = OrgContext.of(features, catalog)
    truth = np.array([catalog.labels.index(label) for label in labels])
    before = _labelled_f1(catalog, features, org, labels, truth)
    assignment = _folds(labels, folds)
    if assignment.max() < 1:
        raise CalibrationError("cross-validation needs two labelled users of at least one persona (each fold is "
                               "predicted by a fit without it); five per persona is a good start")
    predicted = np.full(len(labels), -1)
    for fold in range(max(assignment) + 1):
        held = assignment == fold
        fitted = fit(catalog, features, org, labels[~held], passes=passes, margins=margins)
        scores = np.column_stack([persona_score(persona, features.loc[labels.index[held]], org)
                                  for persona in fitted.personas])
        predicted[held] = _predict(scores, np.array([persona.min_score for persona in fitted.personas]))
    cross_validated = macro_f1_of_codes(truth, predicted, len(catalog.personas))
    final = fit(catalog, features, org, labels, passes=passes, margins=margins)
    final = final.model_copy(update={"version": version or f"{catalog.version}-calibrated"})
    fitted_f1 = _labelled_f1(final, features, org, labels, truth)
    report = CalibrationReport(len(labels), labels.nunique(), max(assignment) + 1, before, cross_validated,
                               fitted_f1, changes(catalog, final))
    return final, report


def _labelled_f1(catalog: Catalog, features: pd.DataFrame, org: OrgContext, labels: pd.Series,
                 truth: np.ndarray) -> float:
    scores = np.column_stack([persona_score(persona, features.loc[labels.index], org) for persona in catalog.personas])
    minimum = np.array([persona.min_score for persona in catalog.personas])
    return macro_f1_of_codes(truth, _predict(scores, minimum), len(catalog.personas))


def _folds(labels: pd.Series, folds: int) -> np.ndarray:
    """A fold per labelled user, each persona's users dealt over the folds in turn (deterministic)."""
    if folds < 2:
        raise CalibrationError(f"cross-validation needs at least 2 folds, not {folds}")
    assignment = np.zeros(len(labels), dtype=int)
    for _, positions in pd.Series(range(len(labels)), index=labels.to_numpy()).groupby(level=0):
        for turn, position in enumerate(positions.sort_values()):
            assignment[position] = turn % folds
    return assignment


def changes(before: Catalog, after: Catalog) -> list[str]:
    """One line per number calibration moved: persona, condition and old -> new."""
    lines = []
    for was, now in zip(before.personas, after.personas):
        if was.min_score != now.min_score:
            lines.append(f"{now.label}: min_score {was.min_score:g} -> {now.min_score:g}")
        for old, new in zip(was.rules.conditions, now.rules.conditions):
            for name in ("at_least", "at_most", "soft", "weight"):
                if getattr(old, name) != getattr(new, name):
                    lines.append(f"{now.label}: {old.subject} {name} {getattr(old, name):g} -> {getattr(new, name):g}")
    return lines


# --- writing ---------------------------------------------------------------------------------------------

def catalog_yaml(catalog: Catalog) -> str:
    """A catalog as YAML in one canonical form (a condition per line), so two renderings diff by number."""
    lines = [f"version: {_quoted(catalog.version)}"]
    if catalog.description:
        lines.append(f"description: {_quoted(catalog.description)}")
    lines.append("personas:")
    for persona in catalog.personas:
        lines += [f"  - id: {persona.id}", f"    label: {_quoted(persona.label)}", f"    cloud: {persona.cloud}",
                  f"    description: {_quoted(persona.description)}", f"    reference: {_quoted(persona.reference)}",
                  f"    min_score: {_scalar(float(persona.min_score))}", "    rules:"]
        for kind in ("required", "exclusions", "conditions"):
            tests = getattr(persona.rules, kind)
            if tests:
                lines.append(f"      {kind}:")
                lines += [f"        - {_flow(test)}" for test in tests]
    if catalog.community_roles:
        lines.append("community_roles:")
        lines += [f"  {key}: [{', '.join(_quoted(role) for role in roles)}]"
                  for key, roles in catalog.community_roles.items()]
    return "\n".join(lines) + "\n"


def _flow(test: object) -> str:
    values = test.model_dump(exclude_defaults=True)  # type: ignore[attr-defined]
    order = ("feature", "ratio", "scale", "at_least", "at_most", "between", "soft", "weight", "note")
    parts = []
    for name in order:
        if name in values:
            value = values[name]
            text = f"[{', '.join(_scalar(item) for item in value)}]" if isinstance(value, (list, tuple)) else \
                _scalar(value)
            parts.append(f"{name}: {text}")
    return "{" + ", ".join(parts) + "}"


def _scalar(value: object) -> str:
    if isinstance(value, float):  # short where that is exact, else every digit: the file loads back equal
        return f"{value:g}" if math.isfinite(value) and float(f"{value:g}") == value else repr(value)
    return _quoted(value) if isinstance(value, str) else str(value)


def _quoted(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def catalog_diff(before: Catalog, after: Catalog, *, before_name: str, after_name: str) -> str:
    """A unified diff of the two catalogs, both in canonical form."""
    return "".join(difflib.unified_diff(catalog_yaml(before).splitlines(keepends=True),
                                        catalog_yaml(after).splitlines(keepends=True),
                                        fromfile=before_name, tofile=after_name, n=1))


__all__ = ["CalibrationError", "CalibrationReport", "UNASSIGNED", "calibrate", "catalog_diff", "catalog_yaml",
           "changes", "fit", "read_labels"]
