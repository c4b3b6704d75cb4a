"""SOQL for the sandbox: the subset of Salesforce's query language our clients send, compiled to SQLite.

Queries are parsed with a real grammar (lark, LALR, case-insensitive keywords) and checked against the
org's schema the way Salesforce checks them, so a query a real org refuses is refused here with the
same error code and message. The compiled SQL runs directly on the org
database (`sandbox.store`); `json_records` turns its rows into REST records, and with `for_bulk=True`
the SQL itself yields Bulk API 2.0 CSV text.

Supported:
    SELECT <fields> | COUNT() | COUNT(<field>) [alias]
    FROM <object>
    [WHERE <condition>]            AND / OR / NOT, parentheses; = != <> < <= > >= IN, NOT IN, LIKE
    [ORDER BY <field> [ASC|DESC] [NULLS FIRST|LAST], ...]
    [LIMIT n] [OFFSET n]
A field is `Name` or one relationship level `Owner.Name` (a polymorphic lookup such as Task.What
joins its first target object only). Values: 'strings' (with SOQL's backslash
escapes), numbers, true/false, null, 2024-01-15, 2024-01-15T10:23:45Z (+00:00, -0700, .000Z) and
the relative date literals (TODAY, LAST_N_DAYS:30, THIS_MONTH, N_QUARTERS_AGO:2, ...).

Semantics follow SOQL rather than SQL: comparisons never yield "unknown" (`x != 'a'` and `NOT IN`
include nulls, `NOT` negates a false comparison on null), string equality is case-insensitive, ids
compare exactly and may be given in 15 characters, date literals are ranges [start, end) in UTC.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from sandbox.ids import id_problem, to_18
from sandbox.schema import NUMBER_TYPES, STRING_TYPES, FieldSchema, SObjectSchema
from sandbox.store import quote
from sandbox.values import parse_date_text, parse_datetime_text, stored_to_json

MAX_OFFSET = 2000


class SoqlError(Exception):
    """A query Salesforce would refuse, with the errorCode and message it would answer with.

    error_code is one of MALFORMED_QUERY (syntax, unsupported shape), INVALID_TYPE (unknown object),
    INVALID_FIELD (unknown field or relationship, value of the wrong type, field not filterable or
    sortable), INVALID_QUERY_FILTER_OPERATOR (malformed id value, operator a field does not support),
    NUMBER_OUTSIDE_VALID_RANGE (OFFSET above 2000).
    """

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(f"{error_code}: {message}")
        self.error_code = error_code
        self.message = message


@dataclass(frozen=True)
class OutputColumn:
    """One requested field: where its value sits in each SQL row and how to name it in the output."""

    path: str  # as written, with API-name casing: "Id", "Owner.Name"
    field: FieldSchema  # the field at the end of the path
    relationship: str | None  # "Owner" for Owner.Name, None for a field of the queried object
    index: int  # position in each SQL result row


@dataclass(frozen=True)
class CompiledQuery:
    """A checked query as SQLite SQL, with what the caller needs to shape the rows it returns."""

    sobject: SObjectSchema
    columns: list[OutputColumn]  # the requested fields in SELECT order (empty for COUNT queries)
    sql: str
    params: list
    is_count: bool  # SELECT COUNT(): sql returns one row with one integer
    aggregate_alias: str | None  # SELECT COUNT(field) [alias]: "expr0" or the alias; one row, one integer
    record_id_index: int | None  # row position of the queried record's Id; None for counts, aggregates, bulk
    # relationship name -> row position of the related record's Id (NULL when the lookup is empty)
    relationship_id_index: dict[str, int]


# --- grammar -------------------------------------------------------------------------------------

# Keywords are regexes with word boundaries and a priority above NAME, so `FromAddress` or
# `CountryIso` stay field names; the contextual lexer only offers a keyword where the grammar takes one.
_GRAMMAR = r"""
start: select_clause _FROM NAME where_clause? order_clause? limit_clause? offset_clause?

select_clause: _SELECT select_item ("," select_item)*
select_item: path                          -> field_item
           | _COUNT "(" ")"                -> count_rows
           | _COUNT "(" path ")" NAME?     -> count_field

where_clause: _WHERE condition
?condition: term
          | term (_AND term)+              -> all_of
          | term (_OR term)+               -> any_of
?term: "(" condition ")"
     | _NOT term                           -> negation
     | path COMPARISON value               -> comparison
     | path _IN value_list                 -> in_list
     | path _NOT _IN value_list            -> not_in_list
     | path _LIKE value                    -> like
value_list: "(" value ("," value)* ")"
value: STRING | NUMBER | TRUE | FALSE | NULL | DATE | DATETIME | DATE_RANGE
path: NAME ("." NAME)*

