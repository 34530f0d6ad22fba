"""The over-optimisation experiment's presets (issue 28): the mini world's DI*-In and DI++ (KL)
best rows rewarded by an oracle instead of the learned proxy:
- `mini/di_star_in_oracle`, `mini/di_pp_oracle`: the ORACLE (`mini_oracle`, the differentiable
  gold judge);
- `mini/di_star_in_oracle_st`, `mini/di_pp_oracle_st`: the STRAIGHT-THROUGH oracle
  (`mini_oracle_st`): its value is the hard gold judge's, its gradient the soft oracle's
  at di_star.mini.oracle.ST_TEMPERATURES (today the oracle's own: smoother ones did not climb
  gold better), so the oracle control is "a reward that IS gold".

alpha_rew: the proxy rows' alpha_rew is set for the mini proxy's cosines, whose per-image spread
on the init's samples is PROXY_SPREAD; the oracle's spread is ORACLE_SPREAD (both measured by
`distar lab oracle-check` on the init's mini_parti samples, docs/mini_quality/oracle_check.json),
so the oracle rows take alpha_rew x PROXY_SPREAD / ORACLE_SPREAD: the same reward gradient size
per unit of spread, the rule the presets' scales follow. The straight-through rows follow the
same rule with the gold judge's spread on the same images (GOLD_SPREAD, the value they report).

Measured (`python -m di_star.mini.probes.oracle_ascent`, docs/training.md): this rule is not why the
oracle rows do not raise the oracle. At alpha_rew 97 the reward term already dominates the
generator step (its gradient 1.1-179x the regulariser's at the init), so under Adam a larger
alpha_rew only nears the reward-only limit, and 100 reward-only steps do not raise the oracle
either (-0.019 [-0.061, +0.023]), while the proxy's do (+0.045 [+0.018, +0.072]): the oracle's
gradient, on the few pixels at its sharp thresholds, is a poor ascent direction.
"""
from __future__ import annotations

from di_star.config import TrainConfig, from_dict, merge

ORACLE = "mini_oracle"
ORACLE_ST = "mini_oracle_st"
PROXY_SPREAD = 0.154   # mini_pickscore, sd over 600 init samples
ORACLE_SPREAD = 0.159  # mini_oracle, the same images
GOLD_SPREAD = 0.159    # mini_gold, the same images: mini_oracle_st's value is the gold's
# reward -> (preset suffix, its per-image spread on the init's samples, its name in descriptions)
ORACLES = {ORACLE: ("oracle", ORACLE_SPREAD, "the oracle"),
           ORACLE_ST: ("oracle_st", GOLD_SPREAD, "the straight-through oracle")}
ROWS = ("di_star_in", "di_pp")


def oracle_alpha(alpha_rew: float, spread: float = ORACLE_SPREAD) -> float:
    """The proxy row's alpha_rew rescaled to a reward of this spread (rounded to 2 significant digits)."""
    return float(f"{alpha_rew * PROXY_SPREAD / spread:.2g}")


def preset_name(row: str, reward: str) -> str:
    """'mini/di_star_in_oracle_st' for row 'di_star_in' and reward 'mini_oracle_st'."""
    return f"mini/{row}_{ORACLES[reward][0]}"


def register(registry, rows: dict[str, tuple[dict, str]], base: dict) -> None:
    """Add `mini/<row>_oracle` and `mini/<row>_oracle_st` for each of ROWS (the mini world's
    `rows`, over `base`)."""
    for reward, (_, spread, what) in ORACLES.items():
        for row in ROWS:
            over, desc = rows[row]
            alpha = oracle_alpha(over["objective"]["alpha_rew"], spread)
            name = preset_name(row, reward)
            data = merge(merge(merge(TrainConfig().to_dict(), base), over),
                         {"preset": name, "objective": {"alpha_rew": alpha}, "sd": {"reward": reward}})
            registry.add(name, lambda data=data: from_dict(data),
                         f"{desc.split(' (')[0]} rewarded by {what} ({reward}, alpha_rew {alpha:g})")
