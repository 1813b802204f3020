"""The Ray side of a sweep: one detached actor runs a Ray Tune Tuner; its trials only watch runs.

`SweepWorker` (0 CPUs, threaded) runs `Tuner.fit()` in a thread so `poll()` answers meanwhile.
On start it restores the Tuner from `<runs_dir>/sweeps/<sweep id>` when Tune's experiment state
is there (a new actor after the old one was lost): finished trials are not rerun, unfinished
ones start again and re-attach to their runs.

A trial (`watch_trial`) holds `TRIAL_RESOURCES`, a sliver of memory and no CPU: measured on 2
CPUs, trials at {"cpu": 0.01} left 1.98 CPUs and only one 1-CPU run could start next to two
trials; at 0 CPU both could. It asks the actor for its run (the actor is the only writer of trial
runs), then polls SQL every POLL_S seconds and `tune.report`s the metric as results appear
(intermediate ones from evaluation.at_steps have train_step < total_steps: ASHA's time
attribute). It returns when the run succeeds and raises when it fails or is cancelled. When Tune
stops a trial whose run is still going (ASHA, an error), `StopTrialRuns` stops the run."""
from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any

import ray

log = logging.getLogger(__name__)

TRIAL_RESOURCES = {"cpu": 0, "memory": 1 << 20}
POLL_S = 2.0
TRANSIENT_DB_ERRORS_S = 120  # a trial rides out a database outage this long


_factories: dict[str, Any] = {}


def session_factory(url: str):
    """One engine per database per process (callbacks and trials are re-created, engines are not)."""
    if url not in _factories:
        from service.store.db import make_engine, make_sessionmaker

        _factories[url] = make_sessionmaker(make_engine(url, pool_size=2, max_overflow=4) if url.startswith("postgresql")
                                            else make_engine(url))
    return _factories[url]


# ---------------------------------------------------------------- the trial (a Tune function)
def watch_trial(config: dict[str, Any], job: dict[str, Any]) -> None:
    from ray import tune
    from sqlalchemy import select
    from sqlalchemy.exc import OperationalError

    from service.core.lifecycle import RunStatus
    from service.store.models import Result, Run

    trial_id = tune.get_context().get_trial_id()
    actor = ray.get_actor(job["actor_name"], namespace=job["namespace"])
    run_id = ray.get(actor.ensure_run.remote(trial_id, dict(config)))
    spec = job["spec"]
    factory = session_factory(job["database_url"])
    reported, outage_since = -1, None
    while True:
        try:
            with factory() as s:
                run = s.get(Run, run_id)
                status, error, total = RunStatus(run.status), run.error, run.total_steps
                rows = s.execute(
                    select(Result.train_step, Result.value)
                    .where(Result.run_id == run_id, Result.metric == spec["metric"], Result.num_steps == spec["num_steps"],
                           Result.sampler == spec["sampler"], Result.train_step > reported)
                    .order_by(Result.train_step)
                ).all()
            outage_since = None
        except OperationalError:
            outage_since = outage_since or time.monotonic()
            if time.monotonic() - outage_since > TRANSIENT_DB_ERRORS_S:
                raise
            time.sleep(POLL_S)
            continue
        for step, value in rows:
            tune.report({spec["metric"]: value, "train_step": step, "run_id": run_id})
            reported = step
        if status is RunStatus.SUCCEEDED:
            if reported < total:
                raise RuntimeError(f"run {run_id} succeeded without a final {spec['metric']} at T={spec['num_steps']}")
            return
        if status in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise RuntimeError(f"run {run_id} {status.value}" + (f": {error}" if error else ""))
        time.sleep(POLL_S)


def make_trainable(job: dict[str, Any]):
    from ray import tune

    def sweep_trial(config: dict[str, Any]) -> None:
        watch_trial(config, job)

    return tune.with_resources(sweep_trial, TRIAL_RESOURCES)


# ---------------------------------------------------------------- Tune callback (in the actor)
try:
    from ray.tune import Callback as _TuneCallback
except ImportError:  # pragma: no cover - ray[tune] is a dependency
    _TuneCallback = object


