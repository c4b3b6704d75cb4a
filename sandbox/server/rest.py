"""The REST API: versions, limits, SOQL queries with paging, describe, sObject CRUD, sObject Collections.

Paths, methods, status codes and bodies follow Salesforce's REST API as simple-salesforce drives it
(trailing slashes included: `query/?q=`, `limits/`, `sobjects/User/`).
"""

from __future__ import annotations

import itertools
import json
import time
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response

from sandbox.ids import id_problem, make_id, to_18
from sandbox.records import RecordResult
from sandbox.schema import SObjectSchema
from sandbox.server.context import API_VERSIONS, Call, release_label
from sandbox.server.errors import ApiError, json_response, malformed, not_found
from sandbox.soql import CompiledQuery, SoqlError, compile_soql, json_records
from sandbox.values import json_to_stored

DEFAULT_PAGE_SIZE = 2000
COLLECTION_LIMIT = 200
# A query locator unused this long is dropped, as Salesforce drops idle cursors.
LOCATOR_IDLE_SECONDS = 15 * 60

_locator_numbers = itertools.count(int(time.time() * 1000) % 10**12)


# --- discovery -------------------------------------------------------------------------------------

async def versions(request: Request) -> Response:
    """`GET /services/data/`: every API version the sandbox answers (no session needed)."""
    return json_response([{"label": release_label(version), "url": f"/services/data/v{version}", "version": version}
                          for version in API_VERSIONS])


def resources(call: Call) -> Response:
    """`GET /services/data/vXX.X/`: the resources of one version."""
    base = f"/services/data/v{call.version}"
    names = ("sobjects", "query", "queryAll", "limits", "composite", "jobs")
    return json_response({name: f"{base}/{name}" for name in names})


def limits(call: Call) -> Response:
    """`GET limits/`: the org's allowances; DailyApiRequests counts every API call really made."""
    usage = call.state.usage
    return json_response({
        "DailyApiRequests": {"Max": usage.daily_limit, "Remaining": usage.remaining},
        "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
        "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
        "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
        "DataStorageMB": {"Max": 1024, "Remaining": 1024},
    })


def global_describe(call: Call) -> Response:
    """`GET sobjects`: every sObject of the org."""
    return json_response({
        "encoding": "UTF-8",
        "maxBatchSize": COLLECTION_LIMIT,
        "sobjects": [sobject.summary(call.version) for sobject in call.state.store.schema.values()],
    })


def sobject_metadata(call: Call) -> Response:
    """`GET sobjects/{type}/`: an object's summary and recent items."""
    sobject = _sobject(call)
    return json_response({"objectDescribe": sobject.summary(call.version), "recentItems": []})


def describe(call: Call) -> Response:
    """`GET sobjects/{type}/describe`: an object's fields with types, lengths and relationships."""
    return json_response(_sobject(call).describe(call.version))


# --- queries ---------------------------------------------------------------------------------------

def query(call: Call) -> Response:
    """`GET query/?q=`: the first page of a SOQL query (deleted rows hidden)."""
    return _first_page(call, include_deleted=False)


def query_all(call: Call) -> Response:
    """`GET queryAll/?q=`: like query, with deleted (and archived) rows."""
    return _first_page(call, include_deleted=True)


def query_more(call: Call) -> Response:
    """`GET query/{locator}` (or queryAll/): the page of a query that a nextRecordsUrl points at."""
    locator = call.request.path_params["locator"]
    result_id, _, offset_text = locator.rpartition("-")
    if not result_id or not offset_text.isdigit() or id_problem(result_id, "01g"):
        raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    info = call.state.results.info(_result_table(result_id))
    if info is None:
        raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    total, description = info
    origin = json.loads(description)
    compiled = _compile(call, origin["soql"], origin["include_deleted"], datetime.fromisoformat(origin["now"]))
    offset = int(offset_text)
    rows = call.state.results.page(_result_table(result_id), offset, _page_size(call.request)).fetchall()
    return _page_response(call, compiled, rows, total, result_id, offset + len(rows))


