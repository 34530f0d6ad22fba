"""distar evaluation suite: generate, score and compare text-to-image models."""
from distar.core.compat import install_torchvision_hook

install_torchvision_hook()  # CPU-only torch under a CUDA torchvision only; imports nothing
