"""The effective weight of a training setup: what its loss weighting and its t-sampling do together.

A setup weights the eps-MSE at t by a per-sample weight and draws t with probability p(t); the
expected loss of a step is sum_t p(t) * weight(t) * E[MSE_eps(t)], so what reaches the gradient is
m(t) = p(t) * weight(t). Read over lambda = log SNR (Kingma & Gao 2023) it is a density, and two
setups with the same density train the same objective whatever their names. Plain torch/numpy."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainer import t_sampling as TS
from trainer import weighting as W
from trainer.loss import WeightedLoss
from trainer.schedules import get_schedule, log_snr_widths


@dataclass(frozen=True)
class EffectiveWeight:
    """One setup's tables, float64 [T] over t = 0..T-1 (lambda decreases with t)."""

    lam: np.ndarray  # lambda_t = log SNR(t)
    probs: np.ndarray  # p(t): the sampler's probability of t (sums to 1)
    weight: np.ndarray  # the per-sample weight of the eps-MSE at t: w(t) * importance weight(t) [/ exp(u(t))]
    sampling_density: np.ndarray  # p(t) as a density over lambda: p(t) / width_t (unit mass)
    density: np.ndarray  # the effective weight over lambda: m(t) / width_t / mass (unit mass)
    mass: float  # sum_t m(t): the expected per-sample weight, the overall scale (normalize, lr) the density omits


def effective_weight(schedule: str = "linear", num_timesteps: int = 1000, weighting: str = "constant",
                     weighting_params: dict | None = None, *, t_sampling: str = "uniform", t_sampling_params: dict | None = None,
                     normalize: bool = False, logvar: np.ndarray | torch.Tensor | None = None,
                     loss_history: dict | None = None, progress: float = 1.0) -> EffectiveWeight:
    """The effective weight over lambda of a setup (arguments as in TrainConfig).

    Definition. With p(t) the t-sampling's probability of t (loss_aware: given `loss_history`, a
    LossHistory.state_dict(); uniform while it is not warmed up), w(t) the weighting's eps-units
    table (normalized or not, at `progress` for a curriculum), iw(t) the loss-side importance weight
    (1/(T p(t)) for the unbiased samplers: importance, loss_aware; 1 otherwise) and u(t) a learned
    log-variance table (`logvar`, EDM2; 0 without one),
        m(t) = p(t) * w(t) * iw(t) / exp(u(t)),
        density(lambda_t) = m(t) / width_t / sum_t m(t),
    where width_t is the lambda-interval t stands for (half the gap to each neighbour:
    trainer.schedules.log_snr_widths), so that the trapezoid rule over lambda gives the density unit
    mass exactly. The target (eps/x0/v) does not enter: a weighting means the same for each."""
    loss = WeightedLoss(get_schedule(schedule, num_timesteps), weighting, weighting_params, normalize=normalize,
                        t_sampling=t_sampling, t_sampling_params=t_sampling_params)
    loss.set_progress(progress)
    if loss_history is not None:
        loss.load_state_dict({"history": loss_history})
    t = torch.arange(num_timesteps)
    weight = loss.sample_weight(t)  # eps target: c(t) = 1
    if logvar is not None:
        weight = weight / torch.as_tensor(logvar, dtype=torch.float64).exp()
    widths = log_snr_widths(loss.schedule.snr)
    m = loss.probs * weight
    return EffectiveWeight(lam=loss.lam.numpy(), probs=loss.probs.numpy(), weight=weight.numpy(),
                           sampling_density=(loss.probs / widths).numpy(), density=(m / widths / m.sum()).numpy(),
                           mass=m.sum().item())


SETUP_FIELDS = ("schedule", "num_timesteps", "weighting", "weighting_params", "t_sampling", "t_sampling_params", "normalize")


def config_effective_weight(cfg, **kwargs) -> EffectiveWeight:
    """effective_weight of a TrainConfig (or its dict); kwargs: logvar, loss_history, progress."""
    fields = cfg if isinstance(cfg, dict) else cfg.model_dump()
    return effective_weight(**{k: fields[k] for k in SETUP_FIELDS if k in fields}, **kwargs)


def objective_distance(a: EffectiveWeight, b: EffectiveWeight, window: tuple[float, float] | None = None) -> float:
    """Total-variation distance between two effective weights over lambda (0: the same objective, 1:
    disjoint), on the union of their lambda grids (linear interpolation, zero outside a setup's own
    lambda range), so setups on different schedules compare too. `window` = (lo, hi) compares the
    lambda range lo..hi only, each density renormalised there."""
    grid = np.union1d(a.lam, b.lam)
    if window is not None:
        grid = np.union1d(grid[(grid >= window[0]) & (grid <= window[1])], window)
    fa, fb = (np.interp(grid, e.lam[::-1], e.density[::-1], left=0.0, right=0.0) for e in (a, b))
    if window is not None:
        fa, fb = fa / np.trapezoid(fa, grid), fb / np.trapezoid(fb, grid)
    return 0.5 * float(np.trapezoid(np.abs(fa - fb), grid))


def same_objective(a: EffectiveWeight, b: EffectiveWeight, tol: float = 1e-3, window: tuple[float, float] | None = None) -> bool:
    """True when two setups train the same objective up to its overall scale (EffectiveWeight.mass):
    their effective weights over lambda are within `tol` in total variation (objective_distance)."""
    return objective_distance(a, b, window) <= tol


@dataclass(frozen=True)
class LearnedWeighting:
    lam: np.ndarray  # lambda_t, float64 [T]
    logvar: np.ndarray  # u(t)
    weight: np.ndarray  # the eps-units weight it trains with: w(t) / exp(u(t))


def learned_weighting(checkpoint_dir: str | Path) -> LearnedWeighting:
    """The weighting a learned_weighting run had learned at a checkpoint (for plotting)."""
    from trainer.checkpoint import read_config, read_loss_state

    cfg, _ = read_config(checkpoint_dir)
    if not cfg.learned_weighting:
        raise ValueError(f"{str(checkpoint_dir)!r} was not trained with learned_weighting")
    loss = WeightedLoss(get_schedule(cfg.schedule, cfg.num_timesteps), cfg.weighting, cfg.weighting_params,
                        normalize=cfg.normalize, learned_weighting=True)
    loss.set_progress(1.0)  # a curriculum's table at the end; the checkpoint step is not kept in the loss
    loss.logvar.load_state_dict(read_loss_state(checkpoint_dir)["logvar"])
    u = loss.logvar_table()
    return LearnedWeighting(lam=loss.lam.numpy(), logvar=u.numpy(), weight=(loss.weights / u.exp()).numpy())


def catalogue() -> list[dict]:
    """Every registered weighting and t-sampling (and the learned weighting) with its formula,
    source and default parameters: the table the service's page and the report show."""
    rows = [{"kind": "weighting", "name": n, "params": W.weighting_params(n), **W.ABOUT[n]} for n in W.WEIGHTINGS]
    rows += [{"kind": "t_sampling", "name": n, "params": TS.sampler_params(n), **TS.ABOUT[n]} for n in TS.T_SAMPLINGS]
    rows.append({"kind": "learned_weighting", "name": "learned_weighting", "params": {},
                 "formula": "per-t loss w(t)/exp(u(t)) * MSE + u(t), u a linear map of Fourier features of -lambda/8; "
                            "learned weight w/exp(u), u -> log(w * E[MSE]) at the optimum",
                 "source": "Karras et al. CVPR 2024 (EDM2), NVlabs/edm2 training/training_loop.py EDM2Loss"})
    return rows
