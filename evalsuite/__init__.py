"""distar evaluation suite: generate, score and compare text-to-image models."""
from distar.core.compat import patch_torchvision_ops

patch_torchvision_ops()
