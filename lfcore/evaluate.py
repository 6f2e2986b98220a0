"""Evaluate a model with and without neuron sets: ``deactivation_table`` (Table 1), ``intersection_effect``,
``crosslingual_accuracy`` (lfcore's lm-eval tasks, run *inside* ``deactivate`` so the hooks are live) and
``generate`` (greedy continuations, Appendix A). Perplexity itself is ``lfcore.perplexity``.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import math
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from .core import FULL_COLUMN, KEY_NUMBER, KEY_PERCENT, NeuronSet
from .deactivate import deactivate
from .hooks import module_device
from .intervene import intervene
from .models import neuron_sites, neuron_width
from .perplexity import OVERFLOW_FIX, check_seqlen, dtype_name, score, text_windows
from .uncertainty import deactivation_intervals

FULL = "Full model"


def _block(lm, neurons: NeuronSet | intervene | None) -> intervene:
    """``neurons`` itself if it is an ``intervene`` block on ``lm.model``, else a ``deactivate`` block of it."""
    if isinstance(neurons, intervene):
        if neurons.model is not lm.model:
            raise ValueError("an intervene block given as a condition must be built on this model (lm.model)")
        return neurons
    return deactivate(lm.model, neurons, lm.site)


def deactivation_table(lm, texts: Mapping[str, str | Sequence[str]], sets: Mapping[str, NeuronSet], *,
                       seqlen: int = 2048, stride: int | None = None, batch_size: int = 4,
                       total_neurons: int | None = None, add_bos: bool | None = None,
                       progress: bool = True, windows: str = "overlapping") -> pd.DataFrame:
    """Table 1: perplexity per language with the full model and with each neuron set deactivated (a set given
    as an ``intervene`` block: edited as that block says). ``add_bos`` and ``windows`` cut text as ``perplexity``.

    Rows: the languages of ``texts``, then "Key Neuron Number" and "Key Neuron Percentage" (of
    ``total_neurons``, default layers x width). Columns: "Full model Perplexity" (absolute), then one column
    per entry of ``sets`` with the % increase over the full model. ``df.attrs`` holds the raw numbers:
    ``perplexity``/``nll``/``window_nll`` as ``{lang: {condition: ...}}`` ("Full model" is the baseline),
    ``n_tokens``, ``n_windows``, ``window_tokens`` per language, ``model``, ``seqlen``, ``stride``, ``windows``,
    ``bos_token_id``.
    """
    if not texts:
        raise ValueError("texts is empty: pass {lang: text or list of texts}")
    if FULL in sets or FULL_COLUMN in sets:
        raise ValueError(f"{FULL!r} is reserved for the baseline; rename that set")
    blocks = {name: _block(lm, neurons) for name, neurons in sets.items()}  # validate all first
    total = total_neurons or len(neuron_sites(lm.model, lm.site)) * neuron_width(lm.model, lm.site)
    check_seqlen(lm.model, seqlen)
    cut = {}
    for lang, text in texts.items():
        try:
            cut[lang], info = text_windows(lm.tokenizer, text, seqlen, stride, add_bos, windows)
        except ValueError as e:
            raise ValueError(f"perplexity text of language {lang!r}: {e}") from None
    results: dict[str, dict[str, dict]] = {lang: {} for lang in texts}
    conditions = [(FULL, contextlib.nullcontext())] + list(blocks.items())
    with tqdm(total=len(conditions) * len(texts), desc="deactivation table", disable=not progress) as bar:
        for name, block in conditions:
            with block:  # every language is evaluated while the hooks are live
                for lang, wins in cut.items():
                    bar.set_postfix_str(f"{name} / {lang}")
                    results[lang][name] = score(lm.model, wins, batch_size, check=not any(results.values()),
                                                where=f"language {lang!r}, condition {name!r}")
                    bar.update()
    counts = {name: block.n_neurons for name, block in blocks.items()}
    rows = {lang: [res[FULL]["ppl"]] + [100.0 * (res[name]["ppl"] / res[FULL]["ppl"] - 1.0) for name in blocks]
            for lang, res in results.items()}
    rows[KEY_NUMBER] = [float("nan")] + [float(counts[name]) for name in blocks]
    rows[KEY_PERCENT] = [float("nan")] + [100.0 * counts[name] / total for name in blocks]
    df = pd.DataFrame.from_dict(rows, orient="index", columns=[FULL_COLUMN, *blocks])
    df.index.name = "lang"
    df.attrs.update({"model": lm.meta(), **info, "batch_size": batch_size, "total_neurons": total,
                     "key_neurons": counts})
    for attr, key in [("perplexity", "ppl"), ("nll", "nll"), ("window_nll", "window_nll")]:  # per condition
        df.attrs[attr] = {lang: {c: r[key] for c, r in res.items()} for lang, res in results.items()}
    for key in ["n_tokens", "n_windows", "window_tokens"]:  # per language
        df.attrs[key] = {lang: res[FULL][key] for lang, res in results.items()}
    return df


def intersection_effect(lm, texts: Mapping[str, str | Sequence[str]], sets: Mapping[str, NeuronSet], *,
                        seqlen: int = 2048, stride: int | None = None, batch_size: int = 4, n_boot: int = 2000,
                        seed: int = 0) -> pd.DataFrame:
    """Perplexity increase, with a window-bootstrap interval, when each neuron set is deactivated:
    ``intersection_effect(lm, {"en": texts}, robustness.intersection(regions), seqlen=512)``. One row per (set,
    language): set, lang, n_neurons, ppl_full, ppl, increase (%), ci_low, ci_high (``deactivation_intervals``).
    """
    table = deactivation_table(lm, texts, sets, seqlen=seqlen, stride=stride, batch_size=batch_size, progress=False)
    ci = deactivation_intervals(table.attrs["window_nll"], table.attrs["window_tokens"], baseline=FULL,
                                n_boot=n_boot, seed=seed).set_index(["condition", "lang"])
    ppl = table.attrs["perplexity"]
    return pd.DataFrame([{"set": name, "lang": lang, "n_neurons": table.attrs["key_neurons"][name],
                          "ppl_full": ppl[lang][FULL], "ppl": ppl[lang][name],
                          **{k: ci.loc[(name, lang), k] for k in ("increase", "ci_low", "ci_high")}}
                         for name in sets for lang in texts])


def format_table(df: pd.DataFrame) -> pd.DataFrame:
    """The paper's display: perplexity with 2 decimals, increases and percentages as "12%", counts as ints."""
    out = df.map(lambda v: f"{v:.0f}%", na_action="ignore")
    for row, fmt in [(KEY_NUMBER, lambda v: f"{int(v)}"), (KEY_PERCENT, lambda v: f"{v:.1f}%")]:
        if row in df.index:
            out.loc[row] = df.loc[row].map(fmt, na_action="ignore")
    out[FULL_COLUMN] = df[FULL_COLUMN].map(lambda v: f"{v:.2f}", na_action="ignore")
    return out.fillna("").astype(object)


