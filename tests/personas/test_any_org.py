"""An org that lacks what our streams declare: a partial export of the sandbox org, pulled and read.

What it lacks (the default world's partial export): whole objects (Knowledge, ListEmail, Quote, Contract,
CaseHistory, FeedItem) and fields (EmailTemplate.OwnerId, Task.CallType, ...). The pull must go on and
say so, rows must be attributed by the user field that is there, and the features fed by what is missing
must be unavailable, never zero. Truth comes from the org's own database, not from our code.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from personas.catalog import default_catalog_path, load_catalog
from personas.features import FEATURE_NAMES, Window, compute_features, unavailable_features
from personas.rules import assign, explain, score_personas
from connectors.staging import Staging
from sandbox.generate.worlds import World
from sandbox.runner import RunningSandbox, SandboxConfig, start_sandbox
from tasks.pull import PullReport
from tests.conftest import AS_OF, pull_org, sandbox_settings

PARTIAL = World.default().exported("partial")
WINDOW = Window(AS_OF, days=90)


@pytest.fixture(scope="module")
def partial_org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningSandbox, PullReport, pd.DataFrame]]:
    directory = tmp_path_factory.mktemp("partial")
    sandbox = start_sandbox(SandboxConfig(data_dir=directory / "sandbox", preset="small", seed=7, as_of=AS_OF,
                                          port=0, world=PARTIAL))
    try:
        settings = sandbox_settings(sandbox, pull_history_days=3650)  # everything the org has
        report = pull_org(settings)
        features = compute_features(Staging.from_config(settings.staging()), WINDOW)
        yield sandbox, report, features
    finally:
        sandbox.stop()


def _org(sandbox: RunningSandbox, sql: str, *parameters: object) -> list[tuple]:
    with sqlite3.connect(sandbox.org_path) as db:
        return db.execute(sql, parameters).fetchall()


def test_the_pull_goes_on_without_what_the_org_lacks_and_says_so(partial_org) -> None:
    _, report, _ = partial_org
    by_object = {result.sobject: result for result in report.streams}
    gaps = "\n".join(report.gaps())
    for sobject in PARTIAL.absent_objects:
        assert by_object[sobject].absent and by_object[sobject].rows == 0
        assert f"{sobject}: not in this org" in gaps
    assert "CallType" in by_object["Task"].absent_fields and "Task: no CallType" in gaps
    assert by_object["Task"].rows > 0 and not by_object["Task"].absent


def test_rows_without_their_owner_are_attributed_by_their_creator(partial_org) -> None:
    sandbox, report, features = partial_org
    templates = next(result for result in report.streams if result.sobject == "EmailTemplate")
    assert "OwnerId" in templates.absent_fields
    [(rows,)] = _org(sandbox, "SELECT COUNT(*) FROM EmailTemplate")
    assert rows > 0 and templates.fallbacks == {"CreatedById": rows} and templates.quarantined == 0
    # The feature counts each template for whoever created it, as the org's own rows say.
    truth = dict(_org(sandbox, "SELECT CreatedById, COUNT(*) FROM EmailTemplate WHERE CreatedDate >= ? AND "
                               "CreatedDate < ? GROUP BY CreatedById",
                      WINDOW.start.strftime("%Y-%m-%dT%H:%M:%S"), WINDOW.as_of.strftime("%Y-%m-%dT%H:%M:%S")))
    assert truth and "email_templates" not in unavailable_features(features)
    counted = features["email_templates"] * WINDOW.days / 30
    assert {user: round(count) for user, count in counted[counted > 0].items()} == truth


def test_features_fed_by_what_is_missing_are_unavailable_not_zero(partial_org) -> None:
    _, _, features = partial_org
    unavailable = unavailable_features(features)
    for name, source in [("articles_written", "KnowledgeArticleVersion"), ("list_emails", "ListEmail"),
                         ("quotes", "Quote"), ("case_reassignments", "CaseHistory"), ("inbound_calls", "Task.CallType")]:
        assert source in unavailable[name], name
        assert features[name].isna().all() and features[f"{name}_share" if name != "inbound_calls"
                                                         else "inbound_call_share"].isna().all()
    assert features["calls"].notna().all() and features["calls"].sum() > 0
    assert features["activity_total"].notna().all()


def test_the_default_catalog_scores_without_them_and_explain_names_them(partial_org) -> None:
    _, _, features = partial_org
    catalog = load_catalog(default_catalog_path())
    scores = score_personas(features, catalog)
    assert (scores.max(axis=1) > 0).mean() > 0.9
    # Someone who did nothing stays Unassigned, though conditions were dropped for what the org lacks.
    idle = features.iloc[[0]].copy()
    idle[[name for name in features.columns if name in FEATURE_NAMES]] = \
        features.iloc[[0]][[name for name in features.columns if name in FEATURE_NAMES]].notna().replace(
            {True: 0.0, False: np.nan}).to_numpy()
    assert assign(idle, catalog, org=features)["persona"].iloc[0] == "Unassigned"
    busiest = features["activity_total"].idxmax()
    text = explain(busiest, features, catalog)
    assert "Not measured on this org" in text
    assert "articles_written_share: articles_written is unavailable: nothing of KnowledgeArticleVersion is staged" \
        in text
