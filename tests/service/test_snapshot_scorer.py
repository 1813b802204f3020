"""The run actor's work (service.ray_runner.work) with intermediate checkpoints, without Ray:
a stand-in trainer writes real snapshots of a tiny UNet; the real evaluator scores them in-process."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from evaluator.config import EvalConfig
from service.domain.jobs import RunJob
from service.runtime import run_actor as ray_runner
from service.runtime.executor import Job
from trainer.checkpoint import save_snapshot
from trainer.config import TrainConfig
from trainer.models import build_unet

CALLS: list[str] = []


def fake_train(cfg: TrainConfig, *, storage_path: str, name: str, **_) -> dict:
    """Writes the snapshots of cfg.snapshot_steps a little apart (training goes on meanwhile),
    then the final checkpoint; records that it ran."""
    CALLS.append(name)
    run_dir = Path(storage_path) / name
    ema = build_unet(cfg.preset, in_channels=1, sample_size=16)
    for step in cfg.snapshot_steps:
        save_snapshot(run_dir, cfg=cfg, ema=ema, step=step)
        time.sleep(0.5)
    final = save_snapshot(run_dir / "final", cfg=cfg, ema=ema, step=cfg.steps)
    return {"checkpoint_path": str(final)}


def local_evaluate(checkpoint, evaluation, **kw):
    """The service's evaluation, in this process (no Ray actors for the final checkpoint either)."""
    from service.runtime.evaluation import evaluate_run

    return evaluate_run(checkpoint, evaluation, **{**kw, "num_actors": 0})


def _job(tmp_path: Path, data_dir: Path) -> dict:
    """An executor Job as it travels to Ray (its RunJob as JSON); no snapshot steps given: the
    RunJob takes them from evaluation.at_steps."""
    run = RunJob(train=TrainConfig(preset="tiny", steps=40),
                 evaluation=EvalConfig(steps=[2], num_samples=8, metrics=["fd_digits"], analyses=False, at_steps=[10, 20]))
    assert run.train.snapshot_steps == [10, 20]
    job = Job(run_id="run_scorer", attempt=1, run=run, storage_path=str(tmp_path / "runs"), data_dir=str(data_dir),
              train_fn=f"{__name__}:fake_train", evaluate_fn=f"{__name__}:local_evaluate")
    return json.loads(json.dumps(job.to_dict()))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def test_snapshots_are_scored_with_their_step_and_never_twice(tmp_path, data_dir):
    job, state = _job(tmp_path, data_dir), {}
    CALLS.clear()
    seen_partial = []
    watcher = threading.Thread(target=lambda: [seen_partial.append(list(state.get("results") or [])) or time.sleep(0.05)
                                               for _ in range(2000) if state.get("phase") != "succeeded"], daemon=True)
    watcher.start()
    ray_runner.work(job, state)
    assert state["phase"] == "succeeded" and CALLS == ["run_scorer"]
    rows = state["results"]
    assert sorted(r["train_step"] for r in rows) == [10, 20, 40]
    assert all(r["metric"] == "fd_digits" and r["num_steps"] == 2 and r["value"] > 0 for r in rows)
    assert any(p and {r["train_step"] for r in p} <= {10, 20} for p in seen_partial)  # published before the end
    run_dir = tmp_path / "runs" / "run_scorer"
    assert sorted(p.name for p in run_dir.glob("results_step_*.json")) == ["results_step_00000010.json", "results_step_00000020.json"]
    # each checkpoint's generated features are kept beside the artifacts, one file per step
    assert all((run_dir / "artifacts" / r["features"]).is_file() for r in rows)
    assert sorted(r["features"].split("_")[0] for r in rows) == ["features/step00000010", "features/step00000020", "features/step00000040"]
    assert all(r["floor"] is not None and r["checkpoint_step"] == r["train_step"] for r in rows)

    # a retry after the run finished: nothing is trained or scored again
    again = {}
    ray_runner.work(job, again)
    assert again["results"] == rows and CALLS == ["run_scorer"]


def test_a_resumed_attempt_scores_only_missing_snapshots(tmp_path, data_dir):
    job = _job(tmp_path, data_dir)
    run_dir = tmp_path / "runs" / "run_scorer"
    run_dir.mkdir(parents=True)
    kept = [{"train_step": 10, "num_steps": 2, "sampler": "ddpm", "metric": "fd_digits", "value": 123.0}]
    (run_dir / "results_step_00000010.json").write_text(json.dumps({"results": kept}))
    state = {}
    ray_runner.work(job, state)
    by_step = {r["train_step"]: r["value"] for r in state["results"]}
    assert by_step[10] == 123.0 and set(by_step) == {10, 20, 40}
