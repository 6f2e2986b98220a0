import json

import pytest
import torch

from lfcore import models
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


def test_corrupt_converted_folder_is_reported(tmp_path):
    folder = tmp_path / "conv"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"abc")
    (folder / "lfcore-manifest.json").write_text(json.dumps({"files": {"model.safetensors": "0" * 64}}))
    with pytest.raises(RuntimeError, match="corrupt.*delete that folder"):
        models._converted_ok(folder)


@pytest.mark.real
def test_bundled_conversion_is_cached_and_verified(smollm):
    """The GGUF was converted once to a safetensors folder with a manifest; reloading takes that folder."""
    gguf = models._bundled_gguf("smollm2-135m")
    folder = models.convert_gguf(gguf)  # already converted by the fixture: verified, not redone
    manifest = json.loads((folder / "lfcore-manifest.json").read_text())
    assert manifest["files"] and all((folder / name).exists() for name in manifest["files"])
    assert smollm.source == "bundled" and smollm.model_type == "llama"
