"""The catalog schema: the default catalog is complete, and every kind of mistake is reported at its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import PersonaSyncError
from personas.catalog import Catalog, CatalogError, CatalogProblem, default_catalog_path, load_catalog
from personas.features import FEATURE_NAMES

# A small valid catalog; tests break one line of it. Line numbers below refer to this text.
VALID = """\
version: "1"
personas:
  - id: case_solver
    label: Case Solver
    cloud: Service
    description: Closes many cases.
    reference: Case Solvers support customers directly and close cases.
    min_score: 0.5
    rules:
      conditions:
        - feature: cases_closed
          at_least: 10
          weight: 3
        - ratio: [case_comments, cases_closed]
          at_most: 1
  - id: expert_agent
    label: Expert Agent
    cloud: Service
    description: Takes escalations, writes articles.
    reference: Expert Agents handle escalations and write knowledge articles.
    rules:
      conditions:
        - feature: articles_written
          at_least: 1
community_roles:
  case_solver: [Service Community]
"""


def _write(tmp_path: Path, text: str, name: str = "catalog.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _problems(tmp_path: Path, text: str) -> list[CatalogProblem]:
    path = _write(tmp_path, text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert all(problem.file == str(path) for problem in caught.value.problems)
    return caught.value.problems


def _only(tmp_path: Path, text: str) -> CatalogProblem:
    problems = _problems(tmp_path, text)
    assert len(problems) == 1, problems
    return problems[0]


# --- the default catalog ----------------------------------------------------------------------------

def test_default_catalog_loads_with_the_14_personas() -> None:
    catalog = load_catalog(default_catalog_path())
    assert catalog.labels == [
        "Sales Leader", "Deal Closer", "Data Expert", "Pipeline Builder", "Trusted Advisor",
        "Case Solver", "Expert Agent", "Team Leader", "Service Admin",
        "Marketing Manager", "Strategic Leader", "Marketing Specialist", "Designer / Developer", "IT Services"]
    clouds = [persona.cloud for persona in catalog.personas]
    assert (clouds.count("Sales"), clouds.count("Service"), clouds.count("Marketing")) == (5, 4, 5)


def test_every_default_rule_cites_the_behaviour_it_encodes() -> None:
    for persona in load_catalog(default_catalog_path()).personas:
        assert len(persona.reference.split()) >= 20, f"{persona.id}: the reference note is too thin"
        assert persona.description


def test_default_catalog_decides_on_behaviour_only() -> None:
    catalog = load_catalog(default_catalog_path())
    assert set(catalog.features) <= set(FEATURE_NAMES)  # no Title, Profile, Department or UserRole
    assert set(catalog.community_roles) == set(catalog.persona_ids)


def test_default_catalog_ships_inside_the_package() -> None:
    path = default_catalog_path()
    assert path.name == "default.yaml" and path.parent.name == "catalogs" and path.exists()


def test_a_valid_catalog_loads(tmp_path: Path) -> None:
    catalog = load_catalog(_write(tmp_path, VALID))
    assert catalog.persona_ids == ["case_solver", "expert_agent"]
    assert catalog.persona("Expert Agent").min_score == 0.5  # the default
    assert catalog.features == ("cases_closed", "case_comments", "articles_written")
    assert "2 personas" in catalog.summary()


# --- every kind of mistake, with file, line and field -------------------------------------------------

def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    problem = _only(tmp_path, VALID.replace("label: Case Solver", "label: [Case Solver"))
    assert (problem.line, problem.column) == (5, 10)  # where the parser noticed...
    assert problem.message.startswith("YAML syntax error: expected ',' or ']'")
    assert "flow sequence that starts at line 4, column 12" in problem.message  # ...and where it began


def test_a_document_that_is_not_a_mapping(tmp_path: Path) -> None:
    problem = _only(tmp_path, "- just\n- a list\n")
    assert problem.line == 1 and "must be a mapping" in problem.message and "a list" in problem.message


def test_an_empty_file(tmp_path: Path) -> None:
    assert "empty" in _only(tmp_path, "# nothing here\n").message


def test_missing_required_field_points_at_its_mapping(tmp_path: Path) -> None:
    problem = _only(tmp_path, VALID.replace("    label: Expert Agent\n", ""))
    assert problem.field == "personas[1].label"
    assert problem.line == 16  # the `- id: expert_agent` line that should hold it
    assert "missing required field 'label'" in problem.message


def test_wrong_type(tmp_path: Path) -> None:
    problem = _only(tmp_path, VALID.replace("at_least: 10", "at_least: many"))
    assert (problem.line, problem.field) == (12, "personas[0].rules.conditions[0].at_least")
    assert "'many'" in problem.message


def test_wrong_cloud(tmp_path: Path) -> None:
    problem = _only(tmp_path, VALID.replace("cloud: Service\n    description: Closes",
                                            "cloud: Servce\n    description: Closes"))
    assert (problem.line, problem.field) == (5, "personas[0].cloud")
    assert "'Sales', 'Service' or 'Marketing'" in problem.message


def test_unknown_field_suggests_the_right_one(tmp_path: Path) -> None:
    problem = _only(tmp_path, VALID.replace("weight: 3", "wieght: 3"))
    assert (problem.line, problem.field) == (13, "personas[0].rules.conditions[0].wieght")
    assert "unknown field 'wieght'" in problem.message and "weight" in problem.message


def test_unknown_feature_suggests_the_nearest_names(tmp_path: Path) -> None:
    problem = _only(tmp_path, VALID.replace("feature: cases_closed", "feature: case_closed"))
    assert (problem.line, problem.column, problem.field) == (11, 11, "personas[0].rules.conditions[0].feature")
    assert "unknown feature 'case_closed'" in problem.message and "did you mean cases_closed" in problem.message


def test_ratio_with_an_unknown_feature(tmp_path: Path) -> None:
    problem = _only(tmp_path, VALID.replace("ratio: [case_comments, cases_closed]",
                                            "ratio: [case_coments, cases_closed]"))
    assert (problem.line, problem.field) == (14, "personas[0].rules.conditions[1].ratio[0]")
    assert "case_comments" in problem.message


def test_duplicate_persona_id(tmp_path: Path) -> None:
    problem = _only(tmp_path, VALID.replace("id: expert_agent", "id: case_solver"))
    assert (problem.line, problem.field) == (16, "personas[1].id")
    assert "duplicate persona id 'case_solver'" in problem.message and "personas[0]" in problem.message


@pytest.mark.parametrize("weight", ["0", "-1"])
def test_weight_must_be_positive(tmp_path: Path, weight: str) -> None:
    problem = _only(tmp_path, VALID.replace("weight: 3", f"weight: {weight}"))
    assert (problem.line, problem.field) == (13, "personas[0].rules.conditions[0].weight")
    assert "greater than 0" in problem.message


@pytest.mark.parametrize("min_score", ["1.5", "-0.1"])
def test_min_score_must_be_between_0_and_1(tmp_path: Path, min_score: str) -> None:
    problem = _only(tmp_path, VALID.replace("min_score: 0.5", f"min_score: {min_score}"))
    assert (problem.line, problem.field) == (8, "personas[0].min_score")
    assert "between 0 and 1" in problem.message


def test_empty_rules(tmp_path: Path) -> None:
    text = VALID.replace("        - feature: articles_written\n          at_least: 1\n", "").replace(
        "      conditions:\ncommunity_roles", "      conditions: []\ncommunity_roles")
    problem = _only(tmp_path, text)
    assert (problem.line, problem.field) == (22, "personas[1].rules.conditions")
    assert "at least one weighted condition" in problem.message


def test_community_roles_naming_an_unknown_persona(tmp_path: Path) -> None:
    problem = _only(tmp_path, VALID.replace("  case_solver: [Service Community]", "  case_slver: [Service Community]"))
    assert (problem.line, problem.field) == (26, "community_roles.case_slver")
    assert "unknown persona 'case_slver'" in problem.message and "case_solver" in problem.message


def test_unassigned_is_not_a_persona_label(tmp_path: Path) -> None:
    problem = _only(tmp_path, VALID.replace("label: Expert Agent", "label: Unassigned"))
    assert (problem.line, problem.field) == (17, "personas[1].label") and "choose another label" in problem.message


def test_a_condition_needs_one_subject_and_one_test(tmp_path: Path) -> None:
    problem = _only(tmp_path, VALID.replace("          at_least: 10\n",
                                            "          at_least: 10\n          at_most: 20\n"))
    assert problem.field == "personas[0].rules.conditions[0]" and problem.line == 11
    assert "exactly one test" in problem.message


def test_duplicate_yaml_keys_are_not_silently_overwritten(tmp_path: Path) -> None:
    problem = _only(tmp_path, VALID.replace("    min_score: 0.5\n", "    min_score: 0.5\n    min_score: 0.7\n"))
    assert (problem.line, problem.field) == (9, "personas[0].min_score") and "duplicate key" in problem.message


def test_every_problem_is_reported_at_once_one_per_line(tmp_path: Path) -> None:
    text = VALID.replace("weight: 3", "weight: 0").replace("feature: articles_written", "feature: articles")
    path = _write(tmp_path, text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    error = caught.value
    assert isinstance(error, PersonaSyncError)
    assert [problem.line for problem in error.problems] == [13, 23]
    lines = str(error).splitlines()
    assert lines[0].startswith(f"{path}: persona catalog has 2 problems")
    assert lines[1].strip().startswith(f"{path}:13:") and "weight" in lines[1]
    assert lines[2].strip().startswith(f"{path}:23:") and "articles" in lines[2]


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read the catalog"):
        load_catalog(tmp_path / "nope.yaml")


def test_a_team_can_validate_against_its_own_feature_names(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID.replace("feature: articles_written", "feature: kudos_given"))
    catalog = load_catalog(path, feature_names={"cases_closed", "case_comments", "kudos_given"})
    assert catalog.features[-1] == "kudos_given"


def test_catalogs_built_in_code_skip_the_feature_check() -> None:
    catalog = Catalog.model_validate({"version": "1", "personas": [{
        "id": "p", "label": "P", "cloud": "Sales", "description": "d", "reference": "r",
        "rules": {"conditions": [{"feature": "anything", "between": [1, 2]}]}}]})
    assert catalog.features == ("anything",)


def test_a_run_reads_the_catalog_file_again_once_it_changes(tmp_path: Path) -> None:
    """`catalog_for` parses a catalog once per content of its file: the same file gives the same catalog, an
    edited one the edit, and a broken one its error (then the fix)."""
    import os

    from core.configs import PersonasConfig
    from tasks.personas import catalog_for

    file = tmp_path / "catalog.yaml"
    file.write_text(VALID)
    config = PersonasConfig(catalog_file=file, features_dir=tmp_path)
    first = catalog_for(config)
    assert first.version == "1" and catalog_for(config) is first

    # An edit of the same size that keeps the modification time (as `cp -p` would) is still an edit.
    kept = file.stat()
    file.write_text(VALID.replace('version: "1"', 'version: "2"'))
    os.utime(file, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    assert file.stat().st_size == kept.st_size and file.stat().st_mtime_ns == kept.st_mtime_ns
    assert catalog_for(config).version == "2"
    file.write_text(VALID.replace("at_least: 10", "at_least: ten"))
    with pytest.raises(CatalogError, match="at_least: Input should be a valid number"):
        catalog_for(config)
    file.write_text(VALID.replace('version: "1"', 'version: "3"'))
    assert catalog_for(config).version == "3"
