"""Salesforce record ids: 15-character case-sensitive ids and their 18-character case-safe form.

An id is a 3-character key prefix (the object), 12 more characters, and for the 18-character form a
3-character suffix that encodes which of the first 15 characters are upper case, so the id survives
case-insensitive tools (spreadsheets, some databases). The sandbox issues 18-character ids, and like
Salesforce it accepts either form wherever an id is read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Two "pod" characters and the reserved character, as in real ids (e.g. 005Hs00000AbCdE).
_POD = "Hs0"
_COUNTER_WIDTH = 9
_ALPHABET_BYTES = np.frombuffer(_BASE62.encode(), dtype=np.uint8)
_IS_BASE62 = np.zeros(256, dtype=bool)
_IS_BASE62[_ALPHABET_BYTES] = True
_BASE62_DIGIT = np.zeros(256, dtype=np.int64)
_BASE62_DIGIT[_ALPHABET_BYTES] = np.arange(62)
_SUFFIX_BYTES = np.frombuffer(_SUFFIX_ALPHABET.encode(), dtype=np.uint8)
# Character i of an id, when upper case, adds 2**(i % 5) to the flags of suffix character i // 5.
_SUFFIX_WEIGHTS = np.zeros((18, 3), dtype=np.float32)
for _position in range(15):
    _SUFFIX_WEIGHTS[_position, _position // 5] = 1 << (_position % 5)
_COUNTER_WEIGHTS = 62 ** np.arange(_COUNTER_WIDTH - 1, -1, -1, dtype=np.int64)


def case_safe_suffix(id15: str) -> str:
    """The 3-character suffix that turns a 15-character id into its 18-character form."""
    suffix = []
    for chunk in range(3):
        flags = 0
        for position in range(5):
            char = id15[chunk * 5 + position]
            if "A" <= char <= "Z":
                flags |= 1 << position
        suffix.append(_SUFFIX_ALPHABET[flags])
    return "".join(suffix)


def to_18(record_id: str) -> str:
    """The 18-character form of an id given in either form."""
    if len(record_id) == 18:
        return record_id
    if len(record_id) != 15:
        raise ValueError(f"an id has 15 or 18 characters, not {len(record_id)}: {record_id!r}")
    return record_id + case_safe_suffix(record_id)


def id_problem(record_id: str, key_prefix: str | None = None) -> str | None:
    """Why `record_id` is not a valid id (of the object with `key_prefix`), or None when it is."""
    if len(record_id) not in (15, 18):
        return f"an id has 15 or 18 characters, this one has {len(record_id)}"
    if any(char not in _BASE62 for char in record_id):
        return "an id holds only letters and digits"
    if len(record_id) == 18 and record_id[15:] != case_safe_suffix(record_id[:15]):
        return f"the case-safe suffix {record_id[15:]!r} does not match the id (expected {case_safe_suffix(record_id[:15])!r})"
    if key_prefix is not None and record_id[:3] != key_prefix:
        return f"the key prefix {record_id[:3]!r} is not this object's ({key_prefix!r})"
    return None


def is_valid_id(record_id: str, key_prefix: str | None = None) -> bool:
    """Whether `record_id` is a well-formed id (of the object with `key_prefix`)."""
    return id_problem(record_id, key_prefix) is None


def make_id(key_prefix: str, counter: int) -> str:
    """The 18-character id number `counter` of an object.

    Counters are written in base 62 with digits before upper case before lower case, so ids of one
    object sort in the order they were issued: SQLite indexes them append-only and fast.
    """
    digits = []
    for _ in range(_COUNTER_WIDTH):
        counter, digit = divmod(counter, 62)
        digits.append(_BASE62[digit])
    if counter:
        raise OverflowError("id counter exhausted")
    return to_18(key_prefix + _POD + "".join(reversed(digits)))


def id_counter(record_id: str) -> int | None:
    """The counter an id was issued from (its last nine base-62 characters), or None if they are not base 62.

    Used to move a key prefix's counter past ids that came from elsewhere (an export), so new ids
    never collide with them.
    """
    digits = record_id[6:15]
    if len(digits) != _COUNTER_WIDTH or any(char not in _BASE62 for char in digits):
        return None
    counter = 0
    for char in digits:
        counter = counter * 62 + _BASE62.index(char)
    return counter


def make_ids(key_prefix: str, start: int, count: int) -> np.ndarray:
    """`count` consecutive ids from counter `start`, built with NumPy (millions per second).

    Returns an array of Python strings (dtype object) ready for SQLite.
    """
    counters = np.arange(start, start + count, dtype=np.int64)
    alphabet = np.frombuffer(_BASE62.encode(), dtype=np.uint8)
    chars = np.empty((count, 18), dtype=np.uint8)
    chars[:, 0:3] = np.frombuffer(key_prefix.encode(), dtype=np.uint8)
    chars[:, 3:6] = np.frombuffer(_POD.encode(), dtype=np.uint8)
    remaining = counters.copy()
    for position in range(14, 5, -1):
        chars[:, position] = alphabet[remaining % 62]
        remaining //= 62
    if count and remaining.max() > 0:
        raise OverflowError("id counter exhausted")
    chars[:, 15:] = _case_safe_suffixes(chars)
    as_bytes = chars.view("S18").ravel()
    return as_bytes.astype(str).astype(object)


def well_formed_ids(ids: Sequence[str]) -> np.ndarray:
    """For each of `ids`, whether it is an 18-character id `id_problem` finds nothing wrong with (any key
    prefix), checked in bulk (millions per second) for loading large files.

    Ids of any other length are False, valid or not: check those one at a time (a 15-character id also
    needs `to_18`).
    """
    if set(map(len, ids)) == {18}:
        candidates, subset = None, ids
    else:
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        candidates = np.flatnonzero(lengths == 18)
        subset = [ids[index] for index in candidates.tolist()]
    text = "".join(subset).encode("ascii", errors="replace")
    chars = np.frombuffer(text, dtype=np.uint8).reshape(-1, 18)
    suffixes = _case_safe_suffixes(chars)
    if text.isalnum() and np.array_equal(suffixes, chars[:, 15:]):  # bytes.isalnum: ASCII letters and digits
        well_formed = np.ones(len(chars), dtype=bool)  # the usual case, decided without a per-id reduction
    else:
        well_formed = _IS_BASE62.take(chars).all(axis=1) & (suffixes == chars[:, 15:]).all(axis=1)
    if candidates is None:
        return well_formed
    result = np.zeros(len(ids), dtype=bool)
    result[candidates] = well_formed
    return result


def highest_counters_by_prefix(ids: Sequence[str]) -> dict[str, int]:
    """The highest `id_counter` among `ids` (well-formed 18-character ids) for each key prefix, in bulk."""
    if not len(ids):
        return {}
    chars = _id_chars(ids)
    counters = _BASE62_DIGIT.take(chars[:, 6:15]) @ _COUNTER_WEIGHTS
    prefixes = np.ascontiguousarray(chars[:, :3]).view("S3").ravel()
    if (prefixes == prefixes[0]).all():
        return {prefixes[0].decode(): int(counters.max())}
    return {prefix.decode(): int(counters[prefixes == prefix].max()) for prefix in np.unique(prefixes)}


def _id_chars(ids: Sequence[str]) -> np.ndarray:
    """18-character ids as an (n, 18) byte array; a character that is not ASCII becomes `?` (not base 62)."""
    return np.frombuffer("".join(ids).encode("ascii", errors="replace"), dtype=np.uint8).reshape(len(ids), 18)


def _case_safe_suffixes(chars: np.ndarray) -> np.ndarray:
    """`case_safe_suffix` of each row of an (n, 18) byte array of ids (its last 3 columns are not read), as an
    (n, 3) byte array. The bit flags are summed by a small matrix product, exact in float32."""
    upper = (chars - np.uint8(ord("A"))) < 26
    flags = (upper.astype(np.float32) @ _SUFFIX_WEIGHTS).astype(np.intp)
    return _SUFFIX_BYTES.take(flags)
