"""ImageReward: our batched port against the reference package (image-reward 1.5, run through
di_star/bench/imagereward_ref.py), on a small random-weight build of the real architecture.

The reference model is the package's own `ImageReward` class and its BLIP classes; only its ViT
(built by `create_vit`, which hard-codes ViT-L) is swapped for the package's VisionTransformer at
a small depth/width, and its tokenizer (`init_tokenizer`, which downloads bert-base-uncased) for a
BertTokenizer on a vocab written here. The same tokenizer and state dict go into ours.
"""
from __future__ import annotations

import json
import string
import time
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from distar.core.errors import DistarError, WeightsMissingError
from evalsuite.metrics import load_metric
from evalsuite.metrics.preprocess import OPENAI_CLIP_STD as CLIP_STD
from evalsuite.metrics.preprocess import clip_pil as preprocess_pil
from evalsuite.metrics.blip import BlipRewardConfig
from evalsuite.metrics.imagereward import ImageReward, load_tokenizer, preprocess_tensor
from evalsuite.models.loading import read_state_dict

WORDS = ("a an the of in on at with and cat dog red blue photo painting city night sky tree "
         "man woman house car astronaut riding horse").split()
# Small text encoder; hidden_size stays 768 because the reference MLP head is MLP(768).
MED = dict(hidden_size=768, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
           max_position_embeddings=40, layer_norm_eps=1e-12, hidden_act="gelu", pad_token_id=0,
           add_cross_attention=True, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
           type_vocab_size=2, initializer_range=0.02, model_type="bert")
VIT = dict(img_size=224, patch_size=32, embed_dim=128, depth=2, num_heads=2)  # 64-dim heads, as BLIP
PROMPTS = [
    "A Photo of a RED dog, at night!",
    "zebra xylophone quux",                                   # unknown words: WordPiece pieces
    " ".join(["astronaut riding a horse in the city"] * 6),   # > 35 tokens: truncated
]


def _image(rs: np.random.RandomState, w: int, h: int, mode: str = "RGB") -> Image.Image:
    """Smooth colour field plus pixel noise: edges for bicubic to ring on, like a photo."""
    field = Image.fromarray(rs.randint(0, 256, (8, 8, 3), dtype=np.uint8)).resize((w, h), Image.BILINEAR)
    noisy = np.asarray(field).astype(int) + rs.randint(-20, 21, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).convert(mode)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rs = np.random.RandomState(0)
    sizes = [(224, 224, "RGB"), (300, 200, "RGB"), (200, 300, "L"), (150, 100, "RGBA"),
             (512, 384, "RGB")]
    return [_image(rs, w, h, mode) for w, h, mode in sizes]


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    """A WordPiece vocab: BERT's special tokens, characters, '##' continuations, some words."""
    chars = string.ascii_lowercase + string.digits
    vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(chars + string.punctuation)
             + ["##" + c for c in chars] + WORDS)
    folder = tmp_path_factory.mktemp("bert-vocab")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return folder


@pytest.fixture(scope="module")
def reference(vocab_dir, tmp_path_factory):
    """The package's ImageReward at the small config, every weight random and O(1)."""
    from di_star.bench.imagereward_ref import build_reference, randomize_

    med = dict(MED, vocab_size=len(load_tokenizer(vocab_dir)))
    med_file = tmp_path_factory.mktemp("med") / "med_config.json"
    med_file.write_text(json.dumps(med))
    model = build_reference(str(med_file), str(vocab_dir), vit=VIT)
    return randomize_(model, seed=0), med


@pytest.fixture(scope="module")
def ours(reference, vocab_dir):
    model, med = reference
    config = BlipRewardConfig(image_size=VIT["img_size"], patch_size=VIT["patch_size"],
                              vision_width=VIT["embed_dim"], vision_depth=VIT["depth"],
                              vision_heads=VIT["num_heads"]).with_med_config(med)
    return ImageReward(model.state_dict(), config, load_tokenizer(vocab_dir),
                       batch_size=4)


def _pairs(images):
    """Every (image, prompt) pair, prompt-major, as two flat lists."""
    return images * len(PROMPTS), [p for p in PROMPTS for _ in images]


def test_matches_reference_package(reference, ours, images):
    model, _ = reference
    assert len(model.blip.tokenizer(PROMPTS[2]).input_ids) > 35  # truncation is exercised
    # Reference: its public path, one prompt per call, images one by one.
    expected = np.array([model.score(prompt, images) for prompt in PROMPTS])
    # Ours: all 15 pairs in one call, batches of 4 that mix prompts and image sizes.
    got = ours.score(*_pairs(images)).reshape(len(PROMPTS), len(images))
    assert got.dtype == np.float32 and np.isfinite(got).all()
    assert np.abs(got - expected).max() < 1e-4, np.abs(got - expected).max()
    assert abs(model.score(PROMPTS[1], images[4]) - got[1, 4]) < 1e-4  # single-image path too
    print(f"ImageReward parity: max |ours - reference| = {np.abs(got - expected).max():.2e}")
    # The comparison has teeth: scores move with the image and with the prompt.
    assert expected.std(axis=1).min() > 0.02 and expected.std(axis=0).min() > 0.02


