"""Finding a metric's weights: an explicit option, an environment variable, or the Hugging Face
cache / hub (the hub only when it answers quickly; see evalsuite.hub). Missing weights raise
WeightsMissingError naming the model, the file, and both ways to point at a local copy.

Revisions: the hub repos these metrics use publish no tagged releases, and commit hashes could not
be verified from this machine, so the default revision is the repo's current one; pass
`revision=` to pin. The snapshot commit actually used is recorded with every score (`provenance`).

Integrity: every weight file a metric loads is hashed in full (sha256, recorded in `provenance`)
and checked, before it is read, against the digest it should have: a published one from
`KNOWN_SHA256` for its role, or, for a file from the Hugging Face cache, the hub's own sha256 of
it (the LFS object id the cache names the blob after). A mismatch raises WeightsMismatchError
unless $DISTAR_ALLOW_WEIGHT_MISMATCH=1 (then the mismatch is recorded in `provenance`).
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from functools import lru_cache
from pathlib import Path

import torch

from distar.core.dtypes import DTYPES, dtype_name, to_dtype
from distar.core.errors import DistarError, WeightsMissingError


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """fp32 unless asked otherwise: any name in distar.core.dtypes ('float32'/'fp32',
    'bfloat16'/'bf16', 'float16'/'fp16') or the torch dtype; fp16 only on GPU (CPUs lack many
    fp16 kernels; bf16 runs there, slowly)."""
    try:
        out = to_dtype(dtype)
    except ValueError:
        shown = f"'{dtype}'" if isinstance(dtype, str) else str(dtype)
        raise DistarError(f"Unknown dtype {shown}. Choose one of: {', '.join(DTYPES)}") from None
    if out == torch.float16 and device.type != "cuda":
        raise DistarError(f"dtype '{dtype_name(out, short=True)}' is only supported on a GPU; "
                          f"use 'fp32' on {device}.")
    return out


def _fix_text(option: str, env_var: str | None, filename: str) -> str:
    ways = [f"pass {option}=/path/to/{filename}"]
    if env_var:
        ways.append(f"set {env_var}=/path/to/{filename}")
    return " or ".join(ways)


def resolve_file(model: str, *, repo_id: str | None, filename: str, path: str | None = None,
                 env_var: str | None = None, option: str = "weights_path",
                 revision: str | None = None) -> Path:
    """The local path of `filename`: `path` (a file, or a folder holding it), else $env_var, else
    the HF cache / hub copy of repo_id/filename."""
    explicit = path or (os.environ.get(env_var) if env_var else None)
    if explicit:
        p = Path(explicit).expanduser()
        if p.is_dir():
            p = p / filename
        if not p.is_file():
            raise WeightsMissingError(model, str(p), "point " + _fix_text(option, env_var, filename)
                                      + " at an existing file")
        return p
    if repo_id is None:
        raise WeightsMissingError(model, filename, _fix_text(option, env_var, filename))
    from evalsuite.hub import hub_download
    try:
        return Path(hub_download(repo_id, filename, model=model, revision=revision, env_var=env_var))
    except WeightsMissingError as e:
        raise WeightsMissingError(model, e.file, "download it where the hub is reachable "
                                  f"(`hf download {repo_id} {filename}`) and copy the Hugging Face "
                                  f"cache (HF_HOME) here, or {_fix_text(option, env_var, filename)}"
                                  ) from None


ALLOW_MISMATCH_ENV = "DISTAR_ALLOW_WEIGHT_MISMATCH"
# Published sha256 digests of metric weight files, by role (not by file name, so a renamed copy is
# checked too). Only digests published by someone other than us are listed; evalsuite/metrics/
# README.md ("Weights") says which weights have none.
KNOWN_SHA256 = {
    # The git-LFS object id of sac+logos+ava1-l14-linearMSE.pth (3,714,759 bytes) in the
    # authors' GitHub repo christophschuhmann/improved-aesthetic-predictor; the same value is
    # pinned by independent projects that download it from there or from hub mirrors.
    "aesthetic_mlp": "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0",
}


class WeightsMismatchError(DistarError):
    """A weight file's sha256 differs from the published (or hub-recorded) one."""


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Full sha256 of a file (hashed once per process while its size and mtime stay put)."""
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def hub_cache_sha256(path: str | Path) -> str | None:
    """The hub's sha256 of a file in the Hugging Face cache: snapshots/<commit>/<name> links to
    blobs/<etag>, and for LFS files (every weight file) the etag is the file's sha256. None for
    files outside the cache and for non-LFS files (their etag is a 40-hex git blob id)."""
    path = Path(path)
    if not re.search(r"/snapshots/[0-9a-f]{40}/", str(path)) or not path.is_symlink():
        return None
    blob = path.resolve().name
    return blob if re.fullmatch(r"[0-9a-f]{64}", blob) else None


def provenance(path: str | Path, what: str = "weights", role: str | None = None) -> dict:
    """Check a weight file and say what to record about it: its path, full sha256, the digest
    it was checked against and where that came from, and its hub snapshot commit when it came
    from the HF cache. Raises WeightsMismatchError on a mismatch (see the module docstring)."""
    path = Path(path)
    out = file_record(path)
    expected, source = KNOWN_SHA256.get(role or ""), "published"
    if expected is None:
        expected, source = hub_cache_sha256(path), "hub"
    if expected is None:
        out["verified"] = "no published sha256"
        return out
    out["expected_sha256"], out["verified"] = expected, source
    if out["sha256"] != expected:
        msg = (f"{what}: {path} has sha256 {out['sha256']}, but the {source} sha256 of this "
               f"file is {expected}: it is damaged or not the published weights. Fix: replace "
               f"it with the published file, or set {ALLOW_MISMATCH_ENV}=1 to score with it "
               f"anyway (the mismatch is then recorded with every score).")
        if os.environ.get(ALLOW_MISMATCH_ENV, "").strip().lower() not in ("1", "true", "yes"):
            raise WeightsMismatchError(msg)
        warnings.warn(msg, stacklevel=2)
        out["verified"] = f"MISMATCH allowed by {ALLOW_MISMATCH_ENV}"
    return out


def revision_of(path: str | Path) -> str:
    """Which version of a file this is, as far as its place tells: the hub snapshot commit
    (Hugging Face cache), the installed package that ships it ('open_clip_torch 3.2.0'), else
    'local file' (its sha256 is then the only revision)."""
    m = re.search(r"/snapshots/([0-9a-f]{40})/", str(path))
    if m:
        return m.group(1)
    m = re.search(r"/site-packages/([^/]+)/", str(Path(path).resolve()))
    return (_package_version(m.group(1)) if m else None) or "local file"


@lru_cache(maxsize=None)
def _package_version(top_level: str) -> str | None:
    """'open_clip_torch 3.3.0' for the import name 'open_clip' (None when no distribution
    provides it)."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version
    for dist in packages_distributions().get(top_level, [top_level]):
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            continue
    return None


