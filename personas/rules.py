"""The rule engine: scores every user against every persona of a catalog, picks one, and says why.

Scoring (vectorised: one numpy operation per condition, over all users at once):

- A condition's *credit* is 1 when its test holds and 0 when not; with `soft: S` it ramps linearly
  over S below `at_least` (above `at_most`), so a value halfway into the ramp earns 0.5. A missing
  value (NaN) or a ratio with a zero denominator earns 0.
- A persona's score is the weighted mean of its conditions' credits, sum(weight x credit) / sum(weight),
  in [0, 1]; it is 0 when any `required` test fails or any `exclusion` holds.
- A test with `scale: org` reads its subject in multiples of the org's typical value: the median over the
  org's active users (the `IsActive` rows of the frame scored, or of the `org` frame given) who have a
  value above 0. An org where nobody has any gives no scale: such tests are dropped like those below.
- A feature the org cannot measure (its source is absent or empty there: `unavailable_features`) is
  never read as zero: every condition, required test or exclusion on it is dropped for the run, and its
  weight goes to the kept conditions of the same kind (what the persona does, or does little of), so the
  mean is over what is measured and someone who did nothing stays Unassigned. A persona with no "does"
  condition left scores 0. Scores are rounded to six
  decimals, so equal scores are equal on every machine.

Assignment (`assign`): the best persona if its score reaches its `min_score`, else `Unassigned`.
Ties go to the persona listed first in the catalog. See `assign` for confidence and stability.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from core.errors import PersonaSyncError
from personas.catalog import UNASSIGNED, Catalog, Condition, Criterion, Persona
from personas.features import FEATURES, PER_30_DAYS, SHARE, Ratio, unavailable_features

__all__ = ["REASON_MAX_CHARS", "UNASSIGNED", "RuleInputError", "assign", "condition_credit", "credit_of", "explain",
           "holds", "kind_of", "measured", "OrgContext", "persona_score", "score_personas", "subject_values", "values_of"]

REASON_MAX_CHARS = 255  # the Salesforce text field the reason is written to
REASON_TOP_CONDITIONS = 3
SCORE_DECIMALS = 6


class RuleInputError(PersonaSyncError):
    """The features cannot be scored with this catalog (a feature column is missing, an unknown user)."""


# --- scoring ---------------------------------------------------------------------------------------------

def score_personas(features: pd.DataFrame, catalog: Catalog, *, org: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every user's score (0..1) for every persona: index = the features' index, columns = persona labels
    in catalog order. `org`: the whole org's features, when `features` holds only some users (what the
    org cannot measure, and its scale, come from it; default: `features`). Raises RuleInputError when a
    feature the catalog reads is not a column."""
    _check_columns(features, catalog)
    org = OrgContext.of(org if org is not None else features, catalog)
    return pd.DataFrame({persona.label: persona_score(persona, features, org)
                         for persona in catalog.personas}, index=features.index)


@dataclass(frozen=True)
class OrgContext:
    """What scoring needs to know about the whole org, whoever is scored: the features it cannot measure
    (name -> why) and, per subject a `scale: org` test reads, the org's typical value."""

    unavailable: dict[str, str]
    typical: dict[tuple[str, ...], float]

    @classmethod
    def of(cls, org: pd.DataFrame, catalog: Catalog) -> "OrgContext":
        """From the org's features frame (every user; its active ones set the scale)."""
        active = org[org["IsActive"].astype(bool)] if "IsActive" in org.columns else org
        typical = {}
        for test in (t for persona in catalog.personas for t in (*persona.rules.conditions, *persona.rules.required,
                                                                 *persona.rules.exclusions)):
            if test.scale == "org" and test.features not in typical and all(n in org.columns for n in test.features):
                values = values_of(test.features, active)
                some = values[np.isfinite(values) & (values > 0)]
                typical[test.features] = float(np.median(some)) if len(some) else float("nan")
        return cls(unavailable_features(org), typical)

    def blind_to(self, criterion: Criterion) -> str | None:
        """Why this org cannot judge `criterion` (an unavailable feature, or no scale), or None."""
        for name in criterion.features:
            if name in self.unavailable:
                return f"{name} is not measured on this org ({self.unavailable[name]})"
        if criterion.scale == "org" and not self.typical.get(criterion.features, 0) > 0:
            return f"no active user of this org has any {criterion.subject}, so it gives no scale"
        return None


