"""Behaviour features: the registry, the window's edges, rates, shares, logins, partitions, a real org."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from connectors.staging import Staging
from personas.features import (ACTIVITY_FEATURES, CONTEXT_COLUMNS, FEATURE_NAMES, FEATURES, LOGIN_CHANNEL_TABLE,
                               PER_30_DAYS, SHARE, UNITS, FeatureError, Window, compute_features,
                               compute_features_partitioned, feature_names, login_channels, partition_users,
                               unavailable_features)
from sandbox.runner import RunningSandbox
from tests.conftest import AS_OF, pull_org, sandbox_settings

# --- a tiny hand-made org -----------------------------------------------------------------------------

MANAGER, REP, COLLEAGUE, LEAVER, NEWCOMER, IDLE = (f"005TINY0000000{tag}" for tag in ("MGR", "REP", "COL", "LVR",
                                                                                   "NEW", "IDL"))
TINY_AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)
TINY = Window(TINY_AS_OF, days=60)  # rates per 30 days are half the counts
INSIDE = TINY_AS_OF - timedelta(days=10)
BEFORE = TINY.start - timedelta(days=1)
AFTER = TINY_AS_OF + timedelta(days=1)
_ids = (f"a{n:014d}" for n in itertools.count())


def _stage(staging: Staging, sobject: str, rows: list[dict]) -> None:
    """Writes `rows` (dicts of one record each) as one staged part of `sobject`, Ids made up."""
    columns = sorted({key for row in rows for key in row})
    table = pa.table({"Id": [row.get("Id") or next(_ids) for row in rows],
                      **{name: [row.get(name) for row in rows] for name in columns if name != "Id"}})
    staging.write_part(sobject, table)


def _rows(n: int, **fields: object) -> list[dict]:
    """`n` records with the same fields."""
    return [dict(fields) for _ in range(n)]


def _stage_users(staging: Staging) -> None:
    user = {"Title": "Account Executive", "Department": "Sales", "ProfileId": "00eSALES", "UserRoleId": "00EREPS",
            "IsActive": True, "CreatedDate": TINY_AS_OF - timedelta(days=400)}
    _stage(staging, "User", [
        {**user, "Id": MANAGER, "Name": "Mia Manager", "Title": "Sales Director"},
        {**user, "Id": REP, "Name": "Rex Rep", "ManagerId": MANAGER},
        {**user, "Id": COLLEAGUE, "Name": "Cole Colleague", "ManagerId": MANAGER},
        {**user, "Id": LEAVER, "Name": "Lea Leaver", "ManagerId": MANAGER, "IsActive": False},
        {**user, "Id": NEWCOMER, "Name": "Ned Newcomer", "ManagerId": MANAGER, "CreatedDate": TINY_AS_OF},
        {**user, "Id": IDLE, "Name": "Ida Idle", "Title": "VP Everything", "ProfileId": "00eADMIN",
         "UserRoleId": None},
    ])
    _stage(staging, "Profile", [{"Id": "00eSALES", "Name": "Sales User"}, {"Id": "00eADMIN", "Name": "System Admin"}])
    _stage(staging, "UserRole", [{"Id": "00EREPS", "Name": "Sales Rep"}])


def _stage_activity(staging: Staging) -> None:
    """REP's activity, with decoys: rows outside the window, other users' rows, rows a filter excludes."""
    task = {"OwnerId": REP, "CreatedById": REP, "CreatedDate": INSIDE}
    _stage(staging, "Task", [
        *_rows(6, **task, TaskSubtype="Call"),
        *_rows(1, **task | {"CreatedDate": BEFORE}, TaskSubtype="Call"),
        *_rows(1, **task | {"OwnerId": COLLEAGUE}, TaskSubtype="Call"),  # created by REP for COLLEAGUE
        *_rows(4, **task, TaskSubtype="Email"),
        *_rows(5, **task, TaskSubtype="ListEmail"),  # per recipient: not list_emails
        *_rows(3, **task, TaskSubtype="Task"),
    ])
    _stage(staging, "ListEmail", _rows(2, OwnerId=REP, CreatedById=REP, CreatedDate=INSIDE))
    _stage(staging, "Event", [
        *_rows(2, OwnerId=REP, CreatedById=MANAGER, CreatedDate=BEFORE, StartDateTime=INSIDE),
        *_rows(1, OwnerId=REP, CreatedById=REP, CreatedDate=INSIDE, StartDateTime=AFTER),
    ])
    _stage(staging, "Lead", [
        *_rows(3, OwnerId=REP, CreatedById=REP, CreatedDate=INSIDE, IsConverted=False),
        *_rows(1, OwnerId=COLLEAGUE, CreatedById=REP, CreatedDate=INSIDE, IsConverted=True,
                   ConvertedDate=INSIDE.date()),
        *_rows(2, OwnerId=REP, CreatedById=COLLEAGUE, CreatedDate=BEFORE, IsConverted=True,
                   ConvertedDate=INSIDE.date()),
        *_rows(1, OwnerId=REP, CreatedById=REP, CreatedDate=BEFORE, IsConverted=True,
                   ConvertedDate=BEFORE.date()),
    ])
    opportunity = {"OwnerId": REP, "CreatedById": REP, "CreatedDate": INSIDE, "IsWon": False,
                   "Type": "New Customer", "CloseDate": AFTER.date()}
    _stage(staging, "Opportunity", [
        *_rows(2, **opportunity),
        *_rows(1, **opportunity | {"Type": "Existing Customer - Upgrade"}),
        *_rows(1, **opportunity | {"Type": "Existing Customer - Replacement"}),
        *_rows(1, **opportunity | {"Type": "Existing Customer - Downgrade"}),
        *_rows(2, **opportunity | {"CreatedDate": BEFORE, "IsWon": True,
                                                      "CloseDate": INSIDE.date()}),
    ])
    _stage(staging, "Quote", _rows(3, OwnerId=REP, CreatedById=REP, CreatedDate=INSIDE))
    _stage(staging, "Contract", _rows(1, OwnerId=REP, CreatedById=REP, CreatedDate=INSIDE))
    _stage(staging, "Contact", _rows(2, OwnerId=REP, CreatedById=REP, CreatedDate=INSIDE))
    _stage(staging, "ContactHistory", [
        *_rows(2, CreatedById=REP, CreatedDate=INSIDE, Field="created"),
        *_rows(5, CreatedById=REP, CreatedDate=INSIDE, Field="Phone"),
    ])
    case = {"OwnerId": REP, "CreatedById": COLLEAGUE, "CreatedDate": INSIDE, "IsClosed": True,
            "ClosedDate": INSIDE, "IsEscalated": False}
    _stage(staging, "Case", [
        *_rows(4, **case),
        *_rows(1, **case | {"IsClosed": False, "ClosedDate": None, "IsEscalated": True}),
        *_rows(2, **case | {"CreatedDate": BEFORE, "IsEscalated": True}),  # closed inside
    ])
    _stage(staging, "CaseComment", _rows(6, CreatedById=REP, CreatedDate=INSIDE))
    _stage(staging, "CaseHistory", [
        *_rows(2, CreatedById=REP, CreatedDate=INSIDE, Field="Owner"),
        *_rows(3, CreatedById=REP, CreatedDate=INSIDE, Field="Status"),
    ])
    _stage(staging, "KnowledgeArticleVersion",
           _rows(1, CreatedById=REP, CreatedDate=INSIDE))
    authored = {"CreatedById": REP, "CreatedDate": INSIDE, "LastModifiedById": REP, "LastModifiedDate": INSIDE}
    _stage(staging, "Report", [
        *_rows(1, **authored),  # created, never modified: once
        *_rows(1, **authored | {"LastModifiedDate": INSIDE + timedelta(hours=1)}),  # created + modified
        *_rows(1, **authored | {"CreatedById": MANAGER, "CreatedDate": BEFORE}),  # REP modified it
        *_rows(1, **authored | {"CreatedDate": BEFORE - timedelta(days=9),
                                              "LastModifiedDate": BEFORE}),  # all before the window
    ])
    _stage(staging, "Dashboard", _rows(1, **authored | {"CreatedById": MANAGER,
                                                                          "CreatedDate": BEFORE}))
    _stage(staging, "SetupAuditTrail", [
        *_rows(1, CreatedById=REP, CreatedDate=INSIDE, Action="createduser"),
        *_rows(2, CreatedById=REP, CreatedDate=INSIDE, Action="changedFlow"),
    ])
    _stage(staging, "FeedItem", _rows(4, CreatedById=REP, CreatedDate=INSIDE))
    _stage(staging, "Campaign", _rows(1, OwnerId=MANAGER, CreatedById=REP, CreatedDate=INSIDE))
    _stage(staging, "EmailTemplate", _rows(2, OwnerId=REP, CreatedById=REP, CreatedDate=INSIDE))
    login = {"UserId": REP, "LoginTime": INSIDE, "Status": "Success"}
    _stage(staging, "LoginHistory", [
        {**login, "LoginType": "Application", "Application": "Browser", "Platform": "Mac OSX"},
        {**login, "LoginType": "Application", "Application": "Browser", "Platform": "Windows 11", "ApiType": "N/A"},
        {**login, "LoginType": "Application", "Application": "Browser", "Platform": "Windows 11",
         "Status": "Invalid Password"},
        {**login, "LoginType": "Remote Access 2.0", "Application": "Salesforce for iOS", "Platform": "iOS"},
        {**login, "LoginType": "Remote Access 2.0", "Application": "Salesforce for Android", "Platform": "Android"},
        {**login, "LoginType": "Remote Access 2.0", "Application": "Salesforce for iOS", "Platform": "iOS",
         "LoginTime": BEFORE},
        {**login, "LoginType": "Remote Access 2.0", "Application": "Data Loader", "Platform": "Unknown",
         "ApiType": "REST"},
        {**login, "LoginType": "Other Apex API", "Application": "N/A", "Platform": "Unknown",
         "ApiType": "SOAP Partner"},
        {**login, "UserId": COLLEAGUE, "LoginType": "Application", "Application": "Browser", "Platform": "Mac OSX"},
    ])


# What REP did inside TINY, by feature (each decoy above must stay out of these counts).
REP_COUNTS = {
    "calls": 6, "emails": 4, "list_emails": 2, "meetings": 2, "leads_created": 4, "leads_converted": 2,
    "opportunities_created": 5, "opportunities_won": 2, "upsell_renewals": 2, "quotes": 3, "contracts": 1,
    "contacts_created": 2, "contacts_updated": 5, "cases_closed": 6, "cases_escalated": 1, "case_comments": 6,
    "case_reassignments": 2, "articles_written": 1, "reports_changed": 4, "dashboards_changed": 1,
    "setup_changes": 3, "users_created": 1, "chatter_posts": 4, "campaigns": 1, "email_templates": 2,
    "logins_browser": 2, "logins_mobile": 2, "logins_api": 2,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Staging:
    staging = Staging(tmp_path_factory.mktemp("tiny-staging"))
    _stage_users(staging)
    _stage_activity(staging)
    return staging


@pytest.fixture(scope="module")
def tiny_features(tiny: Staging) -> pd.DataFrame:
    return compute_features(tiny, TINY)


# --- the registry ---------------------------------------------------------------------------------------

# The names the persona catalog is written against.
CATALOG_CONTRACT = (
    "calls", "emails", "list_emails", "meetings", "leads_created", "leads_converted", "opportunities_created",
    "opportunities_won", "upsell_renewals", "quotes", "contracts", "contacts_created", "contacts_updated",
    "cases_closed", "cases_escalated", "case_comments", "case_reassignments", "articles_written", "reports_changed",
    "dashboards_changed", "setup_changes", "users_created", "chatter_posts", "campaigns", "email_templates",
    "logins_browser", "logins_mobile", "logins_api", "login_share_browser", "login_share_mobile", "login_share_api",
    "direct_reports", "activity_total",
)


def test_registry_declares_every_feature_once_with_unit_meaning_and_source() -> None:
    names = [feature.name for feature in FEATURES]
    assert len(names) == len(set(names))
    assert tuple(names) == FEATURE_NAMES == tuple(feature_names())
    assert set(CATALOG_CONTRACT) <= set(names)
    for feature in FEATURES:
        assert feature.unit in UNITS, feature.name
        assert feature.meaning.strip() and "\n" not in feature.meaning, feature.name
        assert feature.source.strip(), feature.name
        assert feature.measure is not None, feature.name


def test_every_activity_feature_has_a_share_and_logins_are_not_activity() -> None:
    units = {feature.name: feature.unit for feature in FEATURES}
    assert set(ACTIVITY_FEATURES) == set(CATALOG_CONTRACT[:25])
    for name in ACTIVITY_FEATURES:
        assert units[name] == PER_30_DAYS and units[f"{name}_share"] == SHARE
    assert not any(name.startswith("logins_") for name in ACTIVITY_FEATURES)
    assert units["direct_reports"] == "people" and units["activity_total"] == PER_30_DAYS


def test_sources_name_object_filter_and_timestamp() -> None:
    source = {feature.name: feature.source for feature in FEATURES}
    assert source["calls"] == "Task rows where TaskSubtype = 'Call', counted for OwnerId, else CreatedById, dated by CreatedDate"
    assert "CaseHistory" in source["case_reassignments"] and "Field = 'Owner'" in source["case_reassignments"]
    assert "LastModifiedDate != CreatedDate" in source["reports_changed"]
    assert "login-channel table" in source["logins_api"] and "Status = 'Success'" in source["logins_api"]


# --- the window -----------------------------------------------------------------------------------------

def test_window_counts_its_start_and_stops_before_as_of() -> None:
    window = Window(datetime(2026, 11, 1, 2, tzinfo=timezone(timedelta(hours=2))), days=30)
    assert window.as_of == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert window.start == datetime(2026, 10, 2, tzinfo=timezone.utc)
    assert window.contains(window.start) and window.contains(window.as_of - timedelta(microseconds=1))
    assert not window.contains(window.as_of) and not window.contains(window.start - timedelta(microseconds=1))


def test_window_refuses_a_naive_as_of_or_no_days() -> None:
    with pytest.raises(FeatureError, match="time zone"):
        Window(datetime(2026, 11, 1))
    with pytest.raises(FeatureError, match="days"):
        Window(TINY_AS_OF, days=0)


def test_activity_exactly_at_the_start_counts_and_exactly_at_as_of_does_not(tmp_path: Path) -> None:
    staging = Staging(tmp_path)
    _stage_users(staging)
    window = Window(TINY_AS_OF, days=30)
    millisecond = timedelta(milliseconds=1)
    at = [window.start - millisecond, window.start, window.as_of - millisecond, window.as_of]
    _stage(staging, "Task", [{"OwnerId": REP, "TaskSubtype": "Call", "CreatedDate": moment} for moment in at])
    # Date fields count as midnight UTC of their day.
    days = [window.start.date() - timedelta(days=1), window.start.date(), window.as_of.date()]
    _stage(staging, "Opportunity", [{"OwnerId": REP, "IsWon": True, "CloseDate": day} for day in days])

    features = compute_features(staging, window)

    assert features.loc[REP, "calls"] == 2.0  # start and as_of - 1 ms
    assert features.loc[REP, "opportunities_won"] == 1.0  # the start's day only


def test_a_backfill_never_sees_later_activity(tiny: Staging, tiny_features: pd.DataFrame) -> None:
    earlier = compute_features(tiny, Window(INSIDE, days=60))
    assert earlier.loc[REP, "calls"] == 0.5  # only the call before TINY's start; INSIDE itself is as-of
    assert tiny_features.loc[REP, "calls"] == 3.0


# --- what each feature counts ---------------------------------------------------------------------------

def test_each_activity_is_counted_per_30_days_of_the_window(tiny_features: pd.DataFrame) -> None:
    rep = tiny_features.loc[REP]
    assert {name: rep[name] for name in REP_COUNTS} == {name: count * 30 / 60 for name, count in REP_COUNTS.items()}
    assert tiny_features.loc[COLLEAGUE, "calls"] == 0.5  # the call REP logged for COLLEAGUE is COLLEAGUE's
    assert tiny_features.loc[COLLEAGUE, "leads_converted"] == 0.5
    assert tiny_features.loc[MANAGER, "reports_changed"] == 0  # REP modified MANAGER's report later


def test_rates_scale_with_the_window_length(tiny: Staging) -> None:
    longer = compute_features(tiny, Window(TINY_AS_OF, days=90))
    assert longer.loc[REP, "calls"] == pytest.approx(7 * 30 / 90)  # the decoy before TINY counts now


# One login per row of LOGIN_CHANNEL_TABLE, as Salesforce records it: (LoginType, ApiType, Application,
# Platform) -> the channel, and the row that must decide it.
_LOGINS_BY_TABLE_ROW = [
    (0, ("Remote Access 2.0", "REST", "Data Loader", "Unknown"), "api"),
    (0, ("Application", "SOAP Partner", "N/A", "Windows 10"), "api"),  # an API type wins over the login type
    (1, ("Other Apex API", None, "Jitterbit Harmony", "Unknown"), "api"),
    (1, ("Partner Product", "N/A", "N/A", "Unknown"), "api"),
    (2, ("Remote Access 2.0", None, "Salesforce for iOS", "iOS"), "mobile"),
    (2, ("Remote Access 2.0", "N/A", "Salesforce for Android", "Android 14"), "mobile"),
    (2, ("Remote Access 2.0", None, "Salesforce1", "Unknown"), "mobile"),  # an older name, no platform
    (2, ("Remote Access 2.0", None, "Salesforce Mobile", None), "mobile"),
    (3, ("Remote Access 2.0", None, "N/A", "iOS/iPhone"), "mobile"),  # only the platform says it
    (3, ("Application", None, "Browser", "Android 13"), "mobile"),  # a phone's browser
    (4, ("Remote Access 2.0", None, "MuleSoft Anypoint", "Unknown"), "api"),  # a connected app, no API type
    (4, ("Remote Access Client", "", "Outlook Integration", "Windows 11"), "api"),
    (5, ("Application", None, "Browser", "Mac OSX"), "browser"),
    (5, ("SAML Idp Initiated SSO", "N/A", "Browser", "Windows 11"), "browser"),
    (5, ("Remote Access 2.0", None, "Browser", "Windows 10"), "browser"),  # OAuth in a browser, not an app
    (5, ("Remote Access 2.0", None, "N/A", "Unknown"), "browser"),  # an OAuth login naming no app at all
]


@pytest.mark.parametrize(("row", "login", "channel"), _LOGINS_BY_TABLE_ROW)
def test_each_row_of_the_login_channel_table(row: int, login: tuple, channel: str) -> None:
    columns = dict(zip(("LoginType", "ApiType", "Application", "Platform"), ([value] for value in login)))
    table = pa.table(columns, schema=pa.schema([(name, pa.string()) for name in columns]))
    assert login_channels(table).to_pylist() == [channel]
    first_match = next(i for i, rule in enumerate(LOGIN_CHANNEL_TABLE) if rule.test(table).to_pylist()[0])
    assert first_match == row, f"decided by row {first_match} ({LOGIN_CHANNEL_TABLE[first_match].when})"
    assert LOGIN_CHANNEL_TABLE[row].channel == channel


def test_every_row_of_the_login_channel_table_is_tested() -> None:
    assert {row for row, _, _ in _LOGINS_BY_TABLE_ROW} == set(range(len(LOGIN_CHANNEL_TABLE)))


def test_login_channels_read_a_missing_column_as_empty() -> None:
    table = pa.table({"Application": ["Browser", "Salesforce for iOS", "Data Loader"]})  # no ApiType, no LoginType
    assert login_channels(table).to_pylist() == ["browser", "mobile", "browser"]


def test_logins_count_successes_by_channel_and_their_shares(tiny_features: pd.DataFrame) -> None:
    rep = tiny_features.loc[REP]
    assert (rep["logins_browser"], rep["logins_mobile"], rep["logins_api"]) == (1.0, 1.0, 1.0)
    assert rep["login_share_browser"] == rep["login_share_mobile"] == rep["login_share_api"] == pytest.approx(1 / 3)
    colleague = tiny_features.loc[COLLEAGUE]
    assert (colleague["login_share_browser"], colleague["login_share_api"]) == (1.0, 0.0)
    assert tiny_features.loc[IDLE, ["login_share_browser", "login_share_mobile", "login_share_api"]].sum() == 0


def test_direct_reports_counts_only_active_reports_created_before_as_of(tiny_features: pd.DataFrame) -> None:
    assert tiny_features.loc[MANAGER, "direct_reports"] == 2  # REP and COLLEAGUE; not LEAVER, not NEWCOMER
    assert tiny_features.loc[REP, "direct_reports"] == 0


def test_an_org_where_nobody_has_a_manager_has_no_reports(tmp_path: Path) -> None:
    staging = Staging(tmp_path)
    _stage(staging, "User", [{"Id": REP, "IsActive": True, "CreatedDate": BEFORE}])  # no ManagerId column at all
    features = compute_features(staging, TINY)
    assert (features.loc[REP, "direct_reports"], features.loc[REP, "reports_who_manage"]) == (0, 0)


def test_activity_total_and_mix_shares(tiny_features: pd.DataFrame) -> None:
    rep = tiny_features.loc[REP]
    activity = sum(count for name, count in REP_COUNTS.items() if not name.startswith("logins_"))
    assert rep["activity_total"] == pytest.approx(activity / 2)
    assert rep["calls_share"] == pytest.approx(6 / activity)
    assert sum(rep[f"{name}_share"] for name in ACTIVITY_FEATURES) == pytest.approx(1.0)


def test_a_user_without_activity_has_zeros_and_context(tiny_features: pd.DataFrame) -> None:
    idle = tiny_features.loc[IDLE]
    measured = [name for name in FEATURE_NAMES if name not in unavailable_features(tiny_features)]
    assert "calls" in measured and (idle[measured] == 0).all()
    assert (idle["Name"], idle["Title"], idle["Profile"], idle["IsActive"]) == ("Ida Idle", "VP Everything",
                                                                                "System Admin", True)
    assert pd.isna(idle["UserRole"])
    assert tiny_features.loc[REP, "UserRole"] == "Sales Rep"


def test_frame_has_every_user_features_in_registry_order_then_context(tiny_features: pd.DataFrame) -> None:
    assert list(tiny_features.columns) == [*FEATURE_NAMES, *CONTEXT_COLUMNS]
    assert sorted(tiny_features.index) == sorted([MANAGER, REP, COLLEAGUE, LEAVER, NEWCOMER, IDLE])
    assert all(tiny_features[name].dtype == np.float64 for name in FEATURE_NAMES)


# --- partitions -----------------------------------------------------------------------------------------

def test_partition_users_is_deterministic_disjoint_and_complete() -> None:
    ids = [f"005{n:015d}" for n in range(500)]
    parts = partition_users(ids, 7)
    assert parts == partition_users(list(ids), 7) and len(parts) == 7
    assert sorted(itertools.chain.from_iterable(parts)) == ids
    assert all(20 < len(part) < 120 for part in parts)
    assert partition_users(ids, 1) == [ids]
    with pytest.raises(FeatureError, match="partitions"):
        partition_users(ids, 0)


def test_a_partition_gets_exactly_its_rows_of_the_whole(tiny: Staging, tiny_features: pd.DataFrame) -> None:
    part = compute_features(tiny, TINY, user_ids=[REP, MANAGER])
    pd.testing.assert_frame_equal(part, tiny_features.loc[[REP, MANAGER]])
    with pytest.raises(FeatureError, match="not staged"):
        compute_features(tiny, TINY, user_ids=[REP, "005NOBODY"])
    with pytest.raises(FeatureError, match="repeats"):
        compute_features(tiny, TINY, user_ids=[REP, REP])


def test_features_need_staged_users(tmp_path: Path) -> None:
    with pytest.raises(FeatureError, match="no users are staged"):
        compute_features(Staging(tmp_path), TINY)


# --- the small sandbox org, pulled once -----------------------------------------------------------------

@pytest.fixture(scope="module")
def small_org(sandbox: RunningSandbox, tmp_path_factory: pytest.TempPathFactory) -> Staging:
    settings = sandbox_settings(sandbox, home=tmp_path_factory.mktemp("features-pull"), pull_history_days=400,
                                pull_bulk_threshold=5_000, pull_bulk_page_rows=4_000)
    pull_org(settings)
    return Staging.from_config(settings.staging())


@pytest.fixture(scope="module")
def small_features(small_org: Staging) -> pd.DataFrame:
    return compute_features(small_org, Window(AS_OF))


def test_features_are_the_same_whatever_the_partitioning(small_org: Staging, small_features: pd.DataFrame) -> None:
    window = Window(AS_OF)
    for partitions in (1, 3, 7):
        pd.testing.assert_frame_equal(compute_features_partitioned(small_org, window, partitions), small_features)
    # Partitions computed independently, as separate workers would, add up to the same frame.
    parts = partition_users(list(small_features.index), 3)
    independent = pd.concat([compute_features(small_org, window, user_ids=part) for part in parts])
    pd.testing.assert_frame_equal(independent.loc[small_features.index], small_features)


def test_shares_are_fractions_that_add_up(small_features: pd.DataFrame) -> None:
    shares = small_features[[feature.name for feature in FEATURES if feature.unit == SHARE]]
    assert ((shares >= 0) & (shares <= 1)).all().all()
    active = small_features["activity_total"] > 0
    mix = small_features[[f"{name}_share" for name in ACTIVITY_FEATURES]].sum(axis=1)
    assert np.allclose(mix[active], 1.0) and (mix[~active] == 0).all()
    logins = small_features[["login_share_browser", "login_share_mobile", "login_share_api"]].sum(axis=1)
    logged_in = small_features[["logins_browser", "logins_mobile", "logins_api"]].sum(axis=1) > 0
    assert np.allclose(logins[logged_in], 1.0) and active.mean() > 0.8


def test_features_tell_the_true_personas_apart(sandbox: RunningSandbox, small_features: pd.DataFrame) -> None:
    truth = pd.read_csv(sandbox.truth_csv).set_index("Id")["persona"]
    median = small_features.join(truth, how="inner").groupby("persona").median(numeric_only=True)
    assert median.loc["Case Solver", "cases_closed"] > 3 * max(median.loc["Deal Closer", "cases_closed"], 1)
    assert median.loc["Pipeline Builder", "leads_created"] > median.loc["Trusted Advisor", "leads_created"]
    assert median["login_share_api"].idxmax() == "IT Services"
    assert median["articles_written"].idxmax() == "Expert Agent"
    assert median["case_reassignments"].idxmax() == "Team Leader"
    assert median["email_templates"].idxmax() == "Designer / Developer"
    # How the work is done, read from fields the pull brings (CallType, WhoId, WhatId, Section, ManagerId).
    assert median.loc["Case Solver", "inbound_call_share"] > median.loc["Deal Closer", "inbound_call_share"]
    assert median.loc["Case Solver", "case_task_share"] > 0.5 > median.loc["Pipeline Builder", "case_task_share"]
    assert median.loc["Marketing Specialist", "internal_task_share"] > median.loc["Case Solver", "internal_task_share"]
    assert median.loc["Deal Closer", "customer_meeting_share"] > median.loc["Data Expert", "customer_meeting_share"]
    assert median.loc["Service Admin", "user_admin_share"] > median.loc["IT Services", "user_admin_share"]
    assert median.loc["IT Services", "automation_share"] > median.loc["Service Admin", "automation_share"]
    assert median.loc["Trusted Advisor", "upsell_share"] > median.loc["Deal Closer", "upsell_share"]
    assert median.loc["Expert Agent", "escalated_share"] > median.loc["Case Solver", "escalated_share"]
    assert median.loc["Strategic Leader", "reports_who_manage"] > median.loc["Marketing Manager", "reports_who_manage"]


# --- detail features: how the work is done ------------------------------------------------------------

DIRECTOR, LEAD, AGENT = (f"005DETL0000000{tag}" for tag in ("DIR", "LED", "AGT"))


@pytest.fixture(scope="module")
def detail_features(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """AGENT's calls, tasks, meetings, deals, cases and setup changes, with decoys outside the window."""
    staging = Staging(tmp_path_factory.mktemp("detail-staging"))
    user = {"IsActive": True, "CreatedDate": TINY_AS_OF - timedelta(days=400)}
    _stage(staging, "User", [
        {**user, "Id": DIRECTOR, "Name": "Dina Director"},
        {**user, "Id": LEAD, "Name": "Leo Lead", "ManagerId": DIRECTOR},
        {**user, "Id": AGENT, "Name": "Ada Agent", "ManagerId": LEAD},
    ])
    task = {"OwnerId": AGENT, "CreatedById": AGENT, "CreatedDate": INSIDE}
    _stage(staging, "Task", [
        *_rows(3, **task, TaskSubtype="Call", CallType="Inbound", WhatId="500A00000000001"),
        *_rows(1, **task, TaskSubtype="Call", CallType="Outbound", WhoId="003A00000000001"),
        *_rows(1, **task | {"CreatedDate": BEFORE}, TaskSubtype="Call", CallType="Inbound"),
        *_rows(2, **task, TaskSubtype="Task", WhoId="", WhatId=""),  # about nobody
        *_rows(1, **task, TaskSubtype="Email"),  # about nobody (nulls)
        *_rows(1, **task, TaskSubtype="Email", WhatId="006A00000000001"),  # on a deal
        *_rows(1, **task, WhatId="001A00000000001"),  # no subtype (older tasks): still a task logged
        *_rows(4, **task, TaskSubtype="ListEmail"),  # recipients of a list email: not logged tasks
    ])
    _stage(staging, "Event", [
        *_rows(2, OwnerId=AGENT, CreatedById=AGENT, CreatedDate=INSIDE, StartDateTime=INSIDE, WhoId="003A0001"),
        *_rows(1, OwnerId=AGENT, CreatedById=AGENT, CreatedDate=INSIDE, StartDateTime=INSIDE, WhatId="001A0001"),
        *_rows(1, OwnerId=AGENT, CreatedById=AGENT, CreatedDate=INSIDE, StartDateTime=INSIDE),  # internal
    ])
    deal = {"OwnerId": AGENT, "CreatedById": LEAD, "CreatedDate": INSIDE, "IsWon": False, "Type": "New Customer"}
    _stage(staging, "Opportunity", [
        *_rows(3, **deal),
        *_rows(1, **deal | {"Type": "Existing Customer - Upgrade"}),  # opened by the lead: still AGENT's
    ])
    case = {"OwnerId": AGENT, "CreatedById": AGENT, "CreatedDate": INSIDE, "IsClosed": False, "IsEscalated": False}
    _stage(staging, "Case", [*_rows(3, **case), *_rows(1, **case | {"IsEscalated": True})])
    change = {"CreatedById": AGENT, "CreatedDate": INSIDE}
    _stage(staging, "SetupAuditTrail", [
        *_rows(2, **change, Section="Manage Users", Action="createduser"),
        *_rows(1, **change, Section="Flows", Action="changedFlow"),
        *_rows(1, **change, Section="Customize Cases", Action="changedPicklist"),
        *_rows(1, **change | {"CreatedDate": AFTER}, Section="Flows", Action="changedFlow"),
    ])
    return compute_features(staging, TINY)


