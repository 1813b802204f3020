"""The commands that act on this machine rather than through the API: `snrlab serve`, the
database's migrations, the API tokens (stored hashed, printed once; each a user's, with scopes and
maybe an expiry) and the users' quotas. Whoever can reach the database is its admin, so these need
no token."""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Optional

import typer
import uvicorn
from rich.table import Table
from sqlalchemy.engine import make_url

from service.client.http import console, err
from service.core.config import StorageNotShared, get_settings
from service.core.lifecycle import utcnow
from service.core.logs import log_config
from service.store import tokens, users
from service.store.db import (
    downgrade,
    make_engine,
    make_sessionmaker,
    session_scope,
    upgrade,
)

db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (stored hashed; printed once).", no_args_is_help=True)
user_app = typer.Typer(help="Users (created with their first token) and their quotas.", no_args_is_help=True)


def serve(
    host: Optional[str] = typer.Option(None, help="default: SNRLAB_HOST or 127.0.0.1"),
    port: Optional[int] = typer.Option(None, help="default: SNRLAB_PORT or 8000"),
    log_level: str = typer.Option("info"),
) -> None:
    """Start the API (uvicorn); migrations are applied and the dispatcher starts with it."""
    # the whole service (torch, Ray): only for this command
    from service.app.main import SecondReplica, create_app, refuse_second_replica

    settings = get_settings()
    try:
        refuse_second_replica(settings)
        app = create_app(settings)
    except (StorageNotShared, SecondReplica) as e:
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


UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(text: str, *, now: datetime | None = None) -> datetime | None:
    """`30d`, `12h`, `90m`, `2w` from now, or `never` (None); BadParameter otherwise."""
    if text.strip().lower() in ("never", "none", ""):
        return None
    m = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text.lower())
    if not m or int(m.group(1)) == 0:
        raise typer.BadParameter(f"{text!r}: use a positive count and a unit (90m, 12h, 30d, 2w) or never")
    return (now or utcnow()) + timedelta(**{UNITS[m.group(2)]: int(m.group(1))})


def _when(t: datetime | None) -> str:
    return f"{t:%Y-%m-%d %H:%M}" if t else ""


def _fail(message: str) -> None:
    err().print(f"[red]error[/red] {message}", soft_wrap=True)
    raise typer.Exit(2)


@token_app.command("create")
def token_create(
    name: str = typer.Option(..., "--name", help="who or what uses the token"),
    user: Optional[str] = typer.Option(None, "--user", help="the user it acts as, who owns what it submits (default: NAME)"),
    scope: list[str] = typer.Option(["submit"], "--scope", help=f"{' | '.join(tokens.SCOPES)} (repeatable); "
                                    "admin implies submit implies read"),
    expires: str = typer.Option("never", "--expires", help="30d, 12h, 90m, 2w or never"),
) -> None:
    """Create a token and print it once; only its sha256 is stored."""
    expires_at = parse_expiry(expires)
    try:
        scopes = tokens.parse_scopes(scope)
    except ValueError as e:
        _fail(str(e))
    with _local_session() as s:
        try:
            row, token = tokens.create_token(s, name=name, user=user, scopes=scopes, expires_at=expires_at)
        except ValueError as e:
            _fail(str(e))
        ident, owner = row.id, row.user
    until = f", expires {_when(expires_at)} UTC" if expires_at else ""
    err().print(f"token {ident} ({name}) of user {owner}, scopes: {' '.join(scopes)}{until}; it is shown only this once:",
                soft_wrap=True)
    print(token)


@token_app.command("list")
def token_list() -> None:
    with _local_session() as s:
        rows = tokens.list_tokens(s)
    now = utcnow()
    table = Table("id", "name", "user", "scopes", "created", "expires", "revoked")
    for r in rows:
        expires = _when(r.expires_at) + (" (expired)" if r.expires_at and r.expires_at <= now else "")
        table.add_row(r.id, r.name, r.user, r.scopes, _when(r.created_at), expires or "never", _when(r.revoked_at))
    console().print(table)


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    with _local_session() as s:
        tokens.revoke_token(s, token_id=token_id)
    console().print(f"revoked {token_id}")


def _limit(text: str | None, kind: type) -> object:
    """A quota option: not given (keep), `none` (no limit), or a number."""
    if text is None:
        return users.KEEP
    if text.strip().lower() in ("none", "unlimited"):
        return None
    try:
        return kind(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: a number, or none for no limit") from None


def _quota(u) -> list[str]:
    return ["-" if v is None else f"{v:g}" for v in (u.max_runs, u.max_cpus, u.max_gpus)]


@user_app.command("list")
def user_list() -> None:
    """Users, their live tokens and their quotas (- : no limit)."""
    with _local_session() as s:
        rows, toks = users.list_users(s), tokens.list_tokens(s)
    now = utcnow()
    live: dict[str, int] = {}
    for t in toks:
        if t.revoked_at is None and (t.expires_at is None or t.expires_at > now):
            live[t.user] = live.get(t.user, 0) + 1
    table = Table("user", "live tokens", "max runs", "max cpus", "max gpus", "created")
    for u in rows:
        table.add_row(u.name, str(live.get(u.name, 0)), *_quota(u), _when(u.created_at))
    console().print(table)


@user_app.command("quota")
def user_quota(
    user: str = typer.Argument(..., help="the user (created if they have no token yet)"),
    max_runs: Optional[str] = typer.Option(None, "--max-runs", help="concurrent runs (none: no limit)"),
    max_cpus: Optional[str] = typer.Option(None, "--max-cpus", help="CPUs of their live runs (none: no limit)"),
    max_gpus: Optional[str] = typer.Option(None, "--max-gpus", help="GPUs of their live runs (none: no limit)"),
) -> None:
    """Set a user's quota (limits not given stay as they are); the dispatcher holds their runs to it."""
    limits = dict(max_runs=_limit(max_runs, int), max_cpus=_limit(max_cpus, float), max_gpus=_limit(max_gpus, float))
    with _local_session() as s:
        try:
            u = users.set_quota(s, name=user, **limits)
        except ValueError as e:
            _fail(str(e))
        runs, cpus, gpus = _quota(u)
    console().print(f"user {user}: max runs {runs}, max cpus {cpus}, max gpus {gpus}")


def _redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)




def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(db_app, name="db")
    app.add_typer(token_app, name="token")
    app.add_typer(user_app, name="user")
