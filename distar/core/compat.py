"""Environment fixes, applied only where they are needed and never by importing torch early.

The only PyPI torchvision wheel here is a CUDA build. Imported on a CPU-only torch its C
extension fails to register `torchvision::nms`, and every package that imports torchvision
(open_clip, timm, clean-fid, diffusers, transformers image processors) breaks with
"operator torchvision::nms does not exist". Declaring the two missing operator schemas before
torchvision is first imported lets all those imports succeed (ops.nms itself stays unusable,
which nothing here needs). On a machine where torchvision matches torch this does nothing.

How it is applied: `install_torchvision_hook()` reads torch's and torchvision's version.py files
(without importing either) and, only for a CPU-only torch under a CUDA torchvision wheel, puts a
finder on sys.meta_path that declares the schemas when torchvision is first imported. It is
called on importing evalsuite or di_star, and, in the venv scripts/setup.sh builds, at every
interpreter start by a one-line `.pth` file (setup.sh copies this file into site-packages as
`distar_torchvision_shim.py`), so `import open_clip`, diffusers and `accelerate launch` work
without importing distar first. This module imports only the standard library at import time:
keep it so (the .pth runs it in every Python process of the venv).
"""
from __future__ import annotations

import importlib.util
import sys


def version_literal(package: str, name: str) -> str | None:
    """The right-hand side of `name = ...` (or `name: T = ...`) in package/version.py, read as
    text: importing the package is what may break, and nothing in the file is executed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = f"{list(spec.submodule_search_locations)[0]}/version.py"
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                head, eq, value = line.partition("=")
                if eq and head.split(":")[0].strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def shim_needed(torch_cuda: str | None, torchvision_version: str | None) -> bool:
    """True for a CPU-only torch (torch/version.py: `cuda = None`) under a CUDA torchvision wheel
    (a local version like '0.28.0+cu130'); False on GPU builds and when either is missing."""
    return torch_cuda == "None" and torchvision_version is not None and "+cu" in torchvision_version


class _DeclareOpsBeforeTorchvision:
    """A sys.meta_path finder that finds nothing: when `torchvision` is first looked up it
    removes itself and declares the missing operators, then lets the normal import proceed."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            try:
                sys.meta_path.remove(self)
                patch_torchvision_ops()
            except Exception:  # never break an import because of the fix
                pass
        return None


def install_torchvision_hook() -> bool:
    """Arrange for `patch_torchvision_ops` to run right before torchvision is first imported,
    only where it is needed (see the module docstring). Cheap, idempotent, never raises."""
    try:
        # By class name: the .pth copy of this module and the package's are different modules.
        if any(type(f).__name__ == "_DeclareOpsBeforeTorchvision" for f in sys.meta_path):
            return True
        if "torchvision" in sys.modules or not shim_needed(
                version_literal("torch", "cuda"), version_literal("torchvision", "__version__")):
            return False
        sys.meta_path.insert(0, _DeclareOpsBeforeTorchvision())
        return True
    except Exception:
        return False


def patch_torchvision_ops() -> bool:
    """Declare torchvision's nms schemas if a CUDA torchvision sits on a CPU-only torch."""
    if "torchvision" in sys.modules:
        return False
    import torch

    if not shim_needed(str(torch.version.cuda), version_literal("torchvision", "__version__")):
        return False
    if hasattr(torch.ops.torchvision, "nms"):
        return False
    global _LIB  # the Library object must outlive this call or the schemas are dropped
    _LIB = torch.library.Library("torchvision", "DEF")
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return True


_LIB = None


if __name__ == "__main__":  # scripts/setup.sh: exit 0 when this environment needs the fix
    sys.exit(0 if shim_needed(version_literal("torch", "cuda"),
                              version_literal("torchvision", "__version__")) else 1)
