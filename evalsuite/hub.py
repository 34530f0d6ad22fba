"""Hub access that never hangs: decide once, quickly, whether the hub can be reached, and
otherwise read only the local Hugging Face cache. huggingface_hub's own retries take ~25 s per
file on a machine with no network, which reads as a hang to a user."""
from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def host_reachable(host: str, timeout: float = 2.0) -> bool:
    """Whether `host` accepts a TCP connection on 443 within `timeout` seconds (the one network
    probe: the hub's endpoint, clean-fid's Inception CDN)."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    """False when HF_HUB_OFFLINE is set or the endpoint does not answer within `timeout`."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return False
    return host_reachable(urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname,
                          timeout)


def local_only() -> bool:
    """Pass as `local_files_only=` to every from_pretrained / hf_hub_download call."""
    return not hub_reachable()


def hub_download(repo_id: str, filename: str, *, model: str, revision: str | None = None,
                 repo_type: str | None = None, env_var: str | None = None) -> str:
    """hf_hub_download that raises WeightsMissingError (no traceback, no hang) when offline."""
    from huggingface_hub import hf_hub_download
    from distar.core.errors import WeightsMissingError
    try:
        return hf_hub_download(repo_id, filename, revision=revision, repo_type=repo_type,
                               local_files_only=local_only())
    except Exception as e:  # LocalEntryNotFoundError, RepositoryNotFoundError, HTTP errors
        fix = (f"download it where the hub is reachable (`hf download {repo_id} {filename}`) "
               f"and copy the Hugging Face cache (HF_HOME) here")
        if env_var:
            fix += f", or set {env_var}=/path/to/{filename}"
        raise WeightsMissingError(model, f"{repo_id}/{filename} ({type(e).__name__})", fix)
