"""The paper's bias analyses as artifacts (PNG + the numbers as JSON).

- sample grids per step count T (Fig. 1), with each T's mean colour;
- one-step estimation (Fig. 3): x0_hat from a single network call on x_t = q_sample(x0, t, eps)
  built from real images, at t in {999, 950, 900, 750, 500, 250};
- MSE-vs-t (Fig. 4): MSE(network eps_hat, eps) beside "Initial" MSE(x_t, eps), and the t where
  the network is worse than doing nothing;
- amplified error (Eq. 7): per-t mean |x0 - x0_hat| against 1 / sqrt(SNR(t)).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from evaluator.config import EvalConfig
from evaluator.sampling import Denoiser, sample, to_uint8

ONE_STEP_TS = (999, 950, 900, 750, 500, 250)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_grid(images_uint8: torch.Tensor, nrow: int) -> np.ndarray:
    """uint8 [N, C, H, W] -> uint8 [H', W', 3] with 1-pixel white gutters."""
    from torchvision.utils import make_grid

    x = images_uint8 if images_uint8.shape[1] == 3 else images_uint8.expand(-1, 3, -1, -1)
    return make_grid(x, nrow=nrow, padding=1, pad_value=255).permute(1, 2, 0).numpy()


def _save_png(arr: np.ndarray, path: Path, scale: int = 4) -> None:
    from PIL import Image

    im = Image.fromarray(arr)
    im.resize((im.width * scale, im.height * scale), Image.NEAREST).save(path)


def _noised(model: Denoiser, x0: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
    abar = float(model.alphas_cumprod[t])
    return math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps  # Eq. 3


@torch.inference_mode()
def predict(model: Denoiser, x_t: torch.Tensor, t: int, labels=None):
    """(x0_hat, eps_hat) from one network call at timestep t (Eq. 6 for an eps model)."""
    tt = torch.full((len(x_t),), t, dtype=torch.long, device=model.device)
    out, _ = model.raw(x_t.to(model.device), tt, None if labels is None else labels.to(model.device))
    x0, eps = model.x0_eps(out.float().cpu(), x_t, float(model.alphas_cumprod[t]))
    return x0, eps


def sample_grids(model: Denoiser, steps: Sequence[int], out_dir: Path, *, sampler: str = "ddpm", num: int = 16,
                 seed: int = 0, **kw) -> dict:
    """One grid per T (same seeds, so rows differ only by T) and a stacked figure."""
    out_dir = Path(out_dir)
    nrow = int(math.ceil(math.sqrt(num)))
    rows, result = [], {}
    for T in steps:
        x, _ = sample(model, T, sampler=sampler, num=num, seed=seed, **kw)
        u8 = to_uint8(x)
        _save_png(image_grid(u8, nrow), out_dir / f"samples_T{T}.png")
        rows.append(u8)
        means = u8.double().mean(dim=(2, 3)) / 255
        result[str(T)] = {"file": f"samples_T{T}.png", "mean_color": means.mean(0).tolist(),
                          "std_of_image_means": means.std(0).tolist()}
    _save_png(image_grid(torch.cat(rows), num), out_dir / "samples_by_T.png", scale=3)
    return {"sampler": sampler, "num": num, "seed": seed, "per_T": result, "figure": "samples_by_T.png"}


def one_step_estimation(model: Denoiser, x0: torch.Tensor, out_dir: Path, *, ts: Sequence[int] = ONE_STEP_TS,
                        seed: int = 0, labels=None) -> dict:
    """Fig. 3: columns x0 | (x_t, x0_hat) per t; x0_hat is clipped to [-1, 1] for display only."""
    out_dir = Path(out_dir)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    tiles, per_t = [to_uint8(x0)], {}
    ref_means = x0.mean(dim=(2, 3))
    for t in ts:
        x_t = _noised(model, x0, t, eps)
        x0_hat, _ = predict(model, x_t, t, labels)
        tiles += [to_uint8(x_t.clamp(-1, 1)), to_uint8(x0_hat.clamp(-1, 1))]
        per_t[str(t)] = {
            "mse_x0": float(((x0_hat - x0) ** 2).mean()),
            "mean_abs_err_x0": float((x0_hat - x0).abs().mean()),
            # colour shift of the estimate: |mean(x0_hat) - mean(x0)| per image, averaged ([-1, 1] units)
            "color_shift": float((x0_hat.mean(dim=(2, 3)) - ref_means).abs().mean()),
            "inv_sqrt_snr": float(math.sqrt((1 - model.alphas_cumprod[t]) / model.alphas_cumprod[t])),
        }
    n = len(x0)
    grid = torch.stack(tiles, dim=1).reshape(-1, *x0.shape[1:])  # row per image: x0, x_t, x0_hat, ...
    _save_png(image_grid(grid, 1 + 2 * len(ts)), out_dir / "one_step_estimation.png")
    return {"ts": list(ts), "num_images": n, "columns": ["x0"] + [f"{k}_t{t}" for t in ts for k in ("x_t", "x0_hat")],
            "per_t": per_t, "figure": "one_step_estimation.png"}


def per_t_errors(model: Denoiser, x0: torch.Tensor, ts: Sequence[int], *, seed: int = 0, labels=None) -> dict:
    """For each t, with one fixed eps per image: MSE(eps_hat, eps) (network), MSE(x_t, eps)
    ("Initial"), mean |x0 - x0_hat| and 1 / sqrt(SNR(t))."""
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    out = {"t": [], "mse_model": [], "mse_initial": [], "x0_abs_err": [], "eps_abs_err": [], "inv_sqrt_snr": []}
    for t in ts:
        x_t = _noised(model, x0, t, eps)
        x0_hat, eps_hat = predict(model, x_t, t, labels)
        abar = float(model.alphas_cumprod[t])
        out["t"].append(int(t))
        out["mse_model"].append(float(((eps_hat - eps) ** 2).mean()))
        out["mse_initial"].append(float(((x_t - eps) ** 2).mean()))
        out["x0_abs_err"].append(float((x0 - x0_hat).abs().mean()))
        out["eps_abs_err"].append(float((eps - eps_hat).abs().mean()))
        out["inv_sqrt_snr"].append(math.sqrt((1 - abar) / abar))
    return out


def worse_ranges(ts: Sequence[int], worse: Sequence[bool]) -> list[list[int]]:
    """Maximal runs [t_first, t_last] of consecutive evaluated t where `worse` holds."""
    runs, start, prev = [], None, None
    for t, w in zip(ts, worse):
        if w and start is None:
            start = t
        if not w and start is not None:
            runs.append([start, prev])
            start = None
        prev = t
    if start is not None:
        runs.append([start, prev])
    return runs


def mse_vs_t(errors: dict, out_dir: Path) -> dict:
    """Fig. 4 from per_t_errors: both curves, and where the model is worse than Initial."""
    plt = _plt()
    ts, m, i = np.array(errors["t"]), np.array(errors["mse_model"]), np.array(errors["mse_initial"])
    worse = m > i
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, sel in ((axes[0], slice(None)), (axes[1], ts >= min(900, ts.max()))):
        ax.plot(ts[sel], i[sel], label="Initial: MSE(x_t, eps)", color="tab:green")
        ax.plot(ts[sel], m[sel], label="Model: MSE(eps_hat, eps)", color="tab:red")
        ax.set_xlabel("t"), ax.set_ylabel("MSE")
    axes[0].set_yscale("log"), axes[0].legend(), axes[1].set_title("large t")
    fig.tight_layout(), fig.savefig(Path(out_dir) / "mse_vs_t.png", dpi=100), plt.close(fig)
    return {"t": ts.tolist(), "mse_model": m.tolist(), "mse_initial": i.tolist(),
            "worse_than_initial_t": ts[worse].tolist(), "worse_than_initial_ranges": worse_ranges(ts.tolist(), worse.tolist()),
            "figure": "mse_vs_t.png"}


def amplified_error(errors: dict, out_dir: Path) -> dict:
    """Eq. 7: x0 - x0_hat = (eps_hat - eps) / sqrt(SNR(t)); plot mean |x0 - x0_hat| and the
    amplification 1/sqrt(SNR(t)) against t."""
    plt = _plt()
    ts, err, amp = np.array(errors["t"]), np.array(errors["x0_abs_err"]), np.array(errors["inv_sqrt_snr"])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(ts, err, color="tab:red", label="mean |x0 - x0_hat|")
    ax.set_xlabel("t"), ax.set_ylabel("mean |x0 - x0_hat|"), ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot(ts, amp, color="tab:blue", ls="--", label="1/sqrt(SNR(t))")
    ax2.set_ylabel("1/sqrt(SNR(t))"), ax2.set_yscale("log")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="lower right")
    fig.tight_layout(), fig.savefig(Path(out_dir) / "amplified_error.png", dpi=100)
    plt.close(fig)
    corr = float(np.corrcoef(np.log(err), np.log(amp))[0, 1]) if len(ts) > 2 else float("nan")
    return {"t": ts.tolist(), "x0_abs_err": err.tolist(), "eps_abs_err": errors["eps_abs_err"], "inv_sqrt_snr": amp.tolist(),
            "log_log_correlation": corr, "figure": "amplified_error.png"}


def run_analyses(checkpoint_dir: str | Path, out_dir: str | Path, cfg: EvalConfig, *, device: str = "cpu",
                 one_step_ts: Sequence[int] = ONE_STEP_TS) -> dict:
    """All four analyses for a checkpoint, as `cfg` says (steps, its first sampler with its
    eta/variance/spacing, analysis_images, analysis_stride, seed); writes PNGs and analyses.json
    into out_dir. One-step estimation uses the `one_step_ts` below the model's T (else T - 1)."""
    from evaluator.sampling import load_denoiser
    from trainer.data import load_dataset

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, train_cfg = load_denoiser(str(checkpoint_dir), device=device)
    data = load_dataset(train_cfg.dataset)
    x0 = data.images[: cfg.analysis_images]
    labels = data.labels[: cfg.analysis_images] if (model.num_classes is not None and data.labels is not None) else None
    T = model.num_timesteps
    ts = sorted(set(range(T - 1, -1, -cfg.analysis_stride)) | {T - 1, 0})
    errors = per_t_errors(model, x0, ts, seed=cfg.seed, labels=labels)
    sampler = cfg.samplers[0]
    result = {
        "checkpoint": str(checkpoint_dir), "dataset": train_cfg.dataset.name, "weighting": train_cfg.weighting,
        "target": train_cfg.target,
        "sample_grids": sample_grids(model, cfg.steps, out, sampler=sampler, num=cfg.analysis_images, seed=cfg.seed,
                                     batch_size=cfg.batch_size, eta=cfg.eta, variance=cfg.variance, spacing=cfg.spacing),
        "one_step_estimation": one_step_estimation(model, x0, out, ts=[t for t in one_step_ts if t < T] or [T - 1],
                                                   seed=cfg.seed, labels=labels),
        "mse_vs_t": mse_vs_t(errors, out),
        "amplified_error": amplified_error(errors, out),
    }
    (out / "analyses.json").write_text(json.dumps(result, indent=2))
    return result
