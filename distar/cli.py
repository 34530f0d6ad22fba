"""The `distar` command line, above both packages (it may import evalsuite and di_star; neither
imports it). Each command is a thin wrapper over one library function; imports are lazy so
`distar --help` is instant. DistarError is printed as one line, no traceback."""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from distar.core.errors import DistarError
from distar.core.runlock import out_lock, secondary_rank

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Evaluate text-to-image generators and post-train them with Diff-Instruct*.")


def _version(value: bool) -> None:
    if value:
        import importlib.metadata as md
        try:
            version = md.version("distar")
        except md.PackageNotFoundError:
            version = "unknown (not installed; run scripts/setup.sh)"
        print(f"distar {version}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", metavar="", callback=_version,
                                       is_eager=True, help="Print the version and exit.")) -> None:
    """Evaluate text-to-image generators and post-train them with Diff-Instruct*."""
console = Console(stderr=True)


def report_error(message: str) -> None:
    """Print a user-facing message as plain text on stderr: never parsed as rich markup (user
    text such as `[/x]` or `[optim]` prints verbatim) and never wrapped at the terminal width
    (commands and paths in a fix stay copy-pasteable)."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


INTERRUPTED = "interrupted; rerun the same command to resume"


def _path(value) -> Path:
    """A path option's value (parser of every --out / --results / --json / --config): an empty
    one would silently mean the current folder (`--out ""` wrote results into it)."""
    if isinstance(value, Path):
        return value
    if not str(value).strip():
        raise typer.BadParameter("an empty path. Fix: give a folder or file name, or leave the "
                                 "option out for its default.")
    return Path(value)


PATH = dict(parser=_path, metavar="PATH")


def _friendly(fn):
    """The one place a command's failure becomes what the user sees: DistarError -> its message,
    exit 2; Ctrl-C -> "interrupted; rerun the same command to resume", exit 130 (128 + SIGINT)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from distar.core.signals import exit_code, sigterm_as_interrupt
        try:
            # SIGTERM (timeout, kill, a scheduler) stops a command as Ctrl-C does (exit 143).
            with sigterm_as_interrupt():
                # di_star's plug-ins (the toy and mini worlds' models, benches and metrics, and
                # those named in $DISTAR_PLUGINS) join the registries (di_star/plugins.py).
                from di_star.plugins import register
                register()
                return fn(*args, **kwargs)
        except DistarError as e:
            report_error(str(e))
            raise typer.Exit(code=2)
        except KeyboardInterrupt as e:
            sys.stderr.write(f"\n{INTERRUPTED}\n")
            sys.stderr.flush()
            raise typer.Exit(code=exit_code(e))
    return wrapper


def _print_registry(title: str, entries: dict[str, str]) -> None:
    table = Table(title=title)
    table.add_column("name", style="bold")
    table.add_column("description")
    for name, desc in entries.items():
        table.add_row(name, desc)
    Console().print(table)


@app.command("models")
@_friendly
def models_cmd() -> None:
    """List registered models (use `path:DIR` for any local diffusers pipeline)."""
    from evalsuite.models import MODELS
    _print_registry("models", MODELS.describe())


@app.command("benches")
@_friendly
def benches_cmd() -> None:
    """List registered benchmarks."""
    from evalsuite.benchmarks import BENCHMARKS
    _print_registry("benchmarks", BENCHMARKS.describe())


@app.command("metrics")
@_friendly
def metrics_cmd(
    versions: bool = typer.Option(False, "--versions", help="Also the version and backbone each "
                                  "metric stores its scores under (imports the metric classes: "
                                  "seconds; no weights are read)."),
) -> None:
    """List registered metrics."""
    from evalsuite.metrics import METRICS
    if not versions:
        _print_registry("metrics", METRICS.describe())
        return
    _print_metric_versions(METRICS.describe())


def _print_metric_versions(entries: dict[str, str]) -> None:
    """`distar metrics --versions`: each metric's store key (evalsuite.metrics.runner.known_key:
    version | backbone | preprocessing) where its class knows it without weights."""
    from evalsuite.metrics.runner import known_key
    table = Table(title="metrics")
    for col in ("name", "description", "version", "backbone"):
        table.add_column(col, style="bold" if col == "name" else None)
    for name, desc in entries.items():
        try:
            key = known_key(name, {"device": "cpu"})
        except DistarError:  # e.g. the mini world is not built where it is looked for
            key = None
        version, backbone = (key.split("|") + ["", ""])[:2] if key else \
            ("(read from its weights when loaded)", "")
        table.add_row(name, desc, version, backbone)
    Console().print(table)


