"""evaluate: chunked perplexity equals the plain loss, Table 1's shape, the lm-eval bridge with live hooks, generation."""
from __future__ import annotations

import json
import math
from importlib import resources

import pandas as pd
import pytest
import torch

from lfcore import cache
from lfcore import evaluate as ev
from lfcore import perplexity as pp
from lfcore.deactivate import deactivate
from lfcore.models import neuron_width


def _passages(lang: str, n: int = 1) -> list[str]:
    lines = (resources.files("lfcore.data") / "ntrex128_passages_9langs.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    return [r["text"] for r in rows if r["lang"] == lang][:n]


def _plain_loss(model, ids: list[int]) -> float:
    x = torch.tensor([ids])
    with torch.inference_mode():
        return float(model(input_ids=x, labels=x).loss)


def _no_hooks(model):
    return all(not m._forward_pre_hooks for m in model.modules())


# ------------------------------------------------------------------------------------------- perplexity


@pytest.mark.parametrize("add_bos, vocab_block", [(False, 100), (True, 100), (True, 4096)])
def test_chunked_loss_equals_plain_loss(tiny, add_bos, vocab_block, monkeypatch):
    monkeypatch.setattr(pp, "CPU_VOCAB_BLOCK", vocab_block)  # 100: the blocked path, a short last block; 4096: whole
    text = _passages("fr")[0][:300]
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    full = [tiny.tokenizer.bos_token_id] + ids if add_bos else ids
    got = pp.perplexity(tiny.model, tiny.tokenizer, text, seqlen=len(full), add_bos=add_bos, chunk_tokens=7)
    assert got["n_windows"] == 1 and got["n_tokens"] == len(full) - 1
    assert abs(got["nll"] - _plain_loss(tiny.model, full)) < 1e-5
    assert math.isclose(got["ppl"], math.exp(got["nll"]))


def test_blocked_nll_with_bias_and_cap(monkeypatch):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 1000)
    h, targets = torch.randn(9, 16), torch.randint(0, 1000, (9,))
    for cap in (None, 2.0):
        logits = head(h) if cap is None else torch.tanh(head(h) / cap) * cap
        want = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        monkeypatch.setattr(pp, "CPU_VOCAB_BLOCK", 64)
        with torch.inference_mode():
            got = pp._nll(head, cap, h, targets)
        assert torch.allclose(got, want, atol=1e-5), cap


@pytest.mark.parametrize("vocab_block", [100, 4096])
def test_softcapped_logits(tiny_tokenizer, vocab_block, monkeypatch):
    from conftest import make_tiny

    monkeypatch.setattr(pp, "CPU_VOCAB_BLOCK", vocab_block)

    model = make_tiny("gemma3", seed=1)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # large logits (random init gives tiny ones) ...
    model.config.final_logit_softcapping = 1.0  # ... that the cap squashes
    text = _passages("en")[0][:200]
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    got = pp.perplexity(model, tiny_tokenizer, text, seqlen=len(ids), add_bos=False)
    assert abs(got["nll"] - _plain_loss(model, ids)) < 1e-5
    model.config.final_logit_softcapping = None
    assert abs(pp.perplexity(model, tiny_tokenizer, text, seqlen=len(ids), add_bos=False)["nll"] - got["nll"]) > 1e-2


def _reference_strided(model, ids, span, stride, bos):
    """The Hugging Face perplexity guide, one window at a time, with plain full logits."""
    total, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + span, len(ids))
        x = ([bos] if bos is not None else []) + ids[begin:end]
        new = end - prev_end
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=torch.tensor([x])).logits[0].float(), -1)
        positions = [p for p in range(len(x) - new, len(x)) if p > 0]  # position 0 has no context (no BOS)
        total -= float(logp[[p - 1 for p in positions], [x[p] for p in positions]].sum())
        count += len(positions)
        prev_end = end
        if end == len(ids):
            break
    return total / count, count


@pytest.mark.parametrize("add_bos, stride", [(True, 8), (False, 5), (True, None), (False, None)])
def test_strided_windows_score_each_token_once(tiny_llama, add_bos, stride):
    lm = tiny_llama
    text = _passages("es")[0][:300]
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    seqlen = 24
    got = pp.perplexity(lm.model, lm.tokenizer, text, seqlen=seqlen, stride=stride, batch_size=3, add_bos=add_bos)
    span = seqlen - add_bos
    assert got["stride"] == (stride or (span if add_bos else span - 1))  # without BOS windows overlap by one
    # every token is scored once; without BOS the text's first token has no context
    assert got["n_tokens"] == len(ids) - (0 if add_bos else 1)
    want, count = _reference_strided(lm.model, ids, span, got["stride"], lm.tokenizer.bos_token_id if add_bos else None)
    assert count == got["n_tokens"]
    assert abs(got["nll"] - want) < 1e-5
    assert len(got["window_nll"]) == got["n_windows"] == len(got["window_tokens"])
    pooled = sum(n * w for n, w in zip(got["window_tokens"], got["window_nll"])) / sum(got["window_tokens"])
    assert abs(pooled - got["nll"]) < 1e-9


