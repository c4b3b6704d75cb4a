"""Every expectation of every suite trips on crafted data, and passes on clean data (Great Expectations runs
for real; no sandbox needed)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from expectations import suites
from expectations.checks import Check, checks_markdown, failure_message
from expectations.runner import GxRunner

WINDOW = (datetime(2026, 5, 1, tzinfo=timezone.utc), datetime(2026, 11, 1, tzinfo=timezone.utc))


def _task_id(number: int) -> str:
    return f"00T{number:012d}AAA"


def _tasks(rows: int = 6) -> pd.DataFrame:
    return pd.DataFrame({
        "Id": [_task_id(n) for n in range(rows)],
        "OwnerId": ["005000000000001AAA"] * rows,
        "SystemModstamp": pd.to_datetime(["2026-10-01T10:00:00Z"] * rows, utc=True),
        "CreatedDate": pd.to_datetime(["2026-09-01T10:00:00Z"] * rows, utc=True),
        "IsClosed": [True, False] * (rows // 2),
    })


def _staged_expects() -> list:
    return suites.staged_rows("Task", "00T", user_field="OwnerId", cursor="SystemModstamp", cursor_from=WINDOW[0],
                              cursor_to=WINDOW[1], created_field="CreatedDate", booleans=["IsClosed"])


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def test_clean_staged_rows_pass_in_chunks(tmp_path: Path) -> None:
    runner = GxRunner(tmp_path / "docs")
    checks = runner.validate("staging", "staged Task", _staged_expects(), [_tasks(), _tasks(4).assign(
        Id=[_task_id(n) for n in range(100, 104)])], id_column="Id")
    assert {check.status for check in checks} == {"passed"}
    assert _by_name(checks)["Task.Id present"].observed == "0 of 10 rows"  # counted over both chunks
    index = runner.build_docs()
    assert index is not None and index.is_file() and "staged Task" in index.read_text()


@pytest.mark.parametrize(("column", "bad", "check"), [
    ("Id", None, "Task.Id present"),
    ("Id", _task_id(1), "Task.Id unique"),
    ("Id", "00Q000000000001AAA", "Task.Id well-formed"),  # a Lead's Id
    ("Id", "00T0000001", "Task.Id well-formed"),  # too short
    ("OwnerId", None, "Task.OwnerId present"),
    ("SystemModstamp", pd.Timestamp("2026-04-30T23:59:59Z"), "Task.SystemModstamp inside the pulled window"),
    ("SystemModstamp", pd.Timestamp("2026-11-01T00:00:01Z"), "Task.SystemModstamp inside the pulled window"),
    ("CreatedDate", pd.Timestamp("2026-11-02T00:00:00Z"), "Task.CreatedDate not after the pull"),
    ("IsClosed", None, "Task.IsClosed set"),
])
def test_each_staged_row_expectation_trips(column: str, bad: object, check: str) -> None:
    frame = _tasks()
    frame[column] = frame[column].astype(object)
    frame.loc[3, column] = bad
    checks = _by_name(GxRunner().validate("staging", "staged Task", _staged_expects(), [frame], id_column="Id"))
    assert checks[check].status == "failed", checks[check]
    assert checks[check].observed.startswith(("1 of 6", "2 of 6"))
    assert [name for name, found in checks.items() if found.status == "failed"] == [check]


def test_a_boolean_column_holding_text_is_not_boolean() -> None:
    frame = _tasks()
    frame["IsClosed"] = ["true", "false", "true", "false", "true", "false"]
    checks = _by_name(GxRunner().validate("staging", "staged Task", _staged_expects(), [frame], id_column="Id"))
    assert checks["Task.IsClosed boolean"].status == "failed"
    assert checks["Task.IsClosed boolean"].samples == tuple(_task_id(n) for n in range(5))  # at most five samples


def test_an_object_with_nothing_staged_is_skipped_not_passed() -> None:
    checks = GxRunner().validate("staging", "staged Task", _staged_expects(), [], id_column="Id")
    assert {check.status for check in checks} == {"skipped"}


def _summary() -> pd.DataFrame:
    return pd.DataFrame.from_records([
        {"sobject": "Task", "rows": 2_000, "baseline_rows": 40_000, "row_drop": 0.95, "quarantined": 0,
         "quarantined_share": 0.0, "reasons": "", "sample_ids": ""},
        {"sobject": "ListEmail", "rows": 0, "baseline_rows": 0, "row_drop": np.nan, "quarantined": 5_519,
         "quarantined_share": 1.0, "reasons": "no OwnerId", "sample_ids": "0XB000000000001AAA, 0XB000000000002AAA"},
        {"sobject": "Case", "rows": 9_000, "baseline_rows": 10_000, "row_drop": 0.1, "quarantined": 10,
         "quarantined_share": 0.0011, "reasons": "a date or number does not parse", "sample_ids": "500000000000001AAA"},
    ])


def test_collapsed_and_quarantined_objects_are_named_with_their_numbers() -> None:
    expects = suites.staged_objects(_summary(), max_row_drop=0.5, max_quarantined_share=0.05)
    checks = _by_name(GxRunner().validate("staging", "staged objects", expects, [_summary()], id_column="sobject"))
    collapsed, quarantined = checks["staged rows not collapsed"], checks["rows quarantined"]
    assert collapsed.status == quarantined.status == "failed"
    assert collapsed.samples == ("Task",) and quarantined.samples == ("ListEmail",)
    assert collapsed.message.startswith("Task: 2,000 rows staged, 40,000 at the last good run (-95%")
    assert quarantined.message.startswith("ListEmail: 5,519 of 5,519 rows name no user (no OwnerId), "
                                          "e.g. 0XB000000000001AAA, 0XB000000000002AAA. More than 5%")
    assert "--full-refresh" in quarantined.message and "PERSONA_SYNC_VALIDATE_MAX_ROW_DROP=1" in collapsed.message


def test_an_object_under_the_limits_passes() -> None:
    fine = _summary().iloc[[2]]
    expects = suites.staged_objects(fine, max_row_drop=0.5, max_quarantined_share=0.05)
    checks = GxRunner().validate("staging", "staged objects", expects, [fine], id_column="sobject")
    assert {check.status for check in checks} == {"passed"}


def test_a_catalog_field_empty_for_the_whole_org_is_a_warning_that_names_it() -> None:
    fields = pd.DataFrame({"field": ["Task.CallType", "Task.OwnerId"], "features": ["inbound_calls", "calls"],
                           "populated_share": [0.0, 1.0]})
    [check] = GxRunner().validate("coverage", "catalog fields", suites.catalog_fields(fields), [fields],
                                  id_column="field")
    assert check.status == "warned" and check.samples == ("Task.CallType",)
    assert check.message.startswith("Task.CallType is empty in every staged row, so inbound_calls")


def _features(users: int = 4) -> pd.DataFrame:
    return pd.DataFrame({"Id": [f"005{n:012d}AAA" for n in range(users)], "calls": [3.0, 0.0, 1.5, 2.0][:users],
                         "calls_share": [0.5, 0.0, 1.0, 0.2][:users], "direct_reports": [0.0, 2.0, 0.0, 1.0][:users],
                         "articles_written": [0.0] * users})


UNITS = {"calls": "per 30 days", "calls_share": "share 0..1", "direct_reports": "people",
         "articles_written": "per 30 days"}


def _feature_checks(frame: pd.DataFrame, active_users: int = 4,
                    unavailable: dict[str, str] | None = None) -> dict[str, Check]:
    runner = GxRunner()
    checks = runner.validate("features", "features", suites.features(active_users=active_users), [frame[["Id"]]],
                             id_column="Id")
    columns = suites.feature_columns(frame, UNITS, ["calls", "articles_written"], unavailable or {},
                                     share_unit="share 0..1", rate_unit="per 30 days", active_users=active_users)
    return _by_name(checks + runner.validate("features", "feature columns", suites.feature_checks(columns),
                                             [columns], id_column="feature"))


def test_feature_checks_trip_on_missing_negative_and_out_of_bounds_values() -> None:
    frame = _features()
    frame.loc[1, "calls"] = np.nan
    frame.loc[2, "direct_reports"] = -1.0
    frame.loc[3, "calls_share"] = 1.3
    checks = _feature_checks(frame)
    failed = {name for name, check in checks.items() if check.status == "failed"}
    assert failed == {"features present", "features within bounds"}
    assert checks["features present"].samples == ("calls",)
    assert f"calls 1 user(s), e.g. {frame.loc[1, 'Id']}" in checks["features present"].message
    assert checks["features within bounds"].samples == ("calls_share", "direct_reports")
    assert frame.loc[3, "Id"] in checks["features within bounds"].message
    # A feature the catalog uses that is zero for everyone only warns.
    assert checks["features the catalog uses not zero for everyone"].status == "warned"
    assert "articles_written, which the catalog uses, is 0 for every active user" in \
        checks["features the catalog uses not zero for everyone"].message
    assert checks["features the catalog uses measured on this org"].status == "passed"


def test_a_feature_the_org_cannot_measure_is_nan_and_a_named_warning() -> None:
    frame = _features()
    frame["articles_written"] = np.nan
    checks = _feature_checks(frame, unavailable={"articles_written": "no KnowledgeArticleVersion row in the window"})
    assert checks["features present"].status == "passed"  # NaN is right for it
    warned = checks["features the catalog uses measured on this org"]
    assert warned.status == "warned" and warned.samples == ("articles_written",)
    assert "articles_written (no KnowledgeArticleVersion row in the window)" in warned.message
    assert checks["features the catalog uses not zero for everyone"].status == "passed"  # not judged


def test_features_must_have_one_row_per_active_user() -> None:
    frame = pd.concat([_features(), _features().iloc[[0]]])
    checks = _feature_checks(frame)
    assert checks["features: one row per active user"].status == "failed"
    assert checks["features: Id unique"].status == "failed"
    assert _feature_checks(_features(), active_users=5)["features: one row per active user"].status == "failed"


def _assignments() -> pd.DataFrame:
    return pd.DataFrame({"user_id": ["005A", "005B", "005C"], "persona": ["Case Solver", "Unassigned", "Deal Closer"],
                         "score": [0.9, 0.2, 0.7], "confidence": [0.5, 0.0, 0.1],
                         "reason": ["Case Solver (0.90): ...", "no persona reached its minimum", "Deal Closer ..."]})


def _assignment_checks(frame: pd.DataFrame, active_users: int = 3) -> dict[str, Check]:
    expects = suites.assignments(["Case Solver", "Deal Closer"], "Unassigned", active_users=active_users)
    return _by_name(GxRunner().validate("assignments", "assignments", expects, [frame], id_column="user_id"))


def test_clean_assignments_pass() -> None:
    assert {check.status for check in _assignment_checks(_assignments()).values()} == {"passed"}


@pytest.mark.parametrize(("column", "bad", "check"), [
    ("persona", "Data Wizard", "assignments: persona known"),
    ("score", 1.2, "assignments: score in [0, 1]"),
    ("confidence", -0.1, "assignments: confidence in [0, 1]"),
    ("reason", None, "assignments: reason present"),
    ("reason", "x" * 256, "assignments: reason fits the field"),
    ("user_id", "005A", "assignments: user unique"),
])
def test_each_assignment_expectation_trips(column: str, bad: object, check: str) -> None:
    frame = _assignments()
    frame[column] = frame[column].astype(object)
    frame.loc[2, column] = bad
    checks = _assignment_checks(frame)
    assert checks[check].status == "failed", checks[check]


def test_assignments_must_cover_every_active_user() -> None:
    assert _assignment_checks(_assignments(), active_users=4)["assignments: one row per active user"].status == "failed"


def test_failure_message_and_markdown_name_the_check_observed_value_and_limit() -> None:
    checks = [Check("staging", "rows quarantined", "failed", "1 object(s) over the limit: ListEmail",
                    "at most 5% of an object's rows", "ListEmail: 5,519 of 5,519 rows name no user (no OwnerId)",
                    ("ListEmail",)),
              Check("guardrails", "persona_changes", "failed", "31.0% (62 of 200 users)", "warn above 0.1, fail above 0.2",
                    "persona_changes: 31.0% (62 of 200 users) would change persona", ("005A",), guardrail=True),
              Check("coverage", "catalog fields filled", "warned", "1 of 67 fields", "filled in some rows", "w")]
    message = failure_message(checks, "/docs/index.html")
    assert "2 check(s) failed" in message and "ListEmail: 5,519 of 5,519" in message
    assert "--force persona_changes --reason TEXT" in message and "Data Docs: /docs/index.html" in message
    markdown = checks_markdown(checks, title="Validation failed", data_docs="/docs/index.html")
    assert markdown.index("ListEmail: 5,519") < markdown.index("| warned |") and "005A" in markdown


def test_data_docs_share_one_static_folder_and_old_runs_are_pruned(tmp_path: Path) -> None:
    import os

    from core.configs import ValidationConfig
    from tasks.validation import prune_data_docs

    root = tmp_path / "data-docs"
    for number in range(3):
        runner = GxRunner(root / f"run-{number}" / "staging")
        runner.validate("staging", "staged Task", _staged_expects(), [_tasks()], id_column="Id")
        index = runner.build_docs(root / "static")
        assert index is not None and index.is_file()
        static = index.parent / "static"
        assert static.is_symlink() and (static / "styles" / "data_docs_default_styles.css").is_file()
        os.utime(root / f"run-{number}", (number, number))  # run-2 is the newest
    assert (root / "static" / "images").is_dir()
    pruned = prune_data_docs(ValidationConfig(data_docs_dir=root, data_docs_keep=2))
    assert [path.name for path in pruned] == ["run-0"]
    assert sorted(entry.name for entry in root.iterdir()) == ["run-1", "run-2", "static"]
