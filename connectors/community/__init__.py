"""The community platform's role table: someone else's schema, read and written through SQLAlchemy.

`CommunityTable` knows one table by configuration (its user and role columns) and nothing of personas
or of who granted what: the grant ledger in the state database says which rows persona-sync inserted.
"""

from connectors.community.table import CommunityError, CommunityTable

__all__ = ["CommunityError", "CommunityTable"]
