"""Respacing equals ADM; the samplers equal diffusers' schedulers step for step; determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import linear_abar
from diffusers import DDIMScheduler, DDPMScheduler

from evaluator.sampling import respace, retained_timesteps, sample, sample_seed


def adm_space_timesteps(num_timesteps, section_counts):
    """improved-diffusion respace.space_timesteps, verbatim logic."""
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start_idx, all_steps = 0, []
    for i, section_count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
        cur_idx, taken = 0.0, []
        for _ in range(section_count):
            taken.append(start_idx + round(cur_idx))
            cur_idx += frac_stride
        all_steps += taken
        start_idx += size
    return set(all_steps)


def adm_respaced_betas(alphas_cumprod, use_timesteps):
    """improved-diffusion SpacedDiffusion.__init__."""
    last, new_betas = 1.0, []
    for i, abar in enumerate(alphas_cumprod):
        if i in use_timesteps:
            new_betas.append(1 - abar / last)
            last = abar
    return np.array(new_betas)


@pytest.mark.parametrize("n", [1000, 500, 250, 100, 50, 20])
def test_linspace_spacing_equals_adm(n):
    abar = linear_abar().numpy()
    adm = adm_space_timesteps(1000, [n])
    assert retained_timesteps(1000, n) == sorted(adm)
    rs = respace(torch.from_numpy(abar), n)
    np.testing.assert_array_equal(rs.betas.numpy(), adm_respaced_betas(abar, adm))
    np.testing.assert_array_equal(rs.alphas_cumprod.numpy(), abar[sorted(adm)])


def test_respaced_betas_match_diffusers_step_betas():
    """diffusers' DDPMScheduler recomputes beta_t = 1 - abar_t / abar_prev(t) on its timesteps."""
    abar = linear_abar()
    sch = DDPMScheduler(num_train_timesteps=1000, timestep_spacing="linspace")
    sch.set_timesteps(10)
    ours = respace(abar, 10)
    theirs = [float(1 - sch.alphas_cumprod[t] / (sch.alphas_cumprod[sch.previous_timestep(t)] if sch.previous_timestep(t) >= 0 else 1.0))
              for t in sch.timesteps]
    np.testing.assert_allclose(ours.betas.numpy()[::-1], theirs, rtol=1e-5, atol=1e-7)  # diffusers: float32


def test_full_respacing_is_identity():
    abar = linear_abar()
    rs = respace(abar, 1000)
    from trainer.schedules import get_schedule

    np.testing.assert_allclose(rs.betas.numpy(), get_schedule("linear", 1000).betas.numpy(), rtol=1e-10)


def _diffusers_ddpm(den, steps, seed_index, variance, seed=0):
    sch = DDPMScheduler(num_train_timesteps=1000, timestep_spacing="linspace", variance_type=variance,
                        trained_betas=(1 - den.alphas_cumprod / torch.cat([torch.ones(1, dtype=torch.float64), den.alphas_cumprod[:-1]])).numpy())
    sch.set_timesteps(steps)
    g = torch.Generator().manual_seed(sample_seed(seed, seed_index))
    x = torch.randn((1, den.channels, den.resolution, den.resolution), generator=g)
    with torch.inference_mode():
        for t in sch.timesteps:
            out = den.unet(x, t).sample
            x = sch.step(out, t, x, generator=g).prev_sample
    return x


@pytest.mark.parametrize("variance,learn_sigma", [("fixed_small", False), ("fixed_large", False), ("learned_range", True)])
def test_ddpm_equals_diffusers_scheduler(make_denoiser, variance, learn_sigma):
    den = make_denoiser(learn_sigma=learn_sigma)
    ours, _ = sample(den, 10, sampler="ddpm", num=3, variance=variance)
    for k in range(3):
        ref = _diffusers_ddpm(den, 10, k, variance)
        torch.testing.assert_close(ours[k : k + 1], ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_equals_diffusers_scheduler(make_denoiser, eta):
    """On evenly spaced timesteps (where DDIMScheduler's prev = t - T/N is the previous retained
    timestep) our DDIM equals diffusers' with clipping and the clipped model output."""
    den = make_denoiser()
    ts = list(range(0, 1000, 100))
    ours, _ = sample(den, len(ts), sampler="ddim", num=2, eta=eta, timesteps=ts)
    sch = DDIMScheduler(num_train_timesteps=1000, timestep_spacing="leading", clip_sample=True, set_alpha_to_one=True)
    sch.set_timesteps(len(ts))
    assert sorted(int(t) for t in sch.timesteps) == ts
    for k in range(2):
        g = torch.Generator().manual_seed(sample_seed(0, k))
        x = torch.randn((1, 1, 8, 8), generator=g)
        with torch.inference_mode():
            for i, t in enumerate(sch.timesteps):
                out = den.unet(x, t).sample
                noise = torch.randn((1, 1, 8, 8), generator=g) if (eta > 0 and i < len(ts) - 1) else None
                x = sch.step(out, t, x, eta=eta, use_clipped_model_output=True, variance_noise=noise).prev_sample
        torch.testing.assert_close(ours[k : k + 1], x, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_deterministic_whatever_the_batch_split(make_denoiser, sampler):
    den = make_denoiser(num_classes=3)
    whole, y_whole = sample(den, 5, sampler=sampler, num=6, seed=7, batch_size=6, eta=0.5)
    parts = [sample(den, 5, sampler=sampler, num=n, start=s, seed=7, batch_size=b, eta=0.5) for s, n, b in [(0, 1, 1), (1, 3, 2), (4, 2, 2)]]
    split = torch.cat([p[0] for p in parts])
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=0)
    assert torch.equal(torch.cat([p[1] for p in parts]), y_whole)
    other, _ = sample(den, 5, sampler=sampler, num=6, seed=8, batch_size=6, eta=0.5)
    assert not torch.allclose(other, whole)


def test_class_conditional_labels_are_used(make_denoiser):
    den = make_denoiser(num_classes=4)
    x, y = sample(den, 3, num=8, seed=1)
    assert y.shape == (8,) and y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < 4
    assert len(set(y.tolist())) > 1
    assert x.shape == (8, 1, 8, 8) and x.abs().max() <= 1.5


@pytest.mark.parametrize("target", ["x0", "v"])
def test_other_targets_sample(make_denoiser, target):
    x, _ = sample(make_denoiser(target=target), 4, num=2)
    assert torch.isfinite(x).all()


def test_every_step_count_runs(make_denoiser):
    den = make_denoiser()
    for steps in (1, 2, 3):
        x, _ = sample(den, steps, num=1)
        assert torch.isfinite(x).all()


def test_unknown_names_raise(make_denoiser):
    den = make_denoiser()
    with pytest.raises(ValueError, match="valid samplers: ddpm, ddim"):
        sample(den, 2, sampler="euler", num=1)
    with pytest.raises(ValueError, match="valid"):
        sample(den, 2, variance="tiny", num=1)
    with pytest.raises(ValueError, match="learn_sigma"):
        sample(den, 2, variance="learned_range", num=1)
    with pytest.raises(ValueError, match="1..1000"):
        sample(den, 1001, num=1)
