"""The Salesforce connector: logging in and handing simple-salesforce a ready session."""

from connectors.salesforce.login import OrgSession, connect, http_session, login

__all__ = ["OrgSession", "connect", "http_session", "login"]
