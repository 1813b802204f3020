"""An in-process stand-in for RayExecutor for the lifecycle tests (held against the Executor
protocol by tests/service/test_architecture.py)."""
from __future__ import annotations

import json
from pathlib import Path

from service.domain.cluster import ClusterInfo, NodeInfo
from service.runtime.executor import Job, JobState, SweepJob, SweepState


class FakeJob:
    def __init__(self, job: Job):
        self.job = job
        self.phase = "training"
        self.error: str | None = None
        self.results: list[dict] | None = None
        self.extra: dict = {}
        self.cancelled = False
        self.released = False


class FakeExecutor:
    """In-process stand-in for RayExecutor: tests drive each job's phase by hand and can write
    metrics lines the way the trainer does (runs_dir/<run>/metrics.jsonl)."""

    def __init__(self, runs_dir: Path, slots: int = 8):
        self.runs_dir = Path(runs_dir)
        self.slots = slots
        self.jobs: dict[str, FakeJob] = {}
        self.submitted: list[str] = []
        self.sweeps: list[str] = []
        self.fail_submit = False

    def start(self) -> None:
        pass

    def cluster(self) -> ClusterInfo:
        return ClusterInfo((NodeInfo(cpus=self.slots, memory_bytes=8 * 2**30),))

    def submit(self, job: Job) -> None:
        if self.fail_submit:
            raise RuntimeError("cluster unreachable")
        self.submitted.append(job.name)
        self.jobs.setdefault(job.name, FakeJob(job))

    def poll(self, name: str) -> JobState:
        j = self.jobs.get(name)
        if j is None or j.cancelled or j.released:
            return JobState(phase="lost", error="gone")
        return JobState(phase=j.phase, error=j.error, results=j.results, extra=j.extra)

    def cancel(self, name: str) -> None:
        if name in self.jobs:
            self.jobs[name].cancelled = True

    def release(self, name: str) -> None:
        if name in self.jobs:
            self.jobs[name].released = True

    def shutdown(self) -> None:
        pass

    def list_jobs(self) -> list[str]:
        return [n for n, j in self.jobs.items() if not (j.cancelled or j.released)]

    def maintain(self) -> None:
        pass

    # sweeps: none of the lifecycle tests run one (tests/service/test_sweeps.py has its own executor)
    def submit_sweep(self, job: SweepJob) -> None:
        self.sweeps.append(job.name)

    def sync_sweep(self, name: str, news: dict) -> SweepState:
        return SweepState(phase="running")

    def release_sweep(self, name: str) -> None:
        pass

    def list_sweeps(self) -> list[str]:
        return []

    # helpers for tests
    def job_for(self, run_id: str) -> FakeJob:
        return [j for n, j in self.jobs.items() if j.job.run_id == run_id][-1]

    def write_metrics(self, run_id: str, steps: list[int], **values: float) -> None:
        path = self.runs_dir / run_id / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            for s in steps:
                f.write(json.dumps({"step": s, "loss": 1.0 / (s + 1), **values}) + "\n")

    def succeed(self, run_id: str, value: float = 1.0) -> None:
        j = self.job_for(run_id)
        j.phase = "succeeded"
        j.results = [
            {"num_steps": t, "sampler": "ddpm", "metric": "fd_digits", "value": value + t, "num_gen": 64, "extractor": "fd_digits"}
            for t in j.job.run.evaluation.steps
        ]


