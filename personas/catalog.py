"""The persona catalog: a YAML file of personas and their rules, its schema, and errors that point at lines.

A catalog says, for every persona, which behaviour features make someone that persona. Its shape:

```yaml
version: "2026.11"
personas:
  - id: case_solver                      # stable key: community_roles and the push refer to it
    label: Case Solver                   # what users, reports and the Salesforce field show
    cloud: Service                       # Sales | Service | Marketing
    description: Works and closes many customer cases by phone and email.
    reference: >-                        # the behaviour in the persona research this rule encodes
      Case Solvers give direct support and close cases; the largest service group.
    min_score: 0.5                       # below this the persona is not given (default 0.5)
    rules:
      required:                          # every one must hold, else the score is 0
        - feature: cases_closed
          at_least: 3
      exclusions:                        # if any holds, the score is 0
        - feature: setup_changes
          at_least: 10
      conditions:                        # weighted; the score is their weighted mean
        - feature: cases_closed          # a threshold on one feature
          at_least: 10
          soft: 5                        # optional ramp: 0 at 5, full credit from 10
          weight: 3
        - ratio: [case_comments, cases_closed]   # a ratio of two features
          at_most: 1.0
        - feature: login_share_api
          between: [0, 0.2]              # a range, both ends included
community_roles:                         # persona id -> community role names (used by the push)
  case_solver: [Support Community Member]
```

Each condition or test names one subject, `feature: NAME` or `ratio: [NUMERATOR, DENOMINATOR]`, and
exactly one test: `at_least: X`, `at_most: X` or `between: [A, B]`. Thresholds are in the subject's own
units (`scale: absolute`, the default), or relative to the org (`scale: org`): in multiples of the org's
typical value, the median over its active users who have any of it. `{feature: quotes, scale: org,
at_least: 2}` reads "at least twice the quotes of the org's typical quote writer": how many quotes make a
lot differs tenfold between orgs, and a number that is a property of one org belongs on that scale. Weighted conditions may add
`weight` (> 0, default 1) and `soft` (> 0, in the subject's own units): instead of a step at the
threshold the credit ramps linearly over `soft` below `at_least` (above `at_most`), so a user just short
of a threshold still earns part of it. A ratio whose denominator is 0 fails its test. Feature names are
those of `personas.features.FEATURE_NAMES` (or the names a caller passes to `load_catalog`).

`load_catalog` reports every problem it finds as file:line:column, the field path (for example
`personas[3].rules.conditions[1].feature`, indices from 0) and what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from core.errors import PersonaSyncError

Cloud = Literal["Sales", "Service", "Marketing"]
UNASSIGNED = "Unassigned"  # what a user gets when no persona reaches its minimum; no persona may be called so
Location = tuple[str | int, ...]  # a location inside the catalog document, e.g. ("personas", 3, "id")

# The key under which load_catalog passes the known feature names to pydantic's validation context.
_FEATURES_CONTEXT = "feature_names"


def default_catalog_path() -> Path:
    """The catalog persona-sync ships (`catalogs/default.yaml`, installed with the package)."""
    import catalogs

    return Path(catalogs.__file__).with_name("default.yaml")


# --- the schema ------------------------------------------------------------------------------------------

def _known_feature(name: str, info: ValidationInfo) -> str:
    """Checks a feature name against the names in the validation context (when there are any)."""
    known = (info.context or {}).get(_FEATURES_CONTEXT)
    if known is not None and name not in known:
        raise PydanticCustomError("unknown_feature", "unknown feature '{name}'; {hint}",
                                  {"name": name, "hint": _suggest(name, known, "feature")})
    return name


FeatureName = Annotated[str, AfterValidator(_known_feature)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Criterion(_Strict):
    """One test on a feature or a ratio of two features: at_least, at_most or between (ends included)."""

    feature: FeatureName | None = None
    ratio: tuple[FeatureName, FeatureName] | None = None
    at_least: float | None = None
    at_most: float | None = None
    between: tuple[float, float] | None = None
    # What the numbers are in: the subject's own units, or multiples of the org's typical value (see above).
    scale: Literal["absolute", "org"] = "absolute"

    @model_validator(mode="after")
    def _one_subject_one_test(self) -> "Criterion":
        if (self.feature is None) == (self.ratio is None):
            raise PydanticCustomError("condition_subject", "give exactly one of 'feature: NAME' or "
                                      "'ratio: [NUMERATOR, DENOMINATOR]'")
        given = [name for name in ("at_least", "at_most", "between") if getattr(self, name) is not None]
        if len(given) != 1:
            raise PydanticCustomError("condition_test", "give exactly one test of 'at_least: X', 'at_most: X' or "
                                      "'between: [A, B]' (found {found})",
                                      {"found": ", ".join(given) or "none"})
        if self.between is not None and self.between[0] > self.between[1]:
            raise PydanticCustomError("condition_range", "between [{low}, {high}]: the first bound must not "
                                      "exceed the second", {"low": self.between[0], "high": self.between[1]})
        return self

    @property
    def features(self) -> tuple[str, ...]:
        """The feature columns this test reads."""
        return (self.feature,) if self.feature is not None else tuple(self.ratio or ())

    @property
    def subject(self) -> str:
        """The subject as written: a feature name or `numerator/denominator`."""
        return self.feature if self.feature is not None else "/".join(self.ratio or ())

    @property
    def bounds(self) -> tuple[float, float]:
        """The accepted range as (low, high); an open side is -inf or +inf."""
        if self.between is not None:
            return self.between
        if self.at_least is not None:
            return (self.at_least, float("inf"))
        return (float("-inf"), self.at_most if self.at_most is not None else float("inf"))


class Condition(Criterion):
    """A weighted test: contributes weight x credit (0..1) to the persona's score."""

    weight: float = Field(1.0, gt=0)
    soft: float | None = Field(None, gt=0)
    # An optional remark for catalog readers (not shown in reasons).
    note: str | None = None


