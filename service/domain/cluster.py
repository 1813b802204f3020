"""What a cluster offers, as plain values: read from Ray by the executor, used without it (the
dispatcher keeps the latest copy; requests and the spec's limits read that copy)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NodeInfo:
    cpus: float
    gpus: float = 0.0
    memory_bytes: float = 0.0  # what the node lets tasks reserve (Ray's `memory` resource)


@dataclass(frozen=True)
class ClusterInfo:
    """What the cluster offers, read from Ray once and then used without it (the dispatcher keeps
    the latest one, so a request never waits on Ray and no transaction is held across a Ray call)."""

    nodes: tuple[NodeInfo, ...] = ()

    @property
    def cpus(self) -> float:
        return sum(n.cpus for n in self.nodes)

    @property
    def gpus(self) -> float:
        return sum(n.gpus for n in self.nodes)

    @property
    def largest_memory_bytes(self) -> float:
        return max((n.memory_bytes for n in self.nodes), default=0.0)

    def capacity(self, resources: dict[str, Any]) -> int:
        """How many runs with these resources fit at once (CPUs per worker = 1)."""
        workers = int(resources.get("workers_per_run", 1))
        slots = math.floor(self.cpus / workers)
        gpus = float(resources.get("gpus_per_worker", 0)) * workers
        if gpus > 0:
            slots = min(slots, math.floor(self.gpus / gpus))
        return max(slots, 0)

    def share(self, resources: dict[str, Any]) -> float:
        """The fraction of the cluster one run with these resources takes (inf: it never fits)."""
        slots = self.capacity(resources)
        return 1.0 / slots if slots > 0 else float("inf")
