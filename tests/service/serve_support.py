"""The real `snrlab serve` in a process (and a session) of its own, for the tests that need the
whole service: its processes (and its local Ray's) can be found by session id and ended by pid."""
from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).with_name("multinode_cluster.py")


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


class Helper:
    """The helper process: JSON events from its stdout (after the marker), commands to its stdin."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=env, text=True, start_new_session=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"),
        )
        self.events: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("MULTINODE "):
                self.events.put(json.loads(line.removeprefix("MULTINODE ")))

    def expect(self, event: str, timeout: float) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                got = self.events.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"the cluster helper exited ({self.proc.returncode}):\n{self.tail()}")
                continue
            if got["event"] == event:
                return got
        raise AssertionError(f"no {event!r} from the cluster helper within {timeout:.0f} s:\n{self.tail()}")

    def send(self, **cmd) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def close(self) -> None:
        """Stop politely (the helper shuts the service and the cluster down), then end whatever
        is left of the processes it started: all of them share its session id."""
        try:
            if self.proc.poll() is None:
                self.send(cmd="stop")
                self.proc.stdin.close()
                self.proc.wait(120)
        except (OSError, subprocess.TimeoutExpired):
            pass
        deadline = time.time() + 20
        while session_pids(self.proc.pid) and time.time() < deadline:
            time.sleep(0.5)
        for pid in session_pids(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
