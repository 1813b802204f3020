"""The paper's analyses on a tiny random-init checkpoint: files, numbers, closed forms."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import tiny_unet, write_checkpoint

from evaluator import EvalConfig
from evaluator.analysis import per_t_errors, run_analyses, worse_ranges


def test_worse_ranges():
    ts = [0, 100, 200, 300, 400, 500]
    assert worse_ranges(ts, [False, True, True, False, True, True]) == [[100, 200], [400, 500]]
    assert worse_ranges(ts, [False] * 6) == []


def test_eq7_amplified_error_identity(make_denoiser):
    """For an eps model x0 - x0_hat = (eps_hat - eps) / sqrt(SNR(t)) (Eq. 7), so the per-t mean
    |x0 - x0_hat| is exactly the mean |eps - eps_hat| times 1/sqrt(SNR(t))."""
    den = make_denoiser()
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    e = per_t_errors(den, x0, [0, 250, 500, 999])
    np.testing.assert_allclose(e["x0_abs_err"], np.array(e["eps_abs_err"]) * np.array(e["inv_sqrt_snr"]), rtol=1e-4)
    assert e["inv_sqrt_snr"][-1] == pytest.approx(157.4, rel=1e-3)  # linear schedule, t = 999
    # "Initial": MSE(x_t, eps) -> ~0 at t = 999 (x_t is almost pure eps), large at t = 0
    assert e["mse_initial"][-1] < 1e-3 and e["mse_initial"][0] > 0.5


def test_run_analyses_writes_pngs_and_json(tmp_path):
    ck = write_checkpoint(tmp_path / "ck", dataset="digits", size=8)
    out = tmp_path / "art"
    cfg = EvalConfig(steps=[1, 2], metrics=["fd_digits"], analysis_images=4, analysis_stride=250)
    res = run_analyses(ck, out, cfg)
    for name in ["samples_T1.png", "samples_T2.png", "samples_by_T.png", "one_step_estimation.png", "mse_vs_t.png",
                 "amplified_error.png", "analyses.json"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    saved = json.loads((out / "analyses.json").read_text())
    assert saved["one_step_estimation"]["ts"] == [999, 950, 900, 750, 500, 250]
    assert set(saved["sample_grids"]["per_T"]) == {"1", "2"}
    m = saved["mse_vs_t"]
    assert m["t"] == [0, 249, 499, 749, 999] and len(m["mse_model"]) == 5
    assert set(m["worse_than_initial_t"]) == {t for t, a, b in zip(m["t"], m["mse_model"], m["mse_initial"]) if a > b}
    # a random network is worse than "do nothing" at large t, where x_t is almost eps
    assert 999 in m["worse_than_initial_t"]
    a = saved["amplified_error"]
    assert a["inv_sqrt_snr"] == sorted(a["inv_sqrt_snr"]) and math.isfinite(a["log_log_correlation"])
    assert res["dataset"] == "digits" and saved["sample_grids"]["num"] == 4


def test_one_step_ts_beyond_a_short_schedule_fall_back_to_its_last_t(tmp_path):
    """A 100-step model has none of t in {999, ..., 250}: the estimation runs at t = T - 1."""

    from trainer.checkpoint import save_checkpoint
    from trainer.config import TrainConfig

    unet = tiny_unet(1, 8)
    cfg = TrainConfig(dataset={"name": "digits", "resolution": 8}, num_timesteps=100)
    ck = save_checkpoint(tmp_path / "ck", cfg=cfg, model=unet, ema=unet, optimizer=torch.optim.SGD(unet.parameters(), lr=0.0), step=0)
    res = run_analyses(ck, tmp_path / "art", EvalConfig(steps=[1], metrics=["fd_digits"], analysis_images=2, analysis_stride=50))
    assert res["one_step_estimation"]["ts"] == [99] and res["mse_vs_t"]["t"] == [0, 49, 99]
