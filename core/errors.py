"""The project's own error types. Each message says what failed, where, and what to do about it."""

from __future__ import annotations


class PersonaSyncError(Exception):
    """Base of every error persona-sync raises on purpose; the CLI prints these without a traceback."""


class ConfigurationError(PersonaSyncError):
    """A setting is missing or inconsistent (the message names the PERSONA_SYNC_ variable to set)."""


class SalesforceError(PersonaSyncError):
    """A Salesforce call failed for good (after retries): names the org, the object and the call."""

    def __init__(self, message: str, *, org: str = "", sobject: str = "", call: str = "",
                 transient: bool = False) -> None:
        where = ", ".join(part for part in (f"org {org}" if org else "", f"object {sobject}" if sobject else "",
                                            f"call {call}" if call else "") if part)
        super().__init__(f"{message} ({where})" if where else message)
        self.org = org
        self.sobject = sobject
        self.call = call
        # The org could not be reached or failed on its side: the same work may succeed in a while (a
        # flow's task retries), unlike a refused credential, a missing field or an exhausted API limit.
        self.transient = transient


class SalesforceAuthError(SalesforceError):
    """The org refused our credentials, or could not be reached to present them."""


class ApiReserveError(SalesforceError):
    """The org has fewer daily API requests left than the reserve we leave for its other integrations."""


class BackfillError(PersonaSyncError):
    """A backfill cannot run as asked: dates outside what staging holds, nothing staged, bad parameters."""


class ValidationFailed(PersonaSyncError):
    """A run's checks or guardrails failed: nothing was written. The message names each failing check,
    what was observed and the limit; the run's Data Docs and the ledger have the details."""

    def __init__(self, message: str, *, failed: list[str] | None = None, data_docs: str | None = None) -> None:
        super().__init__(message)
        self.failed = list(failed or [])
        self.data_docs = data_docs

    def __reduce__(self):  # picklable with its keywords (Prefect ships exceptions between processes)
        return (_validation_failed, (str(self), self.failed, self.data_docs))


def _validation_failed(message: str, failed: list[str], data_docs: str | None) -> ValidationFailed:
    return ValidationFailed(message, failed=failed, data_docs=data_docs)
