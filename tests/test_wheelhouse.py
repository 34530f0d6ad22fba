"""The offline wheelhouse: constraints/gpu_wheels.txt covers every third-party import of the code
a GPU machine runs (a new import without a wheel fails here), and scripts/wheelhouse.py asks pip
for the right things (a fake pip: nothing is downloaded)."""
import ast
import importlib.metadata as md
import importlib.util
import json
import re
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("wheelhouse", ROOT / "scripts" / "wheelhouse.py")
wh = importlib.util.module_from_spec(spec)
sys.modules["wheelhouse"] = wh  # dataclasses look their module up there
spec.loader.exec_module(wh)

# What the GPU machine runs: the packages and the scripts (gpu_suite and the benchmarks it
# imports), and every module of tests/ that those import (the reference scorers' adapters),
# followed transitively.
CODE = ([p for d in ("distar", "evalsuite", "di_star") for p in (ROOT / d).rglob("*.py")]
        + list((ROOT / "scripts").glob("*.py")))
TESTS = {p.stem: p for p in (ROOT / "tests").glob("*.py")}
LOCAL = {p.stem for p in (ROOT / "scripts").glob("*.py")} | set(TESTS) \
    | {"distar", "evalsuite", "di_star", "__future__"}
# Imports that need no wheel on the GPU machine, with the reason.
NO_WHEEL = {"tomli": "imported only on Python < 3.11 (di_star/config.py)"}
# Import names whose distribution is not installed in this CPU venv (GPU only).
NOT_HERE = {"bitsandbytes": "bitsandbytes"}


def imported_modules() -> dict[str, set[str]]:
    """{top-level module: files}, from import statements and importlib.import_module('...'),
    in CODE and the tests/ modules it imports."""
    found: dict[str, set[str]] = {}
    todo, seen = list(CODE), set(CODE)
    while todo:
        path = todo.pop()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                names = [node.args[0].value]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in TESTS and TESTS[top] not in seen:
                    seen.add(TESTS[top])
                    todo.append(TESTS[top])
                if top not in sys.stdlib_module_names and top not in LOCAL:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_has_a_wheel():
    listed = {e.name for e in wh.read_list()}
    dists = md.packages_distributions()
    missing = []
    for module, files in sorted(imported_modules().items()):
        if module in NO_WHEEL:
            continue
        names = dists.get(module) or ([NOT_HERE[module]] if module in NOT_HERE else [])
        assert names, f"{module} (imported by {sorted(files)[0]}) maps to no distribution"
        if not {wh.normalise(n) for n in names} & listed:
            missing.append(f"{module} ({'/'.join(names)}, imported by {sorted(files)[0]})")
    assert not missing, f"add to constraints/gpu_wheels.txt: {missing}"


def test_every_wheel_is_needed_and_pyproject_is_covered():
    entries = wh.read_list()
    listed = {e.name for e in entries}
    dists = md.packages_distributions()
    imported = {wh.normalise(d) for m in imported_modules()
                for d in dists.get(m) or [NOT_HERE.get(m, m)]}
    for e in entries:
        owners = [m.split()[2] for m in e.marks if m.startswith("dep of ")]
        why = e.name in imported or any(m.startswith("runtime:") for m in e.marks) or (
            owners and all(wh.normalise(o) in listed for o in owners))
        assert why, f"{e.requirement}: not imported; mark it 'dep of X' or 'runtime: ...'"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    deps = {wh.normalise(re.split(r"[<>=!~; \[]", d, maxsplit=1)[0]) for d in deps}
    assert deps <= listed, sorted(deps - listed)


def test_source_only_and_clashing_packages_are_marked():
    marks = {e.name: e.marks for e in wh.read_list()}
    for name in ("fairscale", "clint", "openai-clip"):
        assert "build" in marks[name], name
    for name in ("hpsv2", "image-reward"):
        assert "no-deps" in marks[name], name
    assert "image" in marks["torch"] and "image" in marks["torchvision"]


