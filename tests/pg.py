"""A throwaway PostgreSQL server for tests, and the ``db_url`` fixture that runs a test on both.

SQLite is the default database and PostgreSQL comes from a URL, so every persistence test must
prove both. Mocking PostgreSQL would prove nothing about its type handling, constraint errors or
transactional DDL, so :func:`postgres_url` starts a real cluster once per session:

* binaries are found under ``/usr/lib/postgresql/*/bin`` (Debian/Ubuntu) or on ``PATH``;
* PostgreSQL refuses to run as root, so when the tests run as root the cluster lives in a fresh
  folder under ``/tmp`` owned by the ``postgres`` user and is driven through ``runuser``;
* it listens on 127.0.0.1 at a free port, with trust authentication and its unix socket inside
  the folder, so it never collides with a system cluster;
* durability is switched off (``fsync=off``): the data is thrown away, and startup takes ~1 s.

``TCE_TEST_POSTGRES_URL`` points the tests at an existing server instead (e.g. a CI service
container); they run in a database of their own that is dropped afterwards. Without binaries the
PostgreSQL half is skipped, except when ``CI`` is set: there it fails, because CI must prove
PostgreSQL.

Use from ``tests/conftest.py``: ``from tests.pg import db_engine, db_url, postgres_url``.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

URL_ENV = "TCE_TEST_POSTGRES_URL"
DATABASE = "tce_test"
_SERVER_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off",
                    "listen_addresses=127.0.0.1", "max_connections=60", "shared_buffers=32MB",
                    "log_min_messages=warning")


def find_postgres_bin() -> Path | None:
    """The newest ``bin`` folder holding ``initdb`` and ``pg_ctl``, or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: _version_key(Path(p).parent.parent.name))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=str(Path(found).parent)):
        return Path(found).parent
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """initdb + pg_ctl in a private folder; :meth:`stop` removes everything it made."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        # pytest's own tmp folders are 0700 and owned by root: the postgres user could not
        # enter them, so the cluster gets its own folder in the world-traversable /tmp.
        self.root = Path(tempfile.mkdtemp(prefix="tce-pg-", dir="/tmp" if self.as_root else None))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        if self.as_root:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.root, ignore_errors=True)
                raise RuntimeError("tests run as root and there is no 'postgres' user to run"
                                   " PostgreSQL; install the postgresql package") from None
            os.chown(self.root, user.pw_uid, user.pw_gid)
        os.chmod(self.root, 0o700)

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            command = (["runuser", "-u", "postgres", "--", *command] if shutil.which("runuser")
                       else ["su", "postgres", "-s", "/bin/sh", "-c",
                             " ".join(shlex.quote(a) for a in command)])
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=self.root, check=False)

    def start(self) -> str:
        done = self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                         "-E", "UTF8", "--locale=C", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()}")
        for _attempt in range(3):  # the port may be taken between probing and binding
            self.port = _free_port()
            options = " ".join(["-p", str(self.port), "-k", str(self.root),
                                *(f"-c {s}" for s in _SERVER_SETTINGS)])
            done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                             "-w", "-t", "30", "start")
            if done.returncode == 0:
                break
        else:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}\n{self._log_tail()}")
        self._create_database()
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 10
        while True:
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                                     dbname="postgres", autocommit=True,
                                     connect_timeout=5) as conn:
                    conn.execute(f"CREATE DATABASE {DATABASE}")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a PostgreSQL database that lives for the whole test session."""
    given = os.environ.get(URL_ENV)
    if given:
        yield from _private_database(given)
        return
    bindir = find_postgres_bin()
    if bindir is None:
        reason = ("PostgreSQL binaries not found (looked in /usr/lib/postgresql/*/bin and PATH);"
                  " install them with 'apt-get install postgresql', or set"
                  f" {URL_ENV}=postgresql+psycopg://USER@HOST:PORT/DB")
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {reason}")
        pytest.skip(reason)
    cluster = PostgresCluster(bindir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def _private_database(server_url: str) -> Iterator[str]:
    """A new database on someone else's server, dropped afterwards: theirs is never touched."""
    name = f"tce_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(make_url(server_url).set(drivername="postgresql+psycopg"),
                          poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:  # FORCE (PostgreSQL 13+) ends leaked connections
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    finally:
        admin.dispose()


def _reset_postgres(url: str) -> None:
    """Drop everything a test created, even if it leaked a connection inside a transaction."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                              " WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, once on SQLite (a file in tmp_path) and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tce.sqlite3'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    try:
        yield url
    finally:
        _reset_postgres(url)


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    """An engine from :func:`appliance.db.open_database` on each backend; disposed afterwards."""
    from appliance.db import open_database

    engine = open_database(db_url)
    try:
        yield engine
    finally:
        engine.dispose()
