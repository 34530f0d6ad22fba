"""Check everything a command needs before its first expensive step, and report every problem
at once: unknown names, model and metric weights, FID references, prompt data.

Nothing here loads a model. A weight counts as present when its file is on disk (an explicit
path, an environment variable, or the Hugging Face cache) or when the hub answers (it will be
downloaded then). Each problem carries the shell lines that fix it, printed one per line so a
terminal never breaks a command in two.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from distar.core.errors import DistarError
from distar.core.registry import Registry


@dataclass(frozen=True)
class Problem:
    what: str                                  # what is missing or wrong, one sentence
    fixes: tuple[str, ...] = field(default=())  # copy-pasteable shell lines, alternatives


class PreflightError(DistarError):
    """Everything a command lacks, in one message."""

    def __init__(self, problems: Sequence[Problem], action: str = "nothing was generated"):
        self.problems = list(problems)
        n = len(self.problems)
        lines = [f"{n} problem{'s' if n > 1 else ''} found before starting ({action}):"]
        for i, p in enumerate(self.problems, 1):
            lines.append(f"  {i}. {p.what}")
            for j, fix in enumerate(p.fixes):
                lines.append(f"     {'fix:' if j == 0 else ' or:'} {fix}")
        if any(f.startswith("hf download") for p in self.problems for f in p.fixes):
            lines.append("`hf download` needs the hub: run it where the hub is reachable, then "
                         "copy that Hugging Face cache (HF_HOME) to this machine.")
        super().__init__("\n".join(lines))


def raise_if_any(problems: Sequence[Problem], action: str = "nothing was generated") -> None:
    if problems:
        raise PreflightError(problems, action)


# Files: explicit path, environment variable, HF cache, or a hub that answers ----------------
def _hub_has(repo_id: str, filename: str, repo_type: str | None = None,
             revision: str | None = None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    from evalsuite.hub import hub_reachable
    cached = try_to_load_from_cache(repo_id, filename, revision=revision, repo_type=repo_type)
    return isinstance(cached, str) or hub_reachable()


def _hf_download(repo_id: str, filename: str | None = None, repo_type: str | None = None) -> str:
    cmd = f"hf download {repo_id}" + (f" {filename}" if filename else "")
    if repo_type:
        cmd += f" --repo-type {repo_type}"
    return cmd


def weight_problem(what: str, *, repo_id: str | None, filenames: Sequence[str],
                   env_var: str | None, explicit: str | None = None,
                   placeholder: str | None = None, folder: bool = False,
                   revision: str | None = None) -> list[Problem]:
    """[] when one of `filenames` is available (explicit path or $env_var, else the HF cache of
    repo_id, else a reachable hub); else one Problem with the fixes. `folder`: the explicit path
    is a folder that must hold filenames[0]."""
    given = explicit or (os.environ.get(env_var) if env_var else None)
    target = placeholder or (f"/path/to/{repo_id.split('/')[-1]}" if folder
                             else f"/path/to/{filenames[0]}")
    env_fix = f"export {env_var}={target}" if env_var else None
    if given:
        p = Path(given).expanduser()
        ok = any((p / f).is_file() for f in filenames) if (folder or p.is_dir()) else p.is_file()
        if ok:
            return []
        source = f"{env_var}={given}" if not explicit else given
        return [Problem(f"{what}: {source} does not hold {' or '.join(filenames)}.",
                        tuple(f for f in (env_fix,) if f))]
    if repo_id is not None and any(_hub_has(repo_id, f, revision=revision) for f in filenames):
        return []
    fixes = [_hf_download(repo_id, None if folder else filenames[0])] if repo_id else []
    if env_fix:
        fixes.append(env_fix)
    where = f"{repo_id}/{filenames[0]}" if repo_id and not folder else (repo_id or filenames[0])
    return [Problem(f"{what}: {where} is not on this machine and the hub is not reachable.",
                    tuple(fixes))]


# Metrics ------------------------------------------------------------------------------------
def need_problems(need, explicit: str | None = None) -> list[Problem]:
    """weight_problem for one evalsuite.needs.HubNeed (the list distar fetch downloads)."""
    return weight_problem(need.what, repo_id=need.repo_id, filenames=need.check,
                          env_var=need.env_var, explicit=explicit, folder=need.folder,
                          revision=need.revision)


def declared_problems(name: str, o: dict) -> list[Problem]:
    """The files a metric's class declares its from_pretrained reads (`hub_needs`, listed by
    evalsuite.needs.metric_needs, which distar fetch downloads), each checked."""
    from evalsuite.needs import metric_needs
    return [p for n in metric_needs(name, o) for p in need_problems(n, o.get(n.option))]


def _fid(name: str) -> Callable[[dict], list[Problem]]:
    def check(o: dict) -> list[Problem]:
        from distar.core.errors import WeightsMissingError
        from evalsuite.metrics.fid import INCEPTION_FILE, INCEPTION_URL, InceptionV3Features
        problems = []
        offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
                      for v in ("HF_HUB_OFFLINE", "DISTAR_OFFLINE"))
        explicit = o.get("weights_path") or os.environ.get("DISTAR_INCEPTION_PATH")
        if explicit or offline:  # online with no local copy, clean-fid's download runs later
            try:
                InceptionV3Features.resolve(o.get("weights_path"))
            except WeightsMissingError:
                problems.append(Problem(
                    f"{name}: InceptionV3 weights ({INCEPTION_FILE}) are not on this machine.",
                    (f"curl -L -o {INCEPTION_FILE} {INCEPTION_URL}   # where the network is "
                     f"reachable, then:", f"export DISTAR_INCEPTION_PATH=/path/to/{INCEPTION_FILE}")))
        ref_dir = o.get("reference_dir") or os.environ.get("DISTAR_FID_REFERENCE_DIR")
        ref_stats = o.get("reference_stats")
        if ref_stats and not Path(ref_stats).is_file():
            problems.append(Problem(f"{name}: reference statistics {ref_stats} do not exist."))
        elif not ref_stats and not ref_dir:
            problems.append(Problem(
                f"{name}: needs real images to compare with (no reference given).",
                ("add --fid-ref /path/to/real/images   (e.g. COCO val2014)",
                 "export DISTAR_FID_REFERENCE_DIR=/path/to/real/images")))
        elif ref_dir and not Path(ref_dir).is_dir():
            problems.append(Problem(f"{name}: the reference folder {ref_dir} does not exist.",
                                    ("add --fid-ref /path/to/real/images",)))
        return problems
    return check



# Metric name -> a check of its own, `check(options) -> [Problem]`, in place of the declared one
# (`declared_problems`, what every other metric gets): FID / KID (their references, and
# Inception's weights only where clean-fid would not download them), and what other packages
# add for the metrics they register (a world's local folders, from its plug-in), a function or
# its lazy "module:attr" name.
METRIC_CHECKS: Registry[Callable[[dict], list[Problem]]] = Registry("metric check")
METRIC_CHECKS.add("fid", _fid("fid"))
METRIC_CHECKS.add("kid", _fid("kid"))


def metric_problems(names: Sequence[str], options: dict[str, dict] | None = None
                    ) -> list[Problem]:
    """Unknown metric names (all of them, with the choices and the offline smoke variants) and
    missing weights / references of the known ones. `options`: {metric: its options}."""
    from evalsuite.metrics import METRICS
    options = options or {}
    problems: list[Problem] = []
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        problems.append(Problem(
            f"Unknown metric{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}. "
            f"Choose one of: {', '.join(METRICS.names())} (`distar metrics` describes them)."))
    for n in names:
        if n in METRICS:
            o = options.get(n, {})
            problems += METRIC_CHECKS.load(n)(o) if n in METRIC_CHECKS else declared_problems(n, o)
    return problems


# Models -------------------------------------------------------------------------------------
def spec_problems(spec, use_folder: str = "--model path:{}") -> list[Problem]:
    """Missing weights of a resolved ModelSpec (nothing for tiny / random / toy builds).
    `use_folder`: how the command takes a local copy instead, `{}` the folder."""
    from evalsuite.needs import model_needs
    if spec.weights != "pretrained":
        return []
    if Path(spec.repo).expanduser().is_dir():
        return []  # a local pipeline folder; spec_from_path already checked model_index.json
    if spec.repo.startswith(("/", "~", "./", "../")):  # a folder, never a hub id
        return [Problem(f"model '{spec.name}': the folder {spec.repo} does not exist.",
                        spec.missing_fix or ("--model path:/an/existing/pipeline/folder",))]
    problems = []
    for need in model_needs(spec):  # the pipeline, then an override UNet from the hub
        if any(_hub_has(need.repo_id, f, revision=need.revision) for f in need.check):
            continue
        if need.repo_id == spec.repo:
            problems.append(Problem(
                f"model '{spec.name}': pipeline {spec.repo} is not in the Hugging Face cache and "
                f"the hub is not reachable.",
                (_hf_download(spec.repo),
                 use_folder.format(f"/folder/with/{spec.repo.split('/')[-1]}")
                 + "   # a save_pretrained copy")))
        else:
            problems.append(Problem(
                f"model '{spec.name}': its UNet {need.repo_id}/{need.check[0]} is not on this "
                f"machine and the hub is not reachable.",
                (_hf_download(need.repo_id, spec.unet.filename),)))
    src = spec.unet
    if src is not None and Path(src.repo).expanduser().is_dir():
        target = src.filename or f"{src.subfolder or ''}/config.json".lstrip("/")
        if not (Path(src.repo).expanduser() / target).is_file():
            problems.append(Problem(f"model '{spec.name}': its UNet folder {src.repo} does not "
                                    f"hold {target}."))
    return problems


def model_problems(name: str, weights: str = "pretrained", resolve=None,
                   use_folder: str = "--model path:{}") -> tuple[object, list[Problem]]:
    """(spec or None, problems) for a model name; `resolve(name) -> spec` defaults to
    evalsuite's resolve_model; `use_folder` as in spec_problems."""
    from evalsuite.models.specs import resolve_model
    try:
        spec = resolve(name) if resolve is not None else resolve_model(name, weights)
    except DistarError as e:
        return None, [Problem(str(e))]
    return spec, spec_problems(spec, use_folder)


