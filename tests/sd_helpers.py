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


REPO = Path(__file__).resolve().parents[1]


def launch_tiny_sdxl(out: Path, steps: int, port: str, config: Path | None = None):
    """`distar train --preset tiny_sdxl` as 2 gloo processes under `accelerate launch`, as on
    GPUs; fails the test with the processes' stderr if the run fails."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT=port)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_cpu_threads_per_process", "1", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", port, "-m", "distar", "train",
           "--preset", "tiny_sdxl", "--max-steps", str(steps), "--out", str(out)]
    if config is not None:
        cmd += ["--config", str(config)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r
