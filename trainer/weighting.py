"""One registry of loss weightings. Every entry is a pure function of SNR(t), expressed in
eps-MSE units: the training loss at t is w(SNR(t)) * ||eps - eps_theta||^2. The loss module
converts for x0/v targets so a weighting means the same thing whatever the target."""
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


WEIGHTINGS: dict[str, Callable[..., torch.Tensor]] = {
    "constant": constant,
    "debias": debias,
    "p2": p2,
    "min_snr": min_snr,
    "inv_snr": inv_snr,
    "soft_min_snr": soft_min_snr,
    "trunc_snr": trunc_snr,
}


def weighting_params(name: str) -> dict[str, float]:
    """The tunable parameters of a weighting and their defaults."""
    fn = _lookup(name)
    return {p.name: p.default for p in list(inspect.signature(fn).parameters.values())[1:]}


def validate(name: str, params: dict | None = None) -> dict[str, float]:
    """Resolve params against the weighting's signature; unknown names raise ValueError."""
    defaults = weighting_params(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) or "none"
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for weighting {name!r}; valid parameters: {valid}")
    resolved = {**defaults, **{k: float(v) for k, v in params.items()}}
    weight = WEIGHTINGS[name](torch.tensor([1e-4, 1.0, 1e4], dtype=torch.float64), **resolved)
    if not torch.isfinite(weight).all() or (weight <= 0).any():
        raise ValueError(f"weighting {name!r} with {resolved} gives non-positive or non-finite weights")
    return resolved


def _lookup(name: str) -> Callable[..., torch.Tensor]:
    try:
        return WEIGHTINGS[name]
    except KeyError:
        raise ValueError(f"unknown weighting {name!r}; valid weightings: {', '.join(WEIGHTINGS)}") from None


def weight_table(snr: torch.Tensor, name: str, params: dict | None = None, normalize: bool = False) -> torch.Tensor:
    """w(t) for every t of a schedule (float64 [T]); normalize=True scales it to mean 1 over t,
    so the learning rate keeps its meaning across weightings."""
    w = _lookup(name)(snr.to(torch.float64), **validate(name, params))
    return w / w.mean() if normalize else w