def bench_problems(name: str, limit: int | None = None) -> tuple[object, list[Problem]]:
    from evalsuite.benchmarks import load_benchmark
    try:
        bench = load_benchmark(name)
    except DistarError as e:
        return None, [Problem(str(e))]
    if limit is not None and not 1 <= limit <= len(bench):
        return bench, [Problem(f"--limit {limit} is out of range for '{bench.name}', which has "
                               f"{len(bench)} prompts.", (f"--limit {min(len(bench), 8)}",))]
    return bench, []


def random_on_cpu_problem(spec, device: str, force: bool) -> list[Problem]:
    """A full-size architecture with random weights on a CPU: tens of GB and minutes per image.
    Refused unless --force, with the expected memory."""
    if spec is None or spec.weights != "random" or force:
        return []
    import torch
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return []
    billions = _billions(spec.params)
    memory = f"at least {4 * billions:.0f} GB for the {spec.params} denoiser alone in float32" \
        if billions else "tens of GB"
    return [Problem(
        f"--weights random builds the full-size {spec.name} ({spec.pipeline}) on the CPU: "
        f"{memory}, and minutes per image at {spec.steps} steps. Its latency and memory mean "
        f"something only on the GPU it is meant for.",
        ("--device cuda   # on a GPU machine",
         f"--model tiny_{'sdxl' if 'XL' in spec.pipeline else 'sd15'}   # the same code path, tiny, offline",
         "--force   # run it on this CPU anyway"))]


