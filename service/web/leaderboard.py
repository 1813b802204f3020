"""The leaderboard page (the paper's Table 1 and Fig. 7b) and the downloads of what it shows:
CSV, JSON and the metric-vs-T plot. Every number comes from the API's leaderboard (service.domain):
a cell shows its `text` and its verdict against the baseline (a badge; the change and its interval
on hover), a row's `best` is its bold cell, a row's `lower_is_better` its direction; each table
ends with its summary (mean rank over T, verdict counts) and says how the verdicts were reached.
Pages and downloads are cached under the results version, as the API's leaderboard is."""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from service.api.cache import cached
from service.api.deps import Filter, SessionDep, SettingsDep
from service.api.leaderboard import Baseline, Margin
from service.domain.leaderboard import DEFAULT_BASELINE, DEFAULT_MARGIN, leaderboard
from service.runtime import paths
from service.store.leaderboard import filter_options
from service.web import plots
from service.web.auth import WebReader
from service.web.render import page, query

FILTERS = ("dataset", "metric", "sampler", "experiment")
GALLERY_FIGURES = ("samples_by_T.png", "mse_vs_t.png")
router = APIRouter(include_in_schema=False)


def board(session, *, dataset=None, metric=None, sampler=None, experiment=None, train_steps="final",
          baseline=DEFAULT_BASELINE, margin=DEFAULT_MARGIN) -> dict[str, Any]:
    """The leaderboard as the API returns it (each row's best cell by its own metric's direction)."""
    lb = leaderboard(session, dataset=dataset, metric=metric, sampler=sampler, experiment_id=experiment,
                     train_steps=train_steps, baseline=baseline, margin=margin).model_dump(mode="json")
    lb["experiment"] = experiment
    return lb


def tables(lb: dict[str, Any]) -> list[tuple[tuple[str, str, str, str], list[dict]]]:
    """One table per (dataset, metric, sampler, training setup), rows sorted by T."""
    groups: dict[tuple, list] = defaultdict(list)
    for row in lb["rows"]:
        groups[(row["dataset"], row["metric"], row["sampler"], row["config_hash"])].append(row)
    return [(k, sorted(v, key=lambda r: r["num_steps"])) for k, v in sorted(groups.items())]


def _summary(lb: dict[str, Any], key: tuple[str, str, str, str], rows: list[dict]) -> dict[str, Any] | None:
    """The API's summary of this table (its rows share one training step and extractor), if one."""
    dataset, metric, sampler, config_hash = key
    steps, fps = {r["train_step"] for r in rows}, {r["extractor_fingerprint"] for r in rows}
    found = [t for t in lb["tables"] if (t["dataset"], t["metric"], t["sampler"], t["config_hash"]) == key
             and {t["train_step"]} == steps and {t["extractor_fingerprint"]} == fps]
    return found[0] if len(found) == 1 else None


