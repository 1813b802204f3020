"""Shared fixtures. One Ray session for the whole test run (Ray is slow to start on 2 cores);
tests never call `ray stop`, which would kill every Ray process of the user."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from trainer.raysession import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()
