"""Full refresh: a new pull staged on the side, swapped in whole when complete, or thrown away.

The old staging stays readable and untouched until `commit()`. Commit merges the new pull and installs
it in the object's directory as one `base` file numbered above everything there; a base supersedes every
older file, so the swap is a single atomic rename. A crash before it leaves the old staging as it was
(plus a scratch directory the next `begin_refresh` of the object removes); a crash after it leaves the
new staging, with old files that readers ignore and the next writer removes.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow as pa

from connectors.staging.errors import StagingError

if TYPE_CHECKING:
    from connectors.staging.store import Staging

RefreshState = Literal["open", "committed", "aborted"]


class RefreshHandle:
    """One full refresh of one object, from `Staging.begin_refresh`.

    Write the pull with `write_part` (and `write_tombstones` if it yields any), then `commit()`; or
    `abort()`. Used as a context manager, leaving the block without a commit aborts.
    """

    def __init__(self, live: Staging, sobject: str, scratch: Staging) -> None:
        self.sobject = sobject
        self._live = live
        self._scratch = scratch
        self._state: RefreshState = "open"

    @property
    def state(self) -> RefreshState:
        return self._state

    def write_part(self, table: pa.Table, *, version: str | None = None) -> Path | None:
        """Stages a page of the new pull (same rules as `Staging.write_part`), invisible to readers."""
        self._ensure_open("write_part")
        return self._scratch.write_part(self.sobject, table, version=version)

    def write_tombstones(self, ids: Sequence[str], deleted_at: Sequence[datetime]) -> Path | None:
        """Stages deletions seen by the new pull (same rules as `Staging.write_tombstones`)."""
        self._ensure_open("write_tombstones")
        return self._scratch.write_tombstones(self.sobject, ids, deleted_at)

    def commit(self) -> Path:
        """Makes the new pull the object's staging, atomically, and returns the installed base file.

        A refresh that staged no rows commits an empty object: the pull found nothing, so nothing is live.
        """
        self._ensure_open("commit")
        installed = self._live._commit_refresh(self.sobject, self._scratch)
        self._discard_scratch()
        self._state = "committed"
        return installed

    def abort(self) -> None:
        """Throws the new pull away; the old staging stays as it was. Does nothing once committed."""
        if self._state == "open":
            self._discard_scratch()
            self._state = "aborted"

    def __enter__(self) -> RefreshHandle:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.abort()

    def _ensure_open(self, action: str) -> None:
        if self._state != "open":
            raise StagingError(f"{action} on the refresh of {self.sobject}, which is already {self._state}; "
                               "start another with Staging.begin_refresh")

    def _discard_scratch(self) -> None:
        if self._scratch.root.exists():
            shutil.rmtree(self._scratch.root)
