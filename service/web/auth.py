"""Who may read a page. Auth follows the API's read rule (SNRLAB_PUBLIC_READS / auth_enabled).
When reads need a token a page takes it from an HttpOnly, SameSite=Strict cookie `snrlab_token`
(so images and links work) or a Bearer header. The "token needed" form POSTs the token to
/login, which sets the cookie and redirects (303) back to the page: a token never sits in a URL,
a log line or the browser's history. A `?token=` that still arrives (an old bookmark) is moved
into the cookie the same way and redirected away. Mutations are never taken from the cookie:
the cancel button asks for a token and POSTs to the API with it (static/snrlab.js). Any live token
reads a page (every scope implies `read`); an expired one is refused like a revoked one."""
from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from service.api.deps import Credentials, SessionDep, SettingsDep
from service.core.errors import AuthError
from service.store.tokens import verify_token
from service.web.render import page

COOKIE = "snrlab_token"
INVALID = "that token is not valid (revoked, expired or mistyped)"


class WebAuthError(Exception):
    """A page read without a valid token: answered with the token form (401)."""


class TokenInUrl(Exception):
    """A `?token=` on a page URL: moved into the cookie (when valid) and redirected away."""

    def __init__(self, token: str, valid: bool):
        self.token, self.valid = token, valid


async def web_reader(request: Request, session: SessionDep, settings: SettingsDep, creds: Credentials) -> str | None:
    """The token a page was read with (None when reads are public); WebAuthError without a valid one.
    Pages are GETs: their sessions take no lock, so the token is checked on the loop (api.deps)."""
    if "token" in request.query_params:
        raise TokenInUrl(request.query_params["token"], _valid(session, request.query_params["token"]))
    if settings.public_reads or not settings.auth_enabled:
        return None
    token = request.cookies.get(COOKIE) or (creds.credentials if creds else None)
    if not token:
        raise WebAuthError("this page needs an API token (reads are not public on this service)")
    if not _valid(session, token):
        raise WebAuthError(INVALID)
    return token


def _valid(session, token: str) -> bool:
    try:
        verify_token(session, token=token)
    except AuthError:
        return False
    return True


WebReader = Annotated[str | None, Depends(web_reader)]
router = APIRouter(include_in_schema=False)


def without_token(request: Request) -> str:
    """The request's own path and query, the token left out: where a login returns to."""
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
    return request.url.path + (f"?{query}" if query else "")


def local(path: str) -> str:
    """Only a path on this service is a place to return to (never another host: //evil, /\\evil)."""
    return path if path.startswith("/") and not path.startswith(("//", "/\\")) else "/leaderboard"


def login_form(request: Request, message: str, next_path: str) -> Response:
    return page(request, "token.html", "token needed", status_code=401, message=message, next_path=next_path)


def into_cookie(location: str, token: str) -> RedirectResponse:
    response = RedirectResponse(location, status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


def add_handlers(app) -> None:
    """Render auth failures as the token form (401) rather than JSON; move a URL's token into the cookie."""

    @app.exception_handler(WebAuthError)
    async def _auth(request: Request, exc: WebAuthError):
        return login_form(request, str(exc), without_token(request))

    @app.exception_handler(TokenInUrl)
    async def _token_in_url(request: Request, exc: TokenInUrl):
        if not exc.valid:
            return login_form(request, INVALID, without_token(request))
        return into_cookie(without_token(request), exc.token)


@router.post("/login")
async def login(request: Request, session: SessionDep):
    """The token form's target: a valid token goes into the HttpOnly cookie, then 303 back to the page."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
    token, next_path = (form.get("token") or [""])[0], local((form.get("next") or ["/leaderboard"])[0])
    if not token or not await run_in_threadpool(_valid, session, token):
        return login_form(request, INVALID if token else "enter an API token", next_path)
    return into_cookie(next_path, token)
