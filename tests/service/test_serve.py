"""The real `snrlab serve` with its own local Ray, as a user runs it: it survives bursts of
requests, its Ray refuses callers without the cluster's token, no API token reaches its log,
and SIGINT and SIGTERM both take the whole local cluster down."""
from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import psutil
from serve_support import (
    closed_port,
    cmdline,
    kill_session,
    serve,
    session_pids,
    wait_for,
)

from service.store import tokens as tokens_store
from service.store.db import make_engine, make_sessionmaker, session_scope, upgrade

API = "/api/v1"
RUN_SPEC = {
    "name": "survives-bursts",
    "datasets": [{"name": "digits", "resolution": 8}],
    "weightings": [{"name": "constant"}],
    "model": {"preset": "tiny"},
    "training": {"steps": 40, "batch_size": 16, "seeds": [0]},
    "evaluation": {"steps": [2], "num_samples": 16, "metrics": ["fd_digits"], "analyses": False},
}


def _token(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'snrlab.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_scope(make_sessionmaker(engine)) as s:
        _, token = tokens_store.create_token(s, name="tests")
    engine.dispose()
    return token


def _ready(proc, log, port):
    return wait_for(proc, log, f"http://127.0.0.1:{port}/readyz", lambda r: r.json().get("ray") == "local cluster", timeout=300)


def _ray_pids(proc) -> dict[int, str]:
    return {p: cmdline(p) for p in session_pids(proc.pid) if p != proc.pid}


def _gcs(proc) -> int:
    [pid] = [p for p, c in _ray_pids(proc).items() if "gcs_server" in c.split(" ", 1)[0]]
    return pid


def _stop(proc, sig) -> dict[int, str]:
    """Send `sig`; what is left of the service's session after it exits and its agents' grace."""
    proc.send_signal(sig)
    proc.wait(90)
    deadline = time.time() + 30  # stop_local_cluster gives the agents 10 s
    while session_pids(proc.pid) and time.time() < deadline:
        time.sleep(0.5)
    return {p: cmdline(p) for p in session_pids(proc.pid)}


def test_bursts_of_requests_leave_the_local_ray_alive(tmp_path):
    """Ray's GCS and raylet die with the thread that started them; the request thread pool retires
    threads idle for 10 s. Three bursts of 50 POSTs with longer idle gaps between them: the same
    GCS is alive after each, no POST gets a 5xx, and a run submitted first trains to the end."""
    token = _token(tmp_path)
    port = closed_port()
    proc, log = serve(tmp_path, port, None, SNRLAB_MAX_CONCURRENT_RUNS="1")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        _ready(proc, log, port)
        gcs = _gcs(proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}{API}", headers=headers, timeout=120) as c:
            first = c.post("/experiments", json=RUN_SPEC)
            assert first.status_code == 201, first.text

            def post(i: int) -> int:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}{API}", headers=headers, timeout=120) as b:
                    return b.post("/experiments", json={**RUN_SPEC, "name": f"burst-{i}"}).status_code

            statuses = []
            for burst in range(3):
                with ThreadPoolExecutor(50) as pool:
                    statuses += list(pool.map(post, range(50 * burst, 50 * burst + 50)))
                time.sleep(12)  # longer than the pool's idle timeout (10 s)
                assert c.get("/experiments", params={"limit": 1}).status_code == 200  # a request retires idle threads
                assert psutil.pid_exists(gcs) and psutil.Process(gcs).status() != psutil.STATUS_ZOMBIE, log.read_text()[-3000:]
            assert statuses == [201] * 150, sorted(set(statuses))
            run_id = first.json()["run_ids"][0]
            deadline = time.time() + 600
            while (run := c.get(f"/runs/{run_id}").json())["status"] not in ("succeeded", "failed", "cancelled"):
                assert time.time() < deadline and proc.poll() is None, (run, log.read_text()[-3000:])
                time.sleep(2)
            assert run["status"] == "succeeded", run
            assert [a["status"] for a in run["attempts"]] == ["succeeded"]  # never fell back to a checkpoint
            assert _gcs(proc) == gcs
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
    finally:
        kill_session(proc)


# A method of each of Ray's gRPC services; without the cluster's token each must answer UNAUTHENTICATED.
RAY_SERVICES = ("/ray.rpc.NodeInfoGcsService/GetAllNodeInfo", "/ray.rpc.NodeManagerService/GetNodeStats",
                "/ray.rpc.ObjectManagerService/Pull", "/ray.rpc.CoreWorkerService/NumPendingTasks")


