import pytest
import torch

from lfcore.hooks import get_module, input_hooks
from lfcore.models import SITES, neuron_sites, neuron_width


def _n_hooks(model):
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def _ids(lm):
    return lm.tokenizer(["Hello world, this is a test."], return_tensors="pt")["input_ids"]


def test_hooks_removed_after_block_and_on_exception(tiny):
    model, site = tiny.model, neuron_sites(tiny.model)[0]
    calls = []
    with input_hooks(model, {site: lambda x: calls.append(x.shape)}):
        assert _n_hooks(model) == 1
        model(_ids(tiny))
    assert calls and _n_hooks(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with input_hooks(model, {site: lambda x: None}):
            raise RuntimeError("boom")
    assert _n_hooks(model) == 0


def test_bad_name_registers_nothing(tiny):
    model, site = tiny.model, neuron_sites(tiny.model)[0]
    with pytest.raises(LookupError, match="no module named"):
        input_hooks(model, {site: lambda x: None, "not.a.module": lambda x: None})
    assert _n_hooks(model) == 0


def test_replacement_and_stop(tiny):
    model, sites = tiny.model, neuron_sites(tiny.model)
    ids = _ids(tiny)
    with torch.no_grad():
        before = model(ids).logits
        with input_hooks(model, {sites[0]: lambda x: x * 0}):
            zeroed = model(ids).logits
        after = model(ids).logits
        seen = []
        with input_hooks(model, {sites[0]: lambda x: seen.append(0), sites[1]: lambda x: seen.append(1)}, stop=sites[0]):
            model(ids)
    assert torch.equal(before, after) and not torch.equal(before, zeroed)
    assert seen == [0]  # stopped before layer 1
    assert _n_hooks(model) == 0


def test_site_table_and_unknown_type(tiny):
    names = neuron_sites(tiny.model)
    assert len(names) == tiny.model.config.num_hidden_layers
    width = neuron_width(tiny.model)
    assert get_module(tiny.model, names[0]).in_features == width
    assert set(SITES) >= {"bloom", "llama", "gemma3_text", "qwen2", "mistral", "gpt_neox", "gpt2", "opt"}
    tiny.model.config.model_type, saved = "mystery", tiny.model.config.model_type
    try:
        with pytest.raises(ValueError, match="supported: .*site="):
            neuron_sites(tiny.model)
        template = names[0].replace(".0.", ".{layer}.")
        assert neuron_sites(tiny.model, site=template) == names
        assert neuron_width(tiny.model, site=template) == width
    finally:
        tiny.model.config.model_type = saved
    with pytest.raises(ValueError, match="must contain"):
        neuron_sites(tiny.model, site="model.layers.0.mlp")


@pytest.mark.parametrize("kind", ["gpt2", "opt", "gpt_neox", "qwen2", "mistral"])
def test_other_architectures_resolve(kind):
    """Every table entry points at a real module whose input width is the configured neuron count."""
    from transformers import (AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, MistralConfig, OPTConfig,
                              Qwen2Config)

    cfg = {"gpt2": GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=64),
           "opt": OPTConfig(hidden_size=32, ffn_dim=48, num_hidden_layers=2, num_attention_heads=4,
                            word_embed_proj_dim=32, vocab_size=64),
           "gpt_neox": GPTNeoXConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                     num_attention_heads=4, vocab_size=64),
           "qwen2": Qwen2Config(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=64),
           "mistral": MistralConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, vocab_size=64)}[kind]
    model = AutoModelForCausalLM.from_config(cfg)
    names = neuron_sites(model)
    width = neuron_width(model)
    seen = []
    with input_hooks(model, {n: (lambda x: seen.append(x.shape[-1])) for n in names}):
        model(torch.tensor([[1, 2, 3]]))
    assert seen == [width] * len(names)


def test_input_passed_as_keyword_is_read_and_replaced():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    x, seen = torch.ones(1, 3), []
    with torch.no_grad(), input_hooks(model, {"0": [lambda v: seen.append(v.clone()), lambda v: v * 0]}):
        out = model[0](input=x)
    assert torch.equal(seen[0], x)
    assert torch.equal(out, model[0].bias.detach().expand(1, 2))  # the zeroed input reached the layer
