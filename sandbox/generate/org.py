"""Generating a whole synthetic org: the recipe, the presets, and the truth files.

`generate_org` fills a freshly created OrgStore step by step (users, customers, sales, marketing,
service, everyday activity, insight, setup, logins, the User rows) and writes the true persona of every
user to `truth_dir`, outside the org, where the product cannot see it. Same (preset, seed, as_of,
options) always gives the same database contents. The options' world (`sandbox.generate.worlds`) fixes
the org's habits; the default world is the org this generator has always made.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from sandbox.generate import activities, administration, customers, directory, insight, logins, marketing, service
from sandbox.generate.people import Population, plan_population
from sandbox.generate.profiles import PERSONA_LABELS
from sandbox.generate.randomness import RandomStreams
from sandbox.generate.timing import HISTORY_DAYS, Window
from sandbox.generate.worlds import InvalidWorld, World
from sandbox.store import OrgStore
from sandbox.values import format_datetime


class InvalidGenerationRequest(ValueError):
    """generate_org was asked for something it cannot make (unknown preset, bad option, used store)."""


@dataclass(frozen=True)
class Preset:
    """An org size: how many persona users (the integration user comes on top)."""

    name: str
    users: int
    description: str


PRESETS: dict[str, Preset] = {
    "small": Preset("small", 200, "about 200 users and 50 thousand activity rows: tests, demos"),
    "medium": Preset("medium", 2_000, "about 2,000 users and half a million activity rows"),
    "large": Preset("large", 20_000, "about 20,000 users and 5 million activity rows (1.1M+ Tasks): benchmarks"),
}


@dataclass(frozen=True)
class GenerationOptions:
    """How hard the org is to read, and which world it comes from.

    hybrid_share: share of users whose behaviour mixes in a second persona (0..1); a drawn world fixes
        its own (World.hybrid_share), which wins; the default world takes this one.
    noise: multiplies the spread of per-user rate noise (1.0 is the default realism; 2.0 is noisy).
    world: the org's habits (base rates, persona mix, logging conventions, what was exported); the
        default world is the org this generator has always made.
    """

    hybrid_share: float = 0.10
    noise: float = 1.0
    world: World = field(default_factory=World.default)

    @property
    def effective_hybrid_share(self) -> float:
        """The hybrid share the org is generated with: the world's when drawn, else `hybrid_share`."""
        return self.world.hybrid_share_or(self.hybrid_share)

    def check(self) -> None:
        if not 0.0 <= self.hybrid_share <= 1.0:
            raise InvalidGenerationRequest(f"hybrid_share must be between 0 and 1, got {self.hybrid_share}")
        if not 0.0 <= self.noise <= 5.0:
            raise InvalidGenerationRequest(f"noise must be between 0 and 5, got {self.noise}")
        try:
            self.world.check()
        except InvalidWorld as error:
            raise InvalidGenerationRequest(f"world {self.world.name}: {error}") from error


@dataclass(frozen=True)
class GenerationReport:
    """What was generated: rows per object, time taken, where the truth is, the special record ids."""

    preset: str
    seed: int
    as_of: str
    persona_users: int
    counts: dict[str, int] = field(default_factory=dict)
    elapsed_seconds: float = 0.0
    truth_path: Path | None = None
    integration_user_id: str = ""
    organization_id: str = ""

    @property
    def total_rows(self) -> int:
        return sum(self.counts.values())


