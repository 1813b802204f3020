"""SQLite writers of one engine queue on one lock (store.db's WriterQueue) instead of SQLite's
sleep-and-poll wait: a writer goes as soon as the one before it commits, rolls back or closes,
and no path leaves the lock taken."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from service.store.db import make_engine, make_sessionmaker, read_only


@pytest.fixture
def factory(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/q.db")
    with engine.begin() as c:
        c.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY, who TEXT)"))
    yield make_sessionmaker(engine)
    engine.dispose()


def _write(factory, k: int, who: str, log: list) -> None:
    with factory() as s:
        s.execute(text("INSERT INTO t VALUES (:k, :who)"), {"k": k, "who": who})
        log.append(("began", who))
        s.commit()


def test_a_second_writer_waits_for_the_first_and_then_sees_its_row(factory):
    log: list = []
    with factory() as first:
        first.execute(text("INSERT INTO t VALUES (1, 'first')"))
        second = threading.Thread(target=_write, args=(factory, 2, "second", log))
        second.start()
        second.join(0.5)
        assert second.is_alive() and log == []  # queued behind the open write transaction
        first.commit()
    second.join(30)
    assert not second.is_alive() and log == [("began", "second")]
    with factory() as s:
        assert s.execute(text("SELECT who FROM t ORDER BY k")).scalars().all() == ["first", "second"]


@pytest.mark.parametrize("end", ["rollback", "close", "integrity_error"])
def test_every_way_a_writer_ends_lets_the_next_one_go(factory, end):
    s = factory()
    s.execute(text("INSERT INTO t VALUES (1, 'a')"))
    if end == "integrity_error":
        s.commit()
        with pytest.raises(IntegrityError):
            s.execute(text("INSERT INTO t VALUES (1, 'again')"))
        s.rollback()
    elif end == "rollback":
        s.rollback()
    s.close()
    log: list = []
    t = threading.Thread(target=_write, args=(factory, 2, "next", log))
    t.start()
    t.join(30)
    assert not t.is_alive() and log == [("began", "next")]


def test_readers_do_not_queue_behind_a_writer(factory):
    with factory() as writer:
        writer.execute(text("INSERT INTO t VALUES (1, 'uncommitted')"))
        seen: list = []

        def read():
            with factory() as r:
                seen.append(read_only(r).execute(text("SELECT count(*) FROM t")).scalar())

        t = threading.Thread(target=read)
        t.start()
        t.join(30)
        assert not t.is_alive() and seen == [0]  # WAL: the reader runs beside the writer
        writer.rollback()
