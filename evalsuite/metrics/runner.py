"""Score a generated run with registered metrics: resumable, batched, each model loaded once.

Per-image metrics write one `scores` row per image, a batch at a time, keyed by the metric's
`info.key`; images already scored under that exact key are skipped, so to resume, run the same
command again. Set metrics (FID, KID) write one `set_scores` row for the whole image set, with a
fingerprint of which images it covers (`image_set`), and are skipped when a row for the same key
covers the same images: a run over another subset of the benchmark's prompts (another --limit,
--spread) with as many images computes it again. A set metric may also give a value
per image (`compute_with_images(...) -> (value, [N] values)`: intra-prompt diversity), so that
tables and paired tests treat it like a per-image metric: those values go to `scores` under the
same name and key, written before the set row, which marks the whole as done. It is skipped only
when both are stored; a run killed between the two writes (or a store from before a metric had
per-image values) computes it again, and the upserts leave one row per image. A metric whose
class gives its key without weights (`version_key`, see `known_key`) is not even loaded when all
its work is stored.

Options: `score_run(run, ["pickscore", "fid"], device="cuda", fid={"reference_dir": "coco/"})`:
a keyword named after a selected metric carries a dict of options for that metric only; every
other keyword goes to every selected metric (device, dtype, ...).
"""
from __future__ import annotations

import gc
import hashlib
import sys
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from PIL import Image

from distar.core.errors import DistarError
from evalsuite.metrics import METRICS, load_metric
from evalsuite.metrics.base import MetricInfo, iter_batches
from evalsuite.store import ScoreRow


@dataclass
class MetricOutcome:
    metric: str
    metric_version: str
    scored: int      # images scored now (set metrics: images in the set, 0 when skipped)
    skipped: int     # images already in the store under this key
    value: float | None = None  # set metrics only


def split_options(metric_names: Sequence[str], options: dict[str, Any]) -> dict[str, dict]:
    """{metric: its constructor options}: per-metric dicts override shared keywords."""
    shared = {k: v for k, v in options.items() if k not in metric_names}
    out = {}
    for name in metric_names:
        own = options.get(name, {})
        if not isinstance(own, dict):
            raise DistarError(f"options for metric '{name}' must be a dict, got {own!r}")
        out[name] = {**shared, **own}
    return out


def metric_class(name: str) -> type | None:
    """The class the registry entry names (`module:Class` or `module:Class.from_pretrained`),
    without building it; None for a plain function."""
    factory = METRICS.load(name)
    return factory if isinstance(factory, type) else getattr(factory, "__self__", None)


def declared_bounds(name: str) -> tuple[float, float] | None:
    """The range a registered metric's values lie in (MetricInfo.bounds of its class's `info`,
    or its class's `bounds`), for reading scores stored before the info recorded it; None when
    it declares none or is not registered here."""
    if name not in METRICS:
        return None
    cls = metric_class(name)
    info = getattr(cls, "info", None)
    bounds = info.bounds if isinstance(info, MetricInfo) else getattr(cls, "bounds", None)
    return (float(bounds[0]), float(bounds[1])) if bounds else None


def has_image_values(metric_or_class) -> bool:
    """Whether a set metric also gives per-image values (`compute_with_images`)."""
    return callable(getattr(metric_or_class, "compute_with_images", None))


def known_key(name: str, options: dict) -> str | None:
    """The metric's store key (`info.key`) without loading its weights, when its class can
    tell: a classmethod `version_key(**options)` on its class (`metric_class`). None: only
    loading tells."""
    version_key = getattr(metric_class(name), "version_key", None)
    if version_key is None:
        return None
    try:
        return version_key(**options)
    except TypeError:  # an option it does not take: loading reports it clearly
        return None


def image_set(images: pd.DataFrame) -> str:
    """Which images a set score covers: sha256 of the sorted (prompt_index, k) of one recipe's
    images on one benchmark (its seeds and so its images follow from them)."""
    keys = sorted((int(p), int(k)) for p, k in zip(images.prompt_index, images.k))
    return hashlib.sha256(" ".join(f"{p}:{k}" for p, k in keys).encode()).hexdigest()


def _already_scored(run, name: str, key: str, image_values: bool = False
                    ) -> MetricOutcome | None:
    """The outcome of a metric whose work is all in the store under `key` (every image, or the
    set with this many images and, when the set metric has `image_values`, every image's
    value too), else None."""
    n = len(run.images)
    sets = run.store.table("set_scores", "WHERE recipe_hash=? AND bench=? AND bench_version=? "
                           "AND metric=? AND metric_version=?",
                           (run.recipe_hash, run.bench, run.bench_version, name, key))
    done = run.store.scored_keys(run.recipe_hash, run.bench, run.bench_version, name, key)
    every_image = bool(n) and all((int(p), int(k)) in done
                                  for p, k in zip(run.images.prompt_index, run.images.k))
    same_set = len(sets) and json.loads(sets.meta_json.iloc[0] or "{}").get("image_set") == image_set(run.images)
    if same_set and (every_image or not image_values):
        return MetricOutcome(name, key, 0, n, float(sets.value.iloc[0]))
    if every_image and not image_values:
        return MetricOutcome(name, key, 0, n)
    return None


def _load(name: str, options: dict):
    try:
        return load_metric(name, **options)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise DistarError(f"metric '{name}' does not take one of the options "
                              f"{sorted(options)}: {e}") from None
        raise


