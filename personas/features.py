"""Behaviour features: per-user numbers over a window ending at an as-of time, declared in one place.

`FEATURES` is the registry: every feature's name, unit, one-line meaning and source (object, filter,
aggregation, the timestamp that places a row in the window). The rule catalog refers to features by
these names; the source text is generated from the same declaration the computation runs, so the two
cannot drift apart.

The window: only activity with `as_of - days <= timestamp < as_of` counts, so a backfill for a past
date never sees the future. Date fields (Opportunity.CloseDate, Lead.ConvertedDate) count as midnight
UTC of their day. Rates are normalised per 30 days: `count * 30 / days`.

Partitions: features are computed per partition of users, and a partition is a unit of work: a
worker calls `compute_features(staging, window, user_ids=partition)` and gets exactly the rows the
whole computation would give those users (`partition_users` splits by a stable hash of the Id).
`compute_features_partitioned` does all partitions in one process: each object is scanned once, its
rows counted for every user at once, and the counts then split by partition. Either way the result is
the same whatever the partitioning (tested).

Memory stays bounded: objects are read one at a time and one Id bucket at a time (staging's
`buckets`), with only the columns their features need, filtered to the window in Arrow, and reduced at
once to per-user counts (no row reaches pandas). This module reads staging through the small
`StagedRecords` protocol, so it does not depend on how staging is stored.

Decisions the data forces (each also in the feature's meaning or source):
- list_emails counts ListEmail records (one per bulk send, by OwnerId, CreatedDate), not the Tasks
  with TaskSubtype 'ListEmail': Salesforce logs those per recipient, so they measure audience size.
  `emails` counts TaskSubtype 'Email' only, so no send is counted twice.
- meetings are dated by Event.StartDateTime: a meeting counts when it is held, not when it is booked
  (a meeting booked for next week is not yet work done).
- email_templates counts templates created in the window: the EmailTemplate stream does not pull
  LastModifiedDate, so modifications cannot be placed in a window.
- direct_reports uses the users' current IsActive (staging keeps no history of it), among users
  created before as-of.
- Owner-based features (cases_closed, opportunities_won, leads_converted, ...) use the current owner.
- Logins: successful ones only (Status 'Success'), by channel as LOGIN_CHANNEL_TABLE says: API for an
  API type, a login type only the API makes, or an OAuth connected app that is neither a browser nor a
  Salesforce mobile app; mobile for a Salesforce mobile app or a phone platform; else browser.
- Detail features say how the work is done, not how much: call direction (Task.CallType), tasks
  about no record (neither WhoId nor WhatId) or on a case (WhatId with the Case key prefix 500),
  meetings with a customer (WhoId or WhatId set: a contact or lead, an account, deal or other record),
  which own deals are upsells and which own cases are escalated (of those opened in the
  window), and which kind of setup change (by SetupAuditTrail.Section; sections not listed as user
  administration or automation are customisation). They are not activity of their own kind, so
  activity_total does not include them; each has a share of the rate it details.
- reports_who_manage counts direct reports who lead people themselves (a leader of managers).
- activity_total sums every activity rate, those that count a subset of another's rows included
  (opportunities_won, leads_converted, cases_escalated): each is work of its own kind. The
  `<name>_share` features divide by it, so they sum to 1 for anyone with activity.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import PersonaSyncError

log = logging.getLogger(__name__)

PER_30_DAYS = "per 30 days"
SHARE = "share 0..1"
PEOPLE = "people"
UNITS = (PER_30_DAYS, SHARE, PEOPLE)

# Carried alongside the features for explanations; never features themselves (titles lie).
CONTEXT_COLUMNS: tuple[str, ...] = ("Name", "Title", "Department", "Profile", "UserRole", "IsActive")
_USER_CONTEXT = ("Name", "Title", "Department", "ProfileId", "UserRoleId")  # staged User fields behind them

_TIMESTAMP = pa.timestamp("ms", tz="UTC")
# A source filled in fewer of the window's rows than this is empty in this org: its features are unavailable.
MIN_FILLED_SHARE = 0.01
# The key, in a features frame's attrs, of the features its org could not measure (name -> why).
UNAVAILABLE = "unavailable"
_MOBILE = r"(?i)\b(ios|android|iphone|ipad)\b"
_NO_API_TYPE = ("", "N/A")  # real orgs write 'N/A' in ApiType for interactive logins


class FeatureError(PersonaSyncError):
    """Features cannot be computed as asked (bad window, unknown users, nothing staged)."""


class StagedRecords(Protocol):
    """What features read: staged objects, whole (small ones) or one Id bucket at a time (connectors/staging)."""

    root: object

    def read_arrow(self, sobject: str, columns: list[str] | None = None) -> pa.Table: ...

    def buckets(self, sobject: str, columns: list[str] | None = None, *,
                where: Callable[[pa.Table], pa.Array | pa.ChunkedArray] | None = None) -> Iterator[pa.Table]: ...

    def columns_in_every_file(self, sobject: str) -> set[str] | None: ...


# --- the window -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """The stretch of time features look at: `days` days ending at `as_of` (exclusive), in UTC."""

    as_of: datetime
    days: int = 90

    def __post_init__(self) -> None:
        if self.as_of.tzinfo is None or self.as_of.utcoffset() is None:
            raise FeatureError(f"the feature window's as_of {self.as_of.isoformat()} has no time zone; "
                               "pass it timezone-aware (UTC)")
        if isinstance(self.days, bool) or not isinstance(self.days, int) or self.days < 1:
            raise FeatureError(f"the feature window must be a whole number of days >= 1, not {self.days!r}")
        object.__setattr__(self, "as_of", self.as_of.astimezone(timezone.utc))

    @property
    def start(self) -> datetime:
        """The first instant that counts (inclusive)."""
        return self.as_of - timedelta(days=self.days)

    def contains(self, ts: datetime) -> bool:
        """Whether an instant counts: start <= ts < as_of."""
        return self.start <= ts < self.as_of

    def mask(self, times: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
        """`contains` for a column of timestamps or dates (a date is midnight UTC); null is outside."""
        if pa.types.is_null(times.type):
            times = times.cast(_TIMESTAMP)
        elif pa.types.is_date(times.type):
            times = pc.cast(times, _TIMESTAMP)
        start = pa.scalar(self.start, type=pa.timestamp("us", tz="UTC"))
        end = pa.scalar(self.as_of, type=pa.timestamp("us", tz="UTC"))
        inside = pc.and_(pc.greater_equal(times, start), pc.less(times, end))
        return pc.fill_null(inside, False)


# --- how a feature is measured ----------------------------------------------------------------------

@dataclass(frozen=True)
class Derived:
    """A column computed from staged columns of one object, once per read (after the window filter)."""

    name: str
    columns: tuple[str, ...]
    meaning: str
    compute: Callable[[pa.Table], pa.ChunkedArray] = field(compare=False, repr=False)
    # Columns it does without where an org leaves them empty (a fallback covers them): no coverage check
    # names them.
    optional: tuple[str, ...] = ()


Column = str | Derived


def _name(column: Column) -> str:
    return column.name if isinstance(column, Derived) else column


@dataclass(frozen=True)
class Where:
    """A row filter: how a person reads it, the columns it needs, and the Arrow mask it computes."""

    text: str
    columns: tuple[Column, ...]
    mask: Callable[[pa.Table], pa.ChunkedArray] = field(compare=False, repr=False)
    # Whether it reads its columns together, needing only one of them filled to tell rows apart ("WhoId or
    # WhatId is set"), rather than each of them.
    any_of: bool = False
    # Whether an empty value is an answer it expects (a task with no subtype is a to-do): then its columns
    # being empty says nothing about whether the org fills them.
    empty_expected: bool = False


def _column(table: pa.Table, name: str, kind: pa.DataType) -> pa.ChunkedArray:
    """A column, typed as expected even when no staged file has it (it then reads as nulls)."""
    column = table[name]
    return column.cast(kind) if pa.types.is_null(column.type) else column


def equals(column: Column, *values: str) -> Where:
    """Rows whose `column` is one of `values`."""
    name = _name(column)
    text = f"{name} = {values[0]!r}" if len(values) == 1 else f"{name} in {list(values)!r}"
    value_set = pa.array(values, type=pa.string())
    return Where(text, (column,), lambda table: pc.is_in(_column(table, name, pa.string()), value_set=value_set))


def not_equals(column: Column, value: str, *, empty_counts: bool = False) -> Where:
    """Rows whose `column` is set and is not `value` (or is empty too, with `empty_counts`)."""
    name = _name(column)
    if empty_counts:
        return Where(f"{name} is empty or != {value!r}", (column,),
                     lambda table: pc.fill_null(pc.not_equal(_column(table, name, pa.string()), value), True),
                     empty_expected=True)
    return Where(f"{name} != {value!r}", (column,),
                 lambda table: pc.not_equal(_column(table, name, pa.string()), value))


def is_blank(*columns: str) -> Where:
    """Rows where every one of `columns` is empty (null or '')."""
    text = " and ".join(f"{column} is empty" for column in columns)
    return Where(text, columns, lambda table: _all(_blank(table, column) for column in columns), any_of=True)


def is_set(*columns: str) -> Where:
    """Rows where at least one of `columns` is set (not null, not '')."""
    text = " or ".join(f"{column} is set" for column in columns)
    return Where(text if len(columns) == 1 else f"({text})", columns,
                 lambda table: pc.invert(_all(_blank(table, column) for column in columns)), any_of=True)


def starts_with(column: str, prefix: str, meaning: str) -> Where:
    """Rows whose `column` starts with `prefix` (an Id's key prefix names its object: `meaning`)."""
    return Where(f"{column} starts with {prefix!r} ({meaning})", (column,),
                 lambda table: pc.starts_with(_column(table, column, pa.string()), prefix))


def _blank(table: pa.Table, column: str) -> pa.ChunkedArray:
    values = _column(table, column, pa.string())
    return pc.fill_null(pc.equal(values, ""), True)


def _all(masks: Iterable[pa.ChunkedArray]) -> pa.ChunkedArray:
    result = None
    for mask in masks:
        result = mask if result is None else pc.and_(result, mask)
    if result is None:
        raise FeatureError("a filter over no columns")
    return result


def is_true(column: str) -> Where:
    """Rows whose boolean `column` is true."""
    return Where(column, (column,), lambda table: _column(table, column, pa.bool_()))


def differs(column: str, other: str) -> Where:
    """Rows whose two timestamp columns differ (a record modified after its creation)."""
    return Where(f"{column} != {other}", (column, other),
                 lambda table: pc.not_equal(_column(table, column, _TIMESTAMP), _column(table, other, _TIMESTAMP)))


@dataclass(frozen=True)
class ChannelRule:
    """One row of the login-channel table: which LoginHistory rows it takes, and their channel."""

    when: str
    channel: str
    why: str
    test: Callable[[pa.Table], pa.ChunkedArray] = field(compare=False, repr=False)


def _text(table: pa.Table, column: str) -> pa.ChunkedArray:
    return _column(table, column, pa.string()) if column in table.column_names else \
        pa.chunked_array([pa.nulls(table.num_rows, pa.string())])


def _matches(table: pa.Table, column: str, pattern: str) -> pa.ChunkedArray:
    return pc.fill_null(pc.match_substring_regex(_text(table, column), pattern), False)


def _one_of(table: pa.Table, column: str, values: tuple[str, ...]) -> pa.ChunkedArray:
    return pc.fill_null(pc.is_in(_text(table, column), value_set=pa.array(values, type=pa.string())), False)


def _api_type_set(table: pa.Table) -> pa.ChunkedArray:
    api_type = _text(table, "ApiType")
    return pc.and_(pc.is_valid(api_type), pc.invert(pc.is_in(api_type, value_set=pa.array(_NO_API_TYPE))))


# LoginHistory.LoginType values (Salesforce's picklist) that are API sessions by their nature, and those of
# OAuth clients, which are the Salesforce mobile apps, a browser or a connected app (an integration).
API_LOGIN_TYPES = ("Other Apex API", "Partner Product", "AppExchange", "Networks Portal API Only")
OAUTH_LOGIN_TYPES = ("Remote Access 2.0", "Remote Access Client")
_SALESFORCE_MOBILE_APP = r"(?i)^salesforce(1|a)?\b.*\b(ios|android|mobile|iphone|ipad)\b|^salesforce(1|a)$"
_NOT_AN_APP = ("", "N/A", "Browser", "Unknown")

# The login-channel table, first matching row wins. It follows how Salesforce records logins, not how one
# org does: some orgs record an integration's ApiType, others only an OAuth connected-app login.
LOGIN_CHANNEL_TABLE: tuple[ChannelRule, ...] = (
    ChannelRule("ApiType is set (not empty, not 'N/A')", "api",
                "only API clients record an API type (SOAP Partner, REST, Bulk API, ...)", _api_type_set),
    ChannelRule(f"LoginType is one of {list(API_LOGIN_TYPES)}", "api",
                "logins that only the API makes (Apex API, partner products, AppExchange, API-only portals)",
                lambda table: _one_of(table, "LoginType", API_LOGIN_TYPES)),
    ChannelRule("Application names a Salesforce mobile app ('Salesforce for iOS' / 'for Android', "
                "'Salesforce Mobile', 'Salesforce1', 'SalesforceA')", "mobile",
                "the Salesforce mobile apps, under their current and older names",
                lambda table: _matches(table, "Application", _SALESFORCE_MOBILE_APP)),
    ChannelRule("Platform names iOS, Android, iPhone or iPad", "mobile",
                "a phone or tablet, whatever the app (some orgs record only the platform)",
                lambda table: _matches(table, "Platform", _MOBILE)),
    ChannelRule(f"LoginType is one of {list(OAUTH_LOGIN_TYPES)} and Application is another app "
                f"(not empty, {', '.join(repr(v) for v in _NOT_AN_APP[1:])})", "api",
                "an OAuth connected app that is neither a browser nor a Salesforce mobile app: an integration",
                lambda table: pc.and_(_one_of(table, "LoginType", OAUTH_LOGIN_TYPES),
                                      pc.invert(pc.fill_null(pc.is_in(_text(table, "Application"),
                                                                      value_set=pa.array(_NOT_AN_APP)), True)))),
    ChannelRule("any other login ('Application', SAML and other single sign-on, ...)", "browser",
                "an interactive login in a web browser",
                lambda table: pa.chunked_array([pa.array(np.ones(table.num_rows, dtype=bool))])),
)


def login_channels(table: pa.Table) -> pa.ChunkedArray:
    """Each LoginHistory row's channel, 'api', 'mobile' or 'browser': the first row of LOGIN_CHANNEL_TABLE
    that matches it (a column the table lacks reads as empty)."""
    channel = pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
    for rule in reversed(LOGIN_CHANNEL_TABLE):  # earlier rows overwrite later ones: the first match wins
        channel = pc.if_else(rule.test(table), rule.channel, channel)
    return channel


def won_at(table: pa.Table) -> pa.ChunkedArray:
    """When each opportunity was won: its LastStageChangeDate (the move to Closed Won), else its CloseDate
    (midnight UTC) where the org has no such field. Not CloseDate alone: a deal whose expected close date
    passed was often won later, and a backfill must not count it won before it was."""
    stage_changed = _column(table, "LastStageChangeDate", _TIMESTAMP).cast(_TIMESTAMP)
    return pc.coalesce(stage_changed, pc.cast(_column(table, "CloseDate", pa.date32()), _TIMESTAMP))


WON_AT = Derived(
    "won_at", ("LastStageChangeDate", "CloseDate"),
    "when it was won: LastStageChangeDate (its move to Closed Won), else CloseDate where the org has none", won_at,
    optional=("LastStageChangeDate",))


LOGIN_CHANNEL = Derived(
    "channel", ("LoginType", "ApiType", "Application", "Platform"),
    "by the login-channel table (LOGIN_CHANNEL_TABLE): api for an API type, an API login type or an OAuth "
    "connected app; mobile for a Salesforce mobile app or a phone platform; else browser", login_channels,
    # Orgs fill these unevenly (no ApiType where integrations log in as connected apps): none must be set.
    optional=("ApiType", "Application", "Platform"))


@dataclass(frozen=True)
class Count:
    """Rows of one object, one activity each, for the user the row names, when `at` is in the window.

    `user`: the field naming the user, or several in order of preference: a row counts for the first one
    it fills (an org or export may lack OwnerId where CreatedById is there; the pull's streams declare the
    same order). `at` is a staged timestamp or date column, or a Derived one (when a deal was won)."""

    sobject: str
    user: str | tuple[str, ...]
    at: Column
    where: tuple[Where, ...] = ()

    @property
    def users(self) -> tuple[str, ...]:
        """The user fields, in order of preference."""
        return (self.user,) if isinstance(self.user, str) else self.user

    @property
    def derived(self) -> tuple[Derived, ...]:
        """The derived columns the date and the filters read."""
        dated = (self.at,) if isinstance(self.at, Derived) else ()
        return tuple(dict.fromkeys((*dated, *(c for w in self.where for c in w.columns if isinstance(c, Derived)))))

    @property
    def dated_by(self) -> tuple[str, ...]:
        """The staged columns that place a row in the window (those of a derived date: one of them is it)."""
        return self.at.columns if isinstance(self.at, Derived) else (self.at,)

    @property
    def columns(self) -> tuple[str, ...]:
        """The staged columns to read (those the derived columns are computed from included)."""
        staged = (c for w in self.where for c in w.columns if not isinstance(c, Derived))
        return tuple(dict.fromkeys((*self.users, *self.dated_by, *staged,
                                    *(c for d in self.derived for c in d.columns))))

    @property
    def required(self) -> tuple[str, ...]:
        """The staged columns it cannot do without: `columns` but the user fields (one of them is needed, not
        each) and those a derived column can do without."""
        optional = {c for d in self.derived for c in d.optional} | set(self.users)
        return tuple(c for c in self.columns if c not in optional)

    @property
    def needs(self) -> tuple[tuple[str, ...], ...]:
        """What must be filled for it to be measured, as groups of which one column each must be: the user
        fields (one of them), a filter reading columns together (one of them), each other required column."""
        grouped = [w for w in self.where if w.any_of]
        together = {c for w in grouped for c in w.columns}
        expected_empty = {_name(c) for w in self.where if w.empty_expected for c in w.columns}
        groups = [self.users, *(tuple(_name(c) for c in w.columns) for w in grouped)]
        groups += [(column,) for column in self.required if column not in together and column not in expected_empty]
        return tuple(dict.fromkeys(groups))

    def actors(self, table: pa.Table) -> pa.ChunkedArray:
        """Each row's user: the first of `users` the row fills (null where none is)."""
        actor = None
        for name in reversed(self.users):
            values = _column(table, name, pa.string()).cast(pa.string())
            filled = pc.fill_null(pc.not_equal(values, ""), False)
            actor = values if actor is None else pc.if_else(filled, values, actor)
        assert actor is not None
        return actor

    def describe(self) -> str:
        filters = f" where {' and '.join(w.text for w in self.where)}" if self.where else ""
        derived = "".join(f" ({d.name}: {d.meaning})" for d in self.derived)
        who = self.users[0] + "".join(f", else {name}" for name in self.users[1:])
        return f"{self.sobject} rows{filters}, counted for {who}, dated by {_name(self.at)}{derived}"


@dataclass(frozen=True)
class Rate:
    """Rows counted per user (summed over `counts`), per 30 days of the window."""

    counts: tuple[Count, ...]


@dataclass(frozen=True)
class Ratio:
    """`part` / sum of `whole` (features of the same user); 0 when the whole is 0."""

    part: str
    whole: tuple[str, ...]


@dataclass(frozen=True)
class Total:
    """The sum of other features."""

    parts: tuple[str, ...]


@dataclass(frozen=True)
class DirectReports:
    """Active users, created before as-of, whose ManagerId is this user.

    With `managers_only`, just those of them who have such direct reports of their own (the people
    who lead a team under this user).
    """

    managers_only: bool = False


Measure = Rate | Ratio | Total | DirectReports


@dataclass(frozen=True)
class Feature:
    """One per-user number: its name (what catalogs cite), unit, one-line meaning and source."""

    name: str
    unit: str
    meaning: str
    source: str
    # How it is computed; the source text above is generated from it.
    measure: Measure | None = field(default=None, compare=False, repr=False)


# --- the registry -----------------------------------------------------------------------------------

def _rate(name: str, meaning: str, *counts: Count, note: str = "") -> Feature:
    source = "; plus ".join(count.describe() for count in counts) + (f" ({note})" if note else "")
    return Feature(name, PER_30_DAYS, meaning, source, Rate(counts))


def _changed(sobject: str) -> tuple[Count, Count]:
    """Records created in the window, plus records last modified in the window after their creation."""
    return (Count(sobject, "CreatedById", "CreatedDate"),
            Count(sobject, "LastModifiedById", "LastModifiedDate", (differs("LastModifiedDate", "CreatedDate"),)))


# Who did it, on objects that name both an owner and a creator: the field the feature means first, the
# other where a row (or the whole org, or a partial export) leaves it empty.
_OWNER = ("OwnerId", "CreatedById")
_CREATOR = ("CreatedById", "OwnerId")

_ACTIVITY: tuple[Feature, ...] = (
    _rate("calls", "calls logged", Count("Task", _OWNER, "CreatedDate", (equals("TaskSubtype", "Call"),))),
    _rate("emails", "emails logged (one to one; list emails not included)",
          Count("Task", _OWNER, "CreatedDate", (equals("TaskSubtype", "Email"),))),
    _rate("list_emails", "list (bulk) emails created, one per send whatever the audience",
          Count("ListEmail", _OWNER, "CreatedDate"),
          note="Tasks with TaskSubtype 'ListEmail' are per recipient and not counted"),
    _rate("meetings", "meetings held (by start time, not booking time)", Count("Event", _OWNER, "StartDateTime")),
    _rate("leads_created", "leads created", Count("Lead", _CREATOR, "CreatedDate")),
    _rate("leads_converted", "own leads converted",
          Count("Lead", _OWNER, "ConvertedDate", (is_true("IsConverted"),))),
    _rate("opportunities_created", "opportunities created", Count("Opportunity", _CREATOR, "CreatedDate")),
    _rate("opportunities_won", "own opportunities won in the window",
          Count("Opportunity", _OWNER, WON_AT, (is_true("IsWon"),))),
    _rate("upsell_renewals", "own upgrade and replacement (renewal) opportunities opened",
          Count("Opportunity", _OWNER, "CreatedDate",
                (equals("Type", "Existing Customer - Upgrade", "Existing Customer - Replacement"),))),
    _rate("quotes", "quotes prepared", Count("Quote", _CREATOR, "CreatedDate")),
    _rate("contracts", "contracts drawn up", Count("Contract", _CREATOR, "CreatedDate")),
    _rate("contacts_created", "contacts created", Count("Contact", _CREATOR, "CreatedDate")),
    _rate("contacts_updated", "contact field changes made",
          Count("ContactHistory", "CreatedById", "CreatedDate", (not_equals("Field", "created"),))),
    _rate("cases_closed", "own cases closed", Count("Case", _OWNER, "ClosedDate", (is_true("IsClosed"),))),
    _rate("cases_escalated", "own cases opened in the window that are escalated",
          Count("Case", _OWNER, "CreatedDate", (is_true("IsEscalated"),))),
    _rate("case_comments", "case comments written", Count("CaseComment", "CreatedById", "CreatedDate")),
    _rate("case_reassignments", "cases moved to another owner",
          Count("CaseHistory", "CreatedById", "CreatedDate", (equals("Field", "Owner"),))),
    _rate("articles_written", "knowledge article versions written",
          Count("KnowledgeArticleVersion", "CreatedById", "CreatedDate")),
    _rate("reports_changed", "reports created or modified (a report's latest modification only)",
          *_changed("Report")),
    _rate("dashboards_changed", "dashboards created or modified (a dashboard's latest modification only)",
          *_changed("Dashboard")),
    _rate("setup_changes", "setup changes (SetupAuditTrail rows of any action)",
          Count("SetupAuditTrail", "CreatedById", "CreatedDate")),
    _rate("users_created", "users created",
          Count("SetupAuditTrail", "CreatedById", "CreatedDate", (equals("Action", "createduser"),))),
    _rate("chatter_posts", "Chatter posts", Count("FeedItem", "CreatedById", "CreatedDate")),
    _rate("campaigns", "campaigns created", Count("Campaign", _CREATOR, "CreatedDate")),
    _rate("email_templates", "email templates created",
          Count("EmailTemplate", _CREATOR, "CreatedDate"),
          note="modifications are not counted: the stream pulls no LastModifiedDate"),
)

_CHANNELS = ("browser", "mobile", "api")
_THROUGH = {"browser": "a web browser", "mobile": "the mobile apps", "api": "the API"}
_LOGINS: tuple[Feature, ...] = tuple(
    _rate(f"logins_{channel}", f"successful logins through {_THROUGH[channel]}",
          Count("LoginHistory", "UserId", "LoginTime", (equals("Status", "Success"), equals(LOGIN_CHANNEL, channel))))
    for channel in _CHANNELS
)
_LOGIN_NAMES = tuple(f"logins_{channel}" for channel in _CHANNELS)


def _ratio(name: str, part: str, whole: tuple[str, ...], meaning: str) -> Feature:
    whole_text = whole[0] if len(whole) == 1 else f"({' + '.join(whole)})"
    return Feature(name, SHARE, meaning, f"{part} / {whole_text}, 0 when that is 0", Ratio(part, whole))


_ACTIVITY_NAMES: tuple[str, ...] = tuple(feature.name for feature in _ACTIVITY)

_TASKS_LOGGED = (not_equals("TaskSubtype", "ListEmail", empty_counts=True),)
_CASE_KEY_PREFIX = "500"
# SetupAuditTrail sections by kind of work. Anything else (customising objects, layouts, picklists,
# report types, queues, ...) counts as customisation and needs no list of its own.
USER_ADMIN_SECTIONS = ("Manage Users", "Permission Sets", "Profiles", "Roles", "Public Groups")
AUTOMATION_SECTIONS = ("Flows", "Process Builder", "Workflow Rules", "Approval Processes", "Apex Class",
                       "Apex Trigger", "Connected Apps", "Named Credentials", "External Credentials",
                       "Remote Site Settings", "Custom Metadata Types", "Platform Events")

# How the work is done rather than how much of it: the direction of calls, what tasks and meetings were
# about, which deals and cases, which kind of setup. Not activity of their own kind, so not part of
# activity_total; each is read as a share of the rate it details (below).
_DETAIL: tuple[Feature, ...] = (
    _rate("inbound_calls", "calls the user took (CallType 'Inbound')",
          Count("Task", _OWNER, "CreatedDate", (equals("TaskSubtype", "Call"), equals("CallType", "Inbound")))),
    _rate("tasks_logged", "tasks logged: calls, emails and to-dos (list email recipients not included)",
          Count("Task", _OWNER, "CreatedDate", _TASKS_LOGGED)),
    _rate("internal_tasks", "tasks logged about no customer record (neither WhoId nor WhatId)",
          Count("Task", _OWNER, "CreatedDate", (*_TASKS_LOGGED, is_blank("WhoId", "WhatId")))),
    _rate("case_tasks", "tasks logged on a case",
          Count("Task", _OWNER, "CreatedDate", (*_TASKS_LOGGED, starts_with("WhatId", _CASE_KEY_PREFIX, "a Case")))),
    _rate("customer_meetings",
          "meetings with a customer (about a contact or lead, or an account, deal or other record)",
          Count("Event", _OWNER, "StartDateTime", (is_set("WhoId", "WhatId"),))),
    _rate("opportunities_opened", "own opportunities opened",
          Count("Opportunity", _OWNER, "CreatedDate")),
    _rate("cases_opened", "own cases opened", Count("Case", _OWNER, "CreatedDate")),
    _rate("user_admin_changes", "setup changes that administer users (users, permission sets, profiles, roles)",
          Count("SetupAuditTrail", "CreatedById", "CreatedDate", (equals("Section", *USER_ADMIN_SECTIONS),))),
    _rate("automation_changes", "setup changes to automation and integration (flows, Apex, connected apps, ...)",
          Count("SetupAuditTrail", "CreatedById", "CreatedDate", (equals("Section", *AUTOMATION_SECTIONS),))),
)
# (name, part, whole, meaning) of the shares that read the details.
_DETAIL_SHARES: tuple[tuple[str, str, str, str], ...] = (
    ("inbound_call_share", "inbound_calls", "calls", "share of calls that were inbound"),
    ("internal_task_share", "internal_tasks", "tasks_logged", "share of logged tasks about no customer record"),
    ("case_task_share", "case_tasks", "tasks_logged", "share of logged tasks that are on a case"),
    ("customer_meeting_share", "customer_meetings", "meetings", "share of meetings held with a customer"),
    ("upsell_share", "upsell_renewals", "opportunities_opened",
     "share of own opportunities opened that are upgrade or replacement deals"),
    ("escalated_share", "cases_escalated", "cases_opened", "share of own cases opened that are escalated"),
    ("user_admin_share", "user_admin_changes", "setup_changes", "share of setup changes that administer users"),
    ("automation_share", "automation_changes", "setup_changes",
     "share of setup changes to automation and integration"),
)

FEATURES: tuple[Feature, ...] = (
    *_ACTIVITY,
    *_LOGINS,
    *(_ratio(f"login_share_{channel}", f"logins_{channel}", _LOGIN_NAMES,
             f"share of successful logins through {_THROUGH[channel]}")
      for channel in _CHANNELS),
    Feature("direct_reports", PEOPLE, "active people who report to this user (their manager), at as-of",
            "User rows with IsActive and CreatedDate before as-of, counted for ManagerId (current IsActive)",
            DirectReports()),
    Feature("reports_who_manage", PEOPLE, "direct reports who have active direct reports of their own, at as-of",
            "direct reports (as direct_reports) whose own direct_reports is at least 1", DirectReports(managers_only=True)),
    Feature("activity_total", PER_30_DAYS, "all activity per 30 days (every activity rate, logins excluded)",
            f"sum of {', '.join(_ACTIVITY_NAMES)}", Total(_ACTIVITY_NAMES)),
    *(_ratio(f"{name}_share", name, ("activity_total",), f"share of all activity that is {name}")
      for name in _ACTIVITY_NAMES),
    *_DETAIL,
    *(_ratio(name, part, (whole,), meaning) for name, part, whole, meaning in _DETAIL_SHARES),
)
FEATURE_NAMES: tuple[str, ...] = tuple(feature.name for feature in FEATURES)
# The activity rates that make up activity_total and have a `<name>_share`.
ACTIVITY_FEATURES: tuple[str, ...] = _ACTIVITY_NAMES


def source_fields(names: Sequence[str]) -> dict[tuple[str, str], list[str]]:
    """The staged fields behind features `names`: (object, field) -> the rates that count its rows, among
    those `names` read (directly, or through the ratios and totals they divide or add). What a coverage
    check looks at: a field empty for the whole org leaves its features blind. DirectReports reads User
    fields that every org fills, so it names none."""
    by_name = {feature.name: feature for feature in FEATURES}
    fields: dict[tuple[str, str], list[str]] = {}
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        measure = by_name[name].measure
        if isinstance(measure, Rate):
            for count in measure.counts:
                for column in count.required:
                    rates = fields.setdefault((count.sobject, column), [])
                    if name not in rates:
                        rates.append(name)
        elif isinstance(measure, Ratio):
            for part in (measure.part, *measure.whole):
                visit(part)
        elif isinstance(measure, Total):
            for part in measure.parts:
                visit(part)

    for name in names:
        if name not in by_name:
            raise FeatureError(f"unknown feature {name!r}; known: {', '.join(FEATURE_NAMES)}")
        visit(name)
    return fields


def feature_names() -> list[str]:
    """Every feature's name, in the order of the columns `compute_features` returns."""
    return list(FEATURE_NAMES)


# --- computing --------------------------------------------------------------------------------------

def compute_features(staging: StagedRecords, window: Window, *, user_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Every feature for every staged user (or the users in `user_ids`, a partition), over `window`.

    The result is indexed by user Id (staging's order, sorted by Id, or the order of `user_ids`), with
    one float column per feature in FEATURES order, then CONTEXT_COLUMNS. Users with no activity get
    zeros; a feature the org cannot measure is NaN for everyone (`unavailable_features` says why). The rows of a partition are exactly those the whole computation gives the same users, so a
    worker can compute one partition on its own. Raises FeatureError when no users are staged, or when
    `user_ids` repeats an Id or names one that is not staged.
    """
    users = _staged_users(staging)
    ids = _partition_ids(users, user_ids)
    return _compute(staging, window, users, [ids])[0]


def partition_users(user_ids: Sequence[str], partitions: int) -> list[list[str]]:
    """`user_ids` split into `partitions` lists by a stable hash (CRC-32) of the Id.

    A user lands in the same partition on every run and machine (for a given number of partitions);
    each list keeps the order of `user_ids`; a partition may be empty.
    """
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise FeatureError(f"the number of feature partitions must be a whole number >= 1, not {partitions!r}")
    buckets: list[list[str]] = [[] for _ in range(partitions)]
    for user_id in user_ids:
        buckets[zlib.crc32(user_id.encode("utf-8")) % partitions].append(user_id)
    return buckets


def compute_features_partitioned(staging: StagedRecords, window: Window, partitions: int) -> pd.DataFrame:
    """`compute_features` for every staged user, done partition by partition, in one process.

    Each object is read once and counted for every partition in turn; the per-partition frames are
    concatenated in staging's user order, so the result is the same whatever `partitions` is. (Across
    machines, call `compute_features(..., user_ids=partition)` per partition instead.)
    """
    users = _staged_users(staging)
    ids = users["Id"].to_pylist()
    parts = [part for part in partition_users(ids, partitions) if part]
    frames = _compute(staging, window, users, parts)
    features = pd.concat(frames).reindex(pd.Index(ids, name="Id"))
    features.attrs[UNAVAILABLE] = dict(frames[0].attrs[UNAVAILABLE])
    return features


def _compute(staging: StagedRecords, window: Window, users: pa.Table,
             partitions: list[list[str]]) -> list[pd.DataFrame]:
    """One frame per partition; scans each object once, counting for every user, then splits the counts."""
    everyone = users["Id"].combine_chunks()
    counts, unavailable_rates = _count_activity(staging, window, everyone)
    unavailable = _availability(unavailable_rates)
    reports, leads = _direct_reports(users, window, everyone)
    context = _context(staging, users)
    frames = []
    for ids in partitions:
        value_set = pa.array(ids, type=pa.string())
        rows = pc.index_in(value_set, value_set=everyone).to_numpy(zero_copy_only=False)
        frames.append(_frame(value_set, window, {name: total[rows] for name, total in counts.items()},
                             reports[rows], leads[rows], context, unavailable))
    return frames


def _staged_users(staging: StagedRecords) -> pa.Table:
    users = staging.read_arrow("User", ["Id", "ManagerId", "IsActive", "CreatedDate", *_USER_CONTEXT])
    if users.num_rows == 0:
        raise FeatureError(f"no users are staged under {staging.root}: run `persona-sync pull` first")
    return users


def _partition_ids(users: pa.Table, user_ids: Sequence[str] | None) -> list[str]:
    if user_ids is None:
        return users["Id"].to_pylist()
    ids = list(user_ids)
    repeated = pd.Index(ids)[pd.Index(ids).duplicated()].unique()
    if len(repeated):
        raise FeatureError(f"user_ids repeats {len(repeated)} Id(s), e.g. {list(repeated[:5])}; "
                           "pass each user once (partition_users gives disjoint partitions)")
    known = pc.is_in(pa.array(ids, type=pa.string()), value_set=users["Id"]).to_numpy(zero_copy_only=False)
    if not known.all():
        unknown = [user_id for user_id, found in zip(ids, known) if not found]
        raise FeatureError(f"{len(unknown)} user Id(s) are not staged users, e.g. {unknown[:5]}; "
                           "partition the Ids of the staged User object")
    return ids


def _counts_by_object() -> dict[str, list[tuple[str, Count]]]:
    """Every Count of the registry, grouped by the object it reads (registry order)."""
    grouped: dict[str, list[tuple[str, Count]]] = {}
    for feature in FEATURES:
        if isinstance(feature.measure, Rate):
            for count in feature.measure.counts:
                grouped.setdefault(count.sobject, []).append((feature.name, count))
    return grouped


def _count_activity(staging: StagedRecords, window: Window,
                    users: pa.Array) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Per Rate feature: the rows counted for each of `users` (in its order), and why each rate that cannot
    be measured on this org is unavailable (see `_unavailable`). Each object is read once, one Id bucket
    at a time, only the rows some of its features date inside the window."""
    totals = {feature.name: np.zeros(len(users), dtype=np.int64) for feature in FEATURES
              if isinstance(feature.measure, Rate)}
    unavailable: dict[str, str] = {}
    for sobject, counts in _counts_by_object().items():
        columns = list(dict.fromkeys(column for _, count in counts for column in count.columns))
        dated_by = list(dict.fromkeys(column for _, count in counts for column in count.dated_by))
        seen: Counter = Counter()  # (count position, needs group) -> [rows it is judged on, rows filling it]
        judged: Counter = Counter()
        for table in staging.buckets(sobject, columns, where=lambda table: _any_in_window(table, dated_by, window)):
            for derived in dict.fromkeys(d for _, count in counts for d in count.derived):
                table = table.append_column(derived.name, derived.compute(table))
            actors = {count.users: count.actors(table) for _, count in counts}
            filled: dict[tuple[str, ...], pa.ChunkedArray] = {}
            for position, (name, count) in enumerate(counts):
                in_window = window.mask(table[_name(count.at)])
                wheres = [(where, pc.fill_null(where.mask(table), False)) for where in count.where]
                mask = in_window
                for _, where_mask in wheres:
                    mask = pc.and_(mask, where_mask)
                totals[name] += _per_user(actors[count.users].filter(mask), users)
                for group in count.needs:
                    if group not in filled:
                        filled[group] = pc.is_valid(actors[group]) if group in actors else _filled(table, group)
                    base = _base(group, count, in_window, wheres, table.num_rows)
                    judged[(position, group)] += _true(base)
                    seen[(position, group)] += _true(pc.and_(base, filled[group]))
        nothing_staged = staging.columns_in_every_file(sobject) is None
        for position, (name, count) in enumerate(counts):
            reason = _unavailable(count, position, judged, seen, nothing_staged)
            if reason and name not in unavailable:
                unavailable[name] = reason
    return totals, unavailable


def _base(group: tuple[str, ...], count: Count, in_window: pa.ChunkedArray,
          wheres: list[tuple[Where, pa.ChunkedArray]], rows: int) -> pa.ChunkedArray:
    """The rows on which a needed column (group) is judged: those the count's other tests select (in the
    window by its date, passing its filters), leaving out the tests that read the column itself. A
    conversion date is judged among converted leads, a call direction among calls."""
    reads = set(group)
    base = in_window if not reads & set(count.dated_by) else pa.chunked_array([pa.array(np.ones(rows, dtype=bool))])
    for where, where_mask in wheres:
        where_reads = {_name(column) for column in where.columns} | \
            {c for column in where.columns if isinstance(column, Derived) for c in column.columns}
        if not reads & where_reads:
            base = pc.and_(base, where_mask)
    return base


def _true(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(mask.cast(pa.int64())).as_py() or 0)


def _filled(table: pa.Table, group: tuple[str, ...]) -> pa.ChunkedArray:
    """Which rows of `table` set (not null, not '') at least one of the columns in `group`."""
    filled = pa.chunked_array([pa.array(np.zeros(table.num_rows, dtype=bool))])
    for name in group:
        values = table[name] if name in table.column_names else None
        if values is None or pa.types.is_null(values.type):
            continue
        mask = pc.is_valid(values)
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            mask = pc.fill_null(pc.not_equal(values, ""), False)
        filled = pc.or_(filled, mask)
    return filled


def _unavailable(count: Count, position: int, judged: Counter, seen: Counter, nothing_staged: bool) -> str | None:
    """Why `count` cannot be measured on this org, or None when it can: nothing of its object is staged
    (the org or its export lacks it), or a column it needs (or all of its user fields) is empty in (almost)
    every row it is judged on. A zero measured there would be a blind spot, not a fact about the users.
    An object with rows, none in the window, is measured: its features are 0 for everyone."""
    if nothing_staged:
        return f"nothing of {count.sobject} is staged (the org, or its export, has none)"
    empty = []
    for group in count.needs:
        rows = judged[(position, group)]
        if rows and seen[(position, group)] < rows * MIN_FILLED_SHARE:
            empty.append((" or ".join(group), rows))
    if empty:
        return "; ".join(f"{count.sobject}.{name} filled in fewer than {MIN_FILLED_SHARE:.0%} of the {rows:,} rows "
                         "it is read on in the window" for name, rows in empty)
    return None


def _any_in_window(table: pa.Table, dated_by: list[str], window: Window) -> pa.ChunkedArray:
    """Rows that some feature of their object dates inside the window."""
    inside = None
    for at in dated_by:
        mask = window.mask(table[at])
        inside = mask if inside is None else pc.or_(inside, mask)
    assert inside is not None
    return inside


def _per_user(actors: pa.ChunkedArray, ids: pa.Array) -> np.ndarray:
    """How many times each of `ids` occurs in `actors` (users outside `ids` are ignored)."""
    position = pc.index_in(actors.cast(pa.string()), value_set=ids).drop_null()
    return np.bincount(position.to_numpy(), minlength=len(ids))


def _direct_reports(users: pa.Table, window: Window, everyone: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Each of `everyone`'s direct reports, and those of them who manage someone themselves."""
    created = _column(users, "CreatedDate", _TIMESTAMP)
    before = pc.fill_null(pc.less(created, pa.scalar(window.as_of, type=pa.timestamp("us", tz="UTC"))), True)
    counted = users.filter(pc.and_(pc.fill_null(_column(users, "IsActive", pa.bool_()), False), before))
    managers = _column(counted, "ManagerId", pa.string())
    leading = pc.is_in(counted["Id"], value_set=pc.unique(managers.drop_null()))
    managers_of_leads = managers.filter(leading)
    return _per_user(managers, everyone), _per_user(managers_of_leads, everyone)


def _context(staging: StagedRecords, users: pa.Table) -> pa.Table:
    """CONTEXT_COLUMNS for every staged user (staging's order), profile and role by name."""
    return pa.table({
        "Id": users["Id"],
        "Name": _column(users, "Name", pa.string()),
        "Title": _column(users, "Title", pa.string()),
        "Department": _column(users, "Department", pa.string()),
        "Profile": _names(staging, "Profile", _column(users, "ProfileId", pa.string())),
        "UserRole": _names(staging, "UserRole", _column(users, "UserRoleId", pa.string())),
        "IsActive": pc.fill_null(_column(users, "IsActive", pa.bool_()), False),
    })


def _names(staging: StagedRecords, sobject: str, ids: pa.ChunkedArray) -> pa.ChunkedArray:
    """The Name of the `sobject` record each of `ids` points at (null when unknown)."""
    named = staging.read_arrow(sobject, ["Id", "Name"])
    return pc.take(_column(named, "Name", pa.string()), pc.index_in(ids, value_set=named["Id"]))


def _frame(ids: pa.Array, window: Window, counts: dict[str, np.ndarray], reports: np.ndarray,
           leads: np.ndarray, context: pa.Table, unavailable: dict[str, str]) -> pd.DataFrame:
    """One partition's features, in FEATURES order, then its users' context. An unavailable feature is NaN
    for everyone; a total adds up the parts this org has."""
    values: dict[str, np.ndarray] = {}
    missing = np.full(len(ids), np.nan)
    for feature in FEATURES:
        measure = feature.measure
        if feature.name in unavailable:
            values[feature.name] = missing
        elif isinstance(measure, Rate):
            values[feature.name] = counts[feature.name] * 30.0 / window.days
        elif isinstance(measure, Total):
            values[feature.name] = _sum(values[part] for part in measure.parts if part not in unavailable)
        elif isinstance(measure, Ratio):
            part, whole = values[measure.part], _sum(values[name] for name in measure.whole)
            values[feature.name] = np.divide(part, whole, out=np.zeros(len(part)), where=whole > 0)
        elif isinstance(measure, DirectReports):
            values[feature.name] = (leads if measure.managers_only else reports).astype(np.float64)
        else:
            raise FeatureError(f"feature {feature.name} has no measure to compute it with")
    rows = context.take(pc.index_in(ids, value_set=context["Id"])).drop_columns(["Id"]).to_pandas()
    index = pd.Index(ids.to_pylist(), name="Id")
    rows.index = index
    frame = pd.concat([pd.DataFrame(values, index=index), rows[list(CONTEXT_COLUMNS)]], axis=1)
    frame.attrs[UNAVAILABLE] = dict(unavailable)
    return frame


def _availability(unavailable_rates: dict[str, str]) -> dict[str, str]:
    """Every feature this org cannot measure, with why: the rates `_count_activity` found blind, the
    shares of those (a share of a rate, or of a whole that includes one), and a total none of whose parts
    is measured."""
    unavailable = dict(unavailable_rates)
    for feature in FEATURES:
        measure = feature.measure
        if isinstance(measure, Total) and all(part in unavailable for part in measure.parts):
            unavailable[feature.name] = "none of its parts is measured on this org"
        elif isinstance(measure, Ratio):
            blind = [name for name in (measure.part, *measure.whole) if name in unavailable]
            if blind:
                unavailable[feature.name] = f"{blind[0]} is unavailable: {unavailable[blind[0]]}"
    return unavailable


def unavailable_features(features: pd.DataFrame) -> dict[str, str]:
    """The features a frame from `compute_features` could not measure on its org (NaN for every user), with
    why. Read from the frame itself (its attrs survive Parquet), else from its all-NaN feature columns."""
    recorded = features.attrs.get(UNAVAILABLE)
    if recorded is not None:
        return dict(recorded)
    return {name: "not measured on this org" for name in FEATURE_NAMES
            if name in features.columns and len(features) and features[name].isna().all()}


def _sum(arrays: Iterable[np.ndarray]) -> np.ndarray:
    total: np.ndarray | None = None
    for array in arrays:
        total = array.copy() if total is None else total + array
    if total is None:
        raise FeatureError("a total of no features")
    return total
