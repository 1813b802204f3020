"""Intermediate snapshots (evaluation.at_steps): the EMA weights at a step, loadable on their own."""
from __future__ import annotations

import torch

from trainer.checkpoint import (
    list_snapshots,
    load_model,
    read_config,
    save_snapshot,
    snapshot_dir,
)
from trainer.config import TrainConfig
from trainer.models import build_unet


def test_snapshot_is_a_loadable_checkpoint_written_once(tmp_path):
    cfg = TrainConfig(preset="tiny", steps=100, snapshot_steps=[40])
    ema = build_unet("tiny", in_channels=1, sample_size=16)
    assert list_snapshots(tmp_path) == {}
    path = save_snapshot(tmp_path, cfg=cfg, ema=ema, step=40)
    assert path == snapshot_dir(tmp_path, 40) and list_snapshots(tmp_path) == {40: path}
    model, loaded_cfg = load_model(path)
    assert loaded_cfg == cfg and read_config(path)[1] == 40
    for a, b in zip(model.state_dict().values(), ema.state_dict().values()):
        assert torch.equal(a, b)
    # a replayed step (resume from an earlier checkpoint) keeps the first snapshot
    with torch.no_grad():
        next(ema.parameters()).add_(1.0)
    save_snapshot(tmp_path, cfg=cfg, ema=ema, step=40)
    assert torch.equal(next(load_model(path)[0].parameters()), next(model.parameters()))
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "snapshots").iterdir())


def test_snapshot_steps_do_not_change_the_config_hash():
    assert TrainConfig(snapshot_steps=[10, 20]).config_hash() == TrainConfig().config_hash()
