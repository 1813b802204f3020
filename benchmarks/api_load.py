"""API load benchmark: concurrent POST /experiments (12 runs each) and GET /experiments/{id}
against a real uvicorn server (dispatcher off, auth on) in a subprocess (benchmarks/server.py),
on SQLite and/or PostgreSQL: `--concurrency` clients in a closed loop (each sends its next
request when its last is answered), each on a keep-alive connection. Prints latency percentiles
and throughput; the p50/p99 are the rows of docs/BENCHMARKS.md. In a closed loop the mean latency
is concurrency / throughput (Little's law), so a p99 target at 50 clients is a throughput target:
p99 <= 100 ms needs more than 500 requests/s.

    python benchmarks/api_load.py --requests 200 --concurrency 50 [--json PATH]
    python benchmarks/api_load.py --postgres postgresql://postgres@127.0.0.1:5432/test
    python benchmarks/api_load.py --requests 20 --concurrency 10   # smallest, to prove it runs

PostgreSQL: `--postgres` is an admin URL; a throwaway database is created next to it and dropped.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile

from common import add_json_arg, now, percentile, row, throwaway_postgres, write_json
from server import LiveServer, closed_loop, each

from service.store import tokens as tokens_store
from service.store.db import make_engine, make_sessionmaker, session_scope, upgrade

SPEC = {
    "name": "bench",
    "datasets": [{"name": "digits"}],
    "weightings": [{"name": "constant"}, {"name": "debias"}, {"name": "p2"}, {"name": "min_snr"}],
    "model": {"preset": "tiny"},
    "training": {"steps": 2000, "seeds": [0, 1, 2]},
    "evaluation": {"steps": [2, 5, 10, 20, 50, 100], "samplers": ["ddpm"], "num_samples": 1000, "metrics": ["fd_digits"]},
}


def stats(lat_s: list[float], wall: float, codes: set[int]) -> dict:
    lat = [x * 1000 for x in lat_s]
    return {"n": len(lat), "req_per_s": len(lat) / wall, "p50_ms": statistics.median(lat),
            "p95_ms": percentile(lat, 0.95), "p99_ms": percentile(lat, 0.99), "max_ms": max(lat), "status": sorted(codes)}


def bench(url: str, requests: int, concurrency: int) -> dict[str, dict]:
    upgrade(url)
    engine = make_engine(url)
    with session_scope(make_sessionmaker(engine)) as s:
        _, token = tokens_store.create_token(s, name="bench")
    engine.dispose()
    out: dict[str, dict] = {}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with tempfile.TemporaryDirectory() as tmp, LiveServer(url, tmp) as port:
        posts = [("POST", "/api/v1/experiments", json.dumps({**SPEC, "name": f"bench-{i}"}).encode()) for i in range(requests)]
        lat, wall, codes, bodies = closed_loop(port, each(posts), headers, concurrency, keep_bodies=True)
        out["POST /experiments"] = stats(lat, wall, codes)
        ids = [json.loads(b).get("id", "") for b in bodies]
        gets = [("GET", f"/api/v1/experiments/{i}", None) for i in ids]
        lat, wall, codes, _ = closed_loop(port, each(gets), headers, concurrency)
        out["GET /experiments/{id}"] = stats(lat, wall, codes)
    for label, st in out.items():
        print(f"  {label:24s} n={st['n']} c={concurrency} status={st['status']} {st['req_per_s']:7.1f} req/s  "
              f"p50 {st['p50_ms']:6.1f} ms  p95 {st['p95_ms']:6.1f} ms  p99 {st['p99_ms']:6.1f} ms  "
              f"max {st['max_ms']:6.1f} ms", flush=True)
    return out


def rows_for(db: str, res: dict[str, dict], concurrency: int) -> list[dict]:
    post, get = res["POST /experiments"], res["GET /experiments/{id}"]
    ok = "all 201" if post["status"] == [201] else f"statuses {post['status']}"
    return [
        row(f"control plane: POST /experiments p99, {concurrency} concurrent clients, {db}", post["p99_ms"], unit="ms",
            notes=f"p50 {post['p50_ms']:.0f} ms, {post['req_per_s']:.1f} req/s, {post['n']} requests ({ok}), "
                  f"12 runs each; server in a subprocess (uvicorn, 1 worker), dispatcher off"),
        row(f"control plane: GET /experiments/{{id}} p99, {concurrency} concurrent clients, {db}", get["p99_ms"], unit="ms",
            notes=f"p50 {get['p50_ms']:.0f} ms, {get['req_per_s']:.1f} req/s, {get['n']} requests"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--postgres", default=None, help="admin URL; a throwaway database is created and dropped")
    ap.add_argument("--skip-sqlite", action="store_true")
    add_json_arg(ap)
    args = ap.parse_args()
    started_at = now()
    rows, details = [], {}
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            print("sqlite")
            details["sqlite"] = bench(f"sqlite:///{tmp}/bench.db", args.requests, args.concurrency)
            rows += rows_for("SQLite", details["sqlite"], args.concurrency)
    if args.postgres:
        with throwaway_postgres(args.postgres) as url:
            print("postgresql")
            details["postgresql"] = bench(url, args.requests, args.concurrency)
            rows += rows_for("PostgreSQL", details["postgresql"], args.concurrency)
    write_json(args.json, "api", rows, started_at=started_at, params=vars(args), details=details)


if __name__ == "__main__":
    main()