order_clause: _ORDER _BY order_item ("," order_item)*
order_item: path DIRECTION? NULLS_POSITION?
limit_clause: _LIMIT NUMBER
offset_clause: _OFFSET NUMBER

_SELECT.2: /select\b/i
_FROM.2: /from\b/i
_WHERE.2: /where\b/i
_AND.2: /and\b/i
_OR.2: /or\b/i
_NOT.2: /not\b/i
_IN.2: /in\b/i
_LIKE.2: /like\b/i
_ORDER.2: /order\b/i
_BY.2: /by\b/i
_LIMIT.2: /limit\b/i
_OFFSET.2: /offset\b/i
_COUNT.2: /count\b/i
TRUE.2: /true\b/i
FALSE.2: /false\b/i
NULL.2: /null\b/i
DIRECTION.2: /(asc|desc)\b/i
NULLS_POSITION.2: /nulls\s+(first|last)\b/i
DATE_RANGE.3: /(today|yesterday|tomorrow|(last|this|next)_(week|month|quarter|year)|(last|next)_90_days)\b/i
            | /((last|next)_n_(days|weeks|months|quarters|years)|n_(days|weeks|months|quarters|years)_ago):\d+\b/i
DATETIME.4: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})/
DATE.3: /\d{4}-\d{2}-\d{2}/
NUMBER.2: /[+-]?\d+(\.\d+)?/
NAME: /[a-z][a-z0-9_]*/i
STRING: /'(?:[^'\\]|\\.)*'/s
COMPARISON: "=" | "!=" | "<>" | "<=" | ">=" | "<" | ">"

%ignore /\s+/
"""


# --- syntax tree (immutable, so parsed queries can be cached and shared) ------------------------

@dataclass(frozen=True)
class _Literal:
    kind: str  # string | number | boolean | null | date | datetime | range
    text: str  # as written; strings without their quotes, escapes not yet decoded


@dataclass(frozen=True)
class _Compare:
    path: tuple[str, ...]
    op: str  # = != < <= > >=
    value: _Literal


@dataclass(frozen=True)
class _In:
    path: tuple[str, ...]
    values: tuple[_Literal, ...]
    negated: bool


@dataclass(frozen=True)
class _Like:
    path: tuple[str, ...]
    value: _Literal


@dataclass(frozen=True)
class _Not:
    operand: object


@dataclass(frozen=True)
class _AllOf:
    operands: tuple


@dataclass(frozen=True)
class _AnyOf:
    operands: tuple


@dataclass(frozen=True)
class _FieldItem:
    path: tuple[str, ...]


@dataclass(frozen=True)
class _CountRows:
    pass


@dataclass(frozen=True)
class _CountField:
    path: tuple[str, ...]
    alias: str | None


@dataclass(frozen=True)
class _OrderItem:
    path: tuple[str, ...]
    descending: bool
    nulls_first: bool  # SOQL's default: ASC NULLS FIRST, DESC NULLS LAST


@dataclass(frozen=True)
class _Query:
    items: tuple
    sobject: str
    where: object | None
    order: tuple[_OrderItem, ...]
    limit: str | None
    offset: str | None


_VALUE_KINDS = {"STRING": "string", "NUMBER": "number", "TRUE": "boolean", "FALSE": "boolean",
                "NULL": "null", "DATE": "date", "DATETIME": "datetime", "DATE_RANGE": "range"}


@v_args(inline=True)
class _ToSyntaxTree(Transformer):
    def start(self, select, sobject, *clauses):
        parts = {"where": None, "order": (), "limit": None, "offset": None}
        for name, content in clauses:
            parts[name] = content
        return _Query(select, str(sobject), **parts)

    def select_clause(self, *items):
        return items

    def field_item(self, path):
        return _FieldItem(path)

    def count_rows(self):
        return _CountRows()

    def count_field(self, path, alias=None):
        return _CountField(path, str(alias) if alias is not None else None)

    def where_clause(self, condition):
        return "where", condition

    def all_of(self, *operands):
        return _AllOf(operands)

    def any_of(self, *operands):
        return _AnyOf(operands)

    def negation(self, operand):
        return _Not(operand)

    def comparison(self, path, op, value):
        return _Compare(path, "!=" if op == "<>" else str(op), value)

    def in_list(self, path, values):
        return _In(path, values, negated=False)

    def not_in_list(self, path, values):
        return _In(path, values, negated=True)

    def like(self, path, value):
        return _Like(path, value)

    def value_list(self, *values):
        return values

    def value(self, token: Token):
        kind = _VALUE_KINDS[token.type]
        text = token[1:-1] if kind == "string" else str(token)
        return _Literal(kind, text)

    def path(self, *names):
        return tuple(str(name) for name in names)

    def order_clause(self, *items):
        return "order", items

    def order_item(self, path, *modifiers):
        descending = False
        nulls_first = None
        for token in modifiers:
            if token.type == "DIRECTION":
                descending = token.lower() == "desc"
            else:
                nulls_first = token.lower().split()[-1] == "first"
        return _OrderItem(path, descending, (not descending) if nulls_first is None else nulls_first)

    def limit_clause(self, number):
        return "limit", str(number)

    def offset_clause(self, number):
        return "offset", str(number)


_PARSER = Lark(_GRAMMAR, parser="lalr", lexer="contextual", transformer=_ToSyntaxTree())


@functools.lru_cache(maxsize=1024)
def _parse(soql: str) -> _Query:
    """The syntax tree of `soql` (cached: clients send the same query text again and again)."""
    try:
        return _PARSER.parse(soql)
    except UnexpectedInput as error:
        raise _syntax_error(soql, error) from None


def _syntax_error(soql: str, error: UnexpectedInput) -> SoqlError:
    """MALFORMED_QUERY pointing at the offending token, in Salesforce's layout."""
    lines = soql.split("\n") or [""]
    if isinstance(error, UnexpectedToken) and error.token.type != "$END":
        token, line, column = f"'{error.token}'", error.token.line, error.token.column
    elif isinstance(error, UnexpectedCharacters):
        token, line, column = f"'{soql[error.pos_in_stream]}'", error.line, error.column
    else:  # UnexpectedEOF, or the end-of-input token
        token, line, column = "<EOF>", len(lines), len(lines[-1]) + 1
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    return SoqlError("MALFORMED_QUERY", f"\n{source}\n{' ' * (column - 1)}^\nERROR at Row:{line}:Column:{column}\n"
                                        f"unexpected token: {token}")


