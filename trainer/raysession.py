"""The one place that starts or joins Ray. Environment is set deliberately, before Ray starts:

- RAY_USAGE_STATS_ENABLED=0: no telemetry from research clusters.
- RAY_AUTH_MODE=disabled for a local cluster we start ourselves (it listens on loopback only);
  a user's own value wins, and a remote cluster keeps whatever it was started with.
- RAY_TRAIN_HEALTH_CHECK_INTERVAL_S: the Train controller polls workers this often; a
  `ray.train.report` blocks until the next poll, so the 2 s default stalls short runs.
"""
from __future__ import annotations

import os
import socket

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


class RayUnreachable(ConnectionError):
    """An address is set and no Ray cluster answers there. We never start a local one instead."""


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """Raise RayUnreachable("unreachable at <address>: <reason>") unless something listens at
    the cluster's address. ray.init(address=...) retries an absent cluster for minutes; this
    answers in `timeout` seconds. "auto" resolves as Ray does (RAY_ADDRESS, then the address
    file of a cluster started on this machine); "local" would start a new cluster, so it is refused."""
    from ray._private import services

    def unreachable(reason: object) -> RayUnreachable:
        return RayUnreachable(f"unreachable at {address}: {reason}")

    if address == "local":
        raise unreachable("'local' means start a new cluster; unset the address to do that")
    try:
        target = address.removeprefix("ray://") if address.startswith("ray://") else services.canonicalize_bootstrap_address(address)
        host, _, port = (target or "").rpartition(":")
        port = int(port)
    except (ConnectionError, ValueError) as e:  # "auto" with no cluster here; a malformed address
        raise unreachable(e) from None
    try:
        socket.create_connection((host.strip("[]"), port), timeout=timeout).close()
    except OSError as e:
        raise unreachable(e.strerror or e) from None


def init_ray(address: str | None = None, *, num_cpus: int | None = None, **kwargs) -> None:
    """Join the cluster at `address` (never silently start another: RayUnreachable if it does not
    answer), or start a local one."""
    import ray

    if ray.is_initialized():
        return
    if address is not None:
        check_reachable(address)
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