@pytest.mark.parametrize("bos", [1, None])
def test_windows_score_every_token_after_the_first_exactly_once(bos):
    for n in [2, 3, 16, 17, 33, 97, 100]:
        for seqlen in [3, 4, 8, 17]:
            longest = seqlen - 1  # with BOS: seqlen - 1 text tokens; without: one token re-read as context
            for stride in [None, *sorted({1, min(2, longest), longest // 2 or 1, longest})]:
                wins, used = pp._windows(list(range(100, 100 + n)), seqlen, stride, bos)
                assert used == (stride or longest)
                scored = []
                for x, labels in wins:
                    assert len(x) <= seqlen
                    targets = labels[1:]  # next-token targets, as in score
                    assert (targets != pp.IGNORE).sum() > 0, (n, seqlen, stride, bos)  # no empty window
                    scored += targets[targets != pp.IGNORE].tolist()
                first = 0 if bos is not None else 1
                assert scored == list(range(100 + first, 100 + n)), (n, seqlen, stride, bos)


def test_one_token_last_window_without_bos(tiny_llama):
    """Non-overlapping windows used to leave a last window of one unscorable token (ZeroDivisionError)."""
    lm, seqlen = tiny_llama, 8
    ids = lm.tokenizer(_passages("en")[0], add_special_tokens=False)["input_ids"]
    text = lm.tokenizer.decode(ids[:3 * seqlen + 1])
    n = len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    got = pp.perplexity(lm.model, lm.tokenizer, text, seqlen=seqlen, add_bos=False)
    assert got["n_tokens"] == n - 1 and all(c > 0 for c in got["window_tokens"])
    with pytest.raises(ValueError, match="stride=8 must be between 1 and 7.*without a BOS token"):
        pp.perplexity(lm.model, lm.tokenizer, text, seqlen=seqlen, stride=8, add_bos=False)


def test_start_token_follows_the_tokenizer(tiny_tokenizer):
    from transformers import PreTrainedTokenizerFast

    assert tiny_tokenizer("x")["input_ids"][0] == tiny_tokenizer.bos_token_id  # the tiny tokenizer adds <bos>
    assert pp.start_token(tiny_tokenizer) == tiny_tokenizer.bos_token_id
    assert pp.start_token(tiny_tokenizer, add_bos=False) is None
    bare = tiny_tokenizer.backend_tokenizer.__class__.from_str(tiny_tokenizer.backend_tokenizer.to_str())
    bare.post_processor = None  # a bos_token the tokenizer never adds by itself (as SmolLM2's <|im_start|>)
    plain = PreTrainedTokenizerFast(tokenizer_object=bare, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    assert plain("x")["input_ids"][0] != plain.bos_token_id
    assert pp.start_token(plain) is None
    assert pp.start_token(plain, add_bos=True) == plain.bos_token_id  # the explicit override


def test_batch_size_and_document_joining(tiny_llama):
    lm = tiny_llama
    docs = [p[:150] for p in _passages("vi", 3)]
    a = pp.perplexity(lm.model, lm.tokenizer, docs, seqlen=32, batch_size=1)
    b = pp.perplexity(lm.model, lm.tokenizer, docs, seqlen=32, batch_size=8)
    assert abs(a["nll"] - b["nll"]) < 1e-5 and a["n_tokens"] == b["n_tokens"]
    assert pp.perplexity(lm.model, lm.tokenizer, "\n\n".join(docs), seqlen=32)["nll"] == pytest.approx(a["nll"], abs=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(texts=""), "no text"),
    (dict(texts=["  ", ""]), "no text"),
    (dict(seqlen=2), "too short"),
    (dict(stride=0), "stride=0 must be between 1 and 31"),
    (dict(stride=40), "stride=40"),
    (dict(batch_size=0), "batch_size"),
])
def test_perplexity_bad_input(tiny_llama, kwargs, message):
    args = dict(texts="Some text to score here.", seqlen=32) | kwargs
    with pytest.raises(ValueError, match=message):
        pp.perplexity(tiny_llama.model, tiny_llama.tokenizer, **args)


def test_deactivation_changes_perplexity(tiny_llama):
    lm, text = tiny_llama, _passages("en")[0][:300]
    base = pp.perplexity(lm.model, lm.tokenizer, text, seqlen=64)
    with deactivate(lm.model, {layer: list(range(24)) for layer in range(3)}):
        off = pp.perplexity(lm.model, lm.tokenizer, text, seqlen=64)
    assert off["nll"] != base["nll"]
    assert pp.perplexity(lm.model, lm.tokenizer, text, seqlen=64)["nll"] == base["nll"]


# ----------------------------------------------------------------------------------------------- Table 1


def test_deactivation_table(tiny_llama, tmp_path):
    lm = tiny_llama
    texts = {"en": _passages("en")[0][:300], "zh": _passages("zh")[0][:150], "fr": [p[:100] for p in _passages("fr", 2)]}
    gen = torch.Generator().manual_seed(0)
    width = neuron_width(lm.model)
    sets = {"Random 10%": {layer: torch.randperm(width, generator=gen)[:5] for layer in range(3)},
            "×en": {0: [1, 2, 3], 2: [4]}, "×zh": {1: list(range(20))}, "none": {}}
    df = ev.deactivation_table(lm, texts, sets, seqlen=48, batch_size=2, progress=False)
    assert list(df.columns) == ["Full model Perplexity", "Random 10%", "×en", "×zh", "none"]
    assert list(df.index) == ["en", "zh", "fr", "Key Neuron Number", "Key Neuron Percentage"]
    assert df.loc["Key Neuron Number"].iloc[1:].tolist() == [15, 4, 20, 0]
    assert df.loc["Key Neuron Percentage"].iloc[1:].tolist() == pytest.approx([100 * n / (3 * width) for n in [15, 4, 20, 0]])
    assert df.loc[["en", "zh", "fr"], "none"].eq(0.0).all()  # an empty set is bit-identical
    ppl = df.attrs["perplexity"]
    for lang in texts:
        assert df.loc[lang, "Full model Perplexity"] == ppl[lang]["Full model"]
        assert df.loc[lang, "×zh"] == pytest.approx(100 * (ppl[lang]["×zh"] / ppl[lang]["Full model"] - 1))
        direct = pp.perplexity(lm.model, lm.tokenizer, texts[lang], seqlen=48)
        assert direct["ppl"] == pytest.approx(ppl[lang]["Full model"], rel=1e-9)
        assert df.attrs["n_tokens"][lang] == direct["n_tokens"]
    assert df.loc[["en", "zh", "fr"], "×zh"].ne(0).all()
    assert df.attrs["seqlen"] == 48 and df.attrs["stride"] == 47 and df.attrs["total_neurons"] == 3 * width
    assert _no_hooks(lm.model)

    csv, sidecar = cache.save_table(df, tmp_path / "table1.csv")
    back = cache.load_table(csv)
    pd.testing.assert_frame_equal(back, df, check_names=False, check_exact=False, rtol=1e-12)
    assert back.attrs["perplexity"] == json.loads(sidecar.read_text())["perplexity"] == df.attrs["perplexity"]
    shown = ev.format_table(df)
    assert shown.loc["Key Neuron Number", "×zh"] == "20" and shown.loc["en", "none"] == "0%"
    assert shown.loc["Key Neuron Number", "Full model Perplexity"] == ""


def test_table_validates_every_set_first(tiny_llama):
    with pytest.raises(ValueError, match="layer 7 is out of range"):
        ev.deactivation_table(tiny_llama, {"en": "text"}, {"ok": {0: [1]}, "bad": {7: [1]}}, seqlen=16, batch_size=1)
    with pytest.raises(ValueError, match="reserved"):
        ev.deactivation_table(tiny_llama, {"en": "text"}, {"Full model": {}}, seqlen=16, batch_size=1)
    with pytest.raises(ValueError, match="save_table|CSV"):
        cache.save_table(pd.DataFrame(), "x.json")


# ------------------------------------------------------------------------------------------ lm-eval tasks


def test_task_folder_lists_tasks_and_groups():
    manager = ev.task_manager()
    for lang in ["en", "id", "vi", "zh"]:
        assert f"xcopa_xl_{lang}" in manager.all_subtasks
    for lang in ["ar", "en", "es", "eu", "hi", "id", "my", "ru", "sw", "te", "zh"]:  # all 11 of XStoryCloze
        assert f"xstorycloze_xl_{lang}" in manager.all_subtasks
    assert {"xcopa_xl", "xstorycloze_xl"} <= set(manager.all_groups)


def test_xcopa_xl_docs_join_by_id():
    from lfcore.tasks import utils

    rows = [json.loads(line) for line in
            (resources.files("lfcore.data") / utils.XCOPA_FILE).read_text(encoding="utf-8").splitlines()]
    by = {(r["id"], r["lang"]): r for r in rows}
    for lang in ["en", "id", "vi", "zh"]:
        docs = utils.xcopa_xl_docs(lang)
        assert len(docs) == 600 and all(d["label"] in (0, 1) for d in docs)
        for d in docs[::37]:
            en, src = by[d["id"], "en"], by[d["id"], lang]
            assert d["premise"] == src["premise"] and (d["choice1"], d["choice2"]) == (en["choice1"], en["choice2"])
            assert d["label"] == by[d["id"], "zh"]["label"]
    doc = next(d for d in utils.xcopa_xl_docs("zh") if d["id"] == "copa-val-010")
    assert utils.xcopa_xl_doc_to_text(doc) == "保龄球撞倒了保龄球瓶子 because"  # English question type wins
    assert utils.xcopa_xl_doc_to_choice(doc)[0] == "the man rolled the bowling ball down the alley."
    with pytest.raises(ValueError, match="has no language 'fr'"):
        utils.xcopa_xl_docs("fr")


def test_xstorycloze_join_by_story_id(monkeypatch):
    import datasets

    from lfcore.tasks import utils

    monkeypatch.setattr(utils, "_english_endings", lambda: {"s1": ("He smiled.", "He cried.", 1),
                                                             "s2": ("It rained.", "It shone.", 2)})
    story = dict(input_sentence_1="a", input_sentence_2="b", input_sentence_3="c", input_sentence_4="d",
                 sentence_quiz1="x", sentence_quiz2="y")
    es = datasets.Dataset.from_list([{"story_id": "s2", "answer_right_ending": 2, **story},
                                     {"story_id": "s1", "answer_right_ending": 1, **story}])
    out = utils.process_xstorycloze_xl(es)
    assert out["ending1_en"] == ["It rained.", "He smiled."] and out["ending2_en"] == ["It shone.", "He cried."]
    with pytest.raises(ValueError, match="no English version"):
        utils.process_xstorycloze_xl(datasets.Dataset.from_list([{"story_id": "s9", "answer_right_ending": 1, **story}]))


def _loglikelihood(lm, context: str, continuation: str) -> float:
    """lm-eval's split: encode context+continuation once; the continuation is what follows the context."""
    whole = lm.tokenizer(context + continuation)["input_ids"]
    n_ctx = len(lm.tokenizer(context)["input_ids"])
    with torch.inference_mode():
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor([whole])).logits[0].float(), -1)
    return float(sum(logp[i - 1, whole[i]] for i in range(n_ctx, len(whole))))


