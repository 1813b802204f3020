"""Keyset (cursor) pagination: a page is the rows after the last one its reader saw, in one total
order, so pages neither skip nor repeat rows while others insert (OFFSET does both) and a deep
page costs what the first does. The cursor is that last row's sort key, opaque to the client
(base64url JSON); one that does not decode is a 422 naming `cursor`."""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from service.core.errors import SpecError

MAX_CURSOR_CHARS = 1000


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps([{"t": v.isoformat()} if isinstance(v, datetime) else v for v in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, types: Sequence[type]) -> list[Any]:
    """The sort key a cursor carries, one value of each of `types`; SpecError (422 on `cursor`)
    for anything else (a value of another type would reach SQL)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError("wrong length")
        out = [datetime.fromisoformat(v["t"]) if isinstance(v, dict) else v for v in values]
        if not all(type(v) is t for v, t in zip(out, types)):
            raise ValueError("wrong type")
        return out
    except (binascii.Error, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise SpecError(("query", "cursor"), "not a cursor this list returned (pass `next_cursor` back unchanged)") from None


def after(columns: Sequence[Any], values: Sequence[Any], *, descending: bool) -> Any:
    """Rows strictly after `values` in the order of `columns` (one direction): the row-value
    comparison (a, b) > (x, y) spelled out, which both SQLite and PostgreSQL plan on an index."""
    clauses = []
    for i, col in enumerate(columns):
        beyond = col < values[i] if descending else col > values[i]
        clauses.append(and_(*(c == v for c, v in zip(columns[:i], values[:i])), beyond))
    return or_(*clauses)


def keyset_page(session: Session, stmt: Select, columns: Sequence[Any], *, limit: int, cursor: str | None,
                key: Callable[[Any], Sequence[Any]], descending: bool = False) -> tuple[list[Any], str | None]:
    """(rows, next_cursor) of one page of `stmt` ordered by `columns` (unique together); `key`
    reads those columns' values off a row. next_cursor is None on the last page."""
    if cursor is not None:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise SpecError(("query", "cursor"), "not a cursor this list returned (too long)")
        types = [c.type.python_type for c in columns]
        stmt = stmt.where(after(columns, decode_cursor(cursor, types), descending=descending))
    order = [c.desc() if descending else c.asc() for c in columns]
    rows = list(session.scalars(stmt.order_by(*order).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(key(rows[-1])) if more else None)
