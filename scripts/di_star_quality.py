"""Quality bar of issue 11: does DI*-In at the paper's (scaled) setting raise the mini proxy reward
by more than 5 seed-to-seed standard deviations over the one-step init, and what does the gold
judge say? Trains `mini/di_star_in` with several training seeds, then scores the init and every
run on the same prompts (mini_parti) and the same noise, in-process (the proxy through the
trainer's own reward path, the gold judge on the decoded 8-bit images).

    .venv/bin/python scripts/di_star_quality.py --steps 100 --seeds 0 1 2 --prompts 128
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from PIL import Image

    from di_star.presets import get_preset
    from di_star.sdxl.world import SDWorld
    from di_star.trainer import train
    from evalsuite.benchmarks import load_benchmark
    from evalsuite.mini.gold import gold_score

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mini/di_star_in")
    ap.add_argument("--steps", type=int, default=None, help="generator steps (default: the preset's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--lr", type=float, default=None, help="generator and assistant lr (default: the preset's)")
    ap.add_argument("--k-ta", type=int, default=None, help="assistant steps per generator step (default: the preset's)")
    ap.add_argument("--alpha-rew", type=float, default=None, help="reward scale (default: the preset's)")
    ap.add_argument("--out", type=Path, default=Path("runs/mini_quality"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    prompts = [p.text for p in load_benchmark("mini_parti").prompts][: a.prompts]
    z = torch.randn((len(prompts), 4, 16, 16), generator=torch.Generator().manual_seed(2024))

    def score(world, gen) -> tuple[np.ndarray, np.ndarray]:
        proxy, gold = [], []
        with torch.no_grad():
            for i in range(0, len(prompts), 16):
                cond = world.encode(prompts[i:i + 16])
                x0 = gen(z[i:i + 16].to(world.device), cond)
                proxy.append(world.reward(x0, cond).float().cpu().numpy())
                ims = (world.decode(x0).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
                gold.append(gold_score([Image.fromarray(m) for m in ims], prompts[i:i + 16]))
        return np.concatenate(proxy), np.concatenate(gold)

    rows = {}
    t0 = time.time()
    for seed in a.seeds:
        optim = {**({"lr_g": a.lr, "lr_psi": a.lr} if a.lr else {}),
                 **({"assistant_steps_per_g_step": a.k_ta} if a.k_ta else {})}
        cfg = get_preset(a.preset).replace(run={"seed": seed, **({"max_steps": a.steps} if a.steps else {})},
                                           optim=optim,
                                           **({"objective": {"alpha_rew": a.alpha_rew}} if a.alpha_rew is not None else {}),
                                           sd={"sample_every": 0}, world={"eval_samples": 8})
        world = SDWorld(cfg)
        models = world.build()
        if "init" not in rows:
            rows["init"] = score(world, copy.deepcopy(models.generator).eval())
        train(cfg, a.out / f"s{seed}", world=world, progress=False)
        rows[f"s{seed}"] = score(world, models.generator.eval())
    p0, g0 = rows["init"]
    means = np.array([rows[f"s{s}"][0].mean() for s in a.seeds])
    golds = np.array([rows[f"s{s}"][1].mean() for s in a.seeds])
    sd = means.std(ddof=1) if len(means) > 1 else float("nan")
    report = {"preset": a.preset, "steps": a.steps, "lr": a.lr, "k_ta": a.k_ta, "alpha_rew": a.alpha_rew, "seeds": a.seeds, "prompts": len(prompts),
              "init_proxy": float(p0.mean()), "proxy_per_seed": means.tolist(), "seed_sd": float(sd),
              "z_over_init": float((means.mean() - p0.mean()) / sd), "init_gold": float(g0.mean()),
              "gold_per_seed": golds.tolist(),
              # per seed, paired over prompts (same noise): mean change and its standard error
              "proxy_delta_se": [[float((rows[f"s{s}"][0] - p0).mean()),
                                  float((rows[f"s{s}"][0] - p0).std(ddof=1) / len(p0) ** 0.5)] for s in a.seeds],
              "gold_delta_se": [[float((rows[f"s{s}"][1] - g0).mean()),
                                 float((rows[f"s{s}"][1] - g0).std(ddof=1) / len(g0) ** 0.5)] for s in a.seeds],
              "wall_s": time.time() - t0}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
