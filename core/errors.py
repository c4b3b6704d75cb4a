"""The project's own error types. Each message says what failed, where, and what to do about it."""

from __future__ import annotations


class PersonaSyncError(Exception):
    """Base of every error persona-sync raises on purpose; the CLI prints these without a traceback."""


class ConfigurationError(PersonaSyncError):
    """A setting is missing or inconsistent (the message names the PERSONA_SYNC_ variable to set)."""


class SalesforceError(PersonaSyncError):
    """A Salesforce call failed for good (after retries): names the org, the object and the call."""

    def __init__(self, message: str, *, org: str = "", sobject: str = "", call: str = "") -> None:
        where = ", ".join(part for part in (f"org {org}" if org else "", f"object {sobject}" if sobject else "",
                                            f"call {call}" if call else "") if part)
        super().__init__(f"{message} ({where})" if where else message)
        self.org = org
        self.sobject = sobject
        self.call = call


class SalesforceAuthError(SalesforceError):
    """The org refused our credentials, or could not be reached to present them."""


class ApiReserveError(SalesforceError):
    """The org has fewer daily API requests left than the reserve we leave for its other integrations."""
