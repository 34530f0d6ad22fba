"""FSDP for the SD trainer (`sd.fsdp = true`): the two trained UNets are sharded with PyTorch's
FSDP2 (`fully_shard`, per-parameter DTensor sharding), one unit per transformer / ResNet block
plus the root; the frozen networks (reference, VAE, text encoders, reward) stay replicated.

Why DI* shards its networks itself instead of through accelerate's FSDP plugin: the plugin wraps
every prepared model under one policy and expects one model per optimizer step, while DI*
alternates two optimizers and, in the generator step, runs the assistant with its parameters
frozen so that gradients flow through its inputs only. FSDP2 handles that toggle
(requires_grad per DTensor parameter), and applying it here keeps one code path that also runs
on CPU (gloo), where the tests check it; accelerate enables its FSDP only on GPUs. Processes are
still started by `accelerate launch` (configs/accelerate/fsdp_1node_8gpu.yaml).

Checkpoints stay full (unsharded) tensors, in the same files as under DDP: a run can resume on
another number of GPUs, or under DDP, and `distar eval` never sees a shard. Only the main
process keeps the gathered tensors; `gather_full` is collective (every process calls it).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

# The units FSDP gathers one at a time: each holds a few % of an SDXL UNet's parameters.
SHARD_UNITS = ("BasicTransformerBlock", "ResnetBlock2D")


def is_sharded(t: Tensor) -> bool:
    from torch.distributed.tensor import DTensor
    return isinstance(t, DTensor)


def shard_unet_module(module: nn.Module, device_type: str, param_dtype: torch.dtype | None) -> nn.Module:
    """fully_shard each block of `module` (a UNet, or a wrapper holding one), then the root, in
    place over all processes. `param_dtype`: the dtype parameters are gathered and computed in
    (bf16 under mixed precision; master weights, gradients and the reduction stay fp32)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) \
        if param_dtype not in (None, torch.float32) else MixedPrecisionPolicy()
    for sub in module.modules():
        if type(sub).__name__ in SHARD_UNITS:
            fully_shard(sub, mesh=mesh, mp_policy=policy)
    fully_shard(module, mesh=mesh, mp_policy=policy)
    return module


def gather_full(state: dict[str, Tensor], keep: bool) -> dict[str, Tensor]:
    """Full CPU copies of a state dict's tensors, gathering shards (collective: every process
    calls it, in the same key order). Processes with keep=False get {} (they only send)."""
    out = {}
    for k, v in state.items():
        if is_sharded(v):
            v = v.full_tensor()
        if keep:
            out[k] = v.detach().to("cpu", copy=True)
    return out


def local_part(full: Tensor, like: Tensor) -> Tensor:
    """This process's part of a full tensor, shaped and placed like `like` (a shard, or a plain
    tensor that is returned whole). FSDP2 shards dim 0 in torch.chunk pieces over a 1-D mesh."""
    if not is_sharded(like):
        return full.to(like.device, like.dtype)
    from torch.distributed.tensor import DTensor, Shard

    if tuple(full.shape) != tuple(like.shape):
        raise ValueError(f"checkpoint tensor has shape {tuple(full.shape)}, the model's is {tuple(like.shape)}")
    if like.placements != (Shard(0),):
        raise ValueError(f"unsupported placement {like.placements}: only Shard(0) (FSDP2's) is restored")
    mesh = like.device_mesh
    chunks = full.chunk(mesh.size(), dim=0)
    rank = mesh.get_local_rank()
    local = chunks[rank] if rank < len(chunks) else full[:0]
    return DTensor.from_local(local.to(like.device, like.dtype).contiguous(), mesh, like.placements,
                              run_check=False, shape=like.shape, stride=like.stride())


def full_optimizer_state(opt: torch.optim.Optimizer, keep: bool) -> dict:
    """opt.state_dict() with every sharded moment gathered (collective); {} where keep=False."""
    sd = opt.state_dict()
    state = {idx: gather_full(st, keep) for idx, st in sorted(sd["state"].items())}
    return {"state": state, "param_groups": sd["param_groups"]} if keep else {}
