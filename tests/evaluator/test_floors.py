"""Floors: held-out real images never among the reference ones, and one cached value per
(reference statistics, metric, N)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from evaluator.features import ColorExtractor
from evaluator.floors import FLOOR_SEED, floor_path, floors, held_out_images
from evaluator.metrics import fd_from_feats, reference_stats


def _rows(images: torch.Tensor) -> set[bytes]:
    return {im.numpy().tobytes() for im in images}


def test_digits_floor_images_come_from_the_test_split():
    from trainer.data import load_dataset

    spec = {"name": "digits", "resolution": 8, "split": "train"}
    train = load_dataset(spec)
    test = load_dataset({**spec, "split": "test"})
    images, source = held_out_images(spec, train, None, 50)
    assert source == f"digits test split: 50 of 360 images (seed {FLOOR_SEED})"
    assert len(images) == 50 and _rows(images) <= _rows(test.uint8())
    assert not _rows(images) & _rows(train.uint8())  # never a reference image
    again, _ = held_out_images(spec, train, None, 50)
    assert torch.equal(images, again)  # seeded
    # reference statistics on the test split: the held-out images are the train split's
    other, source = held_out_images({**spec, "split": "test"}, test, None, 50)
    assert source.startswith("digits train split") and _rows(other) <= _rows(train.uint8())
    none, why = held_out_images(spec, train, None, 361)
    assert none is None and why == "unavailable: 360 held-out images (digits test split) < num_gen 361"


@pytest.fixture
def folder(tmp_path):
    """Ten flat grey images (one split: the folder loader ignores `split`), image i of level 20 i."""
    for i in range(10):
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(tmp_path / f"{i:02d}.png")
    return {"name": "folder", "path": str(tmp_path), "resolution": 8, "split": "train"}


def test_a_folder_floor_uses_the_images_after_the_reference_ones(folder):
    from trainer.data import load_dataset

    data = load_dataset(folder)
    images, source = held_out_images(folder, data, 6, 3)
    assert source == f"folder train split after the 6 reference images: 3 of 4 images (seed {FLOOR_SEED})"
    assert set(images[:, 0, 0, 0].tolist()) <= {120, 140, 160, 180}  # images 6..9 only
    none, why = held_out_images(folder, data, None, 1)  # every image is a reference image
    assert none is None and why.startswith("unavailable: 0 held-out images")


def test_floors_are_computed_once_and_cached(folder, tmp_path):
    from trainer.data import load_dataset

    data = load_dataset(folder)
    color = ColorExtractor()
    ref = reference_stats(folder, "color", color.fingerprint, color, data_dir=tmp_path / "d", num_ref=6, dataset=data)
    calls = []

    def outputs(images, names):
        calls.append(len(images))
        return {n: color.outputs(images) for n in names}

    kw = dict(dataset="folder", ref_spec=folder, ref_data=data, num_ref=6, data_dir=tmp_path / "d")
    got = floors(["color_fd", "color_mean_shift"], 3, {"color": ref}, compute_outputs=outputs, **kw)
    assert calls == [3]  # one pass of the held-out images for both metrics
    held, _ = held_out_images(folder, data, 6, 3)
    assert got["color_fd"][0] == pytest.approx(fd_from_feats(color(held), ref.mu, ref.sigma), rel=1e-12)
    path = floor_path(ref, "color_fd", 3, tmp_path / "d")
    assert path.parent.name == "floors" and json.loads(path.read_text())["value"] == got["color_fd"][0]
    assert floors(["color_fd", "color_mean_shift"], 3, {"color": ref}, compute_outputs=outputs, **kw) == got
    assert calls == [3]  # cached: no features computed again
    assert floors(["color_fd"], 5, {"color": ref}, compute_outputs=outputs, **kw)["color_fd"][0] is None  # 4 < 5