def _table(key: tuple[str, str, str, str], rows: list[dict], lb: dict[str, Any], experiment: str | None) -> dict[str, Any]:
    """What one leaderboard table shows: its columns (weightings with a cell), its caption's facts,
    its summary row, its plot."""
    dataset, metric, sampler, config_hash = key
    cells = [c for r in rows for c in r["cells"].values()]
    floors = sorted({f"{r['floor']:.4g}" for r in rows if r["floor"] is not None})
    return {
        "dataset": dataset, "metric": metric, "sampler": sampler, "config_hash": config_hash, "rows": rows,
        "columns": [c for c in lb["columns"] if any(c in r["cells"] for r in rows)],
        "num_gen": ", ".join(sorted({str(c["num_gen"]) for c in cells if c["num_gen"] is not None})) or "?",
        "extractor": ", ".join(sorted({c["extractor"] for c in cells if c["extractor"]})) or "?",
        "direction": "lower" if rows[0]["lower_is_better"] else "higher",
        "floor": ", ".join(floors), "summary": _summary(lb, key, rows),
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


def _extra(baseline: str, margin: float) -> dict[str, Any]:
    """The statistics' settings a link keeps (left out at their defaults)."""
    return {k: v for k, v in (("baseline", baseline), ("margin", margin))
            if v != {"baseline": DEFAULT_BASELINE, "margin": DEFAULT_MARGIN}[k]}


@router.get("/leaderboard", response_class=HTMLResponse)
async def leaderboard_page(request: Request, session: SessionDep, settings: SettingsDep, token: WebReader,
                     dataset: Filter = None, metric: Filter = None, sampler: Filter = None, experiment: Filter = None,
                     baseline: Baseline = DEFAULT_BASELINE, margin: Margin = DEFAULT_MARGIN):
    current = {"dataset": dataset, "metric": metric, "sampler": sampler, "experiment": experiment}

    def build() -> bytes:
        lb = board(session, **current, baseline=baseline, margin=margin)
        opts = filter_options(session)
        groups = tables(lb)
        extra = _extra(baseline, margin)
        return page(request, "leaderboard.html", "Leaderboard",
                    filters=[{"name": k, "options": opts[k], "current": current[k]} for k in FILTERS],
                    baseline=baseline, baselines=sorted(set(lb["columns"]) | set(lb["weightings"].values())),
                    margin=margin, downloads=query(**current, **extra),
                    tables=[_table(key, rows, lb, experiment) for key, rows in groups],
                    multi_setup=len({k[:3] for k, _ in groups}) < len(groups),
                    gallery=_gallery(settings.runs_dir, lb), provenance=lb["provenance"]).body

    return await cached(request, session, ("page", baseline, margin, *sorted(current.items())), build, "text/html")


@router.get("/leaderboard.json")
async def leaderboard_json(request: Request, session: SessionDep, token: WebReader, dataset: Filter = None, metric: Filter = None,
                     sampler: Filter = None, experiment: Filter = None, baseline: Baseline = DEFAULT_BASELINE,
                     margin: Margin = DEFAULT_MARGIN):
    params = dict(dataset=dataset, metric=metric, sampler=sampler, experiment=experiment, baseline=baseline, margin=margin)
    return await cached(request, session, ("json", *sorted(params.items())),
                         lambda: json.dumps(board(session, **params), indent=1).encode(), "application/json",
                         headers={"Content-Disposition": "attachment; filename=leaderboard.json"})


CSV_FIELDS = ("dataset", "metric", "sampler", "config_hash", "T", "weighting", "mean", "std", "n", "best", "num_gen",
              "extractor", "run_ids", "baseline", "verdict", "change_pct", "ci_low_pct", "ci_high_pct", "p_adjusted", "test",
              "floor")


@router.get("/leaderboard.csv")
async def leaderboard_csv(request: Request, session: SessionDep, token: WebReader, dataset: Filter = None, metric: Filter = None,
                    sampler: Filter = None, experiment: Filter = None, baseline: Baseline = DEFAULT_BASELINE,
                    margin: Margin = DEFAULT_MARGIN):
    params = dict(dataset=dataset, metric=metric, sampler=sampler, experiment=experiment, baseline=baseline, margin=margin)

    def build() -> bytes:
        lb = board(session, **params)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(CSV_FIELDS)
        for key, rows in tables(lb):
            base = (_summary(lb, key, rows) or {}).get("baseline")
            for r in rows:
                for col in lb["columns"]:
                    if (c := r["cells"].get(col)) is None:
                        continue
                    v = c["vs_baseline"] or {}
                    ci = v.get("ci_pct") or [None, None]
                    w.writerow([*key, r["num_steps"], col, repr(c["mean"]), repr(c["std"]), c["n"], int(c["best"]),
                                c["num_gen"], c["extractor"], " ".join(c["run_ids"]), base or "", v.get("verdict", ""),
                                _csv(v.get("change_pct")), _csv(ci[0]), _csv(ci[1]), _csv(v.get("p_adjusted")),
                                v.get("method", ""), _csv(r["floor"])])
        return buf.getvalue().encode()

    return await cached(request, session, ("csv", *sorted(params.items())), build, "text/csv",
                         headers={"Content-Disposition": "attachment; filename=leaderboard.csv"})


def _csv(x) -> str:
    return "" if x is None else repr(x)


@router.get("/leaderboard/plot.png")
async def leaderboard_plot(request: Request, session: SessionDep, token: WebReader, dataset: Filter = None, metric: Filter = None,
                     sampler: Filter = None, experiment: Filter = None, setup: Filter = None):
    def build() -> bytes:
        lb = board(session, dataset=dataset, metric=metric, sampler=sampler, experiment=experiment)
        rows = [r for r in lb["rows"] if setup in (None, "", r["config_hash"])]
        title = f"{dataset or 'all'} · {sampler or 'all samplers'}"
        return plots.metric_vs_steps(rows, lb["columns"], metric=metric or "metric", title=title)

    params = dict(dataset=dataset, metric=metric, sampler=sampler, experiment=experiment, setup=setup)
    return await cached(request, session, ("plot", *sorted(params.items())), build, "image/png")
