"""Why does the oracle-rewarded DI*-In run not raise its own reward? (issue 28; docs/training.md)

    .venv/bin/python -m di_star.mini.probes.oracle_ascent terms     # generator-step gradient norms
    .venv/bin/python -m di_star.mini.probes.oracle_ascent pixels    # d reward / d image on init samples
    .venv/bin/python -m di_star.mini.probes.oracle_ascent latent --reward mini_oracle   # free ascent
    .venv/bin/python -m di_star.mini.probes.oracle_ascent latent --reward mini_oracle_st \
        --prompts 12 --steps 60 --temps fg=15,area=2      # the straight-through oracle's search
    .venv/bin/python -m di_star.mini.probes.oracle_ascent run --reward mini_oracle --reward-only

- terms: at the init, the theta-gradient norms of L_rew and L_reg of the preset's generator step
  (the trainer's own `generator_terms`), their cosine, per batch;
- pixels: per-image norm of the reward's gradient w.r.t. the decoded image, and a first-order
  check of the theta-gradient (the change along it at a small step over the predicted one);
- latent: Adam on the init's latents themselves (no generator in the way), rewarded by one
  reward: can that reward be climbed at all, and what do the hard gold and the other reward do?
- run: a short run of the product's trainer, then the paired change (prompts as units) of gold,
  oracle and proxy on mini_parti images of fixed noise, init vs trained.
Every mode runs on one CPU thread in 1-6 minutes.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

PRESETS = {"mini_oracle": "mini/di_star_in_oracle", "mini_oracle_st": "mini/di_star_in_oracle_st",
           "mini_pickscore": "mini/di_star_in"}
JUDGES = ("mini_gold", "mini_oracle", "mini_pickscore")


def parse_temps(text: str | None):
    """'fg=15,area=2' -> the straight-through oracle's temperatures with those fields replaced."""
    from dataclasses import replace

    from di_star.mini.oracle import ST_TEMPERATURES
    if not text:
        return ST_TEMPERATURES
    pairs = (item.split("=") for item in text.split(","))
    return replace(ST_TEMPERATURES, **{k.strip(): float(v) for k, v in pairs})


def world_for(reward: str, temps=None, **over):
    """The preset's world (networks built, frozen ones frozen) and its config; `temps` replaces
    the straight-through oracle's gradient temperatures."""
    from di_star.presets import get_preset
    from di_star.trainer import make_world
    cfg = get_preset(PRESETS.get(reward, "mini/di_star_in")).replace(sd={"reward": reward}, **over)
    world = make_world(cfg, "cpu")
    models = world.build()
    if temps is not None:
        world.reward_model.temps = temps
    for m in models.frozen:
        m.requires_grad_(False).eval()
    return cfg, world, models


def _flat_grad(value, params) -> torch.Tensor:
    g = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, params)])


def terms(reward: str, batches: int = 4, seed: int = 0) -> list[dict]:
    """Per batch: |grad_theta L_rew|, |grad_theta L_reg| and their cosine at the init."""
    from di_star.noise import weight_fn
    from di_star.trainer import generator_terms
    cfg, world, m = world_for(reward)
    m.assistant.requires_grad_(False)
    params = [p for p in m.generator.parameters() if p.requires_grad]
    rng = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        t = generator_terms(world, m.generator, m.make_assistant_score(m.assistant), m.reference_score, cfg,
                            rng, "cpu", weight_fn(cfg.objective.w, world.schedule))
        g = {k: _flat_grad(v.mean(), params) for k, v in t.items()}
        out.append({"rew": float(g["L_rew"].norm()), "reg": float(g["L_reg"].norm()),
                    "cos": float(torch.nn.functional.cosine_similarity(g["L_rew"], g["L_reg"], dim=0))})
    return out