@app.command("eval")
@_friendly
def eval_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name or path:DIR; "
                              "several comma-separated (every model on every --bench)."),
    bench: str = typer.Option(..., "--bench", "-b", help="Benchmark name (see `distar benches`); "
                              "several comma-separated."),
    limit: Optional[int] = typer.Option(None, help="Only the first N prompts."),
    spread: bool = typer.Option(False, "--spread", help="With --limit N: N prompts evenly spaced "
                                "over the benchmark (every category of one stored in blocks) "
                                "instead of the first N."),
    metrics: str = typer.Option("", help="Comma-separated metrics to score, e.g. pickscore,clip."),
    out: Path = typer.Option(Path("results"), help="Output directory (images + results store).",
                             **PATH),
    batch_size: int = typer.Option(0, help="Images per batch; 0 = the model recipe's default "
                                   "on a GPU, 2 on a CPU (so progress shows)."),
    images_per_prompt: int = typer.Option(1, help="Images per prompt (seeds differ by k)."),
    weights: str = typer.Option("pretrained", help="'pretrained' or 'random' (latency/memory "
                                "of a full-size architecture with nothing downloaded)."),
    device: str = typer.Option("auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ..."),
    skip_generation: bool = typer.Option(False, "--skip-generation", metavar="",
                                         help="Only score images already generated."),
    force: bool = typer.Option(False, "--force", metavar="", help="Run a full-size "
                               "--weights random model on a CPU anyway (tens of GB, minutes per "
                               "image)."),
    metric_dtype: str = typer.Option("fp32", help="Precision the scorers compute in: fp32, "
                                     "bf16 or fp16 (GPU only). bf16/fp16 scores are stored "
                                     "under their own key, never beside fp32 ones; FID/KID and "
                                     "the mini/toy metrics run in fp32 only."),
    fid_ref: Optional[Path] = typer.Option(None, help="Folder of real images (e.g. COCO "
                                           "val2014) for FID/KID reference statistics.", **PATH),
    steps: Optional[int] = typer.Option(None, help="Sampling steps (overrides the recipe)."),
    guidance: Optional[float] = typer.Option(None, help="Guidance scale (overrides the recipe)."),
    resolution: Optional[int] = typer.Option(None, help="Image side in pixels (overrides the "
                                             "recipe)."),
    name: Optional[str] = typer.Option(None, help="Display name in summaries, leaderboards and "
                                       "the gallery (default: the model name; for path: the "
                                       "folder's, or the training run's)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the final summary "
                                            "(scores with 95% CI, paths, latency, memory) here.", **PATH),
    repair_store: bool = typer.Option(False, "--repair-store", help="If OUT/results.sqlite is "
                                      "damaged: move it aside and rebuild the image rows from "
                                      "the PNG files on disk (nothing is regenerated)."),
    variant: Optional[str] = typer.Option(None, help="Weight files to load, e.g. fp16 for "
                                          "*.fp16.safetensors (path: folders saved with only "
                                          "those are detected); '' = the plain files."),
    shard: Optional[str] = typer.Option(None, help="I/N: only shard I of N (I from 0) of the "
                                        "prompts, same seeds as one run; each shard its own --out, "
                                        "then `distar merge` (README: many machines)."),
) -> None:
    """Generate a benchmark's images with a model (resumable), then score them."""
    from evalsuite.generate import EvalRequest, check_request
    from evalsuite.preflight import check_evals
    metric_names = [m.strip() for m in metrics.split(",") if m.strip()]
    _check_json_out(json_out)
    per_metric: dict = {}
    if fid_ref is not None:
        per_metric = {m: {"reference_dir": str(fid_ref)} for m in ("fid", "kid")}
    # Every name, weight, reference and prompt file is checked before the first image.
    models, benches = _names(model, "--model"), _names(bench, "--bench")
    if name is not None and len(models) > 1:
        raise DistarError("--name names one model; with several --model, leave it out (each "
                          "keeps its own name) or run them one by one.")
    shard_of = _check_shard(shard, metric_names, bench, limit)
    check_evals(models, benches, metric_names, weights=weights, limit=limit,
                metric_options=per_metric, generate=not skip_generation, device=device,
                force=force, metric_dtype=metric_dtype)
    batch_size = _cpu_default_batch(batch_size, device)
    if spread and limit is None:
        raise DistarError("--spread spreads the --limit N prompts over the benchmark. Fix: add "
                          "--limit N, or leave --spread out to run every prompt.")
    reqs = [EvalRequest(model=m, bench=b, limit=limit, spread=spread, out=out, batch_size=batch_size,
                        images_per_prompt=images_per_prompt, weights=weights, device=device,
                        steps=steps, guidance=guidance, resolution=resolution, name=name,
                        shard=shard_of, variant=variant) for m in models for b in benches]
    for req in reqs:
        check_request(req)
    _check_processes()
    main = not secondary_rank()  # under a launcher only rank 0 locks
    summaries = []
    # One process per --out (an flock on OUT/.distar.lock, kept through scoring): a second one
    # is refused naming the holder, instead of doing the same work twice.
    with out_lock(out, f"distar eval --model {model} --bench {bench}") if main \
            else contextlib.nullcontext():
        if repair_store and main:
            _repair(out)
        for req in reqs:
            summaries.append(_eval_pair(req, metric_names, per_metric, skip_generation,
                                        repair_store, metric_dtype))
    if json_out is not None and main:
        from evalsuite.summary import write_json
        write_json(summaries[0] if len(summaries) == 1 else summaries, json_out)
        print(f"summary: {json_out}")


