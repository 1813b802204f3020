"""The pages beside the API (service/web/): leaderboard tables, downloads, plots, experiment
and run pages, and the read-auth rule (token query -> cookie)."""
from __future__ import annotations

import csv
import io

import pytest
from web_support import STEPS, WEIGHTINGS, finished_experiment, inline_code

from service.domain.format import cell_text
from service.web.auth import COOKIE

API = "/api/v1"


@pytest.fixture
def done(session_factory, settings, fake_executor, make_spec, engine):
    return finished_experiment(session_factory, settings, fake_executor, make_spec, fail_one=True)


def test_pages_need_a_token_like_the_api_reads(client, done, token):
    r = client.get("/leaderboard?metric=fd_digits")
    assert r.status_code == 401 and '<form method="post" action="/login">' in r.text
    assert 'name="next" value="/leaderboard?metric=fd_digits"' in r.text  # back to the page, no token in it
    # the form POSTs the token: into an HttpOnly cookie, then 303 back to the page
    r = client.post("/login", data={"token": token, "next": "/leaderboard?metric=fd_digits"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/leaderboard?metric=fd_digits"
    cookie = r.headers["set-cookie"]
    assert COOKIE in cookie and "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    # the cookie now carries the token for links and images
    assert client.get(f"/experiments/{done['experiment_id']}").status_code == 200
    assert client.get(f"/runs/{done['run_ids'][0]}/artifacts/samples_by_T.png").headers["content-type"] == "image/png"


def test_a_token_never_stays_in_a_url(settings, engine, client, done, token):
    client.cookies.clear()
    assert client.post("/login", data={"token": "wrong", "next": "/leaderboard"}).status_code == 401
    assert client.post("/login", data={"next": "/leaderboard"}).status_code == 401
    r = client.post("/login", data={"token": token, "next": "//evil.example/x"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/leaderboard"  # never to another host
    # an old bookmark with ?token=: moved into the cookie and redirected to the same page without it
    client.cookies.clear()
    r = client.get(f"/leaderboard?dataset=digits&token={token}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/leaderboard?dataset=digits"
    assert COOKIE in r.headers["set-cookie"] and token not in r.headers["location"]
    client.cookies.clear()
    r = client.get("/leaderboard?token=wrong", follow_redirects=False)
    assert r.status_code == 401 and "wrong" not in r.text and 'name="next" value="/leaderboard"' in r.text
    # even where reads are public
    from fastapi.testclient import TestClient

    from service.app.main import create_app

    with TestClient(create_app(settings.model_copy(update={"public_reads": True}))) as c:
        r = c.get(f"/experiments?token={token}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/experiments"


def test_pages_send_security_headers(client, auth, done):
    page = client.get("/leaderboard", headers=auth)
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "no-referrer"
    api = client.get(f"{API}/leaderboard", headers=auth)
    assert api.headers["x-content-type-options"] == "nosniff" and api.headers["x-frame-options"] == "DENY"
    assert "content-security-policy" not in client.get("/docs").headers  # the API explorer loads from a CDN


def test_pages_carry_no_inline_script_or_style(client, auth, done, make_spec):
    """The CSP allows neither inline scripts nor inline styles: no page may need them."""
    csp = client.get("/leaderboard", headers=auth).headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp and "script-src 'self';" in csp and "style-src 'self';" in csp
    running = client.post(f"{API}/experiments", json=make_spec(), headers=auth).json()["id"]
    paths = ["/leaderboard", "/leaderboard?metric=fd_digits", "/experiments", f"/experiments/{done['experiment_id']}",
             f"/experiments/{done['failed_experiment_id']}", f"/experiments/{running}", f"/runs/{done['run_ids'][0]}"]
    for path in paths:
        page = client.get(path, headers=auth)
        assert page.status_code == 200 and '<link rel="stylesheet" href="/static/snrlab.css">' in page.text, path
        assert inline_code(page.text) == [], path
    form = client.get("/leaderboard")  # the token form, before any token
    assert form.status_code == 401 and inline_code(form.text) == []
    # the checker sees what the f-string pages had
    old = "<td style='text-align:left'><button onclick=\"f('x')\">c</button><script>f()</script><style>b{}</style>"
    assert inline_code(old) == ["td style=", "button onclick=", "inline <script>", "<style>"]


def test_static_files_are_served_to_anyone(client):
    """The stylesheet and the script hold no data: the token form itself needs them before any login."""
    css, js = client.get("/static/snrlab.css"), client.get("/static/snrlab.js")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css") and "td.best{" in css.text
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]


def test_templates_escape_what_they_show(client, auth, make_spec):
    name = "<script>alert(1)</script> & 'x'"
    exp = client.post(f"{API}/experiments", json=make_spec(name=name), headers=auth).json()
    for path in (f"/experiments/{exp['id']}", "/experiments"):
        page = client.get(path, headers=auth).text
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#39;x&#39;" in page and "<script>alert" not in page
    r = client.post("/login", data={"token": "wrong", "next": '/x"><script>alert(1)</script>'})
    assert r.status_code == 401 and 'value="/x&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in r.text


def test_public_reads_need_no_token(settings, engine, done):
    from fastapi.testclient import TestClient

    from service.app.main import create_app

    with TestClient(create_app(settings.model_copy(update={"public_reads": True}))) as c:
        assert c.get("/leaderboard").status_code == 200
        assert c.get("/").url.path == "/leaderboard"


def test_leaderboard_tables_match_the_api(client, auth, done):
    page = client.get("/leaderboard", headers=auth).text
    lb = client.get(f"{API}/leaderboard", headers=auth).json()
    assert page.count('<table class="lb"') == 2  # fd_digits and color_mean_shift, ddpm, digits
    for row in lb["rows"]:
        assert row["num_steps"] in STEPS and {w.split("(")[0] for w in row["cells"]} == set(WEIGHTINGS)
        for w, c in row["cells"].items():
            assert c["text"] == cell_text(c["mean"], c["std"], c["n"]) and c["n"] == 2 and c["text"] in page
            for rid in c["run_ids"]:
                assert f'href="/runs/{rid}"' in page
        assert row["best"] == "constant"
    assert "num_gen 64" in page and "extractor fd_digits" in page
    assert page.count('class="best"') == len(lb["rows"])


def test_filters_and_downloads_show_the_same_cells(client, auth, done):
    q = f"?metric=fd_digits&experiment={done['experiment_id']}"
    page = client.get(f"/leaderboard{q}", headers=auth).text
    assert page.count('<table class="lb"') == 1 and "color_mean_shift ·" not in page
    data = client.get(f"/leaderboard.json{q}", headers=auth).json()
    api = client.get(f"{API}/leaderboard{q}", headers=auth).json()
    assert [r["cells"] for r in data["rows"]] == [r["cells"] for r in api["rows"]]
    rows = list(csv.DictReader(io.StringIO(client.get(f"/leaderboard.csv{q}", headers=auth).text)))
    assert len(rows) == len(STEPS) * len(WEIGHTINGS) and {r["metric"] for r in rows} == {"fd_digits"}
    cell = data["rows"][0]["cells"]["debias"]
    got = next(r for r in rows if r["weighting"] == "debias" and int(r["T"]) == data["rows"][0]["num_steps"])
    assert float(got["mean"]) == cell["mean"] and got["run_ids"].split() == cell["run_ids"]
    assert client.get(f"/leaderboard?experiment={done['failed_experiment_id']}", headers=auth).text.count('<table class="lb"') == 0


@pytest.mark.parametrize("path", ["/leaderboard/plot.png?metric=fd_digits&sampler=ddpm&dataset=digits",
                                  "/experiments/{exp}/loss.png", "/runs/{run}/loss.png"])
def test_plots_are_pngs(client, auth, done, path):
    r = client.get(path.format(exp=done["experiment_id"], run=done["run_ids"][0]), headers=auth)
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_experiment_page_shows_runs_errors_and_cancel(client, auth, done):
    page = client.get(f"/experiments/{done['experiment_id']}", headers=auth).text
    assert all(rid in page for rid in done["run_ids"]) and "succeeded" in page and "cancel experiment" not in page
    page = client.get(f"/experiments/{done['failed_experiment_id']}", headers=auth).text
    assert "ValueError: loss is NaN at step 40" in page and "failed" in page


def test_running_experiment_has_a_cancel_button(client, auth, make_spec):
    exp = client.post(f"{API}/experiments", json=make_spec(), headers=auth).json()
    page = client.get(f"/experiments/{exp['id']}", headers=auth).text
    assert f'<button id="cancel-experiment" data-experiment-id="{exp["id"]}">cancel experiment</button>' in page
    assert '<script src="/static/snrlab.js" defer></script>' in page
    js = client.get("/static/snrlab.js").text  # the button's code, attached by id: no onclick in the page
    assert "fetch('/api/v1/experiments/' + encodeURIComponent(id) + '/cancel'" in js
    assert "cancelButton.addEventListener('click'" in js and "dataset.experimentId" in js


def test_run_page_embeds_artifacts_and_results(client, auth, done):
    rid = done["run_ids"][0]
    page = client.get(f"/runs/{rid}", headers=auth).text
    assert f"/runs/{rid}/artifacts/samples_by_T.png" in page and "fd_digits" in page
    assert "training: cpu × 1, 30 s, 0.0083 cpu-worker-hours" in page
    assert client.get(f"/runs/{rid}/artifacts/../../x", headers=auth).status_code == 404
    assert client.get("/runs/run_nope", headers=auth).status_code == 404


@pytest.mark.parametrize("full", [False, True])
def test_demo_spec_is_valid(full):
    from service.client.demo import demo_spec
    from service.domain.spec import ExperimentSpec

    spec = ExperimentSpec.model_validate(demo_spec(full))
    assert [w.name for w in spec.weightings] == ["constant", "debias", "p2", "min_snr"]
    assert spec.evaluation.steps == [2, 5, 10, 20, 50, 100] and ("fid" in spec.evaluation.metrics) == full


def test_experiment_page_plots_intermediate_checkpoints(client, auth, session_factory, make_spec):
    """evaluation.at_steps: the experiment page shows the metric against training steps (Fig. 7a)."""
    from service.core.lifecycle import RunStatus, transition
    from service.domain import experiments as domain_experiments
    from service.domain.spec import ExperimentSpec
    from service.store import runs as runs_store
    from service.store.db import session_scope

    spec = make_spec()
    spec["evaluation"] = {**spec["evaluation"], "at_steps": [50]}
    with session_scope(session_factory) as s:
        exp, _ = domain_experiments.create_experiment(s, spec=ExperimentSpec.model_validate(spec), code_version="test")
        for run in exp.runs:
            transition(run, RunStatus.TRAINING)
            runs_store.record_results(s, run_id=run.id, results=[
                {"train_step": step, "num_steps": t, "sampler": "ddpm", "metric": "fd_digits", "value": float(t + (step or 0))}
                for step in (50, None) for t in spec["evaluation"]["steps"]])
            transition(run, RunStatus.SUCCEEDED)
        exp_id = exp.id
    page = client.get(f"/experiments/{exp_id}", headers=auth)
    assert "Metric against training steps" in page.text and f"/experiments/{exp_id}/training.png?metric=fd_digits" in page.text
    png = client.get(f"/experiments/{exp_id}/training.png", params={"metric": "fd_digits"}, headers=auth)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    # an experiment without at_steps has no such section
    other = client.get(f"/experiments/{exp_id}".replace(exp_id, _plain(session_factory, make_spec)), headers=auth)
    assert other.status_code == 200 and "Metric against training steps" not in other.text


def _plain(session_factory, make_spec) -> str:
    from service.domain import experiments as domain_experiments
    from service.domain.spec import ExperimentSpec
    from service.store.db import session_scope

    with session_scope(session_factory) as s:
        exp, _ = domain_experiments.create_experiment(s, spec=ExperimentSpec.model_validate(make_spec(name="plain")), code_version="test")
        return exp.id
