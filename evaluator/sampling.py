"""Respaced ancestral DDPM and DDIM samplers (ADM notation, float64 coefficients).

Respacing (improved-diffusion respace.py): keep the retained alphas_cumprod, recompute
beta_i = 1 - abar_i / abar_{i-1}, call the network with the original timesteps. The retained
timesteps come from diffusers' DDPMScheduler; with timestep_spacing="linspace" they equal ADM's
space_timesteps(T, "N") (tests/evaluator/test_sampling.py proves it).

Determinism: sample number k (counted from 0 over the whole run) draws its label, its x_T and
every step's noise from its own generator seeded by (seed, k), so any split of the indices into
batches or actor shards yields the same images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

SAMPLERS = ("ddpm", "ddim")
VARIANCES = ("auto", "fixed_small", "fixed_large", "learned_range")
SPACINGS = ("linspace", "leading", "trailing")  # diffusers' timestep_spacing
TARGETS = ("eps", "x0", "v")


def retained_timesteps(num_train_timesteps: int, steps: int, spacing: str = "linspace") -> list[int]:
    """Ascending original timesteps kept for a `steps`-step sampler (diffusers' spacing rules)."""
    from diffusers import DDPMScheduler

    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must be in 1..{num_train_timesteps}, got {steps}")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
    sched = DDPMScheduler(num_train_timesteps=num_train_timesteps, timestep_spacing=spacing)
    sched.set_timesteps(steps)
    ts = sorted(int(t) for t in sched.timesteps)
    if len(set(ts)) != steps:
        raise ValueError(f"spacing {spacing!r} gives duplicate timesteps for steps={steps}")
    return ts


@dataclass(frozen=True, eq=False)
class Respaced:
    """A respaced process: index i runs over the retained timesteps in ascending order."""

    timesteps: torch.Tensor  # int64 [N], original t
    alphas_cumprod: torch.Tensor  # float64 [N], retained abar
    betas: torch.Tensor  # float64 [N], 1 - abar_i / abar_{i-1} (abar_{-1} = 1)

    @property
    def alphas_cumprod_prev(self) -> torch.Tensor:
        return torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod[:-1]])

    @property
    def posterior_variance(self) -> torch.Tensor:
        # DDPM Eq. 7: beta~_i = beta_i (1 - abar_{i-1}) / (1 - abar_i)
        return self.betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)

    def log_variance(self, kind: str) -> torch.Tensor:
        """ADM's log-variance tables; index 0 borrows index 1 (its noise is never used)."""
        post = self.posterior_variance
        if len(post) == 1:
            return torch.log(self.betas)
        if kind == "fixed_small":
            return torch.log(torch.cat([post[1:2], post[1:]]))
        if kind == "fixed_large":
            return torch.log(torch.cat([post[1:2], self.betas[1:]]))
        raise ValueError(f"unknown variance {kind!r}; valid: fixed_small, fixed_large")


def respace(alphas_cumprod: torch.Tensor, steps: int | None = None, *, timesteps: Sequence[int] | None = None,
            spacing: str = "linspace") -> Respaced:
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    if timesteps is None:
        timesteps = retained_timesteps(len(abar), steps, spacing)
    ts = torch.tensor(sorted(int(t) for t in timesteps), dtype=torch.int64)
    kept = abar[ts]
    prev = torch.cat([kept.new_ones(1), kept[:-1]])
    return Respaced(ts, kept, 1 - kept / prev)


@dataclass(eq=False)
class Denoiser:
    """A trained network plus what is needed to read its output."""

    unet: torch.nn.Module  # diffusers UNet2DModel
    alphas_cumprod: torch.Tensor  # float64 [T] of the training schedule
    target: str = "eps"
    learn_sigma: bool = False

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; valid targets: {', '.join(TARGETS)}")
        self.alphas_cumprod = torch.as_tensor(self.alphas_cumprod, dtype=torch.float64)

    @property
    def num_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    @property
    def num_classes(self) -> int | None:
        return getattr(self.unet.config, "num_class_embeds", None)

    @property
    def channels(self) -> int:
        return self.unet.config.in_channels

    @property
    def resolution(self) -> int:
        s = self.unet.config.sample_size
        return s if isinstance(s, int) else s[0]

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def raw(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None):
        """(prediction in target units, variance logits v or None)."""
        out = self.unet(x, t, class_labels=labels).sample
        if self.learn_sigma:
            return out[:, : x.shape[1]], out[:, x.shape[1]:]
        return out, None

    def x0_eps(self, out: torch.Tensor, x_t: torch.Tensor, abar: float):
        """(x0_hat, eps_hat) from the output; Eq. 6 for an eps model."""
        a, s = math.sqrt(abar), math.sqrt(1 - abar)
        if self.target == "eps":
            return torch.sub(x_t, out, alpha=s).div_(a), out  # one allocation: this runs once per sampling step
        if self.target == "x0":
            return out, (x_t - a * out) / s
        return a * x_t - s * out, s * x_t + a * out  # v = a eps - s x0


def sample_seed(seed: int, index: int) -> int:
    return (int(seed) * 0x9E3779B97F4A7C15 + int(index) * 0xBF58476D1CE4E5B9 + 1) % (2**63 - 1)


