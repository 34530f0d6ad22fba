"""Diff-Instruct* (DI*): score-based post-training of one-step text-to-image generators."""
from evalsuite._compat import patch_torchvision_ops

patch_torchvision_ops()
