"""Test-only: reference packages made importable offline, and small random-weight builds of the
real architectures, for the parity tests and di_star/bench/metrics.py (which puts tests/ on its
path), plus the pieces of reference recipes both of them run (PickScore's model card, a stand-in
feature extractor for FID). Nothing in evalsuite imports this module.

The one compatibility fix: hpsv2 1.2.0's wheel lacks `hpsv2/src/open_clip/bpe_simple_vocab_16e6.txt.gz`,
and its tokenizer module reads that file at import (`_tokenizer = SimpleTokenizer()`), so
`import hpsv2.img_score` fails. open_clip ships the same file (the OpenAI CLIP BPE merges; the
tokenizer tests compare ids). While hpsv2's tokenizer module is first imported, `gzip.open` of the
missing path is redirected to open_clip's copy; nothing is written into site-packages and
gzip.open is restored right after.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import os
from pathlib import Path

import torch
import torchvision.transforms as transforms
from PIL import Image

# A few-layer ViT CLIP with the real vocabulary and context length: the same classes and code
# paths as ViT-H-14 / ViT-g-14 / ViT-L-14, built in well under a second.
TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_OPEN_CLIP_NAME = "distar-tiny-ViT"
# The same, shaped like OpenAI's ViT-L/14 where it matters to the aesthetic head: QuickGELU,
# 64-wide attention heads, and a 768-d embedding (the MLP's input). Matches `tiny_openai_clip`.
TINY_OPENAI_CLIP = {
    "embed_dim": 768, "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}
TINY_OPENAI_CLIP_NAME = "distar-tiny-ViT-openai"


def _open_clip_bpe() -> str:
    import open_clip
    return os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")


@contextlib.contextmanager
def _redirect_missing_hpsv2_bpe():
    real_open = gzip.open
    suffix = os.path.join("hpsv2", "src", "open_clip", "bpe_simple_vocab_16e6.txt.gz")

    def patched(filename, *args, **kwargs):
        if str(filename).endswith(suffix) and not os.path.exists(filename):
            filename = _open_clip_bpe()
        return real_open(filename, *args, **kwargs)

    gzip.open = patched
    try:
        yield
    finally:
        gzip.open = real_open


def import_hpsv2():
    """(hpsv2.src.open_clip, hpsv2.img_score, hpsv2.evaluation), importable offline."""
    import evalsuite  # noqa: F401  (torchvision fix before hpsv2 pulls torchvision in)
    with _redirect_missing_hpsv2_bpe():
        import hpsv2.evaluation as evaluation
        import hpsv2.img_score as img_score
        import hpsv2.src.open_clip as hps_open_clip
    return hps_open_clip, img_score, evaluation


def register_open_clip_config(name: str = TINY_OPEN_CLIP_NAME, cfg: dict | None = None,
                              also_hpsv2: bool = False) -> str:
    """Make `name` a model config in open_clip (and in hpsv2's bundled copy)."""
    import open_clip

    from distar.core.paths import cache_dir
    d = cache_dir() / "open_clip_configs"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.json"
    text = json.dumps(cfg or TINY_OPEN_CLIP, sort_keys=True)
    if not path.is_file() or path.read_text() != text:
        tmp = d / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(text)
        os.replace(tmp, path)
    if name not in open_clip.list_models():
        open_clip.add_model_config(path)
    if also_hpsv2:
        hps_open_clip, _, _ = import_hpsv2()
        if name not in hps_open_clip.list_models():
            hps_open_clip.add_model_config(path)
    return name


def perturb_(module: torch.nn.Module, seed: int, scale: float = 0.02) -> torch.nn.Module:
    """Add seeded noise to every parameter, so LayerNorm gains, zero biases and other constant
    initialisations do not hide a mistake that only shows with trained (non-trivial) weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dtype.is_floating_point:
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


def hpsv2_reference_model(model_name: str = TINY_OPEN_CLIP_NAME, seed: int = 0):
    """hpsv2's own model object and preprocess_val, built exactly as hpsv2.img_score
    .initialize_model builds them except `pretrained=None` (no download) and the model name."""
    hps_open_clip, _, _ = import_hpsv2()
    if model_name == TINY_OPEN_CLIP_NAME:
        register_open_clip_config(also_hpsv2=True)
    torch.manual_seed(seed)
    model, _, preprocess_val = hps_open_clip.create_model_and_transforms(
        model_name, None, precision="amp", device="cpu", jit=False, force_quick_gelu=False,
        force_custom_text=False, force_patch_dropout=False, force_image_size=None,
        pretrained_image=False, image_mean=None, image_std=None, light_augmentation=True,
        aug_cfg={}, output_dict=True, with_score_predictor=False, with_region_predictor=False)
    perturb_(model, seed)
    return model.eval(), preprocess_val


def tiny_openai_clip(seed: int = 0, embed_dim: int = 768):
    """A few-layer model of OpenAI's `clip` package (the aesthetic predictor's backbone class),
    with the real vocabulary and an embedding as wide as ViT-L/14's (768, the MLP's input)."""
    import clip.model
    torch.manual_seed(seed)
    model = clip.model.CLIP(embed_dim=embed_dim, image_resolution=224, vision_layers=2,
                            vision_width=64, vision_patch_size=32, context_length=77,
                            vocab_size=49408, transformer_width=64, transformer_heads=1,
                            transformer_layers=2)
    return perturb_(model.float(), seed).eval()


def tiny_hf_clip(seed: int = 0, eos_token_id: int = 49407):
    """A few-layer transformers CLIPModel with the real vocabulary (PickScore's class)."""
    from transformers import CLIPConfig, CLIPModel
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        projection_dim=32,
        text_config=dict(vocab_size=49408, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                         hidden_act="gelu", bos_token_id=49406, eos_token_id=eos_token_id,
                         pad_token_id=49407),
        vision_config=dict(image_size=224, patch_size=32, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=2, hidden_act="gelu"))
    return perturb_(CLIPModel(cfg), seed).eval()


