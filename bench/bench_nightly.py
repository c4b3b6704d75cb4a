"""Benchmark of the whole nightly sync, as deployed: the flow against a running Prefect server, on a
sandbox org (targets for the large org on 2 cores: <= 120 s end to end and <= 1.5 GiB peak memory; a
no-change rerun <= 15 s with 0 writes).

Run: .venv/bin/python bench/bench_nightly.py [--preset large] [--seed 1] [--data-dir .persona-sync/bench]

What it does, and prints:
- serves the org from a sandbox process (generated on first use under <data-dir>/<preset>-<seed>, as
  bench_pull.py does; the persona fields an earlier run wrote into it are emptied first) and starts a
  Prefect server of its own (`prefect server start`); the server's start-up time is reported apart, it
  is not part of a nightly run; an unmeasured pull into a throwaway home warms the sandbox first, as
  bench_pull.py measures warm;
- the first night: `nightly_sync` in a fresh child process with a fresh home (first pull of the history
  window, every check, assignments, the push of every user's persona fields, the demo community role
  table in SQLite): wall time, the process's peak memory (VmHWM), and per stage (each Prefect task run,
  timed by the server) its wall time and the peak of the process's resident memory sampled every 0.1 s
  while it ran;
- the second night right after (nothing changed in the org): the same, with the records it wrote.

The floor to compare with is the targets above; per-stage numbers say where the time goes. Nothing
here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from measure import peak_memory_mib  # noqa: E402

TARGET_SECONDS, TARGET_MIB, TARGET_RERUN_SECONDS = 120.0, 1536.0, 15.0


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Sampler:
    """The process's resident memory every `every` seconds, with the wall-clock time of each sample."""

    def __init__(self, every: float = 0.1) -> None:
        self.samples: list[tuple[float, float]] = []
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), _rss_mib()))
            self._stop.wait(self._every)

    def __enter__(self) -> "_Sampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> float:
        inside = [rss for moment, rss in self.samples if start <= moment <= end]
        return max(inside) if inside else float("nan")


def phase_night() -> dict:
    """One nightly_sync in this process (settings from the environment, Prefect API from PREFECT_API_URL)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter

    from connectors.state import StateStore
    from core.settings import load_settings
    from flows.nightly_sync import nightly_sync

    with _Sampler() as sampler:
        began = time.perf_counter()
        state = nightly_sync(return_state=True)
        seconds = time.perf_counter() - began
    summary = state.result()
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])),
                                      task_run_filter=TaskRunFilter(), limit=200)
    stages = sorted(({"stage": run.name.rsplit("-", 1)[0], "seconds": run.total_run_time.total_seconds(),
                      "peak_mib": sampler.peak_between(run.start_time.timestamp(), run.end_time.timestamp())}
                     for run in tasks if run.start_time and run.end_time), key=lambda stage: stage["stage"])
    with StateStore.from_config(load_settings().state()) as store:
        run = store.run(summary.run_id)
    counts = run.counts or {}
    return {"seconds": seconds, "peak_mib": peak_memory_mib(), "stages": stages, "api_calls": run.api_calls,
            "rows": counts.get("rows"), "users": summary.users,
            "written": (counts.get("push") or {}).get("written"),
            "roles": {key: (counts.get("community") or {}).get(key) for key in ("granted", "revoked")}}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _prefect_server(home: Path) -> tuple[subprocess.Popen, dict[str, str], float]:
    """A Prefect server of its own; returns it, the environment that uses it, and its start-up seconds."""
    import httpx

    home.mkdir(parents=True, exist_ok=True)  # Prefect makes its home, not the folders above it
    port = _free_port()
    env = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    began = time.perf_counter()
    server = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
                               "127.0.0.1", "--port", str(port)], env=os.environ | env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                return server, env, time.perf_counter() - began
        except httpx.HTTPError:
            time.sleep(0.2)
        if server.poll() is not None or time.perf_counter() - began > 180:
            raise SystemExit("the Prefect server did not start")


def _night(env: dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, __file__, "--phase", "night"], env=os.environ | env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the nightly run failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _print_night(title: str, night: dict) -> None:
    print(f"{title}: {night['seconds']:.1f} s, peak {night['peak_mib']:,.0f} MiB, {night['rows'] or 0:,} rows pulled, "
          f"{night['users']:,} users, {night['written']:,} User records written, community roles "
          f"{night['roles']}, {night['api_calls']:,} API calls")
    for stage in night["stages"]:
        print(f"  {stage['stage']:<24} {stage['seconds']:>6.1f} s   peak {stage['peak_mib']:>6,.0f} MiB")


def _clear_persona_fields(org_db: Path) -> None:
    """Empties the persona fields of the sandbox org's users, in its store (what an earlier run wrote)."""
    import sqlite3

    with sqlite3.connect(org_db) as org:
        present = {row[1] for row in org.execute("PRAGMA table_info(User)")}
        fields = [name for name in ("Persona__c", "Persona_Score__c", "Persona_Confidence__c", "Persona_Reason__c",
                                    "Persona_Updated__c") if name in present]
        if fields:
            org.execute(f"UPDATE User SET {', '.join(f'{name} = NULL' for name in fields)}")


