"""Stored generated features: one .npz per (checkpoint, T, sampler, extractor) under
`<out_dir>/features/`, with a JSON sidecar of provenance, so metrics can be computed again
(`evaluator.rescore`) without sampling. Both files are written atomically (temp file, rename),
the .npz first: a sidecar exists only beside a complete .npz."""
from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

import numpy as np

FEATURES_DIR = "features"
FORMAT_VERSION = 1
# provenance that names what the features are; the rest (timings, paths of files) does not
_IDENTITY = ("checkpoint", "checkpoint_step", "dataset", "sampler", "T", "num_gen", "seed", "eta", "variance",
             "spacing", "extractor", "extractor_fingerprint", "ref_key", "num_ref", "ref_split")


def evaluator_version() -> str:
    try:
        return f"snrlab {metadata.version('snrlab')} (features format {FORMAT_VERSION})"
    except metadata.PackageNotFoundError:
        return f"snrlab unknown (features format {FORMAT_VERSION})"


def features_name(prov: dict) -> str:
    """`step<step>_<sampler>_T<T>_<extractor>_<digest>.npz`; the digest covers the identity
    fields, so two evaluations differing in anything that changes the features never collide."""
    blob = json.dumps({k: prov.get(k) for k in _IDENTITY}, sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
    return f"step{prov['checkpoint_step']:08d}_{prov['sampler']}_T{prov['T']}_{prov['extractor']}_{digest}.npz"


def write_features(out_dir: str | Path, prov: dict, outputs: dict[str, np.ndarray]) -> str:
    """Write one cell's extractor outputs and provenance; returns the .npz path relative to out_dir."""
    folder = Path(out_dir) / FEATURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = features_name(prov)
    path = folder / name
    part = folder / f".{path.stem}.{os.getpid()}.part.npz"
    np.savez(part, **outputs)
    part.replace(path)
    side = {"format": FORMAT_VERSION, "evaluator_version": evaluator_version(), "features": name,
            "arrays": {k: list(v.shape) for k, v in outputs.items()}, **prov}
    sidecar = path.with_suffix(".json")
    part = folder / f".{sidecar.stem}.{os.getpid()}.part.json"
    part.write_text(json.dumps(side, indent=2, default=str))
    part.replace(sidecar)
    return f"{FEATURES_DIR}/{name}"


def read_sidecars(features_dir: str | Path) -> list[dict]:
    """Every sidecar in the folder (sorted by name), each with `_npz` set to its features file."""
    folder = Path(features_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{str(folder)!r} is not a features folder (evaluate(..., out_dir=...) writes <out_dir>/features)")
    out = []
    for p in sorted(folder.glob("*.json")):
        if p.name.startswith("."):
            continue
        side = json.loads(p.read_text())
        if side.get("format") != FORMAT_VERSION:
            raise ValueError(f"{p.name}: features format {side.get('format')!r}, this evaluator reads {FORMAT_VERSION}")
        out.append({**side, "_npz": folder / side["features"]})
    return out


def load_outputs(side: dict) -> dict[str, np.ndarray]:
    with np.load(side["_npz"]) as z:
        return {k: z[k] for k in z.files}
