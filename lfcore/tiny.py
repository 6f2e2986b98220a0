"""Tiny random models for smoke runs and tests: ``load_model("tiny:llama-32", revision="step-2")``. The tokenizer is a
real multilingual byte-level BPE (vocab 512, trained on 100 bundled NTREX sentences x 9 languages); the weights are
random, seeded by the revision (a fake checkpoint series), and the number after the family is the hidden size (a
fake size series). They carry no language knowledge: they exercise code paths, never findings.
"""
from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from importlib import resources

import torch

FAMILIES = ("bloom", "llama", "gemma3")


@lru_cache(maxsize=1)
def tokenizer():
    """A byte-level BPE with <pad>=0, <bos>=1, <eos>=2 that prepends <bos>, trained in about a second."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    lines = (resources.files("lfcore.data") / "ntrex128_9langs.jsonl").read_text(encoding="utf-8").splitlines()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator((json.loads(line)["text"] for line in lines[:900]), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def model(family: str, hidden: int = 32, layers: int = 3, seed: int = 0, positions: int = 512):
    """A random causal LM of ``family`` ("bloom", "llama", "gemma3") in fp32, eval mode; ``positions``: the
    ``max_position_embeddings`` of the rotary families (BLOOM's ALiBi has none)."""
    from transformers import AutoModelForCausalLM, BloomConfig, Gemma3TextConfig, LlamaConfig

    if family not in FAMILIES:
        raise ValueError(f"tiny model family {family!r} is not one of {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    heads = max(2, hidden // 8)
    common = dict(vocab_size=512, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    rotary = dict(num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                  max_position_embeddings=positions, **common)
    if family == "bloom":
        config = BloomConfig(hidden_size=hidden, n_layer=layers, n_head=heads, **common)
    elif family == "llama":
        config = LlamaConfig(hidden_size=hidden, intermediate_size=hidden * 3 // 2, **rotary)
    else:
        config = Gemma3TextConfig(hidden_size=hidden, intermediate_size=hidden * 5 // 4, head_dim=8, sliding_window=16,
                                  **rotary)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def from_spec(spec: str, revision: str | None = None):
    """Build ``(model, tokenizer)`` from ``"tiny:<family>[-<hidden>]"``; the revision seeds the weights."""
    m = re.fullmatch(r"tiny:([a-z0-9]+?)(?:-(\d+))?", spec)
    if not m or m.group(1) not in FAMILIES:
        raise ValueError(f"tiny model spec {spec!r} must look like 'tiny:<family>[-<hidden>]' with family in "
                         f"{', '.join(FAMILIES)}, e.g. 'tiny:llama-48'")
    hidden = int(m.group(2) or 32)
    if hidden % 16:
        raise ValueError(f"tiny model hidden size {hidden} must be a multiple of 16")
    seed = int(hashlib.sha256((revision or "main").encode()).hexdigest()[:8], 16)
    return model(m.group(1), hidden=hidden, seed=seed), tokenizer()
