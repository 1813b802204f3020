"""Service sub-commands of `snrlab`: serve, db, token (local), and the API client commands
submit / list / show / cancel / leaderboard (talk to SNRLAB_URL with SNRLAB_TOKEN)."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table



def console() -> Console:
    """Built per use, so COLUMNS and redirected streams are honoured."""
    return Console()


def err() -> Console:
    return Console(stderr=True)

db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (stored hashed; printed once).", no_args_is_help=True)

TERMINAL = {"succeeded", "failed", "cancelled"}


# ---------------------------------------------------------------- server side
def serve(
    host: Optional[str] = typer.Option(None, help="default: SNRLAB_HOST or 127.0.0.1"),
    port: Optional[int] = typer.Option(None, help="default: SNRLAB_PORT or 8000"),
    log_level: str = typer.Option("info"),
) -> None:
    """Start the API (uvicorn); migrations are applied and the dispatcher starts with it."""
    import uvicorn

    from service.core.config import get_settings
    from service.runtime.executor import StorageNotShared
    from service.app.main import create_app

    settings = get_settings()
    try:
        app = create_app(settings)
    except StorageNotShared as e:
        err().print(f"[red]error[/red] {e}", soft_wrap=True)
        raise typer.Exit(2)
    # SIGINT and SIGTERM take one path: uvicorn's graceful shutdown runs the app's lifespan, which
    # stops the dispatcher and the local Ray this process started (node agents included), then
    # uvicorn re-raises the signal. Nothing after uvicorn.run may be relied on: for SIGTERM the
    # re-raised signal ends the process there.
    from service.core.logs import log_config

    uvicorn.run(app, host=host or settings.host, port=port or settings.port, log_level=log_level,
                log_config=log_config(log_level))


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations to SNRLAB_DATABASE_URL."""
    from service.core.config import get_settings
    from service.store.db import upgrade

    url = get_settings().resolved_database_url
    upgrade(url, revision)
    console().print(f"database at {_redact(url)} is at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="e.g. base or -1")) -> None:
    from service.core.config import get_settings
    from service.store.db import downgrade

    downgrade(get_settings().resolved_database_url, revision)


def _local_session():
    from service.core.config import get_settings
    from service.store.db import make_engine, make_sessionmaker, session_scope, upgrade

    url = get_settings().resolved_database_url
    upgrade(url)
    return session_scope(make_sessionmaker(make_engine(url)))


@token_app.command("create")
def token_create(name: str = typer.Option(..., "--name", help="who or what uses the token")) -> None:
    """Create a token and print it once; only its sha256 is stored."""
    from service.store import crud

    with _local_session() as s:
        row, token = crud.create_token(s, name=name)
    err().print(f"token {row.id} ({name}) created; it is shown only this once:")
    print(token)


@token_app.command("list")
def token_list() -> None:
    from service.store import crud

    with _local_session() as s:
        rows = crud.list_tokens(s)
    table = Table("id", "name", "created", "revoked")
    for r in rows:
        table.add_row(r.id, r.name, f"{r.created_at:%Y-%m-%d %H:%M}", f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "")
    console().print(table)


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    from service.store import crud

    with _local_session() as s:
        crud.revoke_token(s, token_id=token_id)
    console().print(f"revoked {token_id}")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# ---------------------------------------------------------------- API client
class ApiError(Exception):
    pass


def _client():
    import httpx

    base = os.environ.get("SNRLAB_URL", "http://127.0.0.1:8000").rstrip("/")
    headers = {}
    if token := os.environ.get("SNRLAB_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=f"{base}/api/v1", headers=headers, timeout=30)


def _call(method: str, path: str, **kwargs) -> Any:
    import httpx

    try:
        with _client() as c:
            r = c.request(method, path, **kwargs)
    except httpx.HTTPError as e:
        raise ApiError(f"cannot reach the snrlab API: {e}") from None
    if r.status_code >= 400:
        try:
            body = r.json()
        except ValueError:
            body = {"error": {"message": r.text[:500]}}
        if "detail" in body and isinstance(body["detail"], list):
            msg = "; ".join(f"{'.'.join(str(x) for x in d.get('loc', [])[1:])}: {d.get('msg')}" for d in body["detail"])
        else:
            msg = (body.get("error") or {}).get("message") or str(body)
        hint = " (set SNRLAB_TOKEN)" if r.status_code == 401 else ""
        raise ApiError(f"HTTP {r.status_code}: {msg}{hint}")
    return r.json()


def _run_cli(fn):
    try:
        return fn()
    except ApiError as e:
        err().print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None


def load_spec(path: Path) -> dict:
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    if path.suffix in (".json",):
        return json.loads(text)
    import yaml

    return yaml.safe_load(text)


def submit(
    spec: Path = typer.Argument(..., help="experiment spec, YAML or JSON"),
    wait: bool = typer.Option(False, "--wait", help="show progress per run until the experiment finishes"),
    idempotency_key: Optional[str] = typer.Option(None, help="resubmitting with the same key returns the same experiment"),
    poll: float = typer.Option(2.0, help="seconds between progress polls"),
) -> None:
    """Submit an experiment; prints its id (and its runs' ids)."""

    def go():
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        exp = _call("POST", "/experiments", json=load_spec(spec), headers=headers)
        console().print(f"experiment [bold]{exp['id']}[/bold] ({exp['name']}): {len(exp['run_ids'])} runs queued")
        if not wait:
            print(exp["id"])
            return
        final = _wait(exp["id"], poll)
        print(exp["id"])
        if final["status"] != "succeeded":
            raise typer.Exit(1)

    _run_cli(go)


def _wait(exp_id: str, poll: float) -> dict:
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                  console=err()) as progress:
        tasks: dict[str, int] = {}
        while True:
            exp = _call("GET", f"/experiments/{exp_id}")
            for run in exp["runs"]:
                if run["id"] not in tasks:
                    label = f"{run['dataset']} {run['weighting']} s{run['seed']}"
                    tasks[run["id"]] = progress.add_task(label, total=run["total_steps"], status=run["status"])
                progress.update(tasks[run["id"]], completed=run["current_step"], status=run["status"])
            if exp["status"] in TERMINAL:
                break
            time.sleep(poll)
    console().print(f"experiment {exp_id}: [bold]{exp['status']}[/bold]")
    for run in exp["runs"]:
        if run["error"]:
            console().print(f"  {run['id']}: {run['error']}")
    return exp


def list_cmd(limit: int = typer.Option(20, min=1, max=500)) -> None:
    """Recent experiments."""

    def go():
        page = _call("GET", "/experiments", params={"limit": limit})
        table = Table("id", "name", "status", "runs", "progress", "created")
        for e in page["items"]:
            table.add_row(e["id"], e["name"], e["status"], str(e["progress"]["runs"]),
                          f"{100 * e['progress']['fraction']:.0f}%", e["created_at"][:19])
        console().print(table)

    _run_cli(go)


def show(item_id: str = typer.Argument(..., help="an experiment (exp_...) or run (run_...) id")) -> None:
    """An experiment with its runs, or one run with attempts and latest metrics."""

    def go():
        if item_id.startswith("run_"):
            run = _call("GET", f"/runs/{item_id}")
            console().print(f"run [bold]{run['id']}[/bold] of {run['experiment_id']}: {run['status']}  "
                          f"step {run['current_step']}/{run['total_steps']}")
            console().print(f"  {run['dataset']} / {run['weighting']} / seed {run['seed']}; checkpoint: {run['checkpoint_path']}")
            for a in run["attempts"]:
                console().print(f"  attempt {a['number']}: {a['status']} from step {a['start_step']}" + (f" - {a['error']}" if a["error"] else ""))
            if run["latest_metrics"]:
                console().print(f"  latest metrics: {json.dumps(run['latest_metrics'])}")
            if run["error"]:
                console().print(f"  [red]error:[/red] {run['error']}")
            for r in _call("GET", f"/runs/{item_id}/results")["results"]:
                console().print(f"  {r['metric']} {r['sampler']} T={r['num_steps']}: {r['value']:.4f}")
            return
        exp = _call("GET", f"/experiments/{item_id}")
        console().print(f"experiment [bold]{exp['id']}[/bold] {exp['name']}: {exp['status']} "
                      f"({100 * exp['progress']['fraction']:.0f}%)")
        table = Table("run", "dataset", "weighting", "seed", "status", "step", "error")
        for r in exp["runs"]:
            table.add_row(r["id"], r["dataset"], r["weighting"], str(r["seed"]), r["status"],
                          f"{r['current_step']}/{r['total_steps']}", r["error"] or "")
        console().print(table)

    _run_cli(go)


def cancel(experiment_id: str) -> None:
    """Cancel an experiment: queued runs at once, running ones on Ray within seconds."""

    def go():
        exp = _call("POST", f"/experiments/{experiment_id}/cancel")
        console().print(f"experiment {exp['id']}: {exp['status']}")

    _run_cli(go)


def _num(x: float) -> str:
    """Four significant digits, trailing zeros kept (486.7, 1265, 5.000, 0.02400)."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.{max(0, 3 - math.floor(math.log10(abs(x))))}f}"


def leaderboard(
    dataset: Optional[str] = typer.Option(None),
    metric: Optional[str] = typer.Option(None),
    sampler: Optional[str] = typer.Option(None),
) -> None:
    """Rows (dataset, T) x columns (weighting): mean ± std (n) over seeds; best per row in bold."""

    def go():
        params = {k: v for k, v in dict(dataset=dataset, metric=metric, sampler=sampler).items() if v}
        lb = _call("GET", "/leaderboard", params=params)
        direction = "lower" if lb["lower_is_better"] else "higher"
        # A key that is the same on every row goes to the title, so the table fits a terminal.
        keys = ("dataset", "metric", "sampler")
        same = {k: {r[k] for r in lb["rows"]} for k in keys}
        shown = [k for k in keys if len(same[k]) != 1]
        fixed = [next(iter(same[k])) for k in keys if len(same[k]) == 1]
        ns = {c["n"] for r in lb["rows"] for c in r["cells"].values()}
        one_n = next(iter(ns)) if len(ns) == 1 else None  # the same seed count everywhere: say it once
        cell_form = f"mean ± std, {one_n} seed{'s' if one_n != 1 else ''}" if one_n else "mean ± std (seeds)"
        title = f"{' · '.join(fixed) or metric or 'all metrics'} ({direction} is better; {cell_form})"
        table = Table(*shown, "T", *lb["columns"], title=title)
        for row in lb["rows"]:
            cells = []
            for col in lb["columns"]:
                c = row["cells"].get(col)
                spread = _num(c["std"]) if c and c["n"] > 1 else "–"
                text = "" if c is None else f"{_num(c['mean'])} ± {spread}" + ("" if one_n else f" ({c['n']})")
                cells.append(f"[bold green]{text}[/bold green]" if c and c["best"] else text)
            table.add_row(*(row[k] for k in shown), str(row["num_steps"]), *cells)
        console().print(table)
        prov = lb["provenance"]
        console().print(f"experiments: {', '.join(prov['experiment_ids']) or '-'}; config hashes: "
                      f"{', '.join(prov['config_hashes']) or '-'}; code: {', '.join(prov['code_versions']) or '-'}")

    _run_cli(go)


def sweep(
    spec: Path = typer.Argument(..., help="sweep spec, YAML or JSON: base, search_space, search, scheduler, metric, ..."),
    wait: bool = typer.Option(False, "--wait", help="show each trial's progress until the sweep finishes"),
    poll: float = typer.Option(2.0, help="seconds between progress polls"),
) -> None:
    """Start a Ray Tune sweep; prints its id. Trials are runs of the sweep's experiment, so
    `snrlab show EXP` and the leaderboard show them too."""

    def go():
        sw = _call("POST", "/sweeps", json=load_spec(spec))
        console().print(f"sweep [bold]{sw['id']}[/bold] ({sw['name']}): experiment {sw['experiment_id']}, "
                        f"{sw['spec']['search']} search, {sw['spec']['scheduler']} scheduler, "
                        f"{sw['metric']} ({sw['mode']}) at T={sw['spec']['num_steps']}")
        if sw["message"]:
            console().print(f"  note: {sw['message']}")
        if wait:
            sw = _wait_sweep(sw["id"], poll)
        print(sw["id"])
        if wait and sw["status"] != "succeeded":
            raise typer.Exit(1)

    _run_cli(go)


def _wait_sweep(sweep_id: str, poll: float) -> dict:
    def label(t: dict) -> str:
        return " ".join(f"{k}={v}" for k, v in t["config"].items()) or t["run_id"]

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                  console=err()) as progress:
        tasks: dict[str, int] = {}
        while True:
            sw = _call("GET", f"/sweeps/{sweep_id}")
            for t in sw["trials"]:
                status = t["status"] + (f" {sw['metric']}={t['value']:.4g}@{t['train_step']}" if t["value"] is not None else "")
                if t["run_id"] not in tasks:
                    tasks[t["run_id"]] = progress.add_task(label(t), total=t["total_steps"], status=status)
                progress.update(tasks[t["run_id"]], completed=t["current_step"], status=status)
            if sw["status"] in TERMINAL:
                break
            time.sleep(poll)
    console().print(f"sweep {sweep_id}: [bold]{sw['status']}[/bold] ({len(sw['trials'])} trials)")
    for note in (sw["message"], sw["error"]):
        if note:
            console().print(f"  {note}")
    best = sw["best"]
    if best:
        config = ", ".join(f"{k}={v}" for k, v in best["config"].items())
        console().print(f"best: {config}: {best['metric']} = {best['value']:.4f} (T={best['num_steps']}, "
                        f"{best['sampler']}; trial {best['trial_id']}, run {best['run_id']})")
    return sw


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(db_app, name="db")
    app.add_typer(token_app, name="token")
    app.command("submit")(submit)
    app.command("list")(list_cmd)
    app.command("show")(show)
    app.command("cancel")(cancel)
    app.command("leaderboard")(leaderboard)
    app.command("sweep")(sweep)