def test_crosslingual_accuracy_runs_with_live_hooks(tiny_llama):
    from lfcore.tasks import utils

    lm = tiny_llama
    neurons = {layer: list(range(0, 48, 2)) for layer in range(3)}
    full = ev.crosslingual_accuracy(lm, ["id", "zh"], limit=2)
    off = ev.crosslingual_accuracy(lm, ["id", "zh"], limit=2, neurons=neurons)
    assert list(full.columns) == ["lang", "task", "acc", "acc_stderr", "n"]
    assert full["lang"].tolist() == ["id", "zh"] and full["n"].tolist() == [2, 2]
    assert off.attrs["n_neurons"] == 72 and full.attrs["n_neurons"] == 0
    assert _no_hooks(lm.model)
    for lang in ["id", "zh"]:
        a, b = full.attrs["loglikelihoods"][lang], off.attrs["loglikelihoods"][lang]
        assert [s["id"] for s in a] == [s["id"] for s in b]
        assert all(s["loglikelihoods"] != t["loglikelihoods"] for s, t in zip(a, b))  # deactivation is live
    # the harness's numbers are the deactivated model's, recomputed here by hand
    sample = off.attrs["loglikelihoods"]["zh"][0]
    doc = next(d for d in utils.xcopa_xl_docs("zh") if d["id"] == sample["id"])
    context, choice = utils.xcopa_xl_doc_to_text(doc), " " + utils.xcopa_xl_doc_to_choice(doc)[0]
    with deactivate(lm.model, neurons):
        assert sample["loglikelihoods"][0] == pytest.approx(_loglikelihood(lm, context, choice), abs=1e-3)
    assert full.attrs["loglikelihoods"]["zh"][0]["loglikelihoods"][0] == pytest.approx(
        _loglikelihood(lm, context, choice), abs=1e-3)


