"""The pages in a real headless browser (Debian's chromium, `make browser`) against a real
uvicorn: the DOM's table values equal GET /api/v1/leaderboard; a screenshot is saved; the cancel
button works under the pages' CSP (no 'unsafe-inline'), driven over the DevTools protocol."""
from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from typing import Self

import httpx
import pytest
from web_support import finished_experiment

from service.app.main import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _flags(tmp_path) -> list[str]:
    if not shutil.which(CHROMIUM):
        pytest.fail("chromium is not installed: run `make browser` (apt-get install -y chromium)")
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"]


def chromium(tmp_path, *args: str, timeout: float = 120) -> str:
    cmd = [CHROMIUM, *_flags(tmp_path), "--virtual-time-budget=8000", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


class Devtools:
    """One chromium driven over --remote-debugging-pipe: DevTools-protocol JSON messages, each
    ended by a NUL, on the browser's fds 3 (in) and 4 (out); no websocket client needed.
    `events` keeps every event seen (console and security log entries, exceptions)."""

    def __init__(self, tmp_path):
        theirs_in, self._out = os.pipe()
        self._in, theirs_out = os.pipe()
        # above 9 so that bash's `3<&r 4>&w` never overwrites one with the other
        r, w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (theirs_in, theirs_out))
        os.close(theirs_in), os.close(theirs_out)
        self._log = (tmp_path / "chromium.log").open("w")
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{r} 4>&{w} {r}<&- {w}>&-', "chromium", CHROMIUM, *_flags(tmp_path),
             "--remote-debugging-pipe", "about:blank"], pass_fds=(r, w), stdout=subprocess.DEVNULL, stderr=self._log)
        os.close(r), os.close(w)
        self._buf, self._id, self.events = b"", 0, []
        page = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=self.session)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.send("Browser.close")
            self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self._in), os.close(self._out)
            self._log.close()

    def send(self, method: str, session: str | None = None, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while (reply := self._next()).get("id") != self._id:  # events carry no id
            self.events.append(reply)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def _next(self) -> dict:
        while b"\0" not in self._buf:
            if not select.select([self._in], [], [], 60)[0]:
                raise TimeoutError("chromium sent nothing for 60 s")
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium exited")
            self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        return json.loads(message)

    def eval(self, expression: str):
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        out = self.send("Runtime.evaluate", session=self.session, expression=expression, returnByValue=True,
                        awaitPromise=True)
        if "exceptionDetails" in out:
            raise RuntimeError(f"{expression}: {out['exceptionDetails']}")
        return out["result"].get("value")

    def wait(self, expression: str, deadline_s: float = 60):
        """Poll until the expression is truthy (across a reload); its value. The deadline only ends a hang."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                if value := self.eval(expression):
                    return value
            except RuntimeError:  # the page is between two documents
                pass
            time.sleep(0.05)
        raise TimeoutError(f"never true: {expression}")

    def open(self, url: str) -> None:
        self.eval("window.previousDocument = true")
        self.send("Page.navigate", session=self.session, url=url)
        self.wait("!window.previousDocument && document.readyState === 'complete'")

    def problems(self) -> list[str]:
        """CSP violations (chromium's security log) and uncaught exceptions seen so far."""
        out = [e["params"]["entry"]["text"] for e in self.events
               if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["source"] == "security"]
        return out + [json.dumps(e["params"])[:300] for e in self.events if e.get("method") == "Runtime.exceptionThrown"]


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
        elif tag == "td" and self._table is not None and "data-mean" in a:  # not the summary row
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


def test_cancel_button_works_under_the_csp(session_factory, settings, fake_executor, make_spec, engine, token, live_server,
                                          tmp_path):
    """The page's own script (static/snrlab.js, no inline code) calls the API's cancel with the typed
    token; the stylesheet applies; chromium reports no CSP violation, and would report one."""
    finished_experiment(session_factory, settings, fake_executor, make_spec)
    bearer = {"Authorization": f"Bearer {token}"}
    with live_server(create_app(settings)) as server, Devtools(tmp_path) as browser:
        running = httpx.post(f"{server.url}/api/v1/experiments", json=make_spec(), headers=bearer).json()["id"]
        browser.open(f"{server.url}/leaderboard?token={token}")  # into the cookie
        assert browser.eval("getComputedStyle(document.querySelector('td.best')).fontWeight") == "700"  # snrlab.css
        browser.open(f"{server.url}/experiments/{running}")
        assert browser.eval("document.getElementById('exp-status').textContent") == "queued"
        # what #cancel-msg shows, kept across the page's reload
        browser.eval("new MutationObserver(() => sessionStorage.setItem('msg', document.getElementById('cancel-msg')"
                     ".textContent)).observe(document.getElementById('cancel-msg'), {childList: true})")
        click = "document.getElementById('cancel-token').value = {}; document.getElementById('cancel-experiment').click()"
        browser.eval(click.format(json.dumps("wrong")))
        assert browser.wait("sessionStorage.getItem('msg')").startswith("cancel failed: ")
        assert httpx.get(f"{server.url}/api/v1/experiments/{running}", headers=bearer).json()["status"] == "queued"
        browser.eval(click.format(json.dumps(token)))
        browser.wait("document.getElementById('exp-status').textContent === 'cancelled'")  # the page reloaded itself
        assert browser.eval("sessionStorage.getItem('msg')") == "cancel requested: cancelled"
        assert browser.eval("document.getElementById('cancel-experiment')") is None  # terminal: no button
        assert httpx.get(f"{server.url}/api/v1/experiments/{running}", headers=bearer).json()["status"] == "cancelled"
        assert browser.problems() == []
        # the control: an inline script is refused, and the check above would have seen it
        browser.eval("const s = document.createElement('script'); s.textContent = 'window.inlineRan = true'; "
                     "document.head.append(s)")
        assert browser.eval("window.inlineRan === undefined")
        assert any("Content Security Policy" in p for p in browser.problems())
