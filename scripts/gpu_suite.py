"""One prepared GPU run (issue 14): Table 1's time and memory columns, the harness overhead,
scorer speed against the reference packages, and the DI* step cost at full SDXL size, on one
H100 / H200 with random weights of the full architectures, nothing downloaded, in <= 8 minutes.

    python scripts/gpu_suite.py --out leaderboards/gpu_suite      # the GPU run: defaults, no edits
    python scripts/gpu_suite.py --dry-run --out /tmp/gpu_suite    # tiny models on the CPU, same
                                                                  # sections, same outputs (CI)

Writes DIR/gpu_suite.json and DIR/gpu_suite.md (atomically, after every section, so a run cut
short keeps what it measured). Sections, each with its own time budget (in the output):
  table1        s / 10 images (after one warm-up batch, CUDA-synchronised) and peak
                max_memory_allocated (build included, as `distar eval` records it) for SDXL 1-step
                (DI*/DMD2 recipe), SDXL 50-step CFG 7.5, SD3.5 Large 28 steps and FLUX.1-dev
                50 steps, each in its registry recipe's dtype; 1-step SDXL / FLUX-dev ratios
                beside the paper's 1.88% (time) and 29.3% (memory)
  harness       `run_eval` vs a bare pipeline loop on SDXL 1-step, same batches
                (di_star/bench/harness.py)
  scorers       images/s of ours vs each reference package's public path, same random weights,
                same images (di_star/bench/metrics.py, di_star/bench/imagereward.py)
  di_star_step  ms per generator step and peak memory for the KL, `x0` and `exact` estimators and
                the assistant step, full SDXL, bf16, the preset's gradient checkpointing
                (di_star/bench/train_step.py)
A section (or a row of one) that runs past its budget is interrupted between two Python calls
(SIGALRM) and reported as skipped or partial with the reason; one that runs out of GPU memory is
reported so and its memory freed; any other failure is reported with its error, and the next
section runs. The GPU is freed between sections and at exit.
"""
from __future__ import annotations

import os
import time

T_PROCESS = time.perf_counter()  # the 8-minute budget counts imports and model builds too

# Before anything imports huggingface_hub / transformers: the GPU machine has no network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Sections load and free 5-35 GB models in turn: expandable segments keep the freed memory usable.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import asdict, dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's packages, installed or not

import evalsuite  # noqa: E402,F401  (torchvision fix before anything imports torchvision)
import torch  # noqa: E402

# Imported here, not when first freeing memory: an import cut by a budget's alarm is lost.
from evalsuite.leaderboard.markdown import md_table  # noqa: E402
from evalsuite.models.loading import load_pipeline, random_pipeline  # noqa: E402

SCHEMA_VERSION = 1
SECTIONS = ("table1", "harness", "scorers", "di_star_step")
TABLE1_MODELS = ("di_star_sdxl", "sdxl_base", "sd35_large", "flux_dev")  # registry names


@dataclass(frozen=True)
class Plan:
    """Everything the run does; `GPU` is the default, `DRY` the CPU rehearsal of the same code."""
    mode: str                                   # 'gpu' | 'dry-run'
    build_size: str                             # random_pipeline's size: 'full' | 'tiny'
    total_budget_s: float                       # the whole script, imports included
    budgets_s: dict[str, float]                 # per section
    table1_budgets_s: dict[str, float]          # per Table 1 row (within the section's)
    table1_batch: int                           # one batch size for every row: memory comparable
    table1_images: dict[str, int]               # images to time per row, if the budget allows
    harness: dict                               # bench_harness.compare kwargs
    scorer_images: int
    scorer_batch: int
    scorer_ref_images: dict[str, int]           # reference paths timed on a prefix of the images
    scorer_budgets_s: dict[str, float]          # per scorer (within the section's)
    imagereward_config: str                     # bench_imagereward: 'full' | 'small'
    metrics_arch: str                           # bench_metrics: 'full' | 'tiny'
    step_size: str                              # bench_train_step: 'full' | 'tiny'
    step_batch: int
    step_reps: int
    step_warmup: int
    min_section_s: float = 10.0                 # do not start a section with less time than this

    def table1_spec(self, name: str):
        """The registry recipe of `name` with random weights; in the dry run the same recipe at
        64 px with at most 2 steps (built at size 'tiny', see `build`)."""
        from evalsuite.models import resolve_model
        spec = resolve_model(name, weights="random")
        if self.mode == "dry-run":
            spec = replace(spec, resolution=64, steps=min(spec.steps, 2))
        return spec

    def build(self, spec, device: torch.device):
        """A Table 1 pipeline: in both modes evalsuite's `random_pipeline` (what `--weights
        random` runs), networks created on `device` in the recipe's dtype; only the size
        differs. So the CPU dry run runs the code that meets the GPU, dtypes included."""
        from distar.core.dtypes import to_dtype
        return random_pipeline(spec, device, self.build_size, dtype=to_dtype(spec.dtype))


