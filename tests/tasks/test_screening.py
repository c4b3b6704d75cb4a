"""Typing pages (connectors/salesforce/pages.py) and screening them (tasks/screening.py): pure functions."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

import pytest

from connectors.salesforce.extract import Page, RawPage
from connectors.salesforce.pages import (absent_fields, arrow_schema, csv_page_to_text_table, csv_page_to_typed_table,
                                         rest_records_to_text_table, typed_table)
from connectors.salesforce.streams import Stream
from core.errors import SalesforceError
from tasks.screening import screen

STREAM = Stream("Task", "00T", ("OwnerId", "IsClosed", "ActivityDate", "CallDurationInSeconds", "CreatedDate"),
                feeds="test", user_fields=("OwnerId",))
TYPES = {"Id": "id", "OwnerId": "reference", "IsClosed": "boolean", "ActivityDate": "date",
         "CallDurationInSeconds": "int", "CreatedDate": "datetime", "SystemModstamp": "datetime"}
COLUMNS = STREAM.columns
CSV = (
    '"Id","OwnerId","IsClosed","ActivityDate","CallDurationInSeconds","CreatedDate","SystemModstamp"\n'
    '"00T1","005A","true","2026-10-01","60","2026-10-01T10:00:00.000Z","2026-10-01T10:00:00.000Z"\n'
    '"00T2","","false","","","2026-10-02T10:00:00.000Z","2026-10-02T10:00:00.000Z"\n'
    '"00T3","005X","false","not a date","","2026-10-03T10:00:00.000Z","2026-10-03T10:00:00.000Z"\n'
    '"00T4","005N","false","","","2026-10-04T10:00:00.000Z","2026-10-04T10:00:00.000Z"\n'
    '"00T5","00GQ","false","","","2026-10-05T10:00:00.000Z","2026-10-05T10:00:00.000Z"\n'
    '"00T6","001A","false","","","2026-10-06T10:00:00.000Z","2026-10-06T10:00:00.000Z"\n'
)
KNOWN = pa.array(["005A"])
# A stream attributed by its owner, else by its creator (a partial export may lack the owner).
FALLBACK = Stream("ListEmail", "0XB", ("OwnerId", "Status"), feeds="test", user_fields=("OwnerId", "CreatedById"))


def _typed(csv_text: str = CSV) -> tuple[pa.Table, pa.Array, pa.Table]:
    text = csv_page_to_text_table(csv_text, COLUMNS)
    typed, unparsable = typed_table(text, arrow_schema(STREAM, TYPES))
    return typed, unparsable, text


def _page(csv_text: str = CSV) -> Page:
    typed, unparsable, text = _typed(csv_text)
    return Page(typed, unparsable, lambda: text)


def test_csv_pages_become_typed_tables_with_nulls_for_empty_cells() -> None:
    typed, unparsable, _ = _typed()
    assert typed.schema.field("IsClosed").type == pa.bool_()
    assert typed.schema.field("CreatedDate").type == pa.timestamp("ms", tz="UTC")
    assert typed.column("IsClosed").to_pylist() == [True, False, False, False, False, False]
    assert typed.column("OwnerId").to_pylist()[1] is None
    assert typed.column("CallDurationInSeconds").to_pylist() == [60, None, None, None, None, None]
    assert typed.column("CreatedDate")[0].as_py() == datetime(2026, 10, 1, 10, tzinfo=timezone.utc)
    assert unparsable.to_pylist() == [False, False, True, False, False, False]


def test_rest_records_and_csv_give_the_same_table() -> None:
    records = [{"Id": "00T1", "OwnerId": "005A", "IsClosed": True, "ActivityDate": "2026-10-01",
                "CallDurationInSeconds": 60, "CreatedDate": "2026-10-01T10:00:00.000+0000",
                "SystemModstamp": "2026-10-01T10:00:00.000+0000"}]
    from_rest, _ = typed_table(rest_records_to_text_table(records, COLUMNS), arrow_schema(STREAM, TYPES))
    from_csv, _, _ = _typed(CSV.split("\n")[0] + "\n" + CSV.split("\n")[1] + "\n")
    assert from_rest.equals(from_csv)


def test_broken_records_are_rejected_with_reasons_and_raw_values() -> None:
    screened = screen(_page(), STREAM, KNOWN)
    reasons = {item.record_id: item.reason for item in screened.rejected}
    assert set(reasons) == {"00T2", "00T3", "00T6"}
    assert reasons["00T2"] == "no OwnerId"
    assert reasons["00T3"] == "a date or number does not parse"  # waiting for its user would not mend it
    assert "neither a user" in reasons["00T6"]  # an Account id where a user or queue belongs
    assert next(item for item in screened.rejected if item.record_id == "00T3").raw["ActivityDate"] == "not a date"


def test_rows_of_a_user_not_staged_yet_are_held_and_queue_owned_rows_are_staged() -> None:
    screened = screen(_page(), STREAM, KNOWN)
    assert screened.clean.column("Id").to_pylist() == ["00T1", "00T5"]  # 00T5 belongs to a queue (00G)
    assert screened.held.column("Id").to_pylist() == ["00T4"]


def test_reference_data_is_not_checked_for_users() -> None:
    screened = screen(_page(), STREAM, None)
    assert screened.held.num_rows == 0
    assert {item.record_id for item in screened.rejected} == {"00T3"}


def test_a_field_the_pull_cannot_do_without_missing_from_the_org_is_a_clear_error() -> None:
    with pytest.raises(SalesforceError, match="has no field") as raised:
        arrow_schema(STREAM, {"Id": "id", "OwnerId": "reference"})  # no cursor
    assert "SystemModstamp" in str(raised.value) and raised.value.sobject == "Task"
    with pytest.raises(SalesforceError, match="OwnerId or CreatedById"):
        arrow_schema(FALLBACK, {"Id": "id", "SystemModstamp": "datetime"})  # no user field at all


def test_other_fields_missing_from_the_org_are_left_out_and_named() -> None:
    schema = arrow_schema(FALLBACK, {"Id": "id", "CreatedById": "reference", "SystemModstamp": "datetime"})
    assert schema.names == ["Id", "CreatedById", "SystemModstamp"]
    assert absent_fields(FALLBACK, schema) == ["OwnerId", "Status"]


def test_values_with_line_breaks_and_quotes_stay_in_their_row() -> None:
    page = ('"Id","OwnerId","IsClosed","ActivityDate","CallDurationInSeconds","CreatedDate","SystemModstamp"\n'
            '"00T1","005A","true","","","2026-10-01T10:00:00.000Z","2026-10-01T10:00:00.000Z"\n')
    text = csv_page_to_text_table(page.replace('"005A"', '"005\nA ""quoted"""'), COLUMNS)
    assert text.num_rows == 1 and text.column("OwnerId")[0].as_py() == '005\nA "quoted"'


def test_a_csv_page_parsed_straight_into_types_equals_text_then_types(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(CSV.replace('"not a date"', '""'))
    straight = csv_page_to_typed_table(good, arrow_schema(STREAM, TYPES))
    via_text, unparsable = typed_table(csv_page_to_text_table(good, COLUMNS), arrow_schema(STREAM, TYPES))
    assert straight is not None and straight.equals(via_text) and not any(unparsable.to_pylist())

    bad = tmp_path / "bad.csv"
    bad.write_text(CSV)  # 'not a date': the page goes the text way, where the row is found
    assert csv_page_to_typed_table(bad, arrow_schema(STREAM, TYPES)) is None
    page = RawPage(arrow_schema(STREAM, TYPES), csv_file=bad).parse()
    assert page.unparsable.to_pylist() == [False, False, True, False, False, False]
    assert page.text().column("ActivityDate")[2].as_py() == "not a date"
