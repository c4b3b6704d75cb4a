"""Field values between their three forms: stored (SQLite), JSON (REST) and CSV text (Bulk API, exports).

Every conversion of a field value lives here, so REST writes, Bulk ingest and export seeding accept and
refuse the same inputs with the same Salesforce error codes. The stored form is described in
`sandbox.schema`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone

import numpy as np

from sandbox.ids import id_problem, to_18, well_formed_ids
from sandbox.schema import STRING_TYPES, FieldSchema

_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?\s*(Z|[+-]\d{2}:?\d{2})?$"
)
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
# The boolean texts exports write, with what `text_to_stored` makes of each.
_BULK_BOOLEANS = {"": None} | {text: int(text.lower() in _TRUE)
                               for text in ("true", "false", "True", "False", "TRUE", "FALSE", "1", "0")}
_TEXT_TYPES = STRING_TYPES - {"id", "reference"}
# The stored forms of dates and datetimes, with a 0 where a digit goes.
_STORED_LAYOUTS = {"date": b"0000-00-00", "datetime": b"0000-00-00T00:00:00.000Z"}
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
# Days in months 00 to 99 of a year that is not a leap year: 0 for a month that does not exist.
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] + [0] * 87)


def _number_weights(width: int, spans: tuple[tuple[int, int], ...]) -> np.ndarray:
    """A (width, len(spans)) matrix that turns the digits of a fixed-width text into the numbers at `spans`
    (exact in float32 below 10,000)."""
    weights = np.zeros((width, len(spans)), dtype=np.float32)
    for column, (start, stop) in enumerate(spans):
        weights[start:stop, column] = 10.0 ** np.arange(stop - start - 1, -1, -1)
    return weights


# year, month, day, then for datetimes hour, minute, second
_NUMBER_WEIGHTS = {"date": _number_weights(10, ((0, 4), (5, 7), (8, 10))),
                   "datetime": _number_weights(24, ((0, 4), (5, 7), (8, 10), (11, 13), (14, 16), (17, 19)))}


class ValueProblem(ValueError):
    """A value that does not fit its field, with the Salesforce status code that reports it."""

    def __init__(self, status_code: str, message: str, field_name: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.field_name = field_name


def format_datetime(moment: datetime) -> str:
    """The stored form of a datetime: UTC, milliseconds, `Z` (naive datetimes are taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_datetime_text(text: str) -> str:
    """The stored form of a datetime written as ISO 8601 text (`Z`, `+00:00`, `+0000` or no zone = UTC).

    Raises ValueError for text that is not a datetime.
    """
    match = _DATETIME.match(text.strip())
    if not match:
        raise ValueError(f"not a datetime: {text!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    microsecond = int((fraction or "0").ljust(6, "0")[:6])
    moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), microsecond,
                      tzinfo=timezone.utc)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset_minutes = sign * (int(digits[:2]) * 60 + int(digits[2:]))
        moment -= timedelta(minutes=offset_minutes)
    return format_datetime(moment)


def parse_date_text(text: str) -> str:
    """The stored form of a date written `YYYY-MM-DD`; raises ValueError otherwise."""
    match = _DATE.match(text.strip())
    if not match:
        raise ValueError(f"not a date: {text!r}")
    date(int(match[1]), int(match[2]), int(match[3]))  # validates the calendar
    return match[0]


def stored_to_json(field: FieldSchema, value: object) -> object:
    """A stored value as REST JSON shows it."""
    if value is None:
        return None
    if field.type == "boolean":
        return bool(value)
    if field.type == "datetime":
        return value[:-1] + "+0000"  # type: ignore[index]
    if field.type == "int":
        return int(value)  # type: ignore[arg-type]
    return value


