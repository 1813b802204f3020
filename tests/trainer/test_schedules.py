import math

import pytest
import torch

from trainer.schedules import SCHEDULES, get_schedule


def test_linear_matches_adm_for_1000_steps():
    s = get_schedule("linear", 1000)
    assert s.betas.dtype == torch.float64 and s.alphas_cumprod.dtype == torch.float64
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert s.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)


def test_linear_scales_with_num_timesteps():
    s = get_schedule("linear", 250)
    assert s.betas[0].item() == pytest.approx(4e-4) and s.betas[-1].item() == pytest.approx(0.08)


def test_cosine_follows_improved_ddpm():
    s = get_schedule("cosine", 1000)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    assert s.alphas_cumprod[499].item() == pytest.approx(f(500 / 1000) / f(0), rel=1e-6)
    assert s.betas.max().item() <= 0.999


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", [10, 1000, 4000])
def test_snr_is_abar_over_one_minus_abar_and_decreasing(name, T):
    s = get_schedule(name, T)
    abar = s.alphas_cumprod
    torch.testing.assert_close(s.snr, abar / (1 - abar))
    assert (s.snr[1:] < s.snr[:-1]).all()


def test_q_sample_is_eq3():
    s = get_schedule("linear", 1000)
    x0, noise, t = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.tensor([0, 500, 999])
    xt = s.q_sample(x0, t, noise)
    for i in range(3):
        a = s.alphas_cumprod[t[i]].item()
        torch.testing.assert_close(xt[i], math.sqrt(a) * x0[i] + math.sqrt(1 - a) * noise[i])


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(ValueError, match="valid schedules: linear, cosine"):
        get_schedule("sigmoid", 1000)
