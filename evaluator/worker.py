"""The evaluation worker: loads the EMA model and the feature extractors once, then turns seeded
shards of sample indices into features (never returns images). Plain Python; evaluator/actors.py
wraps it as a Ray actor, and `num_actors=0` runs it in the driver."""
from __future__ import annotations

import time

import numpy as np
import torch

from evaluator.sampling import load_denoiser, sample, to_uint8


def build_extractor(name: str, *, dataset_spec: dict, data_dir=None, device="cpu"):
    if name == "inception":
        from evaluator.features import InceptionExtractor

        return InceptionExtractor(device, data_dir=data_dir)
    if name == "color":
        from evaluator.features import ColorExtractor

        return ColorExtractor()
    if name.startswith("fd_"):
        from evaluator.features import load_or_train_classifier

        return load_or_train_classifier(dataset_spec, data_dir, device)
    raise ValueError(f"unknown extractor {name!r}")


def concat_outputs(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join one extractor's outputs of consecutive shards, key by key."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class EvalWorker:
    def __init__(self, checkpoint_dir: str, extractors: list[str], *, data_dir=None, device: str = "cpu",
                 num_threads: int | None = None):
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device)
        self.model, self.cfg = load_denoiser(checkpoint_dir, device=self.device)
        spec = self.cfg.dataset.model_dump()
        self.extractors = {n: build_extractor(n, dataset_spec=spec, data_dir=data_dir, device=self.device) for n in extractors}

    def fingerprints(self) -> dict[str, str]:
        return {n: e.fingerprint for n, e in self.extractors.items()}

    def features(self, images_uint8: torch.Tensor, names: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        """{extractor: its outputs ({"feats", maybe "logits"})} for a batch of uint8 images."""
        return {n: self.extractors[n].outputs(images_uint8) for n in (names or self.extractors)}

    def shard(self, steps: int, sampler: str, start: int, count: int, *, seed: int = 0, batch_size: int = 64,
              eta: float = 0.0, variance: str = "auto", spacing: str = "linspace") -> dict:
        """Extractor outputs of samples start..start+count-1 at `steps` steps, plus timings."""
        t0 = time.perf_counter()
        images, _ = sample(self.model, steps, sampler=sampler, num=count, start=start, seed=seed,
                           batch_size=batch_size, eta=eta, variance=variance, spacing=spacing)
        t1 = time.perf_counter()
        feats = self.features(to_uint8(images))
        return {"start": start, "count": count, "features": feats,
                "sample_seconds": t1 - t0, "feature_seconds": time.perf_counter() - t1}
