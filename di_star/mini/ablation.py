"""The mini-world ablation: the paper's Tables 1-3 in miniature, made by the suite's own commands.

1. Train every `mini/*` preset (paper Table 2 rows, the KL / score alpha_rew frontiers, extra
   training seeds of DI*-In, each paired against the init) with `distar train`'s library call, two
   runs at a time (one torch thread each: a 2-core machine).
2. Evaluate the multi-step reference, the one-step init and every export with `distar eval`'s
   library calls (generation keyed by model, benchmark, prompt and seed; then every `mini_*`
   metric), into one results store.
3. Write the tables with `distar leaderboard --suite mini` (leaderboards/mini_*.md, CIs and paired
   tests against the init) and, from the same store, the findings (mini_findings.md) and figures.

`scripts/mini_ablation.py` runs the full setting; `distar demo` runs the `demo` scale.
Every stage resumes: finished runs are reused, finished images and scores are not recomputed.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from di_star.config import TrainConfig
from di_star.experiment import Job, default_workers, run_experiment, stderr_to
from di_star.presets import TABLE_ORDER, get_preset, world_scales

REFERENCE, INIT = "mini_ref", "mini_onestep"
FIRST_PARTS = ("reference", "init")   # evaluation parts of the reference and the init
BENCHES = ("mini_parti", "mini_coco", "mini_hps")


@dataclass(frozen=True)
class Scale:
    """How much of the ablation to run. `full`: the presets as registered; `demo`: fewer steps,
    prompts and rows, sized for `distar demo` on 2 cores in < 10 minutes."""
    name: str
    steps: int | None                     # generator steps per run; None = the preset's
    k_ta: int | None                      # assistant steps per generator step; None = the preset's
    batch_size: int | None
    rows: tuple[str, ...]                 # Table 2 rows (TABLE_ORDER names)
    frontier: bool                        # the KL / score alpha_rew sweeps
    seeds: tuple[int, ...]                # training seeds of mini/di_star_in (per-seed paired tests)
    limits: dict[str, int | None] = field(default_factory=dict)   # prompts per benchmark
    images_per_prompt: int = 4            # >= 4: intra-prompt diversity
    eval_samples: int | None = None       # the trainer's own final reward check; None = the preset's
    sample_grids: bool = True             # the trainer's PNG sample grid at the end of each run
    spread: bool = False                  # the limited prompts evenly spaced, not the first N


SCALES = {
    "full": Scale("full", None, None, None, tuple(TABLE_ORDER), True, (0, 1, 2),
                  {"mini_parti": None, "mini_coco": 200, "mini_hps": None}),
    # K_TA stays the preset's 5: at K_TA 2 the assistant lags and the score regulariser's gradient
    # is noise (30 steps of DI*-In on the `large` world, shipped before: proxy -0.016 +- 0.021 at K_TA 2 / lr 1e-4,
    # +0.014 +- 0.009 at K_TA 5 / lr 2e-5; scripts/di_star_quality.py, 64-128 mini_parti prompts).
    "demo": Scale("demo", 30, None, None, tuple(TABLE_ORDER), False, (0, 1, 2),
                  {"mini_parti": 48, "mini_coco": 48, "mini_hps": 40}),
}


def _sized(cfg: TrainConfig, scale: Scale, sd: dict[str, Any]) -> TrainConfig:
    run, optim = {}, {}
    if scale.steps is not None:
        run = {"max_steps": scale.steps, "ckpt_every": max(1, scale.steps // 2),
               "log_every": max(1, scale.steps // 5)}
        sd = {**sd, "sample_every": scale.steps}
    if scale.k_ta is not None:
        optim["assistant_steps_per_g_step"] = scale.k_ta
    if scale.batch_size is not None:
        optim["batch_size"] = scale.batch_size
    if not scale.sample_grids:
        sd = {**sd, "sample_every": 0}
    world = {"eval_samples": scale.eval_samples} if scale.eval_samples is not None else {}
    return cfg.replace(run=run, optim=optim, sd=sd, world=world)


def plan(out: Path, scale: Scale, sd: dict[str, Any] | None = None) -> list[Job]:
    """The training runs; `sd` overrides the [sd] section of every run (tests point it at a
    folder of tiny random weights)."""
    sd = sd or {}
    jobs = []
    for row in scale.rows:
        cfg = _sized(get_preset(f"mini/{row}"), scale, sd)
        jobs.append(Job(row, _train_job, out / "runs" / row, cfg=cfg))
        if row == "di_star_in":
            for s in scale.seeds[1:]:
                jobs.append(Job(f"{row}@s{s}", _train_job, out / "runs" / f"{row}@s{s}",
                                cfg=cfg.replace(run={"seed": s})))
    if scale.frontier:
        for reg, alphas in world_scales("mini").frontier.items():
            for a in alphas:
                key = f"frontier/{reg}/{a:g}"
                jobs.append(Job(key, _train_job, out / "runs" / key,
                                cfg=_sized(get_preset(f"mini/{key}"), scale, sd)))
    return jobs


def _train_job(job: Job) -> dict:
    """Worker: one training run -> its export folder and timings."""
    from di_star.trainer import train
    t0 = time.time()
    r = train(job.cfg, Path(job.out), progress=False)
    return {"key": job.key, "export": str(Path(job.out) / "export"), "steps": r.step,
            "ms_per_step": r.ms_per_step, "wall_s": time.time() - t0, "train_reward": r.metrics.get("reward")}


def eval_job(job: Job) -> dict:
    """Worker: `distar eval` of `job.model` on the benchmarks into its own store part `job.out`
    (one writer per store; the runner merges the parts when every job is done)."""
    t0 = time.time()
    part = Path(job.out)
    part.mkdir(parents=True, exist_ok=True)
    with stderr_to(part / "eval.log"):  # two workers' progress bars would interleave
        evaluate_all([job.model], job.args["scale"], part, job.args["metrics"], job.args["benches"],
                     device=job.args["device"])
    return {"model": job.model, "parts": [str(part)], "wall_s": time.time() - t0}


def evaluation(model: str, part: Path, scale: Scale, metrics: list[str], benches: tuple[str, ...],
               device: str = "cpu") -> Job:
    """The job that evaluates `model` (`eval_job`) into the store part `part`."""
    return Job(f"eval/{part.name}", eval_job, part, model=model,
               args={"scale": scale, "metrics": metrics, "benches": benches, "device": device})


def _run_part(key: str) -> str:
    """The evaluation part (store folder name) of training job `key`'s export."""
    from distar.core.paths import safe_name
    return safe_name(f"run-{key}")


