"""The sObjects the sandbox models: their API names, key prefixes and fields, as Salesforce names them.

This is the one place that says what a sandbox org contains. The store creates its tables from it,
describe reports it, the SOQL compiler checks queries against it and the writers validate against it.
An org seeded from an export may add fields (`FieldSchema` with inferred types); those are kept in the
org database beside these declarations, so describe shows them too.

Storage conventions (SQLite), relied on everywhere values are read or written:
- string-like types (id, reference, string, textarea, email, phone, url, picklist): TEXT
- boolean: INTEGER 0/1; int: INTEGER; double, currency, percent: REAL
- date: TEXT `YYYY-MM-DD`; datetime: TEXT `YYYY-MM-DDTHH:MM:SS.fffZ` in UTC, so text order is time
  order and Bulk API CSV needs no conversion (REST JSON shows `+0000` instead of `Z`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field

STRING_TYPES = frozenset({"id", "reference", "string", "textarea", "email", "phone", "url", "picklist"})
NUMBER_TYPES = frozenset({"int", "double", "currency", "percent"})
ALL_TYPES = STRING_TYPES | NUMBER_TYPES | {"boolean", "date", "datetime"}

_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "int": "xsd:int",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
}
_DEFAULT_LENGTHS = {"id": 18, "reference": 18, "string": 255, "textarea": 32000, "email": 80, "phone": 40,
                    "url": 255, "picklist": 255}


@dataclass(frozen=True)
class FieldSchema:
    """One field of an sObject, with the attributes describe reports."""

    name: str
    type: str
    label: str = ""
    length: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    filterable: bool = True
    custom: bool = False
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    picklist_values: tuple[str, ...] = ()
    precision: int = 0
    scale: int = 0
    # Fields the sandbox fills itself (Name from FirstName + LastName, audit fields, IsClosed...).
    calculated: bool = False

    def __post_init__(self) -> None:
        if self.type not in ALL_TYPES:
            raise ValueError(f"field {self.name}: unknown type {self.type!r}")
        if self.type in _DEFAULT_LENGTHS and not self.length:
            object.__setattr__(self, "length", _DEFAULT_LENGTHS[self.type])
        if not self.label:
            object.__setattr__(self, "label", label_from_name(self.name))

    @property
    def sqlite_type(self) -> str:
        """The SQLite column type that stores this field (see the module docstring)."""
        if self.type in ("boolean", "int"):
            return "INTEGER"
        if self.type in NUMBER_TYPES:
            return "REAL"
        return "TEXT"

    def describe(self) -> dict:
        """This field as one entry of a describe result's `fields` list."""
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "soapType": _SOAP_TYPES.get(self.type, "xsd:string"),
            "length": self.length if self.type in STRING_TYPES else 0,
            "byteLength": self.length * 3 if self.type in STRING_TYPES else 0,
            "precision": self.precision,
            "scale": self.scale,
            "digits": 9 if self.type == "int" else 0,
            "nillable": self.nillable,
            "createable": self.createable,
            "updateable": self.updateable,
            "filterable": self.filterable,
            "sortable": self.filterable and self.type != "textarea",
            "groupable": self.type in STRING_TYPES - {"textarea"} or self.type in ("boolean", "date"),
            "custom": self.custom,
            "calculated": self.calculated,
            "defaultedOnCreate": self.calculated or self.name in ("IsDeleted", "OwnerId"),
            "externalId": False,
            "unique": self.type == "id",
            "idLookup": self.type == "id" or self.name == "Username",
            "nameField": self.name == "Name",
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "picklistValues": [
                {"value": value, "label": value, "active": True, "defaultValue": False, "validFor": None}
                for value in self.picklist_values
            ],
            "restrictedPicklist": False,
            "autoNumber": False,
        }


