"""How well could anything tell the personas of a generated world apart? A ceiling for the catalog's numbers.

Run: .venv/bin/python bench/ceiling.py --worlds 1001 1002 ... 1010 [--users 20000] [--window-days 90] [--noise 1.0]
     (about a minute per world with 20,000 users; seconds with --users 2000)

`bench/evaluate_orgs.py --reference` trains a classifier on the product's own features, so it cannot say
whether a target is out of reach because of the features (which we can improve) or because of the data (which
we cannot). This script answers the second question. For each world it plans the generator's users exactly as
`generate_org` does (same persona, hybrid mix, silence, noise, rates, managers) and measures their behaviour
*perfectly* over the feature window, with no pull, no logging convention and no export in between:

- **measured over the window**: every one of the generator's 24 activity kinds counted exactly (a Poisson draw
  around the user's own rate over the days the user was active in the window, as the generator draws them),
  as a rate per 30 days and as a share of the user's activity; the generator's own proportions (leads
  converted, deals won, upsell deals, cases escalated, customer meetings, kinds of setup change) counted from
  those same records; the number of active direct reports and of those who manage others;
- **noiseless**: each user's true rates and proportions themselves, as if the window were endless.

A random forest (the same classifier and folds as `evaluate_orgs.py --reference`) is trained on the world's
true personas and five-fold cross-validated over its active users. With many users to learn from (the
default, 20,000: the large preset) it comes close to the best any method can do with that behaviour, so
"measured over the window" estimates how far the window's activity lets anyone tell the personas apart: a
catalog of rules without labels should not be expected above it. It is an estimate, not a proof: a better
classifier, or more users, may reach a little higher; with as few users as a medium org (`--users 2000`) the
forest learns less than a tuned catalog knows, and falls below it. "noiseless" shows what is lost to the
window: the same classifier on the users' true rates. Titles, departments, profiles and roles are left out,
as the product leaves them out (behaviour only). Nothing is generated or pulled.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from evaluate_orgs import AS_OF, cross_validated_reference  # noqa: E402
from personas.evaluation import evaluate  # noqa: E402
from sandbox.generate import profiles as P  # noqa: E402
from sandbox.generate.people import Population, plan_population  # noqa: E402
from sandbox.generate.randomness import RandomStreams  # noqa: E402
from sandbox.generate.timing import DAY_MS, Window  # noqa: E402
from sandbox.generate.worlds import World  # noqa: E402
from sandbox.store import OrgStore  # noqa: E402

# The generator's proportions and the activity each is counted over (how `customers` and `service` use them).
PROPORTION_BASES: dict[str, str] = {"lead_conversion": "leads", "win_share": "opportunities",
                                    "upsell_share": "opportunities", "escalated_share": "cases"}
KINDS = ("one persona", "mixing two", "quiet")


def plan_users(world: World, users: int, noise: float, as_of: datetime = AS_OF) -> Population:
    """The world's users as `generate_org` plans them for this many users (same seed, same draws), without
    generating their records: the ids come from a throwaway store."""
    with tempfile.TemporaryDirectory() as folder:
        store = OrgStore.create(Path(folder) / "org.db", {})
        return plan_population(store, RandomStreams(world.seed if world.seed is not None else 0), users,
                               Window.ending_at(as_of), world.hybrid_share, noise, world)


def days_in_window(people: Population, window_days: int, as_of: datetime = AS_OF) -> np.ndarray:
    """Days each user was active within the feature window [as_of - window_days, as_of)."""
    end_ms = int(as_of.timestamp() * 1000)
    start = np.maximum(people.start_ms, end_ms - window_days * DAY_MS)
    return np.clip(np.minimum(people.end_ms, end_ms) - start, 0, None) / DAY_MS


def measured_behaviour(people: Population, window_days: int, rng: np.random.Generator,
                       as_of: datetime = AS_OF) -> pd.DataFrame:
    """Every user's behaviour counted perfectly over the window: rates per 30 days and shares of activity for
    each activity kind, the generator's proportions counted over their records, and direct reports."""
    expected = people.rates * days_in_window(people, window_days, as_of)[:, None] / 30.0
    counts = rng.poisson(expected)
    columns: dict[str, np.ndarray] = {}
    total = counts.sum(axis=1)
    for k, name in enumerate(P.RATE_NAMES):
        columns[name] = counts[:, k] * 30.0 / window_days
        columns[f"{name}_share"] = np.divide(counts[:, k], total, out=np.zeros(len(total)), where=total > 0)
    for name, base in PROPORTION_BASES.items():
        columns[name] = _proportion(rng, counts[:, P.rate_column(base)], people.share(name))
    columns["customer_meeting_share"] = _proportion(rng, counts[:, P.rate_column("meetings")],
                                                    customer_meeting_shares(people))
    setup = counts[:, P.rate_column("setup_changes")]
    for group, share in enumerate(setup_action_shares(people).T):
        columns[f"setup_group_{group}"] = _proportion(rng, setup, share)
    columns.update(reporting_lines(people))
    return pd.DataFrame(columns, index=pd.Index(people.ids, name="Id"))


def noiseless_behaviour(people: Population) -> pd.DataFrame:
    """Every user's true rates and proportions, as if the window were endless; and direct reports."""
    columns: dict[str, np.ndarray] = {name: np.log(people.rates[:, k] + 1e-3) for k, name in enumerate(P.RATE_NAMES)}
    columns.update({name: people.share(name) for name in P.SHARE_NAMES})
    columns["customer_meeting_share"] = customer_meeting_shares(people)
    columns.update({f"setup_group_{g}": share for g, share in enumerate(setup_action_shares(people).T)})
    columns.update(reporting_lines(people))
    return pd.DataFrame(columns, index=pd.Index(people.ids, name="Id"))


