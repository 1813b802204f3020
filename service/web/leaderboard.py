"""The leaderboard page (the paper's Table 1 and Fig. 7b) and the downloads of what it shows:
CSV, JSON and the metric-vs-T plot. Every number comes from the API's leaderboard (service.domain):
a cell shows its `text`, a row's `best` is its bold cell, a row's `lower_is_better` its direction."""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from service.api.deps import Filter, SessionDep, SettingsDep
from service.domain.leaderboard import leaderboard
from service.runtime import paths
from service.store.leaderboard import filter_options
from service.web import plots
from service.web.auth import WebReader
from service.web.render import page, query

FILTERS = ("dataset", "metric", "sampler", "experiment")
GALLERY_FIGURES = ("samples_by_T.png", "mse_vs_t.png")
router = APIRouter(include_in_schema=False)


def board(session, *, dataset=None, metric=None, sampler=None, experiment=None, train_steps="final") -> dict[str, Any]:
    """The leaderboard as the API returns it (each row's best cell by its own metric's direction)."""
    lb = leaderboard(session, dataset=dataset, metric=metric, sampler=sampler, experiment_id=experiment,
                     train_steps=train_steps).model_dump(mode="json")
    lb["experiment"] = experiment
    return lb


def tables(lb: dict[str, Any]) -> list[tuple[tuple[str, str, str, str], list[dict]]]:
    """One table per (dataset, metric, sampler, training setup), rows sorted by T."""
    groups: dict[tuple, list] = defaultdict(list)
    for row in lb["rows"]:
        groups[(row["dataset"], row["metric"], row["sampler"], row["config_hash"])].append(row)
    return [(k, sorted(v, key=lambda r: r["num_steps"])) for k, v in sorted(groups.items())]


def _table(key: tuple[str, str, str, str], rows: list[dict], columns: list[str], experiment: str | None) -> dict[str, Any]:
    """What one leaderboard table shows: its columns (weightings with a cell), its caption's facts, its plot."""
    dataset, metric, sampler, config_hash = key
    cells = [c for r in rows for c in r["cells"].values()]
    return {
        "dataset": dataset, "metric": metric, "sampler": sampler, "config_hash": config_hash, "rows": rows,
        "columns": [c for c in columns if any(c in r["cells"] for r in rows)],
        "num_gen": ", ".join(sorted({str(c["num_gen"]) for c in cells if c["num_gen"] is not None})) or "?",
        "extractor": ", ".join(sorted({c["extractor"] for c in cells if c["extractor"]})) or "?",
        "direction": "lower" if rows[0]["lower_is_better"] else "higher",
        "plot": "/leaderboard/plot.png" + query(dataset=dataset, metric=metric, sampler=sampler, experiment=experiment,
                                                 setup=config_hash),
    }


def _gallery(runs_dir, lb: dict[str, Any]) -> list[dict[str, str]]:
    """The evaluator's figures for one run per weighting (the first seed of the first table)."""
    first: dict[str, str] = {}
    for row in lb["rows"]:
        for w, c in row["cells"].items():
            first.setdefault(w, c["run_ids"][0])
    return [{"weighting": w, "run_id": rid, "name": name}
            for w, rid in sorted(first.items()) for name in GALLERY_FIGURES
            if (paths.artifacts_dir(runs_dir, rid) / name).is_file()]


@router.get("/", response_class=HTMLResponse)
def index():
    return RedirectResponse("/leaderboard")


@router.get("/leaderboard", response_class=HTMLResponse)
def leaderboard_page(request: Request, session: SessionDep, settings: SettingsDep, token: WebReader,
                     dataset: Filter = None, metric: Filter = None, sampler: Filter = None, experiment: Filter = None):
    lb = board(session, dataset=dataset, metric=metric, sampler=sampler, experiment=experiment)
    current = {"dataset": dataset, "metric": metric, "sampler": sampler, "experiment": experiment}
    opts = filter_options(session)
    groups = tables(lb)
    return page(request, "leaderboard.html", "Leaderboard",
                filters=[{"name": k, "options": opts[k], "current": current[k]} for k in FILTERS],
                downloads=query(**current),
                tables=[_table(key, rows, lb["columns"], experiment) for key, rows in groups],
                multi_setup=len({k[:3] for k, _ in groups}) < len(groups),
                gallery=_gallery(settings.runs_dir, lb), provenance=lb["provenance"])


@router.get("/leaderboard.json")
def leaderboard_json(session: SessionDep, token: WebReader, dataset: Filter = None, metric: Filter = None,
                     sampler: Filter = None, experiment: Filter = None):
    lb = board(session, dataset=dataset, metric=metric, sampler=sampler, experiment=experiment)
    return Response(json.dumps(lb, indent=1), media_type="application/json",
                    headers={"Content-Disposition": "attachment; filename=leaderboard.json"})


CSV_FIELDS = ("dataset", "metric", "sampler", "config_hash", "T", "weighting", "mean", "std", "n", "best", "num_gen",
              "extractor", "run_ids")


@router.get("/leaderboard.csv")
def leaderboard_csv(session: SessionDep, token: WebReader, dataset: Filter = None, metric: Filter = None,
                    sampler: Filter = None, experiment: Filter = None):
    lb = board(session, dataset=dataset, metric=metric, sampler=sampler, experiment=experiment)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_FIELDS)
    for (ds, m, s, h), rows in tables(lb):
        for r in rows:
            for col in lb["columns"]:
                if (c := r["cells"].get(col)) is not None:
                    w.writerow([ds, m, s, h, r["num_steps"], col, repr(c["mean"]), repr(c["std"]), c["n"], int(c["best"]),
                                c["num_gen"], c["extractor"], " ".join(c["run_ids"])])
    return Response(buf.getvalue(), media_type="text/csv", headers={"Content-Disposition": "attachment; filename=leaderboard.csv"})


@router.get("/leaderboard/plot.png")
def leaderboard_plot(session: SessionDep, token: WebReader, dataset: Filter = None, metric: Filter = None,
                     sampler: Filter = None, experiment: Filter = None, setup: Filter = None):
    lb = board(session, dataset=dataset, metric=metric, sampler=sampler, experiment=experiment)
    rows = [r for r in lb["rows"] if setup in (None, "", r["config_hash"])]
    title = f"{dataset or 'all'} · {sampler or 'all samplers'}"
    png = plots.metric_vs_steps(rows, lb["columns"], metric=metric or "metric", title=title)
    return Response(png, media_type="image/png")
