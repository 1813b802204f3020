"""The run queue a team shares: in which order queued runs start, and why each one waits.

A plain function of plain values (no SQL, no Ray), used by the dispatcher to start runs and by
`GET /api/v1/queue` to show the same plan:

1. **priority** first (the experiment's; higher starts first);
2. then **fair share** across users at the same priority: round robin, least recently served
   first (the user whose latest start is oldest, someone who never ran first of all; then by
   name), so one user's 500-run sweep cannot hold back a colleague's single run;
3. then **submission order** (experiment created_at, run index) within a user.

Each run in that order then starts if its owner is within their quota (concurrent runs, CPUs,
GPUs in use), the service's cap (SNRLAB_MAX_CONCURRENT_RUNS) allows it and the cluster has room.
A run that waits does not block the ones after it (backfill): a small run may start beside a
large one that does not fit yet, and work held by one user's quota never holds up another's.
There is no preemption: a running run keeps its place until it ends.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from service.store import queue as store

NO_OWNER = ""  # experiments from before owners: a user of their own in the rotation


@dataclass(frozen=True)
class Quota:
    """A user's limits; None means no limit of that kind."""

    max_runs: int | None = None
    max_cpus: float | None = None
    max_gpus: float | None = None


@dataclass(frozen=True)
class QueuedRun:
    run_id: str
    experiment_id: str
    owner: str | None
    priority: int
    created_at: datetime
    index: int
    resources: dict[str, Any]


@dataclass(frozen=True)
class LiveRun:
    owner: str | None
    resources: dict[str, Any]


@dataclass(frozen=True)
class Placement:
    """A queued run's place: `position` (1 = next), whether it starts now, and why it waits."""

    run: QueuedRun
    position: int
    start: bool
    reason: str | None  # None when it starts


def cpus(resources: dict[str, Any]) -> float:
    """CPUs a run holds: one per Ray Train worker (service.domain.cluster.ClusterInfo.capacity)."""
    return float(resources.get("workers_per_run", 1))


def gpus(resources: dict[str, Any]) -> float:
    return float(resources.get("gpus_per_worker", 0)) * int(resources.get("workers_per_run", 1))


@dataclass
class Usage:
    """What one user's live runs hold."""

    runs: int = 0
    cpus: float = 0.0
    gpus: float = 0.0

    def add(self, resources: dict[str, Any]) -> None:
        self.runs += 1
        self.cpus += cpus(resources)
        self.gpus += gpus(resources)


def usage_by_user(live: Iterable[LiveRun]) -> defaultdict[str, Usage]:
    """Per owner (NO_OWNER for work without one), what their live runs hold."""
    out: defaultdict[str, Usage] = defaultdict(Usage)
    for r in live:
        out[r.owner or NO_OWNER].add(r.resources)
    return out


def order(queued: Iterable[QueuedRun], last_served: dict[str, datetime]) -> list[QueuedRun]:
    """The queue in start order: priority, then round robin across users (least recently served
    first), then submission order."""
    by_priority: dict[int, dict[str, list[QueuedRun]]] = defaultdict(lambda: defaultdict(list))
    for run in queued:
        by_priority[run.priority][run.owner or NO_OWNER].append(run)
    out: list[QueuedRun] = []
    for priority in sorted(by_priority, reverse=True):
        users = by_priority[priority]
        for runs in users.values():
            runs.sort(key=lambda r: (r.created_at, r.experiment_id, r.index))
        # (turn, user): a user's first turn comes by how long ago they were last served; each
        # turn taken sends them behind everyone else at this priority
        served = {u: last_served.get(u) for u in users}
        rotation = sorted(users, key=lambda u: (served[u] is not None, served[u] or datetime.min, u))
        cursor = {u: 0 for u in users}
        while rotation:
            for user in list(rotation):
                out.append(users[user][cursor[user]])
                cursor[user] += 1
                if cursor[user] == len(users[user]):
                    rotation.remove(user)
    return out


