"""A night whose inputs are those of the last good run decides nothing new: it reuses that run's checks,
features and assignments, and only pushes (which writes nothing when the org holds them already).

The inputs of a run's decisions: the stored personas it keeps stable against (the latest run before its
as-of: a backfill stored meanwhile changes them), what is staged (each object's staging version; for User only the
columns features and checks read, since the push itself changes the persona fields and every login
changes LastLoginDate), the as-of, the catalog, the feature, rule and check settings, the guardrails
forced, and the source of the `personas` package (an upgrade that changes how personas are decided
decides again). A run records their fingerprint in the ledger (`counts["inputs"]`); the next run with the
same fingerprint reuses it. In a real org the integration user's own logins add LoginHistory rows every
night, so a rerun there usually computes again: the shortcut is for reruns of a night (after a redeploy,
after a redeploy or a manual rerun), which then cost a pull and a push.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import pyarrow as pa

import personas
from connectors.salesforce.streams import Stream
from connectors.staging import Staging
from connectors.state import StateStore
from core.configs import PersonasConfig, PushConfig, StagingConfig, StateConfig
from tasks.personas import catalog_path

# User columns that change without the user changing: when they last logged in.
_USER_NOISE = ("LastLoginDate",)


def inputs_fingerprint(staging_config: StagingConfig, state_config: StateConfig, streams: list[Stream],
                       config: PersonasConfig, limits: dict[str, object], push: PushConfig, as_of: datetime,
                       forced: list[str]) -> str:
    """The fingerprint of everything a run's features, checks and assignments are decided from."""
    staging = Staging.from_config(staging_config)
    with StateStore.from_config(state_config) as state:
        baseline = state.latest_assignments(before=as_of)
    baseline_run = str(baseline["run_id"].iloc[0]) if len(baseline) else None
    staged: dict[str, object] = {}
    for stream in streams:
        if stream.sobject == "User":
            staged["User"] = _user_digest(staging, stream, push)
        else:
            staged[stream.sobject] = staging.version(stream.sobject)
    catalog = catalog_path(config)
    parts = {"staged": staged, "baseline": baseline_run, "as_of": as_of.isoformat(), "window_days": config.window_days,
             "stability_margin": config.stability_margin, "limits": limits, "forced": sorted(forced),
             "catalog": _digest(catalog.read_bytes()), "code": _personas_source_digest()}
    return _digest(json.dumps(parts, sort_keys=True, default=str).encode())


def reusable_run(state_config: StateConfig, fingerprint: str) -> str | None:
    """The last good nightly run, when it stored assignments decided from these very inputs (else None)."""
    with StateStore.from_config(state_config) as state:
        good = state.last_good_run(["nightly_sync"], having="users")
    if good is None or not good.counts or good.counts.get("inputs") != fingerprint or good.parameters.get("dry_run"):
        return None
    stored_by = good.counts.get("reused_from") or good.id  # the run that stored them, when that one reused too
    with StateStore.from_config(state_config) as state:
        stored = state.run(stored_by)
    return stored_by if stored is not None and stored.status == "succeeded" else None  # not rolled back since


def _user_digest(staging: Staging, stream: Stream, push: PushConfig) -> str:
    ours = {*push.fields.values(), push.updated_field}
    columns = [column for column in stream.columns if column not in ours and column not in _USER_NOISE
               and column != stream.cursor]
    users = staging.read_arrow("User", columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, users.schema) as writer:
        writer.write_table(users)
    return _digest(sink.getvalue().to_pybytes())


def _personas_source_digest() -> str:
    folder = Path(personas.__file__).parent
    return _digest(b"".join(path.read_bytes() for path in sorted(folder.glob("*.py"))))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]
