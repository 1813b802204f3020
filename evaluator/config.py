"""`EvalConfig`: the one evaluation config. Every field's constraint and default lives here; the
service composes this model into its experiment spec, the CLI builds it from its flags, and
`evaluate()` / `run_analyses()` take nothing else."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from evaluator.metrics import metric_names, resolve_metric
from evaluator.sampling import SAMPLERS, SPACINGS, VARIANCES
from trainer.data import DATASETS


def _sampler(name: str) -> str:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid samplers: {', '.join(SAMPLERS)}")
    return name


def _metric(name: str) -> str:
    resolve_metric(name)  # ValueError listing the valid names
    return name


Sampler = Annotated[str, AfterValidator(_sampler), WithJsonSchema({"type": "string", "enum": list(SAMPLERS)})]
# the JSON schema lists every name valid for some dataset; which fit a given dataset is checked where both are known
Metric = Annotated[str, Field(min_length=1, max_length=50), AfterValidator(_metric),
                   WithJsonSchema({"type": "string", "enum": metric_names(DATASETS)})]
PositiveInt = Annotated[int, Field(gt=0)]


class EvalConfig(BaseModel):
    """What to sample and how to score it. `steps` and `metrics` have no default (which metric
    fits depends on the dataset; `fd_<dataset>` is the fast one)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)

    steps: list[PositiveInt] = Field(min_length=1, max_length=100, description="sampling step counts T (unique)")
    samplers: list[Sampler] = Field(default=["ddpm"], min_length=1, max_length=20)
    metrics: list[Metric] = Field(min_length=1, max_length=20,
                                  description="evaluator.metrics names: fid, fd_<dataset>, their _inf variants, ...")
    num_samples: int = Field(default=1000, ge=2, le=1_000_000, description="generated images per (T, sampler)")
    analyses: bool = Field(default=True, description="also write the sample grids and bias-analysis PNGs")
    analysis_images: int = Field(default=16, ge=1, le=256, description="images per analysis grid")
    analysis_stride: int = Field(default=10, ge=1, le=100_000, description="timestep stride of the MSE-vs-t analysis")
    at_steps: list[PositiveInt] = Field(
        default=[], max_length=50,
        description="training steps whose EMA snapshots are also scored (the paper's Fig. 7a); unique, kept sorted")
    seed: int = Field(default=0, ge=0, description="sample k draws its noise from (seed, k); also seeds KID/_inf subsets")
    batch_size: int = Field(default=64, ge=1, le=65_536, description="sampling batch size")
    eta: float = Field(default=0.0, ge=0.0, description="DDIM eta (0: deterministic DDIM)")
    variance: Literal[VARIANCES] = Field(default="auto", description="DDPM variance; auto: learned_range if learn_sigma else fixed_large")
    spacing: Literal[SPACINGS] = Field(default="linspace", description="respaced timesteps (diffusers' timestep_spacing)")
    num_ref: int | None = Field(default=None, ge=2, description="reference images: the first num_ref of ref_split (None: all)")
    ref_split: Literal["train", "test"] = Field(default="train", description="dataset split of the reference statistics")
    shard_size: int | None = Field(default=None, ge=1, description="samples per actor job (None: num_samples / num_actors)")

    @field_validator("steps")
    @classmethod
    def _unique_steps(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("steps must be unique")
        return v

    @field_validator("at_steps")
    @classmethod
    def _at_steps(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("at_steps must be unique")
        return sorted(v)
