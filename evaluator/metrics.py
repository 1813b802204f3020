"""Scores from features: Frechet distance, KID, colour shift; the metric registry; cached
reference statistics.

Metric names (an unknown one raises ValueError listing these):
  fid               Frechet distance on Inception pool3, clean-fid mode="clean" (the only "fid")
  kid               clean-fid's KID (cubic polynomial kernel MMD, 100 subsets of <= 1000)
  fd_<dataset>      Frechet distance on the dataset's small-classifier features (fast, CPU)
  color_fd          Frechet distance between the 3-d Gaussians of per-image mean RGB
  color_mean_shift  || mean_gen(mean RGB) - mean_ref(mean RGB) ||_2
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluator.paths import sub_dir

FIXED_METRICS = ("fid", "kid", "color_fd", "color_mean_shift")
METRICS = FIXED_METRICS + ("fd_<dataset>",)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    clean-fid's `frechet_distance`, step for step (same sqrtm, same eps fallback, same imaginary
    check), minus its `sqrtm(..., disp=False)` call, which SciPy >= 1.16 deprecates and which
    breaks on 1x1 matrices (grey images' colour features)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"shape mismatch: {mu1.shape} vs {mu2.shape}, {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():  # product might be almost singular
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):  # numerical error might give a slight imaginary component
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exactly clean-fid's `np.mean(feats, axis=0), np.cov(feats, rowvar=False)` (no dtype change)."""
    feats = np.asarray(feats)
    return np.mean(feats, axis=0), np.atleast_2d(np.cov(feats, rowvar=False))


