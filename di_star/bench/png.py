"""PNG encoding cost of the harness's writer (evalsuite.generate.png_bytes) against PIL's own
PNG encoder at its fastest level, on a photo (sklearn's sample image, resized to 1024^2 as
SDXL's outputs are) and on a 64^2 image (tiny_sdxl's size). Both are lossless; the script
checks that every file decodes to the same pixels.

    .venv/bin/python -m di_star.bench.png
"""
from __future__ import annotations

import io
import time

import evalsuite  # noqa: F401  (torchvision patch first)
import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_image

from evalsuite.generate import png_bytes


def pil_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def timed(encode, image: Image.Image, reps: int) -> tuple[float, int]:
    data = encode(image)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(image))
    t0 = time.perf_counter()
    for _ in range(reps):
        encode(image)
    return 1000 * (time.perf_counter() - t0) / reps, len(data)


def main() -> None:
    photo = Image.fromarray(load_sample_image("china.jpg"))
    images = {"1024^2 photo": (photo.resize((1024, 1024), Image.BICUBIC), 10),
              "64^2 photo": (photo.resize((64, 64), Image.BICUBIC), 500)}
    print(f"{'image':14s} {'encoder':8s} {'ms':>8s} {'KB':>8s}")
    for name, (image, reps) in images.items():
        for label, encode in (("distar", png_bytes), ("PIL", pil_png)):
            ms, size = timed(encode, image, reps)
            print(f"{name:14s} {label:8s} {ms:8.3f} {size / 1e3:8.1f}")


if __name__ == "__main__":
    main()
