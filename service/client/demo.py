"""`make demo`: the full experiment on embedded defaults, end to end.

Starts `snrlab serve` (SQLite under SNRLAB_DATA_DIR, a local Ray) on a free port, creates a
token, submits studies/demo.yaml, shows progress bars (`snrlab submit --wait`), prints the
leaderboard (`snrlab leaderboard`), saves a static copy of the page with its images under
SNRLAB_DATA_DIR/demo/, then stops the service and checks that no Ray process it started is left.

DEMO=full: 3 seeds, 4x the steps, 1000 samples and Inception `fid` on a 1000-image subset
(for a GPU or an afternoon)."""
from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from service.client import commands, http
from service.core.config import get_settings
from service.store import tokens
from service.store.db import make_engine, make_sessionmaker, session_scope, upgrade

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "studies" / "demo.yaml"


def demo_spec(full: bool) -> dict:
    spec = yaml.safe_load(SPEC.read_text())
    if full:
        spec = copy.deepcopy(spec)
        spec["name"] += "-full"
        spec["training"].update(steps=spec["training"]["steps"] * 4, seeds=[0, 1, 2])
        spec["evaluation"].update(num_samples=1000, metrics=spec["evaluation"]["metrics"] + ["fid"])
    return spec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> dict[int, str]:
    """Processes of the service's session (it runs with start_new_session, so sid = its pid):
    the service and the local Ray it started (gcs_server, raylet, agents, workers), nobody else's."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and int(parts[1]) == sid:
            found[int(parts[0])] = parts[2] if len(parts) > 2 else ""
    return found


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited with code {proc.returncode}; see its log above")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the service did not answer on {url} within {timeout:.0f}s")


def save_static(url: str, token: str, experiment_id: str, out: Path) -> Path:
    """The leaderboard page of this experiment with its images as files next to it."""
    out.mkdir(parents=True, exist_ok=True)
    headers = {"Authorization": f"Bearer {token}"}
    html = httpx.get(f"{url}/leaderboard", params={"experiment": experiment_id}, headers=headers, timeout=120).text
    images: dict[str, str] = {}

    def local(m: re.Match) -> str:
        src = m.group(2).replace("&amp;", "&")
        if src not in images:
            name = f"img{len(images):02d}.png"
            r = httpx.get(f"{url}{src}", headers=headers, timeout=120)
            if r.status_code == 200:
                (out / name).write_bytes(r.content)
                images[src] = name
            else:
                images[src] = src
        return f"{m.group(1)}{images[src]}{m.group(3)}"

    html = re.sub(r"(<img[^>]*?src=')(/[^']*)(')", local, html)
    html = re.sub(r"href='/", f"href='{url}/", html)  # links go to the (stopped) service; restart it to follow them
    page = out / "leaderboard.html"
    page.write_text(html)
    return page


def screenshot(page_url: str, out: Path) -> Path | None:
    chromium = shutil.which("chromium")
    if chromium is None:
        return None
    prof = out / ".chromium-profile"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    f"--user-data-dir={prof}", f"--screenshot={out / 'leaderboard.png'}", "--window-size=1280,1400",
                    "--virtual-time-budget=8000", page_url], capture_output=True, timeout=120)
    shutil.rmtree(prof, ignore_errors=True)
    return out / "leaderboard.png" if (out / "leaderboard.png").exists() else None


def main() -> int:
    t0 = time.time()
    full = os.environ.get("DEMO", "").lower() == "full"
    settings = get_settings()
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    out = data_dir / "demo"
    spec = demo_spec(full)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"snrlab demo ({'full' if full else 'quick'}): data in {data_dir}, service on {url}", flush=True)

    # token first (same database the service will use)
    db_url = settings.resolved_database_url
    upgrade(db_url)
    engine = make_engine(db_url)
    with session_scope(make_sessionmaker(engine)) as s:
        _, token = tokens.create_token(s, name="demo")
    engine.dispose()

    log = (data_dir / "demo-service.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "service", "serve", "--port", str(port), "--log-level", "warning"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "SNRLAB_DATA_DIR": str(data_dir)})
    status = "failed"
    try:
        wait_healthy(url, proc)
        os.environ.update(SNRLAB_URL=url, SNRLAB_TOKEN=token)
        exp = http.call("POST", "/experiments", json=spec)
        print(f"experiment {exp['id']}: {len(exp['run_ids'])} runs ({', '.join(r['weighting'] for r in exp['runs'])})", flush=True)
        try:
            final = commands.wait_experiment(exp["id"], poll=2.0)
        except http.ApiError as e:
            raise SystemExit(f"the service stopped answering ({e}); its log: {data_dir / 'demo-service.log'} "
                             f"(a `ray stop` elsewhere on this machine also stops the service's Ray)") from None
        status = final["status"]
        for metric in spec["evaluation"]["metrics"]:
            commands.leaderboard(dataset="digits", metric=metric, sampler="ddpm", baseline="constant", margin=0.05)
        page = save_static(url, token, exp["id"], out)
        shot = screenshot(page.as_uri(), out)
        print(f"\nleaderboard page (while the service runs): {url}/leaderboard?experiment={exp['id']} (it asks for a token)")
        print(f"static copy: {page}" + (f"  (screenshot: {shot})" if shot else ""))
        print(f"restart the service to browse it: SNRLAB_DATA_DIR={data_dir} snrlab serve; then open "
              f"http://127.0.0.1:8000/leaderboard and paste a token from `snrlab token create --name me` into its form")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown: dispatcher stops, Ray disconnects
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(30)
        log.close()
        left: dict[int, str] = {}
        for _ in range(30):
            left = session_pids(proc.pid)
            if not left:
                break
            time.sleep(1)
        if left:
            names = ", ".join(f"{pid} {args[:40]}" for pid, args in sorted(left.items()))
            print(f"warning: processes left behind by the demo's service and its Ray: {names}; stopping them", file=sys.stderr)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in session_pids(proc.pid):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                time.sleep(5)
        else:
            print(f"service stopped; no Ray processes left behind (ps: nothing in session {proc.pid})")
    print(f"demo finished in {time.time() - t0:.0f}s: experiment {status}")
    return 0 if status == "succeeded" else 1


if __name__ == "__main__":
    raise SystemExit(main())
