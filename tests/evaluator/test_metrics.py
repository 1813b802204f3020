"""Closed-form checks of the Frechet distance, KID against clean-fid, colour shift, registry."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluator.features import ColorExtractor
from evaluator.metrics import (METRICS, color_mean_shift, extractor_for, frechet_distance, gaussian_stats,
                               kernel_distance, score, validate_metrics, RefStats)


def test_fd_of_identical_stats_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6))
    mu, sigma = gaussian_stats(a)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_fd_matches_gaussian_formula():
    # diagonal covariances: d^2 = ||mu1 - mu2||^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(want, rel=1e-10)
    # a rotated pair (non-diagonal, commuting): same value
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    got = frechet_distance(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert got == pytest.approx(want, rel=1e-8)


def test_fd_1d_is_closed_form():
    assert frechet_distance(np.array([0.5]), np.array([[4.0]]), np.array([0.0]), np.array([[1.0]])) == pytest.approx(0.25 + 1.0)


def test_kid_equals_cleanfid():
    from cleanfid.fid import kernel_distance as cleanfid_kid

    rng = np.random.default_rng(2)
    f1, f2 = rng.normal(size=(60, 16)), rng.normal(0.3, 1.0, size=(50, 16))
    np.random.seed(123)
    theirs = cleanfid_kid(f1, f2, num_subsets=20)
    assert kernel_distance(f1, f2, num_subsets=20, seed=123) == pytest.approx(theirs, rel=1e-12)
    np.random.seed(123)
    assert kernel_distance(f1, f2, num_subsets=20, seed=None) == pytest.approx(theirs, rel=1e-12)
    # same distribution: KID near 0 (unbiased); shifted: clearly positive
    same = kernel_distance(rng.normal(size=(200, 16)), rng.normal(size=(200, 16)), num_subsets=10)
    assert abs(same) < 0.02 and kernel_distance(f1, f2 + 1.0, num_subsets=10) > 0.1


def test_color_features_and_shift():
    imgs = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    imgs[:, 0] = 255  # pure red
    feats = ColorExtractor()(imgs)
    np.testing.assert_allclose(feats, [[1.0, 0.0, 0.0]] * 4)
    assert color_mean_shift(feats, np.array([1.0, 0.0, 0.0])) == 0
    assert color_mean_shift(feats, np.array([0.0, 0.0, 0.0])) == pytest.approx(1.0)
    rng = np.random.default_rng(3)
    ref = rng.uniform(0.2, 0.6, size=(400, 3))
    stats = RefStats(*gaussian_stats(ref), None, 400, "k")
    shifted = ref + np.array([0.1, 0.0, 0.0])
    assert score("color_mean_shift", shifted, stats) == pytest.approx(0.1, rel=1e-9)
    assert score("color_fd", shifted, stats) == pytest.approx(0.01, abs=1e-9)  # pure mean shift


def test_metric_registry():
    assert extractor_for("fid") == extractor_for("kid") == "inception"
    assert extractor_for("color_fd") == extractor_for("color_mean_shift") == "color"
    assert extractor_for("fd_digits", "digits") == "fd_digits"
    assert "fd_<dataset>" in METRICS
    with pytest.raises(ValueError, match="valid metrics: fid, kid, color_fd, color_mean_shift, fd_digits"):
        validate_metrics(["is"], "digits")
    with pytest.raises(ValueError, match="use fd_digits"):
        extractor_for("fd_colors", "digits")
    with pytest.raises(ValueError, match="unknown metric 'FID'"):
        extractor_for("FID")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fd_equals_cleanfid_implementation():
    from cleanfid.fid import frechet_distance as cleanfid_fd

    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(40, 8)), rng.normal(0.5, 2.0, size=(30, 8)) @ rng.normal(size=(8, 8))
    (m1, s1), (m2, s2) = gaussian_stats(a), gaussian_stats(b)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(float(cleanfid_fd(m1, s1, m2, s2)), rel=1e-12)


@pytest.mark.parametrize("n,d", [(12, 64), (300, 16), (64, 64)])
def test_fast_fd_equals_sqrtm_fd(n, d):
    """fd_from_feats (eigenvalue trace) equals the sqrtm Frechet distance, low-rank or not."""
    from evaluator.metrics import fd_from_feats

    rng = np.random.default_rng(n + d)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    gen = rng.normal(0.2, 1.0, size=(n, d)) @ mix
    ref = rng.normal(size=(max(2 * d, 40), d)) @ (mix + 0.1 * np.eye(d))
    (m1, s1), (m2, s2) = gaussian_stats(gen), gaussian_stats(ref)
    assert fd_from_feats(gen, m2, s2) == pytest.approx(frechet_distance(m1, s1, m2, s2), rel=1e-6)
    assert abs(fd_from_feats(ref, m2, s2)) < 1e-8 * max(1.0, np.trace(s2))
