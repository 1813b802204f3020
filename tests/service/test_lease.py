"""The dispatcher's lease on both databases: one holder at a time, a larger fencing token at every
takeover, and a paused ex-leader's writes refused (service.runtime.lease). The processes version
of this (kill -9, SIGSTOP) is tests/service/test_replicas.py."""
from __future__ import annotations

import os
import socket

import pytest
from sqlalchemy import select

from service.domain import experiments as domain_experiments
from service.domain.spec import ExperimentSpec
from service.runtime.dispatcher import Dispatcher
from service.runtime.lease import Lease, LeaseKeeper, LeaseLost, SecondReplica
from service.store.db import session_scope
from service.store.models import Attempt, Replica, Run


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def lease(session_factory, clock):
    def make(name: str) -> Lease:
        return Lease(session_factory, replica=f"{socket.gethostname()}:{name}", ttl_s=8.0, clock=clock)

    return make


def test_one_holder_at_a_time_and_a_new_token_at_every_takeover(lease, clock):
    a, b = lease("a"), lease("b")
    assert a.acquire() and a.held
    first = a.token
    assert not b.acquire() and not b.held
    clock.now += 5
    assert a.renew() and not b.acquire()  # renewed: 8 s from now again
    clock.now += 7.9
    assert not b.acquire()
    clock.now += 0.2  # a missed its renewals: the lease has expired
    assert b.acquire() and b.token == first + 1
    assert a.read().holder == b.replica
    assert not a.renew() and not a.held  # a hears it has lost
    b.release()
    assert a.acquire() and a.token == first + 2  # released: taken at once, no wait for expiry


def test_a_paused_ex_leaders_write_is_refused_and_rolled_back(lease, clock, session_factory, make_spec):
    a, b = lease("a"), lease("b")
    assert a.acquire()
    spec = ExperimentSpec.model_validate(make_spec())
    with session_scope(session_factory) as s:
        exp, _ = domain_experiments.create_experiment(s, spec=spec, code_version="test")
        run_id = exp.runs[0].id
    with a.write() as s:  # the leader writes
        s.get(Run, run_id).error = "written by a"
    clock.now += 30  # a is paused past its lease; b takes over
    assert b.acquire()
    with pytest.raises(LeaseLost, match="no longer holds the dispatcher lease"):
        with a.write() as s:  # a wakes up and goes on where it was: fenced before it writes
            s.get(Run, run_id).error = "late write by a"
    assert a.refused_writes == 1 and not a.held
    with session_factory() as s:
        assert s.get(Run, run_id).error == "written by a"
    with b.write() as s:
        s.get(Run, run_id).error = "written by b"


def test_a_dispatcher_that_lost_its_lease_stands_by_and_the_new_leader_readopts(lease, clock, session_factory, settings,
                                                                               fake_executor, make_spec):
    spec = ExperimentSpec.model_validate(make_spec())
    with session_scope(session_factory) as s:
        exp, _ = domain_experiments.create_experiment(s, spec=spec, code_version="test")
        r1, r2 = [r.id for r in exp.runs]
    la, lb = lease("a"), lease("b")
    da = Dispatcher(session_factory=session_factory, settings=settings, executor=fake_executor, lease=la)
    db = Dispatcher(session_factory=session_factory, settings=settings, executor=fake_executor, lease=lb)
    da.start(), db.stop()  # connect a (no loop thread needed for this test); b stays idle
    da.stop()
    assert da.state == "stopped"
    assert la.acquire()
    da.elected()
    da.tick()
    assert da.state == "running" and len(fake_executor.submitted) == 2
    fake_executor.write_metrics(r1, [25])
    clock.now += 60  # a freezes; b takes over
    assert lb.acquire()
    db.elected()
    db.tick()  # reconciles: re-adopts both live runs, submits nothing again
    assert db.state == "running" and len(fake_executor.submitted) == 2
    fake_executor.succeed(r1)
    da.tick()  # a wakes believing it leads: its first write is refused, it stands by
    assert da.state == "standby" and la.refused_writes == 1
    with session_factory() as s:
        assert s.get(Run, r1).status == "training"  # a recorded nothing
    db.tick()
    with session_factory() as s:
        assert s.get(Run, r1).status == "succeeded"
        assert s.scalars(select(Attempt.run_id).where(Attempt.run_id.in_([r1, r2]))).all().count(r1) == 1
    da.tick()
    assert da.state == "standby" and la.refused_writes == 1  # standing by, it does not even try


