"""What a run tells the people watching it: the ledger's counts and the summary the Prefect UI shows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from expectations.checks import Check
from tasks.personas import AssignmentSummary
from tasks.community import CommunityReport
from tasks.pull import PullReport
from tasks.push import PushReport


def run_counts(report: PullReport, summary: AssignmentSummary, checks: list[Check],
               staged_rows: dict[str, int] | None, coverage: dict[str, float] | None,
               push: PushReport | None = None, community: CommunityReport | None = None) -> dict[str, Any]:
    """The counts the run ledger keeps for a nightly sync: what was pulled and assigned, the checks that
    warned or were forced, the staged rows per object (what the next run's collapse check compares with),
    how much of each field the catalog reads the org fills, what the org lacks and what it cannot measure."""
    return {**report.counts(), "users": summary.users, "catalog_version": summary.catalog_version,
            "personas": summary.distribution,
            "checks": {status: [check.name for check in checks if check.status == status]
                       for status in ("warned", "forced")},
            "staged_rows": staged_rows or {}, "coverage": coverage or {},
            # What this org lacks, and the catalog's features it could not measure (their conditions dropped).
            "org_gaps": report.gaps(), "unavailable_features": dict(summary.unavailable),
            **(push.counts() if push is not None else {}), **(community.counts() if community is not None else {})}


def distribution_rows(summary: AssignmentSummary) -> list[dict[str, Any]]:
    """The persona distribution as table rows (persona, users)."""
    return [{"persona": persona, "users": users} for persona, users in summary.distribution.items()]


MOVEMENTS_SHOWN = 10


def movements(before: pd.Series | None, after: pd.Series) -> Counter:
    """(persona before, persona after) -> users whose persona changed, among users in both."""
    if before is None or before.empty:
        return Counter()
    both = pd.concat([before.rename("before"), after.rename("after")], axis=1, join="inner")
    moved = both[both["before"] != both["after"]]
    return Counter(zip(moved["before"], moved["after"]))


def summary_markdown(report: PullReport, summary: AssignmentSummary, checks: list[Check] | None = None, *,
                     before: pd.Series | None = None, after: pd.Series | None = None, push: PushReport | None = None,
                     community: CommunityReport | None = None, api_calls: int | None = None,
                     data_docs: str | None = None) -> str:
    """A run's summary in Markdown, what a person reads first in the Prefect UI: each stage's counts, the
    API calls spent, the persona distribution before (the last stored run) and after, the biggest
    movements between personas, manual edits kept, the checks that warned or were forced, and the Data
    Docs. `before` and `after`: each user's persona in the last stored run (None on a first run) and in
    this one (index user Id)."""
    distribution = summary.distribution
    previous = before.value_counts().to_dict() if before is not None and not before.empty else {}
    moved = movements(before, after) if previous and after is not None else Counter()
    lines = [f"# Nightly sync {summary.run_id}", "",
             f"As-of **{summary.as_of:%Y-%m-%d %H:%M} UTC**, catalog **{summary.catalog_version}**"
             + (f", **{api_calls:,} API calls** spent." if api_calls is not None else "."), "",
             *([f"Nothing the personas depend on changed since run {summary.stored_run_id}: its checks, features "
                "and assignments stand; only the push ran.", ""] if summary.stored_run_id else []),
             "| stage | result |", "|---|---|",
             f"| pull | {report.rows:,} rows ({report.quarantined:,} quarantined, {report.held:,} waiting for their "
             f"user), {report.api_calls:,} API calls |"]
    if checks:
        by_status = Counter(check.status for check in checks)
        lines.append("| checks | " + ", ".join(f"{count} {status}" for status, count in sorted(by_status.items()))
                     + " |")
    lines.append(f"| assignments | {summary.users:,} users, {sum(moved.values()):,} changed persona"
                 + ("" if previous else " (first run: nothing to compare with)") + " |")
    if push is not None:
        lines.append(f"| Salesforce User fields | {push.planned:,} to change, {push.written:,} written, "
                     f"{sum(push.failed.values()):,} failed, {push.conflicts:,} edited by hand and kept, "
                     f"{push.calls:,} API calls{' (dry run)' if push.dry_run else ''} |")
    if community is not None:
        lines.append(f"| community roles ({community.target}) | {community.granted:,} granted, {community.revoked:,} "
                     f"revoked, {community.foreign:,} left to whoever granted them |")
    lines += ["", "## Personas before and after", "", "| persona | before | after | change |", "|---|---:|---:|---:|"]
    for persona in sorted(set(previous) | set(distribution), key=lambda name: (-distribution.get(name, 0), name)):
        was, now = previous.get(persona, 0), distribution.get(persona, 0)
        lines.append(f"| {persona} | {was:,} | {now:,} | {now - was:+,} |")
    if moved:
        lines += ["", f"## Biggest movements ({sum(moved.values()):,} users changed persona)", "",
                  "| from | to | users |", "|---|---|---:|"]
        lines += [f"| {was} | {now} | {count:,} |" for (was, now), count in moved.most_common(MOVEMENTS_SHOWN)]
    gaps = report.gaps()
    if gaps:
        lines += ["", "## What this org lacks", "", *(f"- {gap}" for gap in gaps)]
    if summary.unavailable:
        lines += ["", f"## Features not measured on this org ({len(summary.unavailable)})", "",
                  "The catalog's conditions on them were dropped and the other weights renormalised.", "",
                  *(f"- {name}: {why}" for name, why in summary.unavailable.items())]
    noted = [check for check in checks or [] if check.status in ("warned", "forced")]
    if checks:
        lines += ["", "## Checks and guardrails", "",
                  f"{len(checks)} checks passed or were skipped." if not noted else
                  f"{len(noted)} of {len(checks)} checks warned or were forced:"]
        lines += [f"- **{check.status}** ({check.stage}): {check.message}" for check in noted]
    if push is not None and push.conflict_ids:
        lines += ["", f"Kept as edited by hand in Salesforce: {', '.join(push.conflict_ids[:20])}"
                  + (" ..." if push.conflicts > 20 else "")]
    if data_docs:
        lines += ["", f"Data Docs: [{data_docs}]({Path(data_docs).resolve().as_uri()})"]
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