def mini_metrics() -> list[str]:
    """Every registered metric of the mini world (the suite's own names) but the oracle reward,
    a training reward standing in for mini_gold, which is already measured, and the proxy-ladder
    rungs (rewards of the over-optimisation sweep, which scores them itself)."""
    from evalsuite.metrics import METRICS
    from di_star.mini.proxy_ladder import RUNGS
    return [m for m in METRICS.names() if m.startswith("mini_") and m != "mini_oracle"
            and m not in RUNGS]


def evaluate_all(models: list[str], scale: Scale, results: Path, metrics: list[str],
                 benches: tuple[str, ...] = BENCHES, console=None, device: str = "cpu") -> None:
    """`distar eval --model M --bench B --limit L --images-per-prompt k --metrics ...` for each
    model and benchmark, through the same library calls."""
    import gc

    from evalsuite.generate import EvalRequest, run_eval
    from evalsuite.metrics.runner import score_run

    for bench in benches:
        for model in models:
            t0 = time.time()
            run = run_eval(EvalRequest(model=model, bench=bench, limit=scale.limits.get(bench),
                                       spread=scale.spread, out=results, images_per_prompt=scale.images_per_prompt, device=device))
            score_run(run, metrics, progress=False, device=device)
            # What is alive now (modules, classes) lives to the end: frozen, the runner's
            # gc.collect() after each metric skips it (0.25 s a call otherwise, ~15% of a
            # one-step model's evaluation on a benchmark).
            gc.freeze()
            if console:
                console.print(f"  evaluated {model} on {bench} ({time.time() - t0:.0f} s)", highlight=False)


