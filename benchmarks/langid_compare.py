"""Language identifiers compared on the bundled NTREX-128 sentences (400 per language): accuracy per language
and milliseconds per sentence, on whole sentences and on their first 40 characters (as short as a generation).

    pip install --target /tmp/lid py3langid langid lingua-language-detector
    PYTHONPATH=/tmp/lid:. python -m benchmarks.langid_compare

A candidate that is not installed is skipped. Each identifier picks among all the languages it knows (none is
restricted to the nine), as ``lfcore.langid`` does on generated text. Load time is printed apart.
"""
from __future__ import annotations

import time

from lfcore.corpus import bundled_ntrex
from lfcore.specs import LANGS9


def _lingua(detector):
    def fn(text: str):
        lang = detector.detect_language_of(text)
        return None if lang is None else lang.iso_code_639_1.name.lower()
    return fn


def _candidates() -> dict:
    """name -> text -> ISO 639-1 code, for every candidate that imports."""
    out = {}
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
        py3 = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        out["py3langid"] = lambda x: py3.classify(x)[0]
    except ImportError:
        pass
    try:
        import langid
        out["langid.py"] = lambda x: langid.classify(x)[0]
    except ImportError:
        pass
    try:
        from lingua import LanguageDetectorBuilder
        builder = LanguageDetectorBuilder.from_all_languages()
        out["lingua (high accuracy)"] = _lingua(builder.with_preloaded_language_models().build())
        out["lingua (low accuracy)"] = _lingua(LanguageDetectorBuilder.from_all_languages().with_low_accuracy_mode()
                                               .build())
    except ImportError:
        pass
    return out


def main() -> None:
    corpus = bundled_ntrex()
    texts = {lang: [r.text for r in corpus.records_for(lang)] for lang in LANGS9}
    for name, fn in _candidates().items():
        start = time.perf_counter()
        fn("warm up")
        load = time.perf_counter() - start
        for cut in (None, 40):
            start, acc = time.perf_counter(), {}
            for lang, sents in texts.items():
                acc[lang] = sum(fn(s[:cut]) == lang for s in sents) / len(sents)
            ms = 1000 * (time.perf_counter() - start) / sum(map(len, texts.values()))
            print(f"{name:24s} {'whole' if cut is None else f'{cut} chars':8s}",
                  " ".join(f"{lang} {100 * a:5.1f}" for lang, a in acc.items()),
                  f"| mean {100 * sum(acc.values()) / len(acc):5.1f} | {ms:.2f} ms/sentence | load {load:.1f} s")


if __name__ == "__main__":
    main()
