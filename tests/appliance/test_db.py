"""Engine factory, schema versions and migrations, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from appliance.db import (
    SCHEMA_VERSION,
    SchemaVersionError,
    create_schema,
    default_url,
    engine_from_settings,
    make_engine,
    migrate,
    open_database,
    schema_version,
    session_scope,
)
from appliance.models import Base, Instance, Node, SchemaVersion
from appliance.settings import ConfigError, defaults


def add_instance(session: object, key: str, node: Node = Node.STAGE1) -> Instance:
    row = Instance(node=node, received_key=key, sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                   transfer_syntax_uid="1.2.840.10008.1.2.1", size_bytes=1024)
    session.add(row)  # type: ignore[attr-defined]
    return row


def versions(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(select(SchemaVersion.version).order_by(SchemaVersion.version))
                    .scalars())


# --- schema ---------------------------------------------------------------------------------


def test_open_database_creates_every_table_and_records_the_version(db_url: str) -> None:
    engine = open_database(db_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        assert schema_version(engine) == SCHEMA_VERSION
        assert create_schema(engine) == SCHEMA_VERSION  # opening again changes nothing
        assert versions(engine) == [SCHEMA_VERSION]
    finally:
        engine.dispose()


def test_an_empty_database_has_no_version(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert schema_version(engine) is None
        with pytest.raises(SchemaVersionError, match="no tce-appliance schema"):
            migrate(engine)
    finally:
        engine.dispose()


def test_a_database_from_a_newer_release_is_refused(db_url: str) -> None:
    engine = open_database(db_url)
    with engine.begin() as conn:
        conn.execute(SchemaVersion.__table__.insert(),  # type: ignore[attr-defined]
                     {"version": SCHEMA_VERSION + 1, "applied_at": datetime.now(UTC)})
    engine.dispose()

    with pytest.raises(SchemaVersionError) as caught:
        open_database(db_url)
    message = str(caught.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert "newer release" in message and "Upgrade tce-appliance" in message
    assert isinstance(caught.value, ConfigError)  # the CLI turns it into exit code 2


def test_the_error_hides_a_postgres_password() -> None:
    engine = make_engine("postgresql+psycopg://tce:s3cret@db.example:5432/tce")
    from appliance.db import _describe

    assert "s3cret" not in _describe(engine)


# --- migrations -----------------------------------------------------------------------------


def add_note_column(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE jobs ADD COLUMN note VARCHAR(40)"))


def test_a_migration_step_upgrades_an_older_database(db_url: str) -> None:
    engine = open_database(db_url)
    try:
        calls: list[int] = []

        def step(conn: Connection) -> None:
            calls.append(1)
            add_note_column(conn)

        target = SCHEMA_VERSION + 1
        assert migrate(engine, target=target, migrations={target: step}) == target
        assert calls == [1]
        assert "note" in {c["name"] for c in inspect(engine).get_columns("jobs")}
        assert versions(engine) == [SCHEMA_VERSION, target]

        assert migrate(engine, target=target, migrations={target: step}) == target
        assert calls == [1]  # already applied: not run again
        with pytest.raises(SchemaVersionError, match="newer release"):
            create_schema(engine)  # this code only knows SCHEMA_VERSION
    finally:
        engine.dispose()


def test_create_schema_runs_pending_steps_in_order(db_url: str) -> None:
    engine = open_database(db_url)
    try:
        order: list[int] = []
        steps = {SCHEMA_VERSION + 2: lambda conn: order.append(2),
                 SCHEMA_VERSION + 1: lambda conn: order.append(1)}
        assert create_schema(engine, target=SCHEMA_VERSION + 2, migrations=steps) == (
            SCHEMA_VERSION + 2)
        assert order == [1, 2]
        assert schema_version(engine) == SCHEMA_VERSION + 2
    finally:
        engine.dispose()


def test_a_failing_step_leaves_schema_and_version_untouched(db_url: str) -> None:
    engine = open_database(db_url)
    try:
        def broken(conn: Connection) -> None:
            add_note_column(conn)
            raise RuntimeError("step failed half way")

        with pytest.raises(RuntimeError, match="half way"):
            migrate(engine, target=SCHEMA_VERSION + 1, migrations={SCHEMA_VERSION + 1: broken})
        # DDL is transactional on both backends (SQLite: thanks to our explicit BEGIN)
        assert "note" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
        assert schema_version(engine) == SCHEMA_VERSION
    finally:
        engine.dispose()


def test_a_missing_step_is_reported_before_anything_runs(db_url: str) -> None:
    engine = open_database(db_url)
    try:
        ran: list[int] = []
        with pytest.raises(SchemaVersionError, match=r"no migration step for version\(s\) \[3\]"):
            migrate(engine, target=3, migrations={2: lambda conn: ran.append(2)})
        assert ran == []
        assert schema_version(engine) == SCHEMA_VERSION
    finally:
        engine.dispose()


# --- sessions and engines -------------------------------------------------------------------


def test_session_scope_commits_or_rolls_back(db_url: str) -> None:
    engine = open_database(db_url)
    try:
        with session_scope(engine) as session:
            add_instance(session, "k-1")
        with pytest.raises(ZeroDivisionError), session_scope(engine) as session:
            add_instance(session, "k-2")
            session.flush()
            _ = 1 / 0
        with session_scope(engine) as session:
            keys = session.execute(select(Instance.received_key)).scalars().all()
        assert keys == ["k-1"]
    finally:
        engine.dispose()


@pytest.mark.parametrize("threads, per_thread", [(4, 40)])
def test_concurrent_writers_lose_no_rows(db_url: str, threads: int, per_thread: int) -> None:
    """Each transaction reads, then writes: the pattern of a duplicate check before insert.

    On SQLite a deferred transaction would fail with "database is locked" when another writer
    committed in between; BEGIN IMMEDIATE plus the busy timeout make writers queue instead.
    """
    open_database(db_url).dispose()
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def writer(number: int) -> None:
        engine = make_engine(db_url)  # one engine per thread, as separate processes would have
        try:
            barrier.wait()
            for i in range(per_thread):
                with session_scope(engine) as session:
                    session.execute(select(func.count(Instance.id))).scalar_one()
                    add_instance(session, f"t{number}-{i}")
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            engine.dispose()

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert errors == []
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as session:
            keys = set(session.execute(select(Instance.received_key)).scalars())
        assert len(keys) == threads * per_thread
    finally:
        engine.dispose()


def test_sqlite_is_durable_and_waits_for_writers(tmp_path: Path) -> None:
    engine = make_engine(default_url(tmp_path))
    try:
        with engine.connect() as conn:
            pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                      for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")}
        assert pragma == {"journal_mode": "wal", "synchronous": 2, "busy_timeout": 30_000,
                          "foreign_keys": 1}
        assert (tmp_path / "tce.sqlite3").exists()
    finally:
        engine.dispose()


def test_sqlite_enforces_foreign_keys(tmp_path: Path) -> None:
    engine = open_database(default_url(tmp_path))
    try:
        with pytest.raises(IntegrityError, match="FOREIGN KEY"), engine.begin() as conn:
            conn.execute(text("INSERT INTO media_studies (media_id, study_uid)"
                              " VALUES (999, '2.25.1')"))
    finally:
        engine.dispose()


def test_a_missing_sqlite_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; run 'tce init DIR'"):
        make_engine(default_url(tmp_path / "nowhere"))


def test_postgresql_urls_use_psycopg_and_ping_the_pool() -> None:
    engine = make_engine("postgresql://tce@db.example/tce")  # no connection is made
    assert engine.dialect.driver == "psycopg"
    assert engine.pool._pre_ping


def test_other_databases_are_refused() -> None:
    with pytest.raises(ConfigError, match="supports sqlite:///PATH and postgresql"):
        make_engine("mysql://tce@db.example/tce")


def test_settings_choose_the_database(tmp_path: Path) -> None:
    engine = engine_from_settings(defaults(tmp_path, environ={}))
    try:
        assert engine.url.database == str((tmp_path / "tce.sqlite3").resolve())
    finally:
        engine.dispose()
    url = "postgresql+psycopg://tce@db.example/tce"
    engine = engine_from_settings(defaults(tmp_path, environ={"TCE_DATABASE_URL": url}))
    assert engine.url.render_as_string() == url
