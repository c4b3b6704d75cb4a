"""The sandbox's logins and REST API, driven by the real simple-salesforce client over HTTPS."""

from __future__ import annotations

import time

import pytest
import requests
from simple_salesforce import Salesforce, SalesforceLogin
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connectors.salesforce import connect, http_session
from core.errors import SalesforceAuthError
from sandbox.runner import RunningSandbox
from tests.conftest import sandbox_settings

# --- logins -------------------------------------------------------------------------------------------


def test_versions_list_needs_no_session(sandbox: RunningSandbox) -> None:
    versions = http_session(sandbox.ca_cert).get(f"{sandbox.url}/services/data/", timeout=10).json()
    assert {"label", "url", "version"} <= set(versions[0])
    assert "59.0" in [entry["version"] for entry in versions]


@pytest.mark.parametrize("mode", ["client_credentials", "password", "jwt"])
def test_each_oauth_login_mode_gives_a_working_client(sandbox: RunningSandbox, mode: str) -> None:
    sf = connect(sandbox_settings(sandbox, salesforce_auth=mode).salesforce())
    assert sf.query("SELECT COUNT() FROM Organization")["totalSize"] == 1


def test_soap_login_through_simple_salesforce(sandbox: RunningSandbox) -> None:
    credentials = sandbox.credentials
    session_id, instance = SalesforceLogin(username=credentials.username, password=credentials.password,
                                           security_token=credentials.security_token,
                                           session=http_session(sandbox.ca_cert), scratch_url=sandbox.url)
    sf = Salesforce(instance=instance, session_id=session_id, session=http_session(sandbox.ca_cert))
    assert sf.query("SELECT Id FROM Organization")["totalSize"] == 1


def test_soap_login_with_a_wrong_password_raises_invalid_login(sandbox: RunningSandbox) -> None:
    with pytest.raises(SalesforceAuthenticationFailed, match="INVALID_LOGIN"):
        SalesforceLogin(username=sandbox.credentials.username, password="wrong", security_token="",
                        session=http_session(sandbox.ca_cert), scratch_url=sandbox.url)


@pytest.mark.parametrize(("override", "expected"), [
    ({"salesforce_client_id": "someone-else"}, "invalid_client_id"),
    ({"salesforce_client_secret": "wrong"}, "invalid_client"),
])
def test_wrong_client_credentials_are_refused_with_what_to_check(sandbox: RunningSandbox, override: dict,
                                                                 expected: str) -> None:
    with pytest.raises(SalesforceAuthError, match=expected) as raised:
        connect(sandbox_settings(sandbox, **override).salesforce())
    assert "PERSONA_SYNC_SALESFORCE_" in str(raised.value)


def test_wrong_password_is_refused(sandbox: RunningSandbox) -> None:
    with pytest.raises(SalesforceAuthError, match="invalid_grant"):
        connect(sandbox_settings(sandbox, salesforce_auth="password", salesforce_password="nope").salesforce())


def test_a_dead_server_names_the_url_and_what_to_check(sandbox: RunningSandbox) -> None:
    dead = "https://localhost:9"
    with pytest.raises(SalesforceAuthError, match="cannot reach https://localhost:9/services/oauth2/token"):
        connect(sandbox_settings(sandbox, salesforce_login_url=dead).salesforce())


