"""One dispatcher among many replicas: a lease row with a fencing token.

Any number of `snrlab serve` processes may share one PostgreSQL database; all of them serve the
API, exactly one (the lease holder) dispatches, reconciles and runs the sweeps. The lease is the
`leases` row named "dispatcher":

- **acquire**: one UPDATE that succeeds only where the lease has expired; it makes the caller the
  holder and moves `token` up by one (a fencing token: every takeover gets a larger one);
- **renew**: one UPDATE that succeeds only while holder and token are still ours;
- **fence**: every dispatcher write transaction first reads the row `FOR SHARE` and goes on only
  while it still names us and our token. A leader that was paused (GC, SIGSTOP, a VM migration)
  past its lease finds the token moved on when it wakes, and its write is refused (`LeaseLost`)
  before it touches a row. The share lock keeps a takeover from committing between our check and
  our commit; PostgreSQL ends a transaction left idle by a frozen holder after
  `IDLE_TX_TIMEOUT_S` (set on the service's connections, service.store.db), so a frozen process
  cannot hold a takeover up for longer than that.

Why not an advisory lock: a session-level `pg_advisory_lock` is held as long as the TCP
connection lives, so a hung (not dead) leader keeps it for ever, and nothing fences its writes.

Times are the replicas' own clocks (epoch seconds). Clock skew can only delay a takeover or cut a
lease short; it cannot let two leaders write, because the fence compares tokens, not times.

SQLite is the single-process default: a second replica on one SQLite file is refused at start
(`SecondReplica`), unless the holder is this same process or a dead process of this host.
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.runtime.loop import BackgroundLoop
from service.store.db import session_scope
from service.store.models import Lease as LeaseRow
from service.store.models import Replica

log = logging.getLogger(__name__)

DISPATCHER = "dispatcher"


class LeaseLost(RuntimeError):
    """This replica no longer holds the lease: the write was refused and rolled back."""


class SecondReplica(RuntimeError):
    """A second dispatching replica on a SQLite database."""


def replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True)
class LeaseView:
    holder: str | None
    token: int
    acquired_at: float
    expires_at: float


class Lease:
    """This replica's side of the lease (thread-safe: every method is one short transaction)."""

    def __init__(self, factory: sessionmaker[Session], *, replica: str | None = None, ttl_s: float = 8.0,
                 name: str = DISPATCHER, clock: Callable[[], float] = time.time):
        self.factory, self.name, self.ttl_s, self.clock = factory, name, ttl_s, clock
        self.replica = replica or replica_id()
        self.token: int | None = None  # ours while we hold the lease
        self.acquired_at: float | None = None
        self.refused_writes = 0  # writes fenced off after the lease was lost

    @property
    def held(self) -> bool:
        return self.token is not None

    def read(self) -> LeaseView | None:
        with self.factory() as s:
            row = s.get(LeaseRow, self.name)
            return None if row is None else LeaseView(holder=row.holder, token=row.token, acquired_at=row.acquired_at, expires_at=row.expires_at)

    def acquire(self) -> bool:
        """Take the lease if it has expired (or is already ours); True if we hold it now."""
        if self.held:
            return self.renew()
        now = self.clock()
        take = (update(LeaseRow).where(LeaseRow.name == self.name, LeaseRow.expires_at < now)
                .values(holder=self.replica, token=LeaseRow.token + 1, acquired_at=now, expires_at=now + self.ttl_s)
                .execution_options(synchronize_session=False))
        with session_scope(self.factory) as s:
            done = s.execute(take).rowcount
            if done != 1 and s.get(LeaseRow, self.name) is None:  # a database emptied by hand: the row comes back
                s.add(LeaseRow(name=self.name, holder=None, token=0, acquired_at=0.0, expires_at=0.0))
                s.flush()
                done = s.execute(take).rowcount
            if done != 1:
                return False
            self.token = s.scalar(select(LeaseRow.token).where(LeaseRow.name == self.name))
        self.acquired_at = now
        log.info("lease: %s leads (fencing token %d)", self.replica, self.token)
        return True

    def renew(self) -> bool:
        """Extend our lease; False (and no longer held) if another replica took it."""
        if not self.held:
            return False
        now = self.clock()
        with session_scope(self.factory) as s:
            done = s.execute(
                update(LeaseRow).where(LeaseRow.name == self.name, LeaseRow.holder == self.replica,
                                       LeaseRow.token == self.token)
                .values(expires_at=now + self.ttl_s).execution_options(synchronize_session=False)).rowcount
        if done != 1:
            log.warning("lease: %s lost the lease (token %s is no longer current)", self.replica, self.token)
            self.token = self.acquired_at = None
            return False
        return True

    def release(self) -> None:
        """Give the lease up at once (a clean shutdown): another replica takes over on its next try."""
        if not self.held:
            return
        with session_scope(self.factory) as s:
            s.execute(update(LeaseRow).where(LeaseRow.name == self.name, LeaseRow.holder == self.replica,
                                             LeaseRow.token == self.token)
                      .values(expires_at=0.0).execution_options(synchronize_session=False))
        self.token = self.acquired_at = None

    def fence(self, s: Session) -> None:
        """Raise LeaseLost unless the lease still names us with our token. Call first in a write
        transaction: the row stays share-locked (PostgreSQL) until that transaction ends."""
        token = self.token
        current = s.execute(select(LeaseRow.holder, LeaseRow.token).where(LeaseRow.name == self.name)
                            .with_for_update(read=True)).first()
        if token is None or current is None or tuple(current) != (self.replica, token):
            self.refused_writes += 1
            self.token = self.acquired_at = None
            raise LeaseLost(f"{self.replica} no longer holds the {self.name} lease "
                            f"(token {token}; the lease is {current and tuple(current)}): write refused")

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A fenced transaction: commits only if we still held the lease when it began."""
        with session_scope(self.factory) as s:
            self.fence(s)
            yield s

    def check_single_replica(self, alive: Callable[[int], bool]) -> None:
        """SQLite: refuse to start beside another live dispatcher on the same file."""
        view = self.read()
        if view is None or view.holder is None or view.expires_at < self.clock() or view.holder == self.replica:
            return
        host, _, rest = view.holder.partition(":")
        pid = int(rest.partition(":")[0] or 0)
        if host == socket.gethostname() and (pid == os.getpid() or not alive(pid)):
            with session_scope(self.factory) as s:  # a dead process of this host (kill -9): no wait
                s.execute(update(LeaseRow).where(LeaseRow.name == self.name, LeaseRow.holder == view.holder)
                          .values(expires_at=0.0).execution_options(synchronize_session=False))
            return
        raise SecondReplica(
            f"another snrlab service ({view.holder}) dispatches from this SQLite database. SQLite is the "
            "single-process default: run one `snrlab serve` per SQLite file, or point every replica at one "
            "PostgreSQL database (SNRLAB_DATABASE_URL=postgresql://...) to run several")


class LeaseKeeper(BackgroundLoop):
    """Every `interval_s`: heartbeat this replica, renew the lease or try to take it. The
    dispatcher hears of both changes (`on_elected`, `on_lost`) and acts on its own thread."""

    name = "snrlab-lease"

    def __init__(self, lease: Lease, *, version: str, interval_s: float, on_elected: Callable[[], None],
                 on_lost: Callable[[], None], ready: Callable[[], bool] = lambda: True, forget_after_s: float = 3600.0):
        super().__init__(interval_s)
        self.lease, self.version = lease, version
        # Only a replica that could dispatch (its dispatcher has joined Ray) tries to take the lease:
        # one that cannot reach the cluster must not keep a replica that can from leading.
        self.ready = ready
        self.on_elected, self.on_lost = on_elected, on_lost
        self.forget_after_s = forget_after_s
        self.started_at = lease.clock()

    def tick(self) -> None:
        self.heartbeat()
        if self.lease.held:
            if not self.lease.renew():
                self.on_lost()
        elif self.ready() and self.lease.acquire():
            self.on_elected()

    def heartbeat(self) -> None:
        now = self.lease.clock()
        host, pid = socket.gethostname(), os.getpid()
        with session_scope(self.lease.factory) as s:
            row = s.get(Replica, self.lease.replica)
            if row is None:
                s.add(Replica(id=self.lease.replica, host=host, pid=pid, version=self.version, started_at=self.started_at,
                              seen_at=now))
            else:
                row.seen_at = now
            s.execute(delete(Replica).where(Replica.seen_at < now - self.forget_after_s))

    def leave(self) -> None:
        """A clean shutdown: release the lease and remove this replica's row."""
        try:
            self.lease.release()
            with session_scope(self.lease.factory) as s:
                s.execute(delete(Replica).where(Replica.id == self.lease.replica))
        except Exception:  # noqa: BLE001 - the database may be gone; the lease then just expires
            log.exception("lease: releasing on shutdown failed; it expires in %g s", self.lease.ttl_s)


def replicas(factory: sessionmaker[Session]) -> list[Replica]:
    with factory() as s:
        return list(s.scalars(select(Replica).order_by(Replica.started_at)))
