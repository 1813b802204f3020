"""The API client commands of `snrlab`: submit / list / show / cancel / priority / leaderboard /
sweep / rescore. They talk to the service over its HTTP API only (service.client.http)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from service.client.http import ApiError, call, console, err, load_spec, run_cli

TERMINAL = {"succeeded", "failed", "cancelled"}  # as the API reports an experiment's or sweep's end
PRIORITY_HELP = "higher starts first (-100..100, default 0); change it later with `snrlab priority`"


def submit(
    spec: Path = typer.Argument(..., help="experiment spec, YAML or JSON"),
    wait: bool = typer.Option(False, "--wait", help="show progress per run until the experiment finishes"),
    idempotency_key: Optional[str] = typer.Option(None, help="resubmitting with the same key returns the same experiment"),
    poll: float = typer.Option(2.0, help="seconds between progress polls"),
    priority: Optional[int] = typer.Option(None, "--priority", help=PRIORITY_HELP),
) -> None:
    """Submit an experiment; prints its id (and its runs' ids)."""

    def go():
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        params = {"priority": priority} if priority is not None else {}
        exp = call("POST", "/experiments", json=load_spec(spec), headers=headers, params=params)
        console().print(f"experiment [bold]{exp['id']}[/bold] ({exp['name']}): {len(exp['run_ids'])} runs queued")
        if not wait:
            print(exp["id"])
            return
        final = wait_experiment(exp["id"], poll)
        print(exp["id"])
        if final["status"] != "succeeded":
            raise typer.Exit(1)

    run_cli(go)


def wait_experiment(exp_id: str, poll: float) -> dict:
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                  console=err()) as progress:
        tasks: dict[str, int] = {}
        while True:
            exp = call("GET", f"/experiments/{exp_id}")
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
        page = call("GET", "/experiments", params={"limit": limit})
        table = Table("id", "name", "owner", "priority", "status", "runs", "progress", "created")
        for e in page["items"]:
            table.add_row(e["id"], e["name"], e.get("owner") or "-", str(e.get("priority", 0)), e["status"],
                          str(e["progress"]["runs"]), f"{100 * e['progress']['fraction']:.0f}%", e["created_at"][:19])
        console().print(table)

    run_cli(go)


def show(item_id: str = typer.Argument(..., help="an experiment (exp_...) or run (run_...) id")) -> None:
    """An experiment with its runs, or one run with attempts and latest metrics."""

    def go():
        if item_id.startswith("run_"):
            run = call("GET", f"/runs/{item_id}")
            console().print(f"run [bold]{run['id']}[/bold] of {run['experiment_id']}: {run['status']}  "
                          f"step {run['current_step']}/{run['total_steps']}")
            console().print(f"  {run['dataset']} / {run['weighting']} / seed {run['seed']}; checkpoint: {run['checkpoint_path']}")
            for a in run["attempts"]:
                console().print(f"  attempt {a['number']}: {a['status']} from step {a['start_step']}" + (f" - {a['error']}" if a["error"] else ""))
            if run["latest_metrics"]:
                console().print(f"  latest metrics: {json.dumps(run['latest_metrics'])}")
            if run["error"]:
                console().print(f"  [red]error:[/red] {run['error']}")
            for r in call("GET", f"/runs/{item_id}/results")["results"]:
                console().print(f"  {r['metric']} {r['sampler']} T={r['num_steps']}: {r['value']:.4f}")
            return
        exp = call("GET", f"/experiments/{item_id}")
        console().print(f"experiment [bold]{exp['id']}[/bold] {exp['name']}: {exp['status']} "
                      f"({100 * exp['progress']['fraction']:.0f}%); owner {exp.get('owner') or '-'}, "
                      f"priority {exp.get('priority', 0)}")
        table = Table("run", "dataset", "weighting", "seed", "status", "step", "error")
        for r in exp["runs"]:
            table.add_row(r["id"], r["dataset"], r["weighting"], str(r["seed"]), r["status"],
                          f"{r['current_step']}/{r['total_steps']}", r["error"] or "")
        console().print(table)

    run_cli(go)