def test_tls_is_verified_against_the_sandbox_ca_even_with_requests_ca_bundle_set(
        sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    assert connect(sandbox_settings(sandbox).salesforce()).query("SELECT Id FROM Organization")["totalSize"] == 1
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{sandbox.url}/services/data/", timeout=10)  # the system CAs do not know the sandbox


# --- queries ------------------------------------------------------------------------------------------


def test_query_pages_with_next_records_url_and_query_all_follows_them(sf: Salesforce) -> None:
    total = sf.query("SELECT COUNT() FROM Task")["totalSize"]
    first = sf.query("SELECT Id, Subject FROM Task")
    assert total > 2000
    assert first["totalSize"] == total and not first["done"] and len(first["records"]) == 2000
    assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
    second = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert len(second["records"]) == min(2000, total - 2000)
    ids = [record["Id"] for record in sf.query_all_iter("SELECT Id FROM Task")]
    assert len(ids) == total == len(set(ids))


def test_batch_size_header_sets_the_page_size(sf: Salesforce) -> None:
    sf.headers["Sforce-Query-Options"] = "batchSize=500"
    try:
        page = sf.query("SELECT Id FROM Task")
    finally:
        del sf.headers["Sforce-Query-Options"]
    assert len(page["records"]) == 500


def test_records_have_attributes_and_nested_relationship_fields(sf: Salesforce) -> None:
    records = sf.query("SELECT Id, Name, Profile.Name, Manager.Name, IsActive FROM User "
                       "WHERE Manager.Name != null LIMIT 3")["records"]
    assert records
    record = records[0]
    assert record["attributes"] == {"type": "User", "url": f"/services/data/v59.0/sobjects/User/{record['Id']}"}
    assert record["Profile"]["attributes"]["type"] == "Profile" and record["Profile"]["Name"]
    assert record["Manager"]["Name"] and record["IsActive"] in (True, False)


def test_datetimes_come_back_in_salesforce_format(sf: Salesforce) -> None:
    record = sf.query("SELECT CreatedDate, ActivityDate FROM Task WHERE ActivityDate != null LIMIT 1")["records"][0]
    assert record["CreatedDate"].endswith("+0000") and len(record["CreatedDate"]) == 28
    assert len(record["ActivityDate"]) == 10


def test_date_literals_and_filters_select_the_right_rows(sf: Salesforce) -> None:
    everything = sf.query("SELECT COUNT() FROM Task")["totalSize"]
    recent = sf.query("SELECT COUNT() FROM Task WHERE CreatedDate = LAST_N_DAYS:30")["totalSize"]
    older = sf.query("SELECT COUNT() FROM Task WHERE CreatedDate < LAST_N_DAYS:30")["totalSize"]
    assert recent + older == everything


def test_unknown_field_raises_malformed_request_with_invalid_field(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query("SELECT Id, Nonsense__c FROM User")
    assert raised.value.content[0]["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Nonsense__c' on entity 'User'" in raised.value.content[0]["message"]


def test_unknown_object_raises_invalid_type(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query("SELECT Id FROM Nonsense")
    assert raised.value.content[0]["errorCode"] == "INVALID_TYPE"


def test_syntax_error_raises_malformed_query(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query("SELECT Id FORM User")
    assert raised.value.content[0]["errorCode"] == "MALFORMED_QUERY"


def test_bad_query_locator_is_refused(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest, match="INVALID_QUERY_LOCATOR"):
        sf.query_more("01gHs0000000001IAA-2000")


# --- describe -----------------------------------------------------------------------------------------


def test_describe_lists_the_persona_fields_with_types_and_lengths(sf: Salesforce) -> None:
    fields = {field["name"]: field for field in sf.User.describe()["fields"]}
    assert fields["Persona_Reason__c"]["type"] == "string" and fields["Persona_Reason__c"]["length"] == 255
    assert fields["Persona_Reason__c"]["custom"] is True
    assert fields["Persona_Score__c"]["type"] == "double"
    assert fields["Persona_Updated__c"]["type"] == "datetime"
    assert fields["ManagerId"]["referenceTo"] == ["User"] and fields["ManagerId"]["relationshipName"] == "Manager"


def test_global_describe_lists_every_modelled_object(sf: Salesforce) -> None:
    names = {sobject["name"] for sobject in sf.describe()["sobjects"]}
    assert {"User", "Task", "Event", "Case", "LoginHistory", "SetupAuditTrail", "KnowledgeArticleVersion"} <= names


def test_unknown_sobject_is_not_found(sf: Salesforce) -> None:
    with pytest.raises(SalesforceResourceNotFound):
        sf.Nonsense.describe()


# --- records ------------------------------------------------------------------------------------------


def test_create_get_update_delete_a_record(sf: Salesforce) -> None:
    created = sf.Contact.create({"LastName": "Okafor", "FirstName": "Ada", "Email": "ada@example.com"})
    assert created["success"] and created["id"].startswith("003")
    record = sf.Contact.get(created["id"])
    assert record["Name"] == "Ada Okafor" and record["SystemModstamp"].endswith("+0000")
    assert sf.Contact.update(created["id"], {"Title": "CTO"}) == 204
    assert sf.Contact.get(created["id"])["Title"] == "CTO"
    assert sf.Contact.delete(created["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.get(created["id"])
    deleted = sf.query_all(f"SELECT Id, IsDeleted FROM Contact WHERE Id = '{created['id']}'", include_deleted=True)
    assert deleted["records"][0]["IsDeleted"] is True


def test_update_advances_system_modstamp(sf: Salesforce) -> None:
    user = sf.query("SELECT Id, SystemModstamp FROM User WHERE IsActive = true LIMIT 1")["records"][0]
    sf.User.update(user["Id"], {"Persona__c": "Case Solver"})
    after = sf.User.get(user["Id"])
    assert after["Persona__c"] == "Case Solver" and after["SystemModstamp"] > user["SystemModstamp"]


def test_a_too_long_string_raises_string_too_long(sf: Salesforce) -> None:
    user_id = sf.query("SELECT Id FROM User LIMIT 1")["records"][0]["Id"]
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.User.update(user_id, {"Persona_Reason__c": "x" * 256})
    assert raised.value.content[0]["errorCode"] == "STRING_TOO_LONG"
    assert raised.value.content[0]["fields"] == ["Persona_Reason__c"]


def test_a_value_of_the_wrong_type_and_an_unknown_field_are_refused(sf: Salesforce) -> None:
    user_id = sf.query("SELECT Id FROM User LIMIT 1")["records"][0]["Id"]
    with pytest.raises(SalesforceMalformedRequest, match="JSON_PARSER_ERROR"):
        sf.User.update(user_id, {"Persona_Score__c": "high"})
    with pytest.raises(SalesforceMalformedRequest, match="INVALID_FIELD"):
        sf.User.update(user_id, {"Nonsense__c": 1})


def test_users_cannot_be_deleted(sf: Salesforce) -> None:
    user_id = sf.query("SELECT Id FROM User LIMIT 1")["records"][0]["Id"]
    with pytest.raises(SalesforceGeneralError) as raised:
        sf.User.delete(user_id)
    assert raised.value.status == 405


# --- sObject Collections ------------------------------------------------------------------------------


def _user_ids(sf: Salesforce, count: int) -> list[str]:
    return [record["Id"] for record in sf.query(f"SELECT Id FROM User ORDER BY Id LIMIT {count}")["records"]]


def test_collections_update_reports_each_record_in_order(sf: Salesforce) -> None:
    ids = _user_ids(sf, 3)
    records = [{"attributes": {"type": "User"}, "id": ids[0], "Persona__c": "Deal Closer"},
               {"attributes": {"type": "User"}, "id": ids[1], "Persona_Reason__c": "y" * 300},
               {"attributes": {"type": "User"}, "id": ids[2], "Persona__c": "Data Expert"}]
    results = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records})
    assert [result["success"] for result in results] == [True, False, True]
    assert results[1]["errors"][0]["statusCode"] == "STRING_TOO_LONG"
    assert sf.User.get(ids[2])["Persona__c"] == "Data Expert"


def test_collections_all_or_none_rolls_everything_back(sf: Salesforce) -> None:
    ids = _user_ids(sf, 2)
    before = sf.User.get(ids[0])["Title"]
    records = [{"attributes": {"type": "User"}, "id": ids[0], "Title": "Changed"},
               {"attributes": {"type": "User"}, "id": ids[1], "Persona_Score__c": "not a number"}]
    results = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": True, "records": records})
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert results[1]["errors"][0]["statusCode"] == "JSON_PARSER_ERROR"
    assert sf.User.get(ids[0])["Title"] == before


def test_collections_refuse_more_than_200_records(sf: Salesforce) -> None:
    ids = _user_ids(sf, 1)
    records = [{"attributes": {"type": "User"}, "id": ids[0], "Title": "x"}] * 201
    with pytest.raises(SalesforceMalformedRequest, match="EXCEEDED_ID_LIMIT"):
        sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records})


def test_collections_create_get_and_delete(sf: Salesforce) -> None:
    records = [{"attributes": {"type": "Lead"}, "LastName": f"Lead {n}", "Company": "Initech",
                "Status": "Open - Not Contacted"} for n in range(3)]
    created = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": records})
    ids = [result["id"] for result in created]
    fetched = sf.restful("composite/sobjects/Lead", params={"ids": ",".join(ids), "fields": "LastName,Company"})
    assert [record["LastName"] for record in fetched] == ["Lead 0", "Lead 1", "Lead 2"]
    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join(ids), "allOrNone": "false"})
    assert all(result["success"] for result in deleted)


def test_collections_refuse_user_mixed_with_other_objects(sf: Salesforce) -> None:
    ids = _user_ids(sf, 1)
    contact = sf.query("SELECT Id FROM Contact LIMIT 1")["records"][0]["Id"]
    records = [{"attributes": {"type": "User"}, "id": ids[0], "Title": "x"},
               {"attributes": {"type": "Contact"}, "id": contact, "Title": "y"}]
    with pytest.raises(SalesforceMalformedRequest, match="MIXED_DML_OPERATION"):
        sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records})


