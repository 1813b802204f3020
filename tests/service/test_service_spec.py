"""The experiment spec, settings and error formatting (no database)."""
from __future__ import annotations

import json

import pytest

from service.core.config import Settings
from service.core.errors import readable_error
from service.domain.jobs import expand_runs
from service.domain.spec import ExperimentSpec


@pytest.fixture
def spec(make_spec) -> ExperimentSpec:
    return ExperimentSpec.model_validate(make_spec(
        weightings=[{"name": "constant"}, {"name": "p2", "k": 1, "gamma": 1}, {"name": "min_snr", "gamma": 5}],
        training={"steps": 100, "seeds": [0, 1]},
    ))


def test_spec_round_trips_through_json(spec):
    again = ExperimentSpec.model_validate_json(spec.model_dump_json())
    assert again == spec and again.canonical_hash() == spec.canonical_hash()


def test_canonical_hash_ignores_key_order_and_default_spelling(make_spec):
    a = ExperimentSpec.model_validate(make_spec(weightings=[{"name": "p2"}]))
    b = ExperimentSpec.model_validate(json.loads(json.dumps(make_spec(weightings=[{"gamma": 1.0, "name": "p2", "k": 1}]))))
    assert a.canonical_hash() == b.canonical_hash()
    c = ExperimentSpec.model_validate(make_spec(weightings=[{"name": "p2", "gamma": 0.5}]))
    assert c.canonical_hash() != a.canonical_hash()


def test_expansion_is_dataset_x_weighting_x_seed(spec):
    runs = expand_runs(spec)
    assert [(r.weighting, r.seed) for r in runs] == [
        ("constant", 0), ("constant", 1), ("p2(gamma=1,k=1)", 0), ("p2(gamma=1,k=1)", 1),
        ("min_snr(gamma=5)", 0), ("min_snr(gamma=5)", 1)]
    assert len({r.columns["config_hash"] for r in runs}) == 1  # one setup: seeds and weightings vary within it
    from trainer.config import TrainConfig

    for r in runs:
        # the stored config is the resolved TrainConfig itself, every field (defaults included)
        assert r.columns["config"] == TrainConfig(**r.columns["config"]).model_dump(mode="json") == r.job.train.model_dump(mode="json")
        assert r.job.evaluation.seed == spec.evaluation.seed + r.seed  # paired: one sampling seed per training seed
        assert r.job.train.snapshot_steps == r.job.evaluation.at_steps


def test_spec_size_is_bounded(make_spec):
    many = [{"name": "digits", "seed": i} for i in range(10)]
    with pytest.raises(ValueError, match="expands to 2000 runs"):
        ExperimentSpec.model_validate(make_spec(training={"steps": 1, "seeds": list(range(100))}, datasets=many))


def test_data_roots_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SNRLAB_DATA_ROOTS", f"{tmp_path}/a:{tmp_path}/b,{tmp_path}/c")
    assert Settings().data_roots == [tmp_path / "a", tmp_path / "b", tmp_path / "c"]


@pytest.mark.parametrize("exc,expected", [
    (ValueError("loss is NaN"), "ValueError: loss is NaN"),
    (RuntimeError("Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'x'"), "KeyError: 'x'"),
    (KeyError("step"), "KeyError: 'step'"),
])
def test_readable_errors_never_contain_tracebacks(exc, expected):
    assert readable_error(exc) == expected


def test_readable_error_unwraps_train_failures():
    from ray.train import WorkerGroupError

    err = WorkerGroupError("Training failed due to worker errors", {0: MemoryError("out of memory")})
    assert readable_error(err) == "MemoryError: out of memory"