def test_the_keeper_heartbeats_elects_and_hears_of_a_loss(lease, clock, session_factory):
    a, b = lease("a"), lease("b")
    events = []
    ka = LeaseKeeper(a, version="v", interval_s=2, on_elected=lambda: events.append("a elected"),
                     on_lost=lambda: events.append("a lost"))
    kb = LeaseKeeper(b, version="v", interval_s=2, on_elected=lambda: events.append("b elected"),
                     on_lost=lambda: events.append("b lost"))
    ka.tick(), kb.tick()
    with session_factory() as s:
        assert sorted(r.id for r in s.scalars(select(Replica))) == sorted([a.replica, b.replica])
    clock.now += 9
    kb.tick()  # a did not renew in time
    ka.tick()
    assert events == ["a elected", "b elected", "a lost"]
    kb.leave()
    with session_factory() as s:
        assert [r.id for r in s.scalars(select(Replica))] == [a.replica]
    ka.tick()
    assert events[-1] == "a elected"


def test_sqlite_refuses_a_second_replica_but_not_a_restart_after_a_crash(session_factory, clock, database_url):
    here = socket.gethostname()
    other_host = Lease(session_factory, replica="elsewhere:123:abc", clock=clock)
    assert other_host.acquire()
    newcomer = Lease(session_factory, clock=clock)
    with pytest.raises(SecondReplica, match="one `snrlab serve` per SQLite file"):
        newcomer.check_single_replica(alive=lambda pid: True)
    clock.now += 60  # expired: whoever it was is gone
    newcomer.check_single_replica(alive=lambda pid: True)
    crashed = Lease(session_factory, replica=f"{here}:999999:abc", clock=clock)
    assert crashed.acquire()
    newcomer.check_single_replica(alive=lambda pid: pid != 999999)  # a dead process of this host: taken over at once
    assert newcomer.acquire()
    same_process = Lease(session_factory, replica=f"{here}:{os.getpid()}:def", clock=clock)
    same_process.check_single_replica(alive=lambda pid: True)  # an app restarted in this process (tests)


def test_a_frozen_holder_of_the_fence_cannot_hold_a_takeover_up(postgres_url):
    """PostgreSQL: a leader frozen inside a fenced write holds the lease row's share lock; the
    takeover's UPDATE waits on it until PostgreSQL ends the idle transaction (store.db's
    idle_in_transaction_session_timeout), then takes the lease; the frozen write never lands."""
    import threading
    import time

    from sqlalchemy.exc import DBAPIError

    from service.store.db import IDLE_TX_TIMEOUT_MS, make_engine, make_sessionmaker, upgrade

    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    factory = make_sessionmaker(engine)
    clock = Clock()
    a = Lease(factory, replica="host-a:1:x", clock=clock)
    b = Lease(factory, replica="host-b:2:y", clock=clock)
    try:
        assert a.acquire()
        took: dict[str, float] = {}
        with pytest.raises(DBAPIError):
            with a.write() as s:  # fenced: the share lock is held from here
                s.execute(select(Replica)).all()
                clock.now += 60  # a freezes past its lease
                t0 = time.monotonic()
                thread = threading.Thread(target=lambda: took.update(ok=b.acquire(), after=time.monotonic() - t0))
                thread.start()
                thread.join(IDLE_TX_TIMEOUT_MS / 1000 + 20)
                assert not thread.is_alive(), "the takeover is still waiting on the frozen holder's lock"
                s.add(Replica(id="late", host="a", pid=1, version="v", started_at=0, seen_at=0))
            # leaving the block commits: the server ended this transaction, so the commit fails
        assert took["ok"] and took["after"] >= IDLE_TX_TIMEOUT_MS / 1000 * 0.8
        with factory() as s:
            assert s.get(Replica, "late") is None and b.read().holder == b.replica
    finally:
        engine.dispose()
