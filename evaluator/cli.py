"""`snrlab eval`: score a checkpoint at several step counts T (and write the paper's analyses)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def eval_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="trainer checkpoint directory (unet_ema/, config.json)"),
    steps: str = typer.Option("2,5,10,20,50,100", help="comma-separated sampling step counts T"),
    sampler: str = typer.Option("ddpm", help="ddpm | ddim, comma-separated for both"),
    metric: Optional[str] = typer.Option(None, help="fid, kid, fd_<dataset>, color_fd, color_mean_shift (comma-separated; default fd_<dataset>)"),
    num_samples: int = typer.Option(500, "--num-samples", min=2),
    seed: int = typer.Option(0),
    eta: float = typer.Option(0.0, help="DDIM eta"),
    variance: str = typer.Option("auto", help="DDPM variance: auto | fixed_small | fixed_large | learned_range"),
    batch_size: int = typer.Option(64, min=1),
    num_ref: Optional[int] = typer.Option(None, help="reference images (default: the whole train split)"),
    actors: int = typer.Option(1, "--actors", min=0, help="Ray evaluation actors (0: in this process)"),
    gpus_per_actor: float = typer.Option(0.0, "--gpus-per-actor", min=0),
    ray_address: Optional[str] = typer.Option(None, envvar="SNRLAB_RAY_ADDRESS", help="join this Ray cluster"),
    data_dir: Optional[Path] = typer.Option(None, help="weights/stats cache (default $SNRLAB_DATA_DIR or ~/.cache/snrlab)"),
    artifacts: Optional[Path] = typer.Option(None, help="also write the paper's analyses (PNG + JSON) here"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per (T, sampler, metric) row"),
) -> None:
    """Sample from CHECKPOINT's EMA model at each T and score it; one row per (T, sampler, metric)."""
    from evaluator.api import evaluate
    from evaluator.weights import InceptionWeightsMissing

    try:
        T = [int(t) for t in _csv(steps)]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {steps!r}", param_hint="--steps") from None
    try:
        rows = evaluate(checkpoint, steps=T, samplers=_csv(sampler), metrics=_csv(metric) if metric else None,
                        num_samples=num_samples, seed=seed, num_actors=actors, num_gpus_per_actor=gpus_per_actor,
                        data_dir=data_dir, batch_size=batch_size, eta=eta, variance=variance, num_ref=num_ref,
                        ray_address=ray_address)
    except (ValueError, FileNotFoundError, InceptionWeightsMissing) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    for r in rows:
        if as_json:
            typer.echo(json.dumps(r))
        else:
            typer.echo(f"T={r['T']:<5} {r['sampler']:<5} {r['metric']:<17} {r['value']:>12.5g}  "
                       f"num_gen={r['num_gen']}  {r['seconds']:.1f}s")
    if artifacts is not None:
        from evaluator.analysis import run_analyses

        run_analyses(checkpoint, artifacts, steps=T, sampler=_csv(sampler)[0], seed=seed)
        typer.echo(f"analyses written to {artifacts}", err=True)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