def plan(queued: Sequence[QueuedRun], live: Sequence[LiveRun], *, quotas: dict[str, Quota],
         last_served: dict[str, datetime], share: Callable[[dict[str, Any]], float] | None,
         max_concurrent_runs: int | None = None) -> list[Placement]:
    """Every queued run with its position and whether it starts now (the reason where not).

    `share(resources)` is the fraction of the cluster one such run takes (1 / capacity; inf when it
    can never fit); None when the cluster is not known yet (nothing starts)."""
    usage = usage_by_user(live)
    used = sum(share(r.resources) for r in live) if share else 0.0
    count = len(live)
    out = []
    for position, run in enumerate(order(queued, last_served), start=1):
        user = run.owner or NO_OWNER
        reason = _over_quota(user, run, quotas.get(user), usage[user])
        if reason is None and share is None:
            reason = "waiting for the dispatcher to read the cluster"
        if reason is None and max_concurrent_runs is not None and count >= max_concurrent_runs:
            reason = f"the service runs at most {max_concurrent_runs} at once (SNRLAB_MAX_CONCURRENT_RUNS)"
        if reason is None and used + share(run.resources) > 1.0 + 1e-9:
            reason = _no_room(run, share)
        start = reason is None
        if start:
            used += share(run.resources)
            count += 1
            usage[user].add(run.resources)
        out.append(Placement(run=run, position=position, start=start, reason=reason))
    return out


def _over_quota(user: str, run: QueuedRun, quota: Quota | None, usage: Usage) -> str | None:
    if quota is None:
        return None
    runs, used_cpus, used_gpus = usage.runs, usage.cpus, usage.gpus
    who = f"user {user}" if user else "work without an owner"
    if quota.max_runs is not None and runs + 1 > quota.max_runs:
        return f"quota: {who} has {runs} of at most {quota.max_runs} runs going"
    need = cpus(run.resources)
    if quota.max_cpus is not None and used_cpus + need > quota.max_cpus + 1e-9:
        return f"quota: {who} uses {used_cpus:g} of at most {quota.max_cpus:g} CPUs; this run needs {need:g}"
    need = gpus(run.resources)
    if need and quota.max_gpus is not None and used_gpus + need > quota.max_gpus + 1e-9:
        return f"quota: {who} uses {used_gpus:g} of at most {quota.max_gpus:g} GPUs; this run needs {need:g}"
    return None


def _no_room(run: QueuedRun, share: Callable[[dict[str, Any]], float]) -> str:
    need = f"{cpus(run.resources):g} CPU" + (f", {gpus(run.resources):g} GPU" if gpus(run.resources) else "")
    if share(run.resources) == float("inf"):
        return f"no node set of this cluster can ever hold it ({need})"
    return f"waiting for room on the cluster ({need})"


@dataclass(frozen=True)
class QueueState:
    queued: list[QueuedRun]
    live: list[LiveRun]
    quotas: dict[str, Quota]
    last_served: dict[str, datetime]


def read_state(session: Session, *, only_if_queued: bool = False) -> QueueState:
    """What a plan needs, read in one session (outside any write transaction). With
    `only_if_queued` (the dispatcher's pass) nothing more is read when nothing is queued."""
    queued = [QueuedRun(run_id=r.run_id, experiment_id=r.experiment_id, owner=r.owner, priority=r.priority,
                        created_at=r.created_at, index=r.index, resources=r.resources) for r in store.queued_runs(session)]
    if only_if_queued and not queued:
        return QueueState(queued=[], live=[], quotas={}, last_served={})
    return QueueState(
        queued=queued,
        live=[LiveRun(owner=r.owner, resources=r.resources) for r in store.live_runs(session)],
        quotas={u.name: Quota(max_runs=u.max_runs, max_cpus=u.max_cpus, max_gpus=u.max_gpus) for u in store.quotas(session)},
        last_served={(owner or NO_OWNER): at for owner, at in store.last_served(session).items()},
    )


def plan_state(state: QueueState, *, share: Callable[[dict[str, Any]], float] | None,
               max_concurrent_runs: int | None) -> list[Placement]:
    return plan(state.queued, state.live, quotas=state.quotas, last_served=state.last_served, share=share,
                max_concurrent_runs=max_concurrent_runs)
