"""The training engine in plain PyTorch: state, one step, EMA, metric windows. The Ray Train
loop (trainer.run) and the plain-loop benchmark both drive it, so they do the same work.

Batches are drawn from a generator seeded by (seed, step): every rank draws the same *global*
batch (indices, t, noise) and takes its slice, so a resumed run replays the uninterrupted one
and N workers see exactly what 1 worker sees with the same global batch.

On CUDA (CPU is unchanged): the UNet and its inputs are channels-last (NHWC convolutions), the
forward runs under bf16 autocast, the whole (small, in-memory) dataset sits on the GPU and each
step's noise is drawn there, so no batch crosses PCIe and data loading never starves the GPU;
`cfg.compile` adds torch.compile."""
from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from trainer.config import TrainConfig
from trainer.data import ImageDataset, load_dataset
from trainer.loss import WeightedLoss, quartile_of
from trainer.models import build_unet
from trainer.schedules import get_schedule


@dataclass
class TrainState:
    cfg: TrainConfig
    model: torch.nn.Module  # what forward() runs (DDP-wrapped when distributed)
    raw: torch.nn.Module  # the UNet2DModel itself
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss: WeightedLoss
    data: ImageDataset
    device: torch.device
    rank: int = 0
    world_size: int = 1
    autocast: object = field(default=None)
    channels_last: bool = False  # CUDA: model and batches in NHWC
    noise_generator: torch.Generator | None = None  # CUDA: draws each step's noise on the device


