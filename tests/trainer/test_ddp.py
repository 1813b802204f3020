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
