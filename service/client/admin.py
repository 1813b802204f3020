"""The commands that act on this machine rather than through the API: `snrlab serve`, the
database's migrations and the API tokens (stored hashed, printed once)."""
from __future__ import annotations

from typing import Optional

import typer
import uvicorn
from rich.table import Table
from sqlalchemy.engine import make_url

from service.client.http import console, err
from service.core.config import StorageNotShared, get_settings
from service.core.logs import log_config
from service.store import tokens
from service.store.db import (
    downgrade,
    make_engine,
    make_sessionmaker,
    session_scope,
    upgrade,
)

db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (stored hashed; printed once).", no_args_is_help=True)


def serve(
    host: Optional[str] = typer.Option(None, help="default: SNRLAB_HOST or 127.0.0.1"),
    port: Optional[int] = typer.Option(None, help="default: SNRLAB_PORT or 8000"),
    log_level: str = typer.Option("info"),
) -> None:
    """Start the API (uvicorn); migrations are applied and the dispatcher starts with it."""
    from service.app.main import create_app  # the whole service (torch, Ray): only for this command

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
    uvicorn.run(app, host=host or settings.host, port=port or settings.port, log_level=log_level,
                log_config=log_config(log_level))


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations to SNRLAB_DATABASE_URL."""
    url = get_settings().resolved_database_url
    upgrade(url, revision)
    console().print(f"database at {_redact(url)} is at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="e.g. base or -1")) -> None:
    downgrade(get_settings().resolved_database_url, revision)


def _local_session():
    url = get_settings().resolved_database_url
    upgrade(url)
    return session_scope(make_sessionmaker(make_engine(url)))


@token_app.command("create")
def token_create(name: str = typer.Option(..., "--name", help="who or what uses the token")) -> None:
    """Create a token and print it once; only its sha256 is stored."""
    with _local_session() as s:
        row, token = tokens.create_token(s, name=name)
    err().print(f"token {row.id} ({name}) created; it is shown only this once:")
    print(token)


@token_app.command("list")
def token_list() -> None:
    with _local_session() as s:
        rows = tokens.list_tokens(s)
    table = Table("id", "name", "created", "revoked")
    for r in rows:
        table.add_row(r.id, r.name, f"{r.created_at:%Y-%m-%d %H:%M}", f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "")
    console().print(table)


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    with _local_session() as s:
        tokens.revoke_token(s, token_id=token_id)
    console().print(f"revoked {token_id}")


def _redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)




def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(db_app, name="db")
    app.add_typer(token_app, name="token")
