"""evaluate(): in-process and on a Ray actor pool (same numbers), reference caches, floors,
stored features and rescore(), errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import write_checkpoint

from evaluator import EvalConfig, evaluate, rescore, weights
from evaluator.api import ROW_KEYS
from evaluator.metrics import fd_from_feats


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ck") / "digits", dataset="digits", size=8)


def _cfg(**kw) -> EvalConfig:
    return EvalConfig.model_validate({"num_samples": 12, **kw})


def _by_key(rows):
    return {(r["T"], r["sampler"], r["metric"]): r for r in rows}


def test_evaluate_in_process(checkpoint, data_dir):
    cfg = _cfg(steps=[1, 3], samplers=["ddpm", "ddim"], metrics=["fd_digits", "color_fd", "color_mean_shift"], batch_size=5)
    rows = evaluate(checkpoint, cfg, num_actors=0, data_dir=data_dir)
    assert len(rows) == 2 * 2 * 3 and all(set(r) == set(ROW_KEYS) for r in rows)
    assert {r["num_gen"] for r in rows} == {12} and {r["checkpoint_step"] for r in rows} == {0}
    assert {r["features"] for r in rows} == {None}  # no out_dir: nothing stored
    assert {(r["metric"], r["extractor"]) for r in rows} == {("fd_digits", "fd_digits"), ("color_fd", "color"), ("color_mean_shift", "color")}
    assert all(np.isfinite(r["value"]) and r["value"] >= 0 for r in rows)
    # the digits classifier was trained once, cached with its accuracy, and its reference stats too
    meta = json.loads(next((data_dir / "extractors").glob("fd_digits_*.json")).read_text())
    assert meta["train_accuracy"] > 0.9 and meta["test_accuracy"] > 0.85 and meta["resolution"] == 8
    stats = sorted(p.name for p in (data_dir / "stats").glob("digits_8_train_*.npz"))
    assert any("_fd_digits_clean_" in s for s in stats) and any("_color_clean_" in s for s in stats)
    again = evaluate(checkpoint, cfg.model_copy(update=dict(steps=[3], samplers=["ddim"], metrics=["fd_digits"], batch_size=12)),
                     num_actors=0, data_dir=data_dir)
    assert again[0]["value"] == pytest.approx(_by_key(rows)[(3, "ddim", "fd_digits")]["value"], rel=1e-4)
    assert again[0]["ref_key"] == _by_key(rows)[(3, "ddim", "fd_digits")]["ref_key"]


def test_rows_carry_the_floor_of_held_out_real_images(checkpoint, data_dir):
    """floor = the same metric of num_gen held-out real images (digits: its test split) against
    the same reference statistics; one value per (metric, N), cached under data_dir/floors/."""
    from evaluator.features import load_or_train_classifier
    from evaluator.floors import FLOOR_SEED
    from evaluator.metrics import reference_stats
    from trainer.data import load_dataset

    rows = evaluate(checkpoint, _cfg(steps=[1, 2], metrics=["fd_digits", "fd_digits_inf", "cs_digits"]), num_actors=0,
                    data_dir=data_dir)
    by_metric = {}
    for r in rows:
        by_metric.setdefault(r["metric"], set()).add((r["floor"], r["floor_source"]))
    assert all(len(v) == 1 for v in by_metric.values())  # the same for every T
    (fd_floor, source), = by_metric["fd_digits"]
    assert source == f"digits test split: 12 of 360 images (seed {FLOOR_SEED})"
    spec = {"name": "digits", "resolution": 8}
    clf = load_or_train_classifier(spec, data_dir)
    test = load_dataset({**spec, "split": "test"}).uint8()
    idx = np.sort(np.random.default_rng(FLOOR_SEED).choice(len(test), 12, replace=False))
    ref = reference_stats({**spec, "split": "train", "num_images": None, "path": None, "seed": 0}, clf.name, clf.fingerprint, clf,
                          data_dir=data_dir)
    assert fd_floor == pytest.approx(fd_from_feats(clf(test[idx]), ref.mu, ref.sigma), rel=1e-9)
    # a random-init model is far worse than real images; real images are confidently classified
    assert all(r["value"] > 2 * r["floor"] for r in rows if r["metric"] == "fd_digits")
    (cs_floor, _), = by_metric["cs_digits"]
    assert cs_floor > 5 and all(r["value"] < cs_floor for r in rows if r["metric"] == "cs_digits")
    for m in by_metric:
        cached = json.loads(next((data_dir / "floors").glob(f"digits_8_train_fd_digits_clean_*_{m}_n12.json")).read_text())
        assert (cached["metric"], cached["num"], cached["value"]) == (m, 12, next(iter(by_metric[m]))[0])


def test_features_are_stored_with_provenance(checkpoint, data_dir, tmp_path):
    cfg = _cfg(steps=[2], samplers=["ddpm", "ddim"], metrics=["fd_digits", "color_mean_shift"], seed=4, eta=0.5)
    rows = evaluate(checkpoint, cfg, num_actors=0, data_dir=data_dir, out_dir=tmp_path)
    files = sorted(p.name for p in (tmp_path / "features").iterdir())
    assert len(files) == 2 * 2 * 2 and not [f for f in files if f.startswith(".")]  # (sampler, extractor) x (npz, json)
    for r in rows:
        npz = tmp_path / r["features"]
        side = json.loads(npz.with_suffix(".json").read_text())
        assert npz.is_file() and side["features"] == npz.name
        for k in ("T", "sampler", "num_gen", "seed", "eta", "variance", "extractor", "extractor_fingerprint", "ref_key", "checkpoint"):
            assert side[k] == r[k], k
        assert side["checkpoint_step"] == 0 and side["dataset"]["name"] == "digits" and side["num_ref"] is None
        assert side["ref_num"] == r["num_ref"] == 1437 and side["spacing"] == "linspace"
        assert side["evaluator_version"].startswith("snrlab ")
        with np.load(npz) as z:
            want = {"feats": [12, 64], "logits": [12, 10]} if r["extractor"] == "fd_digits" else {"feats": [12, 1]}
            assert {k: list(z[k].shape) for k in z.files} == want == side["arrays"]
    assert {r["eta"] for r in rows if r["sampler"] == "ddim"} == {0.5} and {r["variance"] for r in rows if r["sampler"] == "ddpm"} == {"fixed_large"}


def test_rescore_reproduces_evaluate_and_adds_metrics(checkpoint, data_dir, tmp_path):
    base = dict(steps=[1, 2], samplers=["ddpm", "ddim"], seed=2)
    first = _by_key(evaluate(checkpoint, _cfg(metrics=["fd_digits", "color_mean_shift"], **base), num_actors=0,
                             data_dir=data_dir, out_dir=tmp_path))
    new = ["cs_digits", "fd_digits_inf", "color_fd", "color_fd_inf"]
    again = _by_key(rescore(tmp_path / "features", ["fd_digits", "color_mean_shift"] + new, data_dir=data_dir))
    assert set(again) == set(first) | {(t, s, m) for t in (1, 2) for s in ("ddpm", "ddim") for m in new}
    for k, r in first.items():
        got = again[k]
        assert got["value"] == r["value"], k  # the same arrays, the same code: exactly
        assert {x: got[x] for x in ROW_KEYS if x != "seconds"} == {x: r[x] for x in ROW_KEYS if x != "seconds"}
    # the new metrics equal what sampling again would give
    fresh = _by_key(evaluate(checkpoint, _cfg(metrics=new, **base), num_actors=0, data_dir=data_dir))
    for k, r in fresh.items():
        assert again[k]["value"] == r["value"] and again[k]["floor"] == r["floor"], k
    assert 1 <= again[(2, "ddpm", "cs_digits")]["value"] <= 10


def test_rescore_refuses_stale_or_missing_features(checkpoint, data_dir, tmp_path):
    evaluate(checkpoint, _cfg(steps=[2], metrics=["fd_digits"]), num_actors=0, data_dir=data_dir, out_dir=tmp_path)
    with pytest.raises(ValueError, match="no stored inception features \\(needed by fid_inf\\)"):
        rescore(tmp_path / "features", ["fid_inf"], data_dir=data_dir)
    with pytest.raises(ValueError, match="use fd_digits"):
        rescore(tmp_path / "features", ["fd_colors"], data_dir=data_dir)
    for field, value, message in [("extractor_fingerprint", "0" * 16, "fingerprint mismatch: stored 0000000000000000"),
                                  ("ref_key", "f" * 16, "reference key mismatch: stored ffffffffffffffff")]:
        copy = tmp_path / field / "features"
        shutil.copytree(tmp_path / "features", copy)
        side_path = next(copy.glob("*.json"))
        side = json.loads(side_path.read_text())
        side_path.write_text(json.dumps({**side, field: value}))
        with pytest.raises(ValueError, match=message):
            rescore(copy, ["fd_digits"], data_dir=data_dir)
    with pytest.raises(FileNotFoundError, match="not a features folder"):
        rescore(tmp_path / "absent", ["fd_digits"], data_dir=data_dir)


def test_ray_actor_pool_matches_in_process(ray_session, checkpoint, data_dir):
    """Two actors, shards of 3: the same samples (seeded per index) and so the same scores."""
    cfg = _cfg(steps=[2], samplers=["ddpm", "ddim"], metrics=["fd_digits", "color_fd", "color_mean_shift"], num_samples=9,
               seed=3, shard_size=3)
    # half a CPU each: leaves room in the shared 2-CPU test session for other packages' actors
    pooled = _by_key(evaluate(checkpoint, cfg, num_actors=2, num_cpus_per_actor=0.5, data_dir=data_dir))
    local = _by_key(evaluate(checkpoint, cfg, num_actors=0, data_dir=data_dir))
    assert pooled.keys() == local.keys() and len(local) == 6
    for k, r in local.items():
        assert pooled[k]["value"] == pytest.approx(r["value"], rel=1e-3, abs=1e-6), k
        assert pooled[k]["num_gen"] == 9 and pooled[k]["extractor"] == r["extractor"]
        assert pooled[k]["floor"] == pytest.approx(r["floor"], rel=1e-6)


def test_evaluate_fid_and_kid_with_real_inception(checkpoint, data_dir, tmp_path):
    rows = _by_key(evaluate(checkpoint, _cfg(steps=[2], metrics=["fid", "kid", "fid_inf"], num_samples=4, num_ref=4, seed=1),
                            num_actors=0, data_dir=data_dir, out_dir=tmp_path))
    fid, kid, fid_inf = rows[(2, "ddpm", "fid")], rows[(2, "ddpm", "kid")], rows[(2, "ddpm", "fid_inf")]
    assert fid["extractor"] == kid["extractor"] == fid_inf["extractor"] == "inception"
    assert fid["num_ref"] == 4 and fid["num_gen"] == 4
    assert fid["value"] > 0 and np.isfinite(kid["value"]) and np.isfinite(fid_inf["value"])
    assert len(fid["extractor_fingerprint"]) == 16 and fid["floor"] > 0
    with np.load(tmp_path / fid["features"]) as z:
        assert z.files == ["feats"] and z["feats"].shape == (4, 2048) and z["feats"].dtype == np.float32
    again = _by_key(rescore(tmp_path / "features", ["fid", "kid"], data_dir=data_dir))
    assert again[(2, "ddpm", "fid")]["value"] == fid["value"] and again[(2, "ddpm", "kid")]["value"] == kid["value"]


def test_unknown_metric_and_bad_steps(checkpoint, data_dir):
    with pytest.raises(ValueError, match="valid metrics: fid, fid_inf, kid"):
        _cfg(steps=[2], metrics=["inception_score"])
    with pytest.raises(ValueError, match="use fd_digits"):
        evaluate(checkpoint, _cfg(steps=[2], metrics=["fd_colors"]), num_actors=0, data_dir=data_dir)
    with pytest.raises(ValueError, match="1..1000"):
        evaluate(checkpoint, _cfg(steps=[2, 2000], metrics=["fd_digits"]), num_actors=0, data_dir=data_dir)
    with pytest.raises(ValueError, match="valid samplers"):
        _cfg(steps=[2], samplers=["dpm"], metrics=["fd_digits"])
    with pytest.raises(ValueError, match="needs >= 3"):
        evaluate(checkpoint, _cfg(steps=[2], metrics=["fd_digits_inf"], num_samples=2), num_actors=0, data_dir=data_dir)
    with pytest.raises(TypeError, match="EvalConfig"):
        evaluate(checkpoint, {"steps": [2], "metrics": ["fd_digits"]}, num_actors=0, data_dir=data_dir)


def test_fid_without_weights_fails_before_sampling(checkpoint, tmp_path, monkeypatch):
    monkeypatch.delenv(weights.ENV_VAR, raising=False)
    monkeypatch.setattr(weights, "cleanfid_cache_path", lambda: tmp_path / "none" / weights.CLEANFID_NAME)
    with pytest.raises(weights.InceptionWeightsMissing, match="default_1.pt"):
        evaluate(checkpoint, _cfg(steps=[2], metrics=["fid"], num_samples=4), num_actors=0, data_dir=tmp_path / "empty")
