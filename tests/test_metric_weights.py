"""Metric weights: read only from where the user chose or the HF cache, hashed in full, checked
against the published (or hub-recorded) sha256, a mismatch refused unless the user opts in; and
every loader strict (a missing or unknown tensor is an error naming it)."""
import hashlib
import os
from pathlib import Path

import pytest
import torch

from distar.core.errors import DistarError
from evalsuite.metrics import loading
from evalsuite.metrics.loading import (ALLOW_MISMATCH_ENV, KNOWN_SHA256, WeightsMismatchError,
                                        provenance)
from evalsuite.metrics.aesthetic import AestheticMLP, AestheticScore


def _hf_cache_file(root: Path, name: str, data: bytes, blob_name: str) -> Path:
    """A file laid out as huggingface_hub caches it: snapshots/<commit>/<name> -> blobs/<etag>."""
    repo = root / "models--org--repo"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / blob_name).write_bytes(data)
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    os.symlink(f"../../blobs/{blob_name}", snap / name)
    return snap / name


def test_full_sha256_recorded_and_hf_cache_files_checked_against_the_hub_digest(tmp_path,
                                                                               monkeypatch):
    monkeypatch.delenv(ALLOW_MISMATCH_ENV, raising=False)
    data = b"weights" * 1000
    digest = hashlib.sha256(data).hexdigest()
    good = _hf_cache_file(tmp_path / "good", "model.safetensors", data, digest)
    prov = provenance(good, "test model")
    assert prov["sha256"] == digest and prov["expected_sha256"] == digest
    assert prov["verified"] == "hub" and prov["hub_commit"] == "a" * 40

    # The same name, bytes changed after download (damaged, or replaced by someone else).
    bad = _hf_cache_file(tmp_path / "bad", "model.safetensors", data + b"x", digest)
    with pytest.raises(WeightsMismatchError) as e:
        provenance(bad, "test model")
    msg = str(e.value)
    assert str(bad) in msg and digest in msg and ALLOW_MISMATCH_ENV in msg and "\n" not in msg

    # Opting in loads it and records the mismatch.
    monkeypatch.setenv(ALLOW_MISMATCH_ENV, "1")
    with pytest.warns(UserWarning, match="sha256"):
        prov = provenance(bad, "test model")
    assert prov["sha256"] == hashlib.sha256(data + b"x").hexdigest()
    assert prov["verified"].startswith("MISMATCH")

    # A local file with no published digest: hashed and recorded, and said to be unchecked.
    plain = tmp_path / "plain.pt"
    plain.write_bytes(data)
    assert provenance(plain) == {"file": str(plain), "sha256": digest, "revision": "local file",
                                 "verified": "no published sha256"}


