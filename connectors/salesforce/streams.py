"""What persona-sync pulls from Salesforce: one declaration per object, in one place.

Each stream names an sObject and its Id key prefix, the fields persona features need (and no others:
every extra column costs download time on a large org), the activity it feeds, its cursor field for incremental pulls,
and the user references that tie a row to a person, in order of preference (tasks/screening.py says what
happens to a row whose user is missing, not staged yet, or a queue). Types come from the org's own
describe at pull time, so a real org and the sandbox are read the same way.

What an org may lack: a partial export, a managed package or an old object can miss a field (an
OwnerId where CreatedById is there) or a whole object. Only the Id, the cursor and one of the user fields
are required (and a few fields a stream names: who is active and under whom, the filter Knowledge
needs); any other field the org's describe lacks is left out of the pull (and reported), and the
features it feeds become unavailable for the run rather than zero (personas/features.py). An object the
org does not have, or does not show the integration user, is skipped and reported, except the
reference data every row is checked against (REQUIRED_OBJECTS).

Cursor fields: SystemModstamp where the object has it (it changes on every write, system ones
included); objects without it are append-only logs and use their creation time (LoginHistory:
LoginTime; SetupAuditTrail and the history objects: CreatedDate).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stream:
    """One sObject to pull."""

    sobject: str
    key_prefix: str  # the first three characters of every Id of the object (the same in every org)
    fields: tuple[str, ...]
    feeds: str  # the activity (or context) these rows describe, for people reading the plan
    cursor: str = "SystemModstamp"
    # The fields naming the user who did this (owner, creator, login user), in order of preference: a row
    # is attributed by the first one it fills (an export may lack the owner where the creator is there).
    # Empty for reference data.
    user_fields: tuple[str, ...] = ("OwnerId", "CreatedById")
    # Whether deleted rows are pulled (queryAll, IsDeleted = true, by SystemModstamp) and removed.
    soft_delete: bool = True
    # Reference data is pulled in full on the first run, whatever the history window.
    full_history: bool = False
    # A filter the object requires in every query (KnowledgeArticleVersion must name PublishStatus).
    required_filter: str | None = None
    # Declared fields the pull cannot do without, beyond the Id and the cursor (see `required`).
    required_fields: tuple[str, ...] = ()
    # Fields read when the org has them, and left out when it does not yet (custom fields an admin adds,
    # perhaps after the first pull: then the stream is read again in full, to fill them in).
    optional: tuple[str, ...] = ()

    @property
    def is_activity(self) -> bool:
        """Whether its rows are someone's activity (checked against the staged users), not reference data."""
        return bool(self.user_fields)

    @property
    def required(self) -> tuple[str, ...]:
        """The fields it cannot be pulled without: the Id, the cursor and `required_fields` (and, for
        activity, one of its user fields)."""
        return ("Id", self.cursor, *self.required_fields)

    @property
    def columns(self) -> tuple[str, ...]:
        """The fields to select: Id, the declared fields, the user fields, the optional fields and the
        cursor (once each, in that order). The org's describe may leave some out (see pages.arrow_schema)."""
        return tuple(dict.fromkeys(("Id", *self.fields, *self.user_fields, *self.optional, self.cursor)))


_AUDIT = ("CreatedById", "CreatedDate")

