"""A results store holding sample images as an EvalRun, for tests that score images without
generating them (the metric runner, the scorers' dtypes)."""
from pathlib import Path

import pandas as pd

from di_star.bench import refs as rc
from evalsuite.generate import EvalRun
from evalsuite.store import ResultsStore


def image_run(root: Path, n: int, seed: int, recipe_hash: str, seed_offset: int = 0) -> EvalRun:
    """`n` sample images (rc.sample_images(n, seed)) with sample prompts, saved under `root` as
    model 'm' on 'parti' v1; image i has seed `seed_offset + i`."""
    store = ResultsStore(root)
    rows = []
    for i, (im, p) in enumerate(zip(rc.sample_images(n, seed=seed), rc.sample_prompts(n))):
        path = f"images/m/{i:05d}_0.png"
        (store.root / path).parent.mkdir(parents=True, exist_ok=True)
        im.save(store.root / path)
        rows.append(dict(prompt_index=i, k=0, prompt=p, seed=seed_offset + i, path=path))
    return EvalRun(store=store, model="m", recipe_hash=recipe_hash, bench="parti",
                   bench_version="1", images=pd.DataFrame(rows), device="cpu", run_id="r1")


def save_inception_standin(folder, layers) -> None:
    """A torchscript file laid out as clean-fid's inception-2015-12-05.pt (a `layers` module
    mapping normalised input to 2048 features), with `layers` standing in for the network."""
    import torch

    class Base(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = layers

        def forward(self, x):
            return self.layers(x)

    torch.jit.script(Base()).save(str(Path(folder) / "inception-2015-12-05.pt"))
