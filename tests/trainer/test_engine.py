"""The plain-PyTorch engine: learning, determinism, DDP slicing, checkpoint round trip."""
import json

import torch
from diffusers import UNet2DModel

from trainer.checkpoint import load_model, load_training_state, read_config, save_checkpoint
from trainer.config import TrainConfig
from trainer.engine import MetricsWindow, batch_for_step, build_state, train_step

CFG = dict(steps=200, batch_size=16, lr=1e-3, log_every=50)


def _params(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_200_steps_on_digits_lower_the_loss():
    state = build_state(TrainConfig(**CFG))
    window, losses = MetricsWindow(1000), []
    for step in range(200):
        window.add(train_step(state, step))
        if (step + 1) % 50 == 0:
            losses.append(window.flush(step + 1, 16))
    first, last = losses[0], losses[-1]
    assert last["loss"] < 0.6 * first["loss"], losses
    assert {f"mse_q{q}" for q in range(4)} <= set(last)
    assert last["mse_q0"] > last["mse_q3"]  # eps is hardest to predict at small t


def test_workers_slice_the_same_global_batch():
    cfg = TrainConfig(**CFG)
    one = build_state(cfg)
    halves = [build_state(cfg, rank=r, world_size=2, data=one.data) for r in (0, 1)]
    full = batch_for_step(one, 7)
    parts = [batch_for_step(h, 7) for h in halves]
    for i in (0, 2, 3):  # x0, t, noise
        torch.testing.assert_close(torch.cat([p[i] for p in parts]), full[i])
    assert not torch.equal(batch_for_step(one, 8)[3], full[3])


def test_checkpoint_round_trip_and_exact_resume(tmp_path):
    cfg = TrainConfig(**{**CFG, "weighting": "debias"})
    straight = build_state(cfg)
    for step in range(6):
        train_step(straight, step)

    first = build_state(cfg)
    for step in range(3):
        train_step(first, step)
    save_checkpoint(tmp_path, cfg=cfg, model=first.raw, ema=first.ema, optimizer=first.optimizer, step=3)
    resumed = build_state(cfg)
    assert load_training_state(tmp_path, model=resumed.raw, ema=resumed.ema, optimizer=resumed.optimizer) == 3
    torch.testing.assert_close(_params(resumed.raw), _params(first.raw))
    torch.testing.assert_close(_params(resumed.ema), _params(first.ema))
    for step in range(3, 6):
        train_step(resumed, step)
    torch.testing.assert_close(_params(resumed.raw), _params(straight.raw))
    torch.testing.assert_close(_params(resumed.ema), _params(straight.ema))

    # the layout diffusers and our evaluator load
    model, loaded_cfg = load_model(tmp_path)
    assert loaded_cfg == cfg and read_config(tmp_path)[1] == 3
    torch.testing.assert_close(_params(model), _params(first.ema))
    assert isinstance(UNet2DModel.from_pretrained(tmp_path / "unet_ema"), UNet2DModel)
    prov = json.loads((tmp_path / "config.json").read_text())["provenance"]
    assert prov["config_hash"] == cfg.config_hash() and prov["torch"] == torch.__version__


def test_ema_warmup_tracks_early_weights():
    state = build_state(TrainConfig(**{**CFG, "ema": 0.9999}))
    train_step(state, 0)  # decay min(0.9999, 1/10) = 0.1: EMA moves 90% of the way
    moved = (_params(state.ema) - _params(state.raw)).abs().max()
    assert moved < 1e-3


def test_class_conditional_hybrid_training_step_runs():
    state = build_state(TrainConfig(**{**CFG, "class_conditional": True, "learn_sigma": True, "target": "v"}))
    terms = train_step(state, 0)
    assert state.raw.config.num_class_embeds == 10 and state.raw.config.out_channels == 2
    assert torch.isfinite(terms["vb"]).all()


def test_class_conditional_needs_labels():
    import pytest

    with pytest.raises(ValueError, match="has no labels"):
        build_state(TrainConfig(**{**CFG, "class_conditional": True}), data=_unlabelled())


def _unlabelled():
    from trainer.data import ImageDataset

    return ImageDataset("folder", torch.zeros(4, 3, 16, 16), None, None)


def test_compile_is_a_speed_knob_outside_the_config_hash_and_cpu_stays_plain():
    cfg = TrainConfig(**CFG)
    assert TrainConfig(**CFG, compile=True).config_hash() == cfg.config_hash()
    state = build_state(cfg)  # CPU: contiguous (NCHW) model and batches, noise from the CPU generator
    assert not state.channels_last and state.noise_generator is None
    assert all(p.is_contiguous() for p in state.raw.parameters())
    x0, _, _, noise = batch_for_step(state, 0)
    assert x0.is_contiguous() and noise.is_contiguous()
