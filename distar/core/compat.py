"""Environment fixes applied once, at package import, and only where they are needed.

The only PyPI torchvision wheel here is a CUDA build. Imported on a CPU-only torch its C
extension fails to register `torchvision::nms`, and every package that imports torchvision
(open_clip, timm, clean-fid, diffusers, transformers image processors) breaks with
"operator torchvision::nms does not exist". Declaring the two missing operator schemas before
torchvision is first imported lets all those imports succeed (ops.nms itself stays unusable,
which nothing here needs). On a machine where torchvision matches torch this does nothing.
"""
from __future__ import annotations

import importlib.util
import sys


def _torchvision_is_cuda_build() -> bool:
    """Read torchvision/version.py without importing torchvision (its import is what breaks).
    CUDA wheels carry a local version like '0.28.0+cu130'."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    path = f"{list(spec.submodule_search_locations)[0]}/version.py"
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:  # read the literal only; never exec the file
                if line.startswith("__version__"):
                    return "+cu" in line
    except OSError:
        pass
    return False


def patch_torchvision_ops() -> bool:
    """Declare torchvision's nms schemas if a CUDA torchvision sits on a CPU-only torch."""
    if "torchvision" in sys.modules:
        return False
    import torch

    if torch.version.cuda is not None or not _torchvision_is_cuda_build():
        return False
    if hasattr(torch.ops.torchvision, "nms"):
        return False
    global _LIB  # the Library object must outlive this call or the schemas are dropped
    _LIB = torch.library.Library("torchvision", "DEF")
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return True


_LIB = None
