#!/usr/bin/env python3
"""Gather the wheels a GPU machine without internet needs to run distar, into one folder.

    python3 scripts/wheelhouse.py --python 3.12 --to wheelhouse         # on a machine with PyPI
    # copy wheelhouse/ to the GPU machine, then (README "On a machine without internet"):
    python -m pip install --no-index --find-links wheelhouse -r wheelhouse/requirements.txt
    python -m pip install --no-index --find-links wheelhouse --no-deps -r wheelhouse/requirements-nodeps.txt

The list is constraints/gpu_wheels.txt. Stdlib only: it runs before distar is installed.
1. pip resolves the list's dependency closure for the target Python and platform from metadata
   alone (`pip install --dry-run --report`, binary wheels only): nothing is installed here.
2. The GPU image's CUDA builds (torch, torchvision, triton, nvidia-*) are left out of it, unless
   --with-torch: those are several GB and the image has them.
3. Every other pinned wheel is downloaded for the target (`pip download --no-deps`).
4. The source-only distributions (marked `build`) are built into wheels, pure Python, and their
   own requirements checked against the folder; distar itself is built too.
5. requirements.txt / requirements-nodeps.txt and SHA256SUMS are written into the folder.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIST = ROOT / "constraints" / "gpu_wheels.txt"
IMAGE = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")
DEFAULT_PLATFORM = "manylinux_2_28_x86_64"   # glibc 2.28+: every current GPU image


@dataclass(frozen=True)
class Entry:
    requirement: str     # as pip reads it, e.g. 'diffusers==0.42.1'
    name: str            # normalised distribution name
    marks: frozenset     # 'image', 'build', 'no-deps', 'dep of X', 'runtime: ...'


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_list(path: Path = LIST) -> list[Entry]:
    entries = []
    for line in path.read_text().splitlines():
        req, _, comment = line.partition("#")
        req = req.strip()
        if not req:
            continue
        name = normalise(re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0])
        marks = frozenset(m.strip() for m in comment.split(";") if m.strip())
        entries.append(Entry(req, name, marks))
    return entries


def run(cmd: list[str]) -> None:
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def expand_platform(tag: str) -> list[str]:
    """A manylinux tag and every older one a machine with that glibc also runs (pip takes
    --platform literally: manylinux_2_28 alone would miss a wheel tagged manylinux_2_24)."""
    legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", tag) or re.fullmatch(
        r"(manylinux2014|manylinux2010|manylinux1)_(\w+)", tag)
    if not m:
        return [tag]
    top = int(m.group(1)) if m.group(1).isdigit() else legacy[m.group(1)]
    arch = m.group(2)
    return ([f"manylinux_2_{g}_{arch}" for g in range(top, 4, -1)]
            + [f"{name}_{arch}" for name, g in legacy.items() if g <= top])


def target_flags(python: str, platforms: list[str]) -> list[str]:
    abi = "cp" + python.replace(".", "")
    platforms = list(dict.fromkeys(p for tag in platforms for p in expand_platform(tag)))
    flags = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for p in platforms:
        flags += ["--platform", p]
    for a in (abi, "abi3", "none"):
        flags += ["--abi", a]
    return flags


def resolve(pip: list[str], requirements: list[str], flags: list[str], work: Path) -> dict[str, str]:
    """{name: version} of the closure pip resolves for the target, from metadata only."""
    report = work / "report.json"
    req_file = work / "resolve.txt"
    req_file.write_text("\n".join(requirements) + "\n")
    run(pip + ["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
               *flags, "-r", str(req_file)])
    items = json.loads(report.read_text())["install"]
    return {normalise(i["metadata"]["name"]): i["metadata"]["version"] for i in items}


def wheel_requires(wheel: Path) -> list[str]:
    """A wheel's unconditional Requires-Dist names (extras' requirements left out)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(z.read(meta).decode())
    names = []
    for r in msg.get_all("Requires-Dist") or []:
        if "extra ==" not in r.replace("extra==", "extra =="):
            names.append(normalise(re.split(r"[<>=!~;\[ (]", r.strip(), maxsplit=1)[0]))
    return names