class Rules(_Strict):
    """How a persona is recognised: weighted conditions, hard requirements and exclusions."""

    conditions: list[Condition] = Field(min_length=1)
    required: list[Criterion] = Field(default_factory=list)
    exclusions: list[Criterion] = Field(default_factory=list)

    @property
    def features(self) -> tuple[str, ...]:
        """Every feature these rules read, in order of first use."""
        seen: dict[str, None] = {}
        for test in (*self.conditions, *self.required, *self.exclusions):
            seen.update(dict.fromkeys(test.features))
        return tuple(seen)


class Persona(_Strict):
    """One persona of the catalog."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Stable key: lower case, digits and _")
    label: str = Field(min_length=1)
    cloud: Cloud
    description: str = Field(min_length=1)
    reference: str = Field(min_length=1, description="The behaviour in the persona research this rule encodes")
    min_score: float = Field(0.5, ge=0, le=1)
    rules: Rules

    @field_validator("label")
    @classmethod
    def _not_reserved(cls, label: str) -> str:
        if label.strip().lower() == UNASSIGNED.lower():
            raise PydanticCustomError("reserved_label", "'{label}' is what users without a persona get; "
                                      "choose another label", {"label": label})
        return label


class Catalog(_Strict):
    """A validated catalog. Persona order matters: it breaks ties between equal scores (earlier wins)."""

    version: str = Field(min_length=1)
    description: str | None = None
    personas: list[Persona] = Field(min_length=1)
    community_roles: dict[str, list[Annotated[str, Field(min_length=1)]]] = Field(default_factory=dict)

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # `version: 2026.11` is a number to YAML; the author meant the text.
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _references_resolve(self) -> "Catalog":
        problems = list(_cross_reference_problems(self))
        if problems:
            raise PydanticCustomError("catalog_references", "{summary}",
                                      {"summary": "; ".join(message for _, message in problems),
                                       "problems": problems})
        return self

    @property
    def persona_ids(self) -> list[str]:
        return [persona.id for persona in self.personas]

    @property
    def labels(self) -> list[str]:
        return [persona.label for persona in self.personas]

    @property
    def features(self) -> tuple[str, ...]:
        """Every feature any persona's rules read."""
        seen: dict[str, None] = {}
        for persona in self.personas:
            seen.update(dict.fromkeys(persona.rules.features))
        return tuple(seen)

    def persona(self, key: str) -> Persona:
        """The persona with this id or label; KeyError naming the known ids otherwise."""
        for persona in self.personas:
            if key in (persona.id, persona.label):
                return persona
        raise KeyError(f"no persona {key!r} in catalog {self.version}; known: {', '.join(self.persona_ids)}")

    def summary(self) -> str:
        """A few lines for `persona-sync catalog check`: version and each persona with its rule counts."""
        lines = [f"catalog {self.version}: {len(self.personas)} personas, {len(self.features)} features used"]
        for persona in self.personas:
            rules = persona.rules
            roles = ", ".join(self.community_roles.get(persona.id, [])) or "no community roles"
            lines.append(f"  {persona.label} ({persona.id}, {persona.cloud}): {len(rules.conditions)} conditions, "
                         f"{len(rules.required)} required, {len(rules.exclusions)} exclusions, "
                         f"min score {persona.min_score:g}; {roles}")
        return "\n".join(lines)


