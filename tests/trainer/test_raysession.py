"""Stopping a local cluster: node agents that outlive their raylet and ignore SIGTERM are killed.
Real processes stand in for the raylet and its agents (the /proc walk and the signals are the
unit under test); the full path, `snrlab serve` on a local Ray stopped with SIGINT, is
tests/service/test_ray_address.py::test_serve_leaves_no_ray_processes_behind."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from trainer.raysession import AGENT_TITLES, _cmdline, _stat, local_agents, reap

# A stand-in agent: titled like Ray's (argv[0]), deaf to SIGTERM, as the ones seen after `snrlab serve` stopped.
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"


def _agent(title: str) -> str:
    return f"(exec -a {title} {sys.executable} -c '{STUBBORN}') &"


def _wait_for(pred, timeout=20.0):
    deadline = time.time() + timeout
    while not pred() and time.time() < deadline:
        time.sleep(0.1)
    return pred()


def _titled(title: str) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline(int(p)).startswith(title)]


def _children(pid: int) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and (_stat(p) or (0, 0))[0] == pid]


def test_our_clusters_agents_are_found_and_killed_after_the_grace_period(tmp_path):
    before = set(local_agents())
    # a "raylet" of ours started both agents and an idle worker, then exited: the agents are orphans of our session
    subprocess.run(["bash", "-c", _agent(AGENT_TITLES[0]) + _agent(AGENT_TITLES[1]) + _agent("ray::IDLE-standin") + " true"], check=True)
    # our live "raylet" (our child) with its agent
    ours = subprocess.Popen(["bash", "-c", f"exec -a /opt/ray/raylet bash -c \"{_agent(AGENT_TITLES[0])} wait\""])
    # someone else's cluster: a live raylet in another session, not our child; never touched
    pidfile, script = tmp_path / "foreign", tmp_path / "foreign.sh"
    script.write_text(f"echo $$ > {pidfile}\nexec -a /opt/ray/raylet bash -c \"{_agent(AGENT_TITLES[0])} wait\"\n")
    subprocess.run(["bash", "-c", f"setsid bash {script} &"], check=True)
    assert _wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() and len(_children(int(pidfile.read_text()))) == 1)
    foreign = int(pidfile.read_text())
    try:
        assert _wait_for(lambda: len(set(local_agents()) - before) == 3)
        found = sorted(set(local_agents()) - before)
        assert _children(foreign)[0] not in found and _children(ours.pid)[0] in found
        assert sorted(_cmdline(a).split(" ", 1)[0] for a in found) == sorted([*AGENT_TITLES, AGENT_TITLES[0]])

        started = time.monotonic()
        killed = reap(found, grace_s=0.5)
        assert sorted(killed) == found and time.monotonic() - started >= 0.5
        assert _wait_for(lambda: all(not _cmdline(a) for a in found), 5)
        assert not set(local_agents()) - before
        assert len(_children(foreign)) == 1  # the other cluster's agent is still there
    finally:
        for p in _titled("ray::IDLE-standin") + _children(foreign) + [foreign] + _children(ours.pid):
            os.kill(p, 9)
        ours.kill()
        ours.wait()


def test_agents_that_exit_on_their_own_are_not_killed():
    quick = subprocess.Popen(["bash", "-c", f"exec -a {AGENT_TITLES[0]} {sys.executable} -c 'import time; time.sleep(0.3)'"])
    try:
        started = time.monotonic()
        assert reap([quick.pid], grace_s=10) == []  # it exited by itself: nothing killed, no full wait
        assert time.monotonic() - started < 5
        assert quick.wait(5) == 0  # exit status 0: it ended on its own, not by SIGKILL
    finally:
        quick.kill()


def test_a_local_cluster_is_started_even_when_a_dead_clusters_address_is_left_behind():
    """Ray writes the address of the last cluster started on a machine to <tmp>/ray/ray_current_cluster
    and ray.init() without an address joins it. A dead test cluster's file made every later
    init_ray() wait minutes for a GCS that was gone (CI, 2026-12-02); we start our own."""
    import shutil
    import socket
    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's socket paths live under it
    try:
        (tmp / "ray").mkdir()
        with socket.socket() as s:  # a port nothing listens on once closed
            s.bind(("127.0.0.1", 0))
            dead = f"127.0.0.1:{s.getsockname()[1]}"
        (tmp / "ray" / "ray_current_cluster").write_text(dead)
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "SNRLAB_RAY_ADDRESS")} | {"RAY_TMPDIR": str(tmp)}
        code = ("import ray; from trainer.raysession import init_ray, stop_local_cluster\n"
                "init_ray(num_cpus=1, log_to_driver=False); print('gcs', ray.get_runtime_context().gcs_address); stop_local_cluster(2)")
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        gcs = [line for line in r.stdout.splitlines() if line.startswith("gcs ")]
        assert gcs and gcs[0] != f"gcs {dead}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