# --- compilation ---------------------------------------------------------------------------------

def compile_soql(soql: str, schema: Mapping[str, SObjectSchema], *, now: datetime,
                 include_deleted: bool = False, for_bulk: bool = False,
                 hidden_rows: Mapping[str, float] | None = None) -> CompiledQuery:
    """`soql` checked against `schema` and compiled to SQLite SQL over the org database.

    `now` anchors relative date literals (TODAY, LAST_N_DAYS:n...; naive means UTC). Soft-deleted rows
    are left out unless `include_deleted` (queryAll). With `for_bulk` the query is checked against what
    Bulk API 2.0 accepts and every selected value comes back as CSV-ready text (NULL stays NULL).
    `hidden_rows` (object name -> share 0..1) makes that share of an object's rows invisible to the caller, as to an integration user
    whose sharing access shrank (a fault: the org answers, just with fewer rows, counts included).
    Raises SoqlError with Salesforce's error code and message.
    """
    query = _parse(soql)
    sobject = _find_sobject(schema, query.sobject)
    hidden_share = (hidden_rows or {}).get(sobject.name, 0.0)
    return _Compiler(sobject, schema, now, for_bulk).compile(query, include_deleted, hidden_share)


def _find_sobject(schema: Mapping[str, SObjectSchema], name: str) -> SObjectSchema:
    sobject = schema.get(name)
    if sobject is None:
        lowered = name.lower()
        sobject = next((candidate for candidate in schema.values() if candidate.name.lower() == lowered), None)
    if sobject is None:
        raise SoqlError("INVALID_TYPE", f"sObject type '{name}' is not supported. If you are attempting to use a "
                                        "custom object, be sure to append the '__c' after the entity name. Please "
                                        "reference your WSDL or the describe call for the appropriate names.")
    return sobject


@dataclass(frozen=True)
class _Resolved:
    """A field path resolved against the schema: the field, its SQL column and its output naming."""

    field: FieldSchema
    column: str  # SQL expression, e.g. t1."Name"
    path: str  # API casing, e.g. Owner.Name
    relationship: str | None


@dataclass
class _Join:
    alias: str
    target: SObjectSchema
    relationship: str
    sql: str


# Salesforce's type names in "value of filter criterion ... must be of type X" messages.
_TYPE_NAMES = {"boolean": "boolean", "int": "integer", "double": "double", "currency": "double",
               "percent": "double", "date": "date", "datetime": "dateTime"}
_ACCEPTED_KINDS = {"boolean": {"boolean"}, "date": {"date", "range"}, "datetime": {"datetime", "range"},
                   **{kind: {"number"} for kind in NUMBER_TYPES}, **{kind: {"string"} for kind in STRING_TYPES}}