def test_score_independent_of_batch_composition(ours, images):
    all_images, all_prompts = _pairs(images)
    mixed = ours.score(all_images, all_prompts)  # batches padded to the 35-token prompt
    alone = np.array([ours.score([im], [p])[0] for im, p in zip(all_images, all_prompts)])
    order = np.random.RandomState(1).permutation(len(all_images))
    shuffled = ours.score([all_images[i] for i in order], [all_prompts[i] for i in order])
    np.testing.assert_allclose(alone, mixed, atol=1e-5, rtol=0)
    np.testing.assert_allclose(shuffled, mixed[order], atol=1e-5, rtol=0)
    # Padding to 35 tokens vs no padding at all, through the model directly.
    ids, mask = ours.tokenize(PROMPTS[:1])
    pixels = preprocess_pil(images[0])[None]
    with torch.no_grad():
        n = int(mask.sum())
        full, trimmed = ours.model(pixels, ids, mask), ours.model(pixels, ids[:, :n], mask[:, :n])
    assert ids.shape[1] == 35 and n < 35
    assert torch.allclose(full, trimmed, atol=1e-6)


def _as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def test_differentiable_path_close_to_pil_path(ours, images):
    """The tensor path resizes in float with torch's antialiased bicubic; PIL resizes 8-bit
    images with fixed-point weights, clamps the bicubic overshoot and rounds to uint8. So:
    images already at 224 px score identically; resized ones differ by about a third of a grey
    level on average (at most ~5 levels at sharp edges) and the score by a few 1e-3 here
    (random weights; scores spread by ~0.1 across images)."""
    prompts = [PROMPTS[0]] * len(images)
    pil_scores = ours.score(images, prompts)
    std = torch.tensor(CLIP_STD)[:, None, None]
    for i, image in enumerate(images):
        x = _as_tensor(image)[None]
        pixel_diff = ((preprocess_tensor(x)[0] - preprocess_pil(image)) * std).abs()
        score = ours.score_tensor(x, prompts[i:i + 1])
        if image.size == (224, 224):
            assert pixel_diff.max() < 1e-6 and abs(score.item() - pil_scores[i]) < 1e-4
        else:
            assert pixel_diff.mean() < 1 / 255 and pixel_diff.max() < 8 / 255, image.size
            assert abs(score.item() - pil_scores[i]) < 5e-3, (image.size, score.item(), pil_scores[i])
    # Batched, and gradients reach the pixels.
    x = _as_tensor(images[1])
    x = torch.stack([x, x.flip(-1)]).requires_grad_()
    with pytest.raises(ValueError, match="3, H, W"):
        ours.score_tensor(x[:, :1], PROMPTS[:2])
    rewards = ours.score_tensor(x, PROMPTS[:2])
    assert rewards.shape == (2,) and rewards.dtype == torch.float32
    rewards.sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad.abs().sum(dim=(1, 2, 3)) > 0).all()
    assert all(not p.requires_grad for p in ours.model.parameters())


def test_loads_checkpoint_files_like_the_real_one(reference, ours, images, vocab_dir, tmp_path):
    """ImageReward.pt is the reference module's plain state dict (with its unused contrastive
    heads and position_ids buffer); read with weights_only=True, in both torch formats."""
    model, med = reference
    (tmp_path / "med_config.json").write_text(json.dumps(med))
    state_dict = model.state_dict()
    assert any(k.startswith("blip.vision_proj.") for k in state_dict)
    expected = ours.score(images[:3], PROMPTS[:3])
    for zipfile in (True, False):
        torch.save(state_dict, tmp_path / "ImageReward.pt", _use_new_zipfile_serialization=zipfile)
        metric = load_metric("imagereward", weights_path=str(tmp_path), tokenizer_path=str(vocab_dir))
        assert metric.config == ours.config
        np.testing.assert_array_equal(metric.score(images[:3], PROMPTS[:3]), expected)
    assert metric.info.name == "imagereward" and metric.info.version == "ImageReward-v1.0"
    assert "fp32" in metric.info.key

    # Any pickled object that is not a tensor (here a Fraction) is refused, not executed.
    torch.save({"blip.visual_encoder.cls_token": torch.zeros(1), "x": Fraction(1, 3)},
               tmp_path / "pickled.pt")
    with pytest.raises(DistarError, match="refusing"):
        read_state_dict(tmp_path / "pickled.pt")
    truncated = {k: v for k, v in state_dict.items() if "blocks.1." not in k}
    with pytest.raises(DistarError, match="lacks"):
        ImageReward(truncated, ours.config, ours.tokenizer)


