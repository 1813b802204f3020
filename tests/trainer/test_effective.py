"""The effective weight over lambda: definitions, the equivalences that hold in this codebase, and
that the density it reports is the one the loss's sampler actually draws from."""
import numpy as np
import pytest
import torch
from scipy import stats

from trainer import t_sampling as TS
from trainer import weighting as W
from trainer.config import TrainConfig
from trainer.effective import (
    catalogue,
    config_effective_weight,
    effective_weight,
    objective_distance,
    same_objective,
)
from trainer.loss import WeightedLoss
from trainer.schedules import get_schedule, log_snr_widths


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _warm_history(T: int, k: int = 10) -> dict:
    """A warmed-up LossHistory state whose RMS loss rises with t."""
    h = TS.LossHistory(T, k)
    t = torch.arange(T).repeat(k)
    h.update(t, 0.1 + t.double() / T + 0.05 * torch.rand(len(t), generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    assert h.warmed_up()
    return h.state_dict()


def test_the_definition_in_closed_form():
    e = effective_weight("linear", 1000, "debias")
    snr = get_schedule("linear", 1000).snr
    widths = log_snr_widths(snr).numpy()
    m = (snr.rsqrt() / 1000).numpy()  # p(t) = 1/T, weight = 1/sqrt(SNR), no importance weight
    np.testing.assert_allclose(e.lam, snr.log().numpy())
    np.testing.assert_allclose(e.density, m / widths / m.sum(), rtol=1e-12)
    assert e.mass == pytest.approx(m.sum(), rel=1e-12)
    # unit mass over lambda by the trapezoid rule, for the effective weight and for the sampling density
    assert np.trapezoid(e.density[::-1], e.lam[::-1]) == pytest.approx(1.0, rel=1e-12)
    assert np.trapezoid(e.sampling_density[::-1], e.lam[::-1]) == pytest.approx(1.0, rel=1e-12)
    # normalize only rescales: same density, mass = 1 (the mean of a mean-one table)
    n = effective_weight("linear", 1000, "debias", normalize=True)
    np.testing.assert_allclose(n.density, e.density, rtol=1e-12)
    assert n.mass == pytest.approx(1.0)
    # a learned log-variance divides the weight by exp(u)
    u = np.linspace(-1, 1, 1000)
    lw = effective_weight("linear", 1000, "debias", logvar=u)
    np.testing.assert_allclose(lw.weight, e.weight / np.exp(u), rtol=1e-12)
    assert config_effective_weight(TrainConfig(weighting="debias")).density.tolist() == e.density.tolist()


@pytest.mark.parametrize("weighting", ["constant", "debias", "min_snr", "p2", "sigmoid", "edm"])
def test_unbiased_samplers_keep_the_uniform_objective(weighting):
    # t_sampling="importance" draws p(t) ~ w(t) and weights by mean(w) = w(t)/(T p(t)); loss_aware weights by
    # 1/(T p(t)) too: both have uniform sampling's effective weight (and scale), only the variance differs
    uni = effective_weight("linear", 1000, weighting)
    for other in (effective_weight("linear", 1000, weighting, t_sampling="importance"),
                  effective_weight("linear", 1000, weighting, t_sampling="loss_aware", loss_history=_warm_history(1000))):
        assert objective_distance(uni, other) < 1e-12 and same_objective(uni, other)
        assert other.mass == pytest.approx(uni.mass, rel=1e-9)


def test_debias_with_importance_sampling_is_not_the_constant_weighting():
    # its per-sample weight is the constant mean(w), yet t is drawn ~ 1/sqrt(SNR): the objective is debias'
    imp = effective_weight("linear", 1000, "debias", t_sampling="importance")
    assert np.ptp(imp.weight) == 0  # looks like a constant weighting sample by sample
    assert not same_objective(imp, effective_weight("linear", 1000, "constant"), tol=0.1)
    assert not same_objective(imp, effective_weight("linear", 1000, "constant", t_sampling="importance"), tol=0.1)
    assert objective_distance(imp, effective_weight("linear", 1000, "constant")) > 0.5
    # nor are objective-defining samplers unbiased: lognormal changes the objective
    assert not same_objective(effective_weight("linear", 1000, "edm", t_sampling="lognormal"),
                              effective_weight("linear", 1000, "edm"), tol=0.1)


def test_sigmoid_is_its_formula_over_lambda_on_any_schedule():
    for schedule in ("linear", "cosine"):
        for b in (-2.0, 0.0, 2.0):
            e = effective_weight(schedule, 1000, "sigmoid", {"b": b})
            f = _sigmoid(b - e.lam)
            np.testing.assert_allclose(e.density, f / np.trapezoid(f[::-1], e.lam[::-1]), rtol=1e-10)
    # lambda = b: half the weight of the low-lambda plateau
    e = effective_weight("linear", 1000, "sigmoid", {"b": 0.0})
    mid, low = np.interp(0.0, e.lam[::-1], e.density[::-1]), e.density[-1]
    assert mid / low == pytest.approx(0.5 / _sigmoid(-e.lam[-1]), rel=1e-3)
    # Kingma & Gao: the schedule only sets the lambda range; inside a common range the objectives agree
    lin, cos = effective_weight("linear", 1000, "sigmoid", {"b": 2.0}), effective_weight("cosine", 1000, "sigmoid", {"b": 2.0})
    assert same_objective(lin, cos, tol=1e-3, window=(-10.0, 9.0))
    assert not same_objective(lin, cos, tol=0.1)  # cosine's last step reaches lambda = -19.8, where sigmoid(2 - lambda) = 1


def test_debias_on_the_cosine_schedule_is_kingma_gaos_sigmoid_with_b_0():
    # cosine SNR = cot^2(pi v/2): p(lambda) ~ 1/(e^{-lambda/2} + e^{lambda/2}), so 1/sqrt(SNR) p(lambda) ~ sigmoid(-lambda)
    deb, sig = effective_weight("cosine", 1000, "debias"), effective_weight("cosine", 1000, "sigmoid", {"b": 0.0})
    ratio = deb.density / _sigmoid(-deb.lam)
    inner = slice(100, 990)  # outside: the first steps (abar normalised by abar(0), s = 0.008) and the clipped last betas
    assert np.ptp(ratio[inner]) / ratio[inner].mean() < 0.01
    assert same_objective(deb, sig, tol=5e-3, window=(-10.0, 7.0))
    assert not same_objective(effective_weight("cosine", 1000, "constant"), sig, tol=0.1, window=(-10.0, 7.0))
    # on the linear schedule debias is not a sigmoid
    assert not same_objective(effective_weight("linear", 1000, "debias"), effective_weight("linear", 1000, "sigmoid", {"b": 0.0}),
                              tol=0.05, window=(-10.0, 7.0))


@pytest.mark.parametrize("t_sampling", list(TS.T_SAMPLINGS))
def test_reported_density_is_what_the_sampler_draws(t_sampling):
    T, n = 1000, 200_000
    history = _warm_history(T) if t_sampling == "loss_aware" else None
    loss = WeightedLoss(get_schedule("linear", T), "debias", t_sampling=t_sampling)
    if history is not None:
        loss.load_state_dict({"history": history})
    e = effective_weight("linear", T, "debias", t_sampling=t_sampling, loss_history=history)
    np.testing.assert_allclose(e.probs, loss.probs.numpy(), rtol=1e-12)
    np.testing.assert_allclose(e.sampling_density * log_snr_widths(loss.schedule.snr).numpy(), e.probs, rtol=1e-12)
    t = loss.sample_t(n, generator=torch.Generator().manual_seed(0))
    groups = np.minimum((np.cumsum(e.probs) - e.probs / 2) * 40, 39).astype(int)  # 40 groups of t, ~equal probability
    expected = np.bincount(groups, weights=e.probs, minlength=40) * n
    observed = np.bincount(groups[t.numpy()], minlength=40)
    keep = expected > 0
    assert stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum()).pvalue > 1e-3
    if t_sampling != "uniform":  # and the test tells the samplers apart
        uniform = np.bincount(groups, minlength=40) / T * n
        assert stats.chisquare(observed[keep], uniform[keep] * observed[keep].sum() / uniform[keep].sum()).pvalue < 1e-6


def test_the_catalogue_lists_every_entry_with_formula_and_source():
    rows = catalogue()
    assert {r["name"] for r in rows if r["kind"] == "weighting"} == set(W.WEIGHTINGS)
    assert {r["name"] for r in rows if r["kind"] == "t_sampling"} == set(TS.T_SAMPLINGS)
    assert [r["name"] for r in rows if r["kind"] == "learned_weighting"] == ["learned_weighting"]
    assert all(r["formula"] and r["source"] and isinstance(r["params"], dict) for r in rows)
    assert next(r for r in rows if r["name"] == "lognormal")["params"] == {"p_mean": -1.2, "p_std": 1.2}
