# ---
# jupyter:
#   kernelspec:
#     display_name: lfcore
#     language: python
#     name: lfcore
# ---

# %% [markdown]
# # Observation I: same language, similar activations; same meaning, similar activations
#
# Zeng et al., COLING 2025, §4.2: Figure 2 (similarity map of BLOOM-7b1), Figure 3 (layer-wise LRDS and SADS),
# and Figures 8/9 for LLaMA2.
#
# **Method (§3.1).** Each sentence of a parallel corpus goes through the model; at every layer we record the MLP
# neurons (the input of the down projection: GeLU(h) in BLOOM, act(gate)·up in LLaMA/Gemma), average them over the
# sentence's tokens (eq. 5), concatenate the layers and normalise (eq. 6). The similarity map holds the cosine
# similarity of every pair of sentences (eq. 7).
#
# **Scores (§3.2).**
# - **LRDS** (eq. 8): mean similarity of *same-language* pairs minus *different-language* pairs, all pairs with
#   different meanings. High: activations are language-specific.
# - **SADS** (eq. 9): mean similarity of *same-meaning* pairs minus *different-meaning* pairs, all pairs in
#   different languages. High: activations follow meaning across languages.
#
# **What the paper reports.** Light blocks (same language) and light diagonal bands (same meaning) in the map;
# the first and last layers are the most language-specific (high LRDS, low SADS), the middle layers the most
# semantic.
#
# This notebook is parameterised. `lfcore reproduce params/<file>.yaml` injects that file's sections below the
# parameters cell; opened directly (JupyterLab + jupytext), it runs the offline default.

# %% tags=["parameters"]
title = "Offline default: Gemma 3 270M (base, GGUF Q4_K_M) on the bundled NTREX-128 sample"
languages = ["ar", "zh", "en", "fr", "hi", "id", "pt", "es", "vi"]
model = {"spec": "gemma-3-270m", "revision": None, "dtype": "float32", "device_map": None, "site": None}
corpus = {"source": "ntrex128", "n": 100, "seed": 0}
capture = {"batch_size": 16, "max_length": 512, "pool_special_tokens": False, "skip_first": False,
           "add_special_tokens": True}
uncertainty = {"n_boot": 1000, "n_perm": 1000, "level": 0.95, "seed": 0}
diagnostics = {"k": 5, "share": 0.5, "first_token_sentences": 20}
maps = {"sentences": 100, "layer_sentences": 12, "family_sentences": 40}
out_dir = "reports/interactive/obs1_similarity"  # relative to the repository root (git-ignored)
cache_dir = "reports/interactive/cache"

# %%
import lfcore.cache
import lfcore.diagnostics
import lfcore.metrics
import lfcore.params
import lfcore.plots
import lfcore.report
import lfcore.steps

p = lfcore.params.notebook_params(languages=languages, model=model, corpus=corpus, capture=capture,
                                  uncertainty=uncertainty, diagnostics=diagnostics, maps=maps)
cache = lfcore.cache.Cache(lfcore.params.repo_path(cache_dir))
report = lfcore.report.Report(out_dir, notebook="obs1", cache=cache)

# %% [markdown]
# ## Model and sentences
#
# The model's identity (name, revision, a hash of its weights) is recorded with every result. The sentences are a
# seeded sample of sentence ids present in every language.

# %%
lm = lfcore.steps.load(p.model)
report.model(lm.meta())
sentences = lfcore.steps.sentences(p.corpus, p.languages)
acts = lfcore.steps.activations(lm, sentences, p.capture, cache)
print(lm.meta())
print(sentences)
print(f"activations: {tuple(acts.values.shape)} (sentences x layers x neurons per layer)")

# %% [markdown]
# ## Figure 2: the similarity map
#
# Rows and columns are grouped by language and, within a block, ordered by sentence id, so a meaning sits at the
# same offset in every block. Same-language blocks on the diagonal should be light; so should the thin bands on
# the diagonals of the off-diagonal blocks (same meaning, different language). Hover over a cell for the two
# sentences; drag to zoom.

# %%
shown = lfcore.metrics.ordered(acts.select(ids=acts.ids[:p.maps.sentences]), p.languages)
report.show(lfcore.plots.similarity_map(lfcore.metrics.similarity(shown), shown, sentences,
                                        title=f"Similarity map: {lm.title}"), "similarity_map")

