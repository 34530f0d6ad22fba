"""The over-optimisation report, written from a sweep's store (`distar lab overopt-report`):
leaderboards/mini_overoptimization.md and its figure, every number computed here from
OUT/results (the store) and OUT/sweep.json (what each model is).

Statistics: a run's change is measured against the one-step init on the same (prompt, noise)
pairs; the seeds of a configuration are pooled as replications within each prompt, and the
prompt is the unit (evalsuite.metrics.stats.paired_test with clusters = prompts: sign-flip
p-value, cluster-bootstrap 95% interval). Per-seed changes are listed beside the pooled one, so
no seed spread stands alone.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from distar.core.paths import portable_path
from evalsuite.metrics.stats import paired_test, replicate_interval
from di_star.mini.challenges import keep_latest_versions, prompt_challenges

GOLD, ORACLE, PROXY = "mini_gold", "mini_oracle", "mini_pickscore"
KEYS = ["prompt_index", "k"]
# The proxy ladder's manifest (`distar lab proxy-ladder --ship`): each rung's measured agreement
# with the hard gold on held-out pairs of generator samples. Read as JSON: the report needs the
# numbers, not the rungs' weights.
LADDER_MANIFEST = Path(__file__).resolve().parent / "data" / "proxy_ladder" / "manifest.json"


def load(sweep_dir: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame, dict]:
    """(sweep record, per-image scores, set scores with their model, prompt challenge by index)."""
    from distar.core.errors import DistarError
    from evalsuite.store import ResultsStore
    rec_path = sweep_dir / "sweep.json"
    if not rec_path.is_file():
        raise DistarError(f"{rec_path} does not exist. Fix: run `distar lab sweep --out {sweep_dir}` first.")
    rec = json.loads(rec_path.read_text())
    store = ResultsStore(sweep_dir / "results", create=False)
    scores = store.table("model_scores")
    # A resumed sweep can hold a metric under two definitions (mini_attr_acc before and after
    # its strict checks): pair only the latest one.
    images = store.table("images")
    current = latest_recipes(images)
    scores = keep_latest_versions(scores[(scores.bench == rec["bench"]) & scores.recipe_hash.isin(current)
                                         & scores.prompt_index.isin(plan_prompts(rec))])
    models = images[images.recipe_hash.isin(current)][["recipe_hash", "model"]].drop_duplicates()
    sets = store.table("set_scores").merge(models, on="recipe_hash")[["metric", "value", "model"]]
    return rec, scores, sets, prompt_challenges(store, rec["bench"])


def plan_prompts(rec: dict) -> list[int]:
    """The prompt indices the sweep's plan evaluates. A store can hold a model's images on more
    prompts (a sweep resumed with another subset): the paired tests keep to the plan's."""
    from evalsuite.benchmarks import load_benchmark
    from evalsuite.generate import select_prompts
    plan = rec["plan"]
    return [p.index for p in select_prompts(load_benchmark(rec["bench"]), plan["prompts"], plan.get("spread", False))]


def latest_recipes(images: pd.DataFrame) -> set[str]:
    """Per model name, the recipe hash of its newest images. A store resumed in another clone
    holds the same models under a second hash (a local model's recipe names its folder), with
    identical images: counting both would double every image in the paired tests."""
    newest = images.sort_values("created_at").groupby("model").recipe_hash.last()
    return set(newest.to_numpy())


def configs(rec: dict) -> dict[tuple, list[dict]]:
    """Runs grouped by configuration (regulariser, reward, alpha_cfg): the seeds of each."""
    out: dict[tuple, list[dict]] = {}
    for r in rec["runs"]:
        out.setdefault((r["regulariser"], r["reward"], r["alpha_cfg"]), []).append(r)
    return out


def _values(scores: pd.DataFrame, model: str, metric: str) -> pd.DataFrame:
    s = scores[(scores.model == model) & (scores.metric == metric)]
    return s[KEYS + ["value"]]


