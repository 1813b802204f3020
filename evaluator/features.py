"""Feature extractors. Each maps uint8 images [N, C, H, W] to features [N, D] (numpy) when
called, and `outputs(images)` gives everything it can store: {"feats": [N, D]} plus, for the
classifier, {"logits": [N, K]} (what cs_<dataset> reads).

- `inception`: clean-fid's `mode="clean"` pipeline in memory: per image PIL bicubic resize of the
  uint8 pixels to 299x299 in float (cleanfid.resize.build_resizer("clean")), then Inception pool3
  (evaluator.weights). Grey images are replicated to RGB as PIL's convert("RGB") does when
  clean-fid reads a PNG.
- `fd_<dataset>`: the penultimate layer of a small CNN classifier trained once on the dataset
  (LeNet-FID style), cached under $SNRLAB_DATA_DIR/extractors/ with its accuracies recorded.
- `color`: per-image mean RGB in [0, 1] (the paper's colour shift, Fig. 1).
"""
from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from evaluator.paths import sub_dir

CLASSIFIER_VERSION = 2  # bump when the architecture or training recipe changes


def as_rgb_hwc(images: torch.Tensor) -> np.ndarray:
    """uint8 [N, C, H, W] -> uint8 [N, H, W, 3] (grey replicated, like PIL convert('RGB'))."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {images.shape[1]}")
    return images.permute(0, 2, 3, 1).contiguous().numpy()


class InceptionExtractor:
    name = "inception"
    mode = "clean"
    dim = 2048

    def __init__(self, device: str | torch.device = "cpu", data_dir=None, batch_size: int = 32):
        from cleanfid.resize import build_resizer

        from evaluator.weights import load_inception

        self.device = torch.device(device)
        self.model, self.weights = load_inception(self.device, data_dir)
        self.fingerprint = _file_sha1(str(self.weights.path))[:16]
        self.batch_size = batch_size
        self._resize = build_resizer(self.mode)

    def resized(self, images: torch.Tensor) -> torch.Tensor:
        """clean-mode preprocessing: float32 [N, 3, 299, 299] in [0, 255]."""
        return torch.stack([torch.from_numpy(self._resize(im).transpose(2, 0, 1).copy()) for im in as_rgb_hwc(images)])

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        from cleanfid.fid import get_batch_features

        out = [get_batch_features(self.resized(images[i : i + self.batch_size]), self.model, self.device)
               for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)  # float32, as clean-fid

    def outputs(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        return {"feats": self(images)}  # pool3 only: the offline file has no logits layer


class ColorExtractor:
    name = "color"
    fingerprint = "mean-rgb-v1"

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        # per-image mean colour in [0, 1]; grey images give 1-d features
        return images.double().mean(dim=(2, 3)).numpy() / 255.0

    def outputs(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        return {"feats": self(images)}


@lru_cache(maxsize=8)
def _file_sha1(path: str) -> str:
    from evaluator.weights import sha1_of

    return sha1_of(path)


class SmallClassifier(nn.Module):
    """Two conv stages and a 64-d embedding (features = the embedding, before its ReLU)."""

    def __init__(self, channels: int, num_classes: int, dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(64 * 16, dim),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(dim, num_classes))

    def forward(self, x):
        return self.head(self.body(x))


def _to_input(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1


class ClassifierExtractor:
    """`fd_<dataset>` features from a cached classifier."""

    def __init__(self, net: SmallClassifier, meta: dict, device="cpu", batch_size: int = 256):
        self.net, self.meta = net.to(device).eval(), meta
        self.name = f"fd_{meta['dataset']}"
        self.fingerprint = meta["fingerprint"]
        self.device, self.batch_size = torch.device(device), batch_size

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return self.outputs(images)["feats"]

    @torch.inference_mode()
    def outputs(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """The 64-d embedding (before its ReLU) and the class logits."""
        feats, logits = [], []
        for i in range(0, len(images), self.batch_size):
            f = self.net.body(_to_input(images[i : i + self.batch_size]).to(self.device))
            feats.append(f.double().cpu())
            logits.append(self.net.head(f).double().cpu())
        if not feats:
            return {"feats": np.zeros((0, 64)), "logits": np.zeros((0, self.meta["num_classes"]))}
        return {"feats": torch.cat(feats).numpy(), "logits": torch.cat(logits).numpy()}


def classifier_path(dataset_spec, data_dir=None) -> tuple[Path, dict]:
    spec = dict(dataset_spec)
    key = json.dumps({"v": CLASSIFIER_VERSION, **{k: spec.get(k) for k in ("name", "path", "resolution", "num_images", "seed")}},
                     sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return sub_dir("extractors", data_dir) / f"fd_{spec['name']}_{digest}.pt", json.loads(key)


def load_or_train_classifier(dataset_spec: dict, data_dir=None, device="cpu", *, epochs: int = 10,
                             seed: int = 0) -> ClassifierExtractor:
    """The `fd_<dataset>` extractor: trained once on the train split (seeded), evaluated on the
    test split, cached with both accuracies; later calls only load it."""
    path, key = classifier_path(dataset_spec, data_dir)
    if path.is_file():
        return _load_classifier(path, device)
    # one trainer per data dir: processes scoring at once (a study's runs) wait for the first
    # instead of training copies whose results would not be comparable
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            return _load_classifier(path, device)
        return _train_classifier(path, key, dataset_spec, device, epochs=epochs, seed=seed)


def _load_classifier(path: Path, device) -> ClassifierExtractor:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    net = SmallClassifier(blob["meta"]["channels"], blob["meta"]["num_classes"])
    net.load_state_dict(blob["state_dict"])
    return ClassifierExtractor(net, blob["meta"], device)


def _train_classifier(path: Path, key: dict, dataset_spec: dict, device, *, epochs: int, seed: int) -> ClassifierExtractor:
    from trainer.data import load_dataset

    spec = dict(dataset_spec)
    train = load_dataset({**spec, "split": "train"})
    if train.labels is None:
        raise ValueError(f"fd_{train.name} needs a labelled dataset (class subfolders); use fid or the colour metrics")
    try:
        test = load_dataset({**spec, "split": "test"})
    except (FileNotFoundError, ValueError):
        test = train
    t0 = time.time()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SmallClassifier(train.channels, train.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x, y = _to_input(train.uint8()), train.labels
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x), generator=g).split(128):
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.inference_mode():
        acc = lambda ds: float((net(_to_input(ds.uint8())).argmax(1) == ds.labels).float().mean())  # noqa: E731
        meta = {"dataset": train.name, "key": key, "channels": train.channels, "num_classes": train.num_classes,
                "resolution": train.resolution, "train_accuracy": acc(train), "test_accuracy": acc(test),
                "num_train": len(train), "num_test": len(test) if test is not train else 0, "epochs": epochs,
                "train_fingerprint": train.fingerprint, "train_seconds": round(time.time() - t0, 2)}
    # the fingerprint names the weights (and what they were trained on), never the run time
    h = hashlib.sha1(json.dumps({k: v for k, v in meta.items() if k != "train_seconds"}, sort_keys=True).encode())
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    meta["fingerprint"] = h.hexdigest()[:16]
    part = path.with_suffix(f".{time.time_ns()}.part")
    torch.save({"state_dict": net.state_dict(), "meta": meta}, part)
    part.replace(path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return ClassifierExtractor(net, meta, device)
