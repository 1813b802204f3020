"""The pages' one Jinja2 environment (templates/ as files, autoescaping on, an undefined name is
an error, not a blank) and the small helpers the page handlers share."""
from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"

templates = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
    trim_blocks=True, lstrip_blocks=True))


def page(request: Request, template: str, title: str, *, status_code: int = 200, **context: Any) -> Response:
    """A page: `template` (extending base.html) rendered with its context and the page title."""
    return templates.TemplateResponse(request, template, {"title": title, **context}, status_code=status_code)


def query(**params: Any) -> str:
    """`?k=v&...` of the params that are set ("" when none is): a page's link keeps its filters."""
    p = {k: v for k, v in params.items() if v not in (None, "")}
    return ("?" + urlencode(p)) if p else ""


def plain_error(text: str | None) -> str:
    """The first line of a stored error (the service already keeps them readable), at most 400 characters."""
    if not text:
        return ""
    first = text.strip().splitlines()[0] if text.strip() else text
    return first[:400]


templates.env.globals["query"] = query
templates.env.filters["plain_error"] = plain_error
