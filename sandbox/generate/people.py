"""The org's users: who they truly are (persona, hybrid mix, activity level, lifecycle) and how busy.

`plan_population` decides everything about the persona users before any record is written; every
other generator reads the `Population` (ids, active spans, per-user rates) to produce activity. The
User, Profile and UserRole rows themselves are written by `write_directory` at the end, once logins are
known (LastLoginDate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sandbox.generate import profiles as P
from sandbox.generate import vocabulary as V
from sandbox.generate.randomness import RandomStreams
from sandbox.generate.timing import DAY_MS, Window, working_times
from sandbox.generate.writing import issue_ids
from sandbox.store import OrgStore

if TYPE_CHECKING:
    from sandbox.generate.worlds import World

INTEGRATION_USERNAME = "integration@persona-sync.sandbox"
NEW_HIRE_SHARE = 0.08
INACTIVE_SHARE = 0.06
# How many users are silent is a habit of the world (World.silent_share); how silent they are is not.
SILENT_FACTOR = 0.1
# Per-user rate noise (lognormal sigma, before scaling by GenerationOptions.noise): one factor for how
# busy the person is overall, one per activity kind for personal habits.
USER_NOISE_SIGMA = 0.25
KIND_NOISE_SIGMA = 0.4
SHARE_NOISE_SIGMA = 0.06
HYBRID_MIX_RANGE = (0.55, 0.75)
HYBRID_SAME_CLOUD_SHARE = 0.6
IC_MANAGED_SHARE = 0.9
IC_WITH_REPORT_SHARE = 0.02


@dataclass
class Population:
    """The persona users (index 0..n-1) and everything generators need to act as them.

    Times are epoch ms. `start_ms`/`end_ms` bound each user's activity: from the window start (or
    shortly after hiring) to as_of (or deactivation). Rates are expected records per 30 active days.
    """

    ids: np.ndarray
    integration_user_id: str
    persona: np.ndarray
    secondary: np.ndarray
    mix: np.ndarray
    silent: np.ndarray
    active: np.ndarray
    new_hire: np.ndarray
    created_ms: np.ndarray
    start_ms: np.ndarray
    end_ms: np.ndarray
    zone: np.ndarray
    rates: np.ndarray
    shares: np.ndarray
    manager: np.ndarray
    first_names: np.ndarray
    last_names: np.ndarray
    usernames: np.ndarray

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def cloud(self) -> np.ndarray:
        """Each user's primary cloud as an index into (Sales, Service, Marketing)."""
        clouds = np.array([(P.SALES, P.SERVICE, P.MARKETING).index(p.cloud) for p in P.PERSONAS])
        return clouds[self.persona]

    @property
    def tz_hours(self) -> np.ndarray:
        return np.array([zone[1] for zone in V.USER_ZONES])[self.zone]

    def active_days(self) -> np.ndarray:
        return (self.end_ms - self.start_ms).clip(min=0) / DAY_MS

    def expected(self, rate: str) -> np.ndarray:
        """Expected count of `rate` records per user over their active span."""
        return self.rates[:, P.rate_column(rate)] * self.active_days() / 30.0

    def draw_counts(self, rng: np.random.Generator, rate: str) -> np.ndarray:
        """How many `rate` records each user produces (Poisson around the expectation)."""
        return rng.poisson(self.expected(rate))

    def acts(self, rng: np.random.Generator, rate: str, *, after_hours_share: float = 0.07
             ) -> tuple[np.ndarray, np.ndarray]:
        """One entry per `rate` record the users produce: who acted (user index) and when (epoch ms).

        Counts are drawn first, then working-hours times, always in that order, so a seed gives the
        same org whichever writer asks.
        """
        actor = np.repeat(np.arange(self.size), self.draw_counts(rng, rate))
        at = working_times(rng, self.start_ms[actor], self.end_ms[actor], self.tz_hours[actor],
                           after_hours_share=after_hours_share)
        return actor, at

    def share(self, name: str) -> np.ndarray:
        return self.shares[:, P.share_column(name)]

    def customer_meeting_shares(self) -> np.ndarray:
        """Each user's share of meetings held with customers (P.CUSTOMER_MEETING_SHARE; a hybrid's mixes both)."""
        by_persona = np.array([P.CUSTOMER_MEETING_SHARE.get(label, 0.0) for label in P.PERSONA_LABELS])
        second = np.where(self.secondary >= 0, self.secondary, self.persona)
        return self.mix * by_persona[self.persona] + (1 - self.mix) * by_persona[second]

    def setup_action_shares(self) -> np.ndarray:
        """Each user's shares of the kinds of setup change (P.SETUP_ACTION_MIX of the primary persona),
        one row per user in (user administration, customisation, automation) order."""
        mix = np.array([P.SETUP_ACTION_MIX.get(label, P.DEFAULT_SETUP_ACTION_MIX) for label in P.PERSONA_LABELS])
        return mix[self.persona]

    def full_names(self) -> np.ndarray:
        return np.strings.add(np.strings.add(self.first_names.astype(str), " "),
                              self.last_names.astype(str)).astype(object)

    def of_personas(self, *labels: str, active_only: bool = False) -> np.ndarray:
        """Indices of users whose true persona is one of `labels`."""
        mask = np.isin(self.persona, [P.persona_index(label) for label in labels])
        if active_only:
            mask &= self.active & ~self.new_hire
        return np.flatnonzero(mask)

    def others_or_manager(self, rng: np.random.Generator, actors: np.ndarray, share: float) -> np.ndarray:
        """The actor, or for `share` of rows someone else: their manager, else any user."""
        other = rng.random(len(actors)) < share
        manager = self.manager[actors]
        anyone = rng.integers(0, self.size, len(actors))
        return np.where(other, np.where(manager >= 0, manager, anyone), actors)


