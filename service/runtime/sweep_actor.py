"""The Ray side of a sweep: one detached actor runs a Ray Tune Tuner; its trials only watch runs.

The actor is a mailbox between Tune and the service; it never touches the database (the cluster
needs no database URL, no credentials). A trial (`watch_trial`, a Tune function holding
`TRIAL_RESOURCES`: a sliver of memory, no CPU) posts the point Tune sampled and asks for its run;
the service (service.runtime.sweep_manager) reads those requests when it syncs, inserts the runs
(idempotent by trial id), and hands back each trial's run: its state and the sweep metric's values
as they land (intermediate ones from evaluation.at_steps are ASHA's time steps). The trial
`tune.report`s them, returns when its run succeeds and raises when it fails or is cancelled.
When Tune stops a trial whose run is still going (ASHA, an error), `StopTrialRuns` posts a stop,
which the service applies. Measured on 2 CPUs: trials at {"cpu": 0.01} left 1.98 CPUs and only
one 1-CPU run could start beside two trials; at 0 CPU both could.

On start the actor restores the Tuner from `<runs_dir>/sweeps/<sweep id>` when Tune's experiment
state is there (a new actor after the old one was lost): finished trials are not rerun,
unfinished ones start again and ask for their runs again, which the service finds by trial id."""
from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from service.core.errors import readable_error
from service.core.lifecycle import RunStatus
from service.domain.sweep_spec import SweepSpec, corner_values, tune_value

log = logging.getLogger(__name__)

TRIAL_RESOURCES = {"cpu": 0, "memory": 1 << 20}
POLL_S = 2.0


class Mailbox:
    """What Tune and the service tell each other about one sweep, behind one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.wants: dict[str, dict[str, Any]] = {}  # trial id -> point, until the service assigns a run
        self.runs: dict[str, dict[str, Any]] = {}  # trial id -> {run_id, status, error, total_steps, values}
        self.refused: dict[str, str] = {}  # trial id -> why it gets no run
        self.stops: dict[str, str] = {}  # trial id -> why its run must stop, until the service confirms

    def take_news(self, news: dict[str, Any]) -> None:
        with self.lock:
            for trial_id, run in (news.get("runs") or {}).items():
                self.runs[trial_id] = run
                self.wants.pop(trial_id, None)
            for trial_id, why in (news.get("refused") or {}).items():
                self.refused[trial_id] = why
                self.wants.pop(trial_id, None)
            for trial_id in news.get("stops_done") or ():
                self.stops.pop(trial_id, None)


# ---------------------------------------------------------------- the trial (a Tune function)
def watch_trial(config: dict[str, Any], job: dict[str, Any]) -> None:

    trial_id = tune.get_context().get_trial_id()
    actor = ray.get_actor(job["actor_name"], namespace=job["namespace"])
    ray.get(actor.request_run.remote(trial_id, dict(config)))
    spec, reported = job["spec"], -1
    while True:
        news = ray.get(actor.trial_news.remote(trial_id))
        if news.get("refused"):
            raise RuntimeError(f"trial {trial_id} gets no run: {news['refused']}")
        run = news.get("run")
        if run is not None:
            for step, value in run["values"]:
                if step > reported:
                    tune.report({spec["metric"]: value, "train_step": step, "run_id": run["run_id"]})
                    reported = step
            status = RunStatus(run["status"])
            if status is RunStatus.SUCCEEDED:
                if reported < run["total_steps"]:
                    raise RuntimeError(f"run {run['run_id']} succeeded without a final {spec['metric']} at T={spec['num_steps']}")
                return
            if status in (RunStatus.FAILED, RunStatus.CANCELLED):
                raise RuntimeError(f"run {run['run_id']} {status.value}" + (f": {run['error']}" if run.get("error") else ""))
        time.sleep(POLL_S)


def make_trainable(job: dict[str, Any]):

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
    error in the trial itself): post a stop for its run, with the reason, to the sweep's actor (by
    name: callbacks are pickled with the Tuner's state, for restore). A trial that returned
    normally has a terminal run, so the stop is a no-op for it."""

    def __init__(self, actor_name: str, namespace: str, metric: str, scheduler: str):
        self.actor_name, self.namespace, self.metric, self.scheduler = actor_name, namespace, metric, scheduler

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        where = f" at train_step {last['train_step']} ({self.metric}={last.get(self.metric)})" if "train_step" in last else ""
        self._stop(trial.trial_id, f"stopped early by the sweep's {self.scheduler} scheduler{where}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._stop(trial.trial_id, f"its sweep trial {trial.trial_id} failed")

    def _stop(self, trial_id: str, reason: str) -> None:
        try:
            ray.get(ray.get_actor(self.actor_name, namespace=self.namespace).post_stop.remote(trial_id, reason), timeout=30)
        except Exception:  # noqa: BLE001 - a callback must not take the Tune loop down
            log.exception("posting the stop of trial %s failed", trial_id)


# ---------------------------------------------------------------- the Tuner
def build_tuner(job: dict[str, Any]):
    """A new Tuner, or the restored one when Tune's experiment state exists (a lost actor)."""

    path = os.path.join(job["storage_path"], job["sweep_id"])
    trainable = make_trainable(job)
    if tune.Tuner.can_restore(path):
        log.info("restoring sweep %s from %s", job["sweep_id"], path)
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False, restart_errored=False)
    spec = SweepSpec.model_validate(job["spec"])
    space = {}
    for key, dom in spec.search_space.items():
        values = [tune_value(key, v) for v in (dom.grid or dom.choice or [])]
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
            callbacks=[StopTrialRuns(job["actor_name"], job["namespace"], spec.metric, spec.scheduler)],
        ),
    )


