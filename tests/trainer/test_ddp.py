"""Two DDP workers (gloo on CPU) follow the same loss trajectory as one worker with the same
global batch: every rank draws the global batch of a step and trains on its slice."""
from trainer.config import TrainConfig
from trainer.metrics_log import read_metrics
from trainer.run import train


def test_two_workers_match_one_worker(ray_session, tmp_path):
    cfg = TrainConfig(steps=30, batch_size=16, log_every=5, checkpoint_every=30, lr=1e-3, weighting="debias")
    one = train(cfg, storage_path=tmp_path, name="one", num_workers=1)
    two = train(cfg, storage_path=tmp_path, name="two", num_workers=2)
    a, b = read_metrics(one.run_dir), read_metrics(two.run_dir)
    assert [m["step"] for m in a] == [m["step"] for m in b] == [5, 10, 15, 20, 25, 30]
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) <= 1e-3 * abs(x["loss"]), (x, y)
        assert abs(x["mse_q3"] - y["mse_q3"]) <= 1e-3 * abs(x["mse_q3"]) + 1e-6


WORKER = '''
import sys, torch, torch.distributed as dist
from trainer.config import TrainConfig
from trainer.engine import build_state, train_step
rank, world, rdzv, cfg_path, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method="file://" + rdzv, rank=rank, world_size=world)
cfg = TrainConfig.model_validate_json(open(cfg_path).read())
state = build_state(cfg, rank=rank, world_size=world, wrap=torch.nn.parallel.DistributedDataParallel)
t = [train_step(state, step)["t"] for step in range(cfg.steps)]
torch.save({"t": t, "history": state.loss.history.state_dict(), "logvar": state.loss.logvar_table()}, out)
dist.destroy_process_group()
'''


def test_loss_aware_history_and_learned_logvar_are_the_same_on_every_ddp_rank(tmp_path):
    """Two gloo ranks (plain torch.distributed, no Ray): every rank records the whole global batch's
    losses, so the histories, the drawn t and u agree across ranks and with one worker."""
    import subprocess
    import sys
    from pathlib import Path

    import torch

    import trainer.engine
    from trainer.engine import build_state, train_step

    cfg = TrainConfig(steps=8, batch_size=16, lr=1e-3, weighting="debias", num_timesteps=20, t_sampling="loss_aware",
                      t_sampling_params={"history_per_term": 2}, learned_weighting=True)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    (tmp_path / "worker.py").write_text(WORKER)
    root = Path(trainer.engine.__file__).resolve().parents[1]  # the checkout under test
    env = {**__import__("os").environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(r), "2", str(tmp_path / "rdzv"),
                               str(tmp_path / "cfg.json"), str(tmp_path / f"rank{r}.pt")], env=env) for r in (0, 1)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for key in ("losses", "counts"):
        assert torch.equal(ranks[0]["history"][key], ranks[1]["history"][key])
    assert torch.equal(ranks[0]["logvar"], ranks[1]["logvar"])
    assert ranks[0]["history"]["counts"].min() == 2  # warmed up: the last steps drew from the history

    one = build_state(cfg)
    one_t = [train_step(one, step)["t"] for step in range(cfg.steps)]
    assert all(torch.equal(torch.cat([ranks[0]["t"][s], ranks[1]["t"][s]]), one_t[s]) for s in range(cfg.steps))
    torch.testing.assert_close(ranks[0]["history"]["losses"], one.loss.history.losses, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(ranks[0]["logvar"], one.loss.logvar_table(), rtol=1e-3, atol=1e-5)