GPU = Plan(
    mode="gpu", build_size="full", total_budget_s=480,
    budgets_s={"table1": 205, "harness": 40, "scorers": 140, "di_star_step": 85},
    table1_budgets_s={"di_star_sdxl": 25, "sdxl_base": 40, "sd35_large": 60, "flux_dev": 80},
    table1_batch=1, table1_images={"di_star_sdxl": 20, "sdxl_base": 10, "sd35_large": 10, "flux_dev": 10},
    harness=dict(model="di_star_sdxl", weights="random", images=24, batch_size=8, repeats=2),
    scorer_images=64, scorer_batch=32,
    scorer_ref_images={"hpsv21": 4},  # it reloads its 2 GB checkpoint for every image
    # Building both sides' models on the CPU (random init) is most of each scorer's time.
    scorer_budgets_s={"imagereward": 25, "hpsv21": 35, "pickscore": 20, "aesthetic": 15,
                      "clip": 25, "fid": 20},
    imagereward_config="full", metrics_arch="full",
    step_size="full", step_batch=1, step_reps=3, step_warmup=1)

DRY = Plan(
    mode="dry-run", build_size="tiny", total_budget_s=1500,
    budgets_s={"table1": 300, "harness": 200, "scorers": 500, "di_star_step": 300},
    table1_budgets_s={m: 75 for m in TABLE1_MODELS},
    table1_batch=2, table1_images={m: 2 for m in TABLE1_MODELS},
    harness=dict(model="tiny_sdxl", weights="pretrained", images=8, batch_size=4, repeats=1),
    scorer_images=4, scorer_batch=4, scorer_ref_images={"hpsv21": 2},
    scorer_budgets_s={m: 85 for m in ("imagereward", "hpsv21", "pickscore", "aesthetic", "clip", "fid")},
    imagereward_config="small", metrics_arch="tiny",
    step_size="tiny", step_batch=2, step_reps=1, step_warmup=1, min_section_s=1.0)


# Budgets, interruption, freeing ------------------------------------------------------------
class OverBudget(Exception):
    """Raised in the main thread when a section's (or row's) time budget has run out."""


