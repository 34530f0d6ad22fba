"""Build time and peak host memory of a random-weight network, the way `build_pipeline` builds it
now (created on the device in the target dtype: `architectures.created_on`) against the way it
did before (created in fp32 on the CPU, then cast). Each build runs in its own process so its
peak RSS (ru_maxrss) is its own.

    .venv/bin/python -m di_star.bench.build --net sd15_unet                 # both ways, bf16, CPU
    .venv/bin/python -m di_star.bench.build --net sdxl_unet --ways new      # 2.6B: 5 GB in bf16
    .venv/bin/python -m di_star.bench.build --net flux_transformer --device cuda --ways new

Full FLUX (12B) or SD3.5 Large (8B) the old way needs 4 bytes per parameter of host memory
(48 / 32 GB) before the cast: do not run `--ways old` on those on a small machine.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch  # noqa: E402

from distar.core.dtypes import dtype_name, to_dtype  # noqa: E402
from evalsuite.models import architectures as arch  # noqa: E402

NETS = {"sdxl_unet": ("UNet2DConditionModel", arch.SDXL_UNET),
        "sd15_unet": ("UNet2DConditionModel", arch.SD15_UNET),
        "sd35_transformer": ("SD3Transformer2DModel", arch.SD35_LARGE_TRANSFORMER),
        "flux_transformer": ("FluxTransformer2DModel", arch.FLUX_DEV_TRANSFORMER)}


def build_once(net: str, way: str, dtype: torch.dtype, device: str) -> dict:
    """Build `net` once in this process; seconds and this process's peak RSS."""
    import diffusers
    cls_name, cfg = NETS[net]
    cls = getattr(diffusers, cls_name)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    if way == "new":
        with arch.created_on(device, dtype):
            model = cls(**cfg)
    else:  # before: fp32 on the host, then cast and move
        model = cls(**cfg).to(device=device, dtype=dtype)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    return {"net": net, "way": way, "dtype": dtype_name(dtype), "device": device,
            "params_billions": round(params / 1e9, 3), "build_s": round(seconds, 2),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--net", choices=sorted(NETS), default="sd15_unet")
    ap.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ways", default="old,new", help="comma list of: old, new")
    ap.add_argument("--child", choices=["old", "new"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(build_once(args.net, args.child, to_dtype(args.dtype), args.device)))
        return
    for way in args.ways.split(","):
        out = subprocess.run([sys.executable, "-m", "di_star.bench.build", "--net", args.net, "--dtype", args.dtype,
                              "--device", args.device, "--child", way],
                             capture_output=True, text=True, check=True)
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
