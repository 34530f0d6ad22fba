"""Model recipes (specs), offline tiny builds and pipeline loading."""
from evalsuite.models.specs import MODELS, ComponentSource, ModelSpec, resolve_model

__all__ = ["MODELS", "ComponentSource", "ModelSpec", "resolve_model"]
