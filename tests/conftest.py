"""Shared test set-up: offline always, one build cache per test session."""
import os

import pytest

# Before anything imports huggingface_hub: tests never reach for a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import di_star  # noqa: E402,F401  (patches torchvision; registers the toy and mini plug-ins, as the CLI does)


@pytest.fixture(scope="session", autouse=True)
def _distar_cache(tmp_path_factory):
    """Tiny models, tokenizer files and toy references are built once per session, in a
    temp folder (subprocesses inherit it through the environment). DISTAR_TEST_CACHE reuses
    a folder across sessions for speed when developing."""
    os.environ["DISTAR_CACHE"] = os.environ.get("DISTAR_TEST_CACHE") or str(
        tmp_path_factory.mktemp("distar-cache"))
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models (`pytestmark =
    pytest.mark.usefixtures("one_thread")`): they gain nothing from threads, and on a shared
    2-core machine OpenMP contention made each small op 10-20x slower. Restored afterwards."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