class StopTrialRuns(_TuneCallback):
    """A trial that ends while its run is still going was stopped by Tune (the scheduler, or an
    error in the trial itself): flag the run for cancellation with the reason. A trial that
    returned normally has a terminal run, so this is a no-op for it."""

    def __init__(self, job: dict[str, Any]):
        self.job = {k: job[k] for k in ("experiment_id", "database_url", "spec")}

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        metric = self.job["spec"]["metric"]
        where = f" at train_step {last['train_step']} ({metric}={last.get(metric)})" if "train_step" in last else ""
        self._stop(trial.trial_id, f"stopped early by the sweep's {self.job['spec']['scheduler']} scheduler{where}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._stop(trial.trial_id, f"its sweep trial {trial.trial_id} failed")

    def _stop(self, trial_id: str, reason: str) -> None:
        from service.store.db import session_scope
        from service.runtime.sweep_manager import stop_trial_run

        try:
            with session_scope(session_factory(self.job["database_url"])) as s:
                if stop_trial_run(s, experiment_id=self.job["experiment_id"], trial_id=trial_id, reason=reason):
                    log.info("trial %s: %s; its run is being stopped", trial_id, reason)
        except Exception:  # noqa: BLE001 - a callback must not take the Tune loop down
            log.exception("stopping the run of trial %s failed", trial_id)


# ---------------------------------------------------------------- the Tuner
def build_tuner(job: dict[str, Any]):
    """A new Tuner, or the restored one when Tune's experiment state exists (a lost actor)."""
    import os

    from ray import tune

    from service.domain.sweep_spec import SweepSpec, label_table

    path = os.path.join(job["storage_path"], job["sweep_id"])
    trainable = make_trainable(job)
    if tune.Tuner.can_restore(path):
        log.info("restoring sweep %s from %s", job["sweep_id"], path)
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False, restart_errored=False)
    spec = SweepSpec.model_validate(job["spec"])
    labels = label_table(spec)
    space = {}
    for key, dom in spec.search_space.items():
        values = list(labels[key]) if key in labels else dom.grid or dom.choice
        if dom.grid is not None:
            space[key] = tune.grid_search(values)
        elif dom.choice is not None:
            space[key] = tune.choice(values)
        elif dom.uniform is not None:
            space[key] = tune.uniform(*dom.uniform)
        elif dom.loguniform is not None:
            space[key] = tune.loguniform(*dom.loguniform)
        else:
            space[key] = tune.randint(*dom.randint)
    return tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(
            metric=spec.metric, mode=spec.mode, search_alg=_search_alg(spec, job["max_concurrent_trials"]),
            scheduler=_scheduler(spec), num_samples=spec.num_samples,
            # a Searcher (optuna) is wrapped in a ConcurrencyLimiter; grid/random limit themselves (below)
            max_concurrent_trials=job["max_concurrent_trials"] if spec.search == "optuna" else None,
        ),
        run_config=tune.RunConfig(
            name=job["sweep_id"], storage_path=job["storage_path"], verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),  # the dispatcher retries runs; a trial only watches
            callbacks=[StopTrialRuns(job)],
        ),
    )


def _search_alg(spec, max_concurrent: int):
    if spec.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=spec.search_seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # TuneConfig.max_concurrent_trials is ignored (with a warning) for a generator passed in: say it here
    return BasicVariantGenerator(max_concurrent=max_concurrent, random_state=spec.search_seed)


def _scheduler(spec):
    if spec.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    from service.domain.sweep_spec import corner_values

    steps = spec.search_space.get("steps")
    max_t = max(corner_values("steps", steps)) if steps else spec.base.training.steps
    return ASHAScheduler(time_attr="train_step", max_t=max_t, grace_period=min(spec.base.evaluation.at_steps),
                         reduction_factor=2)


@ray.remote(num_cpus=0)
class SweepWorker:
    """One per sweep, detached and named `snrlab-sweep-<id>`; the service polls it."""

    def __init__(self, job: dict[str, Any]):
        self.job = job
        self.state: dict[str, Any] = {"phase": "starting", "error": None}
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> bool:
        with self._lock:
            if self.thread is None:  # idempotent: the same name never runs two Tuners
                self.thread = threading.Thread(target=self._main, name="snrlab-sweep", daemon=True)
                self.thread.start()
        return True

    def _main(self) -> None:
        from service.runtime.executor import readable_error

        try:
            tuner = build_tuner(self.job)
            self.state["phase"] = "running"
            grid = tuner.fit()
            self.state.update(phase="finished", trials=len(grid), trial_errors=len(grid.errors))
        except BaseException as e:  # noqa: BLE001 - every failure becomes a readable message
            traceback.print_exc()
            self.state.update(phase="failed", error=readable_error(e))

    def poll(self) -> dict[str, Any]:
        return dict(self.state)

    def ensure_run(self, trial_id: str, point: dict[str, Any]) -> str:
        from service.store.db import session_scope
        from service.runtime.sweep_manager import ensure_trial_run

        with session_scope(session_factory(self.job["database_url"])) as s:
            return ensure_trial_run(s, sweep_id=self.job["sweep_id"], trial_id=trial_id, point=point,
                                    checkpoint_every=self.job.get("checkpoint_every"))