STREAMS: tuple[Stream, ...] = (
    # Reference data first: users are what every other row is checked against.
    Stream("User", "005", ("Username", "Email", "Name", "Title", "Department", "ProfileId", "UserRoleId", "ManagerId", "IsActive",
                    "UserType", "CreatedDate", "LastLoginDate"),
           feeds="the people: context (title, department, profile, role, manager), the keys community tables "
                 "know them by (username, email, federation id) and current persona fields",
           user_fields=(), soft_delete=False, full_history=True,
           # Who is active, since when, and under whom (direct reports), and the keys the community tables
           # know people by: without them nothing downstream is right, so an org lacking one is an error.
           required_fields=("Username", "Email", "IsActive", "ManagerId", "CreatedDate"),
           # The persona fields persona-sync writes: an org has them once its admin has created them.
           optional=("FederationIdentifier", "Persona__c", "Persona_Score__c", "Persona_Confidence__c", "Persona_Reason__c",
                     "Persona_Updated__c")),
    Stream("Profile", "00e", ("Name",), feeds="profile names (context only)", user_fields=(), soft_delete=False,
           full_history=True),
    Stream("UserRole", "00E", ("Name", "ParentRoleId"), feeds="role names (context only)", user_fields=(),
           soft_delete=False, full_history=True),
    # Sales activity.
    Stream("Task", "00T", ("OwnerId", "TaskSubtype", "Type", "Status", "IsClosed", "ActivityDate", "CallType", "WhoId",
                    "WhatId", *_AUDIT),
           feeds="calls (and their direction), emails and list emails logged, and what they were about"),
    Stream("Event", "00U", ("OwnerId", "StartDateTime", "DurationInMinutes", "WhoId", "WhatId", *_AUDIT),
           feeds="meetings, and whether a customer took part"),
    Stream("Lead", "00Q", ("OwnerId", "Status", "IsConverted", "ConvertedDate", *_AUDIT), feeds="leads created and converted"),
    Stream("Opportunity", "006", ("OwnerId", "StageName", "IsClosed", "IsWon", "Type", "CloseDate", *_AUDIT),
           feeds="opportunities created, won (and when), and upsell / renewal",
           # When a deal moved to its stage (API 52.0+): when it was won, for features as of a past date.
           optional=("LastStageChangeDate",)),
    Stream("Quote", "0Q0", ("OwnerId", "Status", *_AUDIT), feeds="quotes prepared"),
    Stream("Contract", "800", ("OwnerId", "Status", "ActivatedDate", *_AUDIT), feeds="contracts"),
    Stream("Contact", "003", ("OwnerId", *_AUDIT), feeds="contacts created"),
    # History rows have no SystemModstamp and leave only with their parent record: no deletions to pull.
    Stream("ContactHistory", "017", ("ContactId", "Field", *_AUDIT), feeds="contacts updated", cursor="CreatedDate",
           user_fields=("CreatedById",), soft_delete=False),
    # Service activity.
    Stream("Case", "500", ("OwnerId", "Status", "IsClosed", "ClosedDate", "IsEscalated", "Origin", *_AUDIT),
           feeds="cases closed and escalated"),
    Stream("CaseComment", "00a", ("ParentId", "IsPublished", *_AUDIT), feeds="case comments", user_fields=("CreatedById",)),
    Stream("CaseHistory", "017", ("CaseId", "Field", "OldValue", "NewValue", *_AUDIT), feeds="case reassignments",
           cursor="CreatedDate", user_fields=("CreatedById",), soft_delete=False),
    Stream("KnowledgeArticleVersion", "ka0", ("KnowledgeArticleId", "PublishStatus", "VersionNumber", *_AUDIT),
           feeds="knowledge articles written", user_fields=("CreatedById",),
           required_filter="PublishStatus IN ('Online', 'Draft', 'Archived')", required_fields=("PublishStatus",),
           soft_delete=False),
    # Analytics, administration and collaboration.
    Stream("Report", "00O", ("OwnerId", "LastModifiedById", "LastModifiedDate", *_AUDIT),
           feeds="reports created or modified", user_fields=("CreatedById", "LastModifiedById")),
    Stream("Dashboard", "01Z", ("RunningUserId", "LastModifiedById", "LastModifiedDate", *_AUDIT),
           feeds="dashboards created or modified", user_fields=("CreatedById", "LastModifiedById")),
    Stream("SetupAuditTrail", "0Ym", ("Action", "Section", *_AUDIT), feeds="setup changes and users created",
           cursor="CreatedDate", user_fields=("CreatedById",), soft_delete=False),
    Stream("FeedItem", "0D5", ("ParentId", "Type", *_AUDIT), feeds="Chatter posts", user_fields=("CreatedById",)),
    # Marketing.
    Stream("Campaign", "701", ("OwnerId", "Type", "Status", *_AUDIT), feeds="campaigns"),
    Stream("ListEmail", "0XB", ("OwnerId", "Status", *_AUDIT), feeds="list (bulk) emails"),
    Stream("EmailTemplate", "00X", ("OwnerId", "TemplateType", "LastModifiedById", *_AUDIT), feeds="email templates",
           soft_delete=False),
    # Logins, by channel.
    Stream("LoginHistory", "0Ya", ("UserId", "LoginType", "Application", "Platform", "ApiType", "Status"),
           feeds="logins by channel (browser, mobile, API)", cursor="LoginTime", user_fields=("UserId",),
           soft_delete=False),
)


# Reference data every activity row is checked against: a pull without them cannot attribute anything.
REQUIRED_OBJECTS: tuple[str, ...] = ("User",)


def streams_by_name(names: list[str] | None = None) -> list[Stream]:
    """The declared streams, all or those named (in declaration order); unknown names are an error."""
    if not names:
        return list(STREAMS)
    known = {stream.sobject.lower(): stream for stream in STREAMS}
    unknown = [name for name in names if name.lower() not in known]
    if unknown:
        raise ValueError(f"no stream for {unknown}; declared: {[stream.sobject for stream in STREAMS]}")
    wanted = {name.lower() for name in names}
    return [stream for stream in STREAMS if stream.sobject.lower() in wanted]
