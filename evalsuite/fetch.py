"""`distar fetch`: download every file a command needs, on a machine with the hub, for a machine
without it (a cluster's compute nodes).

The list comes from evalsuite.needs, the one preflight checks, so what is fetched is what the
run will look for. `plan` works offline (file names and patterns); with the hub reachable it
resolves each revision to its commit and each pattern to the files with their sizes. `download`
fills the Hugging Face cache, or `to/hub` (a cache to copy: `export HF_HOME=to` on the other
machine), writes files from outside the hub under `to/distar` (DISTAR_CACHE), and a manifest
with every file's sha256.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from distar.core.errors import DistarError
from evalsuite.needs import HubNeed

MANIFEST = "distar-fetch.json"
SUMS = "SHA256SUMS"


@dataclass
class PlannedFile:
    path: str                      # path in the repo (or the file name of a URL download)
    size: int | None = None        # bytes; None when the hub was not asked
    sha256: str | None = None      # the hub's LFS sha256, when it gives one


@dataclass
class PlannedRepo:
    need: HubNeed
    commit: str | None = None      # the revision resolved by the hub (None offline)
    files: list[PlannedFile] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)   # required items the repo does not have

    @property
    def size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if not sizes or None in sizes else sum(sizes)


def is_optional(item: str) -> bool:
    """'?name' (read when present) or a bare glob (a shard index) may match nothing; a file or
    an 'a|b' item must be there."""
    return item.startswith("?") or ("|" not in item and any(c in item for c in "*?["))


def match_items(items: Sequence[str], paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the repo paths the loader reads, the required items with no match). For 'a|b' only the
    first alternative with a match counts, as the loaders read it."""
    chosen: list[str] = []
    missing: list[str] = []
    for item in items:
        for alternative in item.removeprefix("?").split("|"):
            hits = [p for p in paths if fnmatch.fnmatchcase(p, alternative)]
            if hits:
                chosen += [h for h in hits if h not in chosen]
                break
        else:
            if not is_optional(item):
                missing.append(item)
    return chosen, missing


# Hub calls: each is one huggingface_hub function (the tests replace them) -------------------
def _hub_errors(need: HubNeed, e: Exception) -> DistarError:
    """A hub exception as one line saying what to do."""
    from huggingface_hub import errors
    name = need.repo_id
    if isinstance(e, errors.GatedRepoError) or (need.gated and isinstance(
            e, (errors.RepositoryNotFoundError, errors.HfHubHTTPError))):
        return DistarError(
            f"{name} is gated: open {need.page} while logged in, accept its licence, then create "
            f"a read token at https://huggingface.co/settings/tokens and `export HF_TOKEN=hf_...` "
            f"before rerunning distar fetch ({type(e).__name__}).")
    if isinstance(e, errors.RevisionNotFoundError):
        return DistarError(f"{name} has no revision '{need.revision}': fix the revision in its "
                           f"registry entry or metric option.")
    if isinstance(e, errors.RepositoryNotFoundError):
        return DistarError(f"{name}: no such repository on the hub (or it is private: set "
                           f"HF_TOKEN to a token that can read it).")
    if isinstance(e, errors.EntryNotFoundError):
        return DistarError(f"{name}: a planned file is not in the repository ({e}).")
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return DistarError(f"the hub did not answer for {name} ({type(e).__name__}: {first}): check "
                       f"the network (or HF_ENDPOINT / a proxy) and rerun; files already "
                       f"downloaded are kept.")


def list_repo(need: HubNeed) -> tuple[str, dict[str, PlannedFile]]:
    """(commit of the revision, {path: file with size and sha256}) from the hub."""
    import huggingface_hub as hh
    from huggingface_hub.hf_api import RepoFile
    api = hh.HfApi()
    try:
        info = api.repo_info(need.repo_id, revision=need.revision, repo_type=need.repo_type)
        entries = api.list_repo_tree(need.repo_id, revision=info.sha, recursive=True,
                                     repo_type=need.repo_type)
        files = {}
        for e in entries:
            if isinstance(e, RepoFile):
                lfs = getattr(e, "lfs", None)
                files[e.path] = PlannedFile(e.path, e.size, getattr(lfs, "sha256", None))
    except Exception as e:
        raise _hub_errors(need, e) from None
    return info.sha, files


