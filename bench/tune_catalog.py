"""Tunes a persona catalog's thresholds, ramps, weights and minimum scores on generated sandbox orgs.

Run: .venv/bin/python bench/tune_catalog.py [--catalog catalogs/default.yaml] [--seeds 1 2 ... 10]
                                            [--validate 11 12 13 14 15] [--passes 3] [--add] [--write]
                                            [--worlds 1 ... 15] [--validate-worlds 16 ... 20] [--flip-scale]
                                            [--worst-weight 0.5]

How the default catalog was made: the conditions were written by hand from the persona research (what each
persona does and does not do); this script then moves their numbers. Coordinate ascent: for one condition at a
time it tries a lower and higher threshold, a narrower and wider ramp (`soft`), a lower and higher weight, or
dropping it, and keeps a change when it raises the objective, the mean macro-F1 over the tuning orgs: medium
orgs of --seeds with the default generator settings, and the same seeds with twice the hybrids and twice the
noise (the issue's "hard" org); --worst-weight W adds W times the worst tuning org's macro-F1, for a
worst-case target (--min-gain is then in units of that objective). `--add` also tries new conditions on every
share and people feature, a few at a time, where one helps by at least --min-gain. Each pass prints the
objective on the validation seeds too (never tuned on), to show whether a gain is real or overfit. No change
may let a user with no activity and no reports reach a persona's min_score (the catalog's promise that such a
user is Unassigned): min scores too low for that are lifted first.

`--worlds` adds the orgs of those world seeds (sandbox/generate/worlds.py; seeds 1-20 are for tuning,
1001-1010 are held out and refused here) to the objective, `--validate-worlds` to the validation;
scoring drops the conditions an org cannot judge as the product does. `--flip-scale` also tries each
condition on the other scale (absolute numbers, or `scale: org` over the tuning orgs' typical value).

`--write` rewrites the catalog's condition lines and min_score values in place (the rest of the file,
its notes and comments, is kept); each condition's comment names the personas it tells this one
apart from, measured on the tuning orgs. Judge the result with bench/evaluate_orgs.py on seeds that
neither this script nor its user has looked at.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from evaluate_orgs import AS_OF, org_home, stage_org, world_home  # noqa: E402
from personas.catalog import default_catalog_path, load_catalog  # noqa: E402
from personas.evaluation import macro_f1_of_codes  # noqa: E402
from personas.features import FEATURES, PEOPLE, SHARE, Window, compute_features_partitioned  # noqa: E402
from personas.rules import credit_of, values_of  # noqa: E402
from sandbox.generate.worlds import World  # noqa: E402

KINDS = {"medium": (0.1, 1.0), "hard": (0.2, 2.0)}  # (hybrid share, noise)
INF = math.inf
IDLE_MARGIN = 0.02  # how far below each min_score a user with no activity must stay


# --- the catalog as numbers -------------------------------------------------------------------------

@dataclass(frozen=True)
class Cond:
    """One weighted condition: its subject (a feature, or a ratio of two), bounds, ramp and weight."""

    subject: tuple[str, ...]  # (feature,) or (numerator, denominator)
    low: float
    high: float
    soft: float | None
    weight: float
    scale: str = "absolute"  # or "org": in multiples of the org's typical value (personas/catalog.py)

    @property
    def kind(self) -> str:
        if self.low == -INF:
            return "at_most"
        if self.high == INF:
            return "at_least"
        return "between"


@dataclass
class Tunable:
    """A catalog's personas (catalog order), their conditions and minimum scores."""

    ids: list[str]
    labels: list[str]
    conditions: list[list[Cond]]
    min_scores: list[float]


def read_tunable(path: Path) -> Tunable:
    catalog = load_catalog(path)
    conditions = []
    for persona in catalog.personas:
        conds = []
        for c in persona.rules.conditions:
            low, high = c.bounds
            conds.append(Cond(tuple(c.ratio) if c.ratio else (c.feature,), low, high, c.soft, c.weight, c.scale))
        conditions.append(conds)
        if persona.rules.required or persona.rules.exclusions:
            raise SystemExit(f"{persona.id}: required tests and exclusions are not tuned by this script")
    return Tunable([p.id for p in catalog.personas], [p.label for p in catalog.personas], conditions,
                   [p.min_score for p in catalog.personas])


