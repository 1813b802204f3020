"""Server-rendered pages beside the API: the leaderboard (the paper's Table 1 and Fig. 7b),
experiment and run pages, CSV/JSON downloads of what a page shows, matplotlib PNGs.

The room: auth.py (the token cookie, the login form, a `?token=` moved out of the URL),
leaderboard.py (the leaderboard and its downloads), runs.py (experiments and runs),
render.py (the Jinja2 environment), templates/ (the HTML), static/ (CSS and the cancel button's
script: the pages carry no inline script or style, so their CSP allows neither), plots.py."""
from __future__ import annotations

from fastapi.staticfiles import StaticFiles

from service.web import auth, leaderboard, runs
from service.web.render import STATIC_DIR


def register(app) -> None:
    """Include the pages, serve static/ at /static, render auth failures as a token form (401)."""
    for module in (auth, leaderboard, runs):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    auth.add_handlers(app)