def pixels(reward: str, n: int = 32, seed: int = 0, step: float = 1e-4) -> dict:
    """Quantiles of the per-image |d reward / d image| on init samples, and the first-order check
    (actual / predicted change of the batch's mean reward at a theta step of norm `step`)."""
    _, world, m = world_for(reward)
    rng = torch.Generator().manual_seed(seed)
    cond, z = world.sample_cond(n, rng), world.sample_z(n, rng)
    with torch.no_grad():
        x0 = m.generator(z, cond)
        img = world.decode(x0)
    norms = []
    for k in range(n):  # one image at a time: each image's own gradient
        im = img[k:k + 1].clone().requires_grad_(True)
        r = world.reward_model.score_tensor(im, list(cond.prompts)[k:k + 1])
        norms.append(float(torch.autograd.grad(r.sum(), im)[0].norm()))
    params = [p for p in m.generator.parameters() if p.requires_grad]
    r0 = world.reward(m.generator(z, cond), cond).mean()
    g = torch.autograd.grad(r0, params)
    gn = float(torch.sqrt(sum((x ** 2).sum() for x in g)))
    with torch.no_grad():
        for p, x in zip(params, g):
            p.add_(x, alpha=step / gn)
        r1 = world.reward(m.generator(z, cond), cond).mean()
    q = np.quantile(norms, [0.25, 0.5, 0.9, 1.0])
    return {"reward": reward, "images": n, "dimage_q25_q50_q90_max": [round(float(x), 4) for x in q],
            "first_order_ratio": round((float(r1) - r0.item()) / (step * gn), 3), "theta_step": step}


def judge(world, x0: torch.Tensor, prompts: list[str]) -> dict[str, np.ndarray]:
    """Hard gold, oracle and proxy of latents x0 (decoded, clamped, 8-bit as the judge sees them)."""
    from PIL import Image

    from evalsuite.metrics import load_metric
    with torch.no_grad():
        img = world.decode(x0).clamp(0, 1)
    pil = [Image.fromarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for im in img]
    return {j: np.asarray(load_metric(j, device="cpu").score(pil, prompts), float) for j in JUDGES}


def surrogate(world, x0: torch.Tensor, prompts: list[str], temps) -> np.ndarray:
    """The straight-through oracle's smooth surrogate (the soft pipeline at `temps`) of latents x0."""
    from di_star.mini.oracle import oracle_scores
    with torch.no_grad():
        return oracle_scores(world.decode(x0), prompts, temps).numpy().astype(float)


def bench_prompts(n: int) -> list[str]:
    """n mini_parti prompts spread evenly over its 300 (the 5 challenges, 60 each, in order)."""
    from di_star.mini.scene import held_out_prompts
    texts = [t for t, _, _ in held_out_prompts()]
    return [texts[i] for i in np.linspace(0, len(texts) - 1, n).round().astype(int)]


def every_tenth() -> list[str]:
    """mini_parti prompts 0, 10, ..., 290 (the latent ascent's 30)."""
    from di_star.mini.scene import held_out_prompts
    return [t for t, _, _ in held_out_prompts()][::10]


def change(before: dict, after: dict, prompt_ids: np.ndarray, n_boot: int = 4000) -> dict[str, str]:
    """Paired change per judge: mean over images [95% percentile bootstrap of the per-prompt mean
    changes, prompts resampled], prompts as units."""
    out = {}
    rng = np.random.default_rng(0)
    for j in before:
        d = after[j] - before[j]
        per_prompt = np.array([d[prompt_ids == p].mean() for p in np.unique(prompt_ids)])
        boot = rng.choice(per_prompt, (n_boot, len(per_prompt))).mean(1)
        lo, hi = np.quantile(boot, [0.025, 0.975])
        out[j] = f"{per_prompt.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]"
    return out