@dataclass(frozen=True)
class SObjectSchema:
    """One sObject: its API name, key prefix, fields and what the API lets a client do with it."""

    name: str
    key_prefix: str
    fields: tuple[FieldSchema, ...]
    label: str = ""
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    # A filter SOQL requires on this object (KnowledgeArticleVersion must filter PublishStatus).
    required_filter: str | None = None
    custom: bool = False
    _by_lower: dict[str, FieldSchema] = dataclass_field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", label_from_name(self.name))
        self._by_lower.update({f.name.lower(): f for f in self.fields})

    def field(self, name: str) -> FieldSchema | None:
        """The field called `name` (API names are case-insensitive), or None."""
        return self._by_lower.get(name.lower())

    def relationship(self, name: str) -> FieldSchema | None:
        """The reference field whose relationship is called `name` (`Owner` -> OwnerId), or None."""
        lowered = name.lower()
        for candidate in self.fields:
            if candidate.relationship_name and candidate.relationship_name.lower() == lowered:
                return candidate
        return None

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def has_soft_delete(self) -> bool:
        """Whether rows are deleted into a recycle bin (IsDeleted) rather than not deletable at all."""
        return self.field("IsDeleted") is not None

    def with_fields(self, extra: list[FieldSchema]) -> "SObjectSchema":
        """This object with `extra` fields appended (fields an export brought along)."""
        return SObjectSchema(self.name, self.key_prefix, self.fields + tuple(extra), self.label,
                             self.createable, self.updateable, self.deletable, self.required_filter,
                             self.custom)

    def without_fields(self, names: set[str]) -> "SObjectSchema":
        """This object without the fields called `names` (fields an org does not have: a partial export)."""
        return SObjectSchema(self.name, self.key_prefix, tuple(f for f in self.fields if f.name not in names),
                             self.label, self.createable, self.updateable, self.deletable, self.required_filter,
                             self.custom)

    def describe(self, version: str) -> dict:
        """The describe result for this object (`GET sobjects/{name}/describe`)."""
        return self.summary(version) | {
            "fields": [f.describe() for f in self.fields],
            "childRelationships": [],
            "recordTypeInfos": [],
            "supportedScopes": [{"label": "All", "name": "everything"}],
            "urls": self._urls(version) | {"describe": f"/services/data/v{version}/sobjects/{self.name}/describe"},
        }

    def summary(self, version: str) -> dict:
        """This object as one entry of the global describe (`GET sobjects`)."""
        return {
            "name": self.name,
            "label": self.label,
            "labelPlural": self.label + "s",
            "keyPrefix": self.key_prefix,
            "custom": self.custom,
            "queryable": True,
            "retrieveable": True,
            "searchable": self.createable,
            "createable": self.createable,
            "updateable": self.updateable,
            "deletable": self.deletable,
            "undeletable": self.deletable,
            "replicateable": True,
            "triggerable": self.createable,
            "layoutable": self.createable,
            "urls": self._urls(version),
        }

    def _urls(self, version: str) -> dict:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"}


def label_from_name(name: str) -> str:
    """A readable label from an API name: `Persona_Score__c` -> `Persona Score`, `OwnerId` -> `Owner ID`."""
    base = name[:-3] if name.endswith("__c") else name
    base = base.replace("_", " ")
    base = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", base)
    return re.sub(r"\bId\b", "ID", base).strip()


# --- declarations --------------------------------------------------------------------------------

def _f(name: str, type_: str = "string", **attributes) -> FieldSchema:
    return FieldSchema(name, type_, **attributes)


def _ref(name: str, *targets: str, relationship: str | None = None, **attributes) -> FieldSchema:
    if relationship is None:
        relationship = name[:-3] + "__r" if name.endswith("__c") else name[:-2]
    return FieldSchema(name, "reference", reference_to=targets, relationship_name=relationship, **attributes)


def _pick(name: str, *values: str, **attributes) -> FieldSchema:
    return FieldSchema(name, "picklist", picklist_values=values, **attributes)


def _readonly(f: FieldSchema) -> FieldSchema:
    return replace(f, createable=False, updateable=False, calculated=True)


_ID = _f("Id", "id", nillable=False, createable=False, updateable=False)
_IS_DELETED = _readonly(_f("IsDeleted", "boolean", nillable=False))
_CREATED = (
    _readonly(_ref("CreatedById", "User", relationship="CreatedBy", nillable=False)),
    _readonly(_f("CreatedDate", "datetime", nillable=False)),
)
_MODIFIED = (
    _readonly(_ref("LastModifiedById", "User", relationship="LastModifiedBy", nillable=False)),
    _readonly(_f("LastModifiedDate", "datetime", nillable=False)),
    _readonly(_f("SystemModstamp", "datetime", nillable=False)),
)
_AUDIT = (_IS_DELETED, *_CREATED, *_MODIFIED)
_OWNER = _ref("OwnerId", "User", relationship="Owner", nillable=False)
_NAME_PARTS = (
    _f("FirstName", length=40),
    _f("LastName", length=80, nillable=False),
    _readonly(_f("Name", length=121)),
)


def _object(name: str, key_prefix: str, *fields: FieldSchema, audit: tuple[FieldSchema, ...] = _AUDIT,
            **attributes) -> SObjectSchema:
    return SObjectSchema(name, key_prefix, (_ID, *fields, *audit), **attributes)


