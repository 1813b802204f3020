"""The dispatcher's boundary to the compute: submit / poll / cancel jobs keyed by a name.

`RayExecutor` is the real one (detached named actors, see `service.ray_runner`); tests of the
lifecycle inject a fast in-process fake. Every method is idempotent per name, which is what
makes restarts safe: the dispatcher can always re-ask."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

log = logging.getLogger(__name__)

Phase = Literal["starting", "training", "evaluating", "succeeded", "failed", "lost"]


@dataclass(frozen=True)
class Job:
    run_id: str
    attempt: int
    config: dict[str, Any]  # the trainer's TrainConfig as a dict
    evaluation: dict[str, Any]
    resources: dict[str, Any]
    storage_path: str  # Ray Train storage_path (settings.runs_dir)
    data_dir: str | None = None  # SNRLAB_DATA_DIR: the evaluator's caches (reference stats, extractors)
    train_fn: str = "trainer.run:train"
    evaluate_fn: str = "service.runtime.evaluation:evaluate_run"

    @property
    def name(self) -> str:
        """Deterministic: the same (run, attempt) always maps to the same Ray actor."""
        return job_name(self.run_id, self.attempt)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
class NodeInfo:
    cpus: float
    gpus: float = 0.0
    memory_bytes: float = 0.0  # what the node lets tasks reserve (Ray's `memory` resource)


@dataclass(frozen=True)
class ClusterInfo:
    """What the cluster offers, read from Ray once and then used without it (the dispatcher keeps
    the latest one, so a request never waits on Ray and no transaction is held across a Ray call)."""

    nodes: tuple[NodeInfo, ...] = ()

    @property
    def cpus(self) -> float:
        return sum(n.cpus for n in self.nodes)

    @property
    def gpus(self) -> float:
        return sum(n.gpus for n in self.nodes)

    @property
    def largest_memory_bytes(self) -> float:
        return max((n.memory_bytes for n in self.nodes), default=0.0)

    def capacity(self, resources: dict[str, Any]) -> int:
        """How many runs with these resources fit at once (CPUs per worker = 1)."""
        workers = int(resources.get("workers_per_run", 1))
        slots = math.floor(self.cpus / workers)
        gpus = float(resources.get("gpus_per_worker", 0)) * workers
        if gpus > 0:
            slots = min(slots, math.floor(self.gpus / gpus))
        return max(slots, 0)


class Executor(Protocol):
    def start(self) -> None: ...
    def cluster(self) -> ClusterInfo: ...
    def submit(self, job: Job) -> None: ...
    def poll(self, name: str) -> JobState: ...
    def cancel(self, name: str) -> None: ...
    def release(self, name: str) -> None: ...
    def shutdown(self) -> None: ...

    # optional: `maintain()`, called by the dispatcher every few seconds for housekeeping, and
    # `list_jobs()`, the names of the jobs that exist (the reconciler releases strays)


def readable_error(exc: BaseException, limit: int = 1000) -> str:
    """`Type: message` of the innermost user error: unwraps Ray Train and Ray task wrappers and
    drops anything that looks like a traceback. What a user of the API sees."""
    for _ in range(10):
        inner = None
        failures = getattr(exc, "worker_failures", None)
        if failures:
            inner = next(iter(failures.values()))
        inner = inner or getattr(exc, "controller_failure", None) or getattr(exc, "cause", None)
        if not isinstance(inner, BaseException) or inner is exc:
            break
        exc = inner
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if any(ln.startswith("Traceback") or ln.lstrip().startswith('File "') for ln in lines):
        # a Ray-formatted error with the remote traceback: its last line is "Type: message"
        return lines[-1].strip()[:limit]
    msg = lines[0].strip() if lines else ""
    name = type(exc).__name__
    out = msg if msg.startswith(name) else f"{name}: {msg}" if msg else name
    return out[:limit]


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
        import ray

        from trainer.raysession import init_ray

        if ray.is_initialized():  # this process joined already (a test session, another executor)
            return
        init_ray(self.address, log_to_driver=False)
        self.joined = True

    def cluster(self) -> ClusterInfo:
        import ray

        return ClusterInfo(tuple(
            NodeInfo(cpus=float(r.get("CPU", 0)), gpus=float(r.get("GPU", 0)), memory_bytes=float(r.get("memory", 0)))
            for r in (n.get("Resources") or {} for n in ray.nodes() if n.get("Alive"))))

    def _actor(self, name: str):
        import ray

        try:
            return ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            return None

    def submit(self, job: Job) -> None:
        import ray

        from service.runtime.run_actor import RunWorker

        actor = RunWorker.options(
            name=job.name, namespace=self.namespace, lifetime="detached", get_if_exists=True,
            num_cpus=0, max_concurrency=4, max_restarts=0,
        ).remote(job.to_dict())
        ray.get(actor.start.remote(), timeout=120)

    def poll(self, name: str) -> JobState:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

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
        import ray

        from service.runtime.ray_cleanup import placement_groups_of, reap_placement_groups

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
        import ray

        return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                if a["namespace"] == self.namespace and a["name"].startswith("snrlab-run_")]

    def maintain(self) -> None:
        """Periodic housekeeping from the dispatcher: free leaked placement groups."""
        from service.runtime.ray_cleanup import reap_placement_groups

        reap_placement_groups()

    def shutdown(self) -> None:
        """A joined cluster (and its detached work) keeps running: this driver only disconnects.
        A local cluster that start() started goes down with the service, its node agents too
        (trainer.raysession.stop_local_cluster); its runs resume from their checkpoints when
        the service starts again."""
        import ray

        if not self.joined:
            return
        self.joined = False
        if self.address is None:
            from trainer.raysession import stop_local_cluster

            stop_local_cluster()
        elif ray.is_initialized():
            ray.shutdown()


class StorageNotShared(ValueError):
    pass


def check_shared_storage(settings) -> None:
    """Refuse a cluster address with the node-local default data directory. Ray workers on other
    nodes write checkpoints and metrics under runs_dir and this service reads them back (and a
    resumed attempt on another node needs them), so it must be a path every node mounts: with
    the default (~/.cache/snrlab, on each machine's own disk) runs would fail or restart from
    step 0 depending on where they land. A refusal at startup beats that."""
    if settings.ray_address and settings.executor == "ray" and "data_dir" not in settings.model_fields_set:
        raise StorageNotShared(
            f"SNRLAB_RAY_ADDRESS is set ({settings.ray_address}) but SNRLAB_DATA_DIR is not: runs would go to "
            f"{settings.runs_dir}, a node-local default that Ray workers on other nodes cannot reach. Set "
            "SNRLAB_DATA_DIR to a path mounted at the same place on this service and on every Ray node (NFS, "
            "a ReadWriteMany volume, object storage through a POSIX mount; see service/README.md)."
        )


def load_callable(path: str):
    import importlib

    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_executor(settings) -> Executor:
    if settings.executor == "ray":
        return RayExecutor(address=settings.ray_address, namespace=settings.ray_namespace)
    return load_callable(settings.executor)(settings)
