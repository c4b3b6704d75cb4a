"""The deployments of prefect.yaml, as an operator runs them: a local Prefect server, `prefect deploy --all`,
runs of the nightly-sync and backfill deployments picked up by a process worker, against a sandbox org; then the
Prefect UI in a real headless browser, as a data engineer sees the runs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from connectors.salesforce import connect
from connectors.state import StateStore
from core.settings import Settings
from sandbox.runner import RunningSandbox
from tests.conftest import sandbox_environment

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A Prefect server of its own (as `prefect server start` runs it), and the environment that uses it."""
    port = _free_port()
    env = os.environ | {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
                        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("the Prefect server did not answer within 120 s")
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def _prefect(env: dict[str, str], *arguments: str, timeout: float = 300) -> str:
    result = subprocess.run([PREFECT, *arguments], env=env | {"PWD": str(ROOT)}, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"prefect {' '.join(arguments)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_prefect_yaml_declares_the_nightly_schedule() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    [nightly] = [deployment for deployment in spec["deployments"] if deployment["name"] == "nightly-sync"]
    assert nightly["entrypoint"] == "flows/nightly_sync.py:nightly_sync"
    assert nightly["schedules"][0]["cron"] == "0 2 * * *"
    assert nightly["concurrency_limit"]["collision_strategy"] == "ENQUEUE"
    # Backfills have a deployment of their own, with no schedule: the nightly's limit never touches them.
    [backfill] = [deployment for deployment in spec["deployments"] if deployment["name"] == "backfill"]
    assert backfill["entrypoint"] == "flows/backfill.py:backfill" and not backfill.get("schedules")
    assert backfill["concurrency_limit"]["collision_strategy"] == "ENQUEUE"


# Three nightly runs, a backfill and a browser, each worker start a new process: longer than the suite's
# 300 s per test on a busy 2-core machine.
@pytest.mark.timeout(900)
def test_the_nightly_deployment_runs_through_a_worker(prefect_server: dict[str, str], fresh_sandbox: RunningSandbox,
                                                     tmp_path: Path) -> None:
    env = prefect_server | sandbox_environment(fresh_sandbox, home=tmp_path / "home", pull_history_days=400)
    _prefect(env, "work-pool", "create", "persona-sync", "--type", "process")
    _prefect(env, "--no-prompt", "deploy", "--all")
    _prefect(env, "deployment", "run", "nightly_sync/nightly-sync", "--param", "as_of=2026-11-01T00:00:00+00:00")
    _prefect(env, "worker", "start", "--pool", "persona-sync", "--run-once")

    settings = Settings(_env_file=None, **{name.removeprefix("PERSONA_SYNC_").lower(): value
                                           for name, value in env.items() if name.startswith("PERSONA_SYNC_")})
    state = StateStore.from_config(settings.state())
    [run] = state.runs(limit=5)
    assert run.flow == "nightly_sync" and run.status == "succeeded" and run.parameters["as_of"].startswith("2026-11-01")
    written = run.counts["push"]["written"]
    sf = connect(settings.salesforce())
    assert written > 150 and sf.query("SELECT COUNT() FROM User WHERE Persona__c != null")["totalSize"] == written

    # The schedule's runs (no as-of) sync tonight; a duplicate of tonight's (after a redeploy) does nothing.
    for _ in range(2):
        _prefect(env, "deployment", "run", "nightly_sync/nightly-sync")
        _prefect(env, "worker", "start", "--pool", "persona-sync", "--run-once")
    nights = [run for run in state.runs(limit=10) if run.parameters.get("night")]
    assert len(nights) == 1 and nights[0].status == "succeeded"
    assert len(state.runs(limit=10)) == 2
    # In the UI the three runs completed, named after the night they sync (the schedule's future runs wait).
    flow_runs = httpx.post(f"{env['PREFECT_API_URL']}/flow_runs/filter", json={}, timeout=10).json()
    tonight = f"nightly-sync-{nights[0].parameters['night']}"
    done = sorted(run["name"] for run in flow_runs if run["state_type"] == "COMPLETED")
    assert done == ["nightly-sync-2026-11-01", tonight, tonight]
    assert {run["state_type"] for run in flow_runs} <= {"COMPLETED", "SCHEDULED"}

    _check_the_ui(env["PREFECT_API_URL"].removesuffix("/api"),
                  next(run["id"] for run in flow_runs if run["name"] == "nightly-sync-2026-11-01"), tmp_path)

    # A backfill, started as from the UI's form (dates as text), through the same worker.
    _prefect(env, "deployment", "run", "backfill/backfill", "--param", "start=2026-10-28", "--param", "end=2026-10-28")
    _prefect(env, "worker", "start", "--pool", "persona-sync", "--run-once")
    backfilled = [run for run in state.runs(limit=10) if run.flow == "backfill"]
    assert [(run.parameters["key"], run.status) for run in backfilled] == [("backfill:2026-10-28", "succeeded")]
    flow_runs = httpx.post(f"{env['PREFECT_API_URL']}/flow_runs/filter", json={}, timeout=10).json()
    assert any(run["name"] == "backfill-2026-10-28-to-2026-10-28" and run["state_type"] == "COMPLETED"
               for run in flow_runs)
    _check_artifacts_in_the_ui(env["PREFECT_API_URL"].removesuffix("/api"), ("backfill-dates", "backfill-progress"))


def _chromium() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on this machine (Debian's `chromium` package): the UI was not checked in a browser")
    return browser


def _dom(browser: str, url: str, *extra: str) -> str:
    result = subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                             *extra, url], capture_output=True, text=True, timeout=120)
    return result.stdout


def _dom_showing(browser: str, url: str, needles: tuple[str, ...], attempts: int = 3) -> str:
    """The page's DOM once it shows every one of `needles`: the UI fetches its data after it loads, and on a
    busy machine a first load may end before the data arrived, so the page is loaded again (a user would
    see it a moment later)."""
    page = _dom(browser, url, "--dump-dom")
    for _ in range(attempts - 1):
        if all(needle in page for needle in needles):
            break
        time.sleep(2)
        page = _dom(browser, url, "--dump-dom")
    return page


def _check_artifacts_in_the_ui(ui: str, keys: tuple[str, ...]) -> None:
    artifacts = _dom_showing(_chromium(), f"{ui}/artifacts", keys)
    for key in keys:
        assert key in artifacts, key


def _check_the_ui(ui: str, flow_run_id: str, output: Path) -> None:
    """What a data engineer sees in the Prefect UI, in a real headless browser (Debian's chromium): the
    flow run, completed; its task runs by name; the artifacts a person reads. A screenshot of the run is
    kept with the test's output."""
    browser = _chromium()

    def page(path: str, *extra: str) -> str:
        return _dom(browser, f"{ui}{path}", *extra)

    run_page = _dom_showing(browser, f"{ui}/runs/flow-run/{flow_run_id}", ("nightly-sync-2026-11-01", "Completed"))
    assert "nightly-sync-2026-11-01" in run_page and "Completed" in run_page
    # The list shows the newest task runs (about ten): those of tonight's run, the pull the oldest of them.
    tasks = ("staging-checks", "feature-checks", "assignment-checks", "pushed-to-salesforce", "run-summary")
    task_runs = _dom_showing(browser, f"{ui}/runs?tab=task-runs", tuple(f"{task}-" for task in tasks))
    for task in tasks:
        assert f"{task}-" in task_runs, task
    keys = ("nightly-sync", "persona-distribution", "data-docs", "push", "changed-users")
    artifacts = _dom_showing(browser, f"{ui}/artifacts", keys)
    for key in keys:
        assert key in artifacts, key
    page(f"/runs/flow-run/{flow_run_id}", f"--screenshot={output / 'prefect-ui-flow-run.png'}", "--window-size=1400,1000")
    assert (output / "prefect-ui-flow-run.png").stat().st_size > 10_000
