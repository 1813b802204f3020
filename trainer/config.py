"""TrainConfig: built once at the boundary (CLI, API, Ray worker entry) from a dict."""
from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from trainer import t_sampling as TS
from trainer import weighting as W
from trainer.data import DatasetSpec
from trainer.models import PRESETS


class TrainConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    # loss
    weighting: str = "constant"
    weighting_params: dict[str, float] = Field(default_factory=dict)
    normalize: bool = Field(False, description="scale w(t) to mean 1 over t")
    t_sampling: str = Field("uniform", description="a name from trainer.t_sampling.T_SAMPLINGS")
    t_sampling_params: dict[str, float] = Field(default_factory=dict, validate_default=True)  # resolved: defaults filled in
    learned_weighting: bool = Field(False, description="EDM2 learned uncertainty u(t): per-t loss w/exp(u) * MSE + u")
    target: Literal["eps", "x0", "v"] = "eps"
    schedule: Literal["linear", "cosine"] = "linear"
    num_timesteps: int = Field(1000, ge=2, le=100_000)
    # model
    preset: str = "tiny"
    learn_sigma: bool = Field(False, description="ADM hybrid loss: weighted MSE + unweighted VB term")
    class_conditional: bool = False
    # optimisation
    steps: int = Field(300, ge=1)
    batch_size: int = Field(64, ge=1, description="global batch, split across workers")
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    ema: float = Field(0.999, ge=0, lt=1)
    ema_warmup: bool = Field(True, description="ADM/EDM-style EMA warmup: decay min(ema, (1+s)/(10+s))")
    mixed_precision: Literal["auto", "bf16", "no"] = Field("auto", description="auto: bf16 autocast on CUDA only")
    seed: int = 0
    # speed only: torch.compile the UNet (same maths, so not in config_hash; first steps compile)
    compile: bool = Field(False, description="torch.compile the model (worth it on CUDA for long runs)")
    # bookkeeping
    log_every: int = Field(25, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    snapshot_steps: list[int] = Field(default_factory=list, description="steps whose EMA weights are also saved under "
                                      "snapshots/step_<n>/ (diffusers format + config.json) for evaluation; kept forever")
    # failure injection for resilience tests: the worker process exits at this step, once per
    # run directory (a marker file makes the restarted attempt go on)
    fail_at_step: int | None = Field(None, ge=1)

    @field_validator("weighting")
    @classmethod
    def _known_weighting(cls, v: str) -> str:
        if v not in W.WEIGHTINGS:
            raise ValueError(f"unknown weighting {v!r}; valid weightings: {', '.join(W.WEIGHTINGS)}")
        return v

    @field_validator("t_sampling")
    @classmethod
    def _known_t_sampling(cls, v: str) -> str:
        if v not in TS.T_SAMPLINGS:
            raise ValueError(f"unknown t_sampling {v!r}; valid: {', '.join(TS.T_SAMPLINGS)}")
        return v

    @field_validator("t_sampling_params")
    @classmethod
    def _resolve_t_sampling_params(cls, v: dict, info: ValidationInfo) -> dict:
        if "t_sampling" not in info.data:  # the sampler itself was invalid; reported there
            return v
        return TS.validate(info.data["t_sampling"], v)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; valid presets: {', '.join(PRESETS)}")
        return v

    @field_validator("weighting_params")
    @classmethod
    def _resolve_params(cls, v: dict, info: ValidationInfo) -> dict:
        if "weighting" not in info.data:  # the weighting itself was invalid; reported there
            return v
        return W.validate(info.data["weighting"], v)

    def config_hash(self) -> str:
        """Hash of everything that changes the trained model (not bookkeeping, not speed knobs)."""
        skip = {"log_every", "checkpoint_every", "keep_checkpoints", "fail_at_step", "snapshot_steps", "compile"}
        fields = self.model_dump(mode="json", exclude=skip)
        for key, default in _HASHED_UNLESS_DEFAULT.items():  # so configs from before these fields keep their hash
            if fields[key] == default:
                del fields[key]
        blob = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# fields added after config hashes were first recorded: in the hash only when set (uniform's resolved
# t_sampling_params is {}), so a run finished before them is still recognised as done
_HASHED_UNLESS_DEFAULT = {"t_sampling_params": {}, "learned_weighting": False}
