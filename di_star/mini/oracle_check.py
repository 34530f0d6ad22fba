"""How well the oracle reward (di_star.mini.oracle) stands in for the hard gold judge, measured on
the generators' own samples: `distar lab oracle-check`.

1. `distar eval`'s library calls generate the reference's and the one-step init's images on
   mini_parti (`images_per_prompt` per prompt, resumable) and score them with `mini_gold` and
   `mini_oracle` into one results store;
2. Spearman's rho between the two over all images, per model, with a bootstrap interval that
   resamples prompts (a prompt's images are correlated);
3. the gradient of the oracle through the init generator and the VAE decoder (finite, non-zero);
4. a JSON report, written whole (docs/mini_quality/oracle_check.json is this command's output).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

MODELS = ("mini_ref", "mini_onestep")


def spearman_ci(a: np.ndarray, b: np.ndarray, clusters: np.ndarray, n_boot: int = 2000,
                seed: int = 0) -> dict:
    """Spearman's rho of a and b with a 95% percentile interval over resampled clusters."""
    from scipy.stats import spearmanr
    rho = float(spearmanr(a, b)[0])
    uniq = np.unique(clusters)
    members = [np.flatnonzero(clusters == u) for u in uniq]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(uniq), len(uniq))])
        boots.append(spearmanr(a[idx], b[idx])[0])
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"rho": rho, "low": float(lo), "high": float(hi), "n_images": int(len(a)),
            "n_prompts": int(len(uniq))}


def paired_table(store_dir: Path) -> pd.DataFrame:
    """One row per image of the store: model, prompt_index, k, gold, oracle, proxy."""
    from evalsuite.store import ResultsStore
    s = ResultsStore(store_dir).table("model_scores")
    s = s[s.metric.isin(["mini_gold", "mini_oracle", "mini_pickscore"])]
    wide = s.pivot_table(index=["model", "prompt_index", "k"], columns="metric", values="value").reset_index()
    return wide.dropna().rename(columns={"mini_gold": "gold", "mini_oracle": "oracle", "mini_pickscore": "proxy"})


def gradient_check(n: int = 4, seed: int = 0) -> dict:
    """d oracle / d generator parameters and d oracle / d x0 through the init generator and the
    VAE decoder, on the first n mini_parti prompts: their norms and whether they are finite."""
    import torch

    from di_star.presets import get_preset
    from di_star.sdxl.world import SDWorld
    from evalsuite.benchmarks import load_benchmark

    cfg = get_preset("mini/di_star_in_oracle").replace(sd={"sample_every": 0}, world={"eval_samples": 1})
    world = SDWorld(cfg)
    models = world.build()
    gen = models.generator
    prompts = [p.text for p in load_benchmark("mini_parti").prompts][:n]
    cond = world.encode(prompts)
    z = torch.randn((n, *world.latent_shape), generator=torch.Generator().manual_seed(seed))
    x0 = gen(z, cond)
    x0.retain_grad()
    r = world.reward(x0, cond)
    r.sum().backward()
    grads = [p.grad for p in gen.parameters() if p.grad is not None]
    gnorm = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads)))
    return {"n": n, "reward": r.detach().tolist(), "x0_grad_norm": float(x0.grad.norm()),
            "param_grad_norm": gnorm,
            "finite": bool(all(torch.isfinite(g).all() for g in grads) and torch.isfinite(x0.grad).all())}


def run_check(out: Path, report: Path | None, limit: int | None = None, images_per_prompt: int = 2,
              models: tuple[str, ...] = MODELS, console=None) -> dict:
    """Generate, score, correlate; returns the report (and writes it when `report` is given)."""
    from distar.core.atomic import write_text
    from evalsuite.generate import EvalRequest, run_eval
    from evalsuite.metrics.runner import score_run

    t0 = time.time()
    for model in models:
        run = run_eval(EvalRequest(model=model, bench="mini_parti", limit=limit, out=out,
                                   images_per_prompt=images_per_prompt, device="cpu"))
        score_run(run, ["mini_gold", "mini_oracle", "mini_pickscore"], progress=False, device="cpu")
        if console:
            console.print(f"  {model}: generated and scored ({time.time() - t0:.0f} s)", highlight=False)
    t = paired_table(out)
    t = t[t.model.isin(models)]
    result = {"all": spearman_ci(t.gold.to_numpy(), t.oracle.to_numpy(), t.prompt_index.to_numpy())}
    for m, part in t.groupby("model"):
        result[m] = spearman_ci(part.gold.to_numpy(), part.oracle.to_numpy(), part.prompt_index.to_numpy())
    from di_star.mini.oracle import VERSION
    rep = {"oracle": VERSION, "bench": "mini_parti", "limit": limit, "images_per_prompt": images_per_prompt,
           "spearman": result, "mean_abs_diff": float((t.gold - t.oracle).abs().mean()),
           # per-image spreads on the init's samples: the oracle presets' alpha_rew rule
           # (di_star/mini/overopt_presets.py)
           "init_spread": {c: float(t[t.model == "mini_onestep"][c].std()) for c in ("gold", "oracle", "proxy")},
           "proxy_spearman_with_gold": spearman_ci(t.gold.to_numpy(), t.proxy.to_numpy(), t.prompt_index.to_numpy()),
           "gradient": gradient_check(), "wall_s": time.time() - t0,
           "command": f"distar lab oracle-check --out {out}" + (f" --limit {limit}" if limit else "")
           + f" --images-per-prompt {images_per_prompt}"}
    if report is not None:
        write_text(Path(report), json.dumps(rep, indent=1) + "\n")
    return rep
