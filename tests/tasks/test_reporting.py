"""The run summary and ledger counts say what an org lacks and which features it could not measure."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from tasks.personas import AssignmentSummary
from tasks.pull import PullReport, StreamResult
from tasks.reporting import run_counts, summary_markdown

AS_OF = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _report() -> PullReport:
    return PullReport("run-1", [
        StreamResult("Task", "rest", rows=10, absent_fields=["CallType"], attributed={"OwnerId": 10, "CreatedById": 0}),
        StreamResult("EmailTemplate", "rest", rows=4, absent_fields=["OwnerId"],
                     attributed={"OwnerId": 0, "CreatedById": 4}),
        StreamResult("KnowledgeArticleVersion", "rest", absent=True),
        StreamResult("Case", "rest", rows=5, attributed={"OwnerId": 5, "CreatedById": 0}),
    ])


def _summary(unavailable: dict[str, str]) -> AssignmentSummary:
    return AssignmentSummary("run-1", AS_OF, "2026.11.2", 19, {"Case Solver": 19}, Path("features.parquet"),
                             Path("assignments.parquet"), unavailable=unavailable)


def test_the_summary_lists_what_the_org_lacks_and_what_it_cannot_measure() -> None:
    unavailable = {"articles_written_share": "articles_written is unavailable: no KnowledgeArticleVersion row"}
    text = summary_markdown(_report(), _summary(unavailable))
    assert "## What this org lacks" in text
    assert "- KnowledgeArticleVersion: not in this org" in text
    assert "- Task: no CallType in this org; pulled without" in text
    assert "- EmailTemplate: 4 rows attributed by CreatedById (a fallback: OwnerId empty or absent)" in text
    assert "Case:" not in text.split("## What this org lacks")[1]  # nothing lacking, nothing said
    assert "## Features not measured on this org (1)" in text
    assert "- articles_written_share: articles_written is unavailable: no KnowledgeArticleVersion row" in text
    counts = run_counts(_report(), _summary(unavailable), [], None, None)
    assert counts["unavailable_features"] == unavailable and len(counts["org_gaps"]) == 4


def test_an_org_that_has_everything_gets_no_such_sections() -> None:
    report = PullReport("run-1", [StreamResult("Case", "rest", rows=5, attributed={"OwnerId": 5, "CreatedById": 0})])
    text = summary_markdown(report, _summary({}))
    assert "What this org lacks" not in text and "not measured" not in text
