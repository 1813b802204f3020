"""One registry of loss weightings, in eps-MSE units: the training loss at t is
w(t) * ||eps - eps_theta||^2. The loss module converts for x0/v targets so a weighting means the same
thing whatever the target.

Every entry is called with the schedule's SNR table in t order (float64 [T]; what weight_table
passes). All but the TABLE_WEIGHTINGS are pointwise, w(t) a function of SNR(t) alone, so they work
on any tensor of SNR values. A table weighting also reads how lambda = log SNR is spaced over t
(sigmoid: its target is an effective weight over lambda, so the per-t weight divides by the density
of lambda under uniform t); on any other tensor it reads that tensor as the table.

A weighting may also take `progress` (the fraction of training done, 0..1): a curriculum. It is
supplied by the loss at every step, is not a tunable parameter, and defaults to 1 (the end of
training) wherever a single table is wanted."""
from __future__ import annotations

import inspect
from typing import Callable

import torch

from trainer.memo import by_params

from trainer.schedules import log_snr_widths


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


def uniform_lambda_density(snr: torch.Tensor) -> torch.Tensor:
    """p_uniform(lambda_t) = |dt/dlambda| / T: the density of lambda = log SNR under t ~ U{0..T-1},
    by finite differences over the table itself (trapezoid widths: trainer.schedules.log_snr_widths)."""
    return 1.0 / (len(snr) * log_snr_widths(snr))


def sigmoid(snr: torch.Tensor, b: float = 2.0) -> torch.Tensor:
    # Kingma & Gao 2023 (NeurIPS, "Understanding Diffusion Objectives"): effective weight over lambda = sigmoid(b - lambda),
    # so under uniform t the eps-units weight is sigmoid(b - lambda_t) / p_uniform(lambda_t); b = 2 as BayesFlow's implementation of it
    return torch.sigmoid(b - snr.log()) / uniform_lambda_density(snr)


def edm(snr: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    # EDM (Karras et al. 2022, NVlabs/edm training/loss.py EDMLoss): lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 on
    # ||D - x0||^2 = sigma^2 ||eps err||^2, sigma^2 = 1/SNR; eps units: w = 1 + 1/(sd^2 SNR)
    return 1.0 + 1.0 / (sigma_data**2 * snr)


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
    "sigmoid": sigmoid,
    "edm": edm,
}

TABLE_WEIGHTINGS = frozenset({"sigmoid"})  # read snr as the whole table in t order; the rest are pointwise

# formula and source of every entry (the service's page and the report list them; trainer.effective.catalogue)
ABOUT: dict[str, dict[str, str]] = {
    "constant": {"formula": "w = 1", "source": "DDPM L_simple (Ho et al. 2020); the paper's Eq. 1"},
    "debias": {"formula": "w = 1/sqrt(SNR)", "source": "Yu et al. ECCV 2024 (Unmasking Bias), Eq. 8"},
    "p2": {"formula": "w = (k + SNR)^-gamma", "source": "Choi et al. CVPR 2022 (P2 weighting)"},
    "min_snr": {"formula": "w = min(SNR, gamma) / SNR", "source": "Hang et al. ICCV 2023 (Min-SNR-gamma)"},
    "inv_snr": {"formula": "w = 1/SNR (an unweighted x0-MSE)", "source": "Yu et al. ECCV 2024, Appendix B"},
    "soft_min_snr": {"formula": "w = gamma / (gamma + SNR)", "source": "Crowson et al. ICML 2024 (HDiT, Soft-Min-SNR)"},
    "trunc_snr": {"formula": "w = max(1, 1/SNR)", "source": "Salimans & Ho ICLR 2022 (truncated SNR)"},
    "debias_floor": {"formula": "w = max(1, 1/sqrt(SNR))", "source": "snrlab variant of Eq. 8"},
    "curriculum": {"formula": "w = SNR^(-a/2), a = min(1, progress/anneal)", "source": "snrlab: constant to debias over training"},
    "debias_clip": {"formula": "w = clamp(1/sqrt(SNR), 1, cap)", "source": "snrlab variant of Eq. 8"},
    "sigmoid": {"formula": "effective weight over lambda = sigmoid(b - lambda); w = sigmoid(b - lambda) / p_uniform(lambda)",
                "source": "Kingma & Gao NeurIPS 2023 (Understanding Diffusion Objectives); b = 2 as in BayesFlow"},
    "edm": {"formula": "w = 1 + 1/(sigma_data^2 SNR), i.e. (sigma^2 + sigma_data^2)/(sigma sigma_data)^2 on the x0 error",
            "source": "Karras et al. NeurIPS 2022 (EDM), NVlabs/edm training/loss.py EDMLoss"},
}

PROGRESS = "progress"  # the curriculum argument the loss supplies; never a tunable parameter


def weighting_params(name: str) -> dict[str, float]:
    """The tunable parameters of a weighting and their defaults."""
    fn = _lookup(name)
    return {p.name: p.default for p in list(inspect.signature(fn).parameters.values())[1:] if p.name != PROGRESS}


def uses_progress(name: str) -> bool:
    """True for a curriculum: its table changes as training goes on."""
    return PROGRESS in inspect.signature(_lookup(name)).parameters


@by_params
def validate(name: str, params: dict) -> dict[str, float]:
    """Resolve params against the weighting's signature; unknown names raise ValueError."""
    defaults = weighting_params(name)
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