def hub_file(need: HubNeed, path: str, commit: str, cache_dir: Path | None) -> Path:
    import huggingface_hub as hh
    try:
        return Path(hh.hf_hub_download(need.repo_id, path, revision=commit,
                                       repo_type=need.repo_type, cache_dir=cache_dir))
    except Exception as e:
        raise _hub_errors(need, e) from None


def url_file(url: str, target: Path) -> Path:
    """A file outside the hub (clean-fid's Inception), written atomically."""
    import urllib.request

    from distar.core.atomic import temp_file
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=30) as r, temp_file(target) as tmp:
            with open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
    except OSError as e:
        raise DistarError(f"could not download {url} ({type(e).__name__}: {e}): check the "
                          f"network and rerun.") from None
    return target


# Plan ---------------------------------------------------------------------------------------
def plan(needs: Sequence[HubNeed], online: bool) -> list[PlannedRepo]:
    """Each need with its files: resolved on the hub when `online`, else the loaders' patterns."""
    out = []
    for need in needs:
        if need.repo_id is None:  # a URL: one file, its size unknown until downloaded
            out.append(PlannedRepo(need, None, [PlannedFile(f) for f in need.files]))
        elif not online:
            out.append(PlannedRepo(need, None, [PlannedFile(f) for f in need.files]))
        else:
            commit, listing = list_repo(need)
            chosen, missing = match_items(need.files, list(listing))
            out.append(PlannedRepo(need, commit, [listing[p] for p in chosen], missing))
    return out


def human_size(n: int | None) -> str:
    if n is None:
        return "size unknown offline"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return ""


def render_plan(repos: Sequence[PlannedRepo], online: bool) -> str:
    lines = []
    for r in repos:
        n = r.need
        if n.repo_id is None:
            lines.append(f"{n.url}  (not on the hub; {n.what})")
        else:
            rev = n.revision or "main"
            rev += f" = commit {r.commit}" if r.commit else " (commit resolved when downloaded)"
            kind = "dataset " if n.repo_type == "dataset" else ""
            gated = f"  GATED: accept the licence at {n.page}, set HF_TOKEN" if n.gated else ""
            lines.append(f"{kind}{n.repo_id} @ {rev}  ({n.what}){gated}")
        for f in r.files:
            shown = f.path.replace("|", "  or  ")
            shown = shown[1:] + "  (if present)" if shown.startswith("?") else shown
            size = "size unknown offline" if not online else (
                human_size(f.size) if f.size is not None else "size known once downloaded")
            lines.append(f"    {shown}  [{size}]")
        for m in r.missing:
            lines.append(f"    MISSING on the hub: {m.replace('|', '  or  ')}")
        if online and r.need.repo_id is not None:
            lines.append(f"    total {human_size(r.size)}")
    sizes = [r.size for r in repos if r.need.repo_id is not None]
    if online and sizes and None not in sizes:
        lines.append(f"all hub files: {human_size(sum(sizes))}")
    elif not online:
        lines.append("the hub is not reachable: names and patterns only (sizes and commits need "
                     "the hub; run `distar fetch ... --plan` where it is reachable)")
    return "\n".join(lines)


