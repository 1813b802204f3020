"""Training throughput: the Ray Train loop (1 worker) against a plain PyTorch loop running the
same engine, model, batch and data, in one process run, printed as a ratio (target >= 0.95).
Startup overhead (train() called -> first step running) is printed separately.

    python benchmarks/train_throughput.py [--preset tiny] [--batch-size 64] [--steps 200] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from trainer.config import TrainConfig
from trainer.engine import build_state, train_step
from trainer.raysession import init_ray
from trainer.metrics_log import read_metrics
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
        first_step_at = records[0]["time"] - records[0]["step"] / records[0]["images_per_s"] * cfg.batch_size
        steady = [r["images_per_s"] for r in records if r["step"] > warmup]
        return statistics.median(steady), first_step_at - called


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
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
    print(f"startup overhead   : {startup:8.1f} s   (train() called -> first step)")


if __name__ == "__main__":
    main()
