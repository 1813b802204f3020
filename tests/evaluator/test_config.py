"""EvalConfig: its defaults, its checks (the evaluator's own registries), its JSON schema, and
that it reads every evaluation the service's API accepts."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from evaluator import SAMPLERS, EvalConfig
from evaluator.sampling import SPACINGS, VARIANCES

DEFAULTS = {"samplers": ["ddpm"], "num_samples": 1000, "analyses": True, "analysis_images": 16, "analysis_stride": 10,
            "at_steps": [], "seed": 0, "batch_size": 64, "eta": 0.0, "variance": "auto", "spacing": "linspace",
            "num_ref": None, "ref_split": "train", "shard_size": None}


def test_defaults_and_required_fields():
    cfg = EvalConfig(steps=[10, 2], metrics=["fd_digits_inf"])
    assert cfg.model_dump() == {"steps": [10, 2], "metrics": ["fd_digits_inf"], **DEFAULTS}
    missing = {e["loc"][0] for e in pytest.raises(ValidationError, EvalConfig).value.errors()}
    assert missing == {"steps", "metrics"}


def test_frozen_and_strict():
    cfg = EvalConfig(steps=[2], metrics=["fid"])
    with pytest.raises(ValidationError, match="frozen"):
        cfg.seed = 1
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        EvalConfig(steps=[2], metrics=["fid"], num_actors=2)


@pytest.mark.parametrize("bad,match", [
    (dict(metrics=["is"]), "unknown metric 'is'; valid metrics: fid, fid_inf"),
    (dict(samplers=["euler"]), "unknown sampler 'euler'; valid samplers: ddpm, ddim"),
    (dict(steps=[2, 2]), "steps must be unique"),
    (dict(steps=[0]), "greater than 0"),
    (dict(at_steps=[5, 5]), "at_steps must be unique"),
    (dict(num_samples=1), "greater than or equal to 2"),
    (dict(variance="tiny"), "fixed_small"),
    (dict(spacing="cosine"), "linspace"),
    (dict(ref_split="val"), "train"),
    (dict(metrics=[]), "at least 1"),
])
def test_invalid_values(bad, match):
    with pytest.raises(ValidationError, match=match):
        EvalConfig.model_validate({"steps": [2], "metrics": ["fid"], **bad})


def test_at_steps_are_kept_sorted():
    assert EvalConfig(steps=[2], metrics=["fid"], at_steps=[300, 100, 200]).at_steps == [100, 200, 300]


def test_json_schema_and_round_trip():
    schema = EvalConfig.model_json_schema()
    assert schema["additionalProperties"] is False and set(schema["required"]) == {"steps", "metrics"}
    props = schema["properties"]
    assert props["samplers"]["items"]["enum"] == list(SAMPLERS)
    assert props["variance"]["enum"] == list(VARIANCES) and props["spacing"]["enum"] == list(SPACINGS)
    assert all(props[k]["default"] == v for k, v in DEFAULTS.items())
    cfg = EvalConfig(steps=[2, 5], samplers=["ddim"], metrics=["cs_digits", "fid"], eta=0.5, num_ref=100, at_steps=[7])
    assert EvalConfig.model_validate(json.loads(cfg.model_dump_json())) == cfg