CPU_DEFAULT_BATCH = 2


def _cpu_default_batch(batch_size: int, device: str) -> int:
    """--batch-size 0 on a CPU: CPU_DEFAULT_BATCH images per pipeline call. A CPU gains little
    from batching, and the progress bar moves once per batch: with the recipe's batch (8 for
    the tiny and mini models) `--limit 8` was one batch and the bar sat at 0 until the end.
    On a GPU 0 stays the recipe's default. (Library callers of run_eval keep the recipe's.)"""
    if batch_size:
        return batch_size
    from evalsuite.models.loading import resolve_device
    return CPU_DEFAULT_BATCH if resolve_device(device).type == "cpu" else 0


def _check_json_out(json_out: Optional[Path]) -> None:
    """--json naming a folder is refused now, not after the whole evaluation or scoring."""
    if json_out is not None and json_out.is_dir():
        raise DistarError(f"--json {json_out} is a directory. Fix: give a file name, e.g. "
                          f"--json {json_out / 'summary.json'}.")


def _names(text: str, option: str) -> list[str]:
    """`a,b` -> ['a', 'b'] (each once, in order)."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise DistarError(f"{option} is empty. Fix: give a name, or several separated by commas.")
    return names


def _eval_pair(req, metric_names: list[str], per_metric: dict, skip_generation: bool,
               repair_store: bool, metric_dtype: str):
    """One model on one benchmark: generate (resume), score, print the summary; returns it."""
    from evalsuite.generate import end_run, run_eval
    from evalsuite.summary import render, summarize
    run = run_eval(req, generate=not skip_generation, adopt=repair_store, complete=False)
    outcomes = []
    try:  # the run is 'complete' once its images are scored too
        if metric_names:
            from evalsuite.metrics.runner import score_run
            outcomes = score_run(run, metric_names, device=run.device, dtype=metric_dtype,
                                 **{k: v for k, v in per_metric.items() if k in metric_names})
    except BaseException as e:
        end_run(run, e)
        raise
    end_run(run)
    summary = summarize(run, outcomes)
    if secondary_rank():  # under a launcher the main process reports
        return summary
    if run.generated == 0 and all(o.scored == 0 for o in outcomes):
        print(f"nothing to do: all {summary.n_images} images"
              f"{' and their scores' if outcomes else ''} are already in {req.out}")
    print(render(summary), flush=True)
    return summary


def _check_processes() -> None:
    """Say once how many processes run this evaluation, and stop when `accelerate launch` was
    asked for more than it started (`--cpu --num_processes 2` without --multi_gpu starts one)."""
    from distar.core.launch import requested_processes
    world = int(os.environ.get("WORLD_SIZE", "1"))
    asked = requested_processes()
    if asked is not None and asked > world:
        raise DistarError(f"accelerate launch was asked for {asked} processes but started "
                          f"{world}. Fix: add --multi_gpu (on a CPU-only machine too: distar "
                          f"then uses gloo), e.g. `accelerate launch --multi_gpu --num_processes "
                          f"{asked} --num_machines 1 --mixed_precision no --dynamo_backend no -m "
                          f"distar eval ...`, or --config_file configs/accelerate/cpu_2proc.yaml.")
    if not secondary_rank():
        sys.stderr.write(f"processes: {world}\n")


def _check_shard(shard: Optional[str], metric_names: list[str], bench: str,
                 limit: Optional[int]) -> Optional[tuple[int, int]]:
    """--shard I/N -> (I, N). A set metric (FID, KID, diversity) over one shard would be a
    different number from the whole set's: those are scored after `distar merge`."""
    if shard is None:
        return None
    from evalsuite.generate import parse_shard
    from evalsuite.metrics.runner import metric_class
    parsed = parse_shard(shard)
    set_metrics = [m for m in metric_names
                   if (cls := metric_class(m)) is not None and not hasattr(cls, "score")]
    if set_metrics:
        raise DistarError(f"--shard: {', '.join(set_metrics)} scores the whole image set, not a "
                          "shard. Fix: leave it out of the shards' --metrics and run `distar eval "
                          f"--bench {bench} ... --out MERGED --skip-generation --metrics "
                          f"{','.join(set_metrics)}` after `distar merge --out MERGED ...`.")
    return parsed


