"""Markdown leaderboards and plots regenerated from the results store (`distar leaderboard`).

A pure function of `results.sqlite`: nothing here reads the installed benchmarks, the model
registry, the Hugging Face cache or the environment, so a results folder copied to another
machine gives byte-identical tables. The modules, bottom up:

- `markdown`: the one markdown table writer (`md_table`), number formatting and `Shown` (how a
  metric is shown, as its MetricInfo recorded it in the store),
  shared with the gallery and di_star's demos;
- `entries`: the store read into typed rows (`Entry`: one recipe on one benchmark version, with
  its benchmark's prompt metadata) and cells (`Summary`), intervals and the one per-style
  aggregation (HPSv2's, `style_aggregate`);
- `plots`: the figures (quality vs latency, reward vs fidelity);
- `tables`: the paper's Tables 1-3, breakdowns, paired tests, suites, `write_leaderboards`.
"""
from evalsuite.benchmarks import HPS_STYLES
from evalsuite.leaderboard.entries import (BOOTSTRAP_SEED, CI_LEVEL, N_BOOTSTRAP, Entry,
                                           PromptMeta, Summary, bench_groups, hps_style_score,
                                           interval, label_entries, load_entries, metric_shown,
                                           read_prompt_meta, stratified_interval, style_aggregate)
from evalsuite.leaderboard.markdown import MISSING, Shown, fmt_number, md_table, score_text
from evalsuite.leaderboard.plots import ABLATION_PLOT, LATENCY_PLOT, write_plots
from evalsuite.leaderboard.tables import (BREAKDOWN_FILE, PAIRED_FILE, PAPER_FILE, SUITES,
                                          TABLE1_FILE, TABLE2_FILE, TABLE3_FILE, Suite,
                                          category_breakdown, get_suite, paired_tests,
                                          paper_reported, provenance, style_table, table1, table2,
                                          table3, write_leaderboards)

__all__ = [
    "ABLATION_PLOT", "BOOTSTRAP_SEED", "BREAKDOWN_FILE", "CI_LEVEL", "Entry", "HPS_STYLES",
    "LATENCY_PLOT", "MISSING", "N_BOOTSTRAP", "PAIRED_FILE", "PAPER_FILE",
    "PromptMeta", "SUITES", "Shown", "Suite", "Summary", "TABLE1_FILE", "TABLE2_FILE", "TABLE3_FILE",
    "bench_groups", "category_breakdown", "fmt_number", "get_suite", "hps_style_score",
    "interval", "label_entries", "load_entries", "md_table", "metric_shown", "paired_tests",
    "paper_reported", "provenance", "read_prompt_meta", "score_text", "stratified_interval",
    "style_aggregate", "style_table", "table1", "table2", "table3", "write_leaderboards",
    "write_plots",
]
