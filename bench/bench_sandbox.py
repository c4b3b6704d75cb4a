"""Benchmark of the sandbox: generation, Bulk API 2.0 download, REST paging, server memory.

Run: .venv/bin/python bench/bench_sandbox.py [--preset large] [--data-dir DIR] [--regenerate]

Prints, for the chosen org (large by default):
- how long generating the org took (only when it is generated in this run);
- a Bulk API 2.0 query of 1,000,000 Task rows downloaded through simple-salesforce (target >= 200,000 rows/s);
- REST paging of 100,000 Task rows through simple-salesforce's query_all_iter (target >= 20,000 rows/s);
- the sandbox server's peak resident memory (it streams, so this stays bounded).

The server runs in its own process (as in production the org is another machine), so client and server
each get a core. Numbers go to stdout; nothing here asserts: compare them with the targets.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.salesforce import connect  # noqa: E402
from core.settings import Settings  # noqa: E402
from persona_sync.embedded_org import pointed_at  # noqa: E402
from sandbox.runner import SandboxConfig, prepare_org, start_sandbox_process  # noqa: E402
from measure import peak_memory_mib  # noqa: E402

BULK_ROWS = 1_000_000
REST_ROWS = 100_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="large", choices=["small", "medium", "large"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=Path(".persona-sync/bench"))
    parser.add_argument("--regenerate", action="store_true", help="generate the org again even if it exists")
    parser.add_argument("--bulk-page", type=int, default=250_000, help="maxRecords per Bulk results page")
    args = parser.parse_args()

    data_dir = args.data_dir / f"{args.preset}-{args.seed}"
    if args.regenerate and data_dir.exists():
        shutil.rmtree(data_dir)
    config = SandboxConfig(data_dir=data_dir, preset=args.preset, seed=args.seed, port=0)
    if not config.org_path.exists():
        started = time.perf_counter()
        store = prepare_org(config)
        seconds = time.perf_counter() - started
        rows = sum(store.count(name) for name in store.schema)
        store.close()
        print(f"generation ({args.preset}): {seconds:.1f} s for {rows:,} rows")
    else:
        print(f"generation: skipped, reusing {config.org_path} (--regenerate to measure it)")

    sandbox = start_sandbox_process(config)
    try:
        sf = connect(pointed_at(Settings(_env_file=None), sandbox).salesforce())
        pid = int(__import__("json").loads((data_dir / "sandbox.json").read_text())["pid"])

        soql = ("SELECT Id, OwnerId, WhoId, WhatId, Subject, TaskSubtype, Status, IsClosed, ActivityDate, "
                f"CreatedDate, SystemModstamp FROM Task LIMIT {BULK_ROWS}")
        started = time.perf_counter()
        rows = 0
        for page in sf.bulk2.Task.query(soql, max_records=args.bulk_page, wait=0.05):
            rows += page.count("\n") - 1
        seconds = time.perf_counter() - started
        print(f"bulk 2.0 query: {rows:,} Task rows in {seconds:.2f} s = {rows / seconds:,.0f} rows/s "
              f"(target >= 200,000)")

        started = time.perf_counter()
        rows = sum(1 for _ in sf.query_all_iter(
            f"SELECT Id, OwnerId, Subject, TaskSubtype, Status, CreatedDate FROM Task LIMIT {REST_ROWS}"))
        seconds = time.perf_counter() - started
        print(f"rest paging: {rows:,} Task rows in {seconds:.2f} s = {rows / seconds:,.0f} rows/s (target >= 20,000)")
        print(f"server peak memory: {peak_memory_mib(pid):,.0f} MiB; API calls spent: {sf.api_usage}")
    finally:
        sandbox.stop()


if __name__ == "__main__":
    main()
