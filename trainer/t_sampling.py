"""One registry of t-samplings: the distribution p(t) over the timesteps 0..T-1 that a training step
draws t from. Every entry is a function of the schedule's SNR table in t order (float64 [T]) that
returns p(t) (float64 [T], summing to 1). There are two kinds:

- objective-defining (uniform, lognormal, logit_normal): the loss weights a drawn t by w(t) alone,
  so p(t) is part of the objective (EDM and SD3 define their objectives this way);
- unbiased (UNBIASED: importance, loss_aware): the loss also multiplies by 1/(T p(t)), so the
  expected gradient is uniform sampling's and only its variance changes.

A sampler may take supplied arguments, never tunable: `weights` (the weighting's table, for
importance) and `history` (loss_aware's LossHistory). Draws come from the engine's per-step
generator (uniform: randint, the others: multinomial over p(t)), so every rank and every resumed
attempt replays the same t."""
from __future__ import annotations

import inspect
from typing import Callable

import torch

from trainer.memo import by_params

SUPPLIED = ("weights", "history")  # filled in by the loss; never tunable parameters


def uniform(snr: torch.Tensor) -> torch.Tensor:
    # DDPM (Ho et al. 2020): t ~ U{0..T-1}
    return torch.full(snr.shape, 1.0 / len(snr), dtype=torch.float64)


def importance(snr: torch.Tensor, *, weights: torch.Tensor) -> torch.Tensor:
    # p(t) proportional to w(t); the loss weights every sample by mean(w) = w(t) / (T p(t)): uniform's expected gradient
    return weights / weights.sum()


def lognormal(snr: torch.Tensor, p_mean: float = -1.2, p_std: float = 1.2) -> torch.Tensor:
    # EDM (Karras et al. 2022, NVlabs/edm training/loss.py EDMLoss): ln(sigma) ~ N(P_mean, P_std^2), sigma_t = 1/sqrt(SNR_t);
    # t gets the normal's mass over its cell of ln(sigma) (midpoints to its neighbours), conditioned on the schedule's range
    if not p_std > 0:
        raise ValueError(f"lognormal needs p_std > 0, got {p_std}")
    log_sigma = -0.5 * snr.to(torch.float64).log()
    edges = torch.cat([log_sigma[:1], (log_sigma[1:] + log_sigma[:-1]) / 2, log_sigma[-1:]])
    mass = torch.special.ndtr((edges - p_mean) / p_std).diff().abs()
    return mass / mass.sum()


def logit_normal(snr: torch.Tensor, m: float = 0.0, s: float = 1.0) -> torch.Tensor:
    # SD3 (Esser et al. 2024, Eq. 19; diffusers compute_density_for_timestep_sampling "logit_normal"): u = sigmoid(n),
    # n ~ N(m, s^2), t = floor(u T), u = 1 the noisiest: p(t) = Phi((logit((t+1)/T) - m)/s) - Phi((logit(t/T) - m)/s)
    if not s > 0:
        raise ValueError(f"logit_normal needs s > 0, got {s}")
    u = torch.arange(len(snr) + 1, dtype=torch.float64) / len(snr)
    return torch.special.ndtr((torch.logit(u) - m) / s).diff()


def loss_aware(snr: torch.Tensor, history_per_term: float = 10.0, uniform_prob: float = 0.001, *,
               history: LossHistory | None = None) -> torch.Tensor:
    # improved-diffusion resample.py LossSecondMomentResampler: p(t) proportional to sqrt(E[L_t^2]) over the last
    # k losses of t, mixed with uniform_prob of uniform; uniform until every t has k losses (the warm-up)
    if not (float(history_per_term).is_integer() and history_per_term >= 1):
        raise ValueError(f"loss_aware needs an integer history_per_term >= 1, got {history_per_term}")
    if not 0 < uniform_prob <= 1:
        raise ValueError(f"loss_aware needs 0 < uniform_prob <= 1, got {uniform_prob}")
    if history is None or not history.warmed_up():
        return uniform(snr)
    rms = history.losses.pow(2).mean(dim=1).sqrt()
    return rms / rms.sum() * (1 - uniform_prob) + uniform_prob / len(snr)


