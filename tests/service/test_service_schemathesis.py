"""Schemathesis against the live app (uvicorn on a socket), on SQLite and PostgreSQL: every check
it has (`--checks all`: server errors, status codes, content types, headers and response schemas,
negative data rejected, positive data accepted, Allow headers, auth, use after free, ...), with a
token, through its coverage, fuzzing and stateful phases; the stateful phase follows the links it
infers from the responses, so the endpoints that need an id (runs, experiments, artifacts) get real
ones. Bounded by examples and time. Also a short run without the token. 0 5xx, 0 check failures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from web_support import finished_experiment

from service.app.main import create_app

# The schema cannot state the rules that tie fields together (fd_<dataset> must name the spec's
# dataset, at_steps below training.steps, a sweep's base has one dataset, weighting and seed, a
# sweep's metric is one it evaluates): a schema-valid body may be a 422 there, naming the field.
# A list's `cursor` is opaque: every base64url string fits its schema, but only a `next_cursor` the
# list returned decodes to a sort key; any other is a 422 naming `cursor` (never a 5xx).
CONFIG = """
[phases.stateful]
max-steps = 30

[[operations]]
include-path-regex = "^/api/v1/(experiments|experiments:validate|sweeps)$"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-path-regex = "^/api/v1/(experiments|sweeps|experiments/[^/]+/runs|runs/[^/]+/results)$"
include-method = "GET"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "422"]
"""


def _schemathesis(url: str, config: Path, report: Path, *args: str, timeout: float = 300) -> dict:
    cmd = [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config), "run", f"{url}/openapi.json",
           "--checks", "all", "--workers", "1", "--seed", "1", "--report", "junit", "--report-junit-path", str(report),
           *args]
    # cwd: its replay cache (.schemathesis/) lives beside the report, so no run replays another's crashes
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=report.parent)
    return {"code": done.returncode, "out": done.stdout[-6000:] + done.stderr[-2000:]}


def _junit_failures(report: Path) -> list[str]:
    import xml.etree.ElementTree as ET

    root = ET.parse(report).getroot()
    return [f"{case.get('name')}: {(f.get('message') or f.text or '')[:500]}" for case in root.iter("testcase")
            for f in list(case.iter("failure")) + list(case.iter("error"))]


@pytest.mark.parametrize("headers", ["token", "none"])
def test_schemathesis_finds_no_server_error_and_no_check_failure(settings, engine, session_factory, fake_executor,
                                                                 make_spec, token, live_server, tmp_path, headers):
    finished_experiment(session_factory, settings, fake_executor, make_spec)  # results, artifacts, metrics to read
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    report = tmp_path / "junit.xml"
    auth = ["-H", f"Authorization: Bearer {token}", "--max-examples", "8", "--max-time", "60"] if headers == "token" \
        else ["--max-examples", "4", "--max-time", "20"]
    with live_server(create_app(settings)) as server:
        run = _schemathesis(server.url, config, report, *auth)
    failures = _junit_failures(report)
    assert not failures, json.dumps(failures, indent=1) + run["out"]
    assert run["code"] == 0, run["out"]
    assert "Stateful" in run["out"] and " passed" in run["out"], run["out"]
