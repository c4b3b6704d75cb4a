"""Benchmark of the validation stage (tasks/validation.py, expectations/) on a staged org, against the
pipeline's own work (targets for the large org on 2 cores: validation <= 15 s and <= 500 MiB peak memory
on top of the pipeline's own peak).

Run: .venv/bin/python bench/bench_validate.py [--staging DIR] [--state-db FILE] [--as-of ISO]
                                              [--order flow|after] [--home DIR]

Needs a staged pull and its state database: `bench/bench_pull.py --preset large` leaves both under
.persona-sync/bench/pull-home-large-1/ (the default here). The state database is copied into --home
(default .persona-sync/bench/validate-home-large-1/) and only the copy is written to; the as-of is the
latest LoginTime staged (as in bench_personas.py).

Each phase runs in a fresh child process, so its peak memory (VmHWM) is its own:
- seed (not measured): features and assignments, stored in the copy as the last good run (a succeeded
  nightly_sync a day before the as-of, with its staged row counts), so the row-drop check and every
  guardrail compare with a baseline instead of being skipped; it also warms the page cache for the rest;
- floor: the pipeline's own work, features + assignment (compute_and_store_features, assign_candidates),
  time and peak;
- pipeline + validation in one process, in the order the nightly flow runs them (--order flow: staging
  checks, features, feature checks, assignment, assignment checks incl. guardrails) or with every check
  after the pipeline (--order after): the time of `import great_expectations`, of each validation stage
  (each includes building its Data Docs and recording its checks in the ledger, as tasks/steps.py does)
  and their total, the peak after each step, the process peak and its extra over the floor's;
- validation alone, on the floor's features and candidate assignments: time and peak.

Also prints what it was measured on (rows staged per object, users, cores, load) and how many checks
passed, warned, failed or were skipped. Nothing is asserted: compare the numbers with the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from measure import peak_memory_mib  # noqa: E402

TARGET_SECONDS = 15.0
TARGET_EXTRA_MIB = 500.0


# --- the phases (each in its own process) -------------------------------------------------------------

def _settings(args: argparse.Namespace, home: Path):  # type: ignore[no-untyped-def]
    from core.settings import Settings

    return Settings(_env_file=None, home=home, staging_dir=args.staging,
                    state_database_url=f"sqlite:///{(args.home / 'state.db').resolve()}")


def phase_seed(args: argparse.Namespace, as_of: datetime) -> dict:
    """Features and assignments of a day earlier, stored as the last good run (not measured)."""
    import pandas as pd

    from connectors.staging import Staging
    from connectors.state import StateStore
    from tasks.personas import assign_candidates, compute_and_store_features

    settings = _settings(args, args.home / "seed")
    earlier = as_of - timedelta(days=1)
    staging = Staging.from_config(settings.staging())
    rows = {sobject: staging.row_count(sobject) for sobject in staging.objects()}
    features_file = compute_and_store_features(settings.personas(), settings.staging(), earlier)
    with StateStore.from_config(settings.state()) as state:
        state.ensure_schema()
        with state.recorded_run("nightly_sync", {"as_of": earlier.isoformat(), "bench": "bench_validate seed"}) as run:
            summary = assign_candidates(settings.personas(), settings.state(), features_file, run.id, earlier)
            state.save_assignments(run.id, earlier, summary.catalog_version, pd.read_parquet(summary.assignments_path))
            run.counts["staged_rows"] = rows
    return {"rows": rows, "users": summary.users}


def phase_floor(args: argparse.Namespace, as_of: datetime) -> dict:
    """The pipeline's own work: features + assignment."""
    from tasks.personas import assign_candidates, compute_and_store_features

    settings = _settings(args, args.home / "floor")
    started = time.perf_counter()
    features_file = compute_and_store_features(settings.personas(), settings.staging(), as_of)
    featured = time.perf_counter()
    summary = assign_candidates(settings.personas(), settings.state(), features_file, "bench-floor", as_of)
    assigned = time.perf_counter()
    return {"features_s": featured - started, "assign_s": assigned - featured, "seconds": assigned - started,
            "users": summary.users, "features_file": str(features_file),
            "candidates_file": str(summary.assignments_path)}


