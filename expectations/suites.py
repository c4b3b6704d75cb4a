"""The expectation suites of each stage, as code: what every run checks before it may write.

Each function returns the `Expect`s of one suite, built from plain values (the object's key prefix,
the pulled window, the catalog's labels, ...) so this package knows neither Salesforce nor the catalog
format; tasks/validation.py gathers those values and the frames to validate.

- `staged_rows`: one staged object, row by row (validated in chunks of Id buckets): Ids present, unique
  and well-formed (15 or 18 characters starting with the object's key prefix), the user the row
  counts for present, cursor and creation times inside the pulled window, booleans boolean.
- `staged_objects`: one row per object: rows not collapsed against the last good run, and the share of
  rows quarantined below the limit, with the reasons in the message.
- `catalog_fields`: one row per staged field a catalog condition depends on: the share of rows where it
  is filled (empty for the whole org is reported by name; a warning, the personas issue decides what
  scoring does with it).
- `features` and `feature_checks`: one row per active user; then, over one row per feature
  (`feature_columns`), no missing values (NaN only for a feature the org cannot measure), no negatives,
  rates within sane bounds, and (warnings) features the catalog uses that the org does not measure, or
  that are zero for everyone.
- `assignments`: persona in the catalog or Unassigned, score and confidence in [0, 1], a reason of at
  most 255 characters, exactly one row per active user.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import numpy as np
import pandas as pd

from expectations.runner import Expect, Outcome

# The earliest cursor of reference data (whole history): Salesforce opened in 1999, and its system
# timestamps cannot be set by anyone; an earlier one is a value that did not parse right (an epoch zero).
EARLIEST_SALESFORCE_DATE = datetime.fromisoformat("1999-01-01T00:00:00+00:00")
# Sane upper bounds of a feature per unit: a rate per 30 days above a million (one every 2.6 s, day and
# night) is a counting error, not a busy user.
MAX_RATE_PER_30_DAYS = 1_000_000.0
REASON_MAX_CHARS = 255


def _gxe():
    import great_expectations.expectations as gxe

    return gxe


def staged_rows(sobject: str, key_prefix: str, *, user_field: str | None, cursor: str,
                cursor_from: datetime | None, cursor_to: datetime | None, created_field: str | None,
                booleans: Sequence[str], user_label: str | None = None) -> list[Expect]:
    """Row-level checks of one staged object (frames with its Id, user, cursor, creation and boolean
    columns). `user_field`: the column holding each row's user, which `user_label` describes (default:
    the column's name). `cursor_from`/`cursor_to`: the pulled window (None: not known, not checked)."""
    gxe = _gxe()
    expects = [
        Expect(gxe.ExpectColumnValuesToNotBeNull(column="Id"), f"{sobject}.Id present", "0 rows"),
        Expect(gxe.ExpectColumnValuesToBeUnique(column="Id"), f"{sobject}.Id unique", "0 rows"),
        Expect(gxe.ExpectColumnValuesToMatchRegex(column="Id",
                                                  regex=f"^{key_prefix}[0-9A-Za-z]{{12}}(?:[0-9A-Za-z]{{3}})?$"),
               f"{sobject}.Id well-formed", f"15 or 18 letters and digits starting {key_prefix}"),
    ]
    if user_field is not None:
        expects.append(Expect(gxe.ExpectColumnValuesToNotBeNull(column=user_field),
                              f"{sobject}.{user_label or user_field} present",
                              "0 rows (such rows are quarantined, not staged)"))
    if cursor_to is not None:
        low = pd.Timestamp(cursor_from or EARLIEST_SALESFORCE_DATE)
        expects.append(Expect(gxe.ExpectColumnValuesToBeBetween(column=cursor, min_value=low,
                                                                max_value=pd.Timestamp(cursor_to)),
                              f"{sobject}.{cursor} inside the pulled window",
                              f"{low.isoformat()} .. {pd.Timestamp(cursor_to).isoformat()}"))
        if created_field is not None and created_field != cursor:
            # No lower bound: records migrated into an org may carry any creation date.
            expects.append(Expect(gxe.ExpectColumnValuesToBeBetween(column=created_field,
                                                                    max_value=pd.Timestamp(cursor_to)),
                                  f"{sobject}.{created_field} not after the pull",
                                  f"at most {pd.Timestamp(cursor_to).isoformat()}"))
    for name in booleans:
        expects.append(Expect(gxe.ExpectColumnValuesToNotBeNull(column=name), f"{sobject}.{name} set", "0 rows"))
        expects.append(Expect(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=[True, False]),
                              f"{sobject}.{name} boolean", "true or false"))
    return expects


