"""Noise schedules in float64. Notation follows the paper: abar_t = prod_s (1 - beta_s),
SNR(t) = abar_t / (1 - abar_t) (Eq. 4)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

SCHEDULES = ("linear", "cosine")


def linear_betas(num_timesteps: int) -> torch.Tensor:
    # ADM get_named_beta_schedule("linear"): 1e-4..0.02 for T=1000, scaled so other T match;
    # clipped at 0.999 (as the cosine schedule is) so that T < 50 stays a valid process.
    scale = 1000.0 / num_timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64).clamp(max=0.999)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    # Improved DDPM Eq. 17: abar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), betas clipped at 0.999.
    def abar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - abar((i + 1) / num_timesteps) / abar(i / num_timesteps), max_beta) for i in range(num_timesteps)]
    return torch.tensor(betas, dtype=torch.float64)


@dataclass(frozen=True, eq=False)
class Schedule:
    name: str
    num_timesteps: int
    betas: torch.Tensor  # float64 [T]
    alphas_cumprod: torch.Tensor  # float64 [T]

    @property
    def snr(self) -> torch.Tensor:
        return self.alphas_cumprod / (1.0 - self.alphas_cumprod)

    @property
    def sqrt_alphas_cumprod(self) -> torch.Tensor:
        return self.alphas_cumprod.sqrt()

    @property
    def sqrt_one_minus_alphas_cumprod(self) -> torch.Tensor:
        return (1.0 - self.alphas_cumprod).sqrt()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Eq. 3: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
        a = _gather(self.sqrt_alphas_cumprod, t, x0)
        s = _gather(self.sqrt_one_minus_alphas_cumprod, t, x0)
        return a * x0 + s * noise


def log_snr_widths(snr: torch.Tensor) -> torch.Tensor:
    """The width of lambda = log SNR that each t stands for: half the gap to each neighbour (float64
    [T], any order of t). sum_t f(lambda_t) * width_t is then exactly the trapezoid rule for the
    integral of f over lambda, and 1/(T * width_t) is the density of lambda under uniform t."""
    lam = snr.to(torch.float64).log()
    gaps = (lam[1:] - lam[:-1]).abs() / 2
    widths = torch.zeros_like(lam)
    widths[:-1] += gaps
    widths[1:] += gaps
    return widths


def _gather(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """table[t] as like's dtype/device, shaped [N, 1, 1, 1] to broadcast over images."""
    out = table.to(like.device)[t.to(like.device)].to(like.dtype)
    return out.view(-1, *([1] * (like.dim() - 1)))


@lru_cache(maxsize=32)
def get_schedule(name: str, num_timesteps: int) -> Schedule:
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}")
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    betas = linear_betas(num_timesteps) if name == "linear" else cosine_betas(num_timesteps)
    return Schedule(name, num_timesteps, betas, torch.cumprod(1.0 - betas, dim=0))
