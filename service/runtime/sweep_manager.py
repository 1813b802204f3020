"""Sweeps: Ray Tune decides which points to try and when to stop them; the dispatcher executes them.

A sweep is an Experiment (so runs, leaderboard, pages and cancel are shared) plus a `sweeps` row.
One detached actor per sweep (`service.sweep_runner.SweepWorker`, 0 CPUs) runs a Tuner whose
trials hold ~no resources: a trial asks the actor to insert its run (idempotent by experiment and
Tune trial id), then watches that run in SQL and reports the metric to Tune. The dispatcher runs
trial runs like any other (capacity, retries, resume, cancel), so a sweep can never hold a CPU
that its own runs wait for. `SweepManager` (a thread in the service) starts, re-adopts or
restores the actors, records the best configuration and the final state.

Persistence functions follow crud's rules: keyword-only, callers own the transaction."""
from __future__ import annotations

import logging
import math
import threading
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from service.store import crud
from service.domain import spec as schemas
from service.store.db import session_scope
from service.core.errors import ConflictError, NotFoundError, SpecError
from service.runtime.executor import readable_error
from service.core.lifecycle import RunStatus
from service.store.models import Experiment, Result, Run, Sweep, utcnow
from service.domain.sweep_spec import WEIGHTING_PARAM, SweepRead, SweepSpec, SweepSummary, SweepTrial, value_label

log = logging.getLogger(__name__)

TERMINAL = ("succeeded", "failed", "cancelled")
LIVE = ("queued", "running")
ACTOR_PREFIX = "snrlab-sweep-"
MAX_ACTOR_RESTARTS = 3  # per service lifetime: a sweep whose actor keeps dying fails


class SweepStopped(ConflictError):
    """A trial of a cancelled or finished sweep asked for a run."""


def actor_name(sweep_id: str) -> str:
    return f"{ACTOR_PREFIX}{sweep_id}"


# ---------------------------------------------------------------- resources
def concurrency(spec: SweepSpec, *, capacity: int, max_concurrent_runs: int | None) -> tuple[int, str | None]:
    """(trials at once, note). Refuses a sweep none of whose runs could ever start (422); caps a
    request above what the cluster fits, so Tune never has trials waiting on runs that cannot run."""
    res = spec.base.resources
    if capacity < 1:
        gpus = f" and {res.gpus_per_worker * res.workers_per_run:g} GPU(s)" if res.gpus_per_worker else ""
        raise SpecError(("body", "base", "resources"),
                        f"a trial's run needs {res.workers_per_run} CPU(s){gpus} at once and the Ray cluster has fewer in "
                        "total: no trial could ever start (lower base.resources.workers_per_run / gpus_per_worker)")
    fits = min(capacity, max_concurrent_runs or capacity)
    wanted = spec.max_concurrent_trials or fits
    if wanted <= fits:
        return wanted, None
    why = "SNRLAB_MAX_CONCURRENT_RUNS" if max_concurrent_runs and max_concurrent_runs < capacity else \
        f"the cluster fits {capacity} run(s) of {res.workers_per_run} worker(s) at once"
    return fits, f"max_concurrent_trials capped from {wanted} to {fits}: {why}"


# ---------------------------------------------------------------- persistence
def create_sweep(session: Session, *, spec: SweepSpec, code_version: str, max_concurrent_trials: int | None = None,
                 message: str | None = None) -> Sweep:
    """The sweep and its (empty) experiment; trials add runs as Tune starts them."""
    base = spec.base.model_dump(mode="json")
    base["name"] = spec.experiment_name
    body = spec.model_dump(mode="json")
    body["search_space"] = {k: d.model_dump(mode="json", exclude_none=True) for k, d in spec.search_space.items()}
    exp = Experiment(name=spec.experiment_name, spec=base, spec_hash=schemas.sha256_json(body), code_version=code_version)
    sweep = Sweep(experiment=exp, spec=body, status="queued", max_concurrent_trials=max_concurrent_trials, message=message)
    session.add_all([exp, sweep])
    session.flush()
    return sweep


def get_sweep(session: Session, *, sweep_id: str, for_update: bool = False) -> Sweep:
    q = select(Sweep).where(Sweep.id == sweep_id)
    if for_update:
        q = q.with_for_update()
    sweep = session.scalar(q)
    if sweep is None:
        raise NotFoundError(f"sweep {sweep_id!r} not found")
    return sweep


def list_sweeps(session: Session, *, limit: int = 50, offset: int = 0) -> tuple[list[Sweep], int]:
    total = session.scalar(select(func.count()).select_from(Sweep)) or 0
    rows = session.scalars(select(Sweep).order_by(Sweep.created_at.desc(), Sweep.id).limit(limit).offset(offset)).all()
    return list(rows), total


