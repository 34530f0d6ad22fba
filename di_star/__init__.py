"""Diff-Instruct* (DI*): score-based post-training of one-step text-to-image generators."""
from distar.core.compat import patch_torchvision_ops

patch_torchvision_ops()

from di_star.plugins import register as _register_plugins  # noqa: E402  (after the shim)

_register_plugins()
