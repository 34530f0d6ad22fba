"""Leaderboard suites: which benchmarks and metrics fill the paper's tables. Light on purpose
(no pandas, no matplotlib), so another package registers its world's suite when it is imported
(di_star/plugins.py adds its worlds') without loading the report code."""
from __future__ import annotations

from dataclasses import dataclass

from distar.core.registry import Registry

TABLE1_METRICS = ("imagereward", "aesthetic", "pickscore", "clip")  # the paper's column order
TABLE1_BENCHES = ("parti", "coco30k")                               # upper part, lower part
HPS_BENCH = "hpsv2"
PREFERENCE_FOR_PLOT = ("pickscore", "imagereward", "hpsv21", "aesthetic")


@dataclass(frozen=True)
class Suite:
    """Which benchmarks and metrics fill the paper's tables. 'paper': Parti / COCO-30K / HPSv2
    with the paper's four metrics. Other packages register their worlds' suites in `SUITES`
    (files prefixed so that every set lives side by side in leaderboards/)."""
    name: str
    prefix: str                                  # file-name prefix
    table1_benches: tuple[str, ...]              # upper part, lower part
    table1_metrics: tuple[str, ...]              # fixed leading columns (others follow by name)
    fid_bench: str                               # its Table 1 section also leads with FID
    style_bench: str                             # Table 3's benchmark (per-style scores)
    ablation_bench: str                          # Table 2's plot
    plot_metrics: tuple[str, ...]                # y of the plots: the first one measured
    fidelity_metrics: tuple[str, ...]            # x of the ablation plot: the first one measured


PAPER_SUITE = Suite("paper", "", TABLE1_BENCHES, TABLE1_METRICS, "coco30k", HPS_BENCH, "parti",
                    PREFERENCE_FOR_PLOT, ("clip",))
# Suite name -> a Suite, or its lazy "module:attr" name (another package's world registers its
# own this way, from di_star/plugins.py).
SUITES: Registry[Suite] = Registry("leaderboard suite")
SUITES.add("paper", PAPER_SUITE, "Parti, COCO-30K, HPSv2 with the paper's metrics")


def get_suite(name: str) -> Suite:
    return SUITES.load(name)
