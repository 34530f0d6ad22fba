"""Model recipes (specs), offline tiny builds and pipeline loading.

The public model-loading API, used by the harness, the trainer and the metrics alike:
`resolve_model`, `family_of`, `load_pipeline` (cached) / `fresh_pipeline`, `load_unet`,
`resolve_device` and `read_state_dict`. The loading functions import torch, so they are loaded
on first use (listing models stays instant).
"""
from evalsuite.models.specs import (MODEL_KINDS, MODELS, PIPELINE_FAMILIES, ComponentSource,
                                    ModelSpec, family_of, resolve_model)

_LOADING = ("load_pipeline", "fresh_pipeline", "load_unet", "resolve_device", "read_state_dict",
            "PIPELINE_LOADERS")


def __getattr__(name: str):
    if name in _LOADING:
        from evalsuite.models import loading
        return getattr(loading, name)
    raise AttributeError(f"module 'evalsuite.models' has no attribute {name!r}")


__all__ = ["MODELS", "MODEL_KINDS", "PIPELINE_FAMILIES", "ComponentSource", "ModelSpec",
           "family_of", "resolve_model", *_LOADING]
