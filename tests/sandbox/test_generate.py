"""The synthetic org generator: deterministic, consistent, realistic, and carrying a persona signal.

Runs on the small preset (about 200 users), generated once per module; the determinism tests generate
a few more small orgs.
"""

from __future__ import annotations

import csv
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sandbox.generate import PERSONA_LABELS, GenerationOptions, InvalidGenerationRequest, generate_org
from sandbox.schema import standard_objects
from sandbox.store import OrgStore, quote

AS_OF = datetime(2025, 6, 2, 12, 0, tzinfo=timezone.utc)
AS_OF_TEXT = "2025-06-02T12:00:00.000Z"
WINDOW_START_TEXT = (AS_OF - timedelta(days=183)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
# Objects whose every row is activity inside the history window (others also hold inherited records).
ACTIVITY_OBJECTS = ("Task", "Event", "Case", "CaseComment", "CaseHistory", "ContactHistory", "Lead", "Opportunity",
                    "Quote", "Contract", "KnowledgeArticleVersion", "Campaign", "ListEmail", "EmailTemplate",
                    "SetupAuditTrail", "FeedItem")


def _generate(directory: Path, seed: int = 7, options: GenerationOptions = GenerationOptions()):
    store = OrgStore.create(directory / "org.db", {})
    report = generate_org(store, preset="small", seed=seed, as_of=AS_OF, options=options,
                          truth_dir=directory / "truth")
    return store, report


@pytest.fixture(scope="module")
def org(tmp_path_factory):
    directory = tmp_path_factory.mktemp("small-org")
    store, report = _generate(directory)
    db = sqlite3.connect(store.path)
    yield db, report, directory / "truth"
    db.close()


@pytest.fixture(scope="module")
def truth(org) -> dict[str, str]:
    _, _, truth_dir = org
    with (truth_dir / "truth.csv").open(newline="") as handle:
        return {row["Id"]: row["persona"] for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def details(org) -> list[dict[str, str]]:
    _, _, truth_dir = org
    with (truth_dir / "truth_details.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _rows(db: sqlite3.Connection, table: str) -> list[tuple]:
    return db.execute(f"SELECT * FROM {quote(table)} ORDER BY Id").fetchall()


def _per_user(db: sqlite3.Connection, sql: str) -> dict[str, int]:
    return dict(db.execute(sql).fetchall())


def _median_by_persona(truth: dict[str, str], counts: dict[str, int], persona: str) -> float:
    values = sorted(counts.get(user, 0) for user, label in truth.items() if label == persona)
    return values[len(values) // 2]


def _total_by_persona(truth: dict[str, str], counts: dict[str, int]) -> dict[str, int]:
    totals = dict.fromkeys(PERSONA_LABELS, 0)
    for user, count in counts.items():
        if user in truth:
            totals[truth[user]] += count
    return totals


# --- determinism ----------------------------------------------------------------------------------

def test_same_seed_gives_identical_rows_and_another_seed_differs(org, tmp_path):
    db, _, truth_dir = org
    again, _ = _generate(tmp_path / "again")
    other, _ = _generate(tmp_path / "other", seed=8)
    again_db, other_db = sqlite3.connect(again.path), sqlite3.connect(other.path)
    for table in ("User", "Task", "Case", "LoginHistory", "ContactHistory", "Report"):
        assert _rows(again_db, table) == _rows(db, table), table
    assert (tmp_path / "again" / "truth" / "truth_details.csv").read_text() == \
        (truth_dir / "truth_details.csv").read_text()
    assert _rows(other_db, "Task") != _rows(db, "Task")
    assert _rows(other_db, "User") != _rows(db, "User")


def test_report_counts_match_the_database(org):
    db, report, _ = org
    for table, count in report.counts.items():
        assert db.execute(f"SELECT COUNT(*) FROM {quote(table)}").fetchone()[0] == count
    assert report.counts["Task"] > 5_000
    assert report.persona_users == 200


def test_unknown_preset_and_used_store_are_refused(tmp_path):
    store = OrgStore.create(tmp_path / "org.db", {})
    with pytest.raises(InvalidGenerationRequest, match="unknown preset"):
        generate_org(store, preset="huge", seed=1, as_of=AS_OF, truth_dir=tmp_path / "truth")
    with pytest.raises(InvalidGenerationRequest, match="hybrid_share"):
        generate_org(store, preset="small", seed=1, as_of=AS_OF, truth_dir=tmp_path / "truth",
                     options=GenerationOptions(hybrid_share=1.5))


# --- the truth ------------------------------------------------------------------------------------

def test_every_persona_is_present_at_least_five_times(truth):
    counts = {label: list(truth.values()).count(label) for label in PERSONA_LABELS}
    assert all(count >= 5 for count in counts.values()), counts
    assert counts["Case Solver"] > counts["Strategic Leader"]
    assert counts["Deal Closer"] > counts["Strategic Leader"]


def test_truth_holds_exactly_the_persona_users_sorted_by_id(org, truth, details):
    db, report, truth_dir = org
    lines = (truth_dir / "truth.csv").read_text().splitlines()
    assert lines[0] == "Id,persona"
    ids = [line.split(",")[0] for line in lines[1:]]
    assert ids == sorted(ids) and len(ids) == 200
    users = {row[0] for row in db.execute("SELECT Id FROM User")}
    integration = db.execute("SELECT value FROM _meta WHERE key = 'integration_user_id'").fetchone()[0]
    assert users - set(truth) == {integration}
    assert all(len(user) == 18 for user in truth)
    assert [row["Id"] for row in details] == ids


def test_integration_user_and_organization_are_recorded(org):
    db, report, _ = org
    settings = dict(db.execute("SELECT key, value FROM _meta").fetchall())
    username, active, profile = db.execute(
        "SELECT u.Username, u.IsActive, p.Name FROM User u JOIN Profile p ON p.Id = u.ProfileId WHERE u.Id = ?",
        (settings["integration_user_id"],)).fetchone()
    assert (username, active, profile) == ("integration@persona-sync.sandbox", 1, "System Administrator")
    for table, column in (("Task", "OwnerId"), ("LoginHistory", "UserId"), ("Case", "OwnerId")):
        used = db.execute(f"SELECT COUNT(*) FROM {quote(table)} WHERE {column} = ?",
                          (settings["integration_user_id"],)).fetchone()[0]
        assert used == 0, table
    name, sandbox = db.execute("SELECT Name, IsSandbox FROM Organization WHERE Id = ?",
                               (settings["organization_id"],)).fetchone()
    assert name and sandbox == 1
    assert (settings["preset"], settings["seed"], settings["as_of"]) == ("small", "7", AS_OF_TEXT)
    assert float(settings["hybrid_share"]) == 0.1 and float(settings["noise"]) == 1.0


def test_hybrids_inactive_and_silent_users_exist(org, details):
    db, _, _ = org
    hybrids = [row for row in details if row["secondary_persona"]]
    assert 0.07 <= len(hybrids) / len(details) <= 0.13
    assert all(0.5 <= float(row["mix"]) < 0.8 and row["secondary_persona"] != row["persona"] for row in hybrids)
    inactive = {row["Id"] for row in details if row["is_active"] == "false"}
    silent = [row for row in details if row["activity_level"] == "silent"]
    assert len(inactive) >= 5 and len(silent) >= 5
    stored_inactive = {row[0] for row in db.execute("SELECT Id FROM User WHERE IsActive = 0")}
    assert stored_inactive == inactive


def test_twice_the_hybrids_when_asked(tmp_path):
    _, report = _generate(tmp_path, options=GenerationOptions(hybrid_share=0.2, noise=2.0))
    with (report.truth_path.parent / "truth_details.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sum(1 for row in rows if row["secondary_persona"]) == 40


# --- consistency ----------------------------------------------------------------------------------

def test_every_reference_points_at_an_existing_record(org):
    db, _, _ = org
    objects = standard_objects()
    for sobject in objects.values():
        for field in sobject.fields:
            if field.type != "reference" or not field.reference_to:
                continue
            targets = " UNION ALL ".join(f"SELECT Id FROM {quote(target)}" for target in field.reference_to)
            dangling = db.execute(
                f"SELECT COUNT(*) FROM {quote(sobject.name)} WHERE {quote(field.name)} IS NOT NULL "
                f"AND {quote(field.name)} NOT IN ({targets})").fetchone()[0]
            assert dangling == 0, f"{sobject.name}.{field.name}"
    owner_changes = db.execute(
        "SELECT COUNT(*) FROM CaseHistory WHERE Field = 'Owner' AND (OldValue NOT IN (SELECT Id FROM User) "
        "OR NewValue NOT IN (SELECT Id FROM User))").fetchone()[0]
    assert owner_changes == 0


def test_values_fit_their_fields_and_ids_are_unique(org):
    db, _, _ = org
    for sobject in standard_objects().values():
        table = quote(sobject.name)
        total, distinct = db.execute(f"SELECT COUNT(*), COUNT(DISTINCT Id) FROM {table}").fetchone()
        assert total == distinct, sobject.name
        for field in sobject.fields:
            column = quote(field.name)
            if not field.nillable and field.name != "Id":
                missing = db.execute(f"SELECT COUNT(*) FROM {table} WHERE {column} IS NULL").fetchone()[0]
                assert missing == 0, f"{sobject.name}.{field.name}"
            if field.type in ("string", "textarea", "email", "phone", "url", "picklist"):
                longest = db.execute(f"SELECT MAX(LENGTH({column})) FROM {table}").fetchone()[0] or 0
                assert longest <= field.length, f"{sobject.name}.{field.name}"
            if field.picklist_values:
                values = {row[0] for row in db.execute(f"SELECT DISTINCT {column} FROM {table}")} - {None}
                assert values <= set(field.picklist_values), f"{sobject.name}.{field.name}: {values}"
        if sobject.field("IsDeleted"):
            assert db.execute(f"SELECT COUNT(*) FROM {table} WHERE IsDeleted != 0").fetchone()[0] == 0


def test_all_times_are_before_as_of_and_activity_is_inside_the_window(org):
    db, _, _ = org
    for sobject in standard_objects().values():
        for field in sobject.fields:
            if field.type != "datetime":
                continue
            column = quote(field.name)
            low, high = db.execute(f"SELECT MIN({column}), MAX({column}) FROM {quote(sobject.name)}").fetchone()
            if high is not None:
                assert high < AS_OF_TEXT, f"{sobject.name}.{field.name}"
                assert len(high) == 24 and high.endswith("Z")
    for table in ACTIVITY_OBJECTS:
        low = db.execute(f"SELECT MIN(CreatedDate) FROM {quote(table)}").fetchone()[0]
        assert low >= WINDOW_START_TEXT, table
    assert db.execute("SELECT MIN(LoginTime) FROM LoginHistory").fetchone()[0] >= WINDOW_START_TEXT


def test_modification_stamps_never_precede_creation(org):
    db, _, _ = org
    for sobject in standard_objects().values():
        fields = {f.name for f in sobject.fields}
        table = quote(sobject.name)
        for later, earlier in (("SystemModstamp", "LastModifiedDate"), ("LastModifiedDate", "CreatedDate")):
            if {later, earlier} <= fields:
                wrong = db.execute(f"SELECT COUNT(*) FROM {table} WHERE {later} < {earlier}").fetchone()[0]
                assert wrong == 0, f"{sobject.name}: {later} < {earlier}"


def test_inactive_users_stop_acting_at_deactivation(org, details):
    db, _, _ = org
    for row in details:
        if row["is_active"] == "false":
            deactivated = db.execute("SELECT LastModifiedDate FROM User WHERE Id = ?", (row["Id"],)).fetchone()[0]
            last_task = db.execute("SELECT MAX(CreatedDate) FROM Task WHERE OwnerId = ?", (row["Id"],)).fetchone()[0]
            last_login = db.execute("SELECT MAX(LoginTime) FROM LoginHistory WHERE UserId = ?",
                                    (row["Id"],)).fetchone()[0]
            assert last_task is None or last_task <= deactivated
            assert last_login is None or last_login <= deactivated


def test_work_happens_mostly_on_weekdays(org):
    db, _, _ = org
    weekend = db.execute("SELECT AVG(strftime('%w', CreatedDate) IN ('0', '6')) FROM Task").fetchone()[0]
    assert weekend < 0.12


def test_managers_lead_teams_without_cycles(org, truth):
    db, _, _ = org
    managers = dict(db.execute("SELECT Id, ManagerId FROM User WHERE ManagerId IS NOT NULL").fetchall())
    for user in managers:
        seen, current = set(), user
        while current in managers:
            assert current not in seen, "management cycle"
            seen.add(current)
            current = managers[current]
    reports_of = {}
    for user, manager in managers.items():
        reports_of.setdefault(manager, []).append(user)
    sales_leaders = [user for user, label in truth.items() if label == "Sales Leader"]
    team = [truth[r] for leader in sales_leaders for r in reports_of.get(leader, [])]
    assert team.count("Deal Closer") + team.count("Pipeline Builder") + team.count("Trusted Advisor") > len(team) / 2


def test_titles_are_only_a_weak_hint(org, truth):
    db, _, _ = org
    titles = dict(db.execute("SELECT Id, Title FROM User").fetchall())
    solver_titles = {"Support Agent", "Customer Service Rep", "Support Specialist", "Customer Care Associate"}
    solvers = [user for user, label in truth.items() if label == "Case Solver"]
    matching = sum(titles[user] in solver_titles for user in solvers) / len(solvers)
    assert 0.2 < matching < 0.75


# --- persona signal -------------------------------------------------------------------------------

def test_case_solvers_close_far_more_cases_than_deal_closers(org, truth):
    db, _, _ = org
    closed = _per_user(db, "SELECT OwnerId, COUNT(*) FROM \"Case\" WHERE IsClosed = 1 GROUP BY OwnerId")
    assert _median_by_persona(truth, closed, "Case Solver") > 10 * max(1, _median_by_persona(truth, closed,
                                                                                             "Deal Closer"))


def test_pipeline_builders_create_the_most_leads(org, truth):
    db, _, _ = org
    leads = _per_user(db, "SELECT CreatedById, COUNT(*) FROM Lead GROUP BY CreatedById")
    medians = {label: _median_by_persona(truth, leads, label) for label in PERSONA_LABELS}
    assert max(medians, key=medians.get) == "Pipeline Builder"
    assert medians["Pipeline Builder"] > 2 * sorted(medians.values())[-2]


def test_service_admins_make_the_most_setup_changes(org, truth):
    db, _, _ = org
    changes = _per_user(db, "SELECT CreatedById, COUNT(*) FROM SetupAuditTrail GROUP BY CreatedById")
    medians = {label: _median_by_persona(truth, changes, label) for label in PERSONA_LABELS}
    assert max(medians, key=medians.get) == "Service Admin"


def test_it_services_log_in_through_the_api_most(org, truth):
    db, _, _ = org
    api = _total_by_persona(truth, _per_user(db, "SELECT UserId, COUNT(*) FROM LoginHistory "
                                                 "WHERE ApiType IS NOT NULL GROUP BY UserId"))
    every = _total_by_persona(truth, _per_user(db, "SELECT UserId, COUNT(*) FROM LoginHistory GROUP BY UserId"))
    share = {label: api[label] / every[label] for label in PERSONA_LABELS}
    assert max(share, key=share.get) == "IT Services"
    assert share["IT Services"] > 0.5 and share["Case Solver"] < 0.1


def test_designers_build_the_most_email_templates(org, truth):
    db, _, _ = org
    templates = _per_user(db, "SELECT CreatedById, COUNT(*) FROM EmailTemplate GROUP BY CreatedById")
    medians = {label: _median_by_persona(truth, templates, label) for label in PERSONA_LABELS}
    assert max(medians, key=medians.get) == "Designer / Developer"


def test_team_leaders_reassign_cases_and_expert_agents_write_articles(org, truth):
    db, _, _ = org
    moves = _per_user(db, "SELECT CreatedById, COUNT(*) FROM CaseHistory WHERE Field = 'Owner' GROUP BY CreatedById")
    articles = _per_user(db, "SELECT CreatedById, COUNT(*) FROM KnowledgeArticleVersion GROUP BY CreatedById")
    move_medians = {label: _median_by_persona(truth, moves, label) for label in PERSONA_LABELS}
    article_medians = {label: _median_by_persona(truth, articles, label) for label in PERSONA_LABELS}
    assert max(move_medians, key=move_medians.get) == "Team Leader"
    assert max(article_medians, key=article_medians.get) == "Expert Agent"


def test_trusted_advisors_lead_on_upsell_deals(org, truth):
    db, _, _ = org
    upsell = _total_by_persona(truth, _per_user(
        db, "SELECT OwnerId, COUNT(*) FROM Opportunity WHERE Type IN ('Existing Customer - Upgrade', "
            "'Existing Customer - Replacement') GROUP BY OwnerId"))
    every = _total_by_persona(truth, _per_user(db, "SELECT OwnerId, COUNT(*) FROM Opportunity GROUP BY OwnerId"))
    share = {label: upsell[label] / every[label] for label in ("Deal Closer", "Pipeline Builder", "Trusted Advisor")}
    assert max(share, key=share.get) == "Trusted Advisor"


def test_silent_users_do_far_less(org, details):
    db, _, _ = org
    tasks = _per_user(db, "SELECT OwnerId, COUNT(*) FROM Task GROUP BY OwnerId")
    logins = _per_user(db, "SELECT UserId, COUNT(*) FROM LoginHistory GROUP BY UserId")
    def mean(rows):
        return sum(tasks.get(r["Id"], 0) + logins.get(r["Id"], 0) for r in rows) / len(rows)
    active = [row for row in details if row["is_active"] == "true"]
    silent = [row for row in active if row["activity_level"] == "silent"]
    normal = [row for row in active if row["activity_level"] == "normal"]
    assert mean(silent) < 0.3 * mean(normal)
