"""Switch rates from labelled continuations (``steering.continuations``): which prompts switched to the steered
language, the (prompt language x target) matrix and the headline numbers. Model-free: pandas frames in and out;
intervals come from ``uncertainty.share_intervals``.
"""
from __future__ import annotations

import pandas as pd


def switch_hits(gens: pd.DataFrame) -> pd.DataFrame:
    """One row per (condition, target, prompt) of prompts *not* in the target language, ``hit`` = the
    continuation is detected as the target. The plain model's rows are repeated for every target (its floor)."""
    plain = gens[gens.kind == "none"]
    targets = sorted(gens.target.dropna().unique())
    df = pd.concat([gens[gens.kind != "none"]] + [plain.assign(target=t) for t in targets], ignore_index=True)
    df = df[df.lang != df.target].copy()
    df["hit"] = df.detected == df.target
    return df


def switch_matrix(gens: pd.DataFrame, condition_kind: str, strength: float | None = None) -> pd.DataFrame:
    """Share of continuations detected as the target (columns) for prompts in each language (rows), under the
    ``condition_kind`` ("region" or "random") conditions at ``strength`` (None: the patch conditions of whole
    regions). The diagonal is the share of target-language prompts that stay in it."""
    sel = gens[(gens.kind == condition_kind) & (gens.band == "all")]
    sel = sel[sel.strength.isna()] if strength is None else sel[sel.strength == strength]
    m = sel.assign(hit=sel.detected == sel.target).groupby(["lang", "target"]).hit.mean().unstack("target")
    order = list(gens.lang.unique())
    return m.reindex(index=order, columns=[t for t in order if t in m.columns])


def steering_numbers(shares: pd.DataFrame, strength: float) -> dict:
    """Headline: share of other-language prompts switched to each target at ``strength``, region vs random."""
    at = shares[shares.strength == strength].set_index(["target", "kind"])
    return {f"switched to the target at strength {strength:g}, region vs size-matched random (95% CI)": {
        t: {k: {"estimate": round(float(at.loc[(t, k), "share"]), 3),
                "ci": [round(float(at.loc[(t, k), "ci_low"]), 3), round(float(at.loc[(t, k), "ci_high"]), 3)]}
            for k in ("region", "random")} for t in at.index.get_level_values(0).unique()}}
