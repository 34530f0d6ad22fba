"""Every file a score depends on is in its provenance: each metric is loaded with small weights
in the published file layouts while an audit hook records every file the process opens, and
every data file opened (weights, configs, tokenizer and processor files) must be listed in
`metric.provenance` with its path, its full sha256 and a revision."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from di_star.bench import refs as rc
from evalsuite.metrics import load_metric
from store_helpers import save_inception_standin

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

_OPENED: list[str] = []
_RECORDING = [False]


def _audit(event: str, args) -> None:
    if _RECORDING[0] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # cannot be removed; inert outside `files_read`

CODE = (".py", ".pyc", ".so", ".pyi", ".typed")
SYSTEM = ("/proc/", "/sys/", "/dev/", "/etc/", "/usr/")


@contextmanager
def files_read():
    """The data files opened inside the block: not code, the system's or package metadata
    (importlib.metadata, for versions). Load a metric once before, so that what its imports
    read (their own resources) is not counted."""
    _OPENED.clear()
    out: set[str] = set()
    _RECORDING[0] = True
    try:
        yield out
    finally:
        _RECORDING[0] = False
        for f in _OPENED:
            p = Path(f)
            if p.is_file() and p.suffix not in CODE and not f.startswith(SYSTEM) \
                    and ".dist-info/" not in f and "/huggingface/token" not in f:
                out.add(str(p.resolve()))


def recorded(prov) -> dict[str, dict]:
    """{resolved path: record} of every {'file', 'sha256'} entry in a provenance tree."""
    out = {}
    if isinstance(prov, dict):
        if "file" in prov and "sha256" in prov and Path(prov["file"]).is_file():
            out[str(Path(prov["file"]).resolve())] = prov
        for v in prov.values():
            out.update(recorded(v))
    return out


def check(metric, read: set[str]) -> dict[str, dict]:
    rec = recorded(metric.provenance)
    missing = sorted(read - set(rec))
    assert not missing, f"{metric.info.name} read files its provenance does not list: {missing}"
    for path, r in rec.items():
        assert r["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest(), path
        assert r.get("revision"), path
    json.dumps(metric.provenance)  # stored as JSON in every score's meta_json
    return rec


def test_open_clip_metrics_list_weights_config_and_tokenizer(tmp_path, monkeypatch):
    import open_clip
    rc.register_open_clip_config()
    model = rc.perturb_(open_clip.create_model(rc.TINY_OPEN_CLIP_NAME), 3)
    ckpt = rc.save_tiny_open_clip_checkpoint(model, tmp_path / "HPS_v2.1_compressed.pt")
    images, prompts = rc.sample_images(2), rc.sample_prompts(2)  # (sklearn's sample photos)
    load_metric("hpsv21", weights_path=str(ckpt), arch=rc.TINY_OPEN_CLIP_NAME,
                device="cpu").score(images, prompts)  # imports
    with files_read() as read:
        hps = load_metric("hpsv21", weights_path=str(ckpt), arch=rc.TINY_OPEN_CLIP_NAME,
                          device="cpu")
        hps.score(images, prompts)  # the tokenizer may read lazily
    rec = check(hps, read)
    assert str(ckpt.resolve()) in rec and any(p.endswith(".txt.gz") for p in rec)  # BPE vocab
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    with files_read() as read:
        clip = load_metric("clip", backbone=rc.TINY_OPEN_CLIP_NAME, pretrained="random",
                           weights_path=str(tmp_path / "clip.pt"), device="cpu")
        clip.score(images, prompts)
    assert str((tmp_path / "clip.pt").resolve()) in check(clip, read)

    rc.register_open_clip_config(rc.TINY_OPENAI_CLIP_NAME, rc.TINY_OPENAI_CLIP)
    torch.save(rc.tiny_openai_clip(seed=3).state_dict(), tmp_path / "a_clip.pt")
    from evalsuite.metrics.aesthetic import AestheticMLP
    torch.save(AestheticMLP(768).state_dict(), tmp_path / "mlp.pth")
    monkeypatch.setenv("DISTAR_ALLOW_WEIGHT_MISMATCH", "1")  # a random head, not the published
    with files_read() as read:
        aesthetic = load_metric("aesthetic", weights_path=str(tmp_path / "mlp.pth"),
                                clip_weights_path=str(tmp_path / "a_clip.pt"),
                                clip_arch=rc.TINY_OPENAI_CLIP_NAME, device="cpu")
    assert len(check(aesthetic, read)) == 2  # head and backbone; the config was made in memory:
    assert len(aesthetic.provenance["config"]["sha256"]) == 64  # its canonical json's hash


def test_pickscore_lists_every_processor_and_tokenizer_file(tmp_path):
    rc.tiny_hf_clip(seed=1).save_pretrained(tmp_path / "model")
    rc.clip_processor(str(tmp_path / "bpe")).save_pretrained(tmp_path / "processor")
    load_metric("pickscore", weights_path=str(tmp_path / "model"),
                processor_path=str(tmp_path / "processor"), device="cpu")  # imports
    with files_read() as read:
        metric = load_metric("pickscore", weights_path=str(tmp_path / "model"),
                             processor_path=str(tmp_path / "processor"), device="cpu")
    rec = check(metric, read)
    names = {Path(p).name for p in rec}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names
    assert set(metric.provenance["processor"]) == {
        f.name for f in (tmp_path / "processor").iterdir()}


def test_imagereward_lists_its_tokenizer_files(tmp_path):
    from evalsuite.metrics.blip import BlipRewardConfig, ImageRewardModel
    from evalsuite.metrics.imagereward import load_tokenizer
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz")
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    med = dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=40, layer_norm_eps=1e-12, hidden_act="gelu",
               vocab_size=len(load_tokenizer(tmp_path / "tok")), add_cross_attention=True)
    cfg = BlipRewardConfig(image_size=224, patch_size=32, vision_width=64, vision_depth=1,
                           vision_heads=1).with_med_config(med)
    (tmp_path / "w").mkdir()
    torch.save(ImageRewardModel(cfg).state_dict(), tmp_path / "w" / "ImageReward.pt")
    (tmp_path / "w" / "med_config.json").write_text(json.dumps(med))
    with files_read() as read:
        metric = load_metric("imagereward", weights_path=str(tmp_path / "w"),
                             tokenizer_path=str(tmp_path / "tok"), device="cpu")
    rec = check(metric, read)
    assert {"ImageReward.pt", "med_config.json", "vocab.txt"} <= {Path(p).name for p in rec}
    assert metric.provenance["tokenizer"]["vocab.txt"]["revision"] == "local file"


def test_fid_and_mini_metrics_list_their_files(tmp_path):
    class Layers(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3)).repeat(1, 683)[:, :2048]

    save_inception_standin(tmp_path, Layers())
    ref = tmp_path / "ref"
    ref.mkdir()
    for i, im in enumerate(rc.sample_images(3, seed=1)):
        im.save(ref / f"{i}.png")
    load_metric("mini_gold")  # imports
    with files_read() as read:
        fid = load_metric("fid", weights_path=str(tmp_path / "inception-2015-12-05.pt"),
                          reference_dir=str(ref), cache_dir=str(tmp_path / "c"), num_workers=0,
                          device="cpu")
    read = {p for p in read if not p.startswith(str(ref.resolve()))}  # images: the key's hash
    check(fid, {p for p in read if not p.startswith(str((tmp_path / "c").resolve()))})
    for name in ("mini_attr_acc", "mini_diversity", "mini_pickscore", "mini_aesthetic",
                 "mini_clip"):
        load_metric(name, device="cpu")  # imports
        with files_read() as read:
            metric = load_metric(name, device="cpu")
        read = {p for p in read if not p.endswith("manifest.json")}  # its digest is recorded
        assert check(metric, read), name
