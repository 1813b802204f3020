"""The Ray Train boundary: `train_loop_per_worker` (runs on each worker) and `train` (the driver).

A run lives at storage_path/name: Ray's checkpoints (checkpoint_*/, the last K kept), its
checkpoint-manager snapshot, our metrics.jsonl (one JSON line per log point, rank 0) and
result.json once finished. Re-launching with the same name and storage_path resumes from the
latest checkpoint; a worker that dies is restarted from it (FailureConfig)."""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from trainer.checkpoint import load_training_state, save_checkpoint, save_snapshot
from trainer.config import TrainConfig
from trainer.data import check_source
from trainer.engine import MetricsWindow, build_state, train_step
from trainer.metrics_log import METRICS_FILE, read_records

RESULT_FILE = "result.json"


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.model_validate(config["train"])
    run_dir = Path(config["run_dir"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config.get("cpus_per_worker", 1))))
    state = build_state(cfg, device=ray.train.torch.get_device(), rank=rank, world_size=world,
                        wrap=ray.train.torch.prepare_model)
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            start = load_training_state(d, model=state.raw, ema=state.ema, optimizer=state.optimizer, loss=state.loss)
    if rank == 0:
        _append(run_dir, {"event": "start", "step": start, "world_size": world, "time": time.time(),
                          "device": device_label(state.device), "node": ray.get_runtime_context().get_node_id()})
    window, metrics = MetricsWindow(cfg.num_timesteps), {"step": start}
    for step in range(start, cfg.steps):
        _maybe_inject_failure(cfg, step, run_dir, rank)
        window.add(train_step(state, step))
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            metrics = window.flush(done, cfg.batch_size)
            if state.device.type == "cuda":
                metrics["max_mem_gib"] = torch.cuda.max_memory_allocated(state.device) / 2**30
            if rank == 0:
                _append(run_dir, {**metrics, "time": time.time()})
        if done in cfg.snapshot_steps and rank == 0:
            save_snapshot(run_dir, cfg=cfg, ema=state.ema, step=done)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            with tempfile.TemporaryDirectory() as tmp:
                ckpt = None
                if rank == 0:
                    save_checkpoint(tmp, cfg=cfg, model=state.raw, ema=state.ema, optimizer=state.optimizer, step=done,
                                    metrics=metrics, loss_state=state.loss.state_dict())
                    ckpt = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report({**metrics, "step": done}, checkpoint=ckpt)
            window.started = time.perf_counter()  # checkpoint I/O is not training throughput
    if start >= cfg.steps and rank == 0:  # relaunched after the last checkpoint: nothing to do
        ray.train.report({**metrics, "step": start}, checkpoint=checkpoint)


def _start_events(run_dir: Path) -> list[dict]:
    records, _ = read_records(run_dir / METRICS_FILE)
    return [rec for rec in records if rec.get("event") == "start"]


def device_label(device: torch.device) -> str:
    """"cpu" or "cuda:<GPU name>": what the usage record and the attempt-start event report."""
    return f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type


def _append(run_dir: Path, record: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / METRICS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")


def _maybe_inject_failure(cfg: TrainConfig, step: int, run_dir: Path, rank: int) -> None:
    if cfg.fail_at_step is None or step != cfg.fail_at_step or rank != 0:
        return
    marker = run_dir / f".failure_injected_at_{step}"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    os._exit(17)  # a worker process dying mid-run, not a Python exception


@dataclass(frozen=True)
class TrainResult:
    run_dir: str
    checkpoint_path: str
    metrics: dict
    resumed_from_step: int
    usage: dict = field(default_factory=dict)  # see `usage()`: what this training held, and for how long


class _Tail(threading.Thread):
    """Follows metrics.jsonl and hands each new record to a callback (progress bars)."""

    def __init__(self, path: Path, callback: Callable[[dict], None], interval: float = 0.5):
        super().__init__(daemon=True)
        self.path, self.callback, self.interval = path, callback, interval
        self.stop_event, self.offset = threading.Event(), path.stat().st_size if path.exists() else 0

    def run(self):
        while True:
            stopping = self.stop_event.wait(self.interval)
            records, self.offset = read_records(self.path, self.offset)
            for rec in records:
                self.callback(rec)
            if stopping:
                return


def train(
    cfg: TrainConfig,
    *,
    storage_path: str | Path,
    name: str,
    num_workers: int = 1,
    use_gpu: bool = False,
    cpus_per_worker: float = 1,
    max_failures: int = 0,
    on_metrics: Callable[[dict], None] | None = None,
    ray_address: str | None = None,
) -> TrainResult:
    """Train cfg on Ray Train; resumes from the latest checkpoint under storage_path/name."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from trainer.raysession import init_ray

    storage_path = Path(storage_path).expanduser().resolve()
    run_dir = storage_path / name
    result_file = run_dir / RESULT_FILE
    if result_file.exists():
        done = json.loads(result_file.read_text())
        if done["config_hash"] == cfg.config_hash() and Path(done["checkpoint_path"]).is_dir():
            return TrainResult(**{k: done[k] for k in ("run_dir", "checkpoint_path", "metrics", "resumed_from_step")},
                               usage=done.get("usage", {}))
    check_source(cfg.dataset)
    init_ray(ray_address)
    tail = _Tail(run_dir / METRICS_FILE, on_metrics) if on_metrics else None
    if tail:
        tail.start()
    try:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"train": cfg.model_dump(mode="json"), "run_dir": str(run_dir), "cpus_per_worker": cpus_per_worker},
            scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                                   resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}),
            run_config=ray.train.RunConfig(
                name=name,
                storage_path=str(storage_path),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
                failure_config=ray.train.FailureConfig(max_failures=max_failures),
                worker_runtime_env={"env_vars": {"OMP_NUM_THREADS": str(max(1, int(cpus_per_worker)))}},
            ),
        )
        started = time.perf_counter()
        result = trainer.fit()
        wall_s = time.perf_counter() - started
    finally:
        if tail:
            tail.stop_event.set()
            tail.join()
    starts = _start_events(run_dir)  # rank 0 logs one per attempt, so never empty after a fit
    device = starts[-1].get("device") if starts else None
    out = TrainResult(
        run_dir=str(run_dir),
        checkpoint_path=result.checkpoint.path,
        metrics=dict(result.metrics or {}),
        resumed_from_step=starts[-1]["step"] if starts else 0,
        usage=usage(device or ("cuda" if use_gpu else "cpu"), num_workers=num_workers, use_gpu=use_gpu,
                    cpus_per_worker=cpus_per_worker, wall_s=wall_s),
    )
    result_file.write_text(json.dumps({**out.__dict__, "config_hash": cfg.config_hash()}))
    return out


def usage(device: str, *, num_workers: int, use_gpu: bool, cpus_per_worker: float, wall_s: float) -> dict:
    """What one training call held and for how long (this call's fit, Ray startup included; an
    earlier, interrupted attempt of the same run is not in it). On GPUs `device_hours` is
    GPU-hours; on CPUs it is worker-hours (one worker = `cpus_per_worker` CPUs), labelled so."""
    gpus = num_workers if use_gpu else 0
    return {
        "device": device, "num_workers": num_workers, "gpus": gpus, "cpus_per_worker": cpus_per_worker,
        "wall_s": round(wall_s, 3), "device_hours": (gpus or num_workers) * wall_s / 3600,
        "device_hours_unit": "gpu-hours" if gpus else "cpu-worker-hours",
    }