def measured(criteria: list[Criterion] | list[Condition], org: OrgContext) -> list:
    """The criteria this org can judge: those on an unavailable feature, or with no scale, are dropped."""
    return [criterion for criterion in criteria if org.blind_to(criterion) is None]


def persona_score(persona: Persona, features: pd.DataFrame, org: OrgContext) -> np.ndarray:
    """One persona's score (0..1) for every row of `features`, on the org `org` describes.

    Conditions the org cannot judge are dropped and their weight goes to the kept conditions *of the same
    kind* (`kind_of`: what the persona does, or what it does little of), so a persona's balance between
    the two stays as the catalog wrote it: were an org to lack the objects of everything a persona does,
    the conditions on what it does not do would otherwise decide alone, and someone who did nothing
    would reach it. A persona none of whose "does" conditions can be judged scores 0 on this org."""
    rules = persona.rules
    weights = np.array([condition.weight for condition in rules.conditions])
    kinds = np.array([kind_of(condition) for condition in rules.conditions])
    judged = np.array([org.blind_to(condition) is None for condition in rules.conditions])
    if (kinds == DOES).any() and not judged[kinds == DOES].any() or not judged.any():
        return np.zeros(len(features))
    score = np.zeros(len(features))
    share = 0.0
    for kind in (DOES, AVOIDS):
        kept = judged & (kinds == kind)
        if not kept.any():
            continue
        credits = np.column_stack([condition_credit(condition, features, org)
                                   for condition, keep in zip(rules.conditions, kept) if keep])
        score += weights[kinds == kind].sum() * (credits @ weights[kept]) / weights[kept].sum()
        share += weights[kinds == kind].sum()
    score = score / share
    gate = np.ones(len(features), dtype=bool)
    for criterion in measured(rules.required, org):
        gate &= holds(criterion, features, org)
    for criterion in measured(rules.exclusions, org):
        gate &= ~holds(criterion, features, org)
    return np.round(np.where(gate, score, 0.0), SCORE_DECIMALS)


DOES, AVOIDS = "does", "avoids"


def kind_of(condition: Condition) -> str:
    """Whether a condition is on something the persona does (at_least, between) or does little of (at_most)."""
    return AVOIDS if condition.at_most is not None else DOES


def subject_values(criterion: Criterion, features: pd.DataFrame, org: OrgContext | None = None) -> np.ndarray:
    """The values a test looks at: the feature, or numerator / denominator (NaN where the denominator is 0),
    in multiples of the org's typical value for a `scale: org` test (NaN where the org gives no scale)."""
    values = values_of(criterion.features, features)
    if criterion.scale == "org":
        typical = org.typical.get(criterion.features, float("nan")) if org is not None else float("nan")
        with np.errstate(divide="ignore", invalid="ignore"):
            return values / typical if typical > 0 else np.full(len(values), np.nan)
    return values


def values_of(subject: tuple[str, ...], features: pd.DataFrame) -> np.ndarray:
    """A subject's values: one feature, or (numerator, denominator) divided, NaN where the denominator is 0."""
    if len(subject) == 1:
        return features[subject[0]].to_numpy(dtype=float)
    numerator, denominator = (features[name].to_numpy(dtype=float) for name in subject)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator != 0, numerator / denominator, np.nan)


def holds(criterion: Criterion, features: pd.DataFrame, org: OrgContext | None = None) -> np.ndarray:
    """Where the test holds (a hard step, ends included); NaN never holds."""
    low, high = criterion.bounds
    values = subject_values(criterion, features, org)
    return (values >= low) & (values <= high)


def condition_credit(condition: Condition, features: pd.DataFrame, org: OrgContext | None = None) -> np.ndarray:
    """Each user's credit (0..1) for one weighted condition: a step, or a linear ramp of width `soft`."""
    low, high = condition.bounds
    return credit_of(subject_values(condition, features, org), low, high, condition.soft)


