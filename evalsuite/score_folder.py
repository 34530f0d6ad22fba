"""`distar score`: score a folder of images made elsewhere (PNG, JPEG, WebP) into the same
results store, summary and leaderboards as `distar eval` (what `hpsv2.evaluate` and clean-fid's
`compute_fid(dir1, dir2)` do, with intervals and a store).

Which prompt each image shows:
- `prompts` a benchmark (`parti`, `file:my.txt`, or a .txt / .tsv path): by file name, `<i>.ext`
  or `<i>_<k>.ext` is image k of prompt i (the names `distar eval` writes);
- `prompts` a manifest (.jsonl with {"file": ..., "prompt": ...} per line, or .csv with `file`
  and `prompt` columns): by the manifest; the prompts, in order of first appearance, make the
  benchmark, and the n-th image of a prompt is its k = n;
- no prompts: each image is its own prompt (its file name), for metrics that read no prompt
  (FID / KID against `ref`, a folder of real images).
Every image without a prompt is listed in one error before anything is copied or loaded.

The images are copied (bytes unchanged) into `OUT/images/<name>-<hash>/<bench>-v<version>/`, so
the store stays self-contained; the hash is the image set's (names and sha256), so scoring the
same folder again skips what is stored, and a changed folder is a new entry.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from distar.core.atomic import write_bytes
from distar.core.errors import DistarError
from distar.core.paths import safe_name
from distar.core.runlock import out_lock
from evalsuite.benchmarks import (Benchmark, Prompt, image_seed, load_benchmark, make_benchmark)
from evalsuite.store import ImageRow, ResultsStore

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MANIFEST_SUFFIXES = (".jsonl", ".csv")
_INDEX_NAME = re.compile(r"(\d+)(?:_(\d+))?")


@dataclass(frozen=True)
class Matched:
    file: Path
    prompt_index: int
    k: int


def list_images(folder: Path) -> list[Path]:
    """The folder's image files (not recursive), sorted by name."""
    if not folder.is_dir():
        raise DistarError(f"--images {folder} is not a folder. Fix: pass the folder holding the "
                          "images (PNG, JPEG or WebP).")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DistarError(f"--images {folder} holds no PNG, JPEG or WebP files.")
    return files


def read_manifest(path: Path) -> list[tuple[str, str]]:
    """(file name, prompt) pairs of a .jsonl or .csv manifest."""
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip()]
        else:
            with open(path, encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DistarError(f"Cannot read the manifest {path} ({e}). Fix: one JSON object "
                          "{\"file\": ..., \"prompt\": ...} per line (.jsonl), or a .csv with "
                          "columns file,prompt.") from None
    bad = [n for n, r in enumerate(rows, 1)
           if not isinstance(r, dict) or not r.get("file") or not r.get("prompt")]
    if bad:
        raise DistarError(f"Manifest {path}: entries {bad[:10]} lack 'file' or 'prompt'. Fix: "
                          "give every image its file name and prompt.")
    return [(str(r["file"]), str(r["prompt"])) for r in rows]


def _by_manifest(files: list[Path], manifest: Path) -> tuple[Benchmark, list[Matched], list[str]]:
    pairs = read_manifest(manifest)
    prompt_of = {Path(f).name: p for f, p in pairs}
    texts = list(dict.fromkeys(p for _, p in pairs))
    index = {t: i for i, t in enumerate(texts)}
    where = hashlib.sha256(str(manifest.resolve()).encode()).hexdigest()[:6]
    bench = make_benchmark(f"manifest-{safe_name(manifest.stem, keep='-_')}-{where}", "1",
                           f"prompts of the manifest {manifest}",
                           [Prompt(i, t) for i, t in enumerate(texts)], (), str(manifest.resolve()))
    seen: dict[int, int] = {}
    matched, unmatched = [], []
    for f in files:
        text = prompt_of.get(f.name)
        if text is None:
            unmatched.append(f.name)
            continue
        i = index[text]
        matched.append(Matched(f, i, seen.get(i, 0)))
        seen[i] = seen.get(i, 0) + 1
    return bench, matched, unmatched


def _by_name(files: list[Path], bench: Benchmark) -> tuple[list[Matched], list[str]]:
    matched, unmatched = [], []
    for f in files:
        m = _INDEX_NAME.fullmatch(f.stem)
        if m is None or int(m.group(1)) >= len(bench):
            unmatched.append(f.name)
            continue
        matched.append(Matched(f, int(m.group(1)), int(m.group(2) or 0)))
    return matched, unmatched


def _self_prompts(files: list[Path], folder: Path) -> tuple[Benchmark, list[Matched]]:
    where = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:6]
    bench = make_benchmark(f"folder-{safe_name(folder.name, keep='-_')}-{where}", "1",
                           f"the images of {folder}, each its own prompt (its file name)",
                           [Prompt(i, f.name) for i, f in enumerate(files)], (),
                           str(folder.resolve()))
    return bench, [Matched(f, i, 0) for i, f in enumerate(files)]