def staged_objects(summary: pd.DataFrame, *, max_row_drop: float, max_quarantined_share: float) -> list[Expect]:
    """Object-level checks over `summary` (one row per object, with columns sobject, rows, baseline_rows,
    row_drop and quarantined_share (NaN when not judged), quarantined, reasons and sample_ids)."""
    gxe = _gxe()
    by_object = summary.set_index("sobject")

    def collapsed(outcome: Outcome) -> str:
        return "; ".join(f"{name}: {int(by_object.at[name, 'rows']):,} rows staged, "
                         f"{int(by_object.at[name, 'baseline_rows']):,} at the last good run "
                         f"(-{by_object.at[name, 'row_drop']:.0%})" for name in outcome.samples) + (
            f". Losing more than {max_row_drop:.0%} is a broken pull, not a quiet org: check that the integration "
            "user still sees every record (sharing, View All Data), then run with --full-refresh. If the org "
            "really lost them, run once with PERSONA_SYNC_VALIDATE_MAX_ROW_DROP=1 (recorded with the run)")

    def quarantined(outcome: Outcome) -> str:
        return "; ".join(f"{name}: {int(by_object.at[name, 'quarantined']):,} of "
                         f"{int(by_object.at[name, 'quarantined'] + by_object.at[name, 'rows']):,} rows "
                         f"{_quarantine_words(by_object.at[name, 'reasons'])}"
                         + (f", e.g. {by_object.at[name, 'sample_ids']}" if by_object.at[name, 'sample_ids'] else "")
                         for name in outcome.samples) + (
            f". More than {max_quarantined_share:.0%} of an object's rows quarantined means the pull cannot "
            "read it right: check that the integration user can read the fields named (field-level security) "
            "and that the records name their user, then run with --full-refresh; `persona-sync quarantine` "
            "lists the records and why")

    return [
        Expect(gxe.ExpectColumnValuesToBeBetween(column="row_drop", max_value=max_row_drop),
               "staged rows not collapsed", f"at most {max_row_drop:.0%} fewer rows than the last good run",
               explain=collapsed, observed=_objects("collapsed")),
        Expect(gxe.ExpectColumnValuesToBeBetween(column="quarantined_share", max_value=max_quarantined_share),
               "rows quarantined", f"at most {max_quarantined_share:.0%} of an object's rows",
               explain=quarantined, observed=_objects("over the limit")),
    ]


def _quarantine_words(reasons: str) -> str:
    """'name no user (no OwnerId)' when every reason is a missing user, else the reasons themselves."""
    parts = [part for part in reasons.split("; ") if part]
    missing = [part.removeprefix("no ") for part in parts if part.startswith("no ") and part.endswith("Id")]
    if parts and len(missing) == len(parts):
        return f"name no user (no {' or '.join(missing)})"
    return f"quarantined ({reasons})"


def _objects(what: str) -> Callable[[Outcome], str]:
    return lambda outcome: f"{outcome.unexpected} object(s) {what}" + (
        f": {', '.join(outcome.samples)}" if outcome.samples else "")


def catalog_fields(fields: pd.DataFrame) -> list[Expect]:
    """Coverage of the staged fields the catalog's features read (`fields`: one row per field, columns
    field ("Task.CallType"), features (the catalog features reading it) and populated_share)."""
    gxe = _gxe()
    by_field = fields.set_index("field")

    def empty(outcome: Outcome) -> str:
        return "; ".join(f"{name} is empty in every staged row, so {by_field.at[name, 'features']} "
                         "cannot tell users apart on this org" for name in outcome.samples)

    least = fields.sort_values("populated_share").head(5)
    least_filled = ", ".join(f"{row.field} {row.populated_share:.0%}" for row in least.itertuples())
    return [Expect(gxe.ExpectColumnValuesToBeBetween(column="populated_share", min_value=0, strict_min=True),
                   "catalog fields filled", "filled in some rows", explain=empty, warn=True,
                   observed=lambda outcome: f"{outcome.unexpected} of {outcome.rows} fields empty for the whole org"
                                            f"; least filled: {least_filled}")]


def features(*, active_users: int) -> list[Expect]:
    """Checks of the active users' feature rows as a whole (frame: the Id column)."""
    gxe = _gxe()
    return [
        Expect(gxe.ExpectTableRowCountToEqual(value=active_users), "features: one row per active user",
               f"{active_users:,} rows (the active users staged)", kind="table"),
        Expect(gxe.ExpectColumnValuesToBeUnique(column="Id"), "features: Id unique", "0 rows"),
    ]