def clip_processor(tokenizer_dir: str | None = None, backend: str = "pil"):
    """A CLIPProcessor as laion/CLIP-ViT-H-14-laion2B-s32B-b79K configures it (shortest edge
    224, bicubic, centre crop 224, OpenAI mean/std), with a tokenizer built offline."""
    from transformers import CLIPImageProcessor, CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from evalsuite.models.tokenizer import build_clip_tokenizer
    image_processor = CLIPImageProcessorPil() if backend == "pil" else CLIPImageProcessor()
    return CLIPProcessor(image_processor=image_processor,
                         tokenizer=build_clip_tokenizer(directory=tokenizer_dir))


def save_tiny_open_clip_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    """Write a state dict the way HPS checkpoints are laid out ({'state_dict': ...})."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict()}, path)
    return path


SAMPLE_SIZES = [(512, 512), (640, 427), (427, 640), (300, 200), (97, 131), (1024, 768),
                (224, 224), (250, 1000), (225, 224), (64, 64)]  # (width, height)
SAMPLE_PROMPTS = [
    "a photo of a cat sitting on a red sofa",
    "An astronaut riding a horse on the moon, highly detailed, 8k, trending on artstation",
    "",
    "Ein Fuchs im Schnee – café, naïve, 東京の夜景",
    "a painting of " + ", ".join(f"object number {i}" for i in range(40)),  # > 77 tokens
    "minimalist logo of a coffee shop",
    "two dogs playing chess in a park",
    "a bowl of ramen, studio lighting",
]


def sample_images(n: int = 10, seed: int = 0, modes: bool = True) -> list:
    """n PIL images of several sizes and aspect ratios, built from scikit-learn's two bundled
    photographs (real image statistics) plus seeded noise; with modes=True one is greyscale."""
    import numpy as np
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w, h = SAMPLE_SIZES[i % len(SAMPLE_SIZES)]
        photo = photos[i % len(photos)]
        pw, ph = photo.size
        cw, ch = int(rng.integers(pw // 3, pw)), int(rng.integers(ph // 3, ph))
        x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
        arr = np.asarray(photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BILINEAR),
                         dtype=np.float32)
        arr = np.clip(arr + rng.normal(0, 12, arr.shape), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        out.append(img.convert("L") if modes and i % 5 == 3 else img)
    return out


def sample_prompts(n: int) -> list[str]:
    return [SAMPLE_PROMPTS[i % len(SAMPLE_PROMPTS)] for i in range(n)]


def pickscore_card_scores(prompt, images, processor, model, device="cpu"):
    """PickScore_v1's model card `calc_probs`, transcribed, stopping before the softmax:
    (cosines, logit_scale.exp() * cosines) of `images` against one `prompt`, as numpy. One
    change for transformers 5: get_*_features return an output object whose pooler_output holds
    the projected embedding (transformers 4 returned that tensor directly)."""
    image_inputs = processor(images=images, padding=True, truncation=True, max_length=77,
                             return_tensors="pt").to(device)
    text_inputs = processor(text=prompt, padding=True, truncation=True, max_length=77,
                            return_tensors="pt").to(device)
    with torch.no_grad():
        image_embs = model.get_image_features(**image_inputs).pooler_output
        image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
        text_embs = model.get_text_features(**text_inputs).pooler_output
        text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
        cos = (text_embs @ image_embs.T)[0]
        scores = model.logit_scale.exp() * cos
    return cos.cpu().numpy(), scores.cpu().numpy()


class TinyExtractor(torch.nn.Module):
    """A stand-in for Inception in FID tests: [N, 3, 299, 299] in [0, 255] -> [N, 6]; counts
    the images it sees."""

    name = "tiny-test-extractor-v1"

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 9, stride=8), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(32, 6))
        self.seen = 0

    @torch.no_grad()
    def forward(self, x):
        self.seen += len(x)
        return 50.0 * self.net(x / 255.0)  # FID of order 1


def score_tensor_gaps(metric, images, prompts=None) -> list[float]:
    """|score_tensor - score| per image: the differentiable path on each image alone (a float
    tensor at its own size) against the PIL path on the batch, asserting on the way that every
    image's gradient reaches its pixels."""
    import torchvision.transforms.functional as TF
    prompts = list(prompts) if prompts is not None else [""] * len(images)
    pil = metric.score(images, prompts)
    gaps = []
    for im, p, s in zip(images, prompts, pil):
        x = TF.to_tensor(im.convert("RGB"))[None].requires_grad_(True)
        t = metric.score_tensor(x, [p])
        t.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        gaps.append(abs(t.item() - s))
    return gaps


