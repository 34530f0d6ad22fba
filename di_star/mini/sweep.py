"""The over-optimisation sweep (issue 28): does DI* raise what its reward stands for?

`distar lab sweep` trains the matrix {rewards} x {DI*-In (score), DI++ (KL)} x {seeds}, plus the
reward-free runs (same regulariser and CFG, alpha_rew = 0) and an alpha_cfg ladder for the first
reward's DI*-In run, each run evaluated at several points along training (0 = the one-step init,
shared by every run) with `distar eval`'s library calls on mini_parti: the hard gold judge, every
reward in the matrix (the optimised one and the others), FD to ground truth, attribute accuracy
(per challenge, from the prompts' metadata) and intra-prompt diversity. The 15-step reference is
evaluated on the same prompts and noise, for the paired test of the best one-step run against it.

Replications: a run's training seed (`run.seed`) draws its own noise and prompt order; the
evaluation noise is fixed per prompt (image k of prompt i starts from seed i + 100000 k), so every
model is compared on the same (prompt, noise) pairs: prompts are the units, seeds replications.

A run is trained in stages (max_steps = each checkpoint in turn: the trainer resumes a run for
longer with the same trajectory) and each stage's export is copied to RUN/at/step<N> and
evaluated into its own store part; the parts are merged into OUT/results, the store the report
(`di_star.mini.overopt_report`) reads together with OUT/sweep.json (what each model is).
Runs are independent jobs on a pool of processes: on one GPU many tiny runs share the device.
Everything resumes: finished stages, images and scores are reused.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from distar.core.signals import process_pool
from di_star.mini.ablation import INIT, REFERENCE, Scale, blas_threads, stderr_to, evaluate_all, merge_parts
from di_star.mini.overopt_presets import ORACLE

BENCH = "mini_parti"
PROXY = "mini_pickscore"
REGULARISERS = {"score": ("di_star_in", "sim"), "kl": ("di_pp", "diff_instruct")}  # (rewarded, reward-free) rows


@dataclass(frozen=True)
class SweepPlan:
    rewards: tuple[str, ...] = (ORACLE, PROXY)
    regularisers: tuple[str, ...] = ("score", "kl")
    seeds: tuple[int, ...] = (0, 1, 2)
    checkpoints: tuple[int, ...] = (0, 150, 300, 600)
    cfg_ladder: tuple[float, ...] = (0.0, 2.0, 4.0)
    reward_free: bool = True
    prompts: int | None = None            # mini_parti prompts (None: all 300)
    images_per_prompt: int = 4            # >= 4: intra-prompt diversity (mini_diversity)
    batch_size: int | None = None         # training batch (None: the preset's)
    k_ta: int | None = None               # assistant steps per generator step (None: the preset's)
    extra_metrics: tuple[str, ...] = ("mini_gold", "mini_fd", "mini_attr_acc", "mini_diversity")
    label: str = "full"

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys([*self.extra_metrics, *self.rewards, ORACLE, PROXY]))


DRY_RUN = SweepPlan(seeds=(0, 1), checkpoints=(0, 1, 2), cfg_ladder=(), prompts=2,
                    batch_size=2, k_ta=1, label="dry-run")


@dataclass
class Run:
    key: str                       # 'score/mini_oracle/s0', 'kl/none/s1', 'score/mini_oracle/cfg2/s0'
    regulariser: str
    reward: str                    # 'none' for the reward-free runs
    seed: int
    alpha_cfg: float | None = None  # None: the preset's
    cfg: dict = field(default_factory=dict)


def _preset(regulariser: str, reward: str) -> str:
    rewarded, free = REGULARISERS[regulariser]
    if reward == "none":
        return f"mini/{free}"
    return f"mini/{rewarded}_oracle" if reward == ORACLE else f"mini/{rewarded}"


def run_config(run: Run, plan: SweepPlan) -> dict:
    """The run's TrainConfig as a dict (the preset, its reward, seed and the plan's sizes)."""
    from di_star.presets import get_preset
    cfg = get_preset(_preset(run.regulariser, run.reward))
    sd: dict = {"sample_every": 0}
    if run.reward not in ("none", ORACLE):
        sd["reward"] = run.reward
    optim = {k: v for k, v in (("batch_size", plan.batch_size), ("assistant_steps_per_g_step", plan.k_ta))
             if v is not None}
    objective = {} if run.alpha_cfg is None else \
        {"alpha_cfg": run.alpha_cfg, **({"guidance": "none"} if run.alpha_cfg == 0 else {})}  # no CFG at 0
    last = max(plan.checkpoints)
    cfg = cfg.replace(run={"seed": run.seed, "max_steps": last, "ckpt_every": max(1, min(s for s in plan.checkpoints if s > 0)),
                           "log_every": max(1, last // 10)},
                      sd=sd, optim=optim, objective=objective, world={"eval_samples": 1})
    return cfg.to_dict()


def plan_runs(plan: SweepPlan) -> list[Run]:
    runs = []
    for reg in plan.regularisers:
        for reward in [*plan.rewards, *(["none"] if plan.reward_free else [])]:
            for s in plan.seeds:
                runs.append(Run(f"{reg}/{reward}/s{s}", reg, reward, s))
    for c in plan.cfg_ladder:
        for s in plan.seeds:
            runs.append(Run(f"score/{plan.rewards[0]}/cfg{c:g}/s{s}", "score", plan.rewards[0], s, c))
    for r in runs:
        r.cfg = run_config(r, plan)
    return runs


def _part(name: str) -> str:
    from distar.core.paths import safe_name
    return safe_name(name)


def _scale(plan: SweepPlan) -> Scale:
    return Scale(plan.label, None, None, None, (), False, (), {BENCH: plan.prompts}, plan.images_per_prompt)


def _run_job(run: dict, plan: dict, out: str, threads: int, device: str) -> dict:
    """Worker: train one run stage by stage; after each stage copy its export and evaluate it.
    Returns {step: model string} and timings."""
    import torch

    from di_star.config import from_dict
    from di_star.trainer import train
    torch.set_num_threads(threads)
    p = SweepPlan(**{k: tuple(v) if isinstance(v, list) else v for k, v in plan.items()})
    run_dir = Path(out) / "runs" / run["key"]
    models, t_train, t_eval = {}, 0.0, 0.0
    for step in sorted(s for s in p.checkpoints if s > 0):
        at = run_dir / "at" / f"step{step}"
        if not (at / "model_index.json").exists():
            t0 = time.time()
            cfg = from_dict(run["cfg"]).replace(run={"max_steps": step})
            train(cfg, run_dir, progress=False)
            tmp = at.with_name(at.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(run_dir / "export", tmp)
            tmp.replace(at)
            t_train += time.time() - t0
        model = f"path:{at}"
        part = Path(out) / "parts" / _part(f"{run['key']}@{step}")
        part.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with stderr_to(part / "eval.log"):
            evaluate_all([model], _scale(p), part, p.metrics, (BENCH,), device=device)
        t_eval += time.time() - t0
        models[step] = model
    return {"key": run["key"], "models": models, "train_s": t_train, "eval_s": t_eval}


def _eval_job(model: str, plan: dict, out: str, threads: int, device: str) -> dict:
    import torch
    torch.set_num_threads(threads)
    p = SweepPlan(**{k: tuple(v) if isinstance(v, list) else v for k, v in plan.items()})
    part = Path(out) / "parts" / _part(model)
    part.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with stderr_to(part / "eval.log"):
        evaluate_all([model], _scale(p), part, p.metrics, (BENCH,), device=device)
    return {"key": model, "models": {0: model}, "eval_s": time.time() - t0, "train_s": 0.0}


def preflight(plan: SweepPlan, runs: list[Run]) -> None:
    """Every preset, reward, metric and model checked before the first run; all at once."""
    from di_star.mini.ablation import preflight as ablation_preflight
    from di_star.mini.ablation import Job
    from di_star.config import from_dict
    from distar.core.errors import DistarError
    if not plan.checkpoints or min(plan.checkpoints) < 0:
        raise DistarError("sweep checkpoints must be generator steps >= 0, e.g. 0,150,300,600")
    ablation_preflight([Job(r.key, from_dict(r.cfg), Path(r.key)) for r in runs], [REFERENCE, INIT],
                       plan.metrics, (BENCH,))


def run_sweep(out: Path, plan: SweepPlan, workers: int = 2, device: str = "cpu", console=None) -> dict:
    """Train and evaluate the plan's runs on `workers` processes; merge the store; write
    OUT/sweep.json (plan, runs, models per step, timings). Returns that record."""
    from distar.core.atomic import write_text
    out = Path(out)
    runs = plan_runs(plan)
    preflight(plan, runs)
    threads = max(1, (os.cpu_count() or 1) // workers) if device == "cpu" else 1
    say = (lambda t: console.print(t, highlight=False)) if console else (lambda t: None)
    say(f"[bold]over-optimisation sweep[/] ({plan.label}): {len(runs)} runs x checkpoints "
        f"{list(plan.checkpoints)}, {workers} worker(s) on {device}; in {out}")
    t0 = time.time()
    plan_d = asdict(plan)
    todo = [(_eval_job, (m, plan_d, str(out))) for m in (REFERENCE, INIT)] + \
           [(_run_job, ({"key": r.key, "cfg": r.cfg}, plan_d, str(out))) for r in runs]
    done: dict[str, dict] = {}
    # process_pool: workers stopped on Ctrl-C, SIGTERM or a job's error, and die with the parent.
    with blas_threads(threads), process_pool(workers) as pool:
        running: dict = {}
        while todo or running:
            while todo and len(running) < workers:
                fn, args = todo.pop(0)
                running[pool.submit(fn, *args, threads, device)] = args[0]
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                running.pop(f)
                r = f.result()
                done[r["key"]] = r
                say(f"  {r['key']}: train {r['train_s']:.0f} s, eval {r['eval_s']:.0f} s")
    names = [_part(m) for m in (REFERENCE, INIT)] + \
        [_part(f"{r.key}@{s}") for r in runs for s in sorted(x for x in plan.checkpoints if x > 0)]
    merge_parts(out / "parts", names, out / "results")
    record = {"plan": plan_d, "reference": REFERENCE, "init": INIT, "bench": BENCH,
              "runs": [{"key": r.key, "regulariser": r.regulariser, "reward": r.reward, "seed": r.seed,
                        "alpha_cfg": r.cfg["objective"]["alpha_cfg"], "alpha_rew": r.cfg["objective"]["alpha_rew"],
                        "models": {str(k): v for k, v in done[r.key]["models"].items()},
                        "train_s": done[r.key]["train_s"], "eval_s": done[r.key]["eval_s"]} for r in runs],
              "device": device, "workers": workers, "wall_s": time.time() - t0}
    write_text(out / "sweep.json", json.dumps(record, indent=1) + "\n")
    say(f"sweep done in {record['wall_s']:.0f} s: {out / 'sweep.json'}, store {out / 'results'}")
    return record
