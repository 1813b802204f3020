"""The HTTP client every command and the study report use: SNRLAB_URL (default
http://127.0.0.1:8000) with SNRLAB_TOKEN as the bearer token; an error is one line, never a traceback."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import typer
import yaml
from rich.console import Console


def console() -> Console:
    """Built per use, so COLUMNS and redirected streams are honoured."""
    return Console()


def err() -> Console:
    return Console(stderr=True)


class ApiError(Exception):
    pass


def client() -> httpx.Client:
    base = os.environ.get("SNRLAB_URL", "http://127.0.0.1:8000").rstrip("/")
    headers = {}
    if token := os.environ.get("SNRLAB_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=f"{base}/api/v1", headers=headers, timeout=30)


def call(method: str, path: str, **kwargs) -> Any:
    try:
        with client() as c:
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


def run_cli(fn):
    try:
        return fn()
    except ApiError as e:
        err().print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None


def load_spec(path: Path) -> dict:
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    if path.suffix in (".json",):
        return json.loads(text)
    return yaml.safe_load(text)
