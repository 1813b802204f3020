"""SNRLAB_RAY_ADDRESS, the unhappy paths: an address where nothing answers never makes the
service start a Ray of its own; the service starts anyway, /readyz says why it is not ready (503),
and the dispatcher keeps trying with capped exponential backoff until the cluster appears. A
cluster address with the node-local default data directory is refused. A run whose Ray worker is
lost mid-run (a node died) spends no failed attempt."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from serve_support import (
    ROOT,
    closed_port,
    cmdline,
    kill_session,
    serve,
    session_pids,
    wait_for,
)

from service.app.main import create_app
from service.core.config import Settings, StorageNotShared
from service.domain import experiments as domain_experiments
from service.domain.spec import ExperimentSpec
from service.runtime.dispatcher import Dispatcher
from service.store import runs as runs_store
from service.store.db import session_scope


# ---------------------------------------------------------------- the real service, real Ray (absent)
def test_unreachable_address_serves_503_readiness_and_starts_no_local_ray(tmp_path):
    """`snrlab serve` with an address where nothing listens: up and answering, not ready, says
    why on /readyz and in its log, and no Ray process of its own anywhere in its session."""
    ray_port, port = closed_port(), closed_port()
    address = f"127.0.0.1:{ray_port}"
    proc, log = serve(tmp_path, port, address)
    try:
        health = wait_for(proc, log, f"http://127.0.0.1:{port}/healthz", lambda r: r.status_code == 200)
        assert health.json()["dispatcher"] == "connecting"
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "database": "ok", "dispatcher": "connecting",
                                "replica": ready.json()["replica"], "leader": None,  # no Ray, no lease taken
                                "ray": f"unreachable at {address}: Connection refused"}
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/readyz", timeout=5).status_code == 503
        deadline = time.time() + 60
        while "retries in" not in log.read_text() and time.time() < deadline:
            time.sleep(0.5)
        assert f"ray: unreachable at {address}: Connection refused; the dispatcher retries in" in log.read_text()
        ours = {pid: cmdline(pid) for pid in session_pids(proc.pid)}
        assert not [c for c in ours.values() if "raylet" in c or "gcs_server" in c], ours
        assert list(ours) == [proc.pid], ours  # the service and nothing else
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        kill_session(proc)


APPEARS = textwrap.dedent("""
    import json, os, sys, time
    import ray
    from fastapi.testclient import TestClient
    from ray.cluster_utils import Cluster
    from service.core.config import Settings
    from service.app.main import create_app

    port, data_dir = int(sys.argv[1]), sys.argv[2]
    address = f"127.0.0.1:{port}"
    settings = Settings(ray_address=address, data_dir=data_dir, database_url=f"sqlite:///{data_dir}/snrlab.db")
    out, cluster = {}, None
    with TestClient(create_app(settings, connect_backoff_s=(0.2, 2.0))) as c:
        try:
            r = c.get("/readyz")
            out["before"] = [r.status_code, r.json()["ray"], ray.is_initialized()]
            cluster = Cluster(initialize_head=True, connect=False,
                              head_node_args={"gcs_server_port": port, "num_cpus": 1, "include_dashboard": False})
            deadline = time.time() + 180
            while c.get("/readyz").json()["dispatcher"] != "leader" and time.time() < deadline:
                time.sleep(0.2)
            r = c.get("/readyz")
            out["after"] = [r.status_code, r.json()["ray"], ray.is_initialized(), c.get("/healthz").json()["dispatcher"]]
            out["nodes"] = len(ray.nodes()) if ray.is_initialized() else 0
        finally:
            print("RESULT " + json.dumps(out), flush=True)
    if cluster is not None:
        cluster.shutdown()
