"""Staging: pulled Salesforce records, typed and columnar, upserted by Id, durable.

Why Parquet: pages from Salesforce (Bulk API 2.0 CSV) are parsed by pyarrow's C++ CSV reader and
written as Parquet without per-row Python work, so staging keeps up with the download; feature
computation reads only the columns it needs; and files are immutable, so durability is "write a temp
file, fsync, rename" and a crash can never leave half a file where a reader looks.

Layout: `root/<Object>/` holds `part-<seq>.parquet` (rows as pulled), `deleted-<seq>.parquet`
(tombstones) and at most one live `base-<seq>.parquet` (a compacted or refreshed state that supersedes
every file numbered below it). Inside each file rows are grouped by a hash bucket of the Id, so whole-object
work runs a bucket at a time in bounded memory (`layout.py`). `root/.refresh/` holds full refreshes in
progress. Rules of the merge: `merge.py`; crash-safety of the files: `files.py`; full refresh: `refresh.py`.
"""

from connectors.staging.errors import StagingError
from connectors.staging.layout import BUCKETS
from connectors.staging.refresh import RefreshHandle
from connectors.staging.store import Prune, Staging

__all__ = ["BUCKETS", "Prune", "RefreshHandle", "Staging", "StagingError"]
