"""The mini-world ablation: the paper's Tables 1-3 in miniature, made by the suite's own commands.

1. Train every `mini/*` preset (paper Table 2 rows, the KL / score alpha_rew frontiers, extra
   training seeds of DI*-In for the seed-to-seed spread) with `distar train`'s library call, two
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
import os
import time
from concurrent.futures import FIRST_COMPLETED, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distar.core.paths import project_commit
from di_star.config import TrainConfig
from di_star.presets import TABLE_ORDER, get_preset, world_scales
from distar.core.signals import process_pool

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
    seeds: tuple[int, ...]                # training seeds of mini/di_star_in (seed-to-seed spread)
    limits: dict[str, int | None] = field(default_factory=dict)   # prompts per benchmark
    images_per_prompt: int = 4            # >= 4: intra-prompt diversity
    eval_samples: int | None = None       # the trainer's own final reward check; None = the preset's
    sample_grids: bool = True             # the trainer's PNG sample grid at the end of each run


SCALES = {
    "full": Scale("full", None, None, None, tuple(TABLE_ORDER), True, (0, 1, 2),
                  {"mini_parti": None, "mini_coco": 200, "mini_hps": None}),
    # K_TA stays the preset's 5: at K_TA 2 the assistant lags and the score regulariser's gradient
    # is noise (30 steps of DI*-In on the `large` world, shipped before: proxy -0.016 +- 0.021 at K_TA 2 / lr 1e-4,
    # +0.014 +- 0.009 at K_TA 5 / lr 2e-5; scripts/di_star_quality.py, 64-128 mini_parti prompts).
    "demo": Scale("demo", 30, None, None, tuple(TABLE_ORDER), False, (0, 1, 2),
                  {"mini_parti": 48, "mini_coco": 48, "mini_hps": 40}),
}


@dataclass
class Job:
    key: str                  # 'di_star_in', 'frontier/kl/30', 'di_star_in@s1'
    cfg: TrainConfig
    run_dir: Path


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
        jobs.append(Job(row, cfg, out / "runs" / row))
        if row == "di_star_in":
            for s in scale.seeds[1:]:
                jobs.append(Job(f"{row}@s{s}", cfg.replace(run={"seed": s}), out / "runs" / f"{row}@s{s}"))
    if scale.frontier:
        for reg, alphas in world_scales("mini").frontier.items():
            for a in alphas:
                key = f"frontier/{reg}/{a:g}"
                jobs.append(Job(key, _sized(get_preset(f"mini/{key}"), scale, sd), out / "runs" / key))
    return jobs


def _train_job(key: str, cfg_dict: dict, run_dir: str, threads: int) -> dict:
    """Worker: one training run -> its export folder and timings."""
    import torch

    from di_star.config import from_dict
    from di_star.trainer import train
    torch.set_num_threads(threads)
    t0 = time.time()
    r = train(from_dict(cfg_dict), Path(run_dir), progress=False)
    return {"key": key, "export": str(Path(run_dir) / "export"), "steps": r.step,
            "ms_per_step": r.ms_per_step, "wall_s": time.time() - t0, "train_reward": r.metrics.get("reward")}


def _eval_job(model: str, part: str, scale: Scale, metrics: list[str], benches: tuple[str, ...],
              threads: int) -> dict:
    """Worker: `distar eval` of one model on every benchmark, into its own store folder `part`
    (one writer per store; the parts are merged when every job is done)."""
    import torch
    torch.set_num_threads(threads)
    t0 = time.time()
    Path(part).mkdir(parents=True, exist_ok=True)
    with stderr_to(Path(part) / "eval.log"):  # two workers' progress bars would interleave
        evaluate_all([model], scale, Path(part), metrics, benches)
    return {"model": model, "part": part, "wall_s": time.time() - t0}


@contextmanager
def stderr_to(log: Path):
    """Everything written to stderr (file descriptor 2: Python and C alike) goes to `log`
    (appended) while inside; restored on the way out, also on an exception."""
    import sys
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(log, "ab") as f:
            os.dup2(f.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _run_part(key: str) -> str:
    """The evaluation part (store folder name) of training job `key`'s export."""
    from distar.core.paths import safe_name
    return safe_name(f"run-{key}")


