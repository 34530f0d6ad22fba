"""Findings of the mini ablation, generated from the results store (never typed by hand): each
sentence is a comparison of measured numbers with a paired test, and says plainly where the
paper is contradicted. Also the figures: KL / score frontiers and a sample grid.

Comparisons are paired: every model saw the same prompts and the same initial noise (the
harness's seeds), so a difference is tested on the images both have, prompts as the units
(evalsuite.metrics.stats.paired_test). "Higher" / "lower" means p < ALPHA; otherwise "no
significant difference".
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from di_star.presets import TABLE_ORDER, world_scales
from di_star.toy.demo import frontier_compare
from evalsuite.leaderboard import Entry, load_entries
from evalsuite.metrics.stats import paired_test
from evalsuite.store import ResultsStore

ALPHA = 0.05
MAIN_BENCH, SET_BENCH = "mini_parti", "mini_coco"
FINDINGS_FILE = "mini_findings.md"
FRONTIER_FIG, SAMPLES_FIG = "mini_frontiers.png", "mini_samples.png"


def _metric(entries: list[Entry], *needles: str) -> tuple[str, str] | None:
    """The (metric, version) whose name contains the first needle found (the mini metrics are
    discovered, not hard-coded)."""
    keys = sorted({k for e in entries for k in e.metric_keys()})
    for n in needles:
        for m, v in keys:
            if n in m:
                return m, v
    return None


class Board:
    """The store's entries of one benchmark, found by role: reference, init, preset (+ seed)."""

    def __init__(self, entries: list[Entry], bench: str, reference: str, init: str):
        es = [e for e in entries if e.bench == bench]
        newest = max((e.bench_version for e in es), default=None)
        self.entries = [e for e in es if e.bench_version == newest]
        self.reference = next((e for e in self.entries if e.name == reference), None)
        self.init = next((e for e in self.entries if e.name == init), None)

    def run(self, row: str, seed: int = 0) -> Entry | None:
        for e in self.entries:
            if e.meta("preset") == f"mini/{row}" and int(e.meta("seed") or 0) == seed:
                return e
        return None

    def seeds(self, row: str) -> list[Entry]:
        """The row's runs in seed order (the store lists them in the order they finished)."""
        return sorted((e for e in self.entries if e.meta("preset") == f"mini/{row}"),
                      key=lambda e: int(e.meta("seed") or 0))


def mean(e: Entry | None, key: tuple[str, str] | None) -> float | None:
    if e is None or key is None:
        return None
    s = e.summary(*key)
    return None if s is None else s.value


def compare(a: Entry | None, b: Entry | None, key: tuple[str, str] | None) -> dict | None:
    """Paired test of a - b on their common images; None when either is missing."""
    if a is None or b is None or key is None:
        return None
    x = a.image_scores(*key).merge(b.image_scores(*key), on=["prompt_index", "k"])
    if len(x) < 2 or x.prompt_index.nunique() < 2:
        return None
    r = paired_test(x.value_x.to_numpy(), x.value_y.to_numpy(), n_boot=2000, seed=0,
                    clusters=x.prompt_index.to_numpy())
    return {"diff": r.mean_diff, "low": r.low, "high": r.high, "p": r.p_value, "n": r.n}


def compare_pooled(runs: Sequence[Entry], b: Entry | None, key: tuple[str, str] | None) -> dict | None:
    """Paired test of several seeds' runs against b, the seeds pooled as replications within each
    prompt and the prompt the unit (the seeds share the evaluation's prompts and noise, so they
    are not independent of one another); None when nothing is paired."""
    if b is None or key is None:
        return None
    xs = [a.image_scores(*key).merge(b.image_scores(*key), on=["prompt_index", "k"]) for a in runs]
    x = pd.concat([x for x in xs if len(x)], ignore_index=True) if any(len(x) for x in xs) else None
    if x is None or x.prompt_index.nunique() < 2:
        return None
    r = paired_test(x.value_x.to_numpy(), x.value_y.to_numpy(), n_boot=2000, seed=0,
                    clusters=x.prompt_index.to_numpy())
    return {"diff": r.mean_diff, "low": r.low, "high": r.high, "p": r.p_value, "n": r.n}


