"""Words the synthetic org is written in: people's names, company names, subjects, bodies, picklists.

Kept apart from the generators so the generators read as logic. Lists are tuples (ordered, so draws are
deterministic); the generators pick from them with NumPy.
"""

from __future__ import annotations

FIRST_NAMES = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
    "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen",
    "Christopher", "Lisa", "Daniel", "Nancy", "Matthew", "Betty", "Anthony", "Sandra", "Mark", "Margaret",
    "Donald", "Ashley", "Steven", "Kimberly", "Andrew", "Emily", "Paul", "Donna", "Joshua", "Michelle",
    "Kenneth", "Carol", "Kevin", "Amanda", "Brian", "Melissa", "George", "Deborah", "Timothy", "Stephanie",
    "Priya", "Wei", "Aisha", "Mateo", "Sofia", "Lucas", "Yuki", "Omar", "Fatima", "Ivan", "Chloe", "Noah",
    "Amara", "Diego", "Leila", "Hiroshi", "Ingrid", "Kofi", "Nadia", "Raj",
)
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green",
    "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Patel",
    "Chen", "Kim", "Singh", "Müller", "Rossi", "Dubois", "Tanaka", "Okafor", "Kowalski", "Novak", "Larsen",
    "O'Brien", "Fischer", "Silva", "Haddad", "Ivanova", "Costa", "Berg", "Yamamoto",
)

COMPANY_HEADS = (
    "Blue Ridge", "Northwind", "Summit", "Harbor", "Granite", "Silverline", "Redwood", "Crescent", "Pioneer",
    "Evergreen", "Atlas", "Beacon", "Cobalt", "Falcon", "Horizon", "Ironwood", "Juniper", "Keystone",
    "Lakeshore", "Meridian", "Nimbus", "Orchid", "Pinnacle", "Quarry", "Riverbend", "Sequoia", "Tidewater",
    "Union", "Vertex", "Westbrook", "Zenith", "Apex", "Brightwater", "Canyon", "Driftwood", "Elm Street",
)
COMPANY_TAILS = (
    "Logistics", "Health", "Foods", "Manufacturing", "Energy", "Financial", "Software", "Retail", "Labs",
    "Media", "Construction", "Pharma", "Telecom", "Insurance", "Motors", "Analytics", "Hospitality",
    "Systems", "Partners", "Outfitters",
)
COMPANY_SUFFIXES = ("Inc.", "LLC", "Corp.", "Group", "Ltd.", "GmbH", "Co.", "")
INDUSTRIES = ("Technology", "Healthcare", "Manufacturing", "Retail", "Finance", "Energy", "Education",
              "Media", "Hospitality", "Transportation", "Government", "Insurance")
COUNTRIES = ("United States", "United States", "United States", "Canada", "United Kingdom", "Germany",
             "France", "Netherlands", "Australia", "Japan", "Brazil", "India")
ACCOUNT_TYPES = ("Prospect", "Customer - Direct", "Customer - Direct", "Customer - Channel", "Partner",
                 "Other")
CUSTOMER_TITLES = ("CEO", "CFO", "CTO", "VP Operations", "IT Manager", "Procurement Manager", "Director",
                   "Office Manager", "Buyer", "Engineer", "Head of Finance", "Project Manager", None)
LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other")
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")

# (time zone, hours the zone is behind UTC, country ISO code, division), ignoring daylight saving.
USER_ZONES = (
    ("America/New_York", 5, "US", "Americas"),
    ("America/Chicago", 6, "US", "Americas"),
    ("America/Los_Angeles", 8, "US", "Americas"),
    ("Europe/London", 0, "GB", "EMEA"),
    ("Europe/Berlin", -1, "DE", "EMEA"),
    ("Asia/Singapore", -8, "SG", "APAC"),
)
USER_ZONE_WEIGHTS = (0.3, 0.2, 0.15, 0.15, 0.12, 0.08)

# --- activity wording -----------------------------------------------------------------------------

SALES_CALL_SUBJECTS = ("Call", "Discovery call", "Follow-up call", "Check-in call", "Left voicemail",
                       "Pricing call", "Call: renewal", "Intro call", "Qualification call")
