"""The experiment and run pages: the experiments list, one experiment (its runs, errors, cancel
button, plots, spec), one run (attempts, usage, results, the evaluator's figures, artifacts),
and the loss / training PNGs and artifact files those pages embed."""
from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from service.api.deps import ExperimentId, Filter, RunId, SessionDep, SettingsDep
from service.api.queue import queue_view
from service.api.runs import artifact_response
from service.domain.experiments import experiment_view, run_progress
from service.domain.format import num
from service.runtime import paths
from service.store import experiments as experiments_store
from service.store import runs as runs_store
from service.web import plots
from service.web.auth import WebReader
from service.web.leaderboard import board
from service.web.render import page

ARTIFACT_FIGURES = ("samples_by_T.png", "one_step_estimation.png", "mse_vs_t.png", "amplified_error.png")
router = APIRouter(include_in_schema=False)


@router.get("/experiments", response_class=HTMLResponse)
def experiments_page(request: Request, session: SessionDep, token: WebReader):
    items, total, _ = experiments_store.list_experiments(session, limit=200)
    return page(request, "experiments.html", "Experiments", total=total, queue=queue_view(session, request, limit=50),
                experiments=[{"exp": e, "view": experiment_view(e)} for e in items])


@router.get("/experiments/{experiment_id}", response_class=HTMLResponse)
def experiment_page(experiment_id: ExperimentId, request: Request, session: SessionDep, token: WebReader):
    exp = experiments_store.get_experiment(session, experiment_id=experiment_id)
    v = experiment_view(exp)
    evaluation = exp.spec.get("evaluation", {})
    return page(request, "experiment.html", f"Experiment {exp.id}", exp=exp, status=v["status"].value,
                cancellable=not v["status"].is_terminal(), progress=v["progress"],
                by_status=", ".join(f"{k}: {n}" for k, n in sorted(v["progress"]["by_status"].items())),
                runs=[{"run": r, "done": run_progress(r)} for r in sorted(exp.runs, key=lambda r: r.index)],
                # Fig. 7a per metric when the experiment scores intermediate checkpoints (evaluation.at_steps)
                training_metrics=evaluation.get("metrics", []) if evaluation.get("at_steps") else [],
                spec=json.dumps(exp.spec, indent=2))


@router.get("/experiments/{experiment_id}/training.png")
def experiment_training_plot(experiment_id: ExperimentId, session: SessionDep, token: WebReader, metric: Filter = None,
                             sampler: Filter = None):
    exp = experiments_store.get_experiment(session, experiment_id=experiment_id)
    lb = board(session, experiment=exp.id, metric=metric, sampler=sampler, train_steps="all")
    rows = [r for r in lb["rows"] if metric in (None, r["metric"])]
    png = plots.metric_vs_training(rows, lb["columns"], metric=metric or "metric", title=f"{exp.name} · {metric or 'all metrics'}")
    return Response(png, media_type="image/png")


def _points(session, run_id: str) -> list[dict]:
    return [{"step": p.step, "values": p.values} for p in runs_store.get_metrics(session, run_id=run_id)]


@router.get("/experiments/{experiment_id}/loss.png")
def experiment_loss(experiment_id: ExperimentId, session: SessionDep, token: WebReader):
    exp = experiments_store.get_experiment(session, experiment_id=experiment_id)
    first_seed: dict[str, str] = {}
    for r in sorted(exp.runs, key=lambda r: (r.dataset, r.weighting, r.seed)):
        first_seed.setdefault(f"{r.dataset} {r.weighting} s{r.seed}", r.id)
    series = {label: _points(session, rid) for label, rid in list(first_seed.items())[:12]}
    return Response(plots.loss_by_quartile(series), media_type="image/png")


def usage_line(usage: dict | None) -> str | None:
    """`training: cpu × 1, 30 s, 0.0083 cpu-worker-hours` from a run's recorded usage."""
    if not usage:
        return None
    return (f"training: {usage.get('device')} × {usage.get('num_workers')}, {usage.get('wall_s', 0):.0f} s, "
            f"{usage.get('device_hours', 0):.4f} {usage.get('device_hours_unit', 'device-hours')}")


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(run_id: RunId, request: Request, session: SessionDep, settings: SettingsDep, token: WebReader):
    run, results, _ = runs_store.get_results(session, run_id=run_id)
    root = paths.artifacts_dir(settings.runs_dir, run_id)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    return page(request, "run.html", f"Run {run_id}", run=run, usage=usage_line(run.usage),
                results=[{"r": x, "value": num(x.value)} for x in results],
                figures=[n for n in ARTIFACT_FIGURES if n in names],
                others=[n for n in names if n not in ARTIFACT_FIGURES])


@router.get("/runs/{run_id}/loss.png")
def run_loss(run_id: RunId, session: SessionDep, token: WebReader):
    run = runs_store.get_run(session, run_id=run_id)
    png = plots.loss_by_quartile({f"{run.weighting} seed {run.seed}": _points(session, run_id)})
    return Response(png, media_type="image/png")


@router.get("/runs/{run_id}/artifacts/{path:path}")
def run_artifact(run_id: RunId, path: str, session: SessionDep, settings: SettingsDep, token: WebReader):
    """The API's artifact route, behind the page's auth (an <img> cannot send a Bearer header)."""
    return artifact_response(session, settings, run_id, path)
