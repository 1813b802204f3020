"""Sampling throughput: evaluator.sampling's ancestral DDPM against diffusers' DDPMPipeline on the
same UNet, the same T (linspace respacing) and the same variance (fixed_small).

    python benchmarks/sampling_throughput.py [--steps 10,50] [--num 64] [--repeats 3] [--threads 1]

Runs alternate (ours, pipeline, ours, ...) so load changes hit both; reports the median images/s
of each and their ratio (target >= 1.0). Both sides make exactly T UNet calls per batch, so on a
real UNet the ratio measures the sampler loop's overhead on top of the network. `--null-unet`
swaps the UNet for a stub (out = x / 2) to show that overhead alone. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch


def ddpm_pipeline_images(unet, steps: int, num: int, seed: int = 0, batch_size: int = 64,
                         variance: str = "fixed_small") -> np.ndarray:
    """diffusers' DDPMPipeline on the same UNet, linspace respacing (the benchmark baseline)."""
    from diffusers import DDPMPipeline, DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, timestep_spacing="linspace", variance_type=variance)
    pipe = DDPMPipeline(unet=unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(seed)
    out = [pipe(batch_size=min(batch_size, num - lo), generator=g, num_inference_steps=steps, output_type="np").images
           for lo in range(0, num, batch_size)]
    return np.concatenate(out)


class NullUNet(torch.nn.Module):
    """Same config and call signature as the wrapped UNet2DModel; returns x / 2."""

    def __init__(self, unet):
        super().__init__()
        self.config, self.anchor = unet.config, torch.nn.Parameter(torch.zeros(()))

    @property
    def dtype(self):
        return torch.float32

    @property
    def device(self):
        return self.anchor.device

    def forward(self, x, t, class_labels=None, return_dict=True):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        return UNet2DOutput(sample=x / 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="10,50")
    ap.add_argument("--num", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    ap.add_argument("--null-unet", action="store_true", help="replace the UNet by a stub: loop overhead only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from evaluator.sampling import Denoiser, sample, to_uint8
    from trainer.models import build_unet
    from trainer.schedules import get_schedule

    torch.manual_seed(0)
    unet = build_unet(args.preset, in_channels=args.channels, sample_size=args.size).eval()
    if args.null_unet:
        unet = NullUNet(unet)
    den = Denoiser(unet, get_schedule("linear", 1000).alphas_cumprod)

    def ours(T):
        x, _ = sample(den, T, sampler="ddpm", variance="fixed_small", num=args.num, batch_size=args.batch_size)
        return to_uint8(x)

    def pipeline(T):
        return ddpm_pipeline_images(unet, T, args.num, batch_size=args.batch_size, variance="fixed_small")

    rows = []
    for T in [int(t) for t in args.steps.split(",")]:
        ours(T), pipeline(T)  # warm-up
        times = {"ours": [], "diffusers_pipeline": []}
        for _ in range(args.repeats):
            for name, fn in (("ours", ours), ("diffusers_pipeline", pipeline)):
                t0 = time.perf_counter()
                fn(T)
                times[name].append(time.perf_counter() - t0)
        ips = {k: args.num / statistics.median(v) for k, v in times.items()}
        rows.append({"T": T, "num": args.num, "ours_images_per_s": round(ips["ours"], 2),
                     "pipeline_images_per_s": round(ips["diffusers_pipeline"], 2),
                     "ratio": round(ips["ours"] / ips["diffusers_pipeline"], 3)})
    print(json.dumps({"benchmark": "sampling_throughput", "preset": "null-unet" if args.null_unet else args.preset, "size": args.size,
                      "channels": args.channels, "threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