def cancel(experiment_id: str) -> None:
    """Cancel an experiment: queued runs at once, running ones on Ray within seconds."""

    def go():
        exp = call("POST", f"/experiments/{experiment_id}/cancel")
        console().print(f"experiment {exp['id']}: {exp['status']}")

    run_cli(go)


def priority_cmd(
    experiment_id: str = typer.Argument(..., help="an experiment (exp_...), a sweep's included"),
    value: int = typer.Argument(..., help="the new priority, -100..100: higher starts first"),
) -> None:
    """Change an experiment's priority (your own, or anyone's with an admin token); its queued runs
    move in the queue at once."""

    def go():
        exp = call("PATCH", f"/experiments/{experiment_id}", json={"priority": value})
        console().print(f"experiment {exp['id']}: priority {exp['priority']}")

    run_cli(go)


VERDICT_MARK = {"better": "▲", "worse": "▼", "tie": "=", "underpowered": "?"}


def leaderboard(
    dataset: Optional[str] = typer.Option(None),
    metric: Optional[str] = typer.Option(None),
    sampler: Optional[str] = typer.Option(None),
    baseline: str = typer.Option("constant", help="the column (or weighting) every cell's verdict compares with"),
    margin: float = typer.Option(0.05, help="a tie is a 95% interval within ±margin"),
) -> None:
    """Rows (dataset, T) x columns (weighting): mean ± std (n) over seeds, best per row in bold, and
    under each cell its verdict against the baseline (▲ better, ▼ worse, = tie, ? underpowered)
    with the change in %; a last row per table: each weighting's mean rank over T."""

    def go():
        params = {k: v for k, v in dict(dataset=dataset, metric=metric, sampler=sampler, baseline=baseline,
                                        margin=margin).items() if v}
        lb = call("GET", "/leaderboard", params=params)
        lower = {r["lower_is_better"] for r in lb["rows"]}
        direction = "lower" if lower == {True} else "higher" if lower == {False} else "per row: see each metric"
        # A key that is the same on every row goes to the title, so the table fits a terminal.
        keys = ("dataset", "metric", "sampler")
        same = {k: {r[k] for r in lb["rows"]} for k in keys}
        shown = [k for k in keys if len(same[k]) != 1]
        fixed = [next(iter(same[k])) for k in keys if len(same[k]) == 1]
        ns = {c["n"] for r in lb["rows"] for c in r["cells"].values()}
        one_n = next(iter(ns)) if len(ns) == 1 else None  # the same seed count everywhere: say it once
        cell_form = f"mean ± std, {one_n} seed{'s' if one_n != 1 else ''}" if one_n else "mean ± std (seeds)"
        title = f"{' · '.join(fixed) or metric or 'all metrics'} ({direction} is better; {cell_form})"
        bases = {t["baseline"] for t in lb["tables"] if t["baseline"]}
        headers = [f"{c} (baseline)" if c in bases else c for c in lb["columns"]]
        table = Table(*shown, "T", *headers, title=title)
        for row in lb["rows"]:
            cells = []
            for col in lb["columns"]:
                c = row["cells"].get(col)
                text = "" if c is None else c["text"] + ("" if one_n else f" ({c['n']})")  # the API's text
                text = f"[bold green]{text}[/bold green]" if c and c["best"] else text
                if c and c.get("vs_baseline"):
                    v = c["vs_baseline"]
                    change = f" {v['change_pct']:+.1f}%" if v["change_pct"] is not None else ""
                    text += f"\n{VERDICT_MARK[v['verdict']]} {v['verdict']}{change}"
                cells.append(text)
            table.add_row(*(row[k] for k in shown), str(row["num_steps"]), *cells)
        if len(lb["tables"]) == 1 and lb["tables"][0]["mean_ranks"]:  # one table: its summary as the last row
            ranks = lb["tables"][0]["mean_ranks"]
            table.add_row(*([""] * len(shown)), "rank", *(f"{ranks[c]:.2f}" if c in ranks else "" for c in lb["columns"]))
        console().print(table)
        for t in lb["tables"]:
            if t["baseline"]:
                console().print(f"{t['metric']} · {t['sampler']} · step {t['train_step']}: against {t['baseline']}: "
                                f"{t['caption']}", soft_wrap=True)
        prov = lb["provenance"]
        console().print(f"experiments: {', '.join(prov['experiment_ids']) or '-'}; config hashes: "
                      f"{', '.join(prov['config_hashes']) or '-'}; code: {', '.join(prov['code_versions']) or '-'}")

    run_cli(go)


