"""The one place that starts or joins Ray. Environment is set deliberately, before Ray starts:

- RAY_USAGE_STATS_ENABLED=0: no telemetry from research clusters.
- RAY_AUTH_MODE=disabled for a local cluster we start ourselves (it listens on loopback only);
  a user's own value wins, and a remote cluster keeps whatever it was started with.
- RAY_TRAIN_HEALTH_CHECK_INTERVAL_S: the Train controller polls workers this often; a
  `ray.train.report` blocks until the next poll, so the 2 s default stalls short runs.
"""
from __future__ import annotations

import os

DEFAULT_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "RAY_DEDUP_LOGS": "0",
}


def ray_env(local: bool) -> dict[str, str]:
    env = {k: os.environ.get(k, v) for k, v in DEFAULT_ENV.items()}
    if local:
        env["RAY_AUTH_MODE"] = os.environ.get("RAY_AUTH_MODE", "disabled")
    return env


def init_ray(address: str | None = None, *, num_cpus: int | None = None, **kwargs) -> None:
    """Join the cluster at `address` (never silently start another), or start a local one."""
    import ray

    if ray.is_initialized():
        return
    env = ray_env(local=address is None)
    os.environ.update(env)
    runtime_env = {
        "env_vars": {k: v for k, v in env.items() if k.startswith("RAY_TRAIN")},
        "worker_process_setup_hook": "trainer.raysession.quiet_worker_logs",
    }
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env, log_to_driver=kwargs.pop("log_to_driver", True), **kwargs)
    else:
        ray.init(address=address, runtime_env=runtime_env, **kwargs)


def quiet_worker_logs() -> None:
    """Runs in every Ray worker process. Train V2's placement-group cleaner polls the state API,
    which needs the dashboard; without one it logs a warning every second. Real failures still
    surface through the controller and the training result."""
    import logging

    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)
    try:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()  # "install accelerate" notice on every from_pretrained
    except ImportError:
        pass
