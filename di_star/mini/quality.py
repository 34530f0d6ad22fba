"""Quality bars of a built mini world (issue 11): attribute accuracy, Frechet distance to ground
truth, gold judge and proxy reward of the reference (`mini_ref`) and the one-step init
(`mini_onestep`), plus a sample grid to look at.

    .venv/bin/python -m di_star.mini.quality [--world DIR] [--per-combo 4] [--captions 192]
        [--out runs/mini_quality]

- Single-object prompts: every colour x shape ("a red circle", 30 prompts) x per-combo seeds.
  Attribute accuracy by the world's attribute classifier: 'strict' = mini_attr_acc's checks
  (exactly one object detected, of the asked colour and shape); 'present' = some detected object has both
  (GenEval's colour task).
- FD: Frechet distance between classifier features (AttributeClassifier.features, the mini
  world's Inception) of generated images and ground-truth renders of the same prompts
  (`render_for_caption`), on held-out captions of the training distribution (mini_coco-like)
  and on the single-object prompts. Also 'FD GT vs GT' (two independent ground-truth draws) as
  the floor the numbers should be read against.
- VAE round trip: ground-truth renders encoded and decoded by the pipeline's VAE, scored by the
  gold judge and read by the classifier (the reference cannot draw better than its decoder).
- `--conditioning`: why the reference's shapes are soft, in OUT/conditioning.json: per attribute,
  how often the reference draws the asked colour / shape; the mini CLIP's zero-shot colour and
  shape accuracy on ground-truth renders (the text encoders' and the proxy's backbone); and how
  far apart the pipeline's text conditions are for prompts differing only in shape vs only in
  colour (cosine of the pooled embedding and of the shape token's hidden state).
- `--sampling CFG:STEPS ...`: the reference's single-object scores (strict / present, asked
  shape drawn per shape, FD single-object) under other sampling settings than its recipe, in
  OUT/sampling.json: does more guidance or more steps fix what training did not?
Noise: image k of prompt i from torch.Generator seed i + 100000 k, as the harness draws it.
Writes OUT/quality.json and OUT/grid.png (rows: prompts; columns: ground truth, 4 reference
samples, 4 one-step samples; `--models mini_ref`: the reference's only).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import evalsuite  # noqa: F401  (environment fixes before torch / diffusers)
import numpy as np
import torch
from PIL import Image

from distar.core.paths import portable_path
from di_star.mini.build import zero_shot
from di_star.mini.scene import single_object_prompts


def noise_for(spec, n_prompts: int, k: int) -> torch.Tensor:
    return torch.stack([torch.randn(spec.latent_shape(), generator=torch.Generator()
                                    .manual_seed(i + 100000 * kk))
                        for kk in range(k) for i in range(n_prompts)])


@torch.no_grad()
def generate(spec, pipe, prompts: list[str], latents: torch.Tensor, batch: int = 32) -> list:
    kw = {"timesteps": list(spec.timesteps)} if spec.timesteps else \
        {"num_inference_steps": spec.steps}
    out = []
    for i in range(0, len(prompts), batch):
        out += pipe(prompts[i:i + batch], latents=latents[i:i + batch], guidance_scale=spec.guidance,
                    height=spec.resolution, width=spec.resolution, **kw).images
    return out


def attribute_accuracy(scenes, prompts: list[str]) -> dict:
    """'strict': mini_attr_acc's checks (scene.request_checks; for 'a red circle': exactly one
    object, of the asked colour and shape); 'present': some object has the asked colour and shape."""
    from di_star.mini.scene import parse_caption, request_checks
    strict, present = [], []
    for sc, p in zip(scenes, prompts):
        req = parse_caption(p)
        g = req.groups[0]
        strict.append(all(request_checks(sc, req).values()))
        present.append(any(o.shape == g.shape and o.colour == g.colour for o in sc.objects))
    return {"strict": float(np.mean(strict)), "present": float(np.mean(present))}


def fd(feat_a: np.ndarray, feat_b: np.ndarray) -> float:
    from evalsuite.metrics.fid import feature_statistics, frechet_distance
    return float(frechet_distance(*feature_statistics(feat_a), *feature_statistics(feat_b)))


@torch.no_grad()
def vae_round_trip(root: Path, captions: list[str], clf) -> dict:
    from diffusers import AutoencoderKL

    from di_star.mini.classifier import detect
    from di_star.mini.gold import gold_score
    from di_star.mini.scene import render_for_caption
    vae = AutoencoderKL.from_pretrained(root / "pipeline", subfolder="vae",
                                        torch_dtype=torch.float32).eval()
    rng = np.random.default_rng(99)
    gt = [render_for_caption(p, rng) for p in captions]
    x = torch.from_numpy(np.stack([np.asarray(im) for im in gt])).permute(0, 3, 1, 2).float()
    x = x / 127.5 - 1
    r = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    arr = ((r + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    rec = [Image.fromarray(a) for a in arr]
    kinds = lambda sc: sorted((o.shape, o.colour) for o in sc.objects)  # noqa: E731
    agree = [kinds(a) == kinds(b) for a, b in zip(detect(clf, gt), detect(clf, rec))]
    return {"n": len(gt), "mse": float((r - x).pow(2).mean()),
            "gold_ground_truth": float(gold_score(gt, captions).mean()),
            "gold_reconstruction": float(gold_score(rec, captions).mean()),
            "classifier_objects_agree": float(np.mean(agree))}


def per_attribute(scenes, prompts: list[str]) -> dict:
    """How often some detected object has the asked colour / the asked shape (overall and per
    asked shape), and how often exactly one object is seen (single-object prompts)."""
    from di_star.mini.scene import SHAPES, parse_caption
    asked = [parse_caption(p).groups[0] for p in prompts]
    hit = np.array([any(o.shape == g.shape for o in sc.objects) for sc, g in zip(scenes, asked)])
    by_shape = {s: float(hit[[g.shape == s for g in asked]].mean()) for s in SHAPES
                if any(g.shape == s for g in asked)}
    return {"colour_present": float(np.mean([any(o.colour == g.colour for o in sc.objects)
                                             for sc, g in zip(scenes, asked)])),
            "shape_present": float(hit.mean()), "shape_present_by_shape": by_shape,
            "one_object": float(np.mean([len(sc.objects) == 1 for sc in scenes]))}


def pair_cosines(vectors: torch.Tensor, prompts: list[str]) -> dict:
    """Mean cosine between the rows of prompts that differ only in shape, and only in colour
    (single-object prompts)."""
    from di_star.mini.scene import parse_caption
    v = torch.nn.functional.normalize(vectors.float(), dim=-1)
    sim = (v @ v.T).numpy()
    g = [parse_caption(p).groups[0] for p in prompts]
    shape_only, colour_only = [], []
    for i in range(len(g)):
        for j in range(i + 1, len(g)):
            if g[i].colour == g[j].colour and g[i].shape != g[j].shape:
                shape_only.append(sim[i, j])
            elif g[i].shape == g[j].shape and g[i].colour != g[j].colour:
                colour_only.append(sim[i, j])
    return {"differ_in_shape_only": float(np.mean(shape_only)),
            "differ_in_colour_only": float(np.mean(colour_only))}


@torch.no_grad()
def conditioning_report(single: list[str], k: int, clf) -> dict:
    from di_star.mini.build import condition
    from evalsuite.metrics import load_metric
    from di_star.mini.classifier import detect
    from di_star.mini.scene import render_for_caption
    from evalsuite.models.loading import load_pipeline
    from di_star.mini import weights as mw
    from di_star.mini.plugin import mini_specs
    spec = mini_specs(mw.mini_dir())[0]
    pipe = load_pipeline(spec, torch.device("cpu"))
    prompts = single * k
    samples = generate(spec, pipe, prompts, noise_for(spec, len(single), k))
    cond = condition(pipe, single)
    ids = pipe.tokenizer(single, padding="max_length", max_length=77, return_tensors="pt").input_ids
    # '<bos> a red circle <eos> <pad>...' (pad = eos): the shape is the last word. CLIP's text
    # attention is causal, so only states from the shape token on can carry the shape.
    last = (ids != pipe.tokenizer.pad_token_id).sum(1) - 1
    shape_state = cond.embeds[torch.arange(len(single)), last]
    clip = load_metric("mini_clip", device="cpu")
    gt = [render_for_caption(p, np.random.default_rng([5, i])) for i, p in enumerate(prompts)]
    scores = np.stack([clip.score(gt, [q] * len(gt)) for q in single], 1)
    return {"prompts": len(single), "per_prompt": k,
            "reference_samples": per_attribute(detect(clf, samples), prompts),
            "ground_truth": per_attribute(detect(clf, gt), prompts),
            "mini_clip_zero_shot_on_ground_truth": zero_shot(scores, prompts, single),
            "text_condition_cosine": {"pooled": pair_cosines(cond.pooled, single),
                                      "shape_token_state": pair_cosines(shape_state, single)}}


@torch.no_grad()
def sampling_report(root: Path, single: list[str], k: int, clf, feats, gt_single: list,
                    settings: list[tuple[float, int]]) -> list[dict]:
    """The reference's single-object scores at each (CFG scale, steps) in `settings`."""
    from dataclasses import replace

    from di_star.mini.classifier import detect
    from evalsuite.models.loading import load_pipeline
    from di_star.mini.plugin import mini_specs
    spec0 = mini_specs(root)[0]
    pipe = load_pipeline(spec0, torch.device("cpu"))
    prompts, f_gt, rows = single * k, feats(gt_single), []
    for guidance, steps in settings:
        spec = replace(spec0, guidance=guidance, steps=steps)
        t0 = time.time()
        images = generate(spec, pipe, prompts, noise_for(spec, len(single), k))
        scenes = detect(clf, images)
        rows.append({"guidance": guidance, "steps": steps,
                     "recipe": (guidance, steps) == (spec0.guidance, spec0.steps),
                     "attr_acc_single_object": attribute_accuracy(scenes, prompts),
                     "shape_present_by_shape": per_attribute(scenes, prompts)["shape_present_by_shape"],
                     "fd_single_object": fd(feats(images), f_gt), "wall_s": round(time.time() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def sampling_setting(text: str) -> tuple[float, int]:
    try:
        g, st = text.split(":")
        return float(g), int(st)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not CFG:STEPS (e.g. 7:15)") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", default=None, help="built world folder (default: the shipped one)")
    ap.add_argument("--per-combo", type=int, default=4)
    ap.add_argument("--captions", type=int, default=192)
    ap.add_argument("--out", default="runs/mini_quality")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vae-only", action="store_true", help="only the VAE round trip")
    ap.add_argument("--conditioning", action="store_true", help="only the shape diagnostics "
                    "(OUT/conditioning.json)")
    ap.add_argument("--models", nargs="+", default=["mini_ref", "mini_onestep"],
                    choices=["mini_ref", "mini_onestep"],
                    help="which to score; a build whose later stages are unfinished can score its "
                         "reference alone (the proxy reward is then skipped when not built)")
    ap.add_argument("--sampling", nargs="+", type=sampling_setting, metavar="CFG:STEPS",
                    help="only the reference's single-object scores at these sampling settings "
                         "(OUT/sampling.json), e.g. 4:15 7:15 10:15 4:40")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.world:
        os.environ["DISTAR_MINI_DIR"] = str(Path(args.world).resolve())
    from evalsuite.metrics import load_metric
    from di_star.mini import weights as mw
    from di_star.mini.classifier import detect, load_attribute_classifier, to_tensor
    from di_star.mini.gold import gold_score
    from di_star.mini.scene import render_for_caption, training_pairs
    from evalsuite.models.loading import load_pipeline
    from di_star.mini.plugin import mini_specs

    root = mw.mini_dir()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clf = load_attribute_classifier(root / "classifier")
    # An unfinished build (`--models mini_ref`) may have no proxy reward yet.
    proxy = load_metric("mini_pickscore", device="cpu") if (root / "proxy_reward").is_dir() else None
    proxy_mean = (lambda images, texts: float(proxy.score(images, texts).mean())) if proxy else \
        (lambda images, texts: None)

    def feats(images) -> np.ndarray:
        with torch.no_grad():
            return clf.features(to_tensor(images)).numpy().astype(np.float64)

    single = single_object_prompts()
    k = args.per_combo
    if args.conditioning:
        report = {"world": portable_path(root), "manifest": mw.manifest_digest(root),
                  **conditioning_report(single, k, clf)}
        (out / "conditioning.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
        return
    single_all = single * k
    # held-out captions (seed 7: the build renders seeds 0 and 1)
    captions = [c for _, c in training_pairs(args.captions, 7)]
    rng = np.random.default_rng(1234)
    gt_single = [render_for_caption(p, rng) for p in single_all]
    if args.sampling:
        report = {"world": portable_path(root), "manifest": mw.manifest_digest(root), "per_combo": k,
                  "settings": sampling_report(root, single, k, clf, feats, gt_single, args.sampling)}
        (out / "sampling.json").write_text(json.dumps(report, indent=2))
        return
    gt_caps = [render_for_caption(p, rng) for p in captions]
    gt_caps2 = [render_for_caption(p, rng) for p in captions]
    report: dict = {"world": portable_path(root), "manifest": mw.manifest_digest(root),
                    "per_combo": k, "captions": len(captions),
                    "ground_truth": {
                        "attr_acc": attribute_accuracy(detect(clf, gt_single), single_all),
                        "gold": float(gold_score(gt_caps, captions).mean()),
                        "proxy": proxy_mean(gt_caps, captions),
                        "fd_captions_gt_vs_gt": fd(feats(gt_caps), feats(gt_caps2))}}
    report["vae_round_trip"] = vae_round_trip(root, captions[:64], clf)
    print("vae_round_trip", json.dumps(report["vae_round_trip"]), flush=True)
    if args.vae_only:
        (out / "quality.json").write_text(json.dumps(report, indent=2))
        return
    grids = {}
    for name in args.models:
        # the specs of --world, not of the world registered when evalsuite was imported
        spec = {s.name: s for s in mini_specs(root)}[name]
        pipe = load_pipeline(spec, torch.device("cpu"))
        t0 = time.time()
        imgs_single = generate(spec, pipe, single_all, noise_for(spec, len(single), k))
        imgs_caps = generate(spec, pipe, captions, noise_for(spec, len(captions), 1))
        wall = time.time() - t0
        report[name] = {
            "attr_acc_single_object": attribute_accuracy(detect(clf, imgs_single), single_all),
            "fd_captions": fd(feats(imgs_caps), feats(gt_caps)),
            "fd_single_object": fd(feats(imgs_single), feats(gt_single)),
            "gold_captions": float(gold_score(imgs_caps, captions).mean()),
            "proxy_captions": proxy_mean(imgs_caps, captions),
            "s_per_image": wall / (len(imgs_single) + len(imgs_caps))}
        grids[name] = imgs_single
        print(name, json.dumps(report[name]), flush=True)
    # Grid: 10 prompts (every third colour x shape), GT + 4 samples of each model, 2x upscaled.
    rows = list(range(0, len(single), 3))
    cols = min(4, k)
    tile = 64
    grid = Image.new("RGB", ((1 + len(grids) * cols) * tile + 4 * len(grids), len(rows) * tile),
                     (255, 255, 255))
    for r, i in enumerate(rows):
        grid.paste(gt_single[i], (0, r * tile))
        for m, images in enumerate(grids.values()):
            for c in range(cols):
                grid.paste(images[i + c * len(single)], ((1 + m * cols + c) * tile + 4 * (m + 1), r * tile))
    grid = grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST)
    grid.save(out / "grid.png")
    (out / "grid_prompts.txt").write_text("\n".join(single[i] for i in rows) + "\n")
    if len(grids) == 2:
        report["fd_ratio_onestep_over_ref"] = report["mini_onestep"]["fd_captions"] / \
            max(report["mini_ref"]["fd_captions"], 1e-9)
    (out / "quality.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
