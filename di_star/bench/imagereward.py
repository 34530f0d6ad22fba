"""ImageReward speed: evalsuite's batched port vs the reference package's `score`, same random
weights, same images and prompts. Offline: nothing is downloaded (random weights, a generated
BERT-sized vocab). The reference scores one prompt per call, one image per forward pass.

    .venv/bin/python -m di_star.bench.imagereward --config small --images 64
    .venv/bin/python -m di_star.bench.imagereward --config full --images 8     # BLIP ViT-L, 447M
    .venv/bin/python -m di_star.bench.imagereward --config full --images 256 --device cuda --dtype bf16

Prints images/s for: reference `score`, ours `score` (PIL path, batched), ours `score_tensor`
forward+backward (the trainer's reward), and the largest score difference between the first two.
"""
from __future__ import annotations

import argparse
import json
import string
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from distar.core.dtypes import dtype_name, to_dtype  # noqa: E402
import evalsuite  # noqa: E402,F401  (torchvision fix before anything imports torchvision)
from evalsuite.benchmarks import DATA  # noqa: E402
from evalsuite.metrics.blip import BlipRewardConfig  # noqa: E402
from di_star.bench.imagereward_ref import build_reference, randomize_  # noqa: E402
from evalsuite.metrics.imagereward import ImageReward, load_tokenizer  # noqa: E402

# ImageReward v1.0's med_config.json (BLIP's BERT-base with cross-attention).
MED_FULL = dict(architectures=["BertModel"], attention_probs_dropout_prob=0.1, hidden_act="gelu",
                hidden_dropout_prob=0.1, hidden_size=768, initializer_range=0.02,
                intermediate_size=3072, layer_norm_eps=1e-12, max_position_embeddings=512,
                model_type="bert", num_attention_heads=12, num_hidden_layers=12, pad_token_id=0,
                type_vocab_size=2, vocab_size=30524, encoder_width=768, add_cross_attention=True)
# The parity test's config: 2-layer text encoder, 2-block ViT of width 128 at patch 32.
MED_SMALL = dict(MED_FULL, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)
VIT_SMALL = dict(img_size=224, patch_size=32, embed_dim=128, depth=2, num_heads=2)
SIZES = [(512, 512), (768, 512), (512, 768), (1024, 1024)]  # typical generator outputs


def write_vocab(folder: Path, size: int = 30522) -> Path:
    """A BERT-layout WordPiece vocab of bert-base-uncased's size: the real special-token ids,
    characters, '##' pieces, the prompts' words, then filler tokens."""
    chars = string.ascii_lowercase + string.digits
    words = sorted({w.strip(string.punctuation).lower() for p in read_prompts(10_000) for w in p.split()})
    vocab = (["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
             + list(chars + string.punctuation) + ["##" + c for c in chars])
    vocab += [w for w in words if w and w not in set(vocab)][: size - len(vocab)]
    vocab += [f"filler{i}" for i in range(size - len(vocab))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return folder


def read_prompts(n: int) -> list[str]:
    path = DATA / "parti" / "PartiPrompts.tsv"
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines[::max(1, len(lines) // n)]][:n]


def make_images(n: int, seed: int = 0) -> list[Image.Image]:
    rs = np.random.RandomState(seed)
    images = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        field = Image.fromarray(rs.randint(0, 256, (8, 8, 3), dtype=np.uint8)).resize((w, h), Image.BILINEAR)
        images.append(field)
    return images


def timed(fn, device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def bench(config: str = "small", n_images: int = 64, n_prompts: int = 8, batch: int = 32,
          device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32,
          skip_reference: bool = False, ref_images: int | None = None) -> dict:
    """Build the reference with random weights and ours from its state dict; images/s of ours
    (`score`, all pairs), of the reference (`score` per prompt, the first `ref_images` pairs)
    and of ours' differentiable `score_tensor` forward + backward (one batch)."""
    # Build: the reference with random weights, then ours from the same state dict.
    tmp = Path(tempfile.mkdtemp(prefix="bench-imagereward-"))
    vocab_dir = write_vocab(tmp)
    med = MED_FULL if config == "full" else MED_SMALL
    (tmp / "med_config.json").write_text(json.dumps(med))
    start = time.perf_counter()
    reference = build_reference(str(tmp / "med_config.json"), str(vocab_dir),
                                vit=None if config == "full" else VIT_SMALL)
    randomize_(reference).to(device)
    reference.device = device
    state_dict = reference.state_dict()
    model_config = BlipRewardConfig.from_checkpoint(state_dict, med)
    ours = ImageReward(state_dict, model_config, load_tokenizer(vocab_dir),
                       device=device, dtype=dtype, batch_size=batch)
    build_s = time.perf_counter() - start

    prompt_list = read_prompts(n_prompts)
    images = make_images(n_images)
    prompts = [prompt_list[i % len(prompt_list)] for i in range(n_images)]
    n_ref = min(ref_images or n_images, n_images)

    def run_reference():
        scores = np.zeros(n_ref, np.float32)
        with torch.no_grad():
            for p in prompt_list:  # its API: one prompt, a list of images
                idx = [i for i in range(n_ref) if prompts[i] == p]
                if idx:
                    out = reference.score(p, [images[i] for i in idx])
                    scores[idx] = out if isinstance(out, list) else [out]
        return scores

    def run_tensor():
        x = torch.stack([torch.from_numpy(np.asarray(im.resize((512, 512)))).permute(2, 0, 1)
                         for im in images[:batch]]).float().div(255).to(device).requires_grad_()
        ours.score_tensor(x, prompts[:batch]).sum().backward()
        return x.shape[0]

    # Warm up on a few pairs (lazy init, allocator, kernels).
    ours.score(images[:2], prompts[:2])
    results = {"config": config, "device": str(device), "dtype": dtype_name(dtype, short=True),
               "threads": torch.get_num_threads(), "pairs": n_images, "batch": batch,
               "build_s": round(build_s, 2)}
    t_ours, s_ours = timed(lambda: ours.score(images, prompts), device)
    results["ours_score_img_per_s"] = round(n_images / t_ours, 3)
    if not skip_reference:
        reference.score(prompts[0], images[0])
        t_ref, s_ref = timed(run_reference, device)
        results["reference_pairs"] = n_ref
        results["reference_score_img_per_s"] = round(n_ref / t_ref, 3)
        results["speedup"] = round((n_images / t_ours) / (n_ref / t_ref), 2)
        results["max_abs_diff"] = float(np.abs(s_ours[:n_ref] - s_ref).max())
    t_grad, n_grad = timed(run_tensor, device)
    results["ours_score_tensor_fwd_bwd_img_per_s"] = round(n_grad / t_grad, 3)
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["small", "full"], default="small")
    parser.add_argument("--images", type=int, default=64, help="image-prompt pairs to score")
    parser.add_argument("--prompts", type=int, default=8, help="distinct prompts among them")
    parser.add_argument("--batch", type=int, default=32, help="our batch size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32",
                        help="ours only; the reference runs fp32")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = to_dtype(args.dtype)
    results = bench(args.config, args.images, args.prompts, args.batch, torch.device(args.device),
                    dtype, args.skip_reference)
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
