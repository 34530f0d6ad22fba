"""Harness overhead: images/s of `run_eval` on tiny_sdxl divided by images/s of a bare loop that
calls the same pipeline with the same batch size and the same inputs (no saving, no store, no
progress bar). Both sides exclude model loading and include one warm-up batch.

    .venv/bin/python -m di_star.bench.harness --images 96 --batch-size 8 --repeats 3

Target: ratio >= 0.95 (saving + store + progress bar cost <= 5%).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import evalsuite  # noqa: F401  (torchvision patch first)
import torch

from evalsuite.benchmarks import image_seed, load_benchmark
from evalsuite.generate import EvalRequest, generate_batch, run_eval
from evalsuite.models import resolve_model
from evalsuite.models.loading import load_pipeline, resolve_device


def bare_loop(pipe, spec, prompts, batch_size, device) -> float:
    """images/s of the pipeline alone, timed like the harness: including one warm-up batch
    (run_eval's first batch is generated twice, the first time untimed for latency)."""
    batches = [prompts[i:i + batch_size] for i in range(0, len(prompts), batch_size)]
    seeds = lambda b: [image_seed(p.index, 0) for p in b]  # noqa: E731
    t0 = time.perf_counter()
    generate_batch(pipe, spec, [p.text for p in batches[0]], seeds(batches[0]), device)
    for b in batches:
        generate_batch(pipe, spec, [p.text for p in b], seeds(b), device)
    return len(prompts) / (time.perf_counter() - t0)


def harness(model: str, weights: str, images: int, batch_size: int, device: str, out: Path) -> float:
    """images/s of `run_eval` (PNG writing, store, progress bar included), same batches."""
    t0 = time.perf_counter()
    run_eval(EvalRequest(model=model, bench="parti", limit=images, out=out, batch_size=batch_size,
                         device=device, weights=weights))
    return images / (time.perf_counter() - t0)


def compare(model: str = "tiny_sdxl", weights: str = "pretrained", images: int = 96,
            batch_size: int = 8, repeats: int = 3, device: str = "auto") -> dict:
    """Bare loop and harness, interleaved `repeats` times on the same loaded pipeline."""
    dev = resolve_device(device)
    spec = resolve_model(model, weights)
    pipe = load_pipeline(spec, dev)  # cached: run_eval reuses this very object
    prompts = list(load_benchmark("parti").prompts[:images])
    bare, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):  # interleave so drift in machine load hits both sides
            bare.append(bare_loop(pipe, spec, prompts, batch_size, dev))
            ours.append(harness(model, weights, images, batch_size, device, Path(tmp) / f"run{r}"))
    b, o = statistics.median(bare), statistics.median(ours)
    return {"device": str(dev), "model": model, "weights": weights, "images": images,
            "batch": batch_size, "threads": torch.get_num_threads(), "repeats": repeats,
            "bare_img_s": bare, "harness_img_s": ours, "bare_median_img_s": b,
            "harness_median_img_s": o, "ratio_of_medians": o / b,
            "ratio_per_pair": sorted(h / x for h, x in zip(ours, bare))}  # each pair back to back


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="tiny_sdxl")
    ap.add_argument("--weights", choices=["pretrained", "random"], default="pretrained")
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    r = compare(args.model, args.weights, args.images, args.batch_size, args.repeats, args.device)
    print(f"device={r['device']} model={args.model} images={args.images} batch={args.batch_size} "
          f"threads={r['threads']} repeats={args.repeats}")
    print(f"bare loop : {r['bare_median_img_s']:8.2f} img/s  (runs: {', '.join(f'{x:.2f}' for x in r['bare_img_s'])})")
    print(f"harness   : {r['harness_median_img_s']:8.2f} img/s  (runs: {', '.join(f'{x:.2f}' for x in r['harness_img_s'])})")
    print(f"ratio harness/bare = {r['ratio_of_medians']:.3f} (medians); per pair: "
          f"{', '.join(f'{x:.3f}' for x in r['ratio_per_pair'])}  (target >= 0.95)")


if __name__ == "__main__":
    main()