def _first_page(call: Call, include_deleted: bool) -> Response:
    soql = call.request.query_params.get("q")
    if not soql:
        raise ApiError(400, "MALFORMED_QUERY", "A query string is required: query/?q=SELECT ...")
    now = datetime.now().astimezone()
    compiled = _compile(call, soql, include_deleted, now)
    results = call.state.results
    if compiled.is_count:
        count = results.connection().execute(compiled.sql, compiled.params).fetchone()[0]
        return json_response({"totalSize": count, "done": True, "records": []})
    page_size = _page_size(call.request)
    cursor = results.connection().execute(compiled.sql, compiled.params)
    rows = cursor.fetchmany(page_size + 1)
    cursor.close()
    if len(rows) <= page_size:
        return _page_response(call, compiled, rows, len(rows), None, len(rows))
    # More than a page: evaluate once into a result table and serve pages from it.
    results.expire("rs_", LOCATOR_IDLE_SECONDS)
    result_id = make_id("01g", next(_locator_numbers))
    description = json.dumps({"soql": soql, "include_deleted": include_deleted, "now": now.isoformat()})
    total = results.materialise(_result_table(result_id), compiled.sql, compiled.params, description)
    rows = results.page(_result_table(result_id), 0, page_size).fetchall()
    return _page_response(call, compiled, rows, total, result_id, len(rows))


def _page_response(call: Call, compiled: CompiledQuery, rows: list, total: int, result_id: str | None,
                   next_offset: int) -> Response:
    content: dict = {"totalSize": total, "done": result_id is None or next_offset >= total}
    if not content["done"]:
        kind = "queryAll" if "/queryAll" in call.request.url.path else "query"
        content["nextRecordsUrl"] = f"/services/data/v{call.version}/{kind}/{result_id}-{next_offset}"
    content["records"] = list(json_records(compiled, rows, call.version))
    return json_response(content)


def _compile(call: Call, soql: str, include_deleted: bool, now: datetime) -> CompiledQuery:
    try:
        return compile_soql(soql, call.state.store.schema, now=now, include_deleted=include_deleted,
                            hidden_rows=call.state.faults.hidden_rows())
    except SoqlError as error:
        raise ApiError(400, error.error_code, error.message) from None


def _page_size(request: Request) -> int:
    """Page size from `Sforce-Query-Options: batchSize=N` (200..2000), default 2000."""
    options = request.headers.get("sforce-query-options", "")
    for option in options.split(","):
        name, _, value = option.strip().partition("=")
        if name.lower() == "batchsize" and value.isdigit():
            return min(max(int(value), 200), DEFAULT_PAGE_SIZE)
    return DEFAULT_PAGE_SIZE


def _result_table(result_id: str) -> str:
    return f"rs_{result_id}"


# --- single records --------------------------------------------------------------------------------

def get_record(call: Call) -> Response:
    """`GET sobjects/{type}/{id}[?fields=a,b]`: one record (all fields unless `fields` names some)."""
    sobject = _sobject(call)
    record_id = _record_id(call, sobject)
    requested = call.request.query_params.get("fields")
    names = [name.strip() for name in requested.split(",")] if requested else sobject.field_names
    for name in names:
        if sobject.field(name) is None:
            raise ApiError(400, "INVALID_FIELD", f"No such column '{name}' on entity '{sobject.name}'. If you are "
                           "attempting to use a custom field, be sure to append the '__c' after the custom field name.")
    soql = f"SELECT {', '.join(names)} FROM {sobject.name} WHERE Id = '{record_id}'"
    compiled = _compile(call, soql, False, datetime.now().astimezone())
    rows = call.state.results.connection().execute(compiled.sql, compiled.params).fetchall()
    if not rows:
        raise not_found()
    return json_response(next(json_records(compiled, rows, call.version)))


