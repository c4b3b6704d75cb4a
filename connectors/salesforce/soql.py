"""SOQL text: the one place persona-sync writes queries, and the one way a value gets into one.

Every value put into SOQL goes through `literal`, simple-salesforce's own quoting (`quote_soql_value`,
which follows Salesforce's "Quoted String Escape Sequences": backslash, both quotes, and the control
characters are escaped): a quote or backslash in a value can never end the string early and change the
query. Datetimes become UTC literals (`2026-11-01T10:00:00+00:00`), lists `('a','b')`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from simple_salesforce.format import quote_soql_value

from connectors.salesforce.streams import Stream

# Tokens of SOQL that matter for finding the queried object: string literals (with their escapes),
# parentheses (subqueries), and words.
_TOKENS = re.compile(r"'(?:[^'\\]|\\.)*'|\(|\)|[A-Za-z_][A-Za-z0-9_.]*|\S", re.DOTALL)


def literal(value: object) -> str:
    """`value` as a SOQL literal: strings quoted and escaped, datetimes in UTC, lists in parentheses."""
    return quote_soql_value(value)


def select(stream: Stream, *, since: datetime | None = None, ids: Sequence[str] | None = None,
           columns: Sequence[str] | None = None, order_by_cursor: bool = False) -> str:
    """The query that reads `stream`: its columns (or `columns`), rows with the cursor at or after
    `since` (inclusive: a row at the watermark itself is never skipped), optionally only `ids`, and the
    stream's required filter."""
    conditions = []
    if since is not None:
        conditions.append(f"{stream.cursor} >= {literal(since)}")
    if ids is not None:
        conditions.append(f"Id IN {literal(list(ids))}")
    if stream.required_filter:
        conditions.append(stream.required_filter)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    order = f" ORDER BY {stream.cursor}, Id" if order_by_cursor else ""
    return f"SELECT {', '.join(columns or stream.columns)} FROM {stream.sobject}{where}{order}"


def count(stream: Stream, *, since: datetime | None = None) -> str:
    """How many rows `select(stream, since=since)` would read."""
    return select(stream, since=since, columns=["COUNT()"])


def deleted(stream: Stream, *, since: datetime | None = None) -> str:
    """Rows of `stream` in the recycle bin (for queryAll), with when they were deleted (their SystemModstamp)."""
    condition = f" AND SystemModstamp >= {literal(since)}" if since is not None else ""
    return f"SELECT Id, SystemModstamp FROM {stream.sobject} WHERE IsDeleted = true{condition}"


def sobject_of(soql: str) -> str:
    """The object a query reads: the name after its top-level FROM (not a subquery's, not inside a string).

    Raises ValueError when the text has no top-level FROM followed by a name.
    """
    depth = 0
    tokens = _TOKENS.findall(soql)
    for position, token in enumerate(tokens):
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif depth == 0 and token.upper() == "FROM" and position + 1 < len(tokens):
            name = tokens[position + 1]
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                return name
    raise ValueError(f"cannot find the object this query reads (no FROM <object> outside parentheses): {soql!r}")
