"""Research probes of the mini world's build, kept runnable (`python -m di_star.mini.probes.NAME`)
because docs/mini_build.md reports what they measured: `clip` (does the mini CLIP learn
shape), `vision` (can its vision tower see shape), `reference` (is the text encoder what keeps
the reference from drawing the asked shape), `classifier` (the attribute classifier's recipe),
`world_speed` (render speed and the gold judge's calibration), `oracle_ascent` (why the
oracle reward is not climbed by DI*: docs/training.md)."""
