"""Everyday activity: Tasks (calls, emails, list emails, to-dos), Events (meetings), ContactHistory
(contact updates) and FeedItems (Chatter posts).

Tasks are the biggest object (over a million rows in the large org), so they are generated and written
in chunks of users; each chunk has its own random stream, so the result does not depend on memory.
Every activity points at records its actor plausibly worked on: sales people at their own accounts,
opportunities, contacts and leads; service people at their own recent cases and those cases' contacts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sandbox.generate import vocabulary as V
from sandbox.generate.customers import Accounts, Contacts, Leads, Opportunities, own_or_any_account
from sandbox.generate.marketing import ListEmailSends
from sandbox.generate.people import Population
from sandbox.generate.randomness import RandomStreams
from sandbox.generate.service import Cases
from sandbox.generate.timing import (DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS, Window, later_times, system_stamps,
                                     working_times)
from sandbox.generate.writing import NO_TIME, Dates, DateTimes, TableWriter, lookup, pick, user_chunks

if TYPE_CHECKING:
    from sandbox.generate.worlds import World

TASK_CHUNK_ROWS = 250_000
_SERVICE = 1  # Population.cloud code of the Service cloud
# By the user's (primary) cloud, in Population.cloud order (Sales, Service, Marketing): the share of their
# Tasks about no record (marketing work is mostly internal), and of their calls that are inbound (service
# lines take calls, sellers make them).
INTERNAL_TASK_SHARE_BY_CLOUD = (0.05, 0.05, 0.5)
INBOUND_CALL_SHARE_BY_CLOUD = (0.15, 0.65, 0.1)


@dataclass
class WorkedRecords:
    """The records activities can point at."""

    accounts: Accounts
    contacts: Contacts
    opportunities: Opportunities
    leads: Leads
    cases: Cases


@dataclass
class Targets:
    """What each activity row is about: WhoId and WhatId values, and the contact touched (-1 for none)."""

    who: np.ndarray
    what: np.ndarray
    contact: np.ndarray


def choose_targets(rng: np.random.Generator, people: Population, records: WorkedRecords, actors: np.ndarray,
                   at: np.ndarray, internal_share: np.ndarray | float = 0.0) -> Targets:
    """The Who and What of each activity, following the actor's line of work.

    Service people: one of their recent cases and its contact. Everyone else: one of their recent
    opportunities or one of their accounts with one of its contacts, or one of their recent leads
    (a lead as Who forbids a What, as in Salesforce). `internal_share` of rows point at nothing.
    """
    n = len(actors)
    service = people.cloud[actors] == _SERVICE
    opportunity = records.opportunities.by_owner.recent_before(rng, actors, at, 5)
    use_opportunity = (opportunity >= 0) & (rng.random(n) < 0.5)
    account = own_or_any_account(rng, records.accounts, actors)
    account = np.where(use_opportunity, records.opportunities.account[np.maximum(opportunity, 0)], account)
    contact = records.contacts.of_accounts(rng, account)
    contact = np.where(rng.random(n) < 0.85, contact, -1)
    lead = records.leads.by_owner.recent_before(rng, actors, at, 10)
    use_lead = (lead >= 0) & (rng.random(n) < 0.45)
    case = records.cases.by_owner.recent_before(rng, actors, at, 5)
    case_contact = np.where(case >= 0, records.cases.contact[np.maximum(case, 0)], -1)

    what = np.where(use_opportunity, lookup(records.opportunities.ids, opportunity), records.accounts.ids[account])
    who = lookup(records.contacts.ids, contact)
    what = np.where(use_lead, None, what)
    who = np.where(use_lead, lookup(records.leads.ids, lead), who)
    touched = np.where(use_lead, -1, contact)
    what = np.where(service, lookup(records.cases.ids, case), what)
    who = np.where(service, lookup(records.contacts.ids, case_contact), who)
    touched = np.where(service, case_contact, touched)
    internal = rng.random(n) < internal_share
    what = np.where(internal, None, what)
    who = np.where(internal, None, who)
    touched = np.where(internal, -1, touched)
    return Targets(who, what, touched)


def unlinked_as_the_world_logs(rng: np.random.Generator, targets: Targets, world: World) -> Targets:
    """The targets with WhatId and WhoId blanked as often as the world's fill rates say.

    Why: in many orgs people log a call or book a meeting without relating it to the customer, so a
    product cannot take an empty WhatId/WhoId to mean internal work. A blanked WhoId touches no contact
    (no LastActivityDate), as in Salesforce. In the default world (fill rates 1.0) nothing changes and
    `rng` is not used.
    """
    if world.what_fill >= 1.0 and world.who_fill >= 1.0:
        return targets
    n = len(targets.who)
    keep_what = rng.random(n) < world.what_fill
    keep_who = rng.random(n) < world.who_fill
    return Targets(np.where(keep_who, targets.who, None), np.where(keep_what, targets.what, None),
                   np.where(keep_who, targets.contact, -1))


# --- Tasks ------------------------------------------------------------------------------------------

def write_tasks(store, streams: RandomStreams, people: Population, records: WorkedRecords,
                sends: ListEmailSends, window: Window, world: World) -> None:
    """Writes all Tasks in one transaction: calls, emails and to-dos per user chunk, then list-email Tasks.

    The world decides whether calls carry CallType (and a duration) and how often WhatId and WhoId are
    filled; its per-row blanking has a stream of its own ("task-links"), so the rest of a Task is as in
    a world that fills every link.
    """
    rng = streams.stream("task-counts")
    counts = {kind: people.draw_counts(rng, kind) for kind in ("calls", "emails", "todos")}
    per_user = sum(counts.values())
    with TableWriter(store, "Task") as writer:
        for part, (first, last) in enumerate(user_chunks(per_user, TASK_CHUNK_ROWS)):
            chunk_rng = streams.stream("tasks", part)
            links_rng = streams.stream("task-links", part)
            users = np.arange(first, last)
            for kind, kind_counts in counts.items():
                actors = np.repeat(users, kind_counts[first:last])
                writer.write(_task_rows(chunk_rng, links_rng, writer, people, records, kind, actors, window, world))
        writer.write(_list_email_task_rows(streams.stream("list-email-tasks"), writer, people, records, sends, window))


def _task_rows(rng: np.random.Generator, links_rng: np.random.Generator, writer: TableWriter, people: Population,
               records: WorkedRecords, kind: str, actors: np.ndarray, window: Window, world: World) -> dict:
    """Task columns for one kind ('calls', 'emails' or 'todos'), one row per entry of `actors`."""
    n = len(actors)
    end = people.end_ms[actors]
    at = working_times(rng, people.start_ms[actors], end, people.tz_hours[actors])
    cloud = people.cloud[actors]
    service = cloud == _SERVICE
    targets = choose_targets(rng, people, records, actors, at,
                             internal_share=np.array(INTERNAL_TASK_SHARE_BY_CLOUD)[cloud])
    targets = unlinked_as_the_world_logs(links_rng, targets, world)
    records.contacts.record_activity(targets.contact, at)
    creator = actors
    call_type = duration = None
    if kind == "calls":
        subject = np.where(service, pick(rng, V.SERVICE_CALL_SUBJECTS, n), pick(rng, V.SALES_CALL_SUBJECTS, n))
        subtype, task_type = "Call", "Call"
        inbound = np.array(INBOUND_CALL_SHARE_BY_CLOUD)[cloud]
        draw = rng.random(n)
        call_type = np.where(draw < inbound, "Inbound", np.where(draw < 0.95, "Outbound", "Internal")).astype(object)
        duration = np.maximum(15, rng.lognormal(np.log(240), 0.8, n)).astype(np.int64)
        if not world.call_type_logged:  # no CTI: calls are logged by hand, with neither field filled
            call_type = duration = None
        completed = np.ones(n, dtype=bool)
        due = at
    elif kind == "emails":
        subject = np.where(service, pick(rng, V.SERVICE_EMAIL_SUBJECTS, n), pick(rng, V.SALES_EMAIL_SUBJECTS, n))
        subtype, task_type = "Email", "Email"
        completed = np.ones(n, dtype=bool)
        due = at
    else:  # to-dos: follow-ups, some assigned by the manager, some still open
        subject = pick(rng, V.TODO_SUBJECTS, n)
        subtype = "Task"
        task_type = pick(rng, ("Other", None, "Call", "Meeting"), n, (0.5, 0.3, 0.1, 0.1))
        creator = people.others_or_manager(rng, actors, 0.08)
        due = at + (rng.uniform(0, 14, n) * DAY_MS).astype(np.int64)
        completed = rng.random(n) < 0.6
    done_at = later_times(rng, at, end, share=1.0, mean_delay_ms=2 * DAY_MS) if kind == "todos" else at
    status = np.where(completed, "Completed", pick(rng, V.TASK_STATUSES_OPEN, n)).astype(object)
    modified = np.where(completed, done_at, later_times(rng, at, end, share=0.2, mean_delay_ms=DAY_MS))
    return {
        "Id": writer.new_ids(n), "Subject": subject.astype(object), "OwnerId": people.ids[actors],
        "WhoId": targets.who, "WhatId": targets.what, "TaskSubtype": subtype, "Type": task_type,
        "Status": status, "IsClosed": completed,
        "Priority": pick(rng, ("High", "Normal", "Low"), n, (0.1, 0.8, 0.1)), "ActivityDate": Dates(due),
        "CompletedDateTime": DateTimes(np.where(completed, done_at, NO_TIME)), "CallType": call_type,
        "CallDurationInSeconds": duration, "IsArchived": 0, "IsDeleted": 0,
        "CreatedById": people.ids[creator], "CreatedDate": DateTimes(at),
        "LastModifiedById": people.ids[actors], "LastModifiedDate": DateTimes(modified),
        "SystemModstamp": DateTimes(system_stamps(rng, modified, window)),
    }


def _list_email_task_rows(rng: np.random.Generator, writer: TableWriter, people: Population,
                          records: WorkedRecords, sends: ListEmailSends, window: Window) -> dict:
    """A few 'ListEmail' Tasks per sent list email (one per recipient in Salesforce; a sample here)."""
    per_send = 1 + rng.poisson(1.0, len(sends.owner))
    send = np.repeat(np.arange(len(sends.owner)), per_send)
    actors = sends.owner[send]
    at = np.minimum(sends.sent_ms[send] + (rng.random(len(send)) * 60 * SECOND_MS).astype(np.int64),
                    people.end_ms[actors] - 1)
    at = np.maximum(at, sends.sent_ms[send])
    contact = rng.integers(0, records.contacts.base_count, len(send))
    records.contacts.record_activity(contact, at)
    n = len(send)
    return {
        "Id": writer.new_ids(n), "Subject": sends.subjects[send], "OwnerId": people.ids[actors],
        "WhoId": records.contacts.ids[contact], "WhatId": None, "TaskSubtype": "ListEmail", "Type": "Email",
        "Status": "Completed", "IsClosed": 1, "Priority": "Normal", "ActivityDate": Dates(at),
        "CompletedDateTime": DateTimes(at), "CallType": None, "CallDurationInSeconds": None, "IsArchived": 0,
        "IsDeleted": 0, "CreatedById": people.ids[actors], "CreatedDate": DateTimes(at),
        "LastModifiedById": people.ids[actors], "LastModifiedDate": DateTimes(at),
        "SystemModstamp": DateTimes(system_stamps(rng, at, window)),
    }


# --- Events -----------------------------------------------------------------------------------------

def write_events(store, streams: RandomStreams, people: Population, records: WorkedRecords,
                 window: Window, world: World) -> None:
    """Writes meetings: with a customer (on the owner's accounts) as often as the persona's
    CUSTOMER_MEETING_SHARE says (a hybrid's mixes both personas'), internal ones otherwise.

    Meetings are booked ahead (CreatedDate up to ten days before StartDateTime) and end before as_of.
    WhatId and WhoId are filled as often as the world says (blanked from the "event-links" stream).
    """
    rng = streams.stream("events")
    actors = np.repeat(np.arange(people.size), people.draw_counts(rng, "meetings"))
    n = len(actors)
    end = people.end_ms[actors]
    duration = pick(rng, (30, 30, 45, 60, 60, 90, 120), n).astype(np.int64)
    start = working_times(rng, people.start_ms[actors], end, people.tz_hours[actors])
    start = start - start % (15 * MINUTE_MS)
    start = np.maximum(np.minimum(start, end - duration * MINUTE_MS - 1), people.start_ms[actors])
    finish = np.maximum(np.minimum(start + duration * MINUTE_MS, end - 1), start)
    customer_share = people.customer_meeting_shares()
    external = rng.random(n) < customer_share[actors]
    targets = choose_targets(rng, people, records, actors, start, internal_share=np.where(external, 0.0, 1.0))
    targets = unlinked_as_the_world_logs(streams.stream("event-links"), targets, world)
    records.contacts.record_activity(targets.contact, start)
    subject = np.where(external, pick(rng, V.SALES_MEETING_SUBJECTS, n), pick(rng, V.INTERNAL_MEETING_SUBJECTS, n))
    booked = np.maximum(start - (rng.uniform(0, 10, n) * DAY_MS).astype(np.int64), people.start_ms[actors])
    booked = np.minimum(booked, start)
    modified = later_times(rng, booked, np.maximum(start, booked + 1), share=0.3, mean_delay_ms=DAY_MS)
    with TableWriter(store, "Event") as writer:
        writer.write({
            "Id": writer.new_ids(n), "Subject": subject.astype(object), "OwnerId": people.ids[actors],
            "WhoId": targets.who, "WhatId": targets.what, "Type": "Meeting", "EventSubtype": "Event",
            "StartDateTime": DateTimes(start), "EndDateTime": DateTimes(finish), "ActivityDateTime": DateTimes(start),
            "DurationInMinutes": ((finish - start) // MINUTE_MS).astype(np.int64),
            "Location": pick(rng, V.MEETING_LOCATIONS, n), "IsArchived": 0, "IsDeleted": 0,
            "CreatedById": people.ids[people.others_or_manager(rng, actors, 0.05)], "CreatedDate": DateTimes(booked),
            "LastModifiedById": people.ids[actors], "LastModifiedDate": DateTimes(modified),
            "SystemModstamp": DateTimes(system_stamps(rng, modified, window)),
        })


# --- ContactHistory ---------------------------------------------------------------------------------

_CONTACT_FIELDS = {
    "Phone": ("Phone", ("+1 555 0101", "+1 555 0199", "+44 20 7946 0018", "+1 555 0142", None)),
    "Email": ("Email", ("old@example.com", "new@example.com", "info@example.org", None)),
    "Title": ("Text", V.CUSTOMER_TITLES),
    "MailingCity": ("Text", ("Boston", "Chicago", "Denver", "London", "Berlin", "Austin", None)),
    "LeadSource": ("Text", V.LEAD_SOURCES),
    "Department": ("Text", ("Finance", "IT", "Operations", "Procurement", None)),
}


def write_contact_history(store, streams: RandomStreams, people: Population, records: WorkedRecords,
                          window: Window) -> None:
    """Writes ContactHistory: field changes users make on contacts, plus 'created' rows for new contacts.

    Service people update the contacts of their cases; others their own contacts. Also sets each
    contact's LastModifiedDate/LastModifiedById to its latest change.
    """
    rng = streams.stream("contact-history")
    contacts = records.contacts
    editor, at = people.acts(rng, "contact_updates")
    n = len(editor)
    case = records.cases.by_owner.recent_before(rng, editor, at, 5)
    of_case = np.where(case >= 0, records.cases.contact[np.maximum(case, 0)], -1)
    own = contacts.by_owner.recent_before(rng, editor, at, 50)
    anyone = rng.integers(0, contacts.base_count, n)
    contact = np.where(people.cloud[editor] == _SERVICE, of_case, own)
    contact = np.where(contact >= 0, contact, anyone)
    field = pick(rng, tuple(_CONTACT_FIELDS), n, (0.25, 0.2, 0.2, 0.15, 0.1, 0.1))
    old, new, data_type = (np.empty(n, dtype=object) for _ in range(3))
    for name, (kind, values) in _CONTACT_FIELDS.items():
        rows = field == name
        old[rows], new[rows], data_type[rows] = pick(rng, values, int(rows.sum())), pick(
            rng, values, int(rows.sum())), kind
    created_rows = np.arange(contacts.base_count, len(contacts.ids))
    _remember_last_change(contacts, contact, editor, at)
    with TableWriter(store, "ContactHistory") as writer:
        writer.write({
            "Id": writer.new_ids(n), "ContactId": contacts.ids[contact], "Field": field, "OldValue": old,
            "NewValue": new, "DataType": data_type, "IsDeleted": 0, "CreatedById": people.ids[editor],
            "CreatedDate": DateTimes(at),
        })
        writer.write({
            "Id": writer.new_ids(len(created_rows)), "ContactId": contacts.ids[created_rows], "Field": "created",
            "OldValue": None, "NewValue": None, "DataType": None, "IsDeleted": 0,
            "CreatedById": people.ids[contacts.creator[created_rows]],
            "CreatedDate": DateTimes(contacts.created_ms[created_rows]),
        })


def _remember_last_change(contacts: Contacts, contact: np.ndarray, editor: np.ndarray, at: np.ndarray) -> None:
    order = np.lexsort((at, contact))
    contact, editor, at = contact[order], editor[order], at[order]
    last = np.r_[contact[1:] != contact[:-1], True] if len(contact) else np.zeros(0, dtype=bool)
    later = at[last] > contacts.modified_ms[contact[last]]
    targets = contact[last][later]
    contacts.modified_ms[targets] = at[last][later]
    contacts.modifier[targets] = editor[last][later]


# --- FeedItem ---------------------------------------------------------------------------------------

def write_chatter(store, streams: RandomStreams, people: Population, records: WorkedRecords,
                  window: Window) -> None:
    """Writes Chatter posts: on the author's own feed, or on an account, opportunity or case they work."""
    rng = streams.stream("chatter")
    author, at = people.acts(rng, "chatter_posts", after_hours_share=0.12)
    n = len(author)
    where_posted = rng.random(n)
    account = records.accounts.by_owner.any_of(rng, author)
    opportunity = records.opportunities.by_owner.recent_before(rng, author, at, 5)
    case = records.cases.by_owner.recent_before(rng, author, at, 5)
    parent = people.ids[author].copy()
    on_account = (where_posted >= 0.4) & (where_posted < 0.6) & (account >= 0)
    on_opportunity = (where_posted >= 0.6) & (where_posted < 0.75) & (opportunity >= 0)
    on_case = (where_posted >= 0.75) & (case >= 0)
    parent[on_account] = records.accounts.ids[account[on_account]]
    parent[on_opportunity] = records.opportunities.ids[opportunity[on_opportunity]]
    parent[on_case] = records.cases.ids[case[on_case]]
    post_type = pick(rng, V.FEED_TYPES, n, V.FEED_TYPE_WEIGHTS)
    link = post_type == "LinkPost"
    modified = later_times(rng, at, people.end_ms[author], share=0.05, mean_delay_ms=HOUR_MS)
    with TableWriter(store, "FeedItem") as writer:
        writer.write({
            "Id": writer.new_ids(n), "ParentId": parent, "Type": post_type, "Body": pick(rng, V.CHATTER_BODIES, n),
            "Title": np.where(link, "Shared link", None), "LinkUrl": np.where(link, "https://www.example.com/", None),
            "CommentCount": rng.poisson(1.0, n), "LikeCount": rng.poisson(1.5, n),
            "InsertedById": people.ids[author], "IsDeleted": 0, "CreatedById": people.ids[author],
            "CreatedDate": DateTimes(at), "LastModifiedById": people.ids[author],
            "LastModifiedDate": DateTimes(modified), "SystemModstamp": DateTimes(system_stamps(rng, modified, window)),
        })