def latent(reward: str, steps: int = 150, lr: float = 0.02, prompts: int = 30, temps=None) -> dict:
    """Adam on the init's latents (one per prompt, 30 prompts, or `prompts` of them spread evenly)
    to raise `reward`; judges before and after."""
    _, world, m = world_for(reward, temps)
    texts = every_tenth()
    texts = [texts[i] for i in np.linspace(0, len(texts) - 1, prompts).round().astype(int)]
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        cond = world.encode(texts)
        x0 = m.generator(torch.randn((len(texts), *world.latent_shape), generator=g), cond)
    before = judge(world, x0, texts)
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (-world.reward(x, cond).mean()).backward()
        opt.step()
    after = judge(world, x.detach(), texts)
    temps = getattr(world.reward_model, "temps", None)
    if temps is not None:  # the straight-through oracle: did its gradient's surrogate rise?
        before["surrogate"], after["surrogate"] = (surrogate(world, v, texts, temps) for v in (x0, x.detach()))
    return {"reward": reward, "steps": steps, "lr": lr, "prompts": len(texts),
            **({"temps": temps.tag()} if temps is not None else {}),
            "latent_moved": round(float((x.detach() - x0).norm() / x0.norm()), 3),
            **change(before, after, np.arange(len(texts)))}


def run(reward: str, steps: int = 100, reward_only: bool = False, alpha_scale: float = 1.0,
        prompts: int = 48, images: int = 2, temps=None) -> dict:
    """A short run of the trainer (seed 0) and the paired change of the judges on fixed noise."""
    from di_star.trainer import train
    cfg, world, m = world_for(reward, temps)
    o = cfg.objective
    obj = {"alpha_rew": o.alpha_rew * alpha_scale}
    if reward_only:
        obj.update(regulariser="none", guidance="none", alpha_cfg=0.0)
    cfg = cfg.replace(objective=obj, run={"max_steps": steps, "seed": 0, "log_every": 10, "ckpt_every": steps},
                      sd={"sample_every": 0}, world={"eval_samples": 1})
    texts = bench_prompts(prompts)

    def sample() -> dict[str, np.ndarray]:  # image k of every prompt: noise stream 777 + k
        x0 = []
        with torch.no_grad():
            for k in range(images):
                g = torch.Generator().manual_seed(777 + k)
                for i in range(0, len(texts), 16):
                    z = torch.randn((len(texts[i:i + 16]), *world.latent_shape), generator=g)
                    x0.append(m.generator(z, world.encode(texts[i:i + 16])))
        return judge(world, torch.cat(x0), texts * images)

    before = sample()
    tmp = Path(tempfile.mkdtemp(prefix="oracle_ascent_"))
    try:
        result = train(cfg, tmp / "run", world=world, progress=False)  # trains m.generator in place
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    after = sample()
    return {"reward": reward, "steps": steps, "reward_only": reward_only, "alpha_rew": obj["alpha_rew"],
            "prompts": prompts, "images": images, "cpu_s_per_step": round(result.cpu_ms_per_step / 1000, 2),
            **change(before, after, np.tile(np.arange(len(texts)), images))}


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("terms", "pixels", "latent", "run"))
    ap.add_argument("--reward", default=None,
                    help="mini_oracle, mini_oracle_st or mini_pickscore (default: oracle and proxy)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--reward-only", action="store_true", help="run: no regulariser, no CFG")
    ap.add_argument("--alpha-scale", type=float, default=1.0, help="run: alpha_rew x this")
    ap.add_argument("--prompts", type=int, default=None, help="latent: 30; run: 48")
    ap.add_argument("--lr", type=float, default=0.02, help="latent: Adam's learning rate")
    ap.add_argument("--temps", default=None,
                    help="mini_oracle_st's gradient temperatures, e.g. fg=15,area=2 (fields of "
                         "di_star.mini.oracle.Temperatures; the rest: ST_TEMPERATURES)")
    a = ap.parse_args()
    temps = parse_temps(a.temps) if a.temps else None
    sizes = {k: v for k, v in (("steps", a.steps), ("prompts", a.prompts)) if v}
    for reward in ([a.reward] if a.reward else ["mini_oracle", "mini_pickscore"]):
        if a.mode == "terms":
            res = {"reward": reward, "batches": terms(reward)}
        elif a.mode == "pixels":
            res = pixels(reward)
        elif a.mode == "latent":
            res = latent(reward, lr=a.lr, temps=temps, **sizes)
        else:
            res = run(reward, a.steps or 100, a.reward_only, a.alpha_scale, a.prompts or 48, temps=temps)
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
