"""The Salesforce connector: logging in, and one resilient client (timeouts, retries, renewal) for every call."""

from connectors.salesforce.client import ApiReserveError, BulkPage, RetryPolicy, SalesforceClient
from connectors.salesforce.login import OrgSession, connect, http_session, login

__all__ = ["ApiReserveError", "BulkPage", "OrgSession", "RetryPolicy", "SalesforceClient", "connect",
           "http_session", "login"]