class _Validation:
    """The three validation stages as the flow calls them, timed one by one, with the peak after each."""

    def __init__(self, settings, as_of: datetime, flow: str) -> None:  # type: ignore[no-untyped-def]
        from connectors.salesforce.streams import STREAMS
        from connectors.state import StateStore
        from personas.catalog import default_catalog_path, load_catalog

        self.settings, self.as_of = settings, as_of
        # A ledger run the checks are recorded under, as the flow's tasks do (tasks/steps.py, _settled).
        with StateStore.from_config(settings.state()) as state:
            state.ensure_schema()
            self.run_name = state.start_run(flow, {"as_of": as_of.isoformat(), "bench": "bench_validate"})
        self.streams = list(STREAMS)
        self.catalog = load_catalog(default_catalog_path())
        self.times: dict[str, float] = {}
        # Every timed step of the process in the order it ran: (name, seconds, peak so far in MiB).
        self.timeline: list[tuple[str, float, float]] = []
        self.checks: list = []

    def timed(self, name: str, call, *, validation: bool = True):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        result = call()
        seconds = time.perf_counter() - started
        if validation:
            self.times[name] = seconds
        self.timeline.append((name, seconds, peak_memory_mib()))
        return result

    def import_gx(self) -> None:
        def load() -> None:
            import great_expectations  # noqa: F401
            import great_expectations.expectations  # noqa: F401

        self.timed("import great_expectations", load)

    def _recorded(self, stage):  # type: ignore[no-untyped-def]
        """A stage's checks kept in the ledger with the run's index page, as the flow does after each stage
        (a failed check would stop the flow; here it is only counted)."""
        from core.errors import ValidationFailed
        from tasks.validation import record

        try:
            record(self.settings.state(), self.settings.validation(), self.run_name, stage)
        except ValidationFailed:
            pass
        self.checks += stage.checks
        return stage

    def staging(self) -> None:
        from tasks.validation import check_staging

        s = self.settings
        self.timed("staging checks", lambda: self._recorded(check_staging(
            s.staging(), s.state(), s.validation(), self.streams, self.catalog, self.run_name,
            history_days=s.pull().history_days)))

    def features(self, features_file: Path) -> None:
        from tasks.validation import check_features

        s = self.settings
        self.timed("feature checks", lambda: self._recorded(check_features(
            features_file, s.staging(), s.validation(), self.catalog, self.run_name)))

    def assignments(self, candidates_file: Path, features_file: Path) -> None:
        from tasks.validation import check_assignments

        s = self.settings
        self.timed("assignment checks", lambda: self._recorded(check_assignments(
            candidates_file, features_file, s.staging(), s.state(), s.validation(), self.catalog, self.as_of,
            self.run_name)))

    def result(self) -> dict:
        counts: dict[str, dict[str, int]] = {}
        for check in self.checks:
            counts.setdefault(check.stage, {}).setdefault(check.status, 0)
            counts[check.stage][check.status] += 1
        return {"validation_times": self.times, "timeline": self.timeline, "check_counts": counts,
                "not_passed": [f"{check.status}: {check.message}" for check in self.checks
                               if check.status != "passed"]}


def phase_full(args: argparse.Namespace, as_of: datetime) -> dict:
    """Pipeline + every validation stage in one process, in the flow's order (or every check after)."""
    from tasks.personas import assign_candidates, compute_and_store_features

    settings = _settings(args, args.home / "full")
    validation = _Validation(settings, as_of, "bench_validate_full")

    def features() -> Path:
        return validation.timed("features", lambda: compute_and_store_features(
            settings.personas(), settings.staging(), as_of), validation=False)

    def assignment(features_file: Path) -> Path:
        summary = validation.timed("assignment", lambda: assign_candidates(
            settings.personas(), settings.state(), features_file, validation.run_name, as_of), validation=False)
        return summary.assignments_path

    started = time.perf_counter()
    if args.order == "flow":  # flows/nightly_sync.py: each check right after what it checks
        validation.import_gx()
        validation.staging()
        features_file = features()
        validation.features(features_file)
        candidates_file = assignment(features_file)
        validation.assignments(candidates_file, features_file)
    else:
        features_file = features()
        candidates_file = assignment(features_file)
        validation.import_gx()
        validation.staging()
        validation.features(features_file)
        validation.assignments(candidates_file, features_file)
    return {"seconds": time.perf_counter() - started, **validation.result()}


def phase_alone(args: argparse.Namespace, as_of: datetime, features_file: Path, candidates_file: Path) -> dict:
    """Validation alone, on the floor's files."""
    settings = _settings(args, args.home / "alone")
    validation = _Validation(settings, as_of, "bench_validate_alone")
    validation.import_gx()
    validation.staging()
    validation.features(features_file)
    validation.assignments(candidates_file, features_file)
    return validation.result()


# --- the parent -------------------------------------------------------------------------------------------

