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


def read_json_file(path, fix: str, kind: type | None = dict):
    """The JSON in `path`, or one DistarError naming the file, what is wrong and `fix` (a file
    that is missing, unreadable, truncated, not JSON, or not of the expected `kind`)."""
    import json
    from pathlib import Path
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DistarError(f"{path} is missing. Fix: {fix}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DistarError(f"Cannot read {path} ({e}). Fix: {fix}") from None
    except json.JSONDecodeError as e:
        raise DistarError(f"{path} is damaged (not valid JSON: {e}). Fix: {fix}") from None
    if kind is not None and not isinstance(data, kind):
        raise DistarError(f"{path} is damaged (a JSON {type(data).__name__} where a "
                          f"{kind.__name__} was expected). Fix: {fix}")
    return data
