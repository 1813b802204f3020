"""The floor of a metric at N: what N held-out real images score against the same reference
statistics, i.e. what a perfect model would get at that N (FD is biased upward at small N, so
its floor is well above 0; an `_inf` variant's floor shows how much bias is left).

Held-out images, never among the reference images:
- the dataset's other split (reference split train -> test, and test -> train) when it exists
  and differs from the reference split (digits, colors, cifar10);
- otherwise (an image folder has one split) the reference split's images after the first
  `num_ref` used by the reference statistics.
N of them are drawn without replacement with a fixed seed (FLOOR_SEED, which also seeds the
subsets of kid and the `_inf` variants on them). Fewer than N available: no floor (None, and why).

Cached per (reference statistics, metric, N) under $SNRLAB_DATA_DIR/floors/, as JSON. The cache
key holds the reference statistics' key (dataset spec, pixels, extractor weights, num_ref), not a
hash of the held-out pixels: the other split is taken to change only with the reference one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from evaluator.metrics import RefStats, extractor_for, score
from evaluator.paths import sub_dir

FLOOR_SEED = 0
FLOOR_VERSION = 1  # bump when the held-out rule changes


def held_out_images(ref_spec: dict, ref_data, num_ref: int | None, n: int):
    """(uint8 images [n, C, H, W] or None, where they come from) for the reference split
    `ref_spec` (loaded as `ref_data`, an ImageDataset) whose first `num_ref` images are the reference."""
    from trainer.data import load_dataset

    split = ref_spec.get("split", "train")
    other_split = "test" if split == "train" else "train"
    try:
        other = load_dataset({**ref_spec, "split": other_split})
    except (FileNotFoundError, ValueError):
        other = None
    if other is not None and other.fingerprint != ref_data.fingerprint:
        pool, what = other.uint8(), f"{ref_data.name} {other_split} split"
    else:
        start = min(num_ref or len(ref_data), len(ref_data))
        pool, what = ref_data.uint8()[start:], f"{ref_data.name} {split} split after the {start} reference images"
    if len(pool) < n:
        return None, f"unavailable: {len(pool)} held-out images ({what}) < num_gen {n}"
    idx = np.sort(np.random.default_rng(FLOOR_SEED).choice(len(pool), n, replace=False))
    return pool[idx], f"{what}: {n} of {len(pool)} images (seed {FLOOR_SEED})"


def floor_path(ref: RefStats, metric: str, n: int, data_dir=None) -> Path:
    stem = ref.path.stem if ref.path is not None else ref.key
    return sub_dir("floors", data_dir) / f"{stem}_{metric}_n{n}.json"


def floors(metrics: list[str], n: int, refs: dict[str, RefStats], *, dataset: str, ref_spec: dict, ref_data,
           num_ref: int | None, compute_outputs: Callable[[object, list[str]], dict], data_dir=None
           ) -> dict[str, tuple[float | None, str]]:
    """{metric: (floor value or None, held-out source)} at N = n. Cached values are read; on a
    miss the held-out images go through `compute_outputs(uint8 images, extractor names)` (the
    actor pool's, or local extractors') once for all missing metrics, then each is cached."""
    out, missing = {}, []
    for m in metrics:
        path = floor_path(refs[extractor_for(m, dataset)], m, n, data_dir)
        if path.is_file():
            blob = json.loads(path.read_text())
            if blob.get("version") == FLOOR_VERSION:
                out[m] = (blob["value"], blob["source"])
                continue
        missing.append(m)
    if not missing:
        return out
    images, source = held_out_images(ref_spec, ref_data, num_ref, n)
    if images is None:
        return {**out, **{m: (None, source) for m in missing}}
    needed = sorted({extractor_for(m, dataset) for m in missing})
    outputs = compute_outputs(images, needed)
    for m in missing:
        ref = refs[extractor_for(m, dataset)]
        value = score(m, outputs[extractor_for(m, dataset)], ref, seed=FLOOR_SEED)
        path = floor_path(ref, m, n, data_dir)
        part = path.with_name(f"{path.stem}.{os.getpid()}.part")
        part.write_text(json.dumps({"metric": m, "num": n, "value": value, "source": source, "ref_key": ref.key,
                                    "seed": FLOOR_SEED, "version": FLOOR_VERSION}, indent=2))
        part.replace(path)
        out[m] = (value, source)
    return out
