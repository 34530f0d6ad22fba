"""FSDP (sd.fsdp = true) in the SD trainer: two gloo processes on CPU shard the tiny_sdxl
generator and assistant with FSDP2 (di_star.sdxl.sharding), launched by `accelerate launch`
exactly as on GPUs. Checked: the sharded run follows the DDP run up to float reduction order,
a killed-and-resumed sharded run is bit-identical to an uninterrupted one, and its checkpoints
(full tensors) resume unsharded in one process."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from di_star.config import load_config
from di_star.presets import get_preset
from di_star.sdxl.world import SDWorld
from di_star.trainer import train

from sd_helpers import ckpt_tensors, launch_tiny_sdxl

PORT = "29561"


def _launch(out: Path, steps: int, fsdp_toml: Path | None):
    return launch_tiny_sdxl(out, steps, PORT, fsdp_toml)


def _rel(a: dict, b: dict, prefix: str) -> float:
    """|a - b| / |a| over every floating tensor whose key starts with prefix."""
    keys = [k for k in a if k.startswith(prefix) and a[k].is_floating_point()]
    num = sum(((a[k].double() - b[k].double()) ** 2).sum() for k in keys)
    den = sum((a[k].double() ** 2).sum() for k in keys)
    return float((num / den).sqrt())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    toml = root / "fsdp.toml"
    toml.write_text("[sd]\nfsdp = true\n")
    _launch(root / "ddp2", 2, None)
    _launch(root / "fsdp2", 2, toml)
    shutil.copytree(root / "fsdp2", root / "fsdp2to3")
    _launch(root / "fsdp2to3", 3, toml)   # resumes at step 2
    _launch(root / "fsdp3", 3, toml)      # uninterrupted
    return root


def test_sharded_run_follows_the_ddp_run(runs):
    ddp, fsdp = ckpt_tensors(runs / "ddp2"), ckpt_tensors(runs / "fsdp2")
    assert json.loads((runs / "fsdp2" / "ckpt-0000002" / "state.json").read_text())["fsdp"] is True
    assert json.loads((runs / "ddp2" / "ckpt-0000002" / "state.json").read_text())["fsdp"] is False
    # The same files, keys and full shapes: a sharded checkpoint is an ordinary one.
    assert ddp.keys() == fsdp.keys()
    assert all(ddp[k].shape == fsdp[k].shape and ddp[k].dtype == fsdp[k].dtype for k in ddp)
    # FSDP reduce-scatters where DDP all-reduces, so sums are ordered differently: the runs agree
    # to float rounding, amplified a little by Adam on near-zero gradients (measured: 1e-5 to 2e-4).
    # A wrong gradient average (sum instead of mean) or a shard restored to the wrong rank
    # gives differences of order 1.
    for prefix in ("generator/", "assistant/", "ema/", "optimizers/opt_g", "optimizers/opt_psi"):
        assert _rel(ddp, fsdp, prefix) < 2e-3, prefix
    # The generator moved away from its initialisation far more than the two runs differ
    # (measured 38x). At tiny_sdxl's init the generator, reference and assistant are one network,
    # so many gradients are near zero and Adam turns their rounding noise into full-size
    # steps: this ratio, not 1e-7, is what agreement looks like here. An unsynchronised or
    # misplaced gradient shard would make the runs differ about as much as they moved.
    init = {f"generator/{k}": v for k, v in SDWorld(get_preset("tiny_sdxl")).build().generator.state_dict().items()}
    moved = _rel({k: fsdp[k] for k in init}, init, "generator/")
    assert moved > 10 * _rel(ddp, fsdp, "generator/")


def test_killed_and_resumed_sharded_run_is_bit_identical(runs):
    resumed, straight = ckpt_tensors(runs / "fsdp2to3"), ckpt_tensors(runs / "fsdp3")
    assert resumed.keys() == straight.keys()
    assert [k for k in straight if not torch.equal(resumed[k], straight[k])] == []
    steps = [json.loads(ln)["step"] for ln in (runs / "fsdp2to3" / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_sharded_checkpoint_resumes_unsharded_in_one_process(runs, tmp_path):
    """Full-tensor checkpoints: the 2-process FSDP run continues in one process (no sharding)."""
    torch.set_num_threads(1)
    run = tmp_path / "run"
    shutil.copytree(runs / "fsdp2", run)
    cfg = load_config(run / "config.json").replace(run={"max_steps": 3})
    result = train(cfg, run, progress=False)
    assert result.step == 3
    state = json.loads((run / "ckpt-0000003" / "state.json").read_text())
    assert state["world_size"] == 1 and state["fsdp"] is False
    before, after = ckpt_tensors(runs / "fsdp2"), ckpt_tensors(run)
    assert not torch.equal(before["generator/unet.conv_out.weight"], after["generator/unet.conv_out.weight"])


def test_bf16_sharded_generator_with_a_data_parallel_lora_assistant(tmp_path):
    """The mixed layout: under bf16 the generator is sharded (bf16 gathers, fp32 master weights)
    while a LoRA assistant stays data-parallel; the quick-eval hook gathers the generator."""
    toml = tmp_path / "mixed.toml"
    toml.write_text('[sd]\nfsdp = true\nmixed_precision = "bf16"\nassistant_lora_rank = 4\neval_every = 2\n')
    r = _launch(tmp_path / "run", 2, toml)
    assert r.stdout.count("tiny_sdxl: step 2") == 1  # only the main process prints
    ck = ckpt_tensors(tmp_path / "run")
    assert all(v.dtype == torch.float32 for k, v in ck.items() if k.startswith(("generator/", "assistant/")))
    assert {k for k in ck if k.startswith("assistant/")} and all("lora" in k for k in ck if k.startswith("assistant/"))
    assert json.loads((tmp_path / "run" / "eval_scores.jsonl").read_text().splitlines()[0])["step"] == 2
    assert (tmp_path / "run" / "export" / "model_index.json").is_file()
