"""distar: an evaluation suite for text-to-image generators (`evalsuite`) and the Diff-Instruct*
trainer (`di_star`), standing on a small shared core (`distar.core`), with one CLI (`distar.cli`).

Import-light on purpose: importing `distar` loads nothing else. See docs/architecture.md.
"""
