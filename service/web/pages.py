"""Server-rendered pages beside the API: the leaderboard (the paper's Table 1 and Fig. 7b),
experiment and run pages, CSV/JSON downloads of what a page shows, matplotlib PNGs.

Auth follows the API's read rule (SNRLAB_PUBLIC_READS / auth_enabled). When reads need a token
a page takes it from an HttpOnly, SameSite=Strict cookie `snrlab_token` (so images and links
work) or a Bearer header. The "token needed" form POSTs the token to /login, which sets the
cookie and redirects (303) back to the page: a token never sits in a URL, a log line or the
browser's history. A `?token=` that still arrives (an old bookmark) is moved into the cookie
the same way and redirected away. Mutations are never taken from the cookie: the cancel button
asks for a token and POSTs to the API with it."""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from html import escape
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import (
    Credentials,
    ExperimentId,
    Filter,
    RunId,
    SessionDep,
    SettingsDep,
)
from service.api.runs import artifact_response
from service.core.errors import AuthError
from service.domain.experiments import experiment_view, run_progress
from service.domain.format import num
from service.domain.leaderboard import leaderboard
from service.runtime import paths
from service.store import experiments as experiments_store
from service.store import runs as runs_store
from service.store.leaderboard import filter_options
from service.store.tokens import verify_token
from service.web import plots

COOKIE = "snrlab_token"
ARTIFACT_FIGURES = ("samples_by_T.png", "one_step_estimation.png", "mse_vs_t.png", "amplified_error.png")


class WebAuthError(Exception):
    pass


class TokenInUrl(Exception):
    """A `?token=` on a page URL: moved into the cookie (when valid) and redirected away."""

    def __init__(self, token: str, valid: bool):
        self.token, self.valid = token, valid


def web_reader(request: Request, session: SessionDep, settings: SettingsDep, creds: Credentials) -> str | None:
    """The token a page was read with (None when reads are public); WebAuthError without a valid one."""
    if "token" in request.query_params:
        raise TokenInUrl(request.query_params["token"], _valid(session, request.query_params["token"]))
    if settings.public_reads or not settings.auth_enabled:
        return None
    token = request.cookies.get(COOKIE) or (creds.credentials if creds else None)
    if not token:
        raise WebAuthError("this page needs an API token (reads are not public on this service)")
    if not _valid(session, token):
        raise WebAuthError("that token is not valid (revoked or mistyped)")
    return token


def _valid(session, token: str) -> bool:
    try:
        verify_token(session, token=token)
    except AuthError:
        return False
    return True


WebReader = Annotated[str | None, Depends(web_reader)]
router = APIRouter(include_in_schema=False)


def _without_token(request: Request) -> str:
    """The request's own path and query, the token left out: where a login returns to."""
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
    return request.url.path + (f"?{query}" if query else "")


def _local(path: str) -> str:
    """Only a path on this service is a place to return to (never another host: //evil, /\\evil)."""
    return path if path.startswith("/") and not path.startswith(("//", "/\\")) else "/leaderboard"


def _login_form(message: str, next_path: str) -> HTMLResponse:
    form = (f"<p>{escape(message)}.</p><form method='post' action='/login'>"
            f"<input type='hidden' name='next' value='{escape(next_path)}'><label>API token "
            "<input name='token' type='password' size='40' autocomplete='off' autofocus></label> <button>open</button></form>"
            "<p class='muted'>Create one with <code>snrlab token create --name me</code>.</p>")
    return HTMLResponse(_page("token needed", form), status_code=401)


