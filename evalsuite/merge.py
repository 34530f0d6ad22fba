"""`distar merge`: the parts of one evaluation (the `--shard I/N` jobs of a SLURM array, the
nodes of a cluster, a colleague's results folder) merged into one results store.

Parts must agree before anything is copied: a model evaluated on a benchmark in two parts must
carry the same recipe hashes in both, a benchmark the same versions, a metric the same versions
(weights, backbone, preprocessing), or the merged tables would mix numbers that do not compare.
Then each part goes through `evalsuite.store.merge_store` (image files before rows, idempotent:
a merge killed half-way is finished by running it again).
"""
from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from distar.core.errors import DistarError
from distar.core.runlock import out_lock
from evalsuite.store import STORE_FILENAME, ResultsStore, StoreDamagedError, merge_store


@dataclass
class PartMerged:
    part: Path
    images: int      # image rows new to the target
    files: int       # image files copied
    scores: int      # score rows inserted or replaced by newer ones
    set_scores: int
    runs: int
    damaged: int     # images whose file did not match its row's sha256 (not merged)


def _versions(store: ResultsStore) -> dict[tuple, set[str]]:
    """What must agree between parts: ('recipe', model, bench) -> recipe hashes,
    ('bench', bench) -> versions, ('metric', metric) -> metric versions."""
    out: dict[tuple, set[str]] = {}
    for t in ("runs", "images"):
        for r in store.table(t).itertuples(index=False):
            out.setdefault(("recipe", r.model, r.bench), set()).add(r.recipe_hash)
            out.setdefault(("bench", r.bench), set()).add(r.bench_version)
    for t in ("scores", "set_scores"):
        for r in store.table(t).itertuples(index=False):
            out.setdefault(("metric", r.metric), set()).add(r.metric_version)
    return out


def _what(key: tuple) -> str:
    kind = key[0]
    if kind == "recipe":
        return f"model '{key[1]}' on '{key[2]}' has recipe"
    if kind == "bench":
        return f"benchmark '{key[1]}' has version"
    return f"metric '{key[1]}' has version"


def merge_conflicts(parts: Sequence[Path]) -> list[str]:
    """Every disagreement between parts, as short phrases (empty: they can be merged)."""
    seen: dict[tuple, tuple[Path, set[str]]] = {}
    problems = []
    for part in parts:
        store = ResultsStore(part, readonly=True)
        try:
            for key, values in _versions(store).items():
                if key not in seen:
                    seen[key] = (part, values)
                elif seen[key][1] != values:
                    first, have = seen[key]
                    problems.append(f"{_what(key)} {', '.join(sorted(have))} in {first} but "
                                    f"{', '.join(sorted(values))} in {part}")
        finally:
            store.close()
    return problems


def check_parts(parts: Sequence[Path], out: Path) -> None:
    """All at once: every part a readable results store, none of them the target, all agreeing."""
    if not parts:
        raise DistarError("distar merge needs at least one PART folder. Fix: distar merge --out "
                          "RESULTS PART [PART ...].")
    missing = [str(p) for p in parts if not (Path(p) / STORE_FILENAME).is_file()]
    if missing:
        raise DistarError(f"not a results folder (no {STORE_FILENAME}): {', '.join(missing)}. "
                          "Fix: pass the --out folders of the `distar eval` runs to merge.")
    same = [str(p) for p in parts if Path(p).resolve() == Path(out).resolve()]
    if same:
        raise DistarError(f"--out {out} is also a PART. Fix: merge into a new folder.")
    try:
        problems = merge_conflicts(parts)
    except StoreDamagedError as e:
        raise DistarError(f"cannot merge: {e}") from None
    if problems:
        raise DistarError("cannot merge: the parts disagree: " + "; ".join(problems) + ". Fix: "
                          "merge only parts made by the same command (same recipe, benchmark and "
                          "metric versions); rerun the odd part with the others' settings.")


def merge_results(parts: Sequence[Path], out: Path) -> list[PartMerged]:
    """Check every part (check_parts), then merge them into `out` one after the other, holding
    `out`'s lock and the lock of every part this process may write (a part still being
    written by a `distar eval` is refused, naming it)."""
    parts = [Path(p) for p in parts]
    check_parts(parts, out)
    done = []
    with ExitStack() as stack:
        stack.enter_context(out_lock(out, "distar merge (writing)"))
        for part in parts:
            if os.access(part, os.W_OK):
                stack.enter_context(out_lock(part, "distar merge (reading)"))
        for part in parts:
            c = merge_store(part, out)
            done.append(PartMerged(part, images=c["images"], files=c["files"],
                                   scores=c["scores"], set_scores=c["set_scores"],
                                   runs=c["runs"], damaged=c["damaged"]))
    return done


def describe_merge(done: Sequence[PartMerged], out: Path) -> str:
    """What `distar merge` prints: per part what came in, then what the target holds."""
    lines = []
    for d in done:
        line = (f"{d.part}: {d.images} new images ({d.files} files copied), {d.scores} scores, "
                f"{d.set_scores} set scores, {d.runs} runs")
        if d.damaged:
            line += f"; {d.damaged} damaged images skipped (file does not match its sha256)"
        lines.append(line)
    store = ResultsStore(out, readonly=True)
    try:
        images = store.table("images")
    finally:
        store.close()
    lines.append(f"{out / STORE_FILENAME} now holds {len(images)} images:")
    for (model, bench), n in images.groupby(["model", "bench"]).size().items():
        lines.append(f"  {model} on {bench}: {n}")
    return "\n".join(lines)