def tasks_dir() -> Path:
    """The folder of lfcore's lm-eval task YAML (package data)."""
    path = Path(str(resources.files("lfcore.tasks")))
    if not path.is_dir():
        raise ValueError(f"lfcore.tasks is not a folder on disk ({path}); install lfcore unzipped")
    return path


def task_manager(include_defaults: bool = False):
    """An lm-eval ``TaskManager`` that knows lfcore's tasks (and the harness's own if ``include_defaults``)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks_dir()), include_defaults=include_defaults)


def lm_eval_model(lm, batch_size: int = 8, max_length: int | None = None):
    """Wrap an already-loaded model as lm-eval's ``HFLM`` (nothing is reloaded; hooks on the model stay live)."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=batch_size, max_length=max_length)


def crosslingual_accuracy(lm, langs: Sequence[str], task: str = "xcopa_xl", limit: int | float | None = None,
                          neurons: NeuronSet | intervene | None = None, batch_size: int = 8) -> pd.DataFrame:
    """Accuracy of lfcore task ``{task}_{lang}`` per language, optionally with ``neurons`` deactivated (or edited,
    given an ``intervene`` block): ``lm_eval.simple_evaluate`` on the loaded model, inside that block and without
    request cache. Columns lang, task, acc, acc_stderr, n; ``df.attrs["loglikelihoods"][lang]`` lists each
    document's id, target and choice log-likelihoods.
    """
    import lm_eval

    manager = task_manager()
    names = {lang: f"{task}_{lang}" for lang in langs}
    unknown = [n for n in names.values() if n not in manager.all_subtasks]
    if unknown:
        known = sorted(t for t in manager.all_subtasks if t.startswith(f"{task}_")) or manager.all_subtasks
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; lfcore has {', '.join(known)}")
    block = _block(lm, neurons)
    with block:
        out = lm_eval.simple_evaluate(model=lm_eval_model(lm, batch_size), tasks=list(names.values()),
                                      task_manager=manager, limit=limit, log_samples=True, use_cache=None,
                                      cache_requests=False, bootstrap_iters=1000)
    rows, lls = [], {}
    for lang, name in names.items():
        res = out["results"][name]
        rows.append({"lang": lang, "task": name, "acc": res["acc,none"], "acc_stderr": res["acc_stderr,none"],
                     "n": out["n-samples"][name]["effective"]})
        lls[lang] = [{"doc_id": s["doc_id"], "id": s["doc"].get("id", s["doc"].get("story_id")),
                      "target": s["target"], "loglikelihoods": [float(r[0]) for r in s["filtered_resps"]]}
                     for s in out["samples"][name]]
        bad = next((d for d in lls[lang] if not all(map(math.isfinite, d["loglikelihoods"]))), None)
        if bad is not None:  # an argmax over nan would still give an "accuracy"
            raise ValueError(f"{lm.name} in {dtype_name(lm.model)}: inf or nan log-likelihood in task {name}, "
                             f"document {bad['doc_id']} (language {lang!r}): {OVERFLOW_FIX}")
    df = pd.DataFrame(rows)
    df.attrs.update({"model": lm.meta(), "n_neurons": block.n_neurons, "limit": limit, "loglikelihoods": lls,
                     "lm_eval_version": importlib.metadata.version("lm_eval")})
    return df


