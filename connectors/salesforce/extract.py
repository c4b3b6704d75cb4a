"""Reading a declared stream from the org: plain operations, each returning Arrow tables or plain values.

The pull (tasks/pull.py) composes these; it never writes SOQL, never picks an endpoint and never parses
a CSV. What is here:

- `stream_schema`: the Arrow schema a stream is staged with, from the org's own describe (its names are
  the columns every read selects: a field only where the org has it), or None for an object it lacks;
- `count`: how many rows a read since a cursor value would return (it decides REST or Bulk);
- `read_pages`: the rows since a cursor value, page by page (REST pages in (cursor, Id) order; a Bulk
  API 2.0 job is a snapshot, unordered), each parsed into typed Arrow tables when the caller asks;
- `read_by_id`: given rows, by Id (what a reconciliation found missing);
- `deletions`: rows in the recycle bin since a cursor value (queryAll), with when they were deleted;
- `ids`: every Id the org has for the stream since a cursor value (an Id-only read, for reconciling).

Every call goes through `SalesforceClient.call`, so each one is renewed, retried and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from simple_salesforce.exceptions import SalesforceResourceNotFound

from connectors.salesforce import soql
from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.pages import (arrow_schema, csv_page_to_text_table, csv_page_to_typed_table,
                                        rest_records_to_text_table, typed_table)
from connectors.salesforce.streams import Stream
from core.configs import Transfer
from core.errors import SalesforceError

# Ids per query when rows are read by Id: the query stays far below the URL length a REST GET allows.
_IDS_PER_QUERY = 200


@dataclass(frozen=True)
class Page:
    """Rows of one stream as read: typed; which rows held a value that did not parse (it reads as null
    in `rows`); and `text()`, the same rows as the org sent them, to keep with a record set aside."""

    rows: pa.Table
    unparsable: pa.Array
    text: Callable[[], pa.Table] = field(repr=False)


@dataclass(frozen=True)
class RawPage:
    """A page as the org sent it, not parsed yet: a Bulk API CSV file (which exists until the next page is
    asked for) or REST records. `parse()` types it; a caller can so choose when a page takes memory."""

    schema: pa.Schema
    csv_file: Path | None = None
    records: list[dict] | None = None

    def parse(self) -> Page:
        """The typed page. A CSV file is parsed straight into the staged types when every value fits (the
        usual page: half the work); else as text, converted column by column, marking what does not parse.
        The text is parsed again only if asked for (`Page.text`), while the file still exists."""
        names = self.schema.names
        if self.csv_file is not None:
            csv_file = self.csv_file
            typed = csv_page_to_typed_table(csv_file, self.schema)
            if typed is not None:
                return Page(typed, pa.array(np.zeros(typed.num_rows, dtype=bool)),
                            lambda: csv_page_to_text_table(csv_file, names))
            text = csv_page_to_text_table(csv_file, names)
        else:
            text = rest_records_to_text_table(self.records or [], names)
        rows, unparsable = typed_table(text, self.schema)
        return Page(rows, unparsable, lambda: text)


@dataclass(frozen=True)
class Deletions:
    """Rows in the org's recycle bin: their Ids and when each was deleted."""

    ids: list[str]
    deleted_at: list[datetime]

    @property
    def latest(self) -> datetime | None:
        return max(self.deleted_at) if self.deleted_at else None


def stream_schema(client: SalesforceClient, stream: Stream) -> pa.Schema | None:
    """The Arrow schema `stream` is staged with, from the org's describe (pages.arrow_schema says which fields
    it may lack). None when the org has no such object, or does not show it to the integration user (its
    describe is NOT_FOUND): there is nothing to pull, and the caller decides whether that is an error."""
    try:
        describe = client.call(lambda sf: getattr(sf, stream.sobject).describe(), sobject=stream.sobject,
                               call="describe")
    except SalesforceError as error:
        if isinstance(error.__cause__, SalesforceResourceNotFound):
            return None
        raise
    return arrow_schema(stream, {field["name"]: field["type"] for field in describe["fields"]})


def count(client: SalesforceClient, stream: Stream, *, since: datetime | None) -> int:
    """How many rows `read_pages(..., since=since)` would return."""
    return client.count(soql.count(stream, since=since), sobject=stream.sobject)


def read_pages(client: SalesforceClient, stream: Stream, schema: pa.Schema, *, since: datetime | None,
               transfer: Transfer, bulk_page_rows: int, rest_part_rows: int, download_dir: Path) -> Iterator[RawPage]:
    """The stream's rows with the cursor at or after `since` (all of them when None), page by page.

    Bulk pages come as Salesforce cut them (`bulk_page_rows` at most), each downloaded to a file under
    `download_dir` (never held as text) for the caller to parse; REST pages (2,000 rows) are gathered into
    pages of about `rest_part_rows`.
    """
    if transfer == "bulk":
        query = soql.select(stream, since=since, columns=schema.names)
        for bulk_page in client.bulk_pages(query, sobject=stream.sobject, max_records=bulk_page_rows,
                                           download_dir=download_dir):
            yield RawPage(schema, csv_file=bulk_page.path)
        return
    query = soql.select(stream, since=since, columns=schema.names, order_by_cursor=True)
    yield from _rest_pages(client, stream, schema, query, rest_part_rows)


def read_by_id(client: SalesforceClient, stream: Stream, schema: pa.Schema,
               ids: Sequence[str]) -> Iterator[RawPage]:
    """The rows of `stream` with these Ids (those the org still has), a page per batch of Ids."""
    for start in range(0, len(ids), _IDS_PER_QUERY):
        query = soql.select(stream, ids=ids[start:start + _IDS_PER_QUERY], columns=schema.names)
        yield from _rest_pages(client, stream, schema, query, _IDS_PER_QUERY)


def deletions(client: SalesforceClient, stream: Stream, *, since: datetime | None) -> Deletions:
    """Rows of `stream` deleted at or after `since`, from the recycle bin (queryAll; about 15 days back)."""
    ids: list[str] = []
    deleted_at: list[datetime] = []
    for records in client.rest_pages(soql.deleted(stream, since=since), sobject=stream.sobject, include_deleted=True):
        for record in records:
            ids.append(record["Id"])
            deleted_at.append(pd.Timestamp(record["SystemModstamp"]).to_pydatetime())
    return Deletions(ids, deleted_at)


def ids(client: SalesforceClient, stream: Stream, *, since: datetime | None, transfer: Transfer,
        bulk_page_rows: int, download_dir: Path) -> Iterator[pa.Array]:
    """Every Id the org holds for `stream` with the cursor at or after `since`, a page at a time."""
    query = soql.select(stream, since=since, columns=["Id"])
    if transfer == "bulk":
        for bulk_page in client.bulk_pages(query, sobject=stream.sobject, max_records=bulk_page_rows,
                                           download_dir=download_dir):
            yield csv_page_to_text_table(bulk_page.path, ["Id"]).column("Id").combine_chunks()
        return
    for records in client.rest_pages(query, sobject=stream.sobject):
        yield pa.array([record["Id"] for record in records], pa.string())


def _rest_pages(client: SalesforceClient, stream: Stream, schema: pa.Schema, query: str,
                part_rows: int) -> Iterator[RawPage]:
    buffered: list[dict] = []
    for records in client.rest_pages(query, sobject=stream.sobject):
        buffered.extend(records)
        if len(buffered) >= part_rows:
            yield RawPage(schema, records=buffered)
            buffered = []
    if buffered:
        yield RawPage(schema, records=buffered)
