"""The dispatcher's and the sweep manager's one boundary to the compute: submit / poll / cancel
jobs (a run's attempt, a sweep's Tuner) keyed by a name.

`RayExecutor` is the real one (detached named actors: `service.runtime.run_actor`,
`service.runtime.sweep_actor`); lifecycle tests inject in-process fakes, checked against the
`Executor` Protocol. Every method is idempotent per name, which is what makes restarts safe: the
service can always re-ask. Ray gets work and returns results; the database stays the service's."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from service.core.errors import load_callable, readable_error
from service.domain.cluster import ClusterInfo, NodeInfo
from service.domain.jobs import RunJob
from service.runtime.ray_cleanup import (
    RUN_ACTOR_PREFIX,
    placement_groups_of,
    reap_placement_groups,
)
from trainer.raysession import init_ray, stop_local_cluster

log = logging.getLogger(__name__)

Phase = Literal["starting", "training", "evaluating", "succeeded", "failed", "lost"]
SweepPhase = Literal["starting", "running", "finished", "failed", "lost"]
SWEEP_ACTOR_PREFIX = "snrlab-sweep-"


@dataclass(frozen=True)
class Job:
    """One attempt of a run: its RunJob (parsed once more, on Ray) and where its files go."""

    run_id: str
    attempt: int
    run: RunJob
    storage_path: str  # Ray Train storage_path (settings.runs_dir)
    data_dir: str | None = None  # SNRLAB_DATA_DIR: the evaluator's caches (reference stats, extractors)
    train_fn: str = "trainer.run:train"
    evaluate_fn: str = "service.runtime.evaluation:evaluate_run"

    @property
    def name(self) -> str:
        """Deterministic: the same (run, attempt) always maps to the same Ray actor."""
        return job_name(self.run_id, self.attempt)

    def to_dict(self) -> dict[str, Any]:
        """What travels to Ray: plain JSON types (the RunJob as its dump)."""
        return {**asdict(self), "run": self.run.model_dump(mode="json")}


def job_name(run_id: str, attempt: int) -> str:
    return f"snrlab-{run_id}-a{attempt}"


@dataclass
class JobState:
    phase: Phase
    error: str | None = None
    results: list[dict[str, Any]] | None = None
    checkpoint_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepJob:
    """A sweep's Tuner: its spec and where Tune keeps its experiment state (to restore it)."""

    sweep_id: str
    spec: dict[str, Any]
    storage_path: str
    max_concurrent_trials: int

    @property
    def name(self) -> str:
        return f"{SWEEP_ACTOR_PREFIX}{self.sweep_id}"


@dataclass
class SweepState:
    """A sweep actor's answer to a sync: its phase, the trials that want a run (trial id -> the
    sampled point), the trials Tune stopped whose runs must stop (trial id -> why)."""

    phase: SweepPhase
    error: str | None = None
    wants_run: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)
    trials: int | None = None


def sweep_name(sweep_id: str) -> str:
    return f"{SWEEP_ACTOR_PREFIX}{sweep_id}"


@runtime_checkable
class Executor(Protocol):
    def start(self) -> None: ...
    def cluster(self) -> ClusterInfo: ...
    def submit(self, job: Job) -> None: ...
    def poll(self, name: str) -> JobState: ...
    def cancel(self, name: str) -> None: ...
    def release(self, name: str) -> None: ...
    def list_jobs(self) -> list[str]: ...
    def maintain(self) -> None: ...
    def submit_sweep(self, job: SweepJob) -> None: ...
    def sync_sweep(self, name: str, news: dict[str, Any]) -> SweepState: ...
    def release_sweep(self, name: str) -> None: ...
    def list_sweeps(self) -> list[str]: ...
    def shutdown(self) -> None: ...