_ID_TYPES = frozenset({"id", "reference"})
# String fields compare case-insensitively in SOQL; ids exactly.
_NOCASE_TYPES = STRING_TYPES - _ID_TYPES
_STRING_ESCAPES = {"n": "\n", "N": "\n", "r": "\r", "R": "\r", "t": "\t", "T": "\t", "b": "\b", "B": "\b",
                   "f": "\f", "F": "\f", '"': '"', "'": "'", "\\": "\\"}


class _Compiler:
    def __init__(self, sobject: SObjectSchema, schema: Mapping[str, SObjectSchema], now: datetime,
                 for_bulk: bool) -> None:
        self.sobject = sobject
        self.schema = schema
        self.today = (now.astimezone(timezone.utc) if now.tzinfo else now).date()
        self.for_bulk = for_bulk
        self.joins: dict[str, _Join] = {}
        self.params: list = []

    def compile(self, query: _Query, include_deleted: bool, hidden_share: float = 0.0) -> CompiledQuery:
        counts = [item for item in query.items if not isinstance(item, _FieldItem)]
        if counts and self.for_bulk:
            raise SoqlError("MALFORMED_QUERY", "Aggregate queries such as COUNT() are not supported in Bulk API "
                                               "2.0 query jobs; run them through the REST query resource")
        if query.offset is not None and self.for_bulk:
            raise SoqlError("MALFORMED_QUERY", "OFFSET is not supported in Bulk API 2.0 query jobs; a query "
                                               "job returns every matching record in pages")
        limit = _count_clause(query.limit, "LIMIT")
        offset = _count_clause(query.offset, "OFFSET")
        if offset is not None and offset > MAX_OFFSET:
            raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", f"Maximum SOQL offset allowed is {MAX_OFFSET}")

        # SELECT first, so joins are numbered in the order the client named them.
        if counts:
            select_sql, aggregate_alias, is_count = self._select_count(query.items, counts)
            columns: list[OutputColumn] = []
        else:
            columns, select_sql = self._select_fields(query.items)
            aggregate_alias, is_count = None, False

        conditions = []
        if self.sobject.has_soft_delete and not include_deleted:
            conditions.append('t0."IsDeleted" = 0')
        if hidden_share > 0:  # the same rows stay hidden in every query: a stable slice of rowids
            conditions.append(f"(t0.rowid % 1000) >= {int(round(min(hidden_share, 1.0) * 1000))}")
        if self.sobject.required_filter:
            self._check_required_filter(query.where)
        if query.where is not None:
            conditions.append(self._condition(query.where))
        order_sql = self._order_by(query.order) if query.order and not counts else ""

        record_id_index = None
        relationship_id_index: dict[str, int] = {}
        if not counts and not self.for_bulk:
            record_id_index = self._id_column(select_sql, columns, None, 't0."Id"')
            for join in self.joins.values():
                if any(column.relationship == join.relationship for column in columns):
                    relationship_id_index[join.relationship] = self._id_column(
                        select_sql, columns, join.relationship, f'{join.alias}."Id"')

        body = f"FROM {quote(self.sobject.name)} t0" + "".join(join.sql for join in self.joins.values())
        if conditions:
            body += " WHERE " + " AND ".join(conditions)
        paging = ""
        if limit is not None or offset is not None:
            paging = f" LIMIT {limit if limit is not None else -1}" + (f" OFFSET {offset}" if offset else "")
        if is_count:
            sql = (f"SELECT COUNT(*) FROM (SELECT 1 {body}{paging})" if paging
                   else f"SELECT COUNT(*) {body}")
        elif aggregate_alias is not None:
            sql = f"SELECT {select_sql[0]} {body}"
        else:
            # Named c0, c1...: unique result names, should the caller store the rows (CREATE TABLE AS).
            outputs = ", ".join(f"{expression} AS c{index}" for index, expression in enumerate(select_sql))
            sql = f"SELECT {outputs} {body}{order_sql}{paging}"
        return CompiledQuery(self.sobject, columns, sql, self.params, is_count, aggregate_alias,
                             record_id_index, relationship_id_index)

    # --- SELECT ------------------------------------------------------------------------------------

    def _select_fields(self, items: Sequence[_FieldItem]) -> tuple[list[OutputColumn], list[str]]:
        """The output columns and their SELECT expressions (CSV text for bulk)."""
        columns, select_sql = [], []
        for index, item in enumerate(items):
            resolved = self._resolve(item.path)
            if any(column.path.lower() == resolved.path.lower() for column in columns):
                raise SoqlError("MALFORMED_QUERY", f"duplicate field selected: {resolved.path}")
            columns.append(OutputColumn(resolved.path, resolved.field, resolved.relationship, index))
            select_sql.append(_csv_text(resolved) if self.for_bulk else resolved.column)
        return columns, select_sql

    def _select_count(self, items: Sequence, counts: list) -> tuple[list[str], str | None, bool]:
        plain = [item for item in items if isinstance(item, _FieldItem)]
        if any(isinstance(item, _CountRows) for item in counts):
            if len(items) > 1:
                raise SoqlError("MALFORMED_QUERY", "COUNT() must be the only element in the SELECT list")
            return [], None, True
        if plain:
            raise SoqlError("MALFORMED_QUERY",
                            f"Field must be grouped or aggregated: {self._resolve(plain[0].path).path}")
        if len(counts) > 1:
            raise SoqlError("MALFORMED_QUERY", "the sandbox supports one aggregate expression per query; "
                                               "run one query per COUNT(field)")
        item = counts[0]
        return [f"COUNT({self._resolve(item.path).column})"], item.alias or "expr0", False

    def _id_column(self, select_sql: list[str], columns: list[OutputColumn], relationship: str | None,
                   sql: str) -> int:
        """The row position of an Id: the selected Id column if there is one, else a hidden column."""
        for column in columns:
            if column.relationship == relationship and column.field.name == "Id":
                return column.index
        select_sql.append(sql)
        return len(select_sql) - 1

    # --- field paths -------------------------------------------------------------------------------

    def _resolve(self, path: tuple[str, ...]) -> _Resolved:
        if len(path) == 1:
            field = self._field(self.sobject, path[0])
            return _Resolved(field, f"t0.{quote(field.name)}", field.name, None)
        if len(path) > 2:
            raise SoqlError("INVALID_FIELD", f"the sandbox supports one relationship level in a field path, not "
                                             f"'{'.'.join(path)}'; select the lookup id and query the related "
                                             "object separately")
        join = self._join(path[0])
        field = self._field(join.target, path[1])
        return _Resolved(field, f"{join.alias}.{quote(field.name)}", f"{join.relationship}.{field.name}",
                         join.relationship)

    @staticmethod
    def _field(sobject: SObjectSchema, name: str) -> FieldSchema:
        field = sobject.field(name)
        if field is None:
            raise SoqlError("INVALID_FIELD", f"No such column '{name}' on entity '{sobject.name}'. If you are "
                                             "attempting to use a custom field, be sure to append the '__c' after "
                                             "the custom field name. Please reference your WSDL or the describe "
                                             "call for the appropriate names.")
        return field

    def _join(self, relationship_name: str) -> _Join:
        lookup = self.sobject.relationship(relationship_name)
        target = _related_sobject(self.schema, lookup)
        if lookup is None or target is None:
            raise SoqlError("INVALID_FIELD", f"Didn't understand relationship '{relationship_name}' in field path. "
                                             "If you are attempting to use a custom relationship, be sure to append "
                                             "the '__r' after the custom relationship name. Please reference your "
                                             "WSDL or the describe call for the appropriate names.")
        join = self.joins.get(lookup.name)
        if join is None:
            alias = f"t{len(self.joins) + 1}"
            join = _Join(alias, target, lookup.relationship_name,
                         f" LEFT JOIN {quote(target.name)} {alias} ON {alias}.\"Id\" = t0.{quote(lookup.name)}")
            self.joins[lookup.name] = join
        return join

    # --- WHERE -------------------------------------------------------------------------------------

    def _condition(self, node) -> str:
        """SQL for a condition that is never NULL where SOQL's answer matters (see `_Not`)."""
        if isinstance(node, _AllOf):
            return "(" + " AND ".join(self._condition(operand) for operand in node.operands) + ")"
        if isinstance(node, _AnyOf):
            return "(" + " OR ".join(self._condition(operand) for operand in node.operands) + ")"
        if isinstance(node, _Not):
            # SQL's NOT of unknown is unknown; SOQL's NOT of a comparison with null is true.
            return f"NOT COALESCE({self._condition(node.operand)}, 0)"
        resolved = self._resolve(node.path)
        if not resolved.field.filterable:
            raise SoqlError("INVALID_FIELD", f"field '{resolved.field.name}' can not be filtered in a query call")
        if isinstance(node, _Compare):
            return self._compare(resolved, node.op, node.value)
        if isinstance(node, _In):
            return self._in(resolved, node.values, node.negated)
        return self._like(resolved, node.value)

    def _compare(self, resolved: _Resolved, op: str, literal: _Literal) -> str:
        column = resolved.column
        operand = self._operand(resolved.field, literal)
        if operand is None:
            if op == "=":
                return f"{column} IS NULL"
            if op == "!=":
                return f"{column} IS NOT NULL"
            return "0"  # nothing is less or greater than null
        if isinstance(operand, _Range):
            # A range [start, end) compares as a whole: < is before it, <= is up to its end, and so on.
            if op == "=":
                return f"({column} >= {self._param(operand.start)} AND {column} < {self._param(operand.end)})"
            if op == "!=":
                return (f"({column} IS NULL OR {column} < {self._param(operand.start)} "
                        f"OR {column} >= {self._param(operand.end)})")
            bound = operand.start if op in ("<", ">=") else operand.end
            return f"{column} {'<' if op in ('<', '<=') else '>='} {self._param(bound)}"
        column = self._collated(resolved)
        if op == "!=":
            return f"({resolved.column} IS NULL OR {column} <> {self._param(operand)})"
        return f"{column} {op} {self._param(operand)}"

    def _in(self, resolved: _Resolved, literals: Sequence[_Literal], negated: bool) -> str:
        values, ranges, has_null = [], [], False
        for literal in literals:
            operand = self._operand(resolved.field, literal)
            if operand is None:
                has_null = True
            elif isinstance(operand, _Range):
                ranges.append(operand)
            else:
                values.append(operand)
        alternatives = []
        if values:
            placeholders = ", ".join(self._param(value) for value in values)
            alternatives.append(f"{self._collated(resolved)} IN ({placeholders})")
        for span in ranges:
            alternatives.append(f"({resolved.column} >= {self._param(span.start)} AND "
                                f"{resolved.column} < {self._param(span.end)})")
        if has_null:
            alternatives.append(f"{resolved.column} IS NULL")
        sql = alternatives[0] if len(alternatives) == 1 else "(" + " OR ".join(alternatives) + ")"
        # NOT IN keeps rows whose value is null (unless null is in the list), as SOQL does.
        return f"NOT COALESCE({sql}, 0)" if negated else sql

    def _like(self, resolved: _Resolved, literal: _Literal) -> str:
        field = resolved.field
        if field.type in _ID_TYPES:
            raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", "invalid operator on id field")
        if field.type not in STRING_TYPES:
            raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid operator on field '{field.name}': LIKE "
                                                             "compares text fields only")
        if literal.kind != "string":
            raise _type_error(field)
        # SQLite's LIKE ignores ASCII case, as SOQL's does; backslash escapes % and _.
        return f"{resolved.column} LIKE {self._param(_decode_string(literal.text, like=True))} ESCAPE '\\'"

    def _operand(self, field: FieldSchema, literal: _Literal):
        """The stored-form value a literal compares as: a value, a _Range, or None for null."""
        if literal.kind == "null":
            return None
        if literal.kind not in _ACCEPTED_KINDS[field.type]:
            raise _type_error(field)
        kind = literal.kind
        if kind == "string":
            text = _decode_string(literal.text, like=False)
            if text == "":
                return None  # Salesforce stores no empty strings: '' means null
            if field.type in _ID_TYPES:
                if id_problem(text):
                    raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {text}")
                return to_18(text)
            return text
        if kind == "number":
            return float(literal.text) if "." in literal.text else int(literal.text)
        if kind == "boolean":
            return int(literal.text.lower() == "true")
        if kind == "range":
            start, end = _date_range(literal.text, self.today)
            if field.type == "date":
                return _Range(start.isoformat(), end.isoformat())
            return _Range(f"{start.isoformat()}T00:00:00.000Z", f"{end.isoformat()}T00:00:00.000Z")
        try:
            return parse_date_text(literal.text) if kind == "date" else parse_datetime_text(literal.text)
        except ValueError:
            raise SoqlError("MALFORMED_QUERY", f"invalid {_TYPE_NAMES[kind]} literal: {literal.text}") from None

    @staticmethod
    def _collated(resolved: _Resolved) -> str:
        if resolved.field.type in _NOCASE_TYPES:
            return f"{resolved.column} COLLATE NOCASE"
        return resolved.column

    def _param(self, value: object) -> str:
        self.params.append(value)
        return "?"

    def _check_required_filter(self, where) -> None:
        """Objects like KnowledgeArticleVersion must be filtered by Id or their status, at the top level."""
        required = self.sobject.required_filter.lower()
        top_level = _conjuncts(where) if where is not None else []
        satisfied = any(
            len(node.path) == 1 and node.path[0].lower() in (required, "id")
            and ((isinstance(node, _Compare) and node.op == "=") or (isinstance(node, _In) and not node.negated))
            for node in top_level
        )
        nested = [node for node in _comparisons(where) if node not in top_level
                  and len(node.path) == 1 and node.path[0].lower() == required]
        if not satisfied or nested:
            name = self.sobject.field(required).name if self.sobject.field(required) else required
            raise SoqlError("MALFORMED_QUERY", f"Implementation restriction: When querying or searching the "
                                               f"{self.sobject.name} object, you must filter using the following "
                                               f"syntax: Id = [single ID], Id IN [list of ID's] or {name} = "
                                               f"[status]. In addition {name} is only permitted in a top-level "
                                               "AND condition.")

    # --- ORDER BY ----------------------------------------------------------------------------------

    def _order_by(self, items: Sequence[_OrderItem]) -> str:
        terms = []
        for item in items:
            resolved = self._resolve(item.path)
            field = resolved.field
            if not field.filterable or field.type == "textarea":
                raise SoqlError("INVALID_FIELD", f"field '{field.name}' can not be sorted in a query call")
            term = self._collated(resolved)
            if item.descending:
                term += " DESC"
            if item.nulls_first == item.descending:  # not SQLite's (and SOQL's) default for this direction
                term += " NULLS FIRST" if item.nulls_first else " NULLS LAST"
            terms.append(term)
        # Ties broken by Id, so LIMIT/OFFSET pages neither repeat nor skip rows.
        if not any(len(item.path) == 1 and item.path[0].lower() == "id" for item in items):
            terms.append('t0."Id" DESC' if items[-1].descending else 't0."Id"')
        return " ORDER BY " + ", ".join(terms)


