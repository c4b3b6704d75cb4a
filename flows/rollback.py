"""Rolling a run back, as a Prefect flow and a run of its own in the ledger (see tasks/rollback.py)."""

from __future__ import annotations

from prefect import flow

from connectors.state import StateStore
from flows.settings import flow_settings
from tasks import steps


@flow(name="rollback")
def rollback_run(run_id: str) -> dict[str, object]:
    """Puts the org's persona fields and the community grants back as they were before run `run_id`
    (fields edited since are skipped and listed), and stops its assignments from counting."""
    settings = flow_settings()
    org = settings.salesforce()
    with StateStore.from_config(settings.state()) as state:
        state.ensure_schema()
        with state.recorded_run("rollback", {"run_id": run_id}) as run:
            counts = steps.rolled_back(org, settings.state(), settings.push(), settings.community(), run_id, run.id)
            run.counts.update(counts)
    return counts
