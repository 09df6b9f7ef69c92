"""Engine factory, schema creation and versioned migrations for the three nodes' databases.

SQLite is the default (``sqlite:///<work_dir>/tce.sqlite3``) and PostgreSQL comes from a URL;
both must behave the same, so the differences are settled here and nowhere else:

* SQLite runs in WAL mode with ``synchronous=FULL``: a C-STORE success answered after a commit
  means the row is on disk, even if power fails a moment later. ``busy_timeout`` (30 s) makes a
  writer wait for another writer instead of failing, and foreign keys are switched on because
  SQLite leaves them off by default.
* The pysqlite driver's own transaction handling is replaced by an explicit ``BEGIN IMMEDIATE``:
  every transaction takes the write lock at its start. A transaction that reads (is this instance
  a duplicate?) and then writes would otherwise fail at once with "database is locked" when
  another connection wrote in between, and no busy timeout helps with that. It also makes DDL
  transactional, so a failed migration step leaves the schema as it was.
* PostgreSQL uses psycopg 3 with ``pool_pre_ping``, so a restarted server costs one retry, not an
  error; ``postgresql://`` URLs are read as ``postgresql+psycopg://``.

The schema version lives in ``schema_version`` (one row per version applied). A node refuses a
database written by a newer release rather than guessing at columns it does not know. No engine
is built at import time: settings are passed down, and tests build engines of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    insert,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

from appliance.models import Base, SchemaVersion
from appliance.settings import ConfigError

SCHEMA_VERSION = 1
"""The schema this code reads and writes. Raise it together with a step in :data:`MIGRATIONS`."""

Migration = Callable[[Connection], None]
MIGRATIONS: dict[int, Migration] = {}
"""``MIGRATIONS[n]`` upgrades a version ``n - 1`` database to version ``n``, inside one
transaction that also records ``n``. Steps use plain DDL/DML on the connection they are given."""

SQLITE_BUSY_TIMEOUT_MS = 30_000
DEFAULT_DATABASE = "tce.sqlite3"
_PG_LOCK_ID = 0x7CE0_5C4E  # advisory lock taken while creating or migrating the schema


class SchemaVersionError(ConfigError):
    """The database's schema version cannot be used by this code; the message says what to do."""


def default_url(work_dir: Path) -> str:
    """The SQLite URL used when ``database_url`` is not configured."""
    return f"sqlite:///{Path(work_dir) / DEFAULT_DATABASE}"


def make_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """An engine for ``url``: SQLite with durable, concurrent settings, or PostgreSQL (psycopg).

    Raises :class:`ConfigError` for URLs of other databases and for an SQLite file whose folder
    does not exist (SQLite would only say "unable to open database file").
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, echo)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, echo=echo, pool_pre_ping=True,
                             connect_args={"connect_timeout": 10,
                                           "application_name": "tce-appliance"})
    raise ConfigError(f"database_url uses {backend!r}; tce-appliance supports sqlite:///PATH and"
                      " postgresql+psycopg://USER@HOST:PORT/DB")


def _sqlite_engine(url: URL, echo: bool) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        folder = Path(database).expanduser().absolute().parent
        if not folder.is_dir():
            raise ConfigError(f"the folder of the SQLite database {database} does not exist;"
                              " run 'tce init DIR' or create the folder")
    engine = create_engine(url, echo=echo,
                           connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see module doc)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def engine_from_settings(settings: Any) -> Engine:
    """:func:`make_engine` for a node's :class:`~appliance.settings.Settings`."""
    return make_engine(settings.database_url or default_url(settings.work_dir))


# --- sessions -------------------------------------------------------------------------------


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (handy for CLI output and audit)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine | sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit when the block ends, roll back (and re-raise) on an exception."""
    factory = engine if isinstance(engine, sessionmaker) else session_factory(engine)
    with factory() as session, session.begin():
        yield session


# --- schema and versions --------------------------------------------------------------------


def schema_version(bind: Engine | Connection) -> int | None:
    """The newest version recorded in the database, or None for a database without a schema."""
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return schema_version(conn)
    if not inspect(bind).has_table(SchemaVersion.__tablename__):
        return None
    found = bind.execute(select(SchemaVersion.version)
                         .order_by(SchemaVersion.version.desc()).limit(1)).scalar()
    return None if found is None else int(found)


def _lock(conn: Connection) -> None:
    """Serialize schema changes between processes starting at the same time."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
    # SQLite: BEGIN IMMEDIATE already holds the database's write lock.


def _record(conn: Connection, version: int) -> None:
    conn.execute(insert(SchemaVersion).values(version=version, applied_at=datetime.now(UTC)))


def _describe(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _too_new(engine: Engine, found: int, known: int) -> SchemaVersionError:
    return SchemaVersionError(
        f"database {_describe(engine)} has schema version {found}, but this tce-appliance"
        f" understands versions up to {known}: it was written by a newer release. Upgrade"
        " tce-appliance on this node, or point database_url at another database")


def create_schema(engine: Engine, *, target: int = SCHEMA_VERSION,
                  migrations: Mapping[int, Migration] = MIGRATIONS) -> int:
    """Make the database ready for this code and return its schema version.

    A database without a schema gets every table and ``target`` recorded. An older one is
    upgraded with :func:`migrate`. A newer one is refused with :class:`SchemaVersionError`.
    """
    with engine.begin() as conn:
        _lock(conn)
        found = schema_version(conn)
        if found is None:
            Base.metadata.create_all(conn)
            _record(conn, target)
            return target
    if found > target:
        raise _too_new(engine, found, target)
    if found < target:
        return migrate(engine, target=target, migrations=migrations)
    return found


def migrate(engine: Engine, *, target: int = SCHEMA_VERSION,
            migrations: Mapping[int, Migration] = MIGRATIONS) -> int:
    """Upgrade step by step to ``target``, one transaction per step; return the new version.

    Each step re-reads the version under a lock, so two nodes starting together apply it once.
    Raises :class:`SchemaVersionError` for a database without a schema, a newer database, or a
    missing step.
    """
    current = schema_version(engine)
    if current is None:
        raise SchemaVersionError(f"database {_describe(engine)} has no tce-appliance schema to"
                                 " migrate; create_schema() creates one")
    if current > target:
        raise _too_new(engine, current, target)
    missing = [n for n in range(current + 1, target + 1) if n not in migrations]
    if missing:
        raise SchemaVersionError(f"cannot upgrade database {_describe(engine)} from schema"
                                 f" version {current} to {target}: no migration step for"
                                 f" version(s) {missing}")
    for version in range(current + 1, target + 1):
        with engine.begin() as conn:
            _lock(conn)
            now = schema_version(conn)
            if now is not None and now >= version:
                continue  # another process applied it meanwhile
            migrations[version](conn)
            _record(conn, version)
    return target


def open_database(url: str | URL, **engine_options: Any) -> Engine:
    """:func:`make_engine` + :func:`create_schema`: what a node calls when it starts."""
    engine = make_engine(url, **engine_options)
    try:
        create_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine
