"""The toy lab: worlds small enough to run the paper's ablation on 2 CPU cores in minutes.

`gmm`: class-conditional 2-D Gaussian mixtures with closed-form diffused scores (no reference
training, exact CFG). `digits`: sklearn's 8x8 digits with a small reference diffusion trained
once and cached. Both implement `di_star.world.World` and register themselves in `WORLDS`.
"""