def plan_population(store: OrgStore, streams: RandomStreams, n_users: int, window: Window,
                    hybrid_share: float, noise: float, world: World) -> Population:
    """Decides who every persona user is and how they behave; allocates their ids (integration user first).

    The world gives the persona mix, the silent share and the factor on each rate; `hybrid_share` is
    the one the generation uses (the world's or the options').
    """
    rng = streams.stream("population")
    ids = issue_ids(store, "005", n_users + 1)
    persona = assign_personas(rng, n_users, np.array(world.persona_weights))
    secondary, mix = choose_hybrids(rng, persona, hybrid_share)
    silent = _exact_share(rng, n_users, world.silent_share)
    created, start, end, active, new_hire = plan_lifecycles(rng, n_users, window)
    rates, shares = personal_rates(rng, persona, secondary, mix, silent, noise)
    rates = rates * world.rate_scales()  # x1.0 in the default world: the same numbers exactly
    zone = rng.choice(len(V.USER_ZONES), size=n_users, p=np.array(V.USER_ZONE_WEIGHTS) / sum(V.USER_ZONE_WEIGHTS))
    first = np.array(V.FIRST_NAMES, dtype=object)[rng.integers(0, len(V.FIRST_NAMES), n_users)]
    last = np.array(V.LAST_NAMES, dtype=object)[rng.integers(0, len(V.LAST_NAMES), n_users)]
    return Population(
        ids=ids[1:], integration_user_id=str(ids[0]), persona=persona, secondary=secondary, mix=mix,
        silent=silent, active=active, new_hire=new_hire, created_ms=created, start_ms=start, end_ms=end,
        zone=zone, rates=rates, shares=shares, manager=assign_managers(rng, persona),
        first_names=first, last_names=last, usernames=_usernames(first, last),
    )


def assign_personas(rng: np.random.Generator, n_users: int, weights: np.ndarray) -> np.ndarray:
    """Each user's true persona: counts follow `weights` (PERSONAS order), with a floor so every persona exists."""
    counts = np.maximum(np.round(weights / weights.sum() * n_users).astype(int), P.MIN_USERS_PER_PERSONA)
    if counts.sum() > n_users and n_users < P.MIN_USERS_PER_PERSONA * len(P.PERSONAS):
        raise ValueError(f"{n_users} users cannot hold {P.MIN_USERS_PER_PERSONA} of each of "
                         f"{len(P.PERSONAS)} personas")
    counts[np.argmax(weights)] += n_users - counts.sum()  # the largest group absorbs rounding
    if counts.min() < P.MIN_USERS_PER_PERSONA:
        raise ValueError(f"{n_users} users cannot hold {P.MIN_USERS_PER_PERSONA} of each persona with weights "
                         f"{weights.round(3).tolist()}; use a larger preset")
    return rng.permutation(np.repeat(np.arange(len(P.PERSONAS)), counts))