# --- the orgs --------------------------------------------------------------------------------------------

@dataclass
class Org:
    """One generated, pulled org: its active users' features and true persona codes."""

    kind: str
    features: pd.DataFrame
    truth: np.ndarray  # persona code per row (catalog order); -1 when the truth is not a catalog persona
    pure: np.ndarray  # users who are not hybrids and not silent (for describing conditions)
    # Every active user (the integration user too), whose values set the org's scale, as in the product.
    active: pd.DataFrame | None = None
    cache: dict = field(default_factory=dict)

    def values(self, subject: tuple[str, ...], scale: str = "absolute") -> np.ndarray:
        """A subject's values, in the subject's units or (scale "org") in multiples of its typical value."""
        if (subject, scale) not in self.cache:
            values = values_of(subject, self.features)
            if scale == "org":
                typical = self.typical(subject)
                values = values / typical if typical > 0 else np.full(len(values), np.nan)
            self.cache[(subject, scale)] = values
        return self.cache[(subject, scale)]

    def typical(self, subject: tuple[str, ...]) -> float:
        """As the product's OrgContext: the median over the (active) users with a value above 0."""
        values = values_of(subject, self.active if self.active is not None else self.features)
        some = values[np.isfinite(values) & (values > 0)]
        return float(np.median(some)) if len(some) else float("nan")

    def judges(self, cond: "Cond") -> bool:
        """Whether the product keeps `cond` on this org: its features are measured, and it has a scale."""
        key = ("judges", cond.subject, cond.scale)
        if key not in self.cache:
            measured = not any(self.features[name].isna().all() for name in cond.subject)
            self.cache[key] = measured and (cond.scale != "org" or self.typical(cond.subject) > 0)
        return self.cache[key]


def load_org(root: Path, kind: str, seed: int, labels: list[str], window_days: int) -> Org:
    """An org of the default world (`kind`: medium or hard), or (kind "world") the org of world `seed`."""
    if kind == "world":
        world = World.draw(seed)
        home = world_home(root, "medium", world, 1.0)
        staging = stage_org(home, "medium", seed, 0.0, 1.0, world)
    else:
        hybrid_share, noise = KINDS[kind]
        home = org_home(root, "medium", seed, hybrid_share, noise)
        staging = stage_org(home, "medium", seed, hybrid_share, noise)
    features = compute_features_partitioned(staging, Window(as_of=AS_OF, days=window_days), 1)
    details = pd.read_csv(home / "sandbox" / "truth" / "truth_details.csv").set_index("Id")
    active = features[features["IsActive"].astype(bool)]
    features = active[active.index.isin(details.index)]
    details = details.loc[features.index]
    code = {label: i for i, label in enumerate(labels)}
    truth = details["persona"].map(code).fillna(-1).astype(int).to_numpy()
    pure = (details["secondary_persona"].isna() & (details["activity_level"] == "normal")).to_numpy()
    return Org(kind, features, truth, pure, active)


# --- scoring ---------------------------------------------------------------------------------------------

def credit(values: np.ndarray, cond: Cond) -> np.ndarray:
    return credit_of(values, cond.low, cond.high, cond.soft)


def persona_scores(org: Org, conds: list[Cond], idle: bool = False) -> np.ndarray:
    """As the product scores (personas.rules.persona_score): conditions the org cannot judge are dropped
    and their weight goes to the kept conditions of the same kind (at_most: what the persona does little
    of; the others: what it does). `idle`: the score of a user with no activity instead (every feature
    0, every ratio undefined)."""
    rows = 1 if idle else len(org.features)
    has_does = any(c.kind != "at_most" for c in conds)
    if (has_does and not any(org.judges(c) for c in conds if c.kind != "at_most")) or \
            not any(org.judges(c) for c in conds):
        return np.zeros(rows)
    score, share = np.zeros(rows), 0.0
    for avoids in (False, True):
        group = [c for c in conds if (c.kind == "at_most") == avoids]
        kept = [c for c in group if org.judges(c)]
        if not kept:
            continue
        weights = sum(c.weight for c in kept)
        total = sum(c.weight * credit(np.array([0.0 if len(c.subject) == 1 else np.nan]) if idle
                                      else org.values(c.subject, c.scale), c) for c in kept)
        score = score + sum(c.weight for c in group) * total / weights
        share += sum(c.weight for c in group)
    return np.round(score / share, 6)


