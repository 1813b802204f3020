"""The service's side of sweeps: Ray Tune decides which points to try and when to stop them; the
dispatcher executes them; this loop carries news between the two.

One detached actor per sweep (service.runtime.sweep_actor, 0 CPUs) runs a Tuner whose trials
hold ~no resources. Every pass, for each live sweep, the manager syncs with its actor through the
executor: it hands over each trial's run (state and metric values, read from SQL) and takes the
trials that want a run (inserted queued, idempotent by experiment and trial id) and the runs Tune
stopped (flagged for cancellation with the reason). The dispatcher runs trial runs like any other
(capacity, retries, resume, cancel), so a sweep can never hold a CPU its own runs wait for. The
manager also starts, re-adopts and restores actors, records the best configuration and the final
state, and releases the actors of finished sweeps. The database never leaves the service."""
from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.core.config import Settings
from service.core.errors import SpecError, readable_error
from service.core.lifecycle import LIVE_SWEEP, RunStatus, SweepStatus, transition
from service.domain.sweep_spec import SweepSpec
from service.domain.sweeps import (
    SweepStopped,
    best_trial,
    cancel_sweep,
    concurrency,
    ensure_trial_run,
    finish_sweep,
    stop_trial_run,
    trial_failures,
    trial_runs,
)
from service.runtime.executor import (
    SWEEP_ACTOR_PREFIX,
    Executor,
    SweepJob,
    SweepState,
    sweep_name,
)
from service.runtime.loop import BackgroundLoop
from service.store.db import session_scope
from service.store.models import Sweep
from service.store.sweeps import get_sweep

log = logging.getLogger(__name__)

MAX_ACTOR_RESTARTS = 3  # per service lifetime: a sweep whose actor keeps dying fails