def paired_change(scores: pd.DataFrame, models: list[str], base: str, metric: str):
    """Runs `models` (seeds) vs `base` on the same prompts and noise: the pooled paired test
    (prompts as units) and each seed's mean change."""
    return paired_pairs(scores, [(m, base) for m in models], metric)


def paired_pairs(scores: pd.DataFrame, pairs: list[tuple[str, str]], metric: str):
    """Model a vs model b of each pair (a seed's run vs the init, the reference, or the same
    seed's run of another configuration) on the same prompts and noise, the pairs pooled within
    prompts: the paired test (prompts as units) and each pair's mean change."""
    a_all, b_all, clusters, per_seed = [], [], [], []
    for m, base in pairs:
        j = _values(scores, m, metric).merge(_values(scores, base, metric), on=KEYS, suffixes=("_a", "_b"))
        if j.empty:
            continue
        a_all.append(j.value_a.to_numpy())
        b_all.append(j.value_b.to_numpy())
        clusters.append(j.prompt_index.to_numpy())
        per_seed.append(float((j.value_a - j.value_b).mean()))
    if not a_all or sum(len(x) for x in a_all) < 2:
        return None, per_seed
    res = paired_test(np.concatenate(a_all), np.concatenate(b_all), clusters=np.concatenate(clusters))
    return res, per_seed


def _fmt(res, per_seed, d: int = 3) -> str:
    if res is None:
        return "n/a"
    seeds = ", ".join(f"{x:+.{d}f}" for x in per_seed)
    return f"{res.mean_diff:+.{d}f} [{res.low:+.{d}f}, {res.high:+.{d}f}] p={res.p_value:.3g} (seeds: {seeds})"


def _subset(plan: dict) -> str:
    if plan["prompts"] is None:
        return ""
    return " (evenly spaced over its challenges)" if plan.get("spread") else " (the first ones)"


def _label(cfg: tuple) -> str:
    reg, reward, c = cfg
    name = {"score": "DI*-In", "kl": "DI++ (KL)"}[reg]
    return f"{name}, reward {reward}" + (f", alpha_cfg {c:g}" if c is not None else "")


def curve_rows(rec: dict, scores: pd.DataFrame, sets: pd.DataFrame) -> list[dict]:
    """One row per configuration and checkpoint: paired changes vs the init of gold, oracle,
    proxy, attribute accuracy, diversity; FD per seed."""
    init = rec["init"]
    metrics = list(dict.fromkeys([GOLD, ORACLE, PROXY, *rec["plan"]["rewards"], "mini_attr_acc", "mini_diversity"]))
    rows = []
    for cfg, runs in configs(rec).items():
        steps = sorted({int(s) for r in runs for s in r["models"]})
        for step in steps:
            models = [r["models"][str(step)] for r in runs if str(step) in r["models"]]
            row = {"config": cfg, "step": step, "seeds": len(models)}
            for metric in metrics:
                row[metric] = paired_change(scores, models, init, metric)
            fd = sets[(sets.metric == "mini_fd") & sets.model.isin(models)].value.to_numpy()
            row["fd"] = fd
            rows.append(row)
    return rows


def challenge_table(rec: dict, scores: pd.DataFrame, challenge: dict, models: list[str]) -> str:
    """Attribute accuracy (mini_attr_acc, its latest stored version) per challenge, mean with a
    prompt-bootstrap interval (di_star.mini.challenges)."""
    from di_star.mini.challenges import challenge_table as table
    return table(scores, challenge, "mini_attr_acc", models)


def best_vs_reference(rec: dict, scores: pd.DataFrame, rows: list[dict]):
    """The one-step configuration and checkpoint with the highest gold change, tested against
    the 15-step reference on gold (same prompts and noise, seeds pooled)."""
    cand = [r for r in rows if r[GOLD][0] is not None]
    if not cand:
        return None
    best = max(cand, key=lambda r: r[GOLD][0].mean_diff)
    runs = configs(rec)[best["config"]]
    models = [r["models"][str(best["step"])] for r in runs if str(best["step"]) in r["models"]]
    return best, paired_change(scores, models, rec["reference"], GOLD), \
        paired_change(scores, models, rec["reference"], PROXY)