def build_state(cfg: TrainConfig, *, device="cpu", rank: int = 0, world_size: int = 1, wrap=lambda m: m, data: ImageDataset | None = None) -> TrainState:
    if cfg.batch_size % world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {world_size} workers")
    device = torch.device(device)
    torch.manual_seed(cfg.seed * 1009 + rank)
    data = data or load_dataset(cfg.dataset)
    if cfg.class_conditional and data.num_classes is None:
        raise ValueError(f"dataset {cfg.dataset.name!r} has no labels; class_conditional needs them")
    raw = build_unet(
        cfg.preset,
        in_channels=data.channels,
        sample_size=data.resolution,
        num_classes=data.num_classes if cfg.class_conditional else None,
        learn_sigma=cfg.learn_sigma,
    ).to(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once
        raw = raw.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(raw).requires_grad_(False).eval()
    model = wrap(raw)
    if cfg.compile:
        model = torch.compile(model)
    schedule = get_schedule(cfg.schedule, cfg.num_timesteps)
    loss = WeightedLoss(schedule, cfg.weighting, cfg.weighting_params, target=cfg.target, normalize=cfg.normalize,
                        t_sampling=cfg.t_sampling, t_sampling_params=cfg.t_sampling_params,
                        learned_weighting=cfg.learned_weighting, learn_sigma=cfg.learn_sigma)
    if loss.logvar is None:
        optimizer = torch.optim.AdamW(raw.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:  # EDM2: u is trained by the network's optimizer (no weight decay on it)
        loss.logvar.to(device)
        optimizer = torch.optim.AdamW([{"params": raw.parameters()}, {"params": loss.logvar.parameters(), "weight_decay": 0.0}],
                                      lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_bf16 = cfg.mixed_precision == "bf16" or (cfg.mixed_precision == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
    images = data.images.to(device, memory_format=torch.channels_last) if cuda else data.images.to(device)
    labels = None if data.labels is None else data.labels.to(device)
    data = ImageDataset(data.name, images, labels, data.num_classes)
    noise_generator = torch.Generator(device=device) if cuda else None
    return TrainState(cfg, model, raw, ema, optimizer, loss, data, device, rank, world_size, autocast,
                      channels_last=cuda, noise_generator=noise_generator)


def batch_for_step(state: TrainState, step: int):
    """This rank's slice of the global batch of `step`: (x0, labels, t, noise)."""
    cfg, n = state.cfg, state.cfg.batch_size
    state.loss.at_step(step, cfg.steps)  # a curriculum weighting follows training progress
    seed = cfg.seed * 1_000_003 + step
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(state.data), (n,), generator=g)
    t = state.loss.sample_t(n, generator=g)
    shape = (n, *state.data.images.shape[1:])
    if state.noise_generator is not None:  # the same seed on the device: no noise crosses PCIe
        noise = torch.randn(shape, generator=state.noise_generator.manual_seed(seed), device=state.device)
    else:
        noise = torch.randn(shape, generator=g)
    per = n // state.world_size
    sl = slice(state.rank * per, (state.rank + 1) * per)
    idx, t, noise = idx[sl].to(state.device), t[sl].to(state.device), noise[sl].to(state.device)
    labels = state.data.labels[idx] if (cfg.class_conditional and state.data.labels is not None) else None
    x0 = state.data.images[idx]
    if state.channels_last:
        x0, noise = x0.contiguous(memory_format=torch.channels_last), noise.contiguous(memory_format=torch.channels_last)
    return x0, labels, t, noise


def train_step(state: TrainState, step: int) -> dict[str, torch.Tensor]:
    """One optimisation step; returns detached per-sample terms and t for logging."""
    x0, labels, t, noise = batch_for_step(state, step)
    with state.autocast():
        terms = state.loss(state.model, x0, t, noise, class_labels=labels)
    state.optimizer.zero_grad(set_to_none=True)
    terms["loss"].mean().backward()
    if state.loss.logvar is not None:  # DDP averages the UNet's gradients; u sits outside it
        _average_gradients(state.loss.logvar)
    if state.cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(state.raw.parameters(), state.cfg.grad_clip)
    state.optimizer.step()
    ema_update(state, step)
    if state.loss.history is not None:  # loss_aware: every rank records the whole global batch, in order
        state.loss.record(_all_gather(t), _all_gather(terms["loss_t"]))
    out = {k: v.detach() for k, v in terms.items()}
    out["t"] = t
    return out


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_gather(x: torch.Tensor) -> torch.Tensor:
    """The global batch of a per-rank slice, in rank order (the slice itself when not distributed)."""
    if not _distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts)


def _average_gradients(module: torch.nn.Module) -> None:
    if not _distributed():
        return
    for p in module.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad /= torch.distributed.get_world_size()


@torch.no_grad()
def ema_update(state: TrainState, step: int) -> None:
    rate = state.cfg.ema
    if state.cfg.ema_warmup:
        rate = min(rate, (1 + step) / (10 + step))
    for e, p in zip(state.ema.parameters(), state.raw.parameters()):
        e.lerp_(p.detach(), 1 - rate)


class MetricsWindow:
    """Accumulates per-sample terms between log points; flush() gives means overall and by
    timestep quartile (mse_q0..mse_q3 in eps units), all-reduced across workers. The sums live
    on the terms' device, so a CUDA step never waits for a copy to the host (and NCCL can
    all-reduce them)."""

    KEYS = ("loss", "mse_eps", "vb")

    def __init__(self, num_timesteps: int):
        self.T = num_timesteps
        self.reset()

    def reset(self, device: torch.device | str = "cpu"):
        self.sums = torch.zeros(len(self.KEYS) + 8, dtype=torch.float64, device=device)
        self.steps, self.started = 0, time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        if self.sums.device != terms["t"].device:
            self.sums = self.sums.to(terms["t"].device)
        q = quartile_of(terms["t"], self.T)
        s = self.sums
        for i, k in enumerate(self.KEYS):
            if k in terms:
                s[i] += terms[k].double().sum()
        mse = terms["mse_eps"].double()
        s[3:7] += torch.zeros(4, dtype=torch.float64, device=s.device).index_add_(0, q, mse)
        s[7:11] += torch.bincount(q, minlength=4).double()
        self.steps += 1

    def flush(self, step: int, global_batch: int) -> dict[str, float]:
        device = self.sums.device
        sums = self.sums.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        sums = sums.cpu()  # waits for the queued steps, so the clock below counts them
        n = sums[7:11].sum().clamp(min=1)
        elapsed = time.perf_counter() - self.started
        out = {"step": step, "loss": (sums[0] / n).item(), "mse": (sums[1] / n).item()}
        if sums[2] != 0:
            out["vb"] = (sums[2] / n).item()
        for q in range(4):
            if sums[7 + q] > 0:
                out[f"mse_q{q}"] = (sums[3 + q] / sums[7 + q]).item()
        out["images_per_s"] = self.steps * global_batch / max(elapsed, 1e-9)
        self.reset(device)
        return out
