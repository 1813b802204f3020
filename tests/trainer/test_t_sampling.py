"""The t-sampling registry: closed forms, the reference procedures (EDM, diffusers), the loss-aware
resampler's warm-up and second moment, and validation."""
import math

import pytest
import torch
from scipy import stats

from trainer import t_sampling as TS
from trainer.schedules import get_schedule, log_snr_widths

SNR = get_schedule("linear", 1000).snr
N = 200_000


def _chi2_pvalue(t: torch.Tensor, probs: torch.Tensor, bins: int = 40) -> float:
    """Chi-square goodness of fit of draws t to probs, over groups of t of about equal probability."""
    cdf = probs.cumsum(0)
    group = torch.bucketize(cdf - probs / 2, torch.linspace(0, 1, bins + 1)[1:-1])  # t -> its group
    expected = torch.zeros(bins, dtype=torch.float64).index_add_(0, group, probs) * len(t)
    observed = torch.bincount(group[t], minlength=bins).double()
    keep = expected > 0
    return stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum()).pvalue


def test_every_sampler_gives_a_distribution_and_is_documented():
    assert list(TS.T_SAMPLINGS)[:2] == ["uniform", "importance"] and set(TS.ABOUT) == set(TS.T_SAMPLINGS)
    for name in TS.T_SAMPLINGS:
        p = TS.probs(name, SNR, TS.validate(name), weights=SNR.rsqrt())
        assert p.shape == SNR.shape and p.dtype == torch.float64
        assert (p >= 0).all() and p.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert TS.UNBIASED == {"importance", "loss_aware"}


def test_parameters_are_read_from_signatures_and_validated():
    assert TS.sampler_params("uniform") == {} and TS.sampler_params("importance") == {}
    assert TS.sampler_params("lognormal") == {"p_mean": -1.2, "p_std": 1.2}
    assert TS.sampler_params("logit_normal") == {"m": 0.0, "s": 1.0}
    assert TS.sampler_params("loss_aware") == {"history_per_term": 10.0, "uniform_prob": 0.001}
    with pytest.raises(ValueError, match="unknown t_sampling 'sorted'; valid: uniform, importance, lognormal, logit_normal, loss_aware"):
        TS.validate("sorted")
    with pytest.raises(ValueError, match="unknown parameter.*P_mean.*valid parameters: p_mean, p_std"):
        TS.validate("lognormal", {"P_mean": 0})
    with pytest.raises(ValueError, match="valid parameters: none"):
        TS.validate("uniform", {"m": 0})
    for name, bad in (("lognormal", {"p_std": 0}), ("logit_normal", {"s": -1}), ("loss_aware", {"history_per_term": 2.5}),
                      ("loss_aware", {"uniform_prob": 0})):
        with pytest.raises(ValueError, match=name):
            TS.validate(name, bad)


def test_lognormal_is_edms_density_of_log_sigma_on_the_schedule():
    p = TS.lognormal(SNR)
    log_sigma = -0.5 * SNR.log()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-12)
    widths = log_snr_widths(SNR) / 2  # the ln(sigma) width of each t (ln sigma = -lambda/2)
    assert (p / widths * widths).sum().item() == pytest.approx(1.0, abs=1e-12)  # a unit-mass density over ln(sigma)
    assert abs(log_sigma[(p / widths).argmax()].item() - (-1.2)) < 0.02  # that peaks at ln(sigma) = P_mean
    # mass per t = normal density of ln(sigma_t) times the ln(sigma) width of t, away from the ends
    density = torch.exp(-0.5 * ((log_sigma + 1.2) / 1.2) ** 2) / (1.2 * math.sqrt(2 * math.pi))
    inside = slice(20, 995)
    torch.testing.assert_close(p[inside], (density * widths)[inside] / (density * widths).sum(), rtol=2e-3, atol=1e-9)
    # EDM's procedure: sigma = exp(P_mean + P_std n); here kept within the schedule's range and put at the nearest t in ln(sigma)
    g = torch.Generator().manual_seed(0)
    draws = torch.randn(N, generator=g, dtype=torch.float64) * 1.2 - 1.2
    draws = draws[(draws >= log_sigma[0]) & (draws <= log_sigma[-1])]
    t = torch.bucketize(draws, (log_sigma[1:] + log_sigma[:-1]) / 2)
    assert _chi2_pvalue(t, p) > 1e-3
    assert _chi2_pvalue(t, TS.uniform(SNR)) < 1e-12  # the test has power


def test_logit_normal_is_sd3s_density_and_diffusers_procedure():
    T = 1000
    for m, s in ((0.0, 1.0), (0.5, 0.8)):
        p = TS.logit_normal(SNR, m, s)
        assert p.sum().item() == pytest.approx(1.0, abs=1e-12)
        # SD3 Eq. 19: pi_ln(u) = exp(-(logit u - m)^2 / (2 s^2)) / (s sqrt(2 pi) u (1 - u)), at the cell midpoints
        u = (torch.arange(T, dtype=torch.float64) + 0.5) / T
        pi_ln = torch.exp(-((torch.logit(u) - m) ** 2) / (2 * s**2)) / (s * math.sqrt(2 * math.pi) * u * (1 - u))
        torch.testing.assert_close(p[50:-50], pi_ln[50:-50] / T, rtol=1e-3, atol=0)
        # diffusers compute_density_for_timestep_sampling("logit_normal"): u = sigmoid(N(m, s)), t = floor(u T)
        g = torch.Generator().manual_seed(1)
        u_draw = torch.sigmoid(torch.normal(m, s, size=(N,), generator=g, dtype=torch.float64))
        assert _chi2_pvalue((u_draw * T).long(), p) > 1e-3
    assert TS.logit_normal(SNR, 1.0, 1.0)[900:].sum() > TS.logit_normal(SNR, 1.0, 1.0)[:100].sum()  # m > 0: noisier t


def test_loss_aware_is_uniform_during_warm_up_then_proportional_to_rms_loss():
    T, k = 4, 2
    snr = get_schedule("linear", T).snr
    history = TS.LossHistory(T, k)
    torch.testing.assert_close(TS.loss_aware(snr, k, 0.1, history=history), torch.full((T,), 0.25, dtype=torch.float64))
    history.update(torch.tensor([0, 0, 1, 1, 2, 2, 3]), torch.tensor([1.0, 3.0, 2.0, 2.0, 4.0, 4.0, 1.0]))
    assert not history.warmed_up()  # t=3 has one loss of two
    assert (TS.loss_aware(snr, k, 0.1, history=history) == 0.25).all()
    history.update(torch.tensor([3, 0]), torch.tensor([1.0, 5.0]))  # t=0 is full: its oldest loss (1) is shifted out
    assert history.warmed_up() and history.losses[0].tolist() == [3.0, 5.0] and history.counts.tolist() == [2, 2, 2, 2]
    rms = torch.tensor([math.sqrt((9 + 25) / 2), 2.0, 4.0, 1.0], dtype=torch.float64)
    expected = 0.9 * rms / rms.sum() + 0.1 / T
    torch.testing.assert_close(TS.loss_aware(snr, k, 0.1, history=history), expected)
    state = history.state_dict()
    again = TS.LossHistory(T, k)
    again.load_state_dict(state)
    assert torch.equal(again.losses, history.losses) and torch.equal(again.counts, history.counts)
    with pytest.raises(ValueError, match="does not fit"):
        TS.LossHistory(T, 3).load_state_dict(state)