def _fake_wheel(folder: Path, name: str, version: str, requires: list[str]) -> None:
    stem = f"{name.replace('-', '_')}-{version}"
    with zipfile.ZipFile(folder / f"{stem}-py3-none-any.whl", "w") as z:
        meta = "".join(f"Requires-Dist: {r}\n" for r in requires)
        z.writestr(f"{stem}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\n"
                   f"Version: {version}\n{meta}")


class FakePip:
    """Records pip's command lines; answers the dry-run report and builds fake wheels."""

    def __init__(self, closure, built):
        self.closure, self.built, self.calls = closure, built, []

    def __call__(self, cmd):
        self.calls.append(cmd)
        args = cmd[3:]
        if args[0] == "install":
            report = Path(args[args.index("--report") + 1])
            report.write_text(json.dumps({"install": [
                {"metadata": {"name": n, "version": v}} for n, v in self.closure.items()]}))
        elif args[0] == "wheel":
            out = Path(args[args.index("-w") + 1])
            for name, requires in self.built.items():
                _fake_wheel(out, name, "1.0", requires)


ENTRIES = [wh.Entry("torch", "torch", frozenset({"image"})),
           wh.Entry("numpy==2.4.6", "numpy", frozenset()),
           wh.Entry("hpsv2==1.2.0", "hpsv2", frozenset({"no-deps"})),
           wh.Entry("clint==0.5.1", "clint", frozenset({"build", "dep of hpsv2"})),
           wh.Entry("args==0.1.0", "args", frozenset({"dep of clint"}))]


def test_gather_leaves_the_image_out_and_builds_source_only(monkeypatch, tmp_path):
    pip = FakePip({"torch": "2.11.0", "nvidia-cublas-cu12": "12.8", "numpy": "2.4.6", "args": "0.1.0"},
                  {"clint": ["args"]})
    monkeypatch.setattr(wh, "run", pip)
    out = wh.gather(tmp_path, "3.12", ["manylinux_2_28_x86_64"], pip=["py", "-m", "pip"],
                    entries=ENTRIES)
    resolve, download, build = pip.calls
    assert resolve[3:5] == ["install", "--dry-run"] and "torch" not in resolve[-1]
    for flag in ("--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "cp312"):
        assert flag in resolve and flag in download
    assert "--no-deps" in download and "hpsv2==1.2.0" in download
    assert not [a for a in download if a.startswith(("torch", "nvidia"))]
    assert "clint==0.5.1" in build and "--no-deps" in build and str(wh.ROOT) in build
    assert out["pins"] == {"numpy": "2.4.6", "args": "0.1.0"}
    reqs = (tmp_path / "requirements.txt").read_text().split()
    assert reqs == ["args==0.1.0", "numpy==2.4.6", "clint==0.5.1", "distar"]
    assert (tmp_path / "requirements-nodeps.txt").read_text().split() == ["hpsv2==1.2.0"]
    assert "clint-1.0-py3-none-any.whl" in (tmp_path / "SHA256SUMS").read_text()


def test_gather_names_a_built_wheels_missing_requirement(monkeypatch, tmp_path):
    pip = FakePip({"numpy": "2.4.6"}, {"clint": ["args", "colorama"]})
    monkeypatch.setattr(wh, "run", pip)
    with pytest.raises(SystemExit, match="colorama \\(dep of clint\\)"):
        wh.gather(tmp_path, "3.12", ["manylinux_2_28_x86_64"], pip=["py", "-m", "pip"],
                  entries=ENTRIES)


def test_a_manylinux_tag_takes_the_older_ones_too():
    tags = wh.expand_platform("manylinux_2_28_x86_64")
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_24_x86_64" in tags
    assert "manylinux2014_x86_64" in tags and "manylinux1_x86_64" in tags
    assert "manylinux_2_31_x86_64" not in tags
    assert "manylinux_2_12_x86_64" in wh.expand_platform("manylinux2014_x86_64")
    assert wh.expand_platform("macosx_11_0_arm64") == ["macosx_11_0_arm64"]