class RayExecutor:
    """Runs each job in a detached, named Ray actor (`RunWorker`) that trains (Ray Train) and
    then evaluates. Detached: the work survives a crash of the service; named: a restarted
    service finds it again (`ray.get_actor`) instead of starting a duplicate."""

    def __init__(self, *, address: str | None = None, namespace: str = "snrlab"):
        self.address = address
        self.namespace = namespace
        self.joined = False  # start() joined (or started) the cluster: shutdown() leaves (or stops) it

    def start(self) -> None:
        """Join the cluster (or start a local one when no address is set). An address where no
        cluster answers raises trainer.raysession.RayUnreachable at once: never a local cluster
        instead; the dispatcher retries with backoff. Call it from a thread that lives as long as
        the service: Ray's GCS and raylet die with the thread that started them."""

        if ray.is_initialized():  # this process joined already (a test session, another executor)
            return
        init_ray(self.address, log_to_driver=False)
        self.joined = True

    def cluster(self) -> ClusterInfo:

        return ClusterInfo(tuple(
            NodeInfo(cpus=float(r.get("CPU", 0)), gpus=float(r.get("GPU", 0)), memory_bytes=float(r.get("memory", 0)))
            for r in (n.get("Resources") or {} for n in ray.nodes() if n.get("Alive"))))

    def _actor(self, name: str):

        try:
            return ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            return None

    def submit(self, job: Job) -> None:

        from service.runtime.run_actor import RunWorker  # the Ray-side module (torch): only when a run starts

        actor = RunWorker.options(
            name=job.name, namespace=self.namespace, lifetime="detached", get_if_exists=True,
            num_cpus=0, max_concurrency=4, max_restarts=0,
        ).remote(job.to_dict())
        ray.get(actor.start.remote(), timeout=120)

    def poll(self, name: str) -> JobState:

        actor = self._actor(name)
        if actor is None:
            return JobState(phase="lost", error="the Ray worker for this attempt is gone")
        try:
            state = ray.get(actor.poll.remote(), timeout=30)
        except GetTimeoutError:
            return JobState(phase="starting")  # busy actor: no news this round
        except RayActorError as e:
            return JobState(phase="lost", error=f"the Ray worker died: {readable_error(e)}")
        return JobState(**state)

    def cancel(self, name: str) -> None:

        actor = self._actor(name)
        if actor is None:
            return
        groups = placement_groups_of(name)
        # Owner death takes the Train controller and its workers down with the actor; their
        # placement group must be removed by hand (see service.ray_cleanup).
        ray.kill(actor, no_restart=True)
        deadline = time.monotonic() + 10
        while groups and time.monotonic() < deadline:
            time.sleep(0.1)
            reap_placement_groups()
            groups &= placement_groups_of(name)

    release = cancel

    def list_jobs(self) -> list[str]:
        return self._named(RUN_ACTOR_PREFIX)

    def _named(self, prefix: str) -> list[str]:

        return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                if a["namespace"] == self.namespace and a["name"].startswith(prefix)]

    # ------------------------------------------------------------ sweeps
    def submit_sweep(self, job: SweepJob) -> None:

        from service.runtime.sweep_actor import SweepWorker  # the Ray-side module (Tune): only when a sweep starts

        actor = SweepWorker.options(
            name=job.name, namespace=self.namespace, lifetime="detached", get_if_exists=True,
            num_cpus=0, max_concurrency=64, max_restarts=0,
        ).remote({**asdict(job), "actor_name": job.name, "namespace": self.namespace})  # the trials find it by name
        ray.get(actor.start.remote(), timeout=120)

    def sync_sweep(self, name: str, news: dict[str, Any]) -> SweepState:
        """Hand the actor what the service knows (runs assigned to trials, their states and metric
        values) and take what Tune wants (runs for new trials, runs to stop)."""

        actor = self._actor(name)
        if actor is None:
            return SweepState(phase="lost", error="no Ray actor for this sweep")
        try:
            return SweepState(**ray.get(actor.sync.remote(news), timeout=30))
        except GetTimeoutError:
            return SweepState(phase="running")
        except RayActorError as e:
            return SweepState(phase="lost", error=readable_error(e))

    def release_sweep(self, name: str) -> None:

        actor = self._actor(name)
        if actor is not None:
            ray.kill(actor, no_restart=True)

    def list_sweeps(self) -> list[str]:
        return self._named(SWEEP_ACTOR_PREFIX)

    def maintain(self) -> None:
        """Periodic housekeeping from the dispatcher: free leaked placement groups."""

        reap_placement_groups()

    def shutdown(self) -> None:
        """A joined cluster (and its detached work) keeps running: this driver only disconnects.
        A local cluster that start() started goes down with the service, its node agents too
        (trainer.raysession.stop_local_cluster); its runs resume from their checkpoints when
        the service starts again."""

        if not self.joined:
            return
        self.joined = False
        if self.address is None:

            stop_local_cluster()
        elif ray.is_initialized():
            ray.shutdown()


def build_executor(settings) -> Executor:
    if settings.executor == "ray":
        return RayExecutor(address=settings.ray_address, namespace=settings.ray_namespace)
    return load_callable(settings.executor)(settings)
