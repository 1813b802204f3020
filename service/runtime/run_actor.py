"""The Ray side of a run: one detached actor per attempt that trains, then evaluates.

The actor is a thin shell: `work()` is plain Python (train_fn, evaluate_fn from the job) run
in a thread so `poll()` answers while it works. Completion is also written to disk
(train_done.json, results.json, atomically) so that a restarted service, or a retry after an
evaluation failure, never trains or evaluates twice."""
from __future__ import annotations

import json
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import ray
import torch
from ray.exceptions import RayActorError

from service.core.errors import load_callable, readable_error
from service.domain.jobs import RunJob
from service.runtime import paths
from trainer.checkpoint import list_snapshots


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, default=str))
    os.replace(tmp, path)


def work(job: dict[str, Any], state: dict[str, Any]) -> None:
    """Train (resuming from the latest checkpoint) then evaluate; updates `state` in place. `job`
    is an executor Job as it travelled (plain JSON); its RunJob is parsed here, once."""
    run = RunJob.model_validate(job["run"])
    runs_dir, run_id = Path(job["storage_path"]), job["run_id"]
    run_dir = paths.run_dir(runs_dir, run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    results_path = paths.results_file(runs_dir, run_id)
    if results_path.exists():
        done = json.loads(results_path.read_text())
        state.update(phase="succeeded", results=done["results"], checkpoint_path=done.get("checkpoint_path"))
        return
    done_path = paths.train_done_file(runs_dir, run_id)
    evaluate = load_callable(job["evaluate_fn"])
    scorer = SnapshotScorer(run, state, run_dir, evaluate=evaluate, data_dir=job.get("data_dir"))
    if done_path.exists():
        done = json.loads(done_path.read_text())
        checkpoint = done["checkpoint_path"]
        if done.get("usage"):
            state.setdefault("extra", {})["usage"] = done["usage"]
    else:
        state["phase"] = "training"
        train = load_callable(job["train_fn"])
        scorer.start()
        try:
            result = train(run.train, storage_path=str(runs_dir), name=run_id, num_workers=run.resources.workers_per_run,
                           use_gpu=run.resources.gpus_per_worker > 0, max_failures=0)
        finally:
            scorer.stop.set()
        checkpoint = _checkpoint_path(result)
        usage = (result.get("usage") if isinstance(result, dict) else getattr(result, "usage", None)) or {}
        state.setdefault("extra", {})["usage"] = usage
        _write_json_atomic(done_path, {"checkpoint_path": checkpoint, "usage": usage})
    state.update(phase="evaluating", checkpoint_path=checkpoint)
    if scorer.is_alive():
        scorer.join()
    else:  # resumed after training: score the snapshots that were not scored yet
        scorer.stop.set()
        scorer.run()
    if scorer.error is not None:
        raise scorer.error
    results = evaluate(checkpoint, run.evaluation, num_actors=run.resources.workers_per_run,
                       num_gpus_per_actor=run.resources.gpus_per_worker, out_dir=str(paths.artifacts_dir(runs_dir, run_id)),
                       data_dir=job.get("data_dir"))
    results = scorer.results + [{**r, "train_step": r.get("train_step", run.train.steps)} for r in results]
    _write_json_atomic(results_path, {"results": results, "checkpoint_path": checkpoint})
    state.update(phase="succeeded", results=results)


class SnapshotScorer(threading.Thread):
    """Evaluates the intermediate snapshots of `evaluation.at_steps` as the trainer writes them,
    while training goes on (in this process: it reserves no Ray resources, so it can never wait
    for the CPUs its own run holds). Each snapshot's rows are kept in results_step_<n>.json, so a
    resumed attempt scores only what is missing; `state["results"]` carries them to the service."""

    def __init__(self, run: RunJob, state: dict[str, Any], run_dir: Path, *, evaluate, data_dir: str | None,
                 interval: float = 2.0):
        super().__init__(name="snrlab-snapshots", daemon=True)
        self.state, self.run_dir, self.interval, self.evaluate, self.data_dir = state, run_dir, interval, evaluate, data_dir
        self.evaluation = run.evaluation.model_copy(update={"analyses": False})
        self.wanted = list(run.evaluation.at_steps)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.done: dict[int, list[dict[str, Any]]] = {}
        for step in self.wanted:
            f = run_dir / f"results_step_{step:08d}.json"
            if f.exists():
                self.done[step] = json.loads(f.read_text())["results"]
        self._publish()

    @property
    def results(self) -> list[dict[str, Any]]:
        return [r for step in sorted(self.done) for r in self.done[step]]

    def _publish(self) -> None:
        if self.done:
            self.state["results"] = self.results

    def run(self) -> None:

        # this actor reserves no CPU: one thread, so scoring beside the run's own training never
        # oversubscribes the node (OpenMP threads stall badly when the cores are all taken)
        torch.set_num_threads(1)
        try:
            while True:
                final = self.stop.is_set()
                snaps = list_snapshots(self.run_dir)
                for step in self.wanted:
                    if step not in self.done and step in snaps:
                        self._score(step, snaps[step])
                if final or len(self.done) == len(self.wanted):
                    return
                self.stop.wait(self.interval)
        except BaseException as e:  # noqa: BLE001 - re-raised by work() after training
            traceback.print_exc()
            self.error = e

    def _score(self, step: int, snapshot: Path) -> None:
        rows = self.evaluate(str(snapshot), self.evaluation, num_actors=0, num_gpus_per_actor=0,
                             out_dir=str(self.run_dir / "artifacts"), data_dir=self.data_dir)
        rows = [{**r, "train_step": step} for r in rows]
        _write_json_atomic(self.run_dir / f"results_step_{step:08d}.json", {"results": rows})
        self.done[step] = rows
        self._publish()


def _checkpoint_path(result: Any) -> str | None:
    for attr in ("checkpoint_path", "checkpoint"):
        value = getattr(result, attr, None) if not isinstance(result, dict) else result.get(attr)
        if value is not None:
            return str(getattr(value, "path", value))
    return None


def _dead_nodes() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if not n.get("Alive")}