def generate_org(store: OrgStore, *, preset: str, seed: int, as_of: datetime,
                 options: GenerationOptions = GenerationOptions(), truth_dir: Path) -> GenerationReport:
    """Fills a freshly created, empty `store` with a synthetic org and writes the truth to `truth_dir`.

    History covers the HISTORY_DAYS days before `as_of` (naive datetimes are UTC); every stored time is
    earlier than as_of. Writes `truth.csv` (Id,persona) and `truth_details.csv` (hybrid mix, activity
    level, active flag) for the persona users; the integration user is not in them. Deterministic in
    (preset, seed, as_of, options), the world included; the settings say which world (`world`,
    `world_settings`). In a partial-export world the absent objects and fields are not in the org at
    all (`OrgStore.withhold`). Raises InvalidGenerationRequest for an unknown preset, a bad option or
    world, or a store that already holds users.
    """
    began = time.perf_counter()
    size = _preset(preset)
    options.check()
    if store.count("User"):
        raise InvalidGenerationRequest(f"{store.path} already holds users; generate into a freshly created store")
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=timezone.utc)
    window = Window.ending_at(as_of)
    streams = RandomStreams(seed)

    world = options.world
    people = plan_population(store, streams, size.users, window, options.effective_hybrid_share, options.noise,
                             world)
    org = directory.write_org_structure(store, people, window)

    accounts = customers.write_accounts(store, streams, people, window)
    contacts = customers.plan_contacts(store, streams, people, accounts, window)
    opportunities = customers.write_opportunities(store, streams, people, accounts, window)
    leads = customers.write_leads(store, streams, people, accounts, contacts, opportunities, window)
    customers.write_quotes(store, streams, people, accounts, opportunities, window)
    customers.write_contracts(store, streams, people, accounts, window)

    campaigns = marketing.write_campaigns(store, streams, people, window)
    sends = marketing.write_list_emails(store, streams, people, campaigns, window)
    marketing.write_email_templates(store, streams, people, window)

    cases = service.write_cases(store, streams, people, accounts, contacts, window)
    service.write_case_comments(store, streams, people, cases, window)
    service.write_case_history(store, streams, people, cases, window)
    service.write_articles(store, streams, people, window)

    worked = activities.WorkedRecords(accounts, contacts, opportunities, leads, cases)
    activities.write_tasks(store, streams, people, worked, sends, window, world)
    activities.write_events(store, streams, people, worked, window, world)
    activities.write_contact_history(store, streams, people, worked, window)
    activities.write_chatter(store, streams, people, worked, window)
    customers.write_contacts(store, streams, people, accounts, contacts, window)

    insight.write_reports(store, streams, people, window)
    insight.write_dashboards(store, streams, people, window)
    user_creators = administration.choose_user_creators(streams, people)
    administration.write_setup_trail(store, streams, people, user_creators, window)
    last_login = logins.write_logins(store, streams, people, window, world)
    directory.write_users(store, streams, people, org, window, user_creators, last_login)

    _save_settings(store, preset, seed, as_of, options, people, org.organization_id)
    with store.transaction() as db:
        if world.absent_objects or world.absent_fields:  # a partial export: gone from describe, not just empty
            store.withhold(world.absent_objects, world.absent_fields, db)
        store.create_indexes(db)
    truth_path = write_truth(people, Path(truth_dir))
    counts = {name: store.count(name) for name in store.schema}
    return GenerationReport(
        preset=preset, seed=seed, as_of=format_datetime(as_of), persona_users=people.size, counts=counts,
        elapsed_seconds=round(time.perf_counter() - began, 3), truth_path=truth_path,
        integration_user_id=people.integration_user_id, organization_id=org.organization_id,
    )


def _preset(name: str) -> Preset:
    if name not in PRESETS:
        raise InvalidGenerationRequest(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _save_settings(store: OrgStore, preset: str, seed: int, as_of: datetime, options: GenerationOptions,
                   people: Population, organization_id: str) -> None:
    settings = {
        "preset": preset, "seed": str(seed), "as_of": format_datetime(as_of), "history_days": str(HISTORY_DAYS),
        "hybrid_share": repr(options.effective_hybrid_share), "noise": repr(options.noise),
        "integration_user_id": people.integration_user_id, "organization_id": organization_id,
        "world": options.world.name, "world_settings": options.world.to_settings(),
    }
    with store.transaction():
        for key, value in settings.items():
            store.set_setting(key, value)


def write_truth(people: Population, truth_dir: Path) -> Path:
    """Writes truth.csv (Id,persona) and truth_details.csv for every persona user, sorted by Id.

    Returns the path of truth.csv. `mix` is the primary persona's weight (1.0 for non-hybrids).
    """
    truth_dir.mkdir(parents=True, exist_ok=True)
    order = np.argsort(people.ids.astype(str), kind="stable")
    labels = np.array(PERSONA_LABELS, dtype=object)
    truth_path = truth_dir / "truth.csv"
    with truth_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Id", "persona"])
        writer.writerows(zip(people.ids[order].tolist(), labels[people.persona[order]].tolist()))
    with (truth_dir / "truth_details.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Id", "persona", "secondary_persona", "mix", "activity_level", "is_active"])
        for i in order.tolist():
            secondary = labels[people.secondary[i]] if people.secondary[i] >= 0 else ""
            writer.writerow([people.ids[i], labels[people.persona[i]], secondary, f"{people.mix[i]:.3f}",
                             "silent" if people.silent[i] else "normal", "true" if people.active[i] else "false"])
    return truth_path
