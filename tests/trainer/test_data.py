import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.data import COLOR_PALETTE, DatasetSpec, load_dataset


def test_digits_are_16x16_in_range_with_labels_and_a_held_out_split():
    train, test = load_dataset({"name": "digits"}), load_dataset({"name": "digits", "split": "test"})
    assert train.images.shape[1:] == (1, 16, 16) and len(train) + len(test) == 1797
    assert train.images.min() >= -1 and train.images.max() <= 1
    assert train.num_classes == 10 and set(train.labels.tolist()) == set(range(10))
    assert train.fingerprint == load_dataset({"name": "digits"}).fingerprint != test.fingerprint


def test_colors_are_deterministic_and_follow_the_palette():
    a, b = load_dataset({"name": "colors", "num_images": 256}), load_dataset({"name": "colors", "num_images": 256})
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, load_dataset({"name": "colors", "num_images": 256, "seed": 1}).images)
    centre = (a.images[:, :, 8, 8] + 1) / 2  # the shape always covers the centre pixel
    for c in range(len(COLOR_PALETTE)):
        mean = centre[a.labels == c].mean(0).numpy()
        np.testing.assert_allclose(mean, COLOR_PALETTE[c], atol=0.03)


def _write_images(root, classes, per_class=3, size=(40, 30)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_folder_with_class_subfolders_gives_labels_and_adm_crops(tmp_path):
    _write_images(tmp_path, ["cat", "dog"])
    ds = load_dataset({"name": "folder", "path": str(tmp_path), "resolution": 16})
    assert ds.images.shape == (6, 3, 16, 16) and ds.labels.tolist() == [0, 0, 0, 1, 1, 1] and ds.num_classes == 2


def test_folder_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset({"name": "folder", "path": str(tmp_path / "nope")})
    with pytest.raises(ValueError, match="holds no images"):
        load_dataset({"name": "folder", "path": str(tmp_path)})
    with pytest.raises(ValueError, match="needs a 'path'"):
        DatasetSpec(name="folder")


def test_cifar10_reads_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}, f)
    ds = load_dataset({"name": "cifar10", "path": str(tmp_path)})
    assert ds.images.shape == (20, 3, 32, 32) and ds.num_classes == 10
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_dataset({"name": "cifar10", "path": str(tmp_path)})


def test_check_source_fails_fast_like_loading(tmp_path):
    from trainer.data import check_source

    check_source({"name": "digits"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_source({"name": "folder", "path": str(tmp_path / "nope")})
    with pytest.raises(ValueError, match="holds no images"):
        check_source({"name": "folder", "path": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        check_source({"name": "cifar10", "path": str(tmp_path)})
