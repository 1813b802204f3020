"""Ray Train for real: metrics streaming, worker death mid-run, and re-launch resume."""
import json

import pytest

from trainer.config import TrainConfig
from trainer.metrics_log import METRICS_FILE, read_metrics
from trainer.run import train

CFG = dict(steps=40, batch_size=16, log_every=10, checkpoint_every=10, keep_checkpoints=2)


def _starts(run_dir):
    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    return [json.loads(x)["step"] for x in lines if '"event": "start"' in x]


def test_worker_killed_mid_run_restarts_from_last_checkpoint(ray_session, tmp_path):
    seen = []
    cfg = TrainConfig(**CFG, fail_at_step=25)
    result = train(cfg, storage_path=tmp_path, name="killed", max_failures=1, on_metrics=seen.append)
    run_dir = tmp_path / "killed"
    assert result.metrics["step"] == 40 and result.resumed_from_step == 20
    assert _starts(run_dir) == [0, 20]  # the worker process died at 25 and came back at 20
    assert (run_dir / ".failure_injected_at_25").exists()
    assert [m["step"] for m in read_metrics(run_dir)] == [10, 20, 30, 40]
    assert any(m.get("step") == 40 for m in seen)  # streamed to the driver while training
    assert len([p for p in run_dir.glob("checkpoint_*") if p.is_dir()]) == 2  # keep_checkpoints
    assert json.loads((run_dir / "result.json").read_text())["checkpoint_path"] == result.checkpoint_path


def test_relaunch_with_the_same_name_continues_from_the_last_checkpoint(ray_session, tmp_path):
    cfg = TrainConfig(**CFG, fail_at_step=25)
    with pytest.raises(Exception):  # no restarts allowed: the run fails
        train(cfg, storage_path=tmp_path, name="relaunched", max_failures=0)
    assert not (tmp_path / "relaunched" / "result.json").exists()
    result = train(cfg, storage_path=tmp_path, name="relaunched", max_failures=0)
    assert result.resumed_from_step == 20 and result.metrics["step"] == 40
    assert _starts(tmp_path / "relaunched") == [0, 20]
    # per-run accounting: what this training call held, on CPU in worker-hours
    use = result.usage
    assert (use["device"], use["num_workers"], use["gpus"], use["device_hours_unit"]) == ("cpu", 1, 0, "cpu-worker-hours")
    assert use["wall_s"] > 0 and use["device_hours"] == pytest.approx(use["wall_s"] / 3600, rel=1e-3)
    assert json.loads((tmp_path / "relaunched" / "result.json").read_text())["usage"] == use
    # a finished run is not trained again
    again = train(cfg, storage_path=tmp_path, name="relaunched")
    assert again.checkpoint_path == result.checkpoint_path and _starts(tmp_path / "relaunched") == [0, 20]
    assert again.usage == use


def test_a_killed_loss_aware_learned_run_replays_the_uninterrupted_one(ray_session, tmp_path):
    import torch

    from trainer.checkpoint import read_loss_state

    base = dict(CFG, steps=30, weighting="debias", num_timesteps=20, t_sampling="loss_aware",
                t_sampling_params={"history_per_term": 2}, learned_weighting=True)
    straight = train(TrainConfig(**base), storage_path=tmp_path, name="straight")
    killed = train(TrainConfig(**base, fail_at_step=15), storage_path=tmp_path, name="killed", max_failures=1)
    assert killed.resumed_from_step == 10 and _starts(tmp_path / "killed") == [0, 10]
    a, b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "killed")
    assert [m["step"] for m in a] == [m["step"] for m in b] == [10, 20, 30]
    assert [m["loss"] for m in b] == pytest.approx([m["loss"] for m in a], rel=1e-6)
    sa, sb = read_loss_state(straight.checkpoint_path), read_loss_state(killed.checkpoint_path)
    assert torch.equal(sa["history"]["counts"], sb["history"]["counts"])
    torch.testing.assert_close(sb["history"]["losses"], sa["history"]["losses"], rtol=1e-6, atol=0)
    torch.testing.assert_close(sb["logvar"]["weight"], sa["logvar"]["weight"], rtol=1e-6, atol=0)
