"""How much the authors' protocol (``protocol: paper``) changes the numbers, item by item, on real models.

    python -m benchmarks.protocol                       # Gemma 3 270M and SmolLM2 135M, 60 sentences/language
    python -m benchmarks.protocol --n 30 --documents 5  # smaller

Prints markdown tables (nothing is asserted): whole-model LRDS, SADS and SKLR (z > 2) under lfcore's capture
(special tokens fed, not pooled) and the authors' (``add_special_tokens=False``, first token pooled), each with
epsilon 0 and 1e-5; the per-language Jaccard overlap of each variant's key regions with lfcore's; and the
full-model perplexity per language on the bundled NTREX passages with overlapping and disjoint windows.
"""
from __future__ import annotations

import argparse

import pandas as pd
import torch

from lfcore.capture import capture
from lfcore.corpus import load_corpus
from lfcore.metrics import scores
from lfcore.models import load_model
from lfcore.perplexity import perplexity
from lfcore.regions import key_regions
from lfcore.robustness import region_jaccard
from lfcore.specs import LANGS9

VARIANTS = {  # name -> (add_special_tokens, epsilon)
    "lfcore": (True, 0.0),
    "no special tokens": (False, 0.0),
    "epsilon 1e-5": (True, 1e-5),
    "paper (both)": (False, 1e-5),
}


def measure(spec: str, n: int, documents: int, seqlen: int, threshold: float) -> tuple[pd.DataFrame, ...]:
    """(scores, jaccard, perplexity) frames of one model; see the module docstring."""
    lm = load_model(spec)
    sentences = load_corpus("ntrex128").select(LANGS9, n, 0)
    acts = {bos: capture(lm, sentences, add_special_tokens=bos, progress=False) for bos in (True, False)}
    regions = {name: key_regions(acts[bos], threshold, eps) for name, (bos, eps) in VARIANTS.items()}
    rows = []
    for name, (bos, eps) in VARIANTS.items():
        s = scores(acts[bos])
        rows.append({"model": spec, "variant": name, "LRDS": s["lrds"], "SADS": s["sads"],
                     "SKLR": regions[name].sklr})
    jac = pd.concat([region_jaccard(regions["lfcore"], regions[name]).set_index("lang").jaccard.rename(name)
                     for name in VARIANTS if name != "lfcore"], axis=1).T
    jac.insert(0, "model", spec)
    passages = load_corpus("ntrex128-passages")
    ppl = []
    for lang in LANGS9:
        texts = [r.text for r in passages.records_for(lang)][:documents]
        over = perplexity(lm.model, lm.tokenizer, texts, seqlen=seqlen, windows="overlapping")
        disj = perplexity(lm.model, lm.tokenizer, texts, seqlen=seqlen, windows="disjoint")
        ppl.append({"model": spec, "lang": lang, "overlapping": over["ppl"], "disjoint": disj["ppl"],
                    "change %": 100 * (disj["ppl"] / over["ppl"] - 1), "tokens scored (overlapping)": over["n_tokens"],
                    "tokens scored (disjoint)": disj["n_tokens"]})
    return pd.DataFrame(rows), jac, pd.DataFrame(ppl)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["gemma-3-270m", "smollm2-135m"])
    ap.add_argument("--n", type=int, default=60, help="sentences per language (bundled NTREX-128)")
    ap.add_argument("--documents", type=int, default=20, help="NTREX passages per language for perplexity")
    ap.add_argument("--seqlen", type=int, default=512, help="tokens per perplexity window")
    ap.add_argument("--threshold", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = [measure(m, args.n, args.documents, args.seqlen, args.threshold) for m in args.models]
    fmt = {"floatfmt": ".4f", "index": False}
    print(f"## Scores ({args.n} sentences x 9 languages, z > {args.threshold:g})\n")
    print(pd.concat([p[0] for p in parts]).to_markdown(**fmt))
    print("\n## Key-region Jaccard with lfcore's, per language\n")
    print(pd.concat([p[1] for p in parts]).rename_axis("variant").reset_index().to_markdown(floatfmt=".3f",
                                                                                             index=False))
    print(f"\n## Full-model perplexity, {args.documents} NTREX passages per language, seqlen {args.seqlen}\n")
    print(pd.concat([p[2] for p in parts]).to_markdown(floatfmt=".2f", index=False))


if __name__ == "__main__":
    main()
