"""Training throughput: the Ray Train loop (1 worker) against a plain PyTorch loop running the
same engine, model, batch and data, in one process run, printed as a ratio (target >= 0.95).
Startup overhead (train() called -> the training loop starting, the "start" record of the run's
metrics.jsonl) is reported too.

    python benchmarks/train_throughput.py [--preset tiny] [--batch-size 64] [--steps 200] [--threads 2] [--rounds 3] [--json PATH]
    python benchmarks/train_throughput.py --steps 30 --warmup 10 --batch-size 16 --rounds 1  # smallest, to prove it runs

Both sides are measured the same way: images/s of each window of `--warmup` steps after the
warm-up (the Ray run's metrics.jsonl windows; the plain loop times the same windows), median
over windows. The runs alternate, plain first and last (plain, Ray, plain, Ray, ..., plain), and
the ratio is median(Ray runs) / median(plain runs): on this shared 2-core machine two plain runs
a minute apart differ by up to 10%, so one Ray run against one bracket is mostly noise.
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
    """Median images/s over windows of `warmup` steps after the warm-up (as the Ray side logs them)."""
    torch.set_num_threads(threads)
    state = build_state(cfg)
    for step in range(warmup):
        train_step(state, step)
    windows, start = [], time.perf_counter()
    for step in range(warmup, cfg.steps):
        train_step(state, step)
        if (step + 1 - warmup) % warmup == 0:
            now_ = time.perf_counter()
            windows.append(warmup * cfg.batch_size / (now_ - start))
            start = now_
    return statistics.median(windows)


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
    p.add_argument("--rounds", type=int, default=3, help="Ray runs, each followed by a plain run (one plain run first)")
    add_json_arg(p)
    a = p.parse_args()
    started_at = now()
    cfg = TrainConfig(preset=a.preset, batch_size=a.batch_size, steps=a.steps, log_every=a.warmup,
                      checkpoint_every=a.steps, weighting="debias")
    init_ray(num_cpus=a.threads, log_to_driver=False)
    plain, rays, startups = [plain_loop(cfg, a.warmup, a.threads)], [], []
    for _ in range(a.rounds):
        ips, startup = ray_loop(cfg, a.warmup, a.threads)
        rays.append(ips), startups.append(startup)
        plain.append(plain_loop(cfg, a.warmup, a.threads))
    plain_med, ray_med, startup = statistics.median(plain), statistics.median(rays), statistics.median(startups)
    runs = lambda xs: ", ".join(f"{x:.1f}" for x in xs)  # noqa: E731
    print(f"preset={a.preset} batch={a.batch_size} steps={a.steps} threads={a.threads} rounds={a.rounds}")
    print(f"plain PyTorch loop : {plain_med:8.1f} images/s  (median of runs: {runs(plain)})")
    print(f"Ray Train, 1 worker: {ray_med:8.1f} images/s  (median of runs: {runs(rays)})")
    print(f"ratio Ray/plain    : {ray_med / plain_med:8.3f}   (target >= 0.95)")
    print(f"startup overhead   : {startup:8.1f} s   (train() called -> training loop started; median)")
    setup = f"preset {a.preset}, batch {a.batch_size}, {a.steps} steps ({a.warmup} warm-up), {a.threads} threads"
    rows = [
        row("training: Ray Train (1 worker) vs plain PyTorch loop", ray_med, plain_med, unit="images/s",
            target="ratio >= 0.95", notes=f"{setup}; median images/s of {a.warmup}-step windows per run, median over "
            f"runs; alternating plain ({runs(plain)}) and Ray ({runs(rays)})"),
        row("training: trainer.run.train startup (call -> loop start)", startup, unit="s",
            notes=f"local Ray already running; Ray Train controller, worker group, model build; median of {runs(startups)}"),
    ]
    write_json(a.json, "train", rows, started_at=started_at, params=vars(a))


if __name__ == "__main__":
    main()
