"""The Ray side of a run: one detached actor per attempt that trains, then evaluates.

The actor is a thin shell: `work()` is plain Python (train_fn, evaluate_fn from the job) run
in a thread so `poll()` answers while it works. Completion is also written to disk
(train_done.json, results.json, atomically) so that a restarted service, or a retry after an
evaluation failure, never trains or evaluates twice."""
from __future__ import annotations

import json
import os
import threading
import traceback
from pathlib import Path
from typing import Any

import ray

from service import paths
from service.executor import load_callable, readable_error


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, default=str))
    os.replace(tmp, path)


def work(job: dict[str, Any], state: dict[str, Any]) -> None:
    """Train (resuming from the latest checkpoint) then evaluate; updates `state` in place."""
    runs_dir, run_id = Path(job["storage_path"]), job["run_id"]
    run_dir = paths.run_dir(runs_dir, run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    results_path = paths.results_file(runs_dir, run_id)
    if results_path.exists():
        done = json.loads(results_path.read_text())
        state.update(phase="succeeded", results=done["results"], checkpoint_path=done.get("checkpoint_path"))
        return
    done_path = paths.train_done_file(runs_dir, run_id)
    if done_path.exists():
        checkpoint = json.loads(done_path.read_text())["checkpoint_path"]
    else:
        state["phase"] = "training"
        train = load_callable(job["train_fn"])
        res = job["resources"]
        result = train(
            _train_config(job),
            storage_path=str(runs_dir),
            name=run_id,
            num_workers=int(res.get("workers_per_run", 1)),
            use_gpu=float(res.get("gpus_per_worker", 0)) > 0,
            max_failures=0,
        )
        checkpoint = _checkpoint_path(result)
        _write_json_atomic(done_path, {"checkpoint_path": checkpoint})
    state.update(phase="evaluating", checkpoint_path=checkpoint)
    evaluate = load_callable(job["evaluate_fn"])
    results = evaluate(
        checkpoint=checkpoint, evaluation=job["evaluation"], config=job["config"],
        out_dir=str(paths.artifacts_dir(runs_dir, run_id)), resources=job["resources"], data_dir=job.get("data_dir"),
    )
    _write_json_atomic(results_path, {"results": results, "checkpoint_path": checkpoint})
    state.update(phase="succeeded", results=results)


def _train_config(job: dict[str, Any]) -> Any:
    if job["train_fn"] == "trainer.run:train":
        from trainer.config import TrainConfig

        return TrainConfig(**job["config"])
    return job["config"]


def _checkpoint_path(result: Any) -> str | None:
    for attr in ("checkpoint_path", "checkpoint"):
        value = getattr(result, attr, None) if not isinstance(result, dict) else result.get(attr)
        if value is not None:
            return str(getattr(value, "path", value))
    return None


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
        try:
            work(self.job, self.state)
        except BaseException as e:  # noqa: BLE001 - every failure becomes a readable message
            traceback.print_exc()  # full trace to the worker log, not to the API
            self.state.update(phase="failed", error=readable_error(e))

    def poll(self) -> dict[str, Any]:
        return dict(self.state)
