"""protocol: the presets resolve to concrete items, an explicit item wins, and each switch does what it says."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import yaml

from lfcore import corpus as corpus_mod
from lfcore import perplexity as pp
from lfcore.capture import Activations, capture, tokenize
from lfcore.hooks import get_module
from lfcore.models import neuron_sites
from lfcore.params import ParamsError, params_from_dict
from lfcore.regions import contribution_scores, key_regions

ROOT = Path(__file__).resolve().parents[1]


def _items(p) -> dict:
    return {"add_special_tokens": p.capture.add_special_tokens, "windows": p.perplexity.windows,
            "split": p.perplexity.split, "documents": p.perplexity.documents, "epsilon": p.regions.epsilon,
            "family_sentences": p.maps.family_sentences, "dtype": p.model.dtype}


def test_presets_resolve_to_concrete_items():
    assert _items(params_from_dict({})) == _items(params_from_dict({"protocol": "lfcore"})) == {
        "add_special_tokens": True, "windows": "overlapping", "split": "test", "documents": 2, "epsilon": 0.0,
        "family_sentences": 40, "dtype": "float32"}
    paper = params_from_dict({"protocol": "paper", "checkpoints": {"models": [
        {"spec": "tiny:llama-32", "revision": "step1"}, {"spec": "tiny:llama-32"}]}})
    assert paper.protocol == "paper"
    assert _items(paper) == {"add_special_tokens": False, "windows": "disjoint", "split": "validation",
                             "documents": 500, "epsilon": 1e-5, "family_sentences": 50, "dtype": "float32"}
    assert [m.dtype for m in paper.checkpoints.models] == ["auto", "float32"]  # run.py: revision -> "auto"


def test_an_explicit_item_overrides_the_preset():
    p = params_from_dict({"protocol": "paper", "regions": {"epsilon": 0.0, "threshold": 2.5},
                          "capture": {"add_special_tokens": True}, "model": {"spec": "tiny:llama-32",
                                                                             "dtype": "bfloat16"}})
    assert (p.regions.epsilon, p.regions.threshold, p.capture.add_special_tokens, p.model.dtype) == (
        0.0, 2.5, True, "bfloat16")
    assert (p.perplexity.windows, p.maps.family_sentences) == ("disjoint", 50)  # the items not set stay paper's
    with pytest.raises(ParamsError, match="protocol: 'authors' is not one of 'lfcore', 'paper'"):
        params_from_dict({"protocol": "authors"})


def test_window_options_in_params():
    p = params_from_dict({"perplexity": {"windows": "disjoint", "seqlen": 64, "stride": 64}})
    assert (p.perplexity.windows, p.perplexity.stride) == ("disjoint", 64)  # back-to-back: stride == seqlen
    for data, words in [({"seqlen": 64, "stride": 64}, "must be below perplexity.seqlen"),
                        ({"windows": "disjoint", "seqlen": 64, "stride": 32}, "must be null or perplexity.seqlen"),
                        ({"windows": "disjoint", "add_bos": True}, "disjoint windows carry no start token")]:
        with pytest.raises(ParamsError, match=words):
            params_from_dict({"perplexity": data})


def test_paper_params_files_name_the_paper_protocol():
    for path in sorted((ROOT / "params").glob("paper_*.yaml")):
        assert yaml.safe_load(path.read_text(encoding="utf-8"))["protocol"] == "paper", path.name
    assert yaml.safe_load((ROOT / "params" / "default.yaml").read_text(encoding="utf-8"))["protocol"] == "lfcore"


# ---------------------------------------------------------------------------------------------- capture


@pytest.fixture(scope="module")
def corpus():
    return corpus_mod.bundled_ntrex().select(["en", "zh", "ar"], n=4, seed=2)


def test_without_special_tokens_no_bos_is_fed_and_the_first_token_is_pooled(tiny_llama, corpus):
    lm, bos = tiny_llama, tiny_llama.tokenizer.bos_token_id
    encoded, weights = tokenize(lm.tokenizer, list(corpus), 64, False, False, add_special_tokens=False)
    assert all(ids[0] != bos and bos not in ids for ids in encoded)
    assert all(all(w) for w in weights)  # every fed token is pooled, the first included
    fed = []
    emb = lm.model.get_input_embeddings()
    handle = emb.register_forward_pre_hook(lambda m, args: fed.append(args[0].clone()))
    try:
        plain = capture(lm, corpus, batch_size=3, add_special_tokens=False, progress=False)
    finally:
        handle.remove()
    assert fed and all(not (ids == bos).any() for ids in fed)
    default = capture(lm, corpus, batch_size=3, progress=False)
    assert torch.equal(plain.token_counts, default.token_counts)  # the same text tokens pooled, BOS never
    assert plain.meta["options"]["add_special_tokens"] is False
    assert not torch.allclose(plain.values, default.values)  # without BOS the context differs
    r = list(corpus)[0]  # the mean over every token of the text fed alone, recomputed at the site
    site = get_module(lm.model, neuron_sites(lm.model)[1])
    seen = {}
    handle = site.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
    try:
        with torch.no_grad():
            lm.model(**lm.tokenizer(r.text, return_tensors="pt", add_special_tokens=False))
    finally:
        handle.remove()
    torch.testing.assert_close(plain.select(r.lang, r.sentence_id).values[0, 1], seen["x"][0].mean(0),
                               atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------- perplexity


def test_disjoint_windows_drop_the_tail_and_score_each_token_once():
    for n, seqlen in itertools.product([4, 16, 17, 33, 100], [2, 4, 8, 17]):
        if n < seqlen:
            with pytest.raises(ValueError, match="fewer than one disjoint window"):
                pp._disjoint_windows(list(range(n)), seqlen)
            continue
        wins = pp._disjoint_windows(list(range(100, 100 + n)), seqlen)
        assert len(wins) == n // seqlen and all(len(x) == seqlen for x, _ in wins)
        scored = [t for _, labels in wins for t in labels[1:][labels[1:] != pp.IGNORE].tolist()]
        starts = set(range(100, 100 + len(wins) * seqlen, seqlen))  # a window's first token is only read
        assert scored == [t for t in range(100, 100 + len(wins) * seqlen) if t not in starts]


def test_disjoint_perplexity_is_the_authors_loss(tiny_llama):
    lm, seqlen = tiny_llama, 16
    text = "\n\n".join([corpus_mod.bundled_passages().records_for("fr")[0].text[:400]] * 2)
    got = pp.perplexity(lm.model, lm.tokenizer, text, seqlen=seqlen, batch_size=3, windows="disjoint")
    ids = lm.tokenizer(text)["input_ids"]  # tokenised once, as the tokenizer does: one <bos> at the start
    assert ids[0] == lm.tokenizer.bos_token_id
    n = len(ids) // seqlen
    x = torch.tensor(ids[:n * seqlen]).view(n, seqlen)  # the tail dropped
    with torch.inference_mode():
        want = float(lm.model(input_ids=x, labels=x).loss)  # lib/eval.py: mean over every window's seqlen - 1
    assert (got["n_windows"], got["n_tokens"], got["stride"], got["bos_token_id"]) == (n, n * (seqlen - 1),
                                                                                       seqlen, None)
    assert abs(got["nll"] - want) < 1e-5
    with pytest.raises(ValueError, match="add_bos=True with windows='disjoint'"):
        pp.perplexity(lm.model, lm.tokenizer, text, seqlen=seqlen, add_bos=True, windows="disjoint")
    with pytest.raises(ValueError, match="must be None or seqlen"):
        pp.perplexity(lm.model, lm.tokenizer, text, seqlen=seqlen, stride=4, windows="disjoint")


# ---------------------------------------------------------------------------------------------- regions


def _acts(n_per_lang: int = 5, width: int = 6, seed: int = 0) -> Activations:
    g = torch.Generator().manual_seed(seed)
    langs = ["en", "fr", "zh"]
    rows = [(str(i), lang) for lang in langs for i in range(n_per_lang)]
    values = torch.rand(len(rows), 2, width, generator=g)  # (n, layers, width)
    return Activations(values, [i for i, _ in rows], [l for _, l in rows], [0, 1],
                       torch.ones(len(rows), dtype=torch.int64))


def test_epsilon_is_added_to_every_normalised_value():
    acts, eps = _acts(), 1e-2
    got, langs = contribution_scores(acts, epsilon=eps)
    a = acts.values.flatten(1).double()
    a = a / a.norm(dim=1, keepdim=True) + eps  # the authors' find_max_average_neurons
    for k, lang in enumerate(langs):
        rows = [r for r, l in enumerate(acts.langs) if l == lang]
        want = sum(a[i] * a[j] for i, j in itertools.combinations(rows, 2))
        torch.testing.assert_close(got[k], want, atol=1e-6, rtol=1e-6)
    base, _ = contribution_scores(acts)
    n = 5  # closed form of the shift: eps * (n - 1) * sum_i a_i + eps^2 * n (n - 1) / 2
    a0 = acts.values.flatten(1).double() / acts.values.flatten(1).double().norm(dim=1, keepdim=True)
    s1 = torch.stack([a0[[r for r, l in enumerate(acts.langs) if l == lang]].sum(0) for lang in langs])
    torch.testing.assert_close(got - base, eps * (n - 1) * s1 + eps ** 2 * n * (n - 1) / 2, atol=1e-6, rtol=1e-5)
    kr = key_regions(acts, 1.0, epsilon=eps)
    assert kr.meta["epsilon"] == eps
    with pytest.raises(ValueError, match="epsilon=-1 must be >= 0"):
        key_regions(acts, 1.0, epsilon=-1)


def test_the_table_step_keys_on_the_window_scheme(tiny_llama, tmp_path):
    from lfcore.specs import PerplexitySpec
    from lfcore.cache import Cache
    from lfcore.steps import perplexity_table

    cache = Cache(tmp_path)
    texts = {lang: [corpus_mod.bundled_passages().records_for(lang)[0].text[:300]] for lang in ("en", "zh")}
    tables = {w: perplexity_table(tiny_llama, texts, {}, PerplexitySpec(seqlen=16, windows=w), cache)
              for w in ("overlapping", "disjoint")}
    assert cache.misses["deactivation"] == 2 and not cache.hits
    assert {w: t.attrs["windows"] for w, t in tables.items()} == {"overlapping": "overlapping", "disjoint": "disjoint"}
    assert tables["disjoint"].attrs["bos_token_id"] is None
    assert tables["overlapping"].attrs["bos_token_id"] == tiny_llama.tokenizer.bos_token_id
