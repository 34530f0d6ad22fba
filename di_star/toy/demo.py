"""`distar demo`: the paper's Table 2 ablation in miniature, on CPU, in minutes.

It trains every Table 2 preset on both toy worlds, sweeps alpha_rew for the KL and the score
regulariser on `gmm` (regularisers have different gradient sizes, so they are compared on
reward-vs-fidelity and reward-vs-diversity frontiers, docs/maths.md), then writes
leaderboards/toy_gmm.md, leaderboards/toy_digits.md and PNG figures under leaderboards/figures/.
The findings paragraphs are generated from the measured numbers.

Runs are independent, so they are spread over worker processes (one torch thread each: these
networks are far too small for intra-op threads to pay, and threads fight on a shared machine).
Every run lives in its own run dir under `out`; rerunning the demo resumes or reuses them.
"""
from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from di_star.config import TrainConfig
from di_star.experiment import Job, default_workers, run_experiment
from di_star.presets import TABLE_ORDER, get_preset, world_scales

FRONTIER_ALPHAS = {  # alpha_rew sweeps on gmm, per regulariser; each spans "no effect" to "collapsed"
    "kl": (1.0, 2.0, 3.0, 5.0),
    "score": (0.3, 0.6, 1.0, 2.0),
    "score_x0": (0.5, 1.0, 2.0, 3.0),
}


