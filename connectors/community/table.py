"""One community role table: the (member, role) rows it holds, and grants and revokes in one transaction."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import Column, MetaData, Table, and_, bindparam, create_engine, delete, insert, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from core.configs import CommunityConfig
from core.errors import PersonaSyncError

Pair = tuple[str, str]  # (member key, role)


class CommunityError(PersonaSyncError):
    """The community database or its role table cannot be used as configured (the message says which
    PERSONA_SYNC_COMMUNITY_ setting to check)."""


class CommunityTable:
    """The configured role table of a community database (SQLite, PostgreSQL, any SQLAlchemy URL)."""

    def __init__(self, config: CommunityConfig) -> None:
        self.config = config
        url = config.url.get_secret_value() if isinstance(config.url, SecretStr) else str(config.url)
        self.where = make_url(url).render_as_string(hide_password=True)
        self._engine: Engine = create_engine(url)
        try:
            self._table = Table(config.table, MetaData(), autoload_with=self._engine)
        except NoSuchTableError:
            raise CommunityError(f"the community database {self.where} has no table {config.table!r} "
                                 "(PERSONA_SYNC_COMMUNITY_TABLE)") from None
        except SQLAlchemyError as error:
            raise CommunityError(f"cannot read the community database {self.where}: {error.__class__.__name__}: "
                                 f"{error.orig if hasattr(error, 'orig') else error}") from None
        self._user = self._column(config.user_column, "PERSONA_SYNC_COMMUNITY_USER_COLUMN")
        self._role = self._column(config.role_column, "PERSONA_SYNC_COMMUNITY_ROLE_COLUMN")

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> CommunityTable:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        """The table, as the grant ledger names the target: the database (its file name, or host and name)
        and the table; not the driver or the user, which may change while the table stays the same."""
        url = make_url(self.config.url.get_secret_value())
        database = Path(url.database or "").name if url.get_backend_name() == "sqlite" else \
            f"{url.host or 'localhost'}/{url.database or ''}"
        return f"{database}#{self.config.table}"

    def rows(self) -> set[Pair]:
        """Every (member, role) the table holds, whoever granted it."""
        with self._engine.connect() as connection:
            return {(str(user), str(role)) for user, role in connection.execute(select(self._user, self._role))
                    if user is not None and role is not None}

    def apply(self, grants: Iterable[Pair], revokes: Iterable[Pair]) -> None:
        """Inserts a row for each of `grants` and deletes the rows holding each of `revokes`, in one
        transaction: all or nothing."""
        grants, revokes = list(grants), list(revokes)
        if not grants and not revokes:
            return
        try:
            with self._engine.begin() as connection:
                if grants:
                    connection.execute(insert(self._table), [{self._user.name: user, self._role.name: role}
                                                              for user, role in grants])
                if revokes:  # one statement, executed for every pair
                    connection.execute(delete(self._table).where(and_(self._user == bindparam("member"),
                                                                      self._role == bindparam("role_name"))),
                                       [{"member": user, "role_name": role} for user, role in revokes])
        except SQLAlchemyError as error:
            raise CommunityError(f"the community database {self.where} refused the grants and revokes, so none was "
                                 f"applied ({error.__class__.__name__}: {getattr(error, 'orig', error)}). If someone "
                                 "granted one of the same roles meanwhile, run again: the next run starts from what "
                                 "the table holds then") from None

    def _column(self, name: str, setting: str) -> Column:
        if name not in self._table.c:
            raise CommunityError(f"the table {self.config.table!r} of {self.where} has no column {name!r} ({setting}); "
                                 f"its columns: {', '.join(self._table.c.keys())}")
        return self._table.c[name]