@app.command("merge")
@_friendly
def merge_cmd(
    parts: list[Path] = typer.Argument(..., help="Results folders to merge (each a --out of "
                                       "`distar eval`, e.g. one per --shard)."),
    out: Path = typer.Option(..., help="The merged results folder (created if needed; rerun "
                             "the same command to finish an interrupted merge)."),
) -> None:
    """Merge results folders (shards, nodes) into one: image files before rows, idempotent;
    parts whose recipe, benchmark or metric versions disagree are refused."""
    from evalsuite.merge import describe_merge, merge_results
    done = merge_results(parts, out)
    print(describe_merge(done, out))


@app.command("score")
@_friendly
def score_cmd(
    images: Path = typer.Option(..., help="Folder of images (PNG, JPEG, WebP) made elsewhere.",
                                **PATH),
    metrics: str = typer.Option(..., help="Comma-separated metrics, e.g. pickscore,clip or fid."),
    prompts: Optional[str] = typer.Option(None, help="A benchmark (parti, file:my.txt, a .txt / "
                                          ".tsv) whose prompt index names each image "
                                          "(<i>.png or <i>_<k>.png), or a manifest (.jsonl "
                                          "{file, prompt} lines, .csv file,prompt). Not needed "
                                          "for FID / KID."),
    ref: Optional[Path] = typer.Option(None, help="Folder of real images: FID / KID of --images "
                                       "against it.", **PATH),
    out: Path = typer.Option(Path("results"), help="Results folder (as eval's --out).", **PATH),
    name: Optional[str] = typer.Option(None, help="Display name (default: the folder's name)."),
    device: str = typer.Option("auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ..."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the summary here.",
                                            **PATH),
) -> None:
    """Score a folder of existing images into the results store (same summary, --json and
    leaderboards as `distar eval`)."""
    _check_json_out(json_out)
    from evalsuite.score_folder import score_folder
    from evalsuite.summary import render, write_json
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    summary, _ = score_folder(images, names, out, prompts=prompts, ref=ref, name=name,
                              device=device)
    print(render(summary), flush=True)
    if json_out is not None:
        write_json(summary, json_out)
        print(f"summary: {json_out}")


def _repair(out: Path) -> None:
    """--repair-store: move a damaged results store aside (a healthy one is left alone)."""
    from evalsuite.store import ResultsStore, StoreDamagedError, repair_store
    try:
        if (out / "results.sqlite").exists():
            ResultsStore(out, readonly=True).table("runs")
        return
    except StoreDamagedError:
        pass
    aside = repair_store(out)
    sys.stderr.write(f"moved the damaged store to {aside}; rebuilding its image rows from the "
                     f"PNG files under {out / 'images'}\n")