def _child(args: argparse.Namespace, phase: str, as_of: datetime, *extra: str) -> dict:
    command = [sys.executable, __file__, "--phase", phase, "--staging", str(args.staging), "--home", str(args.home),
               "--as-of", as_of.isoformat(), "--order", args.order, *extra]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        raise SystemExit(f"the {phase} phase failed:\n{finished.stderr[-4000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def _latest_login(staging_dir: Path) -> datetime:
    import pyarrow.compute as pc

    from connectors.staging import Staging

    logins = Staging(staging_dir).read_arrow("LoginHistory", columns=["LoginTime"]).column("LoginTime")
    return pc.max(logins).as_py().astimezone(timezone.utc)


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--staging", type=Path, default=Path(".persona-sync/bench/pull-home-large-1/staging"))
    parser.add_argument("--state-db", type=Path, default=None,
                        help="the pull's state database (default: state.db next to --staging); only a copy is used")
    parser.add_argument("--as-of", type=datetime.fromisoformat, default=None,
                        help="as-of (default: the latest LoginTime staged, so the window holds the org's activity)")
    parser.add_argument("--order", choices=["flow", "after"], default="flow",
                        help="flow: each check right after what it checks, as flows/nightly_sync.py; after: every "
                             "check after features + assignment")
    parser.add_argument("--home", type=Path, default=Path(".persona-sync/bench/validate-home-large-1"),
                        help="scratch home (features, assignments, Data Docs, the state database's copy)")
    parser.add_argument("--phase", choices=["seed", "floor", "full", "alone"], help=argparse.SUPPRESS)
    parser.add_argument("--features-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--candidates-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:  # a measured phase, in its own process
        as_of = args.as_of
        if args.phase == "seed":
            result = phase_seed(args, as_of)
        elif args.phase == "floor":
            result = phase_floor(args, as_of)
        elif args.phase == "full":
            result = phase_full(args, as_of)
        else:
            result = phase_alone(args, as_of, args.features_file, args.candidates_file)
        result["peak_mib"] = peak_memory_mib()
        print(json.dumps(result))
        return

    if not (args.staging / "User").exists():
        raise SystemExit(f"no staged org at {args.staging}: run bench/bench_pull.py --preset large first")
    state_db = args.state_db or args.staging.parent / "state.db"
    if not state_db.exists():
        raise SystemExit(f"no state database at {state_db}: run bench/bench_pull.py --preset large first")
    shutil.rmtree(args.home, ignore_errors=True)
    args.home.mkdir(parents=True)
    shutil.copyfile(state_db, args.home / "state.db")
    as_of = args.as_of.astimezone(timezone.utc) if args.as_of else _latest_login(args.staging)
    load_before = _load()

    seed = _child(args, "seed", as_of)
    floor = _child(args, "floor", as_of)
    full = _child(args, "full", as_of)
    alone = _child(args, "alone", as_of, "--features-file", floor["features_file"],
                   "--candidates-file", floor["candidates_file"])

    rows = seed["rows"]
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    print(f"org: staging {args.staging}: {sum(rows.values()):,} rows staged over {len(rows)} objects, "
          f"{rows.get('User', 0):,} users ({floor['users']:,} with features); as-of {as_of:%Y-%m-%d %H:%M} UTC; "
          f"{cores} cores ({usable} usable); load average {load_before} before, {_load()} after")
    print("  rows per object: " + ", ".join(f"{name} {count:,}" for name, count in
                                            sorted(rows.items(), key=lambda item: -item[1])))
    print(f"  baseline: a succeeded nightly_sync a day earlier ({seed['users']:,} assignments stored, its staged "
          "rows) in a copy of the state database")

    print(f"1. floor, features + assignment: {floor['seconds']:.1f} s (features {floor['features_s']:.1f} s, "
          f"assignment {floor['assign_s']:.1f} s), peak {floor['peak_mib']:,.0f} MiB")

    times = full["validation_times"]
    total = sum(times.values())
    gx_import = times.get("import great_expectations", 0.0)
    pipeline = {name: seconds for name, seconds, _ in full["timeline"] if name not in times}
    extra = full["peak_mib"] - floor["peak_mib"]
    order = ("flow order: staging checks, features, feature checks, assignment, assignment checks"
             if args.order == "flow" else "every check after features + assignment")
    steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in pipeline.items())
    print(f"2. pipeline + validation in one process ({order}): {full['seconds']:.1f} s; pipeline "
          f"{sum(pipeline.values()):.1f} s ({steps})")
    for name, seconds, peak in full["timeline"]:
        print(f"     {name:<26}{seconds:>6.1f} s   peak so far {peak:>6,.0f} MiB")
    print(f"   validation {total:.1f} s in all (of which import great_expectations {gx_import:.1f} s; target "
          f"<= {TARGET_SECONDS:g} s: {'met' if total <= TARGET_SECONDS else 'NOT met'}); process peak "
          f"{full['peak_mib']:,.0f} MiB, extra over the pipeline's peak {extra:+,.0f} MiB (target <= "
          f"{TARGET_EXTRA_MIB:g}: {'met' if extra <= TARGET_EXTRA_MIB else 'NOT met'})")

    alone_times = alone["validation_times"]
    print(f"3. validation alone (fresh process, the floor's files): {sum(alone_times.values()):.1f} s ("
          + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in alone_times.items())
          + f"), peak {alone['peak_mib']:,.0f} MiB")

    counts = full["check_counts"]
    print("checks: " + "; ".join(f"{stage} " + ", ".join(f"{n} {status}" for status, n in sorted(by.items()))
                                 for stage, by in counts.items()))
    for line in full["not_passed"]:
        print(f"  {line}")


if __name__ == "__main__":
    main()