SERVICE_CALL_SUBJECTS = ("Call", "Support call", "Callback", "Inbound call", "Troubleshooting call",
                         "Call: case follow-up")
SALES_EMAIL_SUBJECTS = ("Email: Following up", "Email: Proposal", "Email: Re: pricing", "Email: Next steps",
                        "Email: Meeting recap", "Email: Introduction", "Email: Re: contract",
                        "Email: Checking in")
SERVICE_EMAIL_SUBJECTS = ("Email: Re: your case", "Email: Update on your request", "Email: Case resolved",
                          "Email: Need more information", "Email: Re: error message",
                          "Email: Steps to try")
LIST_EMAIL_SUBJECTS = ("List Email: Product update", "List Email: Webinar invitation",
                       "List Email: Monthly newsletter", "List Email: Event reminder",
                       "List Email: New feature launch", "List Email: Customer survey")
TODO_SUBJECTS = ("Send quote", "Follow up", "Prepare proposal", "Update account plan", "Review contract",
                 "Send documentation", "Schedule demo", "Other", "Check status")
TASK_STATUSES_OPEN = ("Not Started", "In Progress", "Waiting on someone else", "Deferred")

SALES_MEETING_SUBJECTS = ("Meeting", "Demo", "Product demo", "Quarterly business review", "Lunch meeting",
                          "Contract negotiation", "Onsite visit", "Kickoff")
INTERNAL_MEETING_SUBJECTS = ("1:1", "Team meeting", "Coaching session", "Pipeline review", "Planning",
                             "Training", "Sprint review", "Campaign review", "Staff meeting")
MEETING_LOCATIONS = ("Zoom", "Teams", "Customer site", "Office", "Conference room B", None)

CASE_SUBJECTS = ("Cannot log in", "Error on checkout", "Billing question", "Device not powering on",
                 "Slow performance", "Request for refund", "Installation help", "Data export fails",
                 "Password reset", "Integration error", "Order status", "Feature request: export to PDF",
                 "Shipping delay", "Warranty claim", "Account locked")
CASE_COMMENTS = ("Called customer, waiting for logs.", "Asked customer to clear cache and retry.",
                 "Reproduced the issue in test.", "Escalating to tier 2.", "Workaround provided.",
                 "Customer confirmed the fix.", "Checked with engineering, fix in next release.",
                 "Sent knowledge article link.", "Internal note: duplicate of an older case.",
                 "Customer did not respond, following up.")
ARTICLE_TOPICS = ("Resetting your password", "Troubleshooting login errors", "How to export data",
                  "Setting up two-factor authentication", "Understanding your invoice",
                  "Installing the desktop client", "Fixing sync errors", "Return and refund policy",
                  "Configuring email notifications", "Known issue: slow dashboards",
                  "Connecting the mobile app", "Upgrading your plan")

CHATTER_BODIES = ("Great work on this one!", "Can anyone help with this customer?",
                  "Sharing the latest numbers.", "Reminder: team meeting tomorrow.",
                  "Who owns this account now?", "Closed the deal, thanks all!",
                  "Updated the playbook, please review.", "Any tips for this error?",
                  "New article is live.", "Campaign results are in.")
FEED_TYPES = ("TextPost", "LinkPost", "ContentPost", "QuestionPost", "PollPost")
FEED_TYPE_WEIGHTS = (0.75, 0.1, 0.08, 0.05, 0.02)

CAMPAIGN_TOPICS = ("Spring Launch", "Customer Summit", "Product Webinar", "Partner Days", "Holiday Promo",
                   "Trade Show", "Nurture Series", "Win-back", "Newsletter", "Executive Dinner")
CAMPAIGN_TYPES = ("Conference", "Webinar", "Trade Show", "Email", "Advertisement", "Partners", "Other")
TEMPLATE_TOPICS = ("Welcome", "Newsletter", "Event Invite", "Renewal Reminder", "Case Closed",
                   "Product Update", "Survey", "Follow Up", "Thank You", "Promo")