def _node_loss(exc: BaseException, dead_before: set[str], wait_s: float = 60.0) -> str | None:
    """A message if `exc` is a Ray actor (a Train worker, an evaluation actor) that died with
    its node during this attempt, else None. An actor death alone is also what a crashing
    process looks like (a real failure), so a node must have died since the attempt began; the
    GCS needs a few missed health checks to say so, hence the wait."""
    if not _actor_died(exc):
        return None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            died = _dead_nodes() - dead_before
        except Exception:  # noqa: BLE001 - the GCS itself is unreachable: not a node loss we can tell
            return None
        if died:
            return f"lost Ray node {', '.join(sorted(died))} mid-run: {readable_error(exc)}"[:1000]
        if time.monotonic() > deadline:
            return None
        time.sleep(1)


def _actor_died(exc: BaseException) -> bool:
    """Is there a RayActorError anywhere in exc's chain (Ray Train wraps it in worker failures
    and health-check errors)?"""

    stack, seen = [exc], set()
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, RayActorError):
            return True
        stack += [e.__cause__, e.__context__, getattr(e, "cause", None), getattr(e, "health_check_failure", None),
                  getattr(e, "controller_failure", None), *(getattr(e, "worker_failures", None) or {}).values()]
    return False


@ray.remote
class RunWorker:
    def __init__(self, job: dict[str, Any]):
        self.job = job
        self.state: dict[str, Any] = {"phase": "starting", "error": None, "results": None, "checkpoint_path": None}
        self.thread: threading.Thread | None = None

    def start(self) -> bool:
        if self.thread is None:  # idempotent: a re-submit of the same name does not start twice
            self.thread = threading.Thread(target=self._main, name="snrlab-run", daemon=True)
            self.thread.start()
        return True

    def _main(self) -> None:
        dead_before = None
        try:
            dead_before = _dead_nodes()
            work(self.job, self.state)
        except BaseException as e:  # noqa: BLE001 - every failure becomes a readable message
            traceback.print_exc()  # full trace to the worker log, not to the API
            lost = _node_loss(e, dead_before) if dead_before is not None else None
            if lost:  # the cluster's fault, not the run's: re-queued without spending an attempt
                self.state.update(phase="lost", error=lost)
            else:
                self.state.update(phase="failed", error=readable_error(e))

    def poll(self) -> dict[str, Any]:
        return dict(self.state)