def plot(rows: list[dict], path: Path, init_fd: float = float("nan")) -> Path | None:
    """Gold change against the optimised reward's change along training, per configuration
    (Gao et al.'s over-optimisation curves in miniature), 95% intervals both ways; gold change
    against steps; and the frontier of gold change against drift from the data (FD, the seeds'
    t-interval), DI*-In (circles) against DI++ (KL, squares)."""
    from matplotlib import rcParams
    from matplotlib.figure import Figure

    from evalsuite.leaderboard.plots import save_png
    fig = Figure(figsize=(16, 4.8))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    # One colour per (reward, alpha_cfg), DI*-In solid with circles, DI++ (KL) dashed with squares.
    palette = [c["color"] for c in rcParams["axes.prop_cycle"]]
    colours: dict = {}
    for cfg in dict.fromkeys(r["config"] for r in rows):
        colour = colours.setdefault(cfg[1:], palette[len(colours) % len(palette)])
        style = dict(color=colour, marker="o" if cfg[0] == "score" else "s",
                     linestyle="-" if cfg[0] == "score" else "--", capsize=2, label=_label(cfg))
        pts = [r for r in rows if r["config"] == cfg and r[GOLD][0] is not None]
        if not pts:
            continue
        reward = cfg[1] if cfg[1] != "none" else PROXY
        xs = [0.0] + [r[reward][0].mean_diff if r[reward][0] else np.nan for r in pts]
        ys = [0.0] + [r[GOLD][0].mean_diff for r in pts]
        steps = [0] + [r["step"] for r in pts]
        yerr = [[0.0] + [r[GOLD][0].mean_diff - r[GOLD][0].low for r in pts],
                [0.0] + [r[GOLD][0].high - r[GOLD][0].mean_diff for r in pts]]
        xerr = [[0.0] + [(r[reward][0].mean_diff - r[reward][0].low) if r[reward][0] else 0 for r in pts],
                [0.0] + [(r[reward][0].high - r[reward][0].mean_diff) if r[reward][0] else 0 for r in pts]]
        ax1.errorbar(xs, ys, xerr=xerr, yerr=yerr, **style)
        for x, y, s in zip(xs, ys, steps):
            ax1.annotate(str(s), (x, y), fontsize=7)
        ax2.errorbar(steps, ys, yerr=yerr, **style)
        fds = [replicate_interval(r["fd"]) if len(r["fd"]) else (np.nan,) * 3 for r in pts]
        fx = [init_fd] + [f[0] for f in fds]
        fxerr = [[0.0] + [f[0] - f[1] if np.isfinite(f[1]) else 0.0 for f in fds],
                 [0.0] + [f[2] - f[0] if np.isfinite(f[2]) else 0.0 for f in fds]]
        ax3.errorbar(fx, ys, xerr=fxerr, yerr=yerr, **style)
    ax1.axhline(0, color="grey", lw=0.5)
    ax1.set_xlabel("change of the optimised reward vs init (reward-free: the proxy)")
    ax1.set_ylabel("change of the hard gold judge vs init")
    ax1.legend(fontsize=7)
    ax2.axhline(0, color="grey", lw=0.5)
    ax2.set_xlabel("generator steps")
    ax2.set_ylabel("change of the hard gold judge vs init")
    ax3.axhline(0, color="grey", lw=0.5)
    ax3.set_xlabel("FD to ground truth (seeds' mean, 95% t-interval)")
    ax3.set_ylabel("change of the hard gold judge vs init")
    fig.suptitle("mini world: gold vs optimised reward along DI* training (labels: steps; bars: 95% CI, prompts as units)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_png(fig, path)


def write_report(sweep_dir: Path, out_dir: Path, oracle_check: Path | None = None,
                 ladder_manifest: Path | None = LADDER_MANIFEST) -> list[Path]:
    """leaderboards/mini_overoptimization.md and figures/mini_overoptimization.png."""
    from distar.core.atomic import write_text
    rec, scores, sets, challenge = load(Path(sweep_dir))
    rows = curve_rows(rec, scores, sets)
    plan = rec["plan"]
    init_fd = sets[(sets.metric == "mini_fd") & (sets.model == rec["init"])].value.to_numpy()
    fig = plot(rows, Path(out_dir) / "figures" / "mini_overoptimization.png",
               float(init_fd[-1]) if len(init_fd) else float("nan"))
    L = [f"# Mini world: does DI* raise what its reward stands for? ({plan['label']})", "",
         f"Written by `distar lab overopt-report` from the store of `distar lab sweep` ({portable_path(sweep_dir)}). "
         f"Plan: rewards {', '.join(plan['rewards'])}; regularisers {', '.join(plan['regularisers'])}; "
         f"seeds {', '.join(map(str, plan['seeds']))} (each its own training noise and prompt order); "
         f"checkpoints {', '.join(map(str, plan['checkpoints']))} generator steps; "
         f"reward-free runs: {'yes' if plan['reward_free'] else 'no'}; alpha_cfg ladder: "
         f"{', '.join(f'{c:g}' for c in plan['cfg_ladder']) or 'none'}; "
         f"{plan['prompts'] or 'all'} mini_parti prompts{_subset(plan)} x {plan['images_per_prompt']} images, the same noise "
         f"for every model. Device: {rec['device']}, {rec['workers']} concurrent runs; each run's cost per step: "
         "the table at the end.", ""]
    missing = missing_from_full(plan)
    if missing:
        L += ["**Not in this sweep** (the full plan of `distar lab sweep` has them; they wait for a GPU): "
              + "; ".join(missing) + ".", ""]
    if oracle_check is not None and Path(oracle_check).is_file():
        oc = json.loads(Path(oracle_check).read_text())
        a, p = oc["spearman"]["all"], oc["proxy_spearman_with_gold"]
        L += [f"**The rewards' agreement with the hard gold judge** (`distar lab oracle-check`, {a['n_images']} "
              f"reference + init images, {a['n_prompts']} prompts; Spearman, 95% prompt-bootstrap interval): "
              f"oracle `mini_oracle` {a['rho']:.3f} [{a['low']:.3f}, {a['high']:.3f}]; shipped proxy "
              f"`mini_pickscore` {p['rho']:.3f} [{p['low']:.3f}, {p['high']:.3f}].", ""]
    L += ladder_lines(ladder_manifest, plan["rewards"])
    others = [m for m in plan["rewards"] if m not in (ORACLE, PROXY)]  # the ladder's rungs
    L += ["## Changes against the one-step init along training", "",
          "Mean change over images (seeds pooled), 95% cluster-bootstrap interval and sign-flip p with prompts "
          "as units; each seed's own mean change in brackets. FD: each seed's value (the init's below).", "",
          "| run | step | seeds | gold | oracle | proxy (mini_pickscore) | "
          + "".join(f"{m} | " for m in others) + "attr. acc. | diversity | FD per seed |",
          "|---" * (9 + len(others)) + "|"]
    for r in rows:
        fd = ", ".join(f"{v:.0f}" for v in r["fd"]) or "n/a"
        L.append(f"| {_label(r['config'])} | {r['step']} | {r['seeds']} | {_fmt(*r[GOLD])} | {_fmt(*r[ORACLE])} | "
                 f"{_fmt(*r[PROXY])} | " + "".join(f"{_fmt(*r[m])} | " for m in others)
                 + f"{_fmt(*r['mini_attr_acc'], d=2)} | {_fmt(*r['mini_diversity'])} | {fd} |")
    ref_fd = sets[(sets.metric == "mini_fd") & (sets.model == rec["reference"])].value.to_numpy()
    L += ["", f"FD of the init: {', '.join(f'{v:.0f}' for v in init_fd) or 'n/a'}; of the 15-step reference: "
          f"{', '.join(f'{v:.0f}' for v in ref_fd) or 'n/a'} (FD is a set statistic: no per-prompt interval).", ""]
    if fig:
        L += [f"![gold vs reward](figures/{fig.name})", ""]
    L += ["## Findings (generated from the paired tests above)", ""]
    L += findings(rows)
    L += contrast_lines(rec, scores)
    best = best_vs_reference(rec, scores, rows)
    if best:
        b, (g, gs), (p, ps) = best
        L += ["", f"**Best one-step run vs the 15-step reference** ({_label(b['config'])}, step {b['step']}, "
              f"the highest gold change): gold {_fmt(g, gs)}; proxy {_fmt(p, ps)}."]
    last = max(int(s) for r in rec["runs"] for s in r["models"])
    groups = [("15-step reference", [rec["reference"]]), ("one-step init", [rec["init"]])] + \
        [(f"{_label(cfg)} @ {last}", [r["models"][str(last)] for r in runs if str(last) in r["models"]])
         for cfg, runs in configs(rec).items()]
    L += ["", "## Attribute accuracy per challenge (`mini_attr_acc`, prompt means, 95% studentised bootstrap clipped to [0, 1])", "",
          challenge_table(rec, scores, challenge, groups), "",
          "## Cost", "",
          "Per generator step, as the trainer recorded it (RUN/stats.jsonl, its last entry): wall and CPU "
          "seconds of one process; on a shared CPU the wall includes waiting for a core.", "",
          "| run | steps | wall s / step | CPU s / step |", "|---|---|---|---|"]
    for r in rec["runs"]:
        st = last_stats(Path(sweep_dir) / "runs" / r["key"])
        L.append(f"| {r['key']} | {st.get('step', 'n/a')} | {st.get('ms_per_step', float('nan')) / 1000:.2f} | "
                 f"{st.get('cpu_ms_per_step', float('nan')) / 1000:.2f} |")
    path = Path(out_dir) / "mini_overoptimization.md"
    write_text(path, "\n".join(L) + "\n")
    return [path] + ([fig] if fig else [])


def ladder_lines(manifest: Path | None, rewards) -> list[str]:
    """Each proxy rung's measured agreement with the hard gold on held-out pairs of generator
    samples, from the ladder's manifest (nothing when there is no ladder); rungs this sweep
    optimised are marked."""
    if manifest is None or not Path(manifest).is_file():
        return []
    from distar.core.errors import read_json_file
    proxies = read_json_file(Path(manifest), "rebuild it with `distar lab proxy-ladder --ship`").get("proxies", {})
    if not proxies:
        return []
    cells = []
    for name, e in proxies.items():
        lo, hi = e["agreement_ci"]
        cells.append(f"`{name}` {e['agreement']:.3f} [{lo:.3f}, {hi:.3f}] (Spearman {e['spearman']:.2f}"
                     f"{'; optimised here' if name in rewards else ''})")
    return [f"**The proxy ladder's agreement with the hard gold judge** on held-out pairs of generator samples "
            f"(share of pairs ordered as gold orders them, 95% prompt-bootstrap interval; image-level Spearman; "
            f"from {portable_path(Path(manifest))}): " + "; ".join(cells) + ".", ""]


def last_stats(run_dir: Path) -> dict:
    """The trainer's last stats line of a run (step, ms_per_step, cpu_ms_per_step), {} if none."""
    path = run_dir / "stats.jsonl"
    if not path.is_file():
        return {}
    lines = [x for x in path.read_text().splitlines() if x.strip()]
    rows = [json.loads(x) for x in lines]
    timed = [r for r in rows if "ms_per_step" in r]
    return timed[-1] if timed else {}


def missing_from_full(plan: dict) -> list[str]:
    """What the full plan (SweepPlan()'s defaults) has and this sweep's plan lacks."""
    from dataclasses import asdict

    from di_star.mini.sweep import SweepPlan, preset_alpha_cfg
    full = asdict(SweepPlan())
    out = []
    have = {**plan, "cfg_ladder": [*plan["cfg_ladder"], preset_alpha_cfg(plan["rewards"][0])] if plan["cfg_ladder"] else []}
    for key, what in (("rewards", "rewards"), ("regularisers", "regularisers"), ("checkpoints", "checkpoints"),
                      ("cfg_ladder", "alpha_cfg ladder values")):
        lack = [x for x in full[key] if x not in have[key]]
        if lack:
            out.append(f"{what} {', '.join(f'{x:g}' if isinstance(x, float) else str(x) for x in lack)}")
    proxies = [r for r in plan["rewards"] if r != ORACLE]
    if len(proxies) < 3:
        out.append(f"a ladder of >= 3 proxies of measured agreement (here {len(proxies)}: {', '.join(proxies) or 'none'})")
    if len(plan["seeds"]) < len(full["seeds"]):
        out.append(f"{len(full['seeds'])} seeds (here {len(plan['seeds'])})")
    if full["reward_free"] and not plan["reward_free"]:
        out.append("the reward-free runs")
    if plan["prompts"] is not None:
        out.append(f"all 300 prompts (here {plan['prompts']})")
    return out


def contrasts(rec: dict) -> list[tuple[str, tuple, tuple]]:
    """(what, configuration a, configuration b) pairs compared seed by seed at the last step:
    each reward's run against the same regulariser's reward-free run (what the reward adds), and
    DI++ (KL) against DI*-In (score) for the same reward (what the regulariser changes)."""
    cfgs = configs(rec)
    out = []
    for a in cfgs:
        free = [k for k in cfgs if k[0] == a[0] and k[1] == "none"]
        if a[1] != "none" and free:
            out.append((f"{_label(a)} vs its reward-free run", a, free[0]))
    for a in cfgs:
        twin = [k for k in cfgs if k[0] == "score" and k[1] == a[1]]
        if a[0] == "kl" and twin:
            out.append((f"DI++ (KL) vs DI*-In, reward {a[1]}", a, twin[0]))
    return out


def contrast_lines(rec: dict, scores: pd.DataFrame) -> list[str]:
    """The contrasts' paired tests on gold (seed s of a against seed s of b: the same evaluation
    prompts and noise; prompts as units)."""
    cfgs = configs(rec)
    lines = []
    for what, a, b in contrasts(rec):
        pairs = []
        for ra in cfgs[a]:
            rb = [r for r in cfgs[b] if r["seed"] == ra["seed"]]
            if rb:
                step = str(max(int(s) for s in ra["models"]))
                if step in rb[0]["models"]:
                    pairs.append((ra["models"][step], rb[0]["models"][step]))
        res, per = paired_pairs(scores, pairs, GOLD)
        if res is not None:
            lines.append(f"- {what}, seed by seed at the last step ({len(pairs)} seeds): gold {_fmt(res, per)}.")
    return (["", "**Contrasts** (paired: seed s of one configuration against seed s of the other, same "
             "evaluation prompts and noise; prompts as units):", ""] + lines) if lines else []


def findings(rows: list[dict]) -> list[str]:
    """One sentence per configuration at its last checkpoint, from the paired tests."""
    out = []
    last = {}
    for r in rows:
        last[r["config"]] = r
    for cfg, r in last.items():
        g = r[GOLD][0]
        if g is None:
            continue
        reward = cfg[1] if cfg[1] != "none" else None
        rr = r[reward][0] if reward else None

        def verdict(res) -> str:
            if res.low > 0:
                return "raises"
            if res.high < 0:
                return "lowers"
            return "does not significantly move"
        own = (f"{verdict(rr)} its own reward ({rr.mean_diff:+.3f} [{rr.low:+.3f}, {rr.high:+.3f}]) and "
               if rr is not None else "")
        out.append(f"- {_label(cfg)}, {r['step']} steps, {r['seeds']} seeds: {own}{verdict(g)} the hard gold judge "
                   f"({g.mean_diff:+.3f} [{g.low:+.3f}, {g.high:+.3f}], p={g.p_value:.3g}).")
    return out
