"""Closed-form checks of the Frechet distance (plain and extrapolated), KID against clean-fid,
colour shift, the classifier score, the metric registry and its directions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluator.features import ColorExtractor
from evaluator.metrics import (
    METRICS,
    REGISTRY,
    RefStats,
    classifier_score,
    color_mean_shift,
    extractor_for,
    fd_from_feats,
    fd_inf,
    fd_inf_sizes,
    frechet_distance,
    gaussian_stats,
    higher_is_better,
    kernel_distance,
    resolve_metric,
    score,
    validate_metrics,
)


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
    assert score("color_mean_shift", {"feats": shifted}, stats) == pytest.approx(0.1, rel=1e-9)
    assert score("color_fd", {"feats": shifted}, stats) == pytest.approx(0.01, abs=1e-9)  # pure mean shift


def test_metric_registry():
    assert extractor_for("fid") == extractor_for("kid") == extractor_for("fid_inf") == "inception"
    assert extractor_for("color_fd") == extractor_for("color_mean_shift") == extractor_for("color_fd_inf") == "color"
    assert extractor_for("fd_digits", "digits") == extractor_for("fd_digits_inf", "digits") == "fd_digits"
    assert extractor_for("cs_digits", "digits") == "fd_digits"  # the same classifier: its logits
    assert {"fd_<dataset>", "fd_<dataset>_inf", "cs_<dataset>", "fid_inf", "color_fd_inf"} <= set(METRICS)
    with pytest.raises(ValueError, match="valid metrics: fid, fid_inf, kid, color_fd, color_fd_inf, color_mean_shift, "
                                         "fd_digits, fd_digits_inf, cs_digits"):
        validate_metrics(["is"], "digits")
    with pytest.raises(ValueError, match="use fd_digits"):
        extractor_for("fd_colors", "digits")
    with pytest.raises(ValueError, match="use fd_digits_inf"):
        extractor_for("fd_colors_inf", "digits")
    with pytest.raises(ValueError, match="use cs_digits"):
        extractor_for("cs_colors", "digits")
    with pytest.raises(ValueError, match="unknown metric 'FID'"):
        extractor_for("FID")
    for bad in ("fd_", "fd__inf", "cs_", "kid_inf", "fid_inf_inf"):
        with pytest.raises(ValueError, match="unknown metric"):
            resolve_metric(bad)


def test_inf_suffix_parsing():
    """`fd_digits_inf` is the _inf variant of fd_digits, never dataset `digits_inf`; with a dataset
    the names are matched exactly, so a dataset whose name ends in _inf still works."""
    m, ds = resolve_metric("fd_digits_inf")
    assert (m.name, ds) == ("fd_<dataset>_inf", "digits")
    m, ds = resolve_metric("fd_digits_inf", "digits")
    assert (m.name, ds) == ("fd_<dataset>_inf", "digits")
    m, ds = resolve_metric("fd_digits_inf", "digits_inf")
    assert (m.name, ds) == ("fd_<dataset>", "digits_inf")
    assert resolve_metric("fd_digits_inf_inf", "digits_inf")[0].name == "fd_<dataset>_inf"
    assert resolve_metric("fid_inf")[0].compute is REGISTRY["fd_<dataset>_inf"].compute


@pytest.mark.parametrize("name", [n.replace("<dataset>", "digits") for n in METRICS])
def test_every_metric_declares_its_direction(name):
    assert higher_is_better(name) is name.startswith("cs_")  # cs is a score; everything else a distance


def test_higher_is_better_unknown_raises():
    with pytest.raises(ValueError, match="valid metrics"):
        higher_is_better("inception_score")


def test_classifier_score_closed_forms():
    k = 4
    confident = np.eye(k)[np.arange(40) % k] * 50.0  # one-hot-like, balanced classes
    assert classifier_score(confident) == pytest.approx(k, rel=1e-6)
    same = np.tile(np.random.default_rng(0).normal(size=(1, k)), (30, 1))  # every sample the same p(y|x)
    assert classifier_score(same) == pytest.approx(1.0, abs=1e-12)
    # two classes, p(y|x) = (a, 1-a) or (1-a, a) half the time each: p(y) = (1/2, 1/2) and
    # KL = a log(2a) + (1-a) log(2(1-a)) for every sample
    a = 0.8
    logits = np.log(np.array([[a, 1 - a], [1 - a, a]] * 10))
    assert classifier_score(logits) == pytest.approx(np.exp(a * np.log(2 * a) + (1 - a) * np.log(2 * (1 - a))), rel=1e-12)
    assert score("cs_digits", {"feats": np.zeros((40, 2)), "logits": confident}, RefStats(None, None, None, 0, "k")) == \
        pytest.approx(k, rel=1e-6)


# fd_inf. The null case: N samples of N(0, I_d) against the statistics of M = 50 N others. To
# first order in 1/N the plain FD is then biased by  c/N,  c = d + d(d+1)/4  (E||mu_hat||^2 = d/N;
# Tr(S + I - 2 S^(1/2)) ~ ||S - I||_F^2 / 4 with E||S - I||_F^2 = d(d+1)/N), and its standard
# deviation is about sqrt(2d + d(d+1)/4) / N (chi-square terms of the same expansion).
D, N, M = 32, 1024, 51_200


def _null(seed, shift=0.0):
    rng = np.random.default_rng(seed)
    gen = rng.normal(size=(N, D))
    gen[:, 0] += shift
    return gen, *gaussian_stats(rng.normal(size=(M, D)))


def test_fd_inf_sizes():
    assert fd_inf_sizes(128) == [64, 73, 82, 91, 101, 110, 119, 128]
    assert fd_inf_sizes(3) == [2, 3]
    with pytest.raises(ValueError, match="at least 3 samples"):
        fd_inf_sizes(2)
    with pytest.raises(ValueError, match="distinct subset sizes"):
        fd_inf(np.zeros((10, 2)), np.zeros(2), np.eye(2), sizes=[5])


def test_fd_inf_of_one_gaussian_is_near_zero_where_plain_fd_is_not():
    """Bound: what the extrapolation cannot remove is the reference side's own bias c/M and the
    noise; |fd_inf| < c/M + 5 sd (0.094 here) while plain FD sits at c/N = 0.289 +- 5 sd."""
    c = D + D * (D + 1) / 4
    sd = np.sqrt(2 * D + D * (D + 1) / 4) / N
    gen, mu, sigma = _null(0)
    plain = fd_from_feats(gen, mu, sigma)
    assert abs(plain - c / N) < 5 * sd  # the closed-form small-N bias
    assert plain > c / M + 10 * sd
    got = fd_inf(gen, mu, sigma)
    assert abs(got) < c / M + 5 * sd
    assert fd_inf(gen, mu, sigma) == got  # seeded: deterministic
    assert fd_inf(gen, mu, sigma, seed=1) != got


def test_fd_inf_of_a_shifted_gaussian_is_the_squared_shift():
    """mu_gen - mu_ref = (1, 0, ...), equal covariances: the true FD is exactly 1. One sample's
    fd_inf carries the noise of 2 delta . (mu_hat - mu) (sd 2/sqrt(N)) amplified by the
    extrapolation (measured sd 0.083), so average 8 seeds (sd ~0.03): within 0.1 of 1 (> 3 sd),
    where the plain FD's mean is 1 + c/N = 1.29."""
    runs = [_null(seed, shift=1.0) for seed in range(8)]
    inf = np.mean([fd_inf(g, mu, s) for g, mu, s in runs])
    plain = np.mean([fd_from_feats(g, mu, s) for g, mu, s in runs])
    assert abs(inf - 1.0) < 0.1
    assert plain - 1.0 > 0.2


def test_fd_inf_over_corrects_when_d_over_n_is_large():
    """Where it does not hold (measured, so the limit stays documented): 64-d features, N = 128,
    true FD 0. Plain FD is ~9.3, fd_inf ~-2.5; the row's floor (real images at the same N) is
    then the honest yardstick."""
    rng = np.random.default_rng(0)
    mu, sigma = np.zeros(64), np.eye(64)
    got = [fd_inf(rng.normal(size=(128, 64)), mu, sigma) for _ in range(4)]
    assert all(-4.0 < g < -1.0 for g in got)


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