def create_record(call: Call) -> Response:
    """`POST sobjects/{type}/`: 201 with the new id, or 400 with the record's errors."""
    sobject = _sobject(call)
    if not sobject.createable:
        raise _method_not_allowed("POST", "GET,HEAD")
    record = _json_object(call)
    result = call.state.writer.create([(sobject, record)], json_to_stored, acting_user=call.session.user_id,
                                      now=call.now)[0]
    if not result.success:
        raise _record_error(result)
    return json_response(result.as_json(), status=201)


def update_record(call: Call) -> Response:
    """`PATCH sobjects/{type}/{id}`: 204, or 400 / 404 with the errors."""
    sobject = _sobject(call)
    if not sobject.updateable:
        raise _method_not_allowed("PATCH", "GET,HEAD")
    record_id = _record_id(call, sobject)
    record = _json_object(call) | {"Id": record_id}
    result = call.state.writer.update([(sobject, record)], json_to_stored, acting_user=call.session.user_id,
                                      now=call.now)[0]
    if not result.success:
        raise _record_error(result)
    return Response(status_code=204)


def delete_record(call: Call) -> Response:
    """`DELETE sobjects/{type}/{id}`: 204; objects that cannot be deleted (User) answer 405."""
    sobject = _sobject(call)
    if not sobject.deletable or not sobject.has_soft_delete:
        raise _method_not_allowed("DELETE", "GET,HEAD,PATCH" if sobject.updateable else "GET,HEAD")
    record_id = _record_id(call, sobject)
    result = call.state.writer.delete([(sobject, record_id)], acting_user=call.session.user_id, now=call.now)[0]
    if not result.success:
        raise _record_error(result)
    return Response(status_code=204)


# --- sObject Collections -----------------------------------------------------------------------------

def collection_create(call: Call) -> Response:
    """`POST composite/sobjects`: up to 200 new records, results in request order."""
    all_or_none, items = _collection_items(call, with_ids=False)
    results = call.state.writer.create(items, json_to_stored, acting_user=call.session.user_id, now=call.now,
                                       all_or_none=all_or_none)
    return json_response([result.as_json() for result in results])


def collection_update(call: Call) -> Response:
    """`PATCH composite/sobjects`: up to 200 updates, each record naming its id."""
    all_or_none, items = _collection_items(call, with_ids=True)
    results = call.state.writer.update(items, json_to_stored, acting_user=call.session.user_id, now=call.now,
                                       all_or_none=all_or_none)
    return json_response([result.as_json() for result in results])


def collection_delete(call: Call) -> Response:
    """`DELETE composite/sobjects?ids=a,b&allOrNone=false`: up to 200 deletions."""
    ids = [value for value in call.request.query_params.get("ids", "").split(",") if value]
    if not ids:
        raise ApiError(400, "MISSING_ARGUMENT", "ids parameter is required")
    _check_collection_size(len(ids))
    all_or_none = call.request.query_params.get("allOrNone", "false").lower() == "true"
    by_prefix = {sobject.key_prefix: sobject for sobject in call.state.store.schema.values()}
    items = [(by_prefix.get(record_id[:3]), record_id) for record_id in ids]
    results = call.state.writer.delete(items, acting_user=call.session.user_id, now=call.now, all_or_none=all_or_none)
    return json_response([result.as_json() for result in results])