@app.command("fetch")
@_friendly
def fetch_cmd(
    model: str = typer.Option("", "--model", "-m", help="Model name(s), comma-separated."),
    bench: Optional[str] = typer.Option(None, "--bench", "-b", help="Benchmark name."),
    metrics: str = typer.Option("", help="Comma-separated metrics, as for eval."),
    preset: Optional[str] = typer.Option(None, help="A training preset: its generator, "
                                         "reference, reward and prompts."),
    plan: bool = typer.Option(False, "--plan", metavar="", help="Only print what would be "
                              "downloaded (works offline; sizes need the hub)."),
    to: Optional[Path] = typer.Option(None, help="Download into this folder (an HF cache under "
                                      "DIR/hub plus a sha256 manifest), to copy to a machine "
                                      "without internet; default: the local HF cache.",
                                      **PATH),
) -> None:
    """Download every weight and prompt file an eval or train command needs (for offline use)."""
    from evalsuite.fetch import fetch
    from evalsuite.models.specs import resolve_model
    specs = [resolve_model(m.strip()) for m in model.split(",") if m.strip()]
    metric_names = [m.strip() for m in metrics.split(",") if m.strip()]
    if preset is not None:
        from di_star.cli import fetch_targets, resolve_config
        more_specs, preset_bench, reward = fetch_targets(resolve_config(preset, None, None))
        specs += more_specs
        metric_names += [m for m in reward if m not in metric_names]
        if preset_bench and bench and preset_bench != bench:
            raise DistarError(f"--bench {bench} differs from preset {preset}'s prompts "
                              f"(bench:{preset_bench}); run fetch once for each.")
        bench = bench or preset_bench
    if not (specs or bench or metric_names):
        raise DistarError("nothing to fetch: give --model, --bench, --metrics or --preset "
                          "(e.g. distar fetch --model flux_dev --bench parti --metrics clip --plan).")
    fetch(specs, bench, metric_names, plan_only=plan, to=to)


@app.command("train")
@_friendly
def train_cmd(
    preset: Optional[str] = typer.Option(None, help="Preset name (see `distar train --list`)."),
    config: Optional[Path] = typer.Option(None, help="A JSON/TOML config file (typed; no eval).", **PATH),
    max_steps: Optional[int] = typer.Option(None, help="Override the number of generator steps."),
    out: Optional[Path] = typer.Option(None, help="Run directory (rerun the same command to resume).", **PATH),
    list_presets: bool = typer.Option(False, "--list", metavar="", help="List presets and exit."),
) -> None:
    """Post-train a one-step generator with DI* (or a baseline from the same code)."""
    from di_star.cli import train
    train(preset=preset, config=config, max_steps=max_steps, out=out, list_presets=list_presets)


@app.command("demo")
@_friendly
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), help="Where runs, figures and tables go "
                             "(tables and figures in OUT/leaderboards).", **PATH),
    update_leaderboards: bool = typer.Option(False, "--update-leaderboards", metavar="", help="Write the "
                                             "tables and figures into ./leaderboards (the "
                                             "repository's tracked copies) instead."),
    world: str = typer.Option("mini", help="'mini': DI* on the mini text-to-image world through the SD "
                              "trainer and the eval suite (paper Tables 1-3 in miniature, mini_*.md; ~8 "
                              "minutes on 2 cores); 'toy': the gmm and digits labs (toy_*.md; 'gmm' / "
                              "'digits' run both too)."),
) -> None:
    """Run an ablation of the paper's Table 2 in miniature on CPU and write its tables."""
    leaderboards = Path("leaderboards") if update_leaderboards else out / "leaderboards"
    if world == "mini":
        from di_star.mini.ablation import run_ablation
        run_ablation(out=out / "mini", leaderboards=leaderboards, scale="demo")
    elif world in ("toy", "gmm", "digits"):
        from di_star.toy.demo import run_demo
        run_demo(out=out, leaderboards=leaderboards)
    else:
        raise DistarError(f"Unknown demo world '{world}'. Choose one of: mini, toy (gmm and digits).")