# --- limits, sessions and faults ----------------------------------------------------------------------


def test_limits_count_every_call(sf: Salesforce) -> None:
    before = sf.limits()["DailyApiRequests"]["Remaining"]
    sf.query("SELECT Id FROM Organization")
    sf.query("SELECT Id FROM Organization")
    after = sf.limits()["DailyApiRequests"]["Remaining"]
    assert before - after == 3  # two queries and the second limits call itself
    assert sf.api_usage["api-usage"].used > 0


def test_idle_sessions_expire_and_answer_invalid_session_id(tmp_path) -> None:
    from tests.conftest import _start

    sandbox = _start(tmp_path / "sandbox", session_idle_seconds=0.5)
    try:
        sf = connect(sandbox_settings(sandbox).salesforce())
        sf.query("SELECT Id FROM Organization")
        time.sleep(0.8)
        with pytest.raises(SalesforceExpiredSession) as raised:
            sf.query("SELECT Id FROM Organization")
        assert raised.value.content[0]["errorCode"] == "INVALID_SESSION_ID"
    finally:
        sandbox.stop()


def test_expire_all_sessions_fault(faults: RunningSandbox) -> None:
    sf = connect(sandbox_settings(faults).salesforce())
    sf.query("SELECT Id FROM Organization")
    assert faults.expire_sessions() >= 1
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Organization")