def finish_sweep(sweep: Sweep, *, status: str, error: str | None = None) -> None:
    if sweep.status in TERMINAL:
        return
    sweep.status, sweep.finished_at = status, utcnow()
    if error is not None:
        sweep.error = error


def cancel_sweep(session: Session, *, sweep_id: str) -> Sweep:
    """Queued trial runs are cancelled now, live ones flagged for the dispatcher; the manager
    kills the Tune actor. The sweep row is locked, so no trial can add a run after this."""
    sweep = get_sweep(session, sweep_id=sweep_id, for_update=True)
    if sweep.status not in TERMINAL:
        finish_sweep(sweep, status="cancelled")
        crud.cancel_experiment(session, experiment_id=sweep.experiment_id)
    session.flush()
    return sweep


def ensure_trial_run(session: Session, *, sweep_id: str, trial_id: str, point: dict[str, Any],
                     checkpoint_every: int | None = None) -> str:
    """The run of a Tune trial, inserted queued on first call. Idempotent by (experiment, trial id):
    a restored trial re-attaches to its run (which the dispatcher resumed or finished)."""
    sweep = get_sweep(session, sweep_id=sweep_id, for_update=True)  # serializes trials of one sweep
    run_id = session.scalar(select(Run.id).where(Run.experiment_id == sweep.experiment_id, Run.sweep_trial == trial_id))
    if run_id is not None:
        return run_id
    exp = session.get(Experiment, sweep.experiment_id)
    if sweep.status in TERMINAL or exp.cancel_requested_at is not None:
        raise SweepStopped(f"sweep {sweep_id} is {sweep.status}; trial {trial_id} gets no run")
    from service.domain.sweep_spec import trial_run_row

    row = trial_run_row(SweepSpec.model_validate(sweep.spec), point, checkpoint_every=checkpoint_every)
    index = session.scalar(select(func.coalesce(func.max(Run.index) + 1, 0)).where(Run.experiment_id == exp.id))
    run = Run(experiment_id=exp.id, status=RunStatus.QUEUED.value, sweep_trial=trial_id, **{**row, "index": index})
    session.add(run)
    session.flush()
    return run.id


def stop_trial_run(session: Session, *, experiment_id: str, trial_id: str, reason: str) -> bool:
    """Tune stopped a trial (ASHA, or the trial failed) whose run is still going: stop the run too."""
    run = session.scalar(
        select(Run).where(Run.experiment_id == experiment_id, Run.sweep_trial == trial_id).with_for_update()
    )
    if run is None or RunStatus(run.status).is_terminal():
        return False
    if run.status == RunStatus.QUEUED.value:
        crud.transition_run(session, run=run, to=RunStatus.CANCELLED, error=reason)
    else:
        run.cancel_requested, run.error = True, reason
    session.flush()
    return True


# ---------------------------------------------------------------- views
def run_point(run: Run, keys: list[str]) -> dict[str, Any]:
    """The sampled point of a trial, read back from its run's resolved config."""
    cfg = run.config
    out: dict[str, Any] = {}
    for key in keys:
        if key == "weighting":
            out[key] = run.weighting
        elif key.startswith(WEIGHTING_PARAM):
            out[key] = (cfg.get("weighting_params") or {}).get(key[len(WEIGHTING_PARAM):])
        elif key == "dataset":
            out[key] = value_label("dataset", cfg["dataset"])
        elif key == "seed":
            out[key] = run.seed
        elif key == "t_sampling":
            out[key] = cfg.get("t_sampling", "uniform")
        else:
            out[key] = cfg.get(key)
    return out


def _metric_values(session: Session, spec: dict[str, Any], run_ids: list[str]) -> dict[str, list[tuple[int, float]]]:
    rows = session.execute(
        select(Result.run_id, Result.train_step, Result.value)
        .where(Result.run_id.in_(run_ids), Result.metric == spec["metric"], Result.num_steps == spec["num_steps"],
               Result.sampler == spec["sampler"])
        .order_by(Result.train_step)
    ).all() if run_ids else []
    out: dict[str, list[tuple[int, float]]] = {}
    for run_id, step, value in rows:
        out.setdefault(run_id, []).append((step, value))
    return out


def trials(session: Session, sweep: Sweep) -> list[SweepTrial]:
    runs = session.scalars(select(Run).where(Run.experiment_id == sweep.experiment_id).order_by(Run.index)).all()
    values = _metric_values(session, sweep.spec, [r.id for r in runs])
    keys = list(sweep.spec["search_space"])
    out = []
    for r in runs:
        last = values.get(r.id, [])[-1:] or [(None, None)]
        out.append(SweepTrial(trial_id=r.sweep_trial, run_id=r.id, status=r.status, config=run_point(r, keys),
                              value=last[0][1], train_step=last[0][0], current_step=r.current_step,
                              total_steps=r.total_steps, error=r.error))
    return out