# DMD2's compute_clip_score (tianweiy/DMD2 main/coco_eval/coco_evaluator.py) is not a package:
# its loop, transcribed, returning the per-image cosines it averages.
class CenterCropLongEdge(object):
    def __call__(self, img):
        return transforms.functional.center_crop(img, min(img.size))


def dmd2_tokens(txts):
    import clip as openai_clip
    tokens = openai_clip.tokenize(txts, truncate=True)
    prepend_text = "A photo depicts "
    prepend_text_token = openai_clip.tokenize(prepend_text)[:, 1:4]
    prepend_text_tokens = prepend_text_token.expand(tokens.shape[0], -1)
    start_tokens = tokens[:, :1]
    new_text_tokens = torch.cat(
        [start_tokens, prepend_text_tokens, tokens[:, 1:]], dim=1)[:, :77]
    last_cols = new_text_tokens[:, 77 - 1:77]
    last_cols[last_cols > 0] = 49407  # eot token
    return torch.cat([new_text_tokens[:, :76], last_cols], dim=1)


@torch.no_grad()
def dmd2_cosines(images, captions, clip, clip_preprocessor):
    """compute_clip_score's loop (one batch), returning cos_sims instead of their mean."""
    def resize_and_center_crop(image_np, resize_size=256):
        image_pil = Image.fromarray(image_np)
        image_pil = CenterCropLongEdge()(image_pil)
        if resize_size is not None:
            image_pil = image_pil.resize((resize_size, resize_size), Image.LANCZOS)
        return image_pil

    imgs = torch.stack([clip_preprocessor(resize_and_center_crop(im)) for im in images])
    new_text_tokens = dmd2_tokens(captions).to(imgs.device)  # DMD2 runs on the model's device
    img_embs = clip.encode_image(imgs)
    text_embs = clip.encode_text(new_text_tokens)
    return torch.nn.functional.cosine_similarity(img_embs, text_embs, dim=1).cpu().numpy()