def train_and_evaluate(jobs: list[Job], first: list[str], scale: Scale, parts: Path, metrics: list[str],
                       benches: tuple[str, ...], workers: int, console=None) -> tuple[dict, dict]:
    """Every training run, and the evaluation of the `first` models (reference, init) and of each
    run's export as soon as it exists, on one pool of `workers` processes (one torch thread each
    on 2 cores: the tiny networks gain little from a second thread). Evaluation overlaps training,
    so no core idles while the slowest runs finish. Each evaluation writes its own store,
    `parts/<name>` (a store has one writer). Returns ({job key: training record},
    {part name: evaluation record}), the records of evaluations holding 'model' and 'part'."""
    trained: dict[str, dict] = {}
    evaluated: dict[str, dict] = {}
    threads = max(1, (os.cpu_count() or 1) // workers)
    evals = list(zip(first, FIRST_PARTS))            # (model, part name)

    def exported(key: str) -> tuple[str, str]:
        return f"path:{trained[key]['export']}", _run_part(key)

    def say(text: str) -> None:
        if console:
            console.print(text, highlight=False)

    if workers == 1:  # in-process (tests register benchmarks a spawned process would not see)
        for j in jobs:
            trained[j.key] = r = _train_job(j.key, j.cfg.to_dict(), str(j.run_dir), threads)
            say(f"  trained {j.key} ({r['wall_s']:.0f} s)")
        for model, name in evals + [exported(j.key) for j in jobs]:
            evaluated[name] = r = _eval_job(model, str(parts / name), scale, metrics, benches, threads)
            say(f"  evaluated {name} ({r['wall_s']:.0f} s)")
        return trained, evaluated
    # Jobs wait here, not in the pool's queue: at most `workers` are ever handed over, so after
    # Ctrl-C (which reaches the workers too: a training run checkpoints its step and stops, an
    # evaluation marks itself interrupted) nothing new starts and the command ends in seconds.
    todo: list[tuple] = [(_eval_job, (m, str(parts / name)), ("eval", name)) for m, name in evals] + \
        [(_train_job, (j.key, j.cfg.to_dict(), str(j.run_dir)), ("train", j.key)) for j in jobs]
    # process_pool: on Ctrl-C, SIGTERM or a job's error its workers are stopped, not awaited, and
    # a worker dies with the parent (no orphan keeps training after `kill -9` of the demo).
    with blas_threads(threads), process_pool(workers) as pool:
        running: dict = {}
        while todo or running:
            while todo and len(running) < workers:  # FIFO: the reference's evaluation (the
                fn, args, what = todo.pop(0)        # longest job, multi-step CFG) first
                extra = (scale, metrics, benches, threads) if fn is _eval_job else (threads,)
                running[pool.submit(fn, *args, *extra)] = what
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                kind, key = running.pop(f)
                r = f.result()  # a job's error (or its Ctrl-C) ends the ablation; reruns resume
                if kind == "train":
                    trained[key] = r
                    say(f"  trained {key} ({r['wall_s']:.0f} s)")
                    model, name = exported(key)
                    todo.append((_eval_job, (model, str(parts / name)), ("eval", name)))
                else:
                    evaluated[key] = r
                    say(f"  evaluated {key} ({r['wall_s']:.0f} s)")
    return trained, evaluated


@contextmanager
def blas_threads(n: int):
    """Spawned workers start with numpy's BLAS limited to `n` threads (read once, at import).
    OpenBLAS otherwise starts a thread per core in every worker: on 2 busy cores mini_kd's 300
    small matrix products took 3.4 s instead of 0.29 s."""
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({k: str(n) for k in names})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def merge_parts(parts: Path, names: list[str], results: Path) -> None:
    """The evaluation parts, in a fixed order, into the one store the tables read."""
    from distar.core.runlock import out_lock
    from evalsuite.store import merge_store
    with out_lock(results, "the mini ablation's merge of its evaluation parts"):
        for name in names:
            merge_store(parts / name, results)


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
                                       out=results, images_per_prompt=scale.images_per_prompt, device=device))
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
    """Train, evaluate, tabulate. Returns the timings and the files written."""
    from rich.console import Console

    from di_star.mini.findings import write_findings
    from evalsuite.leaderboard import write_leaderboards
    from evalsuite.models.specs import resolve_model

    console = Console(stderr=True)
    sc = SCALES[scale] if isinstance(scale, str) else scale
    out, leaderboards = Path(out), Path(leaderboards)
    workers = workers or max(1, min(2, os.cpu_count() or 1))
    metrics = metrics if metrics is not None else mini_metrics()
    t0 = time.time()
    jobs = plan(out, sc, sd)
    preflight(jobs, [reference, init], metrics, benches)
    console.print(f"[bold]mini ablation[/] ({sc.name}): {len(jobs)} training runs on {workers} worker(s), "
                  f"each evaluated on {len(benches)} benchmarks as it finishes, with the reference and the init; in {out}", highlight=False)
    trained, evaluated = train_and_evaluate(jobs, [reference, init], sc, out / "parts", metrics, benches,
                                            workers, console)
    merge_parts(out / "parts", [*FIRST_PARTS, *(_run_part(j.key) for j in jobs)], out / "results")
    files = write_leaderboards(out / "results", leaderboards, suite="mini", baseline=resolve_model(init).name)
    # Worker seconds: training and evaluation overlap on the pool, so they do not add to the wall.
    timing = {"train_s": sum(r["wall_s"] for r in trained.values()),
              "eval_s": sum(r["wall_s"] for r in evaluated.values()), "workers": workers, "scale": sc.name,
              "git": project_commit(short=True) or "unknown", "jobs": {k: {kk: v[kk] for kk in ("steps", "ms_per_step", "wall_s")}
                                             for k, v in trained.items()},
              "wall_s": time.time() - t0}  # to the tables; the findings add a second
    names = {m: resolve_model(m).name for m in (reference, init)}  # as the store names them (path: too)
    files += write_findings(out / "results", leaderboards, reference=names[reference], init=names[init],
                            timing=timing, main_bench=benches[0], set_bench=benches[min(1, len(benches) - 1)])
    wall = timing["wall_s"] = time.time() - t0
    (out / "timing.json").write_text(json.dumps(timing, indent=1))
    console.print(f"tables and figures: {', '.join(str(f) for f in files)}\nwall time {wall:.0f} s", highlight=False)
    return {"files": files, "timing": timing}


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

    for m in models + sorted({j.cfg.sd.reference for j in jobs} | {j.cfg.sd.generator for j in jobs}):
        check(local_weights, m)
    for name in metrics:
        check(METRICS.get, name)
    for b in benches:
        check(load_benchmark, b)
    for j in jobs:
        check(validate_sd, j.cfg)
        check(check_reward, j.cfg.sd.reward)
    if problems:
        raise DistarError("The mini ablation cannot start:\n- " + "\n- ".join(problems))