def collection_get(call: Call) -> Response:
    """`GET composite/sobjects/{type}?ids=...&fields=...`: records in id order, null where not found."""
    sobject = _sobject(call)
    ids = [value for value in call.request.query_params.get("ids", "").split(",") if value]
    names = [value for value in call.request.query_params.get("fields", "").split(",") if value]
    if not ids or not names:
        raise ApiError(400, "MISSING_ARGUMENT", "ids and fields parameters are required")
    _check_collection_size(len(ids))
    bad = [record_id for record_id in ids if id_problem(record_id, sobject.key_prefix)]
    if bad:
        raise ApiError(400, "MALFORMED_ID", f"malformed id {bad[0]}")
    id_list = ", ".join(f"'{to_18(record_id)}'" for record_id in ids)
    soql = f"SELECT {', '.join(dict.fromkeys(['Id', *names]))} FROM {sobject.name} WHERE Id IN ({id_list})"
    compiled = _compile(call, soql, False, datetime.now().astimezone())
    rows = call.state.results.connection().execute(compiled.sql, compiled.params).fetchall()
    found = {record["Id"]: record for record in json_records(compiled, rows, call.version)}
    return json_response([found.get(to_18(record_id)) for record_id in ids])


def _collection_items(call: Call, with_ids: bool) -> tuple[bool, list[tuple[SObjectSchema, dict]]]:
    body = _json_object(call)
    records = body.get("records")
    if not isinstance(records, list) or not records:
        raise ApiError(400, "INVALID_FIELD", "records is required and must be a non-empty list")
    _check_collection_size(len(records))
    schema = call.state.store
    items = []
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            raise malformed(f"record {position} is not a JSON object")
        type_name = (record.get("attributes") or {}).get("type")
        sobject = schema.sobject(type_name) if isinstance(type_name, str) else None
        if sobject is None:
            raise ApiError(400, "INVALID_TYPE", f"record {position}: attributes.type is missing or not a known sObject")
        if with_ids and not record.get("id") and not record.get("Id"):
            raise ApiError(400, "MISSING_ARGUMENT", f"record {position}: Id not specified in an update call")
        if not with_ids and (record.get("id") or record.get("Id")):
            raise ApiError(400, "INVALID_FIELD", f"record {position}: cannot specify Id in an insert call")
        items.append((sobject, record))
    types = {sobject.name for sobject, _ in items}
    if "User" in types and len(types) > 1:
        raise ApiError(400, "MIXED_DML_OPERATION", "DML operation on setup object is not permitted after you have "
                       "updated a non-setup object (or vice versa): User")
    return bool(body.get("allOrNone", False)), items


def _check_collection_size(count: int) -> None:
    if count > COLLECTION_LIMIT:
        raise ApiError(400, "EXCEEDED_ID_LIMIT",
                       f"record limit reached. cannot submit more than {COLLECTION_LIMIT} records into this call")


# --- shared steps ----------------------------------------------------------------------------------

def _sobject(call: Call) -> SObjectSchema:
    name = call.request.path_params["sobject"]
    sobject = call.state.store.sobject(name)
    if sobject is None:
        raise not_found()
    return sobject


def _record_id(call: Call, sobject: SObjectSchema) -> str:
    record_id = call.request.path_params["record_id"]
    if id_problem(record_id, sobject.key_prefix):
        raise ApiError(404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {record_id}")
    return to_18(record_id)


def _json_object(call: Call) -> dict:
    raw = call.request.state.body if hasattr(call.request.state, "body") else b""
    try:
        content = json.loads(raw or b"{}")
    except json.JSONDecodeError as error:
        raise malformed(f"Unexpected character at [line:{error.lineno}, column:{error.colno}]: {error.msg}") from None
    if not isinstance(content, dict):
        raise malformed("Cannot deserialize instance of sObject from a non-object JSON value")
    return content


def _record_error(result: RecordResult) -> ApiError:
    error = result.errors[0]
    status = 404 if error["statusCode"] in ("INVALID_CROSS_REFERENCE_KEY", "ENTITY_IS_DELETED") else 400
    if status == 404:
        return ApiError(404, "NOT_FOUND", "The requested resource does not exist")
    return ApiError(status, error["statusCode"], error["message"], error["fields"])


def _method_not_allowed(method: str, allowed: str) -> ApiError:
    return ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are {allowed}")

