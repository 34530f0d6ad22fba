"""Helpers shared by the SD trainer tests."""
import json
from pathlib import Path

import torch
from safetensors.torch import load_file


def ckpt_tensors(run: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a run's newest checkpoint, keyed 'file-stem/tensor-name'."""
    name = json.loads((run / "latest.json").read_text())["name"]
    out = {}
    for f in sorted((run / name).glob("*.safetensors")):
        out.update({f"{f.stem}/{k}": v for k, v in load_file(str(f)).items()})
    return out
