"""The files of one staged object: their names, which of them count, and writing them durably.

An object's directory holds immutable Parquet files, each named with a sequence number that only grows:

- `part-<seq>.parquet`: rows as pulled (any order; an Id may repeat),
- `deleted-<seq>.parquet`: tombstones (Id, deleted_at),
- `base-<seq>.parquet`: the merged state of every file numbered below `seq` (written by compaction and by
  a committed full refresh). The newest base supersedes every file below it, whether or not those files
  have been removed yet; that is what makes compaction and refresh safe to interrupt at any point.

Anything else (a `.tmp-*` file left by a crash, a superseded file not yet removed) is ignored by readers
and swept by the next writer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from uuid import uuid4

from connectors.staging.errors import StagingError

FileKind = Literal["part", "deleted", "base"]

_FILE_NAME = re.compile(r"^(?P<kind>part|deleted|base)-(?P<seq>\d{12})\.parquet$")
TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True, order=True)
class StagedFile:
    """One immutable file of an object, ordered by its sequence number."""

    seq: int
    kind: FileKind = field(compare=False)
    path: Path = field(compare=False)


@dataclass(frozen=True)
class Snapshot:
    """The files of an object that count right now, and those a writer may remove."""

    base: StagedFile | None
    parts: list[StagedFile]
    tombstones: list[StagedFile]
    superseded: list[StagedFile]
    temporary: list[Path]
    next_seq: int

    @property
    def row_files(self) -> list[StagedFile]:
        """The files holding rows, oldest first: the base (if any), then the parts after it."""
        return ([self.base] if self.base else []) + self.parts

    @property
    def is_empty(self) -> bool:
        return self.base is None and not self.parts and not self.tombstones


def file_name(kind: FileKind, seq: int) -> str:
    return f"{kind}-{seq:012d}.parquet"


def snapshot(directory: Path) -> Snapshot:
    """Which files of `directory` count: the newest base and everything numbered after it."""
    files: list[StagedFile] = []
    temporary: list[Path] = []
    if directory.is_dir():
        for entry in directory.iterdir():
            match = _FILE_NAME.match(entry.name)
            if match:
                files.append(StagedFile(int(match["seq"]), match["kind"], entry))  # type: ignore[arg-type]
            elif entry.name.startswith(TEMP_PREFIX):
                temporary.append(entry)
    files.sort()
    bases = [staged for staged in files if staged.kind == "base"]
    base = bases[-1] if bases else None
    floor = base.seq if base else -1
    live = [staged for staged in files if staged.seq > floor]
    return Snapshot(
        base=base,
        parts=[staged for staged in live if staged.kind == "part"],
        tombstones=[staged for staged in live if staged.kind == "deleted"],
        superseded=[staged for staged in files if staged.seq < floor],
        temporary=temporary,
        next_seq=(files[-1].seq + 1) if files else 1,
    )


def write_durably(path: Path, write: Callable[[Path], None]) -> None:
    """Creates `path` with `write(temporary_path)` so that, once this returns, it survives a crash or power
    loss, and a reader never sees half of it: write a temporary file in the same directory, fsync it,
    rename it into place, fsync the directory."""
    if path.exists():
        raise StagingError(f"{path} already exists; staged files are immutable (is another process writing "
                           f"{path.parent.name}? Only one writer per object may run at a time)")
    temporary = path.with_name(f"{TEMP_PREFIX}{uuid4().hex}-{path.name}")
    write(temporary)
    fsync_path(temporary)
    os.replace(temporary, path)
    fsync_path(path.parent)


def make_directory(directory: Path) -> None:
    """Creates `directory` (and its parents) so that its entry survives a crash."""
    if directory.is_dir():
        return
    directory.mkdir(parents=True, exist_ok=True)
    fsync_path(directory.parent)


def sweep(directory: Path) -> None:
    """Removes what no reader uses any more: superseded files and temporary files left by a crash.

    Only a writer calls this (one writer per object), so a temporary file here is never in use.
    """
    found = snapshot(directory)
    doomed = [staged.path for staged in found.superseded] + found.temporary
    for path in doomed:
        path.unlink(missing_ok=True)
    if doomed:
        fsync_path(directory)


def fsync_path(path: Path) -> None:
    """Flushes a file's content, or a directory's entries, to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
