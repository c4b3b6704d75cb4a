"""Writing to Salesforce: what a field accepts, what records hold now, and updates in as few calls as allowed.

- `describe_fields`: each field's type, length, scale and whether it may be updated (one describe call);
- `read_records`: records' current values by a SOQL query (REST pages of 2,000);
- `update_records`: updates through sObject Collections (`PATCH composite/sobjects`, 200 records a call,
  `allOrNone: false`, so one bad record never fails the others). Records of one object per call: User is
  a setup object and Salesforce refuses a call that mixes it with others;
- `bulk_update`: the same through one Bulk API 2.0 ingest job, for large changes.

Per-record failures come back as `WriteOutcome`s with Salesforce's status code. Lock contention
(UNABLE_TO_LOCK_ROW) and REQUEST_LIMIT_EXCEEDED are retried here, with backoff, after the other
records' first pass; every other code is final for this run (the caller retries it on the next).
Every call goes through `SalesforceClient.call` (renewal, transport retries, API counting).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from simple_salesforce.bulk2 import ColumnDelimiter, LineEnding, Operation

from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.soql import literal

log = logging.getLogger(__name__)

COLLECTION_SIZE = 200  # records per sObject Collections call, Salesforce's maximum
RETRIED_IN_RUN = frozenset({"UNABLE_TO_LOCK_ROW", "REQUEST_LIMIT_EXCEEDED"})
_IDS_PER_QUERY = 300  # Ids in one `WHERE Id IN (...)`: the query stays well under the URL length limit


@dataclass(frozen=True)
class FieldInfo:
    """What one field accepts, from the object's describe."""

    name: str
    type: str
    length: int
    precision: int
    scale: int
    updateable: bool


@dataclass(frozen=True)
class WriteOutcome:
    """One record's update: done, or failed with Salesforce's status code and message."""

    record_id: str
    success: bool
    status_code: str | None = None
    message: str | None = None
    attempts: int = 1


def describe_fields(client: SalesforceClient, sobject: str) -> dict[str, FieldInfo]:
    """Every field of `sobject` by API name."""
    describe = client.call(lambda sf: getattr(sf, sobject).describe(), sobject=sobject, call="describe")
    return {field["name"]: FieldInfo(field["name"], field["type"], int(field.get("length") or 0),
                                     int(field.get("precision") or 0), int(field.get("scale") or 0),
                                     bool(field.get("updateable")))
            for field in describe["fields"]}


def read_records(client: SalesforceClient, sobject: str, fields: Sequence[str], *,
                 ids: Sequence[str] | None = None, where: str | None = None) -> list[dict[str, Any]]:
    """The current values of `fields` (and Id) of `sobject`'s records: those of `ids` (queried 300 at a
    time), or all matching `where` (a SOQL condition written by the caller's code, never by a user)."""
    columns = ", ".join(dict.fromkeys(["Id", *fields]))
    if ids is None:
        soql = f"SELECT {columns} FROM {sobject}" + (f" WHERE {where}" if where else "")
        return [record for page in client.rest_pages(soql, sobject=sobject) for record in page]
    records: list[dict[str, Any]] = []
    for start in range(0, len(ids), _IDS_PER_QUERY):
        chosen = ", ".join(literal(record_id) for record_id in ids[start:start + _IDS_PER_QUERY])
        soql = f"SELECT {columns} FROM {sobject} WHERE Id IN ({chosen})" + (f" AND ({where})" if where else "")
        records += [record for page in client.rest_pages(soql, sobject=sobject) for record in page]
    return records


def update_records(client: SalesforceClient, sobject: str, records: Sequence[dict[str, Any]], *,
                   attempts: int = 5, first_wait: float = 1.0,
                   on_outcomes: Callable[[list[WriteOutcome]], None] = lambda outcomes: None,
                   sleep: Callable[[float], None] = time.sleep) -> list[WriteOutcome]:
    """Updates `records` (dicts with "Id" and the fields to set), 200 a call, allOrNone false.

    `on_outcomes` hears each record's final outcome as soon as it is known (after each call), so a caller
    can mark it done before the next call: a crash then loses at most one call's bookkeeping. Records
    failing with a code of RETRIED_IN_RUN are sent again (in fresh batches) after a wait that doubles,
    up to `attempts` times in all. Returns every record's final outcome, in no particular order.
    """
    tries: dict[str, int] = {}
    pending = list(records)
    final: list[WriteOutcome] = []
    wait = first_wait
    while pending:
        again: list[dict[str, Any]] = []
        for batch in _batches(pending, COLLECTION_SIZE):
            done: list[WriteOutcome] = []
            for record, result in zip(batch, _send(client, sobject, batch)):
                record_id = record["Id"]
                tries[record_id] = tries.get(record_id, 0) + 1
                outcome = _outcome(record_id, result, tries[record_id])
                if not outcome.success and outcome.status_code in RETRIED_IN_RUN and tries[record_id] < attempts:
                    again.append(record)
                else:
                    done.append(outcome)
            final += done
            on_outcomes(done)
        if again:
            log.info("update %s: %d records were locked or over the limit; again in %.1f s", sobject, len(again), wait)
            sleep(wait)
            wait *= 2
        pending = again
    return final


