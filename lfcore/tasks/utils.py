"""Dataset loaders and prompt functions for lfcore's cross-lingual lm-eval tasks.

lm-eval imports this file by path (``!function utils.name`` in the YAML), so it uses absolute imports only.
Rows are joined by item id, never by position; a missing or contradictory partner row raises ``ValueError``.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

XCOPA_FILE = "xcopa_en_id_vi_zh.jsonl"
XCOPA_CONNECTORS = {"cause": "because", "effect": "therefore"}  # English, as in the harness's copa task


@lru_cache(maxsize=1)
def _xcopa_rows() -> tuple[dict, ...]:
    text = (resources.files("lfcore.data") / XCOPA_FILE).read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def xcopa_xl_docs(lang: str) -> list[dict]:
    """Items of the bundled XCOPA sample: premise in ``lang``, English choices, label from any language.

    English test labels are null in XCOPA's English source; the label is taken from the rows of the same
    id in the other languages (they translate the same COPA item). Items without any label are dropped.
    The question type (cause/effect) comes from the English item too: it picks the English connector, and
    XCOPA's Indonesian file has 9 rows whose type contradicts the original (e.g. copa-val-010).
    """
    rows = _xcopa_rows()
    langs = sorted({r["lang"] for r in rows})
    if lang not in langs:
        raise ValueError(f"xcopa_xl has no language {lang!r}; the bundled sample has {', '.join(langs)}")
    english = {r["id"]: r for r in rows if r["lang"] == "en"}
    labels: dict[str, set] = {}
    for r in rows:
        if r["label"] is not None:
            labels.setdefault(r["id"], set()).add(int(r["label"]))
    docs = []
    for r in rows:
        if r["lang"] != lang or not labels.get(r["id"]):
            continue
        if len(labels[r["id"]]) != 1:
            raise ValueError(f"item {r['id']} has contradictory labels across languages: {labels[r['id']]}")
        if r["id"] not in english:
            raise ValueError(f"item {r['id']} ({lang}) has no English row to take the choices from")
        en = english[r["id"]]
        docs.append({"id": r["id"], "split": r["split"], "lang": lang, "premise": r["premise"],
                     "question": en["question"], "choice1": en["choice1"], "choice2": en["choice2"],
                     "label": next(iter(labels[r["id"]]))})
    return docs


def load_xcopa_xl(lang: str, **metadata):
    """``custom_dataset`` for lm-eval: one ``test`` split holding the val + test items of ``lang``."""
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(xcopa_xl_docs(lang))})


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:]


def xcopa_xl_doc_to_text(doc: dict) -> str:
    """Premise in language X without its final punctuation, then the English connector."""
    premise = doc["premise"].strip().rstrip(".。!?！？")
    return f"{premise} {XCOPA_CONNECTORS[doc['question']]}"


def xcopa_xl_doc_to_choice(doc: dict) -> list[str]:
    """The two English alternatives, first letter lower-cased to continue the sentence."""
    return [_lower_first(doc["choice1"]), _lower_first(doc["choice2"])]


# ------------------------------------------------------------------------------------------- xstorycloze


@lru_cache(maxsize=1)
def _english_endings() -> dict[str, tuple[str, str, int]]:
    """story_id -> (ending 1, ending 2, right ending) from the English config, both splits (network)."""
    import datasets

    en = datasets.load_dataset("juletxara/xstory_cloze", "en")
    return {d["story_id"]: (d["sentence_quiz1"], d["sentence_quiz2"], int(d["answer_right_ending"]))
            for split in en.values() for d in split}


def process_xstorycloze_xl(dataset):
    """Add ``ending1_en``/``ending2_en``: the English endings of the same story, joined by ``story_id``."""
    english = _english_endings()
    missing = [sid for sid in dataset["story_id"] if sid not in english]
    if missing:
        raise ValueError(f"{len(missing)} stories have no English version (first: {missing[0]})")

    def add(doc):
        q1, q2, right = english[doc["story_id"]]
        if right != int(doc["answer_right_ending"]):
            raise ValueError(f"story {doc['story_id']}: right ending {doc['answer_right_ending']} differs "
                             f"from the English one ({right})")
        return {"ending1_en": q1, "ending2_en": q2}

    return dataset.map(add)
