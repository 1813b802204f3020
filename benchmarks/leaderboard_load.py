"""Leaderboard load: `GET /api/v1/leaderboard` over 10,000 stored results against a bare FastAPI
JSON endpoint mounted in the same app (for this benchmark only), one live uvicorn server, on
SQLite and/or PostgreSQL. Reports requests/s of each, their ratio, and p50/p99 latencies.

    python benchmarks/leaderboard_load.py [--results 10000] [--seconds 10] [--concurrency 8] \\
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--json PATH]
    python benchmarks/leaderboard_load.py --results 400 --seconds 1 --rounds 1   # smallest, to prove it runs

- The results are written straight through the service's store (experiments as the API would create
  them, runs marked succeeded, `record_results`), not by training: 50 experiments x 5 weightings
  x 2 seeds = 500 runs, each with 5 T x 2 samplers x 2 metrics = 20 results (for --results 10000);
  5 training setups, so the unfiltered board has 100 rows of 5 cells with n = 20 seeds-and-repeats.
- The server is `snrlab`'s own app (dispatcher off, auth on: every request carries a token) in a
  uvicorn subprocess (benchmarks/server.py), so the load generator (threads with keep-alive
  `http.client` connections, in this process) does not share the server's interpreter. The bare
  endpoint is a sync route returning a small dict, so both go through the same middleware,
  threadpool and JSON encoder.
- Rounds alternate bare / leaderboard (`--rounds`, `--seconds` each), so load changes on a shared
  machine hit both; requests/s and percentiles are over all rounds of each endpoint.
- Four endpoints: the bare one, the unfiltered board (every result aggregated), the board of one
  table of the page (`dataset`, `metric`, `sampler` filters) and the page itself. The board is
  cached under the database's results version (service.api.cache): after the warm-up request,
  each request costs one one-row query and the cached bytes, which is what this measures
  (steady state between changes); the first request after a change pays the aggregation, timed
  apart as `first_ms` (cold: the version moved).
- Targets (issue "A leaderboard that decides"): the API's p99 <= 50 ms and >= 0.5x the bare
  endpoint's requests/s, the page's p99 <= 100 ms; at 10,000 and 100,000 results.
"""
from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from common import add_json_arg, now, percentile, row, throwaway_postgres, write_json
from server import BARE_PATH, LiveServer, closed_loop, for_seconds, request

HERE = Path(__file__).resolve().parent
WEIGHTINGS = ["constant", "debias", "p2", "min_snr", "inv_snr"]
SETUP_STEPS = [1000, 2000, 3000, 4000, 5000]  # training steps: 5 setups (config hashes) of the leaderboard
T_VALUES = [2, 5, 10, 20, 50]
SAMPLERS = ["ddpm", "ddim"]
METRICS = ["fd_digits", "color_mean_shift"]
FILTERED = {"dataset": "digits", "metric": "fd_digits", "sampler": "ddpm"}