def run_ablation(out: Path, leaderboards: Path, scale: str | Scale = "full", workers: int | None = None,
                 sd: dict[str, Any] | None = None, reference: str = REFERENCE, init: str = INIT,
                 metrics: list[str] | None = None, benches: tuple[str, ...] = BENCHES) -> dict:
    """Train, evaluate, tabulate. Every training run and the evaluations of the reference, the
    init and each run's export (as soon as it exists) share one pool of `workers` processes
    (one torch thread each on 2 cores: the tiny networks gain little from a second thread), so
    no core idles while the slowest runs finish. Returns the timings and the files written."""
    from rich.console import Console

    console = Console(stderr=True)
    sc = SCALES[scale] if isinstance(scale, str) else scale
    out, leaderboards = Path(out), Path(leaderboards)
    workers = workers or default_workers()
    metrics = metrics if metrics is not None else mini_metrics()
    jobs = plan(out, sc, sd)
    preflight(jobs, [reference, init], metrics, benches)
    console.print(f"[bold]mini ablation[/] ({sc.name}): {len(jobs)} training runs on {workers} worker(s), "
                  f"each evaluated on {len(benches)} benchmarks as it finishes, with the reference and the init; in {out}", highlight=False)
    parts = out / "parts"
    # The reference's evaluation (the longest job, multi-step CFG) first.
    first = [evaluation(m, parts / name, sc, metrics, benches) for m, name in zip((reference, init), FIRST_PARTS)]

    def after(job: Job, r: dict) -> list[Job]:
        if job.cfg is None:
            console.print(f"  evaluated {job.out.name} ({r['wall_s']:.0f} s)", highlight=False)
            return []
        console.print(f"  trained {job.key} ({r['wall_s']:.0f} s)", highlight=False)
        return [evaluation(f"path:{r['export']}", parts / _run_part(job.key), sc, metrics, benches)]

    def findings(records: dict[str, dict], prov: dict) -> dict:
        from di_star.mini.findings import write_findings
        from evalsuite.leaderboard import write_leaderboards
        from evalsuite.models.specs import resolve_model

        files = write_leaderboards(out / "results", leaderboards, suite="mini", baseline=resolve_model(init).name)
        trained = {k: r for k, r in records.items() if "export" in r}
        # Worker seconds: training and evaluation overlap on the pool, so they do not add to the wall.
        timing = {"train_s": sum(r["wall_s"] for r in trained.values()),
                  "eval_s": sum(r["wall_s"] for r in records.values() if "model" in r), "workers": workers,
                  "scale": sc.name, "git": prov["git"],
                  "jobs": {k: {kk: v[kk] for kk in ("steps", "ms_per_step", "wall_s")} for k, v in trained.items()},
                  "wall_s": time.time() - t0}  # to the tables; the findings add a second
        names = {m: resolve_model(m).name for m in (reference, init)}  # as the store names them (path: too)
        files += write_findings(out / "results", leaderboards, reference=names[reference], init=names[init],
                                timing=timing, main_bench=benches[0], set_bench=benches[min(1, len(benches) - 1)])
        timing["wall_s"] = time.time() - t0
        (out / "timing.json").write_text(json.dumps(timing, indent=1))
        return {"files": files, "timing": timing}

    t0 = time.time()
    _, _, result = run_experiment("the mini ablation", out, sc, first + jobs, workers, after=after,
                                  results=out / "results", findings=findings)
    console.print(f"tables and figures: {', '.join(str(f) for f in result['files'])}\n"
                  f"wall time {result['timing']['wall_s']:.0f} s", highlight=False)
    return result


def preflight(jobs: list[Job], models: list[str], metrics: list[str], benches: tuple[str, ...]) -> None:
    """Every model, weights folder, metric, benchmark and training config checked before the first
    run; all problems reported at once."""
    from di_star.sdxl.reward import check_reward
    from di_star.config import validate_sd
    from evalsuite.benchmarks import load_benchmark
    from distar.core.errors import DistarError
    from evalsuite.metrics import METRICS
    from evalsuite.models.specs import resolve_model

    problems: list[str] = []

    def check(fn, *args) -> None:
        try:
            fn(*args)
        except DistarError as e:
            if str(e) not in problems:
                problems.append(str(e))

    def local_weights(name: str) -> None:
        spec = resolve_model(name)
        for where in [spec.repo] + ([spec.unet.repo] if spec.unet is not None else []):
            if where.startswith(("/", ".")) and not Path(where).is_dir():
                raise DistarError(f"Model '{name}' reads weights from {where}, which does not exist. Fix: build "
                                  f"the mini world (`distar lab build mini --out DIR`) and set DISTAR_MINI_DIR=DIR.")

    cfgs = [j.cfg for j in jobs if j.cfg is not None]
    for m in models + sorted({c.sd.reference for c in cfgs} | {c.sd.generator for c in cfgs}):
        check(local_weights, m)
    for name in metrics:
        check(METRICS.get, name)
    for b in benches:
        check(load_benchmark, b)
    for c in cfgs:
        check(validate_sd, c)
        check(check_reward, c.sd.reward)
    if problems:
        raise DistarError("The mini ablation cannot start:\n- " + "\n- ".join(problems))
