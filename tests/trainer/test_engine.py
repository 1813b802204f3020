"""The plain-PyTorch engine: learning, determinism, DDP slicing, checkpoint round trip."""
import json

import torch
from diffusers import UNet2DModel

from trainer.checkpoint import (
    load_model,
    load_training_state,
    read_config,
    save_checkpoint,
)
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


def test_uniform_and_importance_draw_the_batches_they_always_drew():
    # recorded before the t-sampling registry: the same seed still gives the same t
    expected = {"uniform": [951, 298, 342, 634, 260, 802, 707, 388, 582, 13, 910, 301, 260, 971, 432, 644],
                "importance": [890, 756, 814, 861, 799, 862, 822, 951, 967, 991, 875, 737, 949, 194, 995, 995]}
    for t_sampling, t_expected in expected.items():
        state = build_state(TrainConfig(weighting="debias", t_sampling=t_sampling, batch_size=16, seed=3))
        assert batch_for_step(state, 7)[2].tolist() == t_expected


def _assert_same_loss_state(a, b):
    ha, hb = a.loss.history.state_dict(), b.loss.history.state_dict()
    assert torch.equal(ha["losses"], hb["losses"]) and torch.equal(ha["counts"], hb["counts"])
    torch.testing.assert_close(a.loss.logvar_table(), b.loss.logvar_table(), rtol=0, atol=0)


def test_loss_aware_history_and_learned_logvar_survive_a_checkpoint(tmp_path):
    import pytest

    from trainer.checkpoint import read_loss_state
    from trainer.effective import learned_weighting

    cfg = TrainConfig(**{**CFG, "steps": 12, "weighting": "debias", "num_timesteps": 20, "t_sampling": "loss_aware",
                         "t_sampling_params": {"history_per_term": 2}, "learned_weighting": True})
    straight = build_state(cfg)
    straight_t = [train_step(straight, step)["t"] for step in range(12)]

    first = build_state(cfg)
    for step in range(6):
        train_step(first, step)
    assert first.loss.history.warmed_up() and (first.loss.probs != 1 / 20).any()  # later batches depend on the history
    assert first.loss.logvar_table().abs().max() > 0  # u has been trained
    save_checkpoint(tmp_path, cfg=cfg, model=first.raw, ema=first.ema, optimizer=first.optimizer, step=6,
                    loss_state=first.loss.state_dict())
    assert set(read_loss_state(tmp_path)) == {"history", "logvar"}

    resumed = build_state(cfg)
    assert load_training_state(tmp_path, model=resumed.raw, ema=resumed.ema, optimizer=resumed.optimizer, loss=resumed.loss) == 6
    _assert_same_loss_state(resumed, first)
    resumed_t = [train_step(resumed, step)["t"] for step in range(6, 12)]
    assert all(torch.equal(a, b) for a, b in zip(resumed_t, straight_t[6:]))
    torch.testing.assert_close(_params(resumed.raw), _params(straight.raw))
    _assert_same_loss_state(resumed, straight)

    # without its loss state a resumed run would draw other t: the state is what makes the replay exact
    forgetful = build_state(cfg)
    load_training_state(tmp_path, model=forgetful.raw, ema=forgetful.ema, optimizer=forgetful.optimizer)
    assert not torch.equal(batch_for_step(forgetful, 6)[2], straight_t[6])
    save_checkpoint(tmp_path / "bare", cfg=cfg, model=first.raw, ema=first.ema, optimizer=first.optimizer, step=6)
    with pytest.raises(ValueError, match="lacks history, logvar"):
        load_training_state(tmp_path / "bare", model=forgetful.raw, ema=forgetful.ema, optimizer=forgetful.optimizer,
                            loss=forgetful.loss)

    # the evaluator's view is unchanged: unet_ema is a plain diffusers UNet, u lives beside it
    model, loaded_cfg = load_model(tmp_path)
    assert loaded_cfg == cfg and isinstance(UNet2DModel.from_pretrained(tmp_path / "unet_ema"), UNet2DModel)
    torch.testing.assert_close(_params(model), _params(first.ema))
    learned = learned_weighting(tmp_path)
    torch.testing.assert_close(torch.from_numpy(learned.weight), first.loss.learned_weights())
    torch.testing.assert_close(torch.from_numpy(learned.logvar), first.loss.logvar_table())


def test_the_learned_log_variance_is_trained_by_the_same_optimizer():
    state = build_state(TrainConfig(**{**CFG, "learned_weighting": True, "weight_decay": 0.01}))
    groups = state.optimizer.param_groups
    assert len(groups) == 2 and groups[1]["weight_decay"] == 0.0
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in state.loss.logvar.parameters()}
    terms = train_step(state, 0)
    assert state.loss.logvar.bias.item() != 0 and torch.isfinite(terms["loss"]).all()
    assert len(build_state(TrainConfig(**CFG)).optimizer.param_groups) == 1  # unchanged without it
