"""The leaderboard page in a real headless browser (Debian's chromium, `make browser`) against a
real uvicorn: the DOM's table values equal GET /api/v1/leaderboard; a screenshot is saved."""
from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser

import httpx
import pytest
from web_support import finished_experiment

from service.app.main import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def chromium(tmp_path, *args: str, timeout: float = 120) -> str:
    if not shutil.which(CHROMIUM):
        pytest.fail("chromium is not installed: run `make browser` (apt-get install -y chromium)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900", "--virtual-time-budget=8000", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


class Cells(HTMLParser):
    """(metric, T, weighting) -> (shown text, data-mean, data-n, bold?) from the leaderboard tables;
    plus the images the page asked for."""

    def __init__(self):
        super().__init__()
        self.cells: dict[tuple, dict] = {}
        self.imgs: list[str] = []
        self._table = self._t = self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "lb" in (a.get("class") or ""):
            self._table = a
        elif tag == "tr" and self._table is not None and "data-t" in a:
            self._t = int(a["data-t"])
        elif tag == "td" and self._table is not None and "data-weighting" in a:
            self._cell = {"text": "", "mean": float(a["data-mean"]), "n": int(a["data-n"]), "best": a.get("class") == "best"}
            self.cells[(self._table["data-metric"], self._t, a["data-weighting"])] = self._cell
        elif tag == "a" and self._cell is not None and a.get("class") == "v":
            self._in_value = True
        elif tag == "img":
            self.imgs.append(a.get("src", ""))

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "a":
            self._in_value = False

    def handle_data(self, data):
        if self._cell is not None and getattr(self, "_in_value", False):
            self._cell["text"] += data


def test_leaderboard_page_in_chromium(session_factory, settings, fake_executor, make_spec, engine, token, live_server, tmp_path):
    done = finished_experiment(session_factory, settings, fake_executor, make_spec)
    with live_server(create_app(settings)) as server:
        api = httpx.get(f"{server.url}/api/v1/leaderboard", headers={"Authorization": f"Bearer {token}"}).json()
        url = f"{server.url}/leaderboard?token={token}"
        dom = chromium(tmp_path, "--dump-dom", url)
        shot = tmp_path / "leaderboard.png"
        chromium(tmp_path, f"--screenshot={shot}", url)
        exp_dom = chromium(tmp_path, "--dump-dom", f"{server.url}/experiments/{done['experiment_id']}?token={token}")
    parsed = Cells()
    parsed.feed(dom)
    expected = {(r["metric"], r["num_steps"], w): (c, r["best"] == w) for r in api["rows"] for w, c in r["cells"].items()}
    assert len(expected) == 18 and set(parsed.cells) == set(expected)
    for key, (c, best) in expected.items():
        got = parsed.cells[key]
        assert got["text"] == c["text"], key  # the page shows the API's text
        assert got["mean"] == pytest.approx(c["mean"]) and got["n"] == c["n"] and got["best"] == best
    assert any(src.startswith("/leaderboard/plot.png") for src in parsed.imgs)
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:4] == b"\x89PNG"
    assert all(rid in exp_dom for rid in done["run_ids"]) and "succeeded" in exp_dom
