"""The layers contract (pyproject.toml, [tool.importlinter]): it holds, and it catches a wrong import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("persona_sync", "flows", "tasks", "personas", "connectors", "core", "sandbox")


def _lint(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=where, capture_output=True, text=True, timeout=120)


def test_the_layers_contract_holds() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("KEPT") == 5  # every contract in pyproject.toml was checked


def test_a_connector_that_imports_the_sandbox_breaks_the_contract(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "connectors" / "salesforce" / "shortcut.py").write_text("from sandbox.runner import start_sandbox\n")
    (tmp_path / "personas" / "reaching_down.py").write_text("from tasks.pull import run_pull\n")
    (tmp_path / "tasks" / "own_query.py").write_text("import simple_salesforce\n")

    result = _lint(tmp_path)

    assert result.returncode != 0
    assert "connectors.salesforce.shortcut -> sandbox.runner" in result.stdout
    assert "personas.reaching_down -> tasks.pull" in result.stdout
    assert "tasks.own_query -> simple_salesforce" in result.stdout