def test_request_limit_fault_after_n_calls(faults: RunningSandbox, sf: Salesforce) -> None:
    faults.set_faults(request_limit_after=2)
    sf.query("SELECT Id FROM Organization")
    sf.query("SELECT Id FROM Organization")
    with pytest.raises(SalesforceRefusedRequest) as raised:
        sf.query("SELECT Id FROM Organization")
    assert raised.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_rate_limit_storm_passes(faults: RunningSandbox, sf: Salesforce) -> None:
    faults.set_faults(request_limit_after=0, request_limit_calls=2)
    for _ in range(2):
        with pytest.raises(SalesforceRefusedRequest):
            sf.query("SELECT Id FROM Organization")
    assert sf.query("SELECT Id FROM Organization")["totalSize"] == 1


def test_unavailable_share_fault_answers_503(faults: RunningSandbox, sf: Salesforce) -> None:
    faults.set_faults(unavailable_share=1.0)
    with pytest.raises(SalesforceGeneralError) as raised:
        sf.query("SELECT Id FROM Organization")
    assert raised.value.status == 503


def test_failing_updates_fault_raises_custom_validation(faults: RunningSandbox, sf: Salesforce) -> None:
    user_id = _user_ids(sf, 1)[0]
    faults.set_faults(fail_update_ids=[user_id])
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.User.update(user_id, {"Persona__c": "Case Solver"})
    assert raised.value.content[0]["errorCode"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"


def test_slow_fault_delays_responses(faults: RunningSandbox, sf: Salesforce) -> None:
    faults.set_faults(slow_ms=300)
    started = time.monotonic()
    sf.query("SELECT Id FROM Organization")
    assert time.monotonic() - started >= 0.3


def test_admin_endpoints_need_the_admin_token(sandbox: RunningSandbox) -> None:
    response = http_session(sandbox.ca_cert).put(f"{sandbox.url}/_sandbox/faults", json={"slow_ms": 1}, timeout=10)
    assert response.status_code == 403
    assert "admin-token" in response.json()[0]["message"]


def test_hidden_rows_fault_hides_the_same_rows_from_every_query(faults: RunningSandbox, sf: Salesforce) -> None:
    everything = sf.query("SELECT COUNT() FROM Case")["totalSize"]
    all_ids = {row["Id"] for row in sf.query_all("SELECT Id FROM Case")["records"]}
    faults.set_faults(hidden_rows={"Case": 0.9})  # the integration user lost sight of most cases
    visible = sf.query("SELECT COUNT() FROM Case")["totalSize"]
    rest_ids = {row["Id"] for row in sf.query_all("SELECT Id FROM Case")["records"]}
    bulk_ids = {line.split(",")[0].strip('"') for page in sf.bulk2.Case.query("SELECT Id FROM Case", wait=0)
                for line in page.splitlines()[1:]}
    assert 0 < visible < everything * 0.2 and len(rest_ids) == visible
    assert bulk_ids == rest_ids and rest_ids < all_ids
    assert sf.query("SELECT COUNT() FROM Task")["totalSize"] > 0  # other objects are untouched
