"""What an experiment may ask for before it is accepted: the deployment's caps (SNRLAB_MAX_STEPS,
SNRLAB_MAX_NUM_SAMPLES, SNRLAB_MAX_RUNS_PER_EXPERIMENT) and, once the dispatcher has read the
cluster, a memory estimate of each run against the largest Ray node. A refusal is a SpecError
(422) naming the field and the limit."""
from __future__ import annotations

from service.core.config import Settings
from service.core.errors import SpecError
from service.domain.cluster import ClusterInfo
from service.domain.jobs import expand_runs
from service.domain.spec import ExperimentSpec
from trainer.footprint import human_bytes, training_footprint


def check_limits(spec: ExperimentSpec, *, settings: Settings, cluster: ClusterInfo | None,
                 prefix: tuple[str, ...] = ("body",)) -> None:
    t, ev = spec.training, spec.evaluation
    if t.steps > settings.max_steps:
        raise SpecError((*prefix, "training", "steps"), f"training.steps={t.steps} exceeds this service's limit "
                        f"SNRLAB_MAX_STEPS={settings.max_steps}")
    if ev.num_samples > settings.max_num_samples:
        raise SpecError((*prefix, "evaluation", "num_samples"), f"evaluation.num_samples={ev.num_samples} exceeds this "
                        f"service's limit SNRLAB_MAX_NUM_SAMPLES={settings.max_num_samples}")
    runs = len(spec.datasets) * len(spec.weightings) * len(t.seeds)
    if runs > settings.max_runs_per_experiment:
        raise SpecError((*prefix,), f"the spec expands to {runs} runs; this service's limit is "
                        f"SNRLAB_MAX_RUNS_PER_EXPERIMENT={settings.max_runs_per_experiment}")
    if cluster is not None and cluster.nodes:
        check_memory(spec, cluster=cluster, prefix=prefix)


def check_memory(spec: ExperimentSpec, *, cluster: ClusterInfo, prefix: tuple[str, ...] = ("body",)) -> None:
    """Each run's estimated memory per worker (trainer.footprint) against the largest node's."""
    largest = cluster.largest_memory_bytes
    workers = spec.resources.workers_per_run
    seen = set()
    for row in expand_runs(spec):
        cfg = row.job.train.model_copy(update={"seed": 0, "weighting": "constant", "weighting_params": {}})
        key = cfg.config_hash()  # memory does not depend on the seed or the weighting
        if key in seen:
            continue
        seen.add(key)
        fp = training_footprint(cfg, num_workers=workers)
        if fp.total_bytes <= largest:
            continue
        parts = {"data": fp.data_bytes, "model": fp.model_bytes, "activations": fp.activation_bytes}
        worst = max(parts, key=parts.get)
        index = next(i for i, d in enumerate(spec.datasets) if d.model_dump() == row.job.train.dataset.model_dump())
        field = {"data": ("datasets", index), "model": ("model", "preset"), "activations": ("training", "batch_size")}[worst]
        hint = {"data": "fewer or smaller images (datasets.num_images, datasets.resolution)",
                "model": "a smaller model.preset", "activations": "a smaller training.batch_size or more workers_per_run"}[worst]
        detail = ", ".join(f"{k} {human_bytes(v)}" for k, v in parts.items())
        raise SpecError((*prefix, *field), f"a run of {row.dataset} / {row.weighting} needs about "
                        f"{human_bytes(fp.total_bytes)} of memory per worker ({detail}; batch {spec.training.batch_size} "
                        f"over {workers} worker(s)), more than the largest Ray node offers ({human_bytes(largest)}): use {hint}")
