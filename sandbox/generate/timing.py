"""When things happen in the synthetic org: the history window and realistic working-time timestamps.

All times are int64 milliseconds since the Unix epoch, UTC, in NumPy arrays; `sandbox.generate.writing`
turns them into the stored text form at insert time. Every generated time t of a user's activity obeys
start <= t < end for that user's active span, and the span lies inside the window, which ends at as_of
(exclusive): so nothing is ever stamped at or after as_of.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

SECOND_MS = 1_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
HISTORY_DAYS = 183


def to_ms(moment: datetime) -> int:
    """A datetime as epoch milliseconds (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(round(moment.timestamp() * 1000))


@dataclass(frozen=True)
class Window:
    """The stretch of history the org covers: [start_ms, end_ms), end_ms being as_of."""

    start_ms: int
    end_ms: int

    @classmethod
    def ending_at(cls, as_of: datetime, days: int = HISTORY_DAYS) -> "Window":
        end = to_ms(as_of)
        return cls(end - days * DAY_MS, end)

    @property
    def last_ms(self) -> int:
        """The latest instant a record may carry (one millisecond before as_of)."""
        return self.end_ms - 1


def uniform_times(rng: np.random.Generator, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Times spread evenly over [start, end) per row: for machines (API jobs) and background noise."""
    span = np.maximum(end - start, 1)
    return start + (rng.random(len(start)) * span).astype(np.int64)


def working_times(rng: np.random.Generator, start: np.ndarray, end: np.ndarray, tz_hours: np.ndarray, *,
                  weekend_share: float = 0.04, after_hours_share: float = 0.07,
                  early_bias: bool = False) -> np.ndarray:
    """Times people act: weekdays, business hours in their own time zone, with a little overtime.

    A uniform day in the span is drawn first; most weekend days move to the nearest Friday or Monday, then
    a local hour is drawn (08:00-18:00, peaking around midday, or around 10:00 with `early_bias`, e.g.
    for logins); `after_hours_share` of rows get any hour of the day. `tz_hours` is how many hours the
    user's zone is behind UTC. A row whose placed time falls outside its span keeps the uniform draw, so
    the result always lies in [start, end).
    """
    n = len(start)
    uniform = uniform_times(rng, start, end)
    behind = tz_hours.astype(np.int64) * HOUR_MS
    local_day = (uniform - behind) // DAY_MS
    weekday = (local_day + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    move = (weekday >= 5) & (rng.random(n) >= weekend_share)
    backwards = rng.random(n) < 0.5
    shift = np.where(weekday == 5, np.where(backwards, -1, 2), np.where(backwards, -2, 1))
    local_day = local_day + np.where(move, shift, 0)
    a, b = (1.6, 2.6) if early_bias else (2.2, 2.2)
    office_hour = 8.0 + 10.0 * rng.beta(a, b, n)
    any_hour = rng.random(n) * 24.0
    hour = np.where(rng.random(n) < after_hours_share, any_hour, office_hour)
    placed = local_day * DAY_MS + (hour * HOUR_MS).astype(np.int64) + behind
    inside = (placed >= start) & (placed < end)
    return np.where(inside, placed, uniform)


def later_times(rng: np.random.Generator, base: np.ndarray, limit: np.ndarray | int, *, share: float,
                mean_delay_ms: float) -> np.ndarray:
    """`base`, or for `share` of rows a moment after it (exponential delay), never reaching `limit`.

    Used for LastModifiedDate (a later edit) and similar follow-ups; always >= base.
    """
    n = len(base)
    delay = (rng.exponential(mean_delay_ms, n)).astype(np.int64)
    later = np.minimum(base + delay, np.asarray(limit) - 1)
    return np.where(rng.random(n) < share, np.maximum(later, base), base)


def system_stamps(rng: np.random.Generator, modified: np.ndarray, window: Window) -> np.ndarray:
    """SystemModstamp: usually the last modification, sometimes a later system update (never >= as_of)."""
    touched = rng.random(len(modified)) < 0.03
    later = np.minimum(modified + (rng.random(len(modified)) * 3 * DAY_MS).astype(np.int64), window.last_ms)
    return np.where(touched, np.maximum(later, modified), modified)
