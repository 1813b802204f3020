"""The real `snrlab serve` in a process (and a session) of its own, for the tests that need the
whole service: its processes (and its local Ray's) can be found by session id and ended by pid."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def serve(tmp_path: Path, port: int, ray_address: str | None, *, log_level: str = "warning",
           **env_extra: str) -> tuple[subprocess.Popen, Path]:
    """`snrlab serve` in a session of its own (so every process it starts can be found), on SQLite
    under tmp_path; with no address it starts its own local Ray."""
    env = {**os.environ, "SNRLAB_DATA_DIR": str(tmp_path / "data"), "SNRLAB_DATABASE_URL": f"sqlite:///{tmp_path / 'snrlab.db'}",
           "PYTHONPATH": str(ROOT), **env_extra}
    env.pop("RAY_ADDRESS", None)
    if ray_address is None:
        env.pop("SNRLAB_RAY_ADDRESS", None)
    else:
        env["SNRLAB_RAY_ADDRESS"] = ray_address
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "service", "serve", "--port", str(port), "--log-level", log_level],
                            cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def wait_for(proc: subprocess.Popen, log: Path, url: str, ok, timeout: float = 180) -> httpx.Response:
    """GET url until ok(response); the service must stay up meanwhile."""
    deadline = time.time() + timeout
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            r = httpx.get(url, timeout=5)
            if ok(r):
                return r
        except (httpx.HTTPError, ValueError):
            pass
        assert time.time() < deadline, f"service not ready at {url}:\n" + log.read_text()[-3000:]
        time.sleep(0.5)


def kill_session(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)
    for pid in session_pids(proc.pid):
        os.kill(pid, signal.SIGKILL)
