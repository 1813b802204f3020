"""Checkpoint directory layout (diffusers-loadable):

    DIR/unet_ema/          UNet2DModel.save_pretrained of the EMA weights (what samplers load)
    DIR/unet/              the raw (non-EMA) weights, same format
    DIR/training_state.pt  optimizer, step, RNG states and, when the loss has state, "loss": the
                           loss_aware sampler's history and the learned log-variance u (EDM2)
    DIR/config.json        the resolved TrainConfig, plus provenance
"""
from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import torch
from diffusers import UNet2DModel

from trainer.config import TrainConfig

CODE_VERSION = "0.1.0"


def provenance(cfg: TrainConfig) -> dict:
    import diffusers
    import ray

    return {
        "config_hash": cfg.config_hash(),
        "code_version": CODE_VERSION,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "ray": ray.__version__,
        "python": platform.python_version(),
    }


def save_checkpoint(directory: str | Path, *, cfg: TrainConfig, model, ema, optimizer, step: int, metrics: dict | None = None,
                    loss_state: dict | None = None) -> Path:
    """loss_state: WeightedLoss.state_dict() (omitted from the file when empty)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ema.save_pretrained(d / "unet_ema")
    model.save_pretrained(d / "unet")
    state = {"step": step, "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(), "metrics": metrics or {}}
    if loss_state:
        state["loss"] = loss_state
    torch.save(state, d / "training_state.pt")
    (d / "config.json").write_text(
        json.dumps({"train": cfg.model_dump(mode="json"), "step": step, "provenance": provenance(cfg)}, indent=2)
    )
    return d


SNAPSHOTS_DIR = "snapshots"


def snapshot_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / SNAPSHOTS_DIR / f"step_{step:08d}"


def save_snapshot(run_dir: str | Path, *, cfg: TrainConfig, ema, step: int) -> Path:
    """The EMA weights at `step` plus config.json: all an evaluator needs (load_model works on
    it). Written to a temporary name and renamed, so a watcher never sees half a snapshot."""
    final = snapshot_dir(run_dir, step)
    if final.exists():
        return final
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ema.save_pretrained(tmp / "unet_ema")
    (tmp / "config.json").write_text(
        json.dumps({"train": cfg.model_dump(mode="json"), "step": step, "provenance": provenance(cfg)}, indent=2)
    )
    os.replace(tmp, final)
    return final


def list_snapshots(run_dir: str | Path) -> dict[int, Path]:
    """{step: directory} of the complete snapshots of a run."""
    root = Path(run_dir) / SNAPSHOTS_DIR
    if not root.is_dir():
        return {}
    return {int(p.name.removeprefix("step_")): p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_")}


def load_training_state(directory: str | Path, *, model, ema, optimizer, loss=None) -> int:
    """Load weights, EMA, optimizer, RNG and (given the run's WeightedLoss) the loss state into the
    given objects; returns the step reached. A loss with state and a checkpoint without it is an error."""
    d = Path(directory)
    model.load_state_dict(UNet2DModel.from_pretrained(d / "unet", low_cpu_mem_usage=False).state_dict())
    ema.load_state_dict(UNet2DModel.from_pretrained(d / "unet_ema", low_cpu_mem_usage=False).state_dict())
    state = torch.load(d / "training_state.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if loss is not None and loss.state_dict():
        loss.load_state_dict(state.get("loss", {}))
    return int(state["step"])


def read_loss_state(directory: str | Path) -> dict:
    """The loss state a checkpoint holds ({} when its loss had none): {"history": {"losses", "counts"},
    "logvar": u's state_dict}."""
    state = torch.load(Path(directory) / "training_state.pt", map_location="cpu", weights_only=False)
    return state.get("loss", {})


def read_config(directory: str | Path) -> tuple[TrainConfig, int]:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(directory)!r} is not a snrlab checkpoint (no config.json)")
    blob = json.loads(path.read_text())
    return TrainConfig.model_validate(blob["train"]), int(blob["step"])


def load_model(directory: str | Path, ema: bool = True) -> tuple[UNet2DModel, TrainConfig]:
    """The (EMA) UNet in eval mode on CPU, and the config it was trained with."""
    cfg, _ = read_config(directory)
    model = UNet2DModel.from_pretrained(Path(directory) / ("unet_ema" if ema else "unet"), low_cpu_mem_usage=False)
    return model.eval(), cfg
