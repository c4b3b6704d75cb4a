"""The per-object summary the staging checks judge: baselines net of pruning, and which objects are judged."""

from __future__ import annotations

import math
from pathlib import Path

from core.configs import ValidationConfig
from tasks.validation import object_summary, reason_kinds

CONFIG = ValidationConfig(data_docs_dir=Path("docs"))


def _row(summary, sobject: str) -> dict:
    return summary.set_index("sobject").loc[sobject].to_dict()


def test_rows_pruned_by_age_are_not_a_loss() -> None:
    summary = object_summary({"Task": 400}, {"Task": 1_000}, {"Task": 600}, {}, {}, CONFIG)
    assert _row(summary, "Task")["baseline_rows"] == 400 and _row(summary, "Task")["row_drop"] == 0.0
    summary = object_summary({"Task": 100}, {"Task": 1_000}, {"Task": 600}, {}, {}, CONFIG)
    assert _row(summary, "Task")["row_drop"] == 0.75


def test_small_objects_are_not_judged_unless_quarantined_whole() -> None:
    quarantine = {"Contract": {"no OwnerId": 2}, "ListEmail": {"no OwnerId": 12}}
    summary = object_summary({"Contract": 10, "ListEmail": 0, "Quote": 50}, {"Quote": 90}, {}, quarantine,
                             {"ListEmail": ["0XB000000000001AAA"]}, CONFIG)
    assert math.isnan(_row(summary, "Contract")["quarantined_share"])  # 2 of 12: too few rows to tell
    assert _row(summary, "ListEmail")["quarantined_share"] == 1.0  # every row: judged whatever the size
    assert _row(summary, "ListEmail")["sample_ids"] == "0XB000000000001AAA"
    assert math.isnan(_row(summary, "Quote")["row_drop"])  # the baseline had fewer than 100 rows


def test_reasons_naming_a_record_are_counted_by_kind() -> None:
    reasons = {"its user (OwnerId 005000000000001AAA) was never staged within the 180-day history window": 3,
               "its user (OwnerId 005000000000002AAA) was never staged within the 180-day history window": 2,
               "no OwnerId; a date or number does not parse": 1}
    assert reason_kinds(reasons) == {
        "its user (OwnerId ...) was never staged within the 180-day history window": 5,
        "no OwnerId": 1, "a date or number does not parse": 1}
