"""Metric speed: evalsuite's batched scorers vs each reference's public scoring path, with the
same random weights (built locally, nothing downloaded), the same images and the same prompts.

    .venv/bin/python -m di_star.bench.metrics --arch tiny --images 32
    .venv/bin/python -m di_star.bench.metrics --arch full --images 8 --metrics hpsv2,aesthetic
    .venv/bin/python -m di_star.bench.metrics --arch full --images 256 --device cuda   # batch 32

References (one call each, as their users call them):
- hpsv2 / hpsv21: `hpsv2.img_score.score(images_of_one_prompt, prompt, cp=checkpoint,
  hps_version=...)` per prompt; it reloads the checkpoint (saved in fp16, as the released
  HPS_v2_compressed.pt / HPS_v2.1_compressed.pt) on every call and runs one image per forward
  pass. Its model cache is pre-filled so nothing is downloaded.
- pickscore: the model card's `calc_probs(prompt, images)` per prompt.
- aesthetic: improved-aesthetic-predictor's simple_inference.py per image (OpenAI `clip` model).
- clip: DMD2's compute_clip_score loop, which already batches (64).
- fid: clean-fid `compute_fid(folder, folder, custom_feat_extractor=...)`, with a random-weight
  torchvision InceptionV3 (same architecture and cost as the torchscript one) for both.
Each timing follows one warm-up call; `--ref-images N` times the reference paths on the first N
images only (hpsv2's costs a checkpoint load per image). Prints a table and, with --out, JSON.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import evalsuite  # noqa: F401  (torchvision fix before anything imports torchvision)
from di_star.bench import refs as rc

SIZES = [(512, 512), (768, 512), (512, 768), (1024, 1024)]  # typical generator outputs
FULL = {"hpsv2": "ViT-H-14", "hpsv21": "ViT-H-14", "clip": "ViT-g-14", "aesthetic": "ViT-L/14 (OpenAI)",
        "pickscore": "ViT-H-14 (transformers)", "fid": "InceptionV3"}


def bench_images(n: int, seed: int = 0) -> list[Image.Image]:
    base = rc.sample_images(n, seed=seed, modes=False)
    return [im.resize(SIZES[i % len(SIZES)], Image.BICUBIC) for i, im in enumerate(base)]


def timed(fn, warmup) -> tuple[float, object]:
    warmup()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t, out


# One function per metric: returns (ours, ref, ours_warmup, ref_warmup); ours and ref take
# (images, prompts), ref is only ever given a prefix of the images (see bench_metric).
def setup_hpsv2(arch, images, prompts, device, batch, tmp, version="v2.0"):
    from evalsuite.metrics.hps import HPSv20, HPSv21
    cls = HPSv21 if version == "v2.1" else HPSv20
    name = "ViT-H-14" if arch == "full" else rc.TINY_OPEN_CLIP_NAME
    ref_model, preprocess_val = rc.hpsv2_reference_model(name, seed=0)
    cp = tmp / cls.filename
    torch.save({"state_dict": {k: v.half() if v.is_floating_point() else v
                               for k, v in ref_model.state_dict().items()}}, cp)
    ref_model.to(device)
    _, img_score, _ = rc.import_hpsv2()
    img_score.model_dict.update(model=ref_model, preprocess_val=preprocess_val)
    img_score.device = str(device)
    ours = cls.from_pretrained(weights_path=str(cp), arch=name, device=str(device),
                               batch_size=batch)

    def ref(ims, ps):
        return np.array([img_score.score([im], p, cp=str(cp), hps_version=version)[0]
                         for im, p in zip(ims, ps)])
    return ours.score, ref, None, None


def setup_hpsv21(arch, images, prompts, device, batch, tmp):
    return setup_hpsv2(arch, images, prompts, device, batch, tmp, version="v2.1")


def setup_pickscore(arch, images, prompts, device, batch, tmp):
    from transformers import CLIPConfig, CLIPModel

    from evalsuite.metrics.pickscore import PickScore
    if arch == "full":  # laion/CLIP-ViT-H-14-laion2B-s32B-b79K's transformers config
        torch.manual_seed(0)
        model = CLIPModel(CLIPConfig(
            projection_dim=1024,
            text_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                             num_attention_heads=16, max_position_embeddings=77,
                             vocab_size=49408, hidden_act="gelu"),
            vision_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                               num_attention_heads=16, patch_size=14, image_size=224,
                               hidden_act="gelu"))).eval()
    else:
        model = rc.tiny_hf_clip(seed=0)
    processor = rc.clip_processor(str(tmp / "bpe"), backend="pil")
    model.to(device)
    ours = PickScore(model, processor.image_processor, processor.tokenizer,
                     device=str(device), batch_size=batch)

    def card(ims, ps):  # the model card's calc_probs up to the scores, one image per call
        return np.concatenate([rc.pickscore_card_scores(p, [im], processor, model, device)[0]
                               for im, p in zip(ims, ps)])

    return ours.score, card, None, None


def setup_aesthetic(arch, images, prompts, device, batch, tmp):
    import clip.clip
    import clip.model

    from evalsuite.metrics.aesthetic import AestheticMLP, AestheticScore
    from evalsuite.metrics.aesthetic import build_open_clip  # the aesthetic metric's own builder
    if arch == "full":  # OpenAI ViT-L/14
        torch.manual_seed(0)
        ref_clip = clip.model.CLIP(768, 224, 24, 1024, 14, 77, 49408, 768, 12, 12).eval()
        name = "ViT-L-14"
    else:
        ref_clip = rc.tiny_openai_clip(seed=0)
        name = rc.register_open_clip_config(rc.TINY_OPENAI_CLIP_NAME, rc.TINY_OPENAI_CLIP)
    torch.manual_seed(1)
    mlp = AestheticMLP(768).eval()
    ours = AestheticScore(
        build_open_clip(name, ref_clip.state_dict(), quick_gelu=True), mlp, device=str(device),
        batch_size=batch)
    ref_clip.to(device)
    mlp_ref = AestheticMLP(768).eval().to(device)
    mlp_ref.load_state_dict(mlp.state_dict())
    preprocess = clip.clip._transform(224)

    def one(im):  # simple_inference.py
        image = preprocess(im).unsqueeze(0).to(device)
        with torch.no_grad():
            f = ref_clip.encode_image(image).cpu().numpy()
            l2 = np.atleast_1d(np.linalg.norm(f, 2, -1))
            l2[l2 == 0] = 1
            return mlp_ref(torch.from_numpy(f / l2[:, None]).to(device).float()).item()

    return (lambda ims, ps: ours.score(ims), lambda ims, ps: np.array([one(im) for im in ims]),
            None, None)


def setup_clip(arch, images, prompts, device, batch, tmp):
    import open_clip

    from evalsuite.metrics.clip_score import ClipScore
    name = "ViT-g-14" if arch == "full" else rc.register_open_clip_config()
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    model = model.eval().to(device)
    ours = ClipScore(model, open_clip.get_tokenizer(name), name, device=str(device),
                     batch_size=batch)
    from di_star.bench.refs import dmd2_cosines  # the transcribed DMD2 loop
    arrays = [np.array(im.convert("RGB")) for im in images]

    def ref(ims, ps):  # DMD2 holds its images as uint8 arrays already (converted above, untimed)
        return np.concatenate([dmd2_cosines(arrays[i:min(i + 64, len(ims))], ps[i:i + 64], model,
                                            lambda im: preprocess(im).to(device))
                               for i in range(0, len(ims), 64)]) * 100
    return ours.score, ref, None, None


def setup_fid(arch, images, prompts, device, batch, tmp):
    import torchvision
    from cleanfid import fid as cfid

    from evalsuite.metrics.fid import FID, list_images

    class Inception(torch.nn.Module):
        name = "random InceptionV3 (torchvision)"

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torchvision.models.inception_v3(weights=None, aux_logits=False,
                                                       init_weights=False)
            self.net.fc = torch.nn.Identity()
            self.net.eval().to(device)

        @torch.no_grad()
        def forward(self, x):
            return self.net((x - 128) / 128)

    ext = Inception() if arch == "full" else _tiny_extractor(device)
    gen, ref_dir = tmp / "gen", tmp / "ref"
    for d, seed in ((gen, 0), (ref_dir, 1)):
        d.mkdir(exist_ok=True)
        for i, im in enumerate(bench_images(len(images), seed)):
            im.save(d / f"{i:04d}.png")
    workers = 2
    ours = FID.from_pretrained(reference_dir=str(ref_dir), extractor=ext, device=str(device), batch_size=batch,
                               num_workers=workers, cache_dir=str(tmp / "cache"), protocol="clean")
    files = list_images(gen)

    def ref(ims, ps):  # whole folders: clean-fid's unit of work
        return cfid.compute_fid(str(gen), str(ref_dir), mode="clean", custom_feat_extractor=ext,
                                num_workers=workers, batch_size=batch, device=device,
                                verbose=False, use_dataparallel=False)
    def ref_warmup():  # the extractor's first call (allocator, kernels) is not timed
        cfid.get_files_features(files[:2], ext, num_workers=0, batch_size=batch, device=device,
                                mode="clean", verbose=False)
    # clean-fid reads and resizes both folders on every call; ours reads the reference folder
    # once (at set-up, untimed) and caches its statistics, as a second run would.
    return lambda ims, ps: ours.compute(files), ref, lambda: ours.features(files[:2]), ref_warmup


def _tiny_extractor(device):
    class Tiny(torch.nn.Module):
        name = "tiny conv"

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 9, stride=8), torch.nn.ReLU(),
                                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

        @torch.no_grad()
        def forward(self, x):
            return self.net(x / 255)
    return Tiny().to(device)


SETUPS = {"hpsv2": setup_hpsv2, "hpsv21": setup_hpsv21, "pickscore": setup_pickscore,
          "aesthetic": setup_aesthetic, "clip": setup_clip, "fid": setup_fid}
SET_METRICS = ("fid",)  # scored over whole folders: the reference times all images


def bench_metric(name: str, arch: str, images, prompts, device: torch.device, batch: int,
                 ref_images: int | None = None) -> dict:
    """images/s of ours (all `images`) and of the reference's public path (the first
    `ref_images` of them: some reference paths cost seconds per image), each after one warm-up
    call, CUDA-synchronised; and the largest score difference on the images both scored."""
    n = len(images)
    n_ref = n if name in SET_METRICS or not ref_images else min(ref_images, n)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ours, ref, ours_warm, ref_warm = SETUPS[name](arch, images, prompts, device, batch, Path(tmp))
        setup_s = time.perf_counter() - t0
        t_ours, v_ours = timed(lambda: ours(images, prompts),
                               ours_warm or (lambda: ours(images[:2], prompts[:2])))
        t_ref, v_ref = timed(lambda: ref(images[:n_ref], prompts[:n_ref]),
                             ref_warm or (lambda: ref(images[:1], prompts[:1])))
    v_ours, v_ref = np.atleast_1d(np.asarray(v_ours)), np.atleast_1d(np.asarray(v_ref))
    diff = float(np.max(np.abs(v_ours[:len(v_ref)] - v_ref)))
    import gc
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return dict(metric=name, arch=FULL[name] if arch == "full" else "tiny", device=str(device),
                batch=batch, images=n, ref_images=n_ref, setup_s=round(setup_s, 1),
                ours_img_s=n / t_ours, ref_img_s=n_ref / t_ref,
                speedup=(n / t_ours) / (n_ref / t_ref), max_abs_diff=diff,
                threads=torch.get_num_threads())


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--metrics", default="hpsv2,hpsv21,pickscore,aesthetic,clip,fid")
    ap.add_argument("--arch", choices=["tiny", "full"], default="full",
                    help="full: the real architectures (random weights); tiny: few-layer ones")
    ap.add_argument("--images", type=int, default=None, help="default 128 on GPU, 16 on CPU")
    ap.add_argument("--batch-size", type=int, default=None, help="default 32 on GPU, 8 on CPU")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--ref-images", type=int, default=None,
                    help="time the reference on the first N images only (default: all)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    gpu = device.type == "cuda"
    n = args.images or (128 if gpu else 16)
    batch = args.batch_size or (32 if gpu else 8)
    images, prompts = bench_images(n), rc.sample_prompts(n)
    results = []
    for name in [m.strip() for m in args.metrics.split(",") if m.strip()]:
        row = bench_metric(name, args.arch, images, prompts, device, batch, args.ref_images)
        results.append(row)
        print(f"{name:10s} {row['arch']:24s} {row['device']:5s} b={batch:<3d} n={n:<4d} "
              f"ours {row['ours_img_s']:8.2f} img/s  ref {row['ref_img_s']:8.2f} img/s "
              f"(n={row['ref_images']})  x{row['speedup']:.2f}  max|diff| {row['max_abs_diff']:.2e}",
              flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