def _into_cookie(location: str, token: str) -> RedirectResponse:
    response = RedirectResponse(location, status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


def register(app) -> None:
    """Include the pages and render auth failures as a token form (401) rather than JSON."""
    app.include_router(router)

    @app.exception_handler(WebAuthError)
    async def _auth(request: Request, exc: WebAuthError):
        return _login_form(str(exc), _without_token(request))

    @app.exception_handler(TokenInUrl)
    async def _token_in_url(request: Request, exc: TokenInUrl):
        if not exc.valid:
            return _login_form("that token is not valid (revoked or mistyped)", _without_token(request))
        return _into_cookie(_without_token(request), exc.token)


@router.post("/login")
async def login(request: Request, session: SessionDep):
    """The token form's target: a valid token goes into the HttpOnly cookie, then 303 back to the page."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
    token, next_path = (form.get("token") or [""])[0], _local((form.get("next") or ["/leaderboard"])[0])
    if not token or not await run_in_threadpool(_valid, session, token):
        return _login_form("that token is not valid (revoked or mistyped)" if token else "enter an API token", next_path)
    return _into_cookie(next_path, token)


# ---------------------------------------------------------------- layout
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;padding:0 18px 40px;color:#1b1f24}
header{display:flex;gap:18px;align-items:baseline;border-bottom:1px solid #d0d7de;padding:10px 0;margin-bottom:14px}
header b{font-size:18px} a{color:#0550ae;text-decoration:none} a:hover{text-decoration:underline}
table{border-collapse:collapse;margin:6px 0 4px} th,td{border:1px solid #d0d7de;padding:4px 9px;text-align:right;white-space:nowrap}
th{background:#f6f8fa} td.best{font-weight:700;background:#eef7ee} td.t{text-align:center;font-weight:600}
caption{caption-side:bottom;text-align:left;color:#57606a;font-size:12px;padding-top:3px}
.block{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start;margin:18px 0 26px}
.muted{color:#57606a} .err{color:#a40e26} .seeds a{font-size:11px;margin-left:3px;color:#57606a}
form.filters{display:flex;gap:10px;flex-wrap:wrap;align-items:end;background:#f6f8fa;padding:8px 10px;border-radius:6px}
form.filters label{display:flex;flex-direction:column;font-size:12px;color:#57606a}
img{max-width:100%;border:1px solid #eaeef2} .gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:12px}
figure{margin:0} figcaption{font-size:12px;color:#57606a} pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:360px}
progress{width:140px}
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)} - snrlab</title>"
            f"<style>{CSS}</style></head><body><header><b>snrlab</b><a href='/leaderboard'>leaderboard</a>"
            f"<a href='/experiments'>experiments</a><a href='/docs'>API</a></header><h1>{escape(title)}</h1>{body}</body></html>")


def _html(request: Request, token: str | None, title: str, body: str) -> Response:
    return HTMLResponse(_page(title, body))


def _q(**params: Any) -> str:
    p = {k: v for k, v in params.items() if v not in (None, "")}
    return ("?" + urlencode(p)) if p else ""


def board(session, *, dataset=None, metric=None, sampler=None, experiment=None, train_steps="final") -> dict[str, Any]:
    """The leaderboard as the API returns it (each row's best cell by its own metric's direction)."""
    lb = leaderboard(session, dataset=dataset, metric=metric, sampler=sampler, experiment_id=experiment,
                     train_steps=train_steps).model_dump(mode="json")
    lb["experiment"] = experiment
    return lb


def tables(lb: dict[str, Any]) -> list[tuple[tuple[str, str, str, str], list[dict]]]:
    """One table per (dataset, metric, sampler, training setup), rows sorted by T."""
    groups: dict[tuple, list] = defaultdict(list)
    for row in lb["rows"]:
        groups[(row["dataset"], row["metric"], row["sampler"], row["config_hash"])].append(row)
    return [(k, sorted(v, key=lambda r: r["num_steps"])) for k, v in sorted(groups.items())]


def _table_html(key, rows, columns, *, multi_setup: bool) -> str:
    dataset, metric, sampler, chash = key
    cols = [c for c in columns if any(c in r["cells"] for r in rows)]
    cells = [c for r in rows for c in r["cells"].values()]
    num_gen = ", ".join(sorted({str(c["num_gen"]) for c in cells if c["num_gen"] is not None})) or "?"
    extractor = ", ".join(sorted({c["extractor"] for c in cells if c["extractor"]})) or "?"
    direction = "lower" if rows[0]["lower_is_better"] else "higher"
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        tds = []
        for col in cols:
            c = r["cells"].get(col)
            if c is None:
                tds.append("<td></td>")
                continue
            seeds = "".join(f"<a href='/runs/{escape(rid)}' title='{escape(rid)}'>{i + 1}</a>" for i, rid in enumerate(c["run_ids"]))
            tds.append(
                f"<td class='{'best' if c['best'] else ''}' data-weighting='{escape(col)}' data-mean='{c['mean']!r}' "
                f"data-std='{c['std']!r}' data-n='{c['n']}'><a class='v' href='/runs/{escape(c['run_ids'][0])}'>"
                f"{c['text']}</a> <span class='muted'>(n={c['n']})</span>"
                f"<span class='seeds'>{seeds}</span></td>")
        body.append(f"<tr data-t='{r['num_steps']}'><td class='t'>{r['num_steps']}</td>{''.join(tds)}</tr>")
    setup = f", setup {escape(chash[:10])}" if multi_setup else ""
    caption = (f"{escape(dataset)} · {escape(metric)} ({direction} is better) · sampler {escape(sampler)}{setup} · "
               f"num_gen {escape(num_gen)} · extractor {escape(extractor)} · mean ± std over seeds (n); best per row in bold")
    return (f"<table class='lb' data-dataset='{escape(dataset)}' data-metric='{escape(metric)}' data-sampler='{escape(sampler)}' "
            f"data-config-hash='{escape(chash)}'><caption>{caption}</caption><thead><tr><th>T</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _select(name: str, options: list[str], current: str | None) -> str:
    opts = "".join(f"<option value='{escape(o)}'{' selected' if o == current else ''}>{escape(o)}</option>" for o in options)
    return f"<label>{name}<select name='{name}'><option value=''>all</option>{opts}</select></label>"


def _gallery(runs_dir, lb: dict[str, Any]) -> str:
    """The evaluator's figures for one run per weighting (the first seed of the first table)."""
    first: dict[str, str] = {}
    for row in lb["rows"]:
        for w, c in row["cells"].items():
            first.setdefault(w, c["run_ids"][0])
    figs = []
    for w, rid in sorted(first.items()):
        for name in ("samples_by_T.png", "mse_vs_t.png"):
            if (paths.artifacts_dir(runs_dir, rid) / name).is_file():
                figs.append(f"<figure><a href='/runs/{rid}'><img loading='lazy' src='/runs/{rid}/artifacts/{name}' "
                            f"alt='{escape(w)} {name}'></a><figcaption>{escape(w)} · {name} · {rid}</figcaption></figure>")
    return f"<h2>Samples and per-timestep error</h2><div class='gallery'>{''.join(figs)}</div>" if figs else ""


@router.get("/", response_class=HTMLResponse)
def index():
    return RedirectResponse("/leaderboard")


@router.get("/leaderboard", response_class=HTMLResponse)
def leaderboard_page(request: Request, session: SessionDep, settings: SettingsDep, token: WebReader,
                     dataset: Filter = None, metric: Filter = None, sampler: Filter = None, experiment: Filter = None):
    lb = board(session, dataset=dataset, metric=metric, sampler=sampler, experiment=experiment)
    filters = dict(dataset=dataset, metric=metric, sampler=sampler, experiment=experiment)
    q = _q(**filters)
    opts = filter_options(session)
    form = ("<form class='filters' method='get'>"
            + "".join(_select(k, opts[k], filters[k]) for k in ("dataset", "metric", "sampler", "experiment"))
            + f"<button>filter</button><a href='/leaderboard'>reset</a><span style='flex:1'></span>"
              f"<a href='/leaderboard.csv{q}' download>CSV</a><a href='/leaderboard.json{q}' download>JSON</a></form>")
    groups = tables(lb)
    multi = len({(k[0], k[1], k[2]) for k, _ in groups}) < len(groups)
    blocks = []
    for key, rows in groups:
        pq = _q(dataset=key[0], metric=key[1], sampler=key[2], experiment=experiment, setup=key[3])
        blocks.append(f"<h2>{escape(key[0])} · {escape(key[1])} · {escape(key[2])}</h2><div class='block'>"
                      f"{_table_html(key, rows, lb['columns'], multi_setup=multi)}"
                      f"<img class='plot' src='/leaderboard/plot.png{pq}' width='480' alt='{escape(key[1])} vs T'></div>")
    if not blocks:
        blocks.append("<p class='muted'>No results yet: a cell appears when a run has succeeded.</p>")
    prov = lb["provenance"]
    exps = "".join(f"<a href='/experiments/{e}'>{e}</a> " for e in prov["experiment_ids"]) or "-"
    body = (form + "".join(blocks) + _gallery(settings.runs_dir, lb)
            + f"<p class='muted'>experiments: {exps}· code: {escape(', '.join(prov['code_versions']) or '-')}</p>")
    return _html(request, token, "Leaderboard", body)


@router.get("/leaderboard.json")
def leaderboard_json(session: SessionDep, token: WebReader, dataset: Filter = None, metric: Filter = None,
                     sampler: Filter = None, experiment: Filter = None):
    lb = board(session, dataset=dataset, metric=metric, sampler=sampler, experiment=experiment)
    return Response(json.dumps(lb, indent=1), media_type="application/json",
                    headers={"Content-Disposition": "attachment; filename=leaderboard.json"})


CSV_FIELDS = ("dataset", "metric", "sampler", "config_hash", "T", "weighting", "mean", "std", "n", "best", "num_gen",
              "extractor", "run_ids")


@router.get("/leaderboard.csv")
def leaderboard_csv(session: SessionDep, token: WebReader, dataset: Filter = None, metric: Filter = None,
                    sampler: Filter = None, experiment: Filter = None):
    lb = board(session, dataset=dataset, metric=metric, sampler=sampler, experiment=experiment)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_FIELDS)
    for (ds, m, s, h), rows in tables(lb):
        for r in rows:
            for col in lb["columns"]:
                if (c := r["cells"].get(col)) is not None:
                    w.writerow([ds, m, s, h, r["num_steps"], col, repr(c["mean"]), repr(c["std"]), c["n"], int(c["best"]),
                                c["num_gen"], c["extractor"], " ".join(c["run_ids"])])
    return Response(buf.getvalue(), media_type="text/csv", headers={"Content-Disposition": "attachment; filename=leaderboard.csv"})