def file_record(path: str | Path) -> dict:
    """What a score records about one file it depends on: path, full sha256, revision (and the
    hub commit when it came from the HF cache)."""
    out = {"file": str(path), "sha256": sha256_file(path), "revision": revision_of(path)}
    if re.fullmatch(r"[0-9a-f]{40}", out["revision"]):
        out["hub_commit"] = out["revision"]
    return out


# Weight files are recorded (and checked) by `provenance`; these suffixes mark them in folders.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def folder_records(folder: str | Path, skip_weights: bool = True) -> dict[str, dict]:
    """`file_record` of every file in a from_pretrained folder (tokenizer, processor and model
    configs: what the loader may read), by name; weight files are left to `provenance`."""
    folder = Path(folder)
    return {f.name: file_record(f) for f in sorted(folder.iterdir())
            if f.is_file() and not f.name.startswith(".")
            and not (skip_weights and f.suffix in WEIGHT_SUFFIXES)}


def open_clip_records(arch: str, tokenizer: bool = True) -> dict:
    """The files an open_clip model depends on besides its weights: the model config it was
    built from (the bundled json, or the registered dict's canonical json when a config was
    added in memory) and the BPE vocabulary its tokenizer reads."""
    import hashlib
    import json

    import open_clip
    cfg = open_clip.get_model_config(arch)
    bundled = Path(open_clip.__file__).parent / "model_configs" / f"{arch}.json"
    out = {"config": file_record(bundled)
           if bundled.is_file() and json.loads(bundled.read_text()) == cfg else
           {"file": f"open_clip config '{arch}' (registered in memory)",
            "sha256": hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest(),
            "revision": revision_of(open_clip.__file__)}}
    if tokenizer:
        from open_clip.tokenizer import default_bpe
        out["tokenizer"] = file_record(default_bpe())
    return out


def open_clip_weights(model: str, arch: str, pretrained: str, *, path: str | None,
                      env_var: str, option: str = "weights_path",
                      revision: str | None = None) -> Path:
    """The local file of open_clip's `pretrained` tag for `arch` (its hub repo's
    open_clip_model.safetensors, else open_clip_pytorch_model.bin)."""
    import open_clip
    if path or os.environ.get(env_var):
        return resolve_file(model, repo_id=None, filename="open_clip_model.safetensors",
                            path=path, env_var=env_var, option=option)
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg or not cfg.get("hf_hub"):
        raise DistarError(f"open_clip has no hub copy of {arch}/{pretrained}; pass {option}=FILE")
    repo_id = cfg["hf_hub"].rstrip("/")
    first_error = None
    for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        try:
            return resolve_file(model, repo_id=repo_id, filename=filename, path=path,
                                env_var=env_var, option=option, revision=revision)
        except WeightsMissingError as e:
            first_error = first_error or e
    raise first_error


def load_strict(module: torch.nn.Module, state_dict: dict, what: str) -> torch.nn.Module:
    """module.load_state_dict(strict=True), with a missing, unknown or misshapen tensor reported
    as one DistarError naming the keys instead of a torch traceback."""
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise DistarError(f"{what}: the checkpoint does not match the model ({detail[:600]}). "
                          f"Fix: point at the published weights for this model.") from None
    return module


def build_open_clip(arch: str, state_dict: dict | None, *, quick_gelu: bool = False,
                    what: str | None = None):
    """An open_clip model of `arch` holding exactly `state_dict` (strict), in eval mode, frozen."""
    import open_clip
    model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu)
    if state_dict is not None:
        load_strict(model, state_dict, what or f"open_clip {arch}")
    return freeze(model)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no parameter gradients (inputs can still receive gradients)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