REPORT_TOPICS = ("Pipeline by Stage", "Closed Won This Quarter", "Open Cases by Agent", "Case Aging",
                 "Leads by Source", "Campaign ROI", "Activities by Rep", "Forecast", "Escalated Cases",
                 "Accounts Without Activity", "Renewals Due", "Email Engagement", "Login Activity",
                 "Quota Attainment")
REPORT_FOLDERS = ("Sales Reports", "Service Reports", "Marketing Reports", "Private Reports",
                  "Public Reports", "Admin Reports")
DASHBOARD_TOPICS = ("Sales Overview", "Team Performance", "Service KPIs", "Marketing ROI",
                    "Executive Summary", "Pipeline Health", "Agent Productivity", "Campaign Engagement")

# Setup actions as (Action, Section, Display template); `{user}` is filled with a username.
USER_ADMIN_ACTIONS = (
    ("createduser", "Manage Users", "Created new user {user}"),
    ("changedprofileforuser", "Manage Users", "Changed profile for user {user} from Standard User to Sales User"),
    ("PermSetAssign", "Manage Users", "Permission set Knowledge User: assigned to user {user}"),
    ("PermSetUnassign", "Manage Users", "Permission set Marketing Access: unassigned from user {user}"),
    ("changedroleforuser", "Manage Users", "Changed role for user {user} from none to Support Agent"),
    ("resetpassword", "Manage Users", "Reset password for {user}"),
)
CUSTOMIZE_ACTIONS = (
    ("createdCustomField", "Customize Opportunities", "Created custom field Renewal Date (Date)"),
    ("changedFieldType", "Customize Cases", "Changed field type of Case field Product from Text to Picklist"),
    ("changedPicklistValues", "Customize Leads", "Changed picklist values for Lead field Lead Source"),
    ("changedLayout", "Customize Accounts", "Changed Account page layout Account Layout"),
    ("createdValidationRule", "Customize Contacts", "Created validation rule Email_Required"),
    ("createdReportType", "Report Types", "Created custom report type Cases with Articles"),
    ("changedQueueMembership", "Manage Queues", "Changed membership of queue Tier 2 Support"),
)
AUTOMATION_ACTIONS = (
    ("changedFlow", "Flows", "Activated version 4 of flow Lead Routing"),
    ("createdFlow", "Flows", "Created flow Journey Sync"),
    ("insertConnectedApplication", "Connected Apps", "Created connected app Marketing Data Sync"),
    ("changedApexClassCode", "Apex Class", "Changed Apex class code MarketingCloudSync"),
    ("changedNamedCredential", "Named Credentials", "Changed named credential MC_API"),
    ("changedRemoteSiteSetting", "Remote Site Settings", "Changed remote site mc.example.net"),
)
LIFECYCLE_ACTIONS = {
    "created": ("createduser", "Manage Users", "Created new user {user}"),
    "deactivated": ("deactivateduser", "Manage Users", "Deactivated user {user}"),
}

# LoginHistory values per channel.
BROWSERS = ("Chrome 124", "Chrome 125", "Edge 124", "Firefox 126", "Safari 17")
DESKTOP_PLATFORMS = ("Windows 10", "Windows 11", "Mac OSX")
API_APPLICATIONS = ("Data Loader", "Workbench", "Marketing Cloud Connect", "Integration App", "N/A")
API_TYPES = ("SOAP Partner", "REST", "REST", "SOAP Enterprise", "Bulk API")
# Worlds that record logins otherwise (see `logins`): connected apps (neither a browser nor a Salesforce
# mobile app), other names of the mobile app, and platforms that alone say a login came from a phone.
CONNECTED_APPS = ("Data Loader", "Workbench", "MuleSoft Anypoint", "Marketing Cloud Connect", "Integration App",
                  "Jitterbit Harmony", "Zapier")
GENERIC_MOBILE_APPLICATIONS = ("Salesforce Mobile", "Salesforce1")
IOS_PLATFORMS = ("iOS/iPhone", "iOS/iPad")
ANDROID_PLATFORMS = ("Android 14", "Android 13")
LOGIN_FAILURES = ("Invalid Password", "Invalid Password", "Invalid Password", "Failed: Computer activation required")
