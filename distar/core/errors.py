"""User-facing errors: the CLI prints these as one clear message, never a traceback."""


class DistarError(Exception):
    """A problem the user can fix. The message must name the problem and the fix."""


class WeightsMissingError(DistarError):
    """Weights are not on disk and the hub cannot be reached (or HF_HUB_OFFLINE is set)."""

    def __init__(self, model: str, file: str, how_to_fix: str):
        super().__init__(
            f"Weights for '{model}' are not available offline: missing {file}.\n"
            f"Fix: {how_to_fix}"
        )
        self.model, self.file = model, file