@app.command("leaderboard")
@_friendly
def leaderboard_cmd(
    results: Path = typer.Option(Path("results"), help="Directory holding results.sqlite.", **PATH),
    out: Path = typer.Option(Path("leaderboards"), help="Where the markdown tables go.", **PATH),
    with_reported: bool = typer.Option(False, "--with-reported", metavar="", help="Tables 1 and 3: the DI* paper's "
                                       "number for the same model beside each measured column, "
                                       "headed '(paper)'."),
    suite: str = typer.Option("paper", help="'paper' (Parti, COCO-30K, HPSv2) or 'mini' (the mini "
                              "world's benchmarks; files mini_*.md)."),
    baseline: Optional[str] = typer.Option(None, help="A model name: also write paired tests of "
                                           "every model against it (e.g. mini_onestep)."),
    show_failed: bool = typer.Option(False, "--show-failed", help="Also show recipes whose only "
                                     "runs failed (crashed or killed), labelled '(failed run)'."),
) -> None:
    """Regenerate the markdown leaderboards (and plots) from the results store."""
    from evalsuite.leaderboard import write_leaderboards
    written = write_leaderboards(results_dir=results, out_dir=out, with_reported=with_reported, suite=suite,
                                 baseline=baseline, show_failed=show_failed)
    _print_main_table(written)
    print(f"wrote {len(written)} files from {results}:")
    for path in written:
        print(f"  {path}")


def _print_main_table(written: list) -> None:
    """The main table (Table 1, the first file written) on the terminal too."""
    tables = [Path(p) for p in written if str(p).endswith(".md")]
    if tables:
        print(tables[0].read_text().rstrip() + "\n")


@app.command("gallery")
@_friendly
def gallery_cmd(
    bench: str = typer.Option(..., help="Benchmark whose images to show."),
    models: str = typer.Option("", help="Comma-separated model names; default all with images."),
    results: Path = typer.Option(Path("results"), help="The results folder (eval's --out).",
                                 **PATH),
    html: Optional[Path] = typer.Option(None, help="Folder for the HTML page and its "
                                        "thumbnails (default: gallery).", **PATH),
    out: Optional[Path] = typer.Option(None, hidden=True, help="Old name of --html.", **PATH),
    show_failed: bool = typer.Option(False, "--show-failed", help="Also show models whose only "
                                     "runs failed (crashed or killed)."),
) -> None:
    """Write a static side-by-side HTML gallery, one row per prompt, one column per model."""
    from evalsuite.gallery import write_gallery
    names = [m.strip() for m in models.split(",") if m.strip()]
    page = write_gallery(results_dir=results, bench=bench, models=names or None,
                         out_dir=_gallery_folder(html, out), show_failed=show_failed)
    print(f"wrote {page} (open it in a browser; thumbnails in {Path(page).parent / 'img'})")


def _gallery_folder(html: Optional[Path], out: Optional[Path]) -> Path:
    """--html (the gallery's own folder); --out, its old name, still works. In `eval` --out is
    the results folder, which the gallery reads with --results."""
    if html is not None and out is not None and html != out:
        raise DistarError("gallery: --out is the old name of --html; give one of them.")
    return html or out or Path("gallery")


lab_app = typer.Typer(no_args_is_help=True, help="Build the lab worlds (trained mini models).")
app.add_typer(lab_app, name="lab")


@lab_app.command("build")
@_friendly
def lab_build_cmd(
    world: str = typer.Argument(..., help="The world to build: 'mini'."),
    out: Path = typer.Option(..., help="Folder for the built world (rerun to resume).", **PATH),
    seed: int = typer.Option(0, help="Seed of every draw of the build."),
    size: str = typer.Option("full", help="'large' (the shipped world; one GPU, minutes), "
                             "'large_lit' (large with a CLIP that tells shapes apart; "
                             "docs/mini_build.md), 'full' (a CPU-sized build, about an hour on 2 "
                             "cores) or 'reduced' (a test-size build of every stage, seconds)."),
    device: str = typer.Option("cpu", help="Where the networks train: cpu, cuda, cuda:N."),
    threads: int = typer.Option(0, help="torch threads; 0 = torch's default."),
    stages: str = typer.Option("", help="Only these comma-separated stages (independent ones can "
                               "run as parallel processes on one --out); default all."),
    reuse: Optional[Path] = typer.Option(None, help="A finished build (e.g. the shipped one, "
                                         "di_star/mini/data) whose stages with the same inputs "
                                         "are copied instead of retrained.", **PATH),
) -> None:
    """Train the mini world's components (VAE, CLIP, reference, one-step init, rewards,
    classifier) and write them as diffusers / transformers folders with a manifest."""
    if world != "mini":
        raise DistarError(f"Unknown world '{world}'. Choose one of: mini")
    from di_star.mini.build import build_world
    command = "distar lab build " + " ".join(sys.argv[sys.argv.index("build") + 1:]) \
        if "build" in sys.argv else None
    only = tuple(x.strip() for x in stages.split(",") if x.strip()) or None
    build_world(out, seed=seed, size=size, command=command, threads=threads or None, stages=only,
                device=device, reuse=reuse)


