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
- `features`: one row per active user, no missing values, no negatives, rates within sane bounds, and
  (a warning) features the catalog uses that are zero for everyone.
- `assignments`: persona in the catalog or Unassigned, score and confidence in [0, 1], a reason of at
  most 255 characters, exactly one row per active user.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

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
                booleans: Sequence[str]) -> list[Expect]:
    """Row-level checks of one staged object (frames with its Id, user, cursor, creation and boolean
    columns). `cursor_from`/`cursor_to`: the pulled window (None: not known, not checked)."""
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
                              f"{sobject}.{user_field} present", "0 rows (such rows are quarantined, not staged)"))
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


def features(units: dict[str, str], used: Sequence[str], *, active_users: int, share_unit: str,
             rate_unit: str) -> list[Expect]:
    """Checks of the active users' features (frame: an Id column, then one column per feature)."""
    gxe = _gxe()
    expects = [
        Expect(gxe.ExpectTableRowCountToEqual(value=active_users), "features: one row per active user",
               f"{active_users:,} rows (the active users staged)", kind="table"),
        Expect(gxe.ExpectColumnValuesToBeUnique(column="Id"), "features: Id unique", "0 rows"),
    ]
    for name, unit in units.items():
        upper = 1.0 if unit == share_unit else MAX_RATE_PER_30_DAYS if unit == rate_unit else float(active_users)
        expects.append(Expect(gxe.ExpectColumnValuesToNotBeNull(column=name), f"features.{name} present", "0 rows"))
        expects.append(Expect(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=0, max_value=upper),
                              f"features.{name} within bounds", f"0 .. {upper:g} ({unit})"))
    for name in used:
        expects.append(Expect(gxe.ExpectColumnMaxToBeBetween(column=name, min_value=0, strict_min=True),
                              f"features.{name} not zero for everyone", "above 0 for someone", warn=True,
                              kind="table",
                              explain=lambda outcome, name=name: f"feature {name}, which the catalog uses, is 0 for "
                                                                 "every active user on this org"))
    return expects


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