def _warm_up(sandbox, home: Path) -> None:  # type: ignore[no-untyped-def]
    """An unmeasured pull into a throwaway home, so the first night does not pay for a cold sandbox (its
    SQLite pages read from disk), as bench_pull.py measures warm."""
    from core.settings import Settings
    from connectors.salesforce.streams import STREAMS
    from persona_sync.embedded_org import sandbox_org
    from tasks.pull import run_pull

    shutil.rmtree(home, ignore_errors=True)
    settings = Settings(_env_file=None, home=home, api_reserve=0,
                        **sandbox_org(sandbox.url, sandbox.data_dir.resolve()))  # type: ignore[arg-type]
    run_pull(settings.salesforce(), settings.state(), settings.staging(), settings.pull(), list(STREAMS))
    shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="large", choices=["small", "medium", "large"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=Path(".persona-sync/bench"))
    parser.add_argument("--phase", choices=["night"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase_night()))
        return

    from persona_sync.embedded_org import demo_community, sandbox_org
    from sandbox.runner import SandboxConfig, prepare_org, start_sandbox_process

    config = SandboxConfig(data_dir=args.data_dir / f"{args.preset}-{args.seed}", preset=args.preset, seed=args.seed,
                           port=0)
    prepare_org(config).close()
    _clear_persona_fields(config.org_path)  # an earlier run of this bench wrote them: the first night writes all
    sandbox = start_sandbox_process(config)
    home = (args.data_dir / f"nightly-home-{args.preset}-{args.seed}").resolve()
    shutil.rmtree(home, ignore_errors=True)
    server = None
    try:
        server, prefect_env, startup = _prefect_server(home / "prefect")
        values = sandbox_org(sandbox.url, sandbox.data_dir.resolve()) | demo_community(home, sandbox.org_path) | {
            "home": home, "api_reserve": 0}
        env = prefect_env | {f"PERSONA_SYNC_{name.upper()}": value.get_secret_value() if hasattr(value, "get_secret_value")
                             else str(value) for name, value in values.items()}
        _warm_up(sandbox, home.parent / f"warm-up-{args.preset}-{args.seed}")
        first = _night(env)
        second = _night(env)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        sandbox.stop()
    print(f"org: {args.preset} (seed {args.seed}), {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
          f"Prefect server start-up (apart): {startup:.1f} s")
    _print_night(f"first night (target <= {TARGET_SECONDS:.0f} s, <= {TARGET_MIB:,.0f} MiB)", first)
    _print_night(f"no-change rerun (target <= {TARGET_RERUN_SECONDS:.0f} s, 0 written)", second)


if __name__ == "__main__":
    main()
