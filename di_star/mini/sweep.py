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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from di_star.experiment import Job, run_experiment, stderr_to
from di_star.mini.ablation import INIT, REFERENCE, Scale, evaluate_all, evaluation
from di_star.mini.overopt_presets import ORACLE, ORACLES, preset_name
from di_star.mini.proxy_ladder import RUNGS

BENCH = "mini_parti"
PROXY = "mini_pickscore"
REGULARISERS = {"score": ("di_star_in", "sim"), "kl": ("di_pp", "diff_instruct")}  # (rewarded, reward-free) rows


@dataclass(frozen=True)
class SweepPlan:
    rewards: tuple[str, ...] = (ORACLE, PROXY, *RUNGS)   # the oracle and the ladder of proxies
    regularisers: tuple[str, ...] = ("score", "kl")
    seeds: tuple[int, ...] = (0, 1, 2)
    checkpoints: tuple[int, ...] = (0, 150, 300, 600)
    cfg_ladder: tuple[float, ...] = (0.0, 2.0, 4.0)
    reward_free: bool = True
    prompts: int | None = None            # mini_parti prompts (None: all 300)
    spread: bool = True                   # a subset spread over every challenge, not the first N (one challenge)
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
    return preset_name(rewarded, reward) if reward in ORACLES else f"mini/{rewarded}"


def preset_alpha_cfg(reward: str) -> float:
    """The alpha_cfg of the DI*-In preset a reward's matrix run uses."""
    from di_star.presets import get_preset
    return get_preset(_preset("score", reward)).objective.alpha_cfg


def run_config(run: Run, plan: SweepPlan) -> dict:
    """The run's TrainConfig as a dict (the preset, its reward, seed and the plan's sizes)."""
    from di_star.presets import get_preset
    cfg = get_preset(_preset(run.regulariser, run.reward))
    sd: dict = {"sample_every": 0}
    if run.reward not in ("none", *ORACLES):  # an oracle's preset names its reward
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
    # The rung at the preset's own alpha_cfg is the matrix's DI*-In run: not trained twice.
    for c in [c for c in plan.cfg_ladder if c != preset_alpha_cfg(plan.rewards[0])]:
        for s in plan.seeds:
            runs.append(Run(f"score/{plan.rewards[0]}/cfg{c:g}/s{s}", "score", plan.rewards[0], s, c))
    for r in runs:
        r.cfg = run_config(r, plan)
    return runs


def _part(name: str) -> str:
    from distar.core.paths import safe_name
    return safe_name(name)


def _scale(plan: SweepPlan) -> Scale:
    return Scale(plan.label, None, None, None, (), False, (), {BENCH: plan.prompts}, plan.images_per_prompt,
                 spread=plan.spread)


def _run_job(job: Job) -> dict:
    """Worker: train one run stage by stage; after each stage copy its export and evaluate it
    into a store part of its own. Returns {step: model string}, its parts and timings."""
    from di_star.trainer import train
    p = job.args["plan"]
    run_dir = Path(job.out)
    models, parts, t_train, t_eval = {}, [], 0.0, 0.0
    for step in sorted(s for s in p.checkpoints if s > 0):
        at = run_dir / "at" / f"step{step}"
        if not (at / "model_index.json").exists():
            t0 = time.time()
            train(job.cfg.replace(run={"max_steps": step}), run_dir, progress=False)
            tmp = at.with_name(at.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(run_dir / "export", tmp)
            tmp.replace(at)
            t_train += time.time() - t0
        model = f"path:{at}"
        part = Path(job.args["parts"]) / _part(f"{job.key}@{step}")
        part.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with stderr_to(part / "eval.log"):
            evaluate_all([model], _scale(p), part, p.metrics, (BENCH,), device=job.args["device"])
        t_eval += time.time() - t0
        models[str(step)] = model
        parts.append(str(part))
    return {"key": job.key, "models": models, "parts": parts, "train_s": t_train, "eval_s": t_eval}


def preflight(plan: SweepPlan, runs: list[Run]) -> None:
    """Every preset, reward, metric and model checked before the first run; all at once."""
    from di_star.mini.ablation import preflight as ablation_preflight
    from di_star.config import from_dict
    from distar.core.errors import DistarError
    if not plan.checkpoints or min(plan.checkpoints) < 0:
        raise DistarError("sweep checkpoints must be generator steps >= 0, e.g. 0,150,300,600")
    ablation_preflight([Job(r.key, _run_job, Path(r.key), cfg=from_dict(r.cfg)) for r in runs],
                       [REFERENCE, INIT], plan.metrics, (BENCH,))


def run_sweep(out: Path, plan: SweepPlan, workers: int = 2, device: str = "cpu", console=None) -> dict:
    """Train and evaluate the plan's runs on `workers` processes; merge the store; write
    OUT/sweep.json (plan, runs, models per step, timings). Returns that record."""
    from di_star.config import from_dict
    from distar.core.atomic import write_text
    out = Path(out)
    runs = plan_runs(plan)
    preflight(plan, runs)
    threads = max(1, (os.cpu_count() or 1) // workers) if device == "cpu" else 1
    say = (lambda t: console.print(t, highlight=False)) if console else (lambda t: None)
    say(f"[bold]over-optimisation sweep[/] ({plan.label}): {len(runs)} runs x checkpoints "
        f"{list(plan.checkpoints)}, {workers} worker(s) on {device}; in {out}")
    t0 = time.time()
    parts = out / "parts"
    jobs = [evaluation(m, parts / _part(m), _scale(plan), plan.metrics, (BENCH,), device) for m in (REFERENCE, INIT)]
    jobs += [Job(r.key, _run_job, out / "runs" / r.key, cfg=from_dict(r.cfg),
                 args={"plan": plan, "parts": str(parts), "device": device}) for r in runs]

    def after(job: Job, r: dict) -> list[Job]:
        if job.cfg is None:
            say(f"  {job.model}: train 0 s, eval {r['wall_s']:.0f} s")
        else:
            say(f"  {job.key}: train {r['train_s']:.0f} s, eval {r['eval_s']:.0f} s")
        return []

    done, prov, _ = run_experiment("the over-optimisation sweep", out, plan, jobs, workers, after=after,
                                   threads=threads, device=device, results=out / "results")
    record = {"plan": asdict(plan), "reference": REFERENCE, "init": INIT, "bench": BENCH,
              "runs": [{"key": r.key, "regulariser": r.regulariser, "reward": r.reward, "seed": r.seed,
                        "alpha_cfg": r.cfg["objective"]["alpha_cfg"], "alpha_rew": r.cfg["objective"]["alpha_rew"],
                        "models": done[r.key]["models"],
                        "train_s": done[r.key]["train_s"], "eval_s": done[r.key]["eval_s"]} for r in runs],
              "device": device, "workers": workers, "git": prov["git"], "wall_s": time.time() - t0}
    write_text(out / "sweep.json", json.dumps(record, indent=1) + "\n")
    say(f"sweep done in {record['wall_s']:.0f} s: {out / 'sweep.json'}, store {out / 'results'}")
    return record