def credit_of(values: np.ndarray, low: float, high: float, soft: float | None) -> np.ndarray:
    """The credit (0..1) of `values` for a test between `low` and `high` (ends included; -inf / inf for
    at_most / at_least): 1 inside, 0 outside, or with `soft` a linear ramp over that width outside the
    bounds. NaN (a ratio over zero) gets 0."""
    if soft is None:
        credit = ((values >= low) & (values <= high)).astype(float)
    else:
        with np.errstate(invalid="ignore"):
            from_below = np.clip((values - (low - soft)) / soft, 0.0, 1.0)
            from_above = np.clip(((high + soft) - values) / soft, 0.0, 1.0)
        credit = np.minimum(from_below, from_above)
    return np.nan_to_num(credit, nan=0.0)


def _check_columns(features: pd.DataFrame, catalog: Catalog) -> None:
    missing = [name for name in catalog.features if name not in features.columns]
    if missing:
        raise RuleInputError(f"the features lack {len(missing)} column(s) catalog {catalog.version} reads: "
                             f"{', '.join(missing)}; compute features with a persona-sync that defines them, "
                             "or use a catalog that does not read them")


# --- assignment ------------------------------------------------------------------------------------------

def assign(features: pd.DataFrame, catalog: Catalog, *, current: pd.Series | None = None,
           stability_margin: float = 0.1, org: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each user's persona, score, confidence, runner-up and a reason (index = the features' index).

    Columns:
    - persona: the chosen persona's label, or `Unassigned` when no persona reaches its `min_score`.
    - score: the chosen persona's score (for Unassigned: the best score any persona reached).
    - confidence: score - runner_up_score, clipped to [0, 1]; 0 for Unassigned. The margin over the
      next best persona, so it grows with that margin and can never exceed the score itself: a weak
      winner is never a confident one.
    - runner_up, runner_up_score: the best persona not chosen (for Unassigned: the closest persona);
      None and 0.0 when the catalog has a single persona.
    - reason: one sentence of at most 255 characters, e.g. `Case Solver (0.91): 16 cases closed/30d =
      42% of activity (>= 30%), 0.06 cases escalated per cases closed (<= 0.2); runner-up Expert Agent
      0.57`: the top contributing conditions (what the user does before what they do not), each with the
      user's value and the threshold. Features are rates per 30 days over the feature window, shares of
      the user's activity or logins, or counts of people; values are shown in those terms.

    Tie-break: the higher score wins; equal scores go to the persona listed first in the catalog.

    Stability: `current` (user Id -> persona label or id, e.g. the previous run's assignments) lets a
    user keep their current persona while it still reaches its `min_score` and no other persona beats
    it by `stability_margin` or more, so nobody flips back and forth between nights. Users missing
    from `current`, or whose current persona is Unassigned or not in the catalog, get the best persona.

    `org`: the whole org's features, when `features` holds only some of its users (as `score_personas`).

    Deterministic: the same features, catalog and current personas give the same result.
    """
    if stability_margin < 0:
        raise ValueError(f"stability_margin must be >= 0, got {stability_margin}")
    context = OrgContext.of(org if org is not None else features, catalog)
    scores = score_personas(features, catalog, org=org)
    matrix = scores.to_numpy()
    rows = np.arange(len(scores))
    order = np.argsort(-matrix, axis=1, kind="stable")  # stable: equal scores keep catalog order
    best = order[:, 0]
    second = order[:, 1] if matrix.shape[1] > 1 else np.full(len(rows), -1)
    min_scores = np.array([persona.min_score for persona in catalog.personas])
    best_score = matrix[rows, best]
    clears = best_score >= min_scores[best]

    held = _current_codes(current, scores.index, catalog)
    held_score = np.where(held >= 0, matrix[rows, np.maximum(held, 0)], -1.0)
    keeps = (held >= 0) & (held != best) & (held_score >= min_scores[np.maximum(held, 0)]) \
        & (np.round(best_score - held_score, SCORE_DECIMALS) < stability_margin)
    chosen = np.where(keeps, held, best)
    assigned = clears | keeps
    runner = np.where(chosen == best, second, best)
    has_runner = runner >= 0
    chosen_score = matrix[rows, chosen]
    runner_score = np.where(has_runner, matrix[rows, np.maximum(runner, 0)], 0.0)
    labels = np.array(catalog.labels, dtype=object)

    result = pd.DataFrame({
        "persona": np.where(assigned, labels[chosen], UNASSIGNED),
        "score": np.where(assigned, chosen_score, best_score),
        "confidence": np.where(assigned, np.clip(chosen_score - runner_score, 0.0, 1.0), 0.0).round(SCORE_DECIMALS),
        "runner_up": np.where(assigned, np.where(has_runner, labels[np.maximum(runner, 0)], None), labels[best]),
        "runner_up_score": np.where(assigned, runner_score, best_score),
    }, index=scores.index)
    result["reason"] = _reasons(features, catalog, result, chosen, assigned, keeps, stability_margin, context)
    return result


def _current_codes(current: pd.Series | None, index: pd.Index, catalog: Catalog) -> np.ndarray:
    """Each user's current persona as a catalog position (-1: none, Unassigned or unknown to the catalog)."""
    if current is None:
        return np.full(len(index), -1)
    positions = {persona.label: i for i, persona in enumerate(catalog.personas)}
    positions.update({persona.id: i for i, persona in enumerate(catalog.personas)})
    return current.reindex(index).map(positions).fillna(-1).to_numpy(dtype=int)


# --- reasons ---------------------------------------------------------------------------------------------

def _reasons(features: pd.DataFrame, catalog: Catalog, result: pd.DataFrame, chosen: np.ndarray,
             assigned: np.ndarray, keeps: np.ndarray, margin: float, org: OrgContext) -> np.ndarray:
    """One reason per user. Credits and their ranking are computed per persona group with numpy; only the
    text of the few conditions shown is formatted per user."""
    reasons = np.empty(len(result), dtype=object)
    score = result["score"].to_numpy()
    runner_up = result["runner_up"].to_numpy()
    runner_up_score = result["runner_up_score"].to_numpy()
    for position, persona in enumerate(catalog.personas):
        group = np.flatnonzero(chosen == position)
        if len(group) == 0:
            continue
        subset = features.iloc[group]
        conditions = persona.rules.conditions
        weights = np.array([condition.weight for condition in conditions])
        credit = np.column_stack([condition_credit(condition, subset, org) for condition in conditions])
        contribution = credit * weights
        values = np.column_stack([subject_values(condition, subset, org) for condition in conditions])
        parts = np.column_stack([_part_values(condition, subset) for condition in conditions])
        # Shown first: what the user does (at_least, between); what they do not do (at_most) counts half,
        # and does not count at all towards a persona that was not given.
        absence = np.array([condition.at_most is not None for condition in conditions])
        for row, user in enumerate(group):
            emphasis = np.where(absence, 0.5 if assigned[user] else 0.0, 1.0)
            ranked = [c for c in np.argsort(-contribution[row] * emphasis, kind="stable")
                      if contribution[row, c] * emphasis[c] > 0]
            shown = [_describe(conditions[c], values[row, c], parts[row, c], credit[row, c])
                     for c in _distinct_subjects(conditions, ranked)[:REASON_TOP_CONDITIONS]]
            if not assigned[user]:
                head = (f"{UNASSIGNED}: no persona reaches its minimum; closest {persona.label} {score[user]:.2f} "
                        f"(needs {persona.min_score:.2f})")
            elif keeps[user]:
                head = f"{persona.label} ({score[user]:.2f}, kept: no other persona ahead by {margin:.2f})"
            else:
                head = f"{persona.label} ({score[user]:.2f})"
            runner = f"; runner-up {runner_up[user]} {runner_up_score[user]:.2f}" \
                if assigned[user] and runner_up[user] is not None else ""
            reasons[user] = _fit(head, shown, runner)
    return reasons


def _distinct_subjects(conditions: list[Condition], ranked: list[int]) -> list[int]:
    """`ranked` without conditions on a subject already shown (quotes and quotes_share are one subject)."""
    seen: set[str] = set()
    kept = []
    for position in ranked:
        condition = conditions[position]
        subject = condition.subject
        if condition.feature is not None:
            subject = _presentation(condition.feature).part or condition.feature
        if subject not in seen:
            seen.add(subject)
            kept.append(position)
    return kept


def _fit(head: str, shown: list[str], tail: str) -> str:
    """head: shown[0], shown[1], ...tail, dropping the least important conditions until it fits
    REASON_MAX_CHARS; if even head + tail is too long, cut it with an ellipsis."""
    for count in range(len(shown), -1, -1):
        text = head + (": " + ", ".join(shown[:count]) if count else "") + tail
        if len(text) <= REASON_MAX_CHARS:
            return text
    return text[:REASON_MAX_CHARS - 1] + "…"


def _describe(criterion: Criterion, value: float, part: float = float("nan"), credit: float = 1.0) -> str:
    """`16 cases closed/30d = 42% of activity (>= 30%)`: the user's value in the feature's own terms
    (for a share, also the rate it is a share of), and the test; `partly` when a soft condition gave
    part of its credit."""
    partly = ", partly" if 0 < credit < 1 else ""
    return f"{_value_text(criterion, value, part)} ({_test_text(criterion)}{partly})"


def _value_text(criterion: Criterion, value: float, part: float) -> str:
    if criterion.scale == "org":
        subject = _words(criterion.feature) if criterion.feature else " per ".join(map(_words, criterion.ratio or ()))
        return f"{subject} {'n/a' if np.isnan(value) else _number(value) + 'x'} the org's typical"
    if criterion.ratio is not None:
        numerator, denominator = criterion.ratio
        shown = "n/a" if np.isnan(value) else _number(value)
        return f"{shown} {_words(numerator)} per {_words(denominator)}"
    name = criterion.feature or ""
    if np.isnan(value):
        return f"{_words(name)} n/a"
    presentation = _presentation(name)
    if presentation.unit == SHARE:
        if presentation.part and not np.isnan(part):
            return f"{_number(part)} {_words(presentation.part)}/30d = {_percent(value)} of {presentation.whole}"
        return f"{_words(presentation.part or name)} {_percent(value)} of {presentation.whole}"
    if presentation.unit == PER_30_DAYS:
        return f"{_number(value)} {_words(name)}/30d"
    return f"{_number(value)} {_words(name)}"


def _test_text(criterion: Criterion) -> str:
    is_share = criterion.feature is not None and _presentation(criterion.feature).unit == SHARE
    show = (lambda value: f"{value:g}x") if criterion.scale == "org" else _percent if is_share else _number
    if criterion.between is not None:
        return f"{show(criterion.between[0])}-{show(criterion.between[1])}"
    if criterion.at_least is not None:
        return f">= {show(criterion.at_least)}"
    return f"<= {show(criterion.at_most)}"


@dataclass(frozen=True)
class _Presentation:
    """How a feature reads in a reason: its unit and, for a share, the rate it is a share of and of what."""

    unit: str
    part: str | None = None
    whole: str = ""


@cache
def _presentation(feature: str) -> _Presentation:
    """From the feature registry (personas.features.FEATURES); an unknown name reads as a plain number."""
    for declared in FEATURES:
        if declared.name == feature:
            measure = declared.measure
            if isinstance(measure, Ratio):
                whole = "activity" if measure.whole == ("activity_total",) else \
                    "logins" if all(name.startswith("logins_") for name in measure.whole) else \
                    " + ".join(_words(name) for name in measure.whole)
                return _Presentation(declared.unit, measure.part, whole)
            return _Presentation(declared.unit)
    return _Presentation("")


def _part_values(criterion: Criterion, features: pd.DataFrame) -> np.ndarray:
    """For a share feature, the rate it is a share of (shown next to the share); NaN otherwise."""
    part = _presentation(criterion.feature).part if criterion.feature else None
    if part is None or part not in features.columns:
        return np.full(len(features), np.nan)
    return features[part].to_numpy(dtype=float)


def _words(feature: str) -> str:
    return feature.replace("_", " ")


def _percent(share: float) -> str:
    """0.42 -> 42%, 0.013 -> 1.3%, 0.0034 -> 0.34%: two significant digits, so small thresholds stay visible."""
    return f"{float(f'{share * 100:.2g}'):g}%"


def _number(value: float) -> str:
    if value >= 10 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"


# --- explain ---------------------------------------------------------------------------------------------

def explain(user_id: str, features: pd.DataFrame, catalog: Catalog) -> str:
    """Every persona's score for one user and why: each condition's value, criterion, credit and contribution,
    and which required tests or exclusions decided it. For `persona-sync explain USER_ID`.

    Raises RuleInputError when the user has no features (not in the window's users)."""
    if user_id not in features.index:
        raise RuleInputError(f"user {user_id} has no features (not an active user of the org, or not pulled yet); "
                             "check the Id, then run a pull and the feature stage")
    one = features.loc[[user_id]]
    org = OrgContext.of(features, catalog)
    decision = assign(one, catalog, org=features).iloc[0]
    scores = score_personas(one, catalog, org=features).iloc[0]
    context = [f"{column} {one.iloc[0][column]}" for column in ("Name", "Title", "Department", "Profile")
               if column in one.columns and pd.notna(one.iloc[0][column])]
    lines = [f"User {user_id}" + (f" ({', '.join(context)})" if context else ""),
             f"Assigned: {decision['persona']} (score {decision['score']:.2f}, confidence "
             f"{decision['confidence']:.2f})",
             f"Reason: {decision['reason']}",
             "Rates are per 30 days; shares are of the user's activity (or logins).", ""]
    used = {name: why for name, why in org.unavailable.items() if name in catalog.features}
    if used:
        lines += ["Not measured on this org, so every condition on them is dropped and the other weights "
                  "renormalised:", *(f"  {name}: {why}" for name, why in used.items()), ""]
    if org.typical:
        lines += ["The org's typical values (the median over its active users who have any), the unit of "
                  "`scale: org` tests:", *(f"  {'/'.join(subject)}: {_number(value) if value > 0 else 'none'}"
                                           for subject, value in org.typical.items()), ""]
    for persona in sorted(catalog.personas, key=lambda p: -scores[p.label]):
        lines.extend(_explain_persona(persona, one, float(scores[persona.label]), org))
    return "\n".join(lines)


def _explain_persona(persona: Persona, one: pd.DataFrame, score: float, org: OrgContext) -> list[str]:
    rules = persona.rules
    lines = [f"{persona.label} [{persona.id}]: score {score:.2f} (min {persona.min_score:.2f})"]
    for criterion in rules.required:
        blind = org.blind_to(criterion)
        outcome = f"dropped: {blind}" if blind else 'holds' if holds(criterion, one, org)[0] else 'FAILS -> score 0'
        lines.append(f"  required  {_describe(criterion, *_values(criterion, one, org))}: {outcome}")
    for criterion in rules.exclusions:
        blind = org.blind_to(criterion)
        outcome = f"dropped: {blind}" if blind else \
            'HOLDS -> score 0' if holds(criterion, one, org)[0] else 'does not hold'
        lines.append(f"  exclusion {_describe(criterion, *_values(criterion, one, org))}: {outcome}")
    total = sum(condition.weight for condition in measured(rules.conditions, org))
    for condition in rules.conditions:
        soft = f", soft {condition.soft:g}" if condition.soft is not None else ""
        described = f"  weight {condition.weight:g}{soft}: {_describe(condition, *_values(condition, one, org))}"
        blind = org.blind_to(condition)
        if blind:
            lines.append(f"{described} -> dropped: {blind}")
            continue
        credit = float(condition_credit(condition, one, org)[0])
        lines.append(f"{described} -> credit {credit:.2f}, contributes {condition.weight * credit / total:.2f}")
    return lines


def _values(criterion: Criterion, one: pd.DataFrame, org: OrgContext) -> tuple[float, float]:
    return float(subject_values(criterion, one, org)[0]), float(_part_values(criterion, one)[0])
