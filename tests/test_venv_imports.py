"""The venv scripts/setup.sh builds: ordinary imports of torchvision users work without importing
distar first (PyPI's torchvision is a CUDA build; on CPU torch it needs two operator schemas
declared before it loads), and the fix is applied only where it is needed, lazily."""
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from distar.core import compat

PYTHON = sys.executable  # the venv's interpreter (CI runs setup.sh, then pytest from .venv)
SITE = Path(sysconfig.get_paths()["purelib"])
NEEDED = compat.shim_needed(compat.version_literal("torch", "cuda"),
                             compat.version_literal("torchvision", "__version__"))


def _run(args, cwd, timeout=1500):  # generous: a loaded CI machine imports slowly
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_shim_is_needed_only_for_cpu_torch_under_a_cuda_torchvision(monkeypatch):
    assert compat.shim_needed("None", "'0.28.0+cu130'")
    assert not compat.shim_needed("'13.0'", "'0.28.0+cu130'")  # a GPU build: never applied
    assert not compat.shim_needed("None", "'0.28.0+cpu'")      # a matching CPU torchvision
    assert not compat.shim_needed("None", None)                # no torchvision
    # On a GPU build the hook installs nothing (and imports nothing).
    monkeypatch.setattr(compat, "version_literal",
                        lambda pkg, name: "'13.0'" if pkg == "torch" else "'0.28.0+cu130'")
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path
                                           if type(f).__name__ != "_DeclareOpsBeforeTorchvision"])
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    assert compat.install_torchvision_hook() is False
    assert not any(type(f).__name__ == "_DeclareOpsBeforeTorchvision" for f in sys.meta_path)


def test_pth_is_installed_where_needed_and_imports_nothing_at_start(tmp_path):
    pth = SITE / "distar_torchvision_shim.pth"
    assert pth.is_file() == NEEDED, "run scripts/setup.sh"
    r = _run([PYTHON, "-c", "import sys; print('torch' in sys.modules, "
                            "'torchvision' in sys.modules)"], tmp_path)
    assert r.returncode == 0 and r.stdout.split() == ["False", "False"], r.stderr
    if NEEDED:  # fail-safe: with the shim module not findable, the .pth line does nothing
        r = _run([PYTHON, "-I", "-S", "-c", pth.read_text()], tmp_path)
        assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.slow
def test_ordinary_imports_work_without_distar(tmp_path):
    """A fresh interpreter in the venv, outside the repo, distar never imported."""
    r = _run([PYTHON, "-c", "import open_clip; from diffusers import StableDiffusionPipeline; "
                            "import sys; assert 'evalsuite' not in sys.modules"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    if NEEDED:  # without site-packages' .pth files it fails: the fix is what makes it work
        r = _run([PYTHON, "-S", "-c", f"import sys; sys.path.append({str(SITE)!r}); "
                                      f"import torchvision"], tmp_path)
        assert r.returncode != 0 and "torchvision::nms" in r.stderr


@pytest.mark.slow
def test_accelerate_launch_runs_a_script_importing_torchvision(tmp_path):
    script = tmp_path / "user_script.py"
    script.write_text("import torchvision\nprint('imported', torchvision.__version__)\n")
    accelerate = Path(PYTHON).parent / "accelerate"
    r = _run([str(accelerate), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", str(script)], tmp_path)
    assert r.returncode == 0 and "imported" in r.stdout, r.stderr[-2000:]
