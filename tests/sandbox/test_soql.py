"""SOQL in the sandbox: what a query selects, filters and refuses, run against a real org database."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest

from sandbox.soql import SoqlError, compile_soql, json_records
from sandbox.store import OrgStore

# A Friday; its week started on Sunday 2024-03-10.
NOW = datetime(2024, 3, 15, 12, 0, tzinfo=timezone.utc)
API_VERSION = "60.0"

USER_COLUMNS = ("Id", "Name", "FirstName", "LastName", "Username", "Email", "IsActive", "Title", "Department",
                "ManagerId", "CreatedDate", "LastLoginDate", "Persona_Score__c")
TASK_COLUMNS = ("Id", "Subject", "OwnerId", "Status", "IsClosed", "ActivityDate", "CallDurationInSeconds",
                "IsDeleted")


class Org:
    """The seeded org: its store and the ids of the records the tests talk about."""

    def __init__(self, store: OrgStore, ids: dict[str, str]) -> None:
        self.store = store
        self.ids = ids

    def compile(self, soql: str, **options):
        options.setdefault("now", NOW)
        return compile_soql(soql, self.store.schema, **options)

    def rows(self, soql: str, **options) -> list[tuple]:
        query = self.compile(soql, **options)
        return self.store.connection().execute(query.sql, query.params).fetchall()

    def first_values(self, soql: str, **options) -> list:
        """The first column of every row, sorted (for filters, where order is not the point)."""
        return sorted(row[0] for row in self.rows(soql, **options))

    def records(self, soql: str, **options) -> list[dict]:
        query = self.compile(soql, **options)
        rows = self.store.connection().execute(query.sql, query.params)
        return list(json_records(query, rows, API_VERSION))

    def error(self, soql: str, **options) -> SoqlError:
        with pytest.raises(SoqlError) as caught:
            self.compile(soql, **options)
        return caught.value


@pytest.fixture(scope="module")
def org(tmp_path_factory) -> Org:
    store = OrgStore.create(tmp_path_factory.mktemp("soql") / "org.db", {})
    with store.transaction() as db:
        ada, bob, cy, di = store.new_ids("005", 4, db)
        store.insert_rows("User", USER_COLUMNS, [
            (ada, "Ada Lovelace", "Ada", "Lovelace", "ada@example.com", "ada@example.com", 1, "Engineer", "R&D",
             None, "2024-01-10T09:00:00.000Z", "2024-03-15T08:00:00.000Z", 0.75),
            (bob, "Bob Stone", "Bob", "Stone", "bob@example.com", "bob@example.com", 0, None, "Sales",
             ada, "2024-03-14T23:59:59.999Z", None, None),
            (cy, "Cy Young", "Cy", "Young", "cy@example.com", "cy@example.com", 1, "engineer", None,
             ada, "2024-03-15T00:00:00.000Z", "2024-03-16T00:00:00.000Z", 0.5),
            (di, "Di Prince", "Di", "Prince", "di@example.com", "di@example.com", 1, "Head_of 100%", "Sales",
             bob, "2024-03-08T12:00:00.000Z", "2024-03-14T12:00:00.000Z", -0.25),
        ], db)
        call, email, orphan, deleted = store.new_ids("00T", 4, db)
        store.insert_rows("Task", TASK_COLUMNS, [
            (call, "Call Acme", ada, "Completed", 1, "2024-03-15", 120, 0),
            (email, "Email Beta", bob, "Not Started", 0, "2024-03-14", None, 0),
            (orphan, "Unowned", None, "In Progress", 0, None, 45, 0),
            (deleted, "Deleted call", ada, "Completed", 1, "2024-03-01", 300, 1),
        ], db)
        login_a, login_b = store.new_ids("0Ya", 2, db)
        store.insert_rows("LoginHistory", ("Id", "UserId", "LoginTime", "Status"), [
            (login_a, ada, "2024-03-15T08:00:00.000Z", "Success"),
            (login_b, bob, "2024-03-14T08:00:00.000Z", "Invalid Password"),
        ], db)
        online, draft = store.new_ids("ka0", 2, db)
        store.insert_rows("KnowledgeArticleVersion", ("Id", "Title", "PublishStatus", "Language"), [
            (online, "Reset a password", "Online", "en_US"),
            (draft, "Rotate keys", "Draft", "en_US"),
        ], db)
        [escaped] = store.new_ids("500", 1, db)
        store.insert_rows("Case", ("Id", "Subject", "Status"), [(escaped, "It's a \\ back\tslash", "New")], db)
    ids = dict(ada=ada, bob=bob, cy=cy, di=di, call=call, email=email, orphan=orphan, deleted=deleted, escaped=escaped,
               online=online, draft=draft)
    yield Org(store, ids)
    store.close()


# --- SELECT ----------------------------------------------------------------------------------------

def test_select_paths_use_schema_casing_and_positions(org):
    query = org.compile("select ID, subject, owner.EMAIL from TASK")

    assert [(c.path, c.relationship, c.index) for c in query.columns] == [
        ("Id", None, 0), ("Subject", None, 1), ("Owner.Email", "Owner", 2)
    ]
    assert query.sobject.name == "Task"


def test_rest_records_nest_relationships_and_show_empty_lookups_as_null(org):
    records = org.records("SELECT Id, Subject, Owner.Name, Owner.Email FROM Task ORDER BY Subject")

    url = f"/services/data/v{API_VERSION}/sobjects"
    assert records[0] == {
        "attributes": {"type": "Task", "url": f"{url}/Task/{org.ids['call']}"},
        "Id": org.ids["call"],
        "Subject": "Call Acme",
        "Owner": {"attributes": {"type": "User", "url": f"{url}/User/{org.ids['ada']}"},
                  "Name": "Ada Lovelace", "Email": "ada@example.com"},
    }
    assert [record["Subject"] for record in records] == ["Call Acme", "Email Beta", "Unowned"]
    assert records[2]["Owner"] is None


def test_rest_records_convert_stored_values_to_json(org):
    [record] = org.records("SELECT IsActive, CreatedDate, Persona_Score__c, LastLoginDate, Title "
                           "FROM User WHERE Name = 'Bob Stone'")

    assert record == {
        "attributes": {"type": "User", "url": f"/services/data/v{API_VERSION}/sobjects/User/{org.ids['bob']}"},
        "IsActive": False, "CreatedDate": "2024-03-14T23:59:59.999+0000", "Persona_Score__c": None,
        "LastLoginDate": None, "Title": None,
    }


def test_rest_records_convert_values_inside_relationships(org):
    [record] = org.records("SELECT Subject, CallDurationInSeconds, IsClosed, ActivityDate, Owner.IsActive, "
                           "Owner.LastLoginDate FROM Task WHERE Subject = 'Call Acme'")

    assert record["CallDurationInSeconds"] == 120
    assert record["IsClosed"] is True
    assert record["ActivityDate"] == "2024-03-15"
    assert record["Owner"]["IsActive"] is True
    assert record["Owner"]["LastLoginDate"] == "2024-03-15T08:00:00.000+0000"


def test_selected_id_columns_are_reused_for_urls(org):
    query = org.compile("SELECT Id, Manager.Id, Manager.Name FROM User")

    assert query.record_id_index == 0
    assert query.relationship_id_index == {"Manager": 1}
    assert len(org.rows("SELECT Id, Manager.Id, Manager.Name FROM User")[0]) == 3


def test_hidden_id_columns_follow_the_selected_fields(org):
    query = org.compile("SELECT Name, Manager.Name FROM User")

    assert query.record_id_index == 2
    assert query.relationship_id_index == {"Manager": 3}


def test_duplicate_field_is_malformed(org):
    error = org.error("SELECT Id, Name, name FROM User")

    assert (error.error_code, error.message) == ("MALFORMED_QUERY", "duplicate field selected: Name")


# --- WHERE: operators, values and SOQL's null semantics -------------------------------------------

@pytest.mark.parametrize("condition, expected", [
    ("Persona_Score__c = 0.5", ["Cy Young"]),
    ("Persona_Score__c != 0.5", ["Ada Lovelace", "Bob Stone", "Di Prince"]),
    ("Persona_Score__c <> 0.5", ["Ada Lovelace", "Bob Stone", "Di Prince"]),
    ("Persona_Score__c < 0.5", ["Di Prince"]),
    ("Persona_Score__c <= 0.5", ["Cy Young", "Di Prince"]),
    ("Persona_Score__c > 0.5", ["Ada Lovelace"]),
    ("Persona_Score__c >= 0.5", ["Ada Lovelace", "Cy Young"]),
    ("Persona_Score__c = -0.25", ["Di Prince"]),
    ("Persona_Score__c < 1", ["Ada Lovelace", "Cy Young", "Di Prince"]),
    ("Name > 'C'", ["Cy Young", "Di Prince"]),
])
def test_comparison_operators(org, condition, expected):
    assert org.first_values(f"SELECT Name FROM User WHERE {condition}") == expected


@pytest.mark.parametrize("condition, expected", [
    ("Title = null", ["Bob Stone"]),
    ("Title != null", ["Ada Lovelace", "Cy Young", "Di Prince"]),
    ("Title != 'Engineer'", ["Bob Stone", "Di Prince"]),
    ("NOT Title = 'Engineer'", ["Bob Stone", "Di Prince"]),
    ("NOT Title LIKE 'Eng%'", ["Bob Stone", "Di Prince"]),
    ("Title = ''", ["Bob Stone"]),
    ("Title IN ('Engineer', null)", ["Ada Lovelace", "Bob Stone", "Cy Young"]),
    ("Title NOT IN ('Engineer')", ["Bob Stone", "Di Prince"]),
    ("Title NOT IN ('Engineer', null)", ["Di Prince"]),
    ("NOT Title IN ('Engineer')", ["Bob Stone", "Di Prince"]),
])
def test_null_semantics_follow_soql(org, condition, expected):
    assert org.first_values(f"SELECT Name FROM User WHERE {condition}") == expected


@pytest.mark.parametrize("condition, expected", [
    ("Title = 'ENGINEER'", ["Ada Lovelace", "Cy Young"]),
    ("Department IN ('sales', 'r&d')", ["Ada Lovelace", "Bob Stone", "Di Prince"]),
    ("Title LIKE 'eng%'", ["Ada Lovelace", "Cy Young"]),
    ("Name LIKE '%o%e%'", ["Ada Lovelace", "Bob Stone"]),
    ("Name LIKE '_y %'", ["Cy Young"]),
    ("Title LIKE 'Head\\_of%'", ["Di Prince"]),
    ("Title LIKE '%100\\%'", ["Di Prince"]),
    ("Title LIKE 'Head\\_ox%'", []),
])
def test_string_equality_in_and_like_ignore_case(org, condition, expected):
    assert org.first_values(f"SELECT Name FROM User WHERE {condition}") == expected


@pytest.mark.parametrize("condition, expected", [
    ("IsActive = true AND Department = 'Sales'", ["Di Prince"]),
    ("IsActive = false OR Department = null", ["Bob Stone", "Cy Young"]),
    ("(IsActive = false OR Department = null) AND Title != null", ["Cy Young"]),
    ("IsActive = true AND (Title = 'engineer' OR Department = 'Sales') AND Persona_Score__c > 0",
     ["Ada Lovelace", "Cy Young"]),
    ("NOT (IsActive = true AND Department = 'Sales')", ["Ada Lovelace", "Bob Stone", "Cy Young"]),
    ("NOT (Department = 'Sales' OR Title = 'Head_of 100%')", ["Ada Lovelace", "Cy Young"]),
    ("((Name = 'Ada Lovelace'))", ["Ada Lovelace"]),
])
def test_and_or_not_with_parentheses(org, condition, expected):
    assert org.first_values(f"SELECT Name FROM User WHERE {condition}") == expected


def test_mixing_and_with_or_without_parentheses_is_malformed(org):
    error = org.error("SELECT Id FROM User WHERE IsActive = true AND Department = 'Sales' OR Title = null")

    assert error.error_code == "MALFORMED_QUERY"
    assert "unexpected token: 'OR'" in error.message
    assert "Row:1:Column:68" in error.message


def test_booleans_compare_to_stored_integers(org):
    assert org.first_values("SELECT Name FROM User WHERE IsActive = FALSE") == ["Bob Stone"]
    assert org.first_values("SELECT Name FROM User WHERE IsActive != false") == [
        "Ada Lovelace", "Cy Young", "Di Prince"]


def test_string_escapes_decode(org):
    soql = "SELECT Id FROM Case WHERE Subject = 'It\\'s a \\\\ back\\tslash'"

    assert org.first_values(soql) == [org.ids["escaped"]]


def test_invalid_string_escape_is_malformed(org):
    error = org.error("SELECT Id FROM User WHERE Name = 'a\\qb'")

    assert error.error_code == "MALFORMED_QUERY"
    assert "Illegal character sequence '\\q'" in error.message


@pytest.mark.parametrize("literal", [
    "2024-03-15T08:00:00Z", "2024-03-15T08:00:00.000Z", "2024-03-15T08:00:00+00:00",
    "2024-03-15T01:00:00-0700", "2024-03-15T10:00:00+02:00",
])
def test_datetime_literals_compare_in_utc(org, literal):
    assert org.first_values(f"SELECT Name FROM User WHERE LastLoginDate = {literal}") == ["Ada Lovelace"]


def test_date_literal_compares_with_date_field(org):
    assert org.first_values("SELECT Subject FROM Task WHERE ActivityDate = 2024-03-14") == ["Email Beta"]
    assert org.first_values("SELECT Subject FROM Task WHERE ActivityDate > 2024-03-14") == ["Call Acme"]


@pytest.mark.parametrize("condition, expected", [
    ("CreatedDate = TODAY", ["Cy Young"]),
    ("CreatedDate = YESTERDAY", ["Bob Stone"]),
    ("CreatedDate != TODAY", ["Ada Lovelace", "Bob Stone", "Di Prince"]),
    ("CreatedDate < TODAY", ["Ada Lovelace", "Bob Stone", "Di Prince"]),
    ("CreatedDate <= YESTERDAY", ["Ada Lovelace", "Bob Stone", "Di Prince"]),
    ("CreatedDate > YESTERDAY", ["Cy Young"]),
    ("CreatedDate >= TODAY", ["Cy Young"]),
    ("CreatedDate = TOMORROW", []),
    ("LastLoginDate = TOMORROW", ["Cy Young"]),
    ("LastLoginDate = NEXT_N_DAYS:1", ["Cy Young"]),
    ("CreatedDate = LAST_N_DAYS:7", ["Bob Stone", "Cy Young", "Di Prince"]),
    ("CreatedDate = LAST_N_DAYS:6", ["Bob Stone", "Cy Young"]),
    ("CreatedDate = N_DAYS_AGO:7", ["Di Prince"]),
    ("CreatedDate = THIS_WEEK", ["Bob Stone", "Cy Young"]),
    ("CreatedDate = LAST_WEEK", ["Di Prince"]),
    ("CreatedDate = THIS_MONTH", ["Bob Stone", "Cy Young", "Di Prince"]),
    ("CreatedDate = LAST_N_MONTHS:2", ["Ada Lovelace"]),
    ("CreatedDate = THIS_QUARTER", ["Ada Lovelace", "Bob Stone", "Cy Young", "Di Prince"]),
    ("CreatedDate = last_year", []),
    ("CreatedDate IN (TODAY, N_DAYS_AGO:7)", ["Cy Young", "Di Prince"]),
])
def test_relative_date_literals_are_utc_day_ranges(org, condition, expected):
    assert org.first_values(f"SELECT Name FROM User WHERE {condition}") == expected


@pytest.mark.parametrize("condition, expected", [
    ("ActivityDate = TODAY", ["Call Acme"]),
    ("ActivityDate < TODAY", ["Email Beta"]),
    ("ActivityDate = LAST_N_DAYS:1", ["Call Acme", "Email Beta"]),
    ("ActivityDate != YESTERDAY", ["Call Acme", "Unowned"]),
])
def test_relative_date_literals_apply_to_date_fields(org, condition, expected):
    assert org.first_values(f"SELECT Subject FROM Task WHERE {condition}") == expected


def test_relative_date_literals_follow_now_not_the_parse_cache(org):
    soql = "SELECT Name FROM User WHERE CreatedDate = TODAY"

    assert org.first_values(soql) == ["Cy Young"]
    assert org.first_values(soql, now=datetime(2024, 3, 14, 18, 0, tzinfo=timezone.utc)) == ["Bob Stone"]


def test_fifteen_character_id_literal_matches_stored_id(org):
    ada15 = org.ids["ada"][:15]

    assert org.first_values(f"SELECT Name FROM User WHERE Id = '{ada15}'") == ["Ada Lovelace"]
    assert org.first_values(f"SELECT Name FROM User WHERE ManagerId IN ('{ada15}')") == ["Bob Stone", "Cy Young"]


def test_relationship_fields_filter(org):
    assert org.first_values("SELECT Name FROM User WHERE Manager.Name = 'ada lovelace'") == ["Bob Stone", "Cy Young"]
    assert org.first_values("SELECT Name FROM User WHERE Manager.Name = null") == ["Ada Lovelace"]


# --- ORDER BY, LIMIT, OFFSET ------------------------------------------------------------------------

@pytest.mark.parametrize("order, expected", [
    ("Title", [None, "Engineer", "engineer", "Head_of 100%"]),
    ("Title ASC NULLS LAST", ["Engineer", "engineer", "Head_of 100%", None]),
    ("Title DESC", ["Head_of 100%", "Engineer", "engineer", None]),
    ("Title DESC NULLS FIRST", [None, "Head_of 100%", "Engineer", "engineer"]),
])
def test_order_by_nulls_first_ascending_and_last_descending(org, order, expected):
    titles = [row[0] for row in org.rows(f"SELECT Title FROM User ORDER BY {order}")]

    assert [title and title.lower() for title in titles] == [title and title.lower() for title in expected]


def test_order_by_relationship_field_and_several_items(org):
    rows = org.rows("SELECT Name FROM User ORDER BY Manager.Name DESC, Name DESC")

    assert [row[0] for row in rows] == ["Di Prince", "Cy Young", "Bob Stone", "Ada Lovelace"]


def test_limit_and_offset_page_through_ordered_rows(org):
    def page(clauses: str) -> list[str]:
        return [row[0] for row in org.rows(f"SELECT Name FROM User ORDER BY Name {clauses}")]

    assert page("LIMIT 2") == ["Ada Lovelace", "Bob Stone"]
    assert page("LIMIT 2 OFFSET 2") == ["Cy Young", "Di Prince"]
    assert page("OFFSET 3") == ["Di Prince"]


def test_offset_above_2000_is_out_of_range(org):
    error = org.error("SELECT Id FROM User LIMIT 10 OFFSET 2001")

    assert (error.error_code, error.message) == ("NUMBER_OUTSIDE_VALID_RANGE", "Maximum SOQL offset allowed is 2000")


# --- COUNT -------------------------------------------------------------------------------------------

def test_count_returns_one_integer_and_no_records(org):
    query = org.compile("SELECT COUNT() FROM User WHERE IsActive = true")

    assert query.is_count and query.record_id_index is None
    assert org.rows("SELECT COUNT() FROM User WHERE IsActive = true") == [(3,)]
    assert org.records("SELECT COUNT() FROM User") == []


def test_count_respects_limit(org):
    assert org.rows("SELECT count() FROM User LIMIT 2") == [(2,)]


def test_count_of_field_is_an_aggregate_result(org):
    assert org.records("SELECT COUNT(Title) FROM User") == [{"attributes": {"type": "AggregateResult"}, "expr0": 3}]
    assert org.records("SELECT COUNT(Id) total FROM User") == [{"attributes": {"type": "AggregateResult"},
                                                                 "total": 4}]


def test_count_with_plain_fields_is_malformed(org):
    error = org.error("SELECT Name, COUNT(Id) FROM User")

    assert (error.error_code, error.message) == ("MALFORMED_QUERY", "Field must be grouped or aggregated: Name")


# --- soft delete -------------------------------------------------------------------------------------

def test_deleted_rows_are_hidden_unless_included(org):
    soql = "SELECT Subject FROM Task WHERE Status = 'Completed'"

    assert org.first_values(soql) == ["Call Acme"]
    assert org.first_values(soql, include_deleted=True) == ["Call Acme", "Deleted call"]
    assert org.first_values("SELECT Subject FROM Task WHERE IsDeleted = true", include_deleted=True) == [
        "Deleted call"]


# --- errors ------------------------------------------------------------------------------------------

def test_syntax_error_is_malformed_with_position(org):
    error = org.error("SELECT Id FORM User")

    assert error.error_code == "MALFORMED_QUERY"
    assert error.message.endswith("ERROR at Row:1:Column:11\nunexpected token: 'FORM'")


def test_unfinished_query_is_malformed_at_end(org):
    error = org.error("SELECT Id FROM User WHERE")

    assert error.error_code == "MALFORMED_QUERY"
    assert error.message.endswith("unexpected token: <EOF>")


def test_unknown_object_is_invalid_type(org):
    error = org.error("SELECT Id FROM Persona")

    assert error.error_code == "INVALID_TYPE"
    assert error.message.startswith("sObject type 'Persona' is not supported.")


def test_unknown_field_is_invalid_field(org):
    error = org.error("SELECT Id, Foo FROM User")

    assert error.error_code == "INVALID_FIELD"
    assert error.message.startswith("No such column 'Foo' on entity 'User'.")


def test_unknown_field_on_related_object_names_that_object(org):
    error = org.error("SELECT Owner.Foo FROM Task")

    assert error.message.startswith("No such column 'Foo' on entity 'User'.")


def test_unknown_relationship_is_invalid_field(org):
    error = org.error("SELECT Boss.Name FROM User")

    assert error.error_code == "INVALID_FIELD"
    assert error.message.startswith("Didn't understand relationship 'Boss' in field path.")


@pytest.mark.parametrize("condition, message", [
    ("CreatedDate = 2024-03-15", "value of filter criterion for field 'CreatedDate' must be of type dateTime and "
                                 "should not be enclosed in quotes"),
    ("CreatedDate = '2024-03-15T00:00:00Z'", "value of filter criterion for field 'CreatedDate' must be of type "
                                             "dateTime and should not be enclosed in quotes"),
    ("Persona_Score__c = '1'", "value of filter criterion for field 'Persona_Score__c' must be of type double and "
                               "should not be enclosed in quotes"),
    ("IsActive = 1", "value of filter criterion for field 'IsActive' must be of type boolean and should not be "
                     "enclosed in quotes"),
    ("Name = 42", "value of filter criterion for field 'Name' must be of type string and should be enclosed in "
                  "quotes"),
    ("Name IN ('a', true)", "value of filter criterion for field 'Name' must be of type string and should be "
                            "enclosed in quotes"),
])
def test_value_of_the_wrong_type_is_invalid_field(org, condition, message):
    error = org.error(f"SELECT Id FROM User WHERE {condition}")

    assert (error.error_code, error.message) == ("INVALID_FIELD", message)


def test_datetime_literal_on_date_field_is_invalid_field(org):
    error = org.error("SELECT Id FROM Task WHERE ActivityDate = 2024-03-15T00:00:00Z")

    assert error.message == ("value of filter criterion for field 'ActivityDate' must be of type date and should "
                             "not be enclosed in quotes")


def test_malformed_id_literal_is_refused(org):
    error = org.error("SELECT Id FROM User WHERE Id = 'not-an-id'")

    assert (error.error_code, error.message) == ("INVALID_QUERY_FILTER_OPERATOR", "invalid ID field: not-an-id")


def test_non_filterable_field_cannot_be_filtered(org):
    error = org.error("SELECT Id, Status FROM LoginHistory WHERE Status = 'Success'")

    assert (error.error_code, error.message) == ("INVALID_FIELD", "field 'Status' can not be filtered in a query call")


def test_non_filterable_field_can_be_selected(org):
    assert org.first_values("SELECT Status FROM LoginHistory WHERE LoginTime = TODAY") == ["Success"]


def test_non_sortable_field_cannot_be_ordered_by(org):
    error = org.error("SELECT Id FROM LoginHistory ORDER BY Status")

    assert (error.error_code, error.message) == ("INVALID_FIELD", "field 'Status' can not be sorted in a query call")


@pytest.mark.parametrize("condition, message", [
    ("Id LIKE '005%'", "invalid operator on id field"),
    ("Persona_Score__c LIKE '1%'", "invalid operator on field 'Persona_Score__c': LIKE compares text fields only"),
])
def test_like_applies_to_text_fields_only(org, condition, message):
    error = org.error(f"SELECT Id FROM User WHERE {condition}")

    assert (error.error_code, error.message) == ("INVALID_QUERY_FILTER_OPERATOR", message)


def test_field_paths_deeper_than_one_relationship_are_refused(org):
    error = org.error("SELECT Manager.Manager.Name FROM User")

    assert error.error_code == "INVALID_FIELD"
    assert "'Manager.Manager.Name'" in error.message


@pytest.mark.parametrize("where", [
    "",
    "WHERE Language = 'en_US'",
    "WHERE PublishStatus = 'Online' OR Language = 'en_US'",
    "WHERE Language = 'en_US' AND (PublishStatus = 'Online' OR Title = 'x')",
    "WHERE PublishStatus != 'Online'",
])
def test_knowledge_articles_must_be_filtered_by_status_at_top_level(org, where):
    error = org.error(f"SELECT Id FROM KnowledgeArticleVersion {where}")

    assert error.error_code == "MALFORMED_QUERY"
    assert error.message.startswith("Implementation restriction: When querying or searching the "
                                    "KnowledgeArticleVersion object, you must filter using the following syntax: "
                                    "Id = [single ID], Id IN [list of ID's] or PublishStatus = [status].")


def test_knowledge_article_filters_that_satisfy_the_restriction(org):
    assert org.first_values("SELECT Title FROM KnowledgeArticleVersion WHERE PublishStatus = 'Online' "
                            "AND Language = 'en_US'") == ["Reset a password"]
    assert org.first_values("SELECT Title FROM KnowledgeArticleVersion "
                            "WHERE (PublishStatus IN ('Online', 'Draft'))") == ["Reset a password", "Rotate keys"]
    assert org.first_values(f"SELECT Title FROM KnowledgeArticleVersion "
                            f"WHERE Id = '{org.ids['draft']}'") == ["Rotate keys"]


# --- Bulk API 2.0 ------------------------------------------------------------------------------------

def test_bulk_rows_are_csv_ready_text(org):
    query = org.compile("SELECT Id, IsActive, CreatedDate, Persona_Score__c, Manager.Name, Manager.IsActive "
                        "FROM User WHERE Name = 'Bob Stone'", for_bulk=True)
    rows = org.store.connection().execute(query.sql, query.params).fetchall()

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(column.path for column in query.columns)
    writer.writerows(rows)
    assert out.getvalue() == ("Id,IsActive,CreatedDate,Persona_Score__c,Manager.Name,Manager.IsActive\n"
                              f"{org.ids['bob']},false,2024-03-14T23:59:59.999Z,,Ada Lovelace,true\n")
    assert query.record_id_index is None and query.relationship_id_index == {}


def test_bulk_numbers_print_as_text(org):
    rows = org.rows("SELECT CallDurationInSeconds, IsClosed FROM Task WHERE Subject = 'Call Acme'", for_bulk=True)
    scores = org.rows("SELECT Persona_Score__c FROM User WHERE Name = 'Ada Lovelace'", for_bulk=True)

    assert rows == [("120", "true")]
    assert scores == [("0.75",)]


@pytest.mark.parametrize("soql", [
    "SELECT COUNT() FROM User",
    "SELECT COUNT(Id) FROM User",
    "SELECT Id FROM User LIMIT 10 OFFSET 5",
])
def test_bulk_refuses_aggregates_and_offset(org, soql):
    error = org.error(soql, for_bulk=True)

    assert error.error_code == "MALFORMED_QUERY"
    assert "Bulk API 2.0" in error.message
