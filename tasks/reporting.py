"""What a run tells the people watching it: the ledger's counts and the summary the Prefect UI shows."""

from __future__ import annotations

from typing import Any

from tasks.personas import AssignmentSummary
from tasks.pull import PullReport


def run_counts(report: PullReport, summary: AssignmentSummary) -> dict[str, Any]:
    """The counts the run ledger keeps for a nightly sync."""
    return {**report.counts(), "users": summary.users, "personas": summary.distribution}


def distribution_rows(summary: AssignmentSummary) -> list[dict[str, Any]]:
    """The persona distribution as table rows (persona, users)."""
    return [{"persona": persona, "users": users} for persona, users in summary.distribution.items()]


def summary_markdown(report: PullReport, summary: AssignmentSummary) -> str:
    """A run's summary in Markdown: as-of, catalog, what was pulled, and the persona distribution."""
    lines = [f"# Nightly sync {summary.run_id}", "",
             f"As-of **{summary.as_of:%Y-%m-%d %H:%M} UTC**, catalog **{summary.catalog_version}**.", "",
             f"Pulled {report.rows:,} rows ({report.quarantined:,} quarantined, {report.held:,} waiting for their "
             f"user) with {report.api_calls:,} API calls.", "", "| persona | users |", "|---|---:|"]
    lines += [f"| {row['persona']} | {row['users']:,} |" for row in distribution_rows(summary)]
    return "\n".join(lines)