def idle_score(conds: list[Cond], orgs: list["Org"] | None = None) -> float:
    """The highest score a user with no activity and no reports reaches on any of `orgs` (on an org that
    has everything when none are given)."""
    if not orgs:
        weights = np.array([c.weight for c in conds])
        credits = [credit(np.array([0.0 if len(c.subject) == 1 else np.nan]), c)[0] for c in conds]
        return round(float(weights @ np.array(credits) / weights.sum()), 6)
    return max(float(persona_scores(org, conds, idle=True)[0]) for org in orgs)


def keeps_idle_unassigned(conds: list[Cond], min_score: float, orgs: list["Org"] | None = None) -> bool:
    """The catalog's promise: someone who did nothing reaches no persona's min_score."""
    return idle_score(conds, orgs) + IDLE_MARGIN <= min_score


class Scorer:
    """Keeps every org's score matrix, so a change to one persona rescores only that persona's column."""

    def __init__(self, orgs: list[Org], tunable: Tunable, worst_weight: float = 0.0) -> None:
        self.orgs = orgs
        self.tunable = tunable
        self.worst_weight = worst_weight
        self.matrices = [np.column_stack([persona_scores(org, conds) for conds in tunable.conditions])
                         for org in orgs]

    def f1s(self, persona: int | None = None, conds: list[Cond] | None = None,
            min_scores: list[float] | None = None) -> list[float]:
        minimum = np.array(min_scores or self.tunable.min_scores)
        results = []
        for org, matrix in zip(self.orgs, self.matrices):
            if persona is not None and conds is not None:
                matrix = matrix.copy()
                matrix[:, persona] = persona_scores(org, conds)
            best = np.argmax(matrix, axis=1)  # the first of equal scores: catalog order
            clears = matrix[np.arange(len(best)), best] >= minimum[best]
            results.append(macro_f1_of_codes(org.truth, np.where(clears, best, -1), matrix.shape[1]))
        return results

    def objective(self, **change) -> float:
        """The mean macro-F1 over the tuning orgs, plus `worst_weight` x the worst org's."""
        f1s = self.f1s(**change)
        return float(np.mean(f1s) + self.worst_weight * min(f1s))

    def accept(self, persona: int, conds: list[Cond]) -> None:
        self.tunable.conditions[persona] = conds
        for org, matrix in zip(self.orgs, self.matrices):
            matrix[:, persona] = persona_scores(org, conds)


# --- the search ------------------------------------------------------------------------------------------

def _nice(value: float) -> float:
    """Two significant digits, so the catalog stays readable."""
    return 0.0 if value == 0 else float(f"{value:.2g}")


def variants(cond: Cond) -> list[Cond | None]:
    """Nearby conditions to try (None = drop the condition)."""
    out: list[Cond | None] = []
    soft = cond.soft or 0.0
    step = max(soft, 1e-3)
    for factor in (0.6, 0.8, 0.9, 1.1, 1.25, 1.6):
        if cond.kind == "at_least":
            out.append(replace(cond, low=_nice(cond.low * factor) if cond.low else _nice(step * (factor - 0.5))))
        elif cond.kind == "at_most":
            out.append(replace(cond, high=_nice(cond.high * factor) if cond.high else _nice(step * (factor - 0.5))))
        else:
            middle = (cond.low + cond.high) / 2
            out.append(replace(cond, low=_nice(max(0.0, middle - (middle - cond.low) * factor)),
                               high=_nice(middle + (cond.high - middle) * factor)))
    for factor in (0.5, 0.7, 0.85, 1.2, 1.4, 2.0):
        out.append(replace(cond, soft=_nice(step * factor)))
    for delta in (-1.0, -0.5, -0.25, 0.25, 0.5, 1.0):
        if cond.weight + delta >= 0.5:
            out.append(replace(cond, weight=cond.weight + delta))
    out.append(None)
    return out