def sha256sums(folder: Path) -> str:
    lines = []
    for f in sorted(folder.glob("*.whl")):
        lines.append(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}")
    return "\n".join(lines) + "\n"


def gather(to: Path, python: str, platforms: list[str], with_torch: bool = False,
           pip: list[str] | None = None, entries: list[Entry] | None = None) -> dict:
    pip = pip or [sys.executable, "-m", "pip"]
    entries = entries if entries is not None else read_list()
    to.mkdir(parents=True, exist_ok=True)
    flags = target_flags(python, platforms)
    keep = lambda e: with_torch or "image" not in e.marks  # noqa: E731
    resolved_from = [e.requirement for e in entries
                     if keep(e) and not e.marks & {"build", "no-deps"}]
    with tempfile.TemporaryDirectory() as work:
        closure = resolve(pip, resolved_from, flags, Path(work))
    pins = {n: v for n, v in closure.items() if with_torch or not IMAGE.match(n)}
    nodeps = [e.requirement for e in entries if "no-deps" in e.marks]
    build = [e.requirement for e in entries if "build" in e.marks]
    run(pip + ["download", "--no-deps", "--quiet", *flags, "-d", str(to),
               *[f"{n}=={v}" for n, v in sorted(pins.items())], *nodeps])
    left = not (ROOT / "build").exists()  # setuptools builds distar in ROOT/build: not ours to keep
    try:
        run(pip + ["wheel", "--no-deps", "--quiet", "-w", str(to), *build, str(ROOT)])
    finally:
        if left:
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    # A built wheel's own requirements must be in the folder (or the image's).
    have = set(pins) | {e.name for e in entries}
    missing = {}
    for e in entries:
        if "build" in e.marks:
            wheel = next(to.glob(f"{e.name.replace('-', '_')}-*.whl"), None)
            for need in wheel_requires(wheel) if wheel else []:
                if need not in have and not IMAGE.match(need):
                    missing.setdefault(e.name, []).append(need)
    if missing:
        raise SystemExit(f"wheelhouse: add to {LIST.relative_to(ROOT)}: "
                         + "; ".join(f"{', '.join(v)} (dep of {k})" for k, v in missing.items()))
    requirements = sorted(f"{n}=={v}" for n, v in pins.items()) + build + ["distar"]
    (to / "requirements.txt").write_text("\n".join(requirements) + "\n")
    (to / "requirements-nodeps.txt").write_text("\n".join(nodeps) + "\n")
    (to / "SHA256SUMS").write_text(sha256sums(to))
    size = sum(f.stat().st_size for f in to.glob("*.whl"))
    print(f"wheelhouse: {len(list(to.glob('*.whl')))} wheels, {size / 1e6:.1f} MB in {to} "
          f"(Python {python}, {', '.join(platforms)}"
          f"{'' if with_torch else '; torch and its CUDA libraries: the GPU image' + chr(39) + 's'})")
    return {"pins": pins, "nodeps": nodeps, "build": build}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--to", type=Path, required=True, help="folder to fill (created)")
    ap.add_argument("--python", default=f"{sys.version_info.major}.{sys.version_info.minor}",
                    help="the GPU machine's Python, e.g. 3.12 (default: this one's)")
    ap.add_argument("--platform", action="append", default=None,
                    help=f"wheel platform tag, repeatable; a manylinux tag includes the older "
                         f"ones (default: {DEFAULT_PLATFORM})")
    ap.add_argument("--with-torch", action="store_true",
                    help="also torch, torchvision and their CUDA wheels (several GB)")
    a = ap.parse_args(argv)
    try:
        gather(a.to, a.python, a.platform or [DEFAULT_PLATFORM], a.with_torch)
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"wheelhouse: `{shlex.join(e.cmd)}` failed (exit {e.returncode}); "
                         f"its output is above. Is PyPI reachable from here?")


if __name__ == "__main__":
    main()