def seeds_sentence(per_seed: Sequence[tuple[int, dict | None]], pooled: dict | None, name: str) -> str:
    """The seeds' changes as paired tests: each seed's own (seed, test), then the pooled one. No
    seed-to-seed spread: it ignores prompt noise, and the seeds share prompts and noise."""
    tests = [f"seed {i}: {said(c, name)}" for i, c in per_seed if c is not None]
    if len(tests) < 2 or pooled is None:
        return ""
    return (f" Per training seed, paired against the init (same prompts and noise, prompts as units): "
            f"{'; '.join(tests)}; the {len(tests)} seeds pooled as replications within each prompt: "
            f"{said(pooled, name)}.")


def verdict(c: dict | None) -> str:
    if c is None:
        return "not measured"
    return "higher" if c["diff"] > 0 and c["p"] < ALPHA else "lower" if c["diff"] < 0 and c["p"] < ALPHA else "same"


def said(c: dict | None, name: str) -> str:
    if c is None:
        return f"{name}: not measured"
    word = {"higher": "higher", "lower": "lower", "same": "no significant difference"}[verdict(c)]
    return f"{name} {c['diff']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}], p={c['p']:.2g} ({word})"


def findings(entries: list[Entry], reference: str, init: str, timing: dict | None = None,
             main_bench: str = MAIN_BENCH, set_bench: str = SET_BENCH) -> list[str]:
    b = Board(entries, main_bench, reference, init)
    bs = Board(entries, set_bench, reference, init)
    proxy = _metric(b.entries, "proxy", "pick")
    gold = _metric(b.entries, "gold")
    div = _metric(b.entries, "div")
    clip = _metric(b.entries, "clip")
    fid = _metric(bs.entries, "fid", "_fd")
    out: list[str] = []
    if b.init is None or proxy is None:
        return [f"No results of the init `{init}` with a proxy-reward metric on {main_bench}: nothing to compare."]
    best = b.run("di_star_in")
    best_s = world_scales("mini")

    # 1. Does DI* raise the proxy AND the gold?
    cp, cg = compare(best, b.init, proxy), compare(best, b.init, gold)
    runs = b.seeds("di_star_in")
    line = (f"**DI\\*-In at the best row ({best_s.rewards[2]:g}, {best_s.alpha_cfg:g}) vs the one-step init**, "
            f"{main_bench}: {said(cp, 'proxy reward')}; {said(cg, 'gold judge')}.")
    line += seeds_sentence([(int(e.meta("seed") or 0), compare(e, b.init, proxy)) for e in runs],
                           compare_pooled(runs, b.init, proxy), "proxy")
    vp, vg = verdict(cp), verdict(cg)
    line += {("higher", "higher"): " DI* raises the learned proxy and the hidden gold judge: the proxy's gains are real.",
             ("higher", "lower"): " The proxy rises while the gold judge falls: reward hacking.",
             ("higher", "same"): " The proxy rises; the gold judge does not move significantly."}.get(
        (vp, vg), " DI* does not raise the proxy significantly at this training length.")
    out.append(line)

    # 2. Reward hacking anywhere.
    hacked, lifted = [], []
    for e in b.entries:
        if e is b.init or e is b.reference or e.meta("preset") is None:
            continue
        p, g = compare(e, b.init, proxy), compare(e, b.init, gold)
        name = f"{e.meta('preset')}" + (f"@s{e.meta('seed')}" if e.meta("seed") else "")
        if verdict(p) == "higher" and verdict(g) == "lower":
            hacked.append(f"{name} (proxy {p['diff']:+.4f}, gold {g['diff']:+.4f})")
        elif verdict(p) == "higher" and verdict(g) == "higher":
            lifted.append(name)
    out.append("**Reward hacking** (proxy significantly up and gold significantly down against the init): "
               + ("; ".join(hacked) if hacked else "none of the trained runs") + ". Proxy and gold both up: "
               + (", ".join(sorted(lifted)) if lifted else "none") + ".")

    # 3. KL vs score at equal proxy reward (frontiers).
    fr = frontier_points(b, bs, proxy, gold, fid, div)
    if fr:
        parts = []
        for label, idx in (("gold judge", 1), ("FID (lower is better)", 2), ("diversity", 3)):
            a = [(p[0], p[idx]) for p in fr["score"] if p[idx] is not None]
            k = [(p[0], p[idx]) for p in fr["kl"] if p[idx] is not None]
            if len(a) >= 2 and len(k) >= 2:
                c = frontier_compare(a, k, min_overlap=0.0)
                if c["overlap"] is None:
                    parts.append(f"{label}: the sweeps share no proxy range")
                else:
                    better = c["a_better"] if idx != 2 else 1 - c["a_better"]
                    who = ("score" if better >= 0.8 else "KL" if better <= 0.2 else None)
                    parts.append(f"{label}: " + (f"the {who} frontier is better on {max(better, 1 - better):.0%} of the shared "
                                                 f"proxy range" if who else "the frontiers cross")
                                 + f" (mean gap score - KL {c['mean_gap']:+.4f})")
        out.append("**KL vs score at equal proxy reward** (alpha_rew sweeps, no CFG, points interpolated over the "
                   "proxy range both cover): " + "; ".join(parts) + ".")

    # 4. Diversity: paired per prompt through the metric's per-image values (each image's mean
    # cosine distance to the other images of its prompt; their prompt mean is the prompt's
    # diversity, evalsuite.metrics.diversity), prompts as units like every comparison here.
    if div is not None:
        rows = {r: b.run(r) for r in ("di_star_in", "di_pp")}
        c_in, c_pp = compare(rows["di_star_in"], b.init, div), compare(rows["di_pp"], b.init, div)
        c_x = compare(rows["di_star_in"], rows["di_pp"], div)
        claim = verdict(c_x)
        why = ("" if len(b.init.image_scores(*div)) else
               f" ({div[0]} of the init has no per-image values, only a set value: it was scored "
               f"before they were stored; rerun `distar eval ... --metrics {div[0]}` on the same "
               "--out to add them)")
        out.append(f"**Diversity** ({div[0]}, intra-prompt mean cosine distance, paired by prompt): "
                   f"{said(c_in, 'DI*-In vs init')}; {said(c_pp, 'DI++ (KL) vs init')}; "
                   f"{said(c_x, 'DI*-In vs DI++')}{why}. "
                   + {"higher": "The score regulariser keeps more diversity than KL at the same scales, as the paper says.",
                      "lower": "KL keeps MORE diversity than the score regulariser here: the paper's claim is contradicted.",
                      "same": "No significant diversity difference between KL and score at the same scales: the paper's "
                              "claim that KL collapses is not reproduced here."}.get(claim, ""))

    # 5. Choice 1 vs Choice 2.
    c1, c2 = b.run("di_star_out"), best
    cmp = {n: compare(c2, c1, k) for n, k in (("proxy", proxy), ("gold", gold))}
    out.append(f"**Choice 2 (DI\\*-In, CFG reference) vs Choice 1 (DI\\*-Out, implicit CFG reward)** at the same scales: "
               + "; ".join(said(c, n) for n, c in cmp.items()) + ". "
               + ("The paper's preference for Choice 2 holds on the gold judge." if verdict(cmp["gold"]) == "higher"
                  else "Choice 1 does better on the gold judge: the paper's preference for Choice 2 is contradicted."
                  if verdict(cmp["gold"]) == "lower" else "No significant gold difference between the two choices."))

    # 6. exact vs x0.
    x0 = b.run("di_star_in_x0")
    cmp = {n: compare(best, x0, k) for n, k in (("proxy", proxy), ("gold", gold))}
    cost = ""
    if timing and "di_star_in" in timing.get("jobs", {}) and "di_star_in_x0" in timing["jobs"]:
        j = timing["jobs"]
        cost = f" Cost: {j['di_star_in']['ms_per_step']:.0f} vs {j['di_star_in_x0']['ms_per_step']:.0f} ms per generator step."
    out.append("**`exact` vs `x0` estimator** (DI\\*-In best row, exact - x0): "
               + "; ".join(said(c, n) for n, c in cmp.items()) + "." + cost)

    # 7. DI* vs DI++ (KL) at the same (alpha_rew, alpha_cfg), as the paper's Table 2 compares them.
    pp = b.run("di_pp")
    cmp = {n: compare(best, pp, k) for n, k in (("proxy", proxy), ("gold", gold))}
    out.append("**DI\\* vs DI++ at the same scales** (score vs KL regulariser): " + "; ".join(said(c, n) for n, c in cmp.items())
               + ". " + ("The paper's claim (DI* above DI++) holds on the proxy." if verdict(cmp["proxy"]) == "higher"
                         else "The paper's claim (DI* above DI++) is contradicted on the proxy."
                         if verdict(cmp["proxy"]) == "lower" else "No significant proxy difference between DI* and DI++."))

    # 8. alpha_rew vs CLIP / prompt fidelity (the paper: larger alpha_rew lowers CLIP).
    if clip is not None:
        vals = [(r, mean(b.run(r), clip), mean(b.run(r), proxy)) for r in ("sim", "di_star_in_low", "di_star_in_mid", "di_star_in")]
        vals = [v for v in vals if v[1] is not None]
        if len(vals) >= 2:
            trend = np.corrcoef([v[2] for v in vals], [v[1] for v in vals])[0, 1] if len(vals) > 2 else np.nan
            out.append(f"**Reward scale vs {clip[0]}** (alpha_rew 0, {', '.join(f'{a:g}' for a in best_s.rewards)} at CFG "
                       f"{best_s.alpha_cfg:g}): " + ", ".join(f"{r} {c:.4f}" for r, c, _ in vals)
                       + (f"; correlation with the proxy {trend:+.2f}" if np.isfinite(trend) else "") + ". "
                       + ("As the paper reports, more reward costs prompt fidelity." if np.isfinite(trend) and trend < -0.5
                          else "Unlike the paper, more reward does not cost prompt fidelity here."
                          if np.isfinite(trend) and trend > 0.5 else "No clear trend."))

    # 9. David and Goliath: one-step DI* vs the multi-step reference.
    if b.reference is not None:
        # Every seed of the best row, pooled within prompts: the paired test the claim "the
        # one-step model beats its teacher" needs (a comparison of two means is not one).
        cmp = {n: compare_pooled(runs, b.reference, k) for n, k in (("proxy", proxy), ("gold", gold))}
        lat = [e.latency() for e in (best, b.reference) if e is not None]
        speed = (f" Latency per 10 images: {lat[0].value:.3f} s vs {lat[1].value:.3f} s ({lat[1].device})."
                 if len(lat) == 2 and lat[0] is not None and lat[1] is not None else "")
        out.append(f"**One-step DI\\*-In vs the multi-step reference** (paired test, same prompts and noise, "
                   f"prompts as units, {len(runs)} training seed(s) pooled): "
                   + "; ".join(said(c, n) for n, c in cmp.items()) + "." + speed)
    return out