def _scaled(cfg: TrainConfig, scale: float, steps: int | None = None) -> TrainConfig:
    if scale == 1.0 and steps is None:
        return cfg
    max_steps = steps if steps is not None else max(2, round(cfg.run.max_steps * scale))
    return cfg.replace(run={"max_steps": max_steps, "ckpt_every": max(1, max_steps // 2),
                            "log_every": max(1, max_steps // 4)},
                       world={"eval_samples": max(200, round(cfg.world.eval_samples * min(1.0, 4 * scale))),
                              "recipe_scale": min(1.0, scale)})


def frontier_config(reg: str, alpha: float, scale: float) -> TrainConfig:
    """Reward plus one regulariser, no CFG, so the frontier isolates the regulariser."""
    base = get_preset("gmm/kl" if reg == "kl" else "gmm/di_star_in_noreward")
    over: dict[str, Any] = {"alpha_rew": alpha}
    if reg == "score_x0":
        over["estimator"] = "x0"
    return _scaled(base.replace(objective=over, preset=f"gmm/frontier/{reg}/{alpha:g}"), scale)


# gmm runs are cheap and single runs there are noisy, so each gets two training seeds: tables show
# the mean, and the seed-to-seed differences set the tolerance the findings use. Digits: one seed.
SEEDS = {"gmm": (0, 1), "digits": (0,)}


def _seeded(key: str, cfg: TrainConfig, run_dir: Path, seed: int) -> Job:
    if seed == 0:
        return Job(key, _run_job, run_dir, cfg=cfg)
    return Job(f"{key}@s{seed}", _run_job, run_dir.with_name(f"{run_dir.name}@s{seed}"),
               cfg=cfg.replace(run={"seed": seed}))


def plan(out: Path, scale: float) -> list[Job]:
    jobs = []
    for world in ("gmm", "digits"):
        for row in TABLE_ORDER:
            cfg = _scaled(get_preset(f"{world}/{row}"), scale)
            jobs += [_seeded(f"{world}/{row}", cfg, out / world / row, s) for s in SEEDS[world]]
    for reg, alphas in FRONTIER_ALPHAS.items():
        for a in alphas:
            jobs += [_seeded(f"gmm/frontier/{reg}/{a:g}", frontier_config(reg, a, scale),
                             out / "gmm_frontier" / reg / f"{a:g}", s) for s in SEEDS["gmm"]]
    return jobs


def average_seeds(results: dict[str, dict]) -> tuple[dict[str, dict], dict[str, float]]:
    """Fold `key@sN` runs into `key`: metrics and timings averaged over seeds. Also returns, per
    metric, the median absolute seed-to-seed difference (None-free only when there were 2 seeds)."""
    groups: dict[str, list[dict]] = {}
    for k, r in results.items():
        groups.setdefault(k.split("@")[0], []).append(r)
    out, diffs = {}, {}
    for k, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["key"])  # seed 0 first: its run dir is the one plotted
        metrics = {m: float(np.mean([r["metrics"][m] for r in rs])) for m in rs[0]["metrics"]}
        out[k] = {**rs[0], "key": k, "metrics": metrics, "seeds": len(rs),
                  "ms_per_step": float(np.mean([r["ms_per_step"] for r in rs]))}
        if len(rs) == 2:
            for m in metrics:
                diffs.setdefault(m, []).append(abs(rs[0]["metrics"][m] - rs[1]["metrics"][m]))
    return out, {m: float(np.median(v)) for m, v in diffs.items()}


def _run_job(job: Job) -> dict:
    """Worker: one training run -> its numbers (and timings)."""
    from di_star.trainer import train
    w0, c0 = time.time(), time.process_time()
    r = train(job.cfg, Path(job.out), progress=False)
    return {"key": job.key, "metrics": r.metrics, "ms_per_step": r.cpu_ms_per_step, "wall_ms_per_step": r.ms_per_step,
            "steps": r.step,
            "wall_s": time.time() - w0, "cpu_s": time.process_time() - c0, "run_dir": str(job.out)}


def build_caches(scale: float) -> dict[str, float]:
    """Train the cached networks once, in this process, before workers could race to build them."""
    import torch

    from di_star.trainer import WORLDS
    torch.set_num_threads(1)
    t: dict[str, float] = {}
    for world in ("gmm", "digits"):
        w0 = time.time()
        cfg = _scaled(get_preset(f"{world}/kl"), scale)
        w = WORLDS.get(world)(cfg)
        w.build()
        if world == "digits":
            w.metrics()
        t[world] = time.time() - w0
    return t


def run_demo(out: Path, leaderboards: Path, scale: float = 1.0, workers: int | None = None) -> dict:
    """Run the toy ablation and write the tables and figures. `scale` < 1 shrinks every step count
    (tests); `workers` defaults to the CPU count, capped at 2 (the lab targets a 2-core machine)."""
    import matplotlib
    matplotlib.use("Agg")
    from rich.console import Console

    from distar.core.progress import ProgressBar

    console = Console(stderr=True)
    out, leaderboards = Path(out), Path(leaderboards)
    figures = leaderboards / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    workers = workers or default_workers()
    t0 = time.time()
    console.print(f"[bold]distar demo[/]: toy ablation (paper Table 2) on {workers} worker(s); "
                  f"runs in {out}", highlight=False)
    bar = ProgressBar("distar demo", 0, unit="runs")
    bar.phase("building the reference caches (trained once, then reused)")
    try:
        cache_s = build_caches(scale)
    except BaseException:
        bar.close()
        raise
    jobs = plan(out, scale)
    # Longest first (digits, then exact-estimator gmm runs) so the pool drains evenly.
    jobs.sort(key=lambda j: (j.cfg.world.name != "digits", j.cfg.objective.estimator == "x0"))
    bar.description, bar.total = "training runs", len(jobs)
    bar.start()

    def after(job: Job, r: dict) -> list[Job]:
        bar.advance(item=f"finished {job.key}")
        return []

    def findings(per_seed: dict[str, dict], prov: dict) -> dict:
        bar.close()
        results, seed_noise = average_seeds(per_seed)
        results["_per_seed"] = per_seed
        results["_seed_noise"] = seed_noise
        results["_estimator_cost"] = {w: estimator_cost(w, scale, reps=40 if scale == 1.0 else 3)
                                      for w in ("gmm", "digits")}
        train_s = time.time() - t0
        meta = {**prov, "command": "distar demo" if scale == 1.0 else f"run_demo(scale={scale})",
                "cache_s": cache_s, "seed_noise": seed_noise}
        set_noise(seed_noise)
        gmm_md = write_gmm(results, jobs, out, leaderboards, figures, scale, meta, train_s)
        digits_md = write_digits(results, jobs, out, leaderboards, figures, scale, meta, train_s)
        wall = time.time() - t0
        for path in (gmm_md, digits_md):  # the wall time is known only now
            path.write_text(path.read_text().replace("{{WALL}}", f"{wall:.0f} s"))
        return {"results": results, "wall_s": wall, "tables": [gmm_md, digits_md]}

    # One torch thread per run: these networks are far too small for intra-op threads to pay.
    with closing(bar):
        _, _, found = run_experiment("distar demo", out, {"scale": scale, "seeds": SEEDS, "frontier": FRONTIER_ALPHAS},
                       jobs, workers, after=after, threads=1, findings=findings)
    gmm_md, digits_md = found["tables"]
    console.print(f"tables: {gmm_md}, {digits_md}", highlight=False)
    console.print(f"figures: {', '.join(str(p) for p in sorted(figures.glob('toy_*.png')))}", highlight=False)
    console.print(f"runs: {out}   total wall time {found['wall_s']:.0f} s", highlight=False)
    return found


# Tables.

def _header(title: str, meta: dict, jobs: list[Job], world: str, train_s: float) -> list[str]:
    cfgs = [j.cfg for j in jobs if j.cfg.world.name == world]
    c = cfgs[0]
    steps = sorted({x.run.max_steps for x in cfgs})
    return [
        f"# {title}", "",
        f"Produced by `{meta['command']}` (git {meta['git']}, {meta['date']}, torch {meta['torch']}, "
        f"{meta['cpus']} CPUs, {meta['workers']} worker processes). Total demo wall time {{{{WALL}}}} "
        f"(both worlds; training runs {train_s:.0f} s, cached networks {meta['cache_s'].get(world, 0):.0f} s "
        "for this world, reused on later runs).", "",
        f"Every run: training seed{'s' if len(SEEDS[world]) > 1 else ''} {', '.join(map(str, SEEDS[world]))}"
        f"{' (each row is the mean over the seeds)' if len(SEEDS[world]) > 1 else ''}, "
        f"{', '.join(map(str, steps))} generator steps, "
        f"batch {c.optim.batch_size}, {c.optim.assistant_steps_per_g_step} assistant steps per generator step, "
        f"Adam lr_g {c.optim.lr_g:g} / lr_psi {c.optim.lr_psi:g}, betas ({c.optim.beta1:g}, {c.optim.beta2:g}), "
        f"sigma ~ exp({c.objective.sigma_std:g} randn {c.objective.sigma_mean:+g}); "
        f"score rows: w(t) = {_w_of(cfgs, 'score')}, pseudo-Huber c = {c.objective.huber_c:g} measured in "
        f"{c.objective.distance_space} space; KL rows: w(t) = {_w_of(cfgs, 'kl')} (data units, see presets.py); "
        f"evaluated on {c.world.eval_samples} samples with fixed seeds (the same z for every method). "
        + (f"Median seed-to-seed difference of a row: {_noise_text(meta.get('seed_noise', {}))}. "
           if len(SEEDS[world]) > 1 else "One training seed per row: differences of a few hundredths are within noise. ")
        + "CPU ms/step is process CPU time per generator step (incl. its assistant steps), one torch thread, "
        "so it stays comparable on a shared machine. "
        "Reproduce one row with `distar train --preset NAME`.", "",
    ]


def _w_of(cfgs: list[TrainConfig], reg: str) -> str:
    ws = sorted({x.objective.w for x in cfgs if x.objective.regulariser == reg})
    return "/".join(ws) or "-"


def _fmt(v: float, nd: int = 3) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


_SETTINGS_HEADER = ["model", "regulariser", "guidance", "(α_rew, α_cfg)", "estimator"]


def _trained_rows(world: str, results: dict, jobs, cols) -> list:
    """The table rows of the world's trained presets, in TABLE_ORDER."""
    rows = []
    for r in TABLE_ORDER:
        res = results[f"{world}/{r}"]
        cfg = next(j.cfg for j in jobs if j.key == f"{world}/{r}")
        rows.append(_row(f"`{world}/{r}`", _settings(cfg), res["metrics"], f"{res['ms_per_step']:.1f}", cols))
    return rows


def _row(name: str, settings: list[str], m: dict, ms: str, cols) -> list[str]:
    """One table row: the model, its training settings, its metrics (`cols`), ms per step."""
    return [name, *settings, *(_fmt(m[k], nd) for k, _, nd in cols), ms]


def _settings(cfg: TrainConfig) -> list[str]:
    o = cfg.objective
    reg = {"score": f"score ({'PH' if o.distance == 'pseudo_huber' else 'L2'})", "kl": "KL", "none": "-"}[o.regulariser]
    guid = {"none": "-", "out": "Choice 1 (out)", "in": "Choice 2 (in)"}[o.guidance]
    est = o.estimator if o.regulariser == "score" else "-"
    return [reg, guid, f"({o.alpha_rew:g}, {o.alpha_cfg:g})", est]


# gmm.

GMM_COLS = [("reward", "reward ↑", 3), ("loglik", "log p_ref ↑", 2), ("sw", "sliced W2 ↓", 2),
            ("mode_coverage", "modes hit ↑", 2), ("mode_entropy", "mode entropy ↑", 2),
            ("prompt_acc", "prompt acc ↑", 3)]


def write_gmm(results, jobs, out, leaderboards, figures, scale, meta, train_s) -> Path:
    from di_star.toy.gmm import GMMWorld, reference_metrics
    from di_star.trainer import EVAL_SEED
    from evalsuite.leaderboard.markdown import md_table  # here: training workers never need it
    cfg0 = next(j.cfg for j in jobs if j.key == "gmm/kl")
    world = GMMWorld(recipe_scale=cfg0.world.recipe_scale)
    n = cfg0.world.eval_samples
    ref = reference_metrics(world.density, n, EVAL_SEED)
    init = world.evaluate(world.initial_generator(), n, EVAL_SEED)

    lines = _header("Toy lab: class-conditional 2-D Gaussian mixtures (paper Table 2 in miniature)",
                    meta, jobs, "gmm", train_s)
    lines += [
        "World: 4 classes (prompts \"class 0\"..\"class 3\"), 3 modes each on a ring, neighbours from other "
        "classes; exact diffused scores (so CFG is exact and no reference is trained). Reward: a smooth "
        "bump (width 3) on one preferred mode per class. Metrics: reward; exact log-likelihood under the "
        "reference (realism; it also rises when samples pile onto mode centres); sliced W2 to reference "
        "samples (penalises collapse; the reference row shows its sampling floor); modes hit (share >= 5%) "
        "and normalised mode entropy (diversity); prompt accuracy by the exact class posterior (the CLIP-score "
        "analogue). The initial generator regresses the reference's exact ODE map (the DMD2 role).", "",
    ]
    rows = [_row("reference (exact samples)", ["-"] * 4, ref, "-", GMM_COLS),
            _row("initial generator (ODE regression)", ["-"] * 4, init, "-", GMM_COLS)]
    rows += _trained_rows("gmm", results, jobs, GMM_COLS)
    lines.append(md_table(_SETTINGS_HEADER + [h for _, h, _ in GMM_COLS] + ["CPU ms/step ↓"], rows, "-"))

    frontier = _frontier_points(results)
    lines += ["", "## alpha_rew frontier (no CFG; one regulariser each)", "",
              md_table(["regulariser", "α_rew"] + [h for _, h, _ in GMM_COLS] + ["CPU ms/step ↓"],
                       [[_REG_LABEL[reg], f"{a:g}"] + [_fmt(m[k], nd) for k, _, nd in GMM_COLS] + [f"{ms:.1f}"]
                        for reg, pts in frontier.items() for a, m, ms in pts], "-")]
    lines += ["", "![samples](figures/toy_gmm_samples.png)", "", "![frontier](figures/toy_gmm_frontier.png)", ""]
    lines += ["## Findings (generated from the numbers above)", ""]
    lines += [f"- {s}" for s in gmm_findings(results, frontier, ref, init)]
    lines.append("")
    path = leaderboards / "toy_gmm.md"
    path.write_text("\n".join(lines))

    _plot_gmm_samples(world, results, jobs, figures / "toy_gmm_samples.png", n)
    _plot_frontier(frontier, ref, init, figures / "toy_gmm_frontier.png")
    return path


_REG_LABEL = {"kl": "KL", "score": "score (exact)", "score_x0": "score (x0 listing)"}


def _frontier_points(results) -> dict[str, list[tuple[float, dict, float]]]:
    pts = {}
    for reg, alphas in FRONTIER_ALPHAS.items():
        pts[reg] = [(a, results[f"gmm/frontier/{reg}/{a:g}"]["metrics"],
                     results[f"gmm/frontier/{reg}/{a:g}"]["ms_per_step"]) for a in alphas]
    return pts


def frontier_compare(a: list[tuple[float, float]], b: list[tuple[float, float]], n: int = 50,
                     min_overlap: float = 0.05) -> dict:
    """Compare two (reward, y) sweeps over the reward range both cover: each sweep's points sorted
    by reward and linearly interpolated on a common grid. (Not Pareto-filtered: log-likelihood
    rises when samples pile onto mode centres, so a collapsed run can "dominate" a whole sweep.)
    Returns the share of the grid where `a` is higher and the mean gap a - b (overlap None when
    the shared reward range is narrower than `min_overlap`: too little to compare)."""
    fa, fb = sorted(a), sorted(b)
    lo = max(fa[0][0], fb[0][0])
    hi = min(fa[-1][0], fb[-1][0])
    if hi - lo < min_overlap:
        return {"overlap": None, "a_better": float("nan"), "mean_gap": float("nan")}
    grid = np.linspace(lo, hi, n)
    ya = np.interp(grid, [r for r, _ in fa], [y for _, y in fa])
    yb = np.interp(grid, [r for r, _ in fb], [y for _, y in fb])
    return {"overlap": (lo, hi), "a_better": float((ya > yb).mean()), "mean_gap": float((ya - yb).mean())}


# Gaps smaller than these are read as "no difference": single-seed runs of one setting moved
# mode entropy by a few hundredths and log-likelihood by ~0.2 in our runs (a judgement, not a test).
NOISE = {"mode_entropy": 0.05, "loglik": 0.2, "prompt_acc": 0.01}


def _noise_text(noise: dict[str, float]) -> str:
    names = {"reward": "reward", "loglik": "log p_ref", "mode_entropy": "mode entropy", "prompt_acc": "prompt acc",
             "sw": "sliced W2"}
    return ", ".join(f"{names[k]} {v:.3f}" for k, v in noise.items() if k in names) or "n/a"


def set_noise(seed_noise: dict[str, float]) -> None:
    """Use the measured seed-to-seed differences as the tolerance (2x the median difference of a
    two-seed mean's members ~ the spread of the mean itself), never below a small floor."""
    for k in NOISE:
        if k in seed_noise:
            NOISE[k] = max(seed_noise[k], {"mode_entropy": 0.01, "loglik": 0.05, "prompt_acc": 0.003}[k])


def frontier_verdict(c: dict, metric: str, a: str, b: str) -> str:
    if c["overlap"] is None:
        return "no shared reward range, no comparison"
    if abs(c["mean_gap"]) <= NOISE[metric]:
        return (f"the {a} and {b} frontiers coincide within seed noise (|mean gap| <= {NOISE[metric]:.3g}, the "
                "median seed-to-seed difference)")
    if c["a_better"] >= 0.8:
        return f"the {a} frontier lies above the {b} one"
    if c["a_better"] <= 0.2:
        return f"the {b} frontier lies above the {a} one"
    return "the two frontiers cross"


def gmm_findings(results, frontier, ref, init) -> list[str]:
    m = {r: results[f"gmm/{r}"]["metrics"] for r in TABLE_ORDER}
    ms = {r: results[f"gmm/{r}"]["ms_per_step"] for r in TABLE_ORDER}
    out = []
    # 1. Same reward scale: DI*-In vs DI++.
    a, b = m["di_star_in"], m["di_pp"]
    if a["reward"] > b["reward"] + 0.02:
        s = (f"At the same (α_rew, α_cfg), DI*-In (score) reaches reward {a['reward']:.3f} against DI++ (KL) "
             f"{b['reward']:.3f}: at this setting the KL regulariser holds the generator closer to the "
             "reference, so the same α_rew is a weaker reward under KL.")
        if a["mode_entropy"] < b["mode_entropy"] - 0.05:
            s += (f" DI*-In pays for it with diversity (mode entropy {a['mode_entropy']:.2f} vs {b['mode_entropy']:.2f}), "
                  "so this row alone says nothing about which regulariser keeps diversity; the frontier below does.")
    elif b["reward"] > a["reward"] + 0.02:
        s = (f"At the same (α_rew, α_cfg), DI++ (KL) reaches reward {b['reward']:.3f} against DI*-In "
             f"{a['reward']:.3f} (mode entropy {b['mode_entropy']:.2f} vs {a['mode_entropy']:.2f}).")
    else:
        s = (f"At the same (α_rew, α_cfg), DI*-In and DI++ reach similar reward ({a['reward']:.3f} vs "
             f"{b['reward']:.3f}); mode entropy {a['mode_entropy']:.2f} vs {b['mode_entropy']:.2f}.")
    out.append(s)
    # 2. Frontiers.
    verdicts = {}
    for y, label in (("mode_entropy", "diversity (mode entropy)"), ("loglik", "fidelity (log p_ref)"),
                     ("prompt_acc", "prompt accuracy")):
        c = frontier_compare([(p[1]["reward"], p[1][y]) for p in frontier["score"]],
                             [(p[1]["reward"], p[1][y]) for p in frontier["kl"]])
        verdicts[y] = c
        if c["overlap"] is None:
            out.append(f"Reward vs {label}: the KL and score sweeps share too little reward range to compare.")
            continue
        lo, hi = c["overlap"]
        out.append(f"Reward vs {label}, over the shared reward range {lo:.2f}-{hi:.2f}: "
                   f"{frontier_verdict(c, y, 'score', 'KL')} (score higher on {100 * c['a_better']:.0f}% of it, "
                   f"mean gap {c['mean_gap']:+.3f}).")
    # Collapse shape: how abrupt is each regulariser's drop in mode entropy along its sweep?
    for reg in ("score", "kl"):
        ent = [p[1]["mode_entropy"] for p in frontier[reg]]
        alphas = [p[0] for p in frontier[reg]]
        drops = np.diff(ent)
        k = int(np.argmin(drops)) if len(drops) else 0
        if len(drops) and drops[k] < -0.3:
            out.append(f"{_REG_LABEL[reg]}: mode entropy falls from {ent[k]:.2f} to {ent[k + 1]:.2f} between "
                       f"α_rew {alphas[k]:g} and {alphas[k + 1]:g}, an abrupt collapse onto the rewarded mode.")
        else:
            out.append(f"{_REG_LABEL[reg]}: mode entropy goes {' → '.join(f'{e:.2f}' for e in ent)} over α_rew "
                       f"{', '.join(f'{x:g}' for x in alphas)} (no single abrupt drop).")
    # Verdict against the paper's claim.
    c = verdicts["mode_entropy"]
    if c["overlap"] is not None:
        if abs(c["mean_gap"]) <= NOISE["mode_entropy"]:
            out.append("The paper's claim that score regularisation keeps diversity where KL collapses is NOT "
                       "reproduced here: at equal reward both regularisers lose modes along the same curve. The "
                       "difference the same-α_rew rows show is one of strength, not of kind.")
        elif c["a_better"] >= 0.8:
            out.append("This agrees with the paper's claim that score regularisation keeps diversity where KL "
                       "collapses, in the fair (frontier) comparison.")
        elif c["a_better"] <= 0.2:
            out.append("This contradicts the paper's claim that score regularisation keeps diversity where KL "
                       "collapses: on this world, at equal reward, KL keeps more modes.")
        else:
            out.append("The paper's claim (score keeps diversity where KL collapses) is neither confirmed nor "
                       "refuted here: which regulariser is more diverse depends on the reward level.")
    # 3. exact vs x0.
    e, x = m["di_star_in"], m["di_star_in_x0"]
    cost = results.get("_estimator_cost", {}).get("gmm")
    out.append(
        f"Estimators at the best DI*-In row: reward {e['reward']:.3f} (`exact`) vs {x['reward']:.3f} (`x0`), "
        f"log p_ref {e['loglik']:.2f} vs {x['loglik']:.2f}, mode entropy {e['mode_entropy']:.2f} vs "
        f"{x['mode_entropy']:.2f}, prompt acc {e['prompt_acc']:.3f} vs {x['prompt_acc']:.3f}. "
        + (_cost_sentence(cost) if cost else ""))
    for y, label in (("mode_entropy", "mode entropy"), ("loglik", "log p_ref")):
        cx = frontier_compare([(p[1]["reward"], p[1][y]) for p in frontier["score"]],
                              [(p[1]["reward"], p[1][y]) for p in frontier["score_x0"]])
        if cx["overlap"] is not None:
            out.append(f"Reward vs {label} ({cx['overlap'][0]:.2f}-{cx['overlap'][1]:.2f}): "
                       f"{frontier_verdict(cx, y, '`exact`', '`x0`')} (mean gap {cx['mean_gap']:+.3f}). "
                       + ("At equal α_rew `x0` gets less reward: it regularises more strongly (docs/maths.md: it scales "
                          "the mean gradient by (s^2 + sigma^2)/sigma^2 but not the spread's), so α_rew is not "
                          "portable between the estimators." if y == "mode_entropy" and
                          _alpha_reward(frontier, "score_x0", 1.0) < _alpha_reward(frontier, "score", 1.0) else ""))
    # 4. alpha_rew trade along DI*-In.
    rows = ["sim", "di_star_in_low", "di_star_in_mid", "di_star_in"]
    rw = [m[r]["reward"] for r in rows]
    ent = [m[r]["mode_entropy"] for r in rows]
    sw = [m[r]["sw"] for r in rows]
    acc = [m[r]["prompt_acc"] for r in rows]
    trend = "rises monotonically" if all(np.diff(rw) > 0) else "does not rise monotonically"  # noqa: F841
    out.append(f"α_rew along DI*-In (SIM, low, mid, best): reward {trend} ({' → '.join(f'{v:.3f}' for v in rw)}); "
               f"mode entropy {' → '.join(f'{v:.2f}' for v in ent)}, sliced W2 {' → '.join(f'{v:.2f}' for v in sw)}, "
               f"prompt accuracy {' → '.join(f'{v:.3f}' for v in acc)}. "
               + ("A larger α_rew buys reward with diversity and distance to the reference, as the paper says."
                  if all(np.diff(rw) > 0) and ent[-1] < ent[0] else
                  "Reward and diversity move in opposite directions overall, but not monotonically in α_rew: "
                  "at these scales the trend is within run-to-run noise." if rw[-1] > rw[0] and ent[-1] < ent[0]
                  else "The expected reward-for-diversity trade is not visible here."))
    # 5. CFG.
    s_, n_ = m["sim"], m["di_star_in_noreward"]
    out.append(f"CFG: SIM (score + CFG reference) prompt accuracy {s_['prompt_acc']:.3f} vs {n_['prompt_acc']:.3f} "
               f"without guidance (reference samples: {ref['prompt_acc']:.3f}); "
               f"Choice 1 (`di_star_out`) {m['di_star_out']['prompt_acc']:.3f} vs Choice 2 (`di_star_in`) "
               f"{m['di_star_in']['prompt_acc']:.3f} at the same scales.")
    return out


def _alpha_reward(frontier, reg: str, alpha: float) -> float:
    return next((m["reward"] for a, m, _ in frontier[reg] if a == alpha), float("nan"))


def _cost_sentence(cost: dict) -> str:
    r = cost["exact"] / cost["x0"]
    return (f"Cost of one generator step (loss + backward, measured alone, median of {cost['reps']}): `exact` "
            f"{cost['exact']:.1f} ms vs `x0` {cost['x0']:.1f} ms ({r:.2f}x): `exact` backpropagates through both "
            "frozen score networks." if r > 1.1 else
            f"Cost of one generator step (median of {cost['reps']}): `exact` {cost['exact']:.1f} ms vs `x0` "
            f"{cost['x0']:.1f} ms ({r:.2f}x): at this network size the extra backward pass is not measurable.")


def estimator_cost(world_name: str, scale: float, reps: int = 40) -> dict:
    """ms per generator step (terms + backward, no optimiser) for each estimator, interleaved so
    both see the same machine load; the median resists a shared machine's spikes."""
    import torch

    from di_star.noise import weight_fn
    from di_star.trainer import WORLDS, generator_terms
    torch.set_num_threads(1)
    cfg = _scaled(get_preset(f"{world_name}/di_star_in"), scale)
    world = WORLDS.get(world_name)(cfg)
    models = world.build()
    for mod in models.frozen:
        mod.requires_grad_(False)
    models.assistant.requires_grad_(False)
    s_psi = models.make_assistant_score(models.assistant)
    w = weight_fn(cfg.objective.w, world.schedule)
    cfgs = {e: cfg.replace(objective={"estimator": e}) for e in ("exact", "x0")}
    rng = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"exact": [], "x0": []}
    for i in range(reps + 3):
        for est, c in cfgs.items():
            t0 = time.perf_counter()
            terms = generator_terms(world, models.generator, s_psi, models.reference_score, c, rng, "cpu", w)
            sum(v.mean() for v in terms.values()).backward()
            models.generator.zero_grad(set_to_none=True)
            if i >= 3:  # warm-up
                times[est].append(1000 * (time.perf_counter() - t0))
    return {"exact": float(np.median(times["exact"])), "x0": float(np.median(times["x0"])), "reps": reps}


def _plot_gmm_samples(world, results, jobs, path: Path, n: int) -> None:
    import matplotlib.pyplot as plt
    import torch

    from di_star.trainer import EVAL_SEED
    from di_star.toy.gmm_math import preferred_mode
    panels = [("reference", None), ("initial generator", "init")] + [(r, r) for r in TABLE_ORDER]
    fig, axes = plt.subplots(3, 4, figsize=(13, 10), sharex=True, sharey=True)
    means = world.density.means.numpy()
    pref = means[preferred_mode(world.spec).numpy()]
    for ax, (title, key) in zip(axes.flat, panels):
        if key is None:
            c = torch.arange(n) % world.spec.n_classes
            x = world.density.sample(c, torch.Generator().manual_seed(EVAL_SEED)).numpy()
            cls = c.numpy()
        else:
            gen = world.initial_generator() if key == "init" else \
                world.load_generator(Path(results[f"gmm/{key}"]["run_dir"]) / "generator.safetensors")
            x, texts = world.generate(gen, n, EVAL_SEED)
            cls = np.array([int(t.split()[-1]) for t in texts])
        ax.scatter(x[:, 0], x[:, 1], c=cls, cmap="tab10", vmin=0, vmax=9, s=2, alpha=0.5)
        ax.scatter(pref[:, 0], pref[:, 1], marker="*", s=120, c="k", label="rewarded modes")
        ax.set_title(title if key in (None, "init") else f"gmm/{title}", fontsize=9)
        ax.set_xlim(-6, 6)
        ax.set_ylim(-6, 6)
        ax.set_aspect("equal")
    axes.flat[0].legend(loc="lower left", fontsize=7)
    fig.suptitle("gmm: samples coloured by prompt class (stars: rewarded mode of each class)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _plot_frontier(frontier, ref, init, path: Path) -> None:
    import matplotlib.pyplot as plt
    ys = [("loglik", "fidelity: log p_ref(x | c) ↑"), ("mode_entropy", "diversity: mode entropy ↑"),
          ("prompt_acc", "prompt accuracy ↑")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (y, label) in zip(axes, ys):
        for reg, pts in frontier.items():
            r = [p[1]["reward"] for p in pts]
            v = [p[1][y] for p in pts]
            ax.plot(r, v, "o-", label=_REG_LABEL[reg])
            for (a, m, _), rr, vv in zip(pts, r, v):
                ax.annotate(f"{a:g}", (rr, vv), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.scatter([ref["reward"]], [ref[y]], marker="*", s=150, c="k", label="reference", zorder=5)
        ax.scatter([init["reward"]], [init[y]], marker="s", s=50, c="grey", label="initial generator", zorder=5)
        ax.set_xlabel("reward ↑")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("gmm: alpha_rew sweeps (labels), reward against fidelity / diversity / prompt accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# digits.

DIGITS_COLS = [("reward", "ink reward ↑", 3), ("fd", "FD ↓", 2), ("prompt_acc", "prompt acc ↑", 3),
               ("diversity", "diversity ↑", 2)]


def write_digits(results, jobs, out, leaderboards, figures, scale, meta, train_s) -> Path:
    from di_star.toy.digits import DigitsRecipe, DigitsWorld, reference_samples
    from di_star.trainer import EVAL_SEED
    from evalsuite.leaderboard.markdown import md_table  # here: training workers never need it
    cfg0 = next(j.cfg for j in jobs if j.key == "digits/kl")
    recipe = DigitsRecipe().scaled(cfg0.world.recipe_scale)
    world = DigitsWorld(recipe)
    n = cfg0.world.eval_samples
    ms_ = world.metrics()
    ref_imgs, ref_txt = reference_samples(n, EVAL_SEED, 1.0, recipe)
    cfg_scale = world_scales("digits").alpha_cfg
    refg_imgs, _ = reference_samples(n, EVAL_SEED, cfg_scale, recipe)
    ref = ms_.all(ref_imgs, ref_txt)
    refg = ms_.all(refg_imgs, ref_txt)
    init = world.evaluate(world.initial_generator(), n, EVAL_SEED)

    lines = _header("Toy lab: 8x8 handwritten digits (paper Table 2 in miniature)", meta, jobs, "digits", train_s)
    lines += [
        "World: scikit-learn's digits (1797 images, 8x8), prompts \"a handwritten digit k\". Reference: a "
        f"conditional EDM denoiser (MLP) trained once on CPU and cached; multi-step rows sample it with an "
        f"{recipe.ode_steps}-step Heun ODE. The initial one-step generator regresses that ODE map (the DMD2 role); "
        "the assistant starts as a copy of the reference. Reward: ink (mean brightness), which a white blob "
        "maximises. Metrics from a cached digit classifier: Fréchet distance of its features to the real digits "
        "(fidelity), its accuracy on the prompt's digit (CLIP-score analogue), and within-class feature spread "
        "relative to the real digits (diversity, 1 = as diverse as the data).", "",
        f"FD here is computed on {n} samples per row. `distar eval --bench digits` scores 500 images "
        "(50 prompts per digit), and a Fréchet distance estimated from fewer samples is biased upward, "
        "so the same checkpoint reads higher there: compare FDs only at equal sample counts.", "",
    ]
    rows = [_row(f"reference diffusion ({recipe.ode_steps}-step Heun, no CFG)", ["-"] * 4, ref, "-", DIGITS_COLS),
            _row(f"reference diffusion (CFG {cfg_scale:g})", ["-"] * 4, refg, "-", DIGITS_COLS),
            _row("initial generator (ODE regression)", ["-"] * 4, init, "-", DIGITS_COLS)]
    rows += _trained_rows("digits", results, jobs, DIGITS_COLS)
    lines.append(md_table(_SETTINGS_HEADER + [h for _, h, _ in DIGITS_COLS] + ["CPU ms/step ↓"], rows, "-"))
    lines += ["", "![samples](figures/toy_digits_samples.png)", "",
              "## Findings (generated from the numbers above)", ""]
    lines += [f"- {s}" for s in digits_findings(results, init)]
    lines.append("")
    path = leaderboards / "toy_digits.md"
    path.write_text("\n".join(lines))
    panels = [("reference (ODE)", ref_imgs), ("initial generator", world.generate(world.initial_generator(), n, EVAL_SEED)[0])]
    for r in TABLE_ORDER:
        gen = world.load_generator(Path(results[f"digits/{r}"]["run_dir"]) / "generator.safetensors")
        panels.append((f"digits/{r}", world.generate(gen, n, EVAL_SEED)[0]))
    _plot_digit_grids(panels, figures / "toy_digits_samples.png")
    return path


def digits_findings(results, init) -> list[str]:
    m = {r: results[f"digits/{r}"]["metrics"] for r in TABLE_ORDER}
    ms = {r: results[f"digits/{r}"]["ms_per_step"] for r in TABLE_ORDER}
    out = []
    a, b = m["di_star_in"], m["di_pp"]
    out.append(f"Same (α_rew, α_cfg): DI*-In reward {a['reward']:.3f}, FD {a['fd']:.2f}, diversity {a['diversity']:.2f}, "
               f"prompt acc {a['prompt_acc']:.3f}; DI++ (KL) reward {b['reward']:.3f}, FD {b['fd']:.2f}, diversity "
               f"{b['diversity']:.2f}, prompt acc {b['prompt_acc']:.3f}. "
               + ("DI*-In gets more reward and keeps more diversity." if a["reward"] > b["reward"] and a["diversity"] > b["diversity"]
                  else "DI*-In gets more reward but less diversity: at equal α_rew the two regularisers are not "
                       "equally strong, so this is not evidence either way on diversity." if a["reward"] > b["reward"]
                  else "DI++ gets at least as much reward."))
    rows = ["sim", "di_star_in_low", "di_star_in_mid", "di_star_in"]
    rw = [m[r]["reward"] for r in rows]
    fd = [m[r]["fd"] for r in rows]
    acc = [m[r]["prompt_acc"] for r in rows]
    div = [m[r]["diversity"] for r in rows]
    out.append(f"α_rew along DI*-In (SIM, low, mid, best): ink {' → '.join(f'{v:.3f}' for v in rw)}, FD "
               f"{' → '.join(f'{v:.2f}' for v in fd)}, prompt acc {' → '.join(f'{v:.3f}' for v in acc)}, diversity "
               f"{' → '.join(f'{v:.2f}' for v in div)}. "
               + ("More reward costs fidelity (FD up)." if rw[-1] > rw[0] and fd[-1] > fd[0] else
                  "Reward and FD do not trade off monotonically here."))
    e, x = m["di_star_in"], m["di_star_in_x0"]
    cost = results.get("_estimator_cost", {}).get("digits")
    out.append(f"Estimators at the best row: ink {e['reward']:.3f} (`exact`) vs {x['reward']:.3f} (`x0`), FD "
               f"{e['fd']:.2f} vs {x['fd']:.2f}, diversity {e['diversity']:.2f} vs {x['diversity']:.2f}. "
               + (_cost_sentence(cost) if cost else ""))
    k, s = m["kl"], m["di_star_in_noreward"]
    out.append(f"Without reward or CFG, the KL run moves FD {init['fd']:.2f} → {k['fd']:.2f} and the score run "
               f"{init['fd']:.2f} → {s['fd']:.2f} (diversity {init['diversity']:.2f} → {k['diversity']:.2f} / "
               f"{s['diversity']:.2f}).")
    broken = [r for r in TABLE_ORDER if m[r]["fd"] > 10 * init["fd"] or m[r]["diversity"] < 0.05]
    if broken:
        out.append(f"Diverged (FD > 10x the initial generator's, or no diversity left): "
                   f"{', '.join(f'`digits/{r}`' for r in broken)}. "
                   + ("Choice 1 diverged at the scales where Choice 2 trained: its implicit reward "
                      "log p(x|c) - log p(x) is unbounded off the data, and the pseudo-Huber regulariser's pull is "
                      "bounded, so nothing holds the generator. This matches the paper's remark that Choice 2 is "
                      "easier to tune." if "di_star_out" in broken and "di_star_in" not in broken else ""))
    out.append(f"CFG: SIM prompt acc {m['sim']['prompt_acc']:.3f} and Diff-Instruct {m['diff_instruct']['prompt_acc']:.3f} "
               f"vs {s['prompt_acc']:.3f} / {k['prompt_acc']:.3f} without; Choice 1 (`di_star_out`) ink "
               f"{m['di_star_out']['reward']:.3f}, FD {m['di_star_out']['fd']:.2f} vs Choice 2 (`di_star_in`) ink "
               f"{e['reward']:.3f}, FD {e['fd']:.2f}.")
    return out


def _plot_digit_grids(panels: list[tuple[str, np.ndarray]], path: Path, per_class: int = 6) -> None:
    import matplotlib.pyplot as plt
    cols = 4
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.2, rows * 5.0))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, imgs) in zip(axes.flat, panels):
        # Images are ordered class-major by index (i % 10), so column j of class k is image k + 10 j.
        grid = np.ones((10 * 9, per_class * 9))
        for k in range(10):
            for j in range(per_class):
                grid[k * 9:k * 9 + 8, j * 9:j * 9 + 8] = imgs[k + 10 * j]
        ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
    fig.suptitle("digits: one row per prompt (digit 0-9), same z in every panel")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
