"""Engine, sessions and migrations. Nothing is created at import time."""
from __future__ import annotations

from collections.abc import Iterator
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
# PostgreSQL ends a session left idle inside a transaction this long (a frozen process: SIGSTOP, a
# hung VM), releasing its locks; every transaction of the service is short and never waits on Ray,
# so only a frozen one reaches it. It bounds how long a frozen ex-leader can hold a takeover up
# (service.runtime.lease).
IDLE_TX_TIMEOUT_MS = 10_000
READ_ONLY = "snrlab_read_only"  # execution option: SQLite starts a deferred (shared) transaction


def make_engine(url: str, **kwargs) -> Engine:
    """SQLite: WAL, busy timeout, foreign keys, and `BEGIN IMMEDIATE` so a transaction that
    reads then writes never hits the lock-upgrade deadlock ("database is locked").
    PostgreSQL: psycopg 3 (a bare `postgresql://` URL is mapped to it)."""
    u = make_url(url)
    if u.get_backend_name() == "postgresql":
        if u.drivername == "postgresql":
            u = u.set(drivername="postgresql+psycopg")
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
        kwargs.setdefault("connect_args", {"options": f"-c idle_in_transaction_session_timeout={IDLE_TX_TIMEOUT_MS}"})
        return create_engine(u, **kwargs)
    if u.get_backend_name() != "sqlite":
        raise ValueError(f"unsupported database {u.get_backend_name()!r}: use sqlite or postgresql")
    if u.database and u.database != ":memory:":

        Path(u.database).parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "factory": _writer_queue()}
    if u.database and u.database != ":memory:":
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 10)
    engine = create_engine(u, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised through every test
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # a read-only session (the API's GETs) takes no write lock: under WAL, readers run beside
        # a writer instead of queueing behind it
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
            return
        dbapi_conn = conn.connection.dbapi_connection
        dbapi_conn.queue_for_write()
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            dbapi_conn.leave_write_queue()
            raise

    return engine


def _writer_queue() -> type[sqlite3.Connection]:
    """A sqlite3 connection class whose writers queue on one lock per engine before BEGIN IMMEDIATE.
    SQLite's own wait for its write lock sleeps and polls (1, 2, 5 ... 100 ms), so under a burst of
    writers the lock sits free while they sleep (py-spy, 50 concurrent POSTs: two thirds of the time
    in BEGIN IMMEDIATE). Writers of this process wake at once when the lock is let go; other
    processes still meet SQLite's busy timeout. A wait past that timeout goes on to SQLite's."""
    lock = threading.Lock()

    class WriterQueue(sqlite3.Connection):
        holds_lock = False

        def queue_for_write(self) -> None:
            self.holds_lock = lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)

        def leave_write_queue(self) -> None:
            if self.holds_lock:
                self.holds_lock = False
                lock.release()

        def commit(self) -> None:
            try:
                super().commit()
            finally:
                self.leave_write_queue()

        def rollback(self) -> None:
            try:
                super().rollback()
            finally:
                self.leave_write_queue()

        def close(self) -> None:
            try:
                super().close()
            finally:
                self.leave_write_queue()

    return WriterQueue


def read_only(session: Session) -> Session:
    """Mark a fresh session as a reader: on SQLite its transaction is deferred, not IMMEDIATE.
    Safe only for sessions that never write (a write would fail with "database is locked" on a
    lock upgrade instead of waiting)."""
    session.connection(execution_options={READ_ONLY: True})
    return session


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error (no partial rows)."""
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str):

    cfg = Config()
    cfg.set_main_option("script_location", "service.store:migrations")
    cfg.attributes["database_url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations (at service start and by `snrlab db upgrade`)."""

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:

    command.downgrade(alembic_config(url), revision)
