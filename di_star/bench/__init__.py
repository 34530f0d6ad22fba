"""Benchmarks of the product's own speed and statistics (harness overhead, scorer speed against
the reference packages, DI* step cost, PNG and build cost, paired-test calibration), each
runnable as `python -m di_star.bench.NAME`; scripts/gpu_suite.py runs them on a GPU. `refs`
and `imagereward_ref` adapt the reference packages (the tests compare against them too)."""
