"""Training throughput: the Ray Train loop (1 worker) against a plain PyTorch loop running the
same engine, model, batch and data, in one process run, printed as a ratio (target >= 0.95).
Startup overhead (train() called -> the training loop starting, the "start" record of the run's
metrics.jsonl) is reported too.

    python benchmarks/train_throughput.py [--preset tiny] [--batch-size 64] [--steps 200] [--threads 2] [--json PATH]
    python benchmarks/train_throughput.py --steps 30 --warmup 10 --batch-size 16   # smallest, to prove it runs
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from common import add_json_arg, now, row, write_json
from trainer.config import TrainConfig
from trainer.engine import build_state, train_step
from trainer.raysession import init_ray
from trainer.metrics_log import read_metrics, read_records
from trainer.run import train


def plain_loop(cfg: TrainConfig, warmup: int, threads: int) -> float:
    torch.set_num_threads(threads)
    state = build_state(cfg)
    for step in range(warmup):
        train_step(state, step)
    start = time.perf_counter()
    for step in range(warmup, cfg.steps):
        train_step(state, step)
    return (cfg.steps - warmup) * cfg.batch_size / (time.perf_counter() - start)


def ray_loop(cfg: TrainConfig, warmup: int, threads: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as storage:
        called = time.time()
        train(cfg, storage_path=storage, name="bench", cpus_per_worker=threads)
        records = read_metrics(f"{storage}/bench")
        started = [r["time"] for r in read_records(f"{storage}/bench/metrics.jsonl")[0] if r.get("event") == "start"]
        steady = [r["images_per_s"] for r in records if r["step"] > warmup]
        if not steady:
            raise SystemExit(f"no log window after the warm-up: use --steps > 2 * --warmup (got {cfg.steps}, {warmup})")
        return statistics.median(steady), started[0] - called


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    add_json_arg(p)
    a = p.parse_args()
    started_at = now()
    cfg = TrainConfig(preset=a.preset, batch_size=a.batch_size, steps=a.steps, log_every=a.warmup,
                      checkpoint_every=a.steps, weighting="debias")
    init_ray(num_cpus=a.threads, log_to_driver=False)
    plain = plain_loop(cfg, a.warmup, a.threads)
    ray_ips, startup = ray_loop(cfg, a.warmup, a.threads)
    plain_again = plain_loop(cfg, a.warmup, a.threads)  # bracket the Ray run against drift
    plain_mean = (plain + plain_again) / 2
    print(f"preset={a.preset} batch={a.batch_size} steps={a.steps} threads={a.threads}")
    print(f"plain PyTorch loop : {plain_mean:8.1f} images/s  (runs: {plain:.1f}, {plain_again:.1f})")
    print(f"Ray Train, 1 worker: {ray_ips:8.1f} images/s  (steady state, median of windows after warm-up)")
    print(f"ratio Ray/plain    : {ray_ips / plain_mean:8.3f}   (target >= 0.95)")
    print(f"startup overhead   : {startup:8.1f} s   (train() called -> training loop started)")
    setup = f"preset {a.preset}, batch {a.batch_size}, {a.steps} steps ({a.warmup} warm-up), {a.threads} threads"
    rows = [
        row("training: Ray Train (1 worker) vs plain PyTorch loop", ray_ips, plain_mean, unit="images/s",
            target="ratio >= 0.95", notes=f"{setup}; steady state; plain loop run before and after the Ray run "
            f"({plain:.1f}, {plain_again:.1f})"),
        row("training: trainer.run.train startup (call -> loop start)", startup, unit="s",
            notes="local Ray already running; Ray Train controller, worker group, model build"),
    ]
    write_json(a.json, "train", rows, started_at=started_at, params=vars(a))


if __name__ == "__main__":
    main()
