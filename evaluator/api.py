"""`evaluate()`: the evaluator's public entry point (what the service calls after training)."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from evaluator.metrics import extractor_for, reference_stats, score, validate_metrics
from evaluator.sampling import SAMPLERS, resolve_variance

log = logging.getLogger(__name__)


def _read_config(checkpoint_dir):
    from trainer.checkpoint import read_config

    return read_config(checkpoint_dir)[0]


def evaluate(checkpoint_dir: str | Path, steps: Sequence[int] = (2, 5, 10, 20, 50, 100),
             samplers: Sequence[str] = ("ddpm",), metrics: Sequence[str] | None = None, num_samples: int = 500,
             seed: int = 0, num_actors: int = 1, num_gpus_per_actor: float = 0, data_dir: str | Path | None = None,
             *, batch_size: int = 64, eta: float = 0.0, variance: str = "auto", spacing: str = "linspace",
             num_ref: int | None = None, ref_split: str = "train", shard_size: int | None = None,
             num_cpus_per_actor: float = 1, ray_address: str | None = None) -> list[dict]:
    """Sample `num_samples` images from the checkpoint's EMA model at each step count T and
    sampler, score them, and return one row per (T, sampler, metric):

        {"T", "sampler", "metric", "value", "num_gen", "extractor", "extractor_fingerprint",
         "seconds", "num_ref", "ref_key", "seed", "eta", "variance", "checkpoint"}

    metrics: "fid" (Inception, clean-fid clean mode), "kid", f"fd_{dataset}" (default; the fast
    classifier Frechet distance), "color_fd", "color_mean_shift". num_actors=0 runs in this
    process; otherwise a Ray actor pool (joining `ray_address`, or the running/started local
    cluster) with num_gpus_per_actor each. Samples are seeded per index, so the values do not
    depend on num_actors or shard_size. Reference statistics come from the checkpoint's dataset,
    split `ref_split` (first `num_ref` images, default all), cached under data_dir/stats/."""
    cfg = _read_config(checkpoint_dir)
    dataset = cfg.dataset.name
    metrics = validate_metrics(metrics or [f"fd_{dataset}"], dataset)
    for s in samplers:
        if s not in SAMPLERS:
            raise ValueError(f"unknown sampler {s!r}; valid samplers: {', '.join(SAMPLERS)}")
    steps = [int(t) for t in steps]
    bad = [t for t in steps if not 1 <= t <= cfg.num_timesteps]
    if bad or not steps:
        raise ValueError(f"steps must be in 1..{cfg.num_timesteps}, got {bad or steps}")
    if num_samples < 2:
        raise ValueError("num_samples must be >= 2 (a covariance needs two samples)")
    variance = resolve_variance(variance, cfg.learn_sigma)
    extractors = sorted({extractor_for(m, dataset) for m in metrics})
    spec = cfg.dataset.model_dump()
    if "inception" in extractors:  # fail before starting anything if the weights are missing
        from evaluator.weights import resolve

        resolve(data_dir)
    if any(e.startswith("fd_") for e in extractors):  # train/cache once, before actors load it
        from evaluator.features import load_or_train_classifier

        load_or_train_classifier(spec, data_dir)

    pool = _make_pool(checkpoint_dir, extractors, num_actors, num_gpus_per_actor, num_cpus_per_actor, data_dir, ray_address)
    try:
        fps = pool.fingerprints()
        from trainer.data import load_dataset

        ref_spec = {**spec, "split": ref_split}
        ref_data = load_dataset(ref_spec)
        refs = {e: reference_stats(ref_spec, e, fps[e], lambda im, e=e: pool.features(im, [e])[e],
                                   data_dir=data_dir, num_ref=num_ref, dataset=ref_data) for e in extractors}
        size = shard_size or math.ceil(num_samples / max(1, num_actors))
        groups = [(t, s) for t in steps for s in samplers]
        jobs = [dict(steps=t, sampler=s, start=lo, count=min(size, num_samples - lo), seed=seed, batch_size=batch_size,
                     eta=eta, variance=variance, spacing=spacing)
                for t, s in groups for lo in range(0, num_samples, size)]
        log.info("evaluate: %d shards over %d (T, sampler) groups, %d actors", len(jobs), len(groups), num_actors)
        results = pool.map_shards(jobs)
    finally:
        pool.shutdown()

    rows = []
    for t, s in groups:
        parts = sorted((r for j, r in zip(jobs, results) if (j["steps"], j["sampler"]) == (t, s)), key=lambda r: r["start"])
        gen_seconds = sum(p["sample_seconds"] + p["feature_seconds"] for p in parts)
        feats = {e: np.concatenate([p["features"][e] for p in parts]) for e in extractors}
        assert all(len(f) == num_samples for f in feats.values())
        for m in metrics:
            e = extractor_for(m, dataset)
            t0 = time.perf_counter()
            value = score(m, feats[e], refs[e], kid_seed=seed)
            rows.append({"T": t, "sampler": s, "metric": m, "value": float(value), "num_gen": num_samples,
                         "extractor": e, "extractor_fingerprint": fps[e],
                         "seconds": round(gen_seconds + time.perf_counter() - t0, 3), "num_ref": refs[e].num,
                         "ref_key": refs[e].key, "seed": seed, "eta": eta if s == "ddim" else None,
                         "variance": variance if s == "ddpm" else None, "checkpoint": str(checkpoint_dir)})
    return rows


class _LocalPool:
    """num_actors=0: the same worker, in this process."""

    def __init__(self, checkpoint_dir, extractors, data_dir, device):
        from evaluator.worker import EvalWorker

        self.worker = EvalWorker(str(checkpoint_dir), extractors, data_dir=data_dir, device=device)

    def fingerprints(self):
        return self.worker.fingerprints()

    def features(self, images, names):
        return self.worker.features(images, names)

    def map_shards(self, jobs):
        return [self.worker.shard(**j) for j in jobs]

    def shutdown(self):
        pass


def _make_pool(checkpoint_dir, extractors, num_actors, num_gpus, num_cpus, data_dir, ray_address):
    if num_actors == 0:
        import torch

        return _LocalPool(checkpoint_dir, extractors, data_dir, "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu")
    import ray

    if not ray.is_initialized():
        from trainer.raysession import init_ray

        init_ray(ray_address)
    from evaluator.actors import ActorPool

    return ActorPool(checkpoint_dir, extractors, num_actors=num_actors, num_gpus=num_gpus, num_cpus=num_cpus,
                     data_dir=data_dir)