@dataclass(frozen=True)
class _Range:
    start: str  # inclusive, stored form
    end: str  # exclusive, stored form


def _related_sobject(schema: Mapping[str, SObjectSchema], lookup: FieldSchema | None) -> SObjectSchema | None:
    """The object a lookup points to (the first one for polymorphic lookups such as Task.What)."""
    if lookup is None or not lookup.reference_to:
        return None
    return schema.get(lookup.reference_to[0])


def _csv_text(resolved: _Resolved) -> str:
    """A SELECT expression giving a field's value as Bulk API CSV shows it (NULL stays NULL)."""
    kind = resolved.field.type
    if kind == "boolean":
        return f"CASE {resolved.column} WHEN 1 THEN 'true' WHEN 0 THEN 'false' END"
    if kind in NUMBER_TYPES:
        return f"CAST({resolved.column} AS TEXT)"
    return resolved.column  # text already, datetimes included (stored with the Z that CSV shows)


def _count_clause(text: str | None, clause: str) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise SoqlError("MALFORMED_QUERY", f"{clause} must be a non-negative integer, found: {text}")
    return int(text)


def _type_error(field: FieldSchema) -> SoqlError:
    if field.type in STRING_TYPES:
        expected = "must be of type string and should be enclosed in quotes"
    else:
        expected = f"must be of type {_TYPE_NAMES[field.type]} and should not be enclosed in quotes"
    return SoqlError("INVALID_FIELD", f"value of filter criterion for field '{field.name}' {expected}")


