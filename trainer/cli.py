"""`snrlab train`: one training run on Ray Train with a progress bar."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def _parse_params(items: list[str], hint: str = "--param") -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=hint)
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{key}: {value!r} is not a number", param_hint=hint) from None
    return out


def train_command(
    dataset: str = typer.Option("digits", help="digits | colors | folder | cifar10"),
    data_path: Optional[str] = typer.Option(None, "--data-path", help="image folder or CIFAR-10 batches"),
    weighting: str = typer.Option("constant", help="a name from trainer.weighting.WEIGHTINGS"),
    param: list[str] = typer.Option([], "--param", help="weighting parameter NAME=VALUE, repeatable (e.g. gamma=5)"),
    target: str = typer.Option("eps", help="eps | x0 | v"),
    schedule: str = typer.Option("linear", help="linear | cosine"),
    steps: int = typer.Option(300, min=1),
    batch_size: int = typer.Option(64, min=1),
    lr: float = typer.Option(2e-4),
    preset: str = typer.Option("tiny"),
    learn_sigma: bool = typer.Option(False, help="ADM hybrid loss (weighted MSE + VB)"),
    class_conditional: bool = typer.Option(False, help="condition the UNet on the dataset's labels"),
    t_sampling: str = typer.Option("uniform", help="a name from trainer.t_sampling.T_SAMPLINGS (uniform, importance, "
                                   "lognormal, logit_normal, loss_aware)"),
    t_param: list[str] = typer.Option([], "--t-param", help="t-sampling parameter NAME=VALUE, repeatable (e.g. p_std=1.2)"),
    learned_weighting: bool = typer.Option(False, help="EDM2 learned uncertainty u(t): per-t loss w/exp(u) * MSE + u"),
    normalize: bool = typer.Option(False, help="scale weights to mean 1 over t"),
    seed: int = typer.Option(0),
    checkpoint_every: int = typer.Option(100, min=1),
    workers: int = typer.Option(1, min=1, help="Ray Train workers (DDP)"),
    gpu: bool = typer.Option(False, help="one GPU per worker"),
    max_failures: int = typer.Option(2, min=0, help="worker restarts from the last checkpoint"),
    out: Optional[Path] = typer.Option(None, help="copy the final checkpoint here (diffusers-loadable)"),
    name: Optional[str] = typer.Option(None, help="run name; the same name resumes (default: from the config hash)"),
    storage: Optional[Path] = typer.Option(None, help="Ray Train storage_path (default: $SNRLAB_DATA_DIR/runs)"),
    ray_address: Optional[str] = typer.Option(None, envvar="SNRLAB_RAY_ADDRESS", help="join this Ray cluster"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show Ray's worker logs"),
) -> None:
    """Train a UNet on DATASET with a loss WEIGHTING; resumable, checkpointed, on Ray Train."""
    from trainer.config import TrainConfig
    from trainer.data import check_source
    from trainer.paths import data_dir
    from trainer.run import train

    try:
        cfg = TrainConfig(
            dataset={"name": dataset, "path": data_path},
            weighting=weighting, weighting_params=_parse_params(param), target=target, schedule=schedule,
            steps=steps, batch_size=batch_size, lr=lr, preset=preset, learn_sigma=learn_sigma, class_conditional=class_conditional,
            t_sampling=t_sampling, t_sampling_params=_parse_params(t_param, "--t-param"), learned_weighting=learned_weighting,
            normalize=normalize, seed=seed, checkpoint_every=checkpoint_every,
        )
    except ValidationError as e:
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            console.print(f"[red]error[/red] {'.'.join(map(str, err['loc'])) or 'config'}: {msg}", soft_wrap=True)
        raise typer.Exit(2)
    name = name or f"{dataset}-{weighting}-{cfg.config_hash()[:10]}"
    storage = storage or data_dir() / "runs"
    console.print(f"run [bold]{name}[/bold] under {storage} (config {cfg.config_hash()})")
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("train", total=steps, info="starting Ray")

        def on_metrics(m: dict) -> None:
            if m.get("event") == "start":
                progress.update(task, completed=m["step"], info=f"resumed at {m['step']}" if m["step"] else "training")
            else:
                progress.update(task, completed=m["step"],
                                info=f"loss {m['loss']:.4f} q0..q3 " + " ".join(f"{m.get(f'mse_q{q}', float('nan')):.3f}" for q in range(4))
                                + f" {m['images_per_s']:.0f} img/s")

        try:
            check_source(cfg.dataset)  # a missing folder answers before Ray starts
        except (ValueError, FileNotFoundError) as e:
            progress.stop()
            console.print(f"[red]error[/red] {e}", soft_wrap=True)
            raise typer.Exit(2)
        if not ray_address:
            from trainer.raysession import init_ray

            init_ray(log_to_driver=verbose)
        try:
            result = train(cfg, storage_path=storage, name=name, num_workers=workers, use_gpu=gpu,
                           max_failures=max_failures, on_metrics=on_metrics, ray_address=ray_address)
        except (ValueError, FileNotFoundError, ConnectionError) as e:  # ConnectionError: Ray unreachable at --ray-address
            console.print(f"[red]error[/red] {e}", soft_wrap=True)
            raise typer.Exit(2)
        progress.update(task, completed=steps)
    checkpoint = Path(result.checkpoint_path)
    if out:
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(checkpoint, out)
        checkpoint = out
    m = result.metrics
    console.print(f"done: step {m.get('step')}  loss {m.get('loss', float('nan')):.4f}"
                  + (f"  (resumed from step {result.resumed_from_step})" if result.resumed_from_step else ""))
    console.print(f"checkpoint: {checkpoint}  (UNet2DModel.from_pretrained('{checkpoint / 'unet_ema'}'))")
    print(checkpoint)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
