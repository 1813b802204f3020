"""The memory estimate a spec is checked against before it is accepted (trainer.footprint)."""
from __future__ import annotations

import pytest
from PIL import Image

from trainer.config import TrainConfig
from trainer.data import DatasetSpec, load_dataset
from trainer.footprint import dataset_size, human_bytes, training_footprint
from trainer.models import build_unet


@pytest.mark.parametrize("spec", [dict(name="digits"), dict(name="digits", split="test"), dict(name="digits", resolution=8),
                                  dict(name="colors", num_images=100, resolution=12), dict(name="digits", num_images=50)])
def test_dataset_size_matches_what_loading_gives(spec):
    ds = load_dataset(spec)
    assert dataset_size(DatasetSpec(**spec)) == (len(ds), ds.channels, ds.resolution)


def test_folder_size_counts_images_without_loading_them(tmp_path):
    for i in range(7):
        Image.new("RGB", (20, 20)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert dataset_size(DatasetSpec(name="folder", path=str(tmp_path), resolution=8)) == (7, 3, 8)
    assert dataset_size(DatasetSpec(name="folder", path=str(tmp_path), num_images=3))[0] == 3


def test_footprint_counts_the_real_model_and_data():
    cfg = TrainConfig(dataset={"name": "digits", "resolution": 8}, preset="tiny", batch_size=32)
    fp = training_footprint(cfg)
    model = build_unet("tiny", in_channels=1, sample_size=8)
    assert fp.params == sum(p.numel() for p in model.parameters())
    assert fp.model_bytes == fp.params * 20
    assert fp.data_bytes == load_dataset(cfg.dataset).images.nbytes
    assert fp.total_bytes == fp.data_bytes + fp.model_bytes + fp.activation_bytes


def test_activations_scale_with_the_per_worker_batch_and_resolution():
    base = TrainConfig(dataset={"name": "digits", "resolution": 8}, preset="tiny", batch_size=16)
    one = training_footprint(base).activation_bytes
    assert training_footprint(base.model_copy(update={"batch_size": 64})).activation_bytes == 4 * one
    assert training_footprint(base.model_copy(update={"batch_size": 64}), num_workers=4).activation_bytes == one
    big = TrainConfig(dataset={"name": "digits", "resolution": 16}, preset="tiny", batch_size=16)
    assert training_footprint(big).activation_bytes == pytest.approx(4 * one, rel=0.05)


def test_a_spec_no_machine_can_run_is_astronomical():
    cfg = TrainConfig(dataset={"name": "colors", "resolution": 1024, "num_images": 10}, preset="adm-256-light", batch_size=65536)
    assert training_footprint(cfg).total_bytes > 2**50  # > 1 PiB
    assert human_bytes(3 * 2**30) == "3 GiB" and human_bytes(512) == "512 B"