def trace_sqrt_product(gen: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) with S1 = cov(gen), via symmetric eigenvalues instead of sqrtm.

    The eigenvalues of S1 S2 are those of the PSD matrix S1^(1/2) S2 S1^(1/2); with n <= d
    samples S1 = A^T A (A: centred features / sqrt(n - 1)) and the nonzero ones are those of the
    n x n matrix A S2 A^T. Same quantity as clean-fid's sqrtm trace (agrees to ~1e-6 relative,
    tested), about 100x faster for n = 16..500 Inception features and stable when S1 is singular."""
    gen = np.asarray(gen, dtype=np.float64)
    sigma2 = np.asarray(sigma2, dtype=np.float64)
    n, d = gen.shape
    a = (gen - gen.mean(axis=0)) / math.sqrt(n - 1)
    if n <= d:
        lam = np.linalg.eigvalsh(a @ sigma2 @ a.T)
    else:
        w, v = np.linalg.eigh(a.T @ a)
        root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        lam = np.linalg.eigvalsh(root @ sigma2 @ root)
    return float(np.sqrt(np.clip(lam, 0, None)).sum())


def fd_from_feats(gen: np.ndarray, ref_mu: np.ndarray, ref_sigma: np.ndarray) -> float:
    """Frechet distance of generated features to reference statistics (fast exact trace)."""
    mu, sigma = gaussian_stats(gen)
    diff = np.asarray(mu, np.float64) - np.atleast_1d(ref_mu)
    ref_sigma = np.atleast_2d(ref_sigma)
    return float(diff.dot(diff) + np.trace(sigma) + np.trace(ref_sigma) - 2 * trace_sqrt_product(gen, ref_sigma))


def kernel_distance(feats1, feats2, num_subsets: int = 100, max_subset_size: int = 1000, seed: int | None = 0) -> float:
    """clean-fid's kernel_distance (KID), with a seeded RandomState instead of the global one
    (seed=None uses the global numpy state, as clean-fid does)."""
    rng = np.random if seed is None else np.random.RandomState(seed)
    n = feats1.shape[1]
    m = min(min(feats1.shape[0], feats2.shape[0]), max_subset_size)
    t = 0
    for _ in range(num_subsets):
        x = feats2[rng.choice(feats2.shape[0], m, replace=False)]
        y = feats1[rng.choice(feats1.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)


def color_mean_shift(gen_means: np.ndarray, ref_mu: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(gen_means, np.float64).mean(axis=0) - ref_mu))


def extractor_for(metric: str, dataset: str | None = None) -> str:
    """Which feature extractor a metric needs: 'inception', 'fd_<dataset>' or 'color'."""
    if metric in ("fid", "kid"):
        return "inception"
    if metric in ("color_fd", "color_mean_shift"):
        return "color"
    if metric.startswith("fd_") and len(metric) > 3:
        if dataset is not None and metric != f"fd_{dataset}":
            raise ValueError(f"metric {metric!r} does not match this model's dataset {dataset!r}; use fd_{dataset}")
        return metric
    valid = ", ".join(FIXED_METRICS + ((f"fd_{dataset}",) if dataset else ("fd_<dataset>",)))
    raise ValueError(f"unknown metric {metric!r}; valid metrics: {valid}")


def validate_metrics(metrics, dataset: str | None = None) -> list[str]:
    metrics = list(metrics)
    if not metrics:
        raise ValueError("no metrics requested")
    for m in metrics:
        extractor_for(m, dataset)
    return metrics


@dataclass(frozen=True, eq=False)
class RefStats:
    mu: np.ndarray
    sigma: np.ndarray
    feats: np.ndarray | None  # kept for KID (inception only)
    num: int
    key: str
    path: Path | None = None


def score(metric: str, gen: np.ndarray, ref: RefStats, *, kid_seed: int = 0) -> float:
    """One metric from generated features of the right extractor and the reference stats."""
    if metric == "kid":
        return kernel_distance(ref.feats, gen, seed=kid_seed)
    if metric == "color_mean_shift":
        return color_mean_shift(gen, ref.mu)
    return fd_from_feats(gen, ref.mu, ref.sigma)  # fid, fd_<dataset>, color_fd


def reference_key(dataset_spec: dict, extractor_name: str, extractor_fingerprint: str, dataset_fingerprint: str,
                  num_ref: int | None, mode: str = "clean") -> tuple[str, str]:
    spec = dict(dataset_spec)
    blob = json.dumps({"spec": spec, "extractor": extractor_name, "extractor_fp": extractor_fingerprint,
                       "data_fp": dataset_fingerprint, "num_ref": num_ref, "mode": mode}, sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:16]
    stem = f"{spec['name']}_{spec.get('resolution') or 'native'}_{spec.get('split', 'train')}_{extractor_name}_{mode}"
    return stem, digest


def reference_stats(dataset_spec: dict, extractor_name: str, extractor_fingerprint: str, compute_features, *,
                    data_dir=None, num_ref: int | None = None, dataset=None) -> RefStats:
    """Reference statistics of (dataset, resolution, split, extractor, mode), computed once and
    cached under $SNRLAB_DATA_DIR/stats/ with a content hash (dataset pixels + extractor weights
    + num_ref) in the name. `compute_features(uint8 images) -> features` runs only on a miss (an
    extractor object, or the actor pool's map). `dataset` may pass an already-loaded ImageDataset."""
    if dataset is None:
        from trainer.data import load_dataset

        dataset = load_dataset(dataset_spec)
    stem, digest = reference_key(dataset_spec, extractor_name, extractor_fingerprint, dataset.fingerprint, num_ref)
    path = sub_dir("stats", data_dir) / f"{stem}_{digest}.npz"
    if path.is_file():
        z = np.load(path)
        feats = z["feats"] if "feats" in z.files else None
        return RefStats(z["mu"], z["sigma"], feats, int(z["num"]), digest, path)
    images = dataset.uint8()[:num_ref] if num_ref else dataset.uint8()
    feats = compute_features(images)
    mu, sigma = gaussian_stats(feats)
    keep = {"feats": feats} if extractor_name == "inception" else {}  # KID needs the features
    part = path.with_name(f"{path.stem}.{os.getpid()}.part.npz")
    np.savez(part, mu=mu, sigma=sigma, num=len(images), **keep)
    part.replace(path)
    return RefStats(mu, sigma, keep.get("feats"), len(images), digest, path)