def _open_images(root: Path, paths: Sequence[str]) -> list[Image.Image]:
    out = []
    for rel in paths:
        p = root / rel
        if not p.is_file():
            raise DistarError(f"image {p} is listed in the results store but missing on disk; "
                              f"regenerate it (run `distar eval` again without "
                              f"--skip-generation)")
        with Image.open(p) as im:
            out.append(im.convert("RGB"))
    return out


def score_run(run, metric_names: list[str], batch_size: int = 32, progress: bool = True,
              **metric_options) -> list[MetricOutcome]:
    """Score `run.images` with each metric in turn; returns what was done per metric."""
    from distar.core.progress import progress_bar

    for name in metric_names:  # fail on a typo before loading any model
        METRICS.get(name)
    per_metric = split_options(metric_names, metric_options)
    outcomes = []
    for name in metric_names:
        opts = {"device": run.device, "batch_size": batch_size, **per_metric[name]}
        # A finished rerun: when the key is known without the weights and every score is
        # stored under it, there is nothing to load.
        key = known_key(name, opts)
        done = (_already_scored(run, name, key, has_image_values(metric_class(name)))
                if key is not None else None)
        if done is not None:
            outcomes.append(done)
            continue
        if progress:  # loading a metric's weights can take a while: say so
            print(f"{name}: loading ...", file=sys.stderr, flush=True)
        metric = _load(name, opts)
        if key is not None and metric.info.key != key:  # a wrong version_key would skip wrongly
            raise RuntimeError(f"{name}: version_key gave {key!r} but the loaded metric's key is "
                               f"{metric.info.key!r}; fix the class's version_key")
        key = metric.info.key
        meta = json.dumps({"info": metric.info.as_dict(), "dtype": compute_dtype(metric),
                           "provenance": getattr(metric, "provenance", {})}, sort_keys=True,
                          default=str)
        if hasattr(metric, "score"):
            outcomes.append(_score_images(run, name, metric, key, meta, batch_size, progress,
                                          progress_bar))
        else:
            outcomes.append(_score_set(run, name, metric, key, meta, progress, progress_bar))
        del metric  # one model in memory at a time
        gc.collect()
        _empty_cuda_cache()
    return outcomes


def _score_images(run, name, metric, key, meta, batch_size, progress, progress_bar):
    images: pd.DataFrame = run.images
    done = run.store.scored_keys(run.recipe_hash, run.bench, run.bench_version, name, key)
    todo = images[[(int(p), int(k)) not in done
                   for p, k in zip(images.prompt_index, images.k)]]
    root = Path(run.store.root)
    with progress_bar(f"{name} {getattr(run, 'name', '') or run.model}", total=len(todo),
                      disable=not progress) as bar:
        for sl in iter_batches(len(todo), batch_size):
            rows = todo.iloc[sl]
            values = metric.score(_open_images(root, rows.path.tolist()), rows.prompt.tolist())
            _add_image_values(run, name, key, meta, rows, values)
            bar.advance(len(rows))
    return MetricOutcome(name, key, len(todo), len(images) - len(todo))


def _add_image_values(run, name, key, meta, rows: pd.DataFrame, values) -> None:
    """One `scores` row per image of `rows` (one transaction)."""
    run.store.add_scores([
        ScoreRow(recipe_hash=run.recipe_hash, bench=run.bench, bench_version=run.bench_version,
                 prompt_index=int(p), k=int(k), metric=name, metric_version=key,
                 value=float(v), meta_json=meta)
        for p, k, v in zip(rows.prompt_index, rows.k, values)])


def _score_set(run, name, metric, key, meta, progress, progress_bar):
    images: pd.DataFrame = run.images
    image_values = has_image_values(metric)
    done = _already_scored(run, name, key, image_values)
    if done is not None:
        return done
    root = Path(run.store.root)
    paths = [str(root / p) for p in images.path]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise DistarError(f"{len(missing)} images listed in the store are missing on disk, "
                          f"e.g. {missing[0]}")
    with progress_bar(f"{name} {run.model}", total=len(paths), disable=not progress) as bar:
        extra = {"prompts": images.prompt.tolist()} if getattr(metric, "needs_prompts", False) \
            else {}
        if image_values:
            value, per_image = metric.compute_with_images(paths, on_batch=bar.advance, **extra)
        else:
            value = metric.compute(paths, on_batch=bar.advance, **extra)
    if image_values:  # first: the set row below marks the metric done (see the module doc)
        if len(per_image) != len(images):
            raise RuntimeError(f"{name}: compute_with_images gave {len(per_image)} values for "
                               f"{len(images)} images")
        _add_image_values(run, name, key, meta, images, per_image)
    run.store.add_set_score(recipe_hash=run.recipe_hash, bench=run.bench,
                            bench_version=run.bench_version, metric=name, metric_version=key,
                            value=value, n_images=len(paths),
                            meta={"info": metric.info.as_dict(), "dtype": compute_dtype(metric),
                                  "provenance": getattr(metric, "provenance", {}),
                                  "image_set": image_set(images)})
    return MetricOutcome(name, key, len(paths), 0, value)


def compute_dtype(metric) -> str:
    """The dtype a loaded metric computes in ('fp32' for those without one), as stored."""
    from distar.core.dtypes import dtype_name
    return dtype_name(getattr(metric, "dtype", "fp32"), short=True)


def _empty_cuda_cache() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
