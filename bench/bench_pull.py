"""Benchmark of the pull against the sandbox, compared with a fair floor measured in the same run.

Run: .venv/bin/python bench/bench_pull.py [--preset medium|large] [--seed 1] [--repeat 1]

Prints, for the chosen org:
- the floor: simple-salesforce alone downloading the same rows (every declared stream, same fields,
  same history window, same page size) with Bulk API 2.0 into nothing, with the same number of objects
  at once as the pull (PERSONA_SYNC_PULL_WORKERS: the users first, then the rest in parallel);
- a first pull (no watermarks yet) into fresh staging: rows/s per object, API calls, peak memory, and
  its ratio to the floor (target: <= 1.3x);
- a no-change incremental pull right after it: seconds, API calls and staged files written (targets: <= 5 s
  on the large org, 0 files).

Both are measured warm: a first floor download runs unmeasured before anything is timed, so neither the
floor nor the pull pays for a cold sandbox. With --repeat N, floor and pull alternate N times (each pull
into fresh staging) and every ratio is printed: the machine's noise shows. The sandbox runs in its own
process; each measured phase runs in a fresh child process, so its peak memory (VmHWM) is its own.
Nothing here asserts: compare the numbers with the targets.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.settings import Settings  # noqa: E402
from measure import peak_memory_mib  # noqa: E402
from persona_sync.embedded_org import sandbox_org  # noqa: E402
from sandbox.runner import RunningSandbox, SandboxConfig, start_sandbox_process  # noqa: E402


def _settings(url: str, sandbox_dir: str, home: str) -> Settings:
    return Settings(_env_file=None, home=Path(home), api_reserve=0, pull_reconcile_days=0,
                    **sandbox_org(url, Path(sandbox_dir)))  # type: ignore[arg-type]


def phase_floor(settings: Settings) -> dict:
    """simple-salesforce alone: the same rows and pages, Bulk API 2.0, as many objects at once as the pull."""
    from connectors.salesforce import connect
    from connectors.salesforce.soql import select
    from connectors.salesforce.streams import STREAMS

    sf = connect(settings.salesforce())
    start = datetime.now(timezone.utc) - timedelta(days=settings.pull_history_days)

    def download(stream) -> int:  # type: ignore[no-untyped-def]
        soql = select(stream, since=None if stream.full_history else start)
        return sum(page.count("\n") - 1 for page in getattr(sf.bulk2, stream.sobject).query(
            soql, max_records=settings.pull_bulk_page_rows, wait=0))

    started = time.perf_counter()
    rows = sum(download(stream) for stream in STREAMS if not stream.is_activity)
    with ThreadPoolExecutor(settings.pull_workers) as pool:
        rows += sum(pool.map(download, [stream for stream in STREAMS if stream.is_activity]))
    return {"rows": rows, "seconds": time.perf_counter() - started}


def phase_pull(settings: Settings) -> dict:
    """Our pull, as `persona-sync pull` runs it; counts the staged files it wrote."""
    from connectors.salesforce.streams import STREAMS
    from tasks.pull import run_pull

    before = _files(settings.staging().root)
    started = time.perf_counter()
    report = run_pull(settings.salesforce(), settings.state(), settings.staging(), settings.pull(), list(STREAMS))
    seconds = time.perf_counter() - started
    return {"rows": report.rows, "seconds": seconds, "api_calls": report.api_calls,
            "files_written": len(_files(settings.staging().root) - before),
            "streams": [{"sobject": result.sobject, "mode": result.mode, "rows": result.rows,
                         "seconds": result.seconds, "api_calls": result.api_calls} for result in report.streams]}


def _files(root: Path) -> set[tuple[str, int]]:
    """Every staged file (path, inode): a file rewritten under the same name counts as written."""
    return {(str(path), path.stat().st_ino) for path in root.rglob("*.parquet")} if root.exists() else set()


def _child(phase: str, sandbox: RunningSandbox, home: Path) -> dict:
    command = [sys.executable, __file__, "--phase", phase, "--url", sandbox.url, "--sandbox-dir",
               str(sandbox.data_dir), "--home", str(home)]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        raise SystemExit(f"the {phase} phase failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="large", choices=["small", "medium", "large"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="floor and first pull, alternated this many times")
    parser.add_argument("--data-dir", type=Path, default=Path(".persona-sync/bench"))
    parser.add_argument("--phase", choices=["floor", "pull"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--sandbox-dir", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:  # a measured phase, in its own process
        settings = _settings(args.url, args.sandbox_dir, args.home)
        result = phase_floor(settings) if args.phase == "floor" else phase_pull(settings)
        result["peak_mib"] = peak_memory_mib()
        print(json.dumps(result))
        return

    config = SandboxConfig(data_dir=args.data_dir / f"{args.preset}-{args.seed}", preset=args.preset, seed=args.seed,
                           port=0)
    sandbox = start_sandbox_process(config)
    home = args.data_dir / f"pull-home-{args.preset}-{args.seed}"
    floors, pulls = [], []
    try:
        _child("floor", sandbox, home / "floor")  # warm-up: the sandbox's files in the page cache, for both
        for _ in range(args.repeat):
            floors.append(_child("floor", sandbox, home / "floor"))
            shutil.rmtree(home, ignore_errors=True)
            pulls.append(_child("pull", sandbox, home))
        incremental = _child("pull", sandbox, home)
    finally:
        sandbox.stop()

    floor, full = floors[-1], pulls[-1]
    print(f"org: {args.preset} (seed {args.seed}); {Settings(_env_file=None).pull_workers} objects at once for both")
    print(f"floor (simple-salesforce, Bulk 2.0 into nothing): {floor['rows']:,} rows in {floor['seconds']:.1f} s "
          f"= {floor['rows'] / floor['seconds']:,.0f} rows/s, peak {floor['peak_mib']:,.0f} MiB")
    print(f"full pull: {full['rows']:,} rows in {full['seconds']:.1f} s = {full['rows'] / full['seconds']:,.0f} rows/s, "
          f"{full['api_calls']:,} API calls, peak {full['peak_mib']:,.0f} MiB, "
          f"ratio to floor {full['seconds'] / floor['seconds']:.2f}x (target <= 1.3x)")
    if args.repeat > 1:
        ratios = [pull["seconds"] / floor["seconds"] for floor, pull in zip(floors, pulls)]
        print(f"  all runs: floor {[round(f['seconds'], 1) for f in floors]} s, pull "
              f"{[round(p['seconds'], 1) for p in pulls]} s, ratios {[round(r, 2) for r in ratios]}, peaks "
              f"{[round(p['peak_mib']) for p in pulls]} MiB")
    for stream in sorted(full["streams"], key=lambda item: -item["rows"]):
        rate = stream["rows"] / stream["seconds"] if stream["seconds"] else 0
        print(f"  {stream['sobject']:<24}{stream['mode']:<5}{stream['rows']:>11,} rows {stream['seconds']:>6.1f} s "
              f"{rate:>11,.0f} rows/s {stream['api_calls']:>5} calls")
    print(f"no-change incremental pull: {incremental['rows']:,} rows in {incremental['seconds']:.1f} s, "
          f"{incremental['api_calls']:,} API calls, {incremental['files_written']} staged files written, peak "
          f"{incremental['peak_mib']:,.0f} MiB (targets on large: <= 5 s, 0 files)")


if __name__ == "__main__":
    main()
