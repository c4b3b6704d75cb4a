"""Who the synthetic org's users truly are: the 14 personas, how common each is, and how each behaves.

This is the one place that says how a persona shows in the data. Every user has one true persona; the
generator draws that user's activity from the persona's profile below (mixed with a second profile for
hybrids, scattered by per-user noise), so a product that reads the activity back can be judged against
the truth. Rates are expected records per 30 active days; shares are probabilities per record.

The behaviour each profile encodes is our own summary of the public Salesforce UX persona research
(Sales, Service and Marketing Cloud personas): what each group spends its time on in Salesforce.
Profiles deliberately overlap (several personas log calls, several build reports) so that no single
count gives a persona away.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

# --- the personas ---------------------------------------------------------------------------------

SALES = "Sales"
SERVICE = "Service"
MARKETING = "Marketing"


@dataclass(frozen=True)
class Persona:
    """One persona: its label (what truth files and the product use), its cloud and population weight."""

    label: str
    cloud: str
    # Relative share of the user population: agents and reps outnumber their leaders.
    weight: float


PERSONAS: tuple[Persona, ...] = (
    Persona("Sales Leader", SALES, 0.05),
    Persona("Deal Closer", SALES, 0.13),
    Persona("Data Expert", SALES, 0.04),
    Persona("Pipeline Builder", SALES, 0.11),
    Persona("Trusted Advisor", SALES, 0.08),
    Persona("Case Solver", SERVICE, 0.19),
    Persona("Expert Agent", SERVICE, 0.08),
    Persona("Team Leader", SERVICE, 0.05),
    Persona("Service Admin", SERVICE, 0.03),
    Persona("Marketing Manager", MARKETING, 0.04),
    Persona("Strategic Leader", MARKETING, 0.02),
    Persona("Marketing Specialist", MARKETING, 0.07),
    Persona("Designer / Developer", MARKETING, 0.04),
    Persona("IT Services", MARKETING, 0.03),
)
PERSONA_LABELS: tuple[str, ...] = tuple(p.label for p in PERSONAS)
PERSONA_INDEX: dict[str, int] = {label: i for i, label in enumerate(PERSONA_LABELS)}

# Every persona appears at least this often, so even the small org holds each one.
MIN_USERS_PER_PERSONA = 5


def persona_index(label: str) -> int:
    """The position of a persona in PERSONAS (the integer code the generator uses)."""
    return PERSONA_INDEX[label]


# --- the behaviour table --------------------------------------------------------------------------

@dataclass(frozen=True)
class BehaviourProfile:
    """What one persona does, per 30 active days (rates) and per record (shares).

    Every field maps to records in the org; the generator module named in the comment writes them.
    """

    # activities.py: Task rows
    calls: float = 0.0                # TaskSubtype 'Call', CallType, CallDurationInSeconds
    emails: float = 0.0               # TaskSubtype 'Email'
    list_emails: float = 0.0          # ListEmail sends (each also logs a few 'ListEmail' Tasks)
    todos: float = 0.0                # plain follow-up Tasks (TaskSubtype 'Task'): background noise
    # activities.py: Event rows
    meetings: float = 0.0
    # customers.py
    leads: float = 0.0                # Leads created and owned
    opportunities: float = 0.0        # Opportunities created and owned
    quotes: float = 0.0
    contracts: float = 0.0
    contacts_created: float = 0.0
    contact_updates: float = 0.0      # ContactHistory rows
    # service.py
    cases: float = 0.0                # Cases owned (most get closed)
    case_comments: float = 0.0
    case_reassignments: float = 0.0   # CaseHistory Field='Owner' rows made by this user
    articles: float = 0.0             # KnowledgeArticleVersion rows written
    # insight.py
    reports: float = 0.0              # Reports created or modified
    dashboards: float = 0.0           # Dashboards created or modified
    setup_changes: float = 0.0        # SetupAuditTrail rows
    # activities.py: FeedItem rows
    chatter_posts: float = 0.0
    # marketing.py
    campaigns: float = 0.0
    email_templates: float = 0.0
    # logins.py: LoginHistory rows by channel
    logins_browser: float = 0.0
    logins_mobile: float = 0.0
    logins_api: float = 0.0
    # shares (0..1)
    lead_conversion: float = 0.10     # of own leads, converted
    win_share: float = 0.30           # of own closed opportunities, won
    upsell_share: float = 0.15        # of own opportunities, upgrade or replacement deals
    escalated_share: float = 0.05     # of own cases, escalated


RATE_NAMES: tuple[str, ...] = tuple(
    f.name for f in fields(BehaviourProfile)
    if f.name not in ("lead_conversion", "win_share", "upsell_share", "escalated_share")
)
SHARE_NAMES: tuple[str, ...] = ("lead_conversion", "win_share", "upsell_share", "escalated_share")

BEHAVIOUR: dict[str, BehaviourProfile] = {
    # Sales Leader: coaches reps and watches quota; lives in reports and dashboards, does some
    # customising, collaborates (Chatter, 1:1 meetings); sells little themselves.
    "Sales Leader": BehaviourProfile(
        calls=1.8, emails=4.2, todos=1.5, meetings=6, leads=0.4, opportunities=0.8, quotes=0.2, contracts=0.3,
        contacts_created=0.3, contact_updates=1.0, cases=0.1, case_comments=0.2, reports=5, dashboards=2.2,
        setup_changes=1.2, chatter_posts=4, campaigns=0.1, email_templates=0.2,
        logins_browser=6, logins_mobile=3.5, logins_api=0.2, win_share=0.45, upsell_share=0.3),
    # Deal Closer: preps and holds calls and meetings, writes quotes and contracts, keeps contacts
    # current and adds new ones; rarely in the office, so much of the work happens on mobile.
    "Deal Closer": BehaviourProfile(
        calls=9, emails=6, list_emails=0.1, todos=3, meetings=8, leads=1.5, lead_conversion=0.35,
        opportunities=3.5, win_share=0.45, upsell_share=0.15, quotes=3, contracts=1.4, contacts_created=1.5,
        contact_updates=4, cases=0.2, case_comments=0.2, reports=0.4, dashboards=0.05, chatter_posts=1.2,
        logins_browser=3.4, logins_mobile=8, logins_api=0.1),
    # Data Expert: forecasting and pipeline tooling for the sales team; reports, dashboards,
    # customising and admin work, cleaning data, sometimes through a data loader (API); rarely meets
    # customers.
    "Data Expert": BehaviourProfile(
        calls=0.3, emails=2.1, todos=1, meetings=1.8, leads=0.3, opportunities=0.3, quotes=0.1, contracts=0.1,
        contacts_created=0.2, contact_updates=2.4, cases=0.1, reports=10, dashboards=3.5, setup_changes=5,
        chatter_posts=1.5, email_templates=0.2, logins_browser=8.5, logins_mobile=0.3, logins_api=4),
    # Pipeline Builder: starts the sales process: finds, answers and qualifies leads, logs many calls
    # and emails, opens opportunities in existing accounts; works to an activity quota.
    "Pipeline Builder": BehaviourProfile(
        calls=15, emails=7.6, list_emails=1.2, todos=2.5, meetings=1.8, leads=16, lead_conversion=0.25,
        opportunities=2.2, win_share=0.25, upsell_share=0.15, quotes=0.3, contracts=0.1, contacts_created=2.8,
        contact_updates=4, cases=0.1, reports=0.4, dashboards=0.05, chatter_posts=1,
        logins_browser=7.6, logins_mobile=1.2, logins_api=0.1),
    # Trusted Advisor: manages existing customers (account managers): relationship calls, emails and
    # meetings, upsell and renewal deals, contracts; keeps customer data current.
    "Trusted Advisor": BehaviourProfile(
        calls=6.3, emails=6.8, todos=3, meetings=7, leads=0.8, lead_conversion=0.3, opportunities=2.8,
        win_share=0.5, upsell_share=0.7, quotes=1.4, contracts=1.0, contacts_created=1.1, contact_updates=6.5,
        cases=0.5, case_comments=0.5, reports=0.8, dashboards=0.4, chatter_posts=1.5,
        logins_browser=4.7, logins_mobile=5.5, logins_api=0.1),
    # Case Solver: direct customer support by phone and email, works and closes many cases, updates
    # customer details, asks colleagues for help (comments, Chatter).
    "Case Solver": BehaviourProfile(
        calls=3.6, emails=5.1, todos=1, meetings=0.3, contacts_created=0.25, contact_updates=2.4, cases=18,
        escalated_share=0.07, case_comments=8, case_reassignments=0.3, articles=0.1, reports=0.2,
        chatter_posts=1.8, logins_browser=8.5, logins_mobile=0.2, logins_api=0.05),
    # Expert Agent: experienced agent who takes the escalations, writes and updates knowledge
    # articles, trains colleagues; fewer cases than a Case Solver but more comments per case.
    "Expert Agent": BehaviourProfile(
        calls=2.7, emails=3.4, todos=1, meetings=1, contacts_created=0.1, contact_updates=1.2, cases=7,
        escalated_share=0.6, case_comments=10, case_reassignments=0.5, articles=3.5, reports=0.5,
        chatter_posts=3, logins_browser=7.6, logins_mobile=0.3, logins_api=0.1),
    # Team Leader: supervises and coaches agents: moves cases between agents, reads case notes,
    # builds reports and dashboards on team performance, still talks to customers; less time in the
    # application than agents.
    "Team Leader": BehaviourProfile(
        calls=2.7, emails=3, todos=1, meetings=4, contact_updates=1, cases=3, escalated_share=0.3,
        case_comments=4, case_reassignments=9, articles=0.3, reports=3.5, dashboards=1.3, setup_changes=0.2,
        chatter_posts=2.4, logins_browser=4.7, logins_mobile=1.2, logins_api=0.1),
    # Service Admin: runs the Service Cloud instance: frequent setup changes, creates users and
    # profiles, reports and dashboards, some knowledge and case housekeeping.
    "Service Admin": BehaviourProfile(
        calls=0.5, emails=1.7, todos=1, meetings=1.4, contact_updates=0.5, cases=1, escalated_share=0.2,
        case_comments=1.2, case_reassignments=1, articles=0.8, reports=4, dashboards=1.6, setup_changes=16,
        chatter_posts=1.8, email_templates=0.3, logins_browser=9.3, logins_mobile=0.6, logins_api=2),
    # Marketing Manager: runs teams and campaigns across channels: owns campaigns, approves content,
    # follows campaign KPIs in reports and dashboards, many meetings.
    "Marketing Manager": BehaviourProfile(
        calls=0.9, emails=4.2, list_emails=1, todos=1, meetings=5.5, leads=1, campaigns=2.5, reports=3.5,
        dashboards=1.3, chatter_posts=3, email_templates=0.5, logins_browser=6, logins_mobile=2.4,
        logins_api=0.1),
    # Strategic Leader: sets marketing direction: reviews engagement and ROI dashboards, approves the
    # major campaigns (few, large), meets a lot, touches the application lightly.
    "Strategic Leader": BehaviourProfile(
        calls=0.9, emails=3, list_emails=0.2, todos=1, meetings=7, leads=0.2, campaigns=0.7, reports=1.5,
        dashboards=2.5, chatter_posts=2, logins_browser=3.4, logins_mobile=3.6, logins_api=0.1),
    # Marketing Specialist: executes the plan: builds and sends bulk communications (list emails),
    # runs campaigns, brings in leads, analyses campaign data.
    "Marketing Specialist": BehaviourProfile(
        calls=0.5, emails=3.4, list_emails=7, todos=1, meetings=1.4, leads=2.5, lead_conversion=0.05,
        campaigns=2, reports=1.8, dashboards=0.3, chatter_posts=1.8, email_templates=1.3,
        logins_browser=7.6, logins_mobile=0.6, logins_api=0.2),
    # Designer / Developer: designs and codes marketing assets: email templates above all, tests bulk
    # emails, some technical setup and API work.
    "Designer / Developer": BehaviourProfile(
        emails=1.7, list_emails=2.5, todos=1, meetings=1, campaigns=0.4, reports=0.3, setup_changes=1,
        chatter_posts=1.8, email_templates=5.5, logins_browser=7.6, logins_mobile=0.3, logins_api=2),
    # IT Services: runs marketing infrastructure: APIs and integrations (most logins are API
    # sessions), automations and flows (setup changes), debugging.
    "IT Services": BehaviourProfile(
        emails=1.3, list_emails=0.3, todos=1, meetings=1, reports=1, dashboards=0.2, setup_changes=5.5,
        chatter_posts=1.2, email_templates=0.5, logins_browser=3.8, logins_mobile=0.3, logins_api=28),
}


def rate_table() -> np.ndarray:
    """Rates as a (persona, rate) matrix in PERSONAS and RATE_NAMES order, for vectorised mixing."""
    return np.array([[getattr(BEHAVIOUR[label], name) for name in RATE_NAMES] for label in PERSONA_LABELS])


def share_table() -> np.ndarray:
    """Shares as a (persona, share) matrix in PERSONAS and SHARE_NAMES order."""
    return np.array([[getattr(BEHAVIOUR[label], name) for name in SHARE_NAMES] for label in PERSONA_LABELS])


def rate_column(name: str) -> int:
    """The column of `name` in rate_table()."""
    return RATE_NAMES.index(name)


def share_column(name: str) -> int:
    """The column of `name` in share_table()."""
    return SHARE_NAMES.index(name)


# --- how personas look from the outside (titles, departments, profiles, roles, managers) ----------
# Loosely correlated with the truth on purpose: the product must read behaviour, not labels.

TYPICAL_TITLES: dict[str, tuple[str, ...]] = {
    "Sales Leader": ("VP of Sales", "Sales Director", "Regional Sales Manager", "Head of Sales"),
    "Deal Closer": ("Account Executive", "Senior Account Executive", "Sales Executive", "Enterprise AE"),
    "Data Expert": ("Sales Operations Analyst", "Sales Ops Manager", "Revenue Operations Analyst", "CRM Analyst"),
    "Pipeline Builder": ("Sales Development Rep", "Business Development Rep", "SDR", "Inside Sales Rep"),
    "Trusted Advisor": ("Account Manager", "Customer Success Manager", "Key Account Manager",
                        "Relationship Manager"),
    "Case Solver": ("Support Agent", "Customer Service Rep", "Support Specialist", "Customer Care Associate"),
    "Expert Agent": ("Senior Support Engineer", "Tier 2 Support", "Technical Support Specialist",
                     "Escalation Engineer"),
    "Team Leader": ("Support Team Lead", "Support Supervisor", "Customer Service Manager",
                    "Contact Center Supervisor"),
    "Service Admin": ("Salesforce Administrator", "CRM Administrator", "Service Cloud Admin",
                      "Systems Administrator"),
    "Marketing Manager": ("Marketing Manager", "Campaign Manager", "Demand Generation Manager",
                          "Field Marketing Manager"),
    "Strategic Leader": ("VP Marketing", "CMO", "Director of Marketing", "Head of Growth"),
    "Marketing Specialist": ("Marketing Specialist", "Email Marketing Specialist", "Marketing Coordinator",
                             "Campaign Specialist"),
    "Designer / Developer": ("Marketing Designer", "Email Developer", "Web Developer", "Creative Technologist"),
    "IT Services": ("Marketing Operations Engineer", "Integration Engineer", "IT Specialist",
                    "Marketing Technologist"),
}
# Titles that say nothing; None is a blank title.
GENERIC_TITLES: tuple[str | None, ...] = ("Associate", "Specialist", "Team Member", "Analyst", "Manager",
                                          "Consultant", "Coordinator", None, None)
TITLE_TYPICAL_SHARE = 0.45      # carries a title of their own persona
TITLE_MISLEADING_SHARE = 0.25   # carries a title typical of another persona; the rest are generic

TYPICAL_DEPARTMENTS: dict[str, tuple[str, ...]] = {
    SALES: ("Sales", "Inside Sales", "Sales Operations", "Account Management"),
    SERVICE: ("Customer Support", "Customer Service", "Support Operations"),
    MARKETING: ("Marketing", "Marketing Operations", "Digital", "IT"),
}
GENERIC_DEPARTMENTS: tuple[str | None, ...] = ("Operations", "General", "Business", None, None)

PROFILE_NAMES: tuple[str, ...] = ("System Administrator", "Standard User", "Sales User", "Service Cloud User",
                                  "Marketing User", "Custom: Support Profile", "Custom: Sales Profile",
                                  "Read Only", "Contract Manager", "Solution Manager")
# Relative weights over PROFILE_NAMES per persona; every profile also gets a small floor weight.
PROFILE_AFFINITY: dict[str, dict[str, float]] = {
    "Sales Leader": {"Sales User": 3, "Standard User": 3, "Custom: Sales Profile": 1.5,
                     "System Administrator": 1.5, "Solution Manager": 1},
    "Deal Closer": {"Sales User": 3.5, "Standard User": 3.5, "Custom: Sales Profile": 2, "Contract Manager": 0.5},
    "Data Expert": {"System Administrator": 3.5, "Standard User": 3, "Sales User": 2, "Custom: Sales Profile": 1},
    "Pipeline Builder": {"Sales User": 3.5, "Standard User": 3.5, "Custom: Sales Profile": 2,
                         "Marketing User": 0.5},
    "Trusted Advisor": {"Sales User": 3, "Standard User": 3.5, "Custom: Sales Profile": 2, "Contract Manager": 1},
    "Case Solver": {"Service Cloud User": 4, "Custom: Support Profile": 2.5, "Standard User": 3},
    "Expert Agent": {"Service Cloud User": 4, "Custom: Support Profile": 2.5, "Standard User": 3},
    "Team Leader": {"Service Cloud User": 3.5, "Custom: Support Profile": 2.5, "Standard User": 3,
                    "System Administrator": 1},
    "Service Admin": {"System Administrator": 5.5, "Standard User": 2, "Service Cloud User": 1.5,
                      "Custom: Support Profile": 1},
    "Marketing Manager": {"Marketing User": 4.5, "Standard User": 4, "Sales User": 1},
    "Strategic Leader": {"Marketing User": 4, "Standard User": 4, "Read Only": 1, "Sales User": 1},
    "Marketing Specialist": {"Marketing User": 4.5, "Standard User": 4, "Sales User": 1},
    "Designer / Developer": {"Marketing User": 4, "Standard User": 3.5, "System Administrator": 1.5},
    "IT Services": {"System Administrator": 4, "Standard User": 3, "Marketing User": 3},
}
PROFILE_FLOOR_WEIGHT = 0.15

# The role hierarchy: (role, parent role). A user's role follows their persona's usual role most of
# the time (ROLE_TYPICAL_SHARE), otherwise any role or none.
ROLE_TREE: tuple[tuple[str, str | None], ...] = (
    ("CEO", None),
    ("VP Sales", "CEO"),
    ("Sales Manager", "VP Sales"),
    ("Sales Representative", "Sales Manager"),
    ("Sales Operations", "VP Sales"),
    ("VP Customer Service", "CEO"),
    ("Support Manager", "VP Customer Service"),
    ("Support Agent", "Support Manager"),
    ("Service Operations", "VP Customer Service"),
    ("VP Marketing", "CEO"),
    ("Marketing Manager", "VP Marketing"),
    ("Marketing Team", "Marketing Manager"),
    ("CIO", "CEO"),
    ("IT and Systems", "CIO"),
)
TYPICAL_ROLE: dict[str, str] = {
    "Sales Leader": "Sales Manager", "Deal Closer": "Sales Representative", "Data Expert": "Sales Operations",
    "Pipeline Builder": "Sales Representative", "Trusted Advisor": "Sales Representative",
    "Case Solver": "Support Agent", "Expert Agent": "Support Agent", "Team Leader": "Support Manager",
    "Service Admin": "Service Operations", "Marketing Manager": "Marketing Manager",
    "Strategic Leader": "VP Marketing", "Marketing Specialist": "Marketing Team",
    "Designer / Developer": "Marketing Team", "IT Services": "IT and Systems",
}
ROLE_TYPICAL_SHARE = 0.7
ROLE_NONE_SHARE = 0.05

# Who manages whom: each persona's usual managers. Leaders without a listed manager may report to a
# senior leader of their own persona.
MANAGED_BY: dict[str, tuple[str, ...]] = {
    "Deal Closer": ("Sales Leader",), "Pipeline Builder": ("Sales Leader",), "Trusted Advisor": ("Sales Leader",),
    "Data Expert": ("Sales Leader",),
    "Case Solver": ("Team Leader",), "Expert Agent": ("Team Leader",), "Service Admin": ("Team Leader",),
    "Marketing Specialist": ("Marketing Manager", "Strategic Leader"),
    "Designer / Developer": ("Marketing Manager", "Strategic Leader"),
    "IT Services": ("Marketing Manager", "Strategic Leader"),
    "Marketing Manager": ("Strategic Leader",),
}
LEADER_PERSONAS: tuple[str, ...] = ("Sales Leader", "Team Leader", "Strategic Leader")

# What kind of setup changes each persona makes, as shares of (user administration, customisation,
# automation and integration). Admins manage users; data experts customise; IT builds flows and APIs.
SETUP_ACTION_MIX: dict[str, tuple[float, float, float]] = {
    "Service Admin": (0.5, 0.4, 0.1),
    "Data Expert": (0.15, 0.7, 0.15),
    "Sales Leader": (0.3, 0.6, 0.1),
    "Team Leader": (0.5, 0.5, 0.0),
    "IT Services": (0.1, 0.2, 0.7),
    "Designer / Developer": (0.0, 0.4, 0.6),
}
DEFAULT_SETUP_ACTION_MIX = (0.2, 0.7, 0.1)

# Of each persona's meetings, the share held with a customer (a contact, account or deal attached); the
# rest are internal. Deal Closers and Trusted Advisors spend their days in front of customers, Pipeline
# Builders qualify some leads in person, Sales Leaders mostly coach their team but join some deals, Data
# Experts rarely meet customers; service and marketing meetings are internal.
CUSTOMER_MEETING_SHARE: dict[str, float] = {
    "Deal Closer": 0.85, "Trusted Advisor": 0.85, "Pipeline Builder": 0.6, "Sales Leader": 0.35, "Data Expert": 0.1,
}