""")


def test_dispatcher_joins_the_cluster_once_it_appears(tmp_path):
    """In a process of its own (this session holds a Ray session): not ready and no Ray while
    nothing listens; a head started later at that address is joined without a restart."""
    port = closed_port()
    ray_tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"snrra-{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": str(ray_tmp), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    env.pop("RAY_ADDRESS", None)
    (tmp_path / "data").mkdir()
    proc = subprocess.Popen([sys.executable, "-c", APPEARS, str(port), str(tmp_path / "data")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=400)
    finally:
        kill_session(proc)
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)
    lines = [ln for ln in output.splitlines() if ln.startswith("RESULT ")]
    assert lines, output[-4000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))
    address = f"127.0.0.1:{port}"
    assert out["before"] == [503, f"unreachable at {address}: Connection refused", False], output[-4000:]
    assert out["after"] == [200, f"connected to {address}", True, "running"], output[-4000:]
    assert out["nodes"] == 1
    assert proc.returncode == 0, output[-4000:]


def test_train_cli_with_an_unreachable_address_is_one_clear_line(tmp_path):
    address = f"127.0.0.1:{closed_port()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SNRLAB_RAY_ADDRESS": address}
    r = subprocess.run([sys.executable, "-m", "service", "train", "--steps", "1", "--storage", str(tmp_path)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert f"error unreachable at {address}: Connection refused" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------- settings
def test_a_cluster_address_with_the_node_local_default_data_dir_is_refused(monkeypatch, tmp_path):
    monkeypatch.delenv("SNRLAB_DATA_DIR", raising=False)
    url = f"sqlite:///{tmp_path / 'snrlab.db'}"
    with pytest.raises(StorageNotShared, match="SNRLAB_DATA_DIR is not: runs would go to .* node-local default"):
        create_app(Settings(ray_address="head.example:6379", database_url=url))
    create_app(Settings(ray_address="head.example:6379", database_url=url, data_dir=tmp_path))  # explicit: trusted
    create_app(Settings(database_url=url))  # a local Ray: the default is fine


def test_serve_refuses_the_default_data_dir_with_a_cluster_address(tmp_path):
    env = {**os.environ, "SNRLAB_RAY_ADDRESS": "head.example:6379", "PYTHONPATH": str(ROOT),
           "SNRLAB_DATABASE_URL": f"sqlite:///{tmp_path / 'snrlab.db'}"}
    env.pop("SNRLAB_DATA_DIR", None)
    r = subprocess.run([sys.executable, "-m", "service", "serve", "--port", str(closed_port())], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "SNRLAB_RAY_ADDRESS is set (head.example:6379) but SNRLAB_DATA_DIR is not" in " ".join(r.stderr.split())
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------- dispatcher logic (fake executor)
class FlakyStart:
    """Wraps the fake executor: start() fails `failures` times as an unreachable cluster does."""

    def __init__(self, inner, failures: int):
        self.inner, self.failures, self.calls = inner, failures, 0

    def start(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("unreachable at head.example:6379: Connection refused")

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_readiness_follows_the_dispatchers_connection(settings, engine, fake_executor):
    flaky = FlakyStart(fake_executor, failures=3)
    app = create_app(settings.model_copy(update={"dispatcher_enabled": True}), executor=flaky,
                     connect_backoff_s=(0.05, 0.1))
    with TestClient(app) as c:
        first = c.get("/readyz")
        deadline = time.time() + 60
        while c.get("/readyz").json()["dispatcher"] != "leader" and time.time() < deadline:
            time.sleep(0.05)
        after = c.get("/readyz")
    assert first.status_code == 503
    replica = first.json()["replica"]
    assert first.json() == {"status": "unavailable", "database": "ok", "dispatcher": "connecting", "replica": replica,
                            "leader": None, "ray": "unreachable at head.example:6379: Connection refused"}
    # a replica that cannot reach Ray does not take the lease; once connected it leads (it is alone)
    assert after.status_code == 200 and after.json() == {"status": "ready", "database": "ok", "ray": "local cluster",
                                                         "dispatcher": "leader", "replica": replica, "leader": replica}
    assert flaky.calls == 4  # three refusals, then connected: no more attempts


def test_connect_backoff_doubles_and_is_capped(settings, session_factory, fake_executor, monkeypatch):
    waits: list[float] = []
    flaky = FlakyStart(fake_executor, failures=6)
    d = Dispatcher(session_factory=session_factory, settings=settings, executor=flaky, connect_backoff_s=(1.0, 4.0))

    def fake_wait(timeout=None):  # record the backoff instead of sleeping it
        waits.append(timeout)
        return False

    monkeypatch.setattr(d._stop, "wait", fake_wait)
    d.start()
    deadline = time.time() + 30
    while not d.connected and time.time() < deadline:
        time.sleep(0.01)
    d.stop()
    assert waits[:6] == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0] and d.connected and flaky.calls == 7


@pytest.fixture
def submit(session_factory, make_spec):
    def go(**overrides) -> list[str]:
        spec = ExperimentSpec.model_validate(make_spec(**overrides))
        with session_scope(session_factory) as s:
            exp, _ = domain_experiments.create_experiment(s, spec=spec, code_version="test")
            return [r.id for r in exp.runs]

    return go


def test_a_job_lost_mid_run_is_requeued_without_spending_an_attempt(submit, settings, session_factory, fake_executor):
    (r1,) = submit(weightings=[{"name": "constant"}])
    d = Dispatcher(session_factory=session_factory, settings=settings.model_copy(update={"max_attempts": 1}),
                   executor=fake_executor)
    d.tick()
    fake_executor.write_metrics(r1, [25, 50])
    for _ in range(3):  # its node dies, again and again: each time a new attempt, never "failed"
        name = fake_executor.job_for(r1).job.name
        del fake_executor.jobs[name]
        d.tick()
    with session_factory() as s:
        run = runs_store.get_run(s, run_id=r1)
        assert run.status == "training" and [a.status for a in run.attempts] == ["lost", "lost", "lost", "running"]
        assert run.attempts[0].error
    fake_executor.succeed(r1)
    d.tick()
    with session_factory() as s:
        assert runs_store.get_run(s, run_id=r1).status == "succeeded"


def test_a_run_that_keeps_losing_its_worker_ends(submit, settings, session_factory, fake_executor):
    (r1,) = submit(weightings=[{"name": "constant"}])
    d = Dispatcher(session_factory=session_factory, settings=settings.model_copy(update={"max_attempts": 1}),
                   executor=fake_executor)
    d.tick()
    for _ in range(5):
        del fake_executor.jobs[fake_executor.job_for(r1).job.name]
        d.tick()
    with session_factory() as s:
        run = runs_store.get_run(s, run_id=r1)
        assert run.status == "failed" and run.error.startswith("lost its Ray worker 5 times")


# ---------------------------------------------------------------- what counts as a lost node (real Ray errors)
def test_an_actor_death_inside_a_train_failure_is_recognised():
    from ray.exceptions import ActorDiedError
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError
    from ray.train.v2.api.exceptions import WorkerGroupError

    from service.runtime.run_actor import _actor_died

    died = WorkerGroupError("rank 0 died", {0: WorkerHealthCheckFailedError("A worker health check failed.", ActorDiedError())})
    assert _actor_died(died)
    assert not _actor_died(WorkerGroupError("rank 0 raised", {0: ValueError("loss is NaN")}))
    assert not _actor_died(FileNotFoundError("no such dataset"))


def test_an_actor_death_with_every_node_alive_is_a_failure_not_a_lost_node(ray_session):
    """A worker process that crashes (its node alive) is the run's failure: it counts."""
    from ray.exceptions import ActorDiedError

    from service.runtime.run_actor import _dead_nodes, _node_loss

    assert _node_loss(ActorDiedError(), _dead_nodes(), wait_s=0) is None
    assert _node_loss(ValueError("loss is NaN"), set(), wait_s=0) is None
