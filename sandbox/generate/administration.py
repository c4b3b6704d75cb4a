"""Setup changes: the SetupAuditTrail, and which admin created each user.

Each user's setup changes follow their persona's action mix (user administration, customisation,
automation). On top, the org's user lifecycle leaves rows: Service Admins create the users hired during
the window and deactivate those who leave.
"""

from __future__ import annotations

import numpy as np

from sandbox.generate import vocabulary as V
from sandbox.generate.people import Population
from sandbox.generate.randomness import RandomStreams
from sandbox.generate.timing import MINUTE_MS, Window
from sandbox.generate.writing import DateTimes, TableWriter, text_join
from sandbox.store import OrgStore

_ACTION_GROUPS = (V.USER_ADMIN_ACTIONS, V.CUSTOMIZE_ACTIONS, V.AUTOMATION_ACTIONS)


def choose_user_creators(streams: RandomStreams, people: Population) -> np.ndarray:
    """The admin (user index) who created each user: a Service Admin who was around for the whole window."""
    rng = streams.stream("user-creators")
    admins = people.of_personas("Service Admin", active_only=True)
    if len(admins) == 0:
        admins = np.flatnonzero(people.active & ~people.new_hire)
    return admins[rng.integers(0, len(admins), people.size)]


def write_setup_trail(store: OrgStore, streams: RandomStreams, people: Population, user_creators: np.ndarray,
                      window: Window) -> None:
    """Writes SetupAuditTrail rows: each user's own setup changes, then user lifecycle rows."""
    rng = streams.stream("setup-trail")
    actor, at = people.acts(rng, "setup_changes", after_hours_share=0.15)
    n = len(actor)
    cumulative = np.cumsum(people.setup_action_shares()[actor], axis=1)
    group = (rng.random(n)[:, None] >= cumulative).sum(axis=1).clip(0, len(_ACTION_GROUPS) - 1)
    action, section, display = (np.empty(n, dtype=object) for _ in range(3))
    for code, actions in enumerate(_ACTION_GROUPS):
        rows = np.flatnonzero(group == code)
        chosen = rng.integers(0, len(actions), len(rows))
        action[rows] = np.array([a[0] for a in actions], dtype=object)[chosen]
        section[rows] = np.array([a[1] for a in actions], dtype=object)[chosen]
        display[rows] = np.array([a[2] for a in actions], dtype=object)[chosen]
    display = _fill_usernames(rng, display, people)

    hired = np.flatnonzero(people.new_hire)
    left = np.flatnonzero(~people.active)
    created_row, deactivated_row = V.LIFECYCLE_ACTIONS["created"], V.LIFECYCLE_ACTIONS["deactivated"]
    is_creation = np.r_[np.ones(len(hired), dtype=bool), np.zeros(len(left), dtype=bool)]
    lifecycle_at = np.concatenate([people.created_ms[hired], people.end_ms[left] - 5 * MINUTE_MS])
    lifecycle_actor = np.concatenate([user_creators[hired], user_creators[left]])
    subjects = people.usernames[np.concatenate([hired, left])]
    with TableWriter(store, "SetupAuditTrail") as writer:
        writer.write({
            "Id": writer.new_ids(n), "Action": action, "Section": section, "Display": display,
            "DelegateUser": None, "CreatedByContext": None, "ResponsibleNamespacePrefix": None,
            "CreatedById": people.ids[actor], "CreatedDate": DateTimes(at),
        })
        writer.write({
            "Id": writer.new_ids(len(is_creation)),
            "Action": np.where(is_creation, created_row[0], deactivated_row[0]).astype(object),
            "Section": "Manage Users",
            "Display": text_join(np.where(is_creation, created_row[2].replace("{user}", ""),
                                          deactivated_row[2].replace("{user}", "")), subjects),
            "DelegateUser": None, "CreatedByContext": None, "ResponsibleNamespacePrefix": None,
            "CreatedById": people.ids[lifecycle_actor], "CreatedDate": DateTimes(lifecycle_at),
        })


def _fill_usernames(rng: np.random.Generator, display: np.ndarray, people: Population) -> np.ndarray:
    """Replaces `{user}` in Display texts with a random username."""
    text = display.astype(str)
    split = np.strings.partition(text, "{user}")
    has_user = split[1] == "{user}"
    names = people.usernames[rng.integers(0, people.size, len(display))].astype(str)
    filled = np.strings.add(np.strings.add(split[0], np.where(has_user, names, "")), split[2])
    return filled.astype(object)