def flipped(cond: Cond, orgs: list[Org]) -> Cond | None:
    """The same test on the other scale: absolute numbers over the orgs' typical value (the median across
    the tuning orgs), or back. None when the orgs give no typical value."""
    typical = float(np.nanmedian([org.typical(cond.subject) for org in orgs]))
    if not typical > 0:
        return None
    factor, scale = (1 / typical, "org") if cond.scale == "absolute" else (typical, "absolute")
    return replace(cond, low=_nice(cond.low * factor) if math.isfinite(cond.low) else cond.low,
                   high=_nice(cond.high * factor) if math.isfinite(cond.high) else cond.high,
                   soft=_nice(cond.soft * factor) if cond.soft else cond.soft, scale=scale)


def coordinate_pass(scorer: Scorer, min_gain: float, flip: bool = False) -> float:
    tunable = scorer.tunable
    current = scorer.objective()
    for persona in range(len(tunable.ids)):
        position = 0
        while position < len(tunable.conditions[persona]):
            conds = tunable.conditions[persona]
            best, best_conds = current, None
            options = variants(conds[position])
            other_scale = flipped(conds[position], scorer.orgs) if flip else None
            if other_scale is not None:
                options.append(other_scale)
            for variant in options:
                if variant is None and len(conds) == 1:
                    continue
                trial = conds[:position] + ([variant] if variant else []) + conds[position + 1:]
                if not keeps_idle_unassigned(trial, tunable.min_scores[persona], scorer.orgs):
                    continue
                value = scorer.objective(persona=persona, conds=trial)
                if value > best + min_gain:
                    best, best_conds = value, trial
            if best_conds is not None:
                scorer.accept(persona, best_conds)
                current = best
                if len(best_conds) < len(conds):
                    continue  # the next condition moved into this position
            position += 1
        for delta in (-0.05, -0.025, 0.025, 0.05):
            trial_min = list(tunable.min_scores)
            trial_min[persona] = round(min(0.95, max(0.05, trial_min[persona] + delta)), 3)
            if not keeps_idle_unassigned(tunable.conditions[persona], trial_min[persona], scorer.orgs):
                continue
            value = scorer.objective(min_scores=trial_min)
            if value > current + min_gain:
                tunable.min_scores[:] = trial_min
                current = value
    return current


def candidate_conditions(orgs: list[Org], persona: int, subject: tuple[str, ...]) -> list[Cond]:
    """A new at_least and at_most condition on `subject` (a feature or a ratio) for `persona`, placed
    between its typical value (pure members) and everyone else's."""
    mine = np.concatenate([org.values(subject)[(org.truth == persona) & org.pure] for org in orgs])
    others = np.concatenate([org.values(subject)[(org.truth != persona) & org.pure] for org in orgs])
    mine, others = mine[~np.isnan(mine)], others[~np.isnan(others)]
    if len(mine) < 10:
        return []
    out = []
    low, high = np.quantile(mine, 0.25), np.quantile(mine, 0.75)
    if np.median(others) < low:
        out.append(Cond(subject, _nice(low), INF, _nice(max(low - np.median(others), 1e-3)), 1.0))
    if np.median(others) > high:
        out.append(Cond(subject, -INF, _nice(high), _nice(max(np.median(others) - high, 1e-3)), 1.0))
    return out