METRIC_DTYPES = ("fp32", "bf16", "fp16")


def metric_dtype_problems(names: Sequence[str], dtype: str, device: str = "auto"
                          ) -> list[Problem]:
    """`--metric-dtype`: a known name; fp16 only on a GPU; and no metric asked for a dtype it
    does not compute in (`fp32_only` classes: FID/KID, the worlds' pixel / classifier metrics),
    which would otherwise run in fp32 under a key claiming bf16 / fp16."""
    if dtype not in METRIC_DTYPES:
        return [Problem(f"Unknown --metric-dtype '{dtype}'. Choose one of: "
                        f"{', '.join(METRIC_DTYPES)}.")]
    if dtype == "fp32":
        return []
    import torch

    from evalsuite.metrics import METRICS
    from evalsuite.metrics.runner import metric_class
    problems = []
    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if dtype == "fp16" and not on_gpu:
        problems.append(Problem(
            "--metric-dtype fp16 runs on a GPU only (CPUs lack many fp16 kernels); this run's "
            f"device is {'the CPU' if device == 'auto' else device}.",
            ("--metric-dtype bf16   # runs on the CPU, slowly", "--metric-dtype fp32")))
    fp32_only = [n for n in names
                 if n in METRICS and getattr(metric_class(n), "fp32_only", False)]
    if fp32_only:
        many = len(fp32_only) > 1
        problems.append(Problem(
            f"metric{'s' if many else ''} {', '.join(fp32_only)} compute{'' if many else 's'} "
            f"in fp32 only; --metric-dtype {dtype} would be ignored for "
            f"{'them' if many else 'it'}, not applied.",
            (f"--metrics {','.join(fp32_only)} --metric-dtype fp32   # in a separate run",)))
    return problems


