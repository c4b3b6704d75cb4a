"""SOQL text: values always go through one escaping helper; the queried object is found by parsing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from simple_salesforce import Salesforce

from connectors.salesforce.soql import count, literal, select, sobject_of
from connectors.salesforce.streams import STREAMS, streams_by_name

TASK = streams_by_name(["Task"])[0]


@pytest.mark.parametrize(("value", "expected"), [
    ("O'Brien", r"'O\'Brien'"),
    ("back\\slash", r"'back\\slash'"),
    ("a\\' OR Name != '", r"'a\\\' OR Name != \''"),  # an attempt to close the string early stays inside it
    ('say "hi"\n', r"'say \"hi\"\n'"),
    (["a", "b'c"], r"('a','b\'c')"),
    (datetime(2026, 11, 1, 10, 30, 15, 999_000, tzinfo=timezone(timedelta(hours=2))), "2026-11-01T08:30:15+00:00"),
    (None, "null"),
    (True, "true"),
])
def test_values_are_quoted_and_escaped(value: object, expected: str) -> None:
    assert literal(value) == expected


def test_a_quoted_value_finds_exactly_the_record_that_holds_it(sf: Salesforce) -> None:
    tricky = "O'Brien \\ \"Quotes\" ' OR Name != '"
    created = sf.Account.create({"Name": tricky})["id"]
    try:
        records = sf.query_all(f"SELECT Id, Name FROM Account WHERE Name = {literal(tricky)}")["records"]
        assert [(record["Id"], record["Name"]) for record in records] == [(created, tricky)]
    finally:
        sf.Account.delete(created)


def test_stream_queries_read_from_the_cursor_inclusively() -> None:
    since = datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert select(TASK, since=since, order_by_cursor=True).endswith(
        "FROM Task WHERE SystemModstamp >= 2026-11-01T00:00:00+00:00 ORDER BY SystemModstamp, Id")
    assert count(TASK, since=None) == "SELECT COUNT() FROM Task"
    assert select(TASK, ids=["00T1", "00T'2"], columns=["Id"]) == r"SELECT Id FROM Task WHERE Id IN ('00T1','00T\'2')"


@pytest.mark.parametrize(("soql", "sobject"), [
    ("SELECT Id FROM Account", "Account"),
    ("select id from account where name = 'x'", "account"),
    ("SELECT Id, (SELECT Id FROM Contacts) FROM Account", "Account"),
    ("SELECT Id FROM Lead WHERE Company = 'Sales from Acme' AND Title != 'FROM Boss'", "Lead"),
    ("SELECT Name, Owner.Name\nFROM\tOpportunity LIMIT 5", "Opportunity"),
    ("SELECT Id FROM Case WHERE Subject = 'It\\'s (not) FROM Task'", "Case"),
])
def test_the_queried_object_is_the_top_level_from(soql: str, sobject: str) -> None:
    assert sobject_of(soql) == sobject


def test_a_query_without_from_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot find the object"):
        sobject_of("SELECT Id, (SELECT Id FROM Contacts)")


def test_every_stream_names_the_key_prefix_the_org_describes(sf: Salesforce) -> None:
    described = {stream.sobject: getattr(sf, stream.sobject).describe()["keyPrefix"] for stream in STREAMS}
    assert {stream.sobject: stream.key_prefix for stream in STREAMS} == described