def test_crosslingual_accuracy_unknown_language(tiny_llama):
    with pytest.raises(ValueError, match="xcopa_xl_fr.*xcopa_xl_en"):
        ev.crosslingual_accuracy(tiny_llama, ["fr"], limit=1)


# ------------------------------------------------------------------------------------------- generation


def test_generate_greedy_per_condition(tiny_llama):
    lm = tiny_llama
    prompts = {"en": ["The city council"], "fr": ["Le conseil"]}
    conds = {"full": None, "×en": {layer: list(range(40)) for layer in range(3)}}
    out = ev.generate(lm, prompts, conds, max_new_tokens=6)
    assert list(out.columns) == ["condition", "lang", "index", "prompt", "output", "output_ids"]
    assert len(out) == 4 and out["output_ids"].map(len).eq(6).all()
    for cond, neurons in conds.items():  # the left-padded batch gives what each prompt gives alone
        for lang, (prompt,) in prompts.items():
            enc = lm.tokenizer(prompt, return_tensors="pt")
            with torch.inference_mode(), deactivate(lm.model, neurons):
                want = lm.model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=0)
            got = out.loc[(out.condition == cond) & (out.lang == lang), "output_ids"].iloc[0]
            assert got == want[0, enc["input_ids"].shape[1]:].tolist(), (cond, lang)
    assert _no_hooks(lm.model)


