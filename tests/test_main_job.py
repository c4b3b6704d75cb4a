"""The README's first command, as a newcomer runs it: `persona-sync run` on embedded defaults, twice.

Its own file, so the test runner can give it a worker of its own while the rest of the suite runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.timeout(600)  # two runs, each starting a sandbox and a Prefect API
def test_the_main_job_twice_on_embedded_defaults(tmp_path: Path) -> None:
    """What the README's first command runs, twice: the sandbox, a temporary Prefect API, the nightly sync,
    the evaluation against the sandbox's truth. The second night reuses the first's decisions, writes
    nothing, and still prints its evaluation."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith(("PREFECT_", "PERSONA_SYNC_"))}
    environment |= {"PERSONA_SYNC_HOME": str(tmp_path / "home"), "PERSONA_SYNC_SANDBOX_PORT": str(port),
                    "HOME": str(tmp_path), "COLUMNS": "200"}
    outputs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "persona_sync", "run"], env=environment, capture_output=True,
                              text=True, timeout=280)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        outputs.append(" ".join(done.stdout.split()))
    first, second = outputs
    assert "Evaluation of run" in first and "macro F1" in first
    assert "nothing the personas depend on changed since run" in second.lower()
    assert "0 written" in second and "Evaluation of run" in second and "macro F1" in second
