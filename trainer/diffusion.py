"""Gaussian diffusion algebra shared by the loss and the samplers (ADM notation).

All tables are float64 [T] tensors derived from a Schedule; `gather` indexes them at t and
broadcasts over images."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from trainer.schedules import Schedule, _gather as gather

TARGETS = ("eps", "x0", "v")


def target_factor(schedule: Schedule, target: str) -> torch.Tensor:
    """c(t) such that eps-MSE = c(t) * MSE in the target's units, for a model of that target.
    x0 = (x_t - sqrt(1-abar) eps)/sqrt(abar)  =>  eps-MSE = SNR * x0-MSE;
    v = sqrt(abar) eps - sqrt(1-abar) x0       =>  eps-MSE = abar * v-MSE."""
    if target == "eps":
        return torch.ones_like(schedule.alphas_cumprod)
    if target == "x0":
        return schedule.snr
    if target == "v":
        return schedule.alphas_cumprod.clone()
    raise ValueError(f"unknown target {target!r}; valid targets: {', '.join(TARGETS)}")


def training_target(target: str, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    if target == "eps":
        return noise
    if target == "x0":
        return x0
    if target == "v":
        return gather(schedule.sqrt_alphas_cumprod, t, x0) * noise - gather(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * x0
    raise ValueError(f"unknown target {target!r}; valid targets: {', '.join(TARGETS)}")


def predict_x0_eps(target: str, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, schedule: Schedule):
    """(x0_hat, eps_hat) from a model output in the target's units (Eq. 6 for eps)."""
    a, s = gather(schedule.sqrt_alphas_cumprod, t, x_t), gather(schedule.sqrt_one_minus_alphas_cumprod, t, x_t)
    if target == "eps":
        return (x_t - s * out) / a, out
    if target == "x0":
        return out, (x_t - a * out) / s
    if target == "v":
        return a * x_t - s * out, s * x_t + a * out
    raise ValueError(f"unknown target {target!r}; valid targets: {', '.join(TARGETS)}")


@dataclass(frozen=True, eq=False)
class Posterior:
    """q(x_{t-1} | x_t, x0) coefficients (DDPM Eq. 6-7)."""

    coef_x0: torch.Tensor
    coef_xt: torch.Tensor
    variance: torch.Tensor
    log_variance_clipped: torch.Tensor
    log_betas: torch.Tensor  # upper bound of the learned log-variance range (ADM)


@lru_cache(maxsize=32)
def posterior(schedule: Schedule) -> Posterior:
    betas, abar = schedule.betas, schedule.alphas_cumprod
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    variance = betas * (1 - abar_prev) / (1 - abar)
    clipped = torch.log(torch.cat([variance[1:2], variance[1:]])) if len(variance) > 1 else torch.log(betas)
    return Posterior(
        coef_x0=betas * abar_prev.sqrt() / (1 - abar),
        coef_xt=(1 - abar_prev) * (1 - betas).sqrt() / (1 - abar),
        variance=variance,
        log_variance_clipped=clipped,
        log_betas=torch.log(betas),
    )


def posterior_mean(schedule: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    p = posterior(schedule)
    return gather(p.coef_x0, t, x_t) * x0 + gather(p.coef_xt, t, x_t) * x_t


def learned_log_variance(schedule: Schedule, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ADM learned range: log sigma^2 = f log beta_t + (1 - f) log beta~_t, f = (v + 1) / 2."""
    p = posterior(schedule)
    frac = (v + 1) / 2
    return frac * gather(p.log_betas, t, v) + (1 - frac) * gather(p.log_variance_clipped, t, v)


def normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """Log-likelihood of 8-bit data x in [-1, 1] under a discretised Gaussian (ADM)."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def vb_terms_bpd(schedule, x0, x_t, t, model_mean, model_log_variance) -> torch.Tensor:
    """ADM's L_vb term in bits per dim, per sample: KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) for
    t > 0 and the decoder NLL at t = 0."""
    true_mean = posterior_mean(schedule, x0, x_t, t)
    true_logvar = gather(posterior(schedule).log_variance_clipped, t, x_t)
    kl = normal_kl(true_mean, true_logvar, model_mean, model_log_variance).flatten(1).mean(1) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_variance).flatten(1).mean(1) / math.log(2.0)
    return torch.where(t == 0, nll, kl)
