"""Benchmark of the pull against the sandbox, compared with the floor.

Run: .venv/bin/python bench/bench_pull.py [--preset medium|large] [--seed 1]

Prints, for the chosen org:
- the floor: simple-salesforce alone downloading the same rows (every declared stream, same fields,
  same history window) with Bulk API 2.0 into nothing;
- a first pull (no watermarks yet) into fresh staging: rows/s per object and overall, API calls, peak memory,
  and the ratio to the floor (target: within 1.3x);
- a no-change incremental pull right after it (target for the large org: under 10 s).

The sandbox runs in its own process; each measured phase runs in a fresh child process so that its
peak memory (ru_maxrss) is its own. Nothing here asserts: compare the numbers with the targets.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from persona_sync.local_sandbox import settings_for  # noqa: E402
from persona_sync.settings import Settings  # noqa: E402
from sandbox.runner import RunningSandbox, SandboxConfig, start_sandbox_process  # noqa: E402


def _settings(sandbox_url: str, ca_cert: str, home: str) -> Settings:
    return Settings(_env_file=None, home=Path(home), salesforce_login_url=sandbox_url,
                    salesforce_ca_bundle=Path(ca_cert), salesforce_bulk_poll_seconds=0.0, api_reserve=0)


def phase_floor(settings: Settings) -> dict:
    """simple-salesforce alone: the same rows, Bulk API 2.0, pages counted and dropped."""
    from connectors.salesforce import connect
    from connectors.salesforce.streams import STREAMS

    sf = connect(settings)
    start = (datetime.now(timezone.utc) - timedelta(days=settings.pull_history_days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    started = time.perf_counter()
    rows = 0
    for stream in STREAMS:
        conditions = [] if stream.full_history else [f"{stream.cursor} >= {start}"]
        if stream.required_filter:
            conditions.append(stream.required_filter)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        soql = f"SELECT {', '.join(stream.columns)} FROM {stream.sobject}{where}"
        for page in getattr(sf.bulk2, stream.sobject).query(soql, max_records=settings.pull_bulk_page_rows, wait=0):
            rows += page.count("\n") - 1
    return {"rows": rows, "seconds": time.perf_counter() - started}


def phase_pull(settings: Settings, full_refresh: bool) -> dict:
    """Our pull, as `persona-sync pull` runs it."""
    from connectors.salesforce.streams import STREAMS
    from tasks.pull import options_from_settings, run_pull

    started = time.perf_counter()
    report = run_pull(settings, list(STREAMS), options_from_settings(settings, full_refresh=full_refresh))
    return {"rows": report.rows, "seconds": time.perf_counter() - started, "api_calls": report.api_calls,
            "streams": [{"sobject": result.sobject, "mode": result.mode, "rows": result.rows,
                         "seconds": result.seconds} for result in report.streams]}


def _child(phase: str, sandbox: RunningSandbox, home: Path) -> dict:
    command = [sys.executable, __file__, "--phase", phase, "--url", sandbox.url, "--ca", str(sandbox.ca_cert),
               "--home", str(home)]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        raise SystemExit(f"the {phase} phase failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="large", choices=["small", "medium", "large"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=Path(".persona-sync/bench"))
    parser.add_argument("--phase", choices=["floor", "pull", "incremental"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:  # a measured phase, in its own process
        settings = _settings(args.url, args.ca, args.home)
        result = phase_floor(settings) if args.phase == "floor" else phase_pull(settings, full_refresh=False)
        result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    config = SandboxConfig(data_dir=args.data_dir / f"{args.preset}-{args.seed}", preset=args.preset, seed=args.seed,
                           port=0)
    sandbox = start_sandbox_process(config)
    home = args.data_dir / f"pull-home-{args.preset}-{args.seed}"
    shutil.rmtree(home, ignore_errors=True)
    try:
        settings_for(Settings(_env_file=None), sandbox)  # validates the sandbox files exist
        floor = _child("floor", sandbox, home / "floor")
        full = _child("pull", sandbox, home)
        incremental = _child("incremental", sandbox, home)
    finally:
        sandbox.stop()

    print(f"org: {args.preset} (seed {args.seed})")
    print(f"floor (simple-salesforce, Bulk 2.0 into nothing): {floor['rows']:,} rows in {floor['seconds']:.1f} s "
          f"= {floor['rows'] / floor['seconds']:,.0f} rows/s, peak {floor['peak_mib']:,.0f} MiB")
    print(f"full pull: {full['rows']:,} rows in {full['seconds']:.1f} s = {full['rows'] / full['seconds']:,.0f} rows/s, "
          f"{full['api_calls']:,} API calls, peak {full['peak_mib']:,.0f} MiB, "
          f"ratio to floor {full['seconds'] / floor['seconds']:.2f}x (target <= 1.3x)")
    for stream in sorted(full["streams"], key=lambda item: -item["rows"]):
        rate = stream["rows"] / stream["seconds"] if stream["seconds"] else 0
        print(f"  {stream['sobject']:<24}{stream['mode']:<5}{stream['rows']:>11,} rows {stream['seconds']:>6.1f} s "
              f"{rate:>11,.0f} rows/s")
    print(f"no-change incremental pull: {incremental['rows']:,} rows in {incremental['seconds']:.1f} s, "
          f"{incremental['api_calls']:,} API calls, peak {incremental['peak_mib']:,.0f} MiB (target < 10 s on large)")


if __name__ == "__main__":
    main()