def seed_results(url: str, num_results: int) -> str:
    """Migrate, store `num_results` results of succeeded runs, return a fresh API token."""
    from sqlalchemy import update

    from service.core.lifecycle import RunStatus
    from service.domain import experiments as domain_experiments
    from service.domain.spec import ExperimentSpec
    from service.store import runs as runs_store
    from service.store import tokens as tokens_store
    from service.store.db import make_engine, make_sessionmaker, session_scope, upgrade
    from service.store.models import Run

    upgrade(url)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    per_run = len(T_VALUES) * len(SAMPLERS) * len(METRICS)
    per_exp = len(WEIGHTINGS) * 2 * per_run
    num_exps = max(1, -(-num_results // per_exp))
    left = num_results
    for e in range(num_exps):
        spec = ExperimentSpec.model_validate({
            "name": f"bench-{e}", "datasets": [{"name": "digits"}],
            "weightings": [{"name": w} for w in WEIGHTINGS], "model": {"preset": "tiny"},
            "training": {"steps": SETUP_STEPS[e % len(SETUP_STEPS)], "seeds": [0, 1]},
            "evaluation": {"steps": T_VALUES, "samplers": SAMPLERS, "metrics": METRICS, "num_samples": 1000},
        })
        with session_scope(factory) as s:
            exp, _ = domain_experiments.create_experiment(s, spec=spec, code_version="bench")
            s.execute(update(Run).where(Run.experiment_id == exp.id).values(status=RunStatus.SUCCEEDED.value))
            for k, run in enumerate(exp.runs):
                cells = [(t, smp, m) for t in T_VALUES for smp in SAMPLERS for m in METRICS][: max(0, left)]
                left -= len(cells)
                runs_store.record_results(s, run_id=run.id, results=[
                    {"num_steps": t, "sampler": smp, "metric": m, "value": 10.0 + (e * 7 + k * 3 + t) % 17 / 3,
                     "num_gen": 1000, "extractor": m, "extractor_fingerprint": f"fp-{m}", "ref_key": f"digits-train-{m}"}
                    for t, smp, m in cells])
    with session_scope(factory) as s:
        _, token = tokens_store.create_token(s, name="bench")
    engine.dispose()
    return token


def bench(url: str, args) -> dict:
    t0 = time.perf_counter()
    token = seed_results(url, args.results)
    seeded_s = time.perf_counter() - t0
    print(f"  {args.results} results stored in {seeded_s:.1f}s", flush=True)
    with tempfile.TemporaryDirectory() as tmp, LiveServer(url, tmp) as port:
        headers = {"Authorization": f"Bearer {token}"}
        paths = {"bare": BARE_PATH, "leaderboard": "/api/v1/leaderboard",
                 "leaderboard_filtered": f"/api/v1/leaderboard?{urlencode(FILTERED)}", "page": "/leaderboard"}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        first_ms, checks = {}, {}
        for k, p in paths.items():  # one warm-up request each (first-request costs are not steady state)
            t1 = time.perf_counter()
            checks[k] = request(conn, "GET", p, headers)
            first_ms[k] = (time.perf_counter() - t1) * 1000
        conn.close()
        for k, (status, body) in checks.items():
            if status != 200:
                raise SystemExit(f"GET {paths[k]} answered {status}: {body[:300]!r}")
        board = json.loads(checks["leaderboard"][1])
        n_cells = sum(c["n"] for r in board["rows"] for c in r["cells"].values())
        if n_cells != args.results:
            raise SystemExit(f"the leaderboard aggregates {n_cells} results, expected {args.results}")
        acc = {k: {"lat": [], "wall": 0.0, "codes": set(), "bytes": 0} for k in paths}
        for _ in range(args.rounds):
            for k in paths:
                lat, wall, codes, bodies = closed_loop(port, for_seconds("GET", paths[k], args.seconds), headers,
                                                       args.concurrency)
                a = acc[k]
                a["lat"] += lat
                a["wall"] += wall
                a["codes"] |= codes
                a["bytes"] = len(bodies[-1]) if bodies else 0
    out = {"seeded_s": seeded_s, "rows": len(board["rows"]), "columns": len(board["columns"]), "first_ms": first_ms}
    for k, a in acc.items():
        ms = [x * 1000 for x in a["lat"]]
        out[k] = {"n": len(ms), "req_per_s": len(ms) / a["wall"], "p50_ms": percentile(ms, 0.5),
                  "p99_ms": percentile(ms, 0.99), "status": sorted(a["codes"]), "response_bytes": a["bytes"]}
        print(f"  {k:21s} n={len(ms):6d} status={sorted(a['codes'])} {out[k]['req_per_s']:8.1f} req/s  "
              f"p50 {out[k]['p50_ms']:7.1f} ms  p99 {out[k]['p99_ms']:7.1f} ms  ({a['bytes']} bytes)", flush=True)
    return out


def rows_for(db: str, res: dict, args) -> list[dict]:
    bare = res["bare"]
    out = []
    for k, label in (("leaderboard", "all results"), ("leaderboard_filtered", "one table: " + ",".join(FILTERED.values()))):
        lb = res[k]
        common = (f"{lb['response_bytes'] // 1024} KiB ({res['rows'] if k == 'leaderboard' else 'fewer'} rows); "
                  f"{args.concurrency} clients, {args.rounds} x {args.seconds:g}s each; first request after a change "
                  f"{res['first_ms'][k]:.0f} ms")
        out.append(row(f"control plane: GET /api/v1/leaderboard ({label}) vs bare JSON endpoint, {args.results} results, {db}",
                       lb["req_per_s"], bare["req_per_s"], unit="req/s", target="ratio >= 0.5",
                       notes=f"p50/p99 {lb['p50_ms']:.1f}/{lb['p99_ms']:.1f} ms vs {bare['p50_ms']:.1f}/{bare['p99_ms']:.1f} ms; "
                             + common))
        out.append(row(f"control plane: GET /api/v1/leaderboard ({label}) p99, {args.results} results, {db}",
                       lb["p99_ms"], unit="ms", target="ours <= 50", notes=common))
    page = res["page"]
    out.append(row(f"control plane: GET /leaderboard (the page) p99, {args.results} results, {db}", page["p99_ms"], unit="ms",
                   target="ours <= 100", notes=f"{page['req_per_s']:.0f} req/s; {page['response_bytes'] // 1024} KiB; "
                                               f"first request after a change {res['first_ms']['page']:.0f} ms"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=10.0, help="per endpoint per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--postgres", default=None, help="admin URL; a throwaway database is created and dropped")
    ap.add_argument("--skip-sqlite", action="store_true")
    add_json_arg(ap)
    args = ap.parse_args()
    started_at = now()
    rows, details = [], {}
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            print("sqlite", flush=True)
            details["sqlite"] = bench(f"sqlite:///{tmp}/bench.db", args)
            rows += rows_for("SQLite", details["sqlite"], args)
    if args.postgres:
        with throwaway_postgres(args.postgres) as url:
            print("postgresql", flush=True)
            details["postgresql"] = bench(url, args)
            rows += rows_for("PostgreSQL", details["postgresql"], args)
    write_json(args.json, "leaderboard", rows, started_at=started_at, params=vars(args), details=details)


if __name__ == "__main__":
    main()
