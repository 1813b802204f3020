"""The live server the control-plane benchmarks load: snrlab's own app (dispatcher off, auth on)
plus a bare JSON endpoint, in a uvicorn subprocess, so the load generator (threads with
keep-alive `http.client` connections, in the benchmark's process) never shares the server's
interpreter and GIL.

    python benchmarks/server.py DATABASE_URL PORT DATA_DIR     # what `LiveServer` starts
"""
from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
BARE_PATH = "/api/v1/bench/bare"


def serve(database_url: str, port: int, data_dir: str) -> None:
    """The server process: snrlab's app plus the bare endpoint, on one uvicorn worker."""
    import uvicorn

    from service.app.main import create_app
    from service.core.config import Settings

    app = create_app(Settings(database_url=database_url, data_dir=Path(data_dir), dispatcher_enabled=False))

    def bare() -> dict:  # a sync route, so both go through the same middleware, threadpool and JSON encoder
        return {"status": "ok", "rows": [], "note": "benchmark baseline: no database, no work"}

    app.add_api_route(BARE_PATH, bare, include_in_schema=False)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, backlog=1024)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """`with LiveServer(url, data_dir) as port:` the server up (its /healthz answers), ended on exit."""

    def __init__(self, database_url: str, data_dir: str):
        self.database_url, self.data_dir, self.port = database_url, data_dir, free_port()

    def __enter__(self) -> int:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), self.database_url, str(self.port),
                                      self.data_dir], env=env)
        deadline = time.time() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                conn.close()
                return self.port
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.__exit__()
                    raise SystemExit(f"the benchmark server did not start (exit code {self.proc.poll()})") from None
                time.sleep(0.3)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def request(conn: http.client.HTTPConnection, method: str, path: str, headers: dict, body: bytes | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    return r.status, r.read()


def closed_loop(port: int, jobs: Callable[[], tuple[str, str, bytes | None] | None], headers: dict,
                concurrency: int, keep_bodies: bool = False) -> tuple[list[float], float, set[int], list[bytes]]:
    """`concurrency` clients, each on one keep-alive connection, sending the next job as soon as its
    last answer came (a closed loop) until `jobs()` returns None. Returns (latencies in s, wall s,
    statuses, bodies in completion order: every one with `keep_bodies`, else the last)."""
    lat: list[float] = []
    codes: set[int] = set()
    bodies: list[bytes] = []
    lock = threading.Lock()

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            while True:
                with lock:
                    job = jobs()
                if job is None:
                    return
                t0 = time.perf_counter()
                status, body = request(conn, *job[:2], headers, job[2])
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
                    codes.add(status)
                    if keep_bodies or not bodies:
                        bodies.append(body)
                    else:
                        bodies[-1] = body
        finally:
            conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, time.perf_counter() - t0, codes, bodies


def for_seconds(method: str, path: str, seconds: float) -> Callable[[], tuple[str, str, None] | None]:
    """Jobs: the same request until `seconds` have passed."""
    stop_at = time.perf_counter() + seconds
    return lambda: (method, path, None) if time.perf_counter() < stop_at else None


def each(items: list[tuple[str, str, bytes | None]]) -> Callable[[], tuple[str, str, bytes | None] | None]:
    """Jobs: each of `items` once."""
    it = iter(items)
    return lambda: next(it, None)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