def customer_meeting_shares(people: Population) -> np.ndarray:
    """Each user's share of meetings held with customers (mixed for hybrids), as `activities` draws them."""
    by_persona = np.array([P.CUSTOMER_MEETING_SHARE.get(label, 0.0) for label in P.PERSONA_LABELS])
    second = np.where(people.secondary >= 0, people.secondary, people.persona)
    return people.mix * by_persona[people.persona] + (1 - people.mix) * by_persona[second]


def setup_action_shares(people: Population) -> np.ndarray:
    """Each user's shares of the kinds of setup change (by primary persona, as `administration` draws them)."""
    mix = np.array([P.SETUP_ACTION_MIX.get(label, P.DEFAULT_SETUP_ACTION_MIX) for label in P.PERSONA_LABELS])
    return mix[people.persona]


def reporting_lines(people: Population) -> dict[str, np.ndarray]:
    """Active direct reports, and how many of them have active reports of their own."""
    managed = (people.manager >= 0) & people.active
    reports = np.bincount(people.manager[managed], minlength=people.size)
    leads = managed & (reports > 0)
    return {"direct_reports": reports.astype(float),
            "reports_who_manage": np.bincount(people.manager[leads], minlength=people.size).astype(float)}


def _proportion(rng: np.random.Generator, trials: np.ndarray, share: np.ndarray) -> np.ndarray:
    """The share of `trials` records that turned out so (a binomial draw), NaN for a user with none."""
    hits = rng.binomial(trials, np.clip(share, 0.0, 1.0))
    return np.divide(hits, trials, out=np.full(len(trials), np.nan), where=trials > 0)


@dataclass(frozen=True)
class Ceiling:
    """One world's ceiling: macro-F1 from perfectly measured behaviour over the window, and noiseless."""

    world: str
    users: int
    hybrid_share: float
    measured: float
    noiseless: float
    measured_by_kind: dict[str, float]


def kind_of_user(people: Population) -> np.ndarray:
    """One persona, mixing two or quiet, as `evaluate_orgs.kinds_of_user` reads them from the truth details."""
    return np.where(people.silent, "quiet", np.where(people.secondary >= 0, "mixing two", "one persona"))


def measure_ceiling(world: World, users: int, window_days: int, noise: float = 1.0) -> Ceiling:
    """The cross-validated classifier's macro-F1 on the world's active users, from both kinds of behaviour."""
    people = plan_users(world, users, noise)
    labels = np.array(P.PERSONA_LABELS, dtype=object)[people.persona]
    truth = pd.DataFrame({"Id": people.ids, "persona": labels})
    personas = truth.set_index("Id")["persona"]
    judged = pd.Index(people.ids[people.active])
    rng = np.random.default_rng([world.seed or 0, window_days, users])
    scores, kinds = {}, pd.Series(kind_of_user(people), index=people.ids)
    for name, behaviour in (("measured", measured_behaviour(people, window_days, rng)),
                            ("noiseless", noiseless_behaviour(people))):
        predicted = cross_validated_reference(behaviour, personas, judged)
        scores[name] = evaluate(predicted, truth, only=judged, labels=list(P.PERSONA_LABELS)).macro_f1
        if name == "measured":
            right = predicted["persona"] == personas.loc[predicted.index]
            by_kind = {kind: float(right[kinds.loc[right.index] == kind].mean()) for kind in KINDS
                       if (kinds.loc[right.index] == kind).any()}
    return Ceiling(world.name, len(judged), float((people.secondary[people.active] >= 0).mean()),
                   scores["measured"], scores["noiseless"], by_kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", type=int, nargs="+", required=True, metavar="SEED",
                        help="world seeds (sandbox/generate/worlds.py); looking at held-out worlds is fine here: "
                             "nothing is tuned")
    parser.add_argument("--users", type=int, default=20000,
                        help="users planned per world (20000: the large preset; 2000: the medium orgs "
                             "`evaluate_orgs.py` judges)")
    parser.add_argument("--window-days", type=int, default=90)
    parser.add_argument("--noise", type=float, default=1.0)
    args = parser.parse_args()
    if args.users < 100 or args.window_days < 1:
        parser.error("--users must be at least 100 and --window-days at least 1")
    ceilings = []
    for seed in args.worlds:
        ceiling = measure_ceiling(World.draw(seed), args.users, args.window_days, args.noise)
        ceilings.append(ceiling)
        kinds = ", ".join(f"{kind} {accuracy:.3f}" for kind, accuracy in ceiling.measured_by_kind.items())
        print(f"world {ceiling.world}: measured over {args.window_days} d: macro-F1 {ceiling.measured:.3f}"
              f"  noiseless: {ceiling.noiseless:.3f}  ({ceiling.users} active users, hybrids "
              f"{ceiling.hybrid_share:.0%}; accuracy: {kinds})", flush=True)
    measured = [c.measured for c in ceilings]
    noiseless = [c.noiseless for c in ceilings]
    print(f"\n{args.users} users per world, noise {args.noise:g}, window {args.window_days} d, "
          f"{len(ceilings)} world(s)")
    print(f"measured over the window: median {statistics.median(measured):.3f}, worst {min(measured):.3f}")
    print(f"noiseless: median {statistics.median(noiseless):.3f}, worst {min(noiseless):.3f}")


if __name__ == "__main__":
    main()
