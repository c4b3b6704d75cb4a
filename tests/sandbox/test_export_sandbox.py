"""A sandbox seeded from a Data Loader export, served to the real client."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.salesforce import connect
from persona_sync.cli import app
from sandbox.ids import make_id
from sandbox.runner import SandboxConfig, start_sandbox
from tests.conftest import sandbox_settings

USERS = [make_id("005", 900 + n) for n in range(2)]


def _write_export(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "User.csv").write_text(
        "Id,Username,FirstName,LastName,Email,IsActive,Badge__c\n"
        f"{USERS[0]},ada@acme.test,Ada,Lovelace,ada@acme.test,true,gold\n"
        f"{USERS[1]},alan@acme.test,Alan,Turing,alan@acme.test,false,silver\n")
    (directory / "Task.csv").write_text(
        "Id,OwnerId,Subject,Status,TaskSubtype,CreatedDate,Minutes__c\n"
        f"{make_id('00T', 1)},{USERS[0]},Call Acme,Completed,Call,2026-10-01T09:00:00.000Z,12\n"
        f"{make_id('00T', 2)},{USERS[1]},Email Initech,Completed,Email,2026-10-02T09:00:00.000Z,3\n")
    return directory


def test_an_exported_org_is_served_with_its_extra_fields(tmp_path: Path) -> None:
    export = _write_export(tmp_path / "export")
    sandbox = start_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox", from_export=export, port=0))
    try:
        sf = connect(sandbox_settings(sandbox).salesforce())
        tasks = sf.query("SELECT Subject, Owner.Name, Minutes__c FROM Task ORDER BY Subject")["records"]
        assert [(task["Subject"], task["Owner"]["Name"], task["Minutes__c"]) for task in tasks] == [
            ("Call Acme", "Ada Lovelace", 12), ("Email Initech", "Alan Turing", 3)]
        fields = {field["name"]: field for field in sf.Task.describe()["fields"]}
        assert fields["Minutes__c"]["type"] == "int" and fields["Minutes__c"]["custom"] is True
        assert sf.query("SELECT COUNT() FROM User WHERE Username = 'integration@persona-sync.sandbox'")["totalSize"] == 1
    finally:
        sandbox.stop()


def test_a_malformed_export_is_a_clear_error_and_leaves_no_org(tmp_path: Path) -> None:
    export = _write_export(tmp_path / "export")
    (export / "Task.csv").write_text((export / "Task.csv").read_text() + f"{make_id('00T', 3)},{USERS[0]},Late\n")
    result = CliRunner().invoke(app, ["sandbox", "start", "--data-dir", str(tmp_path / "sandbox"), "--port", "0",
                                      "--from-export", str(export)])
    assert result.exit_code == 2
    assert "Task.csv, line 4" in result.output
    assert not (tmp_path / "sandbox" / "org.db").exists()
