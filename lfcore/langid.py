"""Which language a text is in: py3langid, with the probability it reports.

py3langid continues langid.py (Lui & Baldwin 2012: naive Bayes over byte n-grams); version 0.4 ships a
retrained model of 140 languages inside the wheel (numpy ``.npz``, no pickle): nothing is downloaded at run
time. Chosen over langid.py and lingua-language-detector by accuracy and speed on the bundled NTREX-128
sentences (README, "Steering"; ``python -m benchmarks.langid_compare``). Its labels are ISO 639-1 codes, so
the nine languages of the paper read as ``ar zh en fr hi id pt es vi``; every other language it knows can be
returned too (a steered model may drift into German). Indonesian is its weakest (92% on NTREX sentences;
Malay, ``ms``, is the usual confusion).

>>> detect(["Le conseil municipal a annoncé lundi.", "12 34"])
[('fr', 0.99...), ('und', 0.0)]
"""
from __future__ import annotations

import functools
from typing import Sequence

from py3langid.langid import MODEL_FILE, LanguageIdentifier

UNDETERMINED = "und"  # a text without a letter: nothing to identify


@functools.lru_cache(maxsize=1)
def identifier() -> LanguageIdentifier:
    """py3langid's identifier with normalised probabilities (loaded once, about 4 s)."""
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def languages() -> list[str]:
    """The codes ``detect`` can return besides ``und`` (ISO 639-1 where one exists, else 639-3)."""
    return sorted(set(identifier().nb_classes))


def detect(texts: Sequence[str]) -> list[tuple[str, float]]:
    """The language of each text and the probability py3langid gives it: ``[(code, p)]``, one per text.

    A text with no letter (empty, digits, punctuation) is ``("und", 0.0)``.
    """
    if isinstance(texts, str):
        raise ValueError("detect takes a list of texts; wrap a single text in a list")
    lid = identifier()
    out = []
    for text in texts:
        if not any(ch.isalpha() for ch in text):
            out.append((UNDETERMINED, 0.0))
            continue
        lang, p = lid.classify(text)
        out.append((lang, float(p)))
    return out