@router.get("/leaderboard/plot.png")
def leaderboard_plot(session: SessionDep, token: WebReader, dataset: Filter = None, metric: Filter = None,
                     sampler: Filter = None, experiment: Filter = None, setup: Filter = None):
    lb = board(session, dataset=dataset, metric=metric, sampler=sampler, experiment=experiment)
    rows = [r for r in lb["rows"] if setup in (None, "", r["config_hash"])]
    title = f"{dataset or 'all'} · {sampler or 'all samplers'}"
    png = plots.metric_vs_steps(rows, lb["columns"], metric=metric or "metric", title=title)
    return Response(png, media_type="image/png")


# ---------------------------------------------------------------- experiments and runs
@router.get("/experiments", response_class=HTMLResponse)
def experiments_page(request: Request, session: SessionDep, token: WebReader):
    items, total = experiments_store.list_experiments(session, limit=200)
    rows = []
    for e in items:
        v = experiment_view(e)
        rows.append(f"<tr><td style='text-align:left'><a href='/experiments/{e.id}'>{e.id}</a></td><td style='text-align:left'>"
                    f"{escape(e.name)}</td><td>{v['status'].value}</td><td>{len(e.runs)}</td>"
                    f"<td><progress max='1' value='{v['progress']['fraction']}'></progress></td><td>{e.created_at:%Y-%m-%d %H:%M}</td></tr>")
    body = (f"<p class='muted'>{total} experiments</p><table><tr><th>id</th><th>name</th><th>status</th><th>runs</th>"
            f"<th>progress</th><th>created</th></tr>{''.join(rows)}</table>")
    return _html(request, token, "Experiments", body)


