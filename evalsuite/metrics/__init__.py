"""Metric registry. Each entry is 'module:factory'; factories take keyword options (device,
local weight paths) and return an object following evalsuite.metrics.base. Importing a metric
module is lazy so listing metrics never loads a model. Other packages add their own metrics
here the same way (the toy digits metrics come from di_star/plugins.py)."""
from __future__ import annotations

from distar.core.registry import Registry

METRICS: Registry[str] = Registry("metric")
METRICS.add("imagereward", "evalsuite.metrics.imagereward:ImageReward",
            "ImageReward v1.0 (BLIP ViT-L 224, MLP head, normalised)")
METRICS.add("aesthetic", "evalsuite.metrics.aesthetic:AestheticScore",
            "LAION improved aesthetic predictor on OpenAI CLIP ViT-L/14")
METRICS.add("pickscore", "evalsuite.metrics.pickscore:PickScore",
            "PickScore v1, cosine (the DI* paper's 0.23xx)")
METRICS.add("pickscore_logit", "evalsuite.metrics.pickscore:PickScoreLogit",
            "PickScore v1, logit_scale * cosine (PickScore paper's unit)")
METRICS.add("clip", "evalsuite.metrics.clip_score:ClipScore", "CLIP score, 100 x cosine")
METRICS.add("smoke_clip", "evalsuite.metrics.clip_score:TinyRandomClipScore",
            "SMOKE TEST: CLIP score code path on a random tiny CLIP, offline; not a quality score")
METRICS.add("hpsv2", "evalsuite.metrics.hps:HPSv20", "HPS v2.0 (open_clip ViT-H-14)")
METRICS.add("hpsv21", "evalsuite.metrics.hps:HPSv21", "HPS v2.1 (open_clip ViT-H-14)")
METRICS.add("hpsv2_noaa", "evalsuite.metrics.hps:HPSv20NoAA",
            "HPS v2.0, resize without antialias (hpsv2 under torchvision < 0.17)")
METRICS.add("hpsv21_noaa", "evalsuite.metrics.hps:HPSv21NoAA",
            "HPS v2.1, resize without antialias (hpsv2 under torchvision < 0.17)")
METRICS.add("fid", "evalsuite.metrics.fid:FID", "FID, clean-fid 'clean' Inception features")
METRICS.add("kid", "evalsuite.metrics.fid:KID", "KID, clean-fid 'clean' Inception features")
METRICS.add("mini_gold", "evalsuite.metrics.mini:MiniGold",
            "mini world: the gold judge (pixel rules standing for human preference)")
METRICS.add("mini_attr_acc", "evalsuite.metrics.mini:MiniAttrAcc",
            "mini world: attribute classifier finds every asked attribute (GenEval-like, 0/1)")
METRICS.add("mini_attr_frac", "evalsuite.metrics.mini:MiniAttrFrac",
            "mini world: share of the prompt's asked attributes the classifier finds")
METRICS.add("mini_fd", "evalsuite.metrics.mini:MiniFD",
            "mini world: Frechet distance to ground-truth renders of the same prompts, in the "
            "attribute classifier's cell embeddings (not Inception FID)")
METRICS.add("mini_kd", "evalsuite.metrics.mini:MiniKD",
            "mini world: kernel distance (KID's estimator), same space and references as mini_fd")
METRICS.add("diversity", "evalsuite.metrics.diversity:Diversity",
            "intra-prompt diversity: mean pairwise cosine distance of CLIP image embeddings "
            "(k >= 4 images per prompt)")
METRICS.add("mini_diversity", "evalsuite.metrics.diversity:MiniDiversity",
            "intra-prompt diversity in the mini world's CLIP image space (k >= 4 per prompt)")
METRICS.add("mini_pickscore", "evalsuite.metrics.mini_learned:MiniPickScore",
            "mini world: the proxy reward (PickScore architecture and objective, gold-judge pairs)")
METRICS.add("mini_aesthetic", "evalsuite.metrics.mini_learned:mini_aesthetic",
            "mini world: LAION aesthetic MLP on mini-CLIP embeddings (gold ratings, 1-10)")
METRICS.add("mini_clip", "evalsuite.metrics.mini_learned:mini_clip",
            "mini world: CLIP score (100 x cos) with the mini CLIP")


def load_metric(name: str, **options):
    """Build the metric `name` (loads its weights once)."""
    return METRICS.load(name)(**options)