# %% [markdown]
# ## LRDS and SADS, with their uncertainty
#
# The interval is a percentile bootstrap over sentence ids (all translations of a sentence are resampled
# together, since the corpus is a sample of meanings). The p-value is a one-sided permutation test: for LRDS the
# language labels are shuffled within each sentence, for SADS the sentence ids within each language. A score
# whose interval covers 0 is not evidence of the effect.

# %%
intervals = lfcore.steps.intervals(acts, p.uncertainty, cache)
report.numbers(**lfcore.steps.interval_numbers(intervals))
report.show(lfcore.plots.headline_scores(intervals, title=f"LRDS and SADS: {lm.title}"), "headline_scores")
report.table(intervals, "score_intervals", index=False)

# %% [markdown]
# ## Diagnostics: layers dominated by a few neurons
#
# A handful of neurons with huge values ("massive activations", Sun et al. 2024) make every sentence vector of a
# layer point the same way: all its cosines approach 1 and its LRDS and SADS approach 0, whatever the other
# neurons do. Bars: the share of each layer's squared norm held by its top-k neurons (dark: flagged, above
# `diagnostics.share`). Dashed: the scores with those k neurons zeroed. The whole-model scores are recomputed
# without the dominant neurons of the flagged layers (identical to the above when no layer is flagged).

# %%
dominance = lfcore.diagnostics.exclusion_table(acts, p.diagnostics.k, p.diagnostics.share)
report.table(dominance, "dominance", index=False)
report.show(lfcore.plots.exclusion(dominance, p.diagnostics.k, title=f"Dominant neurons per layer: {lm.title}"),
            "dominance")
clean = lfcore.steps.intervals(lfcore.steps.without_dominant(acts, dominance, p.diagnostics.k), p.uncertainty,
                                     cache, per_layer=False)
report.numbers(flagged_layers=lfcore.steps.flagged_layers(dominance),
               **lfcore.steps.interval_numbers(clean, suffix=" without dominant neurons"))
report.table(clean, "score_intervals_without_dominant", index=False)

# %% [markdown]
# ### First-token effect
#
# The first token of a sequence often carries outsized activations (it serves as an attention sink). A subset of
# the sentences (`diagnostics.first_token_sentences` ids) is captured again without each sentence's first token:
# if the layer-wise scores move a lot, the first token, not the sentence, drives them.

# %%
pooling = lfcore.steps.first_token_effect(lm, sentences, acts, p.capture, p.diagnostics.first_token_sentences,
                                          cache)
report.table(pooling, "first_token_effect", index=False)
report.show(lfcore.plots.pooling(pooling, title=f"First-token effect: {lm.title}"), "first_token_effect")

# %% [markdown]
# ## Figure 3: LRDS and SADS layer by layer
#
# Each layer's block of the activation vector is normalised on its own and scored with eqs. 8-9. Shaded bands are
# the bootstrap intervals; grey columns mark layers flagged above. The paper finds U-shaped LRDS (high at both
# ends) and the opposite for SADS.

# %%
layers = lfcore.metrics.layerwise(acts)
report.table(layers, "layerwise", index=False)
report.show(lfcore.plots.layer_scores(layers, intervals, flagged=lfcore.steps.flagged_layers(dominance),
                                      title=f"Layer-wise LRDS and SADS: {lm.title}"), "layerwise_scores")

# %% [markdown]
# ## Each layer's own similarity map
#
# Move the slider to walk through the layers (a few sentences per language keep the page small). In the first
# and last layers the language blocks should dominate; in the middle layers the same-meaning bands.

# %%
few = lfcore.metrics.ordered(acts.select(ids=acts.ids[:p.maps.layer_sentences]), p.languages)
report.show(lfcore.plots.layer_similarity_slider(lfcore.metrics.layer_maps(few), few, sentences,
                                                 title=f"Similarity map per layer: {lm.title}"), "layer_maps")

# %% [markdown]
# With a live kernel, this widget draws the full map of any single layer (static HTML cannot run it).

# %%
lfcore.report.explore_layers(shown, sentences)

# %% [markdown]
# ## Reading the result
#
# - LRDS > 0 with an interval above 0: same-language sentences are more alike than cross-language ones, so
#   language-specific activity exists (the premise of key linguistic regions, Observation II).
# - SADS > 0 with an interval above 0: translations are more alike than unrelated sentences in other languages:
#   the "lingua franca" of the title.
# - The paper's scale (BLOOM-7b1, 100 Bible verses) is `params/paper_bloom7b1.yaml`; the English-centric LLaMA2
#   family is in the appendix notebook.
