"""Where the mini world's trained weights live, and the sampling recipes they are used with.

The built world (`distar lab build mini --out DIR`, di_star/mini/build.py) is a folder:
    manifest.json   sha256 of every file, the command, the git commit, the seed, wall times
    pipeline/       StableDiffusionXLPipeline folder (the multi-step reference) + distar_recipe.json
    onestep/        unet/ (the one-step initial generator) + distar_recipe.json
    clip/           CLIPModel + tokenizer + image processor (CLIP score, the text encoders' source)
    proxy_reward/   CLIPModel trained with PickScore's objective + tokenizer + image processor
    aesthetic/      the aesthetic MLP (model.safetensors + config.json)
    classifier/     the attribute classifier (di_star.mini.classifier)
A copy ships in the package (di_star/mini/data/); DISTAR_MINI_DIR=DIR points everything that
reads the mini weights (the `mini_*` models and metrics) at another build.

The recipes are constants here, not in the build, so the registry (di_star/mini/plugin.py) and the build
read one definition; the build also writes them into each folder's distar_recipe.json
so `--model path:DIR/pipeline` samples the same way.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from distar.core.errors import WeightsMissingError

SHIPPED_DIR = Path(__file__).resolve().parent / "data"
ENV_VAR = "DISTAR_MINI_DIR"
MANIFEST = "manifest.json"
# Folders beside the world with a manifest of their own (built after the world, over it):
# the proxy ladder (di_star.mini.proxy_ladder.verify_ladder checks it).
OWN_MANIFESTS = ("proxy_ladder",)
RESOLUTION = 64

# The reference: DPM-Solver++(2M) on SD's scaled-linear schedule, trailing timesteps (the first
# step starts at t = 999, where pure noise is what the UNet was trained on), CFG on.
REFERENCE_RECIPE = {"scheduler": "DPMSolverMultistepScheduler", "steps": 15, "guidance": 4.0,
                    "resolution": RESOLUTION, "dtype": "float32", "arch_type": "UNet",
                    "params": "mini", "default_batch_size": 32}
# The one-step initial generator: DMD2's convention, pure noise fed at t = 399, x0-prediction
# read through a 1-step LCMScheduler (what di_star.sdxl.models.OneStepGenerator computes).
ONESTEP_TIMESTEP = 399
ONESTEP_RECIPE = {"scheduler": "LCMScheduler", "steps": 1, "guidance": 0.0,
                  "timesteps": [ONESTEP_TIMESTEP], "resolution": RESOLUTION, "dtype": "float32",
                  "arch_type": "UNet", "params": "mini", "default_batch_size": 64}


def mini_dir() -> Path:
    """The built world in use: $DISTAR_MINI_DIR, else the copy shipped in the package."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else SHIPPED_DIR


def component_dir(name: str, root: Path | None = None) -> Path:
    """root/name, checked to exist and to hold the files its manifest lists (verify_component),
    with one message naming the fix when it does not."""
    root = Path(root) if root is not None else mini_dir()
    d = root / name
    if not d.is_dir():
        raise WeightsMissingError(
            f"mini world ({name})", str(d),
            f"build it with `distar lab build mini --out DIR` and set {ENV_VAR}=DIR, or restore "
            f"the shipped copy in {SHIPPED_DIR}")
    verify_component(root, name)
    return d


_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256


def _sha256(f: Path) -> str:
    """A file's sha256, computed once per (path, size, mtime): a second load costs a stat."""
    st = f.stat()
    key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = hashlib.sha256(f.read_bytes()).hexdigest()
    return _VERIFIED[key]


def verify_spec(spec) -> None:
    """A model (an evalsuite ModelSpec) whose folders belong to a built world (a manifest.json
    beside them) is checked against the manifest before loading (registered by the plug-in as
    a MODEL_CHECKS entry); other models pass untouched."""
    for repo in (spec.repo, spec.unet.repo if spec.unet else None):
        folder = Path(repo) if repo else None
        if folder is not None and folder.is_dir() and (folder.parent / MANIFEST).is_file():
            verify_component(folder.parent, folder.name)


def verify_component(root: Path, name: str) -> None:
    """The files of component `name` (a folder of the world in `root`, e.g. 'proxy_reward',
    'pipeline') match the sha256 its manifest lists, so a metric version or recipe that names
    the world's manifest names the weights actually used. A world without a manifest (a build
    in progress) is not checked."""
    from distar.core.errors import DistarError
    m = Path(root) / MANIFEST
    if not m.is_file():
        return
    try:
        listed = json.loads(m.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DistarError(f"{m} is damaged ({e}). Fix: restore the mini world (the shipped copy "
                          f"in {SHIPPED_DIR}, or rebuild with `distar lab build mini`).") from None
    bad = [rel for rel, entry in sorted(listed.items()) if rel.startswith(name + "/")
           and (not (Path(root) / rel).is_file() or _sha256(Path(root) / rel) != entry.get("sha256"))]
    if bad:
        raise DistarError(f"The mini world in {root}: {', '.join(bad[:4])} "
                          f"{'do' if len(bad) > 1 else 'does'} not match {m} (changed or missing "
                          f"since the build), so scores would be labelled with weights that were "
                          f"not used. Fix: restore the files (git checkout {SHIPPED_DIR} for the "
                          f"shipped world), or rebuild with `distar lab build mini --out DIR`.")


def manifest_digest(root: Path | None = None) -> str:
    """A short hash of the sha256 list in the world's manifest: names the exact weights in
    metric versions and model revisions. Only the files count, so a provenance edit (a path
    made portable, a note) renames nothing."""
    root = Path(root) if root is not None else mini_dir()
    if not (root / MANIFEST).is_file():
        return "unbuilt"
    files = {rel: entry["sha256"] for rel, entry in read_manifest(root)["files"].items()}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]


def read_manifest(root: Path | None = None) -> dict:
    root = Path(root) if root is not None else mini_dir()
    return json.loads((root / MANIFEST).read_text())


def verify_manifest(root: Path | None = None) -> list[str]:
    """Problems found comparing the manifest's sha256 list with the files (empty = all good):
    missing files, changed files, and files the manifest does not list."""
    root = Path(root) if root is not None else mini_dir()
    listed = read_manifest(root)["files"]
    problems = []
    for rel, entry in sorted(listed.items()):
        f = root / rel
        if not f.is_file():
            problems.append(f"missing: {rel}")
            continue
        h = hashlib.sha256(f.read_bytes()).hexdigest()
        if h != entry["sha256"] or f.stat().st_size != entry["bytes"]:
            problems.append(f"changed: {rel}")
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*")
               if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
               and p.relative_to(root).parts[0] not in OWN_MANIFESTS}
    problems += [f"not in manifest: {rel}" for rel in sorted(on_disk - set(listed))]
    return problems
