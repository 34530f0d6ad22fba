"""User-facing errors of the DI* trainer (the CLI prints them as one message, no traceback)."""
from __future__ import annotations

from distar.core.errors import DistarError


class NonFiniteLossError(DistarError):
    """A loss term became NaN or Inf; the message names the term(s)."""

    def __init__(self, terms: list[str]):
        super().__init__(
            f"Non-finite loss term(s): {', '.join(terms)}.\n"
            "Fix: lower the learning rate or the term's scale (alpha_rew / alpha_cfg), keep the loss "
            "arithmetic in fp32, and check the noise levels (a tiny sigma makes score-space terms blow up)."
        )
        self.terms = terms


__all__ = ["DistarError", "NonFiniteLossError"]