def test_aesthetic_head_is_checked_against_the_published_digest(tmp_path, monkeypatch):
    """A state dict that is not the published sac+logos+ava1-l14-linearMSE.pth is refused
    before it is read, naming the file, both digests and the opt-in."""
    monkeypatch.delenv(ALLOW_MISMATCH_ENV, raising=False)
    torch.save(AestheticMLP(768).state_dict(), tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    (tmp_path / "never-read.pt").write_bytes(b"junk: refused before anything is read")
    with pytest.raises(WeightsMismatchError) as e:
        AestheticScore.from_pretrained(device="cpu", weights_path=str(tmp_path),
                                       clip_weights_path=str(tmp_path / "never-read.pt"))
    msg = str(e.value)
    assert KNOWN_SHA256["aesthetic_mlp"] in msg and ALLOW_MISMATCH_ENV in msg
    assert "sac+logos+ava1-l14-linearMSE.pth" in msg and "published" in msg


def test_a_renamed_copy_is_checked_too(tmp_path, monkeypatch):
    """The digest belongs to the role, not the file name."""
    monkeypatch.delenv(ALLOW_MISMATCH_ENV, raising=False)
    f = tmp_path / "my_head.bin"
    f.write_bytes(b"not the head")
    with pytest.raises(WeightsMismatchError):
        provenance(f, "aesthetic predictor MLP", role="aesthetic_mlp")


def test_hashing_is_cached_until_the_file_changes(tmp_path):
    f = tmp_path / "w.pt"
    f.write_bytes(b"one")
    assert loading.sha256_file(f) == hashlib.sha256(b"one").hexdigest()
    f.write_bytes(b"two!")
    os.utime(f, ns=(1, 1))
    assert loading.sha256_file(f) == hashlib.sha256(b"two!").hexdigest()


def test_pickscore_refuses_a_checkpoint_missing_a_tensor(tmp_path):
    """transformers would fill a missing visual_projection.weight with random values and only
    log it; the metric names the key and refuses."""
    from safetensors.torch import load_file, save_file

    from di_star.bench import refs as rc
    from evalsuite.metrics.pickscore import PickScore

    model = rc.tiny_hf_clip(seed=1)
    model.save_pretrained(tmp_path / "model")
    rc.clip_processor(str(tmp_path / "bpe")).save_pretrained(tmp_path / "processor")
    weights = tmp_path / "model" / "model.safetensors"
    state = load_file(weights)
    del state["visual_projection.weight"]
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(DistarError, match="visual_projection.weight"):
        PickScore.from_pretrained(device="cpu", weights_path=str(tmp_path / "model"),
                                  processor_path=str(tmp_path / "processor"))
    # An unknown tensor is refused as well.
    state = load_file(weights)
    state["visual_projection.weight"] = model.visual_projection.weight.detach().clone()
    state["extra_head.weight"] = torch.zeros(2)
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(DistarError, match="extra_head.weight"):
        PickScore.from_pretrained(device="cpu", weights_path=str(tmp_path / "model"),
                                  processor_path=str(tmp_path / "processor"))
    # The complete checkpoint loads, and every weight file's full sha256 is recorded.
    del state["extra_head.weight"]
    save_file(state, weights, metadata={"format": "pt"})
    metric = PickScore.from_pretrained(device="cpu", weights_path=str(tmp_path / "model"),
                                       processor_path=str(tmp_path / "processor"))
    prov = metric.provenance["model"]["model.safetensors"]
    assert prov["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_hps_and_clip_record_the_full_sha256_and_load_strictly(tmp_path):
    import open_clip

    from di_star.bench import refs as rc
    from evalsuite.metrics.clip_score import ClipScore
    from evalsuite.metrics.hps import HPSv21

    rc.register_open_clip_config()
    model = open_clip.create_model(rc.TINY_OPEN_CLIP_NAME, pretrained=None)
    ckpt = rc.save_tiny_open_clip_checkpoint(model, tmp_path / "HPS_v2.1_compressed.pt")
    hps = HPSv21.from_pretrained(weights_path=str(ckpt), arch=rc.TINY_OPEN_CLIP_NAME, device="cpu")
    assert hps.provenance["hps"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    clip = ClipScore.from_pretrained(backbone=rc.TINY_OPEN_CLIP_NAME, pretrained="random",
                                     weights_path=str(tmp_path / "clip.pt"), device="cpu")
    assert len(clip.provenance["clip"]["sha256"]) == 64
    state = model.state_dict()
    del state["text_projection"]
    torch.save({"state_dict": state}, tmp_path / "short.pt")
    with pytest.raises(DistarError, match="text_projection"):
        HPSv21.from_pretrained(weights_path=str(tmp_path / "short.pt"), arch=rc.TINY_OPEN_CLIP_NAME, device="cpu")


class _Bomb:
    """Unpickling this would create a file: a planted malicious checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_pickles_and_garbage_are_refused_with_one_clear_error(tmp_path):
    import json
    import pickle

    from evalsuite.metrics.fid import InceptionV3Features
    from evalsuite.metrics.pickscore import PickScore

    marker = tmp_path / "PWNED"
    d = tmp_path / "pickscore"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "clip"}))
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(_Bomb(marker)))
    with pytest.raises(DistarError) as e:
        PickScore.from_pretrained(device="cpu", weights_path=str(d), processor_path=str(d))
    assert str(d) in str(e.value) and "weights_path=" in str(e.value)
    garbage = tmp_path / "inception-2015-12-05.pt"
    garbage.write_bytes(pickle.dumps(_Bomb(marker)))
    with pytest.raises(DistarError) as e:
        InceptionV3Features(weights_path=str(garbage), device="cpu")
    assert str(garbage) in str(e.value) and "DISTAR_INCEPTION_PATH" in str(e.value)
    assert not marker.exists()