def test_call_direction_and_what_tasks_are_about(detail_features: pd.DataFrame) -> None:
    agent = detail_features.loc[AGENT]
    assert agent["inbound_calls"] == 3 / 2 and agent["calls"] == 4 / 2
    assert agent["inbound_call_share"] == pytest.approx(3 / 4)
    assert agent["tasks_logged"] == 9 / 2  # 4 calls, 2 to-dos, 2 emails, 1 without subtype; not list emails
    assert agent["internal_task_share"] == pytest.approx(3 / 9)  # the to-dos with '' ids and the bare email
    assert agent["case_task_share"] == pytest.approx(3 / 9)  # WhatId with the Case key prefix 500


def test_customer_meetings_have_a_contact_lead_account_or_deal(detail_features: pd.DataFrame) -> None:
    agent = detail_features.loc[AGENT]
    assert agent["customer_meetings"] == 3 / 2
    assert agent["customer_meeting_share"] == pytest.approx(3 / 4)


def test_upsell_and_escalated_shares_read_own_records_opened(detail_features: pd.DataFrame) -> None:
    agent = detail_features.loc[AGENT]
    assert agent["opportunities_opened"] == 4 / 2 and agent["opportunities_created"] == 0  # the lead opened them
    assert agent["upsell_share"] == pytest.approx(1 / 4)
    assert agent["cases_opened"] == 4 / 2
    assert agent["escalated_share"] == pytest.approx(1 / 4)
    assert detail_features.loc[LEAD, "upsell_share"] == 0  # nothing of their own: 0, not a division by zero