def test_default_prompts():
    assert sorted(ev.DEFAULT_PROMPTS) == sorted(["ar", "zh", "en", "fr", "hi", "id", "pt", "es", "vi"])
    assert all(len(p) == 3 and all(s.strip() for s in p) for p in ev.DEFAULT_PROMPTS.values())


# ------------------------------------------------------------------------------------------ real weights


@pytest.mark.real
def test_real_tokenizers_start_tokens(gemma, smollm):
    assert pp.start_token(gemma.tokenizer) == gemma.tokenizer.bos_token_id  # Gemma adds <bos> itself: as before
    assert smollm.tokenizer.bos_token == "<|im_start|>" and pp.start_token(smollm.tokenizer) is None


@pytest.mark.real
def test_gemma_deactivation_perplexity_and_xcopa(gemma):
    from lfcore.models import neuron_sites

    n_layers, width = len(neuron_sites(gemma.model)), neuron_width(gemma.model)
    gen = torch.Generator().manual_seed(0)
    flat = torch.randperm(n_layers * width, generator=gen)[:2000]
    neurons = {layer: flat[flat // width == layer] % width for layer in range(n_layers)}
    text = _passages("en")[0][:400]  # ~90 tokens: the 262k-word LM head dominates the CPU time
    base = pp.perplexity(gemma.model, gemma.tokenizer, text, seqlen=512)
    with deactivate(gemma.model, neurons):
        off = pp.perplexity(gemma.model, gemma.tokenizer, text, seqlen=512)
    print(f"\ngemma en ppl {base['ppl']:.3f} -> {off['ppl']:.3f} with 2000 random neurons off ({base['n_tokens']} tokens)")
    assert 1 < base["ppl"] < 100 and off["ppl"] != base["ppl"]
    full = ev.crosslingual_accuracy(gemma, ["zh"], limit=3)
    dead = ev.crosslingual_accuracy(gemma, ["zh"], limit=3, neurons=neurons)
    print(full[["lang", "acc", "n"]].to_dict("records"), dead[["lang", "acc", "n"]].to_dict("records"))
    a, b = full.attrs["loglikelihoods"]["zh"], dead.attrs["loglikelihoods"]["zh"]
    assert full["n"].tolist() == [3] and all(s["loglikelihoods"] != t["loglikelihoods"] for s, t in zip(a, b))


def test_accuracy_over_languages_is_weighted_by_items_as_lm_evals_group():
    from lfcore.series import language_mean

    acc = pd.DataFrame({"lang": ["en", "zh"], "acc": [0.9, 0.5], "acc_stderr": [0.03, 0.04], "n": [300, 100]})
    mean, se = language_mean(acc)
    assert mean == pytest.approx(0.8) and se == pytest.approx(((0.75 * 0.03) ** 2 + (0.25 * 0.04) ** 2) ** 0.5)
    equal = acc.assign(n=[1511, 1511])  # XStoryCloze: every language 1511 items, so the plain mean
    assert language_mean(equal)[0] == pytest.approx(0.7)
