"""API load benchmark: concurrent POST /experiments and GET /experiments/{id} against a real
uvicorn server (dispatcher off), on SQLite and/or PostgreSQL. Prints latency percentiles and
throughput.

    python benchmarks/api_load.py --requests 200 --concurrency 50
    python benchmarks/api_load.py --postgres postgresql://postgres@127.0.0.1:5432/test
"""
from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import uvicorn

from service import crud
from service.config import Settings
from service.db import make_engine, make_sessionmaker, session_scope, upgrade
from service.main import create_app

SPEC = {
    "name": "bench",
    "datasets": [{"name": "digits"}],
    "weightings": [{"name": "constant"}, {"name": "debias"}, {"name": "p2"}, {"name": "min_snr"}],
    "model": {"preset": "tiny"},
    "training": {"steps": 2000, "seeds": [0, 1, 2]},
    "evaluation": {"steps": [2, 5, 10, 20, 50, 100], "samplers": ["ddpm"], "num_samples": 1000, "metrics": ["fd_digits"]},
}


def _serve(app) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", backlog=512))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def bench(url: str, requests: int, concurrency: int) -> None:
    upgrade(url)
    engine = make_engine(url)
    with session_scope(make_sessionmaker(engine)) as s:
        _, token = crud.create_token(s, name="bench")
    engine.dispose()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(database_url=url, data_dir=Path(tmp), dispatcher_enabled=False))
        server, thread, base = _serve(app)
        headers = {"Authorization": f"Bearer {token}"}
        limits = httpx.Limits(max_connections=concurrency)
        with httpx.Client(base_url=f"{base}/api/v1", headers=headers, timeout=120, limits=limits) as c:
            def post(i: int) -> tuple[float, int, str]:
                t0 = time.perf_counter()
                r = c.post("/experiments", json={**SPEC, "name": f"bench-{i}"})
                return time.perf_counter() - t0, r.status_code, r.json().get("id", "")

            def get(exp_id: str) -> tuple[float, int, str]:
                t0 = time.perf_counter()
                r = c.get(f"/experiments/{exp_id}")
                return time.perf_counter() - t0, r.status_code, exp_id

            for label, fn, args in (("POST /experiments (12 runs each)", post, range(requests)), ("GET /experiments/{id}", get, None)):
                if args is None:
                    args = ids
                t0 = time.perf_counter()
                with ThreadPoolExecutor(concurrency) as pool:
                    out = list(pool.map(fn, args))
                wall = time.perf_counter() - t0
                lat = [o[0] * 1000 for o in out]
                codes = sorted({o[1] for o in out})
                ids = [o[2] for o in out]
                print(f"  {label:36s} n={len(out)} c={concurrency} status={codes} {len(out) / wall:7.1f} req/s  "
                      f"p50 {statistics.median(lat):6.1f} ms  p95 {_pct(lat, 0.95):6.1f} ms  max {max(lat):6.1f} ms")
        server.should_exit = True
        thread.join(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--postgres", default=None, help="admin URL; a throwaway database is created and dropped")
    ap.add_argument("--skip-sqlite", action="store_true")
    args = ap.parse_args()
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            print("sqlite")
            bench(f"sqlite:///{tmp}/bench.db", args.requests, args.concurrency)
    if args.postgres:
        import psycopg

        name = f"snrlab_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            print("postgresql")
            bench(f"{args.postgres.rsplit('/', 1)[0]}/{name}", args.requests, args.concurrency)
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