def json_to_stored(field: FieldSchema, value: object) -> object:
    """A value sent in REST JSON, checked against its field and converted to the stored form.

    Raises ValueProblem with the status code Salesforce uses: JSON_PARSER_ERROR for a value of the
    wrong JSON type, STRING_TOO_LONG, INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST is not modelled (our
    picklists are unrestricted, as most are), MALFORMED_ID for a bad reference.
    """
    if value is None:
        if not field.nillable and field.type != "boolean":
            raise ValueProblem("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{field.name}]", field.name)
        return None
    kind = field.type
    if kind == "boolean":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return int(value.lower() in _TRUE)
        raise _parser_error(field, value, "boolean")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _parser_error(field, value, "int")
        try:
            number = float(value)
        except ValueError:
            raise _parser_error(field, value, "int") from None
        if not number.is_integer():
            raise _parser_error(field, value, "int")
        return int(number)
    if kind in ("double", "currency", "percent"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _parser_error(field, value, "double")
        try:
            number = float(value)
        except ValueError:
            raise _parser_error(field, value, "double") from None
        if math.isnan(number) or math.isinf(number):
            raise _parser_error(field, value, "double")
        return number
    if not isinstance(value, str):
        if kind in STRING_TYPES and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        else:
            raise _parser_error(field, value, "String")
    return text_to_stored(field, value)


def text_to_stored(field: FieldSchema, text: str) -> object:
    """A value written as text (CSV, or a JSON string), checked and converted to the stored form.

    The empty string is None. Raises ValueProblem.
    """
    if text == "":
        return None
    kind = field.type
    try:
        if kind == "boolean":
            lowered = text.strip().lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError(text)
            return int(lowered in _TRUE)
        if kind == "int":
            return _integer(text)
        if kind in ("double", "currency", "percent"):
            number = float(text)
            if math.isnan(number) or math.isinf(number):
                raise ValueError(text)
            return number
        if kind == "date":
            return parse_date_text(text)
        if kind == "datetime":
            return parse_datetime_text(text)
    except (ValueError, OverflowError):
        raise ValueProblem(
            "INVALID_TYPE_ON_FIELD_IN_RECORD" if kind != "date" and kind != "datetime" else "INVALID_FIELD",
            f"{field.label}: value not of required type: {text}",
            field.name,
        ) from None
    if kind in ("id", "reference"):
        problem = id_problem(text)
        if problem:
            raise ValueProblem("MALFORMED_ID", f"{field.label}: id value of incorrect type: {text}", field.name)
        return to_18(text)
    if len(text) > field.length > 0:
        raise ValueProblem(
            "STRING_TOO_LONG",
            f"{field.label}: data value too large: {text[:40]}{'...' if len(text) > 40 else ''} "
            f"(max length={field.length})",
            field.name,
        )
    return text


def texts_to_stored(field: FieldSchema, texts: Sequence[str]) -> list[object]:
    """`text_to_stored` of every value of a column, for loading large files: the same list that
    `[text_to_stored(field, text) for text in texts]` gives, or the same ValueProblem (that of the first
    value refused, in order).

    Values in the forms exports write (Data Loader's: `true`, `42`, `2024-01-15T10:23:45.000Z`, 18-character
    ids) are checked in bulk; a column holding other forms is converted, partly or wholly, one value at a
    time by `text_to_stored` itself.
    """
    kind = field.type
    if kind in _TEXT_TYPES:
        if not field.length or max(map(len, texts), default=0) <= field.length:
            return [text or None for text in texts]
    elif kind == "boolean":
        try:
            return [_BULK_BOOLEANS[text] for text in texts]
        except KeyError:
            pass
    elif kind == "int":
        if max(map(len, texts), default=0) <= 18:  # 18 characters cannot leave the 64-bit range
            try:  # int() strips the same white space as `_integer` does before calling it
                return [int(text) if text else None for text in texts]
            except ValueError:
                pass
    elif kind in ("double", "currency", "percent"):
        try:
            numbers = [float(text) if text else None for text in texts]
        except ValueError:
            pass
        else:
            if all(map(math.isfinite, filter(None, numbers))):
                return numbers
    elif kind in ("date", "datetime", "id", "reference"):
        # Values already in the stored form are kept as they are; the others are converted one at a time.
        present = list(filter(None, texts))
        kept = well_formed_ids(present) if kind in ("id", "reference") else _in_stored_form(present, kind)
        stored: list[object] = [text or None for text in texts]
        if not kept.all():
            kept_in_turn = iter(kept.tolist())
            for index, text in enumerate(texts):
                if text and not next(kept_in_turn):
                    stored[index] = text_to_stored(field, text)
        return stored
    return [text_to_stored(field, text) for text in texts]


def _in_stored_form(texts: Sequence[str], kind: str) -> np.ndarray:
    """Which of `texts` are dates or datetimes (`kind`) already in their stored form, of a real calendar day
    from the year 1000 on: `parse_date_text` and `parse_datetime_text` return those unchanged (a year before
    1000 is not: strftime would not pad it to four digits)."""
    layout = _STORED_LAYOUTS[kind]
    width = len(layout)
    if set(map(len, texts)) == {width}:
        candidates, subset = None, texts
    else:
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        candidates = np.flatnonzero(lengths == width)
        subset = [texts[index] for index in candidates.tolist()]
    text = "".join(subset).encode("ascii", errors="replace")
    chars = np.frombuffer(text, dtype=np.uint8).reshape(-1, width)
    digits = chars - np.uint8(ord("0"))  # a byte below "0" wraps past 9
    if text.translate(_DIGITS_AS_ZERO) == layout * len(chars):  # ASCII digits and separators where they go
        ok = np.ones(len(chars), dtype=bool)
    else:
        pattern = np.frombuffer(layout, dtype=np.uint8)
        ok = np.where(pattern == ord("0"), digits <= 9, chars == pattern).all(axis=1)
    numbers = (digits.astype(np.float32) @ _NUMBER_WEIGHTS[kind]).astype(np.int64)
    year, month, day = numbers[:, 0], numbers[:, 1], numbers[:, 2]
    days = _DAYS_IN_MONTH.take(np.minimum(month, 99))  # above 99 where a "digit" was not one (ok is False there)
    february_29 = (month == 2) & (day == 29)
    if february_29.any():
        leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
        days = days + (february_29 & leap)
    ok &= (year >= 1000) & (day >= 1) & (day <= days)
    if kind == "datetime":
        ok &= (numbers[:, 3] < 24) & (numbers[:, 4] < 60) & (numbers[:, 5] < 60)
    if candidates is None:
        return ok
    result = np.zeros(len(texts), dtype=bool)
    result[candidates] = ok
    return result


_INT64 = 2**63


def _integer(text: str) -> int:
    """An integer written as text (`42`, `-7`, `42.0`), exactly, within SQLite's 64-bit range."""
    stripped = text.strip()
    try:
        number = int(stripped)
    except ValueError:
        as_float = float(stripped)
        if not as_float.is_integer():
            raise ValueError(text) from None
        number = int(as_float)
    if not -_INT64 <= number < _INT64:
        raise ValueError(text)
    return number


def _parser_error(field: FieldSchema, value: object, expected: str) -> ValueProblem:
    json_type = {bool: "VALUE_TRUE" if value is True else "VALUE_FALSE", str: "VALUE_STRING",
                 int: "VALUE_NUMBER_INT", float: "VALUE_NUMBER_FLOAT", list: "START_ARRAY",
                 dict: "START_OBJECT"}.get(type(value), "VALUE")
    return ValueProblem(
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {expected} from {json_type} value {value!r} or request may be "
        f"missing a required field at [field: {field.name}]",
        field.name,
    )