def bulk_update(client: SalesforceClient, sobject: str, records: Sequence[dict[str, Any]], *,
                poll_seconds: float = 0.5) -> list[WriteOutcome]:
    """Updates `records` with one Bulk API 2.0 ingest job (for large changes: a handful of calls instead of
    one per 200 records); returns each record's outcome from the job's successful and failed results.
    Records the job did not process come back failed with status code UNPROCESSED (written next run).

    Each step (create, upload, close, wait, results) is its own `call`, so a transient failure while
    waiting or downloading repeats that step, never the job: the records are sent once."""
    fields = list(dict.fromkeys(name for record in records for name in record))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    # Every row has every column; an empty cell leaves a field as it is (#N/A would clear it).
    writer.writerows([_csv_value(record[name]) if name in record else "" for name in fields] for record in records)

    def jobs(sf: Any) -> Any:
        return getattr(sf.bulk2, sobject)._client  # built per access, with the current token

    job_id = client.call(lambda sf: jobs(sf).create_job(Operation.update, None, ColumnDelimiter.COMMA, LineEnding.LF),
                         sobject=sobject, call="bulk2 create update job")["id"]
    client.call(lambda sf: jobs(sf).upload_job_data(job_id, buffer.getvalue()), sobject=sobject,
                call=f"bulk2 upload to job {job_id}")
    client.call(lambda sf: jobs(sf).close_job(job_id), sobject=sobject, call=f"bulk2 close job {job_id}")
    client.call(lambda sf: jobs(sf).wait_for_job(job_id, False, poll_seconds), sobject=sobject,
                call=f"bulk2 wait for job {job_id}")
    outcomes: dict[str, WriteOutcome] = {}
    for row in _csv_rows(client.call(lambda sf: jobs(sf).get_ingest_results(job_id, "successfulResults"),
                                     sobject=sobject, call=f"bulk2 successful results of job {job_id}")):
        outcomes[row["sf__Id"]] = WriteOutcome(row["sf__Id"], True)
    for row in _csv_rows(client.call(lambda sf: jobs(sf).get_ingest_results(job_id, "failedResults"),
                                     sobject=sobject, call=f"bulk2 failed results of job {job_id}")):
        record_id = row.get("Id") or row["sf__Id"]
        code, _, message = (row.get("sf__Error") or "UNKNOWN_ERROR:").partition(":")
        outcomes[record_id] = WriteOutcome(record_id, False, code, message.strip())
    return [outcomes.get(record["Id"], WriteOutcome(record["Id"], False, "UNPROCESSED",
                                                    "the Bulk job did not process this record"))
            for record in records]


def _csv_value(value: Any) -> str:
    if value is None:
        return "#N/A"  # Bulk API's way to set a field to null
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text))) if text else []


def _send(client: SalesforceClient, sobject: str, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body = {"allOrNone": False,
            "records": [{"attributes": {"type": sobject}, **record} for record in batch]}
    results = client.call(lambda sf: sf.restful("composite/sobjects", method="PATCH", json=body),
                          sobject=sobject, call="collections update")
    if not isinstance(results, list) or len(results) != len(batch):
        raise ValueError(f"sObject Collections answered {len(results) if isinstance(results, list) else results!r} "
                         f"results for {len(batch)} {sobject} records")
    return results


def _outcome(record_id: str, result: dict[str, Any], attempts: int) -> WriteOutcome:
    if result.get("success"):
        return WriteOutcome(record_id, True, attempts=attempts)
    errors = result.get("errors") or [{}]
    return WriteOutcome(record_id, False, errors[0].get("statusCode", "UNKNOWN_ERROR"),
                        errors[0].get("message", ""), attempts)


def _batches(items: Sequence[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])