def _cross_reference_problems(catalog: Catalog) -> Iterator[tuple[Location, str]]:
    """What a single field cannot see: duplicate ids and labels, community roles of unknown personas."""
    first_id: dict[str, int] = {}
    first_label: dict[str, int] = {}
    for index, persona in enumerate(catalog.personas):
        if persona.id in first_id:
            yield (("personas", index, "id"), f"duplicate persona id '{persona.id}' (first used by "
                   f"personas[{first_id[persona.id]}]); give each persona its own id")
        first_id.setdefault(persona.id, index)
        if persona.label in first_label:
            yield (("personas", index, "label"), f"duplicate persona label '{persona.label}' (first used by "
                   f"personas[{first_label[persona.label]}]); labels must tell personas apart")
        first_label.setdefault(persona.label, index)
    for key in catalog.community_roles:
        if key not in first_id:
            yield (("community_roles", key), f"community_roles names unknown persona '{key}'; "
                   f"{_suggest(key, list(first_id), 'persona id')}")


# --- loading with line numbers ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CatalogProblem:
    """One thing wrong with a catalog file: where (file, line, column, field path) and what."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class CatalogError(PersonaSyncError):
    """A catalog file that cannot be used; `problems` lists every problem found, each with file and line."""

    def __init__(self, problems: list[CatalogProblem]) -> None:
        self.problems = problems
        file = problems[0].file if problems else "catalog"
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        lines = [f"{file}: persona catalog has {count} (fix them and run `persona-sync catalog check {file}`):"]
        super().__init__("\n".join(lines + [f"  {problem}" for problem in problems]))


def load_catalog(path: str | Path, *, feature_names: Collection[str] | None = None) -> Catalog:
    """Reads and validates the catalog at `path`.

    Feature names are checked against `feature_names` (default: every feature persona-sync computes,
    `personas.features.FEATURE_NAMES`). Raises CatalogError listing every problem found, each with the
    file, line, column and field path, so an author can fix them all in one go.
    """
    path = Path(path)
    file = str(path)
    if feature_names is None:
        from personas.features import FEATURE_NAMES

        feature_names = FEATURE_NAMES
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        problem = CatalogProblem(file, None, None, "", f"cannot read the catalog: {error.strerror or error}")
        raise CatalogError([problem]) from error
    data, marks, problems = _parse_yaml(text, file)
    if problems:
        raise CatalogError(problems)
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {_yaml_kind(data)}"
        raise CatalogError([CatalogProblem(file, 1, 1, "", f"the catalog must be a mapping with 'version', "
                                           f"'personas' and 'community_roles', but the document is {kind}")])
    try:
        return Catalog.model_validate(data, context={_FEATURES_CONTEXT: frozenset(feature_names)})
    except ValidationError as error:
        raise CatalogError(_problems_from(error, file, marks)) from None


def _yaml_kind(value: object) -> str:
    return {list: "list", str: "text", int: "number", float: "number", bool: "boolean"}.get(type(value), "scalar")


class _MarkedLoader(yaml.SafeLoader):
    """PyYAML's safe loader; `_parse_yaml` walks its node tree to learn where every field sits."""