class LossHistory:
    """The last k per-sample losses of every t (improved-diffusion's _loss_history/_loss_counts).
    Updated in batch order with the losses of the whole global batch, so every rank holds the same
    history; saved in the checkpoint, so a resumed run draws what the uninterrupted one drew."""

    def __init__(self, num_timesteps: int, history_per_term: int):
        self.k = int(history_per_term)
        self.losses = torch.zeros(num_timesteps, self.k, dtype=torch.float64)
        self.counts = torch.zeros(num_timesteps, dtype=torch.int64)

    def warmed_up(self) -> bool:
        return bool((self.counts == self.k).all())

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        losses_np, counts_np = self.losses.numpy(), self.counts.numpy()  # views: one Python loop, no tensor ops per item
        for ti, loss in zip(t.tolist(), losses.double().tolist()):
            if counts_np[ti] == self.k:  # full: shift out the oldest
                losses_np[ti, :-1] = losses_np[ti, 1:]
                losses_np[ti, -1] = loss
            else:
                losses_np[ti, counts_np[ti]] = loss
                counts_np[ti] += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"losses": self.losses.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if tuple(state["losses"].shape) != tuple(self.losses.shape):
            raise ValueError(f"loss history of shape {tuple(state['losses'].shape)} does not fit "
                             f"{tuple(self.losses.shape)} (num_timesteps, history_per_term)")
        self.losses.copy_(state["losses"])
        self.counts.copy_(state["counts"])


T_SAMPLINGS: dict[str, Callable[..., torch.Tensor]] = {
    "uniform": uniform,
    "importance": importance,
    "lognormal": lognormal,
    "logit_normal": logit_normal,
    "loss_aware": loss_aware,
}

UNBIASED = frozenset({"importance", "loss_aware"})  # the loss multiplies by 1/(T p(t)): uniform's objective

# formula and source of every entry (the service's page and the report list them; trainer.effective.catalogue)
ABOUT: dict[str, dict[str, str]] = {
    "uniform": {"formula": "p(t) = 1/T", "source": "DDPM (Ho et al. 2020)"},
    "importance": {"formula": "p(t) = w(t) / sum w; per-sample weight mean(w) = w(t) / (T p(t)) (unbiased)",
                   "source": "importance sampling of the weighted objective (snrlab)"},
    "lognormal": {"formula": "ln sigma ~ N(p_mean, p_std^2), sigma = 1/sqrt(SNR); p(t) = normal mass of t's ln-sigma cell",
                  "source": "Karras et al. NeurIPS 2022 (EDM), NVlabs/edm training/loss.py EDMLoss"},
    "logit_normal": {"formula": "u = sigmoid(N(m, s^2)), t = floor(u T); p(t) = Phi((logit((t+1)/T)-m)/s) - Phi((logit(t/T)-m)/s)",
                     "source": "Esser et al. ICML 2024 (SD3), Eq. 19; diffusers compute_density_for_timestep_sampling"},
    "loss_aware": {"formula": "p(t) proportional to sqrt(mean of the last k L_t^2), mixed with uniform_prob of uniform; "
                              "uniform until every t has k losses; per-sample weight 1/(T p(t)) (unbiased)",
                   "source": "Nichol & Dhariwal ICML 2021, improved-diffusion resample.py LossSecondMomentResampler"},
}


def sampler_params(name: str) -> dict[str, float]:
    """The tunable parameters of a t-sampling and their defaults."""
    fn = _lookup(name)
    return {p.name: p.default for p in list(inspect.signature(fn).parameters.values())[1:] if p.name not in SUPPLIED}


@by_params
def validate(name: str, params: dict) -> dict[str, float]:
    """Resolve params against the sampler's signature; unknown names or degenerate values raise ValueError."""
    from trainer.schedules import get_schedule

    defaults = sampler_params(name)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) or "none"
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for t_sampling {name!r}; valid parameters: {valid}")
    resolved = {**defaults, **{k: float(v) for k, v in params.items()}}
    snr = get_schedule("linear", 64).snr  # a probe schedule
    p = probs(name, snr, resolved, weights=torch.ones_like(snr))
    if not torch.isfinite(p).all() or (p < 0).any() or abs(p.sum().item() - 1) > 1e-9 or (name in UNBIASED and (p <= 0).any()):
        raise ValueError(f"t_sampling {name!r} with {resolved} gives no valid distribution over t")
    return resolved


def probs(name: str, snr: torch.Tensor, params: dict[str, float], *, weights: torch.Tensor | None = None,
          history: LossHistory | None = None) -> torch.Tensor:
    """p(t) of a resolved sampler (float64 [T]), given what it is supplied with."""
    fn = _lookup(name)
    supplied = {"weights": weights, "history": history}
    wanted = {k: supplied[k] for k in SUPPLIED if k in inspect.signature(fn).parameters}
    return fn(snr.to(torch.float64), **params, **wanted)


def _lookup(name: str) -> Callable[..., torch.Tensor]:
    try:
        return T_SAMPLINGS[name]
    except KeyError:
        raise ValueError(f"unknown t_sampling {name!r}; valid: {', '.join(T_SAMPLINGS)}") from None
