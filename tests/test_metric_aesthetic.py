"""Aesthetic predictor parity with its published recipe, on CPU, offline.

What exactly is compared: the reference is improved-aesthetic-predictor's `simple_inference.py`
(not a package, so it is transcribed below: its MLP, its numpy `normalized`, its call order) run
on a model of OpenAI's own `clip` package class (`clip.model.CLIP`, few layers, seeded random
weights) with the `clip` package's own preprocess (`clip.clip._transform`, what `clip.load`
returns). Ours loads that model's state dict and the MLP's state dict from files through its
normal options (`clip_weights_path=`, `weights_path=`) into open_clip.
"""
import numpy as np
import pytest
import torch
from torch import nn

from distar.core.errors import DistarError, WeightsMissingError
from di_star.bench import refs as rc
from evalsuite.metrics.aesthetic import AestheticScore

TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class ReferenceMLP(nn.Module):
    """simple_inference.py's MLP (a LightningModule there; the layers are what matters)."""

    def __init__(self, input_size):
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(self.input_size, 1024),
            # nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            # nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            # nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            # nn.ReLU(),
            nn.Linear(16, 1)
        )

    def forward(self, x):
        return self.layers(x)


def normalized(a, axis=-1, order=2):
    """simple_inference.py's L2 normalisation, in numpy."""
    l2 = np.atleast_1d(np.linalg.norm(a, order, axis))
    l2[l2 == 0] = 1
    return a / np.expand_dims(l2, axis)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import clip.clip
    d = tmp_path_factory.mktemp("aesthetic")
    clip_model = rc.tiny_openai_clip(seed=3)
    torch.manual_seed(4)
    mlp = ReferenceMLP(768).eval()
    # Default init makes this 5-layer linear head nearly constant on unit vectors; widen it
    # (x4 per layer) so different images get clearly different scores, centred like ratings.
    with torch.no_grad():
        for layer in mlp.layers:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(4.0)
        mlp.layers[7].bias.fill_(5.0)
    torch.save(mlp.state_dict(), d / "mlp.pth")
    torch.save(clip_model.state_dict(), d / "clip.pt")
    rc.register_open_clip_config(rc.TINY_OPENAI_CLIP_NAME, rc.TINY_OPENAI_CLIP)
    # A random head is not the published file: loading it needs the explicit opt-in
    # (tests/test_metric_weights.py checks the refusal without it).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTAR_ALLOW_WEIGHT_MISMATCH", "1")
        ours = AestheticScore.from_pretrained(device="cpu", batch_size=4, weights_path=str(d / "mlp.pth"),
                                              clip_weights_path=str(d / "clip.pt"),
                                              clip_arch=rc.TINY_OPENAI_CLIP_NAME)
    return clip_model, clip.clip._transform(224), mlp, ours, d


def reference_score(pil_image, model2, preprocess, model):
    """simple_inference.py, one image at a time, CPU."""
    image = preprocess(pil_image).unsqueeze(0)
    with torch.no_grad():
        image_features = model2.encode_image(image)
    im_emb_arr = normalized(image_features.cpu().detach().numpy())
    prediction = model(torch.from_numpy(im_emb_arr).type(torch.FloatTensor))
    return float(prediction.item())


def test_score_matches_published_recipe(setup):
    clip_model, preprocess, mlp, ours, _ = setup
    images = rc.sample_images(10)
    ref = np.array([reference_score(im, clip_model, preprocess, mlp) for im in images])
    got = ours.score(images)
    assert got.shape == (10,)
    assert np.ptp(ref) > 0.05  # different images get clearly different scores
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)
    assert AestheticScore.version_key() == ours.info.key  # what the runner reads before loading


def test_prompts_are_ignored_and_batching_is_neutral(setup):
    _, _, _, ours, _ = setup
    images = rc.sample_images(5)
    a = ours.score(images, rc.sample_prompts(5))
    b = np.concatenate([ours.score([im]) for im in images])
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_score_tensor_close_to_pil_path_with_gradients(setup):
    """PIL resizes in 8 bit, the tensor path in float (tests/test_metric_preprocess.py: 0.3
    grey levels on average). Through this random model that moves scores by < 2e-3 on a
    1-10 scale whose images here differ by ~0.05."""
    _, _, _, ours, _ = setup
    gaps = rc.score_tensor_gaps(ours, rc.sample_images(6))
    assert max(gaps) < 2e-3, gaps


def test_missing_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    for var in ("DISTAR_AESTHETIC_PATH", "DISTAR_AESTHETIC_CLIP_PATH"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(WeightsMissingError) as e:
        AestheticScore.from_pretrained(device="cpu")
    assert "sac+logos+ava1-l14-linearMSE.pth" in str(e.value)
    assert "DISTAR_AESTHETIC_PATH" in str(e.value)


def test_refuses_pickled_objects(setup, tmp_path, monkeypatch):
    """Weights are loaded with weights_only=True: a pickle of a Python object is refused."""
    _, _, _, _, d = setup
    monkeypatch.setenv("DISTAR_ALLOW_WEIGHT_MISMATCH", "1")  # past the digest check, to the load
    torch.save({"layers.0.weight": torch.zeros(1), "evil": nn.ReLU()}, tmp_path / "bad.pth")
    with pytest.raises(DistarError, match="weights_only"):
        AestheticScore.from_pretrained(device="cpu", weights_path=str(tmp_path / "bad.pth"),
                                       clip_weights_path=str(d / "clip.pt"), clip_arch=rc.TINY_OPENAI_CLIP_NAME)