def _parse_yaml(text: str, file: str) -> tuple[Any, dict[Location, yaml.Mark], list[CatalogProblem]]:
    """The document, the position of every mapping key and sequence item, and syntax problems."""
    loader = _MarkedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, []
        marks: dict[Location, yaml.Mark] = {(): node.start_mark}
        problems: list[CatalogProblem] = []
        _record_marks(node, (), marks, problems, file)
        return loader.construct_document(node), marks, problems
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        message = f"YAML syntax error: {error.problem or error.context}"
        if error.context and error.context_mark and error.problem_mark:
            started = error.context_mark
            message += f" ({error.context} that starts at line {started.line + 1}, column {started.column + 1})"
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        return None, {}, [CatalogProblem(file, line, column, "", message)]
    finally:
        loader.dispose()


def _record_marks(node: yaml.Node, path: Location, marks: dict[Location, yaml.Mark], problems: list[CatalogProblem],
                  file: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[object] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
            child = (*path, key)
            if key in seen:
                # PyYAML would silently keep the last value; an author almost never means that.
                problems.append(CatalogProblem(file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                               _field_path(child), f"duplicate key '{key}' in the same mapping"))
            seen.add(key)
            marks[child] = key_node.start_mark
            _record_marks(value_node, child, marks, problems, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            marks[(*path, index)] = item.start_mark
            _record_marks(item, (*path, index), marks, problems, file)


def _problems_from(error: ValidationError, file: str, marks: dict[Location, yaml.Mark]) -> list[CatalogProblem]:
    problems = []
    for detail in error.errors(include_url=False):
        if detail["type"] == "catalog_references":
            for loc, message in detail["ctx"]["problems"]:
                problems.append(_problem(file, marks, loc, message))
            continue
        loc = tuple(detail["loc"])
        problems.append(_problem(file, marks, loc, _message(detail, loc)))
    return sorted(problems, key=lambda problem: (problem.line or 0, problem.column or 0, problem.field))


def _problem(file: str, marks: dict[Location, yaml.Mark], loc: Location, message: str) -> CatalogProblem:
    """A problem at `loc`, placed at the nearest position the document has for it (a missing field: its parent)."""
    for cut in range(len(loc), -1, -1):
        mark = marks.get(loc[:cut])
        if mark is not None:
            return CatalogProblem(file, mark.line + 1, mark.column + 1, _field_path(loc), message)
    return CatalogProblem(file, None, None, _field_path(loc), message)


def _field_path(loc: Location) -> str:
    """("personas", 3, "rules", "conditions", 1, "feature") -> personas[3].rules.conditions[1].feature"""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _message(detail: dict[str, Any], loc: Location) -> str:
    """pydantic's message, reworded where a catalog author needs more than it says."""
    kind = detail["type"]
    if kind == "missing":
        return f"missing required field '{loc[-1]}'"
    if kind == "extra_forbidden":
        name = str(loc[-1])
        return f"unknown field '{name}'; {_suggest(name, _ALL_FIELDS, 'field')}"
    if kind == "greater_than" and loc and loc[-1] == "weight":
        return f"weight must be greater than 0, got {detail['input']!r}; drop the condition instead of weighting it 0"
    if kind in ("greater_than_equal", "less_than_equal") and loc and loc[-1] == "min_score":
        return f"min_score must be between 0 and 1, got {detail['input']!r}"
    if kind == "too_short" and loc and loc[-1] == "conditions":
        return "a persona needs at least one weighted condition"
    if kind == "too_short" and loc and loc[-1] == "personas":
        return "the catalog needs at least one persona"
    message = detail["msg"]
    if kind in ("float_parsing", "float_type", "string_type", "list_type", "tuple_type", "dict_type",
                "model_type", "literal_error", "bool_type"):
        message += f" (got {detail['input']!r})"
    return message


def _suggest(name: str, candidates: Collection[str], what: str) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=3, cutoff=0.6)
    if close:
        return f"did you mean {' or '.join(close)}?"
    return f"no {what} is close; known: {', '.join(sorted(candidates))}" if len(candidates) <= 40 \
        else f"see the list of known {what}s"


_ALL_FIELDS = frozenset(name for model in (Criterion, Condition, Rules, Persona, Catalog)
                        for name in model.model_fields)
