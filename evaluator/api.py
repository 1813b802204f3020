"""The evaluator's public entry points: `evaluate()` (sample and score a checkpoint; what the
service calls after training) and `rescore()` (score stored features again, no sampling)."""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Sequence

from evaluator.config import EvalConfig
from evaluator.floors import floors
from evaluator.metrics import extractor_for, reference_stats, resolve_metric, score, validate_metrics
from evaluator.sampling import resolve_variance
from evaluator.worker import concat_outputs

log = logging.getLogger(__name__)


def evaluate(checkpoint_dir: str | Path, cfg: EvalConfig, *, num_actors: int = 1, num_gpus_per_actor: float = 0,
             num_cpus_per_actor: float = 1, data_dir: str | Path | None = None, ray_address: str | None = None,
             out_dir: str | Path | None = None) -> list[dict]:
    """Sample `cfg.num_samples` images from the checkpoint's EMA model at each step count T and
    sampler, score them with `cfg.metrics`, and return one row per (T, sampler, metric) (keys in
    `ROW_KEYS`, see docs/CONTRACTS.md). With `out_dir`, each (T, sampler, extractor)'s outputs are
    kept in out_dir/features/ (evaluator.store) and the row's `features` names the file.

    num_actors=0 runs in this process; otherwise a Ray actor pool (joining `ray_address`, or the
    running/started local cluster) with num_cpus/num_gpus_per_actor each. Samples are seeded per
    index, so values do not depend on num_actors or cfg.shard_size. Reference statistics come from
    the checkpoint's dataset, split `cfg.ref_split` (first `cfg.num_ref` images, default all),
    cached under data_dir/stats/; floors (evaluator.floors) under data_dir/floors/."""
    if not isinstance(cfg, EvalConfig):
        raise TypeError(f"cfg must be an EvalConfig, got {type(cfg).__name__} (EvalConfig.model_validate(dict) builds one)")
    train_cfg, checkpoint_step = _read_config(checkpoint_dir)
    dataset = train_cfg.dataset.name
    metrics = validate_metrics(cfg.metrics, dataset)
    bad = [t for t in cfg.steps if t > train_cfg.num_timesteps]
    if bad:
        raise ValueError(f"steps must be in 1..{train_cfg.num_timesteps}, got {bad}")
    need = max(resolve_metric(m, dataset)[0].min_samples for m in metrics)
    if cfg.num_samples < need:
        raise ValueError(f"num_samples {cfg.num_samples} is too few for {', '.join(metrics)} (needs >= {need})")
    variance = resolve_variance(cfg.variance, train_cfg.learn_sigma)
    extractors = sorted({extractor_for(m, dataset) for m in metrics})
    spec = train_cfg.dataset.model_dump()
    _check_extractors(extractors, spec, data_dir)

    pool = _make_pool(checkpoint_dir, extractors, num_actors, num_gpus_per_actor, num_cpus_per_actor, data_dir, ray_address)
    try:
        fps = pool.fingerprints()
        from trainer.data import load_dataset

        ref_spec = {**spec, "split": cfg.ref_split}
        ref_data = load_dataset(ref_spec)
        refs = {e: reference_stats(ref_spec, e, fps[e], lambda im, e=e: pool.features(im, [e])[e]["feats"],
                                   data_dir=data_dir, num_ref=cfg.num_ref, dataset=ref_data) for e in extractors}
        size = cfg.shard_size or math.ceil(cfg.num_samples / max(1, num_actors))
        groups = [(t, s) for t in cfg.steps for s in cfg.samplers]
        jobs = [dict(steps=t, sampler=s, start=lo, count=min(size, cfg.num_samples - lo), seed=cfg.seed,
                     batch_size=cfg.batch_size, eta=cfg.eta, variance=variance, spacing=cfg.spacing)
                for t, s in groups for lo in range(0, cfg.num_samples, size)]
        log.info("evaluate: %d shards over %d (T, sampler) groups, %d actors", len(jobs), len(groups), num_actors)
        results = pool.map_shards(jobs)
        floor = floors(metrics, cfg.num_samples, refs, dataset=dataset, ref_spec=ref_spec, ref_data=ref_data,
                       num_ref=cfg.num_ref, compute_outputs=pool.features, data_dir=data_dir)
    finally:
        pool.shutdown()

    rows = []
    for t, s in groups:
        parts = sorted((r for j, r in zip(jobs, results) if (j["steps"], j["sampler"]) == (t, s)), key=lambda r: r["start"])
        gen_seconds = sum(p["sample_seconds"] + p["feature_seconds"] for p in parts)
        outputs = {e: concat_outputs([p["features"][e] for p in parts]) for e in extractors}
        provs = {}
        for e in extractors:
            assert len(outputs[e]["feats"]) == cfg.num_samples
            provs[e] = _provenance(checkpoint_dir, checkpoint_step, spec, cfg, t, s, variance, e, fps[e], refs[e])
            if out_dir is not None:
                provs[e]["features"] = _store(out_dir, provs[e], outputs[e], gen_seconds)
        for m in metrics:
            e = extractor_for(m, dataset)
            t0 = time.perf_counter()
            value = score(m, outputs[e], refs[e], seed=cfg.seed)
            rows.append(_row(provs[e], m, value, floor[m], gen_seconds + time.perf_counter() - t0))
    return rows