def _decode_string(raw: str, *, like: bool) -> str:
    """A string literal's value; for LIKE, a pattern for SQLite's LIKE ... ESCAPE '\\'."""
    if "\\" not in raw:
        return raw
    out = []
    characters = iter(raw)
    for character in characters:
        if character != "\\":
            out.append(character)
            continue
        escaped = next(characters, "")
        if like and escaped in ("%", "_", "\\"):
            out.append("\\" + escaped)  # a literal %, _ or backslash in the pattern
        elif escaped in _STRING_ESCAPES:
            out.append(_STRING_ESCAPES[escaped])
        else:
            raise SoqlError("MALFORMED_QUERY", f"Invalid string literal '{raw}'. Illegal character sequence "
                                               f"'\\{escaped}' in string literal.")
    return "".join(out)


def _conjuncts(node) -> list:
    """The comparisons AND-ed at the top level of a condition (parentheses around ANDs see through)."""
    if isinstance(node, _AllOf):
        return [conjunct for operand in node.operands for conjunct in _conjuncts(operand)]
    return [node] if isinstance(node, (_Compare, _In, _Like)) else []


def _comparisons(node) -> list:
    if node is None:
        return []
    if isinstance(node, (_AllOf, _AnyOf)):
        return [leaf for operand in node.operands for leaf in _comparisons(operand)]
    if isinstance(node, _Not):
        return _comparisons(node.operand)
    return [node]


