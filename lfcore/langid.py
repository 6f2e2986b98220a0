"""Which language a text is in: py3langid (langid.py's naive Bayes over byte n-grams, 140 languages, the model
inside the wheel: nothing downloads), with the probability it reports. Labels are ISO 639-1 codes where one
exists, else 639-3 (a steered model may drift into German); chosen by accuracy on NTREX-128 (README, "Steering").

>>> detect(["Le conseil municipal a annoncé lundi.", "12 34"])
[('fr', 0.99...), ('und', 0.0)]
"""
from __future__ import annotations

import functools
from typing import Sequence

from py3langid.langid import MODEL_FILE, LanguageIdentifier


@functools.lru_cache(maxsize=1)
def _identifier() -> LanguageIdentifier:
    """py3langid's identifier with normalised probabilities (loaded once, about 4 s)."""
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def languages() -> list[str]:
    """The codes ``detect`` can return besides ``und`` (ISO 639-1 where one exists, else 639-3)."""
    return sorted(set(_identifier().nb_classes))


def detect(texts: Sequence[str]) -> list[tuple[str, float]]:
    """The language of each text and the probability py3langid gives it: ``[(code, p)]``, one per text.

    A text with no letter (empty, digits, punctuation) is ``("und", 0.0)``: nothing to identify.
    """
    if isinstance(texts, str):
        raise ValueError("detect takes a list of texts; wrap a single text in a list")
    labels = [_identifier().classify(t) if any(ch.isalpha() for ch in t) else ("und", 0.0) for t in texts]
    return [(lang, float(p)) for lang, p in labels]
