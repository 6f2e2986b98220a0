"""Steering and patching experiments: conditions, continuations labelled by detected language, share intervals,
and (real weights) steering toward a language raises its detected share above the size-matched random control."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from lfcore import hooks, steps, switching
from lfcore.cache import Cache
from lfcore.corpus import bundled_ntrex
from lfcore.langid import detect, languages
from lfcore.models import neuron_sites
from lfcore.regions import key_regions
from lfcore.specs import CaptureSpec, CorpusSpec
from lfcore.steering import (baseline, continuations, layer_bands, patch_conditions, prompt_order,
                             size_matched_control, steering_conditions)
from lfcore.uncertainty import share_intervals

LANGS = ["en", "zh", "fr", "ar"]


def test_detect_the_nine_languages():
    corpus = bundled_ntrex()
    for lang in ["ar", "zh", "en", "fr", "hi", "id", "pt", "es", "vi"]:
        text = corpus.records_for(lang)[1].text
        got, p = detect([text])[0]
        assert got == lang and 0 < p <= 1, (lang, got, p, text)
    assert detect(["", "12, 34!"]) == [("und", 0.0), ("und", 0.0)]
    assert {"ar", "zh", "en", "ms", "de"} <= set(languages())
    with pytest.raises(ValueError, match="list of texts"):
        detect("a single text")


def test_share_intervals_paired_and_checked():
    hits = pd.DataFrame({"kind": ["region"] * 4 + ["random"] * 4, "lang": ["fr", "fr", "zh", "zh"] * 2,
                         "id": ["a", "b", "a", "b"] * 2, "hit": [True, True, True, False, False, False, True, False]})
    df = share_intervals(hits, ["kind"], n_boot=200, seed=1).set_index("kind")
    assert df.loc["region", "share"] == 0.75 and df.loc["random", "share"] == 0.25
    assert (df.ci_low <= df.share).all() and (df.share <= df.ci_high).all() and (df.n == 4).all()
    with pytest.raises(ValueError, match=r"prompt \('fr', 'a'\) appears twice"):
        share_intervals(hits.assign(kind="x", lang="fr"), ["kind"])


@pytest.fixture(scope="module")
def setup(tiny_llama):
    c = CorpusSpec(n=6)
    sample = steps.sentences(c, LANGS)
    cache = Cache(None)
    acts = steps.activations(tiny_llama, sample, CaptureSpec(batch_size=8, max_length=48), cache)
    prompts = steps.held_out_prompts(c, LANGS, sample, 2, 0)
    return tiny_llama, acts, key_regions(acts, 1.0), prompts, cache


def test_prompts_are_held_out_and_controls_size_matched(setup):
    lm, acts, key, prompts, _ = setup
    assert not set(prompts.ids) & set(acts.ids) and len(prompts.ids) == 2
    for lang in LANGS:
        region, control = key.neurons(lang), size_matched_control(key, lang, seed=3)
        assert {layer: len(v) for layer, v in region.items()} == {layer: len(v) for layer, v in control.items()}
    assert layer_bands([0, 1, 2, 3, 4], 2) == [[0, 1, 2], [3, 4]]


def test_continuations_label_every_prompt(setup):
    lm, acts, key, prompts, _ = setup
    conds = [baseline(), *steering_conditions(lm, key, acts, [2.0])[:2]]
    df = continuations(lm, prompts, conds, max_new_tokens=3)
    assert len(df) == len(conds) * len(LANGS) * 2
    assert list(df.condition.unique()) == [c.name for c in conds]
    for cond, rows in df.groupby("condition", sort=False):
        assert list(zip(rows.lang, rows.id)) == prompt_order(prompts)  # the batch order patch values follow
    text = {(r.lang, r.sentence_id): r.text for r in prompts.records}
    assert all(text[(l, i)] == t for l, i, t in zip(df.lang, df.id, df.prompt))
    assert df.detected.map(type).eq(str).all() and df.confidence.between(0, 1).all()
    with pytest.raises(ValueError, match="unique"):
        continuations(lm, prompts, [baseline(), baseline()], 1)


def test_patch_conditions_follow_the_prompt_order(setup):
    lm, acts, key, prompts, cache = setup
    prompt_acts = steps.activations(lm, prompts, CaptureSpec(batch_size=8, max_length=48), cache)
    conds = patch_conditions(lm, key, prompt_acts, prompts, ["zh"], bands=2)
    assert [c.band for c in conds] == ["all", "all", "layers 0-1", "layers 2-2"]
    assert [c.kind for c in conds] == ["region", "random", "region", "region"]
    order = prompt_order(prompts)
    text = {(r.lang, r.sentence_id): r.text for r in prompts.records}
    batch = lm.tokenizer([text[k] for k in order], return_tensors="pt", padding=True)
    zh = prompt_acts.select(langs="zh")
    row = {sid: r for r, sid in enumerate(zh.sentence_ids)}
    seen = {}
    whole = conds[0].block
    names = neuron_sites(lm.model)
    with whole, hooks.input_hooks(lm.model, {names[layer]: (lambda x, layer=layer: seen.__setitem__(layer, x.clone()))
                                             for layer in whole.neurons}):
        with torch.inference_mode():
            lm.model(**batch)
    for layer, idx in whole.neurons.items():
        b = zh.layers.index(layer)
        expect = zh.values[[row[sid] for _, sid in order], b][:, idx]  # (prompts, k): the same sentence in zh
        assert torch.allclose(seen[layer][..., idx], expect[:, None, :].expand(-1, batch["input_ids"].shape[1], -1))


@pytest.mark.real
def test_steering_raises_the_target_share_above_random(gemma):
    """Gemma 3 270M: with the Hindi region set to Hindi's mean activation (LAPE's "activate"), prompts in other
    languages continue in Hindi more often than with a random set of the same size per layer, set alike."""
    langs = ["en", "zh", "fr", "hi", "ar"]
    c = CorpusSpec(n=20)
    sample = steps.sentences(c, langs)
    acts = steps.activations(gemma, sample, CaptureSpec(batch_size=20, max_length=48), Cache(None))
    key = key_regions(acts, 1.5)
    prompts = steps.held_out_prompts(c, langs, sample, 3, 0)
    conds = [cond for cond in steering_conditions(gemma, key, acts, [1.0]) if cond.target == "hi"]
    df = continuations(gemma, prompts, conds, max_new_tokens=8)
    share = df[df.lang != "hi"].assign(hit=lambda d: d.detected == "hi").groupby("kind").hit.mean()
    print(df[["kind", "lang", "output", "detected"]].to_string())
    assert share["region"] > share["random"] + 0.2, share  # measured: 4 of 12 prompts against 0 of 12


def test_patch_languages_must_have_regions():
    from lfcore.params import ParamsError, params_from_dict

    two = {"languages": ["en", "fr"], "generation": {"languages": ["en"]},
           "regions": {"threshold": 0.5, "sweep": [0.5]}}
    with pytest.raises(ParamsError, match=r"steering.patch_languages\[0\]: 'zh' is not in languages"):
        params_from_dict({**two, "steering": {"patch_languages": ["zh"]}})
    with pytest.raises(ParamsError, match=r"steering.patch_languages\[0\]: 'zh' is not in languages"):  # the default
        params_from_dict(two)
    assert params_from_dict({**two, "notebooks": ["obs1"]}).steering.patch_languages == ["zh", "hi"]  # no obs6
    assert params_from_dict({**two, "steering": {"patch_languages": None}}).steering.patch_languages is None