CANCEL_JS = """
<script>
async function cancelExperiment(id){
  const token = document.getElementById('cancel-token').value || prompt('API token (snrlab token create)');
  if(!token) return;
  const r = await fetch('/api/v1/experiments/'+id+'/cancel',{method:'POST',headers:{'Authorization':'Bearer '+token}});
  const body = await r.json().catch(()=>({}));
  document.getElementById('cancel-msg').textContent = r.ok ? ('cancel requested: '+body.status)
     : ('cancel failed: '+((body.error||{}).message||r.status));
  if(r.ok) setTimeout(()=>location.reload(), 800);
}
</script>"""


def plain_error(text: str | None) -> str:
    """The first line of a stored error (the service already keeps them readable), HTML-escaped."""
    if not text:
        return ""
    first = text.strip().splitlines()[0] if text.strip() else text
    return escape(first[:400])


@router.get("/experiments/{experiment_id}", response_class=HTMLResponse)
def experiment_page(experiment_id: ExperimentId, request: Request, session: SessionDep, token: WebReader):
    exp = experiments_store.get_experiment(session, experiment_id=experiment_id)
    v = experiment_view(exp)
    status = v["status"].value
    runs = []
    for r in sorted(exp.runs, key=lambda r: r.index):
        done = run_progress(r)
        runs.append(f"<tr><td style='text-align:left'><a href='/runs/{r.id}'>{r.id}</a></td><td>{escape(r.dataset)}</td>"
                    f"<td>{escape(r.weighting)}</td><td>{r.seed}</td><td class='status'>{r.status}</td>"
                    f"<td><progress max='{r.total_steps}' value='{done}'></progress> {r.current_step}/{r.total_steps}</td>"
                    f"<td class='err' style='text-align:left;white-space:normal'>{plain_error(r.error)}</td></tr>")
    cancel = ""
    if not v["status"].is_terminal():
        cancel = ("<p><input id='cancel-token' type='password' placeholder='API token' size='30'> "
                  f"<button onclick=\"cancelExperiment('{exp.id}')\">cancel experiment</button> <span id='cancel-msg'></span></p>"
                  + CANCEL_JS)
    by = ", ".join(f"{k}: {n}" for k, n in sorted(v["progress"]["by_status"].items()))
    body = (f"<p><b>{escape(exp.name)}</b> · status <b id='exp-status'>{status}</b> · {by} · "
            f"<progress max='1' value='{v['progress']['fraction']}'></progress> {100 * v['progress']['fraction']:.0f}% · "
            f"<a href='/leaderboard?experiment={exp.id}'>leaderboard of this experiment</a></p>{cancel}"
            f"<h2>Runs</h2><table><tr><th>run</th><th>dataset</th><th>weighting</th><th>seed</th><th>status</th><th>progress</th>"
            f"<th>error</th></tr>{''.join(runs)}</table>"
            + _training_plots(exp) +
            f"<h2>Training loss by timestep quartile</h2><img src='/experiments/{exp.id}/loss.png' alt='loss by quartile'>"
            f"<h2>Spec</h2><pre>{escape(json.dumps(exp.spec, indent=2))}</pre>"
            f"<p class='muted'>spec hash {exp.spec_hash} · code {escape(exp.code_version)}</p>")
    return _html(request, token, f"Experiment {exp.id}", body)