def test_setup_changes_by_kind(detail_features: pd.DataFrame) -> None:
    agent = detail_features.loc[AGENT]
    assert agent["setup_changes"] == 4 / 2  # the change after as-of does not count
    assert (agent["user_admin_changes"], agent["automation_changes"]) == (2 / 2, 1 / 2)
    assert (agent["user_admin_share"], agent["automation_share"]) == (pytest.approx(2 / 4), pytest.approx(1 / 4))


def test_details_are_not_activity_of_their_own(detail_features: pd.DataFrame) -> None:
    assert {"inbound_calls", "tasks_logged", "customer_meetings", "opportunities_opened",
            "user_admin_changes"}.isdisjoint(ACTIVITY_FEATURES)
    agent = detail_features.loc[AGENT]
    assert agent[[f"{name}_share" for name in ACTIVITY_FEATURES]].sum() == pytest.approx(1.0)  # of those measured


def test_reports_who_manage_counts_leaders_of_teams(detail_features: pd.DataFrame,
                                                    tiny_features: pd.DataFrame) -> None:
    assert detail_features["reports_who_manage"].to_dict() == {DIRECTOR: 1, LEAD: 0, AGENT: 0}
    assert detail_features.loc[LEAD, "direct_reports"] == 1
    assert tiny_features.loc[MANAGER, "reports_who_manage"] == 0  # leads reps, not managers