_TASK_STATUS = ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred")
_OPPORTUNITY_TYPES = ("New Customer", "Existing Customer - Upgrade", "Existing Customer - Replacement",
                      "Existing Customer - Downgrade")
_STAGES = ("Prospecting", "Qualification", "Needs Analysis", "Value Proposition", "Id. Decision Makers",
           "Perception Analysis", "Proposal/Price Quote", "Negotiation/Review", "Closed Won", "Closed Lost")

STANDARD_OBJECTS: tuple[SObjectSchema, ...] = (
    _object("Organization", "00D",
            _f("Name", length=80), _f("IsSandbox", "boolean"), _f("OrganizationType", length=40),
            _f("InstanceName", length=5), _f("TimeZoneSidKey", length=40),
            audit=(*_CREATED, *_MODIFIED), createable=False, deletable=False),
    _object("Profile", "00e",
            _f("Name", length=255, nillable=False), _f("Description", length=255),
            _pick("UserType", "Standard", "PowerPartner", "CsnOnly", "Guest"),
            audit=(*_CREATED, *_MODIFIED), deletable=False),
    _object("UserRole", "00E",
            _f("Name", length=80, nillable=False), _f("DeveloperName", length=80),
            _ref("ParentRoleId", "UserRole", relationship="ParentRole"), _f("RollupDescription", length=80),
            audit=_MODIFIED, deletable=False),
    _object("User", "005",
            _f("Username", length=80, nillable=False), *_NAME_PARTS, _f("Email", "email", nillable=False),
            _f("Alias", length=8), _f("Title", length=80), _f("Department", length=80),
            _f("Division", length=80), _f("CompanyName", length=80), _f("EmployeeNumber", length=20),
            _f("FederationIdentifier", length=512),
            _ref("ProfileId", "Profile", nillable=False), _ref("UserRoleId", "UserRole"),
            _ref("ManagerId", "User"), _f("IsActive", "boolean", nillable=False),
            _readonly(_pick("UserType", "Standard", "PowerPartner", "PowerCustomerSuccess", "CustomerSuccess",
                            "CspLitePortal", "CsnOnly", "Guest", "SelfService")),
            _readonly(_f("LastLoginDate", "datetime")), _f("TimeZoneSidKey", length=40),
            _f("Persona__c", length=80, custom=True, label="Persona"),
            _f("Persona_Score__c", "double", precision=5, scale=4, custom=True, label="Persona Score"),
            _f("Persona_Confidence__c", "double", precision=5, scale=4, custom=True,
               label="Persona Confidence"),
            _f("Persona_Reason__c", length=255, custom=True, label="Persona Reason"),
            _f("Persona_Updated__c", "datetime", custom=True, label="Persona Updated"),
            audit=(*_CREATED, *_MODIFIED), deletable=False),
    _object("Account", "001",
            _f("Name", length=255, nillable=False),
            _pick("Type", "Prospect", "Customer - Direct", "Customer - Channel", "Partner", "Other"),
            _f("Industry", length=40), _f("BillingCountry", length=80), _f("AnnualRevenue", "currency"),
            _f("NumberOfEmployees", "int"), _ref("ParentId", "Account"), _OWNER),
    _object("Contact", "003",
            _ref("AccountId", "Account"), *_NAME_PARTS, _f("Email", "email"), _f("Phone", "phone"),
            _f("Title", length=128), _f("LeadSource", length=40), _OWNER,
            _readonly(_f("LastActivityDate", "date"))),
    _object("ContactHistory", "017",
            _ref("ContactId", "Contact", nillable=False), _f("Field", length=255),
            _f("OldValue", length=255), _f("NewValue", length=255), _f("DataType", length=40),
            audit=(_IS_DELETED, *_CREATED), createable=False, updateable=False, deletable=False),
    _object("Lead", "00Q",
            *_NAME_PARTS, _f("Company", length=255, nillable=False), _f("Email", "email"),
            _f("Phone", "phone"), _f("Title", length=128),
            _pick("Status", "Open - Not Contacted", "Working - Contacted", "Closed - Converted",
                  "Closed - Not Converted", nillable=False),
            _pick("LeadSource", "Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other"),
            _pick("Rating", "Hot", "Warm", "Cold"), _f("Industry", length=40), _OWNER,
            _f("IsConverted", "boolean", nillable=False), _f("ConvertedDate", "date"),
            _ref("ConvertedAccountId", "Account"), _ref("ConvertedContactId", "Contact"),
            _ref("ConvertedOpportunityId", "Opportunity")),
    _object("Opportunity", "006",
            _f("Name", length=120, nillable=False), _ref("AccountId", "Account"), _OWNER,
            _pick("StageName", *_STAGES, nillable=False), _readonly(_f("IsClosed", "boolean")),
            _readonly(_f("IsWon", "boolean")), _readonly(_f("LastStageChangeDate", "datetime")),
            _pick("Type", *_OPPORTUNITY_TYPES),
            _f("Amount", "currency"), _f("CloseDate", "date", nillable=False), _f("Probability", "percent"),
            _pick("LeadSource", "Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other"),
            _pick("ForecastCategoryName", "Omitted", "Pipeline", "Best Case", "Commit", "Closed")),
    _object("Quote", "0Q0",
            _f("Name", length=255, nillable=False), _ref("OpportunityId", "Opportunity"),
            _ref("AccountId", "Account"), _OWNER,
            _pick("Status", "Draft", "Needs Review", "In Review", "Approved", "Rejected", "Presented",
                  "Accepted", "Denied"),
            _f("ExpirationDate", "date"), _f("GrandTotal", "currency"), _f("IsSyncing", "boolean")),
    _object("Contract", "800",
            _ref("AccountId", "Account", nillable=False), _OWNER,
            _pick("Status", "Draft", "In Approval Process", "Activated"),
            _pick("StatusCode", "Draft", "InApproval", "Activated", "Terminated", "Expired"),
            _f("StartDate", "date"), _f("EndDate", "date"), _f("ContractTerm", "int"),
            _f("ActivatedDate", "datetime"), _ref("ActivatedById", "User", relationship="ActivatedBy")),
    _object("Task", "00T",
            _f("Subject", length=255), _OWNER, _ref("WhoId", "Contact", "Lead", relationship="Who"),
            _ref("WhatId", "Account", "Opportunity", "Case", relationship="What"),
            _pick("TaskSubtype", "Task", "Email", "ListEmail", "Cadence", "Call", updateable=False),
            _pick("Type", "Call", "Email", "Meeting", "Other"), _pick("Status", *_TASK_STATUS, nillable=False),
            _readonly(_f("IsClosed", "boolean")), _pick("Priority", "High", "Normal", "Low"),
            _f("ActivityDate", "date"), _f("CompletedDateTime", "datetime"),
            _pick("CallType", "Internal", "Inbound", "Outbound"), _f("CallDurationInSeconds", "int"),
            _readonly(_f("IsArchived", "boolean"))),
    _object("Event", "00U",
            _f("Subject", length=255), _OWNER, _ref("WhoId", "Contact", "Lead", relationship="Who"),
            _ref("WhatId", "Account", "Opportunity", "Case", relationship="What"),
            _pick("Type", "Call", "Email", "Meeting", "Other"), _pick("EventSubtype", "Event"),
            _f("StartDateTime", "datetime"), _f("EndDateTime", "datetime"),
            _f("ActivityDateTime", "datetime"), _f("DurationInMinutes", "int"), _f("Location", length=255),
            _readonly(_f("IsArchived", "boolean"))),
    _object("Case", "500",
            _readonly(_f("CaseNumber", length=30)), _f("Subject", length=255), _OWNER,
            _ref("AccountId", "Account"), _ref("ContactId", "Contact"),
            _pick("Status", "New", "Working", "Escalated", "Closed", nillable=False),
            _readonly(_f("IsClosed", "boolean")), _f("IsEscalated", "boolean"),
            _readonly(_f("ClosedDate", "datetime")), _pick("Origin", "Phone", "Email", "Web"),
            _pick("Priority", "High", "Medium", "Low"), _pick("Type", "Question", "Problem", "Feature Request"),
            _pick("Reason", "Installation", "Equipment Complexity", "Performance", "Breakdown", "Other")),
    _object("CaseComment", "00a",
            _ref("ParentId", "Case", nillable=False, updateable=False), _f("CommentBody", "textarea", length=4000),
            _f("IsPublished", "boolean")),
    _object("CaseHistory", "017",
            _ref("CaseId", "Case", nillable=False), _f("Field", length=255), _f("OldValue", length=255),
            _f("NewValue", length=255), _f("DataType", length=40),
            audit=(_IS_DELETED, *_CREATED), createable=False, updateable=False, deletable=False),
    _object("KnowledgeArticleVersion", "ka0",
            _f("KnowledgeArticleId", "reference"), _readonly(_f("ArticleNumber", length=30)),
            _f("Title", length=255, nillable=False), _f("UrlName", length=255), _f("Summary", "textarea", length=1000),
            _pick("PublishStatus", "Draft", "Online", "Archived", nillable=False), _f("Language", length=40),
            _f("VersionNumber", "int"), _f("IsLatestVersion", "boolean"), _f("FirstPublishedDate", "datetime"),
            _f("LastPublishedDate", "datetime"), _OWNER,
            createable=False, updateable=False, deletable=False, required_filter="PublishStatus"),
    _object("Campaign", "701",
            _f("Name", length=80, nillable=False),
            _pick("Type", "Conference", "Webinar", "Trade Show", "Email", "Advertisement", "Partners", "Other"),
            _pick("Status", "Planned", "In Progress", "Completed", "Aborted"), _f("IsActive", "boolean"),
            _f("StartDate", "date"), _f("EndDate", "date"), _ref("ParentId", "Campaign"), _OWNER,
            _f("NumberOfLeads", "int"), _f("NumberOfContacts", "int"), _f("NumberOfResponses", "int"),
            _f("BudgetedCost", "currency")),
    _object("ListEmail", "0XB",
            _f("Name", length=255), _f("Subject", length=255), _pick("Status", "Draft", "Scheduled", "Sent"),
            _f("FromAddress", "email"), _f("FromName", length=255), _f("ScheduledDate", "datetime"),
            _f("TotalSent", "int"), _ref("CampaignId", "Campaign"), _OWNER),
    _object("EmailTemplate", "00X",
            _f("Name", length=80, nillable=False), _f("DeveloperName", length=80), _OWNER,
            _f("FolderId", "reference"), _pick("TemplateType", "text", "html", "custom", "visualforce"),
            _f("IsActive", "boolean"), _f("TimesUsed", "int"), _f("LastUsedDate", "datetime"),
            _f("Subject", length=255), audit=(*_CREATED, *_MODIFIED)),
    _object("Report", "00O",
            _f("Name", length=40, nillable=False), _f("DeveloperName", length=80), _OWNER,
            _f("FolderName", length=255), _pick("Format", "Tabular", "Summary", "Matrix", "MultiBlock"),
            _f("Description", length=255), _f("LastRunDate", "datetime"), _f("LastViewedDate", "datetime"),
            createable=False, updateable=False),
    _object("Dashboard", "01Z",
            _f("Title", length=80, nillable=False), _f("DeveloperName", length=80), _f("FolderId", "reference"),
            _f("FolderName", length=255), _ref("RunningUserId", "User", relationship="RunningUser"),
            _pick("Type", "SpecifiedUser", "LoggedInUser", "MyTeamUser"), _f("Description", length=255),
            _f("LastViewedDate", "datetime"), createable=False, updateable=False),
    _object("SetupAuditTrail", "0Ym",
            _f("Action", length=255), _f("Section", length=255), _f("Display", length=1000),
            _f("DelegateUser", length=80), _f("CreatedByContext", length=255),
            _f("ResponsibleNamespacePrefix", length=15),
            audit=_CREATED, createable=False, updateable=False, deletable=False),
    _object("LoginHistory", "0Ya",
            _ref("UserId", "User", filterable=True), _f("LoginTime", "datetime"),
            _pick("LoginType", "Application", "Remote Access 2.0", "Remote Access Client", "SAML Sfdc Initiated SSO",
                  "Other Apex API", "Partner Product"),
            _f("LoginUrl", length=255), _f("SourceIp", length=39, filterable=False),
            _f("Status", length=128, filterable=False), _f("Application", length=255, filterable=False),
            _f("Browser", length=64, filterable=False), _f("Platform", length=64, filterable=False),
            _f("ApiType", length=64, filterable=False), _f("ApiVersion", length=10, filterable=False),
            _f("CountryIso", length=2), _f("TlsProtocol", length=10), _f("CipherSuite", length=64),
            _f("AuthenticationServiceId", "reference"), _f("NetworkId", "reference"),
            audit=(), createable=False, updateable=False, deletable=False),
    _object("FeedItem", "0D5",
            _ref("ParentId", "User", "Account", "Opportunity", "Case", nillable=False, updateable=False),
            _pick("Type", "TextPost", "LinkPost", "ContentPost", "TrackedChange", "PollPost", "QuestionPost"),
            _f("Body", "textarea", length=10000), _f("Title", length=255), _f("LinkUrl", "url", length=1000),
            _readonly(_f("CommentCount", "int")), _readonly(_f("LikeCount", "int")),
            _readonly(_ref("InsertedById", "User", relationship="InsertedBy"))),
)


def standard_objects() -> dict[str, SObjectSchema]:
    """The standard sObjects, by API name."""
    return {sobject.name: sobject for sobject in STANDARD_OBJECTS}