# --- relative date literals ----------------------------------------------------------------------

_UNITS = {"DAY": "DAY", "DAYS": "DAY", "WEEK": "WEEK", "WEEKS": "WEEK", "MONTH": "MONTH", "MONTHS": "MONTH",
          "QUARTER": "QUARTER", "QUARTERS": "QUARTER", "YEAR": "YEAR", "YEARS": "YEAR"}
_MONTHS_PER = {"MONTH": 1, "QUARTER": 3, "YEAR": 12}


def _date_range(literal: str, today: date) -> tuple[date, date]:
    """[start, end) of a relative date literal, as Salesforce defines them (weeks start on Sunday).

    LAST_N_DAYS:n includes today; NEXT_N_DAYS:n starts tomorrow; LAST_N_<unit>:n are the n whole
    units before the current one, NEXT_N_<unit>:n the n after it.
    """
    name, _, count_text = literal.upper().partition(":")
    n = int(count_text) if count_text else 0
    words = name.split("_")
    fixed = {"TODAY": ("DAY", 0, 1), "YESTERDAY": ("DAY", -1, 1), "TOMORROW": ("DAY", 1, 1),
             "LAST_90_DAYS": ("DAY", -90, 91), "NEXT_90_DAYS": ("DAY", 1, 90)}
    if name in fixed:
        unit, offset, length = fixed[name]
    elif words[0] in ("LAST", "THIS", "NEXT") and len(words) == 2:  # LAST_WEEK, THIS_MONTH...
        unit, offset, length = _UNITS[words[1]], {"LAST": -1, "THIS": 0, "NEXT": 1}[words[0]], 1
    elif words[0] == "N":  # N_DAYS_AGO:n
        unit, offset, length = _UNITS[words[1]], -n, 1
    elif words[0] == "LAST":  # LAST_N_DAYS:n
        unit = _UNITS[words[2]]
        offset, length = (-n, n + 1) if unit == "DAY" else (-n, n)
    else:  # NEXT_N_DAYS:n
        unit, offset, length = _UNITS[words[2]], 1, n
    try:
        if unit in ("DAY", "WEEK"):
            days = 1 if unit == "DAY" else 7
            period = today if unit == "DAY" else today - timedelta(days=(today.weekday() + 1) % 7)
            start = period + timedelta(days=offset * days)
            return start, start + timedelta(days=length * days)
        months = _MONTHS_PER[unit]
        first_month = (today.month - 1) // months * months
        period_index = today.year * 12 + first_month
        start_index = period_index + offset * months
        end_index = start_index + length * months
        return (date(start_index // 12, start_index % 12 + 1, 1), date(end_index // 12, end_index % 12 + 1, 1))
    except (OverflowError, ValueError):
        raise SoqlError("MALFORMED_QUERY", f"date literal out of range: {literal}") from None


# --- REST records --------------------------------------------------------------------------------

# stored_to_json returns values of these types unchanged, so json_records skips the call for them.
_JSON_AS_STORED = STRING_TYPES | {"double", "currency", "percent", "date"}


def json_records(query: CompiledQuery, rows: Iterable[Sequence], api_version: str) -> Iterator[dict]:
    """REST query records for the rows of `query.sql`, in SELECT order, relationships nested.

    A COUNT() query yields no records (REST reports the count as totalSize); an aggregate query
    yields one AggregateResult per row.
    """
    if query.is_count:
        return
    if query.aggregate_alias is not None:
        alias = query.aggregate_alias
        for row in rows:
            yield {"attributes": {"type": "AggregateResult"}, alias: row[0]}
        return
    sobjects_url = f"/services/data/v{api_version}/sobjects/"
    type_name = query.sobject.name
    url_prefix = f"{sobjects_url}{type_name}/"
    id_index = query.record_id_index
    # Per column: (key, row index, converter or None, nested) where nested describes a relationship
    # as (type, url prefix, [(key, row index, converter)]) and its row index is the related Id.
    steps: list[tuple] = []
    nested_by_relationship: dict[str, list] = {}
    for column in query.columns:
        convert = None if column.field.type in _JSON_AS_STORED else functools.partial(stored_to_json, column.field)
        if column.relationship is None:
            steps.append((column.field.name, column.index, convert, None))
            continue
        fields = nested_by_relationship.get(column.relationship)
        if fields is None:
            fields = nested_by_relationship[column.relationship] = []
            related_type = query.sobject.relationship(column.relationship).reference_to[0]
            steps.append((column.relationship, query.relationship_id_index[column.relationship], None,
                          (related_type, f"{sobjects_url}{related_type}/", fields)))
        fields.append((column.field.name, column.index, convert))

    for row in rows:
        record = {"attributes": {"type": type_name, "url": url_prefix + row[id_index]}}
        for key, index, convert, nested in steps:
            value = row[index]
            if nested is None:
                record[key] = value if convert is None or value is None else convert(value)
            elif value is None:
                record[key] = None
            else:
                related_type, related_prefix, fields = nested
                related = {"attributes": {"type": related_type, "url": related_prefix + value}}
                for sub_key, sub_index, sub_convert in fields:
                    sub_value = row[sub_index]
                    related[sub_key] = (sub_value if sub_convert is None or sub_value is None
                                        else sub_convert(sub_value))
                record[key] = related
        yield record