def _noise(gens: list[torch.Generator], shape: tuple[int, ...], out: torch.Tensor | None = None) -> torch.Tensor:
    """One draw per sample from its own generator, written into `out` (reused across steps) when given."""
    if out is None:
        out = torch.empty((len(gens), *shape))
    for k, g in enumerate(gens):
        torch.randn(shape, generator=g, out=out[k])
    return out


def resolve_variance(variance: str, learn_sigma: bool) -> str:
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; valid: {', '.join(VARIANCES)}")
    if variance == "auto":  # ADM's defaults
        return "learned_range" if learn_sigma else "fixed_large"
    if variance == "learned_range" and not learn_sigma:
        raise ValueError("variance 'learned_range' needs a learn_sigma model")
    return variance


@torch.inference_mode()
def sample(model: Denoiser, steps: int, *, sampler: str = "ddpm", num: int, start: int = 0, seed: int = 0,
           batch_size: int = 64, eta: float = 0.0, variance: str = "auto", spacing: str = "linspace",
           timesteps: Sequence[int] | None = None, clip_denoised: bool = True
           ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images [num, C, H, W] float32 in [-1, 1] (CPU) for sample indices start..start+num-1, and
    their class labels (None for an unconditional model)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid samplers: {', '.join(SAMPLERS)}")
    variance = resolve_variance(variance, model.learn_sigma)
    rs = respace(model.alphas_cumprod, steps, timesteps=timesteps, spacing=spacing)
    images, labels = [], []
    for lo in range(start, start + num, batch_size):
        idx = range(lo, min(lo + batch_size, start + num))
        x, y = _sample_batch(model, rs, sampler, idx, seed, eta, variance, clip_denoised)
        images.append(x)
        labels.append(y)
    y = None if model.num_classes is None else torch.cat(labels)
    return torch.cat(images), y


def _sample_batch(model, rs: Respaced, sampler, idx, seed, eta, variance, clip):
    dev = model.device
    shape = (model.channels, model.resolution, model.resolution)
    gens = [torch.Generator().manual_seed(sample_seed(seed, k)) for k in idx]
    y = None
    if model.num_classes is not None:
        y = torch.cat([torch.randint(model.num_classes, (1,), generator=g) for g in gens])
    x = _noise(gens, shape).to(dev)
    y_dev = None if y is None else y.to(dev)
    noise = torch.empty((len(idx), *shape))  # CPU buffer for each step's draws (the generators are CPU ones)
    abar, abar_prev, betas = rs.alphas_cumprod.tolist(), rs.alphas_cumprod_prev.tolist(), rs.betas.tolist()
    if sampler == "ddpm":
        # q(x_{i-1} | x_i, x0_hat): DDPM Eq. 7 with the respaced betas, coefficients computed once
        c0 = [b * math.sqrt(ap) / (1 - a) for a, ap, b in zip(abar, abar_prev, betas)]
        ct = [(1 - ap) * math.sqrt(1 - b) / (1 - a) for a, ap, b in zip(abar, abar_prev, betas)]
        if variance != "learned_range":
            std = [math.exp(0.5 * lv) for lv in rs.log_variance(variance).tolist()]
        else:
            log_lo, log_hi = rs.log_variance("fixed_small").tolist(), torch.log(rs.betas).tolist()
    for i in reversed(range(len(rs.timesteps))):
        t = torch.full((len(idx),), int(rs.timesteps[i]), dtype=torch.long, device=dev)
        out, v = model.raw(x, t, y_dev)
        x0, eps = model.x0_eps(out, x, abar[i])
        if clip:
            x0 = x0.clamp_(-1, 1)
        if sampler == "ddpm":
            x = torch.add(x0.mul_(c0[i]), x, alpha=ct[i])
            if i > 0:
                z = _noise(gens, shape, noise).to(dev)
                if v is None:
                    x.add_(z, alpha=std[i])
                else:  # ADM learned range: log s^2 = f log beta + (1 - f) log beta~, f = (v + 1) / 2
                    frac = (v + 1) / 2
                    x.addcmul_(torch.exp(0.5 * (frac * log_hi[i] + (1 - frac) * log_lo[i])), z)
        else:
            # DDIM (Song et al. Eq. 12), eps re-derived from the clipped x0 as in ADM
            eps = (x - math.sqrt(abar[i]) * x0) / math.sqrt(1 - abar[i])
            sigma = eta * math.sqrt((1 - abar_prev[i]) / (1 - abar[i]) * (1 - abar[i] / abar_prev[i]))
            x = math.sqrt(abar_prev[i]) * x0 + math.sqrt(max(1 - abar_prev[i] - sigma**2, 0.0)) * eps
            if i > 0 and sigma > 0:
                x = x + sigma * _noise(gens, shape, noise).to(dev)
    return x.float().cpu(), y


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8, rounding (the 8-bit quantisation a saved PNG would have)."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def load_denoiser(checkpoint_dir: str, *, ema: bool = True, device: str | torch.device = "cpu"):
    """(Denoiser, TrainConfig) from a trainer checkpoint directory."""
    from trainer.checkpoint import load_model
    from trainer.schedules import get_schedule

    unet, cfg = load_model(checkpoint_dir, ema=ema)
    sched = get_schedule(cfg.schedule, cfg.num_timesteps)
    den = Denoiser(unet.to(device).eval(), sched.alphas_cumprod, target=cfg.target, learn_sigma=cfg.learn_sigma)
    return den, cfg