def sweep(
    spec: Path = typer.Argument(..., help="sweep spec, YAML or JSON: base, search_space, search, scheduler, metric, ..."),
    wait: bool = typer.Option(False, "--wait", help="show each trial's progress until the sweep finishes"),
    poll: float = typer.Option(2.0, help="seconds between progress polls"),
    priority: Optional[int] = typer.Option(None, "--priority", help=PRIORITY_HELP),
) -> None:
    """Start a Ray Tune sweep; prints its id. Trials are runs of the sweep's experiment, so
    `snrlab show EXP` and the leaderboard show them too."""

    def go():
        params = {"priority": priority} if priority is not None else {}
        sw = call("POST", "/sweeps", json=load_spec(spec), params=params)
        console().print(f"sweep [bold]{sw['id']}[/bold] ({sw['name']}): experiment {sw['experiment_id']}, "
                        f"{sw['spec']['search']} search, {sw['spec']['scheduler']} scheduler, "
                        f"{sw['metric']} ({sw['mode']}) at T={sw['spec']['num_steps']}")
        if sw["message"]:
            console().print(f"  note: {sw['message']}")
        if wait:
            sw = wait_sweep(sw["id"], poll)
        print(sw["id"])
        if wait and sw["status"] != "succeeded":
            raise typer.Exit(1)

    run_cli(go)


def wait_sweep(sweep_id: str, poll: float) -> dict:
    def label(t: dict) -> str:
        return " ".join(f"{k}={v}" for k, v in t["config"].items()) or t["run_id"]

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                  console=err()) as progress:
        tasks: dict[str, int] = {}
        while True:
            sw = call("GET", f"/sweeps/{sweep_id}")
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


def rescore(
    run_ids: list[str] = typer.Argument(None, help="run ids (run_...)"),
    metric: str = typer.Option(..., "--metric", help="comma-separated, e.g. fd_digits_inf,kid"),
    experiment: Optional[str] = typer.Option(None, help="every succeeded run of this experiment"),
) -> None:
    """Score finished runs' stored features with more metrics, without sampling again."""

    def go():
        ids = list(run_ids or [])
        if experiment:
            ids += [r["id"] for r in call("GET", f"/experiments/{experiment}")["runs"] if r["status"] == "succeeded"]
        if not ids:
            raise ApiError("name runs or --experiment")
        metrics = [m.strip() for m in metric.split(",") if m.strip()]
        for run_id in ids:
            done = call("POST", f"/runs/{run_id}/rescore", json={"metrics": metrics})
            console().print(f"{run_id}: {done['added']} new result(s)")

    run_cli(go)


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    app.command("list")(list_cmd)
    app.command("show")(show)
    app.command("cancel")(cancel)
    # a negative priority (`snrlab priority exp_x -5`) is an argument, not an unknown option
    app.command("priority", context_settings={"ignore_unknown_options": True})(priority_cmd)
    app.command("leaderboard")(leaderboard)
    app.command("sweep")(sweep)
    app.command("rescore")(rescore)
