import json

import pytest
import torch

from lfcore import convert, models
from lfcore.models import load_model


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tiny_tokenizer):
    from conftest import make_tiny

    folder = tmp_path_factory.mktemp("tiny-llama")
    make_tiny("llama").save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def test_load_local_folder(tiny_folder):
    lm = load_model(tiny_folder)
    assert lm.source == "folder" and lm.model_type == "llama" and not lm.model.training
    again = load_model(str(tiny_folder), dtype="bfloat16")
    assert next(again.model.parameters()).dtype == torch.bfloat16
    assert lm.fingerprint == load_model(tiny_folder).fingerprint
    assert lm.meta()["fingerprint"] == lm.fingerprint
    # same checkpoint in another compute dtype: never the same identity (other modules key caches on meta())
    assert (lm.meta()["dtype"], again.meta()["dtype"]) == ("torch.float32", "torch.bfloat16")


def test_tiny_specs_give_fake_checkpoints_and_sizes():
    a, b = load_model("tiny:bloom-32", revision="step-1"), load_model("tiny:bloom-32", revision="step-2")
    assert a.fingerprint != b.fingerprint and a.fingerprint == load_model("tiny:bloom-32", revision="step-1").fingerprint
    assert load_model("tiny:bloom-64").model.config.hidden_size == 64
    with pytest.raises(ValueError, match="tiny:<family>"):
        load_model("tiny:gpt9")


def test_bad_inputs_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="not one of float32"):
        load_model("tiny:llama", dtype="fp8")
    (tmp_path / "weights.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match="no config.json.*GGUF files \\(weights.gguf\\): pass gguf_file="):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a model folder nor a .gguf file"):
        load_model("./no/such/folder")
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        load_model(tmp_path / "missing.gguf")
    with pytest.raises(ValueError, match="(?s)from the Hugging Face hub.*bundled key"):
        load_model("bigscience/bloom-560m", revision="main")


@pytest.mark.real
def test_bundled_conversion_is_cached_and_verified(smollm):
    """The GGUF was converted once to a safetensors folder with a manifest; reloading takes that folder."""
    gguf = convert._bundled_gguf("smollm2-135m")
    folder = convert.convert_gguf(gguf)  # already converted by the fixture: verified, not redone
    manifest = json.loads((folder / "lfcore-manifest.json").read_text())
    assert manifest["files"] and all((folder / name).exists() for name in manifest["files"])
    assert smollm.source == "bundled" and smollm.model_type == "llama"


def test_site_override_on_a_nested_text_config(tiny_tokenizer):
    """Multimodal Gemma 3 (model_type "gemma3") keeps layer count and widths in config.text_config."""
    from transformers import AutoModelForCausalLM, Gemma3Config

    from lfcore.capture import capture
    from lfcore.corpus import ParallelCorpus, Record

    text = dict(hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, vocab_size=512, max_position_embeddings=64)
    vision = dict(hidden_size=32, intermediate_size=40, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)
    model = AutoModelForCausalLM.from_config(Gemma3Config(text_config=text, vision_config=vision,
                                                          mm_tokens_per_image=4))
    with pytest.raises(ValueError, match="'gemma3' is not in lfcore's neuron-site table"):
        models.neuron_sites(model)
    site = "model.language_model.layers.{layer}.mlp.down_proj"
    assert models.neuron_sites(model, site) == [site.format(layer=i) for i in range(2)]
    assert models.neuron_width(model, site) == 40 and models.position_limit(model) == 64
    lm = models.from_objects(model, tiny_tokenizer, "tiny-gemma3-mm")
    corpus = ParallelCorpus([Record("1", "en", "Hello world."), Record("1", "fr", "Bonjour le monde.")])
    assert capture(lm, corpus, site=site, progress=False).values.shape == (2, 2, 40)


def test_bloom_slow_but_exact_is_refused():
    """BLOOM with pretraining_tp > 1 and slow_but_exact multiplies weight slices: the site module never runs."""
    from transformers import AutoModelForCausalLM, BloomConfig

    config = BloomConfig(vocab_size=64, hidden_size=32, n_layer=2, n_head=4, pretraining_tp=2, slow_but_exact=True)
    with pytest.raises(ValueError, match="pretraining_tp=2 and slow_but_exact=True.*slow_but_exact=False"):
        models.neuron_sites(AutoModelForCausalLM.from_config(config))
    config.slow_but_exact = False
    assert len(models.neuron_sites(AutoModelForCausalLM.from_config(config))) == 2
    assert models.position_limit(AutoModelForCausalLM.from_config(config)) is None  # ALiBi: no table


def test_a_model_without_tokenizer_files_says_how_to_name_one(tmp_path, tiny_folder):
    from conftest import make_tiny

    weights_only = tmp_path / "checkpoint"  # as a bloom-7b1-intermediate branch: config and weights only
    make_tiny("bloom").save_pretrained(weights_only)
    with pytest.raises(ValueError, match=r"tokenizer: bigscience/bloom-7b1.*tokenizer="):
        load_model(weights_only)
    lm = load_model(weights_only, tokenizer=tiny_folder)
    assert lm.tokenizer("hello").input_ids and lm.meta()["tokenizer"] == str(tiny_folder)
    assert "tokenizer" not in load_model(tiny_folder).meta()  # the model's own tokenizer: key unchanged


def test_revisions_offline_is_one_clear_line(monkeypatch, capsys):
    import huggingface_hub.constants

    from lfcore.cli import main

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main(["revisions", "bigscience/bloom-7b1-intermediate"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "HF_HUB_OFFLINE" in err and "bloom-7b1-intermediate" in err


def test_reports_name_bundled_models_as_what_they_are(tiny_folder):
    lm = load_model(tiny_folder)
    assert lm.title == str(tiny_folder)
    lm.name, lm.source = "gemma-3-270m", "bundled"
    assert lm.title == "Gemma 3 270M (base, GGUF Q4_K_M)"