def test_missing_weights_offline(monkeypatch, tmp_path, vocab_dir):
    import huggingface_hub.constants

    from evalsuite import hub

    monkeypatch.delenv("DISTAR_IMAGEREWARD_PATH", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    hub.hub_reachable.cache_clear()
    start = time.monotonic()
    with pytest.raises(WeightsMissingError) as err:
        ImageReward.from_pretrained(tokenizer_path=str(vocab_dir))
    assert time.monotonic() - start < 10  # no hub retries
    message = str(err.value)
    for needed in ("ImageReward-v1.0", "ImageReward.pt", "weights_path=", "DISTAR_IMAGEREWARD_PATH"):
        assert needed in message, (needed, message)
    # A local copy that is not there, or lacks its med_config.json.
    with pytest.raises(WeightsMissingError, match="nowhere"):
        ImageReward.from_pretrained(weights_path=str(tmp_path / "nowhere"))
    torch.save({}, tmp_path / "ImageReward.pt")
    monkeypatch.setenv("DISTAR_IMAGEREWARD_PATH", str(tmp_path / "ImageReward.pt"))
    with pytest.raises(WeightsMissingError, match="med_config.json"):
        ImageReward.from_pretrained()
    # The real tokenizer is not in the (empty) cache: say so instead of mapping words to [UNK].
    with pytest.raises(WeightsMissingError, match="tokenizer_path="):
        load_tokenizer("bert-base-uncased")


def test_prompt_count_must_match(ours, images):
    with pytest.raises(ValueError, match="one prompt per image"):
        ours.score(images[:2], PROMPTS[:1])
    with pytest.raises(ValueError, match="one prompt per image"):
        ours.score(images[:1], "a cat")
    assert ours.score([], []).shape == (0,)


def test_half_precision_path(reference, ours, images):
    """bf16 (for GPUs; runs on CPU too): the head stays fp32, scores move by bf16 rounding only,
    and the results-store key changes with the dtype."""
    model, _ = reference
    half = ImageReward({k: v.clone() for k, v in model.state_dict().items()},
                       ours.config, ours.tokenizer, dtype=torch.bfloat16)
    assert half.model.mlp.layers[0].weight.dtype == torch.float32
    assert half.model.blip.visual_encoder.pos_embed.dtype == torch.bfloat16
    full, low = ours.score(images[:3], PROMPTS[:3]), half.score(images[:3], PROMPTS[:3])
    assert low.dtype == np.float32
    print(f"ImageReward bf16 vs fp32: max |diff| = {np.abs(low - full).max():.2e}")
    assert np.abs(low - full).max() < 0.1
    assert half.info.key != ours.info.key


def test_options_and_provenance_like_every_metric(reference, ours, images, vocab_dir, tmp_path,
                                                  monkeypatch):
    """device='auto', dtype as a name, the weight file's full sha256 in provenance (written to
    every score's meta_json by the runner), and a strict load: an unknown tensor or one that
    from_checkpoint needs is an error naming it."""
    import hashlib

    model, med = reference
    (tmp_path / "med_config.json").write_text(json.dumps(med))
    torch.save(model.state_dict(), tmp_path / "ImageReward.pt")
    metric = load_metric("imagereward", weights_path=str(tmp_path), tokenizer_path=str(vocab_dir),
                         device="auto", dtype="fp32")
    assert metric.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert metric.dtype == torch.float32
    prov = metric.provenance["weights"]
    assert prov["sha256"] == hashlib.sha256((tmp_path / "ImageReward.pt").read_bytes()).hexdigest()
    assert prov["file"] == str(tmp_path / "ImageReward.pt")
    assert len(metric.provenance["med_config"]["sha256"]) == 64
    with pytest.raises(DistarError, match="Unknown dtype 'fp8'"):
        ImageReward(model.state_dict(), ours.config, ours.tokenizer, dtype="fp8")

    state = dict(model.state_dict())
    state["blip.text_encoder.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "ImageReward.pt")
    with pytest.raises(DistarError, match="blip.text_encoder.extra.weight"):
        ImageReward.from_pretrained(weights_path=str(tmp_path), tokenizer_path=str(vocab_dir), device="cpu")
    del state["blip.text_encoder.extra.weight"], state["blip.visual_encoder.cls_token"]
    torch.save(state, tmp_path / "ImageReward.pt")
    with pytest.raises(DistarError, match="blip.visual_encoder.cls_token"):
        ImageReward.from_pretrained(weights_path=str(tmp_path), tokenizer_path=str(vocab_dir), device="cpu")