class SweepManager(BackgroundLoop):
    name = "snrlab-sweeps"

    def __init__(self, *, session_factory: sessionmaker[Session], settings: Settings, executor: Executor,
                 interval_s: float = 2.0, on_new_runs: Callable[[], None] = lambda: None,
                 ready: Callable[[], bool] = lambda: True,
                 write: Callable[[], AbstractContextManager[Session]] | None = None):
        super().__init__(interval_s)
        # the dispatcher has joined the cluster and leads (service.runtime.lease): only then is
        # there a Ray to talk to, and only the leader runs sweeps
        self.ready = ready
        self.factory = session_factory
        self._write = write or partial(session_scope, session_factory)  # the dispatcher's lease-fenced writes
        self.settings = settings
        self.executor = executor
        self.on_new_runs = on_new_runs  # the dispatcher's wake: a trial's run should start soon
        self._restarts: dict[str, int] = {}

    def stop(self, timeout: float = 10) -> None:
        """Leaves sweep actors running (detached): a restarted service re-adopts them."""
        super().stop(timeout)

    def tick(self) -> None:
        if not self.ready():
            return
        with self.factory() as s:
            live = s.scalars(select(Sweep.id).where(Sweep.status.in_([x.value for x in LIVE_SWEEP]))
                             .order_by(Sweep.created_at)).all()
        for sweep_id in live:
            try:
                self._advance(sweep_id)
            except Exception:  # noqa: BLE001 - one bad sweep must not block the others
                log.exception("advancing sweep %s failed", sweep_id)
        self._release_finished()

    # ------------------------------------------------------------ one sweep
    def _advance(self, sweep_id: str) -> None:
        with self._write() as s:
            sweep = get_sweep(s, sweep_id=sweep_id, for_update=True)
            if SweepStatus(sweep.status).is_terminal():
                return
            if sweep.experiment.cancel_requested_at is not None:  # the experiment was cancelled directly
                cancel_sweep(s, sweep_id=sweep_id)
                return
            status = SweepStatus(sweep.status)
            news = self._news(s, sweep)
        if status is SweepStatus.QUEUED:
            self._start(sweep_id)
            return
        state = self.executor.sync_sweep(sweep_name(sweep_id), news)  # outside any transaction: Ray may hang
        added = False
        with self._write() as s:
            sweep = get_sweep(s, sweep_id=sweep_id, for_update=True)
            if sweep.status != SweepStatus.RUNNING.value:
                return
            added = self._apply(s, sweep, state)
            if self._finished(s, sweep, state):
                return
        if added:
            self.on_new_runs()
        if state.phase == "lost":
            self._launch(sweep_id)  # a new actor restores the Tuner (finished trials are not rerun)

    def _news(self, s: Session, sweep: Sweep) -> dict[str, Any]:
        """What the actor's trials need: each trial's run (state, the metric's values)."""
        runs = trial_runs(s, sweep)
        return {"runs": runs, "stops_done": [t for t, r in runs.items() if r["stopping"]]}

    def _apply(self, s: Session, sweep: Sweep, state: SweepState) -> bool:
        """Runs for the trials that asked, stops for the runs Tune stopped. True if runs were added."""
        added = False
        for trial_id, point in state.wants_run.items():
            try:
                ensure_trial_run(s, sweep_id=sweep.id, trial_id=trial_id, point=point,
                                 checkpoint_every=self.settings.checkpoint_every)
                added = True
            except (SweepStopped, SpecError) as e:
                log.warning("sweep %s: trial %s gets no run: %s", sweep.id, trial_id, e.message)
        for trial_id, reason in state.stopped.items():
            if stop_trial_run(s, experiment_id=sweep.experiment_id, trial_id=trial_id, reason=reason):
                log.info("sweep %s: trial %s %s; its run is being stopped", sweep.id, trial_id, reason)
        return added

    def _finished(self, s: Session, sweep: Sweep, state: SweepState) -> bool:
        best = best_trial(s, sweep)
        if best != sweep.best:
            sweep.best = best
        if state.phase == "lost":
            restarts = self._restarts[sweep.id] = self._restarts.get(sweep.id, 0) + 1
            if restarts > MAX_ACTOR_RESTARTS:
                finish_sweep(sweep, status=SweepStatus.FAILED,
                             error=f"the sweep's Ray actor was lost {restarts} times: {state.error}")
                return True
            log.info("sweep %s: its actor is gone (%s); restoring it from Tune's experiment state", sweep.id, state.error)
            return False
        if state.phase == "failed":
            finish_sweep(sweep, status=SweepStatus.FAILED, error=state.error)
            return True
        if state.phase == "finished":
            if any(not RunStatus(r["status"]).is_terminal() for r in trial_runs(s, sweep).values()):
                return False  # Tune is done; a run it stopped is still being cancelled: the sweep ends with its runs
            if best is not None:
                notes = [n for n in (sweep.message, trial_failures(s, sweep)) if n]
                sweep.message = "; ".join(notes) or None
                finish_sweep(sweep, status=SweepStatus.SUCCEEDED)
            else:
                finish_sweep(sweep, status=SweepStatus.FAILED, error=f"no trial produced a final {sweep.spec['metric']}: "
                             + (trial_failures(s, sweep) or "no trial ran"))
            return True
        return False

    def _start(self, sweep_id: str) -> None:
        """queued -> running: cap concurrency to the cluster (fail with the reason if nothing fits), then launch."""
        cluster = self.executor.cluster()  # before the transaction: Ray may hang
        with self._write() as s:
            sweep = get_sweep(s, sweep_id=sweep_id, for_update=True)
            if sweep.status != SweepStatus.QUEUED.value:
                return
            spec = SweepSpec.model_validate(sweep.spec)
            try:
                n, note = concurrency(spec, capacity=cluster.capacity(spec.base.resources.model_dump(mode="json")),
                                      max_concurrent_runs=self.settings.max_concurrent_runs)
            except SpecError as e:
                finish_sweep(sweep, status=SweepStatus.FAILED, error=e.message)
                return
            sweep.max_concurrent_trials = min(n, sweep.max_concurrent_trials or n)
            if note and not sweep.message:
                sweep.message = note
            transition(sweep, SweepStatus.RUNNING)
        self._launch(sweep_id)

    def _launch(self, sweep_id: str) -> None:
        with self.factory() as s:
            sweep = get_sweep(s, sweep_id=sweep_id)
            job = SweepJob(sweep_id=sweep.id, spec=sweep.spec, storage_path=str((self.settings.runs_dir / "sweeps").resolve()),
                           max_concurrent_trials=sweep.max_concurrent_trials)
        try:
            self.executor.submit_sweep(job)
        except Exception as e:  # noqa: BLE001
            log.exception("starting sweep %s failed", sweep_id)
            with self._write() as s:
                finish_sweep(get_sweep(s, sweep_id=sweep_id, for_update=True), status=SweepStatus.FAILED,
                             error=f"could not start the sweep's Ray actor: {readable_error(e)}")

    def _release_finished(self) -> None:
        """Release the actors of finished or cancelled sweeps (after their state is committed).
        Actors of sweeps this database does not know are left alone."""
        names = self.executor.list_sweeps()
        if not names:
            return
        ids = [n[len(SWEEP_ACTOR_PREFIX):] for n in names]
        terminal = [x.value for x in SweepStatus if x.is_terminal()]
        with self.factory() as s:
            done = set(s.scalars(select(Sweep.id).where(Sweep.id.in_(ids), Sweep.status.in_(terminal))).all())
        for sweep_id in done:
            log.info("sweep %s is finished: releasing its actor", sweep_id)
            self.executor.release_sweep(sweep_name(sweep_id))
