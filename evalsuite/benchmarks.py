"""Benchmarks: versioned prompt lists with per-prompt metadata (Parti category/challenge, HPS
style). A benchmark's `version` combines a hand-set number with the hash of its prompt text, so
editing a prompt file can never silently reuse old images or scores.

Seeds: image k of prompt i uses `image_seed(i, k) = i + SEED_STRIDE * k`. So k = 0 uses seed i,
as the DI* author's Parti script does (`--seeds=0-1631`, seed i with prompt i), any single image
can be regenerated alone, and two models with the same latent shape see the same noise.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from distar.core.errors import DistarError
from distar.core.paths import safe_name
from distar.core.registry import Registry
from distar.core.validate import not_a_file

DATA = Path(__file__).parent / "data"
SEED_STRIDE = 100_000  # > the largest benchmark (COCO-30K), so seeds never collide across k


def image_seed(prompt_index: int, k: int) -> int:
    return prompt_index + SEED_STRIDE * k


@dataclass(frozen=True)
class Prompt:
    index: int
    text: str
    meta: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Benchmark:
    name: str
    version: str
    description: str
    prompts: tuple[Prompt, ...]
    group_keys: tuple[str, ...] = ()     # metadata columns to break scores down by
    source: str = ""

    def __len__(self) -> int:
        return len(self.prompts)


def _versioned(base: str, prompts: list[Prompt]) -> str:
    h = hashlib.sha256("\n".join(p.text for p in prompts).encode()).hexdigest()[:8]
    return f"{base}-{h}"


def _bad(path: Path, line: int, problem: str) -> DistarError:
    return DistarError(f"Malformed prompt file {path}, line {line}: {problem}")


def _refuse_control_chars(path: Path, lines: list[str]) -> None:
    """NUL, escape codes and other control characters have no place in a prompt: they would
    be stored, hashed and printed to terminals as they are."""
    from distar.core.validate import control_char
    for n, line in enumerate(lines, start=1):
        c = control_char(line, allowed="\t")
        if c:
            raise _bad(path, n, f"control character {c} (a NUL byte, a terminal escape code?). "
                                f"Fix: remove it (the file must be plain UTF-8 text)")


def read_tsv_prompts(path: Path, text_col: str = "Prompt") -> list[Prompt]:
    """A tab-separated file with a header; `text_col` is the prompt, other columns are metadata."""
    csv.field_size_limit(2**31 - 1)  # a long prompt is a prompt (the default stops at 128 KB)
    try:  # utf-8-sig: a BOM some editors write is not part of the first header name
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as e:
        raise DistarError(f"Malformed prompt file {path}: not UTF-8 ({e}). Save it as UTF-8.")
    _refuse_control_chars(path, ["\t".join(r) for r in rows])
    if not rows:
        raise DistarError(f"Prompt file {path} is empty.")
    header = rows[0]
    if text_col not in header:
        raise _bad(path, 1, f"header has no '{text_col}' column (found: {', '.join(header)})")
    col = header.index(text_col)
    prompts = []
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise _bad(path, n, f"{len(row)} tab-separated fields, header has {len(header)}")
        if not row[col].strip():
            raise _bad(path, n, f"empty '{text_col}'")
        meta = {h.lower(): v for h, v in zip(header, row) if h != text_col}
        prompts.append(Prompt(len(prompts), row[col], meta))
    return prompts


def read_txt_prompts(path: Path) -> list[Prompt]:
    """One prompt per line; blank lines are errors (they would shift every later index)."""
    try:  # utf-8-sig: a BOM is not part of the first prompt
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as e:
        raise DistarError(f"Malformed prompt file {path}: not UTF-8 ({e}). Save it as UTF-8.")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]  # Windows line ends
    _refuse_control_chars(path, lines)
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            raise _bad(path, n, "blank line (one prompt per line; blank lines shift indices)")
    return [Prompt(i, t) for i, t in enumerate(lines)]


def make_benchmark(name, base_version, description, prompts, group_keys=(), source="") -> Benchmark:
    """A Benchmark from a prompt list; its version is `base_version` plus the prompts' hash."""
    if not prompts:
        raise DistarError(f"Benchmark '{name}' has no prompts.")
    return Benchmark(name, _versioned(base_version, prompts), description, tuple(prompts),
                     tuple(group_keys), source)


BENCHMARKS: Registry[Callable[[], Benchmark]] = Registry("benchmark")


@BENCHMARKS.register("parti", "PartiPrompts: 1632 prompts, 12 categories x 11 challenges")
def parti() -> Benchmark:
    path = DATA / "parti" / "PartiPrompts.tsv"
    return make_benchmark("parti", "1", "PartiPrompts (google-research/parti)",
                      read_tsv_prompts(path), ("category", "challenge"), str(path))


@BENCHMARKS.register("coco30k", "COCO-2014 30k captions (DMD2's list), for FID and scores")
def coco30k() -> Benchmark:
    path = DATA / "coco" / "captions_coco14_test_30k.txt"
    return make_benchmark("coco30k", "1", "MS-COCO 2014, 30k captions (tianweiy/DMD2)",
                      read_txt_prompts(path), (), str(path))