def match_prompts(files: list[Path], prompts: str | None, folder: Path
                  ) -> tuple[Benchmark, list[Matched]]:
    """The benchmark and each image's (prompt index, k); one error naming every image without a
    prompt, or two files for one (prompt, k)."""
    if prompts is None:
        return _self_prompts(files, folder)
    path = Path(prompts)
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        if not path.is_file():
            raise DistarError(f"--prompts {path} does not exist.")
        bench, matched, unmatched = _by_manifest(files, path)
        how = f"not in the manifest {path}"
    else:
        bench = load_benchmark(f"file:{path}" if path.suffix.lower() in (".txt", ".tsv")
                               and not prompts.startswith("file:") else prompts)
        matched, unmatched = _by_name(files, bench)
        how = (f"not named <prompt index>.ext or <prompt index>_<k>.ext with an index below "
               f"{len(bench)} ({bench.name})")
    if unmatched:
        shown = ", ".join(unmatched[:20]) + (f" and {len(unmatched) - 20} more"
                                             if len(unmatched) > 20 else "")
        raise DistarError(f"{len(unmatched)} images in {folder} have no prompt ({how}): {shown}. "
                          "Fix: rename them, list them in a manifest (--prompts x.jsonl with "
                          "{\"file\": ..., \"prompt\": ...} lines), or move them out.")
    keys = [(m.prompt_index, m.k) for m in matched]
    if len(set(keys)) != len(keys):
        dup = sorted({m.file.name for m in matched if keys.count((m.prompt_index, m.k)) > 1})
        raise DistarError(f"several images of {folder} are the same image of one prompt: "
                          f"{', '.join(dup[:20])}. Fix: keep one file per prompt index and k.")
    return bench, matched


def set_hash(matched: Sequence[Matched], digests: Sequence[str]) -> str:
    """The image set's identity in the store (its `recipe_hash`): names and contents."""
    blob = json.dumps(sorted((m.prompt_index, m.k, d) for m, d in zip(matched, digests)))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def score_folder(images: str | Path, metrics: Sequence[str], out: str | Path, *,
                 prompts: str | None = None, ref: str | Path | None = None,
                 name: str | None = None, device: str = "auto", batch_size: int = 32,
                 metric_options: dict | None = None):
    """Score the images of `images` with `metrics` into the results store at `out`; returns
    (EvalSummary, [MetricOutcome]) as `distar eval` does (evalsuite.summary.render prints it).
    `ref`: a folder of real images for FID / KID. Everything is checked before any copy."""
    from evalsuite.generate import EvalRun, provenance, record_benchmark
    from evalsuite.metrics.runner import metric_class, score_run
    from evalsuite.models.loading import resolve_device
    from evalsuite.preflight import metric_problems, raise_if_any
    from evalsuite.summary import summarize

    folder, out = Path(images), Path(out)
    options = dict(metric_options or {})
    if ref is not None:
        for m in ("fid", "kid"):
            options[m] = {**options.get(m, {}), "reference_dir": str(ref)}
    metrics = list(metrics)
    if not metrics:
        raise DistarError("distar score needs --metrics (see `distar metrics`).")
    files = list_images(folder)
    bench, matched = match_prompts(files, prompts, folder)
    problems = metric_problems(metrics, options)
    raise_if_any(problems, "nothing was copied or scored")
    if prompts is None:
        reading = [m for m in metrics if getattr(metric_class(m), "needs_prompts", False)]
        if reading:
            raise DistarError(f"{', '.join(reading)} compares images with their prompts. Fix: "
                              "add --prompts (a benchmark, a prompt file or a manifest).")
    dev = resolve_device(device)
    label = name or folder.resolve().name
    model = f"folder:{folder.resolve()}"
    with out_lock(out, f"distar score --images {folder}"):
        store = ResultsStore(out)
        datas = [m.file.read_bytes() for m in matched]
        digests = [hashlib.sha256(d).hexdigest() for d in datas]
        recipe_hash = set_hash(matched, digests)
        record_benchmark(store, bench)
        rows = []
        base = f"images/{safe_name(label)}-{recipe_hash}/{bench.name}-v{bench.version}"
        for m, data, digest in zip(matched, datas, digests):
            rel = f"{base}/{m.prompt_index:05d}_{m.k}{m.file.suffix.lower()}"
            if not (store.root / rel).is_file():
                write_bytes(store.root / rel, data, fsync=False)  # rows after their files
            rows.append(ImageRow(recipe_hash=recipe_hash, bench=bench.name,
                                 bench_version=bench.version, prompt_index=m.prompt_index,
                                 k=m.k, model=model, prompt=bench.prompts[m.prompt_index].text,
                                 seed=image_seed(m.prompt_index, m.k), path=rel, sha256=digest,
                                 device="external"))
        store.add_images(rows)
        prov = provenance()
        run_id = uuid.uuid4().hex[:12]
        recipe = {"source": "folder", "images_dir": str(folder.resolve()), "label": label,
                  "prompts": prompts, "n_images": len(rows)}
        now = time.time()
        store.upsert_run(run_id=run_id, model=model, recipe_hash=recipe_hash,
                         recipe_json=json.dumps(recipe, sort_keys=True), bench=bench.name,
                         bench_version=bench.version, n_prompts_total=len(bench),
                         n_images_expected=len(rows), started_at=now, finished_at=now,
                         git_hash=prov["git_hash"], versions_json=json.dumps(prov["versions"]),
                         device="external (images scored, not generated)", world_size=1,
                         batch_size=None, latency_s_per_10=None, peak_memory_bytes=None,
                         peak_memory_kind=None, status="complete", n_images_timed=0, error=None)
        df = pd.DataFrame([{"prompt_index": r.prompt_index, "k": r.k, "prompt": r.prompt,
                            "seed": r.seed, "path": r.path} for r in rows])
        run = EvalRun(store=store, model=model, recipe_hash=recipe_hash, bench=bench.name,
                      bench_version=bench.version,
                      images=df.sort_values(["prompt_index", "k"]).reset_index(drop=True),
                      device=str(dev), run_id=run_id, generated=0, name=label)
        outcomes = score_run(run, metrics, batch_size=batch_size,
                             **{k: v for k, v in options.items() if k in metrics})
        return summarize(run, outcomes), outcomes
