"""What every benchmark shares: one row schema, the machine's description and the `--json` file.

A row compares one measurement of ours against its baseline, both taken side by side in the
same process run:

    {"name", "ours", "baseline", "ratio", "target", "passed", "unit", "notes"}

`ratio` is ours / baseline in `unit` (None without a baseline). `target` reads
"<field> <op> <number>" with field `ratio` or `ours` ("ratio >= 0.95", "ours <= 600"), or is
None for a figure reported without a target; `passed` is its verdict (None without a target).
benchmarks/report.py collects the files and writes docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import operator
import os
import platform
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = 1
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def check(target: str | None, ours: float | None, ratio: float | None) -> bool | None:
    """The verdict of a target string on a row's values (None: no target, or nothing measured)."""
    if target is None:
        return None
    field, op, number = target.split()
    if field not in ("ratio", "ours") or op not in OPS:
        raise ValueError(f"bad target {target!r}: expected '<ratio|ours> <{'|'.join(OPS)}> <number>'")
    value = ratio if field == "ratio" else ours
    return None if value is None else bool(OPS[op](value, float(number)))


def row(name: str, ours: float | None, baseline: float | None = None, *, unit: str, target: str | None = None,
        notes: str = "") -> dict[str, Any]:
    ratio = ours / baseline if ours is not None and baseline else None
    return {"name": name, "ours": _round(ours), "baseline": _round(baseline), "ratio": _round(ratio),
            "target": target, "passed": check(target, ours, ratio), "unit": unit, "notes": notes}


def _round(x: float | None, digits: int = 5) -> float | None:
    """Significant digits, so a 1e-7 relative difference survives."""
    return None if x is None else float(f"{float(x):.{digits}g}")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, GPU and library versions: what a reader needs to weigh the numbers."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = None
    if "torch" in sys.modules:  # only ask CUDA where torch is loaded anyway
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "ram_gib": ram_gib, "gpu": gpu,
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "torch": _version("torch"), "ray": _version("ray"), "diffusers": _version("diffusers"),
        "fastapi": _version("fastapi"), "sqlalchemy": _version("sqlalchemy"),
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def add_json_arg(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--json", metavar="PATH", default=None,
                    help="also write the rows (benchmarks/common.py schema) to this file, for benchmarks/report.py")


def write_json(path: str | None, benchmark: str, rows: list[dict[str, Any]], *, started_at: str,
               params: dict[str, Any] | None = None, details: dict[str, Any] | None = None) -> None:
    """The one file format report.py reads. No-op without a path."""
    if path is None:
        return
    doc = {"schema": SCHEMA, "benchmark": benchmark, "started_at": started_at, "finished_at": now(),
           "machine": machine(), "params": params or {}, "rows": rows, "details": details or {}}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def print_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        ratio = "" if r["ratio"] is None else f"  ratio {r['ratio']:.3f}"
        base = "" if r["baseline"] is None else f" vs {r['baseline']:g}"
        verdict = {True: "  PASS", False: "  FAIL", None: ""}[r["passed"]]
        target = f"  (target {r['target']})" if r["target"] else ""
        ours = "-" if r["ours"] is None else f"{r['ours']:g}"
        print(f"{r['name']}: {ours}{base} {r['unit']}{ratio}{target}{verdict}", flush=True)


def percentile(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (p in [0, 1]) of a non-empty list."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(-(-p * len(xs) // 1)) - 1))]


@contextmanager
def throwaway_postgres(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database next to `admin_url`'s, dropped afterwards (even on error)."""
    import psycopg

    name = f"snrlab_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