@lab_app.command("oracle-check")
@_friendly
def lab_oracle_check_cmd(
    out: Path = typer.Option(Path("runs/oracle_check"), help="Results store of the samples (resumes).",
                             **PATH),
    report: Optional[Path] = typer.Option(None, help="Also write the JSON report here (e.g. "
                                          "docs/mini_quality/oracle_check.json).", **PATH),
    limit: Optional[int] = typer.Option(None, help="Only the first N mini_parti prompts."),
    images_per_prompt: int = typer.Option(2, help="Images per prompt and model."),
) -> None:
    """Spearman of the oracle reward (mini_oracle) with the hard gold judge on the mini reference's
    and one-step init's own samples, with prompt-bootstrap intervals, and its gradients."""
    import json

    from rich.console import Console

    from di_star.mini.oracle_check import run_check
    rep = run_check(out, report, limit, images_per_prompt, console=Console(stderr=True))
    print(json.dumps({k: rep[k] for k in ("spearman", "mean_abs_diff", "gradient")}, indent=1))


@lab_app.command("proxy-ladder")
@_friendly
def lab_proxy_ladder_cmd(
    out: Path = typer.Option(Path("runs/proxy_ladder"), help="Work folder: trained generators, "
                             "gold-labelled samples, rungs, manifest (resumes).", **PATH),
    ship: bool = typer.Option(False, "--ship", help="Also write the rungs and manifest to "
                              "di_star/mini/data/proxy_ladder (what mini_proxy_r1..r3 load)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="The tiny plan (4 held-out prompts, "
                                 "rungs of 1-2 steps, one 1-step DI* run): the whole path on a "
                                 "CPU in about a minute; never shipped."),
) -> None:
    """A ladder of proxy rewards of measured quality: the shipped proxy fine-tuned on gold-labelled
    samples of the init, the reference and DI*-trained generators (growing, increasingly
    on-policy data), each measured on held-out mini_parti generator-sample pairs (agreement with
    gold, prompt-bootstrap interval; Spearman)."""
    import json

    from di_star.mini.proxy_ladder import DRY_RUN, LADDER_DIR, PLAN, markdown_table, run_ladder
    if dry_run and ship:
        raise DistarError("--dry-run rungs are not shipped. Fix: drop --ship (or --dry-run).")
    command = "distar lab " + " ".join(sys.argv[sys.argv.index("proxy-ladder"):]) \
        if "proxy-ladder" in sys.argv else None
    # a dry run works in its own sub-folder: its tiny samples and rungs never replace real ones
    m = run_ladder(out / "dry-run" if dry_run else out, DRY_RUN if dry_run else PLAN,
                   ship=LADDER_DIR if ship else None,
                   command=command)
    print(markdown_table(m))
    print(json.dumps({"held_out": m["held_out"], "span": m["span"], "wall_s_this_call": m["wall_s_this_call"]}))


@lab_app.command("sweep")
@_friendly
def lab_sweep_cmd(
    out: Path = typer.Option(Path("runs/overopt"), help="Sweep folder: runs, store parts, results, "
                             "sweep.json (resumes).", **PATH),
    rewards: Optional[str] = typer.Option(None, help="Comma-separated rewards (registered metrics with "
                                          "score_tensor, or pickscore@DIR) [mini_oracle,mini_pickscore]."),
    regularisers: Optional[str] = typer.Option(None, help="'score' (DI*-In) and/or 'kl' (DI++) [score,kl]."),
    seeds: Optional[str] = typer.Option(None, help="Training seeds, each with its own noise and prompt order [0,1,2]."),
    checkpoints: Optional[str] = typer.Option(None, help="Generator steps at which each run is evaluated [0,150,300,600]."),
    cfg_ladder: Optional[str] = typer.Option(None, help="alpha_cfg values for the first reward's DI*-In runs [0,2,4]; '' for none."),
    reward_free: bool = typer.Option(True, "--reward-free/--no-reward-free", help="Also the alpha_rew = 0 runs."),
    prompts: Optional[int] = typer.Option(None, help="N mini_parti prompts, evenly spaced over its "
                                          "challenges [all 300]."),
    first_prompts: bool = typer.Option(False, "--first-prompts", help="With --prompts N: the first N "
                                       "(mini_parti's first 60 are all colour prompts)."),
    images_per_prompt: Optional[int] = typer.Option(None, help="Images per prompt, >= 4 for diversity [4]."),
    workers: int = typer.Option(2, help="Concurrent runs (processes); on a GPU, many share the device."),
    device: str = typer.Option("cpu", help="Evaluation device, 'cpu' or 'cuda' (training takes CUDA whenever present)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Start from the tiny plan (checkpoints 0,1,2; 2 prompts; "
                                 "seeds 0,1; batch 2; no alpha_cfg ladder): the whole path on a CPU in minutes."),
    label: Optional[str] = typer.Option(None, help="What this sweep is, for the report (e.g. 'CPU subset')."),
) -> None:
    """The over-optimisation experiment: rewards x {DI*-In, DI++} x seeds x checkpoints, the
    reward-free runs and an alpha_cfg ladder, evaluated with the hard gold, every reward, FD,
    attribute accuracy and diversity into one store (then: distar lab overopt-report)."""
    from dataclasses import replace

    from rich.console import Console

    from di_star.mini.sweep import DRY_RUN, SweepPlan, run_sweep

    def words(text: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in text.split(",") if x.strip())

    def numbers(text: str, what: str, kind=int) -> tuple:
        try:
            return tuple(kind(x) for x in words(text))
        except ValueError:
            raise DistarError(f"--{what} must be comma-separated numbers, got '{text}'.") from None

    over: dict = {}
    if rewards is not None:
        over["rewards"] = words(rewards)
    if regularisers is not None:
        over["regularisers"] = words(regularisers)
        bad = [r for r in over["regularisers"] if r not in ("score", "kl")]
        if bad:
            raise DistarError(f"Unknown regulariser(s) {', '.join(bad)}. Choose from: score, kl.")
    if seeds is not None:
        over["seeds"] = numbers(seeds, "seeds")
    if checkpoints is not None:
        over["checkpoints"] = numbers(checkpoints, "checkpoints")
    if cfg_ladder is not None:
        over["cfg_ladder"] = numbers(cfg_ladder, "cfg-ladder", float)
    for key, value in (("prompts", prompts), ("images_per_prompt", images_per_prompt), ("label", label)):
        if value is not None:
            over[key] = value
    plan = replace(DRY_RUN if dry_run else SweepPlan(), reward_free=reward_free, spread=not first_prompts, **over)
    run_sweep(out, plan, workers=workers, device=device, console=Console(stderr=True))


@lab_app.command("challenges")
@_friendly
def lab_challenges_cmd(
    results: Path = typer.Option(Path("results"), help="A `distar eval --out` folder (its store).",
                                 **PATH),
    bench: str = typer.Option("mini_parti", help="A benchmark whose prompts carry a challenge."),
    metrics: str = typer.Option("mini_attr_acc", help="Comma-separated per-image metrics."),
) -> None:
    """Per-challenge means of per-image metrics for every model in a store, prompts as units,
    95% bootstrap intervals (e.g. strict attribute accuracy per mini_parti challenge)."""
    from di_star.mini.challenges import store_report
    print(store_report(results, bench, _names(metrics, "--metrics")))


@lab_app.command("overopt-report")
@_friendly
def lab_overopt_report_cmd(
    sweep: Path = typer.Option(Path("runs/overopt"), help="A `distar lab sweep --out` folder.",
                               **PATH),
    out: Path = typer.Option(Path("leaderboards"), help="Where mini_overoptimization.md and figures/ go.",
                             **PATH),
    oracle_check: Optional[Path] = typer.Option(Path("docs/mini_quality/oracle_check.json"),
                                                help="The oracle-check report to quote (skipped if absent).",
                                                **PATH),
) -> None:
    """The over-optimisation report from a sweep's store: gold vs reward along training, paired
    tests against the init and the best run against the reference, per-challenge accuracy."""
    from di_star.mini.overopt_report import write_report
    for f in write_report(sweep, out, oracle_check):
        print(f"wrote {f}")