# Download -----------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def download(repos: Sequence[PlannedRepo], to: Path | None) -> list[dict]:
    """Download every planned file (hub: at the resolved commit, into the HF cache or to/hub;
    URLs: into DISTAR_CACHE or to/distar); with `to`, write the manifest and SHA256SUMS there.
    Returns the manifest rows. A file whose sha256 differs from the hub's is an error."""
    from distar.core.paths import cache_dir
    lacking = [f"{r.need.repo_id} @ {r.commit} lacks {', '.join(r.missing)} ({r.need.what})"
               for r in repos if r.missing]
    if lacking:  # before the first byte: the run would fail on these
        raise DistarError("; ".join(lacking) + ". Fix: pin a revision that has them.")
    rows = []
    for r in repos:
        n = r.need
        for f in r.files:
            if n.repo_id is None:
                path = url_file(n.url, (to / "distar" if to else cache_dir()) / f.path)
            else:
                path = hub_file(n, f.path, r.commit, to / "hub" if to else None)
            digest = sha256_of(path)
            if f.sha256 and digest != f.sha256:
                raise DistarError(f"{n.repo_id}/{f.path}: sha256 {digest} differs from the "
                                  f"hub's {f.sha256}; delete {path} and rerun.")
            rows.append({"repo": n.repo_id, "url": n.url, "revision": n.revision or "main",
                         "commit": r.commit, "file": f.path, "bytes": path.stat().st_size,
                         "sha256": digest, "local": str(path)})
    if to is not None:
        write_manifest(rows, to)
    return rows


def write_manifest(rows: list[dict], to: Path) -> None:
    """to/distar-fetch.json (every row) and to/SHA256SUMS (`cd to && sha256sum -c SHA256SUMS`
    checks the copy), paths relative to `to` so the folder can move. The HF cache's snapshot
    paths are symlinks into its blobs; they are kept as snapshot paths, not resolved."""
    import os

    from distar.core.atomic import write_text
    root = os.path.abspath(to)
    for row in rows:
        local = os.path.abspath(row["local"])
        if local.startswith(root + os.sep):
            row["local"] = os.path.relpath(local, root)
    write_text(to / MANIFEST, json.dumps(rows, indent=1) + "\n")
    write_text(to / SUMS, "".join(f"{r['sha256']}  {r['local']}\n" for r in rows))


# The command --------------------------------------------------------------------------------
def offline_error() -> DistarError:
    return DistarError("the hub is not reachable from this machine: run `distar fetch ... --to "
                       "DIR` where it is (e.g. a login node), copy DIR here and `export "
                       "HF_HOME=DIR DISTAR_CACHE=DIR/distar` (or see the plan with --plan).")


def check_names(bench: str | None, metrics: Sequence[str]) -> None:
    """Unknown benchmark / metric names, all in one message (nothing is loaded)."""
    from evalsuite.benchmarks import BENCHMARKS
    from evalsuite.metrics import METRICS
    bad = []
    if bench and not bench.startswith("file:") and bench not in BENCHMARKS:
        bad.append(f"unknown benchmark '{bench}' (choose one of: {', '.join(BENCHMARKS.names())})")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        bad.append(f"unknown metric{'s' if len(unknown) > 1 else ''} "
                   f"{', '.join(map(repr, unknown))} (choose from: {', '.join(METRICS.names())})")
    if bad:
        raise DistarError("; ".join(bad) + ".")


def fetch(specs: Sequence, bench: str | None, metrics: Sequence[str], *, plan_only: bool,
          to: Path | None = None, metric_options: dict[str, dict] | None = None,
          echo=print) -> list[PlannedRepo]:
    """Print the plan of everything `specs` (resolved ModelSpecs), `bench` and `metrics` need;
    unless `plan_only`, download it (into the HF cache, or `to`)."""
    from evalsuite.hub import hub_reachable
    from evalsuite.needs import command_needs
    check_names(bench, metrics)
    online = hub_reachable()
    if not plan_only and not online:
        raise offline_error()
    repos = plan(command_needs(specs, bench, metrics, metric_options), online)
    echo(render_plan(repos, online))
    if plan_only or not repos:
        if not repos:
            echo("nothing to fetch: everything this command needs is built locally")
        return repos
    rows = download(repos, to)
    where = f"{to} (manifest: {to / MANIFEST}, check: cd {to} && sha256sum -c {SUMS}); on the " \
            f"offline machine: export HF_HOME={to} DISTAR_CACHE={to}/distar" if to \
        else "the Hugging Face cache (HF_HOME) and DISTAR_CACHE"
    echo(f"fetched {len(rows)} files, {human_size(sum(r['bytes'] for r in rows))}, into {where}")
    return repos
