"""Picking related records in bulk: "one of this user's cases opened before this moment", vectorised.

Activities point at records the actor plausibly touched: a call is logged on the caller's own account,
a comment on one of the agent's recent cases. `GroupedRecords` sorts records by group (an owner, an
account, a manager) and time once, then answers such questions for a whole array of rows at a time
with `searchsorted`, instead of a Python loop per row.
"""

from __future__ import annotations

import numpy as np

_TIME_BITS = 42  # epoch milliseconds stay below 2**42 until the year 2109


class GroupedRecords:
    """Records (indices 0..n-1) grouped by an integer key, ordered by time within each group."""

    def __init__(self, groups: np.ndarray, n_groups: int, times: np.ndarray | None = None) -> None:
        groups = groups.astype(np.int64)
        self.times = np.zeros(len(groups), dtype=np.int64) if times is None else times.astype(np.int64)
        self.order = np.lexsort((self.times, groups))
        self.counts = np.bincount(groups, minlength=n_groups)
        self.starts = np.concatenate(([0], np.cumsum(self.counts)[:-1]))
        self._keys = (groups[self.order] << _TIME_BITS) | self.times[self.order]

    def any_of(self, rng: np.random.Generator, groups: np.ndarray) -> np.ndarray:
        """For each row's group, a random record of that group; -1 where the group has none."""
        counts = self.counts[groups]
        offset = (rng.random(len(groups)) * counts).astype(np.int64)
        position = np.minimum(self.starts[groups] + offset, max(len(self.order) - 1, 0))
        if len(self.order) == 0:
            return np.full(len(groups), -1, dtype=np.int64)
        return np.where(counts > 0, self.order[position], -1)

    def recent_before(self, rng: np.random.Generator, groups: np.ndarray, times: np.ndarray,
                      among: int = 5) -> np.ndarray:
        """For each row, one of the `among` latest records of its group created before its time; -1 if none."""
        if len(self.order) == 0:
            return np.full(len(groups), -1, dtype=np.int64)
        query = (groups.astype(np.int64) << _TIME_BITS) | times.astype(np.int64)
        position = np.searchsorted(self._keys, query, side="left")
        available = position - self.starts[groups]
        back = 1 + (rng.random(len(groups)) * np.minimum(available, among)).astype(np.int64)
        chosen = np.clip(position - back, 0, len(self.order) - 1)
        return np.where(available > 0, self.order[chosen], -1)
