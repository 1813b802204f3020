"""The run's metrics log, `<storage>/<name>/metrics.jsonl`: one JSON object per line, written
by rank 0 of the training loop, read by the CLI's progress bar, the service's dispatcher and
the benchmarks. Plain Python (no torch), so the service can import it cheaply.

Records are metric points {"step", "loss", "mse", "mse_q0".., "images_per_s", "time"} and
attempt starts {"event": "start", "step", "world_size", "time"}."""
from __future__ import annotations

import json
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


def read_records(path: str | Path, offset: int = 0) -> tuple[list[dict], int]:
    """The complete JSON-line records of a metrics file from byte `offset` on, and the offset
    just past the last complete line (a line still being written waits for the next read). A
    garbled line (cut short by a killed writer) is skipped; a file shorter than `offset` was
    replaced and is read from the start."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [], offset
    if offset > size:
        offset = 0
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read(size - offset)
    end = chunk.rfind(b"\n") + 1
    records = []
    for line in chunk[:end].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            records.append(rec)
    return records, offset + end


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Metric records of a run, deduplicated by step (a resumed attempt re-logs steps after its
    checkpoint: the last record of each step wins). Attempt-start events are left out."""
    records, _ = read_records(Path(run_dir) / METRICS_FILE)
    by_step = {rec["step"]: rec for rec in records if "event" not in rec}
    return [by_step[s] for s in sorted(by_step)]


def start_steps(run_dir: str | Path) -> list[int]:
    """The step each attempt of the run started from (0, then the checkpoint step of each resume)."""
    records, _ = read_records(Path(run_dir) / METRICS_FILE)
    return [rec["step"] for rec in records if rec.get("event") == "start"]
