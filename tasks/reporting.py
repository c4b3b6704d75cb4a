"""What a run tells the people watching it: the ledger's counts and the summary the Prefect UI shows."""

from __future__ import annotations

from typing import Any

from expectations.checks import Check
from tasks.personas import AssignmentSummary
from tasks.community import CommunityReport
from tasks.pull import PullReport
from tasks.push import PushReport


def run_counts(report: PullReport, summary: AssignmentSummary, checks: list[Check],
               staged_rows: dict[str, int] | None, coverage: dict[str, float] | None,
               push: PushReport | None = None, community: CommunityReport | None = None) -> dict[str, Any]:
    """The counts the run ledger keeps for a nightly sync: what was pulled and assigned, the checks that
    warned or were forced, the staged rows per object (what the next run's collapse check compares with)
    and how much of each field the catalog reads the org fills."""
    return {**report.counts(), "users": summary.users, "catalog_version": summary.catalog_version,
            "personas": summary.distribution,
            "checks": {status: [check.name for check in checks if check.status == status]
                       for status in ("warned", "forced")},
            "staged_rows": staged_rows or {}, "coverage": coverage or {},
            **(push.counts() if push is not None else {}), **(community.counts() if community is not None else {})}


def distribution_rows(summary: AssignmentSummary) -> list[dict[str, Any]]:
    """The persona distribution as table rows (persona, users)."""
    return [{"persona": persona, "users": users} for persona, users in summary.distribution.items()]


def summary_markdown(report: PullReport, summary: AssignmentSummary, checks: list[Check] | None = None) -> str:
    """A run's summary in Markdown: as-of, catalog, what was pulled, the checks that warned or were
    forced, and the persona distribution."""
    lines = [f"# Nightly sync {summary.run_id}", "",
             f"As-of **{summary.as_of:%Y-%m-%d %H:%M} UTC**, catalog **{summary.catalog_version}**.", "",
             f"Pulled {report.rows:,} rows ({report.quarantined:,} quarantined, {report.held:,} waiting for their "
             f"user) with {report.api_calls:,} API calls.", "", "| persona | users |", "|---|---:|"]
    lines += [f"| {row['persona']} | {row['users']:,} |" for row in distribution_rows(summary)]
    noted = [check for check in checks or [] if check.status in ("warned", "forced")]
    if checks is not None:
        lines += ["", f"{len(checks)} checks passed or were skipped" if not noted else
                  f"{len(noted)} of {len(checks)} checks warned or were forced:"]
        lines += [f"- **{check.status}** ({check.stage}): {check.message}" for check in noted]
    return "\n".join(lines)


def push_markdown(report: PushReport) -> str:
    """A push (or its dry-run plan) in Markdown: counts, the calls, persona transitions and sample rows."""
    verb = "would write" if report.dry_run else "wrote"
    lines = [f"# {'Dry run: push plan' if report.dry_run else 'Push'} of run {report.run_id}", "",
             f"{report.planned:,} of {report.users:,} active users differ from their assignment: persona-sync "
             f"{verb} them in {report.calls_to_write:,} API call(s)"
             + ("" if report.dry_run else f"; {report.written:,} written, {sum(report.failed.values()):,} failed "
                f"{dict(report.failed) or ''}") + f"; {report.conflicts:,} kept as edited by hand.", ""]
    if report.transitions:
        lines += ["| in the org now | becomes | users |", "|---|---|---:|"]
        lines += [f"| {before} | {after} | {count:,} |" for (before, after), count in report.transitions.most_common()]
    if report.samples:
        lines += ["", "| user | status | from | to |", "|---|---|---|---|"]
        lines += [f"| {write.record_id} | {write.status} | {_cells(write.old_values)} | {_cells(write.new_values)} |"
                  for write in report.samples]
    return "\n".join(lines)


def _cells(values: dict[str, Any]) -> str:
    return "; ".join(f"{name}={value}" for name, value in values.items()).replace("|", "\\|")[:300]
