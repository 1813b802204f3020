"""`snrlab eval`: score a checkpoint at several step counts T (and write the paper's analyses);
`snrlab rescore`: score stored features again. Every evaluation default comes from EvalConfig:
an option left out is left out of the config."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _config(values: dict):
    """EvalConfig from the options that were given; a bad value exits 2 with one line."""
    from pydantic import ValidationError

    from evaluator.config import EvalConfig

    try:
        return EvalConfig.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
                         for err in e.errors())
        typer.echo(f"error: {msgs}", err=True)
        raise typer.Exit(2) from None


def _echo_rows(rows: list[dict], as_json: bool) -> None:
    for r in rows:
        if as_json:
            typer.echo(json.dumps(r))
        else:
            floor = "" if r["floor"] is None else f"  floor={r['floor']:.5g}"
            typer.echo(f"T={r['T']:<5} {r['sampler']:<5} {r['metric']:<17} {r['value']:>12.5g}{floor}  "
                       f"num_gen={r['num_gen']}  {r['seconds']:.1f}s")


def eval_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="trainer checkpoint directory (unet_ema/, config.json)"),
    steps: str = typer.Option(..., help="comma-separated sampling step counts T, e.g. 2,5,10,20,50,100"),
    metric: str = typer.Option(..., help="comma-separated evaluator.metrics names: fid, kid, fd_<dataset>, cs_<dataset>, "
                                         "color_fd, color_mean_shift, and fid_inf, fd_<dataset>_inf, color_fd_inf"),
    sampler: Optional[str] = typer.Option(None, help="ddpm | ddim, comma-separated for both"),
    num_samples: Optional[int] = typer.Option(None, "--num-samples"),
    seed: Optional[int] = typer.Option(None),
    eta: Optional[float] = typer.Option(None, help="DDIM eta"),
    variance: Optional[str] = typer.Option(None, help="DDPM variance: auto | fixed_small | fixed_large | learned_range"),
    spacing: Optional[str] = typer.Option(None, help="timestep spacing: linspace | leading | trailing"),
    batch_size: Optional[int] = typer.Option(None),
    num_ref: Optional[int] = typer.Option(None, help="reference images (default: the whole reference split)"),
    ref_split: Optional[str] = typer.Option(None, help="train | test"),
    shard_size: Optional[int] = typer.Option(None, help="samples per actor job (default: num_samples / actors)"),
    analysis_images: Optional[int] = typer.Option(None, help="--artifacts: images per grid"),
    analysis_stride: Optional[int] = typer.Option(None, help="--artifacts: timestep stride of MSE-vs-t"),
    actors: int = typer.Option(1, "--actors", min=0, help="Ray evaluation actors (0: in this process)"),
    gpus_per_actor: float = typer.Option(0.0, "--gpus-per-actor", min=0),
    ray_address: Optional[str] = typer.Option(None, envvar="SNRLAB_RAY_ADDRESS", help="join this Ray cluster"),
    data_dir: Optional[Path] = typer.Option(None, help="weights/stats cache (default $SNRLAB_DATA_DIR or ~/.cache/snrlab)"),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="keep each cell's features in OUT_DIR/features (for rescore)"),
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
    cfg = _config(dict(steps=T, metrics=_csv(metric), samplers=_csv(sampler) if sampler else None,
                       num_samples=num_samples, seed=seed, eta=eta, variance=variance, spacing=spacing,
                       batch_size=batch_size, num_ref=num_ref, ref_split=ref_split, shard_size=shard_size,
                       analysis_images=analysis_images, analysis_stride=analysis_stride))
    try:
        rows = evaluate(checkpoint, cfg, num_actors=actors, num_gpus_per_actor=gpus_per_actor, data_dir=data_dir,
                        ray_address=ray_address, out_dir=out_dir)
    except (ValueError, FileNotFoundError, InceptionWeightsMissing) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    _echo_rows(rows, as_json)
    if artifacts is not None:
        from evaluator.analysis import run_analyses

        run_analyses(checkpoint, artifacts, cfg)
        typer.echo(f"analyses written to {artifacts}", err=True)


def rescore_command(
    features: Path = typer.Option(..., "--features", help="a features folder written by eval --out-dir (OUT_DIR/features)"),
    metric: str = typer.Option(..., help="comma-separated metric names (their extractor's features must be stored)"),
    data_dir: Optional[Path] = typer.Option(None, help="weights/stats cache (default $SNRLAB_DATA_DIR or ~/.cache/snrlab)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per row"),
) -> None:
    """Score stored features again (no sampling); rows as `snrlab eval` prints them."""
    from evaluator.api import rescore
    from evaluator.weights import InceptionWeightsMissing

    try:
        rows = rescore(features, _csv(metric), data_dir=data_dir)
    except (ValueError, FileNotFoundError, InceptionWeightsMissing) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    _echo_rows(rows, as_json)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("rescore-features")(rescore_command)
