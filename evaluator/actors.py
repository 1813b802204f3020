"""Ray boundary: a pool of EvalWorker actors (each loads the EMA model and the feature
extractors once in __init__). Everything they run is plain, unit-tested code in worker.py."""
from __future__ import annotations

import ray

from evaluator.worker import EvalWorker


class ActorPool:
    """`num_actors` EvalWorker actors with `num_gpus` each (CPU-only clusters: 0)."""

    def __init__(self, checkpoint_dir: str, extractors: list[str], *, num_actors: int, num_gpus: float = 0,
                 num_cpus: float = 1, data_dir=None):
        device = "cuda" if num_gpus > 0 else "cpu"
        remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(EvalWorker)
        self.actors = [remote.remote(str(checkpoint_dir), extractors, data_dir=str(data_dir) if data_dir else None,
                                     device=device) for _ in range(num_actors)]

    def fingerprints(self) -> dict[str, str]:
        return ray.get(self.actors[0].fingerprints.remote())

    def map_shards(self, jobs: list[dict]) -> list[dict]:
        """Run shard(**job) round-robin over the actors; results in job order."""
        refs = [self.actors[i % len(self.actors)].shard.remote(**job) for i, job in enumerate(jobs)]
        return ray.get(refs)

    def features(self, images_uint8, names: list[str]) -> dict:
        """Extractor outputs of a big image batch (reference and held-out images), split across the actors."""
        from evaluator.worker import concat_outputs

        n = len(self.actors)
        chunk = -(-len(images_uint8) // n)
        refs = [a.features.remote(images_uint8[i * chunk : (i + 1) * chunk], names) for i, a in enumerate(self.actors)
                if i * chunk < len(images_uint8)]
        parts = ray.get(refs)
        return {k: concat_outputs([p[k] for p in parts]) for k in names}

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