def addition_pass(scorer: Scorer, min_gain: float, features: list[str], per_persona: int) -> float:
    tunable = scorer.tunable
    current = scorer.objective()
    for persona in range(len(tunable.ids)):
        subjects = [(name,) for name in features]
        for _ in range(per_persona):
            used = {c.subject for c in tunable.conditions[persona]}
            best, best_conds = current, None
            for subject in subjects:
                if subject in used:
                    continue
                for cond in candidate_conditions(scorer.orgs, persona, subject):
                    for weight in (1.0, 2.0):
                        trial = tunable.conditions[persona] + [replace(cond, weight=weight)]
                        if not keeps_idle_unassigned(trial, tunable.min_scores[persona], scorer.orgs):
                            continue
                        value = scorer.objective(persona=persona, conds=trial)
                        if value > best + min_gain:
                            best, best_conds = value, trial
            if best_conds is None:
                break
            added = best_conds[-1]
            print(f"  + {tunable.labels[persona]}: {' / '.join(added.subject)} {added.kind} "
                  f"{added.low if added.kind == 'at_least' else added.high:g} (+{best - current:.4f})", flush=True)
            scorer.accept(persona, best_conds)
            current = best
    return current


# --- writing the catalog back ----------------------------------------------------------------------------

def _number(value: float) -> str:
    return f"{value:g}"


def condition_line(cond: Cond, comment: str) -> str:
    subject = f"feature: {cond.subject[0]}" if len(cond.subject) == 1 else \
        f"ratio: [{cond.subject[0]}, {cond.subject[1]}]"
    if cond.kind == "at_least":
        test = f"at_least: {_number(cond.low)}"
    elif cond.kind == "at_most":
        test = f"at_most: {_number(cond.high)}"
    else:
        test = f"between: [{_number(cond.low)}, {_number(cond.high)}]"
    parts = [subject, test]
    if cond.scale != "absolute":
        parts.insert(1, f"scale: {cond.scale}")
    if cond.soft is not None:
        parts.append(f"soft: {_number(cond.soft)}")
    if cond.weight != 1:
        parts.append(f"weight: {_number(cond.weight)}")
    return f"        - {{{', '.join(parts)}}}  # {comment}"


def describe(orgs: list[Org], labels: list[str], persona: int, cond: Cond) -> str:
    """Which personas the condition tells this one apart from: those whose typical (pure) members mostly
    earn less than half its credit while this persona's typical members earn more."""
    failing = []
    for other in range(len(labels)):
        if other == persona:
            continue
        credits = np.concatenate([credit(org.values(cond.subject, cond.scale), cond)[(org.truth == other) & org.pure]
                                  for org in orgs])
        share = float((credits < 0.5).mean()) if len(credits) else 0.0
        failing.append((share, labels[other]))
    failing.sort(reverse=True)
    strong = [label for share, label in failing if share >= 0.5]
    if len(strong) >= 6:
        return "sets them apart from most personas"
    if strong:
        return "tells them from " + ", ".join(strong[:3])
    weak = [label for share, label in failing[:2] if share > 0.05]
    if weak:
        return f"a weaker cue against {', '.join(weak)} (helps with mixed behaviour)"
    return "a weak cue on its own (helps with mixed behaviour)"


def write_catalog(path: Path, tunable: Tunable, orgs: list[Org]) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[str] = []
    persona = -1
    skipping = False
    for line in lines:
        match = re.match(r"  - id: (\S+)", line)
        if match:
            persona = tunable.ids.index(match.group(1))
            skipping = False
        if skipping:
            if line.startswith("        ") or line.strip().startswith("- {") or line.strip().startswith("#"):
                continue
            skipping = False
        if persona >= 0 and re.match(r"    min_score: ", line):
            out.append(f"    min_score: {_number(tunable.min_scores[persona])}")
            continue
        if persona >= 0 and line.strip() == "conditions:":
            out.append(line)
            out.extend(condition_lines(tunable, orgs, persona))
            skipping = True
            continue
        out.append(line)
    written = path.with_name(f".{path.name}.tuned")
    written.write_text("\n".join(out) + "\n", encoding="utf-8")
    load_catalog(written)  # a valid catalog, or the original stays as it was
    written.replace(path)


def condition_lines(tunable: Tunable, orgs: list[Org], persona: int) -> list[str]:
    conds = tunable.conditions[persona]
    does = sorted((c for c in conds if c.kind != "at_most" and not (c.kind == "between" and c.low == 0)),
                  key=lambda c: -c.weight)
    avoids = sorted((c for c in conds if c not in does), key=lambda c: -c.weight)
    out = []
    for title, group in (("what they do", does), ("what they do little or none of", avoids)):
        if group:
            out.append(f"        # {title}")
            out.extend(condition_line(c, describe(orgs, tunable.labels, persona, c)) for c in group)
    return out


