"""Dispatcher: moves runs through their lifecycle by talking to an Executor.

One background thread, one pass (`tick`) per interval or when woken:
  1. live runs: stop cancelled ones, stream metrics.jsonl into SQL, poll their job and apply
     the outcome (evaluating / succeeded with results / failed -> retry or fail);
  2. queued runs: submit them while the cluster has capacity.
At start, `reconcile` re-adopts runs that were live when the service stopped: a job that still
exists is polled as usual; a job that is gone (cluster restarted with the service) is
re-queued and its next attempt resumes from the run's last checkpoint.

State lives only in SQL and on disk, so a kill -9 at any point is safe: attempt records are
committed before submission, job names are deterministic per (run, attempt), and results are
recorded once (unique per cell) in the same transaction that marks the run succeeded.

With several replicas on one database, only the holder of the lease (service.runtime.lease)
dispatches: the others stand by, connected to Ray, and the one that takes the lease over
reconciles first (re-adopting the live run actors) and then dispatches. Every write transaction
here is fenced by the lease, so an ex-leader that wakes from a pause cannot write."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from service.core.config import Settings
from service.core.errors import readable_error
from service.core.lifecycle import LIVE_RUN, AttemptStatus, RunStatus, transition
from service.domain import queue
from service.domain.cluster import ClusterInfo
from service.domain.jobs import RunJob
from service.runtime import paths
from service.runtime.executor import Executor, Job, JobState, job_name
from service.runtime.lease import Lease, LeaseLost
from service.runtime.loop import BackgroundLoop
from service.store.db import read_only, session_scope
from service.store.models import Attempt, Run
from service.store.runs import record_results, upsert_metrics
from trainer.metrics_log import read_records

log = logging.getLogger(__name__)

LIVE = tuple(s.value for s in LIVE_RUN)


class Dispatcher(BackgroundLoop):
    name = "snrlab-dispatcher"

    def __init__(self, *, session_factory: sessionmaker[Session], settings: Settings, executor: Executor,
                 train_fn: str = "trainer.run:train", evaluate_fn: str = "service.runtime.evaluation:evaluate_run",
                 connect_backoff_s: tuple[float, float] = (1.0, 60.0), lease: Lease | None = None):
        super().__init__(settings.dispatch_interval_s)
        self.factory = session_factory
        # None: the only dispatcher of its database (SQLite, the tests). Else it dispatches only while
        # it holds the lease, and its writes are fenced by it.
        self.lease = lease
        self._write: Callable[[], AbstractContextManager[Session]] = lease.write if lease else partial(session_scope, session_factory)
        self._reconcile_due = lease is None
        self.on_connected: Callable[[], None] = lambda: None  # the lease keeper's wake: try to lead at once
        self.settings = settings
        self.executor = executor
        self.train_fn = train_fn
        self.evaluate_fn = evaluate_fn
        self.state = "stopped"
        self._last_maintenance = 0.0
        # Until the executor connects (an unreachable SNRLAB_RAY_ADDRESS), the loop retries with
        # exponential backoff from connect_backoff_s[0] up to connect_backoff_s[1] seconds.
        self.connected = False
        self.connect_error: str | None = None
        self.connect_backoff_s = connect_backoff_s
        # The cluster as last read (every pass, outside any transaction); requests read this copy
        # and never call Ray themselves. None until connected.
        self.cluster: ClusterInfo | None = None

    # ------------------------------------------------------------ control
    def start(self) -> None:
        """Connect and reconcile, here (the caller's thread owns a local Ray: see service.app.main);
        an unreachable cluster does not stop the service (the loop keeps trying, and /readyz says
        why it is not ready)."""
        self.state = "connecting"
        self._connect()
        super().start()

    def stop(self, timeout: float = 10) -> None:
        super().stop(timeout)
        self.state = "stopped"

    def _connect(self) -> bool:
        try:
            self.executor.start()
        except Exception as e:  # noqa: BLE001 - e.g. trainer.raysession.RayUnreachable
            self.connect_error = str(e) if isinstance(e, ConnectionError) else readable_error(e)
            return False
        self.cluster = self.executor.cluster()
        if self.leading:
            self.reconcile()
            self._reconcile_due = False
        self.connected, self.connect_error = True, None
        self.state = "running" if self.leading else "standby"
        self.on_connected()
        log.info("dispatcher connected to %s: %g CPUs, %g GPUs on %d node(s)", self.settings.ray_address or "a local Ray",
                 self.cluster.cpus, self.cluster.gpus, len(self.cluster.nodes))
        return True

    def prepare(self) -> bool:
        delay = self.connect_backoff_s[0]
        while not self.connected:
            log.warning("ray: %s; the dispatcher retries in %.3g s (the API answers meanwhile; /readyz is 503)",
                        self.connect_error, delay)
            if self.stopped(delay):
                return False
            delay = min(delay * 2, self.connect_backoff_s[1])
            try:
                self._connect()
            except Exception as e:  # noqa: BLE001 - reconcile failed: try again
                self.connect_error = readable_error(e)
                log.exception("dispatcher: reconciling after connecting failed")
        return True

    # ------------------------------------------------------------ leadership
    @property
    def leading(self) -> bool:
        return self.lease is None or self.lease.held

    def elected(self) -> None:
        """The lease keeper took the lease: reconcile, then dispatch (on the dispatcher's thread)."""
        self._reconcile_due = True
        if self.connected:
            self.state = "running"
        self.wake()

    def lost(self) -> None:
        """The lease went to another replica: stop dispatching (its writes are fenced anyway)."""
        if self.connected:
            self.state = "standby"

    # ------------------------------------------------------------ passes
    def reconcile(self) -> None:
        """Startup: every live run either still has its job (keep polling it) or is re-queued;
        jobs that belong to no live attempt (finished while we were down, before release) go.
        The executor is asked first, outside any transaction (a Ray call can hang; SQLite would
        hold its write lock meanwhile), then the outcome is written in one transaction."""
        with self.factory() as s:
            runs = s.scalars(select(Run).where(Run.status.in_(LIVE)).options(selectinload(Run.attempts))).all()
            targets = [(run.id, _job_of(run)) for run in runs]
        states = {name: self.executor.poll(name) for _, name in targets if name}
        keep: set[str] = set()
        with self._write() as s:
            for run_id, name in targets:
                run = _load_run(s, run_id, for_update=True)
                if run is None or run.status not in LIVE or _job_of(run) != name:
                    continue  # changed meanwhile; the loop sees it
                attempt = _current_attempt(run)
                self._ingest_metrics(s, run, attempt)  # what the old attempt logged stays its own
                state = states[name] if name else JobState(phase="lost")
                if state.phase == "lost":
                    if attempt is not None:
                        transition(attempt, AttemptStatus.LOST, error="service restarted and the Ray job was gone")
                    if run.cancel_requested:
                        transition(run, RunStatus.CANCELLED)
                        continue
                    log.info("reconcile: %s lost its job; re-queueing to resume from its checkpoint", run.id)
                    transition(run, RunStatus.QUEUED)
                else:
                    keep.add(name)
                    log.info("reconcile: re-adopted %s (%s)", run.id, state.phase)
        for name in self.executor.list_jobs():
            if name not in keep:
                log.info("reconcile: releasing stray job %s", name)
                self.executor.release(name)

    def tick(self) -> None:
        if not self.leading:
            self.state = "standby"
            return
        try:
            self._lead()
        except LeaseLost as e:
            log.warning("dispatcher: %s; standing by", e)
            self.state = "standby"

    def _lead(self) -> None:
        if self._reconcile_due:
            self.reconcile()  # after a takeover: re-adopt the live run actors before anything else
            self._reconcile_due = False
            log.info("dispatcher: leading (reconciled)")
        self.state = "running"
        if time.monotonic() - self._last_maintenance > 5:
            self._last_maintenance = time.monotonic()
            self.executor.maintain()
        with self.factory() as s:
            live_ids = s.scalars(select(Run.id).where(Run.status.in_(LIVE))).all()
        for run_id in live_ids:
            try:
                self._advance(run_id)
            except LeaseLost:
                raise
            except Exception:  # noqa: BLE001 - one bad run must not block the others
                log.exception("advancing %s failed", run_id)
        self._submit_queued()

    def _advance(self, run_id: str) -> None:
        # Talk to the executor outside any transaction (SQLite holds its write lock per transaction).
        with self.factory() as s:
            run = _load_run(s, run_id)
            if run is None or run.status not in LIVE:
                return
            name = _job_of(run)
            cancel = run.cancel_requested
        if cancel:
            if name:
                self.executor.cancel(name)
            with self._write() as s:
                run = _load_run(s, run_id, for_update=True)
                if run is not None and run.status in LIVE:
                    attempt = _current_attempt(run)
                    self._ingest_metrics(s, run, attempt)
                    if attempt:
                        transition(attempt, AttemptStatus.CANCELLED)
                    transition(run, RunStatus.CANCELLED)
            return
        state = self.executor.poll(name) if name else JobState(phase="lost")
        release: str | None = None
        with self._write() as s:
            run = _load_run(s, run_id, for_update=True)
            if run is None or run.status not in LIVE or run.cancel_requested:
                return  # changed meanwhile; the next pass sees it
            if _job_of(run) != name:
                return
            attempt = _current_attempt(run)
            self._ingest_metrics(s, run, attempt)
            if state.checkpoint_path:
                run.checkpoint_path = state.checkpoint_path
            if (state.extra or {}).get("usage"):  # device, workers, wall time, device-hours of the training
                run.usage = state.extra["usage"]
            if state.results and state.phase in ("training", "evaluating"):
                # intermediate checkpoints (evaluation.at_steps) are scored while training goes on
                record_results(s, run_id=run.id, results=state.results, default_train_step=run.total_steps)
            if state.phase == "evaluating" and run.status == RunStatus.TRAINING.value:
                transition(run, RunStatus.EVALUATING, current_step=max(run.current_step, run.total_steps))
            elif state.phase == "succeeded":
                record_results(s, run_id=run.id, results=state.results or [], default_train_step=run.total_steps)
                transition(attempt, AttemptStatus.SUCCEEDED)
                transition(run, RunStatus.SUCCEEDED, error=None, current_step=max(run.current_step, run.total_steps))
                release = name
            elif state.phase == "lost":
                self._lose_attempt(s, run, attempt, state)
                release = name
            elif state.phase == "failed":
                self._fail_attempt(s, run, attempt, state)
                release = name
        if release:  # after commit: the outcome is durable before the job goes away
            try:
                self.executor.release(release)
            except Exception:  # noqa: BLE001
                log.exception("releasing %s failed", release)

    def _fail_attempt(self, s: Session, run: Run, attempt: Attempt, state: JobState) -> None:
        error = state.error or "the job failed without a message"
        transition(attempt, AttemptStatus.FAILED, error=error)
        used = sum(1 for a in run.attempts if a.status == AttemptStatus.FAILED.value)
        if used < self.settings.max_attempts:
            log.warning("%s attempt %d failed (%s); retrying from its last checkpoint", run.id, attempt.number, error)
            transition(run, RunStatus.QUEUED, error=error)
        else:
            transition(run, RunStatus.FAILED, error=f"failed after {used} attempts: {error}")

    def _lose_attempt(self, s: Session, run: Run, attempt: Attempt, state: JobState) -> None:
        """The attempt's Ray worker is gone (its node died, the cluster went down): not the run's
        fault, so no failed attempt is spent; the run is re-queued and resumes from its last
        checkpoint. A run that keeps losing its worker still ends, after 5x max_attempts."""
        error = state.error or "the Ray worker for this attempt is gone"
        transition(attempt, AttemptStatus.LOST, error=error)
        lost = sum(1 for a in run.attempts if a.status == AttemptStatus.LOST.value)
        if lost >= 5 * self.settings.max_attempts:
            transition(run, RunStatus.FAILED, error=f"lost its Ray worker {lost} times: {error}")
            return
        log.warning("%s attempt %d lost (%s); re-queued to resume from its last checkpoint", run.id, attempt.number, error)
        transition(run, RunStatus.QUEUED, error=error)

    def _submit_queued(self) -> None:
        """Start queued runs in the queue's order (service.domain.queue: priority, fair share
        across users, submission order) while quotas, the service's cap and the cluster allow."""
        with self.factory() as s:
            state = queue.read_state(read_only(s), only_if_queued=True)
        if not state.queued:
            return
        # Read the cluster here, before any transaction: a claim only compares numbers.
        cluster = self.cluster = self.executor.cluster()
        for place in queue.plan_state(state, share=cluster.share, max_concurrent_runs=self.settings.max_concurrent_runs):
            if not place.start:
                continue
            run_id = place.run.run_id
            job = self._claim(run_id)
            if job is None:
                continue
            try:
                self.executor.submit(job)
            except Exception as e:  # noqa: BLE001
                log.exception("submitting %s failed", job.name)
                with self._write() as s:
                    run = _load_run(s, run_id)
                    if run is not None and run.status in LIVE:
                        self._fail_attempt(s, run, _current_attempt(run), JobState(phase="failed", error=readable_error(e)))

    def _claim(self, run_id: str) -> Job | None:
        """Commit the new attempt (queued -> training) before submitting it. No executor call in here."""
        with self._write() as s:
            run = _load_run(s, run_id, for_update=True)
            if run is None or run.status != RunStatus.QUEUED.value:
                return None
            if run.cancel_requested:
                transition(run, RunStatus.CANCELLED)
                return None
            number = max((a.number for a in run.attempts), default=0) + 1
            s.add(Attempt(run_id=run.id, number=number, status=AttemptStatus.RUNNING.value))
            transition(run, RunStatus.TRAINING, error=None)
            return Job(run_id=run.id, attempt=number, run=RunJob.of_run(run), storage_path=str(self.settings.runs_dir),
                       data_dir=str(self.settings.data_dir), train_fn=self.train_fn, evaluate_fn=self.evaluate_fn)

    # ------------------------------------------------------------ metrics
    def _ingest_metrics(self, s: Session, run: Run, attempt: Attempt | None) -> None:
        """Tail runs_dir/<run>/metrics.jsonl from the stored byte offset (complete lines only)."""
        records, run.metrics_offset = read_records(paths.metrics_file(self.settings.runs_dir, run.id), run.metrics_offset)
        points, starts = [], []
        for rec in records:
            # the trainer logs {"event": "start", "step": k} when an attempt begins (k > 0: resumed)
            (starts if "event" in rec else points).append(rec)
        if attempt is not None and attempt.status == AttemptStatus.RUNNING.value and attempt.start_step is None:
            first = starts[-1]["step"] if starts else min((p["step"] for p in points), default=None)
            attempt.start_step = first
        if not points:
            return
        upsert_metrics(s, run_id=run.id, points=points)
        last = max(points, key=lambda p: p["step"])
        run.current_step = min(max(run.current_step, last["step"]), run.total_steps)
        run.latest_metrics = last
        ckpt = latest_checkpoint(paths.run_dir(self.settings.runs_dir, run.id))
        if ckpt:
            run.checkpoint_path = ckpt


def _load_run(s: Session, run_id: str, *, for_update: bool = False) -> Run | None:
    q = select(Run).where(Run.id == run_id).options(selectinload(Run.attempts))
    if for_update:
        q = q.with_for_update()
    return s.scalar(q)


def _current_attempt(run: Run) -> Attempt | None:
    running = [a for a in run.attempts if a.status == AttemptStatus.RUNNING.value]
    return max(running, key=lambda a: a.number) if running else None


def _job_of(run: Run) -> str | None:
    """The executor's name for the run's current attempt (None: no attempt running)."""
    attempt = _current_attempt(run)
    return job_name(run.id, attempt.number) if attempt else None


def latest_checkpoint(run_dir: Path) -> str | None:
    """Newest `checkpoint*` directory Ray Train wrote under storage_path/name."""
    try:
        dirs = [p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith("checkpoint")]
    except FileNotFoundError:
        return None
    return str(max(dirs, key=lambda p: (p.stat().st_mtime, p.name))) if dirs else None
