"""Reports and Dashboards, created or modified by the people who analyse (leaders, data experts, admins).

An org inherits reports from before the window; users then create new ones and modify existing ones
(preferably their own). Only a record's latest modification is visible (LastModifiedById and
LastModifiedDate), as in Salesforce, so repeated edits of one report count once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sandbox.generate import vocabulary as V
from sandbox.generate.ownership import GroupedRecords
from sandbox.generate.people import Population
from sandbox.generate.randomness import RandomStreams
from sandbox.generate.timing import DAY_MS, Window, later_times, system_stamps
from sandbox.generate.writing import NO_TIME, DateTimes, TableWriter, pick, text_join
from sandbox.store import OrgStore

CREATE_SHARE = 0.45  # of report/dashboard actions, the share that creates a new record (rest modify)


@dataclass
class AuthoredRecords:
    """Who created and last modified each record, and when: inherited records first, then new ones."""

    owner: np.ndarray
    creator: np.ndarray
    created_ms: np.ndarray
    modifier: np.ndarray
    modified_ms: np.ndarray

    @property
    def size(self) -> int:
        return len(self.owner)


def plan_authored_records(rng: np.random.Generator, people: Population, rate: str, inherited: int,
                          window: Window) -> AuthoredRecords:
    """Inherited records plus each user's create/modify actions for `rate` (reports or dashboards)."""
    weight = people.expected(rate) + 0.1 * people.expected(rate).mean() + 1e-9
    base_owner = rng.choice(people.size, size=inherited, p=weight / weight.sum())
    base_created = window.start_ms - (rng.uniform(30, 3 * 365, inherited) * DAY_MS).astype(np.int64)
    base_modified = later_times(rng, base_created, window.start_ms, share=0.7, mean_delay_ms=60 * DAY_MS)
    base_modifier = base_owner.copy()

    actor, at = people.acts(rng, rate)
    creates = rng.random(len(actor)) < CREATE_SHARE
    editor, edited_at = actor[~creates], at[~creates]
    own = GroupedRecords(base_owner, people.size).any_of(rng, editor)
    target = np.where((own >= 0) & (rng.random(len(editor)) < 0.8), own, rng.integers(0, inherited, len(editor)))
    order = np.lexsort((edited_at, target))
    target, editor, edited_at = target[order], editor[order], edited_at[order]
    latest = np.r_[target[1:] != target[:-1], True] if len(target) else np.zeros(0, dtype=bool)
    base_modifier[target[latest]] = editor[latest]
    base_modified[target[latest]] = edited_at[latest]

    creator, created = actor[creates], at[creates]
    modified = later_times(rng, created, people.end_ms[creator], share=0.3, mean_delay_ms=2 * DAY_MS)
    return AuthoredRecords(
        owner=np.concatenate([base_owner, creator]), creator=np.concatenate([base_owner, creator]),
        created_ms=np.concatenate([base_created, created]), modifier=np.concatenate([base_modifier, creator]),
        modified_ms=np.concatenate([base_modified, modified]),
    )


def _seen_times(rng: np.random.Generator, records: AuthoredRecords, window: Window, share: float) -> np.ndarray:
    """A last-run or last-viewed time in the window after creation, for `share` of records."""
    since = np.maximum(records.created_ms, window.start_ms)
    seen = since + ((window.end_ms - since) * rng.random(records.size)).astype(np.int64)
    return np.where(rng.random(records.size) < share, seen, NO_TIME)


def write_reports(store: OrgStore, streams: RandomStreams, people: Population, window: Window) -> None:
    """Writes Report rows (inherited ones and those created in the window)."""
    rng = streams.stream("reports")
    records = plan_authored_records(rng, people, "reports", inherited=people.size, window=window)
    n = records.size
    topic = pick(rng, V.REPORT_TOPICS, n)
    numbers = np.arange(1, n + 1).astype(str)
    suffix = pick(rng, ("", "", " - My Team", " - EMEA", " - Q3", " v2"), n)
    with TableWriter(store, "Report") as writer:
        writer.write({
            "Id": writer.new_ids(n), "Name": text_join(topic, suffix),
            "DeveloperName": text_join(np.strings.replace(topic.astype(str), " ", "_"), "_", numbers),
            "OwnerId": people.ids[records.owner], "FolderName": pick(rng, V.REPORT_FOLDERS, n),
            "Format": pick(rng, ("Tabular", "Summary", "Matrix", "MultiBlock"), n, (0.35, 0.4, 0.2, 0.05)),
            "Description": None, "LastRunDate": DateTimes(_seen_times(rng, records, window, 0.7)),
            "LastViewedDate": DateTimes(_seen_times(rng, records, window, 0.6)), "IsDeleted": 0,
            "CreatedById": people.ids[records.creator], "CreatedDate": DateTimes(records.created_ms),
            "LastModifiedById": people.ids[records.modifier], "LastModifiedDate": DateTimes(records.modified_ms),
            "SystemModstamp": DateTimes(system_stamps(rng, records.modified_ms, window)),
        })


def write_dashboards(store: OrgStore, streams: RandomStreams, people: Population, window: Window) -> None:
    """Writes Dashboard rows (inherited ones and those created in the window)."""
    rng = streams.stream("dashboards")
    records = plan_authored_records(rng, people, "dashboards", inherited=max(1, people.size // 4), window=window)
    n = records.size
    topic = pick(rng, V.DASHBOARD_TOPICS, n)
    numbers = np.arange(1, n + 1).astype(str)
    with TableWriter(store, "Dashboard") as writer:
        writer.write({
            "Id": writer.new_ids(n), "Title": topic,
            "DeveloperName": text_join(np.strings.replace(topic.astype(str), " ", "_"), "_", numbers),
            "FolderId": None, "FolderName": pick(rng, V.REPORT_FOLDERS, n),
            "RunningUserId": people.ids[records.owner],
            "Type": pick(rng, ("SpecifiedUser", "LoggedInUser", "MyTeamUser"), n, (0.6, 0.3, 0.1)),
            "Description": None, "LastViewedDate": DateTimes(_seen_times(rng, records, window, 0.8)), "IsDeleted": 0,
            "CreatedById": people.ids[records.creator], "CreatedDate": DateTimes(records.created_ms),
            "LastModifiedById": people.ids[records.modifier], "LastModifiedDate": DateTimes(records.modified_ms),
            "SystemModstamp": DateTimes(system_stamps(rng, records.modified_ms, window)),
        })