def _refuses_without_token(host: str, port: int) -> str:
    """'http 401' / 'grpc UNAUTHENTICATED' when the listener refuses a caller without the token,
    else what it answered (a test failure names it)."""
    try:
        r = httpx.post(f"http://{host}:{port}/get_runtime_envs_info", content=b"", timeout=5)
        return f"http {r.status_code}"
    except httpx.HTTPError:
        pass  # not HTTP/1.1: a gRPC server
    codes = set()
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        for method in RAY_SERVICES:
            try:
                channel.unary_unary(method)(b"", timeout=10)
                codes.add("OK")
            except grpc.RpcError as e:
                codes.add(e.code().name)
    if "OK" not in codes and "UNAUTHENTICATED" in codes:
        return "grpc UNAUTHENTICATED"
    return f"grpc {sorted(codes)}"


def test_local_ray_needs_its_token_no_token_reaches_the_log_and_sigterm_stops_it_all(tmp_path):
    """Ray 2.60 binds its GCS, raylets and workers to every interface, so the local cluster keeps
    token auth on: every listener of every process of it that is not on loopback refuses a caller
    without the token. The page's token moves from the URL into a cookie, the access log never
    shows it, the service's own INFO lines are there, and SIGTERM (docker, Kubernetes, systemd)
    takes the service and every Ray process of its session down, agents included."""
    token = _token(tmp_path)
    port = closed_port()
    proc, log = serve(tmp_path, port, None, log_level="info")
    try:
        _ready(proc, log, port)
        deadline = time.time() + 60  # the agents start a moment after the raylet
        while not any(c.startswith("ray::RuntimeEnvAgent") for c in _ray_pids(proc).values()):
            assert time.time() < deadline, _ray_pids(proc)
            time.sleep(0.5)
        listeners = []
        for pid in [proc.pid, *_ray_pids(proc)]:
            try:
                conns = psutil.Process(pid).net_connections(kind="inet")
            except psutil.NoSuchProcess:
                continue
            listeners += [(pid, c.laddr) for c in conns if c.status == psutil.CONN_LISTEN]
        exposed = [(pid, addr) for pid, addr in listeners if addr.ip not in ("127.0.0.1", "::1")]
        assert len(exposed) >= 4, listeners  # GCS, raylet (2), driver, runtime-env agent at least
        host = next(a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                    if a.family.name == "AF_INET" and not a.address.startswith("127."))
        answers = {f"{cmdline(pid).split(' ', 1)[0]}:{addr.port}": _refuses_without_token(host, addr.port)
                   for pid, addr in exposed}
        print("listeners off loopback:", answers)
        assert all(a in ("http 401", "grpc UNAUTHENTICATED") for a in answers.values()), answers
        assert any(a == "http 401" for a in answers.values()) and any(a.startswith("grpc") for a in answers.values())

        base = f"http://127.0.0.1:{port}"
        r = httpx.get(f"{base}/leaderboard", params={"token": token, "dataset": "digits"}, timeout=30)
        assert r.status_code == 303 and r.headers["location"] == "/leaderboard?dataset=digits"
        assert httpx.get(f"{base}{API}/experiments", params={"token": token}, timeout=30).status_code == 401
        assert httpx.post(f"{base}/login", data={"token": token, "next": "/experiments"}, timeout=30).status_code == 303

        left = _stop(proc, signal.SIGTERM)
        assert not left, f"left behind: {left}"
        text = log.read_text()
        assert token not in text and token[4:20] not in text
        assert "token=[redacted]" in text and '"GET /leaderboard?token=[redacted]&dataset=digits HTTP/1.1" 303' in text
        assert "INFO service.runtime.dispatcher: dispatcher connected" in text  # the service's own lines reach its log
    finally:
        kill_session(proc)


def test_ctrl_c_leaves_no_ray_processes_behind(tmp_path):
    """SIGINT takes the same shutdown path as SIGTERM. Ray's dashboard and runtime-env agents used
    to outlive the service, orphaned and deaf to SIGTERM (trainer.raysession.stop_local_cluster)."""
    port = closed_port()
    proc, log = serve(tmp_path, port, None)
    try:
        _ready(proc, log, port)
        deadline = time.time() + 60
        while not any(c.startswith("ray::DashboardAgent") for c in _ray_pids(proc).values()):
            assert time.time() < deadline, _ray_pids(proc)
            time.sleep(0.5)
        left = _stop(proc, signal.SIGINT)
        assert not left, f"left behind: {left}"
    finally:
        kill_session(proc)
