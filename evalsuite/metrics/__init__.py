"""Metric registry. Each entry is 'module:Class.from_pretrained'; it takes keyword options
(device, dtype, local weight paths) and returns an object following evalsuite.metrics.base. Importing a metric
module is lazy so listing metrics never loads a model. Other packages add their own metrics
here the same way (di_star's worlds add theirs from di_star/plugins.py)."""
from __future__ import annotations

from distar.core.registry import Registry

METRICS: Registry[str] = Registry("metric")

# name -> ("module:Class" under evalsuite.metrics, description); each entry is the class's
# from_pretrained.
_BUILTIN = {
    "imagereward": ("imagereward:ImageReward",
                    "ImageReward v1.0 (BLIP ViT-L 224, MLP head, normalised)"),
    "aesthetic": ("aesthetic:AestheticScore",
                  "LAION improved aesthetic predictor on OpenAI CLIP ViT-L/14"),
    "pickscore": ("pickscore:PickScore", "PickScore v1, cosine (the DI* paper's 0.23xx)"),
    "pickscore_logit": ("pickscore:PickScoreLogit",
                        "PickScore v1, logit_scale * cosine (PickScore paper's unit)"),
    "clip": ("clip_score:ClipScore", "CLIP score, 100 x cosine"),
    "smoke_clip": ("clip_score:TinyRandomClipScore",
                   "SMOKE TEST: CLIP score code path on a random tiny CLIP, offline; not a "
                   "quality score"),
    "hpsv2": ("hps:HPSv20", "HPS v2.0 (open_clip ViT-H-14)"),
    "hpsv21": ("hps:HPSv21", "HPS v2.1 (open_clip ViT-H-14)"),
    "hpsv2_noaa": ("hps:HPSv20NoAA",
                   "HPS v2.0, resize without antialias (hpsv2 under torchvision < 0.17)"),
    "hpsv21_noaa": ("hps:HPSv21NoAA",
                    "HPS v2.1, resize without antialias (hpsv2 under torchvision < 0.17)"),
    "fid": ("fid:FID", "FID, clean-fid 'clean' Inception features"),
    "kid": ("fid:KID", "KID, clean-fid 'clean' Inception features"),
    "diversity": ("diversity:Diversity",
                  "intra-prompt diversity: mean pairwise cosine distance of CLIP image "
                  "embeddings (k >= 4 images per prompt)"),
}
for _name, (_ref, _description) in _BUILTIN.items():
    METRICS.add(_name, f"evalsuite.metrics.{_ref}.from_pretrained", _description)


def load_metric(name: str, **options):
    """Build the metric `name` (loads its weights once)."""
    return METRICS.load(name)(**options)
