"""Diff-Instruct* (DI*): score-based post-training of one-step text-to-image generators."""
from distar.core.compat import install_torchvision_hook

install_torchvision_hook()  # CPU-only torch under a CUDA torchvision only; imports nothing

from di_star.plugins import register as _register_plugins  # noqa: E402  (after the shim)

_register_plugins()