def _training_plots(exp) -> str:
    """Fig. 7a per metric when the experiment scores intermediate checkpoints (evaluation.at_steps)."""
    evaluation = exp.spec.get("evaluation", {})
    if not evaluation.get("at_steps"):
        return ""
    imgs = "".join(f"<img class='plot' src='/experiments/{exp.id}/training.png{_q(metric=m)}' alt='{escape(m)} vs training steps'>"
                   for m in evaluation.get("metrics", []))
    return f"<h2>Metric against training steps</h2>{imgs}"


@router.get("/experiments/{experiment_id}/training.png")
def experiment_training_plot(experiment_id: ExperimentId, session: SessionDep, token: WebReader, metric: Filter = None,
                             sampler: Filter = None):
    exp = experiments_store.get_experiment(session, experiment_id=experiment_id)
    lb = board(session, experiment=exp.id, metric=metric, sampler=sampler, train_steps="all")
    rows = [r for r in lb["rows"] if metric in (None, r["metric"])]
    png = plots.metric_vs_training(rows, lb["columns"], metric=metric or "metric", title=f"{exp.name} · {metric or 'all metrics'}")
    return Response(png, media_type="image/png")


def _points(session, run_id: str) -> list[dict]:
    return [{"step": p.step, "values": p.values} for p in runs_store.get_metrics(session, run_id=run_id)]


