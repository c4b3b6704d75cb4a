"""The customer side of the org and the sales work on it: Accounts, Contacts, Leads, Opportunities,
Quotes and Contracts.

Accounts and most Contacts predate the history window (the customer base the users inherit); contacts
created in the window, leads, opportunities, quotes and contracts are activity, drawn from each user's
rates. Contacts are planned here but written later (`write_contacts`), once the activities that update
them (ContactHistory, Tasks, Events) have set LastModifiedDate and LastActivityDate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sandbox.generate import vocabulary as V
from sandbox.generate.ownership import GroupedRecords
from sandbox.generate.people import Population
from sandbox.generate.randomness import RandomStreams
from sandbox.generate.timing import DAY_MS, HOUR_MS, Window, later_times, system_stamps, working_times
from sandbox.generate.writing import NO_TIME, Dates, DateTimes, TableWriter, issue_ids, lookup, pick, text_join
from sandbox.store import OrgStore

ACCOUNTS_PER_USER = 3
# A share of new leads is routed to a seller (an active Pipeline Builder or Deal Closer), who owns it.
ROUTED_LEAD_SHARE = 0.15
# How long a deal stays open: lognormal days (median, sigma of the log).
DEAL_DAYS_MEDIAN, DEAL_DAYS_SIGMA = 35, 0.7
BASE_CONTACTS_PER_USER = 5


@dataclass
class Accounts:
    ids: np.ndarray
    owner: np.ndarray
    names: np.ndarray
    by_owner: GroupedRecords


@dataclass
class Contacts:
    """Every contact (pre-existing first, then those created in the window), with mutable activity stamps."""

    ids: np.ndarray
    account: np.ndarray
    owner: np.ndarray
    creator: np.ndarray
    created_ms: np.ndarray
    first_names: np.ndarray
    last_names: np.ndarray
    base_count: int
    modified_ms: np.ndarray
    modifier: np.ndarray
    last_activity_ms: np.ndarray
    by_account: GroupedRecords
    by_owner: GroupedRecords

    def of_accounts(self, rng: np.random.Generator, accounts: np.ndarray) -> np.ndarray:
        """A pre-existing contact of each account (-1 where the account is -1 or has none)."""
        picked = self.by_account.any_of(rng, np.maximum(accounts, 0))
        return np.where(accounts >= 0, picked, -1)

    def record_activity(self, contacts: np.ndarray, times: np.ndarray) -> None:
        """Remembers activity on contacts, for their LastActivityDate."""
        found = contacts >= 0
        np.maximum.at(self.last_activity_ms, contacts[found], times[found])


@dataclass
class Opportunities:
    ids: np.ndarray
    owner: np.ndarray
    account: np.ndarray
    created_ms: np.ndarray
    by_owner: GroupedRecords


@dataclass
class Leads:
    ids: np.ndarray
    owner: np.ndarray
    created_ms: np.ndarray
    by_owner: GroupedRecords


def sales_weight(people: Population) -> np.ndarray:
    """How likely a user is to own customer records: people who sell own most accounts."""
    weight = people.expected("opportunities") * 4 + people.expected("meetings") + people.expected("calls") * 0.3
    return weight + 0.02 * weight.mean()


def _choose_users(rng: np.random.Generator, weights: np.ndarray, count: int) -> np.ndarray:
    return rng.choice(len(weights), size=count, p=weights / weights.sum())


def _company_names(rng: np.random.Generator, count: int) -> np.ndarray:
    return np.strings.strip(text_join(pick(rng, V.COMPANY_HEADS, count), " ", pick(rng, V.COMPANY_TAILS, count),
                                      " ", pick(rng, V.COMPANY_SUFFIXES, count)).astype(str)).astype(object)


def _emails(rng: np.random.Generator, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    local = np.strings.lower(text_join(first, ".", last).astype(str))
    local = np.strings.replace(np.strings.replace(local, "'", ""), "ü", "u")
    return text_join(local, "@", pick(rng, V.EMAIL_DOMAINS, len(first)))


def _phones(rng: np.random.Generator, count: int) -> np.ndarray:
    return text_join("+1 555 ", np.char.zfill(rng.integers(0, 10_000_000, count).astype(str), 7))


def write_accounts(store: OrgStore, streams: RandomStreams, people: Population, window: Window) -> Accounts:
    """Writes the customer base: accounts owned mostly by the people who sell, created before the window."""
    rng = streams.stream("accounts")
    n = people.size * ACCOUNTS_PER_USER
    owner = _choose_users(rng, sales_weight(people), n)
    created = window.start_ms - (rng.uniform(1, 3 * 365, n) * DAY_MS).astype(np.int64)
    touched = rng.random(n) < 0.4
    in_window = working_times(rng, people.start_ms[owner], people.end_ms[owner], people.tz_hours[owner])
    modified = np.where(touched, in_window, later_times(rng, created, window.start_ms, share=0.6,
                                                         mean_delay_ms=90 * DAY_MS))
    modifier = people.others_or_manager(rng, owner, 0.1)
    creator = people.others_or_manager(rng, owner, 0.3)
    names = _company_names(rng, n)
    # A few accounts belong to a parent: an account listed earlier (never itself).
    has_parent = (rng.random(n) < 0.05) & (np.arange(n) > 0)
    parent = np.where(has_parent, (rng.random(n) * np.arange(n)).astype(np.int64), -1)
    with TableWriter(store, "Account") as writer:
        ids = writer.new_ids(n)
        writer.write({
            "Id": ids, "Name": names, "Type": pick(rng, V.ACCOUNT_TYPES, n), "Industry": pick(rng, V.INDUSTRIES, n),
            "BillingCountry": pick(rng, V.COUNTRIES, n),
            "AnnualRevenue": np.round(rng.lognormal(16, 1.5, n), -3),
            "NumberOfEmployees": np.round(rng.lognormal(5, 1.5, n)).astype(np.int64) + 1,
            "ParentId": lookup(ids, parent),
            "OwnerId": people.ids[owner], "IsDeleted": 0,
            "CreatedById": people.ids[creator], "CreatedDate": DateTimes(created),
            "LastModifiedById": people.ids[modifier], "LastModifiedDate": DateTimes(modified),
            "SystemModstamp": DateTimes(system_stamps(rng, modified, window)),
        })
    return Accounts(ids, owner, names, GroupedRecords(owner, people.size))


def own_or_any_account(rng: np.random.Generator, accounts: Accounts, users: np.ndarray,
                       own_share: float = 0.85) -> np.ndarray:
    """An account for each acting user: usually one they own, else any account."""
    own = accounts.by_owner.any_of(rng, users)
    anyone = rng.integers(0, len(accounts.ids), len(users))
    return np.where((own >= 0) & (rng.random(len(users)) < own_share), own, anyone)


def plan_contacts(store: OrgStore, streams: RandomStreams, people: Population, accounts: Accounts,
                  window: Window) -> Contacts:
    """Plans every contact: the inherited base, and the ones users create in the window (an activity)."""
    rng = streams.stream("contacts")
    n_base = people.size * BASE_CONTACTS_PER_USER
    base_account = rng.integers(0, len(accounts.ids), n_base)
    base_owner = np.where(rng.random(n_base) < 0.8, accounts.owner[base_account],
                          _choose_users(rng, sales_weight(people), n_base))
    base_created = window.start_ms - (rng.uniform(1, 2 * 365, n_base) * DAY_MS).astype(np.int64)

    per_user = people.draw_counts(rng, "contacts_created")
    creator = np.repeat(np.arange(people.size), per_user)
    created = working_times(rng, people.start_ms[creator], people.end_ms[creator], people.tz_hours[creator])
    account = own_or_any_account(rng, accounts, creator)
    owner = np.where(rng.random(len(creator)) < 0.9, creator, accounts.owner[account])

    all_account = np.concatenate([base_account, account])
    all_owner = np.concatenate([base_owner, owner])
    all_created = np.concatenate([base_created, created])
    all_creator = np.concatenate([people.others_or_manager(rng, base_owner, 0.3), creator])
    total = len(all_account)
    ids = issue_ids(store, "003", total)
    first = pick(rng, V.FIRST_NAMES, total)
    last = pick(rng, V.LAST_NAMES, total)
    modified = later_times(rng, all_created, np.where(np.arange(total) < n_base, window.start_ms, window.end_ms),
                           share=0.3, mean_delay_ms=20 * DAY_MS)
    return Contacts(
        ids=ids, account=all_account, owner=all_owner, creator=all_creator, created_ms=all_created,
        first_names=first, last_names=last, base_count=n_base, modified_ms=modified, modifier=all_creator.copy(),
        last_activity_ms=np.full(total, NO_TIME, dtype=np.int64),
        by_account=GroupedRecords(base_account, len(accounts.ids)),
        by_owner=GroupedRecords(all_owner, people.size, all_created),
    )


def write_contacts(store: OrgStore, streams: RandomStreams, people: Population, accounts: Accounts,
                   contacts: Contacts, window: Window) -> None:
    """Writes all contacts, with LastModified and LastActivityDate from the activities generated since."""
    rng = streams.stream("contacts-write")
    n = len(contacts.ids)
    with TableWriter(store, "Contact") as writer:
        writer.write({
            "Id": contacts.ids, "AccountId": accounts.ids[contacts.account],
            "FirstName": contacts.first_names, "LastName": contacts.last_names,
            "Name": text_join(contacts.first_names, " ", contacts.last_names),
            "Email": _emails(rng, contacts.first_names, contacts.last_names), "Phone": _phones(rng, n),
            "Title": pick(rng, V.CUSTOMER_TITLES, n), "LeadSource": pick(rng, V.LEAD_SOURCES, n),
            "OwnerId": people.ids[contacts.owner],
            "LastActivityDate": Dates(contacts.last_activity_ms), "IsDeleted": 0,
            "CreatedById": people.ids[contacts.creator], "CreatedDate": DateTimes(contacts.created_ms),
            "LastModifiedById": people.ids[contacts.modifier], "LastModifiedDate": DateTimes(contacts.modified_ms),
            "SystemModstamp": DateTimes(system_stamps(rng, contacts.modified_ms, window)),
        })


def write_leads(store: OrgStore, streams: RandomStreams, people: Population, accounts: Accounts,
                contacts: Contacts, opportunities: Opportunities, window: Window) -> Leads:
    """Writes the leads users create (Pipeline Builders above all); owners convert some of them."""
    rng = streams.stream("leads")
    per_user = people.draw_counts(rng, "leads")
    creator = np.repeat(np.arange(people.size), per_user)
    n = len(creator)
    created = working_times(rng, people.start_ms[creator], people.end_ms[creator], people.tz_hours[creator])
    sellers = people.of_personas("Pipeline Builder", "Deal Closer", active_only=True)
    routed = rng.random(n) < ROUTED_LEAD_SHARE
    owner = np.where(routed, sellers[rng.integers(0, len(sellers), n)], creator)
    conversion_time = created + (rng.lognormal(np.log(9), 0.8, n) * DAY_MS).astype(np.int64)
    converted = (rng.random(n) < people.share("lead_conversion")[owner]) & (conversion_time < people.end_ms[owner])
    age_days = (window.end_ms - created) / DAY_MS
    status_draw = rng.random(n)
    status = np.where(age_days < 7, np.where(status_draw < 0.6, "Open - Not Contacted", "Working - Contacted"),
                      np.where(status_draw < 0.35, "Closed - Not Converted",
                               np.where(status_draw < 0.75, "Working - Contacted", "Open - Not Contacted")))
    status = np.where(converted, "Closed - Converted", status).astype(object)
    worked = later_times(rng, created, people.end_ms[owner], share=0.5, mean_delay_ms=4 * DAY_MS)
    modified = np.where(converted, np.maximum(conversion_time, created), worked)
    account = own_or_any_account(rng, accounts, owner)
    contact = contacts.of_accounts(rng, account)
    opportunity = opportunities.by_owner.recent_before(rng, owner, np.where(converted, conversion_time, 0), 3)
    first, last = pick(rng, V.FIRST_NAMES, n), pick(rng, V.LAST_NAMES, n)
    with TableWriter(store, "Lead") as writer:
        ids = writer.new_ids(n)
        writer.write({
            "Id": ids, "FirstName": first, "LastName": last, "Name": text_join(first, " ", last),
            "Company": _company_names(rng, n), "Email": _emails(rng, first, last), "Phone": _phones(rng, n),
            "Title": pick(rng, V.CUSTOMER_TITLES, n), "Status": status, "LeadSource": pick(rng, V.LEAD_SOURCES, n),
            "Rating": pick(rng, ("Hot", "Warm", "Cold"), n, (0.2, 0.45, 0.35)),
            "Industry": pick(rng, V.INDUSTRIES, n), "OwnerId": people.ids[owner], "IsConverted": converted,
            "ConvertedDate": Dates(np.where(converted, conversion_time, NO_TIME)),
            "ConvertedAccountId": np.where(converted, accounts.ids[account], None),
            "ConvertedContactId": np.where(converted, lookup(contacts.ids, contact), None),
            "ConvertedOpportunityId": np.where(converted, lookup(opportunities.ids, opportunity), None),
            "IsDeleted": 0, "CreatedById": people.ids[creator], "CreatedDate": DateTimes(created),
            "LastModifiedById": people.ids[owner], "LastModifiedDate": DateTimes(modified),
            "SystemModstamp": DateTimes(system_stamps(rng, modified, window)),
        })
    return Leads(ids, owner, created, GroupedRecords(owner, people.size, created))


_STAGES = ("Prospecting", "Qualification", "Needs Analysis", "Value Proposition", "Id. Decision Makers",
           "Perception Analysis", "Proposal/Price Quote", "Negotiation/Review")
_STAGE_PROBABILITY = np.array([10, 10, 20, 50, 60, 70, 75, 90])
_STAGE_FORECAST = ("Pipeline", "Pipeline", "Pipeline", "Pipeline", "Pipeline", "Best Case", "Best Case", "Commit")
_OPPORTUNITY_SUFFIXES = {"New Customer": ("New Business", "Pilot", "Platform Deal"),
                         "Existing Customer - Upgrade": ("Upgrade", "Expansion", "Add-on Licenses"),
                         "Existing Customer - Replacement": ("Renewal", "Replacement", "Renewal 2025"),
                         "Existing Customer - Downgrade": ("Downgrade", "Reduced Renewal")}


def write_opportunities(store: OrgStore, streams: RandomStreams, people: Population, accounts: Accounts,
                        window: Window) -> Opportunities:
    """Writes the opportunities users open; they close after weeks, won per the owner's win share.

    Upgrade and replacement (renewal) deals come from the owner's upsell share, so Trusted Advisors
    stand out by deal type rather than volume.
    """
    rng = streams.stream("opportunities")
    per_user = people.draw_counts(rng, "opportunities")
    owner = np.repeat(np.arange(people.size), per_user)
    n = len(owner)
    created = working_times(rng, people.start_ms[owner], people.end_ms[owner], people.tz_hours[owner])
    account = own_or_any_account(rng, accounts, owner)
    upsell = rng.random(n) < people.share("upsell_share")[owner]
    deal_type = np.where(upsell, np.where(rng.random(n) < 0.65, "Existing Customer - Upgrade",
                                          "Existing Customer - Replacement"),
                         np.where(rng.random(n) < 0.93, "New Customer", "Existing Customer - Downgrade")).astype(object)
    duration = (rng.lognormal(np.log(DEAL_DAYS_MEDIAN), DEAL_DAYS_SIGMA, n) * DAY_MS).astype(np.int64)
    closes = created + duration
    closed = closes < people.end_ms[owner]
    close_time = np.clip(closes, created, window.last_ms)
    won = closed & (rng.random(n) < people.share("win_share")[owner])
    progress = np.clip((window.end_ms - created) / duration, 0, 0.999)
    open_stage = (progress * len(_STAGES)).astype(int)
    stage = np.where(closed, np.where(won, "Closed Won", "Closed Lost"),
                     np.array(_STAGES, dtype=object)[open_stage]).astype(object)
    probability = np.where(closed, np.where(won, 100, 0), _STAGE_PROBABILITY[open_stage])
    forecast = np.where(closed, np.where(won, "Closed", "Omitted"),
                        np.array(_STAGE_FORECAST, dtype=object)[open_stage]).astype(object)
    edited = later_times(rng, created, people.end_ms[owner], share=0.7, mean_delay_ms=10 * DAY_MS)
    # An open deal last moved stage when it reached the one it is in (none yet: when it was created).
    staged = np.where(open_stage > 0, np.minimum(created + (open_stage / len(_STAGES) * duration).astype(np.int64),
                                                 window.last_ms), created)
    modified = np.where(closed, close_time, edited)
    suffix = np.empty(n, dtype=object)
    for kind, options in _OPPORTUNITY_SUFFIXES.items():
        rows = deal_type == kind
        suffix[rows] = pick(rng, options, int(rows.sum()))
    names = np.strings.slice(text_join(accounts.names[account], " - ", suffix).astype(str), 0, 120).astype(object)
    with TableWriter(store, "Opportunity") as writer:
        ids = writer.new_ids(n)
        writer.write({
            "Id": ids, "Name": names, "AccountId": accounts.ids[account], "OwnerId": people.ids[owner],
            "StageName": stage, "IsClosed": closed, "IsWon": won, "Type": deal_type,
            "LastStageChangeDate": DateTimes(np.where(closed, close_time, staged)),
            "Amount": np.round(rng.lognormal(np.log(25_000), 1.0, n), -2),
            "CloseDate": Dates(np.where(closed, close_time, closes)), "Probability": probability.astype(float),
            "LeadSource": pick(rng, V.LEAD_SOURCES, n), "ForecastCategoryName": forecast, "IsDeleted": 0,
            "CreatedById": people.ids[owner], "CreatedDate": DateTimes(created),
            "LastModifiedById": people.ids[people.others_or_manager(rng, owner, 0.05)],
            "LastModifiedDate": DateTimes(modified),
            "SystemModstamp": DateTimes(system_stamps(rng, modified, window)),
        })
    return Opportunities(ids, owner, account, created, GroupedRecords(owner, people.size, created))


_QUOTE_STATUSES = ("Draft", "Needs Review", "In Review", "Approved", "Rejected", "Presented", "Accepted", "Denied")


def write_quotes(store: OrgStore, streams: RandomStreams, people: Population, accounts: Accounts,
                 opportunities: Opportunities, window: Window) -> None:
    """Writes quotes users prepare, each on one of their recent opportunities when they have one."""
    rng = streams.stream("quotes")
    owner, created = people.acts(rng, "quotes")
    n = len(owner)
    opportunity = opportunities.by_owner.recent_before(rng, owner, created, 4)
    fallback_account = own_or_any_account(rng, accounts, owner)
    account = np.where(opportunity >= 0, opportunities.account[np.maximum(opportunity, 0)], fallback_account)
    modified = later_times(rng, created, people.end_ms[owner], share=0.5, mean_delay_ms=3 * DAY_MS)
    numbers = np.char.zfill((10_000 + np.arange(n)).astype(str), 6)
    with TableWriter(store, "Quote") as writer:
        ids = writer.new_ids(n)
        writer.write({
            "Id": ids, "Name": text_join("Q-", numbers, " ", accounts.names[account]),
            "OpportunityId": lookup(opportunities.ids, opportunity), "AccountId": accounts.ids[account],
            "OwnerId": people.ids[owner], "Status": pick(rng, _QUOTE_STATUSES, n),
            "ExpirationDate": Dates(created + 30 * DAY_MS),
            "GrandTotal": np.round(rng.lognormal(np.log(20_000), 1.0, n), 2), "IsSyncing": rng.random(n) < 0.2,
            "IsDeleted": 0, "CreatedById": people.ids[owner], "CreatedDate": DateTimes(created),
            "LastModifiedById": people.ids[owner], "LastModifiedDate": DateTimes(modified),
            "SystemModstamp": DateTimes(system_stamps(rng, modified, window)),
        })


def write_contracts(store: OrgStore, streams: RandomStreams, people: Population, accounts: Accounts,
                    window: Window) -> None:
    """Writes contracts users draw up on their accounts; most get activated within days."""
    rng = streams.stream("contracts")
    owner, created = people.acts(rng, "contracts")
    n = len(owner)
    account = own_or_any_account(rng, accounts, owner)
    activated_at = created + (rng.exponential(3, n) * DAY_MS + HOUR_MS).astype(np.int64)
    status_draw = rng.random(n)
    activated = (status_draw < 0.65) & (activated_at < people.end_ms[owner])
    status = np.where(activated, "Activated", np.where(status_draw < 0.85, "Draft", "In Approval Process"))
    status_code = np.where(activated, "Activated", np.where(status_draw < 0.85, "Draft", "InApproval"))
    term = pick(rng, (12, 12, 24, 36), n).astype(np.int64)
    start = created + (rng.uniform(0, 30, n) * DAY_MS).astype(np.int64)
    activator = people.others_or_manager(rng, owner, 0.3)
    modified = np.where(activated, activated_at,
                        later_times(rng, created, people.end_ms[owner], share=0.4, mean_delay_ms=3 * DAY_MS))
    with TableWriter(store, "Contract") as writer:
        writer.write({
            "Id": writer.new_ids(n), "AccountId": accounts.ids[account], "OwnerId": people.ids[owner],
            "Status": status.astype(object), "StatusCode": status_code.astype(object),
            "StartDate": Dates(start), "EndDate": Dates(start + (term * 30.4 * DAY_MS).astype(np.int64)),
            "ContractTerm": term, "ActivatedDate": DateTimes(np.where(activated, activated_at, NO_TIME)),
            "ActivatedById": np.where(activated, people.ids[activator], None),
            "IsDeleted": 0, "CreatedById": people.ids[owner], "CreatedDate": DateTimes(created),
            "LastModifiedById": people.ids[owner], "LastModifiedDate": DateTimes(modified),
            "SystemModstamp": DateTimes(system_stamps(rng, modified, window)),
        })