# --- main ------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", type=Path, default=default_catalog_path())
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 11)))
    parser.add_argument("--validate", type=int, nargs="*", default=[11, 12, 13, 14, 15])
    parser.add_argument("--worlds", type=int, nargs="*", default=[],
                        help="also tune on the orgs of these world seeds (sandbox/generate/worlds.py; 1-20 are "
                             "the tuning worlds, 1001-1010 are held out and must never be given here)")
    parser.add_argument("--validate-worlds", type=int, nargs="*", default=[])
    parser.add_argument("--flip-scale", action="store_true",
                        help="also try each condition on the other scale (absolute numbers, or scale: org)")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--worst-weight", type=float, default=0.0, metavar="W",
                        help="objective: the mean macro-F1 plus W x the worst tuning org's (for a worst-case target)")
    parser.add_argument("--add", action="store_true", help="also try new conditions on every feature")
    parser.add_argument("--add-per-persona", type=int, default=2)
    parser.add_argument("--min-gain", type=float, default=0.0002)
    parser.add_argument("--window-days", type=int, default=90)
    parser.add_argument("--root", type=Path, default=Path(".persona-sync/eval"))
    parser.add_argument("--write", action="store_true", help="rewrite the catalog's conditions and min_score")
    args = parser.parse_args()
    if args.worst_weight < 0:
        parser.error("--worst-weight must be 0 or more")

    tunable = read_tunable(args.catalog)
    for persona, conds in enumerate(tunable.conditions):
        if not keeps_idle_unassigned(conds, tunable.min_scores[persona]):
            lifted = round(math.ceil((idle_score(conds) + IDLE_MARGIN) * 40) / 40, 3)
            print(f"{tunable.labels[persona]}: min_score {tunable.min_scores[persona]} -> {lifted}, above the "
                  f"score of a user with no activity ({idle_score(conds)})")
            tunable.min_scores[persona] = lifted
    if (set(args.worlds) | set(args.validate_worlds)) & set(range(1001, 1011)):
        raise SystemExit("world seeds 1001-1010 are held out for reporting: never tune or validate on them")
    load = lambda seeds, worlds: [load_org(args.root, kind, seed, tunable.labels, args.window_days)  # noqa: E731
                                  for kind in KINDS for seed in seeds] + \
        [load_org(args.root, "world", seed, tunable.labels, args.window_days) for seed in worlds]
    orgs, held_out = load(args.seeds, args.worlds), load(args.validate, args.validate_worlds)
    scorer = Scorer(orgs, tunable, args.worst_weight)

    def by_kind(found: list[Org], f1s: list[float]) -> str:
        return " ".join(f"{kind} {np.mean([f1 for org, f1 in zip(found, f1s) if org.kind == kind]):.4f}"
                        f"{' min %.4f' % min(f1 for org, f1 in zip(found, f1s) if org.kind == kind) if kind == 'world' else ''}"
                        for kind in (*KINDS, "world") if any(org.kind == kind for org in found))

    def report(stage: str) -> None:
        line = f"{stage}: tuning {by_kind(orgs, scorer.f1s())}"
        if held_out:
            line += f" | validation {by_kind(held_out, Scorer(held_out, tunable).f1s())}"
        print(line, flush=True)

    report("start")
    feature_names = [f.name for f in FEATURES if f.unit in (SHARE, PEOPLE)]
    for number in range(1, args.passes + 1):
        began = time.perf_counter()
        if args.add:
            addition_pass(scorer, max(args.min_gain, 0.0005), feature_names, args.add_per_persona)
        coordinate_pass(scorer, args.min_gain, flip=args.flip_scale)
        report(f"pass {number} ({time.perf_counter() - began:.0f} s)")
    if args.write:
        write_catalog(args.catalog, tunable, orgs)
        print(f"wrote {args.catalog}")


if __name__ == "__main__":
    main()
