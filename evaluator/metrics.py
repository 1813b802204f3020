"""Scores from features: Frechet distance (plain and extrapolated to infinite N), KID, colour
shift, classifier score; the metric registry; cached reference statistics.

Metric names (an unknown one raises ValueError listing these; `<dataset>` is the model's dataset):
  fid               Frechet distance on Inception pool3, clean-fid mode="clean" (the only "fid")
  kid               clean-fid's KID (cubic polynomial kernel MMD, 100 subsets of <= 1000)
  color_fd          Frechet distance between the 3-d Gaussians of per-image mean RGB
  color_mean_shift  || mean_gen(mean RGB) - mean_ref(mean RGB) ||_2
  fd_<dataset>      Frechet distance on the dataset's small-classifier features (fast, CPU)
  cs_<dataset>      classifier score exp(E_x KL(p(y|x) || p(y))) with that classifier (higher is better)
  <fd metric>_inf   fid_inf, color_fd_inf, fd_<dataset>_inf: the Frechet distance extrapolated to
                    N = infinity (Chong & Forsyth 2020), see `fd_inf`
All are lower-is-better distances except cs_<dataset> (`higher_is_better`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from evaluator.paths import sub_dir


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


FD_INF_MIN_SAMPLES = 3  # two subset sizes of at least 2


def fd_inf_sizes(n: int, num_sizes: int = 8) -> list[int]:
    """Subset sizes for `fd_inf`: `num_sizes` evenly spaced from ceil(n/2) to n (distinct, >= 2).

    Half of N, not Chong & Forsyth's N/10: the subsets come from one fixed sample, and their
    FD-vs-1/n slope is that of the sample's own covariance, steeper than the population's when
    d/N is not small; the shorter range over-corrects less (at d = 64: -0.09 instead of -0.24
    at N = 512; tests/evaluator/test_metrics.py measures the regime where it holds)."""
    sizes = sorted({int(round(s)) for s in np.linspace(math.ceil(n / 2), n, num_sizes)})
    sizes = [s for s in sizes if s >= 2]
    if len(sizes) < 2:
        raise ValueError(f"fd_inf needs at least {FD_INF_MIN_SAMPLES} samples (two subset sizes), got {n}")
    return sizes


def fd_inf(gen_feats: np.ndarray, ref_mu: np.ndarray, ref_sigma: np.ndarray, *, sizes=None, seed: int = 0,
           reps: int = 5) -> float:
    """Frechet distance extrapolated to infinitely many generated samples (Chong & Forsyth 2020,
    "Effectively Unbiased FID and Inception Score and where to find them", Sec. 3).

    FD_N = FD_inf + c / N + O(1/N^2): compute FD on `reps` seeded random subsets (without
    replacement) of each size n in `sizes` (default `fd_inf_sizes(N)`; the full set once), fit a
    least-squares line to the per-size means against 1/n and return its value at 1/n = 0.
    Removes the first-order bias of the generated side only (the reference statistics are taken
    as exact). Valid while d/N is small; beyond that it over-corrects. Measured on N samples of
    the reference Gaussian itself in d = 64 (true FD 0): -0.09 at N = 512 (plain FD 2.2), -0.46
    at N = 256 (plain 4.4), -2.5 at N = 128 (plain 9.3). The row's `floor` shows where a metric
    stands at its N."""
    gen = np.asarray(gen_feats)
    n = len(gen)
    sizes = fd_inf_sizes(n) if sizes is None else sorted({int(s) for s in sizes})
    if len(sizes) < 2 or sizes[0] < 2 or sizes[-1] > n:
        raise ValueError(f"fd_inf needs >= 2 distinct subset sizes in 2..{n}, got {sizes}")
    rng = np.random.default_rng(seed)
    means = []
    for size in sizes:
        subsets = [np.arange(n)] if size == n else [rng.choice(n, size, replace=False) for _ in range(reps)]
        means.append(np.mean([fd_from_feats(gen[idx], ref_mu, ref_sigma) for idx in subsets]))
    design = np.stack([np.ones(len(sizes)), 1.0 / np.asarray(sizes, np.float64)], axis=1)
    intercept, _slope = np.linalg.lstsq(design, np.asarray(means), rcond=None)[0]
    return float(intercept)


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


def classifier_score(logits: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))) with p(y|x) = softmax(logits) and p(y) = E_x p(y|x): the
    Inception Score formula (Salimans et al. 2016) on one split of all N samples. Between 1 (every
    sample gets the same class distribution) and the number of classes (confident and balanced).
    Inception Score proper needs the Inception network's 1008-way logits, which the offline
    pool3-only Inception file (evaluator.weights) does not have, so there is no `is` metric."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))  # log softmax
    p = np.exp(log_p)
    log_marginal = np.log(p.mean(axis=0))
    return float(np.exp(np.mean(np.sum(p * (log_p - log_marginal), axis=1))))


@dataclass(frozen=True, eq=False)
class RefStats:
    mu: np.ndarray
    sigma: np.ndarray
    feats: np.ndarray | None  # kept for KID (inception only)
    num: int
    key: str
    path: Path | None = None


@dataclass(frozen=True)
class Metric:
    """One registry entry. `name` may hold `<dataset>`; `extractor` names the features it reads
    (`<dataset>` filled in the same way); `compute(outputs, ref, seed)` gets that extractor's
    outputs ({"feats": [N, D], "logits": [N, K] for the classifier})."""

    name: str
    extractor: str
    higher_is_better: bool
    compute: Callable[[dict, RefStats, int], float]
    min_samples: int = 2


def _fd(out: dict, ref: RefStats, seed: int) -> float:
    return fd_from_feats(out["feats"], ref.mu, ref.sigma)


def _fd_inf(out: dict, ref: RefStats, seed: int) -> float:
    return fd_inf(out["feats"], ref.mu, ref.sigma, seed=seed)


def _kid(out: dict, ref: RefStats, seed: int) -> float:
    return kernel_distance(ref.feats, out["feats"], seed=seed)


def _mean_shift(out: dict, ref: RefStats, seed: int) -> float:
    return color_mean_shift(out["feats"], ref.mu)


def _cs(out: dict, ref: RefStats, seed: int) -> float:
    if "logits" not in out:
        raise ValueError("cs_<dataset> needs the classifier's logits; these features hold none")
    return classifier_score(out["logits"])


REGISTRY: dict[str, Metric] = {m.name: m for m in (
    Metric("fid", "inception", False, _fd),
    Metric("fid_inf", "inception", False, _fd_inf, FD_INF_MIN_SAMPLES),
    Metric("kid", "inception", False, _kid),
    Metric("color_fd", "color", False, _fd),
    Metric("color_fd_inf", "color", False, _fd_inf, FD_INF_MIN_SAMPLES),
    Metric("color_mean_shift", "color", False, _mean_shift),
    Metric("fd_<dataset>", "fd_<dataset>", False, _fd),
    Metric("fd_<dataset>_inf", "fd_<dataset>", False, _fd_inf, FD_INF_MIN_SAMPLES),
    Metric("cs_<dataset>", "fd_<dataset>", True, _cs),
)}
METRICS = tuple(REGISTRY)
FIXED_METRICS = tuple(n for n in METRICS if "<dataset>" not in n)
_TEMPLATES = tuple(n for n in METRICS if "<dataset>" in n)


def _parse_template(name: str, template: str) -> str | None:
    """The dataset a name gives a `<dataset>` template (a name starting with a letter or digit),
    or None if it does not fit."""
    prefix, suffix = template.split("<dataset>")
    if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
        dataset = name[len(prefix) : len(name) - len(suffix)]
        return dataset if dataset[0].isalnum() else None
    return None


def resolve_metric(name: str, dataset: str | None = None) -> tuple[Metric, str | None]:
    """(registry entry, the dataset it names or None). With a dataset, `fd_<dataset>_inf` etc.
    are matched exactly; without one, a `_inf` suffix always means the extrapolated variant
    (`fd_digits_inf` is fd_digits extrapolated, never the plain FD of a dataset `digits_inf`)."""
    if name in FIXED_METRICS:
        return REGISTRY[name], None
    if dataset is not None:
        for t in _TEMPLATES:
            if name == t.replace("<dataset>", dataset):
                return REGISTRY[t], dataset
    for t in sorted(_TEMPLATES, key=lambda t: -len(t)):  # longest first: fd_<dataset>_inf before fd_<dataset>
        other = _parse_template(name, t)
        if other is not None:
            if dataset is not None:
                raise ValueError(f"metric {name!r} does not match this model's dataset {dataset!r}; "
                                 f"use {t.replace('<dataset>', dataset)}")
            return REGISTRY[t], other
    valid = ", ".join(METRICS if dataset is None else (n.replace("<dataset>", dataset) for n in METRICS))
    raise ValueError(f"unknown metric {name!r}; valid metrics: {valid}")


def extractor_for(metric: str, dataset: str | None = None) -> str:
    """Which feature extractor a metric needs: 'inception', 'color' or 'fd_<dataset>'."""
    m, ds = resolve_metric(metric, dataset)
    return m.extractor if ds is None else m.extractor.replace("<dataset>", ds)


def metric_names(datasets) -> list[str]:
    """Every valid metric name for these datasets (the `<dataset>` templates filled in)."""
    return [*FIXED_METRICS, *(t.replace("<dataset>", d) for d in datasets for t in _TEMPLATES)]


def higher_is_better(metric: str) -> bool:
    """The metric's direction: distances (fid, kid, *_fd*, color_mean_shift) are lower-better,
    cs_<dataset> is higher-better. Unknown names raise ValueError."""
    return resolve_metric(metric)[0].higher_is_better


def validate_metrics(metrics, dataset: str | None = None) -> list[str]:
    metrics = list(metrics)
    if not metrics:
        raise ValueError("no metrics requested")
    for m in metrics:
        resolve_metric(m, dataset)
    return metrics


def score(metric: str, outputs: dict, ref: RefStats, *, seed: int = 0) -> float:
    """One metric from its extractor's outputs ({"feats", maybe "logits"}) and the reference stats.
    `seed` seeds the subsets of kid and the _inf variants."""
    return float(resolve_metric(metric)[0].compute(outputs, ref, seed))


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