@contextmanager
def deadline(seconds: float, what: str):
    """Interrupt the body with OverBudget after `seconds` (SIGALRM: Python takes the signal
    between two bytecodes, so a pipeline stops between kernel launches and unwinds normally).
    Nests: an enclosing deadline keeps running and is re-armed with what is left of it."""
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
    t0 = time.monotonic()

    def on_alarm(signum, frame):
        raise OverBudget(f"{what} ran past its {seconds:.0f} s budget")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(min(seconds, outer_left or seconds), 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left:  # the enclosing budget's clock kept running meanwhile
            signal.setitimer(signal.ITIMER_REAL, max(outer_left - (time.monotonic() - t0), 1e-3))


def free_device(device: torch.device) -> None:
    """Drop the harness's cached pipelines and every unreferenced tensor; on a GPU wait for it
    to go idle and return the cached blocks."""
    load_pipeline.cache_clear()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def guarded(fn, budget_s: float, what: str, device: torch.device) -> tuple[str, str | None]:
    """Run fn() under a budget. ('ok', None), or a status ('skipped') and the reason why: over
    budget, out of memory (freed), or the error. Never raises (but KeyboardInterrupt)."""
    status, reason = "ok", None
    try:
        with deadline(budget_s, what):
            fn()
    except OverBudget as e:
        status, reason = "skipped", str(e)
    except torch.cuda.OutOfMemoryError as e:  # torch.OutOfMemoryError in torch >= 2.5: the same class
        status, reason = "skipped", f"{what}: out of memory ({str(e).splitlines()[0][:160]})"
    except Exception as e:  # one broken section must not cost the others their GPU time
        last = traceback.extract_tb(e.__traceback__)[-1]
        status, reason = "failed", (f"{what}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''} "
                                    f"(at {Path(last.filename).name}:{last.lineno})")
    finally:
        free_device(device)
    return status, reason


@dataclass
class Section:
    name: str
    budget_s: float
    status: str = "not run"                     # ok | partial | skipped | failed | not run
    reason: str | None = None
    wall_s: float = 0.0
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


# Sections ------------------------------------------------------------------------------------
def generation_row(plan: Plan, spec, device: torch.device, batch: int, images: int,
                   budget_s: float, row: dict) -> None:
    """Fill `row` as it goes: build, one warm-up batch, then timed batches (CUDA-synchronised)
    until `images` are timed or the next batch would not fit the budget; peak memory over it all,
    as `distar eval` records it (`evalsuite.generate.peak_memory`)."""
    from evalsuite.benchmarks import image_seed, load_benchmark
    from evalsuite.generate import generate_batch, peak_memory
    from evalsuite.generate import denoiser_dtype

    t_start = time.perf_counter()
    prompts = list(load_benchmark("parti").prompts[:images])
    row.update(batch=batch, steps=spec.steps, guidance=spec.guidance, resolution=spec.resolution)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    pipe = plan.build(spec, device)
    row["dtype"] = str(denoiser_dtype(pipe, spec, device)).removeprefix("torch.")
    sync(device)
    row["build_s"] = round(time.perf_counter() - t_start, 2)
    batches = [prompts[i:i + batch] for i in range(0, len(prompts), batch)]
    texts = lambda b: [p.text for p in b]  # noqa: E731
    seeds = lambda b: [image_seed(p.index, 0) for p in b]  # noqa: E731
    t0 = time.perf_counter()
    generate_batch(pipe, spec, texts(batches[0]), seeds(batches[0]), device)  # warm-up
    sync(device)
    row["warmup_s"] = round(time.perf_counter() - t0, 2)
    spent, n = 0.0, 0
    for b in batches:
        per_batch = spent / max(1, n // batch) if n else row["warmup_s"]
        if n and time.perf_counter() - t_start + per_batch > 0.95 * budget_s:
            row["note"] = f"{n} of {images} images timed: the next batch would overrun the budget"
            break
        sync(device)
        t = time.perf_counter()
        generate_batch(pipe, spec, texts(b), seeds(b), device)
        sync(device)
        spent += time.perf_counter() - t
        n += len(b)
        row.update(images_timed=n, s_per_10_images=10 * spent / n)
        row["peak_memory_bytes"], row["peak_memory_kind"] = peak_memory(device)
    row["peak_memory_gib"] = row["peak_memory_bytes"] / 2**30
    del pipe


def section_table1(plan: Plan, device: torch.device, sec: Section, deadline_at: float) -> None:
    from evalsuite.paper_numbers import HEADLINE_VS_FLUX_DEV, reported_row
    for name in TABLE1_MODELS:
        spec = plan.table1_spec(name)
        row = {"model": name, "recipe": spec.description, "budget_s": plan.table1_budgets_s[name]}
        paper = reported_row(name, "parti")
        row["paper_s_per_10_images"] = float(paper.values["time_s_per_10"]) if paper else None
        sec.rows.append(row)
        budget = min(plan.table1_budgets_s[name], deadline_at - time.perf_counter())
        if budget < plan.min_section_s:
            row.update(status="skipped", reason=f"{budget:.0f} s left of the section's budget")
            continue
        status, reason = guarded(
            lambda: generation_row(plan, spec, device, plan.table1_batch,
                                   plan.table1_images[name], budget, row),
            budget, f"table1 {name}", device)
        row.update(status=status, reason=reason)
    by = {r["model"]: r for r in sec.rows}
    one, flux = by["di_star_sdxl"], by["flux_dev"]
    ratios = {"paper_time_fraction": HEADLINE_VS_FLUX_DEV["time"],
              "paper_memory_fraction": HEADLINE_VS_FLUX_DEV["memory"],
              "time_fraction": None, "memory_fraction": None}
    if "s_per_10_images" in one and "s_per_10_images" in flux:
        ratios["time_fraction"] = one["s_per_10_images"] / flux["s_per_10_images"]
    if "peak_memory_bytes" in one and "peak_memory_bytes" in flux:
        ratios["memory_fraction"] = one["peak_memory_bytes"] / flux["peak_memory_bytes"]
    sec.extra["sdxl_1step_vs_flux_dev"] = ratios
    sec.notes.append(f"Seconds per 10 images at batch {plan.table1_batch} for every model (so memory "
                     f"compares like for like), after one warm-up batch, CUDA-synchronised; fewer "
                     f"than 10 images are timed for the slow models (images_timed) and scaled to 10. "
                     f"Peak memory: max_memory_allocated from before the build to the last image.")


def section_harness(plan: Plan, device: torch.device, sec: Section, deadline_at: float) -> None:
    from di_star.bench import harness as bench_harness
    res = bench_harness.compare(**plan.harness, device=str(device))
    sec.rows.append({k: res[k] for k in ("model", "weights", "images", "batch", "repeats",
                                         "bare_median_img_s", "harness_median_img_s",
                                         "ratio_of_medians", "ratio_per_pair")})
    sec.notes.append("Both sides exclude model loading and include one warm-up batch; the harness "
                     "also writes PNGs and the results store. Target: ratio >= 0.95.")


def section_scorers(plan: Plan, device: torch.device, sec: Section, deadline_at: float) -> None:
    from di_star.bench import metrics as bench_metrics
    from di_star.bench import refs as rc

    images, prompts = bench_metrics.bench_images(plan.scorer_images), rc.sample_prompts(plan.scorer_images)
    for name, budget in plan.scorer_budgets_s.items():
        logging.getLogger().setLevel(logging.WARNING)  # a reference package sets the root logger to INFO
        row = {"metric": name, "budget_s": budget}
        sec.rows.append(row)
        budget = min(budget, deadline_at - time.perf_counter())
        if budget < plan.min_section_s:
            row.update(status="skipped", reason=f"{budget:.0f} s left of the section's budget")
            continue

        def one():
            if name == "imagereward":
                from di_star.bench import imagereward as bench_imagereward
                r = bench_imagereward.bench(plan.imagereward_config, plan.scorer_images, 8,
                                            plan.scorer_batch, device, torch.float32,
                                            ref_images=plan.scorer_ref_images.get(name))
                row.update(arch="BLIP ViT-L (ImageReward v1.0)" if plan.imagereward_config == "full"
                           else "small", batch=r["batch"], images=r["pairs"],
                           ref_images=r["reference_pairs"], setup_s=r["build_s"],
                           ours_img_s=r["ours_score_img_per_s"], ref_img_s=r["reference_score_img_per_s"],
                           speedup=r["speedup"], max_abs_diff=r["max_abs_diff"])
            else:
                r = bench_metrics.bench_metric(name, plan.metrics_arch, images, prompts, device,
                                               plan.scorer_batch, plan.scorer_ref_images.get(name))
                row.update({k: r[k] for k in ("arch", "batch", "images", "ref_images", "setup_s",
                                              "ours_img_s", "ref_img_s", "speedup", "max_abs_diff")})
        status, reason = guarded(one, budget, f"scorer {name}", device)
        row.update(status=status, reason=reason)
    sec.notes.append("Same random weights and images for both sides, fp32, after one warm-up call "
                     "each; a reference timed on fewer images (ref_images) is timed on a prefix "
                     "of ours. Setup (building both models) is not timed. Target: >= 3x.")


def step_optimizer(preset_optimizer: str, device: torch.device) -> tuple[str, str]:
    """(the optimizer the DI* step is timed with, why): the full preset's when it can run here,
    else fp32 AdamW, said so (the memory plan gives both)."""
    import importlib.util
    if preset_optimizer != "adamw8bit":
        return preset_optimizer, "the preset's"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "adamw", ("fallback: bitsandbytes is not installed, so fp32 AdamW, not the preset's "
                         "8-bit AdamW (install it from the wheelhouse to measure the preset)")
    if device.type != "cuda":
        return "adamw", "fallback: 8-bit AdamW needs CUDA; fp32 AdamW on this device"
    from importlib.metadata import version
    return "adamw8bit", f"the preset's (bitsandbytes {version('bitsandbytes')})"


def section_di_star_step(plan: Plan, device: torch.device, sec: Section, deadline_at: float) -> None:
    from di_star import memory
    from di_star.bench import train_step as bts
    from di_star.presets import get_preset

    world, models, base, build_s = bts.build(plan.step_size, plan.step_batch, reward=True, device=device)
    optimizer, why = step_optimizer(get_preset("di_star_sdxl").sd.optimizer, device)
    counts = memory.world_counts(world, models)
    sec.extra.update(build_s=round(build_s, 1), resolution=world.resolution, batch=plan.step_batch,
                     mixed_precision=base.sd.mixed_precision,
                     gradient_checkpointing=base.sd.gradient_checkpointing,
                     checkpoint_frozen=base.sd.checkpoint_frozen,
                     unet_params=sum(counts.unet), optimizer=optimizer, optimizer_reason=why,
                     # The plan of what was built here, one process, before activations (GiB).
                     memory_plan_gib=memory.plan_rows(counts, base.sd.mixed_precision))

    def keep(times, peaks):  # after every timed round: what is measured survives an interruption
        summary = bts.summarise(times)
        sec.rows[:] = [{"step": name, **{k: v for k, v in r.items()}, "target": bts.TARGETS.get(name, ""),
                        "peak_memory_gib": peaks.get(name), "rounds": len(times[name])}
                       for name, r in summary.items()]

    oom = False
    try:
        bts.time_variants(world, models, base, plan.step_reps, plan.step_warmup, assistant=True,
                          on_round=keep, optimizer=optimizer)
    except torch.cuda.OutOfMemoryError:
        oom = True  # freed below, once the traceback (and the activations it holds) is gone
    if oom:
        # An 80 GB GPU may not hold both networks' fp32 AdamW states: time the generator steps alone.
        models.generator.zero_grad(set_to_none=True)
        models.assistant.zero_grad(set_to_none=True)
        free_device(device)
        sec.notes.append("Out of memory with the assistant's optimizer allocated too; generator steps "
                         "timed without it, assistant step not measured.")
        bts.time_variants(world, models, base, plan.step_reps, plan.step_warmup, assistant=False,
                          on_round=keep, optimizer=optimizer)
    sec.notes.append(f"One step = sample, loss terms, backward, {optimizer} step (fp32 master "
                     f"weights, lr ~ 0; optimizer: {why}); variants round-robin. Peak memory per "
                     f"step includes the weights and every optimizer state allocated so far (both "
                     f"networks' in steady state). The memory plan (di_star/memory.py) is the "
                     f"arithmetic for the networks built here, before activations.")


RUNNERS = {"table1": section_table1, "harness": section_harness, "scorers": section_scorers,
           "di_star_step": section_di_star_step}


# Report ----------------------------------------------------------------------------------------
def _fmt(v, nd=2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _status(r: dict) -> str:
    return f"{r.get('status')}{': ' + r['reason'] if r.get('reason') else ''}"


def render_md(report: dict) -> str:
    h = report["header"]
    lines = [f"# GPU suite ({h['mode']})", "",
             f"{h['device']}; torch {h['versions'].get('torch')}, diffusers {h['versions'].get('diffusers')}; "
             f"commit {h['git_hash']}; {h['date_utc']}; {h['wall_s']:.0f} s of the {h['total_budget_s']:.0f} s budget.",
             "Random weights of the full architectures (nothing downloaded): times and memory are "
             "real, scores are meaningless." if h["mode"] == "gpu" else
             "DRY RUN: tiny models on the CPU. It proves the script end to end; its numbers do not "
             "describe the real models (CPU peak RSS, not GPU memory).", ""]
    for sec in report["sections"]:
        lines += [f"## {sec['name']} ({sec['status']}, {sec['wall_s']:.0f} s of a {sec['budget_s']:.0f} s budget)", ""]
        if sec["reason"]:
            lines += [f"Reason: {sec['reason']}", ""]
        rows = sec["rows"]
        if sec["name"] == "table1" and rows:
            kind = next((r["peak_memory_kind"] for r in rows if r.get("peak_memory_kind")), "")
            lines.append(md_table(
                ["model", "recipe", "dtype", "batch", "images timed", "s / 10 images", "paper's s / 10 images",
                 f"peak memory GiB ({kind})", "build s", "status"],
                [[r['model'], r['recipe'], r.get('dtype', '-'), r.get('batch', '-'), r.get('images_timed', '-'),
                  _fmt(r.get('s_per_10_images')), _fmt(r.get('paper_s_per_10_images')),
                  _fmt(r.get('peak_memory_gib')), _fmt(r.get('build_s'), 1), _status(r)] for r in rows], "-"))
            q = sec["extra"].get("sdxl_1step_vs_flux_dev", {})
            lines += ["", md_table(["SDXL 1-step / FLUX-dev 50-step", "measured", "the paper's"],
                                   [["time", _pct(q.get('time_fraction')), q.get('paper_time_fraction')],
                                    ["memory", _pct(q.get('memory_fraction')), q.get('paper_memory_fraction')]], "-")]
        elif sec["name"] == "harness" and rows:
            lines.append(md_table(
                ["model", "images", "batch", "bare loop img/s", "harness img/s", "harness / bare", "per pair"],
                [[f"{r['model']} ({r['weights']})", r['images'], r['batch'], _fmt(r['bare_median_img_s']),
                  _fmt(r['harness_median_img_s']), _fmt(r['ratio_of_medians'], 3),
                  ', '.join(f'{x:.3f}' for x in r['ratio_per_pair'])] for r in rows], "-"))
        elif sec["name"] == "scorers" and rows:
            lines.append(md_table(
                ["metric", "backbone", "batch", "images (ref)", "ours img/s", "reference img/s", "ours / ref",
                 "max abs diff", "status"],
                [[r['metric'], r.get('arch', '-'), r.get('batch', '-'),
                  f"{r.get('images', '-')} ({r.get('ref_images', '-')})", _fmt(r.get('ours_img_s')),
                  _fmt(r.get('ref_img_s')), f"{_fmt(r.get('speedup'))}x",
                  _fmt(r.get('max_abs_diff'), 1) if r.get('max_abs_diff') is None else format(r['max_abs_diff'], '.1e'),
                  _status(r)] for r in rows], "-"))
        elif sec["name"] == "di_star_step" and rows:
            x = sec["extra"]
            lines += [f"SDXL UNets of {x.get('unet_params', 0) / 1e6:,.1f}M parameters, {x.get('resolution')} px, batch "
                      f"{x.get('batch')}, mixed precision {x.get('mixed_precision')}, gradient checkpointing "
                      f"{x.get('gradient_checkpointing')} (frozen nets too: {x.get('checkpoint_frozen')}), "
                      f"build {x.get('build_s')} s.", "",
                      md_table(["step", "median ms", "min ms", "ratio to KL (median of rounds)", "target",
                                "peak memory GiB", "rounds"],
                               [[r['step'], f"{r['median_ms']:.1f}", f"{r['min_ms']:.1f}",
                                 f"{r['ratio_to_kl_median_of_rounds']:.2f}x", r['target'], _fmt(r['peak_memory_gib']),
                                 r['rounds']] for r in rows], "-")]
            if x.get("memory_plan_gib"):
                from di_star.memory import render
                lines += ["", f"Optimizer: {x.get('optimizer')} ({x.get('optimizer_reason')}).", "",
                          render(x["memory_plan_gib"], "Memory plan of the networks built here, "
                                 "one process, before activations:")]
        for n in sec["notes"]:
            lines += ["", n]
        lines.append("")
    return "\n".join(lines)


def write_report(out: Path, report: dict) -> None:
    from distar.core import atomic
    atomic.write_text(out / "gpu_suite.json", json.dumps(report, indent=1, default=str) + "\n")
    atomic.write_text(out / "gpu_suite.md", render_md(report))


# Main ------------------------------------------------------------------------------------------
@contextmanager
def temp_under(out: Path):
    """Every temporary file of the run goes to OUT/.tmp-PID and is removed at exit, whatever
    happens: the reference scorers' checkpoints (HPS's is ~2 GB at full size), the FID image
    folders, the harness's bench folder (each made with Python's tempfile, here or in a reference
    package). A folder left by a killed run is removed by the next. Not multiprocessing's own
    folder: its Unix sockets (DataLoader workers pass tensors through them) need a path under
    ~107 characters, which a deep OUT exceeds (clean-fid's workers then hang), so that folder is
    created in the system temp before tempfile is pointed here (workers inherit it)."""
    import multiprocessing.util
    import shutil
    import tempfile
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".tmp-*"):
        pid = stale.name[len(".tmp-"):]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out / f".tmp-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    multiprocessing.util.get_temp_dir()
    saved, tempfile.tempdir = tempfile.tempdir, str(tmp)
    try:
        yield tmp
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(tmp, ignore_errors=True)


def run(plan: Plan, device: torch.device, out: Path, sections=SECTIONS, t_start: float | None = None) -> dict:
    from evalsuite.generate import device_name, provenance
    t_start = t_start if t_start is not None else time.perf_counter()
    prov = provenance()
    header = dict(schema_version=SCHEMA_VERSION, mode=plan.mode, device=device_name(device),
                  git_hash=prov["git_hash"], versions=prov["versions"],
                  date_utc=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                  total_budget_s=plan.total_budget_s, wall_s=0.0, plan=asdict(plan))
    report = {"header": header, "sections": []}
    try:
        for name in sections:
            left = plan.total_budget_s - (time.perf_counter() - t_start) - 5  # 5 s to write the report
            sec = Section(name, plan.budgets_s[name])
            budget = min(sec.budget_s, left)
            t0 = time.perf_counter()
            if budget < plan.min_section_s:
                sec.status, sec.reason = "skipped", f"not started: {left:.0f} s left of the total budget"
            else:
                print(f"[gpu_suite] {name}: budget {budget:.0f} s", flush=True)
                sec.status, sec.reason = guarded(
                    lambda: RUNNERS[name](plan, device, sec, t0 + budget), budget, name, device)
                if sec.status != "ok" and sec.rows:
                    sec.status = "partial"
                elif sec.status == "ok" and any(r.get("status", "ok") != "ok" for r in sec.rows):
                    sec.status = "partial"
                    sec.reason = "; ".join(r["reason"] for r in sec.rows if r.get("reason"))
            sec.wall_s = time.perf_counter() - t0
            print(f"[gpu_suite] {name}: {sec.status} in {sec.wall_s:.0f} s"
                  + (f" ({sec.reason})" if sec.reason else ""), flush=True)
            report["sections"].append(asdict(sec))
            header["wall_s"] = time.perf_counter() - t_start
            write_report(out, report)
    finally:
        free_device(device)  # nothing left on the GPU, nothing running, whatever happened
    return report


def main(argv=None) -> int:
    t_start = T_PROCESS if argv is None else time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_suite.json and gpu_suite.md")
    ap.add_argument("--dry-run", action="store_true", help="tiny models on the CPU (CI's proof of the script)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of: {', '.join(SECTIONS)}")
    args = ap.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        print(f"error: unknown section(s) {', '.join(unknown)}. Choose from: {', '.join(SECTIONS)}.",
              file=sys.stderr)
        return 2
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA GPU is visible. The suite measures GPU time and memory; "
              "run `python scripts/gpu_suite.py --dry-run --out DIR` for the CPU rehearsal.", file=sys.stderr)
        return 2
    from distar.core.errors import DistarError
    from evalsuite.generate import check_writable
    try:
        check_writable(args.out)
    except DistarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from evalsuite.models.loading import quiet_hf_logging
    quiet_hf_logging()
    plan = DRY if args.dry_run else GPU
    device = torch.device("cpu" if args.dry_run else "cuda")
    if args.dry_run:  # tiny models: one thread is faster than two fighting over a shared CPU
        torch.set_num_threads(1)
    with temp_under(args.out):
        report = run(plan, device, args.out, sections, t_start)
    print(f"[gpu_suite] wrote {args.out / 'gpu_suite.json'} and gpu_suite.md in "
          f"{report['header']['wall_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
