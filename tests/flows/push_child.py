"""A push in a process of its own, killed with SIGKILL at a chosen point (tests/flows/test_crash_safety.py).

Run: python tests/flows/push_child.py POINT ASSIGNMENTS.parquet. Settings come from PERSONA_SYNC_*
variables. POINT: none, before-first-call, between-calls, after-first-call (the org took the first call, its outcomes
are not marked), during-bulk-job, inside-sql-transaction.
The product code runs unchanged; only the kill is patched in, around the real calls.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd  # noqa: E402

import connectors.salesforce.write as write  # noqa: E402
from connectors.community import CommunityTable  # noqa: E402
from connectors.state import StateStore  # noqa: E402
from core.settings import Settings  # noqa: E402
from personas.catalog import UNASSIGNED, default_catalog_path, load_catalog  # noqa: E402
from tasks.community import run_community_push  # noqa: E402
from tasks.push import run_push  # noqa: E402


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at(point: str) -> None:
    if point in ("before-first-call", "between-calls", "after-first-call"):
        write.COLLECTION_SIZE = 50  # several calls even on a small org
        send, calls = write._send, []

        def dying_send(*args):
            calls.append(1)
            if point == "before-first-call" or (point == "between-calls" and len(calls) == 3):
                die()
            results = send(*args)
            if point == "after-first-call":
                die()  # the org took the call; its outcomes are not marked yet
            return results

        write._send = dying_send
    elif point == "during-bulk-job":
        from simple_salesforce.bulk2 import _Bulk2Client

        wait = _Bulk2Client.wait_for_job

        def dying_wait(self, job_id, is_query, *args, **kwargs):
            if not is_query:  # the ingest job is uploaded and closed: Salesforce works on it without us
                die()
            return wait(self, job_id, is_query, *args, **kwargs)

        _Bulk2Client.wait_for_job = dying_wait
    elif point == "inside-sql-transaction":
        apply = CommunityTable.apply

        def dying_apply(self, grants, revokes):
            begin = self._engine.begin

            @contextmanager
            def dying_begin():
                with begin() as connection:
                    yield connection
                    die()  # the inserts and deletes are made, the commit is not

            self._engine.begin = dying_begin
            return apply(self, grants, revokes)

        CommunityTable.apply = dying_apply


def main() -> None:
    point, assignments_file = sys.argv[1], Path(sys.argv[2])
    kill_at(point)
    settings = Settings()
    catalog = load_catalog(default_catalog_path())
    assignments = pd.read_parquet(assignments_file)
    with StateStore.from_config(settings.state()) as state:
        run_id = state.start_run("push-child", {"point": point})
    run_push(settings.salesforce(), settings.state(), settings.push(), run_id, assignments,
             [*catalog.labels, UNASSIGNED])
    run_community_push(settings.community(), settings.staging(), settings.state(), run_id, assignments, catalog)


if __name__ == "__main__":
    main()