def best_trial(session: Session, sweep: Sweep) -> dict[str, Any] | None:
    """The best final result (train_step == total_steps) among succeeded trial runs."""
    spec = sweep.spec
    runs = session.scalars(
        select(Run).where(Run.experiment_id == sweep.experiment_id, Run.status == RunStatus.SUCCEEDED.value)
    ).all()
    values = _metric_values(session, spec, [r.id for r in runs])
    finals = [(v, r) for r in runs for step, v in values.get(r.id, []) if step == r.total_steps and math.isfinite(v)]
    if not finals:
        return None
    pick = min if spec["mode"] == "min" else max
    value, run = pick(finals, key=lambda vr: vr[0])
    return dict(trial_id=run.sweep_trial, run_id=run.id, config=run_point(run, list(spec["search_space"])),
                value=value, train_step=run.total_steps, metric=spec["metric"], num_steps=spec["num_steps"],
                sampler=spec["sampler"], weighting=run.weighting, dataset=run.dataset, seed=run.seed)


def sweep_summary(sweep: Sweep) -> dict[str, Any]:
    return dict(id=sweep.id, experiment_id=sweep.experiment_id, name=sweep.experiment.name, status=sweep.status,
                metric=sweep.spec["metric"], mode=sweep.spec["mode"], best=sweep.best, created_at=sweep.created_at,
                finished_at=sweep.finished_at)


def sweep_view(session: Session, sweep: Sweep) -> SweepRead:
    return SweepRead(**sweep_summary(sweep), spec=sweep.spec, max_concurrent_trials=sweep.max_concurrent_trials,
                     message=sweep.message, error=sweep.error, trials=trials(session, sweep))


def summary_view(sweep: Sweep) -> SweepSummary:
    return SweepSummary(**sweep_summary(sweep))


