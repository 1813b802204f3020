"""One registry of loss weightings. Every entry is a pure function of SNR(t), expressed in
eps-MSE units: the training loss at t is w(SNR(t)) * ||eps - eps_theta||^2. The loss module
converts for x0/v targets so a weighting means the same thing whatever the target.

A weighting may also take `progress` (the fraction of training done, 0..1): a curriculum. It is
supplied by the loss at every step, is not a tunable parameter, and defaults to 1 (the end of
training) wherever a single table is wanted."""
from __future__ import annotations

import inspect
from typing import Callable

import torch


def constant(snr: torch.Tensor) -> torch.Tensor:
    # Eq. 1 (DDPM L_simple): w = 1
    return torch.ones_like(snr)


def debias(snr: torch.Tensor) -> torch.Tensor:
    # Eq. 8: w(t) = 1/sqrt(SNR(t)), the amplification coefficient of Eq. 7
    return snr.rsqrt()


def p2(snr: torch.Tensor, k: float = 1.0, gamma: float = 1.0) -> torch.Tensor:
    # P2 (Choi et al. 2022): w = (k + SNR)^-gamma
    return (k + snr).pow(-gamma)


def min_snr(snr: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    # Min-SNR-gamma (Hang et al. 2023), eps units: w = min(SNR, gamma) / SNR
    return snr.clamp(max=gamma) / snr


def inv_snr(snr: torch.Tensor) -> torch.Tensor:
    # Appendix B baseline: w = 1/SNR (equivalent to an unweighted x0-MSE)
    return snr.reciprocal()


def soft_min_snr(snr: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    # Soft-Min-SNR (Crowson et al. 2024), eps units: w = gamma / (gamma + SNR)
    return gamma / (gamma + snr)


def trunc_snr(snr: torch.Tensor) -> torch.Tensor:
    # Truncated SNR (Salimans & Ho 2022), eps units: w = max(1, 1/SNR)
    return snr.reciprocal().clamp(min=1.0)


def debias_floor(snr: torch.Tensor) -> torch.Tensor:
    # debias never below constant: w = max(1, 1/sqrt(SNR)). Monotone in t like debias, but small
    # t (SNR > 1), where debias' weight falls towards 0.01, keeps the constant weighting's training
    return snr.rsqrt().clamp(min=1.0)


def curriculum(snr: torch.Tensor, progress: float = 1.0, anneal: float = 0.5) -> torch.Tensor:
    # constant -> debias over the first `anneal` fraction of training, geometrically:
    # w = SNR^(-a/2), a = min(1, progress/anneal). Early training learns the low-noise end the
    # way constant does; the debiasing weight takes over once it has.
    a = min(1.0, max(0.0, progress) / anneal)
    return snr.pow(-0.5 * a)


def debias_clip(snr: torch.Tensor, cap: float = 4.0) -> torch.Tensor:
    # snrlab's variant: w = clamp(1/sqrt(SNR), 1, cap). The floor keeps small t trained (as in
    # debias_floor); the cap bounds how much of the total weight the last few hundred steps take:
    # with the linear schedule 1/sqrt(SNR) reaches ~157 at t=999, so uncapped (debias,
    # debias_floor) t >= 900 holds 57% of the weight mass and one noisy high-t sample dominates
    # a batch's gradient; cap=4 leaves it 15% (constant: 10%) and still up-weights t > 259
    return snr.rsqrt().clamp(min=1.0, max=cap)


WEIGHTINGS: dict[str, Callable[..., torch.Tensor]] = {
    "constant": constant,
    "debias": debias,
    "p2": p2,
    "min_snr": min_snr,
    "inv_snr": inv_snr,
    "soft_min_snr": soft_min_snr,
    "trunc_snr": trunc_snr,
    "debias_floor": debias_floor,
    "curriculum": curriculum,
    "debias_clip": debias_clip,
}

PROGRESS = "progress"  # the curriculum argument the loss supplies; never a tunable parameter


def weighting_params(name: str) -> dict[str, float]:
    """The tunable parameters of a weighting and their defaults."""
    fn = _lookup(name)
    return {p.name: p.default for p in list(inspect.signature(fn).parameters.values())[1:] if p.name != PROGRESS}


def uses_progress(name: str) -> bool:
    """True for a curriculum: its table changes as training goes on."""
    return PROGRESS in inspect.signature(_lookup(name)).parameters


def validate(name: str, params: dict | None = None) -> dict[str, float]:
    """Resolve params against the weighting's signature; unknown names raise ValueError."""
    defaults = weighting_params(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) or "none"
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for weighting {name!r}; valid parameters: {valid}")
    resolved = {**defaults, **{k: float(v) for k, v in params.items()}}
    probe = torch.tensor([1e-4, 1.0, 1e4], dtype=torch.float64)
    for progress in ((0.0, 0.5, 1.0) if uses_progress(name) else (None,)):
        extra = {} if progress is None else {PROGRESS: progress}
        weight = WEIGHTINGS[name](probe, **resolved, **extra)
        if not torch.isfinite(weight).all() or (weight <= 0).any():
            raise ValueError(f"weighting {name!r} with {resolved} gives non-positive or non-finite weights")
    return resolved


def _lookup(name: str) -> Callable[..., torch.Tensor]:
    try:
        return WEIGHTINGS[name]
    except KeyError:
        raise ValueError(f"unknown weighting {name!r}; valid weightings: {', '.join(WEIGHTINGS)}") from None


def weight_table(snr: torch.Tensor, name: str, params: dict | None = None, normalize: bool = False,
                 progress: float = 1.0) -> torch.Tensor:
    """w(t) for every t of a schedule (float64 [T]); normalize=True scales it to mean 1 over t,
    so the learning rate keeps its meaning across weightings. `progress` reaches curricula only."""
    extra = {PROGRESS: float(progress)} if uses_progress(name) else {}
    w = _lookup(name)(snr.to(torch.float64), **validate(name, params), **extra)
    return w / w.mean() if normalize else w
