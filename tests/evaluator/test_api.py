"""evaluate(): in-process and on a Ray actor pool (same numbers), reference caches, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from evaluator import evaluate, weights
from conftest import write_checkpoint

ROW_KEYS = {"T", "sampler", "metric", "value", "num_gen", "extractor", "extractor_fingerprint", "seconds", "num_ref"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ck") / "digits", dataset="digits", size=8)


def _by_key(rows):
    return {(r["T"], r["sampler"], r["metric"]): r for r in rows}


def test_evaluate_in_process(checkpoint, data_dir):
    rows = evaluate(checkpoint, steps=[1, 3], samplers=["ddpm", "ddim"], metrics=["fd_digits", "color_fd", "color_mean_shift"],
                    num_samples=12, num_actors=0, data_dir=data_dir, batch_size=5)
    assert len(rows) == 2 * 2 * 3 and all(ROW_KEYS <= r.keys() for r in rows)
    assert {r["num_gen"] for r in rows} == {12}
    assert {(r["metric"], r["extractor"]) for r in rows} == {("fd_digits", "fd_digits"), ("color_fd", "color"), ("color_mean_shift", "color")}
    assert all(np.isfinite(r["value"]) and r["value"] >= 0 for r in rows)
    # the digits classifier was trained once, cached with its accuracy, and its reference stats too
    meta = json.loads(next((data_dir / "extractors").glob("fd_digits_*.json")).read_text())
    assert meta["train_accuracy"] > 0.9 and meta["test_accuracy"] > 0.85 and meta["resolution"] == 8
    stats = sorted(p.name for p in (data_dir / "stats").glob("digits_8_train_*.npz"))
    assert any("_fd_digits_clean_" in s for s in stats) and any("_color_clean_" in s for s in stats)
    again = evaluate(checkpoint, steps=[3], samplers=["ddim"], metrics=["fd_digits"], num_samples=12, num_actors=0,
                     data_dir=data_dir, batch_size=12)
    assert again[0]["value"] == pytest.approx(_by_key(rows)[(3, "ddim", "fd_digits")]["value"], rel=1e-4)
    assert again[0]["ref_key"] == _by_key(rows)[(3, "ddim", "fd_digits")]["ref_key"]


def test_ray_actor_pool_matches_in_process(ray_session, checkpoint, data_dir):
    """Two actors, shards of 3: the same samples (seeded per index) and so the same scores."""
    kw = dict(steps=[2], samplers=["ddpm", "ddim"], metrics=["fd_digits", "color_fd", "color_mean_shift"],
              num_samples=9, data_dir=data_dir, seed=3)
    # half a CPU each: leaves room in the shared 2-CPU test session for other packages' actors
    pooled = _by_key(evaluate(checkpoint, num_actors=2, shard_size=3, num_cpus_per_actor=0.5, **kw))
    local = _by_key(evaluate(checkpoint, num_actors=0, **kw))
    assert pooled.keys() == local.keys() and len(local) == 6
    for k, r in local.items():
        assert pooled[k]["value"] == pytest.approx(r["value"], rel=1e-3, abs=1e-6), k
        assert pooled[k]["num_gen"] == 9 and pooled[k]["extractor"] == r["extractor"]


def test_evaluate_fid_and_kid_with_real_inception(checkpoint, data_dir):
    rows = _by_key(evaluate(checkpoint, steps=[2], metrics=["fid", "kid"], num_samples=4, num_ref=4, num_actors=0,
                            data_dir=data_dir, seed=1))
    fid, kid = rows[(2, "ddpm", "fid")], rows[(2, "ddpm", "kid")]
    assert fid["extractor"] == kid["extractor"] == "inception" and fid["num_ref"] == 4 and fid["num_gen"] == 4
    assert fid["value"] > 0 and np.isfinite(kid["value"])
    assert len(fid["extractor_fingerprint"]) == 16


def test_unknown_metric_and_bad_steps(checkpoint, data_dir):
    with pytest.raises(ValueError, match="valid metrics: fid, kid, color_fd, color_mean_shift, fd_digits"):
        evaluate(checkpoint, steps=[2], metrics=["inception_score"], num_samples=4, num_actors=0, data_dir=data_dir)
    with pytest.raises(ValueError, match="use fd_digits"):
        evaluate(checkpoint, steps=[2], metrics=["fd_colors"], num_samples=4, num_actors=0, data_dir=data_dir)
    with pytest.raises(ValueError, match="1..1000"):
        evaluate(checkpoint, steps=[0, 2000], num_samples=4, num_actors=0, data_dir=data_dir)
    with pytest.raises(ValueError, match="valid samplers"):
        evaluate(checkpoint, steps=[2], samplers=["dpm"], num_samples=4, num_actors=0, data_dir=data_dir)


def test_fid_without_weights_fails_before_sampling(checkpoint, tmp_path, monkeypatch):
    monkeypatch.delenv(weights.ENV_VAR, raising=False)
    monkeypatch.setattr(weights, "cleanfid_cache_path", lambda: tmp_path / "none" / weights.CLEANFID_NAME)
    with pytest.raises(weights.InceptionWeightsMissing, match="default_1.pt"):
        evaluate(checkpoint, steps=[2], metrics=["fid"], num_samples=4, num_actors=0, data_dir=tmp_path / "empty")
