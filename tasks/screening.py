"""Screening a page of pulled rows: what to stage, what to hold until its user arrives, what is broken.

Pure functions over Arrow tables, no I/O: the pull feeds them pages and writes what they return.

- **Who**: a row's user is the first of its stream's user fields it fills (OwnerId, else CreatedById:
  an export may lack the owner where the creator is there). `Screened.attributed` counts the rows each
  field attributed, so a run can say how many needed a fallback.
- **Staged**: rows whose user (the owner, creator or login user a feature counts them for) is a staged
  user, and rows owned by a queue or public group (an OwnerId with the Group key prefix `00G`): those are
  valid records that belong to no person, so they count for nobody.
- **Held**: rows whose user is a user Id (`005`) not staged yet: created between the User pull and the
  activity pull, or a User pull that failed. They are kept aside (staged apart, never counted) and
  staged once the user arrives: the watermark moves past them, so dropping them would lose them.
- **Rejected** (quarantined, with the reason and the raw values): no user at all, a user field that
  names neither a user nor a group, or a value that does not parse.

The same Id twice (in one page, or across pages and nights) needs nothing here: staging keeps the
version with the latest cursor value (connectors/staging/merge.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.salesforce.extract import Page
from connectors.salesforce.streams import Stream

USER_PREFIX = "005"
GROUP_PREFIX = "00G"  # queues and public groups own records too


@dataclass(frozen=True)
class Rejected:
    """A record kept out of staging, with why and its values as the org sent them."""

    record_id: str | None
    reason: str
    raw: dict


@dataclass(frozen=True)
class Screened:
    """A page, split: rows to stage, rows to hold until their user is staged, and broken rows."""

    clean: pa.Table
    held: pa.Table
    rejected: list[Rejected]
    # Rows attributed by each user field (the stream's first, or a fallback), among rows with a user.
    attributed: dict[str, int] = field(default_factory=dict)


def row_users(table: pa.Table, stream: Stream) -> tuple[pa.ChunkedArray, list[tuple[str, int]]]:
    """Each row's user: the first of `stream.user_fields` the row fills (a field the table lacks, or an
    empty value, is skipped), null when none is. Also how many rows each field attributed."""
    present = [name for name in stream.user_fields if name in table.column_names]
    user = pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
    used: list[tuple[str, int]] = []
    unattributed = pa.array(np.ones(table.num_rows, dtype=bool))
    for name in present:
        values = table.column(name).cast(pa.string())
        filled = pc.and_(unattributed, pc.fill_null(pc.not_equal(values, ""), False))
        used.append((name, pc.sum(filled.cast(pa.int64())).as_py() or 0))
        user = pc.if_else(filled, values, user)
        unattributed = pc.and_(unattributed, pc.invert(filled))
    return user, used


def screen(page: Page, stream: Stream, known_users: pa.Array | None) -> Screened:
    """Splits a typed page (see the module docstring). `known_users` None: the stream is reference data
    (users, profiles), whose rows name no user to check."""
    table = page.rows
    reasons: list[tuple[pa.Array, str]] = [(page.unparsable, "a date or number does not parse")]
    waiting = _none(table.num_rows)
    attributed: dict[str, int] = {}
    if stream.is_activity and known_users is not None:
        user, used = row_users(table, stream)
        attributed = {name: rows for name, rows in used if rows}
        named = " or ".join(stream.user_fields)
        is_user = pc.fill_null(pc.starts_with(user, USER_PREFIX), False)
        is_group = pc.fill_null(pc.starts_with(user, GROUP_PREFIX), False)
        reasons.append((pc.is_null(user), f"no {named}"))
        reasons.append((pc.and_(pc.is_valid(user), pc.invert(pc.or_(is_user, is_group))),
                        f"{named} names neither a user ({USER_PREFIX}...) nor a queue or group ({GROUP_PREFIX}...)"))
        waiting = pc.and_(is_user, pc.invert(pc.is_in(user, value_set=known_users)))
    rejected_mask = _none(table.num_rows)
    for mask, _ in reasons:
        rejected_mask = pc.or_(rejected_mask, pc.fill_null(mask, False))
    held_mask = pc.and_(waiting, pc.invert(rejected_mask))
    set_aside = pc.or_(rejected_mask, held_mask)
    if not pc.any(set_aside).as_py():  # the usual page: everything is staged, nothing is copied
        return Screened(table, table.slice(0, 0), [], attributed)
    rejected = _rejected(page.text(), rejected_mask, reasons) if pc.any(rejected_mask).as_py() else []
    return Screened(table.filter(pc.invert(set_aside)), table.filter(held_mask), rejected, attributed)


def _rejected(text: pa.Table, rejected_mask: pa.Array, reasons: list[tuple[pa.Array, str]]) -> list[Rejected]:
    raw_rows = text.filter(rejected_mask).to_pylist()
    # Each reason's mask, restricted to the rejected rows: one Arrow filter per reason, not per row.
    flags = [(pc.fill_null(mask, False).filter(rejected_mask).to_pylist(), reason) for mask, reason in reasons]
    return [Rejected(raw.get("Id"), "; ".join(reason for flagged, reason in flags if flagged[position]), raw)
            for position, raw in enumerate(raw_rows)]


def _none(rows: int) -> pa.Array:
    return pa.array(np.zeros(rows, dtype=bool))