# ---------------------------------------------------------------- the manager (service side)
class SweepManager:
    """One thread: starts queued sweeps' actors, polls running ones (re-adopting a live actor
    after a restart, restoring a lost one from Tune's experiment state), records the best
    configuration, finishes sweeps and releases their actors."""

    def __init__(self, *, session_factory: sessionmaker[Session], settings, executor=None, interval_s: float = 2.0):
        self.factory = session_factory
        self.settings = settings
        self.executor = executor
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._restarts: dict[str, int] = {}
        self.last_error: str | None = None

    def start(self) -> None:
        """Touches Ray only once there is a live sweep (a service without sweeps never needs Tune)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="snrlab-sweeps", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        """Leaves sweep actors running (detached): a restarted service re-adopts them."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
                self.last_error = None
            except Exception as e:  # noqa: BLE001 - the loop must survive a bad pass
                self.last_error = readable_error(e)
                log.exception("sweep pass failed")
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def tick(self) -> None:
        with self.factory() as s:
            live = s.scalars(select(Sweep.id).where(Sweep.status.in_(LIVE)).order_by(Sweep.created_at)).all()
        if live:
            from trainer.raysession import init_ray

            init_ray(self.settings.ray_address, log_to_driver=False)  # no-op: the dispatcher's executor joined already
        for sweep_id in live:
            try:
                self._advance(sweep_id)
            except Exception:  # noqa: BLE001 - one bad sweep must not block the others
                log.exception("advancing sweep %s failed", sweep_id)
        self._release_finished()

    # ------------------------------------------------------------ one sweep
    def _advance(self, sweep_id: str) -> None:
        with session_scope(self.factory) as s:
            sweep = get_sweep(s, sweep_id=sweep_id, for_update=True)
            if sweep.status not in LIVE:
                return
            if sweep.experiment.cancel_requested_at is not None:  # the experiment was cancelled directly
                cancel_sweep(s, sweep_id=sweep_id)
                return
            status = sweep.status
        if status == "queued":
            self._start(sweep_id)
            return
        state = self._poll(sweep_id)
        with session_scope(self.factory) as s:
            sweep = get_sweep(s, sweep_id=sweep_id, for_update=True)
            if sweep.status != "running":
                return
            best = best_trial(s, sweep)
            if best != sweep.best:
                sweep.best = best
            if state["phase"] == "lost":
                restarts = self._restarts[sweep_id] = self._restarts.get(sweep_id, 0) + 1
                if restarts > MAX_ACTOR_RESTARTS:
                    finish_sweep(sweep, status="failed", error=f"the sweep's Ray actor was lost {restarts} times: {state['error']}")
                    return
                log.info("sweep %s: its actor is gone (%s); restoring it from Tune's experiment state", sweep_id, state["error"])
            elif state["phase"] == "failed":
                finish_sweep(sweep, status="failed", error=state["error"])
                return
            elif state["phase"] == "finished":
                if best is not None:
                    notes = [n for n in (sweep.message, _trial_failures(s, sweep)) if n]
                    sweep.message = "; ".join(notes) or None
                    finish_sweep(sweep, status="succeeded")
                else:
                    finish_sweep(sweep, status="failed", error=f"no trial produced a final {sweep.spec['metric']}: "
                                 + (_trial_failures(s, sweep) or "no trial ran"))
                return
            else:
                return
        self._launch(sweep_id)  # lost: a new actor restores the Tuner (finished trials are not rerun)

    def _start(self, sweep_id: str) -> None:
        """queued -> running: cap concurrency to the cluster (fail with the reason if nothing fits), then launch."""
        cluster = self.executor.cluster() if self.executor else None  # before the transaction: Ray may hang
        with session_scope(self.factory) as s:
            sweep = get_sweep(s, sweep_id=sweep_id, for_update=True)
            if sweep.status != "queued":
                return
            spec = SweepSpec.model_validate(sweep.spec)
            try:
                capacity = cluster.capacity(spec.base.resources.model_dump(mode="json")) if cluster else 1
                n, note = concurrency(spec, capacity=capacity, max_concurrent_runs=self.settings.max_concurrent_runs)
            except SpecError as e:
                finish_sweep(sweep, status="failed", error=e.message)
                return
            sweep.max_concurrent_trials = min(n, sweep.max_concurrent_trials or n)
            if note and not sweep.message:
                sweep.message = note
            sweep.status = "running"
        self._launch(sweep_id)

    def _job(self, sweep: Sweep) -> dict[str, Any]:
        return dict(
            sweep_id=sweep.id, experiment_id=sweep.experiment_id, spec=sweep.spec,
            database_url=self.settings.resolved_database_url, storage_path=str((self.settings.runs_dir / "sweeps").resolve()),
            max_concurrent_trials=sweep.max_concurrent_trials, checkpoint_every=self.settings.checkpoint_every,
            namespace=self.settings.ray_namespace, actor_name=actor_name(sweep.id),
        )

    def _launch(self, sweep_id: str) -> None:
        import ray

        from service.runtime.sweep_actor import SweepWorker

        with self.factory() as s:
            job = self._job(get_sweep(s, sweep_id=sweep_id))
        try:
            actor = SweepWorker.options(
                name=job["actor_name"], namespace=job["namespace"], lifetime="detached", get_if_exists=True,
                num_cpus=0, max_concurrency=64, max_restarts=0,
            ).remote(job)
            ray.get(actor.start.remote(), timeout=120)
        except Exception as e:  # noqa: BLE001
            log.exception("starting sweep %s failed", sweep_id)
            with session_scope(self.factory) as s:
                finish_sweep(get_sweep(s, sweep_id=sweep_id, for_update=True), status="failed",
                             error=f"could not start the sweep's Ray actor: {readable_error(e)}")

    def _actor(self, sweep_id: str):
        import ray

        try:
            return ray.get_actor(actor_name(sweep_id), namespace=self.settings.ray_namespace)
        except ValueError:
            return None

    def _poll(self, sweep_id: str) -> dict[str, Any]:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        actor = self._actor(sweep_id)
        if actor is None:
            return {"phase": "lost", "error": "no Ray actor for this sweep"}
        try:
            return ray.get(actor.poll.remote(), timeout=30)
        except GetTimeoutError:
            return {"phase": "running"}
        except RayActorError as e:
            return {"phase": "lost", "error": readable_error(e)}

    def _release_finished(self) -> None:
        """Kill the actors of finished or cancelled sweeps (after their state is committed).
        Actors of sweeps this database does not know are left alone."""
        import ray

        if not ray.is_initialized():
            return
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == self.settings.ray_namespace and a["name"].startswith(ACTOR_PREFIX)]
        if not names:
            return
        ids = [n[len(ACTOR_PREFIX):] for n in names]
        with self.factory() as s:
            done = set(s.scalars(select(Sweep.id).where(Sweep.id.in_(ids), Sweep.status.in_(TERMINAL))).all())
        for sweep_id in done:
            actor = self._actor(sweep_id)
            if actor is not None:
                log.info("sweep %s is finished: releasing its actor", sweep_id)
                ray.kill(actor, no_restart=True)


def _trial_failures(session: Session, sweep: Sweep) -> str | None:
    runs = session.scalars(select(Run).where(Run.experiment_id == sweep.experiment_id,
                                             Run.status.in_((RunStatus.FAILED.value, RunStatus.CANCELLED.value)))
                           .options(selectinload(Run.attempts))).all()
    if not runs:
        return None
    failed = [r for r in runs if r.status == RunStatus.FAILED.value]
    parts = []
    if failed:
        parts.append(f"{len(failed)} trial run(s) failed (first: {failed[0].id}: {failed[0].error})")
    stopped = len(runs) - len(failed)
    if stopped:
        parts.append(f"{stopped} trial run(s) stopped early or cancelled")
    return "; ".join(parts)
