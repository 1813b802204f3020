"""A study file (studies/reproduction.yaml): experiment specs to submit and the claims to check."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Section(_Strict):
    id: str = Field(min_length=1, max_length=20)
    kind: Literal["training_length", "hybrid", "colour_shift", "bias_analysis", "variants"]
    title: str
    claim: str = Field(description="what the paper (or the issue) says, in one sentence")
    experiment: str
    metric: str | None = None
    baseline: str = "constant"
    method: str = "debias"
    compare_to: str | None = Field(default=None, description="hybrid: the experiment trained without learn_sigma")
    weightings: list[str] = Field(default_factory=list)


class Study(_Strict):
    name: str
    title: str
    description: str = ""
    budget: str = ""
    experiments: dict[str, str] = Field(min_length=1, description="key -> experiment spec file, relative to the study file")
    sections: list[Section]

    @classmethod
    def load(cls, path: Path) -> tuple[Study, dict[str, dict]]:
        study = cls.model_validate(yaml.safe_load(path.read_text()))
        specs = {key: yaml.safe_load((path.parent / rel).read_text()) for key, rel in study.experiments.items()}
        for s in study.sections:
            for key in filter(None, (s.experiment, s.compare_to)):
                if key not in specs:
                    raise ValueError(f"section {s.id}: unknown experiment {key!r}; the study has {', '.join(specs)}")
        return study, specs