# The HPSv2 benchmark: its four styles (HPSv2's own names; the DI* paper prints them as
# ANIMATION, CONCEPT-ART, PAINTING, PHOTO) and the chunk size of its per-style aggregation
# (hpsv2.evaluation.evaluate_benchmark: a style's score is the mean of 80-image chunk means).
HPS_STYLES = ("anime", "concept-art", "paintings", "photo")
HPS_CHUNK = 80
HPSV2_REPO = "zhwang/HPDv2"   # a dataset repo: hpsv2.benchmark_prompts() reads the same files


def hpsv2_prompt_files() -> list[str]:
    """The benchmark's files in HPSV2_REPO, one per style (distar fetch downloads these)."""
    return [f"benchmark/{s}.json" for s in HPS_STYLES]


def _hpsv2_prompt_files() -> dict[str, list[str]]:
    folder = os.environ.get("DISTAR_HPSV2_PROMPTS")
    if folder:
        out = {}
        for style in HPS_STYLES:
            f = Path(folder) / f"{style}.json"
            if not f.exists():
                raise DistarError(f"HPSv2 prompts: {f} is missing. DISTAR_HPSV2_PROMPTS must "
                                  f"hold {', '.join(s + '.json' for s in HPS_STYLES)}.")
            try:
                out[style] = json.loads(f.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise DistarError(f"Malformed prompt file {f}, line {e.lineno}: {e.msg}")
        return out
    from evalsuite.hub import hub_download
    try:  # the same files hpsv2.benchmark_prompts() fetches, from the hub or the local HF cache
        return {s: json.loads(Path(hub_download(HPSV2_REPO, f, model="HPSv2 benchmark prompts",
                                                repo_type="dataset")).read_text())
                for s, f in zip(HPS_STYLES, hpsv2_prompt_files())}
    except DistarError as e:  # offline and not cached
        raise DistarError(
            "HPSv2 benchmark prompts are not available offline and are not shipped with distar. "
            "Get anime.json, concept-art.json, paintings.json, photo.json from the Hugging Face "
            "dataset zhwang/HPDv2 (folder benchmark/), put them in one folder and set "
            f"DISTAR_HPSV2_PROMPTS=/that/folder. ({type(e).__name__}: {e})")


@BENCHMARKS.register("hpsv2", "HPSv2 benchmark: 4 styles x 800 prompts (needs the HPDv2 json)")
def hpsv2_bench() -> Benchmark:
    files = _hpsv2_prompt_files()
    prompts = [Prompt(0, t, {"style": s}) for s in HPS_STYLES for t in files[s]]
    prompts = [Prompt(i, p.text, p.meta) for i, p in enumerate(prompts)]
    return make_benchmark("hpsv2", "1", "HPSv2 benchmark (zhwang/HPDv2)", prompts, ("style",),
                      os.environ.get("DISTAR_HPSV2_PROMPTS", "hpsv2 package"))


# A small offline benchmark for tests and smoke runs: 12 prompts over 3 categories.
_TINY = [("a red apple on a wooden table", "Produce & Plants"),
         ("a green frog sitting on a leaf", "Animals"),
         ("an astronaut riding a horse on the moon", "Imagination"),
         ("a bowl of ramen with chopsticks", "Food & Beverage"),
         ("a lighthouse at sunset, oil painting", "Arts"),
         ("a corgi wearing sunglasses", "Animals"),
         ("a bicycle leaning against a brick wall", "Artifacts"),
         ("a snowy mountain above a blue lake", "Outdoor Scenes"),
         ("a watercolor of a fox in a forest", "Arts"),
         ("a cup of coffee with latte art", "Food & Beverage"),
         ("two cats sleeping on a sofa", "Animals"),
         ("a city skyline at night with neon lights", "Outdoor Scenes")]


@BENCHMARKS.register("tiny", "12 built-in prompts with categories (offline tests, smoke runs)")
def tiny() -> Benchmark:
    return make_benchmark("tiny", "1", "distar built-in smoke prompts",
                      [Prompt(i, t, {"category": c}) for i, (t, c) in enumerate(_TINY)],
                      ("category",), "evalsuite.benchmarks")


# Metadata columns of a .tsv prompt file that tables break scores down by (Parti's layout).
FILE_GROUP_KEYS = ("category", "challenge", "style")


@lru_cache(maxsize=16)
def load_benchmark(name: str) -> Benchmark:
    """A registered benchmark, or `file:PATH` for a .txt (one per line) / .tsv (Prompt column)."""
    if name.startswith("file:"):
        path = Path(name[5:])
        what = not_a_file(path)
        if what:
            raise DistarError(f"Prompt file {path} {what}. Fix: give --bench file:PATH of a "
                              f".txt (one prompt per line) or .tsv (a Prompt column) file.")
        prompts = read_tsv_prompts(path) if path.suffix == ".tsv" else read_txt_prompts(path)
        stem = safe_name(path.stem, keep="-_")
        # Two files with one stem (a/prompts.tsv, b/prompts.tsv) get distinct names.
        where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:6]
        groups = [k for k in FILE_GROUP_KEYS if prompts and k in prompts[0].meta]
        return make_benchmark(f"file-{stem}-{where}", "1", f"prompts from {path}", prompts,
                              groups, str(path.resolve()))
    return BENCHMARKS.load(name)()