def choose_hybrids(rng: np.random.Generator, persona: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Which users mix a second persona into their behaviour, which one, and how much of the primary stays.

    The truth stays the primary persona. Most secondaries come from the same cloud (a Case Solver who
    also writes articles), the rest from anywhere (a sales rep who does admin work).
    """
    n = len(persona)
    secondary = np.full(n, -1)
    mix = np.ones(n)
    hybrids = np.sort(rng.choice(n, size=int(round(share * n)), replace=False))
    clouds = np.array([p.cloud for p in P.PERSONAS])
    same_cloud = rng.random(len(hybrids)) < HYBRID_SAME_CLOUD_SHARE
    draws = rng.random(len(hybrids))
    for code in range(len(P.PERSONAS)):
        mine = persona[hybrids] == code
        near = np.flatnonzero((clouds == clouds[code]) & (np.arange(len(P.PERSONAS)) != code))
        far = np.flatnonzero(np.arange(len(P.PERSONAS)) != code)
        pool_choice = np.where(same_cloud[mine], near[(draws[mine] * len(near)).astype(int)],
                               far[(draws[mine] * len(far)).astype(int)])
        secondary[hybrids[mine]] = pool_choice
    mix[hybrids] = rng.uniform(*HYBRID_MIX_RANGE, len(hybrids))
    return secondary, mix


def plan_lifecycles(rng: np.random.Generator, n: int,
                    window: Window) -> tuple[np.ndarray, ...]:
    """When each user was created, and the span they are active in the window.

    Most users predate the window (created up to three years earlier); some are hired during it and
    start after a short onboarding; some were deactivated weeks to months before as_of and act no more.
    """
    created = window.start_ms - (rng.random(n) * 3 * 365 * DAY_MS).astype(np.int64) - DAY_MS
    start = np.full(n, window.start_ms, dtype=np.int64)
    end = np.full(n, window.end_ms, dtype=np.int64)
    new_hire = _exact_share(rng, n, NEW_HIRE_SHARE)
    hired = window.start_ms + (rng.uniform(0, 150, n) * DAY_MS).astype(np.int64)
    created = np.where(new_hire, hired, created)
    start = np.where(new_hire, hired + (rng.uniform(2, 10, n) * DAY_MS).astype(np.int64), start)
    inactive = np.zeros(n, dtype=bool)
    candidates = np.flatnonzero(~new_hire)
    inactive[rng.choice(candidates, size=max(1, int(round(INACTIVE_SHARE * n))), replace=False)] = True
    deactivated = window.end_ms - (rng.uniform(21, 150, n) * DAY_MS).astype(np.int64)
    end = np.where(inactive, deactivated, end)
    return created, start, end, ~inactive, new_hire


def personal_rates(rng: np.random.Generator, persona: np.ndarray, secondary: np.ndarray, mix: np.ndarray,
                   silent: np.ndarray, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Each user's own rates and shares: persona profile (mixed for hybrids) x lognormal noise x silence.

    The lognormal factors have mean 1, so noise scatters users without shifting persona averages.
    """
    rates, shares = P.rate_table(), P.share_table()
    second = np.where(secondary >= 0, secondary, persona)
    weight = mix[:, None]
    user_rates = weight * rates[persona] + (1 - weight) * rates[second]
    user_shares = weight * shares[persona] + (1 - weight) * shares[second]
    n, kinds = user_rates.shape
    user_sigma, kind_sigma = USER_NOISE_SIGMA * noise, KIND_NOISE_SIGMA * noise
    busy = np.exp(rng.normal(-user_sigma**2 / 2, user_sigma, (n, 1)))
    habit = np.exp(rng.normal(-kind_sigma**2 / 2, kind_sigma, (n, kinds)))
    level = np.where(silent, SILENT_FACTOR, 1.0)[:, None]
    user_rates = user_rates * busy * habit * level
    user_shares = np.clip(user_shares + rng.normal(0, SHARE_NOISE_SIGMA * noise, user_shares.shape), 0.0, 1.0)
    return user_rates, user_shares


def assign_managers(rng: np.random.Generator, persona: np.ndarray) -> np.ndarray:
    """Each user's manager (index, -1 for none), following MANAGED_BY, without cycles.

    Individual contributors report to a leader of the right kind; a fifth of each leader persona is
    "senior" and the other leaders of that persona may report to them; a few individual contributors
    are given one report of their own (acting leads).
    """
    n = len(persona)
    manager = np.full(n, -1)
    codes = {label: P.persona_index(label) for label in P.PERSONA_LABELS}
    for label, boss_labels in P.MANAGED_BY.items():
        members = np.flatnonzero(persona == codes[label])
        bosses = np.flatnonzero(np.isin(persona, [codes[b] for b in boss_labels]))
        managed = members[rng.random(len(members)) < IC_MANAGED_SHARE]
        manager[managed] = bosses[rng.integers(0, len(bosses), len(managed))]
    for label in P.LEADER_PERSONAS:
        leaders = np.flatnonzero(persona == codes[label])
        senior_count = max(1, len(leaders) // 5)
        senior, others = leaders[:senior_count], leaders[senior_count:]
        reporting = others[rng.random(len(others)) < 0.7]
        manager[reporting] = senior[rng.integers(0, len(senior), len(reporting))]
    leader_codes = [codes[label] for label in (*P.LEADER_PERSONAS, "Marketing Manager")]
    contributors = np.flatnonzero(~np.isin(persona, leader_codes))
    acting_leads = rng.choice(contributors, size=max(1, int(IC_WITH_REPORT_SHARE * len(contributors))),
                              replace=False)
    pool = np.setdiff1d(contributors, acting_leads)
    clouds = np.array([p.cloud for p in P.PERSONAS])
    for lead in np.sort(acting_leads):
        same_cloud = pool[clouds[persona[pool]] == clouds[persona[lead]]]
        if len(same_cloud):
            manager[same_cloud[rng.integers(0, len(same_cloud))]] = lead
    return manager


def _exact_share(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """A boolean mask with round(share * n) (at least one) True values at random positions."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=max(1, int(round(share * n))), replace=False)] = True
    return mask


def _usernames(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Unique usernames like `mary.chen.17@persona-sync.sandbox` (the number keeps them unique)."""
    numbers = np.arange(1, len(first) + 1).astype(str)
    base = np.strings.add(np.strings.add(np.strings.lower(first.astype(str)), "."),
                          np.strings.lower(last.astype(str)))
    base = np.strings.replace(np.strings.replace(base, "'", ""), "ü", "u")
    return np.strings.add(np.strings.add(np.strings.add(base, "."), numbers), "@persona-sync.sandbox").astype(object)
