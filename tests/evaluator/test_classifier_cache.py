"""The fd_<dataset> classifier: trained once per data dir even when several processes score at
once, and fingerprinted by its weights (never by how long training took)."""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import torch

from evaluator.features import classifier_path, load_or_train_classifier

SPEC = {"name": "digits", "resolution": 8}


def _train(data_dir: str, out) -> None:
    torch.set_num_threads(1)
    meta = load_or_train_classifier(SPEC, data_dir, epochs=1).meta
    out.put((meta["fingerprint"], meta["train_seconds"]))


def test_concurrent_scorers_train_one_classifier(tmp_path):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_train, args=(str(tmp_path), out)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    path, _ = classifier_path(SPEC, tmp_path)
    stored = torch.load(path, weights_only=False)["meta"]
    # the same training (its own duration too): one process trained, the other waited and loaded
    assert got[0] == got[1] == (stored["fingerprint"], stored["train_seconds"])
    assert sorted(p.name for p in Path(path).parent.iterdir() if p.suffix == ".pt") == [path.name]  # one copy, no leftovers


def test_fingerprint_names_the_weights_not_the_run(tmp_path):
    torch.set_num_threads(1)
    a = load_or_train_classifier(SPEC, tmp_path / "a", epochs=1).meta
    b = load_or_train_classifier(SPEC, tmp_path / "b", epochs=1).meta
    assert a["fingerprint"] == b["fingerprint"]  # seeded training on the same data: the same weights
    assert load_or_train_classifier(SPEC, tmp_path / "c", epochs=1, seed=1).meta["fingerprint"] != a["fingerprint"]
