"""Marketing work: Campaigns, ListEmail sends and EmailTemplates.

Marketing Managers and Specialists own campaigns, Specialists send the most list (bulk) emails, and
Designer / Developers build the email templates. Each sent list email also logs a few Tasks with
TaskSubtype 'ListEmail' (written with the other Tasks in `activities`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sandbox.generate import vocabulary as V
from sandbox.generate.ownership import GroupedRecords
from sandbox.generate.people import Population
from sandbox.generate.randomness import RandomStreams
from sandbox.generate.timing import DAY_MS, HOUR_MS, Window, later_times, system_stamps
from sandbox.generate.writing import NO_TIME, Dates, DateTimes, TableWriter, lookup, pick, text_join
from sandbox.store import OrgStore


@dataclass
class Campaigns:
    ids: np.ndarray
    by_owner: GroupedRecords
    by_time: GroupedRecords


@dataclass
class ListEmailSends:
    """Sent list emails: who sent them, when, and with what subject (for their 'ListEmail' Tasks)."""

    owner: np.ndarray
    sent_ms: np.ndarray
    subjects: np.ndarray


def write_campaigns(store: OrgStore, streams: RandomStreams, people: Population, window: Window) -> Campaigns:
    """Writes campaigns users create and own; some are children of an earlier campaign."""
    rng = streams.stream("campaigns")
    creator, created = people.acts(rng, "campaigns")
    n = len(creator)
    order = np.argsort(created, kind="stable")
    creator, created = creator[order], created[order]
    owner = people.others_or_manager(rng, creator, 0.1)
    start = created + (rng.uniform(0, 30, n) * DAY_MS).astype(np.int64)
    end = start + (rng.uniform(7, 60, n) * DAY_MS).astype(np.int64)
    status = np.where(end < window.end_ms, "Completed", np.where(start <= window.end_ms, "In Progress", "Planned"))
    status = np.where(rng.random(n) < 0.03, "Aborted", status).astype(object)
    parent = np.where(rng.random(n) < 0.15, (rng.random(n) * np.arange(n)).astype(np.int64), -1)
    parent = np.where(parent == np.arange(n), -1, parent)
    year = np.datetime_as_string(created.astype("datetime64[ms]").astype("datetime64[Y]"), unit="Y")
    modified = later_times(rng, created, people.end_ms[creator], share=0.6, mean_delay_ms=7 * DAY_MS)
    leads = rng.poisson(40, n)
    with TableWriter(store, "Campaign") as writer:
        ids = writer.new_ids(n)
        writer.write({
            "Id": ids, "Name": text_join(pick(rng, V.CAMPAIGN_TOPICS, n), " ", year),
            "Type": pick(rng, V.CAMPAIGN_TYPES, n), "Status": status,
            "IsActive": np.isin(status, ["Planned", "In Progress"]), "StartDate": Dates(start),
            "EndDate": Dates(end), "ParentId": lookup(ids, parent), "OwnerId": people.ids[owner],
            "NumberOfLeads": leads, "NumberOfContacts": rng.poisson(120, n),
            "NumberOfResponses": rng.binomial(leads, 0.2), "BudgetedCost": np.round(rng.lognormal(9, 1, n), -2),
            "IsDeleted": 0, "CreatedById": people.ids[creator], "CreatedDate": DateTimes(created),
            "LastModifiedById": people.ids[creator], "LastModifiedDate": DateTimes(modified),
            "SystemModstamp": DateTimes(system_stamps(rng, modified, window)),
        })
    return Campaigns(ids, GroupedRecords(owner, people.size, created),
                     GroupedRecords(np.zeros(n, dtype=np.int64), 1, created))


def write_list_emails(store: OrgStore, streams: RandomStreams, people: Population, campaigns: Campaigns,
                      window: Window) -> ListEmailSends:
    """Writes ListEmail records (bulk sends); returns the sent ones for their Tasks."""
    rng = streams.stream("list-emails")
    owner, created = people.acts(rng, "list_emails")
    n = len(owner)
    status = pick(rng, ("Sent", "Scheduled", "Draft"), n, (0.85, 0.05, 0.1))
    sent = status == "Sent"
    scheduled = np.where(status == "Draft", NO_TIME,
                         np.minimum(created + (rng.exponential(2, n) * HOUR_MS).astype(np.int64),
                                    people.end_ms[owner] - 1))
    scheduled = np.where(status == "Draft", NO_TIME, np.maximum(scheduled, created))
    own = campaigns.by_owner.recent_before(rng, owner, created, 3)
    anyone = campaigns.by_time.recent_before(rng, np.zeros(n, dtype=np.int64), created, 30)
    campaign = np.where(own >= 0, own, np.where(rng.random(n) < 0.5, anyone, -1))
    subjects = pick(rng, V.LIST_EMAIL_SUBJECTS, n)
    emails = np.strings.replace(people.usernames[owner].astype(str), "@persona-sync.sandbox", "@acme.example.com")
    modified = np.where(sent, scheduled, later_times(rng, created, people.end_ms[owner], share=0.3,
                                                     mean_delay_ms=DAY_MS))
    with TableWriter(store, "ListEmail") as writer:
        writer.write({
            "Id": writer.new_ids(n), "Name": np.strings.slice(subjects.astype(str), 12, None).astype(object),
            "Subject": np.strings.slice(subjects.astype(str), 12, None).astype(object), "Status": status,
            "FromAddress": emails.astype(object), "FromName": people.full_names()[owner],
            "ScheduledDate": DateTimes(scheduled),
            "TotalSent": np.where(sent, np.round(rng.lognormal(np.log(400), 1, n)).astype(np.int64), 0),
            "CampaignId": lookup(campaigns.ids, campaign), "OwnerId": people.ids[owner], "IsDeleted": 0,
            "CreatedById": people.ids[owner], "CreatedDate": DateTimes(created),
            "LastModifiedById": people.ids[owner], "LastModifiedDate": DateTimes(modified),
            "SystemModstamp": DateTimes(system_stamps(rng, modified, window)),
        })
    return ListEmailSends(owner[sent], scheduled[sent], subjects[sent])


def write_email_templates(store: OrgStore, streams: RandomStreams, people: Population, window: Window) -> None:
    """Writes the email templates users build (Designer / Developers above all)."""
    rng = streams.stream("email-templates")
    owner, created = people.acts(rng, "email_templates")
    n = len(owner)
    topic = pick(rng, V.TEMPLATE_TOPICS, n)
    numbers = np.arange(1, n + 1).astype(str)
    used = rng.random(n) < 0.6
    last_used = np.where(used, created + ((window.end_ms - created) * rng.random(n)).astype(np.int64), NO_TIME)
    modified = later_times(rng, created, people.end_ms[owner], share=0.5, mean_delay_ms=5 * DAY_MS)
    with TableWriter(store, "EmailTemplate") as writer:
        writer.write({
            "Id": writer.new_ids(n), "Name": text_join(topic, " ", numbers),
            "DeveloperName": text_join(np.strings.replace(topic.astype(str), " ", "_"), "_", numbers),
            "OwnerId": people.ids[owner], "FolderId": None,
            "TemplateType": pick(rng, ("html", "custom", "text", "visualforce"), n, (0.5, 0.25, 0.2, 0.05)),
            "IsActive": rng.random(n) < 0.85, "TimesUsed": np.where(used, 1 + rng.poisson(30, n), 0),
            "LastUsedDate": DateTimes(last_used), "Subject": text_join(topic, " - Acme"),
            "CreatedById": people.ids[owner], "CreatedDate": DateTimes(created),
            "LastModifiedById": people.ids[owner], "LastModifiedDate": DateTimes(modified),
            "SystemModstamp": DateTimes(system_stamps(rng, modified, window)),
        })