def test_each_object_is_scanned_once_for_all_partitions(small_org: Staging) -> None:
    scans: dict[str, int] = {}

    class CountingStaging:
        root = small_org.root

        def read_arrow(self, sobject: str, columns: list[str] | None = None) -> pa.Table:
            scans[sobject] = scans.get(sobject, 0) + 1
            return small_org.read_arrow(sobject, columns)

        def buckets(self, sobject: str, columns: list[str] | None = None, **options: object):
            scans[sobject] = scans.get(sobject, 0) + 1
            return small_org.buckets(sobject, columns, **options)

        def columns_in_every_file(self, sobject: str) -> set[str] | None:  # file footers only: not a scan
            return small_org.columns_in_every_file(sobject)

    compute_features_partitioned(CountingStaging(), Window(as_of=AS_OF, days=90), 7)

    assert {"Task", "Case", "LoginHistory", "User"} <= set(scans)
    assert set(scans.values()) == {1}, scans


# --- what an org lacks ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sparse(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """An org that logs calls without CallType, has no Knowledge at all, and whose ListEmail export lacks
    OwnerId (the creator is there)."""
    staging = Staging(tmp_path_factory.mktemp("sparse-staging"))
    _stage_users(staging)
    _stage(staging, "Task", _rows(6, OwnerId=REP, CreatedById=REP, CreatedDate=INSIDE, TaskSubtype="Call"))
    _stage(staging, "ListEmail", [*_rows(3, CreatedById=REP, CreatedDate=INSIDE),
                                  *_rows(1, OwnerId=COLLEAGUE, CreatedById=REP, CreatedDate=INSIDE)])
    _stage(staging, "Case", _rows(2, OwnerId=COLLEAGUE, CreatedById=COLLEAGUE, CreatedDate=INSIDE, IsClosed=True,
                                  ClosedDate=INSIDE, IsEscalated=False))
    # 300 leads, 2 of them converted: a conversion date is rare by nature, not missing.
    _stage(staging, "Lead", [*_rows(298, OwnerId=REP, CreatedById=REP, CreatedDate=INSIDE, IsConverted=False),
                             *_rows(2, OwnerId=REP, CreatedById=REP, CreatedDate=INSIDE, IsConverted=True,
                                    ConvertedDate=INSIDE)])
    # Contracts exist, none in the window: a quiet object, measured as 0 for everyone.
    _stage(staging, "Contract", _rows(3, OwnerId=REP, CreatedById=REP, CreatedDate=BEFORE))
    return compute_features(staging, TINY)


def test_a_feature_whose_source_is_empty_is_unavailable_not_zero(sparse: pd.DataFrame) -> None:
    unavailable = unavailable_features(sparse)
    assert "Task.CallType" in unavailable["inbound_calls"]
    assert sparse["inbound_calls"].isna().all() and sparse["inbound_call_share"].isna().all()
    assert "inbound_calls" in unavailable["inbound_call_share"]  # a share of an unmeasured rate
    assert "nothing of KnowledgeArticleVersion is staged" in unavailable["articles_written"]
    assert sparse["articles_written_share"].isna().all()
    # What the org does have is measured, zeros included, and the total adds up what is measured.
    assert sparse.loc[REP, "calls"] == 3 and sparse.loc[COLLEAGUE, "calls"] == 0
    assert "calls" not in unavailable and "activity_total" not in unavailable
    assert sparse.loc[REP, "activity_total"] == pytest.approx((6 + 3 + 300 + 2) / 2)  # calls, list emails, leads
    measured_shares = [f"{name}_share" for name in ACTIVITY_FEATURES if name not in unavailable]
    assert sparse.loc[REP, measured_shares].sum() == pytest.approx(1.0)


def test_a_sparse_field_or_a_quiet_object_is_measured(sparse: pd.DataFrame) -> None:
    unavailable = unavailable_features(sparse)
    assert "leads_converted" not in unavailable and sparse.loc[REP, "leads_converted"] == 2 / 2
    assert "contracts" not in unavailable and (sparse["contracts"] == 0).all()
    # Tasks with no subtype are to-dos: an empty TaskSubtype is an answer, not a gap.
    assert "tasks_logged" not in unavailable and "internal_tasks" in unavailable  # no WhoId or WhatId at all
    assert "Task.WhoId or WhatId" in unavailable["internal_tasks"]


def test_unavailable_features_survive_parquet(sparse: pd.DataFrame, tmp_path: Path) -> None:
    sparse.to_parquet(tmp_path / "features.parquet")
    assert unavailable_features(pd.read_parquet(tmp_path / "features.parquet")) == unavailable_features(sparse)


def test_a_row_without_its_owner_counts_for_its_creator(sparse: pd.DataFrame) -> None:
    assert sparse.loc[REP, "list_emails"] == 3 / 2  # no OwnerId: counted for the creator
    assert sparse.loc[COLLEAGUE, "list_emails"] == 1 / 2  # the owner, where the row has one
