"""Sampling throughput: evaluator.sampling's ancestral DDPM against diffusers' DDPMPipeline on the
same UNet, the same T (linspace respacing) and the same variance (fixed_small).

    python benchmarks/sampling_throughput.py [--steps 10,50] [--num 64] [--repeats 5] [--threads 1] [--json PATH]
    python benchmarks/sampling_throughput.py --steps 2 --num 8 --repeats 1   # smallest, to prove it runs

Runs alternate, and which side goes first alternates each round (ours, pipeline / pipeline, ours),
so load changes on a shared machine hit both; reports the median images/s of each and their
ratio (target >= 1.0). Both sides make exactly T UNet calls per batch, so on a
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

from common import add_json_arg, now, row, write_json


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
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    ap.add_argument("--null-unet", action="store_true", help="replace the UNet by a stub: loop overhead only")
    add_json_arg(ap)
    args = ap.parse_args()
    started_at = now()
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
        cpu = {"ours": [], "diffusers_pipeline": []}  # process CPU time: less sensitive to other load
        for r in range(args.repeats):
            sides = (("ours", ours), ("diffusers_pipeline", pipeline))
            for name, fn in sides if r % 2 == 0 else sides[::-1]:
                t0, c0 = time.perf_counter(), time.process_time()
                fn(T)
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        ips = {k: args.num / statistics.median(v) for k, v in times.items()}
        cpu_ratio = statistics.median(cpu["diffusers_pipeline"]) / statistics.median(cpu["ours"])
        rows.append({"T": T, "num": args.num, "ours_images_per_s": round(ips["ours"], 2),
                     "pipeline_images_per_s": round(ips["diffusers_pipeline"], 2),
                     "ratio": round(ips["ours"] / ips["diffusers_pipeline"], 3), "cpu_time_ratio": round(cpu_ratio, 3)})
    preset = "null-unet" if args.null_unet else args.preset
    print(json.dumps({"benchmark": "sampling_throughput", "preset": preset, "size": args.size,
                      "channels": args.channels, "threads": args.threads, "rows": rows}, indent=2))
    what = "sampler loop only (stub UNet)" if args.null_unet else "ours vs diffusers DDPMPipeline"
    out = [row(f"sampling: {what}, T={r['T']}", r["ours_images_per_s"], r["pipeline_images_per_s"], unit="images/s",
               target=None if args.null_unet else "ratio >= 1.0",
               notes=f"{preset} UNet {args.channels}x{args.size}x{args.size}, {args.num} images, batch {args.batch_size}, "
                     f"{args.threads} thread(s), median of {args.repeats}; both make T UNet calls per batch; "
                     f"ratio on CPU time {r['cpu_time_ratio']:.3f}")
           for r in rows]
    write_json(args.json, "sampling_null_unet" if args.null_unet else "sampling", out, started_at=started_at,
               params=vars(args))


if __name__ == "__main__":
    main()
