"""`python -m evalsuite ...` is the `distar` CLI (used by `accelerate launch -m evalsuite`)."""
from evalsuite.cli import app

app(prog_name="distar")
