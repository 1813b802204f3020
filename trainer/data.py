"""Datasets, held in memory as float32 [N, C, H, W] in [-1, 1]. Deterministic given a seed.

- digits:  scikit-learn's bundled 8x8 digits (1797 images, 10 classes), resized to 16x16.
- colors:  procedurally generated RGB shapes whose colours follow a known distribution
           (for colour-shift studies).
- folder:  any image folder, ADM preprocessing (centre crop, resize); class subfolders give labels.
- cifar10: a local copy of the CIFAR-10 python batches (data_batch_1..5, test_batch).
"""
from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

PATH_DATASETS = ("folder", "cifar10")  # read from a path; the others are built in
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


class DatasetSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["digits", "colors", "folder", "cifar10"] = "digits"
    path: str | None = Field(default=None, max_length=4096, description="image folder (folder) or batches folder (cifar10)")
    resolution: int | None = Field(default=None, ge=4, le=1024, description="default: the dataset's own")
    split: Literal["train", "test"] = "train"
    num_images: int | None = Field(default=None, ge=1, le=10_000_000, description="colors: how many to generate; others: cap")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="colors: the generator's seed")

    @model_validator(mode="after")
    def _path_needed(self):
        needs_path = self.name in PATH_DATASETS
        if needs_path and not self.path:
            raise ValueError(f"dataset {self.name!r} needs a 'path'")
        if not needs_path and self.path is not None:
            raise ValueError(f"'path' is not allowed for dataset {self.name!r}")
        return self


@dataclass(frozen=True, eq=False)
class ImageDataset:
    name: str
    images: torch.Tensor  # float32 [N, C, H, W] in [-1, 1]
    labels: torch.Tensor | None  # int64 [N]
    num_classes: int | None

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    def __len__(self) -> int:
        return self.images.shape[0]

    def uint8(self) -> torch.Tensor:
        return ((self.images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)

    @property
    def fingerprint(self) -> str:
        """Content hash of the uint8 pixels and labels: keys caches of reference statistics."""
        h = hashlib.sha1(self.uint8().numpy().tobytes())
        if self.labels is not None:
            h.update(self.labels.numpy().tobytes())
        return h.hexdigest()[:16]


def _resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    if images.shape[-1] == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)


def load_digits(spec: DatasetSpec) -> ImageDataset:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N,1,8,8] in [0,1]
    x = _resize(x, spec.resolution or 16).clamp(0, 1) * 2 - 1
    y = torch.tensor(bunch.target, dtype=torch.int64)
    # scikit-learn ships one split; hold out every 5th image as "test".
    keep = (torch.arange(len(y)) % 5 == 0) if spec.split == "test" else (torch.arange(len(y)) % 5 != 0)
    return ImageDataset("digits", x[keep], y[keep], 10)


# colors: a background and a centred shape; the shape's class picks its hue family.
COLOR_PALETTE = np.array(
    [[0.85, 0.20, 0.15], [0.15, 0.65, 0.25], [0.20, 0.35, 0.85], [0.90, 0.75, 0.15]], dtype=np.float32
)


def load_colors(spec: DatasetSpec) -> ImageDataset:
    """Known colour distribution: class c has shape colour COLOR_PALETTE[c] + N(0, 0.05^2) per
    channel on a grey background of level U(0.1, 0.4); shapes are squares or discs of random size."""
    n, res = spec.num_images or 2048, spec.resolution or 16
    rng = np.random.default_rng(spec.seed + (1_000_003 if spec.split == "test" else 0))
    labels = rng.integers(0, len(COLOR_PALETTE), n)
    colours = np.clip(COLOR_PALETTE[labels] + rng.normal(0, 0.05, (n, 3)), 0, 1).astype(np.float32)
    background = rng.uniform(0.1, 0.4, n).astype(np.float32)
    radius = rng.uniform(0.2, 0.4, n) * res
    disc = rng.random(n) < 0.5
    yy, xx = np.mgrid[0:res, 0:res] + 0.5 - res / 2
    inside = np.where(
        disc[:, None, None],
        (xx**2 + yy**2)[None] <= radius[:, None, None] ** 2,
        np.maximum(abs(xx), abs(yy))[None] <= radius[:, None, None],
    )
    img = np.where(inside[:, None], colours[:, :, None, None], background[:, None, None, None])
    return ImageDataset("colors", torch.from_numpy(img * 2 - 1).float(), torch.from_numpy(labels), len(COLOR_PALETTE))


def _adm_preprocess(image: Image.Image, resolution: int) -> np.ndarray:
    """ADM's center_crop_arr: BOX-downsample while large, BICUBIC to size, then centre crop."""
    image = image.convert("RGB")
    while min(*image.size) >= 2 * resolution:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = resolution / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - resolution) // 2, (arr.shape[1] - resolution) // 2
    return arr[top : top + resolution, left : left + resolution]


def _folder_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {str(root)!r} does not exist or is not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"dataset folder {str(root)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def load_folder(spec: DatasetSpec) -> ImageDataset:
    root = Path(spec.path).expanduser()
    files = _folder_files(root)
    if spec.num_images:
        files = files[: spec.num_images]
    res = spec.resolution or 64
    x = np.stack([_adm_preprocess(Image.open(p), res) for p in files])
    images = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1
    classes = sorted({p.parent.relative_to(root).as_posix() for p in files})
    if len(classes) > 1:  # class subfolders give labels
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[p.parent.relative_to(root).as_posix()] for p in files])
        return ImageDataset("folder", images, labels, len(classes))
    return ImageDataset("folder", images, None, None)


def _cifar_files(root: Path, split: str) -> list[str]:
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 python batches missing under {str(root)!r}: {', '.join(missing)} "
            "(extract cifar-10-python.tar.gz there)"
        )
    return names


def load_cifar10(spec: DatasetSpec) -> ImageDataset:
    root = Path(spec.path).expanduser()
    names = _cifar_files(root, spec.split)
    data, labels = [], []
    for n in names:
        with open(root / n, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data.append(batch[b"data"])
        labels += batch[b"labels"]
    x = torch.from_numpy(np.concatenate(data)).view(-1, 3, 32, 32).float() / 127.5 - 1
    return ImageDataset("cifar10", _resize(x, spec.resolution or 32), torch.tensor(labels), 10)


DATASETS = {"digits": load_digits, "colors": load_colors, "folder": load_folder, "cifar10": load_cifar10}


def check_source(spec: DatasetSpec | dict) -> None:
    """Cheap check that a dataset's files are there, before any cluster work starts; raises
    FileNotFoundError / ValueError with the same messages as loading would."""
    spec = spec if isinstance(spec, DatasetSpec) else DatasetSpec.model_validate(spec)
    if spec.name == "folder":
        _folder_files(Path(spec.path).expanduser())
    elif spec.name == "cifar10":
        _cifar_files(Path(spec.path).expanduser(), spec.split)


def load_dataset(spec: DatasetSpec | dict) -> ImageDataset:
    spec = spec if isinstance(spec, DatasetSpec) else DatasetSpec.model_validate(spec)
    ds = DATASETS[spec.name](spec)
    if spec.num_images and spec.name != "colors" and len(ds) > spec.num_images:
        ds = ImageDataset(ds.name, ds.images[: spec.num_images], None if ds.labels is None else ds.labels[: spec.num_images], ds.num_classes)
    return ds