ROW_KEYS = ("T", "sampler", "metric", "value", "floor", "floor_source", "num_gen", "extractor", "extractor_fingerprint",
            "seconds", "num_ref", "ref_key", "seed", "eta", "variance", "checkpoint", "checkpoint_step", "features")


def _row(prov: dict, metric: str, value: float, floor: tuple[float | None, str], seconds: float) -> dict:
    return {"T": prov["T"], "sampler": prov["sampler"], "metric": metric, "value": float(value),
            "floor": floor[0], "floor_source": floor[1], "num_gen": prov["num_gen"], "extractor": prov["extractor"],
            "extractor_fingerprint": prov["extractor_fingerprint"], "seconds": round(seconds, 3),
            "num_ref": prov["ref_num"], "ref_key": prov["ref_key"], "seed": prov["seed"], "eta": prov["eta"],
            "variance": prov["variance"], "checkpoint": prov["checkpoint"], "checkpoint_step": prov["checkpoint_step"],
            "features": prov.get("features")}


def _provenance(checkpoint_dir, checkpoint_step, spec, cfg: EvalConfig, t, sampler, variance, extractor, fp, ref) -> dict:
    return {"checkpoint": str(checkpoint_dir), "checkpoint_step": checkpoint_step, "dataset": spec, "sampler": sampler,
            "T": t, "num_gen": cfg.num_samples, "seed": cfg.seed, "eta": cfg.eta if sampler == "ddim" else None,
            "variance": variance if sampler == "ddpm" else None, "spacing": cfg.spacing, "extractor": extractor,
            "extractor_fingerprint": fp, "ref_key": ref.key, "num_ref": cfg.num_ref, "ref_num": ref.num,
            "ref_split": cfg.ref_split}


def _store(out_dir, prov: dict, outputs: dict, gen_seconds: float) -> str:
    from evaluator.store import write_features

    return write_features(out_dir, {**prov, "gen_seconds": round(gen_seconds, 3)}, outputs)