@router.get("/experiments/{experiment_id}/loss.png")
def experiment_loss(experiment_id: ExperimentId, session: SessionDep, token: WebReader):
    exp = experiments_store.get_experiment(session, experiment_id=experiment_id)
    first_seed: dict[str, str] = {}
    for r in sorted(exp.runs, key=lambda r: (r.dataset, r.weighting, r.seed)):
        first_seed.setdefault(f"{r.dataset} {r.weighting} s{r.seed}", r.id)
    series = {label: _points(session, rid) for label, rid in list(first_seed.items())[:12]}
    return Response(plots.loss_by_quartile(series), media_type="image/png")


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(run_id: RunId, request: Request, session: SessionDep, settings: SettingsDep, token: WebReader):
    run, results = runs_store.get_results(session, run_id=run_id)
    attempts = "".join(f"<li>attempt {a.number}: {a.status} from step {a.start_step or 0}"
                       + (f" — <span class='err'>{plain_error(a.error)}</span>" if a.error else "") + "</li>"
                       for a in run.attempts)
    res = "".join(f"<tr><td>{escape(x.metric)}</td><td>{escape(x.sampler)}</td><td>{x.num_steps}</td><td>{num(x.value)}</td>"
                  f"<td>{x.num_gen or ''}</td><td>{escape(x.extractor or '')}</td></tr>" for x in results)
    root = paths.artifacts_dir(settings.runs_dir, run_id)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    figs = "".join(f"<figure><img loading='lazy' src='/runs/{run_id}/artifacts/{escape(n)}' alt='{escape(n)}'>"
                   f"<figcaption>{escape(n)} (<a href='/api/v1/runs/{run_id}/artifacts/{escape(n)}'>API</a>)</figcaption></figure>"
                   for n in ARTIFACT_FIGURES if n in names)
    others = " ".join(f"<a href='/runs/{run_id}/artifacts/{escape(n)}'>{escape(n)}</a>" for n in names if n not in ARTIFACT_FIGURES)
    body = (f"<p>experiment <a href='/experiments/{run.experiment_id}'>{run.experiment_id}</a> · {escape(run.dataset)} · "
            f"{escape(run.weighting)} · seed {run.seed} · status <b>{run.status}</b> · step {run.current_step}/{run.total_steps}</p>"
            + (f"<p class='err'>{plain_error(run.error)}</p>" if run.error else "")
            + (f"<ul>{attempts}</ul>" if attempts else "")
            + (f"<p class='muted usage'>training: {escape(str(run.usage.get('device')))} × {run.usage.get('num_workers')}, "
               f"{run.usage.get('wall_s', 0):.0f} s, {run.usage.get('device_hours', 0):.4f} "
               f"{escape(str(run.usage.get('device_hours_unit', 'device-hours')))}</p>" if run.usage else "")
            + (f"<h2>Results</h2><table><tr><th>metric</th><th>sampler</th><th>T</th><th>value</th><th>num_gen</th>"
               f"<th>extractor</th></tr>{res}</table>" if res else "")
            + f"<h2>Training loss by timestep quartile</h2><img src='/runs/{run_id}/loss.png' alt='loss by quartile'>"
            + (f"<h2>Evaluator figures</h2><div class='gallery'>{figs}</div>" if figs else "")
            + (f"<p>other artifacts: {others}</p>" if others else ""))
    return _html(request, token, f"Run {run_id}", body)


@router.get("/runs/{run_id}/loss.png")
def run_loss(run_id: RunId, session: SessionDep, token: WebReader):
    run = runs_store.get_run(session, run_id=run_id)
    png = plots.loss_by_quartile({f"{run.weighting} seed {run.seed}": _points(session, run_id)})
    return Response(png, media_type="image/png")


@router.get("/runs/{run_id}/artifacts/{path:path}")
def run_artifact(run_id: RunId, path: str, session: SessionDep, settings: SettingsDep, token: WebReader):
    """The API's artifact route, behind the page's auth (an <img> cannot send a Bearer header)."""
    return artifact_response(session, settings, run_id, path)
