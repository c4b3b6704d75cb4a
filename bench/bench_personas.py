"""Benchmark of features + assignment on a staged org (target for the large org: < 20 s, < 1 GiB on 2 cores).

Run: .venv/bin/python bench/bench_personas.py [--staging DIR] [--as-of ISO] [--partitions 4]

Needs a staged pull: `bench/bench_pull.py --preset large` leaves one under
.persona-sync/bench/pull-home-large-1/staging (the default here). Prints the time of each step and the
process's peak memory; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.staging import Staging  # noqa: E402
from personas.catalog import default_catalog_path, load_catalog  # noqa: E402
from personas.features import Window, compute_features_partitioned  # noqa: E402
from personas.rules import assign  # noqa: E402
from measure import peak_memory_mib  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--staging", type=Path, default=Path(".persona-sync/bench/pull-home-large-1/staging"))
    parser.add_argument("--as-of", type=datetime.fromisoformat, default=None,
                        help="as-of (default: the latest LoginTime staged, so the window holds the org's activity)")
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    if not (args.staging / "User").exists():
        raise SystemExit(f"no staged org at {args.staging}: run bench/bench_pull.py --preset large first")
    staging = Staging(args.staging)
    as_of = args.as_of
    if as_of is None:
        import pyarrow.compute as pc

        logins = staging.read_arrow("LoginHistory", columns=["LoginTime"]).column("LoginTime")
        as_of = pc.max(logins).as_py()
    as_of = as_of.astimezone(timezone.utc)
    catalog = load_catalog(default_catalog_path())

    started = time.perf_counter()
    features = compute_features_partitioned(staging, Window(as_of=as_of, days=90), args.partitions)
    featured = time.perf_counter()
    assignments = assign(features, catalog)
    assigned = time.perf_counter()

    peak = peak_memory_mib()
    print(f"staging {args.staging}: {len(features):,} users, as-of {as_of:%Y-%m-%d %H:%M} UTC, "
          f"{args.partitions} partitions")
    print(f"features: {featured - started:.1f} s; assignment: {assigned - featured:.1f} s; "
          f"total {assigned - started:.1f} s (target < 20 s); peak memory {peak:,.0f} MiB (target <= 450)")
    print(assignments["persona"].value_counts().to_string())


if __name__ == "__main__":
    main()
