"""Service work: Cases (owned, closed, escalated), CaseComments, CaseHistory and knowledge articles.

Case Solvers own and close the most cases; Expert Agents own fewer but mostly escalated ones and write
the articles; Team Leaders move cases between their agents (CaseHistory Field='Owner' rows created by
the leader). CaseHistory also holds status rows (escalations) that a product must not mistake for
reassignments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sandbox.generate import vocabulary as V
from sandbox.generate.customers import Accounts, Contacts
from sandbox.generate.ownership import GroupedRecords
from sandbox.generate.people import Population
from sandbox.generate.randomness import RandomStreams
from sandbox.generate.timing import DAY_MS, HOUR_MS, MINUTE_MS, Window, later_times, system_stamps
from sandbox.generate.writing import NO_TIME, DateTimes, TableWriter, issue_ids, pick, text_join
from sandbox.store import OrgStore


@dataclass
class Cases:
    ids: np.ndarray
    owner: np.ndarray
    contact: np.ndarray
    account: np.ndarray
    created_ms: np.ndarray
    escalated: np.ndarray
    closes_ms: np.ndarray  # when the case closes (or would have; later than as_of for open cases)
    by_owner: GroupedRecords
    by_time: GroupedRecords  # all cases in one group: "a recent case", whoever owns it


def write_cases(store: OrgStore, streams: RandomStreams, people: Population, accounts: Accounts,
                contacts: Contacts, window: Window) -> Cases:
    """Writes the cases users own; most are closed after hours to days, escalated ones take longer."""
    rng = streams.stream("cases")
    owner, created = people.acts(rng, "cases")
    n = len(owner)
    escalated = rng.random(n) < people.share("escalated_share")[owner]
    resolution_days = np.where(escalated, rng.lognormal(np.log(5), 0.8, n), rng.lognormal(np.log(1.2), 1.0, n))
    closes = created + (resolution_days * DAY_MS).astype(np.int64) + 5 * MINUTE_MS
    closed = closes < people.end_ms[owner]
    closed_at = np.where(closed, closes, NO_TIME)
    young = (window.end_ms - created) < DAY_MS
    status = np.where(closed, "Closed", np.where(escalated, "Escalated", np.where(young, "New", "Working")))
    contact = rng.integers(0, contacts.base_count, n)
    account = contacts.account[contact]
    contacts.record_activity(contact, created)
    front_line = people.of_personas("Case Solver", active_only=True)
    logged_by_colleague = rng.random(n) < 0.4
    creator = np.where(logged_by_colleague, front_line[rng.integers(0, len(front_line), n)], owner)
    modified = np.where(closed, closes, later_times(rng, created, people.end_ms[owner], share=0.6,
                                                    mean_delay_ms=DAY_MS))
    numbers = np.char.zfill((1000 + np.argsort(np.argsort(created, kind="stable"))).astype(str), 8)
    with TableWriter(store, "Case") as writer:
        ids = writer.new_ids(n)
        writer.write({
            "Id": ids, "CaseNumber": numbers.astype(object), "Subject": pick(rng, V.CASE_SUBJECTS, n),
            "OwnerId": people.ids[owner], "AccountId": accounts.ids[account],
            "ContactId": contacts.ids[contact], "Status": status.astype(object), "IsClosed": closed,
            "IsEscalated": escalated, "ClosedDate": DateTimes(closed_at),
            "Origin": pick(rng, ("Phone", "Email", "Web"), n, (0.4, 0.4, 0.2)),
            "Priority": pick(rng, ("High", "Medium", "Low"), n, (0.2, 0.5, 0.3)),
            "Type": pick(rng, ("Question", "Problem", "Feature Request"), n, (0.45, 0.45, 0.1)),
            "Reason": pick(rng, ("Installation", "Equipment Complexity", "Performance", "Breakdown", "Other"), n),
            "IsDeleted": 0, "CreatedById": people.ids[creator], "CreatedDate": DateTimes(created),
            "LastModifiedById": people.ids[owner], "LastModifiedDate": DateTimes(modified),
            "SystemModstamp": DateTimes(system_stamps(rng, modified, window)),
        })
    return Cases(ids, owner, contact, account, created, escalated, closes,
                 GroupedRecords(owner, people.size, created), GroupedRecords(np.zeros(n, dtype=np.int64), 1, created))


def write_case_comments(store: OrgStore, streams: RandomStreams, people: Population, cases: Cases,
                        window: Window) -> None:
    """Writes comments agents add, mostly on their own recent cases, sometimes on a colleague's."""
    rng = streams.stream("case-comments")
    author, at = people.acts(rng, "case_comments")
    own = cases.by_owner.recent_before(rng, author, at, 5)
    anyone = cases.by_time.recent_before(rng, np.zeros(len(author), dtype=np.int64), at, 200)
    case = np.where((own >= 0) & (rng.random(len(author)) < 0.8), own, anyone)
    keep = case >= 0
    author, at, case = author[keep], at[keep], case[keep]
    n = len(author)
    modified = later_times(rng, at, people.end_ms[author], share=0.1, mean_delay_ms=HOUR_MS)
    with TableWriter(store, "CaseComment") as writer:
        writer.write({
            "Id": writer.new_ids(n), "ParentId": cases.ids[case], "CommentBody": pick(rng, V.CASE_COMMENTS, n),
            "IsPublished": rng.random(n) < 0.3, "IsDeleted": 0, "CreatedById": people.ids[author],
            "CreatedDate": DateTimes(at), "LastModifiedById": people.ids[author],
            "LastModifiedDate": DateTimes(modified), "SystemModstamp": DateTimes(system_stamps(rng, modified, window)),
        })


