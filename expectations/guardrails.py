"""Guardrails: limits on how much one run may change, each with a warn and a fail level.

Data-quality checks ask "is this data right?"; guardrails ask "is this change plausible?". A catalog
edit that reshuffles everyone, or a feature that silently went to zero, gives data that passes every
expectation and would still rewrite half the org's persona fields overnight. So, against the last good
run (the assignments it stored):

- `persona_changes`: the share of active users (in both runs) whose persona changes;
- `assigned_share`: the share of active users given a persona (not Unassigned);
- `distribution_drift`: the population stability index (PSI) of the persona distribution,
  sum((p - q) * ln(p / q)) over personas; below 0.1 is usually read as no real shift, above 0.25 as a
  major one;
- `persona_loss`: the largest share of its users a persona loses (among personas that had at least
  `persona_loss_min_users`): a persona that empties out loses 100 %.

Past `warn` a guardrail warns (the run goes on); past `fail` it stops the run before any write, unless
an operator forces it for that run (`--force NAME --reason TEXT`, recorded in the ledger). The first
run has no baseline: the guardrails that need one are skipped, and say so.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

from core.configs import Limit, ValidationConfig
from expectations.checks import Check

GUARDRAILS: tuple[str, ...] = ("persona_changes", "assigned_share", "distribution_drift", "persona_loss")
PSI_FLOOR = 1e-4  # a persona absent on one side counts as this share, so the index stays finite


def check_guardrails(candidate: pd.Series, baseline: pd.Series | None, active: pd.Index, config: ValidationConfig,
                     *, unassigned: str, forced: Collection[str] = ()) -> list[Check]:
    """The guardrails of `candidate` (user Id -> persona label) against `baseline` (the last good run's;
    None on a first run), over the `active` users. A failed guardrail named in `forced` is `forced`."""
    now = candidate[candidate.index.isin(active)]
    before = None if baseline is None or baseline.empty else baseline[baseline.index.isin(active)]
    checks = [_assigned_share(now, config.assigned_share, unassigned)]
    if before is None or before.empty:
        checks += [Check("guardrails", name, "skipped", "no earlier good run", _limit_text(getattr(config, name)),
                         f"{name}: no earlier good run to compare with", guardrail=True)
                   for name in ("persona_changes", "distribution_drift", "persona_loss")]
    else:
        checks += [_persona_changes(now, before, config.persona_changes),
                   _distribution_drift(now, before, config.distribution_drift),
                   _persona_loss(now, before, config.persona_loss, config.persona_loss_min_users)]
    return [_forced(check) if check.status == "failed" and check.name in forced else check for check in checks]


def population_stability_index(now: pd.Series, before: pd.Series) -> float:
    """PSI of two categorical distributions (value -> count): sum((p - q) * ln(p / q))."""
    labels = now.index.union(before.index)
    p = _shares(now.reindex(labels, fill_value=0))
    q = _shares(before.reindex(labels, fill_value=0))
    return float(np.sum((p - q) * np.log(p / q)))


def _shares(counts: pd.Series) -> np.ndarray:
    total = counts.sum()
    shares = counts.to_numpy(dtype=float) / total if total else np.zeros(len(counts))
    return np.maximum(shares, PSI_FLOOR)


def _assigned_share(now: pd.Series, limit: Limit, unassigned: str) -> Check:
    assigned = int((now != unassigned).sum())
    share = assigned / len(now) if len(now) else 0.0
    status = limit.level(share)
    observed = f"{share:.1%} ({assigned:,} of {len(now):,} active users)"
    message = f"assigned_share: {observed} got a persona" + (
        "" if status == "passed" else f"; the {status_word(status)} level is below {_limit_at(limit, status):.0%}")
    return Check("guardrails", "assigned_share", status, observed, _limit_text(limit), message, guardrail=True)


def _persona_changes(now: pd.Series, before: pd.Series, limit: Limit) -> Check:
    both = now.index.intersection(before.index)
    changed = now[both] != before[both]
    share = float(changed.mean()) if len(both) else 0.0
    status = limit.level(share)
    observed = f"{share:.1%} ({int(changed.sum()):,} of {len(both):,} users)"
    message = f"persona_changes: {observed} would change persona" + (
        "" if status == "passed" else f"; the {status_word(status)} level is {_limit_at(limit, status):.0%}")
    samples = tuple(str(user) for user in changed[changed].index[:5])
    return Check("guardrails", "persona_changes", status, observed, _limit_text(limit), message, samples, True)


def _distribution_drift(now: pd.Series, before: pd.Series, limit: Limit) -> Check:
    psi = population_stability_index(now.value_counts(), before.value_counts())
    status = limit.level(psi)
    observed = f"PSI {psi:.3f}"
    message = f"distribution_drift: the persona distribution moved by {observed} against the last good run" + (
        "" if status == "passed" else f"; the {status_word(status)} level is {_limit_at(limit, status):g}")
    return Check("guardrails", "distribution_drift", status, observed, _limit_text(limit), message, guardrail=True)


def _persona_loss(now: pd.Series, before: pd.Series, limit: Limit, min_users: int) -> Check:
    had = before.value_counts()
    had = had[had >= min_users]
    has = now.value_counts().reindex(had.index, fill_value=0)
    loss = (1 - has / had) if len(had) else pd.Series(dtype=float)
    worst = float(loss.max()) if len(loss) else 0.0
    status = limit.level(worst)
    losing = loss[loss > limit.warn].sort_values(ascending=False)
    named = ", ".join(f"{persona} {int(had[persona]):,} -> {int(has[persona]):,}" for persona in losing.index[:5])
    observed = f"{worst:.0%} lost" + (f" ({named})" if named else "")
    message = f"persona_loss: {observed}" + (
        "" if status == "passed" else f"; the {status_word(status)} level is {_limit_at(limit, status):.0%} "
        f"of a persona's users (personas of at least {min_users})")
    return Check("guardrails", "persona_loss", status, observed, _limit_text(limit), message,
                 tuple(str(persona) for persona in losing.index[:5]), True)


def _forced(check: Check) -> Check:
    return Check(check.stage, check.name, "forced", check.observed, check.limit,
                 f"{check.message} (forced for this run)", check.samples, check.guardrail)


def status_word(status: str) -> str:
    return "fail" if status == "failed" else "warn"


def _limit_at(limit: Limit, status: str) -> float:
    return limit.fail if status == "failed" else limit.warn


def _limit_text(limit: Limit) -> str:
    side = "below" if limit.below else "above"
    return f"warn {side} {limit.warn:g}, fail {side} {limit.fail:g}"
