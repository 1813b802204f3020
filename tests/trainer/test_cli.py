"""`snrlab train` as a user runs it: real Ray, a diffusers-loadable checkpoint, clear errors."""
from diffusers import UNet2DModel
from typer.testing import CliRunner

from service.client.cli import app

runner = CliRunner()


def test_train_writes_a_diffusers_checkpoint(ray_session, tmp_path):
    out = tmp_path / "ckpt"
    res = runner.invoke(app, ["train", "--dataset", "digits", "--weighting", "min_snr", "--param", "gamma=1",
                              "--steps", "20", "--batch-size", "16", "--checkpoint-every", "10",
                              "--out", str(out), "--storage", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert str(out) in res.output and "done: step 20" in res.output
    assert UNet2DModel.from_pretrained(out / "unet_ema").config.sample_size == 16
    assert '"weighting_params": {\n      "gamma": 1.0' in (out / "config.json").read_text()


def test_bad_input_is_a_clear_error_before_ray_starts(tmp_path):
    res = runner.invoke(app, ["train", "--weighting", "snr_max"])
    assert res.exit_code == 2 and "valid weightings: constant, debias" in res.output
    res = runner.invoke(app, ["train", "--weighting", "p2", "--param", "beta=1"])
    assert res.exit_code == 2 and "valid parameters: k, gamma" in res.output
    res = runner.invoke(app, ["train", "--param", "gamma"])
    assert res.exit_code == 2 and "NAME=VALUE" in res.output
    res = runner.invoke(app, ["train", "--dataset", "folder", "--data-path", str(tmp_path / "none"), "--storage", str(tmp_path)])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_bad_t_sampling_input_is_a_clear_error():
    res = runner.invoke(app, ["train", "--t-sampling", "edm"])
    assert res.exit_code == 2 and "valid: uniform, importance, lognormal, logit_normal, loss_aware" in res.output
    res = runner.invoke(app, ["train", "--t-sampling", "lognormal", "--t-param", "P_mean=0"])
    assert res.exit_code == 2 and "valid parameters: p_mean, p_std" in res.output
    res = runner.invoke(app, ["train", "--t-param", "p_std"])
    assert res.exit_code == 2 and "NAME=VALUE" in res.output
