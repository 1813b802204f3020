"""Logging of `snrlab serve`: the service's own INFO lines (reconcile, dispatch, sweeps) beside
uvicorn's, and no API token in any line: a `token=` value in a logged URL is redacted."""
from __future__ import annotations

import logging
import re
from typing import Any

from uvicorn.config import LOGGING_CONFIG

TOKEN_IN_URL = re.compile(r"(?i)([?&;]token=)[^&\s\"']*")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return TOKEN_IN_URL.sub(lambda m: m.group(1) + REDACTED, text)


class RedactTokens(logging.Filter):
    """Rewrites a record's message and arguments (uvicorn's access line puts the path in args)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def log_config(level: str = "info") -> dict[str, Any]:
    """A logging.dictConfig for uvicorn.run(log_config=...): uvicorn's own formats, the `service`,
    `trainer` and `evaluator` loggers at `level` on stderr, every handler filtered by RedactTokens."""

    level = level.upper()
    cfg: dict[str, Any] = {**LOGGING_CONFIG, "disable_existing_loggers": False}
    cfg["filters"] = {"redact_tokens": {"()": RedactTokens}}
    cfg["formatters"] = {**LOGGING_CONFIG["formatters"],
                         "service": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}}
    cfg["handlers"] = {name: {**h, "filters": ["redact_tokens"]} for name, h in LOGGING_CONFIG["handlers"].items()}
    cfg["handlers"]["service"] = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                  "formatter": "service", "filters": ["redact_tokens"]}
    cfg["loggers"] = {**LOGGING_CONFIG["loggers"],
                      **{name: {"handlers": ["service"], "level": level, "propagate": False}
                         for name in ("service", "trainer", "evaluator")}}
    return cfg