def _billions(params: str) -> float | None:
    import re
    m = re.fullmatch(r"\s*([\d.]+)\s*([BM])\s*", str(params or ""), flags=re.I)
    if not m:
        return None
    return float(m.group(1)) / (1000 if m.group(2).upper() == "M" else 1)


def check_eval(model: str, bench: str, metrics: Sequence[str], *, weights: str = "pretrained",
               limit: int | None = None, metric_options: dict[str, dict] | None = None,
               generate: bool = True, resolve=None, device: str = "auto",
               force: bool = False, metric_dtype: str = "fp32") -> None:
    """Everything `distar eval` needs, before any image is made; raises PreflightError listing
    every problem. `resolve(name) -> ModelSpec` overrides how the model name is resolved."""
    check_evals([model], [bench], metrics, weights=weights, limit=limit,
                metric_options=metric_options, generate=generate, resolve=resolve,
                device=device, force=force, metric_dtype=metric_dtype)


def check_evals(models: Sequence[str], benches: Sequence[str], metrics: Sequence[str], *,
                weights: str = "pretrained", limit: int | None = None,
                metric_options: dict[str, dict] | None = None, generate: bool = True,
                resolve=None, device: str = "auto", force: bool = False,
                metric_dtype: str = "fp32") -> None:
    """check_eval for every model and benchmark of one `--model a,b --bench x,y` call: all
    problems of all of them in one error, before the first image of the first pair."""
    problems: list[Problem] = []
    for model in models:
        spec, p = model_problems(model, weights, resolve)
        problems += p if generate else [q for q in p if spec is None]
        if generate:
            problems += random_on_cpu_problem(spec, device, force)
    for bench in benches:
        problems += bench_problems(bench, limit)[1]
    problems += metric_problems(metrics, metric_options)
    problems += metric_dtype_problems(metrics, metric_dtype, device)
    raise_if_any(problems, "nothing was generated or scored")
