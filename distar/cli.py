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
from distar.core.runlock import out_lock

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


def _friendly(fn):
    """The one place a command's failure becomes what the user sees: DistarError -> its message,
    exit 2; Ctrl-C -> "interrupted; rerun the same command to resume", exit 130 (128 + SIGINT)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            # di_star's toy plug-ins (toy-digits models, the digits bench and metrics) join
            # evalsuite's registries when di_star is imported (di_star/plugins.py).
            import di_star  # noqa: F401
            return fn(*args, **kwargs)
        except DistarError as e:
            report_error(str(e))
            raise typer.Exit(code=2)
        except KeyboardInterrupt:
            sys.stderr.write(f"\n{INTERRUPTED}\n")
            sys.stderr.flush()
            raise typer.Exit(code=130)
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
def metrics_cmd() -> None:
    """List registered metrics."""
    from evalsuite.metrics import METRICS
    _print_registry("metrics", METRICS.describe())


@app.command("eval")
@_friendly
def eval_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name or path:DIR."),
    bench: str = typer.Option(..., "--bench", "-b", help="Benchmark name (see `distar benches`)."),
    limit: Optional[int] = typer.Option(None, help="Only the first N prompts."),
    metrics: str = typer.Option("", help="Comma-separated metrics to score, e.g. pickscore,clip."),
    out: Path = typer.Option(Path("results"), help="Output directory (images + results store)."),
    batch_size: int = typer.Option(0, help="Images per batch; 0 = the model recipe's default."),
    images_per_prompt: int = typer.Option(1, help="Images per prompt (seeds differ by k)."),
    weights: str = typer.Option("pretrained", help="'pretrained' or 'random' (latency/memory "
                                "of a full-size architecture with nothing downloaded)."),
    device: str = typer.Option("auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ..."),
    skip_generation: bool = typer.Option(False, "--skip-generation", metavar="",
                                         help="Only score images already generated."),
    force: bool = typer.Option(False, "--force", metavar="", help="Run a full-size "
                               "--weights random model on a CPU anyway (tens of GB, minutes per "
                               "image)."),
    fid_ref: Optional[Path] = typer.Option(None, help="Folder of real images (e.g. COCO "
                                           "val2014) for FID/KID reference statistics."),
    steps: Optional[int] = typer.Option(None, help="Sampling steps (overrides the recipe)."),
    guidance: Optional[float] = typer.Option(None, help="Guidance scale (overrides the recipe)."),
    resolution: Optional[int] = typer.Option(None, help="Image side in pixels (overrides the "
                                             "recipe)."),
    name: Optional[str] = typer.Option(None, help="Display name in summaries, leaderboards and "
                                       "the gallery (default: the model name; for path: the "
                                       "folder's, or the training run's)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the final summary "
                                            "(scores with 95% CI, paths, latency, memory) here."),
    repair_store: bool = typer.Option(False, "--repair-store", help="If OUT/results.sqlite is "
                                      "damaged: move it aside and rebuild the image rows from "
                                      "the PNG files on disk (nothing is regenerated)."),
) -> None:
    """Generate a benchmark's images with a model (resumable), then score them."""
    from evalsuite.generate import EvalRequest, check_request, run_eval
    from evalsuite.preflight import check_eval
    metric_names = [m.strip() for m in metrics.split(",") if m.strip()]
    per_metric: dict = {}
    if fid_ref is not None:
        per_metric = {m: {"reference_dir": str(fid_ref)} for m in ("fid", "kid")}
    # Every name, weight, reference and prompt file is checked before the first image.
    check_eval(model, bench, metric_names, weights=weights, limit=limit,
               metric_options=per_metric, generate=not skip_generation, device=device,
               force=force)
    req = EvalRequest(model=model, bench=bench, limit=limit, out=out, batch_size=batch_size,
                      images_per_prompt=images_per_prompt, weights=weights, device=device,
                      steps=steps, guidance=guidance, resolution=resolution, name=name)
    check_request(req)
    main = os.environ.get("RANK", "0") == "0"  # under accelerate launch only rank 0 locks
    # One process per --out (an flock on OUT/.distar.lock, kept through scoring): a second one
    # is refused naming the holder, instead of doing the same work twice.
    with out_lock(out, f"distar eval --model {model} --bench {bench}") if main \
            else contextlib.nullcontext():
        if repair_store and main:
            _repair(out)
        run = run_eval(req, generate=not skip_generation, adopt=repair_store)
        outcomes = []
        if metric_names:
            from evalsuite.metrics.runner import score_run
            outcomes = score_run(run, metric_names, device=run.device,
                                 **{k: v for k, v in per_metric.items() if k in metric_names})
    from evalsuite.summary import render, summarize, write_json
    summary = summarize(run, outcomes)
    if run.generated == 0 and all(o.scored == 0 for o in outcomes):
        print(f"nothing to do: all {summary.n_images} images"
              f"{' and their scores' if outcomes else ''} are already in {out}")
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


@app.command("train")
@_friendly
def train_cmd(
    preset: Optional[str] = typer.Option(None, help="Preset name (see `distar train --list`)."),
    config: Optional[Path] = typer.Option(None, help="A JSON/TOML config file (typed; no eval)."),
    max_steps: Optional[int] = typer.Option(None, help="Override the number of generator steps."),
    out: Optional[Path] = typer.Option(None, help="Run directory (rerun the same command to resume)."),
    list_presets: bool = typer.Option(False, "--list", metavar="", help="List presets and exit."),
) -> None:
    """Post-train a one-step generator with DI* (or a baseline from the same code)."""
    from di_star.cli import train
    train(preset=preset, config=config, max_steps=max_steps, out=out, list_presets=list_presets)


@app.command("demo")
@_friendly
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), help="Where runs, figures and tables go "
                             "(tables and figures in OUT/leaderboards)."),
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
    results: Path = typer.Option(Path("results"), help="Directory holding results.sqlite."),
    out: Path = typer.Option(Path("leaderboards"), help="Where the markdown tables go."),
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
    print(f"wrote {len(written)} files from {results}:")
    for path in written:
        print(f"  {path}")


@app.command("gallery")
@_friendly
def gallery_cmd(
    bench: str = typer.Option(..., help="Benchmark whose images to show."),
    models: str = typer.Option("", help="Comma-separated model names; default all with images."),
    results: Path = typer.Option(Path("results"), help="Directory holding results.sqlite."),
    out: Path = typer.Option(Path("gallery"), help="Output directory for the HTML page."),
    show_failed: bool = typer.Option(False, "--show-failed", help="Also show models whose only "
                                     "runs failed (crashed or killed)."),
) -> None:
    """Write a static side-by-side HTML gallery, one row per prompt, one column per model."""
    from evalsuite.gallery import write_gallery
    names = [m.strip() for m in models.split(",") if m.strip()]
    page = write_gallery(results_dir=results, bench=bench, models=names or None, out_dir=out,
                         show_failed=show_failed)
    print(f"wrote {page} (open it in a browser; thumbnails in {Path(page).parent / 'img'})")


lab_app = typer.Typer(no_args_is_help=True, help="Build the lab worlds (trained mini models).")
app.add_typer(lab_app, name="lab")


@lab_app.command("build")
@_friendly
def lab_build_cmd(
    world: str = typer.Argument(..., help="The world to build: 'mini'."),
    out: Path = typer.Option(..., help="Folder for the built world (rerun to resume)."),
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
                                         "are copied instead of retrained."),
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

