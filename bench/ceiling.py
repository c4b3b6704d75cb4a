"""How well could a method tell the personas of a generated world apart from its behaviour? An estimate of the
ceiling above the catalog's numbers, from below.

Run: .venv/bin/python bench/ceiling.py --worlds 1001 1002 ... 1010 [--partial] [--users 20000] [--window-days 90]
     [--noise 1.0]   (about a minute per world with 20,000 users; seconds with --users 2000)

`bench/evaluate_orgs.py --reference` trains a classifier on the product's own features, so it cannot say
whether a target is out of reach because of the features (which we can improve) or because of the data (which
we cannot). This script looks at the second. For each world it plans the generator's users exactly as
`generate_org` does (same persona, hybrid mix, silence, noise, rates, managers: the tests compare them with a
generated org) and measures their behaviour *perfectly* over the feature window, with no pull in between (what
an org does not hold is left out, below):

- **measured over the window**, drawn as the generator draws the records: every one of its 24 activity kinds
  counted (a Poisson draw around the user's own rate over the days the user was active in the window), as a
  rate per 30 days and as a share of the user's records; the proportions the generator gives each user,
  counted over the records they apply to (deals closed and won, leads owned after routing and converted,
  upsell deals, escalated cases, customer meetings, Tasks about nothing or about a case and inbound calls by
  the user's primary cloud, kinds of setup change with the user-lifecycle rows admins log); the active
  direct reports and how many of them manage others;
- **noiseless**: each user's true rates and proportions (and primary cloud), as if the window were endless.

A partial-export world (drawn so, or every world with `--partial`, as `evaluate_orgs.py --partial`) loses what its
export left out, in both: the activity kinds of its absent objects (`WITHHELD_BY_OBJECT`: not counted, not in
anyone's total) and the proportions read from its absent fields (`WITHHELD_BY_FIELD`); a field with a fallback
the generator fills alike (ListEmail and EmailTemplate CreatedById for OwnerId) loses nothing. A world that
logs no CallType loses the call direction too. Other logging conventions are not applied: WhatId and WhoId are
read as if always filled, and a partial export's 'ListEmail' Tasks (which stay when ListEmail goes) are not
counted, as the product does not count them. So the estimate knows a little more than the org in the first
case and a little less in the second.

A random forest (the same classifier and folds as `evaluate_orgs.py --reference`) is trained on the world's
true personas and five-fold cross-validated over its active users; with 20,000 users (the default: the large
preset) each fold learns from about 15,000. Its macro-F1 is what one good method reaches with perfect
measurement and that many labels: the best possible is at least this (more labels or a better model add a
little), so it estimates the ceiling from below. With as few users as a medium org (`--users 2000`, about
1,500 labels per fold) the forest learns less than a tuned catalog knows and can fall below it. "noiseless"
shows what the window's limited activity costs. Titles, departments, profiles and roles are left out, as the
product leaves them out (behaviour only). Nothing is generated or pulled.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from evaluate_orgs import AS_OF, cross_validated_reference  # noqa: E402
from personas.evaluation import evaluate  # noqa: E402
from sandbox.generate import GenerationOptions  # noqa: E402
from sandbox.generate import profiles as P  # noqa: E402
from sandbox.generate.activities import INBOUND_CALL_SHARE_BY_CLOUD, INTERNAL_TASK_SHARE_BY_CLOUD  # noqa: E402
from sandbox.generate.administration import choose_user_creators  # noqa: E402
from sandbox.generate.customers import DEAL_DAYS_MEDIAN, DEAL_DAYS_SIGMA, ROUTED_LEAD_SHARE  # noqa: E402
from sandbox.generate.people import Population, plan_population  # noqa: E402
from sandbox.generate.randomness import RandomStreams  # noqa: E402
from sandbox.generate.timing import DAY_MS, Window  # noqa: E402
from sandbox.generate.worlds import World  # noqa: E402
from sandbox.store import OrgStore  # noqa: E402

# The generator's proportions counted over the user's own records of one activity kind (`customers`, `service`).
PROPORTION_BASES: dict[str, str] = {"upsell_share": "opportunities", "escalated_share": "cases"}
KINDS = ("one persona", "mixing two", "quiet")

# What a partial export's absent objects and fields take away (sandbox/generate/worlds.py OPTIONAL_OBJECTS and
# OPTIONAL_FIELDS): the generator's activity kind each object holds, and the behaviour columns each field
# carries. The owner fields fall back to CreatedById, which the generator fills with the owner; the call
# duration, the stage-change date (won deals fall back to CloseDate) and FederationIdentifier carry nothing
# measured here.
WITHHELD_BY_OBJECT: dict[str, str] = {"KnowledgeArticleVersion": "articles", "ListEmail": "list_emails",
                                      "Quote": "quotes", "Contract": "contracts",
                                      "CaseHistory": "case_reassignments", "FeedItem": "chatter_posts"}
WITHHELD_BY_FIELD: dict[str, tuple[str, ...]] = {
    "ListEmail.OwnerId": (), "EmailTemplate.OwnerId": (), "Task.CallType": ("inbound_call_share",),
    "Task.CallDurationInSeconds": (), "Opportunity.LastStageChangeDate": (), "User.FederationIdentifier": ()}
_SERVICE = 1  # Population.cloud code of the Service cloud
_LIFECYCLE_MINUTES_BEFORE_END = 5  # a deactivation is logged five minutes before the user's last moment


def plan_users(world: World, users: int, noise: float, as_of: datetime = AS_OF, *, seed: int | None = None,
               hybrid_share: float = GenerationOptions.hybrid_share) -> Population:
    """The world's users as `generate_org` plans them for this many users, without generating their records
    (the ids come from a throwaway store). The org seed is the world's (as `evaluate_orgs.py` generates its
    orgs) unless `seed` is given; `hybrid_share` applies only to the default world (a drawn one fixes its own)."""
    org_seed = seed if seed is not None else world.seed if world.seed is not None else 0
    with tempfile.TemporaryDirectory() as folder:
        store = OrgStore.create(Path(folder) / "org.db", {})
        share = GenerationOptions(hybrid_share=hybrid_share, noise=noise, world=world).effective_hybrid_share
        return plan_population(store, RandomStreams(org_seed), users, Window.ending_at(as_of), share, noise, world)


def days_in_window(people: Population, window_days: int, as_of: datetime = AS_OF) -> np.ndarray:
    """Days each user was active within the feature window [as_of - window_days, as_of)."""
    end_ms = int(as_of.timestamp() * 1000)
    start = np.maximum(people.start_ms, end_ms - window_days * DAY_MS)
    return np.clip(np.minimum(people.end_ms, end_ms) - start, 0, None) / DAY_MS


def withheld(world: World | None) -> tuple[frozenset[str], frozenset[str]]:
    """The activity kinds (`profiles.RATE_NAMES`) and the proportion columns this world's org does not hold:
    what its export left out, and the call direction where calls carry no CallType. None: nothing."""
    if world is None:
        return frozenset(), frozenset()
    kinds = frozenset(WITHHELD_BY_OBJECT[name] for name in world.absent_objects)
    absent_fields = set(world.absent_fields) | (set() if world.call_type_logged else {"Task.CallType"})
    columns = frozenset(column for name in absent_fields for column in WITHHELD_BY_FIELD[name])
    return kinds, columns


def measured_behaviour(people: Population, window_days: int, rng: np.random.Generator, as_of: datetime = AS_OF,
                       user_creators: np.ndarray | None = None, world: World | None = None) -> pd.DataFrame:
    """Every user's behaviour counted perfectly over the window, drawn as the generator draws it: each activity
    kind's rate per 30 days and its share of the user's records; the proportions the generator gives each user,
    counted over the records they apply to (deals closed and won, leads owned and converted, upsells,
    escalations, customer meetings, Tasks about nothing or about a case, inbound calls, kinds of setup change,
    with the user-lifecycle rows the admins who created or deactivated users log); and reporting lines.
    `user_creators`: who created each user (`administration.choose_user_creators`); None: nobody logs them.
    `world`: what its org does not hold is not measured (`withheld`); None: everything is measured."""
    absent_kinds, absent_columns = withheld(world)
    days = days_in_window(people, window_days, as_of)
    counts = rng.poisson(people.rates * days[:, None] / 30.0)
    count = {name: counts[:, k] for k, name in enumerate(P.RATE_NAMES)}
    columns: dict[str, np.ndarray] = {}
    total = counts[:, [k for k, name in enumerate(P.RATE_NAMES) if name not in absent_kinds]].sum(axis=1)
    for name in P.RATE_NAMES:
        if name in absent_kinds:
            continue
        columns[name] = count[name] * 30.0 / window_days
        columns[f"{name}_share"] = np.divide(count[name], total, out=np.zeros(len(total)), where=total > 0)
    for name, base in PROPORTION_BASES.items():
        columns[name] = _proportion(rng, count[base], people.share(name))
    columns["customer_meeting_share"] = _proportion(rng, count["meetings"], people.customer_meeting_shares())
    columns.update(_deals(people, count["opportunities"], days, rng))
    columns.update(_leads(people, count["leads"], window_days, rng))
    columns.update(_task_links(people, count, rng))
    columns.update(_setup(people, count["setup_changes"], window_days, rng, as_of, user_creators))
    columns.update(reporting_lines(people))
    return pd.DataFrame(columns, index=pd.Index(people.ids, name="Id")).drop(columns=list(absent_columns))


def _deals(people: Population, opened: np.ndarray, days: np.ndarray, rng: np.random.Generator) -> dict:
    """Deals opened in the window that closed before its end (after lognormal days), and the share won."""
    owner = np.repeat(np.arange(people.size), opened)
    age = rng.uniform(0.0, days[owner])
    closed = rng.lognormal(np.log(DEAL_DAYS_MEDIAN), DEAL_DAYS_SIGMA, len(owner)) < age
    won = closed & (rng.random(len(owner)) < people.share("win_share")[owner])
    closed_count = np.bincount(owner[closed], minlength=people.size)
    won_count = np.bincount(owner[won], minlength=people.size)
    return {"deals_closed": closed_count.astype(float),
            "win_share": np.divide(won_count, closed_count, out=np.full(people.size, np.nan), where=closed_count > 0)}


def _leads(people: Population, created: np.ndarray, window_days: int, rng: np.random.Generator) -> dict:
    """Leads owned (the creator's, less those routed to a seller, plus those routed to them) and the share
    converted at the owner's rate."""
    routed = rng.binomial(created, ROUTED_LEAD_SHARE)
    owned = created - routed
    sellers = people.of_personas("Pipeline Builder", "Deal Closer", active_only=True)
    if len(sellers):
        owned = owned + np.bincount(sellers[rng.integers(0, len(sellers), int(routed.sum()))], minlength=people.size)
    return {"leads_owned": owned * 30.0 / window_days,
            "lead_conversion": _proportion(rng, owned, people.share("lead_conversion"))}


def _task_links(people: Population, count: dict[str, np.ndarray], rng: np.random.Generator) -> dict:
    """Tasks about no record, Tasks about a case (service people's tasks point at their cases) and inbound
    calls, by the user's primary cloud as `activities` draws them."""
    tasks = count["calls"] + count["emails"] + count["todos"]
    internal = rng.binomial(tasks, np.array(INTERNAL_TASK_SHARE_BY_CLOUD)[people.cloud])
    on_cases = np.where(people.cloud == _SERVICE, tasks - internal, 0)
    inbound = rng.binomial(count["calls"], np.array(INBOUND_CALL_SHARE_BY_CLOUD)[people.cloud])
    return {"internal_task_share": _share(internal, tasks), "case_task_share": _share(on_cases, tasks),
            "inbound_call_share": _share(inbound, count["calls"])}


def _setup(people: Population, changes: np.ndarray, window_days: int, rng: np.random.Generator,
           as_of: datetime, user_creators: np.ndarray | None) -> dict:
    """Setup changes by kind (the primary persona's mix), plus the user-lifecycle rows (user administration)
    logged in the window by whoever created the users hired or deactivated in it."""
    groups = np.array([rng.multinomial(n, share) for n, share in zip(changes, people.setup_action_shares())])
    if user_creators is not None:
        end_ms = int(as_of.timestamp() * 1000)
        start_ms = end_ms - window_days * DAY_MS
        hired = people.new_hire & (people.created_ms >= start_ms) & (people.created_ms < end_ms)
        left_at = people.end_ms - _LIFECYCLE_MINUTES_BEFORE_END * 60_000
        left = ~people.active & (left_at >= start_ms) & (left_at < end_ms)
        groups[:, 0] += np.bincount(user_creators[hired | left], minlength=people.size)
    total = groups.sum(axis=1)
    columns = {"setup_rows": total * 30.0 / window_days}
    columns.update({f"setup_group_{g}": _share(groups[:, g], total) for g in range(groups.shape[1])})
    return columns


def noiseless_behaviour(people: Population, world: World | None = None) -> pd.DataFrame:
    """Every user's true rates and proportions, as if the window were endless, less what `world`'s export
    left out; and reporting lines."""
    absent_kinds, _ = withheld(world)
    columns: dict[str, np.ndarray] = {name: np.log(people.rates[:, k] + 1e-3) for k, name in enumerate(P.RATE_NAMES)
                                      if name not in absent_kinds}
    columns.update({name: people.share(name) for name in P.SHARE_NAMES})
    columns["customer_meeting_share"] = people.customer_meeting_shares()
    columns.update({f"setup_group_{g}": share for g, share in enumerate(people.setup_action_shares().T)})
    columns["cloud"] = people.cloud.astype(float)  # what the Task links (and call directions) reveal, endlessly
    columns.update(reporting_lines(people))
    return pd.DataFrame(columns, index=pd.Index(people.ids, name="Id"))


def reporting_lines(people: Population) -> dict[str, np.ndarray]:
    """Active direct reports, and how many of them have active reports of their own."""
    managed = (people.manager >= 0) & people.active
    reports = np.bincount(people.manager[managed], minlength=people.size)
    leads = managed & (reports > 0)
    return {"direct_reports": reports.astype(float),
            "reports_who_manage": np.bincount(people.manager[leads], minlength=people.size).astype(float)}


def _proportion(rng: np.random.Generator, trials: np.ndarray, share: np.ndarray) -> np.ndarray:
    """The share of `trials` records that turned out so (a binomial draw), NaN for a user with none."""
    return _share(rng.binomial(trials, np.clip(share, 0.0, 1.0)), trials)


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """part / whole, NaN where the whole is 0."""
    return np.divide(part, whole, out=np.full(len(whole), np.nan), where=whole > 0)


@dataclass(frozen=True)
class Ceiling:
    """One world's estimate: macro-F1 from its behaviour measured perfectly over the window, and noiseless."""

    world: str
    active_users: int
    hybrid_share: float  # of the active users
    measured: float
    noiseless: float
    measured_by_kind: dict[str, float]  # accuracy on "measured", by kind of user (KINDS)


def kind_of_user(people: Population) -> np.ndarray:
    """One persona, mixing two or quiet, as `evaluate_orgs.kinds_of_user` reads them from the truth details."""
    return np.where(people.silent, "quiet", np.where(people.secondary >= 0, "mixing two", "one persona"))


def measure_ceiling(world: World, users: int, window_days: int, noise: float = 1.0) -> Ceiling:
    """The cross-validated classifier's macro-F1 on the world's active users, from both kinds of behaviour."""
    people = plan_users(world, users, noise)
    creators = choose_user_creators(RandomStreams(world.seed if world.seed is not None else 0), people)
    truth = pd.DataFrame({"Id": people.ids, "persona": np.array(P.PERSONA_LABELS, dtype=object)[people.persona]})
    personas = truth.set_index("Id")["persona"]
    judged = pd.Index(people.ids[people.active])
    rng = np.random.default_rng([world.seed or 0, window_days, users])
    predictions = {name: cross_validated_reference(behaviour, personas, judged)
                   for name, behaviour in (("measured", measured_behaviour(people, window_days, rng,
                                                                           user_creators=creators, world=world)),
                                           ("noiseless", noiseless_behaviour(people, world)))}
    scores = {name: evaluate(predicted, truth, only=judged, labels=list(P.PERSONA_LABELS)).macro_f1
              for name, predicted in predictions.items()}
    right = predictions["measured"]["persona"] == personas.loc[predictions["measured"].index]
    kinds = pd.Series(kind_of_user(people), index=people.ids).loc[right.index]
    by_kind = {kind: float(right[kinds == kind].mean()) for kind in KINDS if (kinds == kind).any()}
    return Ceiling(world.name, len(judged), float((people.secondary[people.active] >= 0).mean()),
                   scores["measured"], scores["noiseless"], by_kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", type=int, nargs="+", required=True, metavar="SEED",
                        help="world seeds (sandbox/generate/worlds.py); looking at held-out worlds is fine here: "
                             "nothing is tuned")
    parser.add_argument("--partial", action="store_true",
                        help="every world's export is partial (as evaluate_orgs.py --partial): what it leaves out "
                             "is not measured")
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
        world = World.draw(seed, export="partial" if args.partial else None)
        ceiling = measure_ceiling(world, args.users, args.window_days, args.noise)
        ceilings.append(ceiling)
        kinds = ", ".join(f"{kind} {accuracy:.3f}" for kind, accuracy in ceiling.measured_by_kind.items())
        print(f"world {ceiling.world}: measured over {args.window_days} d: macro-F1 {ceiling.measured:.3f}"
              f"  noiseless: {ceiling.noiseless:.3f}  ({ceiling.active_users} active users, hybrids "
              f"{ceiling.hybrid_share:.0%}; accuracy: {kinds})", flush=True)
    measured = [c.measured for c in ceilings]
    noiseless = [c.noiseless for c in ceilings]
    print(f"\n{args.users} users per world, noise {args.noise:g}, window {args.window_days} d, "
          f"{len(ceilings)} world(s)" + (", partial exports" if args.partial else ""))
    print(f"measured over the window: median {statistics.median(measured):.3f}, worst {min(measured):.3f}")
    print(f"noiseless: median {statistics.median(noiseless):.3f}, worst {min(noiseless):.3f}")


if __name__ == "__main__":
    main()
