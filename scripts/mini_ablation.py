"""The mini world's ablation, reproducibly: paper Tables 1-3 in miniature from `distar train`,
`distar eval` and `distar leaderboard --suite mini`, plus generated findings and figures
(di_star.mini.ablation). Resumes: rerun the same command.

    .venv/bin/python scripts/mini_ablation.py                      # full: every Table 2 row, frontiers, 3 seeds (600 steps each: hours on a CPU)
    .venv/bin/python scripts/mini_ablation.py --scale demo         # what `distar demo` runs
    .venv/bin/python scripts/mini_ablation.py --out runs/mini_ablation --leaderboards leaderboards

Writes leaderboards/mini_table1.md, mini_table2_ablation.md, mini_table3_styles.md,
mini_category_breakdown.md, mini_paired_tests.md, mini_findings.md and figures/mini_*.png;
the run's timings in OUT/timing.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from di_star.mini.ablation import SCALES, run_ablation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="full")
    ap.add_argument("--out", type=Path, default=Path("runs/mini_ablation"))
    ap.add_argument("--leaderboards", type=Path, default=Path("leaderboards"))
    ap.add_argument("--workers", type=int, default=None, help="training processes (default: min(2, CPUs))")
    a = ap.parse_args()
    run_ablation(a.out, a.leaderboards, a.scale, workers=a.workers)


if __name__ == "__main__":
    main()