def rescore(features_dir: str | Path, metrics: Sequence[str], *, data_dir: str | Path | None = None) -> list[dict]:
    """Compute `metrics` again from the features `evaluate(..., out_dir=...)` stored in
    `features_dir` (= out_dir/features), without sampling: one row per stored (checkpoint, T,
    sampler) and metric, in evaluate()'s row format (`seconds` is the scoring time). A metric can
    use any features stored by its extractor (fid, fid_inf, kid: Inception; fd_<dataset>,
    fd_<dataset>_inf, cs_<dataset>: the classifier's embedding and logits; color_*: colour).
    ValueError when a stored cell lacks a metric's extractor, or when the extractor's
    fingerprint or the reference statistics' key no longer match the stored ones."""
    from evaluator.store import load_outputs, read_sidecars

    sides = read_sidecars(features_dir)
    if not sides:
        raise ValueError(f"no stored features in {str(features_dir)!r}")
    metrics = list(metrics)
    if not metrics:
        raise ValueError("no metrics requested")
    cells: dict[tuple, dict[str, dict]] = {}
    for side in sides:  # one cell: the extractors' files of one (checkpoint, T, sampler, ...) evaluation
        key = (side["checkpoint_step"], side["checkpoint"], side["T"], side["sampler"],
               json.dumps([side[k] for k in ("num_gen", "seed", "eta", "variance", "spacing", "dataset", "ref_split", "num_ref")],
                          sort_keys=True))
        cells.setdefault(key, {})[side["extractor"]] = side
    built: dict[tuple, tuple] = {}
    rows = []
    for key in sorted(cells):
        cell = cells[key]
        first = next(iter(cell.values()))
        dataset = first["dataset"]["name"]
        validate_metrics(metrics, dataset)
        for m in metrics:
            if extractor_for(m, dataset) not in cell:
                raise ValueError(f"no stored {extractor_for(m, dataset)} features (needed by {m}) for {first['checkpoint']} "
                                 f"T={first['T']} {first['sampler']}; stored: {', '.join(sorted(cell))}")
        needed = sorted({extractor_for(m, dataset) for m in metrics})
        checked = {e: _checked_reference(cell[e], data_dir, built) for e in needed}
        ref_spec, ref_data = checked[needed[0]][2:]
        floor = floors(metrics, first["num_gen"], {e: c[1] for e, c in checked.items()}, dataset=dataset,
                       ref_spec=ref_spec, ref_data=ref_data, num_ref=first["num_ref"], data_dir=data_dir,
                       compute_outputs=lambda im, names: {n: checked[n][0].outputs(im) for n in names})
        outputs = {e: load_outputs(cell[e]) for e in needed}
        for m in metrics:
            e = extractor_for(m, dataset)
            t0 = time.perf_counter()
            value = score(m, outputs[e], checked[e][1], seed=cell[e]["seed"])
            prov = {**cell[e], "features": f"{Path(features_dir).name}/{cell[e]['features']}"}
            rows.append(_row(prov, m, value, floor[m], time.perf_counter() - t0))
    return rows


def _checked_reference(side: dict, data_dir, cache: dict):
    """(extractor, RefStats, ref spec, ref dataset) for a sidecar, built once per (extractor,
    dataset, reference); ValueError when the stored fingerprint or reference key is stale."""
    from trainer.data import load_dataset

    from evaluator.worker import build_extractor

    key = (side["extractor"], json.dumps(side["dataset"], sort_keys=True), side["ref_split"], side["num_ref"])
    if key not in cache:
        extractor = build_extractor(side["extractor"], dataset_spec=side["dataset"], data_dir=data_dir)
        if extractor.fingerprint != side["extractor_fingerprint"]:
            raise ValueError(f"{side['features']}: extractor {side['extractor']} fingerprint mismatch: stored "
                             f"{side['extractor_fingerprint']}, current {extractor.fingerprint}")
        ref_spec = {**side["dataset"], "split": side["ref_split"]}
        ref_data = load_dataset(ref_spec)
        ref = reference_stats(ref_spec, side["extractor"], extractor.fingerprint, extractor, data_dir=data_dir,
                              num_ref=side["num_ref"], dataset=ref_data)
        cache[key] = (extractor, ref, ref_spec, ref_data)
    extractor, ref, ref_spec, ref_data = cache[key]
    if ref.key != side["ref_key"]:
        raise ValueError(f"{side['features']}: reference key mismatch: stored {side['ref_key']}, current {ref.key} "
                         f"({side['extractor']} on {ref_spec['name']} {ref_spec['split']}, num_ref={side['num_ref']})")
    return extractor, ref, ref_spec, ref_data


def _read_config(checkpoint_dir):
    from trainer.checkpoint import read_config

    return read_config(checkpoint_dir)


def _check_extractors(extractors: list[str], spec: dict, data_dir) -> None:
    """Fail before starting anything if the Inception weights are missing; train/cache the
    classifier once, before the actors load it."""
    if "inception" in extractors:
        from evaluator.weights import resolve

        resolve(data_dir)
    if any(e.startswith("fd_") for e in extractors):
        from evaluator.features import load_or_train_classifier

        load_or_train_classifier(spec, data_dir)


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
