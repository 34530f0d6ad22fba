"""`python -m distar ...` is the `distar` CLI (used by `accelerate launch -m distar`)."""
from distar.cli import app

app(prog_name="distar")
