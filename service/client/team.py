"""The team's view of a shared service: `snrlab queue` (what waits, in start order, and why) and
`snrlab status` (the replicas on this database, which one dispatches, the lease's age)."""
from __future__ import annotations

import typer
from rich.table import Table

from service.client.http import call, console, run_cli


def queue(limit: int = typer.Option(50, min=1, max=1000, help="rows shown")) -> None:
    """The queued runs in the order the dispatcher will start them, with why each one waits."""

    def go():
        body = call("GET", "/queue", params={"limit": limit})
        table = Table("#", "run", "experiment", "owner", "prio", "waiting for", title=f"queue: {body['total']} runs queued")
        for item in body["items"]:
            why = "[green]starts next[/green]" if item["starts_next"] else item["waiting_for"]
            table.add_row(str(item["position"]), f"{item['run_id']}\n{item['label']}", item["experiment"],
                          item["owner"] or "-", str(item["priority"]), why)
        console().print(table)
        users = Table("user", "running", "CPUs", "GPUs", "queued", "quota", title="per user")
        for u in body["users"]:
            quota = ", ".join(f"{k.removeprefix('max_')} <= {u[k]:g}" for k in ("max_runs", "max_cpus", "max_gpus")
                              if u[k] is not None) or "-"
            users.add_row(u["user"] or "(no owner)", str(u["running"]), f"{u['cpus']:g}", f"{u['gpus']:g}", str(u["queued"]), quota)
        console().print(users)
        console().print(f"order: {body['order']}", soft_wrap=True)

    run_cli(go)


def status() -> None:
    """The service's replicas, which one leads (dispatches), and the lease."""

    def go():
        body = call("GET", "/status")
        lease = body["lease"]
        table = Table("replica", "role", "version", "up", "last seen", title="replicas on this database")
        for r in body["replicas"]:
            role = "[bold]leader[/bold]" if r["leader"] else "standby"
            here = " (answered)" if r["id"] == body["this_replica"] else ""
            table.add_row(r["id"] + here, role, r["version"], f"{r['up_s']:.0f} s", f"{r['seen_s_ago']:.1f} s ago")
        console().print(table)
        if lease["holder"]:
            console().print(f"lease: held by {lease['holder']} for {lease['age_s']:.0f} s (fencing token {lease['token']}, "
                            f"expires in {lease['expires_in_s']:.1f} s unless renewed)")
        else:
            console().print(f"lease: [red]no replica holds it[/red] (fencing token {lease['token']}); no run starts until one does")

    run_cli(go)


def register(app: typer.Typer) -> None:
    app.command("queue")(queue)
    app.command("status")(status)
