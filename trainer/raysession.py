"""The one place that starts or joins Ray. Environment is set deliberately, before Ray starts:

- RAY_USAGE_STATS_ENABLED=0: no telemetry from research clusters.
- RAY_AUTH_MODE=token for a local cluster we start ourselves, with a fresh random token in
  RAY_AUTH_TOKEN (inherited by every process of the cluster, written nowhere). Ray's GCS,
  raylets and workers listen on every interface (Ray 2.60 has no option to bind them to
  loopback), so without a token anyone who reaches the host could run code as this user. A
  user's own RAY_AUTH_MODE / RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH win; a joined cluster is the
  operator's and keeps whatever it was started with.
- RAY_TRAIN_HEALTH_CHECK_INTERVAL_S: the Train controller polls workers this often; a
  `ray.train.report` blocks until the next poll, so the 2 s default stalls short runs.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import threading

DEFAULT_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "RAY_DEDUP_LOGS": "0",
}


def ray_env(local: bool) -> dict[str, str]:
    env = {k: os.environ.get(k, v) for k, v in DEFAULT_ENV.items()}
    if local:
        env["RAY_AUTH_MODE"] = os.environ.get("RAY_AUTH_MODE", "token")
        has_token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
        if env["RAY_AUTH_MODE"] == "token" and not has_token:
            env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # 256 bits, as `ray get-auth-token --generate`
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
    answer), or start a new local one (never a cluster some earlier process left an address for)."""
    import ray

    if ray.is_initialized():
        return
    if address is not None:
        check_reachable(address)
    env = ray_env(local=address is None)
    os.environ.update(env)
    _reload_ray_auth_settings()
    runtime_env = {
        "env_vars": {k: v for k, v in env.items() if k.startswith("RAY_TRAIN")},
        "worker_process_setup_hook": "trainer.raysession.quiet_worker_logs",
    }
    keep = _sigterm_handler()
    if address is None:
        # "local", never None: with None Ray joins whatever cluster RAY_ADDRESS or the address file
        # of the last cluster started on this machine names (seen in CI: a dead test cluster's
        # address, so minutes of "Failed to connect to GCS" and then a ConnectionError).
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env, log_to_driver=kwargs.pop("log_to_driver", True), **kwargs)
    else:
        ray.init(address=address, runtime_env=runtime_env, **kwargs)
    if keep is not None:
        signal.signal(signal.SIGTERM, keep)


def _sigterm_handler():
    """The SIGTERM handler someone installed on the main thread (uvicorn's graceful shutdown), or
    None. ray.init() replaces it with sys.exit, which skipped the service's shutdown and logged a
    traceback; init_ray puts it back. With no handler of ours, Ray's stays (a CLI exits cleanly)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    handler = signal.getsignal(signal.SIGTERM)
    return handler if callable(handler) else None


def _reload_ray_auth_settings() -> None:
    """Ray's C++ config reads RAY_AUTH_MODE once, when ray._raylet is first loaded (in the service
    that is long before the cluster starts): re-read it and the token, as Ray's own
    `_enable_token_auth` does, or this driver would talk to its own cluster without the token."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


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


# ---------------------------------------------------------------- stopping a local cluster
AGENT_TITLES = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _stat(pid: int | str) -> tuple[int, int] | None:
    """(ppid, session id) from /proc/<pid>/stat, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()  # after "(comm)": state ppid pgrp session
    except OSError:
        return None
    return int(fields[1]), int(fields[3])


def local_agents(pid: int | None = None) -> list[int]:
    """Ray node agents of the local cluster started by process `pid` (default: this one): those
    whose raylet is its child, and those of its session whose raylet is already gone."""
    pid = os.getpid() if pid is None else pid
    sid = os.getsid(pid)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not _cmdline(int(entry)).startswith(AGENT_TITLES):
            continue
        st = _stat(entry)
        if st is None:
            continue
        parent = _stat(st[0])
        ours = parent is not None and parent[0] == pid  # its raylet is our child
        orphan = st[1] == sid and not _cmdline(st[0]).split(" ", 1)[0].endswith("/raylet")
        if ours or orphan:
            found.append(int(entry))
    return found


def reap(pids: list[int], grace_s: float) -> list[int]:
    """Wait up to grace_s for the agent processes to exit, then SIGKILL those still there (checked
    by title, so a reused pid is never touched). Returns the pids it killed."""
    import signal
    import time

    deadline = time.monotonic() + grace_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if _cmdline(p).startswith(AGENT_TITLES)]
    killed = []
    for p in alive:
        if _cmdline(p).startswith(AGENT_TITLES):
            try:
                os.kill(p, signal.SIGKILL)
                killed.append(p)
            except ProcessLookupError:
                pass
    return killed


def stop_local_cluster(grace_s: float = 10.0) -> list[int]:
    """ray.shutdown() of the local cluster this process started, and make sure its node agents
    go with it. Ray's dashboard and runtime-env agents outlive their raylet when `snrlab serve`
    stops (reparented to init, deaf to SIGTERM; seen every time the service was stopped with
    Ctrl-C). They are found first, then handed to a detached reaper process (this one may not
    survive Ray's teardown after a signal) that gives them grace_s to exit and kills the rest.
    Returns the agents handed over. Only for a cluster this process started: a joined
    cluster's agents belong to someone else."""
    import subprocess
    import sys

    import ray

    agents = local_agents()
    if agents:
        subprocess.Popen([sys.executable, "-m", "trainer.raysession", str(grace_s), *map(str, agents)],
                         start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if ray.is_initialized():
        ray.shutdown()
    return agents


if __name__ == "__main__":  # the reaper: python -m trainer.raysession GRACE_S PID...
    import sys

    reap([int(p) for p in sys.argv[2:]], float(sys.argv[1]))
