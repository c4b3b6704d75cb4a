"""The org's directory: Organization, Profiles, UserRoles and the User rows, plus the integration user.

What a user looks like from the outside (title, department, profile, role) is only loosely tied to their
true persona (see the affinity tables in `profiles`): a product that trusted titles would score poorly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sandbox.generate import profiles as P
from sandbox.generate import vocabulary as V
from sandbox.generate.people import INTEGRATION_USERNAME, Population
from sandbox.generate.randomness import RandomStreams
from sandbox.generate.timing import DAY_MS, HOUR_MS, Window, later_times, system_stamps
from sandbox.generate.writing import NO_TIME, DateTimes, TableWriter, lookup, pick, text_join
from sandbox.store import OrgStore

ORGANIZATION_NAME = "Acme Sandbox"
COMPANY_NAME = "Acme Corp"


@dataclass(frozen=True)
class Directory:
    """Ids of the org-level records other steps refer to."""

    organization_id: str
    founded_ms: int
    profile_ids: dict[str, str]
    role_ids: dict[str, str]
    founding_admin: int  # user index of the admin who set the org up


def write_org_structure(store: OrgStore, people: Population, window: Window) -> Directory:
    """Writes Organization, Profile and UserRole rows, set up by the founding admin when the org began."""
    founded = window.start_ms - 3 * 365 * DAY_MS - 2 * DAY_MS
    admins = people.of_personas("Service Admin", active_only=True)
    founding_admin = int(admins[0]) if len(admins) else 0
    people.created_ms[founding_admin] = founded + HOUR_MS  # the org's first user
    founder_id = people.ids[founding_admin]
    with TableWriter(store, "Organization") as writer:
        organization_id = str(writer.new_ids(1)[0])
        writer.write({"Id": np.array([organization_id], dtype=object), "Name": ORGANIZATION_NAME,
                      "IsSandbox": 1, "OrganizationType": "Enterprise Edition", "InstanceName": "SBX1",
                      "TimeZoneSidKey": "America/Los_Angeles", "CreatedById": founder_id,
                      "CreatedDate": DateTimes(np.array([founded])), "LastModifiedById": founder_id,
                      "LastModifiedDate": DateTimes(np.array([window.start_ms - 40 * DAY_MS])),
                      "SystemModstamp": DateTimes(np.array([window.start_ms - 40 * DAY_MS]))})
    stamps = DateTimes(np.full(len(P.PROFILE_NAMES), founded + 2 * HOUR_MS))
    with TableWriter(store, "Profile") as writer:
        ids = writer.new_ids(len(P.PROFILE_NAMES))
        names = np.array(P.PROFILE_NAMES, dtype=object)
        writer.write({"Id": ids, "Name": names, "Description": text_join("Profile for ", names),
                      "UserType": "Standard", "CreatedById": founder_id, "CreatedDate": stamps,
                      "LastModifiedById": founder_id, "LastModifiedDate": stamps, "SystemModstamp": stamps})
        profile_ids = dict(zip(P.PROFILE_NAMES, ids.tolist()))
    with TableWriter(store, "UserRole") as writer:
        names = [name for name, _ in P.ROLE_TREE]
        ids = writer.new_ids(len(names))
        role_ids = dict(zip(names, ids.tolist()))
        parents = np.array([role_ids.get(parent) if parent else None for _, parent in P.ROLE_TREE], dtype=object)
        stamps = DateTimes(np.full(len(names), founded + 2 * HOUR_MS))
        writer.write({"Id": ids, "Name": np.array(names, dtype=object),
                      "DeveloperName": np.array([n.replace(" ", "_") for n in names], dtype=object),
                      "ParentRoleId": parents, "RollupDescription": np.array(names, dtype=object),
                      "LastModifiedById": founder_id, "LastModifiedDate": stamps, "SystemModstamp": stamps})
    return Directory(organization_id, founded, profile_ids, role_ids, founding_admin)


def write_users(store: OrgStore, streams: RandomStreams, people: Population, directory: Directory,
                window: Window, user_creators: np.ndarray, last_login_ms: np.ndarray) -> None:
    """Writes the persona users and the integration user (first) into User.

    `user_creators` holds, per user, the index of the admin who created them; `last_login_ms` each
    user's last successful login (NO_TIME for never).
    """
    rng = streams.stream("users")
    n = people.size
    titles = outward_titles(rng, people.persona)
    departments = outward_departments(rng, people.persona)
    profile_names = outward_profiles(rng, people.persona)
    role_names = outward_roles(rng, people.persona)
    zones = np.array([z[0] for z in V.USER_ZONES], dtype=object)[people.zone]
    divisions = np.array([z[3] for z in V.USER_ZONES], dtype=object)[people.zone]
    # Last change: deactivation; else, for a third, an edit in the window (a new title, a new
    # manager); else an edit some time after creation.
    before_window = later_times(rng, people.created_ms, np.maximum(window.start_ms, people.created_ms + 1),
                                share=0.8, mean_delay_ms=120 * DAY_MS)
    since = np.maximum(people.created_ms, window.start_ms)
    in_window = since + ((window.end_ms - since) * rng.random(n)).astype(np.int64)
    modified = np.where(~people.active, people.end_ms,
                        np.where(people.new_hire | (rng.random(n) < 0.35), in_window, before_window))
    # Users older than their admin were created by the founding admin; in-window changes (hiring,
    # deactivation, edits) are made by the user's admin, who was there all window.
    created_by = np.where(people.created_ms[user_creators] <= people.created_ms, user_creators,
                          directory.founding_admin)
    modified_by = np.where(modified >= window.start_ms, user_creators, created_by)
    aliases = text_join(np.strings.slice(np.strings.lower(people.first_names.astype(str)), 0, 1),
                        np.strings.slice(np.strings.lower(people.last_names.astype(str)), 0, 5),
                        (np.arange(n) % 100).astype(str))
    emails = np.strings.replace(people.usernames.astype(str), "@persona-sync.sandbox", "@acme.example.com")
    federated = np.where(rng.random(n) < 0.7, emails, None)
    integration = _integration_user(people, directory)
    with TableWriter(store, "User") as writer:
        writer.write(integration)
        writer.write({
            "Id": people.ids, "Username": people.usernames, "FirstName": people.first_names,
            "LastName": people.last_names, "Name": people.full_names(), "Email": emails.astype(object),
            "Alias": aliases, "Title": titles, "Department": departments, "Division": divisions,
            "CompanyName": COMPANY_NAME,
            "EmployeeNumber": text_join("E", np.char.zfill((100000 + np.arange(n)).astype(str), 6)),
            "FederationIdentifier": federated.astype(object),
            "ProfileId": np.array([directory.profile_ids[name] for name in profile_names], dtype=object),
            "UserRoleId": np.array([directory.role_ids.get(name) for name in role_names], dtype=object),
            "ManagerId": lookup(people.ids, people.manager), "IsActive": people.active, "UserType": "Standard",
            "LastLoginDate": DateTimes(last_login_ms), "TimeZoneSidKey": zones,
            "CreatedById": people.ids[created_by], "CreatedDate": DateTimes(people.created_ms),
            "LastModifiedById": people.ids[modified_by], "LastModifiedDate": DateTimes(modified),
            "SystemModstamp": DateTimes(system_stamps(rng, modified, window)),
        })


def _integration_user(people: Population, directory: Directory) -> dict:
    founded = np.array([directory.founded_ms + DAY_MS])
    founder = people.ids[directory.founding_admin]
    return {
        "Id": np.array([people.integration_user_id], dtype=object), "Username": INTEGRATION_USERNAME,
        "FirstName": "Integration", "LastName": "User", "Name": "Integration User",
        "Email": "integration@acme.example.com", "Alias": "integ", "Title": None, "Department": "IT",
        "Division": None, "CompanyName": COMPANY_NAME, "EmployeeNumber": None, "FederationIdentifier": None,
        "ProfileId": directory.profile_ids["System Administrator"], "UserRoleId": None, "ManagerId": None,
        "IsActive": 1, "UserType": "Standard", "LastLoginDate": DateTimes(np.array([NO_TIME])),
        "TimeZoneSidKey": "America/Los_Angeles", "CreatedById": founder, "CreatedDate": DateTimes(founded),
        "LastModifiedById": founder, "LastModifiedDate": DateTimes(founded), "SystemModstamp": DateTimes(founded),
    }


def outward_titles(rng: np.random.Generator, persona: np.ndarray) -> np.ndarray:
    """Job titles: own persona's usual title, another persona's (misleading) or a generic one."""
    n = len(persona)
    draw = rng.random(n)
    other = (persona + rng.integers(1, len(P.PERSONAS), n)) % len(P.PERSONAS)
    source = np.where(draw < P.TITLE_TYPICAL_SHARE, persona, other)
    titles = np.empty(n, dtype=object)
    which = rng.random(n)
    for code, label in enumerate(P.PERSONA_LABELS):
        options = P.TYPICAL_TITLES[label]
        rows = source == code
        titles[rows] = np.array(options, dtype=object)[(which[rows] * len(options)).astype(int)]
    generic = draw >= P.TITLE_TYPICAL_SHARE + P.TITLE_MISLEADING_SHARE
    titles[generic] = pick(rng, P.GENERIC_TITLES, int(generic.sum()))
    return titles


def outward_departments(rng: np.random.Generator, persona: np.ndarray) -> np.ndarray:
    """Departments: usually one of the persona's cloud, sometimes another cloud's, often generic."""
    n = len(persona)
    clouds = np.array([p.cloud for p in P.PERSONAS], dtype=object)[persona]
    draw = rng.random(n)
    departments = np.empty(n, dtype=object)
    for cloud, options in P.TYPICAL_DEPARTMENTS.items():
        rows = clouds == cloud
        departments[rows] = pick(rng, options, int(rows.sum()))
    others = (draw >= 0.55) & (draw < 0.7)
    all_departments = [d for options in P.TYPICAL_DEPARTMENTS.values() for d in options]
    departments[others] = pick(rng, all_departments, int(others.sum()))
    generic = draw >= 0.7
    departments[generic] = pick(rng, P.GENERIC_DEPARTMENTS, int(generic.sum()))
    return departments


def outward_profiles(rng: np.random.Generator, persona: np.ndarray) -> np.ndarray:
    """Profile names, drawn per persona from the loose affinity table."""
    names = np.empty(len(persona), dtype=object)
    for code, label in enumerate(P.PERSONA_LABELS):
        rows = persona == code
        weights = [P.PROFILE_AFFINITY[label].get(name, 0.0) + P.PROFILE_FLOOR_WEIGHT for name in P.PROFILE_NAMES]
        names[rows] = pick(rng, P.PROFILE_NAMES, int(rows.sum()), weights)
    return names


def outward_roles(rng: np.random.Generator, persona: np.ndarray) -> np.ndarray:
    """Role names: the persona's usual role most of the time, else any role, sometimes none."""
    n = len(persona)
    typical = np.array([P.TYPICAL_ROLE[label] for label in P.PERSONA_LABELS], dtype=object)[persona]
    draw = rng.random(n)
    roles = np.where(draw < P.ROLE_TYPICAL_SHARE, typical, pick(rng, [r for r, _ in P.ROLE_TREE], n))
    roles[draw >= 1 - P.ROLE_NONE_SHARE] = None
    return roles
