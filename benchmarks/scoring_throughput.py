"""Scoring throughput: evaluator's in-memory clean-mode FID against clean-fid's folder path on the
same samples and the same Inception weights.

    python benchmarks/scoring_throughput.py [--num 32] [--dataset colors] [--threads 1] [--json PATH]
    python benchmarks/scoring_throughput.py --num 8 --repeats 1   # smallest, to prove it runs

- ours: uint8 samples -> clean resize in memory -> Inception -> Frechet distance against the
  cached reference statistics of (dataset, resolution, split, extractor, mode) (evaluator.metrics
  .reference_stats; computed once beforehand, as every later evaluation of any T or checkpoint
  reuses them). The cold-cache time (reference features included) is reported too.
- clean-fid: write the samples and the reference images as PNGs, then
  `cleanfid.fid.compute_fid(gen_dir, ref_dir, mode="clean", custom_feat_extractor=...)`.

Both sides use the same features; clean-fid takes the Frechet trace with scipy's sqrtm of the
2048x2048 product, ours with the equivalent symmetric-eigenvalue form (evaluator.metrics
.trace_sqrt_product), so the values agree to ~1e-6 relative rather than bit for bit.

Reports images/s (generated images scored per second), ratio = ours / clean-fid (target >= 2.0),
both FID values and their relative difference. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from common import add_json_arg, now, row, write_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--num", type=int, default=32, help="generated images (and reference images)")
    ap.add_argument("--dataset", default="colors")
    ap.add_argument("--steps", type=int, default=5, help="sampler steps for the generated images")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--stats-dir", default=None, help="reference-stats cache (default: a fresh temporary directory, "
                    "so the cold run is cold); the weights resolve from $SNRLAB_DATA_DIR as usual")
    add_json_arg(ap)
    args = ap.parse_args()
    started_at = now()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    from cleanfid import fid as cfid
    from PIL import Image

    from evaluator.features import InceptionExtractor
    from evaluator.metrics import fd_from_feats, reference_stats
    from evaluator.sampling import Denoiser, sample, to_uint8
    from trainer.data import load_dataset
    from trainer.models import build_unet
    from trainer.schedules import get_schedule

    tmp = Path(tempfile.mkdtemp(prefix="snrlab-scoring-"))
    data_dir = args.stats_dir or tmp / "data"
    spec = {"name": args.dataset, "split": "train"}
    ref_data = load_dataset(spec)
    torch.manual_seed(0)
    unet = build_unet("tiny", in_channels=ref_data.channels, sample_size=ref_data.resolution).eval()
    gen = to_uint8(sample(Denoiser(unet, get_schedule("linear", 1000).alphas_cumprod), args.steps, num=args.num)[0])

    inception = InceptionExtractor("cpu")
    inception(gen[:2])  # warm-up (TorchScript profiling runs), for both sides

    # ours, cold: reference statistics computed (and cached) in the timed region
    t0 = time.perf_counter()
    ref = reference_stats(spec, inception.name, inception.fingerprint, inception, data_dir=data_dir, num_ref=args.num,
                          dataset=ref_data)
    ours_cold_value = fd_from_feats(inception(gen), ref.mu, ref.sigma)
    ours_cold = time.perf_counter() - t0

    def ours_warm():  # the cached reference statistics are reused
        r = reference_stats(spec, inception.name, inception.fingerprint, inception, data_dir=data_dir,
                            num_ref=args.num, dataset=ref_data)
        return fd_from_feats(inception(gen), r.mu, r.sigma)

    for name in ("gen", "ref"):
        (tmp / name).mkdir()

    def cleanfid_folder():  # write PNGs, read them back, score
        for name, imgs in (("gen", gen), ("ref", ref_data.uint8()[: args.num])):
            for i, im in enumerate(imgs):
                arr = im.permute(1, 2, 0).numpy()
                Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(tmp / name / f"{i:05d}.png")
        return float(cfid.compute_fid(str(tmp / "gen"), str(tmp / "ref"), mode="clean", custom_feat_extractor=inception.model,
                                      device=torch.device("cpu"), num_workers=0, batch_size=inception.batch_size,
                                      verbose=False))

    times, values = {"ours": [], "cleanfid": []}, {}
    for _ in range(args.repeats):  # alternate, so load changes on the shared machine hit both
        for name, fn in (("ours", ours_warm), ("cleanfid", cleanfid_folder)):
            t0 = time.perf_counter()
            values[name] = fn()
            times[name].append(time.perf_counter() - t0)
    ours, theirs = statistics.median(times["ours"]), statistics.median(times["cleanfid"])
    ours_value, theirs_value = values["ours"], values["cleanfid"]

    result = {
        "benchmark": "scoring_throughput", "dataset": args.dataset, "num_gen": args.num, "num_ref": args.num,
        "threads": args.threads, "repeats": args.repeats, "weights": str(inception.weights.path),
        "ours_seconds": round(ours, 2), "ours_images_per_s": round(args.num / ours, 2),
        "ours_cold_seconds": round(ours_cold, 2), "ours_cold_images_per_s": round(args.num / ours_cold, 2),
        "cleanfid_folder_seconds": round(theirs, 2), "cleanfid_folder_images_per_s": round(args.num / theirs, 2),
        "ratio": round(theirs / ours, 3), "ratio_cold": round(theirs / ours_cold, 3),
        "fid_ours": ours_value, "fid_ours_cold": ours_cold_value, "fid_cleanfid_folder": float(theirs_value),
        "relative_difference": abs(ours_value - theirs_value) / abs(theirs_value),
        "all_seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
    }
    print(json.dumps(result, indent=2))
    setup = f"{args.dataset}, {args.num} generated + {args.num} reference images, {args.threads} thread(s), median of {args.repeats}"
    rows = [
        row("scoring: in-memory FID vs clean-fid folder path (warm reference stats)", args.num / ours, args.num / theirs,
            unit="images/s", target="ratio >= 2.0",
            notes=f"{setup}; FID {ours_value:.6g} vs {theirs_value:.6g}; same Inception weights"),
        row("scoring: in-memory FID vs clean-fid folder path (cold: reference stats computed)", args.num / ours_cold,
            args.num / theirs, unit="images/s", notes="the first evaluation of a dataset; later ones reuse the cached statistics"),
        row("scoring: FID relative difference, in-memory vs clean-fid folder", result["relative_difference"], unit="",
            target="ours <= 1e-4", notes="equal values: same features; sqrtm vs symmetric eigenvalues for the trace"),
    ]
    write_json(args.json, "scoring", rows, started_at=started_at, params=vars(args), details=result)


if __name__ == "__main__":
    main()