def feature_columns(frame: pd.DataFrame, units: dict[str, str], used: Sequence[str], unavailable: dict[str, str], *,
                    share_unit: str, rate_unit: str, active_users: int) -> pd.DataFrame:
    """One row per feature of the active users' `frame` (an Id column, then one column per feature in
    `units`), what `feature_checks` reads: values missing or out of bounds (with a user to look at), its
    largest value, and whether the org measures it (`unavailable`: name -> why; NaN is right there).

    Checking this summary instead of every user's value for every feature is the same verdict in a few
    expectations instead of two hundred (each GX expectation costs milliseconds per run, whatever its
    size), and the report still names the feature and a user."""
    ids = frame["Id"].to_numpy()
    used_set = set(used)
    rows = []
    for name, unit in units.items():
        upper = 1.0 if unit == share_unit else MAX_RATE_PER_30_DAYS if unit == rate_unit else float(active_users)
        values = frame[name].to_numpy(dtype=float)
        measured = name not in unavailable
        missing = np.isnan(values) if measured else np.zeros(len(values), dtype=bool)
        outside = ~np.isnan(values) & ((values < 0) | (values > upper))
        bad = missing | outside
        rows.append({
            "feature": name, "unit": unit, "upper": upper,
            "missing": int(missing.sum()), "out_of_bounds": int(outside.sum()),
            "example": str(ids[np.argmax(bad)]) if bad.any() else None,
            "used_and_measured": (measured if name in used_set else None),
            "why_unmeasured": unavailable.get(name),
            "largest_if_used": (float(np.nanmax(values)) if len(values) and name in used_set and measured else None),
        })
    return pd.DataFrame(rows).astype({"used_and_measured": "object"})


def feature_checks(columns: pd.DataFrame) -> list[Expect]:
    """Checks of the per-feature summary `feature_columns` makes (id column: feature)."""
    gxe = _gxe()
    by_feature = columns.set_index("feature")

    def listed(column: str, what: str) -> Callable[[Outcome], str]:
        def explain(outcome: Outcome) -> str:
            return f"{outcome.unexpected} of {outcome.rows} features {what}: " + "; ".join(
                f"{name} {by_feature.at[name, column]:,} user(s), e.g. {by_feature.at[name, 'example']}"
                for name in outcome.samples)
        return explain

    return [
        Expect(gxe.ExpectColumnValuesToBeBetween(column="missing", min_value=0, max_value=0), "features present",
               "no missing value (NaN only for a feature the org cannot measure)",
               explain=listed("missing", "have missing values")),
        Expect(gxe.ExpectColumnValuesToBeBetween(column="out_of_bounds", min_value=0, max_value=0),
               "features within bounds", "0 .. 1 for shares, 0 .. the rate cap, 0 .. active users for people",
               explain=listed("out_of_bounds", "have values out of bounds")),
        Expect(gxe.ExpectColumnValuesToBeInSet(column="used_and_measured", value_set=[True]),
               "features the catalog uses measured on this org",
               "every one (an unmeasured one: its conditions are dropped, the weights renormalised)", warn=True,
               explain=lambda outcome: "not measured on this org, so the catalog's conditions on them are dropped: "
               + "; ".join(f"{name} ({by_feature.at[name, 'why_unmeasured']})" for name in outcome.samples)),
        Expect(gxe.ExpectColumnValuesToBeBetween(column="largest_if_used", min_value=0, strict_min=True),
               "features the catalog uses not zero for everyone", "above 0 for someone", warn=True,
               explain=lambda outcome: "; ".join(f"feature {name}, which the catalog uses, is 0 for every active "
                                                 "user on this org" for name in outcome.samples)),
    ]


def assignments(labels: Sequence[str], unassigned: str, *, active_users: int) -> list[Expect]:
    """Checks of the active users' assignments (frame: user_id, persona, score, confidence, reason)."""
    gxe = _gxe()
    allowed = [*labels, unassigned]
    return [
        Expect(gxe.ExpectTableRowCountToEqual(value=active_users), "assignments: one row per active user",
               f"{active_users:,} rows (the active users staged)", kind="table"),
        Expect(gxe.ExpectColumnValuesToBeUnique(column="user_id"), "assignments: user unique", "0 rows"),
        Expect(gxe.ExpectColumnValuesToBeInSet(column="persona", value_set=allowed), "assignments: persona known",
               f"a persona of the catalog or {unassigned}"),
        Expect(gxe.ExpectColumnValuesToNotBeNull(column="persona"), "assignments: persona present", "0 rows"),
        Expect(gxe.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=1),
               "assignments: score in [0, 1]", "0 .. 1"),
        Expect(gxe.ExpectColumnValuesToNotBeNull(column="score"), "assignments: score present", "0 rows"),
        Expect(gxe.ExpectColumnValuesToBeBetween(column="confidence", min_value=0, max_value=1),
               "assignments: confidence in [0, 1]", "0 .. 1"),
        Expect(gxe.ExpectColumnValuesToNotBeNull(column="confidence"), "assignments: confidence present", "0 rows"),
        Expect(gxe.ExpectColumnValuesToNotBeNull(column="reason"), "assignments: reason present", "0 rows"),
        Expect(gxe.ExpectColumnValueLengthsToBeBetween(column="reason", min_value=1, max_value=REASON_MAX_CHARS),
               "assignments: reason fits the field", f"1 .. {REASON_MAX_CHARS} characters"),
    ]
