"""Quality bar of issue 11: does DI*-In at the paper's (scaled) setting raise the mini proxy reward
over the one-step init, and what does the gold judge say? Quote each seed's paired change and
standard error (`proxy_delta_se`, `gold_delta_se`); `z_over_init` (seed-to-seed SDs) ignores prompt
noise, and the seeds share prompts and noise, so it never stands alone. Trains `mini/di_star_in` with several training seeds, then scores the init and every
run on the same prompts (mini_parti) and the same noise, in-process (the proxy through the
trainer's own reward path, the gold judge on the decoded 8-bit images).

    .venv/bin/python scripts/di_star_quality.py --seeds 0 1 2 --prompts 128 --jobs 3   # the preset's 600 steps
    .venv/bin/python scripts/di_star_quality.py --steps 300 --seeds 0 1 2 --jobs 2     # a shorter run

Each seed (and the init's scoring) is one job on one torch thread; `--jobs N` runs N of them in
parallel processes, so on a 2-core machine `--jobs 2` halves the wall time. The JSON report goes
to stdout and, with `--report`, to a file (written whole at the end).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
import json
import multiprocessing as mp
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from distar.core.paths import project_commit


def _config(a: argparse.Namespace, seed: int):
    from di_star.presets import get_preset

    optim = {**({"lr_g": a.lr, "lr_psi": a.lr} if a.lr else {}),
             **({"assistant_steps_per_g_step": a.k_ta} if a.k_ta else {})}
    return get_preset(a.preset).replace(run={"seed": seed, **({"max_steps": a.steps} if a.steps else {})},
                                        optim=optim,
                                        **({"objective": {"alpha_rew": a.alpha_rew}} if a.alpha_rew is not None else {}),
                                        sd={"sample_every": 0}, world={"eval_samples": 8})


def _score(a: argparse.Namespace, world, gen) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt proxy reward and gold score of `gen` on the first `a.prompts` mini_parti prompts,
    with the same noise for every model (seeded independently of the training seed)."""
    from di_star.mini.build import to_pil
    from evalsuite.benchmarks import load_benchmark
    from di_star.mini.gold import gold_score

    prompts = [p.text for p in load_benchmark("mini_parti").prompts][: a.prompts]
    z = torch.randn((len(prompts), 4, 16, 16), generator=torch.Generator().manual_seed(2024))
    proxy, gold = [], []
    with torch.no_grad():
        for i in range(0, len(prompts), 16):
            cond = world.encode(prompts[i:i + 16])
            x0 = gen(z[i:i + 16].to(world.device), cond)
            proxy.append(world.reward(x0, cond).float().cpu().numpy())
            gold.append(gold_score(to_pil(world.decode(x0).clamp(0, 1).cpu() * 2 - 1), prompts[i:i + 16]))
    return np.concatenate(proxy), np.concatenate(gold)


def _job(a: argparse.Namespace, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """seed None: score the init; otherwise train one seed and score the result."""
    from di_star.sdxl.world import SDWorld
    from di_star.trainer import train

    torch.set_num_threads(1)
    cfg = _config(a, a.seeds[0] if seed is None else seed)
    world = SDWorld(cfg)
    models = world.build()
    if seed is None:
        return _score(a, world, copy.deepcopy(models.generator).eval())
    train(cfg, a.out / f"s{seed}", world=world, progress=False)
    return _score(a, world, models.generator.eval())


def _git() -> str:
    return project_commit(short=True) or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mini/di_star_in")
    ap.add_argument("--steps", type=int, default=None, help="generator steps (default: the preset's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--lr", type=float, default=None, help="generator and assistant lr (default: the preset's)")
    ap.add_argument("--k-ta", type=int, default=None, help="assistant steps per generator step (default: the preset's)")
    ap.add_argument("--alpha-rew", type=float, default=None, help="reward scale (default: the preset's)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel processes, one torch thread each")
    ap.add_argument("--out", type=Path, default=Path("runs/mini_quality"), help="training runs go here")
    ap.add_argument("--report", type=Path, default=None, help="also write the JSON report here")
    a = ap.parse_args()
    t0 = time.time()
    jobs = [None, *a.seeds]
    if a.jobs > 1:
        # spawn: a forked torch process with live threads can deadlock
        with cf.ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn")) as ex:
            results = list(ex.map(_job, [a] * len(jobs), jobs))
    else:
        results = [_job(a, s) for s in jobs]
    (p0, g0), runs = results[0], dict(zip(a.seeds, results[1:]))
    means = np.array([runs[s][0].mean() for s in a.seeds])
    golds = np.array([runs[s][1].mean() for s in a.seeds])
    sd = means.std(ddof=1) if len(means) > 1 else float("nan")
    report = {"preset": a.preset, "steps": a.steps, "lr": a.lr, "k_ta": a.k_ta, "alpha_rew": a.alpha_rew, "seeds": a.seeds, "prompts": len(p0),
              "init_proxy": float(p0.mean()), "proxy_per_seed": means.tolist(), "seed_sd": float(sd),
              "z_over_init": float((means.mean() - p0.mean()) / sd), "init_gold": float(g0.mean()),
              "gold_per_seed": golds.tolist(),
              # per seed, paired over prompts (same noise): mean change and its standard error
              "proxy_delta_se": [[float((runs[s][0] - p0).mean()),
                                  float((runs[s][0] - p0).std(ddof=1) / len(p0) ** 0.5)] for s in a.seeds],
              "gold_delta_se": [[float((runs[s][1] - g0).mean()),
                                 float((runs[s][1] - g0).std(ddof=1) / len(g0) ** 0.5)] for s in a.seeds],
              "wall_s": time.time() - t0,
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "git": _git(),
              "machine": f"{platform.machine()}, {a.jobs} job(s) of one torch thread"}
    text = json.dumps(report, indent=1)
    print(text)
    if a.report:
        tmp = a.report.with_suffix(a.report.suffix + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(a.report)


if __name__ == "__main__":
    main()