def frontier_points(b: Board, bs: Board, proxy, gold, fid, div) -> dict[str, list[tuple]]:
    """(proxy, gold, FID on the set bench, diversity) per alpha_rew of each regulariser's sweep,
    alpha 0 being the reward-free row of that regulariser."""
    s = world_scales("mini")
    out = {}
    for reg, zero in (("kl", "kl"), ("score", "di_star_in_noreward")):
        rows = [(0.0, zero)] + [(a, f"frontier/{reg}/{a:g}") for a in s.frontier.get(reg, ())]
        pts = []
        for a, row in rows:
            e, es_ = b.run(row), bs.run(row)
            if e is None or mean(e, proxy) is None:
                continue
            pts.append((mean(e, proxy), mean(e, gold), mean(es_, fid), mean(e, div), a))
        if len(pts) >= 2:
            out[reg] = pts
    return out if len(out) == 2 else {}


def plot_frontiers(fr: dict, path: Path, names: Sequence[str]) -> Path | None:
    if not fr:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, idx, name in zip(axes, (1, 2, 3), names):
        for reg, style in (("kl", "o--"), ("score", "s-")):
            pts = sorted((p[0], p[idx], p[4]) for p in fr[reg] if p[idx] is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=reg)
                for x, y, a in pts:
                    ax.annotate(f"{a:g}", (x, y), fontsize=7)
        ax.set_xlabel("proxy reward (mini_parti)")
        ax.set_ylabel(name)
        ax.legend()
    fig.suptitle("mini world: alpha_rew frontiers, KL vs score regulariser (labels: alpha_rew)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_samples(b: Board, root: Path, path: Path, n_prompts: int = 8) -> Path | None:
    """One row per model (reference, init, each Table 2 row), the first prompts' first image."""
    from PIL import Image, ImageDraw
    rows = [("reference", b.reference), ("init", b.init)] + [(r, b.run(r)) for r in TABLE_ORDER]
    rows = [(n, e) for n, e in rows if e is not None]
    if not rows:
        return None
    store = ResultsStore(root, create=False)
    images = store.table("images")
    size, label_w = 64, 150
    grid = Image.new("RGB", (label_w + n_prompts * size, len(rows) * size), "white")
    draw = ImageDraw.Draw(grid)
    for r, (name, e) in enumerate(rows):
        draw.text((4, r * size + size // 2 - 6), name, fill="black")
        im = images[(images.recipe_hash == e.recipe_hash) & (images.bench == e.bench) & (images.k == 0)]
        for _, row in im.sort_values("prompt_index").head(n_prompts).iterrows():
            tile = Image.open(root / row.path).convert("RGB").resize((size, size))
            grid.paste(tile, (label_w + int(row.prompt_index) * size, r * size))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def write_findings(results: Path, leaderboards: Path, reference: str = "mini_ref", init: str = "mini_onestep",
                   timing: dict | None = None, main_bench: str = MAIN_BENCH, set_bench: str = SET_BENCH) -> list[Path]:
    """mini_findings.md and the figures, from the store in `results` (reference / init: the
    models' names as stored)."""
    from distar.core.atomic import write_text
    entries = load_entries(ResultsStore(results, create=False))
    b = Board(entries, main_bench, reference, init)
    bs = Board(entries, set_bench, reference, init)
    figures = leaderboards / "figures"
    written = []
    proxy, gold = _metric(b.entries, "proxy", "pick"), _metric(b.entries, "gold")
    fr = frontier_points(b, bs, proxy, gold, _metric(bs.entries, "fid", "_fd"), _metric(b.entries, "div"))
    for p in (plot_frontiers(fr, figures / FRONTIER_FIG, ("gold judge", "FID (mini_coco)", "diversity")),
              plot_samples(b, Path(results), figures / SAMPLES_FIG)):
        if p is not None:
            written.append(p)
    lines = ["# Mini world: findings (generated from the measured numbers)", "",
             "Every sentence below is written by `di_star/mini/findings.py` from the results store of the "
             "ablation (`distar eval` + `distar leaderboard --suite mini`; tables in `mini_table*.md`, paired "
             f"tests in `mini_paired_tests.md`). Paired tests: same prompts and noise, prompts as units; "
             f"'higher'/'lower' at p < {ALPHA}.", ""]
    lines += [f"- {f}" for f in findings(entries, reference, init, timing, main_bench, set_bench)]
    if timing:
        lines += ["", f"Run: scale `{timing.get('scale')}`, git {timing.get('git')}, {timing.get('workers')} worker "
                      f"process(es); {timing.get('wall_s', 0):.0f} s wall to the tables; worker time "
                      f"{timing.get('train_s', 0):.0f} s training and {timing.get('eval_s', 0):.0f} s evaluating "
                      "(overlapped: each run is evaluated as soon as it is trained)."]
    shown = {p.name for p in written}
    figs = ([f"`figures/{FRONTIER_FIG}` (frontiers)"] if FRONTIER_FIG in shown else []) + \
        ([f"`figures/{SAMPLES_FIG}` (first image of the first {main_bench} prompts; rows: reference, init, "
          "Table 2 rows)"] if SAMPLES_FIG in shown else [])
    if figs:  # only the figures this run drew (no alpha_rew sweeps: no frontier figure)
        lines += ["", "Figures: " + ", ".join(figs) + "."]
    path = leaderboards / FINDINGS_FILE
    write_text(path, "\n".join(lines) + "\n")
    return [path] + written
