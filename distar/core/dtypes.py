"""The one table of dtype names. Recipes and configs name dtypes as strings ('float16' in model
recipes, 'fp16'/'bf16' in metric and training options); every module turns them into torch
dtypes (and back) here."""
from __future__ import annotations

import torch

# name -> dtype; both spellings are accepted wherever a dtype is named.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
_LONG = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
_SHORT = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def to_dtype(name: "str | torch.dtype") -> torch.dtype:
    """A dtype from its name ('float16' or 'fp16', ...); a torch.dtype passes through."""
    if isinstance(name, torch.dtype):
        if name not in _LONG:
            raise ValueError(f"Unsupported dtype {name}; choose one of {sorted(DTYPES)}")
        return name
    if name not in DTYPES:
        raise ValueError(f"Unknown dtype {name!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: "torch.dtype | str", short: bool = False) -> str:
    """'float16' (or 'fp16' with short=True) for torch.float16 or either of its names."""
    dtype = to_dtype(dtype)
    return (_SHORT if short else _LONG)[dtype]