def write_case_history(store: OrgStore, streams: RandomStreams, people: Population, cases: Cases,
                       window: Window) -> None:
    """Writes CaseHistory: 'Owner' rows (a user moves a case to another agent) and escalation rows.

    Leaders move cases of their own direct reports when they have some; others move any recent case.
    Owner values are user ids (DataType 'EntityId'), the new owner being the case's current owner.
    Escalation rows (Field 'Status') are made by the owner who escalated; they are noise a product
    must not count as reassignments.
    """
    rng = streams.stream("case-history")
    mover, moved_case, moved_at = _plan_reassignments(rng, people, cases, window)
    agents = people.of_personas("Case Solver", "Expert Agent")
    previous = agents[rng.integers(0, len(agents), len(mover))]
    escalated = np.flatnonzero(cases.escalated)
    owner = cases.owner[escalated]
    created = cases.created_ms[escalated]
    limit = np.minimum(np.minimum(cases.closes_ms[escalated], people.end_ms[owner]), window.end_ms)
    escalated_at = created + ((limit - created) * rng.uniform(0.05, 0.4, len(escalated))).astype(np.int64)
    escalated_at = np.clip(escalated_at, created, window.last_ms)
    with TableWriter(store, "CaseHistory") as writer:
        writer.write({
            "Id": writer.new_ids(len(mover)), "CaseId": cases.ids[moved_case], "Field": "Owner",
            "OldValue": people.ids[previous], "NewValue": people.ids[cases.owner[moved_case]],
            "DataType": "EntityId", "IsDeleted": 0, "CreatedById": people.ids[mover],
            "CreatedDate": DateTimes(moved_at),
        })
        writer.write({
            "Id": writer.new_ids(len(escalated)), "CaseId": cases.ids[escalated], "Field": "Status",
            "OldValue": "Working", "NewValue": "Escalated", "DataType": "Text", "IsDeleted": 0,
            "CreatedById": people.ids[owner], "CreatedDate": DateTimes(escalated_at),
        })


def _plan_reassignments(rng: np.random.Generator, people: Population, cases: Cases,
                        window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Who moves which case when: (mover, case, time), each time after the case was opened."""
    mover, at = people.acts(rng, "case_reassignments")
    managed = np.flatnonzero(people.manager >= 0)
    report = GroupedRecords(people.manager[managed], people.size).any_of(rng, mover)
    report = np.where(report >= 0, managed[np.maximum(report, 0)], -1)
    of_report = cases.by_owner.recent_before(rng, np.maximum(report, 0), at, 10)
    of_report = np.where(report >= 0, of_report, -1)
    anyone = cases.by_time.recent_before(rng, np.zeros(len(mover), dtype=np.int64), at, 300)
    case = np.where(of_report >= 0, of_report, anyone)
    keep = case >= 0
    mover, at, case = mover[keep], at[keep], case[keep]
    at = np.minimum(np.maximum(at, cases.created_ms[case] + MINUTE_MS), people.end_ms[mover] - 1)
    keep = at >= cases.created_ms[case]
    return mover[keep], case[keep], at[keep]


def write_articles(store: OrgStore, streams: RandomStreams, people: Population, window: Window) -> None:
    """Writes knowledge article versions users author (Expert Agents above all): online, draft or archived."""
    rng = streams.stream("articles")
    author, created = people.acts(rng, "articles")
    n = len(author)
    status = pick(rng, ("Online", "Draft", "Archived"), n, (0.6, 0.25, 0.15))
    limit = people.end_ms[author]
    published = np.minimum(created + (rng.exponential(2, n) * DAY_MS).astype(np.int64), limit - 1)
    published = np.where(status == "Draft", NO_TIME, np.maximum(published, created))
    modified = np.where(status == "Draft", later_times(rng, created, limit, share=0.5, mean_delay_ms=DAY_MS),
                        published)
    topic = pick(rng, V.ARTICLE_TOPICS, n)
    numbers = (100_000 + np.arange(n)).astype(str)
    with TableWriter(store, "KnowledgeArticleVersion") as writer:
        ids = writer.new_ids(n)
        writer.write({
            "Id": ids, "KnowledgeArticleId": issue_ids(store, "kA0", n, writer.db),
            "ArticleNumber": text_join("000", numbers), "Title": topic,
            "UrlName": text_join(np.strings.replace(np.strings.lower(topic.astype(str)), " ", "-"), "-", numbers),
            "Summary": text_join("How to: ", topic), "PublishStatus": status, "Language": "en_US",
            "VersionNumber": 1 + rng.poisson(0.4, n), "IsLatestVersion": 1,
            "FirstPublishedDate": DateTimes(published), "LastPublishedDate": DateTimes(published),
            "OwnerId": people.ids[author], "IsDeleted": 0, "CreatedById": people.ids[author],
            "CreatedDate": DateTimes(created), "LastModifiedById": people.ids[author],
            "LastModifiedDate": DateTimes(modified), "SystemModstamp": DateTimes(system_stamps(rng, modified, window)),
        })