DEFAULT_PROMPTS: dict[str, list[str]] = {
    "en": ["The city council announced on Monday that", "Scientists at the national university have discovered",
           "After three days of heavy rain, residents of the coastal town"],
    "zh": ["市政府周一宣布，", "国立大学的科学家们发现，", "连续三天暴雨之后，沿海小镇的居民"],
    "fr": ["Le conseil municipal a annoncé lundi que", "Des scientifiques de l'université nationale ont découvert",
           "Après trois jours de fortes pluies, les habitants de la ville côtière"],
    "es": ["El ayuntamiento anunció el lunes que", "Científicos de la universidad nacional han descubierto",
           "Tras tres días de fuertes lluvias, los vecinos del pueblo costero"],
    "pt": ["A câmara municipal anunciou na segunda-feira que", "Cientistas da universidade nacional descobriram",
           "Depois de três dias de chuvas fortes, os moradores da cidade costeira"],
    "ar": ["أعلن مجلس المدينة يوم الاثنين أن", "اكتشف علماء في الجامعة الوطنية",
           "بعد ثلاثة أيام من الأمطار الغزيرة، قال سكان البلدة الساحلية"],
    "hi": ["नगर परिषद ने सोमवार को घोषणा की कि", "राष्ट्रीय विश्वविद्यालय के वैज्ञानिकों ने पता लगाया है कि",
           "तीन दिनों की भारी बारिश के बाद, तटीय शहर के निवासी"],
    "id": ["Dewan kota mengumumkan pada hari Senin bahwa", "Para ilmuwan di universitas nasional telah menemukan",
           "Setelah tiga hari hujan deras, warga kota pesisir"],
    "vi": ["Hội đồng thành phố hôm thứ Hai thông báo rằng", "Các nhà khoa học tại trường đại học quốc gia đã phát hiện",
           "Sau ba ngày mưa lớn, người dân thị trấn ven biển"],
}


@torch.inference_mode()
def generate(lm, prompts: Mapping[str, Sequence[str]] | None, neurons_by_condition: Mapping[str, NeuronSet | None],
             max_new_tokens: int = 32) -> pd.DataFrame:
    """Greedy continuations of each prompt under each condition (Appendix A, Tables 2 and 3).

    ``prompts`` is ``{lang: [prompt, ...]}`` (``None``: ``DEFAULT_PROMPTS``); ``neurons_by_condition`` maps a
    condition name to a neuron set to deactivate (``None`` or ``{}``: the full model) or an ``intervene`` block
    (a per-prompt value has one row per prompt, in the order of ``prompts``). Returns one row per condition,
    language and prompt: condition, lang, index, prompt, output (decoded new tokens), output_ids.
    """
    prompts = DEFAULT_PROMPTS if prompts is None else prompts
    blocks = {name: _block(lm, neurons) for name, neurons in neurons_by_condition.items()}
    device = module_device(lm.model.get_input_embeddings())
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
    eos = lm.model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    items = [(lang, i, prompt) for lang, texts in prompts.items() for i, prompt in enumerate(texts)]
    encoded = [lm.tokenizer(prompt)["input_ids"] for _, _, prompt in items]
    width = max(map(len, encoded))  # all prompts in one left-padded batch
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=device)
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
    rows = []
    for name, block in blocks.items():
        with block:
            out = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                    do_sample=False, pad_token_id=pad)
        for (lang, i, prompt), new in zip(items, out[:, width:].tolist()):
            stop = next((k for k, tok in enumerate(new) if tok in eos), None)
            new = new if stop is None else new[:stop + 1]  # as if generated alone: nothing after its end
            rows.append({"condition": name, "lang": lang, "index": i, "prompt": prompt,
                         "output": lm.tokenizer.decode(new, skip_special_tokens=True), "output_ids": new})
    return pd.DataFrame(rows)