def _search_alg(spec: SweepSpec, max_concurrent: int):
    if spec.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch  # imports optuna: only for the sweeps that use it

        return OptunaSearch(seed=spec.search_seed)
    # TuneConfig.max_concurrent_trials is ignored (with a warning) for a generator passed in: say it here
    return BasicVariantGenerator(max_concurrent=max_concurrent, random_state=spec.search_seed)


def _scheduler(spec: SweepSpec):
    if spec.scheduler != "asha":
        return None

    steps = spec.search_space.get("steps")
    max_t = max(corner_values("steps", steps)) if steps else spec.base.training.steps
    return ASHAScheduler(time_attr="train_step", max_t=max_t, grace_period=min(spec.base.evaluation.at_steps),
                         reduction_factor=2)


@ray.remote(num_cpus=0)
class SweepWorker:
    """One per sweep, detached and named `snrlab-sweep-<id>`; the service syncs with it."""

    def __init__(self, job: dict[str, Any]):
        self.job = job  # a SweepJob's fields, and the actor's own name and namespace (for its trials)
        self.state: dict[str, Any] = {"phase": "starting", "error": None}
        self.box = Mailbox()
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> bool:
        with self._lock:
            if self.thread is None:  # idempotent: the same name never runs two Tuners
                self.thread = threading.Thread(target=self._main, name="snrlab-sweep", daemon=True)
                self.thread.start()
        return True

    def _main(self) -> None:
        try:
            tuner = build_tuner(self.job)
            self.state["phase"] = "running"
            grid = tuner.fit()
            self.state.update(phase="finished", trials=len(grid))
        except BaseException as e:  # noqa: BLE001 - every failure becomes a readable message
            traceback.print_exc()
            self.state.update(phase="failed", error=readable_error(e))

    # ------------------------------------------------------------ the service's side
    def sync(self, news: dict[str, Any]) -> dict[str, Any]:
        """Take the service's news (runs of trials, refusals, stops applied); give back the phase,
        the trials that want a run and the runs to stop."""
        self.box.take_news(news)
        with self.box.lock:
            return {**self.state, "wants_run": dict(self.box.wants), "stopped": dict(self.box.stops)}

    # ------------------------------------------------------------ the trials' side
    def request_run(self, trial_id: str, point: dict[str, Any]) -> None:
        with self.box.lock:
            if trial_id not in self.box.runs and trial_id not in self.box.refused:
                self.box.wants[trial_id] = point

    def post_stop(self, trial_id: str, reason: str) -> None:
        with self.box.lock:
            run = self.box.runs.get(trial_id)
            if run is None or not RunStatus(run["status"]).is_terminal():
                self.box.stops[trial_id] = reason

    def trial_news(self, trial_id: str) -> dict[str, Any]:
        with self.box.lock:
            return {"run": self.box.runs.get(trial_id), "refused": self.box.refused.get(trial_id)}
