"""Creating, updating and deleting records, with Salesforce's validation and its per-record results.

One writer serves every write path of the sandbox (REST sObject calls, sObject Collections, Bulk API
2.0 ingest), so they accept and refuse the same records with the same status codes. The writer knows
nothing of HTTP: it takes records whose values are already parsed from JSON or CSV and returns one
`RecordResult` per record, in order.

What Salesforce fills itself is filled here too: audit fields, Name from FirstName and LastName,
IsClosed / IsWon from the stage or status, CaseNumber, default owner.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sandbox.ids import id_problem, to_18
from sandbox.schema import FieldSchema, SObjectSchema
from sandbox.store import OrgStore, quote
from sandbox.values import ValueProblem

# A function turning one incoming value (JSON value or CSV text) into the stored form.
Converter = Callable[[FieldSchema, object], object]
# Marks "leave this field as it is" (Bulk CSV sends an empty cell for that).
UNCHANGED = object()

_AUDIT_FIELDS = ("CreatedById", "CreatedDate", "LastModifiedById", "LastModifiedDate", "SystemModstamp")


@dataclass
class RecordResult:
    """The outcome for one record, in the shape Salesforce reports it."""

    id: str | None
    success: bool
    errors: list[dict] = field(default_factory=list)
    created: bool = False

    @classmethod
    def failure(cls, record_id: str | None, status_code: str, message: str, fields: Sequence[str] = ()) -> "RecordResult":
        return cls(record_id, False, [{"statusCode": status_code, "message": message, "fields": list(fields)}])

    def as_json(self) -> dict:
        content: dict = {"id": self.id, "success": self.success, "errors": self.errors}
        if not self.success and self.id is None:
            content.pop("id")
        return content


# What Salesforce says for each error code fault injection can make an update fail with.
UPDATE_ERROR_MESSAGES = {
    "FIELD_CUSTOM_VALIDATION_EXCEPTION": "This record is locked by a validation rule (sandbox fault injection).",
    "UNABLE_TO_LOCK_ROW": "unable to obtain exclusive access to this record or 1 records",
    "INACTIVE_OWNER_OR_USER": "operation performed with inactive user [{id}] as owner of user",
    "FIELD_INTEGRITY_EXCEPTION": "field integrity exception: unknown (sandbox fault injection)",
    "INSUFFICIENT_ACCESS_OR_READONLY": "insufficient access rights on object id",
}


class RecordWriter:
    """Writes records of one org. `update_error(id)` lets fault injection fail chosen updates with an
    error code (None: the update goes through)."""

    def __init__(self, store: OrgStore, update_error: Callable[[str], str | None] = lambda record_id: None) -> None:
        self.store = store
        self.update_error = update_error

    # --- create ---------------------------------------------------------------------------------

    def create(self, items: Sequence[tuple[SObjectSchema, Mapping[str, object]]], convert: Converter, *,
               acting_user: str, now: str, all_or_none: bool = False) -> list[RecordResult]:
        """Inserts each (sObject, record); with `all_or_none`, nothing is written unless all are valid."""
        prepared: list[tuple[SObjectSchema, dict[str, object]] | RecordResult] = []
        for sobject, record in items:
            if not sobject.createable:
                prepared.append(RecordResult.failure(None, "INVALID_TYPE_FOR_OPERATION", "entity type cannot be inserted"))
                continue
            try:
                values = self._values(sobject, record, convert, creating=True)
                _check_required(sobject, values)
                prepared.append((sobject, values))
            except ValueProblem as problem:
                prepared.append(RecordResult.failure(None, problem.status_code, problem.message, [problem.field_name]))
        with self.store.transaction() as db:

            def insert(item: tuple[SObjectSchema, dict[str, object]]) -> RecordResult:
                sobject, values = item
                record_id = self.store.new_ids(sobject.key_prefix, 1, db)[0]
                row = self._complete_new(sobject, values, record_id, acting_user, now, db)
                columns = list(row)
                self.store.insert_rows(sobject.name, columns, [[row[column] for column in columns]], db)
                return RecordResult(record_id, True, created=True)

            return _apply(prepared, all_or_none, insert)

    # --- update ---------------------------------------------------------------------------------

    def update(self, items: Sequence[tuple[SObjectSchema, Mapping[str, object]]], convert: Converter, *,
               acting_user: str, now: str, all_or_none: bool = False) -> list[RecordResult]:
        """Updates each (sObject, record); a record names itself by "Id" (or "id"). All or none if asked."""
        with self.store.transaction() as db:
            outcomes: list[tuple[SObjectSchema, str, dict[str, object]] | RecordResult] = []
            for sobject, record in items:
                if not sobject.updateable:
                    outcomes.append(RecordResult.failure(None, "INVALID_TYPE_FOR_OPERATION", "entity type cannot be updated"))
                else:
                    outcomes.append(self._prepare_update(sobject, record, convert, db))

            def write(item: tuple[SObjectSchema, str, dict[str, object]]) -> RecordResult:
                sobject, record_id, values = item
                values = self._derive(sobject, values, db, record_id, now)
                values |= {"LastModifiedById": acting_user, "LastModifiedDate": now, "SystemModstamp": now}
                values = {name: value for name, value in values.items() if sobject.field(name) is not None}
                assignments = ", ".join(f"{quote(name)} = ?" for name in values)
                db.execute(f"UPDATE {quote(sobject.name)} SET {assignments} WHERE Id = ?", [*values.values(), record_id])
                return RecordResult(record_id, True)

            return _apply(outcomes, all_or_none, write)

    def _prepare_update(self, sobject: SObjectSchema, record: Mapping[str, object], convert: Converter,
                        db: sqlite3.Connection) -> tuple[SObjectSchema, str, dict[str, object]] | RecordResult:
        raw_id = record.get("Id", record.get("id"))
        if not isinstance(raw_id, str) or not raw_id:
            return RecordResult.failure(None, "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
        if id_problem(raw_id, sobject.key_prefix):
            return RecordResult.failure(raw_id, "MALFORMED_ID", f"{sobject.label} ID: id value of incorrect type: {raw_id}", ["Id"])
        record_id = to_18(raw_id)
        found = _find(db, sobject, record_id)
        if found is None:
            return RecordResult.failure(record_id, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        if found:
            return RecordResult.failure(record_id, "ENTITY_IS_DELETED", "entity is deleted")
        error = self.update_error(record_id)
        if error is not None:
            message = UPDATE_ERROR_MESSAGES.get(error, f"{error} (sandbox fault injection)")
            return RecordResult.failure(record_id, error, message.format(id=record_id))
        payload = {name: value for name, value in record.items() if name not in ("Id", "id", "attributes")}
        try:
            return sobject, record_id, self._values(sobject, payload, convert, creating=False)
        except ValueProblem as problem:
            return RecordResult.failure(record_id, problem.status_code, problem.message, [problem.field_name])

    # --- delete ---------------------------------------------------------------------------------

    def delete(self, items: Sequence[tuple[SObjectSchema | None, str]], *, acting_user: str, now: str,
               all_or_none: bool = False) -> list[RecordResult]:
        """Moves records to the recycle bin (IsDeleted = true), where queryAll still sees them.

        Each item is (sObject, id); the sObject is None when the id's key prefix names no object.
        """
        with self.store.transaction() as db:
            outcomes: list[tuple[SObjectSchema, str] | RecordResult] = []
            for sobject, raw_id in items:
                if sobject is None or id_problem(raw_id, sobject.key_prefix):
                    outcomes.append(RecordResult.failure(raw_id, "MALFORMED_ID", f"malformed id {raw_id}"))
                    continue
                record_id = to_18(raw_id)
                if not sobject.deletable or not sobject.has_soft_delete:
                    outcomes.append(RecordResult.failure(record_id, "INVALID_TYPE_FOR_OPERATION",
                                                         "entity type cannot be deleted"))
                    continue
                found = _find(db, sobject, record_id)
                if found is None:
                    outcomes.append(RecordResult.failure(record_id, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"))
                elif found:
                    outcomes.append(RecordResult.failure(record_id, "ENTITY_IS_DELETED", "entity is deleted"))
                else:
                    outcomes.append((sobject, record_id))

            def soft_delete(item: tuple[SObjectSchema, str]) -> RecordResult:
                sobject, record_id = item
                db.execute(
                    f"UPDATE {quote(sobject.name)} SET IsDeleted = 1, LastModifiedById = ?, LastModifiedDate = ?, "
                    f"SystemModstamp = ? WHERE Id = ?", (acting_user, now, now, record_id))
                return RecordResult(record_id, True)

            return _apply(outcomes, all_or_none, soft_delete)

    # --- shared steps -----------------------------------------------------------------------------

    def _values(self, sobject: SObjectSchema, record: Mapping[str, object], convert: Converter, *,
                creating: bool) -> dict[str, object]:
        """Checks every field of an incoming record and converts its value; raises ValueProblem."""
        values: dict[str, object] = {}
        for name, raw in record.items():
            if name == "attributes":
                continue
            target = sobject.field(name)
            if target is None:
                raise ValueProblem("INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject.name}", name)
            if raw is UNCHANGED:
                continue
            allowed = target.createable if creating else target.updateable
            if not allowed:
                raise ValueProblem(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {target.name}. Please check the security settings of this "
                    f"field and verify that it is read/write for your profile or permission set.", target.name)
            values[target.name] = convert(target, raw)
        return values

    def _complete_new(self, sobject: SObjectSchema, values: dict[str, object], record_id: str, acting_user: str,
                      now: str, db: sqlite3.Connection) -> dict[str, object]:
        row: dict[str, object] = {"Id": record_id}
        for f in sobject.fields:
            if f.type == "boolean" and f.name not in values:
                row[f.name] = 0
        if sobject.field("OwnerId") is not None:
            row["OwnerId"] = acting_user
        if sobject.name == "User":
            row["UserType"] = "Standard"
            row["IsActive"] = 1
        row.update(values)
        for name, value in (("CreatedById", acting_user), ("CreatedDate", now), ("LastModifiedById", acting_user),
                            ("LastModifiedDate", now), ("SystemModstamp", now)):
            if sobject.field(name) is not None:
                row[name] = value
        if sobject.name == "Case":
            number = db.execute(f"SELECT COUNT(*) FROM {quote('Case')}").fetchone()[0] + 1
            row["CaseNumber"] = f"{number:08d}"
        derived = self._derive(sobject, row, db, None, now)
        return {name: value for name, value in derived.items() if sobject.field(name) is not None}

    def _derive(self, sobject: SObjectSchema, values: dict[str, object], db: sqlite3.Connection,
                record_id: str | None, now: str) -> dict[str, object]:
        """Fields Salesforce computes from others (only those whose inputs are being written)."""
        values = dict(values)
        if sobject.field("Name") is not None and sobject.field("FirstName") is not None and (
                "FirstName" in values or "LastName" in values):
            first, last = values.get("FirstName"), values.get("LastName")
            if record_id is not None:
                stored = db.execute(f"SELECT FirstName, LastName FROM {quote(sobject.name)} WHERE Id = ?",
                                    (record_id,)).fetchone()
                first = values.get("FirstName", stored[0])
                last = values.get("LastName", stored[1])
            values["Name"] = " ".join(part for part in (first, last) if part)
        if sobject.name == "Opportunity" and "StageName" in values:
            values["IsClosed"] = int(values["StageName"] in ("Closed Won", "Closed Lost"))
            values["IsWon"] = int(values["StageName"] == "Closed Won")
            values["LastStageChangeDate"] = now  # Salesforce stamps it on every stage change
        if sobject.name == "Case" and "Status" in values:
            values["IsClosed"] = int(values["Status"] == "Closed")
            values["ClosedDate"] = now if values["IsClosed"] else None
        if sobject.name == "Task" and "Status" in values:
            values["IsClosed"] = int(values["Status"] == "Completed")
        return values


def _check_required(sobject: SObjectSchema, values: dict[str, object]) -> None:
    missing = [f.name for f in sobject.fields
               if not f.nillable and f.createable and f.type != "boolean" and f.name not in ("OwnerId",)
               and values.get(f.name) is None]
    if missing:
        raise ValueProblem("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                           missing[0])


def _find(db: sqlite3.Connection, sobject: SObjectSchema, record_id: str) -> bool | None:
    """None when no such record, else whether it is in the recycle bin."""
    deleted = "IsDeleted" if sobject.has_soft_delete else "0"
    row = db.execute(f"SELECT {deleted} FROM {quote(sobject.name)} WHERE Id = ?", (record_id,)).fetchone()
    return None if row is None else bool(row[0])


def _apply(outcomes: Sequence, all_or_none: bool, write: Callable) -> list[RecordResult]:
    """Writes each valid outcome (failures stay as they are), or with `all_or_none` and any failure, none."""
    if all_or_none and any(isinstance(item, RecordResult) for item in outcomes):
        return _rolled_back(outcomes)  # nothing was written yet
    return [item if isinstance(item, RecordResult) else write(item) for item in outcomes]


def _rolled_back(outcomes: Sequence[object]) -> list[RecordResult]:
    """allOrNone: the failures keep their errors, every valid record reports the rollback."""
    results = []
    for item in outcomes:
        if isinstance(item, RecordResult):
            results.append(item)
        else:
            record_id = item[1] if isinstance(item[1], str) else None  # (sObject, id, ...) or (sObject, values)
            results.append(RecordResult.failure(
                record_id, "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "Record rolled back because not all records were valid and the request was using AllOrNone header"))
    return results
