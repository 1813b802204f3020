"""How much memory a training run needs, estimated before anything is loaded or built: the
dataset held in memory, the model with its EMA copy, gradients and Adam moments, and the
activations a batch keeps for the backward pass (one forward of the UNet on PyTorch's `meta`
device: shapes only, no memory, no compute). Per worker: every rank holds the whole dataset and
a full model, and its slice of the global batch."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from trainer.config import TrainConfig
from trainer.data import IMAGE_SUFFIXES, DatasetSpec
from trainer.models import build_unet

# (channels, native resolution) as trainer.data loads them.
NATIVE = {"digits": (1, 16), "colors": (3, 16), "cifar10": (3, 32), "folder": (3, 64)}
DIGITS = 1797
BYTES_PER_PARAM = 4 * 5  # float32 weights, EMA weights, gradients, Adam's two moments


@dataclass(frozen=True)
class Footprint:
    data_bytes: int
    model_bytes: int
    activation_bytes: int
    num_images: int
    params: int

    @property
    def total_bytes(self) -> int:
        return self.data_bytes + self.model_bytes + self.activation_bytes


def dataset_size(spec: DatasetSpec) -> tuple[int, int, int]:
    """(images, channels, resolution) of a dataset as trainer.data would load it, without loading it."""
    channels, native = NATIVE[spec.name]
    if spec.name == "digits":
        test = -(-DIGITS // 5)  # every 5th image is held out as "test"
        n = test if spec.split == "test" else DIGITS - test
    elif spec.name == "colors":
        n = spec.num_images or 2048
    elif spec.name == "cifar10":
        n = 10_000 if spec.split == "test" else 50_000
    else:
        root = Path(spec.path).expanduser()
        n = 0
        for p in root.rglob("*") if root.is_dir() else ():
            if p.suffix.lower() in IMAGE_SUFFIXES:
                n += 1
                if spec.num_images and n >= spec.num_images:
                    break
    if spec.num_images and spec.name != "colors":
        n = min(n, spec.num_images)
    return n, channels, spec.resolution or native


def training_footprint(cfg: TrainConfig, *, num_workers: int = 1) -> Footprint:
    """Bytes one worker of a run needs (float32 throughout; bf16 autocast on CUDA needs less)."""
    n, channels, res = dataset_size(cfg.dataset)
    params, per_sample = _model_size(cfg.preset, channels, res, cfg.class_conditional, cfg.learn_sigma)
    per_worker_batch = -(-cfg.batch_size // num_workers)
    return Footprint(data_bytes=n * channels * res * res * 4, model_bytes=params * BYTES_PER_PARAM,
                     activation_bytes=per_sample * 4 * per_worker_batch, num_images=n, params=params)


@lru_cache(maxsize=256)
def _model_size(preset: str, channels: int, res: int, class_conditional: bool, learn_sigma: bool) -> tuple[int, int]:
    """(parameters, activation values one sample keeps for the backward pass) of a UNet, from one
    forward on the meta device (cached: the same model is asked about again and again)."""
    with torch.device("meta"):
        model = build_unet(preset, in_channels=channels, sample_size=res, num_classes=10 if class_conditional else None,
                           learn_sigma=learn_sigma)
    params = sum(p.numel() for p in model.parameters())
    saved = 0

    def count(_module, _inputs, output):
        nonlocal saved
        for o in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(o, torch.Tensor):
                saved += o.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not any(True for _ in m.children())]
    try:
        x = torch.empty(1, channels, res, res, device="meta")
        labels = torch.zeros(1, dtype=torch.long, device="meta") if class_conditional else None
        model(x, torch.zeros(1, dtype=torch.long, device="meta"), class_labels=labels)
    finally:
        for h in hooks:
            h.remove()
    return params, saved


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"
