"""The run queue a team shares: priority, then fair share across users, then submission order;
quotas hold a user's work back without holding anyone else's (service.domain.queue), and the
dispatcher starts runs in exactly that order; GET /api/v1/queue shows it."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from service.domain import experiments as domain_experiments
from service.domain.cluster import ClusterInfo, NodeInfo
from service.domain.queue import LiveRun, QueuedRun, Quota, order, plan
from service.domain.spec import ExperimentSpec
from service.runtime.dispatcher import Dispatcher
from service.store.db import session_scope
from service.store.models import Experiment, Run, User

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
ONE_CPU = {"workers_per_run": 1, "gpus_per_worker": 0}


def q(run_id: str, owner: str | None, *, priority: int = 0, minute: int = 0, index: int = 0, resources=ONE_CPU) -> QueuedRun:
    return QueuedRun(run_id=run_id, experiment_id=f"exp_{owner}_{minute}", owner=owner, priority=priority,
                     created_at=T0 + timedelta(minutes=minute), index=index, resources=resources)


def ids(runs) -> list[str]:
    return [r.run_id for r in runs]


def share_of(cpus: int):
    return ClusterInfo((NodeInfo(cpus=cpus),)).share


def test_priority_first_then_round_robin_across_users_then_submission_order():
    queued = [q("a1", "alice", minute=0, index=0), q("a2", "alice", minute=0, index=1), q("a3", "alice", minute=1),
              q("b1", "bob", minute=5), q("b2", "bob", minute=6), q("c1", "carol", priority=5, minute=9)]
    # nobody served yet: carol's priority first, then alice and bob by name, taking turns
    assert ids(order(queued, {})) == ["c1", "a1", "b1", "a2", "b2", "a3"]
    # alice was served more recently than bob: bob takes the first turn at priority 0
    served = {"alice": T0 + timedelta(hours=2), "bob": T0 + timedelta(hours=1)}
    assert ids(order(queued, served)) == ["c1", "b1", "a1", "b2", "a2", "a3"]
    # one who never ran goes before anyone who did
    assert ids(order(queued + [q("d1", "dave", minute=30)], served))[:3] == ["c1", "d1", "b1"]


def test_a_quota_holds_back_only_its_users_runs_and_says_why():
    queued = [q("a1", "alice"), q("a2", "alice", index=1), q("a3", "alice", index=2), q("b1", "bob", minute=1)]
    placements = plan(queued, [LiveRun("alice", ONE_CPU)], quotas={"alice": Quota(max_runs=2)}, last_served={},
                      share=share_of(8))
    got = {p.run.run_id: (p.start, p.reason) for p in placements}
    assert got["a1"] == (True, None) and got["b1"] == (True, None)
    assert not got["a2"][0] and got["a2"][1] == "quota: user alice has 2 of at most 2 runs going"
    assert not got["a3"][0]
    cpu_quota = plan([q("a1", "alice", resources={"workers_per_run": 3})], [], quotas={"alice": Quota(max_cpus=2)},
                     last_served={}, share=share_of(8))
    assert cpu_quota[0].reason == "quota: user alice uses 0 of at most 2 CPUs; this run needs 3"
    gpu_quota = plan([q("a1", "alice", resources={"workers_per_run": 1, "gpus_per_worker": 1})],
                     [LiveRun("alice", {"workers_per_run": 1, "gpus_per_worker": 1})], quotas={"alice": Quota(max_gpus=1)},
                     last_served={}, share=lambda r: 0.1)
    assert gpu_quota[0].reason == "quota: user alice uses 1 of at most 1 GPUs; this run needs 1"


def test_room_the_service_cap_and_backfill():
    big = {"workers_per_run": 3}
    queued = [q("big", "alice", priority=1, resources=big), q("s1", "bob"), q("s2", "bob", index=1)]
    placements = plan(queued, [LiveRun("carol", ONE_CPU), LiveRun("carol", ONE_CPU)], quotas={}, last_served={},
                      share=share_of(4))
    got = {p.run.run_id: (p.position, p.start, p.reason) for p in placements}
    # the big run waits for room; the small ones behind it backfill the two free CPUs... but only
    # one fits a 4-CPU cluster with two runs going
    assert got["big"] == (1, False, "waiting for room on the cluster (3 CPU)")
    assert got["s1"] == (2, True, None)
    assert got["s2"] == (3, True, None)
    capped = plan(queued, [], quotas={}, last_served={}, share=share_of(8), max_concurrent_runs=1)
    assert [p.start for p in capped] == [True, False, False]
    assert capped[1].reason == "the service runs at most 1 at once (SNRLAB_MAX_CONCURRENT_RUNS)"
    never = plan([q("huge", "alice", resources={"workers_per_run": 16})], [], quotas={}, last_served={}, share=share_of(4))
    assert never[0].reason == "no node set of this cluster can ever hold it (16 CPU)"
    unknown = plan(queued, [], quotas={}, last_served={}, share=None)
    assert not any(p.start for p in unknown) and unknown[0].reason == "waiting for the dispatcher to read the cluster"


# ---------------------------------------------------------------- the dispatcher under contention
@pytest.fixture
def submit_as(session_factory, make_spec):
    def go(owner: str | None, *, priority: int = 0, seeds=(0,), weightings=({"name": "constant"},)) -> list[str]:
        spec = ExperimentSpec.model_validate(make_spec(
            weightings=list(weightings), training={**make_spec()["training"], "seeds": list(seeds)}))
        with session_scope(session_factory) as s:
            exp, _ = domain_experiments.create_experiment(s, spec=spec, code_version="test")
            s.execute(update(Experiment).where(Experiment.id == exp.id).values(owner=owner, priority=priority))
            return [r.id for r in exp.runs]

    return go


def started(fake_executor) -> list[str]:
    return [name.split("-")[1] for name in fake_executor.submitted]  # snrlab-<run id>-a<n>


def test_the_dispatcher_starts_runs_in_queue_order_under_contention(submit_as, session_factory, settings, fake_executor):
    fake_executor.slots = 1  # one run at a time: every start is a decision
    alice = submit_as("alice", seeds=(0, 1, 2))
    bob = submit_as("bob", seeds=(0, 1))
    urgent = submit_as("carol", priority=10)
    d = Dispatcher(session_factory=session_factory, settings=settings, executor=fake_executor)
    for _ in range(len(alice) + len(bob) + len(urgent)):
        d.tick()
        fake_executor.succeed(started(fake_executor)[-1])
        d.tick()  # records the success, frees the slot and starts the next
    # carol's priority first; then alice and bob take turns (bob was served less recently once
    # alice's first run started), then what is left of alice's, in submission order
    assert started(fake_executor) == urgent + [alice[0], bob[0], alice[1], bob[1], alice[2]]


def test_quota_in_the_dispatcher_and_the_queue_endpoint(submit_as, session_factory, settings, fake_executor, client, auth):
    with session_scope(session_factory) as s:
        s.add(User(name="alice", max_runs=1))
    alice = submit_as("alice", seeds=(0, 1))
    bob = submit_as("bob")
    d = Dispatcher(session_factory=session_factory, settings=settings, executor=fake_executor)
    d.tick()
    assert sorted(started(fake_executor)) == sorted([alice[0], bob[0]])  # alice's second waits for her quota
    with session_factory() as s:
        assert s.get(Run, alice[1]).status == "queued"
    r = client.get("/api/v1/queue", headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 1 and body["items"][0]["run_id"] == alice[1]
    assert body["items"][0]["position"] == 1 and body["items"][0]["owner"] == "alice"
    # the client's app has no dispatcher: it cannot know the cluster, but the quota is checked first
    assert body["items"][0]["waiting_for"] == "quota: user alice has 1 of at most 1 runs going"
    users = {u["user"]: u for u in body["users"]}
    assert users["alice"]["running"] == 1 and users["alice"]["queued"] == 1 and users["alice"]["max_runs"] == 1
    assert users["bob"]["running"] == 1 and users["bob"]["queued"] == 0
    assert client.get("/api/v1/queue").status_code == 401
    page = client.get("/experiments", headers=auth)
    assert page.status_code == 200
    assert "1 runs queued" in page.text and "quota: user alice has 1 of at most 1 runs going" in page.text
