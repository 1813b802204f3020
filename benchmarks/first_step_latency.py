"""POST-to-first-step latency on local Ray: the service with its real Ray executor against a
plain `trainer.run.train` call, same training config, one after the other in one run.

    python benchmarks/first_step_latency.py [--batch-size 64] [--json PATH]
    python benchmarks/first_step_latency.py --batch-size 16   # smallest (the default is small already)

- ours: `snrlab serve` as a subprocess (its own SQLite and data directory, a local Ray it starts
  itself, dispatcher on), as `make demo` runs it. Once it answers, POST a one-run experiment
  (digits, tiny, constant weighting) and time (a) until the training loop starts (the "start"
  record the trainer writes to the run's metrics.jsonl) and (b) until the first metrics point is
  visible through `GET /api/v1/runs/{id}/metrics` (after `log_every` = 25 steps, as a client sees
  it). Then cancel the experiment and stop the service (SIGINT, as `make demo` does).
- baseline: in this process, `trainer.raysession.init_ray` (a local Ray, not timed, as the
  service's Ray is up before the POST), then `trainer.run.train` on the same config: call ->
  the same "start" record.
The ratio ours / baseline is the control plane's share: dispatch interval, the run's Ray actor
starting and importing the trainer, on top of what Ray Train itself costs.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import add_json_arg, now, row, write_json

STEPS = 10_000  # long enough never to finish: the run is cancelled once measured


def spec(batch_size: int) -> dict:
    return {
        "name": "bench-first-step", "datasets": [{"name": "digits"}], "weightings": [{"name": "constant"}],
        "model": {"preset": "tiny"}, "training": {"steps": STEPS, "batch_size": batch_size, "seeds": [0]},
        "evaluation": {"steps": [5], "samplers": ["ddpm"], "num_samples": 64, "metrics": ["fd_digits"], "analyses": False},
    }


def loop_started_at(metrics_path: Path) -> float | None:
    from trainer.metrics_log import read_records

    starts = [r["time"] for r in read_records(metrics_path)[0] if r.get("event") == "start"]
    return starts[0] if starts else None


def service_latency(batch_size: int, timeout: float) -> dict:
    """(POST -> training loop start, POST -> first metrics point via the API) in seconds."""
    import httpx

    from service.store import tokens as tokens_store
    from service.store.db import make_engine, make_sessionmaker, session_scope, upgrade
    from service.client.demo import free_port, session_pids, wait_healthy

    with tempfile.TemporaryDirectory(prefix="snrlab-first-step-") as tmp:
        data_dir = Path(tmp)
        db_url = f"sqlite:///{data_dir / 'snrlab.db'}"
        upgrade(db_url)
        engine = make_engine(db_url)
        with session_scope(make_sessionmaker(engine)) as s:
            _, token = tokens_store.create_token(s, name="bench")
        engine.dispose()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "SNRLAB_DATA_DIR": str(data_dir), "SNRLAB_DATABASE_URL": db_url}
        env.pop("SNRLAB_RAY_ADDRESS", None)  # its own local Ray, as `make demo`
        log = (data_dir / "service.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "service", "serve", "--port", str(port), "--log-level", "warning"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            t_up = time.time()
            wait_healthy(url, proc)
            up_s = time.time() - t_up
            with httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
                t_post = time.time()
                r = c.post("/experiments", json=spec(batch_size))
                if r.status_code != 201:
                    raise SystemExit(f"POST /experiments answered {r.status_code}: {r.text[:500]}")
                exp = r.json()
                run_id = exp["run_ids"][0]
                metrics_path = data_dir / "runs" / run_id / "metrics.jsonl"
                first_point = None
                while first_point is None:
                    if time.time() - t_post > timeout:
                        raise SystemExit(f"no metrics point within {timeout:.0f}s; service log: {log.name}")
                    if c.get(f"/runs/{run_id}/metrics").json()["points"]:
                        first_point = time.time() - t_post
                    else:
                        time.sleep(0.1)
                started = loop_started_at(metrics_path)
                c.post(f"/experiments/{exp['id']}/cancel")
                deadline = time.time() + 60
                while c.get(f"/runs/{run_id}").json()["status"] != "cancelled" and time.time() < deadline:
                    time.sleep(0.5)
        finally:
            _stop(proc, session_pids)
            log.close()
    return {"service_up_s": up_s, "post_to_loop_start_s": started - t_post if started else None,
            "post_to_first_point_s": first_point}


def _stop(proc: subprocess.Popen, session_pids) -> None:
    """SIGINT (uvicorn's graceful shutdown stops the dispatcher and its Ray), then whatever is
    left of the service's own process session: never anybody else's processes."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(30)
    for _ in range(30):
        if not session_pids(proc.pid):
            return
        time.sleep(1)
    for pid in session_pids(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def plain_latency(batch_size: int) -> float:
    """trainer.run.train called -> training loop start, Ray already up."""
    import ray

    from trainer.config import TrainConfig
    from trainer.raysession import init_ray
    from trainer.run import train

    cfg = TrainConfig(dataset={"name": "digits"}, preset="tiny", weighting="constant", steps=30, batch_size=batch_size,
                      log_every=25, checkpoint_every=30)
    init_ray(log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as storage:
            called = time.time()
            train(cfg, storage_path=storage, name="bench")
            return loop_started_at(Path(storage) / "bench" / "metrics.jsonl") - called
    finally:
        ray.shutdown()  # the Ray this process started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for the first metrics point")
    add_json_arg(ap)
    args = ap.parse_args()
    started_at = now()
    svc = service_latency(args.batch_size, args.timeout)
    print(f"service up in {svc['service_up_s']:.1f}s; POST -> training loop start {svc['post_to_loop_start_s']:.1f}s, "
          f"-> first metrics point via the API {svc['post_to_first_point_s']:.1f}s", flush=True)
    plain = plain_latency(args.batch_size)
    print(f"trainer.run.train call -> training loop start {plain:.1f}s", flush=True)
    rows = [
        row("training: POST /experiments -> first step (service, local Ray) vs trainer.run.train call -> first step",
            svc["post_to_loop_start_s"], plain, unit="s",
            notes=f"first step = the trainer's 'start' record; tiny on digits, batch {args.batch_size}; Ray up before "
                  f"both; service dispatch interval 1 s (default)"),
        row("training: POST /experiments -> first metrics point visible in the API (service, local Ray)",
            svc["post_to_first_point_s"], unit="s",
            notes=f"after log_every = 25 steps, polled every 0.1 s; the service itself was up {svc['service_up_s']:.0f}s "
                  f"after launch"),
    ]
    write_json(args.json, "first_step", rows, started_at=started_at, params=vars(args), details={**svc, "plain_s": plain})


if __name__ == "__main__":
    main()
