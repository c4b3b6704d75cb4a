"""What a check found, in words an operator can act on, and the report of one run's checks.

Every check of a run (a Great Expectations expectation, a coverage check or a guardrail) ends as one
`Check`: its stage, a name that says what was checked, the status, the observed value against the
limit, a one-line message and a few sample offending Ids. The run ledger stores them, the Prefect
artifacts and the command line print them, and a failed one stops the run before it writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["passed", "warned", "failed", "forced", "skipped"]
Stage = Literal["staging", "coverage", "features", "assignments", "guardrails"]
STAGES: tuple[Stage, ...] = ("staging", "coverage", "features", "assignments", "guardrails")
SAMPLES = 5  # offending Ids kept per check
# The order checks are shown in: what stopped the run first.
STATUS_ORDER: dict[str, int] = {"failed": 0, "forced": 1, "warned": 2, "skipped": 3, "passed": 4}


@dataclass(frozen=True)
class Check:
    """One check's outcome. `guardrail`: a limit on what the run would change, which an operator may
    force for one run; every other check guards data quality and cannot be forced."""

    stage: Stage
    name: str
    status: Status
    observed: str
    limit: str
    message: str
    samples: tuple[str, ...] = ()
    guardrail: bool = False

    @property
    def stops_the_run(self) -> bool:
        return self.status == "failed"


def failure_message(checks: list[Check], data_docs: str | None = None) -> str:
    """The error a failed run ends with: each failing check with what was observed and the limit."""
    failed = [check for check in checks if check.stops_the_run]
    lines = [f"validation failed: {len(failed)} check(s) failed, so no assignment was stored and nothing was "
             "written to Salesforce or the SQL targets:"]
    for check in failed:
        forcing = " (a guardrail: override for one run with --force " + check.name + " --reason TEXT)" \
            if check.guardrail else ""
        lines.append(f"- {check.stage}: {check.message}{forcing}")
    if data_docs:
        lines.append(f"Data Docs: {data_docs}")
    return "\n".join(lines)


def checks_markdown(checks: list[Check], *, title: str, data_docs: str | None = None) -> str:
    """A markdown report of the checks that did not simply pass (failed first), for the Prefect UI."""
    shown = sorted((check for check in checks if check.status != "passed"),
                   key=lambda check: STATUS_ORDER[check.status])
    passed = sum(check.status == "passed" for check in checks)
    lines = [f"# {title}", "",
             f"{len(checks)} checks: {passed} passed, "
             + ", ".join(f"{sum(c.status == status for c in checks)} {status}"
                         for status in ("failed", "forced", "warned", "skipped")), ""]
    if data_docs:
        lines += [f"Data Docs: `{data_docs}`", ""]
    if shown:
        lines += ["| status | stage | check | observed | limit | sample Ids |", "|---|---|---|---|---|---|"]
        lines += [f"| {check.status} | {check.stage} | {_cell(check.message)} | {_cell(check.observed)} | "
                  f"{_cell(check.limit)} | {_cell(', '.join(check.samples))} |" for check in shown]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
